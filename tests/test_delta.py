"""The pseudo-energy difference Δ against exact log-density differences (docs/delta.md;
docs/algebra.md, section 4)."""

import pytest
import torch

import compose
from conftest import gaussian, random_walk_path, ring


def _points(n=64, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, x + scale * torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_line_integral_of_a_score_model_converges_like_h_squared(schedule):
    exact_p = ring(schedule, std=0.1)
    scored = compose.ScoreModel.from_analytic(exact_p)
    x, x_new = _points()
    t = 20
    exact = exact_p.log_density(x_new, t) - exact_p.log_density(x, t)
    errors = []
    for n in (7, 15, 31, 63):                                    # h = 1/8, 1/16, 1/32, 1/64
        delta = compose.compile(scored, points=n).log_ratio(x, x_new, t)
        errors.append((delta - exact).abs().sum().item())
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    # The trapezoid rule's error is C h² + O(h⁴): halving h divides it by 4.
    assert all(3.5 < r < 4.5 for r in ratios), (errors, ratios)
    assert errors[-1] < 1e-3 * (exact.abs().sum().item())


@pytest.mark.parametrize("chunk_rows, calls", [(None, 5), (50, 1), (20, 3)])
def test_line_integral_costs_exactly_n_evaluations(schedule, chunk_rows, calls):
    # On the CPU the default is one call per interior point (batching measured slower there);
    # an explicit chunk_rows batches the points of all chains into calls of that many rows.
    scored = compose.ScoreModel.from_analytic(ring(schedule), name="s")
    target = compose.compile(scored, points=5, chunk_rows=chunk_rows)
    x, x_new = _points(n=10)
    here, there = target.evaluate(x, 7), target.evaluate(x_new, 7)
    target.counter.reset()
    target.delta_line(x, here, x_new, there, 7)
    assert target.counter.rows == {"s": 50} and target.counter.calls == {"s": calls}


def test_integration_points_go_in_one_call_on_accelerators(schedule):
    target = compose.compile(compose.ScoreModel.from_analytic(ring(schedule)), points=5)
    assert target.interior_rows_per_call(2000, "cuda") is None
    assert target.interior_rows_per_call(2000, "cpu") == 2000


def test_exact_components_give_exact_delta_with_no_extra_evaluations(schedule):
    r = ring(schedule)
    box = compose.UniformBox([-0.2, -1.0], [0.2, 1.0], schedule=schedule, name="bar")

    class Quadratic(torch.nn.Module):
        def forward(self, x, t):
            return 2 * x                                        # g = ‖x‖², log p = −‖x‖²/σ

    energy = compose.EnergyModel(Quadratic(), schedule, name="e")
    target = compose.compile(r * box ** 0.5 / energy, points=8)
    x, x_new = _points(n=20)
    t = 45
    expected = (r.log_density(x_new, t) - r.log_density(x, t)
                + 0.5 * (box.log_density(x_new, t) - box.log_density(x, t))
                + ((x_new ** 2).sum(1) - (x ** 2).sum(1)) / schedule.sigma(t))
    target.counter.reset()
    delta = target.log_ratio(x, x_new, t)
    assert torch.allclose(delta, expected, atol=1e-10)
    assert target.counter.rows == {"ring": 40, "bar": 40, "e": 40}   # the two end points only


def test_curve_integral_is_exact_for_a_gaussian_score(schedule):
    # For a Gaussian the score is linear, so the trapezoid rule is exact on every piece.
    p = gaussian(schedule, [0.3, -0.2], 0.7, "g")
    target = compose.compile(compose.ScoreModel.from_analytic(p), path="curve")
    path = random_walk_path(5, 16, 2, 0.3, seed=3)
    delta = target.log_ratio_curve(path, 30)
    exact = p.log_density(path[-1], 30) - p.log_density(path[0], 30)
    assert torch.allclose(delta, exact, atol=1e-10)


def test_curve_extra_points_refine_each_segment(schedule):
    exact_p = ring(schedule, std=0.1)
    scored = compose.ScoreModel.from_analytic(exact_p, name="s")
    path = random_walk_path(4, 32, 2, 0.15, seed=4)
    t = 20
    exact = exact_p.log_density(path[-1], t) - exact_p.log_density(path[0], t)
    err = {}
    for m in (0, 1, 3):
        target = compose.compile(scored, path="curve", points=m)
        err[m] = (target.log_ratio_curve(path, t) - exact).abs().sum().item()
    assert err[3] < err[1] < err[0]
    # m = 1 halves h on each of the 3 segments, m = 3 quarters it: error ratio ≈ 4 then ≈ 4.
    assert 2.5 < err[1] / err[3] < 5.5


class LinearLogits(torch.nn.Module):
    """logits = W x + b: log p(y | x) known in closed form."""

    def __init__(self, W, b):
        super().__init__()
        self.W, self.b = W, b

    def forward(self, x, t):
        return x @ self.W.T + self.b


def _closed_form_log_prob(W, b, x, y):
    return torch.log_softmax(x @ W.T + b, 1)[:, y]


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_guidance_scale_enters_both_score_and_delta(schedule, scale):
    # The paper's code multiplied the classifier score by λ but not its log-probability in MH
    # (docs/algebra.md, section 4). Both must describe π = p · p(y | x)^λ.
    W = torch.tensor([[1.0, -2.0], [0.5, 0.3], [-1.0, 1.0]], dtype=torch.float64)
    b = torch.tensor([0.1, -0.2, 0.0], dtype=torch.float64)
    clf = compose.Classifier(LinearLogits(W, b), schedule, variable="class", name="clf")
    p = gaussian(schedule, [0.0, 0.5], 0.6, "p")
    target = compose.compile(p.guide(clf.condition(2), scale=scale))
    x, x_new = _points(n=12)
    t = 10
    log_pi = lambda z: p.log_density(z, t) + scale * _closed_form_log_prob(W, b, z, 2)
    assert torch.allclose(target.log_ratio(x, x_new, t), log_pi(x_new) - log_pi(x), atol=1e-12)
    z = x.clone().requires_grad_(True)
    grad = torch.autograd.grad((p._exact(z, t)[0] + scale * _closed_form_log_prob(W, b, z, 2)).sum(), z)[0]
    assert torch.allclose(target.score(x, t), grad, atol=1e-10)


def test_guidance_on_a_score_model_integrates_the_model_and_takes_the_classifier_exactly(schedule):
    W = torch.tensor([[1.0, -2.0], [0.5, 0.3]], dtype=torch.float64)
    b = torch.zeros(2, dtype=torch.float64)
    clf = compose.Classifier(LinearLogits(W, b), schedule, name="clf")
    p = gaussian(schedule, [0.0, 0.5], 0.6, "p")
    scored = compose.ScoreModel.from_analytic(p, name="s")
    target = compose.compile(scored.guide(clf.condition(1), scale=2.0), points=0)
    x, x_new = _points(n=12)
    t = 10
    expected = (p.log_density(x_new, t) - p.log_density(x, t)
                + 2.0 * (_closed_form_log_prob(W, b, x_new, 1) - _closed_form_log_prob(W, b, x, 1)))
    # Gaussian score is linear: the trapezoid rule with no interior points is already exact.
    assert torch.allclose(target.log_ratio(x, x_new, t), expected, atol=1e-10)


def test_mixture_of_analytic_components_is_the_exact_mixture(schedule):
    # R3 applied the 1/σ_t scale after the logsumexp and ignored weights (docs/algebra.md §3).
    a = gaussian(schedule, [-1.0, 0.0], 0.3, "a")
    c = gaussian(schedule, [1.0, 0.5], 0.5, "c")
    both = compose.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], [0.3, 0.5], schedule=schedule)
    target = compose.compile(a + c)
    x, x_new = _points(n=30)
    for t in (1, 40, 100):
        assert torch.allclose(target.log_ratio(x, x_new, t),
                              both.log_density(x_new, t) - both.log_density(x, t), atol=1e-10)
        assert torch.allclose(target.score(x, t), both.score(x, t), atol=1e-10)


def test_mixture_of_energy_models_uses_each_energy_scale_inside_the_logsumexp(schedule):
    class Shifted(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c

        def forward(self, x, t):                 # g = ‖x − c‖²
            return 2 * x - self.c

    c1, c2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([-1.0, 0.5], dtype=torch.float64)
    e1 = compose.EnergyModel(Shifted(c1), schedule, name="e1")
    e2 = compose.EnergyModel(Shifted(c2), schedule, name="e2")
    target = compose.compile(e1 + e2 ** 2)
    x, x_new = _points(n=10)
    t = 25
    sigma = schedule.sigma(t)
    log_pi = lambda z: torch.logsumexp(torch.stack([-((z - c1) ** 2).sum(1) / sigma,
                                                    -2 * ((z - c2) ** 2).sum(1) / sigma]), 0)
    assert torch.allclose(target.log_ratio(x, x_new, t), log_pi(x_new) - log_pi(x), atol=1e-10)
    z = x.clone().requires_grad_(True)
    assert torch.allclose(target.score(x, t), torch.autograd.grad(log_pi(z).sum(), z)[0], atol=1e-10)


def test_weights_multiply_through_nesting(schedule):
    p, q, r = (gaussian(schedule, [float(i), 0.0], 0.5 + 0.1 * i, n) for i, n in enumerate("pqr"))
    target = compose.compile((p * q / r) ** 0.5 * p)
    weights = {t.label: t.weight for t in target.terms}
    assert weights == {"p": 1.5, "q": 0.5, "r": -0.5}
    x = torch.randn(5, 2, dtype=torch.float64)
    expected = 1.5 * p.score(x, 3) + 0.5 * q.score(x, 3) - 0.5 * r.score(x, 3)
    assert torch.allclose(target.score(x, 3), expected)


def test_classifier_free_guidance_evaluates_the_conditional_and_unconditional_model(schedule):
    class Net(torch.nn.Module):
        def forward(self, x, t, **cond):
            shift = cond["class"].to(x.dtype)[:, None] if "class" in cond else 0.0
            return x - shift

    p = compose.ScoreModel(Net(), schedule, name="p", event_shape=(2,))
    target = compose.compile(p.given({"class": 7}) ** 3 / p ** 2)
    x = torch.randn(4, 2, dtype=torch.float64)
    s = schedule.sigma(9)
    assert torch.allclose(target.score(x, 9), (3 * -(x - 7) + 2 * x) / s)
    assert [t.label for t in target.terms] == ["p(class=7)", "p"]
