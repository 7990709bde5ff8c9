"""Pyro's diagnostics for the batch of chains that a compose kernel runs (docs/sampler.md, §5).

Under `pyro.infer.MCMC` a compose kernel moves its N chains together as ONE Pyro chain with one
site "x": ``mcmc.get_samples()["x"]`` has shape (S, N, *event) and ``group_by_chain=True`` gives
(1, S, N, *event). So Pyro's own `MCMC.summary()` prints a row per chain × coordinate, and its
R-hat compares the halves of each chain's own trace. Here the N chains are what Pyro calls
chains:

    batch_samples(mcmc)   (C · N, S, *event): Pyro's group_by_chain layout with the N chains of
                          each of its C chains as chains (C = 1 unless num_chains > 1)
    batch_summary(mcmc)   per coordinate of x: mean, std, median, the `prob` interval, effective
                          sample size and split R-hat across those chains (pyro.ops.stats, as
                          Pyro's summary), then the kernel's acceptance and divergences

Both are read-only views of a finished run.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from pyro.infer.mcmc.util import summary as pyro_summary

__all__ = ["batch_samples", "batch_summary"]


def batch_samples(mcmc) -> torch.Tensor:
    """The draws of site "x" as (chains, draws, *event): every chain of the batch is a chain."""
    try:
        x = mcmc.get_samples(group_by_chain=True)["x"]
    except (AttributeError, KeyError, TypeError):
        raise ValueError("mcmc: expected a finished pyro.infer.MCMC run of a compose kernel "
                         "(one site 'x')") from None
    if x.dim() < 3:
        raise ValueError(f"mcmc: site 'x' has shape {tuple(x.shape)}; a compose kernel's "
                         "draws are (Pyro chains, draws, N, *event)")
    pyro_chains, draws, n = x.shape[:3]
    return x.transpose(1, 2).reshape((pyro_chains * n, draws) + tuple(x.shape[3:]))


def batch_summary(mcmc, prob: float = 0.9, max_rows: Optional[int] = 20) -> str:
    """The summary of `mcmc` with the chains of the batch as chains: one row per coordinate of
    x (the first and last `max_rows` // 2 of them when there are more; None shows all), and
    the kernel's acceptance rate and divergences. Acceptance — means none (unadjusted)."""
    if not (isinstance(prob, float) and 0.0 < prob < 1.0):
        raise ValueError(f"prob: must be a float in (0, 1), got {prob!r}")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int)
                                 or max_rows < 2):
        raise ValueError(f"max_rows: must be an integer ≥ 2 or None, got {max_rows!r}")
    x = batch_samples(mcmc)
    chains, draws = x.shape[:2]
    stats = pyro_summary({"x": x.double()}, prob=prob, group_by_chain=True)["x"]
    event = tuple(x.shape[2:])
    flat = {name: value.reshape(-1).tolist() for name, value in stats.items()}
    count = len(flat["mean"])
    names = [f"x[{','.join(map(str, _unravel(i, event)))}]" for i in range(count)]
    shown = list(range(count))
    if max_rows is not None and count > max_rows:
        half = max_rows // 2
        shown = shown[:half] + [None] + shown[count - (max_rows - half):]
    width = max([len(n) for n in names] + [4])
    header = " " * width + "".join(f"{name:>10}" for name in flat)
    lines = [f"{chains} chains (the batch of chains of each Pyro chain) × {draws} draws", header]
    for i in shown:
        if i is None:
            lines.append(f"{'…':>{width}}  {count - max_rows} coordinates not shown")
            continue
        lines.append(f"{names[i]:>{width}}" + "".join(f"{flat[k][i]:>10.2f}" for k in flat))
    diagnostics = mcmc.diagnostics()
    rates = [r for r in diagnostics.get("acceptance rate", {}).values()
             if isinstance(r, float) and not math.isnan(r)]
    divergences = sum(len(d) for d in diagnostics.get("divergences", {}).values())
    acceptance = f"{sum(rates) / len(rates):.3f}" if rates else "—"
    lines += ["", f"acceptance rate {acceptance}, divergences {divergences} (moves of any chain "
                  "after warm-up)"]
    return "\n".join(lines)


def _unravel(index: int, shape) -> tuple:
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return tuple(reversed(out))
