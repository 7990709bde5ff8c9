"""Other model families as score components: σ-parameterised denoisers and continuous-time VP
models (docs/pretrained.md). Needs nothing beyond torch.

**Denoisers of a variance-exploding process** (EDM, EDM2, k-diffusion's ``Denoiser`` wrappers,
denoising-diffusion-pytorch's ``ElucidatedDiffusion``): ``D(x_ve, σ, **conditions) ≈
E[x_0 | x_ve]`` where x_ve = x_0 + σ ε. Our level t has x_t = √ᾱ_t x_0 + σ_t ε, so

    x_ve = x_t / √ᾱ_t = x_0 + (σ_t/√ᾱ_t) ε,        σ_VE = σ_t / √ᾱ_t,

the same x_0 and ε seen through another scaling. Hence E[x_0 | x_t] = D(x_t/√ᾱ_t, σ_VE), and
Tweedie's formula for the VP marginal, ∇ log p_t(x_t) = (√ᾱ_t E[x_0 | x_t] − x_t)/σ_t², gives

    s_t(x) = (√ᾱ_t D(x/√ᾱ_t, σ_t/√ᾱ_t) − x) / σ_t²,

which is the x_0 ("sample") conversion ε̂ = (x − √ᾱ_t x̂_0)/σ_t, s = −ε̂/σ_t with x̂_0 = D
(the same code, `compose.components.predictions`). (Equivalently p_t(x) =
ᾱ_t^{−d/2} p_VE(x/√ᾱ_t; σ_VE), whose gradient is (1/√ᾱ_t) ∇ log p_VE, and ∇ log p_VE(y) =
(D(y) − y)/σ_VE².) `compose.Schedule.edm` / `Schedule.from_sigmas` put the levels at chosen VE
noise levels; levels outside the denoiser's training range [σ_min, σ_max] are refused.

**Continuous-time VP models** (score SDE, Song et al. 2021): ``net(x, s)`` with s ∈ (0, 1] and
ᾱ(s) = exp(−β_min s − ½ (β_max − β_min) s²). Level t is called at the s with ᾱ(s) = ᾱ_t: with
L = −log ᾱ_t, ½ (β_max − β_min) s² + β_min s − L = 0, whose positive root is

    s = 2L / (β_min + √(β_min² + 2 (β_max − β_min) L))

(the usual root (−β_min + √…)/(β_max − β_min) multiplied through by its conjugate: no
cancellation, and defined at β_max = β_min). Levels with s > 1 (ᾱ_t below ᾱ(1)) are beyond the
model's time range and refused; `Schedule.continuous_vp(T)` gives the levels s = t/T exactly.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch

from ..components import ScoreModel
from ..components.predictions import check_prediction
from ..schedule import Schedule

#: Relative slack on the range checks: the tables' rounding, not a wider range.
_RANGE_SLACK = 1e-9


class DenoiserModel(ScoreModel):
    """A VE denoiser ``D(x_ve, σ, **conditions) ≈ E[x_0 | x_ve]`` on our VP levels:
    s_t(x) = (√ᾱ_t D(x/√ᾱ_t, σ_t/√ᾱ_t) − x)/σ_t² (see the module docstring).

    σ is passed as a float tensor of shape (N,) in the chains' dtype. Levels whose σ_VE lies
    outside [sigma_min, sigma_max] (when given) are refused with a ValueError.
    """

    _default_prefix = "denoiser"

    def __init__(self, denoiser, schedule: Schedule, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None, *,
                 sigma_min: Optional[float] = None, sigma_max: Optional[float] = None,
                 condition_names: Optional[Mapping[str, str]] = None):
        super().__init__(denoiser, schedule, name, event_shape, prediction="sample",
                         condition_names=condition_names)
        for what, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{what}: expected a positive finite noise level, got {value!r}")
        if sigma_min is not None and sigma_max is not None and not sigma_min < sigma_max:
            raise ValueError(f"sigma_min, sigma_max: need sigma_min < sigma_max, got {sigma_min} "
                             f"and {sigma_max}")
        self.sigma_min = None if sigma_min is None else float(sigma_min)
        self.sigma_max = None if sigma_max is None else float(sigma_max)

    def ve_sigma(self, t: int) -> float:
        """σ_VE = σ_t/√ᾱ_t at level t, or a ValueError outside [sigma_min, sigma_max]."""
        sigma = self.schedule.ve_sigma(t)
        low = self.sigma_min is not None and sigma < self.sigma_min * (1 - _RANGE_SLACK)
        high = self.sigma_max is not None and sigma > self.sigma_max * (1 + _RANGE_SLACK)
        if low or high:
            raise ValueError(
                f"{self.name}: level {t} of {self.schedule!r} is the VE noise level "
                f"σ = σ_t/√ᾱ_t = {sigma:.6g}, outside the denoiser's range [{self.sigma_min}, "
                f"{self.sigma_max}]; sample on a schedule inside it, e.g. "
                f"compose.Schedule.edm(T, sigma_min={self.sigma_min or 0.002}, "
                f"sigma_max={self.sigma_max or 80.0})")
        return sigma

    def network_levels(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """σ_VE of level t as a float tensor (N,) in x's dtype: the denoiser's noise input."""
        return torch.full((x.shape[0],), self.ve_sigma(t), dtype=x.dtype, device=x.device)

    def call_net(self, x: torch.Tensor, t: int, conditions=()):
        """D(x/√ᾱ_t, σ_VE, **conditions): the VP input seen as the VE one (the level's range
        checked first, so a refusal is not reported as the network's error)."""
        self.ve_sigma(t)
        return super().call_net(x * (1.0 / math.sqrt(self.schedule.alpha_bar(t))), t, conditions)

    def network_call(self) -> str:
        bounds = "" if self.sigma_min is None and self.sigma_max is None else \
            f", σ in [{self.sigma_min}, {self.sigma_max}]"
        keywords = "".join(f", {k}=<{v}>" for v, k in self.condition_names.items())
        return (f"denoiser D ≈ E[x₀ | x_ve], called as D(x/√ᾱ_t, σ_t/√ᾱ_t{keywords})"
                f"{bounds}")


class ContinuousTimeModel(ScoreModel):
    """A continuous-time VP network ``net(x, s, **conditions)``, s ∈ (0, 1] a float tensor of
    shape (N,), predicting ε (score −ε̂/σ_t) or the score itself, called at the s with
    ᾱ(s) = exp(−β_min s − ½ (β_max − β_min) s²) = ᾱ_t (module docstring). Levels with s
    outside [s_min, 1] are refused with a ValueError.
    """

    _default_prefix = "continuous_model"

    def __init__(self, net, schedule: Schedule, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None, *, beta_min: float = 0.1,
                 beta_max: float = 20.0, prediction: str = "epsilon", s_min: float = 0.0,
                 condition_names: Optional[Mapping[str, str]] = None):
        prediction = check_prediction(prediction, ("epsilon", "score"))
        super().__init__(net, schedule, name, event_shape, prediction=prediction,
                         condition_names=condition_names)
        for what, value in (("beta_min", beta_min), ("beta_max", beta_max), ("s_min", s_min)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{what}: expected a finite number, got {value!r}")
        if not (0 <= beta_min <= beta_max and beta_max > 0):
            raise ValueError(f"beta_min, beta_max: need 0 ≤ beta_min ≤ beta_max and beta_max > 0, "
                             f"got {beta_min} and {beta_max}")
        if not 0 <= s_min < 1:
            raise ValueError(f"s_min: must lie in [0, 1), got {s_min}")
        self.beta_min, self.beta_max, self.s_min = float(beta_min), float(beta_max), float(s_min)

    def time(self, t: int) -> float:
        """The s in (0, 1] with ᾱ(s) = ᾱ_t, s = 2L/(β_min + √(β_min² + 2Δβ L)), L = −log ᾱ_t;
        a ValueError where s lies outside [s_min, 1]."""
        L = -math.log(self.schedule.alpha_bar(t))
        s = 2 * L / (self.beta_min + math.sqrt(self.beta_min ** 2
                                               + 2 * (self.beta_max - self.beta_min) * L))
        if s > 1 + _RANGE_SLACK or s < self.s_min * (1 - _RANGE_SLACK):
            reach = math.exp(-self.beta_min - 0.5 * (self.beta_max - self.beta_min))
            raise ValueError(
                f"{self.name}: level {t} of {self.schedule!r} has ᾱ_t = {math.exp(-L):.6g}, reached "
                f"by the continuous model (β_min={self.beta_min}, β_max={self.beta_max}) at "
                f"s = {s:.6g}, outside its time range [{self.s_min}, 1] (ᾱ(1) = {reach:.6g}); "
                f"sample on compose.Schedule.continuous_vp(T, {self.beta_min}, {self.beta_max}) "
                "or on levels inside the range")
        return min(s, 1.0)

    def network_levels(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """s of level t as a float tensor (N,) in x's dtype: the network's time input."""
        return torch.full((x.shape[0],), self.time(t), dtype=x.dtype, device=x.device)

    def call_net(self, x: torch.Tensor, t: int, conditions=()):
        """net(x, s, **conditions), the level's time range checked first."""
        self.time(t)
        return super().call_net(x, t, conditions)

    def network_call(self) -> str:
        what = "ε" if self.prediction == "epsilon" else "the score"
        keywords = "".join(f", {k}=<{v}>" for v, k in self.condition_names.items())
        return (f"predicts {what}, called as net(x, s{keywords}) with ᾱ(s) = ᾱ_t "
                f"(β_min={self.beta_min}, β_max={self.beta_max})")


def from_denoiser(denoiser, schedule: Schedule, name: Optional[str] = None,
                  event_shape: Optional[Sequence[int]] = None, *,
                  sigma_min: Optional[float] = None, sigma_max: Optional[float] = None,
                  condition_names: Optional[Mapping[str, str]] = None) -> DenoiserModel:
    """A σ-parameterised VE denoiser ``D(x_ve, σ, **conditions) ≈ E[x_0 | x_ve]`` as a score
    component on `schedule` (any VP schedule; ``Schedule.edm(T, sigma_min, sigma_max)`` spans
    the training range). See `DenoiserModel`."""
    return DenoiserModel(denoiser, schedule, name, event_shape, sigma_min=sigma_min,
                         sigma_max=sigma_max, condition_names=condition_names)


def from_continuous(net, schedule: Schedule, beta_min: float = 0.1, beta_max: float = 20.0,
                    prediction: str = "epsilon", name: Optional[str] = None,
                    event_shape: Optional[Sequence[int]] = None, *, s_min: float = 0.0,
                    condition_names: Optional[Mapping[str, str]] = None) -> ContinuousTimeModel:
    """A continuous-time VP network ``net(x, s)`` (score SDE) as a score component on
    `schedule` (``Schedule.continuous_vp(T, beta_min, beta_max)`` puts level t at s = t/T).
    See `ContinuousTimeModel`."""
    return ContinuousTimeModel(net, schedule, name, event_shape, beta_min=beta_min,
                               beta_max=beta_max, prediction=prediction, s_min=s_min,
                               condition_names=condition_names)
