"""The compiled sampler plan: what is evaluated, how, and how often.

`Plan.from_target(target)` lists each term of the composition with its effective weight and
how its share of Δ is obtained (exact energy, analytic, classifier, mixture, or line/curve
integration with n points by the trapezoid or Gauss–Lobatto rule). `target.plan_for(kernel, K, N, reverse_step)` adds, for one kernel
and run, the evaluations per chain of each term (per MCMC step, per level, per sample) and the
batch shape of every call the term's network receives. `str(plan)` is a readable tree,
`plan.to_dict()` the same as JSON-serialisable data.

Counting (what `compose.sample` does; docs/sampler.md):

    per level   init + K · (1 or L) + reverse     point evaluations of every term
                K · extra                         integration points of each score-only term

where init is 1 for kernels that evaluate the starting point of a level (MALA, HMC, RWMH),
reverse is 1 when the ancestral step has no score at hand (ULA, or no kernel), and extra is n
(LA-n-line, HMC-n-line) or m · L (HMC-curve with m points per segment). Point evaluations are
one call of N rows; all integration points of a step are one call of extra · N rows. Score-only
terms split every call into chunks of at most `chunk_rows` rows; exact terms are never split.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

from ..expr import format_number
from .terms import MixtureDensity

_KIND_TEXT = {
    "score": "score model",
    "analytic": "analytic",
    "energy": "energy model",
    "classifier": "classifier",
    "mixture": "mixture",
}

_EXACT_TEXT = {
    "analytic": "exact, difference of analytic log-densities",
    "energy": "exact, energy difference",
    "classifier": "exact, difference of classifier log-probabilities",
    "mixture": "exact, difference of logsumexp over the branches",
}


@dataclass
class PlanCall:
    """Calls of one batch shape that a term's network receives: how many per MCMC step and
    per level (the level count includes the start of the level and the reverse step; None when
    the number of steps differs between levels)."""

    what: str
    shape: Tuple
    per_step: int
    per_level: Optional[int]


@dataclass
class PlanTerm:
    """One evaluated term: label, effective weight, kind, how its Δ is obtained; with a kernel
    also its evaluations per chain (per MCMC step, per level, per sample) and its calls."""

    label: str
    weight: float
    kind: str
    delta: str
    branches: List["PlanTerm"] = field(default_factory=list)
    per_step: Optional[int] = None
    per_level: Optional[int] = None
    per_sample: Optional[int] = None
    calls: List[PlanCall] = field(default_factory=list)
    window: Optional[str] = None
    shared_with: Optional[str] = None
    network: Optional[str] = None


#: From this many levels on, a plan with MCMC steps suggests respacing (``levels=``).
MANY_LEVELS = 200


@dataclass
class Plan:
    """The plan of a compiled target, optionally for one kernel and run.

    With a kernel, `totals` counts two different things, as its keys say:

    - ``per_step``, ``per_level``, ``per_sample``: network evaluations of ONE chain (every
      term), per MCMC step, per level and over the whole run (a chain gives one sample);
    - ``calls_per_step``, ``calls_per_level``, ``calls_per_run``: network calls of the WHOLE
      RUN, each call evaluating a batch of chains (N rows, or chunks of `chunk_rows`), so
      ``calls_per_run`` stays the same for more chains (until `chunk_rows` splits calls)
      while the evaluations of all chains, ``N · per_sample``, grow with N.
    """

    expression: str
    schedule: str
    T: int
    event_shape: Optional[Tuple[int, ...]]
    path: str
    points: int
    chunk_rows: Optional[int]
    terms: List[PlanTerm]
    kernel: Optional[dict] = None
    totals: Optional[dict] = None
    rule: str = "trapezoid"
    network_levels: Optional[List[int]] = None
    training_T: Optional[int] = None
    #: With `compose.SMC`: its options and the level the particles start at.
    smc: Optional[dict] = None

    @classmethod
    def from_target(cls, target) -> "Plan":
        """Terms, weights and Δ methods of `target`, without evaluation counts."""
        terms = [_plan_term(term, target.path, target.points, target.rule) for term in target.terms]
        shape = tuple(target.event_shape) if target.event_shape is not None else None
        plan = cls(str(target.expr), target.schedule.name, target.T, shape, target.path,
                   target.points, target.chunk_rows, terms, rule=target.rule)
        if target.schedule.is_respaced:
            plan.network_levels = target.schedule.network_levels.tolist()
            plan.training_T = target.schedule.training.T
        return plan

    @classmethod
    def for_kernel(cls, target, kernel, steps_per_level, num_samples: int,
                   reverse_step: bool = False, device="cpu", smc=None) -> "Plan":
        """The plan with evaluation counts for `kernel` (None: the reverse process) at
        K = `steps_per_level` steps per level (or one count per level, see `level_steps`) on
        N = `num_samples` chains, on `device` (which decides how integration points are
        batched when `chunk_rows` is None). With counts that differ between levels the
        per-level figures are None and the per-sample ones sum over the levels. With `smc` (a
        `compose.SMC`) every level ends with the reverse step, the weights cost no evaluation,
        and only the levels from the SMC start down are counted."""
        counts = level_steps(steps_per_level, target.T)
        if smc is not None:
            start = smc.start(target.schedule)
            plan = cls._for_varying_steps(target, kernel, counts, num_samples, True, device,
                                          levels=start)
            plan.smc = dict(smc.to_dict(), start=start)
            return plan
        if len(set(counts)) > 1:
            return cls._for_varying_steps(target, kernel, counts, num_samples, reverse_step, device)
        K, N, T = counts[0], int(num_samples), target.T
        if K < 0 or N < 1:
            raise ValueError(f"steps_per_level must be ≥ 0 and num_samples ≥ 1, got {K} and {N}")
        runs_kernel = kernel is not None and K > 0
        if not runs_kernel and not reverse_step:
            raise ValueError("kernel: with no kernel steps, reverse_step=True is needed")
        if runs_kernel:
            kernel.check_target(target)
            points_per_step, extra = kernel.evaluations_per_step(target)
            init = int(kernel.evaluates_at_init)
            name, adjusted = kernel.name, bool(kernel.adjusted)
        else:
            points_per_step, extra, init, name, adjusted = 0, 0, 0, "Reverse", False
        if not adjusted:
            extra = 0
        # The reverse step reuses the score of the kernel's last state when the state keeps one.
        reverse = int(bool(reverse_step) and not (runs_kernel and kernel.evaluates_at_init))
        points_per_level = init + K * points_per_step + reverse

        path = _kernel_path(target, kernel) if runs_kernel else target.path
        plan = cls.from_target(target)
        plan.path = path
        for term, plan_term in zip(target.terms, plan.terms):
            plan_term.delta = _delta_text(term, path, target.points, target.rule)
        canvas = tuple(target.event_shape) if target.event_shape is not None else ("...",)
        chunk = target.chunk_rows
        per_step_total = per_level_total = calls_step = calls_level = 0
        # Windows of one network and condition share a call (crops stacked along the batch), and
        # so do the conditions of a network that stacks them: the first term of a call shows
        # it, the others point to it.
        stacked = {id(term): (call, i) for call in target.exact_calls + target.implicit_calls
                   for i, term in enumerate(call.terms)}
        for source_term, term in _leaf_pairs(target.terms, plan.terms):
            score_only = term.kind == "score"
            call, position = stacked.get(id(source_term), (None, 0))
            k = len(call.terms) if call is not None else 1
            split = target.chains_per_call(k, chunk) if score_only and chunk else None
            shape = canvas if source_term.window is None else \
                tuple(b - a for a, b in source_term.window)
            what = "" if k == 1 else (
                f", {k} conditions stacked" if call.stacked_conditions and not call.windowed
                else f", {k} windows stacked" if not call.stacked_conditions
                else f", {k} (window, condition) crops stacked")
            term.per_step = points_per_step
            term.per_level = points_per_level
            if position == 0:
                term.calls = [PlanCall("chain points" + what, (rows * k,) + shape,
                                       points_per_step * count, points_per_level * count)
                              for rows, count in _chunks(N, split)]
            else:
                term.shared_with = call.terms[0].label
            if score_only and extra and K:
                interior = target.interior_rows_per_call(N, device)
                interior = target.chains_per_call(k, interior) if interior else None
                if position == 0:
                    term.calls += [PlanCall("integration points" + what, (rows * k,) + shape,
                                            count, K * count)
                                   for rows, count in _chunks(extra * N, interior)]
                term.per_step += extra
                term.per_level += K * extra
            term.per_sample = T * term.per_level
            per_step_total += term.per_step
            per_level_total += term.per_level
            calls_step += sum(c.per_step for c in term.calls)
            calls_level += sum(c.per_level for c in term.calls)
        plan.kernel = {"name": name, "adjusted": adjusted, "steps_per_level": K,
                       "num_samples": N, "reverse_step": bool(reverse_step)}
        if runs_kernel and getattr(kernel, "num_leapfrog", None) is not None:
            plan.kernel["num_leapfrog"] = kernel.num_leapfrog
        plan.totals = {"per_step": per_step_total, "per_level": per_level_total,
                       "per_sample": T * per_level_total, "calls_per_step": calls_step,
                       "calls_per_level": calls_level, "calls_per_run": T * calls_level}
        return plan

    @classmethod
    def _for_varying_steps(cls, target, kernel, counts, num_samples, reverse_step, device,
                           levels: Optional[int] = None) -> "Plan":
        """Per-sample counts summed over the levels from the plans of each distinct K (over
        levels 1..`levels` only, when given: an SMC run that starts below T)."""
        if levels is not None:
            counts = list(counts[:levels])
            if len(set(counts)) == 1 and levels == target.T:
                return cls.for_kernel(target, kernel, counts[0], num_samples, reverse_step, device)
        elif kernel is None or not any(counts):
            return cls.for_kernel(target, kernel, 0, num_samples, reverse_step, device)
        by_k = {k: cls.for_kernel(target, kernel, k, num_samples, reverse_step, device)
                for k in set(counts) if k > 0 or reverse_step}
        plan = by_k[max(counts)]
        if levels is not None and len(set(counts)) == 1:   # one K on fewer levels than T
            for term in _leaf_terms(plan.terms):
                term.per_sample = levels * term.per_level
            plan.totals["per_sample"] = levels * plan.totals["per_level"]
            plan.totals["calls_per_run"] = levels * plan.totals["calls_per_level"]
            return plan
        per_sample = [0] * len(_leaf_terms(plan.terms))
        for k in counts:
            if k in by_k:
                for i, term in enumerate(_leaf_terms(by_k[k].terms)):
                    per_sample[i] += term.per_level
        for term, total in zip(_leaf_terms(plan.terms), per_sample):
            term.per_level, term.per_sample = None, total
            for call in term.calls:
                call.per_level = None
        plan.kernel["steps_per_level"] = list(counts)
        plan.totals = {"per_step": plan.totals["per_step"], "per_level": None,
                       "per_sample": sum(per_sample), "calls_per_step": plan.totals["calls_per_step"],
                       "calls_per_level": None,
                       "calls_per_run": sum(by_k[k].totals["calls_per_level"] for k in counts if k in by_k)}
        return plan

    def to_dict(self) -> dict:
        """The plan as plain data (JSON-serialisable; tuples become lists in JSON)."""
        return asdict(self)

    def __str__(self) -> str:
        shape = "unknown" if self.event_shape is None else str(self.event_shape)
        lines = [f"plan for {self.expression}",
                 f"  schedule {self.schedule}, T = {_count(self.T, 'level')}, event shape {shape}"]
        if self.network_levels is not None:
            lines.append(f"  respaced: level i calls the networks at training levels "
                         f"{_level_list(self.network_levels)} of {self.training_T}")
        if self.kernel:
            k, t = self.kernel, self.totals
            if k["name"] == "Reverse":
                run = "reverse process only"
            elif isinstance(k["steps_per_level"], list):
                steps = k["steps_per_level"]
                run = (f"{_count(sum(steps), 'step')} over the levels, {steps[-1]} at level "
                       f"{len(steps)} … {steps[0]} at level 1")
            else:
                run = f"{_count(k['steps_per_level'], 'step')} per level"
                if "num_leapfrog" in k:
                    run += f" of {_count(k['num_leapfrog'], 'leapfrog step')}"
                run += ", reverse step after each level" if k["reverse_step"] else ", no reverse step"
            lines.append(f"  sampler {k['name']}: {run}, {_count(k['num_samples'], 'chain')}")
            if not k["adjusted"]:
                lines.append(f"  Δ is never computed: {k['name']} has no accept/reject step")
            lines.append(f"  network evaluations per chain, all terms: {_per(t, k)}")
            calls = {key: t["calls_" + key] for key in ("per_step", "per_level", "per_run")}
            stacked = any(term.shared_with for term in _plan_leaves(self.terms))
            lines.append(f"  network calls of the whole run (each on a batch of chains"
                         f"{'; stacked terms share one' if stacked else ''}): {_per(calls, k, 'in all')}")
            if self.T >= MANY_LEVELS and k["name"] != "Reverse":
                lines.append(f"  note: {self.T} levels with MCMC steps cost {t['per_sample']:,} "
                             f"network evaluations per sample; sample on fewer levels with "
                             f"levels= (compose.compile(..., levels=50), --levels 50), which "
                             f"respaces the schedule")
        if self.smc is not None:
            smc, start = self.smc, self.smc["start"]
            levels = (f"levels {start}..1" + ("" if start == self.T else
                      f" (levels {self.T}..{start + 1} take steps too large for the weights and are "
                      "not run)"))
            lines.append(f"  SMC: {smc['resampling']} resampling where ESS < "
                         f"{smc['ess_threshold']:g} · N, {smc['increment']} weight increments, "
                         f"particles from N(0, I/Σw) on {levels}; the Feynman–Kac weights come "
                         "from the scores already evaluated: no extra network evaluations")
        if self.chunk_rows is not None:
            lines.append(f"  score-only calls split into chunks of at most {self.chunk_rows} rows")
        for i, term in enumerate(self.terms):
            lines.extend(_term_lines(term, "  ", i == len(self.terms) - 1, self.kernel))
        return "\n".join(lines)


def _level_list(levels: List[int]) -> str:
    if len(levels) <= 8:
        return ", ".join(str(t) for t in levels)
    return ", ".join(str(t) for t in levels[:3]) + f", …, {levels[-1]}"


def _plan_leaves(terms: List[PlanTerm]) -> List[PlanTerm]:
    out = []
    for term in terms:
        out.extend(_plan_leaves(term.branches) if term.branches else [term])
    return out


def _count(n: int, noun: str) -> str:
    """'1 step', '2 steps'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _per(counts, kernel, whole: str = "per sample") -> str:
    """'a per MCMC step, b per level, c per sample' (the whole run's figure named `whole`)."""
    total = counts.get("per_sample", counts.get("per_run"))
    if kernel["name"] == "Reverse":
        return f"{counts['per_level']} per level, {total} {whole}"
    if counts["per_level"] is None:
        return f"{counts['per_step']} per MCMC step, {total} {whole}"
    return (f"{counts['per_step']} per MCMC step, {counts['per_level']} per level, "
            f"{total} {whole}")


def _kernel_path(target, kernel) -> str:
    """The path the kernel integrates Δ along (it says so itself: only HMC has a curve)."""
    return kernel.integration_path(target)


def _rule_text(rule: str, points: int) -> str:
    if rule == "trapezoid":
        return "trapezoid rule"
    return "Gauss–Lobatto rule" + ("" if points else " (no interior points: the trapezoid)")


def _delta_text(term, path: str, points: int, rule: str = "trapezoid") -> str:
    if term.exact:
        return _EXACT_TEXT[term.method]
    if path == "line":
        return (f"line integral x → x', {_rule_text(rule, points)}, {_points(points, 'interior')}, "
                "end-point scores reused")
    return (f"integral along the leapfrog path, {_rule_text(rule, points)}, {_points(points, 'extra')} per "
            "segment, leapfrog scores reused")


def _points(n: int, what: str) -> str:
    return f"{n} {what} point" + ("" if n == 1 else "s")


def _plan_term(term, path: str, points: int, rule: str = "trapezoid") -> PlanTerm:
    if isinstance(term.source, MixtureDensity):
        branches = [_plan_term(t, path, points, rule) for branch in term.source.branches for t in branch]
        return PlanTerm(term.label, term.weight, "mixture", _EXACT_TEXT["mixture"], branches)
    kind = "score" if not term.exact else term.method
    window = None if term.window is None else "[" + ", ".join(f"{a}:{b}" for a, b in term.window) + "]"
    return PlanTerm(term.label, term.weight, kind, _delta_text(term, path, points, rule),
                    window=window, network=_network_text(term.source))


def _network_text(component) -> Optional[str]:
    """How the component's network is called and what it predicts (`network_call`), when that
    is not the plain ``net(x, t)`` of an ε-prediction or classifier; None otherwise."""
    describe = getattr(component, "network_call", None)
    return describe() if describe is not None else None


def level_steps(steps_per_level, T: int) -> List[int]:
    """MCMC steps at levels 1..T (index t − 1) from one count K ≥ 0 for every level, or a
    sequence of T counts ≥ 0 (entry t − 1 for level t, as for per-level step sizes)."""
    if isinstance(steps_per_level, numbers.Integral) and not isinstance(steps_per_level, bool):
        if steps_per_level < 0:
            raise ValueError(f"steps_per_level: must be an integer ≥ 0, got {steps_per_level!r}")
        return [int(steps_per_level)] * T
    try:
        counts = list(steps_per_level.tolist() if hasattr(steps_per_level, "tolist") else steps_per_level)
    except TypeError:
        counts = None
    if counts is None or len(counts) != T or not all(
            isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 0 for k in counts):
        raise ValueError(f"steps_per_level: must be an integer ≥ 0 or a sequence of T = {T} integers "
                         f"≥ 0 (entry t − 1 for level t), got {steps_per_level!r:.80}")
    return [int(k) for k in counts]


def _chunks(rows: int, chunk: Optional[int]) -> List[Tuple[int, int]]:
    """(rows per call, calls) for `rows` rows split into chunks of at most `chunk`."""
    if not chunk or chunk >= rows:
        return [(rows, 1)]
    out = [(chunk, rows // chunk)]
    if rows % chunk:
        out.append((rows % chunk, 1))
    return out


def _leaf_terms(plan_terms) -> List["PlanTerm"]:
    """Every evaluated PlanTerm, mixture branches included, in order."""
    out = []
    for term in plan_terms:
        out.extend(_leaf_terms(term.branches) if term.branches else [term])
    return out


def _leaf_pairs(terms, plan_terms) -> List[Tuple]:
    """(compiled term, its PlanTerm) for every evaluated term, mixture branches included."""
    out = []
    for term, plan_term in zip(terms, plan_terms):
        if plan_term.branches:
            out.extend(zip([t for branch in term.source.branches for t in branch], plan_term.branches))
        else:
            out.append((term, plan_term))
    return out

def _format_shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _term_lines(term: PlanTerm, indent: str, last: bool, kernel: Optional[dict]) -> List[str]:
    lines = [f"{indent}{'└─ ' if last else '├─ '}{term.label}  weight {format_number(term.weight)}"
             f"  [{_KIND_TEXT.get(term.kind, term.kind)}]"]
    inner = indent + ("   " if last else "│  ")
    bar = "│  " if term.branches else "   "
    lines.append(f"{inner}{bar}Δ: {term.delta}")
    if term.network is not None:
        lines.append(f"{inner}{bar}network: {term.network}")
    if term.per_sample is not None:
        counts = {"per_step": term.per_step, "per_level": term.per_level,
                  "per_sample": term.per_sample}
        lines.append(f"{inner}{bar}evaluations per chain: {_per(counts, kernel)}")
        for call in term.calls:
            when = (f"{call.per_level} per level" if kernel["name"] == "Reverse"
                    else f"{call.per_step} per step" if call.per_level is None
                    else f"{call.per_step} per step, {call.per_level} per level")
            lines.append(f"{inner}{bar}call {_format_shape(call.shape)} at {call.what}: {when}")
        if term.shared_with is not None:
            lines.append(f"{inner}{bar}evaluated in the call of {term.shared_with}")
    for i, child in enumerate(term.branches):
        lines.extend(_term_lines(child, inner, i == len(term.branches) - 1, kernel))
    return lines
