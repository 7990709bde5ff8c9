"""The class-conditional UNet2DModel: trained here, saved with ``save_pretrained``, loaded back
through the diffusers adapter like any user's pretrained model."""
from __future__ import annotations

import json
import os
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from compose.experiments.reporting import seed_from
from compose.models.data import DigitsSplit
from compose.models.training import train_diffusion
from compose.schedule import Schedule

from .settings import NULL_CLASS, Settings


class LevelIndexed(nn.Module):
    """A diffusers UNet called with our levels: net(x, t, class_labels) = unet(x, t − 1, …).

    diffusers counts timesteps from 0 (`compose.adapters.diffusers`), so training through this
    wrapper leaves a plain diffusers model that the adapter calls at timestep t − 1.
    """

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t - 1, class_labels=class_labels, return_dict=False)[0]


def _recipe(settings: Settings, split: DigitsSplit, seed: int) -> dict:
    return {"experiment": "tapestry", "seed": seed_from(seed, 11), "T": settings.T,
            "unet": {k: list(v) if isinstance(v, tuple) else v
                     for k, v in settings.unet_config().items()},
            "steps": settings.train_steps, "batch_size": settings.batch_size, "lr": settings.lr,
            "ema_decay": settings.ema_decay, "null_probability": settings.null_probability,
            "split_seed": split.seed}


def _scheduler(settings: Settings):
    """diffusers' cosine schedule ("squaredcos_cap_v2"), equal to `Schedule.cosine(T)` up to
    float32 rounding."""
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=settings.T, beta_schedule="squaredcos_cap_v2",
                         clip_sample=False)


def train_or_load_model(out_dir, settings: Settings, split: DigitsSplit, seed: int = 0,
                        progress: Optional[bool] = None, say: Callable[[str], None] = lambda s: None):
    """The UNet as a compose component named "u", with its training record.

    Trained unless OUT/checkpoints/unet (a ``save_pretrained`` folder holding the UNet, a
    DDPMScheduler with the cosine β's, and compose_training.json) was trained with the same
    recipe; then read back with ``UNet2DModel.from_pretrained`` and
    ``DDPMScheduler.from_pretrained`` and wrapped by `compose.adapters.from_diffusers`.

    Returns:
        (component, {"folder", "reused", "seconds", "final_loss", "steps", "parameters"}).
    """
    from diffusers import DDPMScheduler, UNet2DModel

    from compose.adapters import from_diffusers

    folder = os.path.join(os.fspath(out_dir), "checkpoints", "unet")
    recipe = _recipe(settings, split, seed)
    record_path = os.path.join(folder, "compose_training.json")
    record = None
    if os.path.exists(record_path):
        try:
            with open(record_path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = None
    reused = record is not None and record.get("recipe") == recipe
    if not reused:
        say("  training the class-conditional UNet2DModel")
        with torch.random.fork_rng(devices=[]):               # the initial weights
            torch.manual_seed(recipe["seed"])
            unet = UNet2DModel(**settings.unet_config())
        scheduler = _scheduler(settings)
        # Train on the scheduler's own β's (float32 in diffusers), the ones the adapter reads.
        schedule = Schedule(scheduler.betas.double(), name="cosine")
        generator = torch.Generator().manual_seed(seed_from(recipe["seed"], 1))
        result = train_diffusion(LevelIndexed(unet), schedule,
                                 split.sampler(labelled=True), condition="class_labels",
                                 null_value=NULL_CLASS, null_probability=settings.null_probability,
                                 steps=settings.train_steps, batch_size=settings.batch_size,
                                 lr=settings.lr, ema_decay=settings.ema_decay,
                                 generator=generator, progress=progress)
        os.makedirs(folder, exist_ok=True)
        result.ema_net.unet.save_pretrained(folder)
        scheduler.save_pretrained(folder)
        record = {"recipe": recipe, "seconds": float(result.seconds),
                  "final_loss": float(np.mean(result.losses[-100:])) if result.losses else float("nan")}
        with open(record_path, "w") as f:
            json.dump(record, f, indent=1)
    unet = UNet2DModel.from_pretrained(folder, low_cpu_mem_usage=False).eval().requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(folder)
    model = from_diffusers(unet, scheduler, name="u")
    cosine = settings.schedule().betas
    if model.schedule.T != settings.T or not torch.allclose(model.schedule.betas, cosine,
                                                            rtol=1e-6, atol=1e-7):
        raise ValueError(f"{folder}: the saved scheduler's β's are not the cosine schedule with "
                         f"T = {settings.T}")
    say(f"  UNet {'reused, trained earlier' if reused else 'trained'} in {record['seconds']:.1f} s, "
        f"loss {record['final_loss']:.4f}")
    return model, {"folder": folder, "reused": reused, "seconds": record["seconds"],
                   "final_loss": record["final_loss"], "steps": settings.train_steps,
                   "parameters": sum(p.numel() for p in unet.parameters())}
