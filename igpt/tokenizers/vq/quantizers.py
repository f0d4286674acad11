"""The VQ tokenizers' quantizers, as pure fp32 functions a test can differentiate one path at
a time: vector quantization with an EMA codebook, and finite scalar quantization (FSQ); each
behind the `Quantizer` protocol, chosen by `quantizer.kind` (build_quantizer).

Vector quantization (van den Oord et al. 2017, EMA updates as in Razavi et al. 2019):
  codebook loss   mean ||sg(z) - e||^2   moves codes only (reported; the EMA moves them here)
  commitment loss mean ||z - sg(e)||^2   moves the encoder; the objective weights it by beta
Both are computed from z and e *before* the straight-through substitution z + sg(e - z):
computed after it, the codebook term would carry the encoder's gradient and none to the code.

Statistics across devices: the train step is one `jax.jit` over global arrays whose batch axis
is sharded on the mesh, so the EMA counts and sums (`jnp.sum`, a one-hot matmul over the
flattened batch) are sums over the *global* batch: XLA's partitioner inserts the all-reduce
across the batch shards and processes. No psum is written; the same code runs on one device.

FSQ (Mentzer et al. 2023): each of d latent channels is bounded and rounded to one of
levels[i] values; the code id is the mixed-radix number of the rounded digits, so
levels (8, 8, 8) give 512 codes with no codebook to learn and no dead codes to revive.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar, NamedTuple, Protocol, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from igpt.tokenizers.base import TokenizerError

F32 = jnp.float32
LAPLACE_EPS = 1e-5  # additive smoothing of EMA counts so an empty code never divides by 0


class Quantized(NamedTuple):
    z_q: jax.Array              # straight-through output: the code's value, the identity's gradient
    codes: jax.Array            # int32 ids, shape z.shape[:-1]
    codebook_loss: jax.Array    # scalar; zero for FSQ
    commitment_loss: jax.Array  # scalar; zero for FSQ


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def straight_through(z: jax.Array, value: jax.Array) -> jax.Array:
    """`value` in the forward pass, the identity (to z) in the backward pass."""
    return z + jax.lax.stop_gradient(value - z)


# ---------------------------------------------------------------------------------------------
# Vector quantization with an EMA codebook

def vq_state(codebook: jax.Array, counts: jax.Array) -> dict[str, jax.Array]:
    """EMA state whose codebook is `codebook` [K, d], as if each code had been seen counts[k]
    times per batch (so a later EMA step weighs it like a real history)."""
    codebook, counts = jnp.asarray(codebook, F32), jnp.asarray(counts, F32)
    return {"codebook": codebook, "ema_count": counts, "ema_sum": codebook * counts[:, None]}


def codebook_vectors(state: dict[str, jax.Array], l2: bool) -> jax.Array:
    """The vectors codes stand for: the codebook, on the unit sphere when codes are l2-normalised."""
    return l2_normalize(state["codebook"]) if l2 else state["codebook"]


def nearest_codes(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """int32 id of the nearest code (squared Euclidean) for each vector of z [..., d]."""
    z = z.astype(F32)
    d2 = (jnp.sum(codebook * codebook, axis=-1)
          - 2.0 * jnp.einsum("...d,kd->...k", z, codebook, precision=jax.lax.Precision.HIGHEST))
    return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def vq_quantize(z: jax.Array, state: dict[str, jax.Array], l2: bool = False) -> Quantized:
    """Nearest-code quantization of z [..., d] (cast to fp32), losses before the straight-through."""
    z = z.astype(F32)
    if l2:
        z = l2_normalize(z)
    codebook = codebook_vectors(state, l2)
    codes = nearest_codes(z, codebook)
    e = codebook[codes]
    codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(z) - e))
    commitment_loss = jnp.mean(jnp.square(z - jax.lax.stop_gradient(e)))
    return Quantized(straight_through(z, e), codes, codebook_loss, commitment_loss)


def vq_lookup(codes: jax.Array, state: dict[str, jax.Array], l2: bool = False) -> jax.Array:
    """Code ids [...] -> their vectors [..., d]."""
    return codebook_vectors(state, l2)[codes]


def kmeans(x: jax.Array, k: int, key: jax.Array, iters: int) -> tuple[jax.Array, jax.Array]:
    """(centres [k, d], counts [k]) of Lloyd's k-means on x [n, d], started from k distinct
    random rows; a centre that wins no row keeps its place (a restart revives it later)."""
    if x.shape[0] < k:
        raise TokenizerError(
            f"k-means initialisation got {x.shape[0]} vectors for {k} codes; raise "
            "quantizer.kmeans_batches or train.global_batch so the first batches hold at least "
            "one latent vector per code.")
    x = x.astype(F32)
    centres = x[jax.random.choice(key, x.shape[0], (k,), replace=False)]

    def assign(centres):
        onehot = jax.nn.one_hot(nearest_codes(x, centres), k, dtype=F32)
        return onehot.sum(0), onehot.T @ x

    def step(_, centres):
        counts, sums = assign(centres)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres)

    centres = jax.lax.fori_loop(0, iters, step, centres)
    return centres, assign(centres)[0]


def vq_kmeans_init(z: jax.Array, k: int, key: jax.Array, iters: int, batch_vectors: int,
                   l2: bool = False) -> dict[str, jax.Array]:
    """EMA state from k-means over latents z [..., d] of the first batches; counts are scaled
    to one batch of `batch_vectors` latents so the EMA continues at the right rate."""
    x = z.reshape(-1, z.shape[-1]).astype(F32)
    if l2:
        x = l2_normalize(x)
    centres, counts = kmeans(x, k, key, iters)
    if l2:
        centres = l2_normalize(centres)
    return vq_state(centres, counts * (batch_vectors / x.shape[0]))


def restart_count(batch_vectors: int, num_codes: int) -> float:
    """EMA count a restarted code starts with: an average code's share of one batch, so it gets
    as long as a typical code to win vectors before it could count as dead again."""
    return batch_vectors / num_codes


def vq_ema_update(state: dict[str, jax.Array], z: jax.Array, codes: jax.Array, key: jax.Array, *,
                  decay: float, dead_threshold: float, l2: bool = False) -> tuple[dict[str, jax.Array], jax.Array]:
    """One EMA step of the codebook from this batch's latents z [..., d] and their codes, then
    dead-code restarts: a code whose EMA count fell below `dead_threshold` moves to a random
    latent of the batch and its EMA count and sum restart as if it had always sat there.
    Returns (state, number of codes restarted). Sums run over the global batch (see module doc)."""
    z = jax.lax.stop_gradient(z).astype(F32)
    x = z.reshape(-1, z.shape[-1])
    if l2:
        x = l2_normalize(x)
    num_codes = state["codebook"].shape[0]
    onehot = jax.nn.one_hot(codes.reshape(-1), num_codes, dtype=F32)
    count = decay * state["ema_count"] + (1.0 - decay) * onehot.sum(0)
    total = decay * state["ema_sum"] + (1.0 - decay) * jnp.einsum(
        "nk,nd->kd", onehot, x, precision=jax.lax.Precision.HIGHEST)

    dead = count < dead_threshold
    fresh = x[jax.random.randint(key, (num_codes,), 0, x.shape[0])]
    restart = restart_count(x.shape[0], num_codes)
    count = jnp.where(dead, restart, count)
    total = jnp.where(dead[:, None], fresh * restart, total)

    n = count.sum()
    smoothed = (count + LAPLACE_EPS) / (n + num_codes * LAPLACE_EPS) * n
    codebook = total / smoothed[:, None]
    if l2:
        codebook = l2_normalize(codebook)
    return {"codebook": codebook, "ema_count": count, "ema_sum": total}, dead.sum()


def check_vq_settings(num_codes: int, decay: float, dead_threshold: float, batch_vectors: int) -> None:
    """Rejects settings under which restarts would never stop or the EMA would not move."""
    if num_codes < 2 or not 0.0 < decay < 1.0:
        raise TokenizerError(f"quantizer.num_codes={num_codes}, quantizer.decay={decay}: use at least 2 codes "
                             "and a decay in (0, 1), e.g. 0.99.")
    restart = restart_count(batch_vectors, num_codes)
    if not 0.0 <= dead_threshold < restart:
        raise TokenizerError(
            f"quantizer.dead_threshold={dead_threshold} must lie in [0, {restart:g}), the EMA count a restarted "
            f"code starts with ({batch_vectors} latents per batch / {num_codes} codes); otherwise restarted codes "
            "count as dead at once. Lower dead_threshold or raise train.global_batch.")


# ---------------------------------------------------------------------------------------------
# Finite scalar quantization

def check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    levels = tuple(int(v) for v in levels)
    if not levels or any(v < 2 for v in levels):
        raise TokenizerError(f"quantizer.levels={list(levels)}: give one count of at least 2 per latent "
                             "channel, e.g. (8, 8, 8) for 512 codes.")
    return levels


def fsq_num_codes(levels: Sequence[int]) -> int:
    return math.prod(check_levels(levels))


def _fsq_constants(levels: Sequence[int]) -> tuple[jax.Array, jax.Array, jax.Array]:
    lv = jnp.asarray(levels, F32)
    half_width = jnp.floor(lv / 2.0)
    basis = jnp.asarray([math.prod(levels[:i]) for i in range(len(levels))], jnp.int32)
    return lv, half_width, basis


def fsq_quantize(z: jax.Array, levels: Sequence[int]) -> Quantized:
    """Each channel of z [..., len(levels)] squashed into levels[i] bins and rounded with a
    straight-through gradient; outputs lie in [-1, 1]."""
    levels = check_levels(levels)
    lv, half_width, basis = _fsq_constants(levels)
    z = z.astype(F32)
    # A hair wider than the bins, so the end bins are reached (and even L=2 has a finite shift),
    # yet less than half a bin over, so rounding stays in range.
    half_l = (lv - 1.0) * (1.0 + 1e-3) / 2.0
    offset = jnp.where(lv % 2 == 0, 0.5, 0.0)
    bounded = jnp.tanh(z + jnp.arctanh(offset / half_l)) * half_l - offset
    digits = straight_through(bounded, jnp.round(bounded))
    codes = jnp.sum((jax.lax.stop_gradient(digits) + half_width).astype(jnp.int32) * basis, axis=-1)
    zero = jnp.zeros((), F32)
    return Quantized(digits / half_width, codes, zero, zero)


def fsq_lookup(codes: jax.Array, levels: Sequence[int]) -> jax.Array:
    """Code ids [...] -> their values [..., len(levels)] in [-1, 1]."""
    lv, half_width, basis = _fsq_constants(check_levels(levels))
    digits = (codes[..., None] // basis) % lv.astype(jnp.int32)
    return (digits.astype(F32) - half_width) / half_width


# ---------------------------------------------------------------------------------------------
# The quantizers behind one protocol, chosen by quantizer.kind

class Quantizer(Protocol):
    """What the VQ-VAE and its fitting task ask of a quantizer, whichever kind it is. State is
    a dict of fp32 arrays ({} for a quantizer with nothing to learn)."""

    kind: ClassVar[str]

    @property
    def num_codes(self) -> int: ...

    @property
    def code_dim(self) -> int:
        """Channels of the latents it quantizes: the encoder's output width."""

    @property
    def commitment_weight(self) -> float:
        """Weight of the commitment loss in the fitting objective."""

    def initial_state(self) -> dict[str, jax.Array]:
        """The state's shapes, before fitting has seen a latent."""

    def warm_start(self, latents: Callable[[int], jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        """The state fitting starts from; latents(i) is the initial encoder's output on batch i."""

    def update(self, state: dict[str, jax.Array], z: jax.Array, codes: jax.Array,
               key: jax.Array) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """(state, metrics) after one training step's latents z and their codes."""

    def quantize(self, state: dict[str, jax.Array], z: jax.Array) -> Quantized: ...

    def lookup(self, state: dict[str, jax.Array], codes: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class VectorQuantizer:
    """EMA vector quantization: k-means over the first batches places the codes, running
    averages of the latents each code wins move it, and codes left unused restart."""

    kind: ClassVar[str] = "vq"
    num_codes: int = 512
    code_dim: int = 64              # a low dimension (8-32) with l2=True gives ViT-VQGAN's factorised codes
    l2: bool = False                # codes and latents on the unit sphere (cosine matching)
    decay: float = 0.99             # EMA decay of code counts and sums
    beta: float = 0.25              # commitment weight on the encoder term
    dead_threshold: float = 1.0     # EMA count below which a code restarts at a batch latent
    kmeans_batches: int = 4         # the first batches whose latents seed the codebook by k-means
    kmeans_iters: int = 10

    @property
    def commitment_weight(self) -> float:
        return self.beta

    def initial_state(self) -> dict[str, jax.Array]:
        return vq_state(jnp.zeros((self.num_codes, self.code_dim)), jnp.zeros((self.num_codes,)))

    def warm_start(self, latents: Callable[[int], jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        """The codebook from k-means over the latents of the first kmeans_batches batches."""
        z = jnp.concatenate([latents(i) for i in range(self.kmeans_batches)])
        batch_vectors = z.size // z.shape[-1] // self.kmeans_batches
        check_vq_settings(self.num_codes, self.decay, self.dead_threshold, batch_vectors)
        init = jax.jit(lambda z, key: vq_kmeans_init(z, self.num_codes, key, self.kmeans_iters, batch_vectors,
                                                     self.l2))
        return init(z, key)

    def update(self, state: dict[str, jax.Array], z: jax.Array, codes: jax.Array,
               key: jax.Array) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        state, restarted = vq_ema_update(state, z, codes, key, decay=self.decay,
                                         dead_threshold=self.dead_threshold, l2=self.l2)
        return state, {"restarted": restarted, "active_codes": jnp.mean(state["ema_count"] >= self.dead_threshold)}

    def quantize(self, state: dict[str, jax.Array], z: jax.Array) -> Quantized:
        return vq_quantize(z, state, self.l2)

    def lookup(self, state: dict[str, jax.Array], codes: jax.Array) -> jax.Array:
        return vq_lookup(codes, state, self.l2)


@dataclasses.dataclass(frozen=True)
class FiniteScalarQuantizer:
    """FSQ: fixed bins per latent channel, so there is no state to learn and nothing to commit to."""

    kind: ClassVar[str] = "fsq"
    commitment_weight: ClassVar[float] = 0.0
    levels: tuple[int, ...] = (8, 8, 8)  # bins per latent channel; their product is the number of codes

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", check_levels(self.levels))

    @property
    def num_codes(self) -> int:
        return fsq_num_codes(self.levels)

    @property
    def code_dim(self) -> int:
        return len(self.levels)

    def initial_state(self) -> dict[str, jax.Array]:
        return {}

    def warm_start(self, latents: Callable[[int], jax.Array], key: jax.Array) -> dict[str, jax.Array]:
        return {}

    def update(self, state: dict[str, jax.Array], z: jax.Array, codes: jax.Array,
               key: jax.Array) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        return state, {}

    def quantize(self, state: dict[str, jax.Array], z: jax.Array) -> Quantized:
        return fsq_quantize(z, self.levels)

    def lookup(self, state: dict[str, jax.Array], codes: jax.Array) -> jax.Array:
        return fsq_lookup(codes, self.levels)


QUANTIZERS: dict[str, type] = {cls.kind: cls for cls in (VectorQuantizer, FiniteScalarQuantizer)}


def _quantizer_class(kind: str) -> type:
    if kind not in QUANTIZERS:
        raise TokenizerError(f"quantizer kind {kind!r} is unknown; use one of {sorted(QUANTIZERS)} "
                             "('vq': EMA vector quantization, 'fsq': finite scalar quantization).")
    return QUANTIZERS[kind]


def build_quantizer(quantizer: ml_collections.ConfigDict | dict) -> Quantizer:
    """The quantizer a config section (or a saved tokenizer's settings) describes."""
    settings = dict(quantizer)
    return _quantizer_class(settings.pop("kind"))(**settings)


def quantizer_config(kind: str = "vq", **settings: Any) -> ml_collections.ConfigDict:
    """The quantizer section: `kind` and its own settings, defaults filled in. Settings of the
    other kinds are dropped (one call can name both kinds' sizes) and unknown ones refused, so
    overriding the other kind's field later is an error."""
    cls = _quantizer_class(kind)
    known = {f.name for c in QUANTIZERS.values() for f in dataclasses.fields(c)}
    if set(settings) - known:
        raise TokenizerError(f"quantizer settings {sorted(set(settings) - known)} are unknown; the kinds "
                             f"take {sorted(known)}.")
    own = {f.name for f in dataclasses.fields(cls)}
    q = cls(**{k: v for k, v in settings.items() if k in own})
    return ml_collections.ConfigDict(dict(kind=kind, **dataclasses.asdict(q)))
