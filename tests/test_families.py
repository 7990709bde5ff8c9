"""Model families: ε / x₀ / v / score predictions, learned variance, 0-based timesteps, VE
denoisers and continuous-time VP networks, each checked against closed forms.

Every fake network below computes its prediction of a Gaussian mixture in closed form, from
its own convention (its own timestep base, its own ᾱ, its own VE σ or continuous time s), with
a posterior written out here independently of `compose.GaussianMixture`. The adapted score must
then equal the mixture's exact score to float64 rounding at several levels; a wrong offset, a
wrong parameterisation or VP inputs fed to a VE denoiser must be caught by the same check
(negative controls, xfail strict). The sampling tests check that annealed HMC through each
adapter reaches the closed-form product of two Gaussians.
"""
import math

import pytest
import torch

import compose
from compose.adapters import from_continuous, from_denoiser
from compose.adapters.families import ContinuousTimeModel, DenoiserModel
from compose.components.predictions import noise_from_prediction

MEANS = [[[1.0, -0.5, 0.2], [0.0, 0.3, -1.0]], [[-0.7, 0.4, 0.0], [0.8, -0.2, 0.5]]]
STDS = [0.3, 0.6]
WEIGHTS = [0.35, 0.65]
SHAPE = (2, 3)                                       # 2 "channels" of 3 "pixels"


def mixture(schedule, name="mix"):
    return compose.GaussianMixture(MEANS, STDS, WEIGHTS, schedule=schedule, name=name)


# -- closed forms, written out independently ----------------------------------------------------
def posterior(x, a, s2, means=MEANS, stds=STDS, weights=WEIGHTS):
    """(∇ log p(x), E[x₀ | x]) for x = a x₀ + √s2 ε, x₀ ~ Σ w_k N(μ_k, s_k² I); x (N, ...),
    a and s2 floats or (N,) tensors."""
    n = x.shape[0]
    flat = x.reshape(n, -1).double()
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1, 1).expand(n, 1)
    s2 = torch.as_tensor(s2, dtype=torch.float64).reshape(-1, 1).expand(n, 1)
    mu = torch.tensor(means, dtype=torch.float64).reshape(len(stds), -1)          # (K, d)
    sk2 = torch.tensor(stds, dtype=torch.float64) ** 2                             # (K,)
    v = a * a * sk2 + s2                                                           # (N, K)
    diff = flat[:, None, :] - a[:, :, None] * mu[None]                             # (N, K, d)
    d = flat.shape[1]
    log_r = (torch.log(torch.tensor(weights, dtype=torch.float64)) - 0.5 * d * torch.log(v)
             - 0.5 * diff.pow(2).sum(-1) / v)
    r = torch.softmax(log_r, dim=1)[:, :, None]
    score = -(r * diff / v[:, :, None]).sum(1)
    mean_x0 = (r * (mu[None] + (a * sk2 / v)[:, :, None] * diff)).sum(1)
    return score.reshape(x.shape), mean_x0.reshape(x.shape)


class FakeVP(torch.nn.Module):
    """A discrete VP network of the mixture on `schedule` predicting `kind` ("epsilon",
    "sample", "v", "score"), trained on timesteps starting at `base` (0 or 1), optionally with
    a learned variance (twice the channels, the variance half junk)."""

    def __init__(self, schedule, kind, base=1, learned_variance=False, **mixture_args):
        super().__init__()
        self.schedule, self.kind, self.base = schedule, kind, base
        self.learned_variance, self.mixture_args = learned_variance, mixture_args
        self.seen = []

    def forward(self, x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        level = t - self.base + 1
        if not bool(((level >= 1) & (level <= self.schedule.T)).all()):
            raise ValueError(f"timestep out of range: {t.tolist()}")
        self.seen.append(int(t[0]))
        abar = self.schedule.alpha_bars[level - 1]
        sigma = (1 - abar).sqrt()
        score, x0 = posterior(x, abar.sqrt(), 1 - abar, **self.mixture_args)
        shape = (-1,) + (1,) * (x.dim() - 1)
        eps = -sigma.reshape(shape) * score
        out = {"epsilon": eps, "sample": x0, "score": score,
               "v": abar.sqrt().reshape(shape) * eps - sigma.reshape(shape) * x0}[self.kind]
        if self.learned_variance:
            out = torch.cat([out, torch.full_like(out, 7.0)], dim=1)
        return out.to(x.dtype)


class FakeDenoiser(torch.nn.Module):
    """E[x₀ | x_ve] of the mixture under the VE process x_ve = x₀ + σ ε: D(x_ve, σ)."""

    def forward(self, x, sigma):
        assert sigma.is_floating_point() and sigma.shape == (x.shape[0],)
        return posterior(x, 1.0, sigma.double() ** 2)[1].to(x.dtype)


def continuous_alpha_bar(s, beta_min, beta_max):
    return torch.exp(-beta_min * s - 0.5 * (beta_max - beta_min) * s * s)


class FakeContinuous(torch.nn.Module):
    """A score-SDE VP network net(x, s) of the mixture, s ∈ (0, 1]: ε or the score."""

    def __init__(self, kind="epsilon", beta_min=0.1, beta_max=20.0):
        super().__init__()
        self.kind, self.beta_min, self.beta_max = kind, beta_min, beta_max

    def forward(self, x, s):
        assert s.is_floating_point() and s.shape == (x.shape[0],)
        assert bool(((s > 0) & (s <= 1)).all()), s
        abar = continuous_alpha_bar(s.double(), self.beta_min, self.beta_max)
        score, _ = posterior(x, abar.sqrt(), 1 - abar)
        out = score if self.kind == "score" else -(1 - abar).sqrt().reshape(-1, 1, 1) * score
        return out.to(x.dtype)


def points(n=64, seed=0):
    return 1.5 * torch.randn((n,) + SHAPE, generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64)


def assert_exact_scores(model, exact, levels):
    """The adapted score equals the exact one at every level to float64 rounding: within
    100 u (max|s| + max|x|/σ_t²), u = 2⁻⁵³. The second term is the conditioning of the x₀ (and
    VE denoiser) conversion s = (√ᾱ_t x̂₀ − x)/σ_t², which divides the rounding of x̂₀ by σ_t²;
    any wrong offset or parameterisation is off by orders of magnitude more."""
    x = points()
    u = torch.finfo(torch.float64).eps / 2
    for t in levels:
        got, want = model.score(x, t), exact.score(x, t)
        bound = 100 * u * (want.abs().max() + x.abs().max() / exact.schedule.sigma(t) ** 2)
        error = (got - want).abs().max()
        assert error < bound, f"level {t}: error {error.item():.3g} > bound {bound.item():.3g}"


@pytest.fixture(scope="module")
def cosine():
    return compose.Schedule.cosine(100)


LEVELS = (1, 2, 9, 50, 98, 99)                  # ≤ T − 1, so a 1-too-high timestep stays in range


# -- discrete VP networks: ε, x₀, v, score, learned variance, 0-based timesteps -----------------
@pytest.mark.parametrize("kind", ["epsilon", "sample", "v", "score"])
@pytest.mark.parametrize("base", [1, 0], ids=["1-based", "0-based"])
@pytest.mark.parametrize("learned_variance", [False, True], ids=["", "learned-variance"])
def test_score_model_converts_every_prediction_exactly(cosine, kind, base, learned_variance):
    net = FakeVP(cosine, kind, base, learned_variance)
    model = compose.ScoreModel(net, cosine, prediction=kind, learned_variance=learned_variance,
                               level_offset=base - 1, event_shape=SHAPE)
    assert_exact_scores(model, mixture(cosine), LEVELS + (100,))
    assert net.seen[-1] == 100 - 1 + base                 # level T called with T − 1 when 0-based


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="negative control: a 0-based network called with t (level_offset=0)")
def test_negative_control_offset_is_caught(cosine):
    model = compose.ScoreModel(FakeVP(cosine, "v", base=0), cosine, prediction="v")
    assert_exact_scores(model, mixture(cosine), LEVELS)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="negative control: a 1-based network called with t − 1")
def test_negative_control_offset_the_other_way_is_caught(cosine):
    model = compose.ScoreModel(FakeVP(cosine, "epsilon", base=1), cosine, level_offset=-1)
    assert_exact_scores(model, mixture(cosine), LEVELS[1:])


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="negative control: an x₀-prediction read as v")
def test_negative_control_x0_read_as_v_is_caught(cosine):
    model = compose.ScoreModel(FakeVP(cosine, "sample"), cosine, prediction="v")
    assert_exact_scores(model, mixture(cosine), LEVELS)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="negative control: a v-prediction read as ε")
def test_negative_control_v_read_as_epsilon_is_caught(cosine):
    model = compose.ScoreModel(FakeVP(cosine, "v"), cosine)
    assert_exact_scores(model, mixture(cosine), LEVELS)


def test_learned_variance_without_the_flag_is_refused_with_a_hint(cosine):
    model = compose.ScoreModel(FakeVP(cosine, "epsilon", learned_variance=True), cosine)
    with pytest.raises(ValueError, match="learned_variance=True"):
        model.score(points(), 5)
    wrong = compose.ScoreModel(FakeVP(cosine, "epsilon"), cosine, learned_variance=True)
    with pytest.raises(ValueError, match="twice the channels"):
        wrong.score(points(), 5)


def test_respaced_schedules_use_the_alpha_bar_of_the_level_sampled(cosine):
    # compile(levels=): level i evaluates the component at its training level τ_i, so a 0-based
    # v-network is called with τ_i − 1 and converted with ᾱ_{τ_i}.
    net = FakeVP(cosine, "v", base=0, learned_variance=True)
    model = compose.ScoreModel(net, cosine, prediction="v", learned_variance=True,
                               level_offset=-1, name="p")
    target = compose.compile(model.as_leaf(), levels=10)
    exact = mixture(target.schedule)
    x = points()
    for i in (1, 4, 10):
        torch.testing.assert_close(target.score(x, i), exact.score(x, i), rtol=1e-11, atol=1e-11)
        assert net.seen[-1] == 10 * i - 1
    # … and a component built on a respaced schedule does the same.
    respaced = cosine.respaced(10)
    direct = compose.ScoreModel(net, respaced, prediction="v", learned_variance=True,
                                level_offset=-1)
    assert_exact_scores(direct, exact, (1, 4, 10))
    assert net.seen[-1] == 99


def test_condition_names_pass_our_condition_as_the_networks_keyword(cosine):
    other = dict(means=[[[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5]]], stds=[0.4], weights=[1.0])
    nets = {0: FakeVP(cosine, "epsilon", base=0), 1: FakeVP(cosine, "epsilon", base=0, **other)}

    def net(x, t, y=None):                            # guided-diffusion's keyword
        assert y is None or (y.dtype == torch.long and y.shape == (x.shape[0],))
        return nets[0 if y is None else int(y[0])](x, t)

    model = compose.ScoreModel(net, cosine, level_offset=-1, condition_names={"class": "y"},
                               name="u")
    x = points()
    second = compose.GaussianMixture(other["means"], other["stds"], schedule=cosine)
    torch.testing.assert_close(model.score(x, 30, (("class", 1),)), second.score(x, 30),
                               rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(model.score(x, 30), mixture(cosine).score(x, 30),
                               rtol=1e-11, atol=1e-11)
    target = compose.compile(compose.parse("u(class=1) ** 3 / u ** 2", {"u": model}))
    want = 3 * second.score(x, 30) - 2 * mixture(cosine).score(x, 30)
    torch.testing.assert_close(target.score(x, 30), want, rtol=1e-10, atol=1e-10)
    text = str(target.plan)
    assert "network: predicts ε, called as net(x, t − 1, y=<class>)" in text


def test_classifier_level_offset_calls_zero_based_timesteps(cosine):
    seen = []

    def classifier(x, t):
        seen.append(t.clone())
        return torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], 1) * (t[:, None] + 1)

    clf = compose.Classifier(classifier, cosine, level_offset=-1)
    log_p, grad = clf.log_prob_and_grad(points(8), 17, 0)
    assert seen[-1].tolist() == [16] * 8
    with pytest.raises(ValueError, match="level_offset"):
        compose.Classifier(classifier, cosine, level_offset=0.5)


@pytest.mark.parametrize("bad, match", [
    ({"prediction": "x_start"}, "prediction: must be one of"),
    ({"level_offset": True}, "level_offset"),
    ({"learned_variance": 1}, "learned_variance"),
    ({"condition_names": {"class": "not a name"}}, "condition_names"),
    ({"condition_names": {"class": "y", "label": "y"}}, "two variables"),
])
def test_bad_arguments_are_refused_by_name(cosine, bad, match):
    with pytest.raises(ValueError, match=match):
        compose.ScoreModel(FakeVP(cosine, "epsilon"), cosine, **bad)


def test_a_condition_renamed_to_a_reserved_keyword_is_refused(cosine):
    model = compose.ScoreModel(FakeVP(cosine, "epsilon"), cosine, condition_names={"class": "t"},
                               name="u")
    with pytest.raises(compose.CompositionError, match="cannot be named 't'"):
        compose.compile(compose.parse("u(class=1)", {"u": model}))


def test_plans_say_what_the_network_predicts_and_how_it_is_called(cosine):
    model = compose.ScoreModel(FakeVP(cosine, "v", 0, True), cosine, prediction="v",
                               learned_variance=True, level_offset=-1, name="p")
    plain = compose.ScoreModel(FakeVP(cosine, "epsilon"), cosine, name="q")
    text = str(compose.compile(model * plain).plan)
    assert ("network: predicts v = √ᾱ ε − σ x₀ (learned variance: first half of the channels), "
            "called as net(x, t − 1)") in text
    assert text.count("network:") == 1                     # the plain ε-network needs no line


def test_the_diffusers_adapter_uses_the_same_conversion():
    pytest.importorskip("diffusers")
    from compose.adapters import diffusers as adapter
    x, out = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    for ours, theirs in (("epsilon", "epsilon"), ("v", "v_prediction"), ("sample", "sample")):
        torch.testing.assert_close(adapter.noise_from_output(out, x, 0.6, 0.8, theirs),
                                   noise_from_prediction(out, x, 0.6, 0.8, ours), rtol=0, atol=0)


# -- variance-exploding denoisers ------------------------------------------------------------
def test_edm_schedule_is_the_ve_noise_levels():
    schedule = compose.Schedule.edm(18, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    sigmas = [schedule.ve_sigma(t) for t in range(1, 19)]
    assert sigmas[0] == pytest.approx(0.002, rel=1e-9) and sigmas[-1] == pytest.approx(80.0, rel=1e-12)
    ramp = torch.linspace(0.002 ** (1 / 7), 80.0 ** (1 / 7), 18, dtype=torch.float64) ** 7
    torch.testing.assert_close(torch.tensor(sigmas, dtype=torch.float64), ramp, rtol=1e-9, atol=0)
    # the β's generate the ᾱ's: cumprod(1 − β) = 1/(1 + σ²)
    torch.testing.assert_close(torch.cumprod(1 - schedule.betas, 0), 1 / (1 + ramp ** 2),
                               rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="strictly increasing"):
        compose.Schedule.from_sigmas([0.1, 0.1, 0.5])


@pytest.mark.parametrize("schedule", [compose.Schedule.edm(20), compose.Schedule.cosine(100)],
                         ids=["edm", "cosine"])
def test_denoiser_gives_the_exact_vp_score(schedule):
    model = from_denoiser(FakeDenoiser(), schedule, name="d", event_shape=SHAPE)
    levels = (1, 2, 7, 15, 19) if schedule.T == 20 else LEVELS
    assert_exact_scores(model, mixture(schedule), levels)


class VPInputsDenoiser(DenoiserModel):
    """The natural bug: the VP x_t fed to a VE network without the 1/√ᾱ_t scaling."""

    def call_net(self, x, t, conditions=()):
        return compose.ScoreModel.call_net(self, x, t, conditions)


class VPSigmaDenoiser(DenoiserModel):
    """The other natural bug: the VP σ_t given as the VE noise level."""

    def network_levels(self, x, t):
        return torch.full((x.shape[0],), self.schedule.sigma(t), dtype=x.dtype)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="negative control: VP inputs to a VE denoiser")
@pytest.mark.parametrize("wrong", [VPInputsDenoiser, VPSigmaDenoiser], ids=["x", "sigma"])
def test_negative_control_vp_inputs_to_a_ve_denoiser_are_caught(wrong):
    schedule = compose.Schedule.edm(20)
    assert_exact_scores(wrong(FakeDenoiser(), schedule), mixture(schedule), (1, 2, 7, 15, 19))


def test_denoiser_refuses_levels_outside_its_training_range(cosine):
    model = from_denoiser(FakeDenoiser(), cosine, name="d", sigma_min=0.002, sigma_max=80.0)
    model.score(points(4), 50)
    assert cosine.ve_sigma(100) > 80
    with pytest.raises(ValueError, match=r"level 100 .* outside the denoiser's range \[0.002, 80.0\].*"
                                         r"Schedule.edm"):
        model.score(points(4), 100)
    edm = compose.Schedule.edm(30, 0.002, 80.0)
    inside = from_denoiser(FakeDenoiser(), edm, sigma_min=0.002, sigma_max=80.0)
    inside.score(points(4), 1), inside.score(points(4), 30)    # both ends are in range
    narrower = from_denoiser(FakeDenoiser(), edm, sigma_min=0.01, sigma_max=80.0)
    with pytest.raises(ValueError, match="level 1 "):
        narrower.score(points(4), 1)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        from_denoiser(FakeDenoiser(), edm, sigma_min=1.0, sigma_max=0.5)


class KarrasDenoiser(torch.nn.Module):
    """The call signature of k-diffusion's ``layers.Denoiser`` (Karras et al. 2022
    preconditioning): D(x, σ) = c_skip x + c_out F(c_in x, σ), F the raw network. Here F is
    the exact residual, so D is exact."""

    def __init__(self, sigma_data=0.5):
        super().__init__()
        self.sigma_data = sigma_data
        self.inner_model = self._inner

    def scalings(self, sigma):
        sd2, s2 = self.sigma_data ** 2, sigma ** 2
        shape = (-1, 1, 1)
        return ((sd2 / (s2 + sd2)).reshape(shape), (sigma * self.sigma_data / (s2 + sd2).sqrt()).reshape(shape),
                (1 / (s2 + sd2).sqrt()).reshape(shape))

    def _inner(self, scaled, sigma):
        c_skip, c_out, c_in = self.scalings(sigma)
        x = scaled / c_in
        return (FakeDenoiser()(x, sigma) - c_skip * x) / c_out

    def forward(self, input, sigma, **kwargs):
        c_skip, c_out, c_in = self.scalings(sigma)
        return self.inner_model(input * c_in, sigma, **kwargs) * c_out + input * c_skip


class DiscreteEpsDenoiser(torch.nn.Module):
    """The call signature and mapping of k-diffusion's ``external.DiscreteEpsDDPMDenoiser``:
    a discrete ε-network seen as a VE denoiser, σ_k = √((1 − ᾱ_k)/ᾱ_k) over its 0-based
    timesteps k, D(x, σ) = x − σ ε(x/√(1 + σ²), k(σ))."""

    def __init__(self, eps_net, alphas_cumprod):
        super().__init__()
        self.eps_net = eps_net
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()

    def forward(self, input, sigma):
        k = (sigma[:, None] - self.sigmas[None]).abs().argmin(1)          # nearest timestep
        c_in = (1 / (sigma ** 2 + 1).sqrt()).reshape(-1, 1, 1)
        return input - self.eps_net(input * c_in, k) * sigma.reshape(-1, 1, 1)


def test_k_diffusion_style_wrappers_are_exact_clients(cosine):
    # A Karras-preconditioned denoiser on EDM levels …
    edm = compose.Schedule.edm(25)
    assert_exact_scores(from_denoiser(KarrasDenoiser(), edm, sigma_min=0.002, sigma_max=80.0),
                        mixture(edm), (1, 3, 12, 24, 25))
    # … and a discrete 0-based ε-network wrapped as a VE denoiser the way k-diffusion does it,
    # brought back to our levels: the round trip VP → VE → VP is the identity.
    wrapped = DiscreteEpsDenoiser(FakeVP(cosine, "epsilon", base=0), cosine.alpha_bars)
    assert_exact_scores(from_denoiser(wrapped, cosine), mixture(cosine), LEVELS + (100,))


# -- continuous-time VP networks ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["epsilon", "score"])
@pytest.mark.parametrize("schedule", [compose.Schedule.continuous_vp(100), compose.Schedule.cosine(100)],
                         ids=["continuous_vp", "cosine"])
def test_continuous_model_is_called_at_the_matching_time(schedule, kind):
    model = from_continuous(FakeContinuous(kind), schedule, prediction=kind, event_shape=SHAPE)
    levels = (1, 2, 9, 50, 99, 100) if schedule.name == "continuous_vp" else (1, 2, 9, 50, 90)
    assert_exact_scores(model, mixture(schedule), levels)
    if schedule.name == "continuous_vp":
        for t in (1, 37, 100):
            assert model.time(t) == pytest.approx(t / 100, rel=1e-12)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="negative control: the wrong β_max maps levels to the wrong times")
def test_negative_control_wrong_beta_max_is_caught():
    schedule = compose.Schedule.continuous_vp(100)
    model = from_continuous(FakeContinuous(), schedule, beta_max=10.0)
    assert_exact_scores(model, mixture(schedule), (1, 9, 50))


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="negative control: s = t/T on a schedule that is not the continuous one")
def test_negative_control_time_as_level_fraction_is_caught(cosine):
    class LevelFraction(ContinuousTimeModel):
        def time(self, t):
            return t / self.schedule.T

    assert_exact_scores(LevelFraction(FakeContinuous(), cosine), mixture(cosine), (1, 9, 50))


def test_continuous_model_refuses_levels_it_cannot_reach():
    linear = compose.Schedule.linear(1000)             # ᾱ_1000 = 4.04e-5 < ᾱ(1) = 4.32e-5
    model = from_continuous(FakeContinuous(), linear, name="c")
    model.score(points(4), 990)
    with pytest.raises(ValueError, match=r"level 1000 .* outside its time range \[0.0, 1\].*"
                                         r"continuous_vp") as refused:
        model.score(points(4), 1000)
    assert not getattr(refused.value, "__notes__", None)       # not blamed on the network
    floor = from_continuous(FakeContinuous(), compose.Schedule.continuous_vp(100), s_min=0.05)
    with pytest.raises(ValueError, match="level 1 "):
        floor.score(points(4), 1)
    with pytest.raises(ValueError, match="prediction"):
        from_continuous(FakeContinuous(), linear, prediction="v")


# -- sampling through the adapters reaches the closed-form product -------------------------------
def gaussian(schedule, mean, std, name):
    return compose.GaussianMixture([mean], std, schedule=schedule, name=name)


def product_moments(schedule, t, parts):
    """Mean and variance per coordinate of ∏ N(√ᾱ_t μ_k, ᾱ_t s_k² + σ_t²)."""
    abar, s2 = schedule.alpha_bar(t), schedule.sigma(t) ** 2
    precision, shift = 0.0, torch.zeros(2, dtype=torch.float64)
    for mean, std in parts:
        v = abar * std ** 2 + s2
        precision += 1 / v
        shift += math.sqrt(abar) * torch.tensor(mean, dtype=torch.float64) / v
    return shift / precision, 1 / precision


def assert_moments(samples, mean, var, z=4.5):
    """Mean and per-coordinate variance within z Monte Carlo standard errors of i.i.d. draws
    (4.5 sd on 4 statistics: false alarm ≈ 3e-5)."""
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean).abs() / math.sqrt(var / n)
    z_var = (samples.var(0) - var).abs() / (var * math.sqrt(2 / (n - 1)))
    assert torch.cat([z_mean, z_var]).max() < z, (z_mean, z_var)


A, B = ([1.0, 0.0], 0.5), ([0.0, 1.0], 0.8)


def fakes(kind, schedule, base, learned_variance, part):
    return FakeVP(schedule, kind, base, learned_variance, means=[part[0]], stds=[part[1]],
                  weights=[1.0])


def run_hmc(target, seed):
    result = compose.sample(target, compose.HMC(compose.PowerLaw(0.5, 0.5), num_leapfrog=3), 2000,
                            steps_per_level=4, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64, progress=False)
    assert result.diagnostics.mean_acceptance() > 0.5
    return result.samples


def test_sampling_discrete_adapters_on_a_respaced_schedule_reaches_the_product(cosine):
    p = compose.ScoreModel(fakes("epsilon", cosine, 0, True, A), cosine, learned_variance=True,
                           level_offset=-1, name="p", event_shape=(2,))
    q = compose.ScoreModel(fakes("v", cosine, 1, False, B), cosine, prediction="v", name="q")
    target = compose.compile(p * q, levels=20, path="curve")
    mean, var = product_moments(target.schedule, 1, [A, B])
    assert_moments(run_hmc(target, 0), mean, var)


def test_sampling_a_denoiser_and_an_x0_network_on_edm_levels_reaches_the_product():
    edm = compose.Schedule.edm(20)

    class Denoiser(torch.nn.Module):
        def forward(self, x, sigma):
            return posterior(x, 1.0, sigma ** 2, means=[A[0]], stds=[A[1]], weights=[1.0])[1]

    d = from_denoiser(Denoiser(), edm, name="d", event_shape=(2,), sigma_min=0.002, sigma_max=80.0)
    q = compose.ScoreModel(fakes("sample", edm, 1, False, B), edm, prediction="sample", name="q")
    target = compose.compile(d * q, path="curve")
    mean, var = product_moments(edm, 1, [A, B])
    assert_moments(run_hmc(target, 1), mean, var)


def test_sampling_a_continuous_model_with_an_analytic_factor_reaches_the_product():
    schedule = compose.Schedule.continuous_vp(20)

    class Continuous(torch.nn.Module):
        def forward(self, x, s):
            abar = continuous_alpha_bar(s, 0.1, 20.0)
            score = posterior(x, abar.sqrt(), 1 - abar, means=[A[0]], stds=[A[1]], weights=[1.0])[0]
            return -(1 - abar).sqrt()[:, None] * score

    c = from_continuous(Continuous(), schedule, name="c")
    target = compose.compile(c * gaussian(schedule, *B, "g"), path="curve")
    mean, var = product_moments(schedule, 1, [A, B])
    assert_moments(run_hmc(target, 2), mean, var)


def test_the_families_module_does_not_import_diffusers():
    import ast
    import compose.adapters.families as families
    tree = ast.parse(open(families.__file__).read())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not any("diffusers" in name for name in imported), imported


# -- the guided-diffusion-style example -------------------------------------------------------
def test_guided_imagenet_style_example_runs_end_to_end(capsys):
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parent.parent / "examples" / "guided_imagenet_style.py"
    spec = importlib.util.spec_from_file_location("guided_imagenet_style", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.run(["--quick", "--verbose", "--class", "4"])
    out = capsys.readouterr().out
    runs = {key: value for key, value in results.items() if isinstance(key, tuple)}
    assert sorted(runs) == sorted((title, kernel) for title in ("classifier guidance",
                                                                "classifier-free guidance")
                                  for kernel in ("LA-3-line", "HMC-curve"))
    for value in runs.values():
        assert value["finite"] and value["samples"].shape == (4, 1, 8, 8)
        assert 0.0 <= value["acceptance"] <= 1.0
    # the plans say what each network predicts and which timestep it gets
    assert "network: predicts ε (learned variance: first half of the channels), called as " \
           "net(x, t − 1, y=<class>)" in out
    assert "clf[class=4]" in out and "network: net(x, t − 1)" in out
    assert "respaced: level i calls the networks at training levels 200, 400, 600, 800, 1000" in out


def test_small_unet_with_learned_variance_and_classes():
    from compose.models.unet import SmallUNet
    torch.manual_seed(0)
    net = SmallUNet(1, 8, 50, base=8, embed=16, out_channels=2, num_classes=3)
    with torch.no_grad():                            # zero-initialised layers, made visible
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 7)
    out = net(x, t, y=torch.tensor([0, 1, 2, 3]))
    assert out.shape == (4, 2, 8, 8)
    torch.testing.assert_close(net(x, t), net(x, t, y=torch.full((4,), 3)))   # None = "no class"
    assert not torch.allclose(net(x, t, y=torch.zeros(4, dtype=torch.long)), net(x, t))
    rebuilt = SmallUNet(**net.config())
    assert rebuilt.config() == net.config() and "num_classes" in net.config()
    assert "num_classes" not in SmallUNet(1, 8, 50).config()       # old configs are unchanged
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        net(x, t, y=torch.full((4,), 4))
    with pytest.raises(ValueError, match="not class-conditional"):
        SmallUNet(1, 8, 50, base=8)(x, t, y=torch.zeros(4, dtype=torch.long))
