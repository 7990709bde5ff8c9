"""Langevin kernels: ULA and MALA (the paper's U-LA and LA; docs/kernels.md, section 3).

    proposal   x' = x + η s(x) + √(2η) ξ,  ξ ~ N(0, I)
    MALA       accept with min(1, exp(Δ(x → x') + log q(x | x') − log q(x' | x))),
               log q(x' | x) = −‖x' − x − η s(x)‖² / (4η)

Roberts & Tweedie (1996). The 4η denominator is the Gaussian proposal's variance 2η doubled;
R3's torch code used 2η², which targets the wrong variance (docs/kernels.md, section 3).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..compiler import Target
from . import mh
from .base import ChainState, Kernel, StepInfo, unadjusted_info


def langevin_proposal(x: torch.Tensor, score: torch.Tensor, step_size: float,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """x + η s(x) + √(2η) ξ."""
    return x + step_size * score + math.sqrt(2.0 * step_size) * mh.normal(x, generator)


def langevin_log_q(x_to: torch.Tensor, x_from: torch.Tensor, score_from: torch.Tensor,
                   step_size: float) -> torch.Tensor:
    """log q(x_to | x_from) = −‖x_to − x_from − η s(x_from)‖² / (4η) (+ const), shape (N,)."""
    residual = x_to - x_from - step_size * score_from
    return -residual.pow(2).flatten(1).sum(1) / (4.0 * step_size)


class ULA(Kernel):
    """Unadjusted Langevin: every proposal is taken. One score evaluation per step.

    Args:
        step_size: η (constant, per level, or `PowerLaw`).
    """

    adjusted = False
    evaluates_at_init = False

    def init(self, target, x, t, generator=None):
        return ChainState(x)

    def step(self, target: Target, state: ChainState, t: int, step_size: float,
             generator: Optional[torch.Generator] = None) -> Tuple[ChainState, StepInfo]:
        evaluation = state.evaluation or target.evaluate(state.x, t)
        x_new = langevin_proposal(state.x, evaluation.score, step_size, generator)
        return ChainState(x_new), unadjusted_info(x_new)

    def evaluations_per_step(self, target):
        return 1, 0


class MALA(Kernel):
    """Metropolis-adjusted Langevin with the pseudo-energy difference Δ of the target.

    One evaluation per step at the proposal (the score there is reused as the next current
    score when accepted), plus the target's interior line points for score-only terms.

    Args:
        step_size: η (constant, per level, or `PowerLaw`).
    """

    def step(self, target: Target, state: ChainState, t: int, step_size: float,
             generator: Optional[torch.Generator] = None) -> Tuple[ChainState, StepInfo]:
        x, here = state.x, state.evaluation
        x_new = langevin_proposal(x, here.score, step_size, generator)
        there = target.evaluate(x_new, t)
        delta = target.delta_line(x, here, x_new, there, t)
        log_alpha = (delta + langevin_log_q(x, x_new, there.score, step_size)
                     - langevin_log_q(x_new, x, here.score, step_size))
        accepted, divergent = mh.accept(log_alpha, generator)
        new_state = ChainState(mh.select(accepted, x_new, x), there.where(accepted, here))
        return new_state, StepInfo(accepted, delta, divergent)

    def evaluations_per_step(self, target):
        return 1, target.points
