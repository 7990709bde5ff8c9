"""Windows of a canvas: e[W] is e seen through W, log π(x) = Σ w_i log p_i(x[W_i]).

The oracle: a canvas of 3 coordinates with single-Gaussian factors A on [0:2] and B on [1:3],
whose product is Gaussian in closed form at every level (docs/windows.md).
"""
import math

import pytest
import torch

import compose
from compose.errors import CompositionError
from compose.windows import normalise, uncovered
from conftest import gaussian

MU_A, STD_A = [1.0, -1.0], 0.5
MU_B, STD_B, W_B = [1.5, 0.5], 0.8, 0.5            # A[0:2] * B[1:3] ** 0.5
CANVAS = (3,)


@pytest.fixture(scope="module")
def schedule():
    return compose.Schedule.cosine(100)


@pytest.fixture(scope="module")
def factors(schedule):
    return gaussian(schedule, MU_A, STD_A, "A"), gaussian(schedule, MU_B, STD_B, "B")


def closed_form(schedule, t):
    """Mean (3,) and variances (3,) of π_t ∝ N(x[0:2]; √ᾱ μ_A, v_A) · N(x[1:3]; √ᾱ μ_B, v_B)^w;
    the factors are isotropic, so precisions add per coordinate."""
    a = schedule.alpha_bar(t) if t > 0 else 1.0
    s2 = schedule.sigma(t) ** 2 if t > 0 else 0.0
    v_a, v_b = a * STD_A ** 2 + s2, a * STD_B ** 2 + s2
    precision = torch.zeros(3, dtype=torch.float64)
    shift = torch.zeros(3, dtype=torch.float64)
    precision[0:2] += 1 / v_a
    shift[0:2] += math.sqrt(a) * torch.tensor(MU_A, dtype=torch.float64) / v_a
    precision[1:3] += W_B / v_b
    shift[1:3] += W_B * math.sqrt(a) * torch.tensor(MU_B, dtype=torch.float64) / v_b
    return shift / precision, 1 / precision


def closed_form_log_density(schedule, t, x):
    """log π_t(x) up to a constant, written out coordinate by coordinate."""
    a, s2 = schedule.alpha_bar(t), schedule.sigma(t) ** 2
    v_a, v_b = a * STD_A ** 2 + s2, a * STD_B ** 2 + s2
    mu_a = math.sqrt(a) * torch.tensor(MU_A, dtype=x.dtype)
    mu_b = math.sqrt(a) * torch.tensor(MU_B, dtype=x.dtype)
    return (-0.5 * ((x[:, 0:2] - mu_a) ** 2).sum(1) / v_a
            - W_B * 0.5 * ((x[:, 1:3] - mu_b) ** 2).sum(1) / v_b)


def within_mc_error(samples, mean, var):
    """z-scores of the sample mean, the variances and the covariances (true: 0) against
    i.i.d. Monte Carlo standard errors."""
    n = samples.shape[0]
    centred = samples - samples.mean(0)
    cov = centred.T @ centred / (n - 1)
    z = [(samples.mean(0) - mean).abs() / (var / n).sqrt(),
         (cov.diagonal() - var).abs() / (var * math.sqrt(2.0 / n))]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        z.append((cov[i, j].abs() / math.sqrt(var[i] * var[j] / n)).reshape(1))
    return torch.cat(z)


# -- keys and text -----------------------------------------------------------------------------
def test_keys_normalise_to_bounds():
    assert normalise(slice(0, 2)) == ((0, 2),)
    assert normalise((slice(None), slice(3, None), Ellipsis)) == ((None, None), (3, None), ...)
    assert normalise((slice(1, 4, 1),)) == ((1, 4),)


@pytest.mark.parametrize("key, match", [
    (slice(0, 4, 2), "only steps of 1"),
    (slice(-1, 2), "non-negative"),
    (slice(0, 2.5), "non-negative integer"),
    (3, r"would drop a dimension; write the slice 3:4"),
    ((Ellipsis, Ellipsis), r"'\.\.\.' only once"),
    (slice(4, 2), "is empty"),
    ("a", "expected a slice"),
    ((), "at least one slice"),
])
def test_bad_keys_are_refused(factors, key, match):
    A, _ = factors
    with pytest.raises(CompositionError, match=match):
        A[key]


def test_string_and_operator_forms_agree(factors):
    A, B = factors
    for text, built in [
        ("A[0:2] * B[1:3] ** 0.5", A[0:2] * B[1:3] ** 0.5),
        ("(A * B ** 2 / A)[..., 1:]", (A * B ** 2 / A)[..., 1:]),
        ("A[:][0:2]", A[:][0:2]),
        ("A[1:3] ** 2 * (A * B)[...]", A[1:3] ** 2 * (A * B)[...]),
    ]:
        assert compose.parse(text, {"A": A, "B": B}) == built
        assert str(built) == text
        assert compose.parse(str(built), {"A": A, "B": B}) == built


def test_conditioned_leaves_take_windows():
    expr = compose.parse("p(class=3)[:, 0:8, 0:8] ** 3 / p[:, 0:8, 0:8] ** 2 "
                         "* p(class=7)[:, 0:8, 6:14]")
    assert str(expr) == ("p(class=3)[:, 0:8, 0:8] ** 3 / p[:, 0:8, 0:8] ** 2 "
                         "* p(class=7)[:, 0:8, 6:14]")


@pytest.mark.parametrize("text, match, column", [
    ("A[0:4:2]", "only steps of 1", 7),
    ("A[-1:2]", "non-negative", 3),
    ("A[0:1.5]", "non-negative integer", 5),
    ("A[3]", "would drop a dimension", 3),
    ("A * B[0:2, ..., ...]", r"'\.\.\.' only once", 17),
])
def test_bad_slices_in_text_have_positions(text, match, column):
    with pytest.raises(CompositionError, match=match) as caught:
        compose.parse(text)
    assert caught.value.span is not None and caught.value.span.column == column


@pytest.mark.parametrize("text", ["A[0:2", "A[]", "A ** 2[0:1]", "A[0 2]", "[0:2]"])
def test_malformed_windows_are_syntax_errors(text):
    with pytest.raises(CompositionError) as caught:
        compose.parse(text)
    assert caught.value.span is not None


# -- compilation -------------------------------------------------------------------------------
def test_nested_windows_compose(schedule):
    C = gaussian(schedule, [0.0, 0.0], 1.0, "C")
    D = gaussian(schedule, [0.0] * 5, 1.0, "D")
    # e[W] is e seeing x[W]: in C[1:3][1:4] the last window is the outer one, C sees x[1:4][1:3]
    nested = compose.compile(D * C[1:3][1:4], event_shape=(5,))
    flat = compose.compile(D * C[2:4], event_shape=(5,))
    x = torch.randn(7, 5, dtype=torch.float64)
    assert torch.equal(nested.score(x, 10), flat.score(x, 10))
    assert [t.window for t in nested.terms] == [t.window for t in flat.terms]
    tapestry = compose.compile(D * (C[0:2] * C[1:3])[2:5], event_shape=(5,))
    assert [t.window for t in tapestry.terms] == [None, ((2, 4),), ((3, 5),)]


def test_score_is_autograd_of_the_closed_form(schedule, factors):
    A, B = factors
    target = compose.compile(A[0:2] * B[1:3] ** W_B, event_shape=CANVAS)
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (1, 30, 100):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(closed_form_log_density(schedule, t, xg).sum(), xg)
        assert torch.allclose(target.score(x, t), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("view", ["analytic", "score-only"])
def test_delta_is_the_closed_form_difference(schedule, factors, view):
    A, B = factors
    if view == "score-only":      # Gaussian scores are linear: the trapezoid rule is exact
        A, B = compose.ScoreModel.from_analytic(A), compose.ScoreModel.from_analytic(B)
    target = compose.compile(A[0:2] * B[1:3] ** W_B, event_shape=CANVAS, points=2)
    g = torch.Generator().manual_seed(1)
    x, x_new = torch.randn(40, 3, dtype=torch.float64, generator=g), torch.randn(40, 3, dtype=torch.float64, generator=g)
    for t in (2, 50):
        exact = closed_form_log_density(schedule, t, x_new) - closed_form_log_density(schedule, t, x)
        assert torch.allclose(target.log_ratio(x, x_new, t), exact, rtol=1e-10, atol=1e-10)
        path = torch.stack([x, 0.3 * x + 0.7 * x_new, x_new])
        assert torch.allclose(target.log_ratio_curve(path, t), exact, rtol=1e-10, atol=1e-10)


def test_windows_of_one_network_share_one_call(schedule):
    E = compose.ScoreModel.from_analytic(gaussian(schedule, [0.5, -0.5], 0.7, "E"), name="E")
    target = compose.compile(E[0:2] * E[1:3] ** 2 * E[2:4] ** 0.5, event_shape=(4,))
    x = torch.randn(6, 4, dtype=torch.float64)
    target.counter.reset()
    score = target.score(x, 20)
    # counted per term, under the plan's labels (one call, in the first term's count)
    assert target.counter.calls == {"E[0:2]": 1, "E[1:3]": 0, "E[2:4]": 0}
    assert target.counter.rows == {"E[0:2]": 6, "E[1:3]": 6, "E[2:4]": 6}
    assert list(target.counter.rows) == target.labels()
    # the same as three separate components, one call each
    E1, E2, E3 = (compose.ScoreModel.from_analytic(gaussian(schedule, [0.5, -0.5], 0.7, n))
                  for n in ("E1", "E2", "E3"))
    separate = compose.compile(E1[0:2] * E2[1:3] ** 2 * E3[2:4] ** 0.5, event_shape=(4,))
    assert torch.allclose(score, separate.score(x, 20), rtol=1e-12, atol=1e-12)
    # the plan shows the windows and the one stacked call
    text = str(target.plan_for(compose.MALA(0.1), 2, 6))
    assert "E[0:2]" in text and "E[1:3]" in text and "E[2:4]" in text
    assert "call (18, 2) at chain points, 3 windows stacked" in text


# -- errors ------------------------------------------------------------------------------------
def test_window_leaving_the_canvas(factors):
    A, B = factors
    with pytest.raises(CompositionError, match=r"window \[2:4\] of 'B' leaves the canvas: "
                                               r"dimension 1 has size 3, the window spans 2:4"):
        compose.compile(A[0:2] * B[2:4], event_shape=CANVAS)


def test_window_not_matching_its_component(factors):
    A, B = factors
    with pytest.raises(CompositionError, match=r"'A' sees the window \[0:3\] of shape \(3,\), "
                                               r"but its samples have shape \(2,\)"):
        compose.compile(A[0:3] * B[1:3], event_shape=CANVAS)


def test_uncovered_canvas_is_refused_with_the_ranges(schedule, factors):
    A, B = factors
    with pytest.raises(CompositionError, match=r"canvas coordinates covered by no factor: "
                                               r"\[2:3\], \[5:7\]"):
        compose.compile(A[0:2] * B[3:5], event_shape=(7,))
    # a factor whose weights cancel covers nothing
    with pytest.raises(CompositionError, match=r"covered by no factor: \[2:3\]"):
        compose.compile(A[0:2] * B[1:3] / B[1:3] * A[0:2], event_shape=CANVAS)
    assert uncovered((2, 4), [((0, 2), (0, 1)), ((0, 1), (1, 4))]) == [((1, 2), (1, 4))]


def test_windows_need_a_canvas(factors):
    A, B = factors
    with pytest.raises(CompositionError, match=r"event_shape=\(\.\.\.\)"):
        compose.compile(A[0:2] * B[1:3])


def test_canvas_must_agree_with_unwindowed_components(schedule, factors):
    A, _ = factors
    C = gaussian(schedule, [0.0, 0.0, 0.0], 1.0, "C")
    with pytest.raises(ValueError, match=r"event_shape"):
        compose.compile(C * A[0:2], event_shape=(4,))
    # an unwindowed component of the canvas's shape fixes the canvas itself
    assert compose.compile(C * A[1:3]).event_shape == (3,)


# -- sampling ----------------------------------------------------------------------------------
def _run(target, kernel, seed, steps=5, reverse=False):
    return compose.sample(target, kernel, 3000, steps_per_level=steps, reverse_step=reverse,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                          event_shape=CANVAS, progress=False).samples


@pytest.mark.parametrize("kernel, view, path", [
    (compose.MALA(0.03), "analytic", "line"),
    (compose.MALA(0.03), "score-only", "line"),
    (compose.HMC(0.15, num_leapfrog=3), "analytic", "line"),
    (compose.HMC(0.15, num_leapfrog=3), "score-only", "curve"),
], ids=["MALA-exact", "MALA-line", "HMC-exact", "HMC-curve"])
def test_annealed_mcmc_reaches_the_closed_form(schedule, factors, kernel, view, path):
    A, B = factors
    if view == "score-only":
        A, B = compose.ScoreModel.from_analytic(A), compose.ScoreModel.from_analytic(B)
    target = compose.compile(A[0:2] * B[1:3] ** W_B, event_shape=CANVAS, path=path, points=1)
    samples = _run(target, kernel, seed=3)
    mean, var = closed_form(schedule, 1)           # no reverse step: the chains end at t = 1
    z = within_mc_error(samples, mean, var)
    assert z.max() < 4.5, z


def test_the_reverse_process_alone_misses_it(schedule, factors):
    A, B = factors
    target = compose.compile(A[0:2] * B[1:3] ** W_B, event_shape=CANVAS)
    samples = _run(target, None, seed=3, steps=0, reverse=True)
    mean, var = closed_form(schedule, 0)
    assert within_mc_error(samples, mean, var).max() > 10


def test_mcmc_then_reverse_step_reaches_the_clean_product(schedule, factors):
    A, B = factors
    target = compose.compile(A[0:2] * B[1:3] ** W_B, event_shape=CANVAS)
    samples = _run(target, compose.HMC(0.15), seed=4, reverse=True)
    mean, var = closed_form(schedule, 0)
    assert within_mc_error(samples, mean, var).max() < 4.5


def test_long_flat_products_of_windows_do_not_recurse(schedule):
    E = gaussian(schedule, [0.0, 0.0], 1.0, "E")
    n = 3000                                             # far deeper than the recursion limit
    expr = E[0:2]
    for i in range(1, n):
        expr = expr * E[i:i + 2]
    target = compose.compile(expr, event_shape=(n + 1,))
    assert len(target.terms) == n and len(target.exact_calls) == 1
    text = str(expr)
    assert text.startswith("E[0:2] * E[1:3] * ") and compose.parse(text, {"E": E}) == expr
    x = torch.randn(2, n + 1, dtype=torch.float64)
    target.counter.reset()
    score = target.score(x, 5)
    assert sum(target.counter.calls.values()) == 1
    assert target.counter.rows == {f"E[{i}:{i + 2}]": 2 for i in range(n)}
    # interior coordinates are seen by two windows, the ends by one: score = −c · x · coverage
    v = schedule.alpha_bar(5) + schedule.sigma(5) ** 2
    coverage = torch.full((n + 1,), 2.0, dtype=torch.float64)
    coverage[0] = coverage[-1] = 1.0
    assert torch.allclose(score, -x * coverage / v, rtol=1e-12, atol=1e-12)
