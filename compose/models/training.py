"""Training diffusion models by noise prediction.

Loss (Ho et al. 2020, "simple" loss): t ~ U{1..T}, ε ~ N(0, I), x_t = √ᾱ_t x_0 + σ_t ε,

    L = mean over the batch and over the coordinates of (ε̂(x_t, t) − ε)²,

where ε̂ = net(x_t, t) in the score parameterisation, and ε̂ = ∇_x g(x_t, t) with
g = ‖f(x_t, t) − x_t‖² (f = net) in the energy parameterisation (docs/algebra.md; trained by
double backpropagation). The weights are optimised with Adam and tracked by an exponential
moving average, θ_ema ← d θ_ema + (1 − d) θ after every step; the EMA copy is the one to sample
with. All randomness comes from an explicit `torch.Generator`.

Class-conditional models for classifier-free guidance (Ho & Salimans 2022) are trained on
labelled data with ε̂ = net(x_t, t, **{condition: y}), the label y replaced by a null label with
probability p, so one network learns both p_t(x | y) and p_t(x) = p_t(x | ∅).
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Union

import torch
from torch import nn

from ..schedule import Schedule
from ..progress import progress_bar, wants_progress

PARAMETERISATIONS = ("score", "energy")

#: A source of data: `data(n, generator)` returns n fresh clean samples, shape (n, *event_shape).
DataFn = Callable[[int, Optional[torch.Generator]], torch.Tensor]


def _check_parameterisation(parameterisation: str) -> str:
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(f"parameterisation: must be 'score' or 'energy', got {parameterisation!r}")
    return parameterisation


def predict_noise(net: nn.Module, x: torch.Tensor, t: torch.Tensor,
                  parameterisation: str = "score", create_graph: bool = False,
                  conditions: Optional[dict] = None) -> torch.Tensor:
    """The noise prediction ε̂(x, t) of `net` in either parameterisation.

    Args:
        net: called as net(x, t), or net(x, t, **conditions) when `conditions` are given.
        x: (N, *event_shape); t: int64 levels of shape (N,).
        parameterisation: "score": ε̂ = net(x, t); "energy": ε̂ = ∇_x ‖net(x, t) − x‖²
            (the squared norm summed over all non-batch dimensions).
        create_graph: keep the graph of ∇_x g so the result can be differentiated with respect
            to the weights (training the energy parameterisation).
    Returns:
        ε̂ with the shape of x.
    """
    conditions = conditions or {}
    if _check_parameterisation(parameterisation) == "score":
        return net(x, t, **conditions)
    with torch.enable_grad():
        x_in = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        g = (net(x_in, t, **conditions) - x_in).pow(2).flatten(1).sum(1)
        (eps,) = torch.autograd.grad(g.sum(), x_in, create_graph=create_graph)
    return eps


@dataclass
class TrainResult:
    """What `train_diffusion` hands back.

    Attributes:
        ema_net: the exponential moving average of the weights (use this one for sampling),
            in eval mode with gradients off.
        net: the last iterate of the trained network itself.
        losses: the training loss at every step.
        seconds: wall-clock time of the training loop.
    """

    ema_net: nn.Module
    net: nn.Module
    losses: List[float] = field(default_factory=list)
    seconds: float = 0.0


def train_diffusion(net: nn.Module, schedule: Schedule, data: DataFn, *,
                    parameterisation: str = "score", steps: int, batch_size: int = 2000,
                    lr: float = 1e-3, ema_decay: float = 0.999,
                    generator: Optional[torch.Generator] = None, progress: Optional[bool] = None,
                    callback: Optional[Callable[[dict], None]] = None,
                    condition: Optional[str] = None, null_value: Union[int, None] = None,
                    null_probability: float = 0.0) -> TrainResult:
    """Train `net` (in place) to predict the noise added by `schedule`'s forward process.

    Each step draws `batch_size` fresh samples x_0 = data(batch_size, generator), levels
    t ~ U{1..T} and ε ~ N(0, I), forms x_t = √ᾱ_t x_0 + σ_t ε and takes one Adam step on
    L = mean (ε̂(x_t, t) − ε)² (mean over batch and coordinates, i.e. E‖ε̂ − ε‖² / d);
    then θ_ema ← ema_decay · θ_ema + (1 − ema_decay) · θ.

    Args:
        net: a module called as net(x, t); trained in place.
        schedule: the noise schedule (its T must match the net's `T` attribute, if it has one).
        data: data(n, generator) → n clean samples, shape (n, *event_shape).
        parameterisation: "score" or "energy" (see `predict_noise`).
        steps: number of optimisation steps (≥ 0).
        batch_size, lr, ema_decay: batch size, Adam learning rate, EMA decay in [0, 1).
        generator: the only source of randomness (levels and noise; also passed to `data`).
        progress: a tqdm bar: True shows it, False hides it, None (default) shows it only
            when stderr is a terminal.
        callback: called after every step with a dict {"step", "loss", "net", "ema_net"}.
        condition: for a conditional model, the keyword the net takes its label by; then
            `data` returns (x_0, labels) and the net is called as net(x_t, t, **{condition: y}).
        null_value, null_probability: each label is replaced by `null_value` with probability
            `null_probability` (classifier-free guidance's unconditional model).
    Returns:
        TrainResult with the EMA net, the trained net, the loss history and the wall time.
    """
    _check_parameterisation(parameterisation)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: must be an integer ≥ 0, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer ≥ 1, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr!r}")
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay: must lie in [0, 1), got {ema_decay!r}")
    if condition is None and (null_value is not None or null_probability):
        raise ValueError("null_value, null_probability: only for a conditional model (condition=...)")
    if not 0.0 <= null_probability < 1.0:
        raise ValueError(f"null_probability: must lie in [0, 1), got {null_probability!r}")
    if null_probability and null_value is None:
        raise ValueError("null_value: needed when null_probability > 0")
    net_T = getattr(net, "T", None)
    if net_T is not None and net_T != schedule.T:
        raise ValueError(f"schedule: the net has T={net_T} levels but the schedule "
                         f"{schedule!r} has T={schedule.T}")

    params = list(net.parameters())
    device = params[0].device if params else torch.device("cpu")
    noise_device = generator.device if generator is not None else device
    ema_net = copy.deepcopy(net).eval().requires_grad_(False)
    ema_pairs = list(zip(ema_net.parameters(), params))
    optimiser = torch.optim.Adam(params, lr=lr)
    net.train()
    losses: List[float] = []

    bar = progress_bar(steps, f"training ({parameterisation})", progress) if wants_progress(progress) else None
    start = time.perf_counter()
    try:
        for step in range(steps):
            # 1. A fresh batch, levels t ~ U{1..T} and noise ε ~ N(0, I).
            x0, conditions = data(batch_size, generator), None
            if condition is not None:
                x0, labels = x0
                if null_probability:
                    drop = torch.rand(labels.shape, generator=generator,
                                      device=noise_device) < null_probability
                    labels = torch.where(drop.to(labels.device),
                                         torch.full_like(labels, null_value), labels)
                conditions = {condition: labels.to(device)}
            if x0.shape[0] != batch_size:
                raise ValueError(f"data: asked for {batch_size} samples, got shape "
                                 f"{tuple(x0.shape)}")
            t = torch.randint(1, schedule.T + 1, (batch_size,), generator=generator,
                              device=noise_device)
            eps = torch.randn(x0.shape, generator=generator, device=noise_device,
                              dtype=x0.dtype)
            x0, t, eps = x0.to(device), t.to(device), eps.to(device)
            # 2. The forward process x_t = √ᾱ_t x_0 + σ_t ε.
            xt = schedule.add_noise(x0, t, eps)
            # 3. The noise-prediction loss and one Adam step.
            eps_hat = predict_noise(net, xt, t, parameterisation, create_graph=True,
                                    conditions=conditions)
            loss = (eps_hat - eps).pow(2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            # 4. θ_ema ← d θ_ema + (1 − d) θ.
            with torch.no_grad():
                for p_ema, p in ema_pairs:
                    p_ema.lerp_(p, 1.0 - ema_decay)
            value = float(loss.detach())
            losses.append(value)
            if bar is not None:
                bar.update(1)
                if step % 50 == 0 or step == steps - 1:
                    bar.set_postfix(loss=f"{value:.4f}")
            if callback is not None:
                callback({"step": step, "loss": value, "net": net, "ema_net": ema_net})
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    with torch.no_grad():  # buffers (none in ResidualMLP) follow the last iterate
        for b_ema, b in zip(ema_net.buffers(), net.buffers()):
            b_ema.copy_(b)
    net.eval()
    return TrainResult(ema_net=ema_net, net=net, losses=losses, seconds=seconds)


def plot_loss_curve(losses, path, title: Optional[str] = None) -> str:
    """Write the loss history to a PNG at `path` (log scale, raw and a running mean); returns path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = [float(v) for v in losses]
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = range(len(losses))
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        running = torch.tensor(losses, dtype=torch.float64)
        running = running.unfold(0, window, 1).mean(1).tolist()
        ax.plot(range(window - 1, len(losses)), running, lw=1.5,
                label=f"running mean ({window} steps)")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("noise-prediction loss")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    return os.fspath(path)


# -- checkpoints ----------------------------------------------------------------------------
