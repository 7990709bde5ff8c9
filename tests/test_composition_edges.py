"""Compositions at their edges: weights that overflow, mixture branches that cancel, long flat
products, condition values a network cannot take, and keywords that are neither options nor
names. Each class of bad input gets a CompositionError naming what and where; each class of
good input, however long, compiles, prints, plans and evaluates to finite values."""
import json
import math
import re
from pathlib import Path

import pytest
import torch

import compose
from compose import cli
from compose.compiler.compilation import OPTIONS
from compose.errors import CompositionError, UnknownKeywordError
from compose.expr import MAX_MIXTURE_NESTING

ROOT = Path(__file__).resolve().parents[1]


class Linear(torch.nn.Module):
    """ε(x, t) = 0.1 x, accepting any condition keywords."""

    def forward(self, x, t, **conditions):
        return 0.1 * x


class Logits(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))

    def forward(self, x, t):
        return x.to(self.weight.dtype) @ self.weight.T


@pytest.fixture
def parts():
    s = compose.Schedule.cosine(10)
    p = compose.GaussianMixture([[0.0, 0.0], [1.0, 0.5]], 0.7, schedule=s, name="p")
    q = compose.UniformBox([-1.0, -1.0], [1.0, 1.0], schedule=s, name="q")
    c = compose.ScoreModel(Linear(), s, name="c")
    clf = compose.Classifier(Logits(), s, name="clf")
    return {"p": p, "q": q, "c": c, "class": clf}


def _x(dtype=torch.float64, n=6, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- weights ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, names", [
    ("p ** 1e308 * p ** 1e308", "'p' overflows"),
    ("p ** 1e308 / p ** -1e308", "'p' overflows"),
    ("(p | class=1 @ 1e308) ** 10", "'p | class=1 @ 1e+308'"),
    ("(p ** 1e200) ** 1e200", "'p ** 1e+200'"),
    ("(q + p) ** 1e308 * (q + p) ** 1e308", "'mixture(q + p)' overflows"),
    ("(p ** 1e-200) ** 1e-200", "underflows to 0 at 'p ** 1e-200'"),
])
def test_a_weight_that_leaves_the_finite_numbers_is_refused_naming_the_term(parts, text, names):
    with pytest.raises(CompositionError, match="flows") as error:
        compose.compile(text, parts)
    assert names in str(error.value)


def test_every_merged_weight_is_finite_and_the_json_plan_is_valid_json(parts, tmp_path, capsys):
    target = compose.compile("p ** 1e300 * p ** 1e300 / q ** 1e307 | class=1 @ 1e307", parts)
    weights = [t.weight for t in target.terms]
    assert weights == [2e300, -1e307, 1e307] and all(math.isfinite(w) for w in weights)
    components = tmp_path / "parts.py"
    components.write_text(
        "import compose\ns = compose.Schedule.cosine(10)\n"
        "p = compose.GaussianMixture([[0.0, 0.0]], 1.0, schedule=s, name='p')\n")
    for text in ("p ** 1e300 * p ** 1e300", "p ** 1e308 * p ** 1e308"):
        status = cli.main(["plan", text, "--components", str(components), "--json"])
        out, err = capsys.readouterr()
        if status == 0:
            json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in the JSON plan"))
        else:
            assert status == 2 and "overflows" in err and "Traceback" not in err


def test_a_weight_that_overflows_the_chains_dtype_raises_at_evaluation(parts):
    """p ** 1e300 is a finite weight; float32 cannot hold w · log p, float64 can."""
    x = _x()
    for text in ("p ** 1e300", "c ** 1e300", "(p ** 1e300 + q)"):
        target = compose.compile(text, parts, points=1)
        assert torch.isfinite(target.evaluate(x, 1).score).all()
        with pytest.raises(ValueError, match="overflow torch.float32"):
            target.evaluate(x.float(), 1)
        with pytest.raises(ValueError, match="overflow torch.float32"):
            target.log_ratio(x.float(), x.float() + 0.1, 1)
    # an ordinary weight never triggers the check
    ordinary = compose.compile("p ** 1e30 * c", parts, points=1)
    assert torch.isfinite(ordinary.log_ratio(x.float(), x.float() + 0.1, 1)).all()


# -- mixtures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, branch", [
    ("p ** 0 + q", "p ** 0"), ("p ** 0 + q ** 0", "p ** 0"), ("q + p / p", "p / p"),
    ("q + (p * p ** -1)", "p * p ** -1"), ("(p ** 0 + q) * q", "p ** 0"),
])
def test_a_mixture_branch_whose_weights_all_cancel_is_refused(parts, text, branch):
    with pytest.raises(CompositionError, match=re.escape(f"mixture branch '{branch}' has no terms left")):
        compose.compile(text, parts)


def test_mixture_branches_cancel_through_python_operators_too(parts):
    with pytest.raises(CompositionError, match="has no terms left"):
        compose.compile(parts["p"] ** 0 + parts["q"])


def test_a_repeated_mixture_merges_into_one_weighted_term(parts):
    twice = compose.compile("(p + q) * (p + q)", parts)
    squared = compose.compile("(p + q) ** 2", parts)
    assert [(t.label, t.weight) for t in twice.terms] == [("mixture(p + q)", 2.0)]
    x = _x()
    assert torch.equal(twice.evaluate(x, 3).score, squared.evaluate(x, 3).score)   # same computation


# -- long products and real nesting -----------------------------------------------------------
def _flat(parts, n):
    left = right = parts["p"].as_leaf()
    for _ in range(n - 1):
        left = left * parts["q"]
        right = parts["q"] * right
    return left, right


@pytest.mark.parametrize("n", [400, 500, 1500, 5000])
def test_long_flat_products_parse_compile_print_and_plan(parts, n):
    text = " * ".join(["p"] * (n // 2) + ["q"] * (n - n // 2)) + " / c"
    expr = compose.parse(text, parts)
    assert compose.parse(str(expr), parts) == expr and hash(expr) == hash(compose.parse(text, parts))
    target = compose.compile(text, parts, points=1)
    assert [(t.label, t.weight) for t in target.terms] == [("p", n // 2), ("q", n - n // 2), ("c", -1.0)]
    assert repr(target).startswith("Target('p * p")
    plan = target.plan_for(compose.MALA(1e-3), steps_per_level=2, num_samples=4)
    assert str(plan).startswith("plan for p * p") and json.dumps(plan.to_dict(), allow_nan=False)
    evaluation = target.evaluate(_x(), 5)
    assert torch.isfinite(evaluation.score).all() and torch.isfinite(evaluation.log_density).all()
    for built in _flat(parts, n):           # Python operators: left- and right-deep trees
        compiled = compose.compile(built)
        assert [t.weight for t in compiled.terms] == [1.0, n - 1.0] or \
               [t.weight for t in compiled.terms] == [n - 1.0, 1.0]
        assert compose.parse(str(built), parts) == built and len(repr(built)) > 2 * n


def test_the_command_line_plans_a_long_product(capsys):
    text = " * ".join(["ring"] * 1500)
    status = cli.main(["plan", text, "--components", str(ROOT / "examples" / "components_2d.py")])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "") and "ring  weight 1500" in out


def test_deep_real_nesting(parts):
    """Powers and parentheses nest to any depth; mixtures inside mixtures up to a limit."""
    deep = "(" * 3000 + "p" + " ** 1)" * 3000
    assert [t.weight for t in compose.compile(deep, parts).terms] == [1.0]
    assert compose.parse(str(compose.parse(deep, parts)), parts) == compose.parse(deep, parts)
    nested = lambda depth: "(" * (depth - 1) + "p + q" + ") + q" * (depth - 1)
    assert compose.compile(nested(MAX_MIXTURE_NESTING), parts).evaluate(_x(), 2) is not None
    with pytest.raises(CompositionError, match=f"nested {MAX_MIXTURE_NESTING + 1} deep"):
        compose.compile(nested(MAX_MIXTURE_NESTING + 1), parts)


# -- condition values -------------------------------------------------------------------------
@pytest.mark.parametrize("text, column, match", [
    ("p * c(a=99999999999999999999)", 5, "outside the int64 range"),
    ("p * c(a=-99999999999999999999)", 5, "outside the int64 range"),
    ("p * c(a=1e300)", 5, "too large for the float32"),
    ("p * c(x=1)", 5, "cannot be named 'x'"),
    ("c(t=1) * p", 1, "cannot be named 't'"),
    ("c(self=1)", 1, "cannot be named 'self'"),
    ("c * p(a=1)", 5, "analytic component takes no conditions"),
    ('c | class="a"', 5, "class number"),
    ("c | class=1.5", 5, "class number"),
    ("c | class=-1", 5, "class number"),
])
def test_condition_values_are_checked_when_compiling_with_the_position(parts, text, column, match):
    with pytest.raises(CompositionError, match=match) as error:
        compose.compile(text, parts)
    assert str(error.value).startswith(f"line 1, column {column}:") and "^" in str(error.value)


def test_condition_values_from_python_are_checked_when_compiling(parts):
    c = parts["c"]
    for expr, match in [(c.given(a=10 ** 20), "int64"), (c.given(a=1e300), "float32"),
                        (c.given(x=1), "'x'"), (c.given(t=2), "'t'")]:
        with pytest.raises(CompositionError, match=match):
            compose.compile(expr)
    big = compose.compile(c.given(a=2 ** 63 - 1, b=3e38, label="any text"))
    assert torch.isfinite(big.score(_x(torch.float32), 3)).all()


# -- options and bindings ---------------------------------------------------------------------
def test_options_are_compiles_keyword_only_parameters():
    assert {"path", "points", "chunk_rows"} <= set(OPTIONS)


def test_a_keyword_that_is_neither_option_nor_name_lists_the_options(parts):
    rs = compose.ScoreModel.from_analytic(parts["p"], name="rs")
    with pytest.raises(UnknownKeywordError, match=r"'pionts' \(did you mean 'points'\?\).*"
                                                  r"options: path, points, chunk_rows, .*: rs"):
        compose.compile("rs", rs=rs, pionts=3)
    with pytest.raises(TypeError, match=r"'pionts' \(did you mean 'points'\?\)"):
        compose.compile(parts["p"] * parts["q"], pionts=3)
    with pytest.raises(CompositionError, match="'r' .*did you mean 'rs'"):
        compose.compile("rs", rs=rs, r=rs)
    assert compose.compile("rs", rs=rs, points=3).points == 3
    assert compose.compile(parts["p"] * parts["q"], {}).terms          # an empty mapping is no binding


def test_a_name_bound_twice_is_refused_as_parse_does(parts):
    for call in (lambda: compose.compile("p", {"p": parts["p"]}, p=parts["q"]),
                 lambda: compose.parse("p", {"p": parts["p"]}, p=parts["q"])):
        with pytest.raises(CompositionError, match="'p' is bound twice"):
            call()


def test_mappings_with_keys_that_are_not_names(parts):
    for bad in ({1: parts["p"], "p": parts["p"]}, {("p",): parts["p"]}):
        with pytest.raises(CompositionError, match="names must be strings"):
            compose.compile("p * z", bad)
    with pytest.raises(CompositionError, match="expected a mapping"):
        compose.compile("p", [parts["p"]])
