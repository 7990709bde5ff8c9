"""An error raised inside a user's network names the component and the input it was given
(for example a classifier without a declared event shape, guiding a whole canvas)."""
import sys

import pytest
import torch

import compose


class Linear3(torch.nn.Module):
    """Logits from exactly 3 input coordinates: fails on any other width."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 4)

    def forward(self, x, t):
        return self.layer(x)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes need Python 3.11")
def test_a_failing_classifier_on_a_canvas_is_named():
    schedule = compose.Schedule.cosine(10)
    q = compose.GaussianMixture([[0.0, 0.0, 0.0]], 0.5, schedule=schedule, name="q")
    clf = compose.Classifier(Linear3(), schedule, name="clf", variable="cls")
    target = compose.compile("(q[0:3] * q[2:5]) | cls=1", q=q, cls=clf, event_shape=(5,))
    with pytest.raises(RuntimeError) as caught:
        target.score(torch.randn(2, 5), 3)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "component 'clf'" in notes and "(2, 5)" in notes


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes need Python 3.11")
def test_a_failing_score_network_is_named():
    def broken(x, t):
        raise KeyError("weights missing")
    model = compose.ScoreModel(broken, compose.Schedule.cosine(10), name="unet")
    with pytest.raises(KeyError) as caught:
        compose.compile(model).score(torch.randn(4, 2), 5)
    assert any("component 'unet'" in note and "(4, 2)" in note for note in caught.value.__notes__)
