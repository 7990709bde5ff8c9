"""Components defined by networks: score (ε, x₀, v or score prediction), energy and classifier
models.

==================  ===============  ==========================================================
class               log-density      score
==================  ===============  ==========================================================
``ScoreModel``      none             −ε̂(x, t) / σ_t, ε̂ from an ε, x₀, v or score prediction
``EnergyModel``     −g_θ / σ_t       −∇g_θ / σ_t,  g_θ = ‖f_θ(x, t) − x‖²
``Classifier``      log p_t(y | x)   ∇ log p_t(y | x)   (guidance only, not a factor)
==================  ===============  ==========================================================

Networks are called as ``net(x, t)`` with t an int64 tensor of shape (N,) holding the level
(the training level on a respaced schedule: `Schedule.network_level`, plus ``level_offset``:
−1 for networks trained on 0-based timesteps), plus keyword tensors for conditions
(``net(x, t, **{"class": y})``, renamed by ``condition_names``) when a leaf is conditioned, as
in classifier-free guidance. A ScoreModel's network may predict ε, x_0, v or the score, with or
without a learned variance (`compose.components.predictions`). Score-only components are
integrated along a path for Δ (docs/delta.md). A network in float16 or bfloat16 runs in its
own dtype; its output is converted back to the input's dtype (docs/pretrained.md).
"""
from __future__ import annotations

import contextlib

import inspect
import itertools
import math
import numbers
from typing import Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..expr import Condition, ConditionValue, short_number
from ..schedule import Schedule
from .analytic import AnalyticComponent, ExactNoisePrediction
from .base import Component, Conditions
from .predictions import check_prediction, drop_learned_variance, noise_from_prediction


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
        level_offset: added to the level the network is called with: −1 for a network trained
            on 0-based timesteps (guided-diffusion, diffusers: our level t is their t − 1).
        condition_names: the network's keyword for a condition variable, e.g.
            ``{"class": "y"}``: the leaf ``p(class=3)`` calls ``net(x, t, y=3)``.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None, *, level_offset: int = 0,
                 condition_names: Optional[Mapping[str, str]] = None):
        super().__init__(schedule, name, event_shape)
        if not callable(net):
            raise ValueError(f"net: expected a callable network, got {type(net).__name__}")
        self.net = net
        self.level_offset = _check_offset(level_offset)
        self.condition_names = _check_condition_names(condition_names)

    def check_conditions(self, conditions):
        check_condition_tensors(self.name, conditions)
        renamed = tuple((self.condition_names.get(v, v), value) for v, value in conditions)
        if renamed != tuple(conditions):
            check_condition_tensors(self.name, renamed)
        check_forward_keywords(self.name, self.net, renamed)

    def network_levels(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The int64 levels (N,) the network is called with at level t: the training level
        `schedule.network_level(t)` (t itself unless the schedule is respaced) plus
        `level_offset`."""
        return torch.full((x.shape[0],), self.schedule.network_level(t) + self.level_offset,
                          dtype=torch.long, device=x.device)

    def network_call(self) -> Optional[str]:
        """How the network is called at level t, for plans (``net(x, t − 1, y=<class>)``), or
        None for the plain ``net(x, t)`` (the training level τ_t on a respaced schedule)."""
        if not self.level_offset and not self.condition_names:
            return None
        level = "t" if not self.schedule.is_respaced else "τ_t"
        if self.level_offset:
            level += f" {'+' if self.level_offset > 0 else '−'} {abs(self.level_offset)}"
        keywords = "".join(f", {k}=<{v}>" for v, k in self.condition_names.items())
        return f"net(x, {level}{keywords})"

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
        the network in its dtype at its training levels, conditions under the network's own
        keyword names (`condition_names`). An error raised inside the network gets a note
        naming this component, the input's shape and the level. Subclasses that call their
        network otherwise (the diffusers adapter) override the three hooks."""
        if self.condition_names:
            conditions = tuple((self.condition_names.get(v, v), value) for v, value in conditions)
        inputs = (self.network_input(x), self.network_levels(x, t))
        keywords = self.network_keywords(x, conditions)
        try:
            with _attention_backend(inputs[0]):
                return self.net(*inputs, **keywords)
        except Exception as error:
            if hasattr(error, "add_note"):                  # Python ≥ 3.11
                error.add_note(f"raised by the network of component '{self.name}' on an input of "
                               f"shape {tuple(x.shape)} at level {t}")
            raise


def _attention_backend(x: torch.Tensor):
    """The math kernel of scaled-dot-product attention for bfloat16 on a CPU without AVX-512:
    torch 2.13's fused CPU kernel packs bfloat16 with AVX-512 instructions and fails
    ("pack_vnni2 is only supported when avx512 is supported") on AVX2 and older CPUs; the math
    kernel computes the same attention. Elsewhere nothing changes."""
    if (isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16 and x.device.type == "cpu"
            and torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16")):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def _check_offset(level_offset) -> int:
    if isinstance(level_offset, bool) or not isinstance(level_offset, numbers.Integral):
        raise ValueError(f"level_offset: expected an integer (−1 for a network trained on "
                         f"0-based timesteps), got {level_offset!r}")
    return int(level_offset)


def _check_condition_names(condition_names) -> dict:
    if condition_names is None:
        return {}
    if not isinstance(condition_names, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v.isidentifier()
            for k, v in condition_names.items()):
        raise ValueError(f"condition_names: expected a mapping from condition variables to the "
                         f"network's keyword names, e.g. {{'class': 'y'}}, got {condition_names!r:.80}")
    if len(set(condition_names.values())) != len(condition_names):
        raise ValueError(f"condition_names: two variables map to one keyword in {dict(condition_names)}")
    return dict(condition_names)


#: Each prediction with its article, for messages.
_PREDICTION_NOUNS = {"epsilon": "an ε", "sample": "an x₀ (\"sample\")", "v": "a v",
                     "score": "a score"}


class ScoreModel(NetworkComponent):
    """A noise-prediction network: score −ε̂(x, t)/σ_t, no log-density (docs/algebra.md §2).

    The network is called as ``net(x, t)`` (see `NetworkComponent` for `level_offset` and
    `condition_names`) and returns a prediction of the shape of x, turned into ε̂ with the ᾱ_t
    of the level sampled (`compose.components.predictions`):

        "epsilon"  ε̂ = output      "sample" (x̂_0)  ε̂ = (x − √ᾱ_t x̂_0)/σ_t
        "v"        ε̂ = √ᾱ_t v + σ_t x,  v = √ᾱ_t ε − σ_t x_0      "score"  ε̂ = −σ_t ŝ

    Args:
        prediction: "epsilon" (default), "sample", "v" (or "v_prediction") or "score".
        learned_variance: the network returns twice the channels of x (dimension 1), the
            prediction then a variance; only the first half is used.
    """

    kind = "score"
    _default_prefix = "score_model"

    def __init__(self, net: nn.Module, schedule: Schedule, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None, *, prediction: str = "epsilon",
                 learned_variance: bool = False, level_offset: int = 0,
                 condition_names: Optional[Mapping[str, str]] = None):
        super().__init__(net, schedule, name, event_shape, level_offset=level_offset,
                         condition_names=condition_names)
        self.prediction = check_prediction(prediction)
        if not isinstance(learned_variance, bool):
            raise ValueError(f"learned_variance: expected True or False, got {learned_variance!r}")
        self.learned_variance = learned_variance

    def network_output(self, x: torch.Tensor, t: int, conditions: Conditions = ()) -> torch.Tensor:
        """The network's prediction at level t (ε, x̂_0, v or ŝ; the variance half dropped),
        checked to be a real tensor of the shape of x, in x's dtype."""
        out = checked_output(self.name, self.call_net(x, t, conditions), x)
        if self.learned_variance:
            out = drop_learned_variance(out, x, self.name)
        if out.shape != x.shape:
            raise ValueError(f"{self.name}: network returned shape {tuple(out.shape)} for input "
                             f"{tuple(x.shape)}; {_PREDICTION_NOUNS[self.prediction]} prediction must match the input"
                             + ("" if self.learned_variance or out.dim() != x.dim()
                                or out.shape[1] != 2 * x.shape[1] else
                                " (twice the channels: a learned variance? use "
                                "learned_variance=True)"))
        return out

    def noise_prediction(self, x: torch.Tensor, t: int, conditions: Conditions = ()) -> torch.Tensor:
        """ε̂(x, t), shape of x, from the network's prediction with √ᾱ_t and σ_t of level t."""
        return noise_from_prediction(self.network_output(x, t, conditions), x, math.sqrt(self.schedule.alpha_bar(t)),
                                     self.schedule.sigma(t), self.prediction)

    def network_call(self) -> Optional[str]:
        call = super().network_call()
        if self.prediction == "epsilon" and not self.learned_variance and call is None:
            return None
        what = {"epsilon": "ε", "sample": "x₀", "v": "v = √ᾱ ε − σ x₀", "score": "the score"}
        return (f"predicts {what[self.prediction]}"
                + (" (learned variance: first half of the channels)" if self.learned_variance
                   else "") + f", called as {call or 'net(x, t)'}")

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
                 name: Optional[str] = None, event_shape: Optional[Sequence[int]] = None, *,
                 level_offset: int = 0):
        super().__init__(net, schedule, name, event_shape, level_offset=level_offset)
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
