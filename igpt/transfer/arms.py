"""The arms of a transfer experiment, parsed once from the config's strings.

An arm is "scratch" (the baseline: fresh weights), a control that needs no source ("mimetic",
"frozen_random"), or "<source>/<mode>" with mode full, frozen_body, layers=i,j, grow_vocab, or one of the
source controls stats_init and shuffled_source (igpt.transfer.init says what each carries and
trains). No jax, so the report can name the baseline and the controls without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

SCRATCH = "scratch"
SOURCELESS_MODES = (SCRATCH, "mimetic", "frozen_random")  # arms named by the mode alone
SOURCE_MODES = ("full", "frozen_body", "layers", "grow_vocab", "stats_init", "shuffled_source")  # "<source>/<mode>"
MODES = SOURCELESS_MODES + SOURCE_MODES
CONTROLS = ("stats_init", "shuffled_source", "mimetic", "frozen_random")  # what a transfer claim must beat
SHUFFLED = "shuffled"  # the shuffled-source control pretrains its own source run, "<source>__shuffled"
_LAYERS = "layers="
_DIR_SEP = "__"  # "/" in an arm name becomes this in its run directory name


class TransferError(ValueError):
    """An arm or init mode that cannot be run, or a source that cannot initialise the model."""


def check_mode(mode: str, layers: Sequence[int], num_layers: int) -> None:
    if mode not in MODES:
        raise TransferError(f"unknown init.mode {mode!r}; choose one of {MODES}.")
    bad = [i for i in layers if not 0 <= i < num_layers]
    if mode == "layers" and (not layers or bad):
        raise TransferError(f"init.layers={tuple(layers)} must list block indices in [0, {num_layers}) "
                            "for mode 'layers', e.g. --config.init.layers='(0,1)'.")


@dataclass(frozen=True)
class Arm:
    """One arm: `name` as written in the config (and in run.json), the source it starts from
    (None for scratch), its init mode and, for mode "layers", the blocks it trains."""
    name: str
    source: str | None
    mode: str
    layers: tuple[int, ...] = ()

    @property
    def source_run(self) -> str | None:
        """The source run this arm starts from: its source's, or the token-shuffled twin of it."""
        if self.source is None:
            return None
        return f"{self.source}{_DIR_SEP}{SHUFFLED}" if self.mode == "shuffled_source" else self.source

    @property
    def dirname(self) -> str:
        """Run directory name, "/" spelled "__": "prose/layers=0,1" -> "prose__layers=0,1"."""
        return self.name.replace("/", _DIR_SEP)


def parse_arm(text: str, sources: Sequence[str], num_layers: int) -> Arm:
    """'prose/layers=0,1' -> Arm('prose/layers=0,1', 'prose', 'layers', (0, 1)); 'scratch' ->
    Arm('scratch', None, 'scratch'). Raises TransferError naming the accepted forms."""
    if text in SOURCELESS_MODES:
        return Arm(text, None, text)
    source, _, mode = text.partition("/")
    layers: tuple[int, ...] = ()
    if mode.startswith(_LAYERS):
        mode, layers = "layers", tuple(int(i) for i in mode[len(_LAYERS):].split(",") if i)
    if source not in sources or mode not in SOURCE_MODES:
        raise TransferError(
            f"arm {text!r}: write one of {SOURCELESS_MODES} or '<source>/<mode>' with a source in "
            f"{list(sources)} and a mode in full, frozen_body, layers=i,j, grow_vocab, stats_init, "
            "shuffled_source.")
    check_mode(mode, layers, num_layers)
    return Arm(text, source, mode, layers)
