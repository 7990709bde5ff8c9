"""What a finished run leaves in its directory, merged from its blocks in block order.

    samples.pt         the samples, one tensor (N, *event_shape) in block order (`torch.load` it)
    diagnostics.json   per level, over all chains: acceptance, mean |Δ|, divergences,
                       evaluations per sample, step size; and the same for every block
    plan.txt / .json   the sampler plan: network evaluations per step, level and sample
    samples.png        a scatter for 2-D samples, an image grid for images
    run.json           the settings and their hash (written when the run starts)
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import checkpoint


def merge_diagnostics(blocks: Sequence[dict], sampler: str, samples: int) -> dict:
    """Per-level diagnostics over all chains, and every block's own (`blocks`: the block
    payloads in block order, their samples not needed).

    Each block's figures are per chain of the block, so the run's are their averages weighted
    by the blocks' numbers of chains (divergences and seconds add up). The run's mean |Δ| is
    weighted by chains too, which equals the mean over all finite Δ's when every Δ is finite.
    """
    weights = [(b["rows"][1] - b["rows"][0]) / samples for b in blocks]
    levels = []
    for i, first in enumerate(blocks[0]["diagnostics"]):
        rows = [b["diagnostics"][i] for b in blocks]
        evaluations: Dict[str, float] = {}
        for w, row in zip(weights, rows):
            for label, count in row["evaluations"].items():
                evaluations[label] = evaluations.get(label, 0.0) + w * count
        levels.append({
            "level": first["level"], "steps": first["steps"],
            "step_size": _weighted(weights, [r["step_size"] for r in rows]),
            "acceptance": _weighted(weights, [r["acceptance"] for r in rows]),
            "mean_abs_log_ratio": _weighted(weights, [r["mean_abs_log_ratio"] for r in rows]),
            "divergences": sum(int(r["divergences"]) for r in rows),
            "evaluations": evaluations,
            "seconds": sum(r["seconds"] for r in rows)})
    return {"sampler": sampler, "num_samples": samples, "levels": levels,
            "blocks": [{"block": b["block"], "rows": list(b["rows"]), "levels": b["diagnostics"]}
                       for b in blocks]}


def _weighted(weights: List[float], values: List[float]) -> float:
    pairs = [(w, v) for w, v in zip(weights, values) if v is not None and not math.isnan(v)]
    total = sum(w for w, _ in pairs)
    return sum(w * v for w, v in pairs) / total if total else math.nan


def write_json(path: Path, value) -> None:
    """JSON with NaN written as null (NaN is not JSON), atomically."""
    text = json.dumps(_no_nan(value), indent=1, ensure_ascii=False) + "\n"
    checkpoint.write_atomic(path, text.encode())


def _no_nan(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def write_tensor(path: Path, tensor: torch.Tensor) -> None:
    """`torch.save(tensor)` written atomically."""
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    checkpoint.write_atomic(path, buffer.getvalue())


def picture(samples: torch.Tensor, path: Path, title: str, limit: Optional[float] = None,
            most: int = 64) -> Optional[Path]:
    """A scatter of 2-D samples, or a grid of the first `most` images ((H, W), (1|3, H, W);
    values in [−1, 1]); None for any other shape."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = samples.detach().cpu().double()
    shape = tuple(x.shape[1:])
    if shape == (2,):
        finite = x[torch.isfinite(x).all(1)].numpy()
        fig = Figure(figsize=(4, 4.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.scatter(finite[:, 0], finite[:, 1], s=2, alpha=0.5, lw=0)
        span = limit or (float(np.abs(finite).max()) * 1.05 if finite.size else 1.0)
        ax.set_xlim(-span, span)
        ax.set_ylim(-span, span)
        ax.set_aspect("equal")
    elif len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3)):
        images = x[:most]
        if images.dim() == 3:
            images = images[:, None]
        n, c, h, w = images.shape
        side = math.ceil(math.sqrt(n))
        grid = torch.ones(c, side * (h + 1) + 1, side * (w + 1) + 1, dtype=torch.float64)
        for k in range(n):
            r, q = divmod(k, side)
            grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = \
                ((images[k] + 1) / 2).clamp(0, 1)
        fig = Figure(figsize=(4, 4.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ax.imshow(grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy(),
                  cmap="gray" if c == 1 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        return None
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
