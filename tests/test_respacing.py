"""Respaced schedules: a model trained on T levels sampled on a subsequence τ_1 < … < τ_S.

Exact checks (ᾱ tables, the levels networks receive) and statistical ones against closed-form
answers: the annealed sampler reaches the product of Gaussians, and the reverse process on 50 of
1000 levels matches the exact marginal of its own linear-Gaussian recursion.
"""
import math

import pytest
import torch

import compose


@pytest.fixture(scope="module")
def linear():
    return compose.Schedule.linear(1000)


# -- the schedule ----------------------------------------------------------------------------
def test_int_levels_are_evenly_spaced_and_end_at_T(linear):
    respaced = linear.respaced(50)
    assert respaced.T == 50
    assert respaced.network_levels.dtype == torch.int64
    assert respaced.network_levels.tolist() == list(range(20, 1001, 20))
    uneven = linear.respaced(7).network_levels.tolist()        # round(k · 1000 / 7)
    assert uneven == [143, 286, 429, 571, 714, 857, 1000]
    assert linear.network_levels.tolist() == list(range(1, 1001))


def test_alpha_bar_is_the_training_tables_and_betas_follow(linear):
    levels = [1, 2, 5, 40, 41, 300, 999, 1000]
    respaced = linear.respaced(levels)
    assert respaced.T == len(levels)
    assert torch.equal(respaced.alpha_bars, linear.alpha_bars[torch.tensor(levels) - 1])
    previous = 1.0
    for i, tau in enumerate(levels, start=1):
        assert respaced.alpha_bar(i) == linear.alpha_bar(tau)             # exact: copied
        assert respaced.sigma(i) == linear.sigma(tau)
        assert respaced.beta(i) == pytest.approx(1 - linear.alpha_bar(tau) / previous, rel=1e-12)
        assert respaced.network_level(i) == tau
        previous = linear.alpha_bar(tau)
    # consecutive training levels keep the training β exactly
    assert respaced.beta(2) == linear.beta(2) and respaced.beta(5) == linear.beta(41)
    # the cumulative product of the respaced α's is the training ᾱ again (to rounding)
    torch.testing.assert_close(torch.cumprod(respaced.alphas, 0), respaced.alpha_bars, rtol=1e-12, atol=0)


def test_respacing_every_level_gives_back_the_schedule(linear):
    assert linear.respaced(1000) == linear
    assert linear.respaced(50) != linear
    twice = linear.respaced(100).respaced([10, 50, 100])        # levels of the respaced schedule
    assert twice.network_levels.tolist() == [100, 500, 1000] and twice.training is linear
    assert compose.Schedule.from_dict(twice.to_dict()) == twice
    assert repr(linear.respaced(50)) == "Schedule.linear(T=1000).respaced(50)"


@pytest.mark.parametrize("bad, message", [
    (0, r"number of levels must be in 1\.\.1000"), (1001, "1..1000"), ([3, 2], "strictly increasing"),
    ([1, 1], "strictly increasing"), ([0, 5], r"integer in 1\.\.1000"), ([5, 1001], "1001"),
    ([2.5], "2.5"), ([], "at least one"), ("50", "expected an int or"), (True, "expected an int or")])
def test_bad_levels_are_refused_by_name(linear, bad, message):
    with pytest.raises(ValueError, match=message):
        linear.respaced(bad)


# -- compile(..., levels=) -------------------------------------------------------------------
class LevelRecorder(torch.nn.Module):
    """A network that records the levels it is called with, around an exact ε."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x, t):
        self.seen.extend(t.tolist())
        return self.net(x, t)


def gaussians(schedule):
    p = compose.GaussianMixture([[1.0, 0.0]], 0.5, schedule=schedule, name="p")
    q = compose.GaussianMixture([[0.0, 1.0]], 0.3, schedule=schedule, name="q")
    return p, q


def recorded(component, name):
    model = compose.ScoreModel.from_analytic(component, name=name)
    model.net = LevelRecorder(model.net)
    return model


def test_compiled_target_runs_on_the_respaced_schedule_and_networks_see_training_levels(linear):
    p, q = gaussians(linear)
    p_net = recorded(p, "p_net")
    target = compose.compile(p_net * q, levels=50, points=1)
    assert target.T == 50 and target.schedule == linear.respaced(50)
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for i in (1, 17, 50):
        tau = 20 * i
        # the score at respaced level i is the training components' score at level τ_i …
        expected = p.score(x, tau) + q.score(x, tau)
        torch.testing.assert_close(target.score(x, i), expected, rtol=1e-10, atol=1e-12)
        # … which is the closed form with the respaced ᾱ_i: the analytic part uses it directly
        abar, sigma2 = target.schedule.alpha_bar(i), target.schedule.sigma(i) ** 2
        closed = -(x - math.sqrt(abar) * torch.tensor([0.0, 1.0], dtype=torch.float64)) / (abar * 0.09 + sigma2)
        torch.testing.assert_close(q.score(x, tau), closed, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"1\.\.50"):
        target.score(x, 51)

    p_net.net.seen.clear()
    result = compose.sample(target, compose.HMC(0.05, num_leapfrog=2), 16, steps_per_level=2,
                            generator=torch.Generator().manual_seed(1), dtype=torch.float64,
                            progress=False, reverse_step=True)
    assert torch.isfinite(result.samples).all()
    assert sorted(set(p_net.net.seen)) == list(range(20, 1001, 20))       # only training levels


def test_levels_as_tensor_array_or_respaced_schedule(linear):
    numpy = pytest.importorskip("numpy")
    expected = linear.respaced([10, 500, 1000])
    assert linear.respaced(torch.tensor([10, 500, 1000])) == expected
    assert linear.respaced(numpy.array([10, 500, 1000])) == expected
    assert linear.respaced(numpy.int64(50)) == linear.respaced(50)
    p, q = gaussians(linear)
    assert compose.compile(p * q, levels=expected).schedule == expected
    with pytest.raises(ValueError, match="not a respacing"):
        compose.compile(p * q, levels=compose.Schedule.cosine(1000).respaced(5))


def test_levels_sequence_and_plan_shows_both_level_numbers(linear):
    p, q = gaussians(linear)
    target = compose.compile(recorded(p, "p_net") * q, levels=[1, 10, 100, 1000])
    assert target.schedule.network_levels.tolist() == [1, 10, 100, 1000]
    text = str(target.plan)
    assert "T = 4 levels" in text and "training levels 1, 10, 100, 1000 of 1000" in text
    assert target.plan.to_dict()["network_levels"] == [1, 10, 100, 1000]
    long = str(compose.compile(p * q, levels=50).plan)
    assert "training levels 20, 40, 60, …, 1000 of 1000" in long
    assert "network_levels" in compose.compile(p * q).plan.to_dict()


def test_levels_are_checked_against_the_common_training_schedule(linear):
    p, q = gaussians(linear)
    with pytest.raises(ValueError, match=r"levels: .*1\.\.1000"):
        compose.compile(p * q, levels=[5, 2000])
    other = compose.GaussianMixture([[0.0, 0.0]], 1.0, schedule=linear.respaced(50), name="r")
    with pytest.raises(ValueError, match="different noise schedules; build every component on the "
                                         r"training schedule .*compile\(\.\.\., levels="):
        compose.compile(p * other)
    with pytest.raises(ValueError, match=r"levels: the components are on a respaced schedule.*"
                                         r"Schedule.linear\(T=1000\)\) and give levels="):
        compose.compile(other, levels=10)


def test_components_on_a_respaced_schedule_call_networks_at_training_levels(linear):
    p, _ = gaussians(linear)
    respaced = linear.respaced(50)
    net = LevelRecorder(compose.ScoreModel.from_analytic(p).net)
    model = compose.ScoreModel(net, respaced, name="m")
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(model.score(x, 3), p.score(x, 60), rtol=1e-10, atol=1e-12)
    assert net.seen == [60] * 4


# -- statistics against closed forms ---------------------------------------------------------
def gaussian_product(schedule, i, components):
    """Mean and variance per coordinate of ∏ N(√ᾱ_i μ_k, ᾱ_i s_k² + σ_i²) at level i."""
    abar, sigma2 = schedule.alpha_bar(i), schedule.sigma(i) ** 2
    precision, weighted = 0.0, 0.0
    for mean, std in components:
        v = abar * std ** 2 + sigma2
        precision = precision + 1 / v
        weighted = weighted + math.sqrt(abar) * torch.tensor(mean, dtype=torch.float64) / v
    return weighted / precision, torch.full((2,), 1 / precision, dtype=torch.float64)


def assert_gaussian(samples, mean, var, z=4.5):
    """Mean within z standard errors √(V/N), variance within z · V √(2/(N − 1))."""
    n = samples.shape[0]
    err_mean = (samples.mean(0) - mean).abs() / (var / n).sqrt()
    err_var = (samples.var(0) - var).abs() / (var * math.sqrt(2 / (n - 1)))
    assert err_mean.max() < z and err_var.max() < z, (err_mean, err_var)


@pytest.mark.slow
def test_annealed_hmc_on_a_respaced_schedule_reaches_the_gaussian_product(linear):
    p, q = gaussians(linear)
    target = compose.compile(recorded(p, "p_net") * q, levels=50, path="curve", points=1)
    result = compose.sample(target, compose.HMC(compose.PowerLaw(0.5, 0.5), num_leapfrog=3), 4000,
                            steps_per_level=6, generator=torch.Generator().manual_seed(3),
                            dtype=torch.float64, progress=False)
    mean, var = gaussian_product(target.schedule, 1, [([1.0, 0.0], 0.5), ([0.0, 1.0], 0.3)])
    assert result.diagnostics.mean_acceptance() > 0.5
    assert_gaussian(result.samples, mean, var)


def reverse_marginal(betas, alpha_bars, mean, std):
    """Exact mean and variance per coordinate after the reverse process x_{i−1} =
    (x + β_i s_i(x))/√α_i + √β̃_i z from x ~ N(0, 1), with the Gaussian score
    s_i(x) = −(x − √ᾱ_i μ)/v_i, v_i = ᾱ_i s² + σ_i²: each step is linear-Gaussian."""
    m, V = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    mu = torch.tensor(mean, dtype=torch.float64)
    for i in range(len(betas), 0, -1):
        beta, abar = float(betas[i - 1]), float(alpha_bars[i - 1])
        v = abar * std ** 2 + 1 - abar
        a = (1 - beta / v) / math.sqrt(1 - beta)
        c = beta * math.sqrt(abar) * mu / (v * math.sqrt(1 - beta))
        previous = float(alpha_bars[i - 2]) if i > 1 else 1.0
        tau2 = beta * (1 - previous) / (1 - abar) if i > 1 else 0.0
        m, V = a * m + c, a * a * V + tau2
    return m, V


def reverse_samples(linear, levels=50):
    data = compose.GaussianMixture([[1.5, -0.5]], 0.2, schedule=linear, name="data")
    target = compose.compile(recorded(data, "data_net"), levels=levels)
    result = compose.sample(target, None, 20000, reverse_step=True, generator=torch.Generator().manual_seed(4),
                            dtype=torch.float64, progress=False)
    return target, result.samples


@pytest.mark.slow
def test_reverse_process_on_50_of_1000_levels_matches_the_exact_marginal(linear):
    target, samples = reverse_samples(linear)
    mean, var = reverse_marginal(target.schedule.betas, target.schedule.alpha_bars, [1.5, -0.5], 0.2)
    assert_gaussian(samples, mean, var)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="negative control: the training β at τ_i instead of the "
                                       "respaced β_i is a different process, and the test sees it")
def test_negative_control_training_betas_at_the_respaced_levels_are_caught(linear):
    target, samples = reverse_samples(linear)
    taus = target.schedule.network_levels
    mean, var = reverse_marginal(linear.betas[taus - 1], target.schedule.alpha_bars, [1.5, -0.5], 0.2)
    assert_gaussian(samples, mean, var)
