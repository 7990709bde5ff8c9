"""Flatten an expression tree into weighted terms and merge repeated ones.

A composition is a weighted sum of log-densities,

    log π_t(x) = Σ_i w_i log p^i_t(x)            (products, quotients, powers, guidance),

where each term either has a log-density (analytic, energy, classifier, or a mixture of such)
or only a score (score models). Weights multiply through nesting, powers and guidance scales;
terms of the same component, conditions and window merge by adding their weights
(docs/algebra.md). A window narrows what the terms below it see: each term keeps the box of the
canvas it is evaluated on (docs/windows.md).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch

from .. import windows
from ..components import Component
from ..errors import CompositionError
from ..expr import Expr, Guidance, Leaf, Mixture, Power, Product, Quotient, Window


@dataclass
class Term:
    """One weighted summand w · log p of the composition.

    Attributes:
        label: how plans and diagnostics name it, e.g. ``p(class=7)`` or ``clf[class=7]``.
        weight: w, after multiplying through nesting and guidance scales.
        source: the component, or a `MixtureDensity`.
        conditions: passed to the component's network.
        method: "analytic", "energy", "classifier", "mixture" (exact) or "score" (integrated).
        window: the box of the canvas the term sees (docs/windows.md), None for the whole.
        network: how the evaluation counter names its calls: the label without the window.
    """

    label: str
    weight: float
    source: Any
    conditions: Tuple = ()
    method: str = "score"
    window: Optional[windows.Box] = None
    network: str = ""

    def __post_init__(self):
        if not self.network:
            self.network = self.label

    @property
    def exact(self) -> bool:
        return self.method != "score"


class MixtureDensity:
    """Equal-weight mixture of exact branches: log π = logsumexp_b log π_b − log B.

    Each branch is a list of exact terms whose weighted log-densities add. The score is the
    responsibility-weighted sum of the branch scores, consistent with the log-density (the
    1/σ_t of each energy branch applies inside its own term, before the logsumexp).
    """

    def __init__(self, branches: List[List[Term]]):
        self.branches = branches

    def log_density_and_score(self, x, t, counter, evaluate_term):
        logs, scores = [], []
        for branch in self.branches:
            log_p, score = 0.0, 0.0
            for term in branch:
                lp, s = evaluate_term(term, x, t)
                log_p, score = log_p + term.weight * lp, score + term.weight * s
            logs.append(log_p)
            scores.append(score)
        logs = torch.stack(logs)                                          # (B, N)
        resp = torch.softmax(logs, dim=0)
        score = sum(resp[b].reshape((-1,) + (1,) * (x.dim() - 1)) * scores[b] for b in range(len(scores)))
        return torch.logsumexp(logs, dim=0) - math.log(len(self.branches)), score


def flatten(expr: Expr, weight: float, view: Optional[windows.Box] = None,
            canvas: Optional[Tuple[int, ...]] = None) -> List[Term]:
    """Weighted terms of log π: weights multiply through powers, quotients and guidance;
    windows narrow the `view` (the box of the `canvas` the sub-expression sees)."""
    if not math.isfinite(weight):
        raise CompositionError(f"'{expr}': weight overflows to {weight}")
    if isinstance(expr, Leaf):
        component = expr.component
        if component is None:
            raise CompositionError(f"name '{expr.name}' is not bound to a component", span=expr.span)
        if not isinstance(component, Component):
            raise CompositionError(f"'{expr.name}' is bound to a {type(component).__name__}, not a component")
        if component.is_classifier:
            raise CompositionError(f"'{expr.name}' is a classifier: use it in guidance (| {component.variable}=...)")
        method = component.kind if component.has_log_density else "score"
        window = _window_of(view, canvas, component, f"'{expr}'")
        label = str(expr) + ("" if window is None else windows.label_box(window, canvas))
        return [Term(label, weight, component, expr.conditions, method, window, str(expr))]
    if isinstance(expr, Window):
        bounds = windows.resolve(expr.items, windows.box_shape(view),
                                 f"window [{windows.format_items(expr.items)}] of '{expr.expr}'")
        return flatten(expr.expr, weight, windows.inner_box(view, bounds), canvas)
    if isinstance(expr, Product):
        return flatten(expr.left, weight, view, canvas) + flatten(expr.right, weight, view, canvas)
    if isinstance(expr, Quotient):
        return flatten(expr.left, weight, view, canvas) + flatten(expr.right, -weight, view, canvas)
    if isinstance(expr, Power):
        return flatten(expr.base, weight * expr.exponent, view, canvas)
    if isinstance(expr, Guidance):
        terms = flatten(expr.expr, weight, view, canvas)
        for condition in expr.conditions:
            clf = condition.classifier
            if clf is None or not getattr(clf, "is_classifier", False):
                raise CompositionError(f"guidance on '{condition.variable}' needs a classifier bound to "
                                       f"'{condition.variable}'", span=condition.span)
            name = f"{clf.name}[{condition}]"
            window = _window_of(view, canvas, clf, f"classifier '{clf.name}'")
            label = name + ("" if window is None else windows.label_box(window, canvas))
            terms.append(Term(label, weight * expr.scale, clf,
                              ((condition.variable, condition.value),), "classifier", window, name))
        return terms
    if isinstance(expr, Mixture):
        branches = []
        for branch in expr.components:
            branch_terms = merge(flatten(branch, 1.0, view, canvas))
            for term in branch_terms:
                if not term.exact:
                    raise CompositionError(
                        f"mixture needs log-densities: '{term.label}' is a score-only component; "
                        "use analytic or energy components in a mixture")
            branches.append(branch_terms)
        return [Term(f"mixture({expr})", weight, MixtureDensity(branches), (), "mixture")]
    raise CompositionError(f"cannot compile a {type(expr).__name__}")


def _window_of(view: Optional[windows.Box], canvas: Optional[Tuple[int, ...]], component,
               what: str) -> Optional[windows.Box]:
    """The box a leaf sees (None: the whole canvas), checked against the component's shape."""
    if view is None:
        return None
    shape = windows.box_shape(view)
    declared = getattr(component, "event_shape", None)
    if declared is not None and tuple(declared) != shape:
        raise CompositionError(f"{what} sees the window {windows.format_box(view)} of shape "
                               f"{shape}, but its samples have shape {tuple(declared)}")
    return None if view == windows.full_box(canvas) else view


def merge(terms: List[Term]) -> List[Term]:
    """Sum the weights of repeated (component, conditions, window) triples; drop terms of
    weight 0."""
    merged: "OrderedDict[Tuple, Term]" = OrderedDict()
    for term in terms:
        key = (id(term.source), term.conditions, term.window)
        if key in merged:
            merged[key].weight += term.weight
        else:
            merged[key] = Term(term.label, term.weight, term.source, term.conditions, term.method,
                               term.window, term.network)
    labels = {}
    for term in merged.values():
        if term.label in labels and labels[term.label] is not term.source:
            raise CompositionError(f"name '{term.label}' refers to two different components")
        labels[term.label] = term.source
    return [t for t in merged.values() if t.weight != 0.0]


def leaf_components(terms: List[Term]) -> List[Component]:
    out = []
    for term in terms:
        if isinstance(term.source, MixtureDensity):
            out.extend(leaf_components([t for branch in term.source.branches for t in branch]))
        else:
            out.append(term.source)
    return out


def covered(terms: List[Term], canvas: Tuple[int, ...]) -> torch.Tensor:
    """Boolean mask of the canvas coordinates some factor covers. Classifiers cover nothing
    (a likelihood, not a density over x); a mixture covers what all its branches cover."""
    out = torch.zeros(canvas, dtype=torch.bool)
    for term in terms:
        if isinstance(term.source, MixtureDensity):
            branches = [covered(branch, canvas) for branch in term.source.branches]
            every = branches[0]
            for branch in branches[1:]:
                every = every & branch
            out |= every
        elif term.method != "classifier":
            out |= windows.mask(canvas, [term.window or windows.full_box(canvas)])
    return out
