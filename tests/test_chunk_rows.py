"""`chunk_rows` bounds the rows of every score-only network call, also when a call stacks the
crops of several windows or several conditions, and the plan shows the calls that are made."""
import torch

import compose


class RecordingNet(torch.nn.Module):
    """ε(x) = tanh(x), recording the rows of every call."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def forward(self, x, t):
        self.rows.append(x.shape[0])
        return torch.tanh(x)


def _windowed(chunk_rows, windows=10):
    net = RecordingNet()
    p = compose.ScoreModel(net, compose.Schedule.cosine(10), name="p", event_shape=(3,))
    expr = p[0:3]
    for i in range(1, windows):
        expr = expr * p[2 * i:2 * i + 3]
    canvas = (2 * windows + 1,)
    return net, compose.compile(expr, event_shape=canvas, chunk_rows=chunk_rows, points=2), canvas


def test_stacked_windows_respect_chunk_rows_and_score_is_unchanged():
    x = torch.randn(8, 21, generator=torch.Generator().manual_seed(0))
    net, whole, _ = _windowed(None)
    expected = whole.score(x, 3)
    assert net.rows == [80]                                   # 10 windows × 8 chains, one call
    net, chunked, _ = _windowed(20)
    score = chunked.score(x, 3)
    assert max(net.rows) <= 20 and sum(net.rows) == 80 and len(net.rows) == 4
    # the same network rows, only batched differently: equal up to float32 rounding
    torch.testing.assert_close(score, expected, rtol=0, atol=4 * torch.finfo(torch.float32).eps)


def test_more_windows_than_chunk_rows_is_one_chain_per_call():
    x = torch.randn(3, 21)
    net, target, _ = _windowed(4)
    target.score(x, 2)
    assert net.rows == [10, 10, 10]                           # max(R, k) rows: one chain each


def test_plan_shows_the_calls_that_are_made():
    net, target, canvas = _windowed(20)
    kernel = compose.MALA(1e-3)
    plan = target.plan_for(kernel, steps_per_level=2, num_samples=8)
    net.rows.clear()
    compose.sample(target, kernel, num_samples=8, steps_per_level=2,
                   generator=torch.Generator().manual_seed(1), progress=False)
    planned = []
    for term in plan.to_dict()["terms"]:
        for call in term["calls"] or []:
            planned += [call["shape"][0]] * call["per_level"]
    assert sorted(planned) == sorted(net.rows[:len(planned)])
    assert len(net.rows) == target.T * len(planned)
    assert max(net.rows) <= 20
