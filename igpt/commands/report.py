"""igpt-report: turn run and experiment directories into a transfer report (no jax needed).

  igpt-report runs/prose_to_images --out reports/prose_to_images [--log-x] [--targets 3.2,3.0]
Writes report.html (self-contained), report.md, summary.json and PNG curves into --out.
"""
from __future__ import annotations

import argparse
import sys

from igpt.paths import as_path, forget_listings, is_object_storage, probe_read, probe_write, storage_problem
from igpt.transfer.report import headline, write_report


def _targets(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--targets {text!r}: expected comma-separated losses in bits/token, e.g. 3.2,3.0")


class _Unusable(Exception):
    """A bucket the report cannot read from or write to."""


def _check_storage(inputs: list[str], out: str) -> None:
    """Inputs and --out in a bucket are tried before any work: listed, and written to."""
    for url, access in [(p, "read") for p in inputs] + [(out, "write")]:
        if not is_object_storage(url):
            continue
        forget_listings(url)
        try:
            if access == "write":
                probe_write(url)
            else:
                probe_read(url)
        except Exception as e:  # gcsfs and google-auth raise more than OSError (e.g. 401 without credentials)
            raise _Unusable(storage_problem(url, e, access)) from e


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, write the report, print where it is; 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="igpt-report", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="RUN_OR_EXPERIMENT_DIR",
                        help="run directories (metrics.jsonl, run.json) or experiment "
                             "directories (experiment.json); searched recursively")
    parser.add_argument("--out", required=True, help="report directory (replaced whole)")
    parser.add_argument("--log-x", action="store_true", help="log-scale step/token axes")
    parser.add_argument("--targets", type=_targets, default=None,
                        help="losses in bits/token fixed in advance, e.g. 3.2,3.0 (default: from "
                             "held-out scratch seeds, else provisionally from the compared ones)")
    args = parser.parse_args(argv)
    if args.targets is not None and not args.targets:
        parser.error("--targets is empty; give losses in bits/token, e.g. 3.2,3.0")
    try:
        _check_storage(args.inputs, args.out)
    except _Unusable as e:
        print(f"igpt-report: error: {e}", file=sys.stderr)
        return 2
    missing = [p for p in args.inputs if not as_path(p).is_dir()]  # local or gs://
    if missing:
        parser.error(f"no such directory: {', '.join(missing)}")
    try:
        summary = write_report(args.inputs, args.out, log_x=args.log_x, targets=args.targets)
    except (ValueError, FileNotFoundError) as e:
        print(f"igpt-report: error: {e}", file=sys.stderr)
        return 2
    print(headline(summary, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
