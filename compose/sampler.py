"""The annealed sampler: MCMC at each level of the diffusion schedule (docs/sampler.md).

    x ~ N(0, I) at level T
    for t = T, …, 1:
        K kernel steps targeting π_t                       (skipped when K = 0 or no kernel)
        if reverse_step: ancestral step t → t − 1 with the composed score at π_t

With ``smc=compose.SMC(...)`` the chains are the particles of sequential Monte Carlo
(docs/smc.md): they start from N(0, I/Σw), each level first completes the Feynman–Kac weight of
the step that arrived there (from the scores evaluated anyway) and resamples where the ESS is
low, the K kernel steps then move the particles (resample-move), and every level ends with the
reverse step; a final resampling returns equally weighted samples.

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
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .compiler import Target
from .compiler.compilation import check_event_shape
from .compiler.plan import level_steps
from .devices import available_device as _available_device
from .kernels.base import ChainState, Kernel, check_generator, non_finite_error
from .progress import progress_bar, wants_progress
from .smc.options import SMC
from .smc.system import ParticleSystem, SMCLevelDiagnostics, SMCState, level_diagnostics
from .smc.weights import FeynmanKac


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


#: The quantiles of the per-chain acceptance rates that each level reports, by name.
ACCEPTANCE_QUANTILES = {"min": 0.0, "q10": 0.1, "median": 0.5, "q90": 0.9, "max": 1.0}


@dataclass
class LevelDiagnostics:
    """What happened at one level: acceptance rate, mean |Δ| over finite Δ's, divergences,
    evaluations per sample of each term, the (last) step size used and the wall time; and the
    spread of the per-chain acceptance rates (`ACCEPTANCE_QUANTILES` across the N chains).

    Acceptance is NaN where there is none: a level without kernel steps (the reverse process)
    and an unadjusted kernel (ULA, U-HMC), whose moves are never rejected. Text shows it as —.
    `smc`: the particle system's numbers at this level (`SMCLevelDiagnostics`) in an SMC run.
    """

    level: int
    step_size: float
    steps: int
    acceptance: float
    mean_abs_log_ratio: float
    divergences: int
    evaluations: Dict[str, float]
    seconds: float
    acceptance_quantiles: Dict[str, float] = field(default_factory=dict)
    smc: Optional[SMCLevelDiagnostics] = None
    #: Accepted moves of each chain at this level, shape (N,), left on the chains' device (no
    #: host read); None without an acceptance. Not a dataclass field, so asdict(), JSON and
    #: checkpoints hold numbers only; `Diagnostics.chain_acceptance()` reads them.
    chain_accepted: ClassVar[Optional[torch.Tensor]] = None


@dataclass(repr=False)
class Diagnostics:
    """Per-level diagnostics of one annealed run, from level T down to 1.

    ``print(diagnostics)`` is one short line; `table()` is the per-level table and `summary()`
    the run's totals with it; `chain_acceptance()` the per-chain acceptance rate at each level.
    `clipped` is the fraction of sample values outside the model's data range, set by whatever
    clips the samples into that range (decoding to images); None when nothing was clipped.
    """

    sampler: str
    num_samples: int
    levels: List[LevelDiagnostics] = field(default_factory=list)
    clipped: Optional[float] = None

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

    @property
    def smc(self) -> bool:
        """Whether this was an SMC run (`compose.SMC`)."""
        return any(d.smc is not None for d in self.levels)

    @property
    def log_normaliser(self) -> float:
        """log Ẑ: the SMC estimate of log ∫ π, π the product of the components' normalised
        densities raised to their weights (docs/smc.md); NaN for a run without SMC."""
        parts = [d.smc.log_normaliser_increment for d in self.levels if d.smc is not None]
        return math.fsum(parts) if parts else math.nan

    def ess(self) -> List[float]:
        """The effective sample size at each level before resampling (SMC runs; T first)."""
        return [d.smc.ess for d in self.levels if d.smc is not None]

    def smc_table(self, max_rows: Optional[int] = 20) -> str:
        """Per level of an SMC run: ESS before resampling, whether it resampled, the distinct
        ancestors and the log-normaliser increment."""
        header = ("level", "ESS", "resampled", "ancestors", "log Ẑ increment")
        rows = [(str(d.level), f"{d.smc.ess:.1f}", "yes" if d.smc.resampled else "no",
                 str(d.smc.ancestors), f"{d.smc.log_normaliser_increment:.4g}")
                for d in self.levels if d.smc is not None]
        return _format_table(header, rows, max_rows)

    def mean_acceptance(self) -> float:
        rates = [d.acceptance for d in self.levels if d.steps > 0 and not math.isnan(d.acceptance)]
        return sum(rates) / len(rates) if rates else math.nan

    def to_dict(self) -> dict:
        out = {"sampler": self.sampler, "num_samples": self.num_samples,
               "levels": [asdict(d) for d in self.levels]}
        if self.clipped is not None:
            out["clipped"] = self.clipped
        return out

    def chain_acceptance(self) -> torch.Tensor:
        """The acceptance rate of each chain at each level, shape (levels, N), float64 on the
        CPU, rows in the order of `levels` (T first): accepted moves / steps of that chain. A
        row is NaN where the level has no acceptance (no kernel steps, unadjusted kernel).
        Reads the per-chain counts the sampler kept on the chains' device (one host copy)."""
        rows = [torch.full((self.num_samples,), math.nan, dtype=torch.float64)
                if d.chain_accepted is None else d.chain_accepted.double().cpu() / d.steps
                for d in self.levels]
        return torch.stack(rows) if rows else torch.empty(0, self.num_samples, dtype=torch.float64)

    def __repr__(self) -> str:
        levels = len(self.levels)
        span = ("no levels" if not levels else f"level {self.levels[0].level}" if levels == 1
                else f"levels {self.levels[0].level}..{self.levels[-1].level}")
        steps = sum(d.steps for d in self.levels)
        clipped = "" if self.clipped is None else f", clipped {self.clipped:.2%}"
        return (f"Diagnostics({self.sampler}, {_count(self.num_samples, 'chain')}, {span}, "
                f"{_count(steps, 'step')}, "
                f"acceptance {format_rate(self.mean_acceptance())}, divergences "
                f"{self.divergences}, {_format_evaluations(self.evaluations_per_sample())} "
                f"evaluations/sample, {self.seconds:.2f} s{clipped})")

    def table(self, max_rows: Optional[int] = 20) -> str:
        """The per-level table: level, steps, step size, acceptance (mean, and the 10%, median
        and 90% quantiles across chains), mean |Δ|, divergences, evaluations per sample and
        seconds. With more than `max_rows` levels, the first and last halves are shown around
        a line saying how many were left out (None shows all). Acceptance — means none."""
        header = ("level", "steps", "step size", "accept", "q10", "median", "q90", "mean |Δ|",
                  "div.", "evals/sample", "seconds")
        return _format_table(header, [_table_row(d) for d in self.levels], max_rows)

    def summary(self, max_rows: Optional[int] = 20) -> str:
        """The run in a few lines (sampler, chains, acceptance with its spread over levels,
        divergences, evaluations per sample, time) followed by `table(max_rows)`."""
        rates = [d.acceptance for d in self.levels if not math.isnan(d.acceptance)]
        acceptance = (f"acceptance {format_rate(self.mean_acceptance())} (mean over levels; "
                      f"per level from {format_rate(min(rates))} to {format_rate(max(rates))})"
                      if rates else "acceptance — (no Metropolis-adjusted kernel steps)")
        evaluations = self.evaluations_per_sample()
        lines = [f"{self.sampler}: {_count(self.num_samples, 'chain')}, "
                 f"{_count(len(self.levels), 'level')}, "
                 f"{_count(sum(d.steps for d in self.levels), 'kernel step')} per chain",
                 acceptance,
                 f"divergences {self.divergences}"
                 + (f" (at {_count(sum(d.divergences > 0 for d in self.levels), 'level')})"
                    if self.divergences else ""),
                 "evaluations per sample: " + (", ".join(f"{k} {v:g}" for k, v in evaluations.items())
                                               or "none"),
                 f"time {self.seconds:.2f} s"]
        if self.clipped is not None:
            lines.append(f"clipped to the data range: {self.clipped:.2%} of values")
        if self.smc:
            levels = [d for d in self.levels if d.smc is not None]
            final = levels[-1].smc.final_ess
            lines.append(f"SMC: log Ẑ {self.log_normaliser:.4g}, resampled at "
                         f"{_count(sum(d.smc.resampled for d in levels), 'level')}, smallest ESS "
                         f"{min(d.smc.ess for d in levels):.1f} of {self.num_samples}"
                         + ("" if final is None else f", final ESS {final:.1f}"))
        out = lines + ["", self.table(max_rows)]
        if self.smc:
            out += ["", self.smc_table(max_rows)]
        return "\n".join(out)


def _format_table(header: tuple, rows: List[tuple], max_rows: Optional[int]) -> str:
    """Right-aligned columns; with more than `max_rows` rows, the first and last halves around
    a line saying how many were left out."""
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int)
                                 or max_rows < 2):
        raise ValueError(f"max_rows: must be an integer ≥ 2 or None, got {max_rows!r}")
    shown: List[Optional[tuple]] = list(rows)
    if max_rows is not None and len(rows) > max_rows:
        head = (max_rows + 1) // 2
        shown = rows[:head] + [None] + rows[len(rows) - (max_rows - head):]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header)]
    for row in shown:
        out.append(line(row) if row is not None else
                   f"  … {_count(len(rows) - max_rows, 'level')} not shown (table(max_rows=None) "
                   "shows all)")
    return "\n".join(out)


def format_rate(value: Optional[float], digits: int = 3) -> str:
    """An acceptance rate as text: '0.734', or '—' where there is none (NaN or None: no kernel
    steps, or an unadjusted kernel). The one convention of every table and log."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _format_evaluations(evaluations: Dict[str, float]) -> str:
    return f"{max(evaluations.values()):g}" if evaluations else "0"


def _table_row(d: LevelDiagnostics) -> tuple:
    q = d.acceptance_quantiles
    return (str(d.level), str(d.steps), "—" if math.isnan(d.step_size) else f"{d.step_size:.3g}",
            format_rate(d.acceptance), format_rate(q.get("q10")), format_rate(q.get("median")),
            format_rate(q.get("q90")),
            "—" if math.isnan(d.mean_abs_log_ratio) else f"{d.mean_abs_log_ratio:.3g}",
            str(d.divergences), _format_evaluations(d.evaluations), f"{d.seconds:.3f}")


@dataclass(repr=False)
class SampleResult:
    """Samples of shape (num_samples, *event_shape) and their `Diagnostics`; printed as one
    short line (shape, dtype, sampler, levels, mean acceptance), never the tensor."""

    samples: torch.Tensor
    diagnostics: Diagnostics
    #: With ``SMC(return_weighted=True)``: the particles' normalised log-weights, shape (N,)
    #: (float64, logsumexp 0); None otherwise (the samples are then equally weighted).
    log_weights: Optional[torch.Tensor] = None

    def __repr__(self) -> str:
        x, d = self.samples, self.diagnostics
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else "?"
        where = f"{str(x.dtype).replace('torch.', '')} on {x.device}" if isinstance(x, torch.Tensor) else ""
        smc = "" if not d.smc else f", log Ẑ {d.log_normaliser:.4g}"
        weighted = "" if self.log_weights is None else ", weighted"
        return (f"SampleResult(samples {shape} {where}{weighted}, {d.sampler}, "
                f"{_count(len(d.levels), 'level')}, "
                f"acceptance {format_rate(d.mean_acceptance())}, divergences {d.divergences}{smc})")


def sample(target: Target, kernel: Optional[Kernel], num_samples: int, steps_per_level=10,
           reverse_step: Optional[bool] = None, generator: Optional[torch.Generator] = None, *,
           initial: Optional[torch.Tensor] = None, event_shape: Optional[Sequence[int]] = None,
           device=None, dtype: torch.dtype = torch.float32, variance: Optional[str] = None,
           adaptation: Optional[Adaptation] = None, progress: Optional[bool] = None,
           callback: Optional[Callable[[dict], None]] = None,
           smc: Optional[SMC] = None) -> SampleResult:
    """Annealed MCMC along the schedule of `target`.

    Args:
        target: a compiled composition (`compose.compile`).
        kernel: ULA, MALA, HMC, RandomWalkMH, or None (reverse process only).
        num_samples: number of independent chains N.
        steps_per_level: K kernel steps at each level, or a sequence of T counts (entry t − 1
            for level t; a level with 0 steps is skipped), e.g. `compose.presets.end_loaded_steps`.
        reverse_step: take the ancestral step t → t − 1 after the kernel steps at t (default
            False; always taken with `smc`, which needs it).
        generator: the only source of randomness (on the device of the samples).
        initial: starting batch at level T (default x ~ N(0, I)).
        event_shape: shape of one sample, when no component declares it.
        variance: "small" (β̃_t) or "large" (β_t) reverse-step noise; default "small", and
            "large" with `smc` (the noise of the reverse SDE the weights are derived for).
        adaptation: keep each level's acceptance in a band during warm-up (`Adaptation`).
        progress: a tqdm bar over levels: True shows it, False hides it, None (default) shows
            it only when stderr is a terminal.
        callback: called after each level with {"level", "x", "diagnostics"}.
        smc: a `compose.SMC`: sequential Monte Carlo with Feynman–Kac weights (docs/smc.md); the
            kernel (or None, the weighted reverse process) moves the particles at each level.
    Returns:
        SampleResult(samples, diagnostics), with `log_weights` for ``SMC(return_weighted=True)``.
    """
    reverse_step, variance = _smc_defaults(smc, reverse_step, variance)
    counts = _check_arguments(target, kernel, steps_per_level, reverse_step, variance, adaptation,
                              generator)
    wants_progress(progress)
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ValueError(f"num_samples: must be an integer ≥ 1, got {num_samples!r}")

    start = None
    if smc is not None:
        if initial is not None:
            raise ValueError("initial: an SMC run starts its particles from N(0, I/Σw) itself; "
                             "pass initial=None (or use compose.anneal with smc_state)")
        start = smc.start(target.schedule)
        shape = _event_shape(target, event_shape)
        _check_dtype(dtype)
        x = FeynmanKac(target, shape).start(num_samples, generator, _device(device, generator), dtype)
    else:
        x = _initial_batch(target, num_samples, initial, event_shape, device, dtype, generator)
    name = _sampler_name(kernel, sum(counts), reverse_step) + (" + SMC" if smc is not None else "")
    diagnostics = Diagnostics(name, num_samples)
    levels = start if start is not None else target.schedule.T
    bar = progress_bar(levels, name, progress, unit="level")
    log_weights = None
    try:
        for step in anneal(target, kernel, x, steps_per_level, reverse_step, generator,
                           start=start, variance=variance, adaptation=adaptation, smc=smc):
            x = step.x
            diagnostics.levels.append(step.diagnostics)
            if callback is not None:
                callback({"level": step.level, "x": x, "diagnostics": step.diagnostics})
            bar.update(1)
            if smc is None:
                bar.set_postfix(acc=format_rate(step.diagnostics.acceptance, 2))
            else:
                bar.set_postfix(ess=f"{step.diagnostics.smc.ess:.0f}")
            if step.smc_state is not None and smc.return_weighted:
                log_weights = step.smc_state.log_weights
    finally:
        bar.close()
    return SampleResult(x, diagnostics, log_weights)


def _smc_defaults(smc, reverse_step, variance) -> Tuple[bool, str]:
    """reverse_step and variance after their defaults: with `smc`, the reverse step is taken
    (an explicit False is refused) and the variance is "large" unless given."""
    if smc is not None and not isinstance(smc, SMC):
        raise ValueError(f"smc: expected a compose.SMC(...) or None, got {type(smc).__name__}")
    if smc is not None:
        if reverse_step is not None and reverse_step is not True:
            raise ValueError("reverse_step: SMC ends every level with the reverse step (its weights "
                             f"are derived for it); leave reverse_step unset or True, got {reverse_step!r}")
        return True, "large" if variance is None else variance
    return reverse_step if reverse_step is not None else False, \
        "small" if variance is None else variance


@dataclass
class AnnealStep:
    """The state of an annealed run after level `level` (and its reverse step, if taken): the
    chains `x`, the step-size multiplier that adaptation carries into the next level, and the
    level's diagnostics."""

    level: int
    x: torch.Tensor
    multiplier: float
    diagnostics: LevelDiagnostics
    #: In an SMC run, the particle system after this level (weights, normaliser, the pending
    #: step), which `anneal(..., smc_state=)` continues from; None otherwise.
    smc_state: Optional[SMCState] = None


def anneal(target: Target, kernel: Optional[Kernel], x: torch.Tensor, steps_per_level=10,
           reverse_step: Optional[bool] = None, generator: Optional[torch.Generator] = None, *,
           start: Optional[int] = None, multiplier: float = 1.0, variance: Optional[str] = None,
           adaptation: Optional[Adaptation] = None, smc: Optional[SMC] = None,
           smc_state: Optional[SMCState] = None) -> Iterator[AnnealStep]:
    """The levels of `sample` one at a time: from chains `x` at level `start` (default T), run
    levels start, start − 1, …, 1, yielding an `AnnealStep` after each.

    Between levels the driver carries only x, the multiplier and the generator's state (a
    kernel's own state, such as HMC's momentum, is drawn afresh by `init` at each level). So a
    run stopped after the step of level t continues exactly, bit for bit, with
    ``anneal(..., step.x, start=t − 1, multiplier=step.multiplier)`` and the generator in the
    state it had then (`torch.Generator.get_state` / `set_state`).

    With `smc` the chains are particles (`compose.sample` draws them from N(0, I/Σw)); an SMC
    run also carries its `step.smc_state`, passed back as ``smc_state=`` to continue it (None:
    a fresh system with equal weights at `start`).
    """
    reverse_step, variance = _smc_defaults(smc, reverse_step, variance)
    if smc_state is not None and smc is None:
        raise ValueError("smc_state: continuing a particle system needs its smc=compose.SMC(...)")
    if smc_state is not None and not isinstance(smc_state, SMCState):
        raise ValueError(f"smc_state: expected the SMCState of an AnnealStep, got {type(smc_state).__name__}")
    _check_arguments(target, kernel, steps_per_level, reverse_step, variance, adaptation, generator)
    start = target.T if start is None else target.schedule.check_level(start, "start")
    target._check(x, start, "x")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a real floating-point tensor, got {x.dtype}")
    if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real) \
            or not math.isfinite(multiplier) or multiplier <= 0:
        raise ValueError(f"multiplier: must be a finite number > 0, got {multiplier!r}")
    system = None
    if smc is not None:
        system = ParticleSystem(target, smc, FeynmanKac(target, x.shape[1:]), generator)
        if smc_state is None:
            smc_state = SMCState.fresh(x.shape[0], system.fk, x.device)
        elif smc_state.log_weights.shape != (x.shape[0],):
            raise ValueError(f"smc_state: it holds {tuple(smc_state.log_weights.shape)} log-weights "
                             f"for {x.shape[0]} particles")
    return _levels(target, kernel, x, steps_per_level, reverse_step, generator, start,
                   float(multiplier), variance, adaptation, system, smc_state)


def _levels(target, kernel, x, steps_per_level, reverse_step, generator, start, multiplier,
            variance, adaptation, system=None, smc_state=None) -> Iterator[AnnealStep]:
    schedule = target.schedule
    step_sizes = kernel.step_sizes(target) if kernel is not None else None
    num_samples = x.shape[0]
    counts = level_steps(steps_per_level, target.T)
    for t in range(start, 0, -1):
        begin, before = time.perf_counter(), target.counter.snapshot()
        state, totals, step_size, smc_stats = ChainState(x), None, None, None
        steps = counts[t - 1] if kernel is not None else 0
        # In an SMC run every evaluation of the level also gives Σ w_i ‖s_i‖² (no extra call).
        with target.square_norms() if system is not None else nullcontext():
            if steps > 0:
                state = kernel.init(target, x, t, generator)
            if system is not None:
                if state.evaluation is None:       # reused by the first step, or the reverse step
                    state.evaluation = target.evaluate(state.x, t)
                smc_state, ancestors, smc_stats = system.arrive(smc_state, state.evaluation, t)
                state = _gather(state, ancestors)
            for k in range(steps):
                step_size = multiplier * step_sizes[t - 1]
                state, info = kernel.step(target, state, t, step_size, generator)
                totals = _accumulate(totals, info)
                if adaptation is not None and k < adaptation.warmup_steps:
                    multiplier = adaptation.update(multiplier, info.accepted.float().mean().item())
            x = state.x
            if reverse_step:
                evaluation = state.evaluation if state.evaluation is not None else target.evaluate(x, t)
                if system is not None:
                    smc_state = system.depart(smc_state, evaluation, t)
                x = schedule.reverse_step(x, evaluation.score, t, generator, variance)
                if system is not None and t == 1:
                    smc_state, x, final = system.finish(smc_state, x)
                    smc_stats.update(final)
        level = _level_diagnostics(t, step_size, steps, totals, x,
                                   before, target, num_samples, time.perf_counter() - begin,
                                   smc_stats)
        yield AnnealStep(t, x, multiplier, level, smc_state)


def _gather(state: ChainState, index: torch.Tensor) -> ChainState:
    """The chains `index` of the state (resampling's copies): position, evaluation, momentum."""
    return ChainState(state.x.index_select(0, index),
                      None if state.evaluation is None else state.evaluation.gather(index),
                      None if state.momentum is None else state.momentum.index_select(0, index))


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


def _check_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: must be a real floating-point torch.dtype (torch.float32, "
                         f"torch.float64, ...), got {dtype!r}")


def _event_shape(target, event_shape) -> Tuple[int, ...]:
    """The shape of one sample: the components' own, or `event_shape` (which must agree)."""
    if event_shape is not None:
        event_shape = check_event_shape(event_shape)
    shape = target.event_shape if target.event_shape is not None else event_shape
    if shape is None:
        raise ValueError("event_shape: no component declares its sample shape; pass event_shape=(…)")
    if event_shape is not None and tuple(event_shape) != tuple(shape):
        raise ValueError(f"event_shape: {tuple(event_shape)} differs from the components' {tuple(shape)}")
    return tuple(shape)


def _device(device, generator):
    """The chains' device: `device` (available, and the generator's), else the generator's."""
    if device is not None:
        device = _available_device(device)
        if generator is not None and device.type != generator.device.type:
            raise ValueError(f"generator: it lives on {generator.device}, but device={str(device)!r}; "
                             f"create it there, torch.Generator(device={device.type!r})")
    if device is None and generator is not None:
        device = generator.device
    return device


def _initial_batch(target, n, initial, event_shape, device, dtype, generator) -> torch.Tensor:
    """The chains at level T: `initial` (checked), or x ~ N(0, I) drawn with `generator`."""
    _check_dtype(dtype)
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
    shape = _event_shape(target, event_shape)
    device = _device(device, generator)
    return torch.randn((n,) + shape, generator=generator, device=device, dtype=dtype)


def _accumulate(totals, info):
    """The level's running totals, all on the chains' device: (the sums [accepted, divergent,
    Σ|Δ| over finite Δ, finite Δ's, moves], each chain's accepted moves, whether every step
    was adjusted)."""
    finite = torch.isfinite(info.log_ratio)
    step = torch.stack([info.accepted.sum().to(torch.float64), info.divergent.sum().to(torch.float64),
                        torch.where(finite, info.log_ratio.abs(), torch.zeros_like(info.log_ratio)).sum().double(),
                        finite.sum().to(torch.float64), torch.tensor(float(info.accepted.numel()),
                                                                     dtype=torch.float64, device=finite.device)])
    chains = info.accepted.to(torch.int32)
    if totals is None:
        return step, chains, info.adjusted
    return totals[0] + step, totals[1] + chains, totals[2] and info.adjusted


def _chain_quantiles(accepted: torch.Tensor, steps: int) -> torch.Tensor:
    """`ACCEPTANCE_QUANTILES` of the per-chain rates accepted / steps (linear interpolation, as
    torch.quantile, which refuses more than 2²⁴ chains), computed on the device."""
    rates = accepted.double().sort().values / steps
    n = rates.shape[0]
    out = []
    for q in ACCEPTANCE_QUANTILES.values():
        position = q * (n - 1)
        low = int(math.floor(position))
        high = min(low + 1, n - 1)
        out.append(rates[low] + (position - low) * (rates[high] - rates[low]))
    return torch.stack(out)


def _level_diagnostics(t, step_size, steps, totals, x, before, target, n, seconds,
                       smc_stats=None) -> LevelDiagnostics:
    # The one host synchronisation of the level: the step totals, the quantiles of the
    # per-chain acceptance, whether x stayed finite (the per-chain counts stay on the device),
    # and in an SMC run the particle system's numbers.
    all_finite = torch.isfinite(x).all().to(torch.float64).reshape(1)
    if totals is None:
        sums, chains, adjusted = torch.zeros(5, dtype=torch.float64, device=all_finite.device), None, False
    else:
        sums, chains, adjusted = totals
    quantiles = (_chain_quantiles(chains, steps) if adjusted and steps
                 else torch.zeros(0, dtype=torch.float64, device=all_finite.device))
    names = list(smc_stats) if smc_stats else []
    particles = [smc_stats[k].to(torch.float64).reshape(1) for k in names]
    values = torch.cat([sums, all_finite] + particles + [quantiles]).tolist()
    accepted, divergent, abs_delta, finite, moves, x_finite = values[:6]
    read = dict(zip(names, values[6:6 + len(names)]))
    spread = values[6 + len(names):]
    if not x_finite:
        raise non_finite_error(t)
    if read.get("zero") or read.get("final_zero"):
        raise FloatingPointError(
            f"level {t}: every particle's Feynman–Kac weight is zero (log-weights −inf or NaN): "
            "the weight increments were not finite; check the components' scores at this level, "
            "or resample more often (ess_threshold) and take more levels")
    after = target.counter.snapshot()
    evaluations = {k: (after.get(k, 0) - before.get(k, 0)) / n for k in after}
    level = LevelDiagnostics(
        level=t, step_size=step_size if step_size is not None else math.nan, steps=steps,
        acceptance=accepted / moves if moves and adjusted else math.nan,
        mean_abs_log_ratio=abs_delta / finite if finite and adjusted else math.nan,
        divergences=int(divergent), evaluations=evaluations, seconds=seconds,
        acceptance_quantiles=(dict(zip(ACCEPTANCE_QUANTILES, spread)) if spread
                              else {k: math.nan for k in ACCEPTANCE_QUANTILES}))
    if adjusted and steps:  # kept compact: a byte per chain and level while steps < 256
        level.chain_accepted = chains.to(torch.uint8) if steps < 256 else chains
    if smc_stats:
        level.smc = level_diagnostics(read)
    return level


def _sampler_name(kernel, steps, reverse_step) -> str:
    if kernel is None or steps == 0:
        return "Reverse"
    return kernel.name + (" + reverse" if reverse_step else "")
