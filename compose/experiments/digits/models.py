"""The four networks of the digits experiment: training, and reuse of matching checkpoints."""
from __future__ import annotations

import math
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from compose.experiments.reporting import seed_from
from compose.models.checkpoints import read_checkpoint, save_checkpoint
from compose.models.classifier_training import classifier_accuracy, train_classifier
from compose.models.data import DigitsSplit
from compose.models.training import train_diffusion
from compose.models.unet import DigitClassifier, NoisyClassifier, SmallUNet
from compose.schedule import Schedule

from .settings import PARAMETERISATIONS, Settings


# -- models ---------------------------------------------------------------------------------


ROLES = ("score", "energy", "guide", "eval")


def load_model(path, schedule: Optional[Schedule], architecture: type,
               config: Optional[dict] = None) -> Tuple[nn.Module, dict]:
    """A checkpoint of this experiment: (net, the stored `extra` dict).

    Raises ValueError if the schedule differs (`load_checkpoint`), the file holds another
    architecture, or its configuration (image shape, widths, T) differs from `config`.
    """
    net, _, _, extra = read_checkpoint(path, schedule)
    if type(net) is not architecture:
        raise ValueError(f"{os.fspath(path)}: holds a {type(net).__name__}, expected a "
                         f"{architecture.__name__}")
    if config is not None and net.config() != config:
        diff = {k: (net.config().get(k), v) for k, v in config.items() if net.config().get(k) != v}
        raise ValueError(f"{os.fspath(path)}: the stored {architecture.__name__} does not match "
                         f"(stored, wanted): {diff}")
    return net, extra


def train_models(out_dir, settings: Settings, split: DigitsSplit, seed: int = 0, device=None,
                 progress: Optional[bool] = None, say: Callable[[str], None] = lambda s: None,
                 roles: Sequence[str] = ROLES) -> Tuple[Dict[str, nn.Module], List[dict]]:
    """Train (or reuse from OUT/checkpoints) the four networks, or those in `roles` (another
    experiment may need only the evaluation classifier; each role keeps its seed).

    score / energy: `SmallUNet`s trained with `train_diffusion` (EMA weights kept); guide: the
    noise-aware `NoisyClassifier` trained on x_t, t ~ U{1..T}; eval: the `DigitClassifier` on
    clean training images. A checkpoint is reused when its schedule, architecture, training
    settings, seed and split all match; otherwise the model is retrained and overwritten.

    Returns:
        ({role: net on `device`, eval mode, gradients off}, one info dict per role with
        seconds, reused, final loss, and held-out accuracy for the classifiers).
    """
    device = torch.device(device or "cpu")
    schedule = settings.schedule()
    folder = os.path.join(os.fspath(out_dir), "checkpoints")
    os.makedirs(folder, exist_ok=True)
    train = split.to(device)
    nets, info = {}, []
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"roles: unknown {', '.join(unknown)}; the roles are {', '.join(ROLES)}")
    for index, role in enumerate(ROLES):
        if role not in roles:
            continue
        path = os.path.join(folder, f"{role}.pt")
        if role in PARAMETERISATIONS:
            architecture, config = SmallUNet, settings.unet_config()
            recipe = {"steps": settings.train_steps, "batch_size": settings.batch_size,
                      "lr": settings.lr, "ema_decay": settings.ema_decay}
        else:
            architecture = NoisyClassifier if role == "guide" else DigitClassifier
            config = settings.classifier_config() if role == "guide" else settings.eval_config()
            recipe = {"steps": settings.clf_steps if role == "guide" else settings.eval_steps,
                      "batch_size": settings.classifier_batch, "lr": settings.classifier_lr}
        model_seed = seed_from(seed, index)
        expected = {"experiment": "digits", "role": role, "seed": model_seed,
                    "split_seed": split.seed, "train": recipe}
        net, extra = None, {}
        if os.path.exists(path):
            try:
                net, extra = load_model(path, schedule, architecture, config)
                if {k: extra.get(k) for k in expected} != expected:
                    net = None
                    say(f"  {role}: checkpoint trained differently, retraining")
            except (ValueError, OSError) as err:      # unreadable or another model: absent
                net = None
                print(f"digits: {role}: {err}; retraining", file=sys.stderr, flush=True)
        reused = net is not None
        if not reused:
            with torch.random.fork_rng(devices=[]):           # the initial weights
                torch.manual_seed(model_seed)
                net = architecture(**config)
            net = net.to(device)
            generator = torch.Generator(device).manual_seed(seed_from(model_seed, 1))
            if role in PARAMETERISATIONS:
                result = train_diffusion(net, schedule, train.sampler(), parameterisation=role,
                                         steps=recipe["steps"], batch_size=recipe["batch_size"],
                                         lr=recipe["lr"], ema_decay=recipe["ema_decay"],
                                         generator=generator, progress=progress)
                net = result.ema_net
            else:
                result = train_classifier(net, train.sampler(labelled=True),
                                          schedule=schedule if role == "guide" else None,
                                          steps=recipe["steps"], batch_size=recipe["batch_size"],
                                          lr=recipe["lr"], generator=generator,
                                          progress=progress)
                net = result.net
            extra = dict(expected, losses=[float(v) for v in result.losses],
                         seconds=float(result.seconds))
            net = net.eval().requires_grad_(False)
            if role != "score" and role != "energy":
                extra["heldout_accuracy"] = _heldout_accuracy(net, role, train, schedule)
            save_checkpoint(path, net, schedule,
                            role if role in PARAMETERISATIONS else "classifier", extra=extra)
        net = net.to(device).eval().requires_grad_(False)
        nets[role] = net
        losses = extra.get("losses", [])
        entry = {"role": role, "architecture": architecture.__name__, "config": config,
                 "parameters": sum(p.numel() for p in net.parameters()), "path": path,
                 "reused": reused, "steps": recipe["steps"],
                 "seconds": float(extra.get("seconds", math.nan)),
                 "final_loss": float(np.mean(losses[-100:])) if losses else math.nan}
        if "heldout_accuracy" in extra:
            entry["heldout_accuracy"] = extra["heldout_accuracy"]
        info.append(entry)
        say(f"  {role:6s} {'reused' if reused else 'trained'} in {entry['seconds']:.1f} s, "
            f"loss {entry['final_loss']:.4f}"
            + (f", held-out accuracy {accuracy_text(entry['heldout_accuracy'])}"
               if "heldout_accuracy" in entry else ""))
    return nets, info


def _heldout_accuracy(net, role: str, split: DigitsSplit, schedule: Schedule):
    """Held-out top-1 accuracy: one number for the evaluation classifier; for the guidance
    classifier a dict {level: accuracy} at levels 1, T/4, T/2, 3T/4 and T."""
    if role == "eval":
        return classifier_accuracy(net, split.test_images, split.test_labels)
    levels = sorted({1, max(1, schedule.T // 4), max(1, schedule.T // 2),
                     max(1, 3 * schedule.T // 4), schedule.T})
    generator = torch.Generator(split.test_images.device).manual_seed(0)
    return {str(t): classifier_accuracy(net, split.test_images, split.test_labels, schedule, t,
                                        generator) for t in levels}


def accuracy_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"t={t}: {v:.3f}" for t, v in value.items())
    return f"{value:.4f}"
