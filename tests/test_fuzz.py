"""Bounded fuzzing of the whole composition path: text → parse → compile → str / repr / plan →
evaluate and Δ.

Two generators: grammar-aware random compositions (deep nesting, long flat products, extreme
numbers, unicode, repeated names, strings in conditions, guidance, mixtures, windows) and
random token strings. For every input the only errors allowed out are CompositionError and
ValueError, printing and planning never fail on what compiled, the canonical text parses back
to the same tree, and an evaluation at finite points either returns finite values or raises a
ValueError (a finite weight too large for the dtype) — never a silent inf or NaN.

Deterministic (derandomize=True, a fixed number of examples): a few seconds in CI.
"""
import collections
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compose
from compose.errors import CompositionError

T = 6
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


class _Eps(torch.nn.Module):
    """ε(x, t) = 0.3 x + 0.1: any condition keywords accepted and ignored."""

    def forward(self, x, t, **conditions):
        return 0.3 * x + 0.1


class _Energy(torch.nn.Module):
    def forward(self, x, t, **conditions):
        return 0.5 * x


class _Logits(torch.nn.Module):
    def forward(self, x, t):
        return torch.stack([x[:, 0], x[:, 1], -x.sum(1)], 1)


def _components():
    s = compose.Schedule.cosine(T)
    return {
        "p": compose.GaussianMixture([[0.0, 0.0], [0.6, -0.3]], 0.5, schedule=s, name="p"),
        "q": compose.UniformBox([-1.0, -1.5], [1.0, 1.5], schedule=s, name="q"),
        "c": compose.ScoreModel(_Eps(), s, name="c", event_shape=(2,)),
        "e": compose.EnergyModel(_Energy(), s, name="e", event_shape=(2,)),
        "class": compose.Classifier(_Logits(), s, name="clf", event_shape=(2,)),
    }


PARTS = _components()

# -- grammar-aware compositions ---------------------------------------------------------------
# mostly bound names (repeated), sometimes an unknown one, a classifier or non-ASCII letters
NAMES = st.sampled_from(["p", "q", "c", "e"] * 4 + ["zz", "class", "_x1", "π", "ﬁ"])
NUMBERS = st.one_of(
    st.sampled_from(["0", "-0.0", "1", "2", "-1", "0.5", ".5", "1e-3", "1e308", "-1e308", "1e300",
                     "1e-300", "5e-324", "1e-320", "1e309", "99999999999999999999", "3e38", "1e39",
                     "-2.5E+1", "7.0"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-10 ** 25, max_value=10 ** 25).map(str))
# strings in either quote, escaped as the grammar reads them
STRINGS = st.tuples(st.text(alphabet="ab π\"'\\é\n#=,()", max_size=6), st.sampled_from("\"'")).map(
    lambda t: t[1] + t[0].replace("\\", "\\\\").replace(t[1], "\\" + t[1]) + t[1])
VALUES = st.one_of(NUMBERS, STRINGS, st.sampled_from(["x", "t", "name"]))
VARIABLES = st.sampled_from(["a", "class", "x", "t", "self", "style", "a"])


@st.composite
def _leaf(draw):
    name = draw(NAMES)
    if draw(st.integers(0, 5)) == 0:
        args = draw(st.lists(st.tuples(VARIABLES, VALUES), min_size=1, max_size=2))
        return f"{name}(" + ", ".join(f"{v}={x}" for v, x in args) + ")"
    return name


def _extend(inner):
    binary = st.tuples(inner, st.sampled_from([" * ", " / ", " + "]), inner).map(
        lambda t: f"({t[0]}){t[1]}({t[2]})")
    power = st.tuples(inner, NUMBERS).map(lambda t: f"({t[0]}) ** {t[1]}")
    flat = st.tuples(st.lists(inner, min_size=2, max_size=3), st.integers(1, 3)).map(
        lambda t: " * ".join(t[0] * t[1]))
    guidance_condition = st.tuples(st.sampled_from(["class"] * 4 + ["style", "x"]),
                                   st.one_of(st.integers(0, 2).map(str), VALUES))
    guided = st.tuples(inner, st.lists(guidance_condition, min_size=1, max_size=2),
                       st.one_of(st.none(), NUMBERS)).map(
        lambda t: f"({t[0]}) | " + ", ".join(f"{v}={x}" for v, x in t[1])
        + ("" if t[2] is None else f" @ {t[2]}"))
    nested = st.tuples(inner, st.integers(1, 200)).map(lambda t: "(" * t[1] + t[0] + ")" * t[1])
    windowed = st.tuples(inner, st.sampled_from(["[0:2]", "[...]", "[1:2]", "[0:1, 0:1]", "[2]"])).map(
        lambda t: f"({t[0]}){t[1]}")
    return st.one_of(binary, power, flat, guided, nested, windowed)


# long flat products of a few repeated (maybe conditioned, maybe powered) factors
LONG = st.tuples(st.lists(st.tuples(_leaf(), st.one_of(st.none(), NUMBERS)), min_size=1, max_size=3),
                 st.integers(100, 700), st.sampled_from([" * ", " / "])).map(
    lambda t: t[2].join((f"{f} ** {w}" if w else f) for f, w in t[0] * t[1]))
COMPOSITIONS = st.one_of(st.recursive(_leaf(), _extend, max_leaves=10), LONG)

# -- random token strings ---------------------------------------------------------------------
TOKENS = st.lists(st.one_of(
    NAMES, NUMBERS, STRINGS,
    st.sampled_from(["*", "/", "**", "+", "|", "@", ",", "=", "(", ")", "[", "]", ":", "...",
                     "#", "'", "\n", "\t", "-", "é", "\x00", "**-1"])), max_size=25).map(" ".join)


# -- the property -----------------------------------------------------------------------------
def _points(seed, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64)


def _weights(target):
    out = []
    for term in target.terms:
        out.append(term.weight)
        source = term.source
        if isinstance(source, compose.compiler.MixtureDensity):
            out.extend(t.weight for branch in source.branches for t in branch)
    return out


def _exercise(text: str, seed: int = 0) -> str:
    """Run `text` through every stage; say how far it got ("refused" or "evaluated")."""
    try:
        expr = compose.parse(text, PARTS)
        target = compose.compile(text, PARTS, points=1)
    except CompositionError:
        return "refused"
    # what compiled prints, round-trips, plans and serialises
    assert compose.parse(str(expr), PARTS) == expr
    assert compose.compile(expr, points=1).terms is not None
    assert all(math.isfinite(w) for w in _weights(target))
    repr(target), repr(expr)
    plan = target.plan_for(compose.MALA(1e-3), steps_per_level=2, num_samples=3)
    str(plan)
    json.dumps(plan.to_dict(), allow_nan=False)
    # evaluation: finite, or a ValueError saying the weights overflow the dtype
    x, x_new = _points(seed), _points(seed + 1)
    for dtype in (torch.float64, torch.float32):
        for t in (1, T):
            try:
                ev = target.evaluate(x.to(dtype), t)
                delta = target.log_ratio(x.to(dtype), x_new.to(dtype), t)
            except ValueError as error:
                assert "overflow" in str(error), str(error)
                continue
            assert torch.isfinite(ev.score).all(), (text, dtype, t)
            assert ev.score.dtype == dtype
            if ev.log_density is not None:
                assert torch.isfinite(ev.log_density).all(), (text, dtype, t)
            assert torch.isfinite(delta).all(), (text, dtype, t)
    return "evaluated"


def test_random_compositions_fail_cleanly_or_work_end_to_end():
    outcomes = collections.Counter()

    @FUZZ
    @given(COMPOSITIONS, st.integers(0, 1000))
    def run(text, seed):
        outcomes[_exercise(text, seed)] += 1

    run()
    # not vacuous: many compositions get all the way through, many are refused
    assert outcomes["evaluated"] >= 10 and outcomes["refused"] >= 10, outcomes


def test_random_token_strings_fail_cleanly_or_work_end_to_end():
    outcomes = collections.Counter()

    @FUZZ
    @given(TOKENS)
    def run(text):
        outcomes[_exercise(text)] += 1

    run()
    assert outcomes["refused"] >= 50 and outcomes["evaluated"] >= 1, outcomes


@pytest.mark.parametrize("text", [
    "p ** 1e308 * p ** 1e308", "(p | class=1 @ 1e308) ** 10", "p ** 0 + q", "p ** 0 + q ** 0",
    " * ".join(["p"] * 400), " * ".join(["c"] * 500), "c(a=99999999999999999999)", "c(a=1e300)",
    "c(x=1)", "c(t=1)", "p ** 1e300", "(p ** 1e300 + q) * c", "e ** 1e300 / c ** -1e300",
    "(" * 500 + "p" + ")" * 500, "(((p + q) + q) + e) ** 1e-300 * q ** 1e-300",
])
def test_the_reported_inputs(text):
    """The inputs of the report, through the same property (each once, named)."""
    _exercise(text)
