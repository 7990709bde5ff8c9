"""Step-size search: find η_t = a · β_tᵇ whose acceptance rate lies in a band
(docs/kernels.md, section 7).

The paper tunes a and b of each sampler "by a small search". This module makes that search a
utility. For a target π_t and an MH-corrected kernel family (MALA, HMC), one *trial* is a short
annealed run (`compose.sample`) with few chains and few steps per level, at step sizes
`PowerLaw(a, b)`; its score is the mean over levels of the per-level acceptance rate. Every
trial starts from the same seed (common random numbers), so the acceptance is a smooth,
decreasing function of a, and a is found by bisection on log a:

    1. run a = a₀; if the acceptance is in the band [lo, hi], stop;
    2. while no bracket: a ← a · f if the acceptance > hi (steps too small),
                         a ← a / f if it is < lo (too large);
    3. bisect: a ← √(a_small · a_large) until the acceptance is in the band or the trials run out.

A run whose samples become non-finite counts as acceptance 0 (a too large). With several values
of b the search is repeated for each, and among the (a, b) whose mean acceptance is in the band
the one whose *levels* stray least from the band is kept: the smallest mean over levels of
dist(acceptance_t, [lo, hi]) (0 inside the band), ties broken by the smallest standard deviation
over levels. That is the b for which one power law fits the whole schedule best.

Default bands: MALA [0.55, 0.85] (around the optimal 0.574 of Roberts & Rosenthal 1998),
HMC [0.6, 0.9] (around 0.65–0.8, Beskos et al. 2013). Unadjusted kernels have no acceptance
to tune on; use the step of their adjusted counterpart.

    found = tune_step_size(target, lambda step: compose.MALA(step), num_chains=32)
    kernel = compose.MALA(found.step_size)           # PowerLaw(found.a, found.b)
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from .compiler import Target
from .kernels import HMC, MALA, RandomWalkMH
from .kernels.base import Kernel
from .sampler import sample
from .kernels.stepsize import PowerLaw

#: Acceptance bands by kernel class name.
BANDS = {"MALA": (0.55, 0.85), "HMC": (0.6, 0.9), "RandomWalkMH": (0.15, 0.5)}


@dataclass
class TuningTrial:
    """One short annealed run: its a, b, mean acceptance over levels, the acceptance at each
    level (from T down to 1) and the wall time."""

    a: float
    b: float
    acceptance: float
    per_level: List[float]
    seconds: float


@dataclass
class TuningResult:
    """The outcome of `tune_step_size`.

    Attributes:
        a, b: the chosen η_t = a · β_tᵇ.
        acceptance: mean over levels of the acceptance at (a, b).
        per_level: acceptance at each level, T down to 1, at (a, b).
        band: the target band (lo, hi).
        converged: whether the acceptance lies in the band.
        trials: every run of the search (all values of b), in order.
    """

    a: float
    b: float
    acceptance: float
    per_level: List[float]
    band: Tuple[float, float]
    converged: bool
    trials: List[TuningTrial] = field(default_factory=list)

    @property
    def step_size(self) -> PowerLaw:
        """`PowerLaw(a, b)`, ready for a kernel."""
        return PowerLaw(self.a, self.b)

    @property
    def seconds(self) -> float:
        return sum(t.seconds for t in self.trials)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "acceptance": self.acceptance,
                "per_level": self.per_level, "band": list(self.band),
                "converged": self.converged, "seconds": self.seconds,
                "trials": [{"a": t.a, "b": t.b, "acceptance": t.acceptance,
                            "seconds": t.seconds} for t in self.trials]}


def default_band(kernel: Kernel) -> Tuple[float, float]:
    """The acceptance band for a kernel's family (`BANDS`); ValueError for an unadjusted one."""
    if not getattr(kernel, "adjusted", False):
        raise ValueError(f"kernel: {kernel.name} is unadjusted (it accepts every move), so there "
                         "is no acceptance rate to tune on; tune its adjusted counterpart")
    for cls in (MALA, HMC, RandomWalkMH):
        if isinstance(kernel, cls):
            return BANDS[cls.__name__]
    raise ValueError(f"band: no default band for a {type(kernel).__name__}; pass band=(lo, hi)")


def acceptance_of(target: Target, kernel: Kernel, num_chains: int, steps_per_level: int = 1,
                  reverse_step: bool = True, seed: int = 0, device=None,
                  event_shape: Optional[Sequence[int]] = None,
                  dtype: torch.dtype = torch.float32) -> Tuple[float, List[float]]:
    """Mean over levels of the acceptance of one short annealed run, and the per-level rates.

    The run uses `torch.Generator(device).manual_seed(seed)`; non-finite samples give (0, []).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    generator = torch.Generator(device).manual_seed(int(seed))
    try:
        result = sample(target, kernel, num_chains, steps_per_level=steps_per_level,
                        reverse_step=reverse_step, generator=generator, device=device,
                        event_shape=event_shape, dtype=dtype, progress=False)
    except FloatingPointError:
        return 0.0, []
    rates = result.diagnostics.acceptance
    mean = result.diagnostics.mean_acceptance()
    return (0.0 if math.isnan(mean) else float(mean)), [float(r) for r in rates]


def tune_step_size(target: Target, make_kernel: Callable[[PowerLaw], Kernel], *,
                   band: Optional[Tuple[float, float]] = None,
                   b: Union[float, Sequence[float]] = 1.0, a: float = 1.0,
                   num_chains: int = 16, steps_per_level: int = 1, reverse_step: bool = True,
                   factor: float = 4.0, max_trials: int = 12, seed: int = 0, device=None,
                   event_shape: Optional[Sequence[int]] = None,
                   dtype: torch.dtype = torch.float32,
                   callback: Optional[Callable[[TuningTrial], None]] = None) -> TuningResult:
    """Find a (and, given several b's, b) of η_t = a · β_tᵇ with acceptance inside `band`.

    Args:
        target: the compiled composition to sample.
        make_kernel: step size (a `PowerLaw`) ↦ an adjusted kernel, e.g.
            ``lambda s: compose.HMC(s, num_leapfrog=3)``.
        band: (lo, hi) for the mean acceptance over levels; default by kernel family (`BANDS`).
        b: the exponent, or a sequence of exponents to choose from.
        a: the first a to try (> 0). factor: multiplier while bracketing (> 1).
        num_chains, steps_per_level, reverse_step: the short runs' settings.
        max_trials: most runs per value of b.
        seed: seed of every run (common random numbers).
        device, event_shape, dtype: passed to `compose.sample`.
        callback: called with each `TuningTrial` as it finishes.
    Returns:
        TuningResult; `converged` is False if no trial landed in the band (then a, b are those of
        the trial whose acceptance was closest to the band).
    """
    if not isinstance(target, Target):
        raise ValueError(f"target: expected a compiled Target, got {type(target).__name__}")
    probe = make_kernel(PowerLaw(1.0, 1.0))
    if not isinstance(probe, Kernel):
        raise ValueError(f"make_kernel: must return a compose kernel, got {type(probe).__name__}")
    band = tuple(float(v) for v in (band if band is not None else default_band(probe)))
    if not getattr(probe, "adjusted", False):
        default_band(probe)                                     # raises with the reason
    if len(band) != 2 or not 0.0 <= band[0] < band[1] <= 1.0:
        raise ValueError(f"band: expected (lo, hi) with 0 ≤ lo < hi ≤ 1, got {band!r}")
    if not (isinstance(a, numbers.Real) and math.isfinite(a) and a > 0):
        raise ValueError(f"a: must be finite and > 0, got {a!r}")
    if not (isinstance(factor, numbers.Real) and factor > 1):
        raise ValueError(f"factor: must be > 1, got {factor!r}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, numbers.Integral) or max_trials < 1:
        raise ValueError(f"max_trials: must be an integer ≥ 1, got {max_trials!r}")
    bs = [float(b)] if isinstance(b, numbers.Real) else [float(v) for v in b]
    if not bs:
        raise ValueError("b: need at least one exponent")

    def run(a_value: float, b_value: float) -> TuningTrial:
        start = time.perf_counter()
        acc, per_level = acceptance_of(target, make_kernel(PowerLaw(a_value, b_value)),
                                       num_chains, steps_per_level, reverse_step, seed, device,
                                       event_shape, dtype)
        trial = TuningTrial(a_value, b_value, acc, per_level, time.perf_counter() - start)
        if callback is not None:
            callback(trial)
        return trial

    results = [_search_a(run, band, b_value, float(a), float(factor), int(max_trials))
               for b_value in bs]
    converged = [r for r in results if r.converged]
    if converged:
        best = min(converged, key=lambda r: (_level_miss(r.per_level, band), _spread(r.per_level)))
    else:
        best = min(results, key=lambda r: _miss(r.acceptance, band))
    best.trials = [trial for r in results for trial in r.trials]      # the whole search
    return best


def _search_a(run, band, b, a, factor, max_trials) -> TuningResult:
    """Bracket, then bisect on log a, for one b."""
    lo, hi = band
    trials: List[TuningTrial] = []
    small = large = None          # largest a with acceptance > hi, smallest with < lo
    for _ in range(max_trials):
        trial = run(a, b)
        trials.append(trial)
        if lo <= trial.acceptance <= hi:
            return TuningResult(a, b, trial.acceptance, trial.per_level, band, True, trials)
        if trial.acceptance > hi:
            small = a if small is None else max(small, a)
        else:
            large = a if large is None else min(large, a)
        if small is not None and large is not None:
            a = math.sqrt(small * large)
        else:
            a = a * factor if large is None else a / factor
    best = min(trials, key=lambda t: _miss(t.acceptance, band))
    return TuningResult(best.a, b, best.acceptance, best.per_level, band, False, trials)


def _miss(acceptance: float, band: Tuple[float, float]) -> float:
    lo, hi = band
    return max(lo - acceptance, acceptance - hi, 0.0)


def _level_miss(per_level: List[float], band: Tuple[float, float]) -> float:
    """Mean over levels of the distance of each level's acceptance from the band."""
    values = [_miss(v, band) for v in per_level if not math.isnan(v)]
    return sum(values) / len(values) if values else math.inf


def _spread(per_level: List[float]) -> float:
    values = [v for v in per_level if not math.isnan(v)]
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
