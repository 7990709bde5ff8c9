"""The compiled target: the composed score and the pseudo-energy difference Δ.

The target evaluates, at a batch of points,

    score           Σ_i w_i s^i_t(x)                        the full composed score,
    implicit_score  Σ_{i score-only} w_i s^i_t(x)           the part with no log-density,
    log_density     Σ_{i exact} w_i log p^i_t(x)            the exactly known part,

and the pseudo-energy difference (docs/delta.md)

    Δ(x → x') = [log_density(x') − log_density(x)] + ∫_γ implicit_score · dγ,

with γ the straight line (path="line") or the HMC leapfrog path (path="curve"), both by the
trapezoid or the Gauss–Lobatto rule (`rule`) with `points` interior nodes per piece. Score and Δ always describe the same π:
every weight, the guidance scale included, enters both through the same term.

A term that sees a window W of the canvas contributes w · log p(x[W]) and w · scatter(s(x[W]))
(docs/windows.md). Terms of one network and condition with windows of one shape are one
`Call`: their crops are stacked along the batch and evaluated together. So are score-only terms
of one network that differ only in their conditions, when the network stacks conditions
(`Component.stacks_conditions`, e.g. the prompts of classifier-free guidance).

On a respaced schedule (``compile(..., levels=)``) level i evaluates every component at its
training level τ_i (`component_level`).
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .. import windows
from ..expr import Expr
from ..schedule import Schedule
from . import quadrature
from .plan import Plan
from .terms import MixtureDensity, Term, term_key

PATHS = ("line", "curve")

# A bound on the scores and log-densities of well-behaved components (|s|, |log p| ≤ 1e8): a
# weight w with |w| · 1e8 beyond the dtype's range may overflow it, and is then checked.
_ORDINARY_MAGNITUDE = 1e8


def _largest_weight(terms: List[Term]) -> float:
    """max |w| over the terms, mixture branch weights multiplied in."""
    largest = 0.0
    for term in terms:
        inner = 1.0
        if isinstance(term.source, MixtureDensity):
            inner = max(_largest_weight(branch) for branch in term.source.branches)
        largest = max(largest, abs(term.weight) * inner)
    return largest


class EvaluationCounter:
    """Rows and calls evaluated per term label, the labels of the plan and `Target.labels`
    (host-side integers, no device syncs). A call that stacks several terms (windows,
    conditions) adds each term's rows under its own label and the one call under the first."""

    def __init__(self):
        self.rows: Dict[str, int] = OrderedDict()
        self.calls: Dict[str, int] = OrderedDict()

    def add(self, label: str, rows: int, call: bool = True) -> None:
        """Count `rows` evaluations of `label`; `call=False` when they were stacked into the
        call already counted for another term (conditions along the batch)."""
        self.rows[label] = self.rows.get(label, 0) + rows
        self.calls[label] = self.calls.get(label, 0) + int(call)

    def snapshot(self) -> Dict[str, int]:
        return dict(self.rows)

    def reset(self) -> None:
        self.rows.clear()
        self.calls.clear()


@dataclass
class Evaluation:
    """What the target knows at a batch of points (N chains, one level).

    score: ∇ log π, shape (N, *event). implicit_score: the score-only part (None if there is
    none). log_density: the exact part of log π, shape (N,) (None if there is none).
    weighted_square_norm: Σ_i w_i ‖s_i‖² over the terms, shape (N,), with guidance's cross
    terms (docs/smc.md); only inside `Target.square_norms()`, otherwise None.
    """

    score: torch.Tensor
    implicit_score: Optional[torch.Tensor] = None
    log_density: Optional[torch.Tensor] = None
    weighted_square_norm: Optional[torch.Tensor] = None

    def excess(self) -> torch.Tensor:
        """‖S‖² − Σ_i w_i ‖s_i‖² per chain, shape (N,): what the Feynman–Kac rate integrates."""
        if self.weighted_square_norm is None:
            raise ValueError("this evaluation holds no square norms: evaluate inside "
                             "target.square_norms()")
        return _square_norm(self.score) - self.weighted_square_norm

    def gather(self, index: torch.Tensor) -> "Evaluation":
        """The evaluation of the chains `index` (shape (N',)), as resampling copies them."""
        def pick(a):
            return None if a is None else a.index_select(0, index)
        return Evaluation(pick(self.score), pick(self.implicit_score), pick(self.log_density),
                          pick(self.weighted_square_norm))

    def where(self, mask: torch.Tensor, other: "Evaluation") -> "Evaluation":
        """Per chain: this evaluation where `mask` (shape (N,)) holds, else `other`."""
        def pick(a, b):
            if a is None:
                return None
            m = mask.reshape((-1,) + (1,) * (a.dim() - 1))
            return torch.where(m, a, b)
        return Evaluation(pick(self.score, other.score), pick(self.implicit_score, other.implicit_score),
                          pick(self.log_density, other.log_density),
                          pick(self.weighted_square_norm, other.weighted_square_norm))


# -- network calls ----------------------------------------------------------------------------
@dataclass
class Call:
    """Terms evaluated by one network call: one source with one condition, either unwindowed
    (one term) or seeing several windows of one shape, whose crops are stacked along the batch
    (N chains and k windows: k·N rows); or, for a source that stacks conditions, terms with
    different conditions (each its own N rows of the stacked batch)."""

    terms: List[Term]

    @property
    def stacked_conditions(self) -> bool:
        """True when the terms differ in their conditions (one condition per block of rows)."""
        return any(term.conditions != self.terms[0].conditions for term in self.terms[1:])

    def evaluate(self, inputs: torch.Tensor, t: int) -> torch.Tensor:
        """The source's score at the stacked inputs: one call, conditions per block of rows."""
        if self.stacked_conditions:
            return self.source.stacked_score(inputs, t, [term.conditions for term in self.terms])
        return self.source.score(inputs, t, self.conditions)

    def count(self, counter: "EvaluationCounter", rows: int) -> None:
        """`rows` (chains) per term into the counter under each term's label, as the plan and
        `Target.labels` name it (a window's crop counts for its own term); one call."""
        per_label: "OrderedDict[str, int]" = OrderedDict()
        for term in self.terms:
            per_label[term.label] = per_label.get(term.label, 0) + rows
        for i, (label, count) in enumerate(per_label.items()):
            counter.add(label, count, call=i == 0)

    @property
    def source(self):
        return self.terms[0].source

    @property
    def conditions(self):
        return self.terms[0].conditions

    @property
    def windowed(self) -> bool:
        return self.terms[0].window is not None

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The call's batch: x itself, or the crops of x in every window, stacked."""
        if len(self.terms) == 1:
            return x if not self.windowed else windows.crop(x, self.terms[0].window)
        return torch.cat([x if term.window is None else windows.crop(x, term.window)
                          for term in self.terms])

    def outputs(self, values: torch.Tensor, x: torch.Tensor, log_density: bool = False):
        """Per term, (term, its rows of `values`): log-densities as they are, scores scattered
        back onto the canvas of x."""
        n = x.shape[0]
        for i, term in enumerate(self.terms):
            part = values[i * n:(i + 1) * n] if len(self.terms) > 1 else values
            if term.window is not None and not log_density:
                part = windows.scatter(part, term.window, x.shape[1:])
            yield term, part


def _calls(terms: List[Term]) -> List[Call]:
    """Group windowed terms of one source, condition and window shape into one call each, and
    score-only terms of one source that stacks conditions (`Component.stacks_conditions`) and
    one window shape (or none) whatever their conditions; every other term is a call of its
    own. Order: first appearance."""
    calls: "OrderedDict[Any, Call]" = OrderedDict()
    for i, term in enumerate(terms):
        stacks = not term.exact and getattr(term.source, "stacks_conditions", False)
        shape = None if term.window is None else windows.box_shape(term.window)
        if isinstance(term.source, MixtureDensity) or (term.window is None and not stacks):
            key = ("alone", i)
        elif stacks:
            key = (id(term.source), "stacked", shape)
        else:
            key = (id(term.source), term.conditions, term.method, shape)
        if key in calls:
            calls[key].terms.append(term)
        else:
            calls[key] = Call([term])
    return list(calls.values())


def _add(total: Optional[torch.Tensor], value: torch.Tensor) -> torch.Tensor:
    return value if total is None else total + value


def _square_norm(score: torch.Tensor) -> torch.Tensor:
    """‖score‖² per chain, accumulated in float64: the weights take differences of such sums,
    which float32 would leave with errors of order 1e-7 · ‖s‖² · √d."""
    return score.flatten(1).to(_wide(score)).pow(2).sum(1)


def _wide(tensor: torch.Tensor) -> torch.dtype:
    """float64 for the weights' sums, except on Apple's MPS, which has none."""
    return torch.float32 if tensor.device.type == "mps" else torch.float64


class SquareNorms:
    """Σ_i w_i ‖s_i‖² of one evaluation, term by term, with the cross terms of guidance: a
    classifier term of weight λ guiding E adds 2 λ s_E · g (g its score) to λ‖g‖²
    (`Term.guided`; docs/smc.md). Only the scores of guided expressions are kept."""

    def __init__(self, terms: List[Term]):
        self.needed = {key for term in terms for key, _ in term.guided}
        self.total: Optional[torch.Tensor] = None
        self.kept: Dict[Tuple, torch.Tensor] = {}
        self.classifiers: List[Tuple[Term, torch.Tensor]] = []

    def add(self, term: Term, score: torch.Tensor) -> None:
        """One term's unweighted score on the canvas."""
        self.total = _add(self.total, term.weight * _square_norm(score))
        key = term_key(term)
        if key in self.needed:
            self.kept[key] = score
        if term.guided:
            self.classifiers.append((term, score))

    def result(self) -> Optional[torch.Tensor]:
        total = self.total
        for term, g in self.classifiers:
            for key, weight in term.guided:
                if key not in self.kept:
                    raise ValueError(f"'{term.label}': the expression it guides has no terms left "
                                     "after merging, so the Feynman–Kac weights cannot be formed")
                wide = _wide(g)
                total = total + 2.0 * weight * (self.kept[key].flatten(1).to(wide)
                                                * g.flatten(1).to(wide)).sum(1)
        return total



class Target:
    """A compiled composition: `score`, `log_ratio`, `log_ratio_curve`, `evaluate`, and `plan`.

    Built by `compile`; see the module docstring for the quantities.
    """

    def __init__(self, expr: Expr, terms: List[Term], schedule: Schedule,
                 event_shape: Optional[Tuple[int, ...]], path: str, points: int,
                 chunk_rows: Optional[int], rule: str = "trapezoid",
                 component_levels: Optional[Sequence[int]] = None):
        self.expr = expr
        self.terms = terms
        self.schedule = schedule
        self.event_shape = event_shape
        self.path = path
        self.points = points
        self.rule = quadrature.check_rule(rule)
        self.chunk_rows = chunk_rows
        self.exact_terms = [t for t in terms if t.exact]
        self.implicit_terms = [t for t in terms if not t.exact]
        self.exact_calls = _calls(self.exact_terms)
        self.implicit_calls = _calls(self.implicit_terms)
        # Level i of `schedule` evaluates the components at their level component_levels[i − 1]
        # (a respaced schedule: the training levels τ_i); None: the same level.
        self.component_levels = None if component_levels is None else [int(t) for t in component_levels]
        self.counter = EvaluationCounter()
        self.largest_weight = _largest_weight(terms)
        self._square_norms = False

    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def plan(self) -> Plan:
        return Plan.from_target(self)

    def plan_for(self, kernel, steps_per_level: int = 10, num_samples: int = 1,
                 reverse_step: bool = False, device="cpu", smc=None):
        """The plan with evaluation counts per step and per sample for one kernel and run
        (`smc`: a `compose.SMC`, whose runs always take the reverse step)."""
        return Plan.for_kernel(self, kernel, steps_per_level, num_samples, reverse_step, device,
                               smc=smc)

    def labels(self) -> List[str]:
        """Labels of every evaluated term, mixture branches included, in evaluation order."""
        out = []
        for term in self.terms:
            if isinstance(term.source, MixtureDensity):
                out.extend(b.label for branch in term.source.branches for b in branch)
            else:
                out.append(term.label)
        return list(OrderedDict.fromkeys(out))

    # -- checks ---------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, t, name: str = "x") -> int:
        t = self.schedule.check_level(t)
        if not isinstance(x, torch.Tensor) or x.dim() < 1:
            raise ValueError(f"{name}: expected a tensor of shape (N, *event_shape), got {x!r:.60}")
        if self.event_shape is not None and tuple(x.shape[1:]) != self.event_shape:
            shape = ", ".join(str(d) for d in self.event_shape)
            raise ValueError(f"{name}: expected shape (N, {shape}), got {tuple(x.shape)}")
        return t

    def component_level(self, t: int) -> int:
        """The level of the components' own schedule that target level t evaluates them at."""
        return t if self.component_levels is None else self.component_levels[t - 1]

    # -- term evaluation ------------------------------------------------------------------
    def _exact_source(self, term: Term, x: torch.Tensor, t: int):
        """(log-density, score) of an exact term's source at a batch it sees whole."""
        if term.method == "classifier":
            (variable, value), = term.conditions
            return term.source.log_prob_and_grad(x, t, value)
        return term.source.log_density_and_score(x, t, term.conditions)

    def _exact_term(self, term: Term, x: torch.Tensor, t: int):
        """Unweighted (log p(x[W]), scatter(s(x[W]))) of one exact term (mixture branches)."""
        if isinstance(term.source, MixtureDensity):
            return term.source.log_density_and_score(x, t, self.counter, self._exact_term)
        inputs = x if term.window is None else windows.crop(x, term.window)
        self.counter.add(term.label, inputs.shape[0])
        log_p, score = self._exact_source(term, inputs, t)
        if term.window is not None:
            score = windows.scatter(score, term.window, x.shape[1:])
        return log_p, score

    def _exact(self, x: torch.Tensor, t: int, norms: Optional[SquareNorms] = None):
        """(Σ w_i log p^i, Σ w_i s^i) over the exact terms, one call per `Call`; each term's
        score into `norms` when given."""
        log_density, score = None, None
        for call in self.exact_calls:
            if isinstance(call.source, MixtureDensity):
                (term,) = call.terms
                lp, s = self._exact_term(term, x, t)
                log_density, score = _add(log_density, term.weight * lp), _add(score, term.weight * s)
                if norms is not None:
                    norms.add(term, s)
                continue
            call.count(self.counter, x.shape[0])
            lp, s = self._exact_source(call.terms[0], call.inputs(x), t)
            for term, part in call.outputs(lp, x, log_density=True):
                log_density = _add(log_density, term.weight * part)
            for term, part in call.outputs(s, x):
                score = _add(score, term.weight * part)
                if norms is not None:
                    norms.add(term, part)
        return log_density, score

    def _implicit(self, x: torch.Tensor, t: int, rows: Optional[int] = None,
                  norms: Optional[SquareNorms] = None) -> Optional[torch.Tensor]:
        """Σ w_i s^i over score-only terms: one call per `Call` (windows or conditions stacked)
        for every chunk of `chains_per_call` chains (default: all of x); each term's score into
        `norms` when given."""
        if not self.implicit_calls:
            return None
        n = x.shape[0]
        rows = rows or self.chunk_rows or n
        total = None
        with torch.no_grad():                 # sampling never differentiates a score network
            for call in self.implicit_calls:
                per = self.chains_per_call(len(call.terms), rows)
                chunks = torch.split(x, per) if per < n else (x,)
                parts = []                    # per chunk, the (weight, score) of every term
                for chunk in chunks:
                    call.count(self.counter, chunk.shape[0])
                    parts.append(list(call.outputs(call.evaluate(call.inputs(chunk), t), chunk)))
                for i, (term, _) in enumerate(parts[0]):
                    part = parts[0][i][1] if len(parts) == 1 else torch.cat([p[i][1] for p in parts])
                    total = _add(total, term.weight * part)
                    if norms is not None:
                        norms.add(term, part)
        return total

    def chains_per_call(self, stacked: int, rows: int) -> int:
        """Chains per call of a score-only network whose call stacks `stacked` crops or
        conditions per chain. `rows` chains when the rows come from the device default; with
        `chunk_rows` = R set, max(1, R // stacked), so that a call has at most max(R, stacked)
        rows."""
        if self.chunk_rows:
            return max(1, self.chunk_rows // stacked)
        return rows

    def interior_rows_per_call(self, chains: int, device) -> Optional[int]:
        """Rows per network call for integration points: `chunk_rows` when set; otherwise all
        points of all chains in one call on accelerators, and one point (N rows) per call on
        the CPU, where batching measured 0.56-0.6× as fast (benchmarks/bench_core.py)."""
        if self.chunk_rows:
            return self.chunk_rows
        return chains if torch.device(device).type == "cpu" else None

    def evaluate(self, x: torch.Tensor, t: int) -> Evaluation:
        """Score, score-only part and exact log-density part at a batch x, level t; inside
        `square_norms()` also Σ_i w_i ‖s_i‖² (no extra network call)."""
        t = self.component_level(self._check(x, t))
        norms = SquareNorms(self.terms) if self._square_norms else None
        log_density, score = self._exact(x, t, norms)
        implicit = self._implicit(x, t, norms=norms)
        if implicit is not None:
            score = implicit if score is None else score + implicit
        self._guard_overflow(score, log_density)
        return Evaluation(score, implicit, log_density, None if norms is None else norms.result())

    @contextmanager
    def square_norms(self):
        """Within this block every `evaluate` also returns Σ_i w_i ‖s_i‖²
        (`Evaluation.weighted_square_norm`), from the scores it computes anyway: what the
        Feynman–Kac weights of `compose.SMC` need (docs/smc.md)."""
        previous, self._square_norms = self._square_norms, True
        try:
            yield self
        finally:
            self._square_norms = previous

    def _guard_overflow(self, *values: Optional[torch.Tensor]) -> None:
        """Raise where a weight large enough to overflow the dtype made a value non-finite.

        Only checked when max |w| · `_ORDINARY_MAGNITUDE` exceeds the dtype's largest number
        (p ** 1e300 in float32, say), so ordinary compositions pay no device synchronisation.
        """
        for value in values:
            if value is None or not value.is_floating_point():
                continue
            if self.largest_weight * _ORDINARY_MAGNITUDE <= torch.finfo(value.dtype).max:
                continue
            if not bool(torch.isfinite(value).all()):
                heavy = ", ".join(f"'{t.label}' (weight {_largest_weight([t]):.3g})" for t in self.terms
                                  if _largest_weight([t]) * _ORDINARY_MAGNITUDE > torch.finfo(value.dtype).max)
                raise ValueError(f"the composition's weights overflow {value.dtype}: a score or "
                                 f"log-density times {heavy or 'its weight'} is not finite; "
                                 "use smaller weights or a wider dtype")

    def score(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """∇_x log π_t(x) = Σ_i w_i s^i_t(x), shape of x."""
        return self.evaluate(x, t).score

    # -- Δ --------------------------------------------------------------------------------
    def _interior_scores(self, points: torch.Tensor, t: int, event_dims: int) -> torch.Tensor:
        """Score-only part at points of shape (*lead, N, *event), flattened into batched calls
        of `interior_rows_per_call` rows per term."""
        chains = points.shape[points.dim() - event_dims - 1]
        flat = points.reshape((-1,) + tuple(points.shape[points.dim() - event_dims:]))
        rows = self.interior_rows_per_call(chains, points.device)
        scores = self._implicit(flat, self.component_level(t), rows)
        self._guard_overflow(scores)
        return scores.reshape(points.shape)

    def _exact_difference(self, ev_from: Evaluation, ev_to: Evaluation) -> Optional[torch.Tensor]:
        if ev_to.log_density is None:
            return None
        return ev_to.log_density - ev_from.log_density

    def delta_line(self, x: torch.Tensor, ev_x: Evaluation, x_new: torch.Tensor,
                   ev_new: Evaluation, t: int, points: Optional[int] = None) -> torch.Tensor:
        """Δ(x → x') on the straight line, reusing the end point evaluations; shape (N,).

        Costs `points` extra evaluations of each score-only term at the rule's interior nodes,
        in the same batched calls for both rules.
        """
        n = self.points if points is None else points
        delta = self._exact_difference(ev_x, ev_new)
        if self.implicit_terms:
            interior = None
            if n > 0:
                interior = self._interior_scores(quadrature.interior_points(x, x_new, n, self.rule), t,
                                                  x.dim() - 1).unsqueeze(1)
            integral = quadrature.integrate_pieces(
                x.unsqueeze(0), x_new.unsqueeze(0), ev_x.implicit_score.unsqueeze(0),
                ev_new.implicit_score.unsqueeze(0), interior, n, self.rule)
            delta = integral if delta is None else delta + integral
        return delta if delta is not None else torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def delta_curve(self, positions: Sequence[torch.Tensor], evaluations: Sequence[Evaluation],
                    t: int, points: Optional[int] = None) -> torch.Tensor:
        """Δ along a piecewise-straight path x⁽⁰⁾ … x⁽ᴸ⁾ (the leapfrog positions); shape (N,).

        Reuses the scores at the positions; `points` extra nodes per piece cost `points · L`
        evaluations of each score-only term, in one batched call.
        """
        n = self.points if points is None else points
        delta = self._exact_difference(evaluations[0], evaluations[-1])
        if self.implicit_terms:
            xs = torch.stack(list(positions))                                   # (L+1, N, ...)
            ss = torch.stack([ev.implicit_score for ev in evaluations])
            interior = None
            if n > 0:
                interior = self._interior_scores(quadrature.interior_points(xs[:-1], xs[1:], n, self.rule),
                                                  t, xs.dim() - 2)
            integral = quadrature.integrate_pieces(xs[:-1], xs[1:], ss[:-1], ss[1:], interior, n, self.rule)
            delta = integral if delta is None else delta + integral
        x = positions[0]
        return delta if delta is not None else torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def log_ratio(self, x: torch.Tensor, x_new: torch.Tensor, t: int) -> torch.Tensor:
        """Δ = log π_t(x_new) − log π_t(x) per chain, shape (N,): exact terms exactly, score-only
        terms by the target's rule on the straight line with `points` interior nodes.

        (With path="curve" a straight segment is a one-piece curve: the same rule.)
        """
        t = self._check(x, t)
        self._check(x_new, t, "x_new")
        if x.shape != x_new.shape:
            raise ValueError(f"x_new: shape {tuple(x_new.shape)} differs from x's {tuple(x.shape)}")
        return self.delta_line(x, self.evaluate(x, t), x_new, self.evaluate(x_new, t), t)

    def log_ratio_curve(self, positions, t: int) -> torch.Tensor:
        """Δ along the path through `positions` (a tensor (L+1, N, *event) or a list of L+1
        batches), the target's rule with `points` extra nodes per piece; shape (N,)."""
        positions = list(positions)
        if len(positions) < 2:
            raise ValueError(f"positions: a path needs at least 2 points, got {len(positions)}")
        t = self._check(positions[0], t, "positions")
        for p in positions[1:]:
            if p.shape != positions[0].shape:
                raise ValueError(f"positions: every point must have shape {tuple(positions[0].shape)}")
        return self.delta_curve(positions, [self.evaluate(p, t) for p in positions], t)

    def decode(self, samples, output_type: str = "pt"):
        """Images from samples (a tensor or a `compose.sample` result) through the first
        component that decodes (a latent model's VAE), clipped to [0, 1]; `compose.images.decode`."""
        from ..images import decode
        return decode(self, samples, output_type=output_type)

    def __repr__(self) -> str:
        rule = "" if self.rule == "trapezoid" else f", rule={self.rule!r}"
        return f"Target({str(self.expr)!r}, path={self.path!r}, points={self.points}{rule})"
