"""The target of the 2D product experiment (docs/experiments.md, section 1): its geometry in one
place, exact samples, and the two components (analytic, or seen score-only as the oracle).

Component 1, the ring: (1/8) Σ_k N(μ_k, RING_STD² I), μ_k = 0.5 (cos 2πk/8, sin 2πk/8).
Component 2, the bar: uniform on [BAR_LOW, BAR_HIGH] = [−0.2, 0.2] × [−1, 1].
Their normalised product is the ring restricted to the bar: the two modes at (0, ±0.5).

For the LL metric the bar is extended so that a fraction OUTER_MASS = 1% of its mass lies
uniformly on the rest of the box [OUTER_LOW, OUTER_HIGH] = (−1.1, 1.1)²; see
`compose.experiments.product2d.likelihood.product2d_log_density`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from compose.components import GaussianMixture, ScoreModel, UniformBox
from compose.schedule import Schedule

N_RING = 8
RING_RADIUS = 0.5
#: The ring's means, float64 of shape (8, 2): 0.5 (cos 2πk/8, sin 2πk/8), k = 0..7.
RING_MEANS = torch.tensor(
    [[RING_RADIUS * math.cos(2 * math.pi * k / N_RING),
      RING_RADIUS * math.sin(2 * math.pi * k / N_RING)] for k in range(N_RING)],
    dtype=torch.float64)
RING_STD = 0.03
BAR_LOW = (-0.2, -1.0)
BAR_HIGH = (0.2, 1.0)
OUTER_LOW = (-1.1, -1.1)
OUTER_HIGH = (1.1, 1.1)
OUTER_MASS = 0.01


def ring_samples(n: int, generator: Optional[torch.Generator] = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n samples of the ring: a uniform choice of k, then μ_k + RING_STD · z; shape (n, 2)."""
    k = torch.randint(0, N_RING, (n,), generator=generator)
    z = torch.randn((n, 2), generator=generator, dtype=torch.float64)
    return (RING_MEANS[k] + RING_STD * z).to(dtype)


def in_bar(x: torch.Tensor) -> torch.Tensor:
    """Boolean (N,): whether each row of x (N, 2) lies in [BAR_LOW, BAR_HIGH]."""
    low = torch.tensor(BAR_LOW, dtype=x.dtype, device=x.device)
    high = torch.tensor(BAR_HIGH, dtype=x.dtype, device=x.device)
    return ((x >= low) & (x <= high)).all(-1)


def exact_product_samples(n: int, generator: Optional[torch.Generator] = None,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n exact samples of the product ring × bar, by rejection: ring samples kept inside the bar.

    About a quarter of the ring's samples are accepted; returns shape (n, 2).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n: must be an integer ≥ 0, got {n!r}")
    kept, have = [], 0
    while have < n:
        draw = ring_samples(max(64, 4 * (n - have) + 64), generator, dtype=torch.float64)
        draw = draw[in_bar(draw)]
        kept.append(draw)
        have += draw.shape[0]
    out = torch.cat(kept)[:n] if kept else torch.empty((0, 2), dtype=torch.float64)
    return out.to(dtype)


# -- the components ------------------------------------------------------------------
def analytic_components(schedule: Schedule) -> Tuple[GaussianMixture, UniformBox]:
    """(ring, bar): the two analytic components on `schedule`, named "ring" and "bar"."""
    ring = GaussianMixture(RING_MEANS, RING_STD, schedule=schedule, name="ring")
    bar = UniformBox(BAR_LOW, BAR_HIGH, schedule=schedule, name="bar")
    return ring, bar


def oracle_components(schedule: Schedule) -> Tuple[ScoreModel, ScoreModel]:
    """(ring, bar) as score-only models with exact noise predictions (no log-density)."""
    ring, bar = analytic_components(schedule)
    return ScoreModel.from_analytic(ring, name="ring"), ScoreModel.from_analytic(bar, name="bar")
