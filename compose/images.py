"""Images from samples: decoding, clipping to the image range, and grids with gutters and labels.

    decode(source, samples)   samples → images through the component that decodes: the VAE of a
                              latent model, or (x + 1)/2 for a pixel model trained on [−1, 1]
    postprocess(images)       images on the [0, 1] scale clipped to it, the values outside counted
    grid(images)              one picture: cells separated by gutters, an optional title (the
                              prompt or the composition) and a label under each cell

A component that can decode has a method ``decode(x)`` giving images (N, C, H, W) on the [0, 1]
scale, *not* clipped (as a VAE's decoder gives them); `decode` here clips them, as diffusers'
image post-processing does, and says how many values were outside. `output_type` is named as in
diffusers: "pt" (a float tensor (N, C, H, W) in [0, 1]), "np" (a float array (N, H, W, C) in
[0, 1]) or "pil" (a list of PIL images).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .expr import Expr

OUTPUT_TYPES = ("pt", "np", "pil")
#: The value range of pixel samples that no component decodes (the convention of the models here).
PIXEL_RANGE = (-1.0, 1.0)


@dataclass(frozen=True, repr=False, eq=False)
class Images:
    """Decoded images and how many of their values were clipped into [0, 1].

    Attributes:
        images: as `output_type` asks: a tensor (N, C, H, W), an array (N, H, W, C), or a list
            of PIL images; values in [0, 1] (0..255 for PIL).
        clipped: values outside [0, 1] before clipping (non-finite ones included, set to 0).
        values: all values, N·C·H·W.
        decoder: what decoded them (a component's name, or "pixels").
    """

    images: Any
    clipped: int
    values: int
    decoder: str = ""

    @property
    def fraction_clipped(self) -> float:
        return self.clipped / self.values if self.values else 0.0

    def __len__(self) -> int:
        return len(self.images)

    def clipping(self) -> str:
        """One line: how many values were outside [0, 1]."""
        percent = 100 * self.fraction_clipped
        share = "<0.01" if 0 < percent < 0.01 else f"{percent:.3g}"
        return (f"{self.clipped:,} of {self.values:,} values ({share}%) were outside the image "
                "range and were clipped")

    def grid(self, **options):
        """`grid` of these images (options as there)."""
        return grid(self.images, **options)

    def __repr__(self) -> str:
        first = self.images[0] if len(self) else None
        shape = tuple(getattr(first, "shape", ())) or getattr(first, "size", ())
        by = f", decoded by {self.decoder}" if self.decoder else ""
        return (f"Images({len(self)} × {tuple(shape)}{by}, {self.clipped:,} of {self.values:,} "
                "values clipped)")


# -- decoding -------------------------------------------------------------------------------
def can_decode(component) -> bool:
    """Whether `component` has a ``decode`` method (samples → images on the [0, 1] scale)."""
    return callable(getattr(component, "decode", None))


def decoder_of(source):
    """The component that decodes the samples of `source`: a component itself, or the first
    component (left to right) of an expression or of a compiled target that can decode."""
    if can_decode(source) and not isinstance(source, Expr) and not hasattr(source, "expr"):
        return source
    expr = getattr(source, "expr", source)
    if not isinstance(expr, Expr) and callable(getattr(expr, "as_leaf", None)):
        expr = expr.as_leaf()                           # a component that cannot decode
    if not isinstance(expr, Expr):
        raise ValueError(f"source: expected a compiled target, an expression or a component, got "
                         f"{type(source).__name__}")
    components = [leaf.component for leaf in expr.leaves() if leaf.component is not None]
    for component in components:
        if can_decode(component):
            return component
    names = ", ".join(dict.fromkeys(getattr(c, "name", "?") for c in components)) or "none bound"
    raise ValueError(f"no component of '{expr}' decodes samples into images (components: {names}); "
                     "a diffusers model decodes (its VAE for a latent model), or use "
                     "compose.images.postprocess(compose.images.to_unit(samples))")


def decode(source, samples, output_type: str = "pt", batch_size: int = 16) -> Images:
    """Images from samples through the component of `source` that decodes, clipped to [0, 1].

    Args:
        source: a compiled target (`compose.compile`), an expression, or a component.
        samples: a tensor (N, *event_shape), or a `compose.sample` result.
        output_type: "pt", "np" or "pil" (as diffusers names them).
        batch_size: samples per call of the decoder (a VAE's memory grows with it).
    Returns:
        `Images`: the images, and how many values were outside [0, 1] before clipping. For a
        sample result, its ``diagnostics.clipped`` is set to the fraction clipped.
    """
    _check_output_type(output_type)
    x = getattr(samples, "samples", samples)
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"samples: expected a tensor (N, *event_shape) or a sample result, got "
                         f"{type(samples).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer ≥ 1, got {batch_size!r}")
    component = decoder_of(source)
    _check_samples_shape(component, x)
    with torch.no_grad():
        parts = [component.decode(part).detach().cpu() for part in x.split(batch_size)]
    unit = torch.cat(parts) if parts else x.new_zeros((0,))
    images = postprocess(unit, output_type, decoder=getattr(component, "name", ""))
    diagnostics = getattr(samples, "diagnostics", None)
    if diagnostics is not None and hasattr(diagnostics, "clipped"):
        diagnostics.clipped = images.fraction_clipped        # the result's record of clipping
    return images


def _check_samples_shape(component, x: torch.Tensor) -> None:
    """A ValueError unless x is (N, *event_shape) of the decoding component (when it declares
    one): samples of another shape would be decoded into wrong images, or fail in the VAE."""
    shape = getattr(component, "event_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"samples: {getattr(component, 'name', 'the decoder')} decodes samples of "
                         f"shape (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def to_unit(x: torch.Tensor, value_range: Tuple[float, float] = PIXEL_RANGE) -> torch.Tensor:
    """Pixels on `value_range` mapped to the [0, 1] scale, not clipped: (x − lo)/(hi − lo)."""
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range: expected (low, high) with low < high, got {value_range!r}")
    return (x - low) / (high - low)


def postprocess(unit: torch.Tensor, output_type: str = "pt", decoder: str = "") -> Images:
    """Images on the [0, 1] scale (N, C, H, W) clipped to [0, 1]; counts the values outside
    (a non-finite value counts and becomes 0)."""
    _check_output_type(output_type)
    if not isinstance(unit, torch.Tensor) or unit.dim() != 4:
        raise ValueError(f"images: expected a tensor (N, C, H, W), got "
                         f"{tuple(getattr(unit, 'shape', ())) or type(unit).__name__}")
    x = unit.detach().cpu().float()
    inside = (x >= 0) & (x <= 1)
    clipped = int(inside.numel() - inside.sum())
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    return Images(_convert(x, output_type), clipped, x.numel(), decoder)


def _convert(x: torch.Tensor, output_type: str):
    if output_type == "pt":
        return x
    array = x.permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return array
    return [_pil(a) for a in array]


def _pil(array: np.ndarray):
    from PIL import Image
    pixels = (array * 255).round().astype(np.uint8)
    if pixels.shape[-1] == 1:
        return Image.fromarray(pixels[..., 0], mode="L")
    return Image.fromarray(pixels[..., :3], mode="RGB")


def _check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type: expected one of {', '.join(map(repr, OUTPUT_TYPES))}, "
                         f"got {output_type!r}")


# -- grids ----------------------------------------------------------------------------------
def grid(images, columns: Optional[int] = None, *, title: Optional[str] = None,
         labels: Optional[Sequence[str]] = None, gutter: Optional[int] = None,
         scale: Optional[int] = None, output_type: str = "pil"):
    """Images as one picture: `columns` wide (default ⌈√N⌉), cells separated by white gutters.

    Args:
        images: a tensor (N, C, H, W) or array (N, H, W, C) in [0, 1], a list of PIL images
            of one size, or `Images`. C is 1 (grey) or 3.
        title: a line above the cells (wrapped to the width), e.g. the prompt or composition.
        labels: one short label under each cell (cut to the cell's width).
        gutter: pixels between and around the cells (default: 1/20 of a cell, at least 3).
        scale: each pixel drawn as scale × scale (default: the smallest that makes cells at
            least 96 pixels wide, so that tiny images and their labels stay legible).
        output_type: "pil" (an RGB image), "np" (a float array (H, W, 3) in [0, 1]) or "pt"
            (a float tensor (3, H, W) in [0, 1]).
    """
    _check_output_type(output_type)
    cells = _as_uint8(images.images if isinstance(images, Images) else images)
    n, h, w = cells.shape[:3]
    if n == 0:
        raise ValueError("images: no images to put in a grid")
    if labels is not None:
        labels = [str(label) for label in labels]
        if len(labels) != n:
            raise ValueError(f"labels: expected one per image ({n}), got {len(labels)}")
    columns = columns or math.ceil(math.sqrt(n))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns: must be an integer ≥ 1, got {columns!r}")
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    scale = scale or max(1, math.ceil(96 / max(h, w)))
    cell_h, cell_w = h * scale, w * scale
    gutter = max(3, min(cell_h, cell_w) // 20) if gutter is None else int(gutter)

    from PIL import Image, ImageDraw
    width = columns * cell_w + (columns + 1) * gutter
    font = _font(max(10, min(16, cell_w // 6)))
    label_h = _line_height(font) + 2 if labels is not None else 0
    title_font = _font(max(12, min(18, width // 30)))
    title_lines = _wrap(title, title_font, width - 2 * gutter) if title else []
    title_h = len(title_lines) * _line_height(title_font) + (gutter if title_lines else 0)
    height = title_h + rows * (cell_h + label_h) + (rows + 1) * gutter
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((gutter, gutter + i * _line_height(title_font)), line, fill="black", font=title_font)
    for k in range(n):
        r, c = divmod(k, columns)
        x0 = gutter + c * (cell_w + gutter)
        y0 = title_h + gutter + r * (cell_h + label_h + gutter)
        cell = Image.fromarray(cells[k]).convert("RGB")
        canvas.paste(cell.resize((cell_w, cell_h), Image.NEAREST), (x0, y0))
        if labels is not None:
            text = _fit(labels[k], font, cell_w)
            draw.text((x0, y0 + cell_h + 1), text, fill="black", font=font)
    if output_type == "pil":
        return canvas
    array = np.asarray(canvas, dtype=np.float32) / 255
    return array if output_type == "np" else torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _as_uint8(images) -> np.ndarray:
    """Cells (N, H, W, 1|3) as uint8 from a tensor (N, C, H, W), an array (N, H, W, C) or PIL
    images, values in [0, 1] (clipped here: a grid only shows them)."""
    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):
        sizes = {image.size for image in images}
        if len(sizes) > 1:
            raise ValueError(f"images: PIL images of different sizes {sorted(sizes)}")
        return np.stack([np.asarray(image.convert("RGB")) for image in images])
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images: expected a tensor (N, C, H, W), got shape {tuple(images.shape)}")
        images = images.detach().cpu().float().permute(0, 2, 3, 1).numpy()
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"images: expected (N, C, H, W) with C = 1 or 3 (or (N, H, W, C)), got "
                         f"shape {array.shape}")
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0).clip(0, 1)
    cells = (array * 255).round().astype(np.uint8)
    return cells if cells.shape[-1] == 3 else np.repeat(cells, 3, axis=-1)


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                   # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _line_height(font) -> int:
    box = font.getbbox("Ag|")
    return int(box[3]) + 2


def _wrap(text: str, font, width: int) -> List[str]:
    """`text` in lines no wider than `width` (at spaces where it can, else anywhere)."""
    lines: List[str] = []
    for paragraph in str(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.getlength(word) > width and len(word) > 1:
                cut = max(1, next(i for i in range(len(word), 0, -1)
                                  if font.getlength(word[:i]) <= width or i == 1))
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _fit(text: str, font, width: int) -> str:
    """`text`, cut with an ellipsis to fit `width`."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"
