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
from ..expr import (MAX_MIXTURE_NESTING, Condition, Expr, Guidance, Leaf, Mixture, Power, Product,
                    Quotient, Window, format_number, mixture_nesting, short)


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
        guided: for a classifier term of weight λ guiding an expression E, the pairs
            (`term_key`, λ · weight in E) of E's terms, so that Σ c_j s_j = λ s_E: the
            Feynman–Kac weights need the cross term 2 λ s_E · ∇ log c (docs/smc.md). Repeats of
            one classifier term merge by adding their pairs.
    """

    label: str
    weight: float
    source: Any
    conditions: Tuple = ()
    method: str = "score"
    window: Optional[windows.Box] = None
    guided: Tuple = ()

    @property
    def exact(self) -> bool:
        return self.method != "score"


def term_key(term: Term) -> Tuple:
    """What makes two terms the same density: (component, conditions, window), or for a mixture
    its expression and the window it is seen through; `merge` adds the weights of equal keys."""
    source = term.source
    if isinstance(source, MixtureDensity) and source.expr is not None:
        return ("mixture", source.expr, source.view)
    return (id(source), term.conditions, term.window)


class MixtureDensity:
    """Equal-weight mixture of exact branches: log π = logsumexp_b log π_b − log B.

    Each branch is a list of exact terms whose weighted log-densities add. The score is the
    responsibility-weighted sum of the branch scores, consistent with the log-density (the
    1/σ_t of each energy branch applies inside its own term, before the logsumexp).
    """

    def __init__(self, branches: List[List[Term]], expr: Any = None, view: Any = None):
        self.branches = branches
        self.expr = expr          # the Mixture node and the window it is seen through: equal
        self.view = view          # nodes seen through equal windows are the same density

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


def flatten(expr: Expr, weight: float = 1.0, view: Optional[windows.Box] = None,
            canvas: Optional[Tuple[int, ...]] = None) -> List[Term]:
    """Weighted terms of log π, left to right: weights multiply through powers, quotients and
    guidance; windows narrow the `view` (the box of the `canvas` the sub-expression sees).
    Walks the tree with an explicit stack (a long product is a deep tree); recurses only into
    mixture branches, whose nesting is limited (MAX_MIXTURE_NESTING).

    Raises CompositionError for an unbound name, a classifier used as a factor, conditions a
    component cannot take, and a weight that overflows or underflows to 0.
    """
    depth = mixture_nesting(expr)
    if depth > MAX_MIXTURE_NESTING:
        raise CompositionError(f"mixtures are nested {depth} deep inside one another; at most "
                               f"{MAX_MIXTURE_NESTING} levels are supported")
    terms: List[Term] = []
    # (node, weight, view) to expand, or a finished Term
    stack: List[Any] = [(expr, weight, view)]
    while stack:
        item = stack.pop()
        if isinstance(item, Term):
            terms.append(item)
            continue
        node, w, box = item
        if isinstance(node, Leaf):
            terms.append(_leaf_term(node, w, box, canvas))
        elif isinstance(node, Window):
            try:
                bounds = windows.resolve(node.items, windows.box_shape(box),
                                         f"window [{windows.format_items(node.items)}] of "
                                         f"'{short(node.expr)}'")
            except CompositionError as error:
                raise CompositionError(error.message, span=node.span) from None
            stack.append((node.expr, w, windows.inner_box(box, bounds)))
        elif isinstance(node, (Product, Quotient)):
            sign = -1.0 if isinstance(node, Quotient) else 1.0
            stack.append((node.right, sign * w, box))
            stack.append((node.left, w, box))
        elif isinstance(node, Power):
            stack.append((node.base, _weight(w, node.exponent, node), box))
        elif isinstance(node, Guidance):
            guided = _guided(node.expr, box, canvas)
            for condition in reversed(node.conditions):
                stack.append(_classifier_term(condition, _weight(w, node.scale, node), box, canvas,
                                              guided))
            stack.append((node.expr, w, box))
        elif isinstance(node, Mixture):
            seen = "" if box is None or box == windows.full_box(canvas) else windows.label_box(box, canvas)
            terms.append(Term(f"mixture({node}){seen}", w,
                              MixtureDensity(_branches(node, box, canvas), node, box), (), "mixture"))
        else:
            raise CompositionError(f"cannot compile a {type(node).__name__}")
    return terms


def check_names(expr: Expr) -> None:
    """One component per name in the whole composition: leaves (whatever their conditions and
    windows, inside mixtures too) and guidance classifiers. Plans, `Target.labels` and the
    evaluation counts name terms by these names, so two components sharing one would be
    counted as one (a CompositionError at the second, where it was written)."""
    seen = {}
    for node in expr.nodes():
        if isinstance(node, Leaf):
            named = [(node.name, node.component, node.span)]
        elif isinstance(node, Guidance):
            named = [(getattr(c.classifier, "name", None), c.classifier, c.span)
                     for c in node.conditions]
        else:
            continue
        for name, component, span in named:
            if component is None or not isinstance(name, str):
                continue
            first = seen.setdefault(name, component)
            if first is not component:
                raise CompositionError(
                    f"name '{name}' refers to two different components; plans and evaluation "
                    "counts name terms by their component, so give each its own name", span=span)


def _weight(weight: float, factor: float, node: Expr) -> float:
    """weight · factor, refused when it leaves the finite non-zero floats."""
    product = weight * factor
    if not math.isfinite(product):
        raise CompositionError(f"weight overflows at '{short(node)}': {format_number(weight)} · "
                               f"{format_number(factor)} is not a finite number")
    if product == 0.0 and weight != 0.0 and factor != 0.0:
        raise CompositionError(f"weight underflows to 0 at '{short(node)}': "
                               f"{format_number(weight)} · {format_number(factor)}")
    return product


def _leaf_term(leaf: Leaf, weight: float, view, canvas) -> Term:
    component = leaf.component
    if component is None:
        raise CompositionError(f"name '{leaf.name}' is not bound to a component", span=leaf.span)
    if not isinstance(component, Component):
        raise CompositionError(f"'{leaf.name}' is bound to a {type(component).__name__}, not a "
                               "component", span=leaf.span)
    if component.is_classifier:
        raise CompositionError(f"'{leaf.name}' is a classifier: use it in guidance "
                               f"(| {component.variable}=...)", span=leaf.span)
    _check_conditions(component, leaf.conditions, f"'{short(leaf)}'", leaf.span)
    method = component.kind if component.has_log_density else "score"
    window = _window_of(view, canvas, component, f"'{leaf}'")
    label = str(leaf) + ("" if window is None else windows.label_box(window, canvas))
    return Term(label, weight, component, leaf.conditions, method, window)


def _guided(expr: Expr, view, canvas) -> Tuple:
    """The guided expression's terms as (`term_key`, weight) pairs, weights relative to it."""
    merged: "OrderedDict[Tuple, float]" = OrderedDict()
    for term in flatten(expr, 1.0, view, canvas):
        key = term_key(term)
        merged[key] = merged.get(key, 0.0) + term.weight
    return tuple((key, weight) for key, weight in merged.items() if weight != 0.0)


def _classifier_term(condition: Condition, weight: float, view, canvas, guided: Tuple = ()) -> Term:
    clf = condition.classifier
    if clf is None or not getattr(clf, "is_classifier", False):
        raise CompositionError(f"guidance on '{condition.variable}' needs a classifier bound to "
                               f"'{condition.variable}'", span=condition.span)
    conditions = ((condition.variable, condition.value),)
    _check_conditions(clf, conditions, f"guidance '{condition}'", condition.span)
    name = f"{clf.name}[{condition}]"
    window = _window_of(view, canvas, clf, f"classifier '{clf.name}'")
    label = name + ("" if window is None else windows.label_box(window, canvas))
    guided = tuple((key, weight * relative) for key, relative in guided)
    return Term(label, weight, clf, conditions, "classifier", window, guided)


def _check_conditions(component, conditions, where: str, span) -> None:
    """The component's own check of the conditions it will be called with, at compile time."""
    check = getattr(component, "check_conditions", None)
    if check is None:
        return
    try:
        check(conditions)
    except (ValueError, TypeError) as error:
        message = error.message if isinstance(error, CompositionError) else str(error)
        raise CompositionError(f"{where}: {message}", span=span) from None


def _branches(mixture: Mixture, view, canvas) -> List[List[Term]]:
    """The merged exact terms of each branch of a mixture; a branch must keep at least one."""
    branches = []
    for branch in mixture.components:
        branch_terms = merge(flatten(branch, 1.0, view, canvas))
        if not branch_terms:
            raise CompositionError(
                f"mixture branch '{short(branch)}' has no terms left: every weight in it cancels, "
                "and a constant is not a density to mix")
        for term in branch_terms:
            if not term.exact:
                raise CompositionError(
                    f"mixture needs log-densities: '{term.label}' is a score-only component; "
                    "use analytic or energy components in a mixture")
        branches.append(branch_terms)
    return branches


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
    """Sum the weights of repeated (component, conditions, window) triples, and of equal
    mixtures seen through the same window; drop terms of weight 0.

    Every merged weight is finite (a CompositionError names the term otherwise).
    """
    merged: "OrderedDict[Tuple, Term]" = OrderedDict()
    for term in terms:
        key = term_key(term)
        if key in merged:
            total = merged[key].weight + term.weight
            if not math.isfinite(total):
                raise CompositionError(
                    f"weight of '{term.label}' overflows: its repeats add up to "
                    f"{format_number(merged[key].weight)} + {format_number(term.weight)}, "
                    "which is not a finite number")
            merged[key].weight = total
            if term.guided:
                merged[key].guided = _add_pairs(merged[key].guided, term.guided)
        else:
            merged[key] = Term(term.label, term.weight, term.source, term.conditions, term.method,
                               term.window, term.guided)
    labels = {}
    for term in merged.values():
        if term.label in labels and labels[term.label] is not term.source:
            raise CompositionError(f"name '{term.label}' refers to two different components")
        labels[term.label] = term.source
    return [t for t in merged.values() if t.weight != 0.0]


def _add_pairs(a: Tuple, b: Tuple) -> Tuple:
    """(key, weight) pairs of a and b, the weights of equal keys added."""
    out: "OrderedDict[Tuple, float]" = OrderedDict(a)
    for key, weight in b:
        out[key] = out.get(key, 0.0) + weight
    return tuple(out.items())


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
