"""The arms of a transfer experiment, parsed once from the config's strings.

An arm is "scratch" (the baseline: fresh weights), a control that needs no source ("mimetic",
"frozen_random"), or "<source>/<mode>" with mode full, frozen_body, layers=i,j, grow_vocab, or one of the
source controls stats_init and shuffled_source (igpt.transfer.init says what each carries and
trains), or "<source>/bridge": the source's model first goes through a random-label bridge stage
on the target's inputs (igpt.transfer.bridge), every block trained there, or with
"bridge=i-j" / "bridge=i,j" only the listed blocks (a partial bridge); the bridged model then
trains on the target as "full" does. No jax, so the report can name the baseline and the
controls without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

SCRATCH = "scratch"
SOURCELESS_MODES = (SCRATCH, "mimetic", "frozen_random")  # arms named by the mode alone
SOURCE_MODES = ("full", "frozen_body", "layers", "grow_vocab", "stats_init", "shuffled_source")  # "<source>/<mode>"
MODES = SOURCELESS_MODES + SOURCE_MODES
BRIDGE = "bridge"  # an arm's stage, not an init mode: its target run starts "full" from the bridged model
ARM_MODES = SOURCE_MODES + (BRIDGE,)
CONTROLS = ("stats_init", "shuffled_source", "mimetic", "frozen_random")  # what a transfer claim must beat
SHUFFLED = "shuffled"  # the shuffled-source control pretrains its own source run, "<source>__shuffled"
_LAYERS = "layers="
_BRIDGE_BLOCKS = BRIDGE + "="
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
    (None for scratch), its init mode (or BRIDGE) and the blocks it trains: in the target run
    for mode "layers", in the bridge stage for BRIDGE (empty: all of them)."""
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


def parse_blocks(text: str) -> tuple[int, ...]:
    """'0,1' -> (0, 1); '0-2' -> (0, 1, 2); '0-1,3' -> (0, 1, 3)."""
    blocks: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        blocks.extend(range(int(first), int(last or first) + 1))
    return tuple(blocks)


def parse_arm(text: str, sources: Sequence[str], num_layers: int) -> Arm:
    """'prose/layers=0,1' -> Arm('prose/layers=0,1', 'prose', 'layers', (0, 1)); 'prose/bridge=0-1'
    -> Arm('prose/bridge=0-1', 'prose', 'bridge', (0, 1)); 'scratch' -> Arm('scratch', None,
    'scratch'). Raises TransferError naming the accepted forms."""
    if text in SOURCELESS_MODES:
        return Arm(text, None, text)
    source, _, mode = text.partition("/")
    layers: tuple[int, ...] = ()
    try:
        for prefix, name in ((_LAYERS, "layers"), (_BRIDGE_BLOCKS, BRIDGE)):
            if mode.startswith(prefix):
                mode, layers = name, parse_blocks(mode[len(prefix):])
    except ValueError:
        mode = text  # not a list of block numbers: refused below
    if source not in sources or mode not in ARM_MODES:
        raise TransferError(
            f"arm {text!r}: write one of {SOURCELESS_MODES} or '<source>/<mode>' with a source in "
            f"{list(sources)} and a mode in full, frozen_body, layers=i,j, grow_vocab, stats_init, "
            "shuffled_source, bridge, bridge=i-j.")
    if mode == BRIDGE:
        check_blocks(layers, num_layers, f"arm {text!r}")
    else:
        check_mode(mode, layers, num_layers)
    return Arm(text, source, mode, layers)


def check_blocks(blocks: Sequence[int], num_layers: int, what: str) -> None:
    """A bridge's blocks: indices of the model's blocks, each once (none: every block)."""
    if any(not 0 <= i < num_layers for i in blocks) or len(set(blocks)) != len(blocks):
        raise TransferError(f"{what}: bridge blocks {tuple(blocks)} must be distinct block indices in "
                            f"[0, {num_layers}), e.g. bridge=0-1.")
