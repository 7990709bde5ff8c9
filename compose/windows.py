"""Windows of a canvas: the slices of ``e[W]`` and the linear maps they stand for.

A window W is a tuple of slices over the event dimensions of a canvas x (the batch dimension
is never sliced). The expression ``e[W]`` is ``e`` seen through W (docs/windows.md):

    log π(x) = Σ_i w_i log p_i(x[W_i]),      ∇ log π(x) = Σ_i w_i scatter_i(s_i(x[W_i])),

where scatter_i puts a window's score back at its place on the canvas, zero elsewhere (the
adjoint of the crop). Both maps are linear, so a crop of a noised canvas is a noised crop with
the same schedule, and a line x → x' on the canvas crops to a line in every window.

Three forms of a window appear here:

- a *key* as written, ``(slice(0, 8), Ellipsis)``: normalised by `normalise` into *items*,
  each ``...`` or a pair (start, stop) of non-negative ints or None (a written ``:``);
- *bounds* relative to the shape it is applied to, after `resolve`: one (start, stop) pair of
  ints per dimension, ``:`` and ``...`` filled in;
- a *box* on the canvas: absolute bounds, one pair per canvas dimension. Nested windows
  compose by adding offsets (`inner_box`).
"""
from __future__ import annotations

import numbers
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .errors import CompositionError

Bound = Tuple[Optional[int], Optional[int]]
Item = Union[type(Ellipsis), Bound]
Box = Tuple[Tuple[int, int], ...]

__all__ = ["normalise", "empty_window", "index_hint", "format_items", "resolve", "inner_box", "full_box", "box_shape",
           "format_box", "label_box", "crop", "scatter", "mask", "boxes_of", "uncovered"]


# -- keys as written ---------------------------------------------------------------------------
def _bound(value, what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CompositionError(f"{what} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise CompositionError(f"{what} must be a non-negative integer (windows are counted "
                               f"from the start of the canvas), got {value}")
    return int(value)


def empty_window(start: Optional[int], stop: Optional[int]) -> str:
    """Why the written slice start:stop (None where left out) holds nothing, or "" if it may
    hold something: a stop of 0, or a stop at or before the start."""
    text = ("" if start is None else str(start)) + ":" + ("" if stop is None else str(stop))
    if stop is not None and stop <= (start or 0):
        start_text = "the start, 0 when left out" if start is None else "the start"
        return f"the window {text} is empty (the stop must be larger than {start_text})"
    return ""


def index_hint(index: int) -> str:
    """What to write instead of the integer index `index` in a window."""
    if index >= 0:
        return (f"an integer index ({index}) would drop a dimension; write the slice "
                f"{index}:{index + 1}")
    return (f"an integer index ({index}) would drop a dimension, and windows are counted from "
            "the start of the canvas (no negative positions): write the slice i:i+1 of position "
            "i, e.g. n-1:n for the last of a dimension of size n")


def normalise(key) -> Tuple[Item, ...]:
    """The items of an indexing key: ``...`` or (start, stop) per written slice.

    Accepts slices with non-negative integer (or omitted) bounds and steps of 1, and at most
    one ``...``; an empty slice (``:0``, ``3:3``, ``5:2``) is refused. An integer index would
    drop a dimension and is refused (write ``i:i+1``).
    Items already normalised (pairs) pass through, checked the same way.
    """
    key = key if isinstance(key, tuple) else (key,)
    if not key:
        raise CompositionError("a window needs at least one slice, e.g. p[0:8] or p[...]")
    items: List[Item] = []
    for position, part in enumerate(key, 1):
        where = f"window slice {position}"
        if part is Ellipsis:
            if Ellipsis in items:
                raise CompositionError("a window may contain '...' only once")
            items.append(Ellipsis)
        elif isinstance(part, tuple) and len(part) == 2:
            items.append(normalise(slice(*part))[0])
        elif isinstance(part, slice):
            if part.step is not None and not (not isinstance(part.step, bool)
                                               and isinstance(part.step, numbers.Integral)
                                               and part.step == 1):
                raise CompositionError(f"{where}: only steps of 1 are supported, got step "
                                       f"{part.step!r}")
            start = _bound(part.start, f"{where}: the start")
            stop = _bound(part.stop, f"{where}: the stop")
            empty = empty_window(start, stop)
            if empty:
                raise CompositionError(f"{where}: {empty}")
            items.append((start, stop))
        elif isinstance(part, numbers.Integral) and not isinstance(part, bool):
            raise CompositionError(f"{where}: {index_hint(int(part))}")
        else:
            raise CompositionError(f"{where}: expected a slice such as 0:8, ':' or '...', got "
                                   f"{part!r}")
    return tuple(items)


def format_items(items: Sequence[Item]) -> str:
    """The text between the brackets, as the language writes it: ``:, 0:8, 4:``."""
    parts = []
    for item in items:
        if item is Ellipsis:
            parts.append("...")
        else:
            start, stop = item
            parts.append(("" if start is None else str(start)) + ":"
                         + ("" if stop is None else str(stop)))
    return ", ".join(parts)


# -- bounds and boxes --------------------------------------------------------------------------
def resolve(items: Sequence[Item], shape: Sequence[int], what: str = "window") -> Box:
    """Bounds of the window `items` on an array of event shape `shape`: one (start, stop) per
    dimension. ``...`` stands for as many ``:`` as needed, missing trailing slices are ``:``.

    Raises CompositionError when there are more slices than dimensions, or a window reaches
    beyond `shape` (`what` names the window in the message).
    """
    shape = tuple(int(d) for d in shape)
    written = [i for i in items if i is not Ellipsis]
    if len(written) > len(shape):
        raise CompositionError(f"{what}: {len(written)} slices for {len(shape)} event "
                               f"dimension(s) of shape {shape}")
    fill = [(None, None)] * (len(shape) - len(written))
    if Ellipsis in items:
        at = list(items).index(Ellipsis)
        full = written[:at] + fill + written[at:]
    else:
        full = written + fill
    bounds = []
    for dim, ((start, stop), size) in enumerate(zip(full, shape)):
        start = 0 if start is None else start
        stop = size if stop is None else stop
        if start >= size:
            raise CompositionError(f"{what} is empty: dimension {dim + 1} has size {size}, and "
                                   f"the window starts at {start}, at or past its end")
        if stop > size:
            raise CompositionError(f"{what} leaves the canvas: dimension {dim + 1} has size "
                                   f"{size}, the window spans {start}:{stop}")
        if stop <= start:
            raise CompositionError(f"{what} is empty in dimension {dim + 1}: it spans "
                                   f"{start}:{stop}")
        bounds.append((start, stop))
    return tuple(bounds)


def full_box(shape: Sequence[int]) -> Box:
    """The box of the whole canvas."""
    return tuple((0, int(d)) for d in shape)


def inner_box(outer: Box, bounds: Box) -> Box:
    """The canvas box of `bounds` taken inside the box `outer` (nested windows)."""
    return tuple((o + a, o + b) for (o, _), (a, b) in zip(outer, bounds))


def box_shape(box: Box) -> Tuple[int, ...]:
    return tuple(b - a for a, b in box)


def format_box(box: Box) -> str:
    """``[0:1, 0:8, 6:14]``."""
    return "[" + ", ".join(f"{a}:{b}" for a, b in box) + "]"


def label_box(box: Box, canvas: Sequence[int]) -> str:
    """A box as a label: ``[:, :, 6:14]``, a dimension the box spans whole written ``:``."""
    return "[" + ", ".join(":" if (a, b) == (0, int(size)) else f"{a}:{b}"
                           for (a, b), size in zip(box, canvas)) + "]"


# -- the linear maps ---------------------------------------------------------------------------
def _index(box: Box) -> tuple:
    return (slice(None),) + tuple(slice(a, b) for a, b in box)


def crop(x: torch.Tensor, box: Box) -> torch.Tensor:
    """x[:, W]: the window of every row of a batch x of shape (N, *canvas), contiguous (a
    strided view would break networks that call ``.view`` on their input)."""
    return x[_index(box)].contiguous()


def scatter(values: torch.Tensor, box: Box, canvas: Sequence[int]) -> torch.Tensor:
    """The adjoint of `crop`: `values` (N, *box shape) placed at the box, zero elsewhere.

    Out of place (a constant pad), so it is safe under autograd and CUDA graph capture.
    """
    pad: List[int] = []
    for (a, b), size in reversed(list(zip(box, canvas))):
        pad += [a, int(size) - b]
    if not any(pad):
        return values
    return F.pad(values, pad)


# -- coverage ----------------------------------------------------------------------------------
def mask(canvas: Sequence[int], boxes: Iterable[Box]) -> torch.Tensor:
    """A boolean tensor of the canvas's shape, True on every coordinate inside some box."""
    out = torch.zeros(tuple(int(d) for d in canvas), dtype=torch.bool)
    for box in boxes:
        out[tuple(slice(a, b) for a, b in box)] = True
    return out


def boxes_of(cells: torch.Tensor) -> List[Box]:
    """Disjoint boxes that together hold exactly the True cells of a boolean tensor, each grown
    greedily from its first cell along the last dimension first (so a missing column of an
    image is one box)."""
    free = cells.clone()
    shape = tuple(free.shape)
    out: List[Box] = []
    while bool(free.any()):
        first = tuple(int(i) for i in free.nonzero()[0])
        box = [(i, i + 1) for i in first]
        for dim in reversed(range(len(shape))):
            while box[dim][1] < shape[dim]:
                grown = list(box)
                grown[dim] = (box[dim][0], box[dim][1] + 1)
                if not bool(free[tuple(slice(a, b) for a, b in grown)].all()):
                    break
                box = grown
        free[tuple(slice(a, b) for a, b in box)] = False
        out.append(tuple(box))
    return out


def uncovered(canvas: Sequence[int], boxes: Iterable[Box]) -> List[Box]:
    """Boxes holding every canvas coordinate that none of `boxes` covers ([] if none)."""
    return boxes_of(~mask(canvas, boxes))
