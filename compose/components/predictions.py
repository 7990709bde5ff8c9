"""What a diffusion network predicts, turned into the noise prediction ε̂ (docs/pretrained.md).

At a level with x_t = √ᾱ_t x_0 + σ_t ε and σ_t² = 1 − ᾱ_t, a network may predict

    "epsilon"   ε̂                          ε̂ = output
    "sample"    x̂_0 (E[x_0 | x_t])          ε̂ = (x_t − √ᾱ_t x̂_0) / σ_t
    "v"         v = √ᾱ_t ε − σ_t x_0        ε̂ = √ᾱ_t v + σ_t x_t
    "score"     ŝ = ∇ log p_t(x_t)          ε̂ = −σ_t ŝ

The sample line solves the forward process for ε. The v line: substituting
x_0 = (x_t − σ_t ε)/√ᾱ_t into v gives v = (ᾱ_t ε + σ_t² ε − σ_t x_t)/√ᾱ_t = (ε − σ_t x_t)/√ᾱ_t,
using ᾱ_t + σ_t² = 1, so ε = √ᾱ_t v + σ_t x_t. The score line is Tweedie's
∇ log p_t(x_t) = −E[ε | x_t]/σ_t. v is the definition of diffusers (its "v_prediction") and of
Salimans & Ho (2022); diffusers' spelling "v_prediction" is accepted for "v".

Learned variance (improved DDPM, guided-diffusion, DeepFloyd IF): the network returns twice the
channels (dimension 1) of its input; the first half is the prediction above, the second the
variance, which the samplers here do not use (`drop_learned_variance`).

This is the one conversion of the library: `ScoreModel` and the diffusers adapter both call
`noise_from_prediction`.
"""
from __future__ import annotations

from typing import Union

import torch

PREDICTIONS = ("epsilon", "sample", "v", "score")
#: Other libraries' names for the same predictions.
ALIASES = {"v_prediction": "v", "x0": "sample", "eps": "epsilon"}

Scale = Union[float, torch.Tensor]


def check_prediction(prediction, allowed=PREDICTIONS, what: str = "prediction") -> str:
    """The canonical name of a prediction ("epsilon", "sample", "v", "score"), or a ValueError."""
    name = ALIASES.get(prediction, prediction) if isinstance(prediction, str) else prediction
    if name not in allowed:
        raise ValueError(f"{what}: must be one of {', '.join(repr(p) for p in allowed)}, "
                         f"got {prediction!r}")
    return name


def noise_from_prediction(output: torch.Tensor, x: torch.Tensor, root_alpha_bar: Scale,
                          sigma: Scale, prediction: str) -> torch.Tensor:
    """ε̂ at x = x_t from a network output; √ᾱ_t and σ_t are floats or tensors that broadcast
    against x (see the module docstring for each prediction)."""
    prediction = check_prediction(prediction)
    if prediction == "epsilon":
        return output
    if prediction == "sample":
        return (x - root_alpha_bar * output) / sigma
    if prediction == "v":
        return root_alpha_bar * output + sigma * x
    return -sigma * output


def drop_learned_variance(output: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """The first half of `output` along dimension 1 (the prediction), when it has twice the
    channels of `x` and x's other dimensions; otherwise a ValueError naming `name`."""
    if (output.dim() != x.dim() or output.shape[0] != x.shape[0] or output.shape[2:] != x.shape[2:]
            or output.shape[1] != 2 * x.shape[1]):
        raise ValueError(f"{name}: with learned_variance=True the network must return twice the "
                         f"channels of its input (dimension 1: prediction, then variance), got "
                         f"shape {tuple(output.shape)} for input {tuple(x.shape)}")
    return output[:, :x.shape[1]]
