"""Pretrained diffusers pipelines and saved folders as `DiffusersScoreModel`s.

`from_pipeline(pipeline)` takes a loaded ``DiffusionPipeline``: its UNet, its scheduler's β's,
its own prompt encoding (``pipeline.encode_prompt``, as Stable Diffusion and DeepFloyd IF have
it) and, for a latent model, its VAE as the `decode` hook, so that samples become images.
`load(path)` builds the same from a folder written by ``save_pretrained``, strictly from local
files (``local_files_only=True``): a whole pipeline (``model_index.json``) or a folder with
``unet/`` and ``scheduler/`` subfolders.
"""
from __future__ import annotations

import inspect
import json
import os
from typing import Callable, Optional

import torch

import diffusers

from .diffusers import DiffusersScoreModel, VaeDecoder, from_diffusers


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


def load(path, name: Optional[str] = None, *, dtype: Optional[torch.dtype] = None,
         device=None, **options) -> DiffusersScoreModel:
    """A component from a folder written by ``save_pretrained``, read from local files only.

    Args:
        path: a pipeline folder (``model_index.json``, loaded with
            ``DiffusionPipeline.from_pretrained``), or a folder with ``unet/`` and
            ``scheduler/`` subfolders (then give ``encode_prompt=`` for a text UNet).
        dtype: load the networks in this dtype (e.g. torch.float16 or torch.bfloat16); the
            chains stay in their own dtype (float32 by default).
        device: move the networks there.
        options: further `from_pipeline` / `from_diffusers` arguments.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"path: {path!r} is not a folder written by save_pretrained")
    if os.path.isfile(os.path.join(path, "model_index.json")):
        pipeline = diffusers.DiffusionPipeline.from_pretrained(path, local_files_only=True,
                                                               **_dtype_argument(dtype))
        if device is not None:
            pipeline = pipeline.to(device)
        return from_pipeline(pipeline, name, **options)
    unet_config = os.path.join(path, "unet", "config.json")
    scheduler_config = os.path.join(path, "scheduler", "scheduler_config.json")
    missing = [p for p in (unet_config, scheduler_config) if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"path: {path!r} has neither model_index.json (a pipeline) nor "
                         f"unet/ and scheduler/ subfolders (missing {', '.join(missing)})")
    unet_class = _diffusers_class(unet_config, ("UNet2DModel", "UNet2DConditionModel"))
    scheduler_class = _diffusers_class(scheduler_config, None)
    unet = unet_class.from_pretrained(path, subfolder="unet", local_files_only=True,
                                      **_dtype_argument(dtype)).eval()
    if device is not None:
        unet = unet.to(device)
    scheduler = scheduler_class.from_pretrained(path, subfolder="scheduler", local_files_only=True)
    return from_diffusers(unet, scheduler, name=name, **options)


def _dtype_argument(dtype) -> dict:
    """from_pretrained's dtype keyword: `dtype` in recent diffusers, `torch_dtype` before."""
    if dtype is None:
        return {}
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype: expected a torch.dtype such as torch.float16, got {dtype!r}")
    from diffusers.utils import deprecation_utils
    renamed = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return {"dtype" if renamed else "torch_dtype": dtype}


def _diffusers_class(config_path: str, allowed):
    with open(config_path) as handle:
        class_name = json.load(handle).get("_class_name")
    cls = getattr(diffusers, str(class_name), None)
    if cls is None or (allowed is not None and class_name not in allowed):
        expected = " or ".join(allowed) if allowed else "a diffusers class"
        raise ValueError(f"{config_path}: _class_name {class_name!r} is not {expected}")
    return cls


def _encoder_device(pipeline):
    encoder = getattr(pipeline, "text_encoder", None)
    device = getattr(encoder, "device", None)
    return device if device is not None else getattr(pipeline, "device", torch.device("cpu"))
