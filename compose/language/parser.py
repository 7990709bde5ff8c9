"""Text to expression tree: parse, build nodes, bind names to components.

Three steps, each with one job:

1. the LALR parser (`compose.language.grammar`) turns text into a lark tree, and syntax errors
   into a `CompositionError` labelled by the malformed examples in `SYNTAX_ERRORS`;
2. `_build_nodes` turns the lark tree into frozen `compose.expr` nodes, unbound
   (``Leaf.component`` and ``Condition.classifier`` are None), without recursion: a product of
   thousands of factors is a tree thousands of levels deep;
3. `bind` attaches components and classifiers by name and checks that the result means
   something (no unknown names, classifiers only in guidance, mixtures over log-densities).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from lark import Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_parser_state import ParserState

from .. import windows
from ..errors import CompositionError, Span
from ..expr import (Condition, Expr, Guidance, Leaf, Mixture, Power, Product, Quotient, Window,
                    check_condition_value)
from .grammar import parser

__all__ = ["parse", "bind", "SYNTAX_ERRORS"]

# Syntax error labels, each with malformed inputs that produce it. lark matches a new error
# against these by parser state and then by token type (`UnexpectedInput.match_examples`), so
# every state an error can stop in needs one example here; `{token}` in a label becomes the
# offending token ('q', or end of input). Within a state the first label listed is the fallback,
# so a label that only fits certain tokens comes after the general label for its states.
# The examples double as tests (tests/test_language.py).
_NUMBER_HERE = ("numbers appear only as exponents (p ** 0.5), guidance scales (@ 3) and "
                "condition values (class=7); found {token}")
SYNTAX_ERRORS: Dict[str, Tuple[str, ...]] = {
    "expected a component before {token}": (
        "* p", "/ p", "+ p", "** 2", "| class=7", "@ 3", ", p", "= 3", "(* p)", "()", "(| class=7)"),
    "empty composition: expected a component, e.g. p * q": (
        "", "   ", "# only a comment\n"),
    "missing operand after '*'": ("p *", "p * )", "p * *", "(p *", "(p * )"),
    "missing operand after '/'": ("p /", "p / )", "p / /", "(p /", "(p / )"),
    "missing operand after '+'": ("p +", "p + )", "p + +", "(p +", "(p + )"),
    "the exponent after '**' must be a number, e.g. p ** 0.5; found {token}": (
        "p **", "p ** q", "p ** (2)", "p ** )", "p(class=7) ** q", "(p) ** q"),
    "expected an operator (*, /, **, + or |) before {token}": (
        "p q", "p(class=7) q", "(p) q", "(p) (q)", "p ** 2 q", "p ** 2 (q)", "p , q", "p = 3",
        "p[0:2] q", "p[0:2] (q)", "(p)[0:2] q", "p(class=7)[0:2] q", "p[0:2] ** 2 q",
        "(p q)", "(p(class=7) q)", "((p) q)", "(p ** 2 q)"),
    "the base of '**' must be a name or in parentheses: write (p ** 2) ** 3": (
        "p ** 2 ** 3", "p(class=7) ** 2 ** 3", "(p) ** 2 ** 3", "(p ** 2 ** 3)",
        "p[0:2] ** 2 ** 3"),
    "guidance needs a condition after '|', e.g. p | class=7; found {token}": (
        "p |", "p | )", "p | |", "(p |", "(p | )"),
    "expected a condition variable=value, e.g. class=7; found {token}": (
        "p | class", "p | class 7", "p | class=", "p | class=)", "p | class=7,", "p | class=7, )",
        "p(", "p()", "p(class)", "p(class 7)", "p(class=)", "p(class=7,)", "p(class=7, style)",
        "(p | class", "(p | class=", "(p | class=7,"),
    "expected ',', '@' or the end of the guidance after a condition; found {token}": (
        "p | class=7 q", "p | class=x q", 'p | class="x" q',
        "(p | class=7 q)", "(p | class=x q)", '(p | class="x" q)'),
    "expected the end of the guidance after its scale; found {token}": (
        "p | class=7 @ 2 q", "p | class=7 @ 2 @ 3", "(p | class=7 @ 2 q)"),
    ("guidance cannot be chained: give several conditions to one '|' (p | class=7, style=2) "
     "or add parentheses ((p | class=7) | style=2)"): (
        "p | class=7 | style=2", "p | class=x | style=2", 'p | class="x" | style=2',
        "p | class=7 @ 2 | style=2", "(p | class=7 | style=2)", "(p | class=x | style=2)",
        '(p | class="x" | style=2)', "(p | class=7 @ 2 | style=2)"),
    "the guidance scale after '@' must be a number, e.g. @ 3.0; found {token}": (
        "p | class=7 @", "p | class=7 @ q", "p | class=7 @ )", "(p | class=7 @ q)"),
    "expected ',' or ')' after a condition of a component; found {token}": (
        "p(class=7 style=2)", "p(class=x style=2)", 'p(class="x" style=2)',
        "p(class=7 | style=2)", "p(class=x | style=2)", 'p(class="x" | style=2)'),
    "expected a slice such as 0:8, ':' or '...' in the window; found {token}": (
        "p[]", "p[q]", "p[0:2,]", "p[0:2, q]", "(p)[q]", "p(class=7)[q]", "p[0:2][q]", "p[",
        "p[0:2,"),
    "expected ',' or ']' after a slice; found {token}": (
        "p[0 2]", "p[0 q]", "p[0:2 3]", "p[0:2 q]", "p[... 3]", "p[: q]", "p[0: q]",
        "p[0:2: q]", "p[0:2:1 q]", "p[:2 q]", "p[0:2)", "p[...)"),
    "missing ']'": (
        "p[0:2", "p[...", "p[:", "p[0", "p[0:", "p[0:2:", "p[0:2:1", "p[:2", "p[0:2, ..."),
    "missing ')'": (
        "(p", "(p * q", "((p) * q", "(p | class=7", "(p | class=x", '(p | class="x"',
        "(p | class=7 @ 2", "p(class=7", "p(class=x", 'p(class="x"', "p(class=7, style=2",
        "(p(class=7)", "(p ** 2", "(p + q"),
    "unmatched ')'": (
        ")", "p[0:2])", "p)", "(p))", "p * q)", "p + q)", "p ** 2)", "p(class=7))", "p | class=7)",
        "p | class=x)", 'p | class="x")', "p | class=7 @ 2)"),
    _NUMBER_HERE: ("7", "(7)", "p * 7", "p / 7", "p + 7", "p | 7", "p(7)", "p 7", "(p) 7",
                   "p[0:2] 7"),
    "unmatched ']'": ("]", "p]", "p[0:2]]", "(p])", "p * ]"),
}

_TOKEN_NAMES = {"$END": "end of input"}

# Where an error without a better place is reported: the first character.
_FIRST = Span(1, 1, 0, 1)


def parse(text: str, components: Optional[Mapping[str, Any]] = None, /, **more: Any) -> Expr:
    """Parse a composition; bind names when components are given.

    Args:
        text: the composition, e.g. ``"p(class=7) ** 3 / p ** 2"``.
        components: name -> component (or classifier, for guidance variables); a mapping,
            since names such as ``class`` are Python keywords.
        more: further name=component bindings.

    Returns:
        The expression tree; unbound (``component=None``) when no components are given.

    Raises:
        CompositionError: for any syntax or meaning error, with its position in `text`.
    """
    if not isinstance(text, str):
        raise CompositionError(f"a composition must be a string, got {type(text).__name__}")
    expr = _build(text)
    if components is None and not more:
        return expr
    if components is not None and not isinstance(components, Mapping):
        raise CompositionError(f"components: expected a mapping of names to components, got "
                               f"{type(components).__name__}")
    mapping = dict(components or {})
    for name, value in more.items():
        if name in mapping:
            raise CompositionError(f"'{name}' is bound twice: in the mapping and as a keyword")
        mapping[name] = value
    return bind(expr, mapping, source=text)


def _build(text: str) -> Expr:
    """The unbound expression tree for `text`; every failure becomes a CompositionError."""
    try:
        tree = parser().parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(error, text) from None
    except LarkError as error:  # nothing else is expected; still report it with a position
        raise CompositionError(f"cannot parse composition: {error}", text, _FIRST) from error
    try:
        return _build_nodes(tree)
    except CompositionError as error:
        raise CompositionError(error.message, text, error.span or _FIRST) from None
    except (ValueError, TypeError) as error:  # not expected; still reported with a position
        raise CompositionError(f"cannot build composition: {error}", text, _FIRST) from error


# --------------------------------------------------------------------------------------------
# Syntax errors


def _syntax_error(error: UnexpectedInput, text: str) -> CompositionError:
    """The CompositionError for a lark error: a labelled message at the offending token."""
    if isinstance(error, UnexpectedCharacters):
        span = Span(error.line, error.column, error.pos_in_stream, error.pos_in_stream + 1)
        char = text[error.pos_in_stream]
        if char == '"':
            return CompositionError("unterminated string: missing closing '\"'", text, span)
        if char == "'":
            return CompositionError("unterminated string: missing closing \"'\"", text, span)
        return CompositionError(f"unexpected character {char!r}", text, span)
    if isinstance(error, UnexpectedToken):
        token = error.token
        _normalise_state(error)
        label = error.match_examples(_parse_example, SYNTAX_ERRORS,
                                     token_type_match_fallback=True, use_accepts=False)
        if label is None:
            expected = ", ".join(sorted(_describe_terminal(t) for t in error.expected))
            label = "unexpected {token}; expected " + expected
        return CompositionError(label.format(token=_describe_token(token)), text,
                                _token_span(token))
    return CompositionError(f"cannot parse composition: {error}", text, _FIRST)


def _normalise_state(error: UnexpectedInput) -> None:
    """Compare errors by LALR state alone: lark's ParserState equality also compares stack
    depth, which would make a label depend on how deeply its example is nested."""
    if isinstance(error.state, ParserState):
        error.state = error.state.position


def _parse_example(text: str) -> Any:
    try:
        return parser().parse(text)
    except UnexpectedInput as error:
        _normalise_state(error)
        raise


def _describe_token(token: Token) -> str:
    if token.type in _TOKEN_NAMES:
        return _TOKEN_NAMES[token.type]
    return f"'{token}'" if '"' in token or "'" not in token else f'"{token}"'


def _describe_terminal(name: str) -> str:
    pattern = parser().get_terminal(name).pattern if name != "$END" else None
    if pattern is None:
        return "end of input"
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return {"NAME": "a name", "NUMBER": "a number", "STRING": "a string"}.get(name, name)


def _token_span(token: Token) -> Span:
    """Where `token` is; the end of input is the place right after the last token."""
    if token.type != "$END":
        return Span(token.line, token.column, token.start_pos, token.end_pos)
    if token.end_pos is None:  # no token at all: lark puts the end at the start
        return _FIRST
    return Span(token.end_line, token.end_column, token.end_pos, token.end_pos + 1)


# --------------------------------------------------------------------------------------------
# Building nodes


def _span(meta: Any) -> Optional[Span]:
    if getattr(meta, "empty", True):
        return None
    return Span(meta.line, meta.column, meta.start_pos, meta.end_pos)


def _token_place(token: Token) -> Span:
    return Span(token.line, token.column, token.start_pos, token.end_pos)


_INTEGER = re.compile(r"-?[0-9]+\Z")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _real(token: Token, what: str) -> float:
    value = float(token)
    if value != value or value in (float("inf"), float("-inf")):
        shown = token if len(token) <= 24 else f"{token[:12]}… ({len(token)} characters)"
        raise CompositionError(f"{what} must be finite, got {shown}", span=_token_place(token))
    return value


def _value(variable: str, token: Token):
    """A condition value: int or float for a NUMBER, str for a NAME or a STRING; checked where
    it was written (finite)."""
    if token.type == "NUMBER":
        value = int(token) if _INTEGER.match(token) else _real(token, "a condition value")
    elif token.type == "STRING":  # "..." or '...', the same escapes
        value = _ESCAPE.sub(r"\1", token[1:-1])
    else:
        value = str(token)
    try:
        return check_condition_value(variable, value, f"'{variable}={token}'")
    except CompositionError as error:
        raise CompositionError(error.message, span=_token_place(token)) from None


def _no_repeats(pairs, what: str) -> None:
    seen = set()
    for variable, _, span in pairs:
        if variable in seen:
            raise CompositionError(f"{what}: condition '{variable}' is given twice", span=span)
        seen.add(variable)


class _Builder:
    """Lark tree node -> unbound `compose.expr` node, one method per node name, each given the
    node's position and its children already built. Holds no state; looks up no names."""

    def leaf(self, meta, children):
        name, *arguments = children
        _no_repeats(arguments, f"'{name}'")
        return Leaf(str(name), None, tuple((v, x) for v, x, _ in arguments), span=_span(meta))

    def argument(self, meta, children):
        variable, value = children
        return (str(variable), _value(str(variable), value), _span(meta))

    def condition(self, meta, children):
        variable, value = children
        return Condition(str(variable), _value(str(variable), value), None, span=_span(meta))

    def guidance(self, meta, children):
        expr, *conditions, scale = children
        _no_repeats([(c.variable, c.value, c.span) for c in conditions], "guidance")
        return Guidance(expr, tuple(conditions),
                        1.0 if scale is None else _real(scale, "the guidance scale"))

    def mixture(self, meta, children):
        return Mixture(tuple(children))

    def product(self, meta, children):
        return Product(*children)

    def quotient(self, meta, children):
        return Quotient(*children)

    def power(self, meta, children):
        base, exponent = children
        return Power(base, _real(exponent, "the exponent"))

    def window(self, meta, children):
        expr, *slices = children
        ellipses = [span for item, span in slices if item is Ellipsis]
        if len(ellipses) > 1:
            raise CompositionError("a window may contain '...' only once", span=ellipses[1])
        return Window(expr, tuple(item for item, _ in slices), span=_span(meta))

    def bounds(self, meta, children):
        start, stop, step = children
        if step is not None and step.children[0] is not None:
            value = step.children[0]
            if not (_INTEGER.match(value) and int(value) == 1):
                raise CompositionError(f"only steps of 1 are supported in a window, got step "
                                       f"{value}", span=_token_place(value))
        start, stop = _window_bound(start), _window_bound(stop)
        empty = windows.empty_window(start, stop)
        if empty:
            raise CompositionError(empty, span=_span(meta))
        return (start, stop), _span(meta)

    def index(self, meta, children):
        (token,) = children
        place = _token_place(token)
        if _INTEGER.match(token):
            raise CompositionError(windows.index_hint(int(token)), span=place)
        raise CompositionError(f"expected a slice such as 0:8, ':' or '...', got {token}",
                               span=place)

    def ellipsis(self, meta, children):
        return Ellipsis, _span(meta)


def _window_bound(token: Optional[Token]) -> Optional[int]:
    """A window bound: a non-negative integer, or None where it was left out."""
    if token is None:
        return None
    if not _INTEGER.match(token):
        raise CompositionError(f"window bounds must be non-negative integers, got {token}",
                               span=_token_place(token))
    if int(token) < 0:
        raise CompositionError(f"window bounds must be non-negative integers (windows are "
                               f"counted from the start of the canvas), got {token}",
                               span=_token_place(token))
    return int(token)


_BUILDER = _Builder()


def _build_nodes(tree: Tree) -> Expr:
    """Build the expression bottom-up with an explicit stack (children before parents)."""
    built: Dict[int, Any] = {}
    stack = [(tree, False)]
    while stack:
        node, children_done = stack.pop()
        if not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(node.children) if isinstance(c, Tree))
            continue
        children = [built.pop(id(c)) if isinstance(c, Tree) else c for c in node.children]
        method = getattr(_BUILDER, str(node.data), None)
        # a rule with no method stays a lark node of built children, as a Transformer leaves it
        built[id(node)] = (Tree(node.data, children, node.meta) if method is None
                           else method(node.meta, children))
    return built[id(tree)]


# --------------------------------------------------------------------------------------------
# Binding


def bind(expr: Expr, mapping: Mapping[str, Any], source: Optional[str] = None) -> Expr:
    """Attach components and classifiers by name.

    Args:
        expr: an expression tree, e.g. from `parse` without components.
        mapping: name -> component for leaves (a name bound to an `Expr` is substituted whole),
            and guidance variable -> classifier (an object with ``is_classifier = True``).
        source: the text `expr` was parsed from, so errors can point into it.

    Returns:
        A new tree with ``Leaf.component`` and ``Condition.classifier`` set. Leaves and
        conditions already bound and not named in `mapping` are kept.

    Raises:
        CompositionError: unknown names (all of them at once), a classifier used as a factor,
            guidance without a classifier, or a mixture over a score-only component.
    """
    mapping = dict(mapping)

    def fail(message: str, span: Optional[Span]):
        return CompositionError(message, source, span)

    for name in mapping:
        if not isinstance(name, str):
            raise fail(f"components: names must be strings, got the key {name!r:.40} "
                       f"({type(name).__name__})", None)

    unknown: Dict[str, Optional[Span]] = {}
    for leaf in expr.leaves():
        if leaf.component is None and leaf.name not in mapping:
            unknown.setdefault(leaf.name, leaf.span)
    if unknown:
        first = next(iter(unknown.values()))
        raise fail(_unknown_names(list(unknown), sorted(mapping)), first)

    def bind_leaf(leaf: Leaf) -> Expr:
        if leaf.name not in mapping:
            return leaf
        value = mapping[leaf.name]
        if _is_classifier(value):
            raise fail(f"'{leaf.name}' is bound to a classifier, which guides a composition but "
                       f"is not a factor of it: write expr | {leaf.name}=value", leaf.span)
        if not isinstance(value, Expr):
            return replace(leaf, component=value)
        if leaf.conditions:
            if not isinstance(value, Leaf):
                raise fail(f"'{leaf.name}' is bound to the expression {value}, which cannot take "
                           "conditions", leaf.span)
            value = value.given(dict(leaf.conditions))
        return _at(value, leaf.span)

    def bind_condition(condition: Condition) -> Condition:
        if condition.classifier is not None and condition.variable not in mapping:
            return condition
        classifier = mapping.get(condition.variable)
        if not _is_classifier(classifier):
            message = (f"guidance on '{condition.variable}' needs a classifier bound to "
                       f"'{condition.variable}'")
            if condition.variable in mapping:
                message += f", not a {type(classifier).__name__}"
            raise fail(message, condition.span)
        return replace(condition, classifier=classifier)

    bound = _rebuild(expr, bind_leaf, bind_condition)
    _check_mixtures(bound, fail)
    return bound


def _is_classifier(value: Any) -> bool:
    return getattr(value, "is_classifier", False) is True


def _unknown_names(names: List[str], known: List[str]) -> str:
    described = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        described.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    head = "unknown name " if len(names) == 1 else "unknown names "
    return head + ", ".join(described) + "; known names: " + (", ".join(known) or "none")


def _check_mixtures(expr: Expr, fail: Callable[[str, Optional[Span]], CompositionError]) -> None:
    """Refuse a mixture with a score-only component anywhere inside it."""
    for node in expr.nodes():
        if isinstance(node, Mixture):
            for leaf in node.leaves():
                if getattr(leaf.component, "has_log_density", True) == False:  # noqa: E712
                    raise fail(f"mixture needs log-densities: '{leaf.name}' is a score-only "
                               "component; use analytic or energy components in a mixture", leaf.span)


def _rebuild(expr: Expr, on_leaf: Callable[[Leaf], Expr],
             on_condition: Callable[[Condition], Condition]) -> Expr:
    """A copy of `expr` with every leaf and guidance condition passed through the callbacks;
    bottom-up with an explicit stack, so trees of any depth."""
    built: Dict[int, Expr] = {}
    stack = [(expr, False)]
    while stack:
        node, children_done = stack.pop()
        if isinstance(node, Leaf):
            built[id(node)] = on_leaf(node)
            continue
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(node.children()))
            continue
        kids = [built[id(child)] for child in node.children()]
        if isinstance(node, (Product, Quotient)):
            built[id(node)] = type(node)(*kids)
        elif isinstance(node, Power):
            built[id(node)] = Power(kids[0], node.exponent)
        elif isinstance(node, Mixture):
            built[id(node)] = Mixture(tuple(kids))
        elif isinstance(node, Guidance):
            built[id(node)] = Guidance(kids[0], tuple(on_condition(c) for c in node.conditions),
                                       node.scale)
        elif isinstance(node, Window):
            built[id(node)] = Window(kids[0], node.items, node.span)
        else:
            raise CompositionError(f"cannot bind a {type(node).__name__}")
    return built[id(expr)]


def _at(expr: Expr, span: Optional[Span]) -> Expr:
    """`expr` with every position moved to `span` (a substituted sub-expression is reported
    where its name was written)."""
    return _rebuild(expr, lambda leaf: replace(leaf, span=span),
                    lambda condition: replace(condition, span=span))
