"""Gauss–Lobatto quadrature for Δ (docs/quadrature.md): nodes and weights against numpy's
Legendre module, exactness up to degree 2n + 1 and not beyond, the convergence order against
exact log-density differences, the curve, the cost, the plan, and bad input."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre

import compose
from compose import cli
from compose.compiler import quadrature
from conftest import gaussian, random_walk_path, ring

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "components_2d.py")


def numpy_lobatto(n):
    """An independent Gauss–Lobatto rule on [0, 1]: interior nodes from numpy's roots of P′_{n+1},
    weights from the moment equations Σ_j c_j u_j^k = 1/(k + 1), k = 0 … n + 1."""
    roots = np.sort(legendre.Legendre.basis(n + 1).deriv().roots().real)
    nodes = np.concatenate([[0.0], (roots + 1) / 2, [1.0]])
    vandermonde = np.vander(nodes, increasing=True).T           # row k: u_j^k
    weights = np.linalg.solve(vandermonde, 1.0 / np.arange(1, n + 3))
    return nodes, weights


@pytest.mark.parametrize("n", range(1, 7))
def test_nodes_and_weights_match_numpy(n):
    nodes, weights = quadrature.lobatto(n)
    ref_nodes, ref_weights = numpy_lobatto(n)
    assert len(nodes) == len(weights) == n + 2
    np.testing.assert_allclose(nodes, ref_nodes, rtol=0, atol=1e-14)
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=1e-13)


def test_the_first_rules_in_closed_form():
    assert quadrature.lobatto(0) == ((0.0, 1.0), (0.5, 0.5))
    nodes, weights = quadrature.lobatto(1)                         # Simpson
    np.testing.assert_allclose(nodes, [0, 0.5, 1], atol=1e-16)
    np.testing.assert_allclose(weights, [1 / 6, 4 / 6, 1 / 6], atol=1e-16)
    nodes, weights = quadrature.lobatto(2)
    r = 1 / math.sqrt(5)
    np.testing.assert_allclose(nodes, [0, (1 - r) / 2, (1 + r) / 2, 1], atol=1e-16)
    np.testing.assert_allclose(weights, [1 / 12, 5 / 12, 5 / 12, 1 / 12], atol=1e-16)


@pytest.mark.parametrize("n", [10, 25, 60])
def test_larger_rules_stay_well_formed(n):
    nodes, weights = quadrature.lobatto(n)
    assert all(a < b for a, b in zip(nodes, nodes[1:]))
    assert min(weights) > 0 and abs(sum(weights) - 1) < 1e-13
    # symmetric about ½
    np.testing.assert_allclose(np.array(nodes) + np.array(nodes[::-1]), 1.0, atol=1e-14)


# -- polynomial score fields: exact up to degree 2n + 1 ---------------------------------------
class PolynomialNoise(torch.nn.Module):
    """ε-network of a score field s = ∇φ, φ(x) = Σ_k c_k (a_k · x + b_k)^(D+1): a polynomial score of
    degree D in x (ε = −σ_t s, so that the ScoreModel's −ε/σ_t is s itself)."""

    def __init__(self, schedule, degree, dim=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.schedule, self.degree = schedule, degree
        self.a = torch.randn(4, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
        self.b = 0.3 * torch.randn(4, generator=g, dtype=torch.float64)
        self.c = torch.randn(4, generator=g, dtype=torch.float64) / (degree + 1)

    def potential(self, x):
        return ((x @ self.a.T + self.b) ** (self.degree + 1) * self.c).sum(1)

    def forward(self, x, t):
        inner = (x @ self.a.T + self.b) ** self.degree * self.c * (self.degree + 1)
        sigma = float(self.schedule.sigma(int(t[0])))
        return -sigma * inner @ self.a


def _polynomial_case(schedule, degree, n, path="line"):
    net = PolynomialNoise(schedule, degree)
    model = compose.ScoreModel(net, schedule, name="poly", event_shape=(3,))
    target = compose.compile(model, path=path, points=n, rule="lobatto")
    g = torch.Generator().manual_seed(degree)
    if path == "line":
        x = 0.5 * torch.randn(16, 3, generator=g, dtype=torch.float64)
        x_new = x + 0.5 * torch.randn(16, 3, generator=g, dtype=torch.float64)
        delta = target.log_ratio(x, x_new, 5)
        start, end = x, x_new
    else:
        path_points = torch.cumsum(0.4 * torch.randn(4, 16, 3, generator=g, dtype=torch.float64), 0)
        delta = target.log_ratio_curve(path_points, 5)
        start, end = path_points[0], path_points[-1]
    exact = net.potential(end) - net.potential(start)
    # float64 rounding of sums of terms of this magnitude
    scale = (net.potential(end).abs() + net.potential(start).abs()).max().item() + 1.0
    return (delta - exact).abs().max().item(), scale


@pytest.mark.parametrize("path", ["line", "curve"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_lobatto_is_exact_for_polynomial_scores_of_degree_2n_plus_1(schedule, n, path):
    error, scale = _polynomial_case(schedule, 2 * n + 1, n, path)
    assert error < 1e-12 * scale, (error, scale)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_lobatto_is_not_exact_for_degree_2n_plus_2(schedule, n):
    # a thousand times above the rounding bound of the exact case
    error, scale = _polynomial_case(schedule, 2 * n + 2, n)
    assert error > 1e-9 * scale, (error, scale)


# -- against exact log-density differences -----------------------------------------------------
def _steps(schedule, rule, n, lengths, t=20):
    exact_p = ring(schedule, std=0.1)
    target = compose.compile(compose.ScoreModel.from_analytic(exact_p), points=n, rule=rule)
    g = torch.Generator().manual_seed(7)
    x = 0.5 * torch.randn(256, 2, generator=g, dtype=torch.float64)
    d = torch.randn(256, 2, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    errors = []
    for length in lengths:
        x_new = x + length * d
        exact = exact_p.log_density(x_new, t) - exact_p.log_density(x, t)
        errors.append((target.log_ratio(x, x_new, t) - exact).abs().sum().item())
    return errors


def test_simpson_error_shrinks_at_least_12x_per_halving_of_the_step(schedule):
    # Error of one piece of length ℓ: Simpson ∝ ℓ⁵ (32× per halving), trapezoid with one
    # interior node ∝ ℓ³ (8×).
    lengths = (0.2, 0.1, 0.05, 0.025)
    simpson = _steps(schedule, "lobatto", 1, lengths)
    trapezoid = _steps(schedule, "trapezoid", 1, lengths)
    s_ratios = [a / b for a, b in zip(simpson, simpson[1:])]
    t_ratios = [a / b for a, b in zip(trapezoid, trapezoid[1:])]
    assert all(r >= 12 for r in s_ratios), (simpson, s_ratios)
    assert all(6 < r < 10 for r in t_ratios), (trapezoid, t_ratios)
    assert all(s < t for s, t in zip(simpson, trapezoid))


def test_matches_an_independent_lobatto_sum_on_exact_scores(schedule):
    exact_p = ring(schedule, std=0.1)
    g = torch.Generator().manual_seed(8)
    x = 0.5 * torch.randn(32, 2, generator=g, dtype=torch.float64)
    x_new = x + 0.4 * torch.randn(32, 2, generator=g, dtype=torch.float64)
    t = 15
    for n in (1, 2, 3, 5):
        nodes, weights = numpy_lobatto(n)
        expected = sum(w * (exact_p.score(x + float(u) * (x_new - x), t) * (x_new - x)).sum(1)
                       for u, w in zip(nodes, weights))
        target = compose.compile(compose.ScoreModel.from_analytic(exact_p), points=n, rule="lobatto")
        assert torch.allclose(target.log_ratio(x, x_new, t), expected, rtol=0, atol=1e-12)


def test_curve_with_lobatto_is_exact_for_a_gaussian(schedule):
    p = gaussian(schedule, [0.3, -0.2], 0.7, "g")
    path = random_walk_path(5, 16, 2, 0.3, seed=3)
    exact = p.log_density(path[-1], 30) - p.log_density(path[0], 30)
    for n in (0, 1, 2):
        target = compose.compile(compose.ScoreModel.from_analytic(p), path="curve", points=n, rule="lobatto")
        assert torch.allclose(target.log_ratio_curve(path, 30), exact, rtol=0, atol=1e-10)


def test_curve_with_lobatto_converges_faster_than_the_trapezoid(schedule):
    exact_p = ring(schedule, std=0.1)
    scored = compose.ScoreModel.from_analytic(exact_p, name="s")
    path = random_walk_path(4, 32, 2, 0.15, seed=4)
    t = 20
    exact = exact_p.log_density(path[-1], t) - exact_p.log_density(path[0], t)
    err = {}
    for rule in ("trapezoid", "lobatto"):
        target = compose.compile(scored, path="curve", points=1, rule=rule)
        err[rule] = (target.log_ratio_curve(path, t) - exact).abs().sum().item()
    assert err["lobatto"] < 0.25 * err["trapezoid"], err


def test_no_interior_points_is_the_trapezoid_for_both_rules(schedule):
    scored = compose.ScoreModel.from_analytic(ring(schedule, std=0.1))
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20, 2, generator=g, dtype=torch.float64)
    x_new = x + 0.3 * torch.randn(20, 2, generator=g, dtype=torch.float64)
    a = compose.compile(scored, points=0).log_ratio(x, x_new, 9)
    b = compose.compile(scored, points=0, rule="lobatto").log_ratio(x, x_new, 9)
    assert torch.equal(a, b)


# -- cost: the same batched calls as the trapezoid ---------------------------------------------
@pytest.mark.parametrize("chunk_rows, calls", [(None, 3), (30, 1), (20, 2)])
def test_lobatto_costs_n_evaluations_in_the_same_calls(schedule, chunk_rows, calls):
    scored = compose.ScoreModel.from_analytic(ring(schedule), name="s")
    g = torch.Generator().manual_seed(6)
    x = torch.randn(10, 2, generator=g, dtype=torch.float64)
    x_new = x + 0.1 * torch.randn(10, 2, generator=g, dtype=torch.float64)
    for rule in ("trapezoid", "lobatto"):
        target = compose.compile(scored, points=3, rule=rule, chunk_rows=chunk_rows)
        here, there = target.evaluate(x, 7), target.evaluate(x_new, 7)
        target.counter.reset()
        target.delta_line(x, here, x_new, there, 7)
        assert target.counter.rows == {"s": 30} and target.counter.calls == {"s": calls}


def test_hmc_curve_with_lobatto_counts_m_times_l_extra_evaluations(schedule):
    scored = compose.ScoreModel.from_analytic(ring(schedule), name="s")
    target = compose.compile(scored, path="curve", points=1, rule="lobatto")
    kernel = compose.HMC(0.05, num_leapfrog=3)
    result = compose.sample(target, kernel, 50, steps_per_level=2, generator=torch.Generator().manual_seed(0),
                            progress=False, dtype=torch.float64)
    per_sample = result.diagnostics.evaluations_per_sample()["s"]
    assert per_sample == schedule.T * (1 + 2 * 3 + 2 * 3)
    assert target.plan_for(kernel, 2, 50).totals["per_sample"] == per_sample


# -- the plan and bad input ---------------------------------------------------------------------
def test_the_plan_names_the_rule(schedule):
    scored = compose.ScoreModel.from_analytic(ring(schedule), name="s")
    plan = compose.compile(scored, points=2, rule="lobatto").plan
    assert plan.to_dict()["rule"] == "lobatto"
    assert "Gauss–Lobatto rule, 2 interior points" in str(plan)
    assert compose.compile(scored, points=2).plan.to_dict()["rule"] == "trapezoid"
    curve = compose.compile(scored, path="curve", points=1, rule="lobatto")
    text = str(curve.plan_for(compose.HMC(0.03), 10, 100))
    assert "integral along the leapfrog path, Gauss–Lobatto rule, 1 extra point per segment" in text
    assert json.loads(json.dumps(curve.plan.to_dict()))["rule"] == "lobatto"


def test_compose_plan_has_a_rule_option(capsys):
    status = cli.main(["plan", "ring_score * bar", "--components", EXAMPLE, "--kernel", "MALA",
                       "--points", "1", "--rule", "lobatto", "--json"])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    plan = json.loads(out)
    assert plan["rule"] == "lobatto"
    ring_score = next(term for term in plan["terms"] if term["label"] == "ring_score")
    assert ring_score["per_sample"] == 100 * (1 + 10 * 2)
    with pytest.raises(SystemExit):
        cli.main(["plan", "ring_score", "--components", EXAMPLE, "--rule", "simpson"])
    assert "invalid choice: 'simpson'" in capsys.readouterr().err


@pytest.mark.parametrize("rule", ["simpson", "Lobatto", None, 3])
def test_unknown_rules_are_refused(schedule, rule):
    scored = compose.ScoreModel.from_analytic(ring(schedule))
    with pytest.raises(ValueError, match="rule: must be one of trapezoid, lobatto"):
        compose.compile(scored, points=1, rule=rule)


@pytest.mark.parametrize("points", [-1, 1.5, True])
def test_bad_point_counts_are_refused_for_lobatto(schedule, points):
    scored = compose.ScoreModel.from_analytic(ring(schedule))
    with pytest.raises(ValueError, match="points: "):
        compose.compile(scored, points=points, rule="lobatto")
    with pytest.raises(ValueError, match="points: "):
        quadrature.lobatto(points)


def test_a_huge_lobatto_rule_is_refused_at_compile_time(schedule):
    """points=10**6 with the Lobatto rule once reached the first Δ and died in the allocator
    (a dense 10⁶ × 10⁶ Jacobi matrix); it is a ValueError from compile naming the limit."""
    scored = compose.ScoreModel.from_analytic(ring(schedule))
    limit = quadrature.MAX_LOBATTO_POINTS
    with pytest.raises(ValueError, match=f"points: .*at most {limit} interior nodes.*got {10 ** 6}"):
        compose.compile(scored, points=10 ** 6, rule="lobatto")
    with pytest.raises(ValueError, match=f"at most {limit}"):
        quadrature.lobatto(limit + 1)
    compose.compile(scored, points=10 ** 6)            # the trapezoid needs no rule to be built


def test_the_lobatto_rule_is_built_when_compiling(schedule, monkeypatch):
    """Errors in building a rule show at compile time, and Δ reuses the rule built there."""
    scored = compose.ScoreModel.from_analytic(ring(schedule))
    quadrature.lobatto.cache_clear()
    compose.compile(scored, points=7, rule="lobatto")
    assert quadrature.lobatto.cache_info().currsize == 1
