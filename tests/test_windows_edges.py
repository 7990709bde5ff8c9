"""Windows at their edges, found by probing as a user would: canvas shapes given in odd forms,
and one mixture seen through several windows (docs/windows.md)."""
import math

import numpy as np
import pytest
import torch

import compose
from conftest import gaussian


@pytest.fixture(scope="module")
def schedule():
    return compose.Schedule.cosine(20)


@pytest.fixture(scope="module")
def v(schedule):
    return gaussian(schedule, [1.0, 2.0, 3.0], 0.9, "V")


@pytest.mark.parametrize("event_shape", ["6", "33", 6, (6.5,), (6.0,), (True, 6), [6, None]])
def test_a_canvas_that_is_not_integer_sizes_is_refused(v, event_shape):
    """"33" was read as the canvas (3, 3) and (6.5,) as (6,): silently another canvas."""
    with pytest.raises(ValueError, match="event_shape: expected a tuple of integer sizes"):
        compose.compile(v[0:3] * v[3:6], event_shape=event_shape)


@pytest.mark.parametrize("event_shape", [(6,), [6], torch.Size([6]), (np.int64(6),)])
def test_a_canvas_in_the_usual_forms(v, event_shape):
    target = compose.compile(v[0:3] * v[3:6], event_shape=event_shape)
    assert target.event_shape == (6,)


def _mixture_log_density(schedule, means, std, y, t):
    """log ½ Σ_k N(y; √ᾱ μ_k, (ᾱ s² + σ²) I), written out."""
    abar, var = schedule.alpha_bar(t), schedule.alpha_bar(t) * std ** 2 + schedule.sigma(t) ** 2
    logs = [-0.5 * ((y - math.sqrt(abar) * torch.tensor(mu, dtype=y.dtype)) ** 2).sum(1) / var
            - 0.5 * y.shape[1] * math.log(2 * math.pi * var) for mu in means]
    return torch.logsumexp(torch.stack(logs), 0) - math.log(len(means))


def test_one_mixture_through_two_windows(schedule):
    """(A + B)[0:3] * (A + B)[1:4]: the same mixture at two places of the canvas is two factors
    (it was refused: "name 'mixture(A + B)' refers to two different components")."""
    means = [[0.5, 1.0, -1.0], [1.5, -0.5, 0.0]]
    a = gaussian(schedule, means[0], 0.7, "A")
    b = gaussian(schedule, means[1], 0.7, "B")
    expr = (a + b)[0:3] * (a + b)[1:4]
    target = compose.compile(expr, event_shape=(4,))
    text = str(target.plan)
    assert "mixture(A + B)[0:3]" in text and "mixture(A + B)[1:4]" in text
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    x_new = x + 0.3 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    t = 5

    def log_pi(y):
        return (_mixture_log_density(schedule, means, 0.7, y[:, 0:3], t)
                + _mixture_log_density(schedule, means, 0.7, y[:, 1:4], t))

    torch.testing.assert_close(target.log_ratio(x, x_new, t), log_pi(x_new) - log_pi(x),
                               rtol=0, atol=1e-12)
    y = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(log_pi(y).sum(), y)
    torch.testing.assert_close(target.score(x, t), grad, rtol=0, atol=1e-12)
    # the same mixture through the same window twice merges into one factor of weight 2
    twice = compose.compile((a + b)[0:3] * (a + b)[0:3] * (a + b)[1:4], event_shape=(4,))
    assert sorted(term.weight for term in twice.terms) == [1.0, 2.0]


def test_compose_plan_takes_the_canvas(tmp_path, capsys):
    """`compose plan` of a windowed composition needs the canvas, like `compose sample`."""
    from compose import cli
    source = tmp_path / "components.py"
    source.write_text("import compose\nschedule = compose.Schedule.cosine(10)\n"
                      "a = compose.GaussianMixture([[1.0, -1.0]], 0.5, schedule=schedule, name='a')\n"
                      "b = compose.GaussianMixture([[1.5, 0.5]], 0.8, schedule=schedule, name='b')\n")
    argv = ["plan", "a[0:2] * b[1:3]", "--components", str(source), "--kernel", "MALA"]
    capsys.readouterr()
    assert cli.main(argv + ["--event-shape", "3"]) == 0
    out = capsys.readouterr().out
    assert "event shape (3,)" in out and "a[0:2]" in out and "b[1:3]" in out
    assert cli.main(argv) == 2
    assert "--event-shape" in capsys.readouterr().err
    assert cli.main(argv + ["--event-shape", "3.5"]) == 2
    assert "--event-shape: expected sizes" in capsys.readouterr().err


class _Tanh(torch.nn.Module):
    def forward(self, x, t):
        return torch.tanh(x)


@pytest.mark.parametrize("event_shape", ["3", "33", (3.5,), (True, 2), (0,), 3])
def test_compose_sample_checks_event_shape_as_compile_does(event_shape):
    """compose.sample(..., event_shape="33") ended in torch.randn's TypeError, and (True, 2)
    sampled shape (1, 2)."""
    shapeless = compose.ScoreModel(_Tanh(), compose.Schedule.cosine(4), name="s")
    target = compose.compile(shapeless)
    with pytest.raises(ValueError, match="event_shape: "):
        compose.sample(target, compose.MALA(0.01), 2, steps_per_level=1, event_shape=event_shape,
                       progress=False)
