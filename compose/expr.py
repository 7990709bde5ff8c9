"""Expression trees for compositions of distributions.

A composition is a frozen tree of nodes. The Python operators on components and nodes build it
(``p * q ** 0.5 / r``), and so does the composition language (``compose.parse``): both produce
the same node types, so one compiler serves both.

Node types and the unnormalised density each one denotes at a noise level t
(docs/algebra.md, section 3):

=============  ==========================  =============================================
node           written                     log π_t
=============  ==========================  =============================================
``Leaf``       ``p`` or ``p(class=7)``     log p_t(x)  (a component, maybe conditioned)
``Product``    ``a * b``                   log a + log b
``Quotient``   ``a / b``                   log a − log b
``Power``      ``a ** w``                  w · log a
``Mixture``    ``a + b + c``               logsumexp(log a, log b, log c) − log 3
``Guidance``   ``a | class=7 @ 3``         log a + 3 · log p_t(class = 7 | x)
``Window``     ``a[:, 0:8, 4:12]``         log a(x[:, 0:8, 4:12])  (docs/windows.md)
=============  ==========================  =============================================

Leaves refer to components by name. A leaf built by the parser has ``component=None`` until
`bind` attaches components; a leaf built from a component object carries it already.
Equality is structural (names, numbers, conditions) plus identity of the bound components, so
``parse(str(e), **components) == e``.

Long products are normal (many prompts, many windows) and build trees thousands of nodes deep,
so nothing here recurses over a tree: printing, equality, hashing and `leaves` walk it with an
explicit stack. A node type says what it is through three small methods, `children`, `_own`
(its data besides the children) and `_parts` (how it prints), and inherits the rest.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping, Optional, Tuple, Union

from . import windows
from .errors import CompositionError

ConditionValue = Union[int, float, str]

# Binding strength of each node when printed; a child binding looser than its slot gets parens.
_GUIDANCE, _MIXTURE, _PRODUCT, _POWER, _ATOM = range(5)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def format_number(value: float) -> str:
    """Shortest text that reads back as the same float (integers without a decimal point)."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _format_value(value: ConditionValue) -> str:
    """A condition value as the language writes it: a bare identifier, a double-quoted string
    (backslash escapes '\\' and '"'), an int, or a float that keeps its point (7.0 stays float)."""
    if isinstance(value, str):
        if _IDENTIFIER.match(value):
            return value
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(float(value)) if isinstance(value, float) else str(value)


def short_number(value: Any) -> str:
    """A value for a message: an int written out when short, else its first digits and its
    length (10**400 is too large for a float, so '%g' cannot show it); anything else its repr,
    cut to 60 characters."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        digits = str(abs(int(value)))
        if len(digits) > 20:
            return f"{'-' if value < 0 else ''}{digits[:4]}… (an integer of {len(digits)} digits)"
    return f"{value!r:.60}"


def _check_real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = ""
        if isinstance(value, Expr) or hasattr(value, "as_leaf"):
            hint = " (an exponent is a number; a product of powers is written p ** a * q ** b)"
        elif callable(getattr(value, "item", None)):
            hint = " (a Python or NumPy number; write float(w) for a tensor w)"
        raise CompositionError(f"{what} must be a real number, got {value!r:.60}{hint}")
    try:
        number = float(value)
    except OverflowError:                       # an int beyond the floats, 10**400
        number = math.inf
    if not math.isfinite(number):
        raise CompositionError(f"{what} must be finite, got {short_number(value)}")
    return number


def check_condition_value(variable: str, value: Any, what: str) -> ConditionValue:
    """`value` as a condition value (int, float or str), or a CompositionError saying why not:
    a bool or another type, or a non-finite float. (What range a component accepts is its own
    check, `Component.check_conditions`, made when compiling.)"""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numbers.Real, str)):
        raise CompositionError(
            f"{what}: value of condition '{variable}' must be an int, float or str, got {value!r:.60}")
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        value = float(value)
    except OverflowError:                       # a Real type beyond the floats
        value = math.inf
    if not math.isfinite(value):
        raise CompositionError(f"{what}: value of condition '{variable}' must be finite, got {value!r}")
    return value


def _check_conditions(conditions: Any, what: str) -> Tuple[Tuple[str, ConditionValue], ...]:
    items = tuple(conditions.items()) if isinstance(conditions, Mapping) else tuple(conditions)
    seen = set()
    for variable, value in items:
        if not isinstance(variable, str) or not _IDENTIFIER.match(variable):
            raise CompositionError(f"{what}: condition variable must be an identifier, got {variable!r}")
        if variable in seen:
            raise CompositionError(f"{what}: condition '{variable}' is given twice")
        seen.add(variable)
    return tuple((v, check_condition_value(v, x, what)) for v, x in items)


_GUIDANCE_FORMS = ("expr | clf.condition(7), expr | (clf.condition(7), style.condition(2)) or "
                   "expr.guide(clf.condition(7), scale=3) (the language's expr | class=7 @ 3)")
_GUIDANCE_FORM = "guidance needs a condition bound to a classifier: " + _GUIDANCE_FORMS

_NO_SUBTRACTION = ("distributions do not subtract: p / q subtracts log-densities "
                   "(log p − log q), p ** -1 negates one, and p + q is a mixture")


def guidance_conditions(conditions: Any) -> Tuple["Condition", ...]:
    """The conditions of ``expr | conditions``: one `Condition`, or a tuple or list of them;
    anything else (a number, a string, a classifier, None) is a CompositionError showing the
    form."""
    if isinstance(conditions, Condition):
        return (conditions,)
    if isinstance(conditions, (tuple, list)) and not conditions:
        raise CompositionError("guidance needs at least one condition, e.g. " + _GUIDANCE_FORMS)
    if isinstance(conditions, (tuple, list)):
        for c in conditions:
            if not isinstance(c, Condition):
                break
        else:
            return tuple(conditions)
        wrong = c
    else:
        wrong = conditions
    if getattr(wrong, "is_classifier", False):
        variable = getattr(wrong, "variable", "class")
        raise CompositionError(f"guidance takes a condition of the classifier, not the classifier: "
                               f"write expr | {getattr(wrong, 'name', 'clf')}.condition(value) "
                               f"(the language's expr | {variable}=value)")
    raise CompositionError(f"{_GUIDANCE_FORM}; got {short_number(wrong)}")


class Expr:
    """Base of all composition nodes. Python operators build new nodes; nothing is evaluated."""

    precedence = _ATOM
    __iter__ = None           # indexing makes windows; it must not make expressions iterable

    def __mul__(self, other: Any) -> "Product":
        return Product(self, as_expr(other))

    def __rmul__(self, other: Any) -> "Product":
        return Product(as_expr(other), self)

    def __truediv__(self, other: Any) -> "Quotient":
        return Quotient(self, as_expr(other))

    def __rtruediv__(self, other: Any) -> "Quotient":
        return Quotient(as_expr(other), self)

    def __pow__(self, exponent: Any) -> "Power":
        return Power(self, _check_real(exponent, "exponent"))

    def __add__(self, other: Any) -> "Mixture":
        left = self.components if isinstance(self, Mixture) else (self,)
        return Mixture(left + (as_expr(other),))

    def __or__(self, conditions: Any) -> "Guidance":
        """``expr | clf.condition(7)`` or ``expr | (c1, c2)``: classifier guidance with scale 1."""
        return Guidance(self, guidance_conditions(conditions), 1.0)

    def __ror__(self, other: Any):
        raise CompositionError(f"guidance is written expression | condition, the expression "
                               f"first: got {short_number(other)} | '{short(self)}'; "
                               + _GUIDANCE_FORM)

    def __sub__(self, other: Any):
        raise CompositionError(_NO_SUBTRACTION)

    def __rsub__(self, other: Any):
        raise CompositionError(_NO_SUBTRACTION)

    def __neg__(self):
        raise CompositionError(_NO_SUBTRACTION)

    def __matmul__(self, other: Any):
        raise CompositionError("'@' is the guidance scale of the language (expr | class=7 @ 3); "
                               "in Python write expr.guide(clf.condition(7), scale=3)")

    __rmatmul__ = __matmul__

    def __getitem__(self, key: Any) -> "Window":
        """``expr[:, 0:8, 4:12]``: this expression seen through a window of the canvas."""
        return Window(self, windows.normalise(key))

    def guide(self, *conditions: "Condition", scale: float = 1.0) -> "Guidance":
        """Classifier guidance: add ``scale · Σ log p_t(variable = value | x)`` to log π."""
        if len(conditions) == 1 and isinstance(conditions[0], (tuple, list)):
            conditions = tuple(conditions[0])
        return Guidance(self, guidance_conditions(conditions), scale)

    def leaves(self) -> Iterator["Leaf"]:
        """Every leaf in the tree, left to right."""
        stack = [self]
        while stack:
            node = stack.pop()
            if isinstance(node, Leaf):
                yield node
            else:
                stack.extend(reversed(node.children()))

    def nodes(self) -> Iterator["Expr"]:
        """Every node in the tree, parents before children, left to right."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children()))

    def children(self) -> Tuple["Expr", ...]:
        return ()

    def _own(self) -> Tuple:
        """The node's data besides its children (compared by `==`, hashed)."""
        return ()

    def _parts(self) -> Tuple:
        """How the node prints: text, and (child, slot) pairs; a child binding looser than its
        slot is put in parentheses."""
        raise NotImplementedError

    def __str__(self) -> str:
        out, stack = [], [self]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                out.append(item)
                continue
            for part in reversed(item._parts()):
                if isinstance(part, str):
                    stack.append(part)
                else:
                    child, slot = part
                    stack.extend((")", child, "(") if child.precedence < slot else (child,))
        return "".join(out)

    def __eq__(self, other: Any) -> bool:
        pairs = [(self, other)]
        while pairs:
            a, b = pairs.pop()
            if a is b:
                continue
            if type(a) is not type(b) or a._own() != b._own():
                return False
            ca, cb = a.children(), b.children()
            if len(ca) != len(cb):
                return False
            pairs.extend(zip(ca, cb))
        return True

    def __ne__(self, other: Any) -> bool:
        return not self == other

    def __hash__(self) -> int:
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple((type(node).__name__, node._own(), len(node.children()))
                                for node in self.nodes()))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


# How deeply mixtures may nest inside mixtures: compiling and evaluating a mixture recurses
# into its branches. Products, quotients, powers and guidance may nest to any depth.
MAX_MIXTURE_NESTING = 64


def mixture_nesting(expr: Expr) -> int:
    """How many mixtures lie inside one another at the deepest point of `expr`."""
    deepest, stack = 0, [(expr, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mixture):
            depth += 1
            deepest = max(deepest, depth)
        stack.extend((child, depth) for child in node.children())
    return deepest


def short(expr: Any, limit: int = 80) -> str:
    """`str(expr)` cut to `limit` characters for messages (long products print long)."""
    text = str(expr)
    return text if len(text) <= limit else text[:limit - 25] + " … " + text[-20:]


def as_expr(value: Any) -> Expr:
    """The expression for `value`: nodes pass through, components become leaves."""
    if isinstance(value, Expr):
        return value
    to_leaf = getattr(value, "as_leaf", None)
    if callable(to_leaf):
        return to_leaf()
    kind = type(value).__name__
    raise CompositionError(
        f"cannot compose {'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}: expected a "
        "component or an expression (numbers only appear as exponents, e.g. p ** 0.5)")


@dataclass(frozen=True, repr=False, eq=False)
class Leaf(Expr):
    """A component by name, optionally conditioned (classifier-free guidance): ``p(class=7)``.

    Args:
        name: identifier the component is bound to.
        component: the bound component, or None before `bind`.
        conditions: ``((variable, value), ...)`` passed to the component's network.
        span: where the leaf was written, for error messages; not part of equality.
    """

    name: str
    component: Any = None
    conditions: Tuple[Tuple[str, ConditionValue], ...] = ()
    span: Any = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _IDENTIFIER.match(self.name):
            raise CompositionError(f"component name must be an identifier, got {self.name!r}")
        object.__setattr__(self, "conditions", _check_conditions(self.conditions, f"'{self.name}'"))

    def _own(self) -> Tuple:
        return (self.name, self.conditions, id(self.component))

    def given(self, conditions: Optional[Mapping[str, ConditionValue]] = None,
              **more: ConditionValue) -> "Leaf":
        """The same component evaluated with conditions, e.g. ``p.given({"class": 7})``."""
        if conditions is not None and not isinstance(conditions, Mapping):
            raise CompositionError(f"'{self.name}': conditions are a mapping of variables to "
                                   f"values, e.g. {self.name}.given({{'class': 7}}) or "
                                   f"{self.name}.given(style=2); got {short_number(conditions)}")
        merged = dict(self.conditions)
        for variable, value in list((conditions or {}).items()) + list(more.items()):
            if variable in merged:
                raise CompositionError(f"'{self.name}': condition '{variable}' is given twice")
            merged[variable] = value
        return replace(self, conditions=tuple(merged.items()))

    def _parts(self) -> Tuple:
        if not self.conditions:
            return (self.name,)
        inner = ", ".join(f"{v}={_format_value(x)}" for v, x in self.conditions)
        return (f"{self.name}({inner})",)


@dataclass(frozen=True, repr=False, eq=False)
class Product(Expr):
    """``left * right``: log-densities add, scores add."""

    left: Expr
    right: Expr
    precedence = _PRODUCT

    def children(self):
        return (self.left, self.right)

    def _parts(self):
        # '*' and '/' are left-associative: the right operand needs parens at equal precedence.
        return ((self.left, _PRODUCT), " * ", (self.right, _POWER))


@dataclass(frozen=True, repr=False, eq=False)
class Quotient(Expr):
    """``left / right``: the right operand enters with weight −1 (negation, as in R3)."""

    left: Expr
    right: Expr
    precedence = _PRODUCT

    def children(self):
        return (self.left, self.right)

    def _parts(self):
        return ((self.left, _PRODUCT), " / ", (self.right, _POWER))


@dataclass(frozen=True, repr=False, eq=False)
class Power(Expr):
    """``base ** exponent`` with a real exponent: weights multiply through nesting."""

    base: Expr
    exponent: float
    precedence = _POWER

    def __post_init__(self):
        object.__setattr__(self, "exponent", _check_real(self.exponent, "exponent"))

    def children(self):
        return (self.base,)

    def _own(self):
        return (self.exponent,)

    def _parts(self):
        # The exponent is a number, so the base must be an atom: (a ** 2) ** 3 keeps its parens.
        return ((self.base, _ATOM), f" ** {format_number(self.exponent)}")


@dataclass(frozen=True, repr=False, eq=False)
class Mixture(Expr):
    """``a + b + ...``: equal-weight mixture, log π = logsumexp_i log p_i − log n.

    Needs absolute log-densities, so every branch must consist of analytic or energy
    components (the compiler refuses score-only branches).
    """

    components: Tuple[Expr, ...]
    precedence = _MIXTURE

    def __post_init__(self):
        components = tuple(self.components)
        if len(components) < 2:
            raise CompositionError("a mixture needs at least two components")
        object.__setattr__(self, "components", components)

    def children(self):
        return self.components

    def _parts(self):
        parts = []
        for c in self.components:
            parts.extend((" + ", (c, _PRODUCT)))
        return tuple(parts[1:])


@dataclass(frozen=True)
class Condition:
    """``variable = value`` in a guidance clause, with the classifier for that variable.

    The classifier is None until bound (the parser leaves it unbound).
    """

    variable: str
    value: ConditionValue
    classifier: Any = None
    span: Any = None

    def __post_init__(self):
        if not isinstance(self.variable, str) or not _IDENTIFIER.match(self.variable):
            raise CompositionError(f"guidance: condition variable must be an identifier, got {self.variable!r}")
        object.__setattr__(self, "value", check_condition_value(self.variable, self.value, "guidance"))

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, Condition) and self.variable == other.variable
                and self.value == other.value and self.classifier is other.classifier)

    def __hash__(self) -> int:
        return hash((self.variable, self.value, id(self.classifier)))

    def __str__(self) -> str:
        return f"{self.variable}={_format_value(self.value)}"

    def __matmul__(self, scale: Any):
        name = getattr(self.classifier, "name", "clf")
        raise CompositionError(f"a guidance scale is given with guide() in Python: "
                               f"expr.guide({name}.condition({_format_value(self.value)}), "
                               f"scale={short_number(scale)}) (the language's "
                               f"expr | {self} @ {short_number(scale)})")


@dataclass(frozen=True, repr=False, eq=False)
class Guidance(Expr):
    """``expr | class=7, style=2 @ scale``: classifier guidance, binding loosest.

    log π = log expr + scale · Σ_c log p_t(c.variable = c.value | x).
    """

    expr: Expr
    conditions: Tuple[Condition, ...]
    scale: float = 1.0
    precedence = _GUIDANCE

    def __post_init__(self):
        if not isinstance(self.expr, Expr):
            raise CompositionError(f"guidance applies to an expression, got {short_number(self.expr)}")
        conditions = guidance_conditions(self.conditions)
        variables = [c.variable for c in conditions]
        for v in variables:
            if variables.count(v) > 1:
                raise CompositionError(f"guidance: condition '{v}' is given twice")
        object.__setattr__(self, "conditions", conditions)
        object.__setattr__(self, "scale", _check_real(self.scale, "guidance scale"))

    def children(self):
        return (self.expr,)

    def _own(self):
        return (self.conditions, self.scale)

    def _parts(self):
        text = " | " + ", ".join(str(c) for c in self.conditions)
        if self.scale != 1.0:
            text += f" @ {format_number(self.scale)}"
        return ((self.expr, _MIXTURE), text)


@dataclass(frozen=True, repr=False, eq=False)
class Window(Expr):
    """``expr[W]``: `expr` seen through the window W of the canvas (docs/windows.md).

    log π(x) = log expr(x[W]); the score of `expr` at the crop is scattered back to W's place
    on the canvas, zero elsewhere. `items` are the normalised slices (`compose.windows`), each
    ``...`` or a pair (start, stop) of non-negative ints or None; bounds are resolved against
    the canvas when the composition is compiled. `span` (where the window was written) is not
    part of equality.
    """

    expr: Expr
    items: Tuple[Any, ...]
    span: Any = field(default=None, compare=False)
    precedence = _ATOM

    def __post_init__(self):
        if not isinstance(self.expr, Expr):
            raise CompositionError(f"a window applies to an expression, got {self.expr!r}")
        object.__setattr__(self, "items", windows.normalise(tuple(self.items)))

    def children(self):
        return (self.expr,)

    def _own(self):
        return (self.items,)

    def _parts(self):
        return ((self.expr, _ATOM), f"[{windows.format_items(self.items)}]")
