"""The compiled sampler plan: what is evaluated, how, and how often.

`Plan.from_target(target)` lists each term of the composition with its effective weight and
how its share of Δ is obtained (exact energy, analytic, classifier, mixture, or line/curve
integration with n points). `target.plan_for(kernel, ...)` adds, for one kernel and run
length, the evaluations per MCMC step and per sample of each term and the batch shape of
every kind of call. `str(plan)` is a readable tree, `plan.to_dict()` the same as data.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

from .expr import format_number

_METHOD_TEXT = {
    "analytic": "exact (analytic log-density)",
    "energy": "exact (energy difference)",
    "classifier": "exact (classifier log-probability)",
    "mixture": "exact (mixture logsumexp)",
}


@dataclass
class PlanTerm:
    """One evaluated term: label, effective weight, kind of component and how Δ is obtained."""

    label: str
    weight: float
    kind: str
    delta: str
    branches: List["PlanTerm"] = field(default_factory=list)
    per_step: Optional[float] = None
    per_sample: Optional[float] = None
    calls: List[dict] = field(default_factory=list)


@dataclass
class Plan:
    """The plan of a compiled target, optionally for one kernel and run length."""

    expression: str
    path: str
    points: int
    event_shape: Optional[Tuple[int, ...]]
    T: int
    terms: List[PlanTerm]
    kernel: Optional[dict] = None

    @classmethod
    def from_target(cls, target) -> "Plan":
        terms = [_plan_term(term, target) for term in target.terms]
        return cls(str(target.expr), target.path, target.points, target.event_shape, target.T, terms)

    @classmethod
    def for_kernel(cls, target, kernel, steps_per_level: int, num_samples: int,
                   reverse_step: bool = False) -> "Plan":
        """The plan with evaluation counts for `kernel` at K = `steps_per_level` on N chains."""
        plan = cls.from_target(target)
        K, N, T = steps_per_level, num_samples, target.T
        shape = tuple(target.event_shape) if target.event_shape is not None else ("...",)
        if kernel is None or K == 0:
            all_terms, extra, init, name = 0, 0, 0, "Reverse"
        else:
            (all_terms, extra), init, name = kernel.evaluations_per_step(target), int(kernel.evaluates_at_init), kernel.name
        reverse = 1 if reverse_step and (kernel is None or K == 0 or not kernel.evaluates_at_init) else 0
        per_level_all = init + K * all_terms + reverse
        for term in _leaf_terms(plan.terms):
            score_only = term.kind == "score"
            term.per_step = all_terms + (extra if score_only else 0)
            term.per_sample = T * (per_level_all + (K * extra if score_only else 0))
            term.calls = [{"what": "point", "rows": N, "shape": (N,) + shape,
                           "per_level": per_level_all}]
            if score_only and extra and K:
                rows = extra * N
                chunk = target.chunk_rows or rows
                term.calls.append({"what": "integration points", "rows": rows,
                                   "shape": (min(rows, chunk),) + shape,
                                   "calls_per_step": -(-rows // chunk), "per_level": K})
        plan.kernel = {"name": name, "steps_per_level": K, "num_samples": N,
                       "reverse_step": bool(reverse_step), "levels": T}
        return plan

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        head = f"plan for {self.expression}  (T={self.T}, event shape {self.event_shape})"
        lines = [head]
        if self.kernel:
            k = self.kernel
            lines.append(f"  kernel {k['name']}: {k['steps_per_level']} steps/level, {k['num_samples']} chains"
                         + (", reverse step" if k["reverse_step"] else ""))
        for i, term in enumerate(self.terms):
            last = i == len(self.terms) - 1
            lines.extend(_term_lines(term, "  ", last))
        return "\n".join(lines)


def _plan_term(term, target) -> PlanTerm:
    from .compiler import MixtureDensity
    if isinstance(term.source, MixtureDensity):
        branches = [_plan_term(t, target) for branch in term.source.branches for t in branch]
        return PlanTerm(term.label, term.weight, "mixture", _METHOD_TEXT["mixture"], branches)
    if term.exact:
        return PlanTerm(term.label, term.weight, term.method, _METHOD_TEXT[term.method])
    if target.path == "line":
        how = f"line integral, trapezoid, {target.points} interior point(s)"
    else:
        how = f"curve integral along the leapfrog path, {target.points} extra point(s) per segment"
    return PlanTerm(term.label, term.weight, "score", how)


def _leaf_terms(terms: List[PlanTerm]) -> List[PlanTerm]:
    out = []
    for term in terms:
        out.extend(_leaf_terms(term.branches) if term.branches else [term])
    return out


def _term_lines(term: PlanTerm, indent: str, last: bool) -> List[str]:
    branch = "└─ " if last else "├─ "
    text = f"{indent}{branch}{term.label}  weight {format_number(term.weight)}  [{term.kind}]  Δ: {term.delta}"
    lines = [text]
    child_indent = indent + ("   " if last else "│  ")
    if term.per_step is not None:
        lines.append(f"{child_indent}evaluations: {format_number(term.per_step)} per MCMC step, "
                     f"{format_number(term.per_sample)} per sample")
        for call in term.calls:
            extra = f", {call['calls_per_step']} call(s) per step" if "calls_per_step" in call else ""
            lines.append(f"{child_indent}call: {call['what']}, batch shape {call['shape']}{extra}")
    for i, child in enumerate(term.branches):
        lines.extend(_term_lines(child, child_indent, i == len(term.branches) - 1))
    return lines
