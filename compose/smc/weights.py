"""The Feynman–Kac weights of a compiled composition (docs/smc.md).

The reverse process driven by the composed score S = Σ_i w_i s_i, with log-weights growing in
reverse time at the rate

    r = ½ β (‖S‖² − Σ_i w_i ‖s_i‖²) − ½ β (Σ_i w_i d_i − d),

has weighted marginals π_t ∝ ∏_i p_{i,t}^{w_i} at every level (d_i: the coordinates term i
covers, d those of the canvas; classifier terms cover none). The step t → t − 1 spans
b_t = −log(1 − β_t) of continuous time, so its log-increment is

    left       ½ b_t (q(x_t) − D)
    trapezoid  ½ b_t (½ [q_t(x_t) + q_{t−1}(x_{t−1})] − D),

with q = ‖S‖² − Σ_i w_i ‖s_i‖² (`Evaluation.excess`) and D = Σ_i w_i d_i − d. The particles
start from π_T ≈ N(0, I/P), P the sum of the weights covering each coordinate, whose
normaliser is log Z_T = Σ_c [½ (1 − P_c) log 2π − ½ log P_c].
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

from .. import windows
from ..compiler import Target
from ..compiler.terms import MixtureDensity


def rate_factor(target: Target, t: int) -> float:
    """b_t = −log(1 − β_t): the continuous time the step t → t − 1 spans."""
    return -math.log1p(-target.schedule.beta(t))


#: The automatic start: among the top levels whose ᾱ_t ≤ START_ALPHA_BAR (where the
#: components' marginals are N(0, I) to within √ᾱ_t of the data's scale), the highest whose step
#: spans at most START_RATE of continuous time (b_t = −log(1 − β_t)); failing that, the highest
#: level whose β_t ≤ START_BETA (skipping only the clipped steps near β = 0.999).
START_RATE = 0.5
START_ALPHA_BAR = 1e-2
START_BETA = 0.9


def default_start_level(schedule) -> int:
    """Where `compose.SMC` starts by default: T, unless the top levels take steps too large for
    the weights (the cosine schedule caps β_T at 0.999: b_T ≈ 6.9); see `START_RATE`."""
    T = schedule.T
    for t in range(T, 0, -1):
        if schedule.alpha_bar(t) > START_ALPHA_BAR and t < T:
            break
        if -math.log1p(-schedule.beta(t)) <= START_RATE:
            return t
    for t in range(T, 0, -1):
        if schedule.beta(t) <= START_BETA:
            return t
    return T


def _box(term, canvas) -> Optional[windows.Box]:
    if isinstance(term.source, MixtureDensity):
        return term.source.view
    return term.window


class FeynmanKac:
    """The parts of the weights fixed by the composition and the canvas: the precision P of the
    start (per coordinate), D = Σ_i w_i d_i − d and log Z_T."""

    def __init__(self, target: Target, event_shape: Sequence[int]):
        canvas = tuple(int(d) for d in event_shape)
        precision = torch.zeros(canvas, dtype=torch.float64)
        covered_weight = 0.0
        for term in target.terms:
            if term.method == "classifier":
                continue            # a likelihood: covers no coordinate
            box = _box(term, canvas)
            if box is None:
                precision += term.weight
                covered_weight += term.weight * precision.numel()
            else:
                inside = windows.mask(canvas, [box])
                precision[inside] += term.weight
                covered_weight += term.weight * int(inside.sum())
        bad = precision <= 0
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0])
            where = f"coordinate {list(index)} of the canvas {list(canvas)}" if precision.numel() > 1 \
                else "the only coordinate"
            raise ValueError(
                f"SMC: the weights of the factors covering {where} sum to "
                f"{float(precision[index]):g} ({int(bad.sum())} coordinates have Σw ≤ 0); the "
                "particles start from N(0, I/Σw), which needs Σw > 0 at every coordinate "
                f"(the composition {str(target.expr)!r})")
        self.canvas = canvas
        self.precision = precision
        self.dimension = covered_weight - precision.numel()
        self.log_normaliser_start = float(
            (0.5 * (1.0 - precision) * math.log(2.0 * math.pi) - 0.5 * precision.log()).sum())

    def start(self, n: int, generator: Optional[torch.Generator], device, dtype) -> torch.Tensor:
        """x ~ N(0, I/P), shape (n, *canvas)."""
        z = torch.randn((n,) + self.canvas, generator=generator, device=device, dtype=dtype)
        return z * self.precision.rsqrt().to(device=z.device, dtype=dtype)

    def increment(self, b: float, excess_from: torch.Tensor,
                  excess_to: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The log-increment of one step, shape (N,): the left rule with `excess_from` alone,
        the trapezoid with both ends."""
        q = excess_from if excess_to is None else 0.5 * (excess_from + excess_to)
        return 0.5 * b * (q - self.dimension)
