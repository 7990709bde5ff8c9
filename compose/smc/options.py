"""`SMC`: the options of sequential Monte Carlo over the levels (docs/smc.md).

    compose.sample(target, kernel_or_None, N, ..., smc=compose.SMC(resampling="systematic",
                                                                   ess_threshold=0.5))
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

from .resampling import check_scheme

INCREMENTS = ("trapezoid", "left")


@dataclass(frozen=True)
class SMC:
    """Feynman–Kac weights, resampling and (with a kernel) resample-move along the levels.

    Args:
        resampling: "systematic" (default), "stratified", "residual" or "multinomial".
        ess_threshold: resample at a level when ESS < ess_threshold · N; 1 resamples at every
            level, 0 never (the weights are then carried to the end).
        resample_levels: (low, high): resample only at levels low ≤ t ≤ high; None: at all.
        increment: "trapezoid" (default: the excess ‖S‖² − Σ wᵢ‖sᵢ‖² averaged between x_t and
            x_{t−1}, both evaluated anyway) or "left" (at x_t only, as Feynman–Kac Correctors).
        return_weighted: return the weighted particles and their log-weights
            (`SampleResult.log_weights`) instead of resampling them to equal weights at the end.
        start_level: the level the particles start at, drawn from N(0, I/Σw). Default: T, or,
            where the top levels take steps too large for the weights (the cosine schedule caps
            β_T at 0.999), the highest level whose step is small enough and whose noise still
            hides the data (`compose.smc.default_start_level`; docs/smc.md): the levels above
            it are not run.
    """

    resampling: str = "systematic"
    ess_threshold: float = 0.5
    resample_levels: Optional[Tuple[int, int]] = None
    increment: str = "trapezoid"
    return_weighted: bool = False
    start_level: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "resampling", check_scheme(self.resampling))
        threshold = self.ess_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
                or not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"ess_threshold: must be a number in [0, 1], got {threshold!r}")
        object.__setattr__(self, "ess_threshold", float(threshold))
        if self.increment not in INCREMENTS:
            raise ValueError(f"increment: must be one of {', '.join(map(repr, INCREMENTS))}, "
                             f"got {self.increment!r}")
        if not isinstance(self.return_weighted, bool):
            raise ValueError(f"return_weighted: must be True or False, got {self.return_weighted!r}")
        levels = self.resample_levels
        if levels is not None:
            if (not isinstance(levels, (tuple, list)) or len(levels) != 2
                    or not all(_integer(v) for v in levels) or not 1 <= levels[0] <= levels[1]):
                raise ValueError(f"resample_levels: expected (low, high) with integers "
                                 f"1 ≤ low ≤ high, got {levels!r}")
            object.__setattr__(self, "resample_levels", (int(levels[0]), int(levels[1])))
        if self.start_level is not None:
            if not _integer(self.start_level) or self.start_level < 1:
                raise ValueError(f"start_level: must be an integer level ≥ 1, got {self.start_level!r}")
            object.__setattr__(self, "start_level", int(self.start_level))

    def start(self, schedule) -> int:
        """The level this run starts at on `schedule` (checked against its T)."""
        from .weights import default_start_level
        if self.start_level is None:
            return default_start_level(schedule)
        return schedule.check_level(self.start_level, "start_level")

    def resamples_at(self, t: int) -> bool:
        """Whether level t may resample (the window and a threshold above 0)."""
        if self.ess_threshold == 0.0:
            return False
        return self.resample_levels is None or self.resample_levels[0] <= t <= self.resample_levels[1]

    def to_dict(self) -> dict:
        return {"resampling": self.resampling, "ess_threshold": self.ess_threshold,
                "resample_levels": None if self.resample_levels is None else list(self.resample_levels),
                "increment": self.increment, "return_weighted": self.return_weighted,
                "start_level": self.start_level}

    def __repr__(self) -> str:
        parts = [f"{self.resampling!r}", f"ess_threshold={self.ess_threshold:g}"]
        if self.resample_levels is not None:
            parts.append(f"resample_levels={self.resample_levels}")
        if self.increment != "trapezoid":
            parts.append(f"increment={self.increment!r}")
        if self.return_weighted:
            parts.append("return_weighted=True")
        if self.start_level is not None:
            parts.append(f"start_level={self.start_level}")
        return f"SMC({', '.join(parts)})"


def _integer(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)
