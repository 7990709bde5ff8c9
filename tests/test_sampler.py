"""The annealed sampler on a composition whose product is Gaussian in closed form."""
import math

import pytest
import torch
from pyro.infer import MCMC
from scipy import stats

import compose
from conftest import gaussian

MEANS = {"g1": [1.0, 0.0], "g2": [-1.0, 1.0], "g3": [0.0, -1.0]}
STDS = {"g1": 0.5, "g2": 0.8, "g3": 1.5}
WEIGHTS = {"g1": 1.0, "g2": 0.5, "g3": -1.0}          # g1 * g2 ** 0.5 / g3


def _components(schedule):
    return {n: gaussian(schedule, MEANS[n], STDS[n], n) for n in MEANS}


def _closed_form(schedule, t):
    """Mean and variance (isotropic) of π_t ∝ ∏ N(√ᾱ μ_i, v_i)^{w_i}: precisions add with weights."""
    a, s2 = schedule.alpha_bar(t), schedule.sigma(t) ** 2
    precision, shift = 0.0, torch.zeros(2, dtype=torch.float64)
    for n, w in WEIGHTS.items():
        v = a * STDS[n] ** 2 + s2
        precision += w / v
        shift += w * math.sqrt(a) * torch.tensor(MEANS[n], dtype=torch.float64) / v
    return shift / precision, 1.0 / precision


def _within_mc_error(samples, mean, var, sds=4.5):
    """Mean and per-coordinate variance within `sds` Monte Carlo standard errors of i.i.d.
    draws (4.5 sd on 4 statistics: false alarm ≈ 3e-5); returns the z-scores."""
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean).abs() / math.sqrt(var / n)
    z_var = (samples.var(0) - var).abs() / (var * math.sqrt(2.0 / n))
    return torch.cat([z_mean, z_var])


@pytest.fixture(scope="module")
def setup():
    schedule = compose.Schedule.cosine(100)
    c = _components(schedule)
    return schedule, c["g1"] * c["g2"] ** 0.5 / c["g3"], c


@pytest.mark.parametrize("kernel, compile_kw", [
    (compose.HMC(0.15, num_leapfrog=3, damping=0.5), {}),
    (compose.MALA(0.03), {}),
], ids=["HMC", "MALA"])
def test_annealed_mcmc_reaches_the_closed_form_product(setup, kernel, compile_kw):
    schedule, expr, _ = setup
    target = compose.compile(expr, **compile_kw)
    g = torch.Generator().manual_seed(0)
    result = compose.sample(target, kernel, 2000, steps_per_level=5, generator=g, dtype=torch.float64,
                            progress=False)
    mean, var = _closed_form(schedule, 1)                 # no reverse step: the chains end at t = 1
    z = _within_mc_error(result.samples, mean, var)
    assert z.max() < 4.5, z
    assert 0.5 < result.diagnostics.mean_acceptance() <= 1.0


def test_score_only_hmc_curve_reaches_the_closed_form_product(setup):
    # Gaussian scores are linear, so the curve's trapezoid rule is exact here.
    schedule, _, c = setup
    scored = {n: compose.ScoreModel.from_analytic(c[n]) for n in c}
    target = compose.compile(scored["g1"] * scored["g2"] ** 0.5 / scored["g3"], path="curve")
    g = torch.Generator().manual_seed(1)
    result = compose.sample(target, compose.HMC(0.15), 2000, steps_per_level=5, generator=g,
                            dtype=torch.float64, progress=False)
    mean, var = _closed_form(schedule, 1)
    assert _within_mc_error(result.samples, mean, var).max() < 4.5


def test_the_reverse_process_alone_measurably_misses_it(setup):
    schedule, expr, _ = setup
    g = torch.Generator().manual_seed(0)
    result = compose.sample(compose.compile(expr), None, 2000, reverse_step=True, generator=g,
                            dtype=torch.float64, progress=False)
    mean, var = _closed_form(schedule, 1)                 # ≈ π_0: σ_1 is tiny
    mean0, var0 = _closed_form_clean()
    z = _within_mc_error(result.samples, mean0, var0)
    assert z.max() > 10, z                                # far beyond Monte Carlo error


def _closed_form_clean():
    precision, shift = 0.0, torch.zeros(2, dtype=torch.float64)
    for n, w in WEIGHTS.items():
        precision += w / STDS[n] ** 2
        shift += w * torch.tensor(MEANS[n], dtype=torch.float64) / STDS[n] ** 2
    return shift / precision, 1.0 / precision


def test_mcmc_with_reverse_steps_ends_at_level_zero(setup):
    schedule, expr, _ = setup
    g = torch.Generator().manual_seed(2)
    result = compose.sample(compose.compile(expr), compose.HMC(0.15), 2000, steps_per_level=5,
                            reverse_step=True, generator=g, dtype=torch.float64, progress=False)
    mean0, var0 = _closed_form_clean()
    # one final reverse step after MCMC at t = 1 moves the chains to ≈ π_0 (σ_1 ≈ 0.02)
    assert _within_mc_error(result.samples, mean0, var0).max() < 4.5


def test_same_generator_seed_same_samples(setup):
    _, expr, _ = setup
    target = compose.compile(expr)
    run = lambda seed: compose.sample(target, compose.HMC(0.1), 50, steps_per_level=2,
                                      generator=torch.Generator().manual_seed(seed), progress=False).samples
    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_diagnostics_per_level_and_callback(setup):
    schedule, expr, _ = setup
    target = compose.compile(expr)
    seen = []
    result = compose.sample(target, compose.MALA(compose.PowerLaw(2.0, 1.0)), 64, steps_per_level=3,
                            generator=torch.Generator().manual_seed(0), progress=False,
                            callback=lambda info: seen.append(info["level"]))
    d = result.diagnostics
    assert seen == list(range(100, 0, -1))
    assert [lv.level for lv in d.levels] == seen
    assert d.levels[0].step_size == pytest.approx(2.0 * schedule.beta(100))
    # MALA: one evaluation at the start of each level plus one per step, for every component
    assert d.evaluations_per_sample() == {"g1": 400.0, "g2": 400.0, "g3": 400.0}
    assert all(0 <= lv.acceptance <= 1 and lv.divergences == 0 for lv in d.levels)
    assert all(math.isfinite(lv.mean_abs_log_ratio) for lv in d.levels)


# -- Pyro compatibility ------------------------------------------------------------------------
def _pyro_run(kernel, target, t, x0, steps, seed):
    kernel.at_level(target, t, torch.Generator().manual_seed(seed))
    mcmc = MCMC(kernel, num_samples=steps, warmup_steps=0, initial_params={"x": x0}, disable_progbar=True)
    mcmc.run()
    return mcmc


def _direct_run(kernel, target, t, x0, steps, seed):
    g = torch.Generator().manual_seed(seed)
    state = kernel.init(target, x0, t, g)
    for _ in range(steps):
        state, _ = kernel.step(target, state, t, kernel.step_sizes(target)[t - 1], g)
    return state.x


@pytest.mark.parametrize("make_kernel", [lambda: compose.MALA(0.05), lambda: compose.HMC(0.2),
                                         lambda: compose.ULA(0.01), lambda: compose.RandomWalkMH(0.3)],
                         ids=["MALA", "HMC", "ULA", "RWMH"])
def test_kernels_under_pyro_mcmc_match_the_direct_drive(setup, make_kernel):
    schedule, expr, _ = setup
    target = compose.compile(expr)
    t, steps = 3, 20
    x0 = torch.randn(3000, 2, generator=torch.Generator().manual_seed(9))
    mcmc = _pyro_run(make_kernel(), target, t, x0, steps, seed=4)
    samples = mcmc.get_samples()["x"]
    assert samples.shape == (steps, 3000, 2)
    direct = _direct_run(make_kernel(), target, t, x0, steps, seed=4)
    # same generator, same draws: the same chains, bit for bit
    assert torch.equal(samples[-1], direct)
    # and a different seed gives the same distribution (KS on each coordinate, α = 1e-3 each)
    other = _direct_run(make_kernel(), target, t, x0, steps, seed=5)
    for k in range(2):
        assert stats.ks_2samp(samples[-1][:, k].numpy(), other[:, k].numpy()).pvalue > 1e-3
    diagnostics = mcmc.diagnostics()
    assert "acceptance rate" in diagnostics


def test_pyro_kernel_needs_a_level_first(setup):
    _, expr, _ = setup
    with pytest.raises(ValueError, match=r"at_level\(target, t\)"):
        MCMC(compose.MALA(0.1), num_samples=2, initial_params={"x": torch.zeros(4, 2)},
             disable_progbar=True).run()


# -- step-size adaptation during warm-up ------------------------------------------------------
def test_adaptation_brings_a_bad_step_size_into_the_band(setup):
    schedule, expr, _ = setup
    target = compose.compile(expr)
    run = lambda adaptation: compose.sample(
        target, compose.HMC(3.0), 2000, steps_per_level=8, generator=torch.Generator().manual_seed(3),
        dtype=torch.float64, adaptation=adaptation, progress=False)
    fixed = run(None)
    adapted = run(compose.Adaptation(band=(0.6, 0.9), warmup_steps=4))
    assert fixed.diagnostics.mean_acceptance() < 0.3                 # ε = 3 is far too large
    late = [lv.acceptance for lv in adapted.diagnostics.levels[10:]]
    assert sum(late) / len(late) > 0.55
    assert adapted.diagnostics.levels[-1].step_size < 3.0
    mean, var = _closed_form(schedule, 1)
    assert _within_mc_error(adapted.samples, mean, var).max() < 4.5


@pytest.mark.parametrize("kwargs, match", [(dict(band=(0.9, 0.6)), "band"), (dict(warmup_steps=0), "warmup_steps"),
                                           (dict(factor=1.0), "factor")])
def test_adaptation_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compose.Adaptation(**kwargs)


def test_adaptation_needs_an_adjusted_kernel(setup):
    _, expr, _ = setup
    with pytest.raises(ValueError, match="adaptation: step-size adaptation needs an adjusted kernel"):
        compose.sample(compose.compile(expr), compose.ULA(0.1), 4, adaptation=compose.Adaptation(),
                       progress=False)
