"""Sequential Monte Carlo over the levels (compose.SMC) against closed forms.

Every target here is analytic (float64), so its marginals, mode masses and normaliser are known
exactly. SMC samples carry the duplicates resampling leaves and weights whose spread varies from
run to run, so Monte Carlo errors are measured, not assumed: each check pools R independent
seeded runs and compares the pooled estimate with the exact value within 4 standard errors of the
mean over runs (the spread between runs includes the duplicates and the weight degeneracy),
plus the bias the schedule's T = 100 levels leave, bounded where stated.
"""
import math

import pytest
import torch

import compose
from compose.smc import SMCState
from compose.smc.weights import FeynmanKac, default_start_level

S = compose.Schedule.linear(100)
N = 2000
R = 6


def gm(means, std, name, weights=None, schedule=S):
    return compose.GaussianMixture(means=means, std=std, weights=weights, schedule=schedule, name=name)


def smc_runs(target, kernel=None, steps=0, runs=R, n=N, smc=None, **kw):
    smc = smc or compose.SMC()
    return [compose.sample(target, kernel, n, steps, smc=smc, generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64, progress=False, **kw) for seed in range(runs)]


def reverse_runs(target, runs=R, n=N):
    return [compose.sample(target, None, n, reverse_step=True, generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64, progress=False) for seed in range(runs)]


def pooled(values):
    """(mean over runs, its standard error from the spread between runs)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    return v.mean(0), v.std(0) / math.sqrt(v.shape[0])


def gaussian_product(weights_and_gaussians):
    """Mean and variance per coordinate of ∏ N(μ_i, s_i²)^{w_i} (diagonal)."""
    precision = sum(w / s ** 2 for w, _, s in weights_and_gaussians)
    mean = sum(w * torch.tensor(m, dtype=torch.float64) / s ** 2 for w, m, s in weights_and_gaussians) / precision
    return mean, 1.0 / precision


A = ([1.0, 0.0], 0.5)
B = ([-0.5, 1.0], 0.8)


@pytest.fixture(scope="module")
def product():
    a, b = gm([A[0]], [A[1]], "a"), gm([B[0]], [B[1]], "b")
    return compose.compile(a * b), gaussian_product([(1.0, *A), (1.0, *B)])


# -- closed forms ------------------------------------------------------------------------------
def test_product_of_gaussians_with_moves_matches_the_closed_form(product):
    target, (mean, var) = product
    results = smc_runs(target, compose.MALA(0.02), 2)
    m, se_m = pooled([r.samples.mean(0).tolist() for r in results])
    v, se_v = pooled([r.samples.var(0).tolist() for r in results])
    assert torch.all((m - mean).abs() < 4 * se_m + 0.01), (m, mean, se_m)
    assert torch.all((v - var).abs() < 4 * se_v + 0.01), (v, var, se_v)


def test_weights_alone_at_least_halve_the_reverse_processs_error(product):
    target, (mean, var) = product
    def error(results):
        return float(sum(((r.samples.mean(0) - mean).abs().sum() + (r.samples.var(0) - var).abs().sum())
                         for r in results) / len(results))
    weighted, plain = error(smc_runs(target)), error(reverse_runs(target))
    assert weighted < 0.5 * plain, (weighted, plain)


def test_negative_controls_no_weights_and_the_wrong_sign_are_caught(product, monkeypatch):
    """The moment check above must fail when the weights are switched off or reversed."""
    target, (mean, var) = product
    original = FeynmanKac.increment
    for sign in (0.0, -1.0):
        monkeypatch.setattr(FeynmanKac, "increment", lambda self, *a, s=sign: s * original(self, *a))
        results = smc_runs(target, runs=3)
        v = sum(r.samples.var(0) for r in results) / 3
        assert torch.any((v - var).abs() > 0.04), (sign, v, var)


def test_classifier_free_guidance_with_a_negative_weight():
    """p(c)^w p^(1−w), w = 3: precision 3 P_c − 2 P_u, a Gaussian at every level."""
    c, u = gm([[0.8]], [0.4], "c"), gm([[0.0]], [0.5], "u")
    w = 3.0
    target = compose.compile(c ** w / u ** (w - 1))
    mean, var = gaussian_product([(w, [0.8], 0.4), (1 - w, [0.0], 0.5)])
    results = smc_runs(target, compose.MALA(0.01), 2)
    m, se_m = pooled([r.samples.mean(0).tolist() for r in results])
    v, se_v = pooled([r.samples.var(0).tolist() for r in results])
    assert torch.all((m - mean).abs() < 4 * se_m + 0.01), (m, mean)
    assert torch.all((v - var).abs() < 4 * se_v + 0.005), (v, var)


MODES = ([[-1.0], [1.0]], [0.1, 0.1])


def mode_mass():
    """Mass of the right mode of (½N(−1, 0.1²) + ½N(1, 0.1²)) · N(0.5, 1)."""
    w = [math.exp(-(mu - 0.5) ** 2 / (2 * (0.01 + 1.0))) for mu in (-1.0, 1.0)]
    return w[1] / sum(w)


def test_mode_masses_of_a_mixture_times_a_gaussian():
    """The reverse process misplaces the mass between the modes, which local moves cannot
    carry across; the weights put it right (binomial error pooled over runs)."""
    target = compose.compile(gm(*MODES, "mix") * gm([[0.5]], [1.0], "g"))
    exact = mode_mass()
    weighted = pooled([(r.samples[:, 0] > 0).double().mean().item()
                       for r in smc_runs(target, compose.MALA(0.002), 2)])
    plain = pooled([(r.samples[:, 0] > 0).double().mean().item() for r in reverse_runs(target)])
    assert abs(weighted[0] - exact) < 4 * weighted[1] + 0.005, (weighted, exact)
    assert abs(plain[0] - exact) > 4 * plain[1] + 0.02, (plain, exact)   # the reverse process is off


def test_two_overlapping_windows_on_a_three_coordinate_canvas():
    """a sees [0:2], b sees [1:3]: coordinate 1 is their product, 0 and 2 each one factor."""
    a = gm([[1.0, 0.5]], [0.6], "a")
    b = gm([[-0.5, 0.2]], [0.4], "b")
    target = compose.compile("a[0:2] * b[1:3]", a=a, b=b, event_shape=(3,))
    m1, v1 = gaussian_product([(1.0, [0.5], 0.6), (1.0, [-0.5], 0.4)])
    mean = torch.tensor([1.0, float(m1), 0.2], dtype=torch.float64)
    var = torch.tensor([0.36, float(v1), 0.16], dtype=torch.float64)
    fk = FeynmanKac(target, (3,))
    assert fk.dimension == 2 + 2 - 3 and fk.precision.tolist() == [1.0, 2.0, 1.0]
    results = smc_runs(target, compose.MALA(0.01), 2)
    m, se_m = pooled([r.samples.mean(0).tolist() for r in results])
    v, se_v = pooled([r.samples.var(0).tolist() for r in results])
    assert torch.all((m - mean).abs() < 4 * se_m + 0.01), (m, mean)
    assert torch.all((v - var).abs() < 4 * se_v + 0.01), (v, var)


class ExactPosterior(torch.nn.Module):
    """The noisy posterior over the components of ½N(−1, s²) + ½N(1, s²): a classifier that is
    exact at every level (logits log N(x; √ᾱ μ_k, ᾱ s² + σ²))."""

    def __init__(self, schedule, s):
        super().__init__()
        self.alpha_bars, self.s = schedule.alpha_bars.double(), s

    def forward(self, x, t):
        ab = self.alpha_bars[t - 1].reshape(-1, 1)
        var = ab * self.s ** 2 + 1 - ab
        mu = torch.tensor([-1.0, 1.0], dtype=x.dtype)
        return -(x - ab.sqrt() * mu) ** 2 / (2 * var)


@pytest.mark.parametrize("scale", [3.0])
def test_classifier_guidance_with_an_exact_noisy_classifier(scale):
    """π ∝ p · c(y=1 | x)^λ with p the mixture and c its exact posterior: the weighted
    marginal of λ(λ − 1)/2 ‖∇ log c‖² plus the cross term, against numerical quadrature."""
    s = 0.5
    p = gm([[-1.0], [1.0]], [s, s], "p")
    clf = compose.Classifier(ExactPosterior(S, s), S, name="clf", event_shape=(1,))
    target = compose.compile(p.guide(clf.condition(1), scale=scale))
    grid = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    density = 0.5 * torch.exp(-(grid + 1) ** 2 / (2 * s * s)) + 0.5 * torch.exp(-(grid - 1) ** 2 / (2 * s * s))
    posterior = 0.5 * torch.exp(-(grid - 1) ** 2 / (2 * s * s)) / density
    pi = density * posterior ** scale
    pi = pi / pi.sum()
    mean, var = float((pi * grid).sum()), float((pi * grid ** 2).sum() - (pi * grid).sum() ** 2)
    results = smc_runs(target, compose.MALA(0.01), 2)
    m, se_m = pooled([r.samples[:, 0].mean().item() for r in results])
    v, se_v = pooled([r.samples[:, 0].var().item() for r in results])
    assert abs(m - mean) < 4 * se_m + 0.01 and abs(v - var) < 4 * se_v + 0.01, (m, mean, v, var)
    plain = pooled([r.samples[:, 0].var().item() for r in reverse_runs(target)])
    assert abs(plain[0] - var) > abs(v - var) + 2 * se_v        # the weights did the work


def test_log_normaliser_of_a_gaussian_product(product):
    """Ẑ is unbiased, log Ẑ slightly low (by about Var/2): compare log of the mean of Ẑ over
    runs with log Z = Σ_d log N(μ₁; μ₂, s₁² + s₂²)."""
    target, _ = product
    exact = sum(-0.5 * math.log(2 * math.pi * (A[1] ** 2 + B[1] ** 2))
                - (m1 - m2) ** 2 / (2 * (A[1] ** 2 + B[1] ** 2)) for m1, m2 in zip(A[0], B[0]))
    logs = torch.tensor([r.diagnostics.log_normaliser for r in
                         smc_runs(target, compose.MALA(0.02), 2, runs=8, n=4000)], dtype=torch.float64)
    estimate = float(torch.logsumexp(logs, 0) - math.log(len(logs)))
    assert abs(estimate - exact) < 4 * float(logs.std()) / math.sqrt(len(logs)) + 0.05, (estimate, exact, logs)


def test_one_model_with_weight_one_has_zero_increments():
    a = gm([A[0]], [A[1]], "a")
    result = smc_runs(compose.compile(a), runs=1)[0]
    levels = [d.smc for d in result.diagnostics.levels]
    assert all(d.log_normaliser_increment == 0.0 for d in levels[1:])
    assert levels[0].log_normaliser_increment == 0.0             # log Z_T of N(0, I) is 0
    assert all(d.ess == pytest.approx(N, rel=1e-12) and not d.resampled for d in levels)
    assert result.diagnostics.log_normaliser == 0.0


def test_p_times_p_and_p_squared_give_the_same_run():
    a = gm([A[0]], [A[1]], "a")
    one = smc_runs(compose.compile(a * a), runs=1)[0]
    two = smc_runs(compose.compile(a ** 2), runs=1)[0]
    assert torch.equal(one.samples, two.samples)
    assert one.diagnostics.ess() == two.diagnostics.ess()


def test_windowed_and_mixture_terms_square_norms():
    """Σ w_i ‖s_i‖² term by term: windows by their own crops, a mixture as one term."""
    a, b = gm([[1.0, 0.5]], [0.6], "a"), gm([[-0.5, 0.2]], [0.4], "b")
    target = compose.compile("a[0:2] ** 2 * b[1:3]", a=a, b=b, event_shape=(3,))
    x = torch.randn(5, 3, dtype=torch.float64)
    with target.square_norms():
        ev = target.evaluate(x, 40)
    sa = a.log_density_and_score(x[:, 0:2], 40)[1]
    sb = b.log_density_and_score(x[:, 1:3], 40)[1]
    expected = 2 * sa.pow(2).sum(1) + sb.pow(2).sum(1)
    torch.testing.assert_close(ev.weighted_square_norm, expected, rtol=1e-12, atol=0)
    assert target.evaluate(x, 40).weighted_square_norm is None         # outside the block: none


def test_guidance_cross_term_in_the_square_norms():
    """p | y=1 @ λ: Σ w‖s‖² = ‖s_p‖² + λ(‖g‖² + 2 s_p·g), so excess = λ(λ − 1)‖g‖²."""
    s = 0.5
    p = gm([[-1.0], [1.0]], [s, s], "p")
    clf = compose.Classifier(ExactPosterior(S, s), S, name="clf", event_shape=(1,))
    lam = 2.5
    target = compose.compile(p.guide(clf.condition(1), scale=lam))
    x = torch.randn(7, 1, dtype=torch.float64)
    with target.square_norms():
        ev = target.evaluate(x, 30)
    g = clf.log_prob_and_grad(x, 30, 1)[1]
    torch.testing.assert_close(ev.excess(), lam * (lam - 1) * g.pow(2).sum(1), rtol=1e-10, atol=1e-12)


# -- the particle system -----------------------------------------------------------------------
def test_zero_extra_evaluations(product):
    target, _ = product
    for kernel, steps in [(None, 0), (compose.ULA(0.01), 3), (compose.MALA(0.01), 3),
                          (compose.HMC(0.02, num_leapfrog=3), 2), (compose.RandomWalkMH(0.1), 2)]:
        with_smc = compose.sample(target, kernel, 50, steps, smc=compose.SMC(), progress=False,
                                  generator=torch.Generator().manual_seed(0))
        without = compose.sample(target, kernel, 50, steps, reverse_step=True, progress=False,
                                 generator=torch.Generator().manual_seed(0))
        assert with_smc.diagnostics.evaluations_per_sample() == without.diagnostics.evaluations_per_sample()
        plan = target.plan_for(kernel, steps, 50, smc=compose.SMC())
        assert plan.totals["per_sample"] == sum(with_smc.diagnostics.evaluations_per_sample().values())
        assert "no extra network evaluations" in str(plan)


def test_deterministic_and_resumable_bit_for_bit(product):
    target, _ = product
    smc = compose.SMC(resampling="residual")
    first, second = (compose.sample(target, compose.MALA(0.02), 300, 2, smc=smc, progress=False,
                                    generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(first.samples, second.samples)
    # Stop after level 40 and continue from the AnnealStep's state.
    g = torch.Generator().manual_seed(3)
    x = FeynmanKac(target, (2,)).start(300, g, None, torch.float32)
    steps = compose.sampler.anneal(target, compose.MALA(0.02), x, 2, None, g, smc=smc)
    for step in steps:
        if step.level == 40:
            break
    saved = SMCState.from_state_dict(step.smc_state.state_dict())
    state, rest = g.get_state(), None
    g2 = torch.Generator()
    g2.set_state(state)
    for rest in compose.sampler.anneal(target, compose.MALA(0.02), step.x, 2, None, g2, start=39,
                                       multiplier=step.multiplier, smc=smc, smc_state=saved):
        pass
    assert torch.equal(rest.x, first.samples)


def test_return_weighted_gives_normalised_log_weights(product):
    target, _ = product
    result = compose.sample(target, None, 500, smc=compose.SMC(return_weighted=True), progress=False,
                            generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lw = result.log_weights
    assert lw.shape == (500,) and lw.dtype == torch.float64
    assert float(torch.logsumexp(lw, 0)) == pytest.approx(0.0, abs=1e-12)
    assert not bool(torch.all(lw == lw[0]))
    assert "weighted" in repr(result) and "log Ẑ" in repr(result)
    equal = compose.sample(target, None, 500, smc=compose.SMC(), progress=False,
                           generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert equal.log_weights is None


def test_threshold_one_resamples_every_level_and_zero_never(product):
    target, _ = product
    every = smc_runs(target, runs=1, smc=compose.SMC(ess_threshold=1.0), n=200)[0].diagnostics
    never = smc_runs(target, runs=1, smc=compose.SMC(ess_threshold=0.0), n=200)[0].diagnostics
    window = smc_runs(target, runs=1, smc=compose.SMC(ess_threshold=1.0, resample_levels=(10, 20)),
                      n=200)[0].diagnostics
    assert all(d.smc.resampled for d in every.levels)
    assert not any(d.smc.resampled for d in never.levels)
    assert [d.level for d in window.levels if d.smc.resampled] == list(range(20, 9, -1))
    assert all(d.smc.ancestors == 200 for d in never.levels)
    assert "SMC: log Ẑ" in every.summary() and "ESS" in every.smc_table()


def test_all_weights_zero_is_a_clear_error(product, monkeypatch):
    target, _ = product
    monkeypatch.setattr(FeynmanKac, "increment", lambda self, b, q, q2=None: torch.full_like(q, -math.inf))
    for threshold in (0.0, 0.5, 1.0):           # also where resampling would reset them
        with pytest.raises(FloatingPointError, match="every particle's Feynman–Kac weight is zero"):
            compose.sample(target, None, 50, smc=compose.SMC(ess_threshold=threshold), progress=False)


def test_the_cosine_schedule_starts_below_its_huge_top_steps():
    cosine = compose.Schedule.cosine(100)
    assert default_start_level(cosine) == 96 and default_start_level(S) == 100
    assert default_start_level(compose.Schedule.cosine(40)) == 39          # only β_T = 0.999 skipped
    assert default_start_level(compose.Schedule.linear(1000).respaced(10)) == 10
    a, b = gm([A[0]], [A[1]], "a", schedule=cosine), gm([B[0]], [B[1]], "b", schedule=cosine)
    result = compose.sample(compose.compile(a * b), None, 100, smc=compose.SMC(), progress=False)
    assert result.diagnostics.levels[0].level == 96 and len(result.diagnostics.levels) == 96
    forced = compose.sample(compose.compile(a * b), None, 100, smc=compose.SMC(start_level=100),
                            progress=False)
    assert len(forced.diagnostics.levels) == 100


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(resampling="bogus"), "resampling"), (dict(ess_threshold=1.5), "ess_threshold"),
    (dict(ess_threshold=float("nan")), "ess_threshold"), (dict(ess_threshold=True), "ess_threshold"),
    (dict(resample_levels=(5, 2)), "resample_levels"), (dict(resample_levels=7), "resample_levels"),
    (dict(increment="midpoint"), "increment"), (dict(return_weighted="yes"), "return_weighted"),
    (dict(start_level=0), "start_level"), (dict(start_level=2.5), "start_level")])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compose.SMC(**kwargs)


def test_bad_runs_are_refused(product):
    target, _ = product
    with pytest.raises(ValueError, match="reverse_step"):
        compose.sample(target, None, 10, smc=compose.SMC(), reverse_step=False)
    with pytest.raises(ValueError, match="initial"):
        compose.sample(target, None, 10, smc=compose.SMC(), initial=torch.zeros(10, 2))
    with pytest.raises(ValueError, match="smc: expected a compose.SMC"):
        compose.sample(target, None, 10, smc={"resampling": "systematic"})
    with pytest.raises(ValueError, match="start_level"):
        compose.sample(target, None, 10, smc=compose.SMC(start_level=101))
    a = gm([A[0]], [A[1]], "a")
    with pytest.raises(ValueError, match=r"Σw > 0"):
        compose.sample(compose.compile(a / a ** 2), None, 10, smc=compose.SMC())
    with pytest.raises(ValueError, match="smc_state"):
        next(compose.sampler.anneal(target, None, torch.zeros(4, 2), 0, True,
                                    smc_state=SMCState.fresh(4, FeynmanKac(target, (2,)), "cpu")))
