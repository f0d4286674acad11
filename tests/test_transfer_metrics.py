"""Transfer metrics against planted answers."""
import dataclasses
import json
import math

import numpy as np
import pytest

from igpt.transfer.metrics import (Curve, EffectiveData, bootstrap_interval, compare_arms,
                                   default_targets, effective_data_transferred, select_best_lr,
                                   speedup, steps_to_loss)


def f(t):
    """A smooth learning curve: loss falls from 5 towards 2."""
    return 2.0 + 3.0 * np.exp(-np.asarray(t, dtype=float) / 250.0)


GRID = np.arange(0, 1001, 50, dtype=float)


def test_interpolation_is_exact_on_a_linear_curve():
    steps, losses = [0, 10, 20, 30], [5.0, 4.0, 3.0, 2.0]
    assert steps_to_loss(steps, losses, 3.5) == pytest.approx(15.0, abs=1e-12)
    assert steps_to_loss(steps, losses, 4.25) == pytest.approx(7.5, abs=1e-12)
    assert steps_to_loss(steps, losses, 3.0) == 20.0  # exactly at a point: that point
    assert steps_to_loss(steps, losses, 5.0) == 0.0


def test_first_crossing_counts_not_a_later_one():
    # Dips below 3 at step 20, rises, falls again: the first crossing is the answer.
    assert steps_to_loss([0, 10, 20, 30, 40], [5, 4, 2, 4, 1], 3.0) == pytest.approx(15.0)


def test_never_reached_is_none_and_never_extrapolated():
    steps, losses = [0, 10, 20], [5.0, 4.0, 3.0]  # the trend would reach 2.9 at step 21
    assert steps_to_loss(steps, losses, 2.9) is None
    assert steps_to_loss(steps, [5.0, float("nan"), float("nan")], 4.0) is None


def test_bad_curves_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="strictly increasing"):
        steps_to_loss([0, 10, 10], [3, 2, 1], 1.5)
    with pytest.raises(ValueError, match="equal length"):
        steps_to_loss([0, 10], [3, 2, 1], 1.5)
    with pytest.raises(ValueError, match="empty curve"):
        Curve([], [], [])


@pytest.mark.parametrize("k", [1.0, 2.0, 3.7])
@pytest.mark.parametrize("target", [4.5, 3.3, 2.2])
def test_stretched_curve_gives_speedup_k(k, target):
    # Baseline loss(t) = f(t / k): the same curve k times slower, evaluated at k * GRID.
    s = speedup(k * GRID, f(GRID), GRID, f(GRID), target)
    assert s.status == "exact"
    assert s.value == pytest.approx(k, rel=1e-12)
    assert s.baseline == pytest.approx(k * s.transfer, rel=1e-12)


def test_speedup_in_tokens_is_the_same_function():
    tokens = GRID * 4096
    s = speedup(2.5 * tokens, f(GRID), tokens, f(GRID), 3.0)
    assert s.value == pytest.approx(2.5, rel=1e-12)


def test_speedup_when_transfer_never_reaches():
    s = speedup(GRID, f(GRID), GRID, f(GRID / 10), 2.2)
    assert (s.status, s.value, s.transfer) == ("not_reached", None, None)
    assert s.baseline is not None


def test_speedup_is_a_lower_bound_when_scratch_never_reaches():
    # Scratch (f(t / 10)) stops at 3.66 at step 1000; transfer reaches 3.0 at step ~229.
    s = speedup(GRID, f(GRID / 10), GRID, f(GRID), 3.0)
    t = 250.0 * math.log(3.0)
    assert s.status == "lower_bound" and s.baseline is None
    assert s.transfer == pytest.approx(t, rel=0.02)
    assert s.value == pytest.approx(1000.0 / s.transfer, rel=1e-12)


def test_speedup_is_a_lower_bound_when_transfer_starts_below_target_after_step_0():
    # No eval at step 0: the transfer curve is below 4.2 at its first eval (step 50).
    steps = GRID[1:]
    s = speedup(steps, f(steps), steps, f(steps) - 1.0, 4.2)
    b = steps_to_loss(steps, f(steps), 4.2)
    assert (s.status, s.transfer) == ("lower_bound", 50.0)
    assert s.value == pytest.approx(b / 50.0)


def test_speedup_at_start_has_no_ratio():
    s = speedup(GRID, f(GRID), GRID, f(GRID) - 1.0, 4.5)  # transfer at 4.0 < 4.5 at step 0
    assert (s.status, s.value) == ("at_start", None)
    s = speedup(GRID, f(GRID), GRID, f(GRID), 5.5)        # baseline starts below the target
    assert (s.status, s.value) == ("at_start", None)


def test_default_targets_span_worst_final_to_early_mean():
    a = np.linspace(5.0, 3.0, 11)        # final 3.0, at 20% (index 2): 4.6
    b = np.linspace(5.4, 3.2, 11)        # final 3.2, at 20%: 4.96
    assert default_targets([a, b], n=4) == pytest.approx([4.78, 4.78 - 1.58 / 3, 3.2 + 1.58 / 3, 3.2])
    assert default_targets([a], n=1) == [3.0]
    assert default_targets([[4.0]], n=4) == [4.0]  # one eval so far: only the final level
    with pytest.raises(ValueError, match="scratch_losses"):
        default_targets([])


def power_law(d, d_c=1e6, alpha=0.3):
    return (d_c / np.asarray(d, dtype=float)) ** alpha


def test_effective_data_transferred_recovers_planted_value():
    d_f, d_t = 2e6, 5e6
    # Fine-tuned loss after D tokens = scratch loss after D + D_T (the definition of D_T).
    ft_tokens = np.linspace(0, d_f, 21)
    ft_losses = power_law(ft_tokens + d_t)
    scratch_tokens = np.unique(np.concatenate([np.geomspace(1e4, 1e8, 50), [d_f + d_t]]))
    e = effective_data_transferred(scratch_tokens, power_law(scratch_tokens), ft_tokens, ft_losses)
    assert e.reached
    assert e.fine_tuning_tokens == d_f
    assert e.effective_tokens == pytest.approx(d_f + d_t, rel=1e-9)
    assert e.transferred_tokens == pytest.approx(d_t, rel=1e-9)
    assert e.fraction == pytest.approx(d_t / (d_f + d_t), rel=1e-9)


def test_effective_data_is_a_lower_bound_when_scratch_never_reaches():
    d_f, d_t = 2e6, 5e6
    ft_tokens = np.linspace(0, d_f, 21)
    scratch_tokens = np.geomspace(1e4, 4e6, 30)  # stops before D_E = 7e6
    e = effective_data_transferred(scratch_tokens, power_law(scratch_tokens), ft_tokens,
                                   power_law(ft_tokens + d_t))
    assert not e.reached
    assert e.effective_tokens == pytest.approx(4e6)
    assert e.transferred_tokens == pytest.approx(2e6)
    assert e.transferred_tokens < d_t


def test_effective_data_refuses_a_diverged_run():
    with pytest.raises(ValueError, match="diverged"):
        effective_data_transferred([0, 1], [3, 2], [0, 1], [3, float("nan")])


def test_bootstrap_interval_contains_mean_and_is_deterministic():
    values = [1.7, 2.1, 2.4, 1.9]
    mean, lo, hi = bootstrap_interval(values)
    assert mean == pytest.approx(np.mean(values))
    assert lo < mean < hi
    assert min(values) <= lo and hi <= max(values)
    assert bootstrap_interval(values) == (mean, lo, hi)
    many = np.random.default_rng(0).normal(size=20)
    assert bootstrap_interval(many, seed=1) != bootstrap_interval(many, seed=2)
    assert bootstrap_interval(values, confidence=0.5)[2] < hi  # narrower at lower confidence


def test_bootstrap_interval_degenerates_for_identical_values():
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert bootstrap_interval([3.5]) == (3.5, 3.5, 3.5)


def test_bootstrap_interval_refuses_missing_values():
    with pytest.raises(ValueError, match="drop seeds"):
        bootstrap_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="values"):
        bootstrap_interval([])


def test_select_best_lr_per_arm():
    choice = select_best_lr({
        "scratch": {1e-3: [3.0, 3.2], 3e-4: [3.4, 3.3]},
        "prose/full": {1e-3: [2.9, float("nan")], 3e-4: [3.1, 3.0], 1e-4: [3.5]},
        "music/full": {1e-3: [3.0], 3e-4: [3.0]},   # tie: the smaller rate
    })
    assert choice["scratch"].lr == 1e-3
    assert choice["prose/full"].lr == 3e-4  # the diverged rate loses despite a low mean
    assert choice["music/full"].lr == 3e-4
    scores = {s.lr: s for s in choice["prose/full"].scores}
    assert scores[1e-3].mean_final is None
    assert scores[3e-4].mean_final == pytest.approx(3.05) and scores[3e-4].n_seeds == 2
    with pytest.raises(ValueError, match="no final losses"):
        select_best_lr({"scratch": {1e-3: []}})


def _curve(steps, losses):
    return Curve(list(steps), [s * 1024 for s in steps], list(losses))


def test_compare_arms_pairs_seeds_and_recovers_planted_speedups():
    base, fast, slow = {}, {}, {}
    for seed, c in enumerate([1.0, 1.1, 0.9]):          # per-seed pace differs
        base[seed] = _curve(GRID, f(c * GRID))
        fast[seed] = _curve(GRID / 2.0, f(c * GRID))          # loss(t) = base(2t)
        slow[seed] = _curve(GRID[:5] / 1.5, f(c * GRID[:5]))  # in progress: up to step ~133
    fast[7] = _curve(GRID, f(GRID))                      # no scratch seed 7: unpaired
    cmp = compare_arms({"scratch": base, "prose/full": fast, "music/full": slow},
                       targets=[3.0, 4.0])
    assert cmp.targets == [4.0, 3.0]
    prose = cmp.arms["prose/full"]
    assert prose.seeds == [0, 1, 2] and prose.unpaired_seeds == [7]
    for r in prose.targets:
        assert r.n_reached == r.n_seeds == 3 and not r.lower_bound
        assert (r.interval.mean, r.interval.lo, r.interval.hi) == pytest.approx((2.0, 2.0, 2.0))
        assert all(s.status == "exact" for s in r.speedups.values())
    music = cmp.arms["music/full"].targets
    assert music[0].n_reached == 3 and music[0].interval.mean == pytest.approx(1.5)
    assert music[1].n_reached == 0 and music[1].interval is None  # 3.0 not reached yet
    assert cmp.baseline_steps[0].n_reached == 3
    # D_T: the fast arm ends at scratch's final loss after half the tokens: D_T = D_F.
    assert not prose.effective_lower_bound
    for e in prose.effective_data.values():
        assert e.transferred_tokens == pytest.approx(e.fine_tuning_tokens) and e.fraction == 0.5
    json.dumps(dataclasses.asdict(cmp), allow_nan=False)  # plain data, strict JSON


def test_compare_arms_effective_data_on_planted_power_laws():
    d_t = 3e6
    scratch_tokens = np.unique(np.concatenate([np.linspace(1e5, 2e7, 200), [1e6 + d_t]]))
    base = {0: Curve(scratch_tokens / 1e3, scratch_tokens, power_law(scratch_tokens))}
    ft_tokens = np.linspace(1e5, 1e6, 10)
    arm = {0: Curve(ft_tokens / 1e3, ft_tokens, power_law(ft_tokens + d_t))}
    r = compare_arms({"scratch": base, "prose/full": arm}, targets=[1.0]).arms["prose/full"]
    e: EffectiveData = r.effective_data[0]
    assert e.reached and e.transferred_tokens == pytest.approx(d_t, rel=1e-9)
    assert r.transferred.mean == pytest.approx(d_t, rel=1e-9) and not r.effective_lower_bound


def test_compare_arms_needs_the_baseline():
    with pytest.raises(ValueError, match="baseline arm 'scratch'"):
        compare_arms({"prose/full": {0: _curve(GRID, f(GRID))}})
