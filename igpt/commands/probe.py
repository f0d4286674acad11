"""igpt-probe --workdir RUN [--data SPEC] [--steps all|latest|S,S] [--compare RUN_B]

Linear probes (iGPT): each layer's residual stream (the embeddings, every block, the final
norm), average-pooled over positions, read at each checkpoint of RUN; a logistic regression per
layer fitted on the train split with its regularisation chosen on validation, accuracy on test.
Appends one record per layer and checkpoint to RUN/probe.jsonl (a rerun replaces its own) and
prints them. --data probes another labelled image dataset tokenized as RUN tokenizes (default:
RUN's own data): shipped:digits, or tfds:cifar10, tfds:mnist, tfds:cars196 in --data_dir.

With --compare RUN_B: linear CKA between every layer of RUN and of RUN_B on the same test
inputs, and the linear-stitching penalty of running RUN to layer i, an affine map, then RUN_B
from block j + 1 (bits/token over RUN_B alone); written to RUN/similarity.jsonl. RUN and RUN_B
may be one run at two checkpoints (--step, --compare_step). Workdirs may be local or gs://.
"""
from __future__ import annotations

import argparse
import sys


def _steps(text: str) -> str | list[int]:
    if text in ("all", "latest"):
        return text
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        steps = []
    if not steps or min(steps) < 0:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: write all, latest, or checkpoint steps like 100,200")
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="igpt-probe", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a training run directory (model A when comparing)")
    parser.add_argument("--data", default=None, help="a labelled image dataset, e.g. shipped:digits (default: the run's)")
    parser.add_argument("--data_dir", default=None, help="where --data is prepared (default: the run's data.data_dir)")
    parser.add_argument("--max_examples", type=int, default=None, help="cap on examples read per split")
    parser.add_argument("--steps", type=_steps, default="all", help="checkpoints to probe: all, latest or S,S")
    parser.add_argument("--compare", default=None, metavar="RUN_B", help="compare the run with RUN_B instead")
    parser.add_argument("--step", type=int, default=None, help="with --compare: the run's checkpoint (latest)")
    parser.add_argument("--compare_step", type=int, default=None, help="with --compare: RUN_B's checkpoint (latest)")
    parser.add_argument("--eval_sequences", type=int, default=512, help="with --compare: test inputs compared")
    parser.add_argument("--no_stitch", action="store_true", help="with --compare: CKA only")
    parser.add_argument("--stitch_steps", type=int, default=0,
                        help="with --compare: Adam steps on RUN_B's loss after each map's least-squares fit")
    args = parser.parse_args(argv)
    if args.max_examples is not None and args.max_examples < 0 or args.eval_sequences < 1 or args.stitch_steps < 0:
        parser.error("need --max_examples >= 0, --eval_sequences >= 1 and --stitch_steps >= 0.")

    from igpt.errors import fail_clearly
    from igpt.representation_runs import committed_steps, compare_runs, probe_run

    with fail_clearly():
        if args.compare:
            compare_runs(args.workdir, args.compare, args.data, step_a=args.step, step_b=args.compare_step,
                         data_dir=args.data_dir, max_examples=args.max_examples,
                         eval_sequences=args.eval_sequences, stitch=not args.no_stitch,
                         stitch_steps=args.stitch_steps)
            print(f"igpt-probe: wrote the comparison to {args.workdir}/similarity.jsonl")
            return 0
        steps = (None if args.steps == "all" else committed_steps(args.workdir)[-1:] if args.steps == "latest"
                 else args.steps)
        records = probe_run(args.workdir, args.data, steps, data_dir=args.data_dir, max_examples=args.max_examples)
    print(f"igpt-probe: {len(records)} records (one per layer and checkpoint) in {args.workdir}/probe.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
