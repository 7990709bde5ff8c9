"""Per-level step counts (compose.sample, the plan) and the end-loaded preset (docs/presets.md)."""
import pytest
import torch

import compose
from compose.experiments.product2d.target import in_bar, oracle_components
from conftest import ring


def test_end_loaded_steps_sum_to_the_total_and_load_the_last_levels(schedule):
    counts = compose.presets.end_loaded_steps(schedule, 1000, power=2.0)
    assert len(counts) == schedule.T and sum(counts) == 1000
    assert all(a >= b for a, b in zip(counts, counts[1:]))          # σ_t grows with t
    sigma = [float(schedule.sigma(t)) for t in (1, 2)]
    assert counts[0] / counts[1] == pytest.approx((sigma[1] / sigma[0]) ** 2, rel=0.02)
    assert compose.presets.end_loaded_steps(schedule, 300, power=0) == [3] * 100


def test_steps_for_budget_is_the_largest_allocation_within_the_budget(schedule):
    target = compose.compile(compose.ScoreModel.from_analytic(ring(schedule)), path="curve", points=1)
    kernel = compose.HMC(0.03, num_leapfrog=3)                      # 3 + 3 evaluations per step
    counts = compose.presets.steps_for_budget(target, kernel, 3100)
    cost = compose.presets.evaluations_per_sample(target, kernel, counts)
    assert cost <= 3100
    more = compose.presets.end_loaded_steps(schedule, sum(counts) + 1)
    assert compose.presets.evaluations_per_sample(target, kernel, more) > 3100
    assert target.plan_for(kernel, counts, 7).terms[0].per_sample == cost


def test_a_run_with_per_level_steps_costs_what_the_plan_says(schedule):
    target = compose.compile(compose.ScoreModel.from_analytic(ring(schedule), name="s"), points=2,
                             rule="lobatto")
    kernel = compose.MALA(0.01)
    counts = [0] * 100
    counts[0], counts[1], counts[50] = 5, 3, 1
    result = compose.sample(target, kernel, 20, steps_per_level=counts, progress=False,
                            generator=torch.Generator().manual_seed(0))
    steps = {d.level: d.steps for d in result.diagnostics.levels}
    assert steps[1] == 5 and steps[2] == 3 and steps[51] == 1 and steps[99] == 0
    measured = result.diagnostics.evaluations_per_sample()["s"]
    assert measured == 3 * 1 + 9 * 3                               # 3 visited levels, 9 steps of 1 + 2
    plan = target.plan_for(kernel, counts, 20)
    assert plan.totals["per_sample"] == measured and plan.totals["per_level"] is None
    text = str(plan)
    assert "9 steps over the levels, 0 at level 100 … 5 at level 1" in text
    assert "evaluations per chain: 3 per MCMC step, 30 per sample" in text
    assert plan.to_dict()["kernel"]["steps_per_level"] == counts


@pytest.mark.parametrize("bad", [[1] * 99, [1] * 99 + [-1], [1.5] * 100, "ten", -1])
def test_bad_step_counts_are_refused(schedule, bad):
    target = compose.compile(ring(schedule))
    with pytest.raises(ValueError, match="steps_per_level: must be an integer ≥ 0"):
        compose.sample(target, compose.MALA(0.01), 4, steps_per_level=bad, progress=False)


def test_bad_preset_arguments_are_refused(schedule):
    target = compose.compile(ring(schedule))
    with pytest.raises(ValueError, match="total_steps"):
        compose.presets.end_loaded_steps(schedule, -3)
    with pytest.raises(ValueError, match="power"):
        compose.presets.end_loaded_steps(schedule, 10, power=float("nan"))
    with pytest.raises(ValueError, match="evaluations: 2 per sample is less than one step of HMC"):
        compose.presets.steps_for_budget(target, compose.HMC(0.03, num_leapfrog=3), 2)


def test_end_loaded_steps_find_the_bar_where_uniform_steps_do_not(schedule):
    # The 2D product at 1000 evaluations per sample: HMC-curve with K = 3 at every level leaves
    # 12-16% of the chains in the ring's modes outside the bar; the same evaluations spent
    # with K_t ∝ σ_t⁻² leave about 1% (the exact level-1 target: 0.1%). 300 chains: the
    # standard errors are 0.02 and 0.005, the thresholds 3 and 4 of them away.
    ring_s, bar_s = oracle_components(schedule)
    target = compose.compile(ring_s * bar_s, path="curve")
    kernel = compose.HMC(0.03, num_leapfrog=3, damping=0.5)
    inside = {}
    for name, steps in (("uniform", 3), ("end", compose.presets.steps_for_budget(target, kernel, 1000))):
        result = compose.sample(target, kernel, 300, steps_per_level=steps, progress=False,
                                generator=torch.Generator().manual_seed(0))
        assert result.diagnostics.evaluations_per_sample()["ring"] <= 1000
        inside[name] = in_bar(result.samples).float().mean().item()
    assert inside["end"] >= 0.97 and inside["uniform"] <= 0.95, inside


@pytest.mark.parametrize("kernel", [compose.MALA(0.01), compose.ULA(0.01)])
def test_reverse_steps_at_levels_without_steps_are_counted(schedule, kernel):
    target = compose.compile(compose.ScoreModel.from_analytic(ring(schedule), name="s"), points=1)
    counts = compose.presets.end_loaded_steps(schedule, 20)
    assert 0 in counts
    result = compose.sample(target, kernel, 10, steps_per_level=counts, reverse_step=True,
                            progress=False, generator=torch.Generator().manual_seed(1))
    expected = compose.presets.evaluations_per_sample(target, kernel, counts, reverse_step=True)
    assert result.diagnostics.evaluations_per_sample()["s"] == expected
    assert target.plan_for(kernel, counts, 10, reverse_step=True).totals["per_sample"] == expected


def test_the_experiments_extra_rows_cost_what_they_claim():
    from compose.experiments import digits, product2d
    needed = {name: product2d.needed_evaluations(product2d.SAMPLERS[name], product2d.PAPER)
              for name in ("HMC-curve", "HMC-3-curve", "HMC-3-curve-lobatto", "HMC-curve-end",
                           "HMC-curve-end-ref")}
    assert needed["HMC-3-curve"] == needed["HMC-3-curve-lobatto"] == 6100
    assert needed["HMC-curve-end"] <= needed["HMC-curve"] == 3100
    assert 3900 < needed["HMC-curve-end-ref"] <= 3960                 # the published HMC-curve
    with pytest.raises(ValueError, match="samplers: unknown LA-9-line"):
        digits.sampler_specs(digits.DEFAULT, ["LA-9-line"])
    names = [s.name for s in digits.sampler_specs(digits.DEFAULT, digits.EXTRA_SAMPLER_NAMES)]
    assert names == list(digits.EXTRA_SAMPLER_NAMES)
