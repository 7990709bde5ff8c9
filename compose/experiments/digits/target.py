"""The guided target of the digits experiment: ``model | class=k_i @ λ`` for every chain i.

All classes are sampled in one batch of chains: `RequestedClass` rotates the guidance
classifier's logits per chain so that column 0 holds the class requested for that chain, and the
composition is ``model | class=0 @ λ`` (docs/experiments.md, section 2).
"""
from __future__ import annotations

import torch
from torch import nn

import compose
from compose.components import Classifier, EnergyModel, ScoreModel
from compose.models.data import IMAGE_SHAPE, NUM_CLASSES
from compose.schedule import Schedule

from .samplers import SamplerSpec


class RequestedClass(nn.Module):
    """A classifier whose logits are rotated per row so that column 0 holds each row's
    requested class: out[i, j] = logits[i, (labels[i] + j) mod C].

    With it, ``model | class=0`` asks every chain i for class labels[i]. It must see exactly
    one row per chain, in chain order (what `compose.sample` passes); anything else is a
    ValueError.
    """

    def __init__(self, net: nn.Module, labels: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("labels", labels.long())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.labels.shape[0]:
            raise ValueError(f"RequestedClass: got {x.shape[0]} rows, but it holds a class for "
                             f"each of {self.labels.shape[0]} chains")
        logits = self.net(x, t)
        columns = torch.arange(logits.shape[1], device=logits.device)
        index = (self.labels[:, None] + columns[None]) % logits.shape[1]
        return logits.gather(1, index)


def guided_target(model, guide_net: nn.Module, labels: torch.Tensor, scale: float,
                  schedule: Schedule, spec: SamplerSpec):
    """``model | class=labels[i] @ scale`` for every chain i, compiled for `spec`'s Δ path."""
    clf = Classifier(RequestedClass(guide_net, labels), schedule, variable="class",
                     name="classifier", event_shape=IMAGE_SHAPE)
    return compose.compile(model.guide(clf.condition(0), scale=scale), path=spec.path,
                           points=spec.points, rule=spec.rule)


def class_labels(samples_per_class: int, device=None) -> torch.Tensor:
    """(0, …, 0, 1, …, 1, …, 9, …, 9): `samples_per_class` chains per class."""
    return torch.arange(NUM_CLASSES, device=device).repeat_interleave(samples_per_class)


# -- tuning and sampling --------------------------------------------------------------------
def wrap_model(net: nn.Module, parameterisation: str, schedule: Schedule):
    """The UNet as a `ScoreModel` or `EnergyModel` named "model"."""
    cls = ScoreModel if parameterisation == "score" else EnergyModel
    return cls(net, schedule, name="model", event_shape=IMAGE_SHAPE)
