"""The annealed sampler: MCMC at each level of the diffusion schedule (docs/sampler.md).

    x ~ N(0, I) at level T
    for t = T, …, 1:
        K kernel steps targeting π_t                       (skipped when K = 0 or no kernel)
        if reverse_step: ancestral step t → t − 1 with the composed score at π_t

With ``reverse_step=False`` (the paper's 2D experiment, as in R3) the result is the state at
level 1; with ``reverse_step=True`` (its image experiments) it is at level 0. A kernel of None
with ``reverse_step=True`` is the plain reverse process.

Diagnostics are accumulated in tensors during a level and read once at its end. With an
`Adaptation`, the first kernel steps of each level also read their acceptance rate (a host sync
during warm-up only) to keep it inside a band (docs/kernels.md, section 7).
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .compiler import Target
from .compiler.compilation import check_event_shape
from .compiler.plan import level_steps
from .devices import available_device as _available_device
from .kernels.base import ChainState, Kernel, check_generator, non_finite_error
from .progress import progress_bar, wants_progress


@dataclass(frozen=True)
class Adaptation:
    """Per-level step-size adaptation during warm-up (docs/kernels.md, section 7).

    After each of the first `warmup_steps` kernel steps of a level, the step size is divided by
    `factor` if that step's acceptance rate fell below ``band[0]`` and multiplied by it if above
    ``band[1]``. The step is η_t = m · (scheduled η_t); the multiplier m carries over to the
    next level, whose scheduled size is usually close. Adjusted kernels only.
    """

    band: Tuple[float, float] = (0.6, 0.9)
    warmup_steps: int = 3
    factor: float = 1.5

    def __post_init__(self):
        low, high = self.band
        if not 0.0 < low < high < 1.0:
            raise ValueError(f"band: need 0 < low < high < 1, got {self.band!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, numbers.Integral) \
                or self.warmup_steps < 1:
            raise ValueError(f"warmup_steps: must be an integer ≥ 1, got {self.warmup_steps!r}")
        if not (isinstance(self.factor, numbers.Real) and math.isfinite(self.factor) and self.factor > 1.0):
            raise ValueError(f"factor: must be a finite number > 1, got {self.factor!r}")

    def update(self, multiplier: float, acceptance: float) -> float:
        """The new multiplier after a warm-up step with the given acceptance rate."""
        if acceptance < self.band[0]:
            return multiplier / self.factor
        if acceptance > self.band[1]:
            return multiplier * self.factor
        return multiplier


@dataclass
class LevelDiagnostics:
    """What happened at one level: acceptance rate, mean |Δ| over finite Δ's, divergences,
    evaluations per sample of each term, the (last) step size used and the wall time."""

    level: int
    step_size: float
    steps: int
    acceptance: float
    mean_abs_log_ratio: float
    divergences: int
    evaluations: Dict[str, float]
    seconds: float


@dataclass
class Diagnostics:
    """Per-level diagnostics of one annealed run, from level T down to 1."""

    sampler: str
    num_samples: int
    levels: List[LevelDiagnostics] = field(default_factory=list)

    @property
    def acceptance(self) -> List[float]:
        return [d.acceptance for d in self.levels]

    @property
    def divergences(self) -> int:
        return sum(d.divergences for d in self.levels)

    @property
    def seconds(self) -> float:
        return sum(d.seconds for d in self.levels)

    def evaluations_per_sample(self) -> Dict[str, float]:
        """Evaluations of each term per sample over the whole run."""
        out: Dict[str, float] = {}
        for d in self.levels:
            for label, count in d.evaluations.items():
                out[label] = out.get(label, 0.0) + count
        return out

    def mean_acceptance(self) -> float:
        rates = [d.acceptance for d in self.levels if d.steps > 0 and not math.isnan(d.acceptance)]
        return sum(rates) / len(rates) if rates else math.nan

    def to_dict(self) -> dict:
        return {"sampler": self.sampler, "num_samples": self.num_samples,
                "levels": [asdict(d) for d in self.levels]}


@dataclass
class SampleResult:
    """Samples of shape (num_samples, *event_shape) and their `Diagnostics`."""

    samples: torch.Tensor
    diagnostics: Diagnostics


def sample(target: Target, kernel: Optional[Kernel], num_samples: int, steps_per_level=10,
           reverse_step: bool = False, generator: Optional[torch.Generator] = None, *,
           initial: Optional[torch.Tensor] = None, event_shape: Optional[Sequence[int]] = None,
           device=None, dtype: torch.dtype = torch.float32, variance: str = "small",
           adaptation: Optional[Adaptation] = None, progress: Optional[bool] = None,
           callback: Optional[Callable[[dict], None]] = None) -> SampleResult:
    """Annealed MCMC along the schedule of `target`.

    Args:
        target: a compiled composition (`compose.compile`).
        kernel: ULA, MALA, HMC, RandomWalkMH, or None (reverse process only).
        num_samples: number of independent chains N.
        steps_per_level: K kernel steps at each level, or a sequence of T counts (entry t − 1
            for level t; a level with 0 steps is skipped), e.g. `compose.presets.end_loaded_steps`.
        reverse_step: take the ancestral step t → t − 1 after the kernel steps at t.
        generator: the only source of randomness (on the device of the samples).
        initial: starting batch at level T (default x ~ N(0, I)).
        event_shape: shape of one sample, when no component declares it.
        variance: "small" (β̃_t) or "large" (β_t) reverse-step noise.
        adaptation: keep each level's acceptance in a band during warm-up (`Adaptation`).
        progress: a tqdm bar over levels: True shows it, False hides it, None (default) shows
            it only when stderr is a terminal.
        callback: called after each level with {"level", "x", "diagnostics"}.
    Returns:
        SampleResult(samples, diagnostics).
    """
    counts = _check_arguments(target, kernel, steps_per_level, reverse_step, variance, adaptation,
                              generator)
    wants_progress(progress)
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ValueError(f"num_samples: must be an integer ≥ 1, got {num_samples!r}")

    x = _initial_batch(target, num_samples, initial, event_shape, device, dtype, generator)
    name = _sampler_name(kernel, sum(counts), reverse_step)
    diagnostics = Diagnostics(name, num_samples)
    bar = progress_bar(target.schedule.T, name, progress, unit="level")
    try:
        for step in anneal(target, kernel, x, steps_per_level, reverse_step, generator,
                           variance=variance, adaptation=adaptation):
            x = step.x
            diagnostics.levels.append(step.diagnostics)
            if callback is not None:
                callback({"level": step.level, "x": x, "diagnostics": step.diagnostics})
            bar.update(1)
            bar.set_postfix(acc=f"{step.diagnostics.acceptance:.2f}")
    finally:
        bar.close()
    return SampleResult(x, diagnostics)


@dataclass
class AnnealStep:
    """The state of an annealed run after level `level` (and its reverse step, if taken): the
    chains `x`, the step-size multiplier that adaptation carries into the next level, and the
    level's diagnostics."""

    level: int
    x: torch.Tensor
    multiplier: float
    diagnostics: LevelDiagnostics


def anneal(target: Target, kernel: Optional[Kernel], x: torch.Tensor, steps_per_level=10,
           reverse_step: bool = False, generator: Optional[torch.Generator] = None, *,
           start: Optional[int] = None, multiplier: float = 1.0, variance: str = "small",
           adaptation: Optional[Adaptation] = None) -> Iterator[AnnealStep]:
    """The levels of `sample` one at a time: from chains `x` at level `start` (default T), run
    levels start, start − 1, …, 1, yielding an `AnnealStep` after each.

    Between levels the driver carries only x, the multiplier and the generator's state (a
    kernel's own state, such as HMC's momentum, is drawn afresh by `init` at each level). So a
    run stopped after the step of level t continues exactly, bit for bit, with
    ``anneal(..., step.x, start=t − 1, multiplier=step.multiplier)`` and the generator in the
    state it had then (`torch.Generator.get_state` / `set_state`).
    """
    _check_arguments(target, kernel, steps_per_level, reverse_step, variance, adaptation, generator)
    start = target.T if start is None else target.schedule.check_level(start, "start")
    target._check(x, start, "x")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a real floating-point tensor, got {x.dtype}")
    if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real) \
            or not math.isfinite(multiplier) or multiplier <= 0:
        raise ValueError(f"multiplier: must be a finite number > 0, got {multiplier!r}")
    return _levels(target, kernel, x, steps_per_level, reverse_step, generator, start,
                   float(multiplier), variance, adaptation)


def _levels(target, kernel, x, steps_per_level, reverse_step, generator, start, multiplier,
            variance, adaptation) -> Iterator[AnnealStep]:
    schedule = target.schedule
    step_sizes = kernel.step_sizes(target) if kernel is not None else None
    num_samples = x.shape[0]
    counts = level_steps(steps_per_level, target.T)
    for t in range(start, 0, -1):
        begin, before = time.perf_counter(), target.counter.snapshot()
        state, totals, step_size = ChainState(x), None, None
        steps = counts[t - 1] if kernel is not None else 0
        if steps > 0:
            state = kernel.init(target, x, t, generator)
            for k in range(steps):
                step_size = multiplier * step_sizes[t - 1]
                state, info = kernel.step(target, state, t, step_size, generator)
                totals = _accumulate(totals, info)
                if adaptation is not None and k < adaptation.warmup_steps:
                    multiplier = adaptation.update(multiplier, info.accepted.float().mean().item())
        x = state.x
        if reverse_step:
            score = state.evaluation.score if state.evaluation is not None else target.score(x, t)
            x = schedule.reverse_step(x, score, t, generator, variance)
        level = _level_diagnostics(t, step_size, steps, totals, x,
                                   before, target, num_samples, time.perf_counter() - begin)
        yield AnnealStep(t, x, multiplier, level)


def _check_arguments(target, kernel, steps_per_level, reverse_step, variance, adaptation,
                     generator) -> List[int]:
    """Validate the run's arguments; return the step count of each level (index t − 1)."""
    if not isinstance(target, Target):
        raise ValueError(f"target: expected a compiled Target (compose.compile), got {type(target).__name__}")
    if kernel is not None and not isinstance(kernel, Kernel):
        raise ValueError(f"kernel: expected a compose kernel or None, got {type(kernel).__name__}")
    counts = level_steps(steps_per_level, target.T)
    if variance not in ("small", "large"):
        raise ValueError(f"variance: must be 'small' or 'large', got {variance!r}")
    if (kernel is None or not any(counts)) and not reverse_step:
        raise ValueError("kernel: with no kernel steps, reverse_step=True is needed (otherwise nothing moves)")
    if adaptation is not None and (kernel is None or not kernel.adjusted):
        raise ValueError("adaptation: step-size adaptation needs an adjusted kernel (MALA, HMC, RandomWalkMH)")
    check_generator(generator)
    if kernel is not None and any(counts):
        kernel.check_target(target)
    return counts


def _initial_batch(target, n, initial, event_shape, device, dtype, generator) -> torch.Tensor:
    """The chains at level T: `initial` (checked), or x ~ N(0, I) drawn with `generator`."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: must be a real floating-point torch.dtype (torch.float32, "
                         f"torch.float64, ...), got {dtype!r}")
    if initial is not None:
        if not isinstance(initial, torch.Tensor) or initial.dim() < 1 or initial.shape[0] != n:
            raise ValueError(f"initial: expected a tensor with {n} rows, got "
                             f"{tuple(initial.shape) if isinstance(initial, torch.Tensor) else initial!r:.60}")
        if not initial.is_floating_point():
            raise ValueError(f"initial: expected a real floating-point tensor, got {initial.dtype}")
        target._check(initial, target.T, "initial")
        if generator is not None and generator.device.type != initial.device.type:
            raise ValueError(f"generator: it lives on {generator.device}, but initial is on "
                             f"{initial.device}; create it on the chains' device, "
                             f"torch.Generator(device={initial.device.type!r})")
        if not initial.is_meta and not bool(torch.isfinite(initial).all()):
            raise ValueError("initial: the starting batch has non-finite entries")
        return initial
    if event_shape is not None:
        event_shape = check_event_shape(event_shape)
    shape = target.event_shape if target.event_shape is not None else event_shape
    if shape is None:
        raise ValueError("event_shape: no component declares its sample shape; pass event_shape=(…)")
    if event_shape is not None and tuple(event_shape) != tuple(shape):
        raise ValueError(f"event_shape: {tuple(event_shape)} differs from the components' {tuple(shape)}")
    if device is not None:
        device = _available_device(device)
        if generator is not None and device.type != generator.device.type:
            raise ValueError(f"generator: it lives on {generator.device}, but device={str(device)!r}; "
                             f"create it there, torch.Generator(device={device.type!r})")
    if device is None and generator is not None:
        device = generator.device
    return torch.randn((n,) + tuple(shape), generator=generator, device=device, dtype=dtype)


def _accumulate(totals, info):
    finite = torch.isfinite(info.log_ratio)
    step = torch.stack([info.accepted.sum().to(torch.float64), info.divergent.sum().to(torch.float64),
                        torch.where(finite, info.log_ratio.abs(), torch.zeros_like(info.log_ratio)).sum().double(),
                        finite.sum().to(torch.float64), torch.tensor(float(info.accepted.numel()),
                                                                     dtype=torch.float64, device=finite.device)])
    return step if totals is None else totals + step


def _level_diagnostics(t, step_size, steps, totals, x, before, target, n, seconds) -> LevelDiagnostics:
    # The one host synchronisation of the level: the step totals and whether x stayed finite.
    all_finite = torch.isfinite(x).all().to(torch.float64).reshape(1)
    if totals is None:
        totals = torch.zeros(5, dtype=torch.float64, device=all_finite.device)
    accepted, divergent, abs_delta, finite, moves, x_finite = torch.cat([totals, all_finite]).tolist()
    if not x_finite:
        raise non_finite_error(t)
    after = target.counter.snapshot()
    evaluations = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in after}
    return LevelDiagnostics(
        level=t, step_size=step_size if step_size is not None else math.nan, steps=steps,
        acceptance=accepted / moves if moves else math.nan,
        mean_abs_log_ratio=abs_delta / finite if finite else math.nan,
        divergences=int(divergent), evaluations=evaluations, seconds=seconds)


def _sampler_name(kernel, steps, reverse_step) -> str:
    if kernel is None or steps == 0:
        return "Reverse"
    return kernel.name + (" + reverse" if reverse_step else "")
