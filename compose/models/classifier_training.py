"""Training classifiers on images: noise-aware classifiers for guidance, clean classifiers for
evaluation, and their accuracy."""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..schedule import Schedule
from .unet import positive_int
from ..progress import progress_bar, wants_progress


@dataclass
class ClassifierResult:
    """What `train_classifier` hands back: the net (eval mode, gradients off), the loss at
    every step and the wall-clock seconds of the training loop."""

    net: nn.Module
    losses: List[float] = field(default_factory=list)
    seconds: float = 0.0


def train_classifier(net: nn.Module, data: Callable, *, schedule: Optional[Schedule] = None,
                     steps: int, batch_size: int = 128, lr: float = 2e-3,
                     weight_decay: float = 1e-4, generator: Optional[torch.Generator] = None,
                     progress: Optional[bool] = None) -> ClassifierResult:
    """Train a classifier (in place) by cross-entropy with AdamW, cosine-decayed learning rate.

    Each step draws (x_0, y) = data(batch_size, generator). With a `schedule` (noise-aware
    classifier) it draws t ~ U{1..T}, ε ~ N(0, I), forms x_t = √ᾱ_t x_0 + σ_t ε and minimises
    −log softmax(net(x_t, t))_y; without one (evaluation classifier) −log softmax(net(x_0))_y.
    The learning rate follows lr · ½(1 + cos(π · step / steps)).

    Args:
        net: the classifier, on the device it should train on.
        data: data(n, generator) → (images (n, ...), labels (n,)) on the net's device.
        schedule: the noise schedule, or None for a clean-image classifier.
        steps, batch_size, lr, weight_decay: optimisation settings.
        generator: the only source of randomness of the batches, levels and noise.
        progress: a tqdm bar: True shows it, False hides it, None (default) shows it only
            when stderr is a terminal.
    Returns:
        ClassifierResult(net, losses, seconds).
    """
    positive_int("batch_size", batch_size)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps: must be an integer ≥ 0, got {steps!r}")
    params = list(net.parameters())
    device = params[0].device
    noise_device = generator.device if generator is not None else device
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule_fn = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / max(steps, 1))))
    net.train()
    losses: List[float] = []
    bar = progress_bar(steps, "training classifier", progress) if wants_progress(progress) else None
    start = time.perf_counter()
    try:
        for _ in range(int(steps)):
            x0, y = data(batch_size, generator)
            x0, y = x0.to(device), y.to(device)
            if schedule is not None:
                t = torch.randint(1, schedule.T + 1, (batch_size,), generator=generator,
                                  device=noise_device)
                eps = torch.randn(x0.shape, generator=generator, device=noise_device,
                                  dtype=x0.dtype)
                t, eps = t.to(device), eps.to(device)
                logits = net(schedule.add_noise(x0, t, eps), t)
            else:
                logits = net(x0)
            loss = F.cross_entropy(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule_fn.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    net.eval().requires_grad_(False)
    return ClassifierResult(net, losses, seconds)


@torch.no_grad()
def classifier_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        schedule: Optional[Schedule] = None, t: Optional[int] = None,
                        generator: Optional[torch.Generator] = None,
                        batch_size: int = 1000) -> float:
    """Top-1 accuracy of a classifier: mean over i of [argmax_c net(x_i)_c = y_i].

    With `schedule` and level `t` the images are first noised, x_t = √ᾱ_t x + σ_t ε (for a
    noise-aware classifier, called as net(x_t, t)); otherwise net(x) on the clean images.
    """
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        if schedule is not None:
            level = schedule.check_level(t)
            eps = torch.randn(x.shape, generator=generator,
                              device=generator.device if generator is not None else x.device)
            levels = torch.full((x.shape[0],), level, dtype=torch.long, device=x.device)
            logits = net(schedule.add_noise(x, level, eps.to(x.device)), levels)
        else:
            logits = net(x)
        correct += int((logits.argmax(1) == y).sum())
    return correct / images.shape[0]
