"""The digits figures: sample grids and acceptance per level."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch

from compose import images as compose_images
from compose.models.data import IMAGE_SHAPE, NUM_CLASSES, DigitsSplit


# -- figures --------------------------------------------------------------------------------
def _mosaic(images: np.ndarray, per_side: int) -> np.ndarray:
    """Up to per_side² images (n, 8, 8) in [−1, 1] tiled with white 1-pixel gutters
    (`compose.images.grid`), as a grey array in [0, 1]."""
    cells = torch.as_tensor(np.asarray(images[:per_side ** 2], dtype=np.float32))[:, None]
    unit = compose_images.postprocess(compose_images.to_unit(cells)).images
    return compose_images.grid(unit, columns=per_side, gutter=1, scale=1, output_type="np")[..., 0]


def sample_grid(rows: Dict[str, torch.Tensor], samples_per_class: int, path: str,
                title: Optional[str] = None, real: Optional[DigitsSplit] = None) -> str:
    """A grid: one row per sampler, one column per class, each cell up to 4 samples (2×2).

    `rows` maps sampler name → samples (N, 1, 8, 8) ordered by class (samples_per_class each).
    With `real`, a first row shows held-out images of each class. Returns `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_side = 2 if samples_per_class >= 4 else 1
    cells = []
    if real is not None:
        images, labels = real.test_images.cpu().numpy()[:, 0], real.test_labels.cpu().numpy()
        cells.append(("held-out data", [images[labels == k] for k in range(NUM_CLASSES)]))
    for name, samples in rows.items():
        x = samples.cpu().numpy()[:, 0].reshape(NUM_CLASSES, samples_per_class, *IMAGE_SHAPE[1:])
        cells.append((name, list(x)))
    fig = Figure(figsize=(1.0 * NUM_CLASSES + 1.4, 1.05 * len(cells) + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cells), NUM_CLASSES, squeeze=False)
    for r, (name, per_class) in enumerate(cells):
        for k in range(NUM_CLASSES):
            ax = axes[r, k]
            ax.imshow(_mosaic(per_class[k], per_side), cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(k), fontsize=9)
            if k == 0:
                ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.13, right=0.99, top=0.92 if title else 0.97, bottom=0.01,
                        wspace=0.05, hspace=0.08)
    fig.savefig(path, dpi=100)
    return path


def acceptance_plot(per_level: Dict[str, List[float]], path: str) -> str:
    """Acceptance per level (x: level t, from T down to 1) of each named run; returns `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, rates in per_level.items():
        levels = list(range(len(rates), 0, -1))
        ax.plot(levels, rates, marker=".", lw=1, label=name.replace("/", ": "))
    ax.set_xlabel("level t (sampling runs from T down to 1)")
    ax.set_ylabel("acceptance rate")
    ax.set_ylim(-0.02, 1.02)
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
