"""Helpers shared by the experiment commands: seeds, result files, mean ± std."""
from __future__ import annotations

import json
import math
import os
from typing import Sequence, Tuple

import numpy as np


def seed_from(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence), for independent random streams."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


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
