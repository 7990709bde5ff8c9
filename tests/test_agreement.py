"""The string form and the operator form of a composition compile to the same target: the same
terms, and bit-identical scores and Δ (line and curve) on random inputs."""
import pytest
import torch
from torch import nn

import compose

T = 20


class CondNet(nn.Module):
    """A tiny ε-network that takes an optional `class` keyword tensor (classifier-free)."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = nn.Linear(2, 2).double()
        self.embed = nn.Embedding(11, 2).double()        # row 10: no class given

    def forward(self, x, t, **conditions):
        y = conditions.get("class")
        y = torch.full_like(t, 10) if y is None else y
        return torch.tanh(self.layer(x)) + self.embed(y) + 0.01 * t[:, None].to(x.dtype)


class Linear(nn.Module):
    def __init__(self, out, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = nn.Linear(2, out).double()

    def forward(self, x, t):
        return self.layer(x) * (1 + t[:, None].to(x.dtype) / T)


@pytest.fixture(scope="module")
def parts():
    s = compose.Schedule.cosine(T)
    g = compose.GaussianMixture([[0.5, 0.0], [-0.5, 0.2]], 0.3, schedule=s, name="g")
    h = compose.GaussianMixture([[0.0, 0.5]], 0.4, schedule=s, name="h")
    b = compose.UniformBox([-1.0, -0.5], [1.0, 0.5], schedule=s, name="b")
    return {
        "a": compose.ScoreModel.from_analytic(g, name="a"),
        "b": b,
        "c": compose.EnergyModel(Linear(2, 0), s, name="c", event_shape=(2,)),
        "p": compose.ScoreModel(CondNet(1), s, name="p", event_shape=(2,)),
        "g": g,
        "h": h,
        "class": compose.Classifier(Linear(10, 2), s, name="clf", event_shape=(2,)),
        "style": compose.Classifier(Linear(3, 3), s, variable="style", name="sty",
                                    event_shape=(2,)),
    }


CASES = [
    ("a * b ** 0.5 / c | class=1 @ 2.5",
     lambda c: (c["a"] * c["b"] ** 0.5 / c["c"]).guide(c["class"].condition(1), scale=2.5)),
    ("a * b * c", lambda c: c["a"] * c["b"] * c["c"]),
    ("a / b / c", lambda c: c["a"] / c["b"] / c["c"]),
    ("a / (b / c)", lambda c: c["a"] / (c["b"] / c["c"])),
    ("(a * b) ** 0.5 / c ** 2e-1 * a ** -1.5",
     lambda c: (c["a"] * c["b"]) ** 0.5 / c["c"] ** 0.2 * c["a"] ** -1.5),
    ("p(class=7) ** 3 / p ** 2", lambda c: c["p"].given({"class": 7}) ** 3 / c["p"] ** 2),
    ("p(class=7) ** 3 / p ** 2 * b | class=7 @ 0.5",
     lambda c: (c["p"].given({"class": 7}) ** 3 / c["p"] ** 2 * c["b"])
     .guide(c["class"].condition(7), scale=0.5)),
    ("(g + h) * a ** 2", lambda c: (c["g"] + c["h"]) * c["a"] ** 2),
    ("g + h + b", lambda c: c["g"] + c["h"] + c["b"]),
    ("(g + b ** 2) / c", lambda c: (c["g"] + c["b"] ** 2) / c["c"]),
    ("a | class=3", lambda c: c["a"] | c["class"].condition(3)),
    ("a * c | class=3, style=2 @ 4",
     lambda c: (c["a"] * c["c"]).guide(c["class"].condition(3), c["style"].condition(2), scale=4)),
]


def _inputs(seed, n=16, lead=()):
    g = torch.Generator().manual_seed(seed)
    return 0.7 * torch.randn(lead + (n, 2), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("text, build", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("path, points", [("line", 0), ("line", 3), ("curve", 1)])
def test_string_and_operator_forms_agree_exactly(parts, text, build, path, points):
    from_text = compose.compile(text, parts, path=path, points=points)
    from_ops = compose.compile(build(parts), path=path, points=points)
    assert compose.parse(text, parts) == build(parts)
    assert [(t.label, t.weight, t.method) for t in from_text.terms] == \
           [(t.label, t.weight, t.method) for t in from_ops.terms]
    for seed, t in enumerate((1, 7, T)):
        x, x_new = _inputs(2 * seed), _inputs(2 * seed + 1)
        assert torch.equal(from_text.score(x, t), from_ops.score(x, t))
        assert torch.equal(from_text.log_ratio(x, x_new, t), from_ops.log_ratio(x, x_new, t))
        path_points = _inputs(seed + 10, lead=(4,))
        assert torch.equal(from_text.log_ratio_curve(path_points, t),
                           from_ops.log_ratio_curve(path_points, t))


def test_keyword_bindings_agree_with_the_mapping(parts):
    by_keywords = compose.compile("a * b ** 0.5 / c", a=parts["a"], b=parts["b"], c=parts["c"])
    by_mapping = compose.compile("a * b ** 0.5 / c", parts)
    x, x_new = _inputs(0), _inputs(1)
    assert torch.equal(by_keywords.score(x, 5), by_mapping.score(x, 5))
    assert torch.equal(by_keywords.log_ratio(x, x_new, 5), by_mapping.log_ratio(x, x_new, 5))


def test_agreement_is_not_vacuous(parts):
    """A different weight changes both the score and Δ: the comparisons above can fail."""
    one = compose.compile("a * b ** 0.5 / c | class=1 @ 2.5", parts)
    other = compose.compile((parts["a"] * parts["b"] ** 0.5 / parts["c"])
                            .guide(parts["class"].condition(1), scale=2.4))
    x, x_new = _inputs(0), _inputs(1)
    assert not torch.equal(one.score(x, 5), other.score(x, 5))
    assert not torch.equal(one.log_ratio(x, x_new, 5), other.log_ratio(x, x_new, 5))
