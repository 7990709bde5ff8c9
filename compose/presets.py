"""Presets: sampler settings that measured well, as functions (docs/presets.md).

`end_loaded_steps` spreads a total of S MCMC steps over the levels in proportion to σ_t^(−p),

    K_t ≈ S · σ_t^(−p) / Σ_s σ_s^(−p),      rounded so that Σ_t K_t = S (largest remainders),

so that most steps go to the last, least noisy levels, where a composition's modes separate and
its mass moves between them (on the 2D product the fraction of the target's mass inside the bar
rises from 65% at t = 10 to 99.9% at t = 1, while the uniform K = 10 spends 90% of its steps at
levels where the target is close to a Gaussian). Levels whose share rounds to 0 are skipped.

`steps_for_budget` finds the largest S whose run costs at most a given number of network
evaluations per sample for a kernel and target, counted as `compose.sample` counts them: one
evaluation at the start of each visited level (kernels that evaluate there) plus the kernel's
evaluations per step, integration points included.

    steps = compose.presets.steps_for_budget(target, kernel, 3100)
    result = compose.sample(target, kernel, 2000, steps_per_level=steps)
"""
from __future__ import annotations

import math
import numbers
from typing import List

from .compiler import Target
from .kernels.base import Kernel
from .schedule import Schedule


def end_loaded_steps(schedule: Schedule, total_steps: int, power: float = 2.0) -> List[int]:
    """T step counts (entry t − 1 for level t) summing to `total_steps`, K_t ∝ σ_t^(−power).

    power = 0 spreads the steps evenly; larger powers load the last levels more.
    """
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule: expected a compose.Schedule, got {type(schedule).__name__}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < 0:
        raise ValueError(f"total_steps: must be an integer ≥ 0, got {total_steps!r}")
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not math.isfinite(power) or power < 0:
        raise ValueError(f"power: must be a finite number ≥ 0, got {power!r}")
    weights = [float(schedule.sigma(t)) ** -float(power) for t in range(1, schedule.T + 1)]
    total = sum(weights)
    shares = [total_steps * w / total for w in weights]
    counts = [int(math.floor(q)) for q in shares]
    left = int(total_steps) - sum(counts)
    by_remainder = sorted(range(schedule.T), key=lambda i: (counts[i] - shares[i], -i))
    for i in by_remainder[:left]:
        counts[i] += 1
    return counts


def evaluations_per_sample(target: Target, kernel: Kernel, counts: List[int],
                           reverse_step: bool = False) -> int:
    """Evaluations of each score-only term per sample for these per-level step counts
    (the most of any term for exact-only targets), as the plan counts them: per visited level
    one at its start (kernels that evaluate there) and the steps' own; with `reverse_step` one
    more at each level whose reverse step has no score at hand (no steps, or ULA)."""
    per_step, extra = kernel.evaluations_per_step(target)
    if not kernel.adjusted or not target.implicit_terms:
        extra = 0
    init = int(kernel.evaluates_at_init)
    total = 0
    for k in counts:
        total += (init + k * (per_step + extra)) if k > 0 else 0
        total += int(bool(reverse_step) and not (k > 0 and init))
    return total


def steps_for_budget(target: Target, kernel: Kernel, evaluations: int, power: float = 2.0,
                     reverse_step: bool = False) -> List[int]:
    """End-loaded step counts (`end_loaded_steps`) with the most steps whose run costs at most
    `evaluations` network evaluations per sample of each term, for this kernel and target
    (and reverse steps after each level, if `reverse_step`)."""
    if not isinstance(target, Target):
        raise ValueError(f"target: expected a compiled Target (compose.compile), got {type(target).__name__}")
    if not isinstance(kernel, Kernel):
        raise ValueError(f"kernel: expected a compose kernel, got {type(kernel).__name__}")
    if isinstance(evaluations, bool) or not isinstance(evaluations, numbers.Integral) or evaluations < 1:
        raise ValueError(f"evaluations: must be an integer ≥ 1, got {evaluations!r}")
    per_step, extra = kernel.evaluations_per_step(target)
    cost = per_step + (extra if kernel.adjusted and target.implicit_terms else 0)
    steps = max(0, int(evaluations) // cost)
    counts = end_loaded_steps(target.schedule, steps, power)
    while steps > 0 and evaluations_per_sample(target, kernel, counts, reverse_step) > evaluations:
        steps -= 1
        counts = end_loaded_steps(target.schedule, steps, power)
    if steps == 0:
        raise ValueError(f"evaluations: {evaluations} per sample is less than one step of "
                         f"{kernel.name} ({cost + int(kernel.evaluates_at_init)} evaluations)")
    return counts


__all__ = ["end_loaded_steps", "evaluations_per_sample", "steps_for_budget"]
