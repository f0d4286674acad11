"""Effective data transferred (Hernandez et al. 2021) against planted answers: synthetic scratch
curves L(D) = L_inf + A * D^-a over 5 seeds, arms whose loss is scratch's at D_F + D_T for a
planted D_T = k * D_F^alpha * N^beta (pure numpy, no training)."""
import math

import numpy as np
import pytest

from igpt.transfer.effective_data import (IsotonicCurve, PowerLawCurve, effective_data, effective_data_seeds,
                                          fit_scratch, fit_scratch_seeds, transfer_law)
from igpt.transfer.intervals import arithmetic_interval

K, ALPHA, BETA = 1.9e4, 0.18, 0.38          # Hernandez et al. 2021, text -> code
SIZES_N = (1e5, 1e6, 1e7)                   # non-embedding parameters
SIZES_DF = (1e4, 1e5, 1e6)                  # fine-tuning tokens; planted D_E stays <= 1.1e8
SCRATCH_D = np.logspace(3, 9, 25)           # scratch measured a decade beyond the largest D_E
SEEDS = range(5)
NOISE = 5e-4                                # bits/token, per run
T_975_4DF = 2.7764451051977987


def scratch_loss(n, d):
    return 1.0 + 5.0 * n ** -0.1 + 30.0 * np.asarray(d, dtype=float) ** -0.3


def planted_d_t(n, d_f):
    return K * d_f ** ALPHA * n ** BETA


def noisy_scratch(rng, n):
    """Each seed's scratch runs: (sizes, optimum test losses with run-to-run noise)."""
    return {s: (SCRATCH_D, scratch_loss(n, SCRATCH_D) + rng.normal(0, NOISE, SCRATCH_D.size)) for s in SEEDS}


def sweep(method, rng_seed=1):
    """Per model size N, the arm at each D_F over 5 seeds, read against its own seed's scratch."""
    rng = np.random.default_rng(rng_seed)
    cells = {}
    for n in SIZES_N:
        fits = fit_scratch_seeds(noisy_scratch(rng, n), method)
        cells[n] = [effective_data_seeds(fits.per_seed, d_f, {
            s: scratch_loss(n, d_f + planted_d_t(n, d_f)) + rng.normal(0, NOISE) for s in SEEDS})
            for d_f in SIZES_DF]
    return cells


@pytest.mark.parametrize("method", ["isotonic", "power_law"])
def test_planted_transfer_comes_back_per_point_and_as_a_law(method):
    cells = sweep(method)
    for n, per_n in cells.items():
        for cell in per_n:
            assert cell.n_exact == 5 and cell.d_t.kind == "t" and cell.multiplier.kind == "t"
            assert cell.d_t.mean == pytest.approx(planted_d_t(n, cell.d_f), rel=0.05)
            d_e = cell.d_f + planted_d_t(n, cell.d_f)
            assert cell.multiplier.mean == pytest.approx(d_e / cell.d_f, rel=0.05)
    law = transfer_law(cells)
    assert law.status == "fit" and len(law.points) == 9 and law.n_boot == 1000
    assert law.alpha == pytest.approx(ALPHA, abs=0.01)
    assert law.beta == pytest.approx(BETA, abs=0.01)
    assert law.k == pytest.approx(K, rel=0.1)
    if method == "power_law":                   # no interpolation bias: the intervals cover the truth
        assert law.k_interval[0] < K < law.k_interval[1]
        assert law.alpha_interval[0] < ALPHA < law.alpha_interval[1]
        assert law.beta_interval[0] < BETA < law.beta_interval[1]
    assert transfer_law(cells, n_boot=200) == transfer_law(cells, n_boot=200)  # fixed bootstrap rng


def no_transfer_cell(rng_seed, n=1e6, d_f=1.5e5):
    """An arm that is just another scratch run at d_f (between scratch's grid points), 5 seeds."""
    rng = np.random.default_rng(rng_seed)
    fits = fit_scratch_seeds(noisy_scratch(rng, n))
    return effective_data_seeds(fits.per_seed, d_f, {s: scratch_loss(n, d_f) + rng.normal(0, NOISE)
                                                     for s in SEEDS})


def test_an_arm_no_better_than_scratch_transfers_about_nothing():
    cell = no_transfer_cell(0)
    assert cell.d_t.kind == "t" and cell.d_t.lo < 0.0 < cell.d_t.hi and not cell.d_t.excludes_zero()
    assert abs(cell.d_t.mean) < 0.01 * cell.d_f
    assert cell.multiplier.lo < 1.0 < cell.multiplier.hi
    # over 60 such sweeps: no bias (straight lines between grid points would give +1% of D_F
    # and exclude 0 nearly every time) and the 95% interval excludes 0 about 5% of the time
    cells = [no_transfer_cell(r) for r in range(60)]
    assert abs(np.mean([c.d_t.mean / c.d_f for c in cells])) < 1e-3
    assert sum(c.d_t.excludes_zero() for c in cells) <= 8


def test_an_ossified_arm_has_negative_transfer():
    n, d_f = 1e6, 1e5
    curve = fit_scratch(SCRATCH_D, scratch_loss(n, SCRATCH_D))
    e = effective_data(curve, d_f, scratch_loss(n, 0.4 * d_f))     # worse than scratch on D_F
    assert e.status == "exact" and e.d_t < 0 and e.multiplier == pytest.approx(0.4, rel=0.05)
    cell = effective_data_seeds(curve, d_f, {s: scratch_loss(n, 0.4 * d_f) + 1e-3 * (s - 2) for s in SEEDS})
    assert cell.d_t.excludes_zero() and cell.d_t.hi < 0
    assert cell.multiplier.excludes_one() and cell.multiplier.hi < 1


def test_inversions_outside_scratchs_range_are_marked_never_silent():
    n = 1e6
    iso = fit_scratch(SCRATCH_D, scratch_loss(n, SCRATCH_D))
    floor = scratch_loss(n, SCRATCH_D[-1])
    e = effective_data(iso, 1e4, floor - 0.05)                     # better than any scratch run
    assert (e.status, e.d_e, e.scratch_d_max) == ("bound", pytest.approx(1e9), pytest.approx(1e9))
    e = effective_data(iso, 1e3, scratch_loss(n, 300.0))           # worse than scratch's smallest D
    assert e.status == "extrapolated" and e.d_e < 1e3 and e.d_t < 0
    assert effective_data(iso, 1e4, scratch_loss(n, 1e6)).status == "exact"

    law = fit_scratch(SCRATCH_D, scratch_loss(n, SCRATCH_D), "power_law")
    assert isinstance(law, PowerLawCurve) and law.exponent == pytest.approx(0.3, rel=1e-3)
    e = effective_data(law, 1e4, scratch_loss(n, 1e10))            # past d_max, above the floor
    assert e.status == "extrapolated" and e.d_e == pytest.approx(1e10, rel=1e-2)
    e = effective_data(law, 1e4, law.l_inf - 0.01)                 # below the law's floor
    assert (e.status, e.d_e) == ("bound", pytest.approx(1e9))

    cell = effective_data_seeds(iso, 1e4, {0: floor - 0.05, 1: scratch_loss(n, 1e5), 2: scratch_loss(n, 1e5)})
    assert (cell.n_exact, cell.n_bound, cell.n_seeds, cell.d_t.kind, cell.d_t.n) == (2, 1, 3, "range", 2)


def test_isotonic_fit_is_non_increasing_and_pools_seeds():
    d = [1e3, 1e4, 1e5, 1e6]
    curve = fit_scratch(d, [3.0, 2.5, 2.6, 2.0])                   # noise made 1e5 worse than 1e4
    assert isinstance(curve, IsotonicCurve)
    assert curve.loss == pytest.approx((3.0, 2.55, 2.0))
    assert math.exp(curve.log_d[1]) == pytest.approx(math.sqrt(1e4 * 1e5))
    assert curve.invert(2.55) == (pytest.approx(math.sqrt(1e9)), "exact")
    fits = fit_scratch_seeds({0: (d, [3.0, 2.4, 2.2, 2.0]), 1: (d, [3.2, 2.6, 2.2, 2.0])})
    assert fits.pooled.loss == pytest.approx((3.1, 2.5, 2.2, 2.0))
    assert fits.per_seed[1].loss_at(1e3) == pytest.approx(3.2)


def test_arithmetic_interval_follows_the_seed_count_rules():
    v = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])
    e = arithmetic_interval(v)
    half = T_975_4DF * v.std(ddof=1) / math.sqrt(5)
    assert (e.kind, e.n, e.mean) == ("t", 5, 1.0)
    assert (e.lo, e.hi) == (pytest.approx(1.0 - half), pytest.approx(1.0 + half))
    assert not e.excludes_zero()
    e = arithmetic_interval([-3.0, 1.0, 2.0])
    assert (e.lo, e.hi) == (arithmetic_interval([-3.0, 1.0, 2.0], 0.5).lo, -3.0 + 5.0)
    assert (e.kind, e.lo, e.hi, e.mean) == ("range", -3.0, 2.0, 0.0) and not e.excludes_zero()
    assert (arithmetic_interval([-4.0]).kind, arithmetic_interval([-4.0]).lo) == ("none", None)


def test_too_few_positive_points_gives_no_fit():
    cells = sweep("isotonic")
    few = {SIZES_N[0]: cells[SIZES_N[0]][:2], SIZES_N[1]: cells[SIZES_N[1]][:1]}
    law = transfer_law(few)
    assert (law.status, law.k, law.alpha, law.beta, law.alpha_interval, len(law.points)) == \
        ("too few positive points", None, None, None, None, 3)
    # outside the low-data regime (D_F > 10% of scratch's largest D) points do not count
    assert transfer_law(cells, low_data_fraction=5e-5).status == "too few positive points"  # D_F 1e4 only
    # ossified everywhere: nothing positive to take the log of
    n, curve = 1e6, fit_scratch(SCRATCH_D, scratch_loss(1e6, SCRATCH_D))
    ossified = {m: [effective_data_seeds(curve, d_f, {s: scratch_loss(n, 0.5 * d_f) for s in SEEDS})
                    for d_f in SIZES_DF] for m in SIZES_N}
    assert transfer_law(ossified).status == "too few positive points"
    one_size = {SIZES_N[0]: cells[SIZES_N[0]] + cells[SIZES_N[1]][:1]}
    assert transfer_law(one_size).status == "too few sizes"


def test_bad_inputs_raise_clear_errors():
    d = SCRATCH_D[:5]
    with pytest.raises(ValueError, match="equal length"):
        fit_scratch(d, [1.0, 2.0])
    with pytest.raises(ValueError, match="> 0 tokens"):
        fit_scratch([0.0, 1e3], [2.0, 1.0])
    with pytest.raises(ValueError, match="diverged"):
        fit_scratch(d, [3.0, 2.0, float("nan"), 1.5, 1.2])
    with pytest.raises(ValueError, match="does not fall with D"):
        fit_scratch(d, [1.0, 1.1, 1.2, 1.3, 1.4])
    with pytest.raises(ValueError, match=">= 4 distinct D"):
        fit_scratch(d[:3], [3.0, 2.0, 1.5], "power_law")
    with pytest.raises(ValueError, match="unknown method"):
        fit_scratch(d, [3.0, 2.0, 1.7, 1.5, 1.2], "spline")
    curve = fit_scratch(d, [3.0, 2.0, 1.7, 1.5, 1.2])
    with pytest.raises(ValueError, match="d_f must be"):
        effective_data(curve, 0.0, 2.0)
    with pytest.raises(ValueError, match="arm loss must be finite"):
        effective_data(curve, 1e3, float("inf"))
    with pytest.raises(ValueError, match="arm seed 7 has no scratch curve"):
        effective_data_seeds({0: curve}, 1e3, {7: 2.0})
    with pytest.raises(ValueError, match="no arm seeds"):
        effective_data_seeds(curve, 1e3, {})
    with pytest.raises(ValueError, match="finite numbers"):
        arithmetic_interval([])
    with pytest.raises(ValueError, match="confidence"):
        arithmetic_interval([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="low_data_fraction"):
        transfer_law({}, low_data_fraction=0.0)
    with pytest.raises(ValueError, match="model sizes"):
        transfer_law({-1.0: []})
