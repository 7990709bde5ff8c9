"""Per-level step sizes: a constant, one value per level, or η_t = a · β_tᵇ
(docs/kernels.md, section 6)."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

from ..schedule import Schedule


@dataclass(frozen=True)
class PowerLaw:
    """η_t = a · β_tᵇ: the paper's per-level step-size family (e.g. a = 4.03, b = 1.34)."""

    a: float
    b: float

    def __post_init__(self):
        for name in ("a", "b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite real number, got {value!r}")
        if self.a <= 0:
            raise ValueError(f"a: must be > 0, got {self.a!r}")

    def __call__(self, schedule: Schedule) -> torch.Tensor:
        return self.a * schedule.betas ** self.b


StepSizeSpec = Union[float, Sequence[float], torch.Tensor, PowerLaw, Callable[[int], float]]


def check_step_size(spec: StepSizeSpec, name: str = "step_size") -> StepSizeSpec:
    """Validate what can be checked without a schedule: a constant must be finite and > 0."""
    if isinstance(spec, bool):
        raise ValueError(f"{name}: must be a positive number, a sequence of T of them, a PowerLaw or a callable")
    if isinstance(spec, numbers.Real):
        if not math.isfinite(spec) or spec <= 0:
            raise ValueError(f"{name}: must be finite and > 0, got {spec!r}")
        return float(spec)
    if isinstance(spec, (PowerLaw,)) or callable(spec):
        return spec
    kinds = "a positive number, one per level, a PowerLaw or a callable t → number"
    if isinstance(spec, (str, bytes, dict)) or (isinstance(spec, torch.Tensor) and spec.is_complex()):
        raise ValueError(f"{name}: must be {kinds}; got {type(spec).__name__} {spec!r:.40}")
    try:
        values = torch.as_tensor(spec, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name}: must be {kinds}; got {type(spec).__name__} {spec!r:.40}") from None
    _check_values(values, name)
    return values


def per_level(spec: StepSizeSpec, schedule: Schedule, name: str = "step_size") -> list:
    """Step sizes for levels 1..T as a list of T floats (index t − 1)."""
    spec = check_step_size(spec, name)
    if isinstance(spec, float):
        return [spec] * schedule.T
    if isinstance(spec, PowerLaw):
        values = spec(schedule)
    elif isinstance(spec, torch.Tensor):
        if spec.numel() != schedule.T:
            raise ValueError(f"{name}: expected one value per level, {schedule.T} in all, got {spec.numel()}")
        values = spec
    else:
        values = torch.tensor([_called(spec, t, name) for t in range(1, schedule.T + 1)],
                              dtype=torch.float64)
    _check_values(values, name)
    return values.tolist()


def _check_values(values: torch.Tensor, name: str) -> None:
    if values.numel() == 0 or not bool(torch.all(torch.isfinite(values) & (values > 0))):
        raise ValueError(f"{name}: every per-level value must be finite and > 0")


def _called(spec: Callable, t: int, name: str) -> float:
    """spec(t) as a float: a finite number > 0 (or a one-element real tensor holding one)."""
    value = spec(t)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value <= 0:
        if isinstance(value, torch.Tensor):
            what = f"a tensor of shape {tuple(value.shape)}"
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            what = repr(float(value))
        else:
            what = "None" if value is None else f"a {type(value).__name__} {value!r:.30}"
        raise ValueError(f"{name}: the callable returned {what} at t = {t}; expected a finite "
                         "number > 0")
    return float(value)
