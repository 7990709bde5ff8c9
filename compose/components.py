"""Components: the leaves of a composition, each a noised density family over levels t = 1..T.

Every component works on a batch x of shape (N, *event_shape) at an integer level t and gives
the score s_t(x) = ∇ log p_t(x). Components that also know log p_t(x) up to a constant
(`has_log_density = True`) let the compiler take exact log-density differences; the others
are integrated along a path (SPEC section 3).

==================  ===============  ==========================================================
class               log-density      score
==================  ===============  ==========================================================
``ScoreModel``      none             −ε_θ(x, t) / σ_t
``EnergyModel``     −g_θ / σ_t       −∇g_θ / σ_t,  g_θ = ‖f_θ(x, t) − x‖²
``GaussianMixture`` exact, analytic  exact, analytic
``UniformBox``      exact, analytic  exact, analytic
``Classifier``      log p_t(y | x)   ∇ log p_t(y | x)   (guidance only, not a factor)
==================  ===============  ==========================================================

Networks are called as ``net(x, t)`` with t an int64 tensor of shape (N,) holding the level,
plus keyword tensors for conditions (``net(x, t, **{"class": y})``) when a leaf is
conditioned, as in classifier-free guidance.
"""
from __future__ import annotations

import itertools
import math
import numbers
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .expr import Condition, ConditionValue, Expr, Leaf, as_expr
from .schedule import Schedule

Conditions = Tuple[Tuple[str, ConditionValue], ...]
_names = itertools.count(1)


class Component(nn.Module):
    """Base class of composition leaves; Python operators build expression trees from it.

    Subclasses implement `score` and, when `has_log_density`, `log_density_and_score`.
    """

    has_log_density: bool = False
    is_classifier: bool = False
    kind: str = "component"

    def __init__(self, schedule: Schedule, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None):
        super().__init__()
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule: expected a compose.Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.name = name if name is not None else f"{self._default_prefix}{next(_names)}"
        self.event_shape = None if event_shape is None else tuple(int(d) for d in event_shape)

    _default_prefix = "p"

    # -- the interface -----------------------------------------------------------------
    def score(self, x: torch.Tensor, t: int, conditions: Conditions = ()) -> torch.Tensor:
        """∇_x log p_t(x) for a batch x of shape (N, *event_shape); returns the shape of x."""
        raise NotImplementedError

    def log_density_and_score(self, x: torch.Tensor, t: int,
                              conditions: Conditions = ()) -> Tuple[torch.Tensor, torch.Tensor]:
        """(log p_t(x) up to a constant, of shape (N,); the score, of the shape of x)."""
        raise TypeError(f"{self.name}: a {type(self).__name__} has no log-density")

    def log_density(self, x: torch.Tensor, t: int, conditions: Conditions = ()) -> torch.Tensor:
        """log p_t(x) up to a constant, shape (N,)."""
        return self.log_density_and_score(x, t, conditions)[0]

    # -- composition -------------------------------------------------------------------
    def as_leaf(self) -> Leaf:
        return Leaf(self.name, self)

    def given(self, conditions: Optional[Mapping[str, ConditionValue]] = None,
              **more: ConditionValue) -> Leaf:
        """This component conditioned, e.g. ``p.given({"class": 7})`` (classifier-free guidance)."""
        return self.as_leaf().given(conditions, **more)

    def __mul__(self, other): return self.as_leaf() * other
    def __rmul__(self, other): return as_expr(other) * self.as_leaf()
    def __truediv__(self, other): return self.as_leaf() / other
    def __rtruediv__(self, other): return as_expr(other) / self.as_leaf()
    def __pow__(self, exponent): return self.as_leaf() ** exponent
    def __add__(self, other): return self.as_leaf() + other
    def __radd__(self, other): return as_expr(other) + self.as_leaf()
    def __or__(self, conditions): return self.as_leaf() | conditions

    def guide(self, *conditions: Condition, scale: float = 1.0) -> Expr:
        return self.as_leaf().guide(*conditions, scale=scale)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, schedule={self.schedule!r}"

    # -- helpers for subclasses ---------------------------------------------------------
    def _level(self, t: int, allow_zero: bool = False) -> int:
        return self.schedule.check_level(t, allow_zero=allow_zero)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x: expected a tensor of shape (N, ...), got {type(x).__name__}")
        if self.event_shape is not None and tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x: {self.name} expects shape (N, {', '.join(map(str, self.event_shape))})"
                             f", got {tuple(x.shape)}")


def _condition_tensors(conditions: Conditions, n: int, device) -> dict:
    """Condition values as keyword tensors of shape (n,): int64 for ints, float32 for floats."""
    out = {}
    for variable, value in conditions:
        if isinstance(value, str):
            out[variable] = value
        elif isinstance(value, numbers.Integral):
            out[variable] = torch.full((n,), int(value), dtype=torch.long, device=device)
        else:
            out[variable] = torch.full((n,), float(value), device=device)
    return out


def _levels(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


class NetworkComponent(Component):
    """A component defined by a network ``net(x, t)`` trained with `schedule`.

    Args:
        net: the network (a module or any callable).
        schedule: the schedule the network was trained with.
        name: identifier in plans and expression strings.
        event_shape: shape of one sample, if known (checked against inputs).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None):
        super().__init__(schedule, name, event_shape)
        if not callable(net):
            raise ValueError(f"net: expected a callable network, got {type(net).__name__}")
        self.net = net


class ScoreModel(NetworkComponent):
    """An ε-prediction network: score −ε_θ(x, t)/σ_t, no log-density (SPEC section 1).

    The network is called as ``net(x, t)`` and returns ε̂ of the shape of x.
    """

    kind = "score"
    _default_prefix = "score_model"

    def noise_prediction(self, x: torch.Tensor, t: int, conditions: Conditions = ()) -> torch.Tensor:
        """ε_θ(x, t), shape of x."""
        eps = self.net(x, _levels(x, t), **_condition_tensors(conditions, x.shape[0], x.device))
        if eps.shape != x.shape:
            raise ValueError(f"{self.name}: network returned shape {tuple(eps.shape)} for input "
                             f"{tuple(x.shape)}; an ε-prediction must match the input")
        return eps

    def score(self, x, t, conditions=()):
        t = self._level(t)
        self._check_input(x)
        return self.noise_prediction(x, t, conditions) * (-1.0 / self.schedule.sigma(t))

    @classmethod
    def from_analytic(cls, component: "AnalyticComponent", name: Optional[str] = None) -> "ScoreModel":
        """A score-only view of an analytic component: its exact ε = −σ_t ∇ log p_t.

        The result has no log-density, so compositions with it integrate the score along a path:
        the oracle for testing line and curve integration against exact differences.
        """
        if not isinstance(component, AnalyticComponent):
            raise ValueError(f"component: expected an analytic component, got {type(component).__name__}")
        return cls(ExactNoisePrediction(component), component.schedule,
                   name=name or f"{component.name}_score", event_shape=component.event_shape)


class EnergyModel(NetworkComponent):
    """Energy parameterisation (R3, the paper's eq. 21): g = ‖f_θ(x, t) − x‖², ε = ∇_x g.

    log p_t(x) = −g(x, t)/σ_t + const and score −∇g/σ_t, both from one forward and one
    backward pass. The network f is called as ``net(x, t)`` and returns the shape of x.
    """

    kind = "energy"
    has_log_density = True
    _default_prefix = "energy_model"

    def energy_and_noise(self, x: torch.Tensor, t: int, conditions: Conditions = (),
                         create_graph: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """(g(x, t) of shape (N,), ε = ∇_x g of the shape of x)."""
        with torch.enable_grad():
            xg = x if create_graph else x.detach().requires_grad_(True)
            f = self.net(xg, _levels(x, t), **_condition_tensors(conditions, x.shape[0], x.device))
            if f.shape != x.shape:
                raise ValueError(f"{self.name}: network returned shape {tuple(f.shape)} for input "
                                 f"{tuple(x.shape)}; an energy network f must match the input")
            g = (f - xg).pow(2).flatten(1).sum(1)
            (eps,) = torch.autograd.grad(g.sum(), xg, create_graph=create_graph)
        return (g, eps) if create_graph else (g.detach(), eps.detach())

    def log_density_and_score(self, x, t, conditions=()):
        t = self._level(t)
        self._check_input(x)
        g, eps = self.energy_and_noise(x, t, conditions)
        inv_sigma = 1.0 / self.schedule.sigma(t)
        return g * -inv_sigma, eps * -inv_sigma

    def score(self, x, t, conditions=()):
        return self.log_density_and_score(x, t, conditions)[1]


class Classifier(NetworkComponent):
    """A noise-level-aware classifier p_t(y | x_t) for classifier guidance.

    Args:
        net: module called as ``net(x, t)`` returning logits of shape (N, num_classes).
        schedule: the schedule it was trained with.
        variable: the condition it predicts, as written in guidance (``| class=7``).
    """

    kind = "classifier"
    has_log_density = True
    is_classifier = True
    _default_prefix = "classifier"

    def __init__(self, net: nn.Module, schedule: Schedule, variable: str = "class",
                 name: Optional[str] = None, event_shape: Optional[Sequence[int]] = None):
        super().__init__(net, schedule, name, event_shape)
        self.variable = variable

    def condition(self, value: ConditionValue) -> Condition:
        """The guidance condition ``variable = value`` bound to this classifier."""
        return Condition(self.variable, value, self)

    def log_prob_and_grad(self, x: torch.Tensor, t: int,
                          value: ConditionValue) -> Tuple[torch.Tensor, torch.Tensor]:
        """(log p_t(y = value | x) of shape (N,), its gradient in x)."""
        t = self._level(t)
        self._check_input(x)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{self.variable}: a classifier condition takes an integer class, got {value!r}")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = self.net(xg, _levels(x, t))
            if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"{self.name}: network must return logits of shape (N, classes), "
                                 f"got {tuple(logits.shape)}")
            if not 0 <= value < logits.shape[1]:
                raise ValueError(f"{self.variable}: class must be in 0..{logits.shape[1] - 1}, got {value}")
            log_prob = torch.log_softmax(logits, dim=1)[:, value]
            (grad,) = torch.autograd.grad(log_prob.sum(), xg)
        return log_prob.detach(), grad

    def log_density_and_score(self, x, t, conditions=()):
        values = dict(conditions)
        if self.variable not in values:
            raise ValueError(f"{self.name}: classifier needs a value for '{self.variable}'")
        return self.log_prob_and_grad(x, t, values[self.variable])

    def score(self, x, t, conditions=()):
        return self.log_density_and_score(x, t, conditions)[1]


# -- analytic components ---------------------------------------------------------------------
class AnalyticComponent(Component):
    """A distribution whose noised marginal at every level is known in closed form.

    Computed in float64 internally (these are oracles), returned in the input's dtype.
    """

    kind = "analytic"
    has_log_density = True

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
        levels = torch.unique(t)
        if levels.numel() == 1:
            return self.component.noise_prediction(x, int(levels.item()))
        out = torch.empty_like(x)
        for level in levels.tolist():
            rows = t == level
            out[rows] = self.component.noise_prediction(x[rows], int(level))
        return out
