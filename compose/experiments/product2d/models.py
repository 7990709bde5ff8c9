"""The trained models of the 2D product: training, and reuse of matching checkpoints."""
from __future__ import annotations

import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from compose.components import Component, EnergyModel, ScoreModel
from compose.experiments.reporting import seed_from
from compose.models.checkpoints import read_checkpoint, save_checkpoint
from compose.models.nets import ResidualMLP
from compose.models.training import plot_loss_curve, train_diffusion
from compose.schedule import Schedule

from .settings import PAPER, PARAMETERISATIONS, Settings
from .target import analytic_components


def checkpoint_path(out_dir, trial: int, component: str, parameterisation: str) -> str:
    """Where the EMA weights of one model of one trial live: OUT/checkpoints/trialI_NAME_PARAM.pt."""
    return os.path.join(os.fspath(out_dir), "checkpoints",
                        f"trial{trial}_{component}_{parameterisation}.pt")


def _matching_checkpoint(path: str, schedule: Schedule, settings: Settings, parameterisation: str,
                         expected: dict) -> Tuple[Optional[torch.nn.Module], dict]:
    """(the stored net, its `extra` dict) if `path` holds a checkpoint of exactly this model and
    training; else (None, {}). An unreadable file counts as absent, and says so on stderr."""
    if not os.path.exists(path):
        return None, {}
    try:
        net, _, stored_param, extra = read_checkpoint(path, schedule)
    except (ValueError, OSError) as err:
        print(f"product2d: {err}; retraining", file=sys.stderr, flush=True)
        return None, {}
    if (stored_param != parameterisation or net.config() != settings.net_config()
            or {k: extra.get(k) for k in expected} != expected):
        return None, {}
    return net, extra


def train_models(out_dir, trial: int, settings: Settings = PAPER, seed: int = 0,
                 parameterisations: Sequence[str] = PARAMETERISATIONS, device=None,
                 progress: Optional[bool] = None) -> Tuple[Dict[str, Tuple[Component, Component]], List[dict]]:
    """Train (or reuse from OUT/checkpoints) the ring and bar models of one trial.

    Each model is a `ResidualMLP` trained with `train_diffusion` on fresh samples of its analytic
    component; its EMA weights are saved with the schedule, the architecture, the training
    settings, the seed and the loss history, and a loss-curve PNG is written beside them. A
    checkpoint is reused when its schedule, architecture, parameterisation, training settings,
    trial and seed all match.

    Args:
        out_dir: output directory. trial: trial index. settings: network and training settings.
        seed: base seed (every model gets its own stream from (seed, trial, component, param)).
        parameterisations: which of "score", "energy" to provide.
        device: where the nets live (default CPU).
    Returns:
        ({"score": (ring, bar) ScoreModels, "energy": (ring, bar) EnergyModels}, a list of one
        dict per model: component, parameterisation, path, reused, seconds, final_loss).
    """
    device = torch.device(device or "cpu")
    schedule = settings.schedule()
    os.makedirs(os.path.join(os.fspath(out_dir), "checkpoints"), exist_ok=True)
    models, info = {}, []
    for p_index, param in enumerate(PARAMETERISATIONS):
        if param not in parameterisations:
            continue
        wrap = ScoreModel if param == "score" else EnergyModel
        pair = []
        for c_index, component in enumerate(analytic_components(schedule)):
            path = checkpoint_path(out_dir, trial, component.name, param)
            model_seed = seed_from(seed, trial, c_index, p_index)
            expected = {"experiment": "product2d", "component": component.name, "trial": trial,
                        "seed": model_seed, "train": settings.train_config()}
            net, stored = _matching_checkpoint(path, schedule, settings, param, expected)
            reused = net is not None
            if reused:
                losses, seconds = stored.get("losses", []), stored.get("seconds", math.nan)
            else:
                with torch.random.fork_rng(devices=[]):       # the net's initial weights
                    torch.manual_seed(model_seed)
                    net = ResidualMLP(**settings.net_config())
                net = net.to(device)
                data_gen = torch.Generator().manual_seed(seed_from(model_seed, 1))
                gen = torch.Generator(device).manual_seed(seed_from(model_seed, 2))

                def data(n, _generator, component=component, data_gen=data_gen):
                    return component.sample(n, data_gen).to(device)

                result = train_diffusion(net, schedule, data, parameterisation=param,
                                         steps=settings.train_steps, batch_size=settings.batch_size,
                                         lr=settings.lr, ema_decay=settings.ema_decay,
                                         generator=gen, progress=progress)
                net, losses, seconds = result.ema_net, result.losses, result.seconds
                save_checkpoint(path, net, schedule, param,
                                extra=dict(expected, losses=[float(v) for v in losses],
                                           seconds=float(seconds)))
            png = path[:-3] + "_loss.png"
            if losses and (not reused or not os.path.exists(png)):
                plot_loss_curve(losses, png, title=f"trial {trial}: {component.name}, {param} "
                                f"({len(losses)} steps)")
            net = net.to(device).eval().requires_grad_(False)
            pair.append(wrap(net, schedule, name=component.name, event_shape=(2,)))
            info.append({"trial": trial, "component": component.name, "parameterisation": param,
                         "path": path, "reused": reused, "seconds": float(seconds),
                         "final_loss": float(np.mean(losses[-100:])) if losses else math.nan})
        models[param] = tuple(pair)
    return models, info
