"""`compile`: a composition (tree, component or string) into a `Target`."""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Tuple

from .. import windows
from ..errors import CompositionError
from ..expr import Expr, Leaf, Window, as_expr
from ..language import parse
from .quadrature import check_rule
from .target import PATHS, Target
from .terms import Term, covered, flatten, leaf_components, merge


def compile(expr, components: Optional[dict] = None, /, *, path: str = "line", points: int = 0,
            chunk_rows: Optional[int] = None, rule: str = "trapezoid",
            event_shape: Optional[Sequence[int]] = None, **more) -> Target:
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
        event_shape: the shape of one sample: the canvas of windowed expressions
            (docs/windows.md); by default the shape the unwindowed components declare.
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

    canvas = _canvas(expr, event_shape)
    terms = merge(flatten(expr, 1.0, None if canvas is None else windows.full_box(canvas), canvas))
    if not terms:
        raise CompositionError(f"'{expr}': every weight cancels, nothing is left to sample")
    sources = leaf_components(terms)
    schedule = sources[0].schedule
    for c in sources[1:]:
        if not c.schedule.same_as(schedule):
            raise ValueError(f"schedule: components '{sources[0].name}' ({schedule!r}) and "
                             f"'{c.name}' ({c.schedule!r}) use different noise schedules")
    if canvas is not None:
        _check_coverage(terms, canvas)
    return Target(expr, terms, schedule, canvas, path, int(points), chunk_rows, rule)


def _canvas(expr: Expr, event_shape: Optional[Sequence[int]]) -> Optional[Tuple[int, ...]]:
    """The event shape of the target: `event_shape` if given, else the one sample shape that
    the components outside every window declare (checked to agree either way); None when
    nothing declares one. Windows need a canvas."""
    canvas = None
    if event_shape is not None:
        try:
            canvas = tuple(int(d) for d in event_shape)
        except (TypeError, ValueError):
            raise ValueError(f"event_shape: expected a tuple of sizes, got {event_shape!r}") from None
        if not canvas or any(d < 1 for d in canvas):
            raise ValueError(f"event_shape: sizes must be ≥ 1, got {canvas}")
    first, has_windows = None, False
    stack = [expr]
    while stack:                          # iterative: long products must not recurse
        node = stack.pop()
        if isinstance(node, Window):
            has_windows = True
            continue
        if isinstance(node, Leaf):
            shape = getattr(node.component, "event_shape", None)
            if shape is None:
                continue
            shape = tuple(shape)
            if canvas is None:
                canvas, first = shape, node.name
            elif shape != canvas:
                if first is None:
                    raise ValueError(f"event_shape: the canvas {canvas} differs from the sample "
                                     f"shape {shape} of component '{node.name}', which sees it "
                                     f"whole (window it, e.g. {node.name}[...])")
                raise ValueError(f"event_shape: components '{first}' {canvas} and '{node.name}' "
                                 f"{shape} have different sample shapes")
            continue
        stack.extend(reversed(node.children()))
    if has_windows and canvas is None:
        raise CompositionError(f"'{expr}' has windows, so it needs the shape of the canvas: "
                               "pass event_shape=(...) to compose.compile")
    return canvas


def _check_coverage(terms: List[Term], canvas: Tuple[int, ...]) -> None:
    """Refuse canvas coordinates that no factor covers: their score would be zero, and chains
    would drift there without bound (docs/windows.md)."""
    mask = covered(terms, canvas)
    if bool(mask.all()):
        return
    boxes = windows.boxes_of(~mask)
    shown = ", ".join(windows.format_box(b) for b in boxes[:8])
    if len(boxes) > 8:
        shown += f" and {len(boxes) - 8} more"
    raise CompositionError(f"canvas coordinates covered by no factor: {shown} (canvas "
                           f"{canvas}); their score would be zero and the chains would drift "
                           "there without bound: cover them with a window of some factor")
