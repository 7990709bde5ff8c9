"""Analytic components: distributions whose noised marginal is known in closed form.

``GaussianMixture`` and ``UniformBox`` give exact log-densities and scores at every level, so Δ
for them is an exact difference; seen score-only (``ScoreModel.from_analytic``) they are the
oracles against which the integrated Δ and the samplers are tested.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import torch
from torch import nn

from ..schedule import Schedule
from .base import Component

class AnalyticComponent(Component):
    """A distribution whose noised marginal at every level is known in closed form.

    Computed in float64 internally (these are oracles), returned in the input's dtype.
    """

    kind = "analytic"
    has_log_density = True

    def check_conditions(self, conditions):
        if conditions:
            raise ValueError(f"{self.name}: an analytic component takes no conditions, got "
                             f"{', '.join(v for v, _ in conditions)}")

    def log_density_and_score(self, x, t, conditions=()):
        if conditions:
            raise ValueError(f"{self.name}: an analytic component takes no conditions, got {dict(conditions)}")
        t = self._level(t, allow_zero=True)
        self._check_input(x)
        log_p, score = self._exact(x.detach().to(torch.float64).flatten(1), t)
        return log_p.to(x.dtype), score.to(x.dtype).reshape(x.shape)

    def score(self, x, t, conditions=()):
        return self.log_density_and_score(x, t, conditions)[1]

    def noise_prediction(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The exact ε = −σ_t ∇ log p_t(x) an ideal ε-network would predict."""
        return self.score(x, t) * -self.schedule.sigma(self._level(t))

    def sample(self, n: int, generator: Optional[torch.Generator] = None, t: int = 0,
               dtype=torch.float32) -> torch.Tensor:
        """n exact samples of the noised marginal at level t (t = 0: the clean distribution)."""
        t = self._level(t, allow_zero=True)
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n: number of samples must be an integer ≥ 1, got {n!r}")
        x0 = self._sample_clean(int(n), generator)
        if t > 0:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
            x0 = math.sqrt(self.schedule.alpha_bar(t)) * x0 + self.schedule.sigma(t) * noise
        return x0.to(dtype).reshape((n,) + self.event_shape)

    def _exact(self, x: torch.Tensor, t: int) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _sample_clean(self, n: int, generator) -> torch.Tensor:
        raise NotImplementedError


class GaussianMixture(AnalyticComponent):
    """Σ_k w_k N(μ_k, s_k² I), noised to Σ_k w_k N(√ᾱ_t μ_k, (ᾱ_t s_k² + σ_t²) I).

    Args:
        means: (K, *event_shape) mode means.
        std: one float for all modes, or K of them.
        weights: K non-negative weights (normalised here); equal if None.
        schedule: the noise schedule.
    """

    _default_prefix = "gaussian_mixture"

    def __init__(self, means, std, weights=None, *, schedule: Schedule, name: Optional[str] = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() < 2 or means.shape[0] < 1:
            raise ValueError(f"means: expected shape (K, *event_shape) with K ≥ 1, got {tuple(means.shape)}")
        super().__init__(schedule, name, means.shape[1:])
        K = means.shape[0]
        std = torch.as_tensor(std, dtype=torch.float64).flatten()
        if std.numel() == 1:
            std = std.expand(K).clone()
        if std.numel() != K or not bool(torch.all(std > 0)) or not bool(torch.all(torch.isfinite(std))):
            raise ValueError(f"std: expected one positive finite float or {K} of them, got {std.tolist()}")
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if weights.numel() != K or not bool(torch.all(weights >= 0)) or not weights.sum() > 0:
            raise ValueError(f"weights: expected {K} non-negative weights with a positive sum")
        if not bool(torch.all(torch.isfinite(means))):
            raise ValueError("means: must be finite")
        self.register_buffer("means", means.flatten(1))
        self.register_buffer("stds", std)
        self.register_buffer("weights", weights / weights.sum())

    def _exact(self, x, t):
        abar, sigma = self.schedule.alpha_bar(t), self.schedule.sigma(t)
        means = self.means.to(x.device) * math.sqrt(abar)                         # (K, d)
        var = abar * self.stds.to(x.device) ** 2 + sigma ** 2                      # (K,)
        d = x.shape[1]
        diff = x[:, None, :] - means[None]                                         # (N, K, d)
        log_comp = (torch.log(self.weights.to(x.device)) - 0.5 * d * torch.log(2 * math.pi * var)
                    - 0.5 * diff.pow(2).sum(-1) / var)                             # (N, K)
        log_p = torch.logsumexp(log_comp, dim=1)
        resp = torch.softmax(log_comp, dim=1)                                      # (N, K)
        score = -(resp[:, :, None] * diff / var[None, :, None]).sum(1)
        return log_p, score

    def _sample_clean(self, n, generator):
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator)
        noise = torch.randn((n, self.means.shape[1]), generator=generator, dtype=torch.float64)
        return self.means.cpu()[k] + self.stds.cpu()[k, None] * noise


class UniformBox(AnalyticComponent):
    """Uniform on the box [low, high], noised to
    ∏_i [Φ((√ᾱ_t b_i − x_i)/σ_t) − Φ((√ᾱ_t a_i − x_i)/σ_t)] / (√ᾱ_t (b_i − a_i)).
    """

    _default_prefix = "uniform_box"

    def __init__(self, low, high, *, schedule: Schedule, name: Optional[str] = None):
        low = torch.as_tensor(low, dtype=torch.float64)
        high = torch.as_tensor(high, dtype=torch.float64)
        if low.shape != high.shape or low.dim() < 1:
            raise ValueError(f"low, high: expected equal shapes (*event_shape), got "
                             f"{tuple(low.shape)} and {tuple(high.shape)}")
        if not bool(torch.all(high > low)) or not bool(torch.all(torch.isfinite(high - low))):
            raise ValueError("low, high: need finite bounds with high > low in every coordinate")
        super().__init__(schedule, name, low.shape)
        self.register_buffer("low", low.flatten())
        self.register_buffer("high", high.flatten())

    def _exact(self, x, t):
        low, high = self.low.to(x.device), self.high.to(x.device)
        if t == 0:
            inside = torch.all((x >= low) & (x <= high), dim=1)
            log_p = torch.where(inside, -torch.log(high - low).sum(), torch.tensor(-math.inf, dtype=x.dtype))
            return log_p, torch.zeros_like(x)
        root_abar, sigma = math.sqrt(self.schedule.alpha_bar(t)), self.schedule.sigma(t)
        upper = (root_abar * high - x) / sigma
        lower = (root_abar * low - x) / sigma
        log_mass = _log_normal_interval(lower, upper)                # log(Φ(upper) − Φ(lower))
        log_p = (log_mass - math.log(root_abar) - torch.log(high - low)).sum(1)
        # d/dx log(Φ(u) − Φ(l)) = (φ(l) − φ(u)) / (σ (Φ(u) − Φ(l)))
        score = (torch.exp(_log_normal_pdf(lower) - log_mass)
                 - torch.exp(_log_normal_pdf(upper) - log_mass)) / sigma
        return log_p, score

    def _sample_clean(self, n, generator):
        u = torch.rand((n, self.low.numel()), generator=generator, dtype=torch.float64)
        return self.low.cpu() + u * (self.high - self.low).cpu()


def _log_normal_pdf(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z * z - 0.5 * math.log(2 * math.pi)


def _log_normal_interval(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Φ(upper) − Φ(lower)) for lower < upper, accurate in both tails.

    On the right of zero the mirror image Φ(−lower) − Φ(−upper) avoids cancellation.
    """
    mirror = lower > 0
    hi = torch.where(mirror, -lower, upper)
    lo = torch.where(mirror, -upper, lower)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp(log_lo - log_hi))


class ExactNoisePrediction(nn.Module):
    """A module ``net(x, t)`` returning an analytic component's exact ε (see ScoreModel.from_analytic)."""

    def __init__(self, component: AnalyticComponent):
        super().__init__()
        self.component = component

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε at the training levels t (mapped back to the component's own levels when its
        schedule is respaced, as a trained network's input would be)."""
        levels = torch.unique(t)
        if levels.numel() == 1:
            return self.component.noise_prediction(x, self._own_level(int(levels.item())))
        out = torch.empty_like(x)
        for level in levels.tolist():
            rows = t == level
            out[rows] = self.component.noise_prediction(x[rows], self._own_level(int(level)))
        return out

    def _own_level(self, network_level: int) -> int:
        schedule = self.component.schedule
        if not schedule.is_respaced:
            return network_level
        matches = (schedule.network_levels == network_level).nonzero()
        if matches.numel() != 1:
            raise ValueError(f"t: training level {network_level} is not one of the respaced "
                             f"schedule's levels")
        return int(matches[0, 0]) + 1
