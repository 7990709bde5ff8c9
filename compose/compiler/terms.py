"""Flatten an expression tree into weighted terms and merge repeated ones.

A composition is a weighted sum of log-densities,

    log π_t(x) = Σ_i w_i log p^i_t(x)            (products, quotients, powers, guidance),

where each term either has a log-density (analytic, energy, classifier, or a mixture of such)
or only a score (score models). Weights multiply through nesting, powers and guidance scales;
terms of the same component and conditions merge by adding their weights (docs/algebra.md).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, List, Tuple

import torch

from ..components import Component
from ..errors import CompositionError
from ..expr import Expr, Guidance, Leaf, Mixture, Power, Product, Quotient


@dataclass
class Term:
    """One weighted summand w · log p of the composition.

    Attributes:
        label: how plans and diagnostics name it, e.g. ``p(class=7)`` or ``clf[class=7]``.
        weight: w, after multiplying through nesting and guidance scales.
        source: the component, or a `MixtureDensity`.
        conditions: passed to the component's network.
        method: "analytic", "energy", "classifier", "mixture" (exact) or "score" (integrated).
    """

    label: str
    weight: float
    source: Any
    conditions: Tuple = ()
    method: str = "score"

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


def flatten(expr: Expr, weight: float) -> List[Term]:
    """Weighted terms of log π: weights multiply through powers, quotients and guidance."""
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
        return [Term(str(expr), weight, component, expr.conditions, method)]
    if isinstance(expr, Product):
        return flatten(expr.left, weight) + flatten(expr.right, weight)
    if isinstance(expr, Quotient):
        return flatten(expr.left, weight) + flatten(expr.right, -weight)
    if isinstance(expr, Power):
        return flatten(expr.base, weight * expr.exponent)
    if isinstance(expr, Guidance):
        terms = flatten(expr.expr, weight)
        for condition in expr.conditions:
            clf = condition.classifier
            if clf is None or not getattr(clf, "is_classifier", False):
                raise CompositionError(f"guidance on '{condition.variable}' needs a classifier bound to "
                                       f"'{condition.variable}'", span=condition.span)
            terms.append(Term(f"{clf.name}[{condition}]", weight * expr.scale, clf,
                              ((condition.variable, condition.value),), "classifier"))
        return terms
    if isinstance(expr, Mixture):
        branches = []
        for branch in expr.components:
            branch_terms = merge(flatten(branch, 1.0))
            for term in branch_terms:
                if not term.exact:
                    raise CompositionError(
                        f"mixture needs log-densities: '{term.label}' is a score-only component; "
                        "use analytic or energy components in a mixture")
            branches.append(branch_terms)
        return [Term(f"mixture({expr})", weight, MixtureDensity(branches), (), "mixture")]
    raise CompositionError(f"cannot compile a {type(expr).__name__}")


def merge(terms: List[Term]) -> List[Term]:
    """Sum the weights of repeated (component, conditions) pairs; drop terms of weight 0."""
    merged: "OrderedDict[Tuple, Term]" = OrderedDict()
    for term in terms:
        key = (id(term.source), term.conditions)
        if key in merged:
            merged[key].weight += term.weight
        else:
            merged[key] = Term(term.label, term.weight, term.source, term.conditions, term.method)
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
