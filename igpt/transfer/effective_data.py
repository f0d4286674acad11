"""Effective data transferred (Hernandez et al. 2021, "Scaling Laws for Transfer"), in tokens.

Pure numpy and scipy, no jax. Scratch runs of one model size, trained on datasets of several
sizes D (each early-stopped), give its optimum test loss L_scratch(D). An arm pretrained
elsewhere and fine-tuned on D_F tokens reaches L_arm; the scratch data that reaches the same
loss is the effective data D_E = L_scratch^-1(L_arm), the data transferred D_T = D_E - D_F,
and the effective data multiplier D_E / D_F. D_T < 0 is ossification: pretraining hurt.

The scratch curve (fit_scratch) is, by default, the isotonic (non-increasing) regression of
loss against log D: it assumes only that more data does not hurt, so no functional form
decides D_E. Its knots are joined by a monotone cubic (PCHIP) in log D, not straight lines: a
scratch curve is convex in log D, so a chord lies above it and overstates D_E by about
a * h^2 / 8 (h the knot spacing in ln D, a the curve's exponent): 1% at quarter-decade
spacing, enough for a no-transfer arm to look like transfer when seeds agree; PCHIP stays
monotone and cuts that about 100-fold. method="power_law" fits L_inf + A * D^-a instead,
which smooths noisy seeds and gives a floor L_inf, at the price of trusting the form.

Inverting the curve is "exact" inside the range of D scratch was measured at, "extrapolated"
outside it (the value leans on the end segment or the fitted law), and a "bound" below the
curve's floor: D_E is then at least the largest D measured, and the value is that bound.

Per-seed values are pooled like speedups (igpt.transfer.intervals): n >= 5 a 95% t-interval,
2 to 4 the range, 1 nothing; the multiplier on the log scale, D_T (which can be negative) on
the plain scale. transfer_law fits D_T = k * D_F^alpha * N^beta over model sizes N.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence, Union

import numpy as np
from scipy import interpolate, optimize

from igpt.transfer.intervals import Estimate, arithmetic_interval, geometric_interval

# exact: the arm's loss lies within scratch's measured losses; D_E is interpolated.
# extrapolated: it lies outside them, D_E beyond the measured D, read off the end of the curve.
# bound: it lies below the curve's floor; D_E is at least the value (the largest D measured).
InversionStatus = Literal["exact", "extrapolated", "bound"]
CurveMethod = Literal["isotonic", "power_law"]
LawStatus = Literal["fit", "too few positive points", "too few sizes"]

MIN_LAW_POINTS = 4
FLAT_BITS = 1e-9  # loss differences below this are float rounding, not a fall


def _points(d: Sequence[float], losses: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(d, dtype=float)
    y = np.asarray(losses, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"{name}: dataset sizes and losses must be non-empty 1-D lists of equal "
                         f"length, got shapes {x.shape} and {y.shape}; pass one (D, loss) per run")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"{name}: dataset sizes must be finite and > 0 tokens, got {x.tolist()}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name}: losses must be finite, got {y.tolist()}; leave out diverged "
                         "runs (metrics.early_stopped gives None for them)")
    return x, y


def _non_increasing(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool adjacent violators: blocks of a weighted non-increasing fit, as (mean x, mean y)
    knots with strictly falling y, so the interpolated curve has one inverse. Falls within
    FLAT_BITS (rounding in the block means, not data) count as ties and are pooled."""
    blocks: list[list[float]] = []                 # [sum w*x, sum w*y, sum w]
    for xi in np.unique(x):
        at = x == xi
        blocks.append([float(xi * at.sum()), float(y[at].sum()), float(at.sum())])
        while len(blocks) >= 2 and blocks[-2][1] / blocks[-2][2] <= blocks[-1][1] / blocks[-1][2] + FLAT_BITS:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    b = np.asarray(blocks)
    return b[:, 0] / b[:, 2], b[:, 1] / b[:, 2]


@dataclass(frozen=True)
class IsotonicCurve:
    """Scratch's non-increasing fit: knots (log D, loss), loss strictly falling, joined by a
    monotone cubic (PCHIP) in log D. Assumes only that more data does not hurt."""
    log_d: tuple[float, ...]
    loss: tuple[float, ...]

    @property
    def d_min(self) -> float:
        return float(np.exp(self.log_d[0]))

    @property
    def d_max(self) -> float:
        """The largest D of the fit (a knot averages D's that noise tied); D_E above it is a bound."""
        return float(np.exp(self.log_d[-1]))

    def _first_slope(self) -> float:
        return (self.loss[1] - self.loss[0]) / (self.log_d[1] - self.log_d[0])

    def loss_at(self, d: float) -> float:
        """Loss at D: the cubic between the knots, the first segment's line before them, flat
        (the floor) after them."""
        x = float(np.log(d))
        if x < self.log_d[0]:
            return float(self.loss[0] + self._first_slope() * (x - self.log_d[0]))
        x = min(x, self.log_d[-1])
        return float(interpolate.PchipInterpolator(self.log_d, self.loss)(x))

    def invert(self, loss: float) -> tuple[float, InversionStatus]:
        """D at which the curve reaches `loss`; above the first knot along the line through
        the first two (extrapolated), below the last knot D_E is at least d_max (bound)."""
        x, y = self.log_d, self.loss
        if loss < y[-1]:
            return self.d_max, "bound"
        if loss > y[0]:
            return float(np.exp(x[0] + (loss - y[0]) / self._first_slope())), "extrapolated"
        spline = interpolate.PchipInterpolator(x, y)
        i = int(np.searchsorted(-np.asarray(y), -loss))      # the segment holding `loss`
        lo, hi = (x[i - 1], x[i]) if i > 0 else (x[0], x[1])
        return float(np.exp(optimize.brentq(lambda u: spline(u) - loss, lo, hi))), "exact"


@dataclass(frozen=True)
class PowerLawCurve:
    """Scratch's fitted L(D) = l_inf + amplitude * D^-exponent, measured from d_min to d_max.
    Smooths noisy seeds and has a floor l_inf no finite dataset reaches."""
    l_inf: float
    amplitude: float
    exponent: float
    d_min: float
    d_max: float

    def loss_at(self, d: float) -> float:
        return float(self.l_inf + self.amplitude * d ** -self.exponent)

    def invert(self, loss: float) -> tuple[float, InversionStatus]:
        """D at which the law reaches `loss`; outside [d_min, d_max] extrapolated; at or below
        l_inf no D reaches it, and D_E is at least d_max (bound)."""
        if loss <= self.l_inf:
            return self.d_max, "bound"
        d = float((self.amplitude / (loss - self.l_inf)) ** (1.0 / self.exponent))
        return d, "exact" if self.d_min <= d <= self.d_max else "extrapolated"


ScratchCurve = Union[IsotonicCurve, PowerLawCurve]


def _isotonic(x: np.ndarray, y: np.ndarray) -> IsotonicCurve:
    log_d, loss = _non_increasing(np.log(x), y)
    if log_d.size < 2:
        raise ValueError("fit_scratch: scratch's loss does not fall with D over the sizes given "
                         f"(D {np.unique(x).tolist()}); train scratch on datasets small enough to be "
                         "data-limited")
    return IsotonicCurve(tuple(float(v) for v in log_d), tuple(float(v) for v in loss))


def _power_law(x: np.ndarray, y: np.ndarray) -> PowerLawCurve:
    if np.unique(x).size < 4:
        raise ValueError(f"fit_scratch: a power law plus constant needs >= 4 distinct D, got "
                         f"{np.unique(x).size}; add scratch sizes or use method='isotonic'")
    t = np.log(x) - np.log(x).mean()              # centred log D keeps the amplitude well scaled
    span = float(y.max() - y.min())
    if span <= 0:
        raise ValueError("fit_scratch: scratch's loss is the same at every D; train scratch on "
                         "datasets small enough to be data-limited")

    def model(t, l_inf, log_amp, exponent):
        return l_inf + np.exp(log_amp - exponent * t)

    best = None                                   # start from the best straight line in log-log
    for gap in span * np.logspace(-3, 2, 40):
        l_inf = float(y.min()) - gap
        slope, icpt = np.polyfit(t, np.log(y - l_inf), 1)
        if slope < 0:
            sse = float(np.sum((model(t, l_inf, icpt, -slope) - y) ** 2))
            if best is None or sse < best[0]:
                best = (sse, (l_inf, icpt, -slope))
    if best is None:
        raise ValueError("fit_scratch: scratch's loss rises with D; use method='isotonic' or check "
                         "that each run is early-stopped")
    lo, hi = (-np.inf, -np.inf, 1e-4), (float(y.min()), np.inf, 10.0)
    p0 = np.clip(best[1], np.nextafter(lo, hi), np.nextafter(hi, lo))
    try:
        (l_inf, log_amp, exponent), _ = optimize.curve_fit(model, t, y, p0=p0, bounds=(lo, hi),
                                                           maxfev=20000)
    except RuntimeError as e:
        raise ValueError(f"fit_scratch: the power law did not converge ({e}); use "
                         "method='isotonic'") from None
    amplitude = float(np.exp(log_amp + exponent * np.log(x).mean()))
    return PowerLawCurve(float(l_inf), amplitude, float(exponent), float(x.min()), float(x.max()))


def fit_scratch(d: Sequence[float], losses: Sequence[float],
                method: CurveMethod = "isotonic") -> ScratchCurve:
    """Scratch's optimum test loss as a monotone function of dataset size D (tokens).

    One (D, loss) per scratch run; several runs at one D (seeds, when pooling) are averaged.
    "isotonic" (default) assumes nothing but that more data does not hurt; "power_law" fits
    L_inf + A * D^-a by least squares in loss (smoother for noisy seeds, trusts the form)."""
    x, y = _points(d, losses, "fit_scratch")
    if method == "isotonic":
        return _isotonic(x, y)
    if method == "power_law":
        return _power_law(x, y)
    raise ValueError(f"fit_scratch: unknown method {method!r}; use 'isotonic' or 'power_law'")


@dataclass(frozen=True)
class ScratchFits:
    """Scratch curves of one model size: one per seed, and one over all seeds' runs."""
    per_seed: dict[int, ScratchCurve]
    pooled: ScratchCurve


def fit_scratch_seeds(runs: Mapping[int, tuple[Sequence[float], Sequence[float]]],
                      method: CurveMethod = "isotonic") -> ScratchFits:
    """fit_scratch per seed and pooled; `runs[seed]` is (dataset sizes, optimum test losses)."""
    if not runs:
        raise ValueError("fit_scratch_seeds: no scratch seeds; pass {seed: (sizes, losses)}")
    per_seed = {int(s): fit_scratch(d, l, method) for s, (d, l) in sorted(runs.items())}
    d_all = np.concatenate([np.asarray(d, dtype=float) for d, _ in runs.values()])
    l_all = np.concatenate([np.asarray(l, dtype=float) for _, l in runs.values()])
    return ScratchFits(per_seed, fit_scratch(d_all, l_all, method))


@dataclass(frozen=True)
class EffectiveData:
    """One arm seed at fine-tuning size d_f: effective data d_e, transferred d_t = d_e - d_f
    (< 0: ossification), multiplier d_e / d_f, read with `status` (for a bound, each is a lower
    bound); scratch_d_max is the largest D its scratch curve was measured at."""
    d_f: float
    loss: float
    d_e: float
    d_t: float
    multiplier: float
    status: InversionStatus
    scratch_d_max: float


def effective_data(scratch: ScratchCurve, d_f: float, arm_loss: float) -> EffectiveData:
    """How much scratch data reaches the loss an arm reached after fine-tuning on d_f tokens."""
    if not (np.isfinite(d_f) and d_f > 0):
        raise ValueError(f"effective_data: d_f must be finite and > 0 tokens, got {d_f}")
    if not np.isfinite(arm_loss):
        raise ValueError(f"effective_data: arm loss must be finite, got {arm_loss}; leave out "
                         "diverged seeds")
    d_e, status = scratch.invert(float(arm_loss))
    return EffectiveData(float(d_f), float(arm_loss), d_e, d_e - float(d_f), d_e / float(d_f),
                         status, scratch.d_max)


@dataclass(frozen=True)
class PooledEffectiveData:
    """One arm at one d_f over its seeds. Only exact seeds enter `d_t` and `multiplier` (also
    extrapolated ones when asked); the others are counted, never dropped from `per_seed`."""
    d_f: float
    per_seed: dict[int, EffectiveData]
    d_t: Estimate | None
    multiplier: Estimate | None
    n_exact: int
    n_extrapolated: int
    n_bound: int

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)


def effective_data_seeds(scratch: ScratchCurve | Mapping[int, ScratchCurve], d_f: float,
                         arm_losses: Mapping[int, float], confidence: float = 0.95,
                         include_extrapolated: bool = False) -> PooledEffectiveData:
    """Per-seed effective data of one arm at d_f, pooled: D_T as a mean, the multiplier as a
    geometric mean, each with a t-interval, range or nothing by the number of seeds.

    `scratch` is one curve for every seed (ScratchFits.pooled) or a curve per seed, paired
    with the arm's seed as speedups are (ScratchFits.per_seed)."""
    if not arm_losses:
        raise ValueError("effective_data_seeds: no arm seeds; pass {seed: early-stopped test loss}")
    per_seed = {}
    for seed, loss in sorted(arm_losses.items()):
        if isinstance(scratch, Mapping):
            if seed not in scratch:
                raise ValueError(f"effective_data_seeds: arm seed {seed} has no scratch curve (scratch "
                                 f"seeds {sorted(scratch)}); run scratch at that seed or pass the "
                                 "pooled curve")
            curve = scratch[seed]
        else:
            curve = scratch
        per_seed[int(seed)] = effective_data(curve, d_f, loss)
    count = {k: sum(e.status == k for e in per_seed.values()) for k in ("exact", "extrapolated", "bound")}
    kept = [e for e in per_seed.values()
            if e.status == "exact" or (include_extrapolated and e.status == "extrapolated")]
    d_t = arithmetic_interval([e.d_t for e in kept], confidence) if kept else None
    mult = geometric_interval([e.multiplier for e in kept], confidence) if kept else None
    return PooledEffectiveData(float(d_f), per_seed, d_t, mult, count["exact"],
                               count["extrapolated"], count["bound"])


@dataclass(frozen=True)
class TransferLaw:
    """D_T = k * D_F^alpha * N^beta fitted by least squares on logs, with bootstrap intervals
    over seeds (`*_interval`: (lo, hi) at `confidence`, None when no refit succeeded).
    `status` says why there is no fit; `points` are the (N, D_F, mean D_T) fitted."""
    status: LawStatus
    k: float | None
    alpha: float | None
    beta: float | None
    k_interval: tuple[float, float] | None
    alpha_interval: tuple[float, float] | None
    beta_interval: tuple[float, float] | None
    points: tuple[tuple[float, float, float], ...]
    n_boot: int
    confidence: float


def _law_points(cells: list[tuple[float, PooledEffectiveData]],
                seeds: Sequence[int] | None) -> list[tuple[float, float, float]]:
    """(N, D_F, mean exact D_T) per cell with mean D_T > 0; `seeds` resamples the seeds."""
    out = []
    for n, cell in cells:
        exact = {s: e.d_t for s, e in cell.per_seed.items() if e.status == "exact"}
        values = [exact[s] for s in (exact if seeds is None else seeds) if s in exact]
        if values and np.mean(values) > 0:
            out.append((n, cell.d_f, float(np.mean(values))))
    return out


def _scratch_d_max(cell: PooledEffectiveData) -> float:
    """The largest D every seed's scratch curve was measured at."""
    return min(e.scratch_d_max for e in cell.per_seed.values())


def _law_status(points: list[tuple[float, float, float]]) -> LawStatus:
    if len(points) < MIN_LAW_POINTS:
        return "too few positive points"
    if len({p[0] for p in points}) < 2 or len({p[1] for p in points}) < 3:
        return "too few sizes"
    return "fit"


def _lstsq(points: list[tuple[float, float, float]]) -> np.ndarray:
    """(log k, alpha, beta) minimising squared error in log D_T."""
    p = np.log(np.asarray(points))
    design = np.column_stack([np.ones(len(p)), p[:, 1], p[:, 0]])
    return np.linalg.lstsq(design, p[:, 2], rcond=None)[0]


def transfer_law(cells: Mapping[float, Sequence[PooledEffectiveData]], low_data_fraction: float = 0.1,
                 n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> TransferLaw:
    """Fit log D_T = log k + alpha log D_F + beta log N over the low-data regime.

    `cells[N]` lists model size N's arm (one source) at each D_F. The regime is fixed before
    looking at D_T: D_F at most `low_data_fraction` of the largest D scratch was measured at
    for that N (every seed), so D_F is small against the data scratch needs and D_E has room
    to be interpolated. Each cell enters as its mean D_T over exact seeds, if positive (log);
    needs >= 4 such points over >= 2 N and >= 3 D_F. Intervals: resample the seeds with
    replacement (rng `seed`), recompute the cell means and refit, `n_boot` times; percentiles."""
    if not 0.0 < low_data_fraction <= 1.0:
        raise ValueError(f"transfer_law: need 0 < low_data_fraction <= 1, got {low_data_fraction}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"transfer_law: need 0 < confidence < 1, got {confidence}")
    if n_boot < 0:
        raise ValueError(f"transfer_law: need n_boot >= 0, got {n_boot}")
    if any(not (np.isfinite(n) and n > 0) for n in cells):
        raise ValueError(f"transfer_law: model sizes must be > 0 parameters, got {list(cells)}")
    regime = [(float(n), c) for n, per_n in cells.items() for c in per_n
              if c.per_seed and c.d_f <= low_data_fraction * _scratch_d_max(c) * (1 + 1e-9)]  # d_max went through log/exp
    points = _law_points(regime, None)
    status = _law_status(points)
    if status != "fit":
        return TransferLaw(status, None, None, None, None, None, None, tuple(points), 0, confidence)
    log_k, alpha, beta = _lstsq(points)
    seeds = sorted({s for _, c in regime for s in c.per_seed})
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        sample = _law_points(regime, rng.choice(seeds, size=len(seeds), replace=True).tolist())
        if _law_status(sample) == "fit":
            boots.append(_lstsq(sample))
    intervals: list[tuple[float, float] | None] = [None, None, None]
    if boots:
        q = 100.0 * np.array([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
        lo, hi = np.percentile(np.asarray(boots), q, axis=0)
        intervals = [(float(np.exp(lo[0])), float(np.exp(hi[0]))), (float(lo[1]), float(hi[1])),
                     (float(lo[2]), float(hi[2]))]
    return TransferLaw("fit", float(np.exp(log_k)), float(alpha), float(beta), *intervals,
                       tuple(points), len(boots), confidence)
