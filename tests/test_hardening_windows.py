"""Windows, names, conditions and operators under bad input (issue 16, items 5, 6, 7, 11, 12,
17 and 18): every case here compiled, crashed in torch or answered wrongly before.

- every empty window is refused, however written, in Python and in the language (with a caret);
- two different components of one name are refused wherever they meet (windows, mixtures,
  conditions, guidance), since terms are counted by name;
- the evaluation counts use the labels of the plan and `target.labels()`;
- conditions the network's forward cannot take are refused at compile time;
- networks receive contiguous inputs;
- operators with the wrong operands say what to write instead of a plain TypeError.
"""
import math

import pytest
import torch

import compose
from compose.errors import CompositionError
from conftest import gaussian


@pytest.fixture(scope="module")
def schedule():
    return compose.Schedule.cosine(6)


class Recorder:
    """A network x ↦ 0.1 x that records the shape of every input it is called with."""

    def __init__(self):
        self.shapes = []

    def __call__(self, x, t):
        self.shapes.append(tuple(x.shape))
        return 0.1 * x


# -- item 5: empty windows ---------------------------------------------------------------------
EMPTY_1D = ["p[:0]", "p[0:0]", "p[3:3]", "p[5:2]", "p[4:]", "p[7:]", "p[0:-0]",
            "p[1:3][0:0]", "p[2:][0:2]", "p[...][:0]", "p[2:4][1:1]", "p[1:][0:1][0:1]"]
EMPTY_2D = ["p[:, :0]", "p[:0, :]", "p[0:2, 3:3]", "p[..., 5:2]", "p[:0, ...]", "p[2:, 0:1]",
            "p[:, 4:]", "p[0:1][:, :0]", "(p[0:2, 0:3])[1:1]"]


def _python(text, p):
    return eval(text, {"p": p})


@pytest.mark.parametrize("text,canvas", [(t, (4,)) for t in EMPTY_1D] + [(t, (2, 4)) for t in EMPTY_2D])
def test_every_empty_window_is_refused_in_python(schedule, text, canvas):
    """p[:0] compiled and called the network on zero-size crops (p[0:0] was refused)."""
    net = Recorder()
    p = compose.ScoreModel(net, schedule, name="p")              # no declared shape
    with pytest.raises(CompositionError, match="empty"):
        compose.compile(_python(text, p), event_shape=canvas)
    assert net.shapes == []


@pytest.mark.parametrize("text,canvas", [(t, (4,)) for t in EMPTY_1D] + [(t, (2, 4)) for t in EMPTY_2D])
def test_every_empty_window_is_refused_in_the_language_with_a_caret(schedule, text, canvas):
    p = compose.ScoreModel(Recorder(), schedule, name="p")
    with pytest.raises(CompositionError, match="empty") as caught:
        compose.compile(text, p=p, event_shape=canvas)
    assert caught.value.span is not None and "^" in str(caught.value)


@pytest.mark.parametrize("text", ["p[-1:]", "p[:-1]", "p[-3:-1]", "p[-1]", "p[:, -1:]", "p[0:1, -2]",
                                  "p[..., -3:2]"])
def test_negative_positions_are_refused_in_python_and_the_language(schedule, text):
    p = compose.ScoreModel(Recorder(), schedule, name="p")
    for build in (lambda: compose.compile(_python(text, p), event_shape=(2, 4)),
                  lambda: compose.compile(text, p=p, event_shape=(2, 4))):
        with pytest.raises(CompositionError, match="negative|non-negative|integer index"):
            build()


@pytest.mark.parametrize("language", [False, True])
def test_a_negative_index_suggests_a_slice_that_works(schedule, language):
    """p[-1] suggested "write the slice -1:0", itself refused."""
    p = compose.ScoreModel(Recorder(), schedule, name="p")
    with pytest.raises(CompositionError) as caught:
        compose.compile("p[-1]", p=p, event_shape=(4,)) if language else p[-1]
    message = str(caught.value)
    assert "-1:0" not in message and "n-1:n" in message
    assert compose.compile(p[3:4] * p[0:3], event_shape=(4,)).event_shape == (4,)
    # a non-negative index still gets the slice to write, which compiles
    with pytest.raises(CompositionError, match="write the slice 3:4"):
        p[3]


def test_windows_that_hold_something_still_compile(schedule):
    p = compose.ScoreModel(Recorder(), schedule, name="p")
    for text in ("p[0:1] * p[1:]", "p[:1] * p[1:4]", "p[1:][0:2] * p[0:1] * p[2:4]"):
        compose.compile(text, p=p, event_shape=(4,))


# -- item 6: one component per name ------------------------------------------------------------
def _two_named_q(schedule):
    return (gaussian(schedule, [0.0, 0.0], 1.0, "q"), gaussian(schedule, [1.0, 1.0], 1.0, "q"))


def test_two_components_named_alike_through_windows_are_refused(schedule):
    """q[0:2] * q[2:4] of two different q's compiled and merged their counts under 'q'."""
    q1, q2 = _two_named_q(schedule)
    with pytest.raises(CompositionError, match="name 'q' refers to two different components"):
        compose.compile(q1[0:2] * q2[2:4], event_shape=(4,))
    with pytest.raises(CompositionError, match="two different components"):
        compose.compile(q1 * q2)                              # unwindowed, as before


def test_two_components_named_alike_in_mixtures_conditions_and_guidance(schedule):
    q1, q2 = _two_named_q(schedule)
    r = gaussian(schedule, [0.5, 0.5], 1.0, "r")
    n1 = compose.ScoreModel(lambda x, t, **c: x, schedule, name="n", event_shape=(2,))
    n2 = compose.ScoreModel(lambda x, t, **c: x, schedule, name="n", event_shape=(2,))
    logits = lambda x, t: torch.stack([x.sum(1), -x.sum(1)], 1)
    c1 = compose.Classifier(logits, schedule, name="clf", variable="a")
    c2 = compose.Classifier(logits, schedule, name="clf", variable="b")
    named_q = compose.Classifier(logits, schedule, name="q", variable="a")
    cases = [
        ((q1 + r)[0:2] * q2[2:4], (4,)),                 # inside and outside a mixture
        ((q1 + r) * (q2 + r), (2,)),                     # in two mixtures
        (n1.given(a=1) * n2.given(a=2), (2,)),           # under different conditions
        (q1.guide(c1.condition(0), c2.condition(1)), (2,)),  # two classifiers 'clf'
        (q1.guide(named_q.condition(0)), (2,)),          # a classifier named as a factor
    ]
    for expr, canvas in cases:
        with pytest.raises(CompositionError, match="two different components"):
            compose.compile(expr, event_shape=canvas)


def test_one_component_under_several_windows_and_conditions_is_fine(schedule):
    q = gaussian(schedule, [0.0, 0.0], 1.0, "q")
    target = compose.compile(q[0:2] * q[1:3] * (q + q ** 2)[2:4], event_shape=(4,))
    assert target.labels() == ["q[0:2]", "q[1:3]", "q[2:4]"]


def test_a_classifier_named_as_a_factor_is_refused_with_the_caret_of_its_condition(schedule):
    q = gaussian(schedule, [0.0, 0.0], 1.0, "q")
    clf = compose.Classifier(lambda x, t: torch.stack([x.sum(1), -x.sum(1)], 1), schedule,
                             name="q", variable="a")
    with pytest.raises(CompositionError, match="two different components") as caught:
        compose.compile("q | a=1", q=q, a=clf)
    assert caught.value.span is not None and "^" in str(caught.value)


# -- item 7: evaluation counts by term label ---------------------------------------------------
def test_diagnostics_count_with_the_labels_of_the_plan(schedule):
    """Diagnostics counted by network ({'s': 50}) where the plan and target.labels() count by
    term ({'s[0:2]': 25, 's[2:4]': 25})."""
    a = gaussian(schedule, [0.3, -0.2], 0.8, "a")
    s = compose.ScoreModel.from_analytic(gaussian(schedule, [0.1, 0.2], 0.9, "b"), name="s")
    b = gaussian(schedule, [0.0, 0.0], 1.2, "b")
    expr = a[0:2] * a[1:3] * s[0:2] * s[2:4] ** 0.5 * (a + b ** 2)[2:4]
    target = compose.compile(expr, event_shape=(4,), points=1)
    kernel, K, N = compose.MALA(1e-3), 2, 3
    plan = target.plan_for(kernel, K, N)
    result = compose.sample(target, kernel, N, steps_per_level=K, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(0), progress=False)
    per_sample = result.diagnostics.evaluations_per_sample()
    leaves = [leaf for term in plan.terms for leaf in (term.branches or [term])]
    labels = [leaf.label for leaf in leaves]
    assert labels == target.labels() == ["a[0:2]", "a[1:3]", "s[0:2]", "s[2:4]", "a[2:4]", "b[2:4]"]
    assert sorted(per_sample) == sorted(labels)                # evaluation order aside
    for leaf in leaves:
        assert per_sample[leaf.label] == leaf.per_sample > 0, leaf.label
    # the windows of s share one call; each crop counts for its own term, the call once
    target.counter.reset()
    target.score(torch.zeros(5, 4, dtype=torch.float64), 3)
    assert target.counter.rows["s[0:2]"] == target.counter.rows["s[2:4]"] == 5
    assert target.counter.calls["s[0:2]"] + target.counter.calls["s[2:4]"] == 1


# -- item 11: conditions the network cannot take ------------------------------------------------
class Unconditional(torch.nn.Module):
    def forward(self, x, t):
        return 0.1 * x


class Labelled(torch.nn.Module):
    def forward(self, x, t, *, label=None):
        return 0.1 * x


class Anything(torch.nn.Module):
    def forward(self, x, t, **conditions):
        return 0.1 * x


class NamedLevel(torch.nn.Module):
    def forward(self, x, level, style=None):
        return 0.1 * x


@pytest.mark.parametrize("text,net,refused", [
    ("s(class=1)", Unconditional(), "class"),
    ("s(temp=8)", Unconditional(), "temp"),
    ("s(lable=1)", Labelled(), "lable"),
    ("s(level=1)", NamedLevel(), "level"),          # the level is the second positional
    ("s(temp=8)", lambda x, t: x, "temp"),
    ("s(style=1, temp=2)", NamedLevel(), "temp"),
])
def test_a_condition_the_forward_does_not_take_is_refused_at_compile_time(schedule, text, net, refused):
    s = compose.ScoreModel(net, schedule, name="s")
    with pytest.raises(CompositionError, match=f"does not take the condition '{refused}'") as caught:
        compose.compile(text, s=s, event_shape=(2,))
    assert caught.value.span is not None and caught.value.span.column == 1
    assert "forward(" in str(caught.value)
    leaf = compose.parse(text)
    with pytest.raises(CompositionError, match=f"'{refused}'"):     # from Python too
        compose.compile(s.given(dict(leaf.conditions)), event_shape=(2,))


@pytest.mark.parametrize("text,net", [
    ("s(label=1)", Labelled()),
    ("s(anything=1, more=2.5)", Anything()),
    ("s(style=1)", NamedLevel()),
    ("s(anything=1)", lambda x, t, **c: x),
    ("s(anything=1)", max),                        # cannot be inspected: not checked
])
def test_conditions_the_forward_takes_compile(schedule, text, net):
    s = compose.ScoreModel(net, schedule, name="s")
    compose.compile(text, s=s, event_shape=(2,))


def test_an_energy_model_is_checked_the_same_way(schedule):
    e = compose.EnergyModel(Unconditional(), schedule, name="e")
    with pytest.raises(CompositionError, match="does not take the condition 'class'"):
        compose.compile("e(class=3)", e=e, event_shape=(2,))


def test_a_conditioned_run_still_reaches_the_network(schedule):
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x, t, label=None):
            seen.append(label)
            return 0.1 * x

    s = compose.ScoreModel(Net(), schedule, name="s")
    compose.compile("s(label=2)", s=s, event_shape=(2,)).score(torch.zeros(3, 2), 2)
    assert torch.equal(seen[-1], torch.full((3,), 2))


@pytest.mark.parametrize("build", [
    lambda s: compose.compile(s.given(k=10 ** 400), event_shape=(2,)),
    lambda s: compose.compile("s(k=1" + "0" * 400 + ")", s=s, event_shape=(2,)),
    lambda s: compose.compile(s.given(k=-10 ** 400), event_shape=(2,)),
])
def test_an_int_beyond_the_floats_is_a_clear_error(schedule, build):
    """c(k=10**400) raised OverflowError while formatting the message."""
    s = compose.ScoreModel(Anything(), schedule, name="s")
    with pytest.raises(CompositionError, match="401 digits.*outside the int64 range"):
        build(s)


def test_an_exponent_or_scale_beyond_the_floats_is_a_clear_error(schedule):
    p = gaussian(schedule, [0.0], 1.0, "p")
    clf = compose.Classifier(lambda x, t: torch.stack([x.sum(1), -x.sum(1)], 1), schedule, name="c")
    with pytest.raises(CompositionError, match="exponent must be finite, got 1000… \\(an integer of 401"):
        p ** 10 ** 400
    with pytest.raises(CompositionError, match="guidance scale must be finite"):
        p.guide(clf.condition(1), scale=10 ** 400)
    with pytest.raises(CompositionError, match="must be finite, got 100000000000… \\(403"):
        compose.compile("p(k=1" + "0" * 400 + ".0)", p=p)


# -- item 12: contiguous inputs ------------------------------------------------------------------
class Viewing(torch.nn.Module):
    """0.1 x through .view, which fails on a strided view."""

    def forward(self, x, t):
        return 0.1 * x.view(x.shape[0], -1).view(x.shape)


def test_a_lone_window_reaches_the_network_contiguous(schedule):
    """v[:, 0:3] * v[:, 3:4]: the lone window was handed over as a strided view."""
    v = compose.ScoreModel(Viewing(), schedule, name="v")
    target = compose.compile("v[:, 0:3] * v[:, 3:4]", v=v, event_shape=(2, 4), points=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 4, dtype=torch.float64, generator=g)
    expected = -0.1 * x / schedule.sigma(3)
    torch.testing.assert_close(target.score(x, 3), expected, rtol=1e-12, atol=0)
    target.log_ratio(x, x + 0.1, 3)
    result = compose.sample(target, compose.MALA(1e-3), 4, steps_per_level=1,
                            generator=g, dtype=torch.float64, progress=False)
    assert torch.isfinite(result.samples).all()


def test_an_energy_window_and_a_strided_batch_reach_the_network_contiguous(schedule):
    e = compose.EnergyModel(Viewing(), schedule, name="e")
    target = compose.compile(e[:, 1:3] * e[:, 0:1] * e[:, 3:], event_shape=(2, 4))
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    assert target.evaluate(x, 2).log_density.shape == (3,)
    s = compose.ScoreModel(Viewing(), schedule, name="s")
    strided = torch.randn(3, 2, 8, dtype=torch.float64)[..., ::2]
    torch.testing.assert_close(s.score(strided, 2), -0.1 * strided / schedule.sigma(2))


# -- items 17, 18: operators with wrong operands -------------------------------------------------
def _parts(schedule):
    p = gaussian(schedule, [0.0], 1.0, "p")
    clf = compose.Classifier(lambda x, t: torch.stack([x.sum(1), -x.sum(1)], 1), schedule, name="clf")
    return p, clf


@pytest.mark.parametrize("build,match", [
    (lambda p, c: p | 7, "guidance needs a condition bound to a classifier.*got 7"),
    (lambda p, c: (p | c.condition(1)) | 7, "guidance needs a condition.*got 7"),
    (lambda p, c: p | None, "guidance needs a condition.*got None"),
    (lambda p, c: p | "class", "guidance needs a condition.*got 'class'"),
    (lambda p, c: p | [c.condition(1), 3], "guidance needs a condition.*got 3"),
    (lambda p, c: p | (), "at least one condition"),
    (lambda p, c: p.guide(), "at least one condition"),
    (lambda p, c: p.guide(7), "guidance needs a condition.*got 7"),
    (lambda p, c: p | c, r"not the classifier: write expr \| clf.condition"),
    (lambda p, c: 7 | p, "the expression first"),
    (lambda p, c: p.as_leaf() | 7, "guidance needs a condition"),
    (lambda p, c: p | c.condition(1) @ 3, r"guide\(clf.condition\(1\), scale=3\)"),
    (lambda p, c: p @ 3, "guidance scale"),
    (lambda p, c: p - p, "do not subtract"),
    (lambda p, c: 1 - p, "do not subtract"),
    (lambda p, c: -p, "do not subtract"),
    (lambda p, c: -(p * p), "do not subtract"),
    (lambda p, c: p * "a", "cannot compose a str"),
    (lambda p, c: p + 1, "cannot compose an int"),
    (lambda p, c: p ** p, "exponent must be a real number.*product of powers"),
    (lambda p, c: p ** torch.tensor(2.0), r"float\(w\)"),
    (lambda p, c: p ** None, "exponent must be a real number"),
    (lambda p, c: p.given(3), r"mapping of variables to values, e.g. p.given\({'class': 7}\)"),
    (lambda p, c: p.as_leaf().given([("a", 1)]), "mapping of variables"),
    (lambda p, c: p[None], "expected a slice"),
    (lambda p, c: p["0:2"], "expected a slice"),
    (lambda p, c: p[0.5:2], "non-negative integer"),
    (lambda p, c: p[::2], "steps of 1"),
    (lambda p, c: p[()], "at least one slice"),
    (lambda p, c: p[..., ...], "only once"),
    (lambda p, c: p[p], "expected a slice"),
])
def test_wrong_operands_say_what_to_write(schedule, build, match):
    """`ga | 7` gave "'int' object is not iterable"; p - q, -p, p @ 3 and p.given(3) gave
    Python's bare TypeError or AttributeError."""
    p, clf = _parts(schedule)
    with pytest.raises(CompositionError, match=match):
        build(p, clf)


def test_the_right_forms_still_work(schedule):
    p, clf = _parts(schedule)
    c = clf.condition(1)
    assert str(p | c) == str(p | (c,)) == str(p | [c]) == str(p.guide(c)) == "p | class=1"
    assert str(p.guide((c,), scale=3)) == str(p.guide(c, scale=3)) == "p | class=1 @ 3"
    assert str(p.given({"class": 2})) == "p(class=2)"
    assert math.isclose((p ** 0.5).exponent, 0.5)
