"""Canvases of overlapping 8×8 windows and their compositions (docs/windows.md)."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from compose.models.data import IMAGE_SHAPE

from .settings import NULL_CLASS

WINDOW = IMAGE_SHAPE[-1]


def window_starts(count: int, overlap: int) -> List[int]:
    """First columns of `count` 8-column windows, each overlapping the next by `overlap`."""
    return [i * (WINDOW - overlap) for i in range(count)]


def canvas_shape(count: int, overlap: int) -> Tuple[int, int, int]:
    """(1, 8, W) holding `count` windows: W = 8 + (count − 1)(8 − overlap)."""
    return (IMAGE_SHAPE[0], IMAGE_SHAPE[1], WINDOW + (count - 1) * (WINDOW - overlap))


def tapestry(model, digit_row: Sequence[int], scale: float, overlap: int):
    """Π_i (model(class=d_i) ** w / model(class=∅) ** (w − 1))[:, :, s_i:s_i+8].

    At w = 1 the null-class factor has weight 0 and the compiler drops it.
    """
    expr = None
    for digit, start in zip(digit_row, window_starts(len(digit_row), overlap)):
        guided = (model.given({"class": int(digit)}) ** scale
                  / model.given({"class": NULL_CLASS}) ** (scale - 1.0))
        part = guided[:, :, start:start + WINDOW]
        expr = part if expr is None else expr * part
    return expr


def crops(canvases: torch.Tensor, count: int, overlap: int) -> List[torch.Tensor]:
    """The 8×8 window crops of a batch of canvases (N, 1, 8, W), left to right."""
    return [canvases[..., s:s + WINDOW] for s in window_starts(count, overlap)]
