"""`compile`: a composition (tree, component or string) into a `Target`.

Options and bindings share the keyword namespace of `compile`: ``compile("p * q", p=p, q=q,
points=3)``. The options are compile's keyword-only parameters (`OPTIONS`, read from its
signature, so a new option is known everywhere the moment it is added); every other keyword
must name a component or guidance variable of the composition string, and a keyword that does
neither is an error listing both.
"""
from __future__ import annotations

import difflib
import inspect
import numbers
from collections.abc import Mapping
from typing import List, Optional, Sequence, Tuple

from .. import windows
from ..components.base import check_event_shape
from ..errors import CompositionError, UnknownKeywordError
from ..expr import Expr, Guidance, Leaf, Window, as_expr, short
from ..language import parse
from ..schedule import Schedule
from .quadrature import check_rule, lobatto
from .target import PATHS, Target
from .terms import Term, check_names, covered, flatten, leaf_components, merge


def compile(expr, components: Optional[dict] = None, /, *, path: str = "line", points: int = 0,
            chunk_rows: Optional[int] = None, rule: str = "trapezoid",
            event_shape: Optional[Sequence[int]] = None, levels=None, **more) -> Target:
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
        chunk_rows: most rows per call of a score-only network (a call that stacks k windows
            or conditions takes R // k chains, at least one). None: chain batches whole, and
            integration points in one call per term on accelerators, one point per call on CPU.
        event_shape: the shape of one sample: the canvas of windowed expressions
            (docs/windows.md); by default the shape the unwindowed components declare.
        levels: sample on fewer levels than the components' common training schedule: an
            int S (S evenly spaced training levels ending at T) or an increasing sequence of
            training levels (`Schedule.respaced`), or such a respaced schedule itself. The
            target's schedule is then the respaced
            one (its β's drive the reverse step and the step sizes), and at its level i every
            component is evaluated at its training level τ_i: networks are called with τ_i,
            analytic components use ᾱ_{τ_i}, the respaced ᾱ_i (docs/pretrained.md).
        components, **more: name → component bindings when `expr` is a string.
    Returns:
        a Target with `score`, `evaluate`, `log_ratio`, `log_ratio_curve` and `plan`.
    """
    source = expr if isinstance(expr, str) else None
    if source is not None:
        if components is not None and not isinstance(components, Mapping):
            raise CompositionError(f"components: expected a mapping of names to components, got "
                                   f"{type(components).__name__}")
        if more:
            _check_keywords(source, more)
        expr = parse(source, components, **more)
    else:
        if more:
            raise UnknownKeywordError(_unknown_keywords(list(more), (), "the composition is not a string, "
                                              "so keywords are options only"))
        if components:
            raise ValueError("components: bindings are only used when expr is a composition string")
    expr = as_expr(expr)
    if path not in PATHS:
        raise ValueError(f"path: must be one of {', '.join(PATHS)}, got {path!r}")
    if isinstance(points, bool) or not isinstance(points, numbers.Integral) or points < 0:
        raise ValueError(f"points: number of interior integration points must be an integer ≥ 0, got {points!r}")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, numbers.Integral)
                                   or chunk_rows < 1):
        raise ValueError(f"chunk_rows: must be None or an integer ≥ 1, got {chunk_rows!r}")
    if check_rule(rule) == "lobatto":
        lobatto(int(points))               # build (and cache) the rule now: its errors show here

    canvas = _canvas(expr, event_shape)
    try:
        check_names(expr)
        terms = merge(flatten(expr, 1.0, None if canvas is None else windows.full_box(canvas), canvas))
    except CompositionError as error:
        if source is None or error.source is not None:
            raise
        raise CompositionError(error.message, source, error.span) from None
    if not terms:
        raise CompositionError(f"'{short(expr)}': every weight cancels, nothing is left to sample")
    sources = leaf_components(terms)
    schedule = sources[0].schedule
    for c in sources[1:]:
        if not c.schedule.same_as(schedule):
            hint = ""
            if c.schedule.training.same_as(schedule.training):
                hint = ("; build every component on the training schedule and sample on fewer "
                        "levels with compile(..., levels=...)")
            raise ValueError(f"schedule: components '{sources[0].name}' ({schedule!r}) and "
                             f"'{c.name}' ({c.schedule!r}) use different noise schedules{hint}")
    if canvas is not None:
        _check_coverage(terms, canvas)
    component_levels = None
    if levels is not None:
        if schedule.is_respaced:
            raise ValueError(f"levels: the components are on a respaced schedule ({schedule!r}); "
                             f"build them on the training schedule ({schedule.training!r}) and give "
                             "levels= here")
        if isinstance(levels, Schedule):                 # a respacing of the training schedule
            if not levels.training.same_as(schedule):
                raise ValueError(f"levels: {levels!r} is not a respacing of the components' "
                                 f"schedule {schedule!r}")
            levels = levels.network_levels
        schedule = schedule.respaced(levels)
        component_levels = schedule.network_levels.tolist()
    return Target(expr, terms, schedule, canvas, path, int(points), chunk_rows, rule,
                  component_levels)


def _canvas(expr: Expr, event_shape: Optional[Sequence[int]]) -> Optional[Tuple[int, ...]]:
    """The event shape of the target: `event_shape` if given, else the one sample shape that
    the components outside every window declare (checked to agree either way); None when
    nothing declares one. Windows need a canvas."""
    canvas = None
    if event_shape is not None:
        canvas = check_event_shape(event_shape)
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
                               "pass event_shape=(...) to compose.compile (--event-shape "
                               "on the command line)")
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


# compile's options: its keyword-only parameters.
OPTIONS = tuple(name for name, parameter in inspect.signature(compile).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY)


def _check_keywords(source: str, keywords: dict) -> None:
    """Every keyword binding names a component or guidance variable of `source`."""
    expr = parse(source)
    names = {leaf.name for leaf in expr.leaves()}
    names.update(c.variable for node in expr.nodes() if isinstance(node, Guidance)
                 for c in node.conditions)
    unused = [k for k in keywords if k not in names]
    if unused:
        raise UnknownKeywordError(_unknown_keywords(unused, sorted(names), "names in the composition"))


def _unknown_keywords(unknown, names, what: str) -> str:
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(OPTIONS) + list(names), n=1)
        described.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    head = "unknown keyword " if len(unknown) == 1 else "unknown keywords "
    text = head + ", ".join(described) + "; compile's options: " + ", ".join(OPTIONS)
    if names:
        text += f"; {what}: " + ", ".join(names)
    elif what:
        text += f" ({what})"
    return text
