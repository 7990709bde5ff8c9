"""Random-walk Metropolis–Hastings with the pseudo-energy difference (docs/kernels.md §5)."""
from __future__ import annotations

from . import mh
from .base import ChainState, Kernel, StepInfo
from .stepsize import StepSizeSpec


class RandomWalkMH(Kernel):
    """Random-walk Metropolis: x' = x + τ ξ, accept with min(1, exp(Δ(x → x'))).

    Args:
        scale: τ > 0 (constant, per level, or `PowerLaw`).
    """

    step_size_name = "scale"

    def __init__(self, scale: StepSizeSpec):
        super().__init__(scale)

    def step(self, target, state, t, step_size, generator=None):
        x, here = state.x, state.evaluation
        x_new = x + step_size * mh.normal(x, generator)
        there = target.evaluate(x_new, t)
        delta = target.delta_line(x, here, x_new, there, t)
        accepted, divergent = mh.accept(delta, generator)
        return (ChainState(mh.select(accepted, x_new, x), there.where(accepted, here)),
                StepInfo(accepted, delta, divergent))

    def evaluations_per_step(self, target):
        return 1, target.points
