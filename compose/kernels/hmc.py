"""Hamiltonian Monte Carlo with partial momentum refresh (R3; Neal 2011, Horowitz 1991).

Diagonal mass M. At the start of each level v ~ N(0, M). Each step (docs/kernels.md, section 4):

    1. refresh   v' = γ v + √(1 − γ²) M^{½} ξ                     (damping γ ∈ [0, 1))
    2. leapfrog  L times: v ← v + (ε/2) s(x);  x ← x + ε M⁻¹ v;  v ← v + (ε/2) s(x)
                 (the score at the end of one step starts the next: L evaluations per step)
    3. accept    (x_L, v_L) with min(1, exp(Δ(x → x_L) − ½ v_Lᵀ M⁻¹ v_L + ½ v'ᵀ M⁻¹ v'))
                 (HMC only; U-HMC always moves). On rejection x stays and the momentum is
                 negated, −v', which keeps partial-refresh HMC exactly invariant; R3's code
                 keeps +v' (``negate_on_reject=False``).

Δ comes from the target: exact terms exactly, score-only terms along the straight line or,
with a target compiled with path="curve", along the leapfrog positions at no extra cost.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, List, Optional, Tuple, Union

import torch

from ..compiler import Target
from . import mh
from .base import ChainState, Kernel, StepInfo, unadjusted_info
from .stepsize import StepSizeSpec

MassSpec = Union[float, torch.Tensor, Callable[[int], Union[float, torch.Tensor]]]


def leapfrog(x: torch.Tensor, v: torch.Tensor, evaluation, evaluate: Callable,
             step_size: float, num_steps: int, inverse_mass) -> Tuple[List, List, torch.Tensor]:
    """L leapfrog steps from (x, v) given the evaluation (with `.score`) at x.

    Args:
        evaluate: x ↦ an object with `.score` at x (called once per step).
        inverse_mass: M⁻¹, a float or a tensor broadcastable to x.
    Returns:
        (positions x⁽⁰⁾..x⁽ᴸ⁾, their evaluations, final momentum v⁽ᴸ⁾).
    """
    positions, evaluations = [x], [evaluation]
    half = 0.5 * step_size
    for _ in range(num_steps):
        v = v + half * evaluation.score
        x = x + step_size * inverse_mass * v
        evaluation = evaluate(x)
        v = v + half * evaluation.score
        positions.append(x)
        evaluations.append(evaluation)
    return positions, evaluations, v


def kinetic_energy(v: torch.Tensor, inverse_mass) -> torch.Tensor:
    """½ vᵀ M⁻¹ v per chain, shape (N,)."""
    return 0.5 * (v * v * inverse_mass).flatten(1).sum(1)


class HMC(Kernel):
    """HMC (``adjusted=True``) or U-HMC (``adjusted=False``) with partial momentum refresh.

    Args:
        step_size: ε (constant, per level, or `PowerLaw`), > 0.
        num_leapfrog: L ≥ 1 leapfrog steps per MCMC step.
        damping: γ ∈ [0, 1); 0 is a full refresh each step.
        mass: diagonal mass, a positive float, a tensor broadcastable to the event shape, or a
            callable t ↦ either (a mass that depends on the level).
        adjusted: accept/reject with Δ (HMC) or always move (U-HMC).
        negate_on_reject: flip the momentum on rejection (exact); False is R3's variant.
    """

    def __init__(self, step_size: StepSizeSpec, num_leapfrog: int = 3, damping: float = 0.5,
                 mass: MassSpec = 1.0, adjusted: bool = True, negate_on_reject: bool = True):
        super().__init__(step_size)
        if isinstance(num_leapfrog, bool) or not isinstance(num_leapfrog, numbers.Integral) or num_leapfrog < 1:
            raise ValueError(f"num_leapfrog: must be an integer ≥ 1, got {num_leapfrog!r}")
        if isinstance(damping, bool) or not isinstance(damping, numbers.Real) or not 0.0 <= damping < 1.0:
            raise ValueError(f"damping: must be in [0, 1), got {damping!r}")
        if not callable(mass):
            _check_mass(mass)
        self.num_leapfrog = int(num_leapfrog)
        self.damping = float(damping)
        self.mass = mass
        self.adjusted = bool(adjusted)
        self.negate_on_reject = bool(negate_on_reject)

    provides_curve = True

    @property
    def name(self) -> str:
        return "HMC" if self.adjusted else "U-HMC"

    def check_target(self, target: Target) -> None:
        """Also refuse, at setup, a constant mass tensor that does not fit the target's event
        shape (a mass depending on the level is checked once per level in `init`)."""
        super().check_target(target)
        if isinstance(self.mass, torch.Tensor) and target.event_shape is not None:
            _check_mass_shape(self.mass, (1,) + tuple(target.event_shape))

    def _mass_at(self, t: int, like: torch.Tensor, check: bool = False):
        """M at level t in the dtype and device of `like`; validated (a host sync) only when
        `check`, i.e. once per level in `init`, never inside a step."""
        mass = self.mass(t) if callable(self.mass) else self.mass
        if check:
            mass = _check_mass(mass)
            if isinstance(mass, torch.Tensor):
                _check_mass_shape(mass, like.shape)
        if isinstance(mass, torch.Tensor):
            mass = mass.to(dtype=like.dtype, device=like.device)
        return mass

    def init(self, target: Target, x: torch.Tensor, t: int,
             generator: Optional[torch.Generator] = None) -> ChainState:
        """Evaluate at x and draw a fresh momentum v ~ N(0, M)."""
        mass = self._mass_at(t, x, check=True)
        momentum = mh.normal(x, generator) * (mass ** 0.5 if isinstance(mass, torch.Tensor) else math.sqrt(mass))
        return ChainState(x, target.evaluate(x, t), momentum)

    def step(self, target: Target, state: ChainState, t: int, step_size: float,
             generator: Optional[torch.Generator] = None) -> Tuple[ChainState, StepInfo]:
        x, here = state.x, state.evaluation
        mass = self._mass_at(t, x)
        inverse_mass = 1.0 / mass
        root_mass = mass ** 0.5 if isinstance(mass, torch.Tensor) else math.sqrt(mass)
        g = self.damping
        v = g * state.momentum + math.sqrt(1.0 - g * g) * root_mass * mh.normal(x, generator)
        positions, evaluations, v_end = leapfrog(
            x, v, here, lambda y: target.evaluate(y, t), step_size, self.num_leapfrog, inverse_mass)
        x_end, there = positions[-1], evaluations[-1]
        if not self.adjusted:
            return ChainState(x_end, there, v_end), unadjusted_info(x_end)
        if target.path == "curve":
            delta = target.delta_curve(positions, evaluations, t)
        else:
            delta = target.delta_line(x, here, x_end, there, t)
        log_alpha = delta - kinetic_energy(v_end, inverse_mass) + kinetic_energy(v, inverse_mass)
        accepted, divergent = mh.accept(log_alpha, generator)
        v_rejected = -v if self.negate_on_reject else v
        new_state = ChainState(mh.select(accepted, x_end, x), there.where(accepted, here),
                               mh.select(accepted, v_end, v_rejected))
        return new_state, StepInfo(accepted, delta, divergent)

    def evaluations_per_step(self, target):
        if not self.adjusted:
            return self.num_leapfrog, 0
        extra = target.points * (self.num_leapfrog if target.path == "curve" else 1)
        return self.num_leapfrog, extra


def _check_mass(mass):
    if isinstance(mass, bool):
        raise ValueError(f"mass: must be positive, got {mass!r}")
    if isinstance(mass, numbers.Real):
        if not math.isfinite(mass) or mass <= 0:
            raise ValueError(f"mass: must be finite and > 0, got {mass!r}")
        return float(mass)
    if isinstance(mass, (str, bytes)) or (isinstance(mass, torch.Tensor) and mass.is_complex()):
        raise ValueError(f"mass: must be a positive number, a tensor broadcastable to the event "
                         f"shape, or a callable t → either; got {type(mass).__name__} {mass!r:.40}")
    try:
        mass = torch.as_tensor(mass, dtype=torch.float64 if not isinstance(mass, torch.Tensor) else None)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"mass: must be a positive number, a tensor broadcastable to the event "
                         f"shape, or a callable t → either; got {type(mass).__name__} "
                         f"{mass!r:.40}") from None
    if not mass.is_floating_point():
        mass = mass.double()
    if not bool(torch.all(torch.isfinite(mass) & (mass > 0))):
        raise ValueError("mass: every diagonal entry must be finite and > 0")
    return mass


def _check_mass_shape(mass: torch.Tensor, chains: Tuple[int, ...]) -> None:
    """A diagonal mass must broadcast to the chains (N, *event) without changing their shape."""
    try:
        fits = torch.broadcast_shapes(tuple(mass.shape), tuple(chains)) == tuple(chains)
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"mass: shape {tuple(mass.shape)} does not fit the event shape "
                         f"{tuple(chains[1:])} (a diagonal mass is one value, or a tensor "
                         f"broadcastable to the event shape)")
