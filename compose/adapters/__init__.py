"""Adapters: foreign diffusion models as compose components.

Each adapter turns another library's model into one of our canonical components, so that
everything downstream (compiler, kernels, sampler) sees one kind of model.

==========================  ======================================  ====================
adapter                     wraps                                   extra
==========================  ======================================  ====================
``from_diffusers``          diffusers ``UNet2DModel`` or            ``[diffusers]``
                            ``UNet2DConditionModel`` + scheduler
``from_pipeline``           a diffusers pipeline (UNet, scheduler,  ``[pipelines]``
                            prompt encoder, VAE)
``load``                    a ``save_pretrained`` folder            ``[pipelines]``
``from_denoiser``           a VE denoiser D(x, σ) ≈ E[x_0 | x]      (torch only)
                            (EDM, EDM2, k-diffusion)
``from_continuous``         a continuous-time VP net(x, s)          (torch only)
                            (score SDE)
==========================  ======================================  ====================

Networks on our discrete levels that predict x_0, v or ε, with a learned variance or 0-based
timesteps, need no adapter: ``compose.ScoreModel(net, schedule, prediction=...,
learned_variance=..., level_offset=-1)``.

Adapters import their library only when first used, so ``import compose.adapters`` works
without the optional extras installed.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "DiffusersScoreModel": ".diffusers",
    "from_diffusers": ".diffusers",
    "noise_from_output": ".diffusers",
    "PREDICTION_TYPES": ".diffusers",
    "PromptEmbeddings": ".diffusers",
    "from_pipeline": ".pipelines",
    "load": ".pipelines",
    "from_denoiser": ".families",
    "from_continuous": ".families",
    "DenoiserModel": ".families",
    "ContinuousTimeModel": ".families",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
