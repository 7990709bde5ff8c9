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
    """Per chain, shape (N,): was the move accepted, Δ (zero if not computed), divergence."""

    accepted: torch.Tensor
    log_ratio: torch.Tensor
    divergent: torch.Tensor


def unadjusted_info(x_new: torch.Tensor) -> StepInfo:
    """Every chain moves; a non-finite position counts as a divergence."""
    divergent = ~torch.isfinite(x_new.flatten(1)).all(1)
    zeros = torch.zeros(x_new.shape[0], dtype=x_new.dtype, device=x_new.device)
    return StepInfo(torch.ones_like(divergent), zeros, divergent)


class Kernel(MCMCKernel):
    """Base of all kernels. Subclasses set `adjusted` and implement `init`, `step` and
    `evaluations_per_step`.

    Args:
        step_size: a positive float, one value per level, a `PowerLaw`, or a callable t → float.
    """

    adjusted: bool = True
    #: whether `init` evaluates the target at the starting point (one evaluation per level)
    evaluates_at_init: bool = True

    def __init__(self, step_size: StepSizeSpec):
        self.step_size = check_step_size(step_size)
        self.transforms = {}           # pyro.infer.MCMC reads kernel.model after a run otherwise
        self._target: Optional[Target] = None
        self._level: Optional[int] = None
        self._generator: Optional[torch.Generator] = None
        self._initial_params = None
        self._state: Optional[ChainState] = None
        self._step_size: Optional[float] = None
        self._totals = None

    # -- the functional interface ----------------------------------------------------------
    def step_sizes(self, target: Target) -> list:
        """Step size at levels 1..T (index t − 1)."""
        return per_level(self.step_size, target.schedule)

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
        """The path Δ is integrated along for this kernel: the straight line x → x'. Kernels
        that move along a leapfrog curve (HMC) follow `target.path` instead."""
        return "line"

    @property
    def name(self) -> str:
        return type(self).__name__

    # -- pyro.infer.mcmc.MCMCKernel ---------------------------------------------------------
    def at_level(self, target: Target, t: int, generator: Optional[torch.Generator] = None) -> "Kernel":
        """Fix the target and level for running under `pyro.infer.MCMC`; returns self."""
        if not isinstance(target, Target):
            raise ValueError(f"target: expected a compiled compose Target, got {type(target).__name__}")
        self._level = target.schedule.check_level(t)
        self._target = target
        self._generator = generator
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
        if set(params) != {"x"}:
            raise ValueError(f"initial_params: expected one site 'x', got {sorted(params)}")
        self._initial_params = dict(params)

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        if self._target is None:
            raise ValueError("target: call kernel.at_level(target, t) before pyro.infer.MCMC runs it")
        self._state = None
        self._step_size = self.step_sizes(self._target)[self._level - 1]
        self._totals = torch.zeros(3, dtype=torch.float64)   # moves, accepted, divergent

    def sample(self, params: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x = params["x"]
        if self._state is None or self._state.x is not x:
            self._state = self.init(self._target, x, self._level, self._generator)
        self._state, info = self.step(self._target, self._state, self._level, self._step_size,
                                      self._generator)
        self._totals += torch.stack([torch.tensor(float(info.accepted.numel())),
                                     info.accepted.sum().cpu().double(),
                                     info.divergent.sum().cpu().double()])
        return {"x": self._state.x}

    def _rates(self) -> Tuple[float, int]:
        moves, accepted, divergent = (self._totals if self._totals is not None else torch.zeros(3)).tolist()
        return (accepted / moves if moves else math.nan), int(divergent)

    def logging(self):
        rate, divergent = self._rates()
        return {"acc. rate": f"{rate:.3f}", "divergences": divergent}

    def diagnostics(self):
        rate, divergent = self._rates()
        return {"acceptance rate": rate, "divergences": divergent}
