"""Pretrained diffusers pipelines and saved folders as `DiffusersScoreModel`s.

`from_pipeline(pipeline)` takes a loaded ``DiffusionPipeline``: its UNet, its scheduler's β's,
its own prompt encoding (``pipeline.encode_prompt``, as Stable Diffusion and DeepFloyd IF have
it) and, for a latent model, its VAE as the `decode` hook, so that samples become images.
`load(path_or_id)` builds the same from local files only (`compose.adapters.loading`): a folder
written by ``save_pretrained`` or a Hugging Face hub id already in the local cache.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional

import torch

import diffusers

from .diffusers import DiffusersScoreModel, VaeDecoder, from_diffusers

#: Keyword options passed on to `from_diffusers` (by `from_pipeline` and `load`).
COMPONENT_OPTIONS = ("event_shape", "prediction_type", "condition", "null_class", "encode_prompt",
                     "decode")


class PipelinePrompts:
    """``pipeline.encode_prompt`` for one prompt without classifier-free guidance: the
    conditional embedding (1, L, D) on the text encoder's device."""

    def __init__(self, pipeline):
        method = getattr(pipeline, "encode_prompt", None)
        if not callable(method):
            raise ValueError(f"pipeline: a {type(pipeline).__name__} has no encode_prompt; pass "
                             "encode_prompt= (prompt → embedding)")
        self.method = method
        self.parameters = set(inspect.signature(method).parameters)
        self.pipeline = pipeline

    def __call__(self, prompt: str):
        kwargs = {"prompt": prompt}
        for name, value in (("device", _encoder_device(self.pipeline)), ("num_images_per_prompt", 1),
                            ("do_classifier_free_guidance", False)):
            if name in self.parameters:
                kwargs[name] = value
        result = self.method(**kwargs)
        embedding = result[0] if isinstance(result, (tuple, list)) else result
        if isinstance(result, (tuple, list)) and len(result) > 2:
            raise ValueError(f"pipeline: {type(self.pipeline).__name__}.encode_prompt returns "
                             f"{len(result)} values (pooled embeddings?); only pipelines whose UNet "
                             "takes the text embedding alone are supported")
        return embedding


def from_pipeline(pipeline, name: Optional[str] = None, *,
                  encode_prompt: Optional[Callable[[str], object]] = None,
                  decode: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                  **options) -> DiffusersScoreModel:
    """The UNet of a diffusers pipeline as a component.

    Args:
        pipeline: a ``DiffusionPipeline`` with ``unet`` and ``scheduler`` (Stable Diffusion
            1.x/2.x, DeepFloyd IF stage I, DDPM/DDIM pipelines, ...).
        name: identifier in plans and expression strings.
        encode_prompt: prompt → embedding; by default the pipeline's own ``encode_prompt``
            (text-conditional UNets only).
        decode: samples → images on the [0, 1] scale; by default the pipeline's VAE for latent
            models.
        options: further `from_diffusers` arguments (prediction_type, null_class, ...).
    """
    unknown = sorted(set(options) - set(COMPONENT_OPTIONS))
    if unknown:
        raise ValueError(f"from_pipeline: unknown option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}; the options are name, "
                         f"{', '.join(COMPONENT_OPTIONS)}")
    unet = getattr(pipeline, "unet", None)
    scheduler = getattr(pipeline, "scheduler", None)
    if unet is None or scheduler is None:
        raise ValueError(f"pipeline: expected a diffusers pipeline with a unet and a scheduler, "
                         f"got a {type(pipeline).__name__}")
    if encode_prompt is None and isinstance(unet, diffusers.UNet2DConditionModel):
        encode_prompt = PipelinePrompts(pipeline)
    autoencoder = getattr(pipeline, "vae", None) or getattr(pipeline, "vqvae", None)  # LDM: vqvae
    if decode is None and autoencoder is not None:
        decode = VaeDecoder(autoencoder)
    return from_diffusers(unet, scheduler, name=name, encode_prompt=encode_prompt, decode=decode,
                          **options)


def _encoder_device(pipeline):
    encoder = getattr(pipeline, "text_encoder", None)
    device = getattr(encoder, "device", None)
    return device if device is not None else getattr(pipeline, "device", torch.device("cpu"))
