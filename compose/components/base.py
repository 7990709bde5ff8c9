"""The base class of composition leaves and how conditions reach a network.

A component is a noised density family p_t over levels t = 1..T: it gives the score
s_t(x) = ∇ log p_t(x) of a batch x of shape (N, *event_shape) and, when it knows one, log p_t(x)
up to a constant. Python operators on components build expression trees (compose.expr).
"""
from __future__ import annotations

import itertools
import numbers
from typing import Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..expr import Condition, ConditionValue, Expr, Leaf, as_expr
from ..schedule import Schedule

Conditions = Tuple[Tuple[str, ConditionValue], ...]
_names = itertools.count(1)


class Component(nn.Module):
    """Base class of composition leaves; Python operators build expression trees from it.

    Subclasses implement `score` and, when `has_log_density`, `log_density_and_score`.
    """

    has_log_density: bool = False
    is_classifier: bool = False
    # True: `stacked_score` evaluates several conditions in one network call, so the compiler
    # puts score-only terms of this component that differ only in conditions into one call.
    stacks_conditions: bool = False
    kind: str = "component"

    def __init__(self, schedule: Schedule, name: Optional[str] = None,
                 event_shape: Optional[Sequence[int]] = None):
        super().__init__()
        if not isinstance(schedule, Schedule):
            raise ValueError(f"schedule: expected a compose.Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.name = name if name is not None else f"{self._default_prefix}{next(_names)}"
        if event_shape is not None:
            event_shape = check_event_shape(event_shape)
        self.event_shape = event_shape

    _default_prefix = "p"

    # -- the interface -----------------------------------------------------------------
    def score(self, x: torch.Tensor, t: int, conditions: Conditions = ()) -> torch.Tensor:
        """∇_x log p_t(x) for a batch x of shape (N, *event_shape); returns the shape of x."""
        raise NotImplementedError

    def log_density_and_score(self, x: torch.Tensor, t: int,
                              conditions: Conditions = ()) -> Tuple[torch.Tensor, torch.Tensor]:
        """(log p_t(x) up to a constant, of shape (N,); the score, of the shape of x)."""
        raise TypeError(f"{self.name}: a {type(self).__name__} has no log-density")

    def log_density(self, x: torch.Tensor, t: int, conditions: Conditions = ()) -> torch.Tensor:
        """log p_t(x) up to a constant, shape (N,)."""
        return self.log_density_and_score(x, t, conditions)[0]

    def check_conditions(self, conditions: Conditions) -> None:
        """Raise ValueError if this component cannot be evaluated with `conditions`.

        `compile` calls it once per leaf, so a bad condition is reported where it was written
        instead of at the first evaluation. The base class accepts any conditions.
        """

    def stacked_score(self, x: torch.Tensor, t: int,
                      conditions_list: Sequence[Conditions]) -> torch.Tensor:
        """Scores of k blocks of rows, each under its own conditions: x has k · N rows, block j
        (rows j·N … (j+1)·N − 1) is scored under ``conditions_list[j]``. Components with
        ``stacks_conditions = True`` do this in one network call; this default scores block
        by block."""
        blocks = x.chunk(len(conditions_list))
        return torch.cat([self.score(block, t, conditions)
                          for block, conditions in zip(blocks, conditions_list)])

    # -- composition -------------------------------------------------------------------
    def as_leaf(self) -> Leaf:
        return Leaf(self.name, self)

    def given(self, conditions: Optional[Mapping[str, ConditionValue]] = None,
              **more: ConditionValue) -> Leaf:
        """This component conditioned, e.g. ``p.given({"class": 7})`` (classifier-free guidance)."""
        return self.as_leaf().given(conditions, **more)

    def forward(self, *args, **conditions):
        """A component is not called (it is an nn.Module only to hold its network): say how to
        condition it or evaluate it instead of torch's "_forward_unimplemented"."""
        if conditions and not args:
            raise TypeError(f"component '{self.name}' is not called: condition it with "
                            f"{self.name}.given({dict(conditions)!r}) (the language's "
                            f"{self.name}({', '.join(f'{k}={v!r}' for k, v in conditions.items())}))")
        raise TypeError(f"component '{self.name}' is not called: evaluate it with "
                        f"{self.name}.score(x, t) or {self.name}.log_density(x, t), condition "
                        f"it with {self.name}.given({{...}})")

    def __mul__(self, other): return self.as_leaf() * other
    def __rmul__(self, other): return as_expr(other) * self.as_leaf()
    def __truediv__(self, other): return self.as_leaf() / other
    def __rtruediv__(self, other): return as_expr(other) / self.as_leaf()
    def __pow__(self, exponent): return self.as_leaf() ** exponent
    def __add__(self, other): return self.as_leaf() + other
    def __radd__(self, other): return as_expr(other) + self.as_leaf()
    def __or__(self, conditions): return self.as_leaf() | conditions
    def __ror__(self, other): return self.as_leaf().__ror__(other)
    def __sub__(self, other): return self.as_leaf() - other
    def __rsub__(self, other): return self.as_leaf().__rsub__(other)
    def __neg__(self): return -self.as_leaf()
    def __matmul__(self, other): return self.as_leaf() @ other
    def __rmatmul__(self, other): return self.as_leaf().__rmatmul__(other)
    def __getitem__(self, key): return self.as_leaf()[key]
    __iter__ = None           # indexing makes windows; it must not make components iterable

    def guide(self, *conditions: Condition, scale: float = 1.0) -> Expr:
        return self.as_leaf().guide(*conditions, scale=scale)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, schedule={self.schedule!r}"

    # -- helpers for subclasses ---------------------------------------------------------
    def _level(self, t: int, allow_zero: bool = False) -> int:
        return self.schedule.check_level(t, allow_zero=allow_zero)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x: expected a tensor of shape (N, ...), got {type(x).__name__}")
        if self.event_shape is not None and tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"x: {self.name} expects shape (N, {', '.join(map(str, self.event_shape))})"
                             f", got {tuple(x.shape)}")


def check_event_shape(shape, name: str = "event_shape") -> Tuple[int, ...]:
    """`shape` (a tuple, list or torch.Size of integer sizes ≥ 1) as a tuple of ints, or a
    ValueError naming `name`: strings, floats and bools are not sizes."""
    items = None
    if not isinstance(shape, (str, bytes)):
        try:
            items = tuple(shape)
        except TypeError:
            pass
    if items is None or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool)
                                for d in items):
        raise ValueError(f"{name}: expected a tuple of integer sizes, e.g. (1, 8, 24), got {shape!r}")
    sizes = tuple(int(d) for d in items)
    if not sizes or any(d < 1 for d in sizes):
        raise ValueError(f"{name}: sizes must be ≥ 1, got {sizes}")
    return sizes
