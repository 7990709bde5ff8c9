"""Components defined by networks: score (ε-prediction), energy and classifier models.

==================  ===============  ==========================================================
class               log-density      score
==================  ===============  ==========================================================
``ScoreModel``      none             −ε_θ(x, t) / σ_t
``EnergyModel``     −g_θ / σ_t       −∇g_θ / σ_t,  g_θ = ‖f_θ(x, t) − x‖²
``Classifier``      log p_t(y | x)   ∇ log p_t(y | x)   (guidance only, not a factor)
==================  ===============  ==========================================================

Networks are called as ``net(x, t)`` with t an int64 tensor of shape (N,) holding the level
(the training level on a respaced schedule: `Schedule.network_level`), plus keyword tensors for conditions (``net(x, t, **{"class": y})``) when a leaf is
conditioned, as in classifier-free guidance. Score-only components are integrated along a
path for Δ (docs/delta.md). A network in float16 or bfloat16 runs in its own dtype; its output
is converted back to the input's dtype (docs/pretrained.md).
"""
from __future__ import annotations

import inspect
import itertools
import numbers
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ..expr import Condition, ConditionValue, short_number
from ..schedule import Schedule
from .analytic import AnalyticComponent, ExactNoisePrediction
from .base import Component, Conditions


# Keywords a network call already uses: net(x, t, ...) on an nn.Module (whose __call__ takes self).
RESERVED_CONDITIONS = ("x", "t", "self")
_FLOAT32_MAX = torch.finfo(torch.float32).max
_INT64 = torch.iinfo(torch.int64)


def check_condition_tensors(name: str, conditions: Conditions) -> None:
    """Raise ValueError unless `conditions` can become the keyword tensors of
    `_condition_tensors`: no name the call itself uses, ints within int64, floats within
    float32."""
    for variable, value in conditions:
        if variable in RESERVED_CONDITIONS:
            raise ValueError(f"{name}: a condition cannot be named '{variable}': the network is "
                             f"called as net(x, t, **conditions)")
        if isinstance(value, int) and not _INT64.min <= value <= _INT64.max:
            raise ValueError(f"{name}: condition '{variable}' = {short_number(value)} is outside "
                             "the int64 range of the tensor it is passed as")
        if isinstance(value, float) and abs(value) > _FLOAT32_MAX:
            raise ValueError(f"{name}: condition '{variable}' = {value!r} is too large for the "
                             "float32 tensor it is passed as")


def refused_keywords(net, variables: Sequence[str]) -> Optional[Tuple[list, str]]:
    """The condition keywords of `variables` that ``net(x, t, **conditions)`` cannot take, read
    from the signature of the network's forward (a module's `forward`, else the callable), and
    that signature as text; None when nothing can be said: no variables, a forward taking
    ``**kwargs``, or one that cannot be inspected (a builtin, a scripted module)."""
    if not variables:
        return None
    function = net.forward if isinstance(net, nn.Module) else net
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    parameters = list(signature.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = {p.name for p in positional[:2]}          # x and t fill the first two
    keywords = {p.name for p in parameters
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in taken}
    refused = [v for v in variables if v not in keywords]
    return (refused, str(signature)) if refused else None


def check_forward_keywords(name: str, net, conditions: Conditions) -> None:
    """Raise ValueError, at compile time, for conditions the network's forward does not take
    as keywords (`refused_keywords`), instead of a TypeError inside the network."""
    found = refused_keywords(net, [variable for variable, _ in conditions])
    if found is None:
        return
    refused, signature = found
    listed = ", ".join(f"'{v}'" for v in refused)
    raise ValueError(f"{name}: the network does not take the condition{'s' if len(refused) > 1 else ''} "
                     f"{listed}: it is called as net(x, t, **conditions), and its forward is "
                     f"forward{signature}")


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


HALF_DTYPES = (torch.float16, torch.bfloat16)


def network_dtype(net) -> Optional[torch.dtype]:
    """The dtype of a module's first floating-point parameter or buffer; None for a plain
    callable or a module without any."""
    if isinstance(net, nn.Module):
        for tensor in itertools.chain(net.parameters(), net.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    return None


def checked_output(name: str, out, x: torch.Tensor, what: str = "the network") -> torch.Tensor:
    """What a network returned for input x, as a real floating-point tensor in x's dtype.

    Any floating dtype is cast to the chains' dtype (a float16 or bfloat16 network under
    float32 chains, a float64 one under float32 chains), so samples keep the dtype they
    started in. Anything else is a ValueError naming the component (`name`) and what came
    back: not a tensor (a tuple, list, NumPy array, ...), a complex, integer or boolean
    tensor, or a tensor on another device. Reads only metadata: no host synchronisation.
    """
    if not isinstance(out, torch.Tensor):
        hint = ""
        if isinstance(out, (tuple, list)):
            hint = "; return the prediction alone (e.g. wrap it: lambda x, t: net(x, t)[0])"
        elif type(out).__module__.split(".")[0] == "numpy":
            hint = "; return a torch tensor on the device of its input"
        raise ValueError(f"{name}: {what} returned {_describe(out)}, expected a torch.Tensor{hint}")
    if not out.is_floating_point():
        raise ValueError(f"{name}: {what} returned a {out.dtype} tensor of shape {tuple(out.shape)}, "
                         "expected a real floating-point tensor")
    if out.device != x.device:
        raise ValueError(f"{name}: {what} returned a tensor on {out.device}, but its inputs are on "
                         f"{x.device}; it must answer on the device of its input")
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _describe(value) -> str:
    """'None', 'a tuple of 2 (Tensor, Tensor)', 'a numpy.ndarray of shape (8, 2)', 'a float'."""
    if value is None:
        return "None"
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(value, (tuple, list)):
        items = ", ".join(type(item).__name__ for item in value[:3]) + (", ..." if len(value) > 3 else "")
        return f"a {name} of {len(value)} ({items})"
    shape = getattr(value, "shape", None)
    return f"a {name}" + (f" of shape {tuple(shape)}" if isinstance(shape, tuple) else "")


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

    def check_conditions(self, conditions):
        check_condition_tensors(self.name, conditions)
        check_forward_keywords(self.name, self.net, conditions)

    def network_levels(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The int64 levels (N,) the network is called with at level t: the training level
        `schedule.network_level(t)` (t itself unless the schedule is respaced)."""
        return torch.full((x.shape[0],), self.schedule.network_level(t), dtype=torch.long,
                          device=x.device)

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """x in the network's dtype when the network is in half precision (float16, bfloat16),
        so that it runs in its own dtype; otherwise in x's dtype. Outputs are converted back to
        x's dtype, so chains, scores and Δ stay in the chains' dtype (docs/pretrained.md).
        Contiguous either way: a network may call ``.view`` on its input."""
        dtype = network_dtype(self.net)
        return (x.to(dtype) if dtype in HALF_DTYPES and dtype != x.dtype else x).contiguous()

    def network_keywords(self, x: torch.Tensor, conditions: Conditions) -> dict:
        """The keyword inputs of the call under `conditions`: one tensor of shape (N,) per
        condition (int64 for ints, float32 for floats), strings as they are."""
        return _condition_tensors(conditions, x.shape[0], x.device)

    def call_net(self, x: torch.Tensor, t: int, conditions: Conditions = ()):
        """``net(network_input(x), network_levels(x, t), **network_keywords(x, conditions))``:
        the network in its dtype at its training levels. An error raised inside the network
        gets a note naming this component, the input's shape and the level. Subclasses that
        call their network otherwise (the diffusers adapter) override the three hooks."""
        inputs = (self.network_input(x), self.network_levels(x, t))
        keywords = self.network_keywords(x, conditions)
        try:
            return self.net(*inputs, **keywords)
        except Exception as error:
            if hasattr(error, "add_note"):                  # Python ≥ 3.11
                error.add_note(f"raised by the network of component '{self.name}' on an input of "
                               f"shape {tuple(x.shape)} at level {t}")
            raise


class ScoreModel(NetworkComponent):
    """An ε-prediction network: score −ε_θ(x, t)/σ_t, no log-density (docs/algebra.md §2).

    The network is called as ``net(x, t)`` and returns ε̂ of the shape of x.
    """

    kind = "score"
    _default_prefix = "score_model"

    def noise_prediction(self, x: torch.Tensor, t: int, conditions: Conditions = ()) -> torch.Tensor:
        """ε_θ(x, t), shape of x."""
        eps = checked_output(self.name, self.call_net(x, t, conditions), x)
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
            f = checked_output(self.name, self.call_net(xg, t, conditions), x)
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

    def check_conditions(self, conditions):
        for variable, value in conditions:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0 \
                    or value > _INT64.max:
                raise ValueError(f"{variable}: a classifier condition takes a class number ≥ 0, "
                                 f"got {value!r:.40}")

    def log_prob_and_grad(self, x: torch.Tensor, t: int,
                          value: ConditionValue) -> Tuple[torch.Tensor, torch.Tensor]:
        """(log p_t(y = value | x) of shape (N,), its gradient in x)."""
        t = self._level(t)
        self._check_input(x)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{self.variable}: a classifier condition takes an integer class, got {value!r}")
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = checked_output(self.name, self.call_net(xg, t), x)
            if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"{self.name}: network must return logits of shape (N, classes), "
                                 f"got {tuple(logits.shape)}")
            if not 0 <= value < logits.shape[1]:
                raise ValueError(f"{self.variable}: class must be in 0..{logits.shape[1] - 1}, got {value}")
            log_prob = torch.log_softmax(logits, dim=1)[:, value]
            grad = None
            if log_prob.requires_grad:
                (grad,) = torch.autograd.grad(log_prob.sum(), xg, allow_unused=True)
            if grad is None:
                raise ValueError(f"{self.name}: the logits do not depend on x (no gradient reaches "
                                 "x), so guidance has no direction; a guidance classifier must be "
                                 "differentiable in x (not detached, not under torch.no_grad)")
        return log_prob.detach(), grad

    def log_density_and_score(self, x, t, conditions=()):
        values = dict(conditions)
        if self.variable not in values:
            raise ValueError(f"{self.name}: classifier needs a value for '{self.variable}'")
        return self.log_prob_and_grad(x, t, values[self.variable])

    def score(self, x, t, conditions=()):
        return self.log_density_and_score(x, t, conditions)[1]
