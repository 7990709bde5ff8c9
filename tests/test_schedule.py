import math

import pytest
import torch

import compose


def test_linear_matches_ho_et_al_at_T_1000():
    s = compose.Schedule.linear(1000)
    assert s.beta(1) == pytest.approx(1e-4) and s.beta(1000) == pytest.approx(0.02)
    assert s.alpha_bar(1000) == pytest.approx(math.prod(1 - b for b in s.betas.tolist()))


def test_linear_rescales_for_other_T():
    s = compose.Schedule.linear(100)
    assert s.beta(1) == pytest.approx(1e-3) and s.beta(100) == pytest.approx(0.2)


def test_cosine_alpha_bar_follows_the_formula():
    T, s_ = 50, 0.008
    s = compose.Schedule.cosine(T)
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2
    for t in (1, 10, 25, 49):
        assert s.alpha_bar(t) == pytest.approx(f(t) / f(0), rel=1e-12)
    assert s.beta(T) <= 0.999


def test_sigma_and_posterior_variance():
    s = compose.Schedule.cosine(30)
    for t in (1, 7, 30):
        assert s.sigma(t) ** 2 == pytest.approx(1 - s.alpha_bar(t))
    assert s.posterior_variance(1) == 0.0
    t = 12
    assert s.posterior_variance(t) == pytest.approx(s.beta(t) * s.sigma(t - 1) ** 2 / s.sigma(t) ** 2)
    assert s.alpha_bar(0) == 1.0 and s.sigma(0) == 0.0


def test_reverse_step_is_the_posterior_mean_for_a_gaussian():
    # For x0 ~ N(0, 1) the noised marginal is N(0, 1) at every level, score −x; the ancestral
    # mean (x + β s)/√α = x √α, and with the small variance the marginal stays N(0, 1):
    # α (1) + β̃ = 1 − β + β̃ ... check the mean exactly and the variance to MC error.
    s = compose.Schedule.linear(100)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    t = 50
    mean = s.reverse_step(x, -x, 1)
    assert torch.allclose(mean, x * math.sqrt(1 - s.beta(1)))
    out = s.reverse_step(x, -x, t, generator=g, variance="large")
    # variance: (1 − β) + β = 1 exactly with the large variance; MC sd √(2/N) ≈ 0.0032
    assert out.var().item() == pytest.approx(1.0, abs=4 * math.sqrt(2 / x.shape[0]))


@pytest.mark.parametrize("bad", [0, -1, 101, 2.5, "3", True])
def test_level_outside_range_is_a_value_error(bad):
    s = compose.Schedule.cosine(100)
    with pytest.raises(ValueError, match=r"level must be an integer in 1\.\.100"):
        s.beta(bad)


def test_bad_T_and_betas():
    with pytest.raises(ValueError, match="T: number of levels"):
        compose.Schedule.cosine(0)
    with pytest.raises(ValueError, match="betas"):
        compose.Schedule([0.1, 1.5])
