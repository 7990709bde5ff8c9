"""Helpers shared by the experiment commands: seeds, result files, mean ± std, the acceptance
convention (— in text, NaN in data) and the label of smoke tests (--quick)."""
from __future__ import annotations

import json
import math
import os
import platform
from typing import Sequence, Tuple

import numpy as np
import torch

from ..sampler import format_rate


def seed_from(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence), for independent random streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def environment() -> dict:
    """What a results file records about the machine: Python, torch, architecture, CPU count."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count()}


def write_json(path: str, results: dict) -> None:
    """Write `results` as JSON atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=float)
    os.replace(tmp, path)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; nan for one value or non-finite values).
    Non-finite values propagate to the mean (an LL of −inf stays −inf)."""
    a = np.asarray(values, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 and np.all(np.isfinite(a)) else math.nan
    return mean, std


def format_mean_std(pair: Tuple[float, float], digits: int) -> str:
    """'m ± s' with `digits` decimals; '—' for nan, '−∞'/'∞' for infinite means."""
    mean, std = pair
    if math.isnan(mean):
        return "—"
    if math.isinf(mean):
        return "−∞" if mean < 0 else "∞"
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def format_acceptance(value, digits: int = 3) -> str:
    """An acceptance rate as every experiment log and table writes it: '0.734', or '—' where
    there is none (NaN in the data: the reverse process and unadjusted samplers)."""
    return format_rate(value, digits)


#: What a `--quick` run says about itself, in its log and at the top of its report.
SMOKE_TEST = ("SMOKE TEST (--quick): tiny models, few samples and short schedules that only "
              "check that the experiment runs end to end. Its numbers (an accuracy of 0.000, an "
              "LL of −∞) say nothing about the samplers; run without --quick for results.")


def smoke_test_lines(results: dict) -> list:
    """The markdown lines that open the report of a smoke test (none for a real run)."""
    return [f"**{SMOKE_TEST}**", ""] if results.get("smoke_test") else []


def scatter_row(panels, path: str, limit: float, box=None, size: float = 3.0, dpi: int = 120) -> str:
    """One row of 2D scatter plots, written to `path` (matplotlib Agg, no global state).

    Args:
        panels: (title, array (N, 2)) pairs.
        limit: axes span [−limit, limit] in both coordinates.
        box: ((x0, y0), (x1, y1)) drawn as a grey outline in every panel, or None.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(size * len(panels), size + 0.2))
    FigureCanvasAgg(fig)
    for i, (title, x) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        x = np.asarray(x)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, lw=0)
        if box is not None:
            (x0, y0), (x1, y1) = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.6, color="grey"))
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
