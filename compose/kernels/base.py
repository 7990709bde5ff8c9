"""Kernel state, step information, and the base class with the Pyro `MCMCKernel` adapter.

A kernel is two functions over a batch of N independent chains at one level t:

    init(target, x, t, generator)              -> ChainState
    step(target, state, t, step_size, generator) -> (ChainState, StepInfo)

`ChainState` holds only what the next step needs (the position and the target's evaluation
there, so a score is never computed twice; HMC's momentum). `StepInfo` holds diagnostics and is
never fed back. Both functions are free of host synchronisation.

The same object is a `pyro.infer.mcmc.MCMCKernel` (docs/sampler.md §5): bind it to a target and
a level with `at_level(target, t, generator)`, then hand it to `pyro.infer.MCMC` with
``initial_params={"x": x0}``. All mutable state lives in that thin adapter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from ..compiler import Evaluation, Target
from .stepsize import StepSizeSpec, check_step_size, per_level


@dataclass
class ChainState:
    """Position x (N, *event), the target's evaluation at x (or None), and HMC momentum."""

    x: torch.Tensor
    evaluation: Optional[Evaluation] = None
    momentum: Optional[torch.Tensor] = None


@dataclass
class StepInfo:
    """Per chain, shape (N,): was the move accepted, Δ (zero if not computed), divergence; and
    whether the move was Metropolis-corrected at all (`adjusted`, a plain bool: an unadjusted
    move is always taken, so it has no acceptance rate, which diagnostics report as NaN)."""

    accepted: torch.Tensor
    log_ratio: torch.Tensor
    divergent: torch.Tensor
    adjusted: bool = True


def non_finite_error(t: int) -> FloatingPointError:
    """What both drivers (`compose.sample` and the Pyro adapter) raise when chains leave the
    finite numbers: an unadjusted kernel (ULA, U-HMC) has no rejection to stop them."""
    return FloatingPointError(f"level {t}: some samples became non-finite; reduce the step size "
                              "at this level")


def check_generator(generator) -> Optional[torch.Generator]:
    """`generator` if it is a torch.Generator or None; otherwise a ValueError saying how to seed."""
    if generator is not None and not isinstance(generator, torch.Generator):
        seed = int(generator) if isinstance(generator, int) and not isinstance(generator, bool) else 0
        raise ValueError(f"generator: expected a torch.Generator or None, got "
                         f"{type(generator).__name__} {generator!r:.40}; to seed, pass "
                         f"torch.Generator().manual_seed({seed})")
    return generator


def unadjusted_info(x_new: torch.Tensor) -> StepInfo:
    """Every chain moves (no acceptance rate); a non-finite position counts as a divergence."""
    divergent = ~torch.isfinite(x_new.flatten(1)).all(1)
    zeros = torch.zeros(x_new.shape[0], dtype=x_new.dtype, device=x_new.device)
    return StepInfo(torch.ones_like(divergent), zeros, divergent, adjusted=False)


class Kernel(MCMCKernel):
    """Base of all kernels. Subclasses set `adjusted` and implement `init`, `step` and
    `evaluations_per_step`.

    Args:
        step_size: a positive float, one value per level, a `PowerLaw`, or a callable t → float.
    """

    adjusted: bool = True
    #: whether `init` evaluates the target at the starting point (one evaluation per level)
    evaluates_at_init: bool = True
    #: whether a move follows a piecewise-straight path along which Δ can be integrated
    #: (path="curve"): HMC's leapfrog trajectory; Langevin and random-walk moves have none
    provides_curve: bool = False
    #: the name of the step-size argument in error messages
    step_size_name: str = "step_size"

    def __init__(self, step_size: StepSizeSpec):
        self.step_size = check_step_size(step_size, self.step_size_name)
        self.transforms = {}           # pyro.infer.MCMC reads kernel.model after a run otherwise
        self._target: Optional[Target] = None
        self._level: Optional[int] = None
        self._generator: Optional[torch.Generator] = None
        self._initial_params = None
        self._state: Optional[ChainState] = None
        self._step_size: Optional[float] = None
        self._warmup_steps = 0
        self._steps = 0
        self._counts = [0, 0]          # moves, accepted in the current phase (warm-up, sampling)
        self._divergences: list = []

    # -- the functional interface ----------------------------------------------------------
    def step_sizes(self, target: Target) -> list:
        """Step size at levels 1..T (index t − 1)."""
        return per_level(self.step_size, target.schedule, self.step_size_name)

    def check_target(self, target: Target) -> None:
        """Refuse, before anything is evaluated, a target this kernel cannot sample as
        compiled: path="curve" needs a kernel whose moves provide a curve (unadjusted kernels
        never form Δ, so for them the path does not matter)."""
        if target.path == "curve" and self.adjusted and not self.provides_curve:
            raise ValueError(f"path: {self.name} has no leapfrog path to integrate Δ along; compile "
                             "with path='line', or sample path='curve' with HMC")

    def init(self, target: Target, x: torch.Tensor, t: int,
             generator: Optional[torch.Generator] = None) -> ChainState:
        return ChainState(x, target.evaluate(x, t))

    def step(self, target: Target, state: ChainState, t: int, step_size: float,
             generator: Optional[torch.Generator] = None) -> Tuple[ChainState, StepInfo]:
        raise NotImplementedError

    def evaluations_per_step(self, target: Target) -> Tuple[int, int]:
        """(evaluations of every term per step, extra evaluations of each score-only term)."""
        raise NotImplementedError

    def integration_path(self, target: Target) -> str:
        """The path Δ is integrated along for this kernel: `target.path` for a kernel that
        provides a curve (HMC), otherwise the straight line x → x'."""
        return target.path if self.provides_curve else "line"

    @property
    def name(self) -> str:
        return type(self).__name__

    # -- pyro.infer.mcmc.MCMCKernel ---------------------------------------------------------
    def at_level(self, target: Target, t: int, generator: Optional[torch.Generator] = None) -> "Kernel":
        """Fix the target and level for running under `pyro.infer.MCMC`; returns self."""
        if not isinstance(target, Target):
            raise ValueError(f"target: expected a compiled compose Target, got {type(target).__name__}")
        self._level = target.schedule.check_level(t)
        self.check_target(target)
        self._target = target
        self._generator = check_generator(generator)
        self._state = None
        return self

    @property
    def initial_params(self) -> Dict[str, torch.Tensor]:
        if self._initial_params is None:
            raise ValueError("initial_params: pass initial_params={'x': x0} to pyro.infer.MCMC, "
                             "x0 of shape (num_chains, *event_shape)")
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: Dict[str, torch.Tensor]) -> None:
        if not isinstance(params, dict) or set(params) != {"x"}:
            raise ValueError(f"initial_params: expected one site 'x', got "
                             f"{sorted(params) if isinstance(params, dict) else params!r:.60}")
        x = params["x"]
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
            raise ValueError("initial_params: x must be a real floating-point tensor of shape "
                             "(num_chains, *event_shape), got "
                             + (f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)
                                else type(x).__name__))
        self._initial_params = dict(params)

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        if self._target is None:
            raise ValueError("target: call kernel.at_level(target, t) before pyro.infer.MCMC runs it")
        self._state = None
        self._step_size = self.step_sizes(self._target)[self._level - 1]
        self._warmup_steps = int(warmup_steps)
        self._steps = 0
        self._counts = [0, 0]
        self._divergences = []

    def sample(self, params: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x = params["x"]
        if self._state is None or self._state.x is not x:
            self._state = self.init(self._target, x, self._level, self._generator)
        self._state, info = self.step(self._target, self._state, self._level, self._step_size,
                                      self._generator)
        # One host read per step (pyro.infer.MCMC reads every step anyway): the counts, and
        # whether a chain left the finite numbers, which stops the run as compose.sample does.
        accepted, divergent, non_finite = torch.stack([
            info.accepted.sum(), info.divergent.sum(),
            (~torch.isfinite(self._state.x)).sum()]).tolist()
        if non_finite:
            raise non_finite_error(self._level)
        if self._steps == self._warmup_steps:          # warm-up over: count the sampling phase
            self._counts = [0, 0]
        if self._steps >= self._warmup_steps:
            self._divergences.extend([self._steps - self._warmup_steps] * int(divergent))
        self._steps += 1
        self._counts[0] += info.accepted.numel()
        self._counts[1] += int(accepted)
        return {"x": self._state.x}

    def _rate(self) -> float:
        """Accepted / proposed moves; NaN for an unadjusted kernel, which has no acceptance."""
        moves, accepted = self._counts
        return accepted / moves if moves and self.adjusted else math.nan

    def logging(self):
        return {"acc. rate": f"{self._rate():.3f}", "divergences": len(self._divergences)}

    def diagnostics(self):
        """Pyro's contract (as its HMC): the acceptance rate over the steps after warm-up, and
        divergences as the list of those steps' indices, here one entry per divergent chain."""
        return {"divergences": list(self._divergences), "acceptance rate": self._rate()}
