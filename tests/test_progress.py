"""Progress bars: on a terminal by default, never in a log unless asked (progress=True forces,
False disables, None decides by whether stderr is a terminal)."""
import io

import pytest
import torch

import compose
from compose.progress import progress_bar, wants_progress
from conftest import gaussian


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


@pytest.mark.parametrize("progress, tty, shown", [(None, True, True), (None, False, False),
                                                  (True, False, True), (False, True, False)])
def test_who_decides(monkeypatch, progress, tty, shown):
    monkeypatch.setattr("sys.stderr", _Stream(tty))
    assert wants_progress(progress) is shown


def test_a_stderr_without_isatty_counts_as_no_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", object())
    assert wants_progress(None) is False


@pytest.mark.parametrize("progress", ["yes", 1])
def test_progress_must_be_a_bool_or_none(progress):
    with pytest.raises(ValueError, match="progress: must be True, False or None"):
        wants_progress(progress)


@pytest.mark.parametrize("progress, tty, written", [(None, False, False), (None, True, True),
                                                    (True, False, True), (False, True, False)])
def test_the_sampler_bar(schedule, monkeypatch, progress, tty, written):
    stream = _Stream(tty)
    monkeypatch.setattr("sys.stderr", stream)
    target = compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    compose.sample(target, compose.ULA(0.01), 4, steps_per_level=1, progress=progress,
                   generator=torch.Generator().manual_seed(0))
    assert bool(stream.getvalue()) is written


def test_the_bar_writes_to_the_stream_it_was_given(monkeypatch):
    stream = _Stream(False)
    monkeypatch.setattr("sys.stderr", stream)
    bar = progress_bar(3, "x", True)
    bar.update(1)
    bar.close()
    assert "x" in stream.getvalue()


def test_training_bar(monkeypatch):
    from compose.models.nets import ResidualMLP
    from compose.models.training import train_diffusion
    stream = _Stream(False)
    monkeypatch.setattr("sys.stderr", stream)
    schedule = compose.Schedule.cosine(10)
    net = ResidualMLP(dim=2, T=10, hidden=8, inner=8, embed=4, blocks=1)
    data = lambda n, g: torch.randn(n, 2, generator=g)
    train_diffusion(net, schedule, data, steps=2, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert stream.getvalue() == ""
    train_diffusion(net, schedule, data, steps=2, batch_size=4, generator=torch.Generator().manual_seed(0),
                    progress=True)
    assert "training" in stream.getvalue()
