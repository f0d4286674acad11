"""What a person watching a run sees: a start-up banner, a tqdm bar on a terminal or plain lines
in a log file (both with step/total, rate and ETA), a closing line, and TensorBoard events (plus
W&B when `wandb.project` is set, igpt/training/tracking.py). Only process 0 reports."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from igpt.hardware import peak_flops_per_device
from igpt.paths import is_object_storage
from igpt.training.event_files import write_events_through_path_layer
from igpt.training.tracking import Tracker

BOOKKEEPING = frozenset({"step", "split", "wall_time", "step_time", "tokens_seen"})  # not printed
FIRST = ("loss", "bits_per_token")  # printed first; the rest in the record's order


def duration(seconds: float) -> str:
    """45 s, 3 min 05 s, 2 h 03 min: as precise as a person reading a log needs."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _numbers(rec: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in rec.items() if k not in BOOKKEEPING and isinstance(v, (int, float))}


def _line(rec: dict[str, Any]) -> str:
    numbers = _numbers(rec)
    keys = [k for k in FIRST if k in numbers] + [k for k in numbers if k not in FIRST]
    return " ".join(f"{k} {numbers[k]:.4g}" for k in keys)


def train_line(step: int, total: int, rec: dict[str, Any]) -> str:
    """`step 20/300: loss 3.2 ... lr 0.003 | 9,040 tokens/s, ETA 1 min 12 s`: the metrics (lr and
    grad norm among them), then the rate over the steps since the last line (compilation, evals
    and saves excluded) and the time the remaining steps take at that rate."""
    rates = {k: v for k, v in rec.items() if k.endswith("_per_s")}
    metrics = _line({k: v for k, v in rec.items() if k not in rates and k != "mfu"})
    speed = [f"{v:,.0f} {k[:-len('_per_s')]}/s" for k, v in rates.items()]
    if "mfu" in rec:
        speed.append(f"MFU {rec['mfu']:.1%}")
    if rec.get("step_time"):
        speed.append(f"ETA {duration((total - step) * rec['step_time'])}")
    return f"step {step}/{total}: {metrics}" + (f" | {', '.join(speed)}" if speed else "")


def _count(n: int) -> str:
    return f"{n:,}"


def start_banner(task: Any, workdir: Any, mesh: jax.sharding.Mesh) -> list[str]:
    """What runs where, said before the data and the compile take their time: the task and
    workdir, devices and mesh (and the attention kernel a GPT runs), the data and tokenizer,
    the batch in units per step, and where checkpoints and logs go."""
    cfg, t = task.cfg, task.cfg.train
    devices = jax.devices()
    kinds = "/".join(sorted({d.device_kind for d in devices}))
    backend = jax.default_backend()
    where = ([] if backend in kinds.lower() else [backend]) + (
        [f"{jax.process_count()} processes"] if jax.process_count() > 1 else [])
    mesh_text = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
    where = f" ({', '.join(where)})" if where else ""
    compute = f"  devices  {len(devices)} x {kinds}{where}, mesh {mesh_text}"
    attention = attention_path(cfg, devices)
    if attention:
        compute += f", {attention} attention"
    data = cfg.get("data", ml_collections.ConfigDict())
    source = data.get("source", "?")
    tokenizer = f" ({data.tokenizer})" if data.get("tokenizer") else ""
    rows = t.global_batch
    per_row = f" x {_count(task.units_per_row)} {task.unit}s" if task.units_per_row > 1 else ""
    units = rows * task.units_per_row
    return [f"igpt: {task.kind} run in {workdir}",
            compute,
            f"  data     {source}{tokenizer}: {_count(rows)} rows{per_row} = {_count(units)} {task.unit}s per step, "
            f"{_count(t.steps)} steps",
            f"  writes   checkpoints every {t.checkpoint_every} steps to {workdir}/checkpoints, metrics.jsonl, "
            f"TensorBoard in {workdir}/tb"]


def attention_path(cfg: ml_collections.ConfigDict, devices: list) -> str:
    """The attention kernel a GPT config runs on these devices ("" for tasks without one)."""
    model = cfg.get("model", ml_collections.ConfigDict())
    if "attention" not in model:
        return ""
    from igpt.attention import attention_impl
    seq_len = cfg.get("data", {}).get("seq_len", 0) or 0
    return attention_impl(model.attention, model.get("dtype", "float32"), seq_len)


def parameter_count(params: Any) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def resume_line(start: int | None, steps: int, params: int, checkpoint: Any) -> str:
    """Where this session starts: at 0, from a checkpoint, or with nothing left to train."""
    model = f"  model    {_count(params)} parameters; "
    if start is None:
        return model + f"starting at step 0 of {_count(steps)} (the first step compiles)"
    if start >= steps:
        return model + f"already complete at step {_count(start)} of {_count(steps)} (checkpoint {checkpoint}): " \
                       "nothing to train"
    return model + f"resumed from step {_count(start)} of {_count(steps)} (checkpoint {checkpoint})"


def closing_line(kind: str, start: int, step: int, wall_s: float, evals: dict[str, dict[str, float]],
                 workdir: Any) -> str:
    """The last line of a finished run: steps, wall time, final held-out numbers, where things are."""
    trained = f"trained steps {start}-{step} in {duration(wall_s)}" if step > start else "nothing to train"
    finals = []
    for split, metrics in evals.items():
        key = "bits_per_token" if "bits_per_token" in metrics else "loss"
        if key in metrics:
            finals.append(f"{split} {key} {metrics[key]:.4g}")
    final = f"; final {', '.join(finals)}" if finals else ""
    report = f"; report: igpt-report {workdir} --out {workdir}/report" if kind == "gpt" else ""
    return f"igpt: finished at step {step} ({trained}){final}; checkpoints in {workdir}/checkpoints{report}"


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A config as dotted keys with scalar values (lists as text), as TensorBoard's hparams take."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


class Progress:
    def __init__(self, total: int, start: int, *, enabled: bool, tensorboard: Path, pictures: Path | None = None,
                 config: dict[str, Any] | None = None, tracker: Tracker | None = None):
        """`config` (the run's config as JSON) goes to TensorBoard as text and hparams, and with
        every record to `tracker` (W&B) when there is one; pictures go to TensorBoard and, as
        PNG files, to `pictures`."""
        self.enabled = enabled
        self.pictures = pictures
        self.total = total
        self.bar = None
        self.tb = None
        self.tracker = tracker
        self.config = config
        self.eval_tags: list[str] = []
        if not enabled:
            return
        from tensorboardX import SummaryWriter
        if is_object_storage(tensorboard):
            write_events_through_path_layer()
        self.tb = SummaryWriter(str(tensorboard))
        if config is not None:
            self.tb.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", start)
        peak = peak_flops_per_device()
        self.peak = peak * jax.device_count() if peak else None
        if sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}")

    def _scalars(self, split: str, step: int, rec: dict[str, Any]) -> None:
        for key, value in _numbers(rec).items():
            self.tb.add_scalar(f"{split}/{key}", value, step)
        if self.tracker is not None:
            self.tracker.log(split, step, _numbers(rec))

    def train(self, step: int, rec: dict[str, Any], flops_per_s: float = 0.0) -> None:
        """`flops_per_s`: model FLOP/s the whole job achieved over the logged steps (0: unknown)."""
        if not self.enabled:
            return
        if self.peak and flops_per_s:
            rec["mfu"] = flops_per_s / self.peak
        self._scalars("train", step, rec)
        line = train_line(step, self.total, rec)
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(line.split(": ", 1)[1])
        else:
            print(line, flush=True)

    def eval(self, step: int, split: str, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._scalars(split, step, rec)
        self.eval_tags += [f"{split}/{key}" for key in _numbers(rec) if f"{split}/{key}" not in self.eval_tags]
        self.message(f"step {step}/{self.total}: {split} {_line(rec)}")

    def image(self, tag: str, image: np.ndarray | None, step: int) -> None:
        """A uint8 picture [H, W, 3] (e.g. a labelled sample grid) at `step`; None: nothing to show."""
        if not self.enabled or image is None:
            return
        self.tb.add_image(tag, image, step, dataformats="HWC")
        if self.pictures is not None:
            from PIL import Image
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            if not is_object_storage(self.pictures):
                self.pictures.mkdir(parents=True, exist_ok=True)
            (self.pictures / f"{tag}_step_{step:07d}.png").write_bytes(buffer.getvalue())
        if self.tracker is not None:
            self.tracker.image(tag, image, step)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            if self.config is not None and self.eval_tags:  # the hparams plugin reads these scalars of this run
                from tensorboardX.summary import hparams
                for summary in hparams(flat_hparams(self.config), {tag: 0.0 for tag in self.eval_tags}):
                    self.tb.file_writer.add_summary(summary)
            self.tb.close()
        if self.tracker is not None:
            self.tracker.finish()
