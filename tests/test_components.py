"""Analytic components against closed forms; networks wrapped as score and energy models."""
import math

import pytest
import torch

import compose
from conftest import gaussian, ring


def _autograd_score(component, x, t):
    """Gradient of the closed-form log-density (the public method returns it detached)."""
    x = x.clone().requires_grad_(True)
    component._exact(x, t)[0].sum().backward()
    return x.grad


def test_gaussian_mixture_log_density_matches_direct_formula(schedule):
    p = compose.GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [0.5, 0.2], weights=[0.3, 0.7], schedule=schedule)
    x = torch.randn(7, 2, dtype=torch.float64)
    t = 40
    a, s2 = schedule.alpha_bar(t), schedule.sigma(t) ** 2
    expected = 0
    for w, mu, sd in [(0.3, torch.tensor([0.0, 1.0]), 0.5), (0.7, torch.tensor([2.0, -1.0]), 0.2)]:
        var = a * sd ** 2 + s2
        expected = expected + w * torch.exp(-((x - math.sqrt(a) * mu.double()) ** 2).sum(1) / (2 * var)) / (2 * math.pi * var)
    assert torch.allclose(p.log_density(x, t), expected.log(), atol=1e-12)


@pytest.mark.parametrize("t", [0, 1, 30, 100])
def test_box_density_integrates_to_one_and_score_is_its_gradient(schedule, t):
    box = compose.UniformBox([-0.2, -1.0], [0.2, 1.0], schedule=schedule)
    if t == 0:
        x = torch.tensor([[0.0, 0.0], [0.3, 0.0]], dtype=torch.float64)
        inside, outside = box.log_density(x, 0).tolist()
        # −(log 0.4 + log 2) against −log 0.8: a rounding in each log and in the sum
        tol = 4 * torch.finfo(torch.float64).eps * (abs(math.log(0.4)) + math.log(2.0))
        assert inside == pytest.approx(-math.log(0.8), rel=0, abs=tol)
        assert outside == -math.inf
        return
    g = torch.linspace(-5, 5, 801, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    dens = box.log_density(torch.stack([X.flatten(), Y.flatten()], 1), t).exp().reshape(X.shape)
    total = torch.trapezoid(torch.trapezoid(dens, g, dim=1), g).item()
    assert total == pytest.approx(1.0, abs=2e-3)
    x = torch.randn(50, 2, dtype=torch.float64) * 2
    assert torch.allclose(box.score(x, t), _autograd_score(box, x, t), atol=1e-8)


def test_box_is_finite_far_outside(schedule):
    box = compose.UniformBox([-0.2, -1.0], [0.2, 1.0], schedule=schedule)
    x = torch.tensor([[30.0, 0.0], [-30.0, 0.0], [0.0, 25.0]], dtype=torch.float64)
    for t in (1, 2, 50, 100):
        lp, s = box.log_density_and_score(x, t)
        assert torch.isfinite(lp).all() and torch.isfinite(s).all()
        assert s[0, 0] < 0 and s[1, 0] > 0 and s[2, 1] < 0      # pulls back towards the box


def test_mixture_score_is_its_gradient(schedule):
    p = ring(schedule)
    x = torch.randn(100, 2, dtype=torch.float64)
    for t in (1, 20, 100):
        assert torch.allclose(p.score(x, t), _autograd_score(p, x, t), atol=1e-8)


def test_exact_samples_at_a_level_have_the_noised_moments(schedule):
    p = gaussian(schedule, [1.0, -2.0], 0.5, "g")
    g = torch.Generator().manual_seed(1)
    t, n = 60, 100_000
    x = p.sample(n, g, t=t, dtype=torch.float64)
    a, s2 = schedule.alpha_bar(t), schedule.sigma(t) ** 2
    var = a * 0.25 + s2
    sd_mean = math.sqrt(var / n)
    assert torch.allclose(x.mean(0), math.sqrt(a) * torch.tensor([1.0, -2.0], dtype=torch.float64), atol=4 * sd_mean)
    assert x.var(0).sub(var).abs().max().item() < 4 * var * math.sqrt(2 / n)


def test_score_model_from_analytic_gives_the_exact_score(schedule):
    p = ring(schedule)
    s = compose.ScoreModel.from_analytic(p)
    x = torch.randn(30, 2, dtype=torch.float64)
    assert torch.allclose(s.score(x, 17), p.score(x, 17), atol=1e-12)
    assert not s.has_log_density


class Linear(torch.nn.Module):
    """f(x, t) = x + A x, so g = ‖A x‖² and the energy is exact."""

    def __init__(self, A):
        super().__init__()
        self.A = A

    def forward(self, x, t):
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        return x + x @ self.A.T


def test_energy_model_log_density_and_score_are_exact(schedule):
    A = torch.tensor([[1.0, 0.5], [0.0, 2.0]], dtype=torch.float64)
    e = compose.EnergyModel(Linear(A), schedule)
    x = torch.randn(9, 2, dtype=torch.float64)
    t = 33
    lp, s = e.log_density_and_score(x, t)
    sigma = schedule.sigma(t)
    assert torch.allclose(lp, -((x @ A.T) ** 2).sum(1) / sigma)
    assert torch.allclose(s, -2 * (x @ A.T) @ A / sigma)


def test_score_model_passes_conditions_as_tensors(schedule):
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, t, **cond):
            seen.update(cond)
            return x * 0 + cond["class"].to(x.dtype)[:, None]

    p = compose.ScoreModel(Net(), schedule, name="p", event_shape=(2,))
    x = torch.zeros(4, 2)
    out = p.score(x, 10, (("class", 7),))
    assert seen["class"].dtype == torch.long and seen["class"].tolist() == [7] * 4
    assert torch.allclose(out, torch.full((4, 2), -7 / schedule.sigma(10)))


def test_network_output_of_the_wrong_shape_is_a_clear_error(schedule):
    p = compose.ScoreModel(lambda x, t: x[:, :1], schedule, name="p")
    with pytest.raises(ValueError, match=r"p: network returned shape \(3, 1\) for input \(3, 2\)"):
        p.score(torch.zeros(3, 2), 5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(means=[[0.0, 0.0]], std=-1.0), "std"),
    (dict(means=[[0.0, 0.0]], std=[1.0, 2.0]), "std"),
    (dict(means=[0.0, 0.0], std=1.0), "means"),
    (dict(means=[[0.0, 0.0]], std=1.0, weights=[-1.0]), "weights"),
])
def test_bad_mixture_arguments(schedule, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compose.GaussianMixture(schedule=schedule, **kwargs)


def test_bad_box_arguments(schedule):
    with pytest.raises(ValueError, match="high > low"):
        compose.UniformBox([0.0, 1.0], [1.0, 1.0], schedule=schedule)


def test_calling_a_component_says_how_to_condition_or_evaluate_it():
    """p(cls=1), the language's spelling, ended in torch's "_forward_unimplemented() got an
    unexpected keyword argument" (a Component is an nn.Module)."""
    p = compose.GaussianMixture([[0.0, 0.0]], 1.0, schedule=compose.Schedule.cosine(4), name="p")
    with pytest.raises(TypeError, match=r"component 'p' is not called: .*p\.given\(\{'cls': 1\}\)"):
        p(cls=1)
    with pytest.raises(TypeError, match=r"p\.score\(x, t\)"):
        p(torch.zeros(2, 2), 3)
