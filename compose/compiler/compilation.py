"""`compile`: a composition (tree, component or string) into a `Target`."""
from __future__ import annotations

import numbers
from typing import Optional

from ..errors import CompositionError
from ..expr import as_expr
from ..language import parse
from .quadrature import check_rule
from .target import PATHS, Target
from .terms import flatten, leaf_components, merge


def compile(expr, components: Optional[dict] = None, /, *, path: str = "line", points: int = 0,
            chunk_rows: Optional[int] = None, rule: str = "trapezoid", **more) -> Target:
    """Compile a composition into a `Target`.

    Args:
        expr: an expression (or a component, or a composition string with `components`).
        path: "line" (straight line x → x') or "curve" (HMC leapfrog path) for Δ of
            score-only terms.
        points: interior quadrature nodes per straight piece (n in LA-n-line; m per leapfrog
            segment for the curve). 0: the trapezoid rule on the end points, for both rules.
        rule: "trapezoid" (the paper's; nodes j/(n+1), error O(h²)) or "lobatto" (Gauss–Lobatto
            nodes, exact for integrands of degree 2n + 1 along a piece; docs/quadrature.md).
            Both reuse the end-point scores and cost the same `points` evaluations.
        chunk_rows: most rows per call of a score-only network. None: chain batches whole, and
            integration points in one call per term on accelerators, one point per call on CPU.
        components, **more: name → component bindings when `expr` is a string.
    Returns:
        a Target with `score`, `evaluate`, `log_ratio`, `log_ratio_curve` and `plan`.
    """
    if isinstance(expr, str):
        mapping = dict(components or {})
        mapping.update(more)
        expr = parse(expr, mapping)
    elif components or more:
        raise ValueError("components: bindings are only used when expr is a composition string")
    expr = as_expr(expr)
    if path not in PATHS:
        raise ValueError(f"path: must be one of {', '.join(PATHS)}, got {path!r}")
    if isinstance(points, bool) or not isinstance(points, numbers.Integral) or points < 0:
        raise ValueError(f"points: number of interior integration points must be an integer ≥ 0, got {points!r}")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, numbers.Integral)
                                   or chunk_rows < 1):
        raise ValueError(f"chunk_rows: must be None or an integer ≥ 1, got {chunk_rows!r}")
    check_rule(rule)

    terms = merge(flatten(expr, 1.0))
    if not terms:
        raise CompositionError(f"'{expr}': every weight cancels, nothing is left to sample")
    sources = leaf_components(terms)
    schedule = sources[0].schedule
    for c in sources[1:]:
        if not c.schedule.same_as(schedule):
            raise ValueError(f"schedule: components '{sources[0].name}' ({schedule!r}) and "
                             f"'{c.name}' ({c.schedule!r}) use different noise schedules")
    shapes = {c.name: c.event_shape for c in sources if c.event_shape is not None}
    event_shape = None
    for name, shape in shapes.items():
        if event_shape is None:
            event_shape, first = shape, name
        elif shape != event_shape:
            raise ValueError(f"event_shape: components '{first}' {event_shape} and '{name}' {shape} "
                             "have different sample shapes")
    return Target(expr, terms, schedule, event_shape, path, int(points), chunk_rows, rule)
