"""The one Metropolis–Hastings accept/reject used by every adjusted kernel.

Per chain: accept with probability min(1, exp(log α)). A non-finite log α (NaN or ±∞ from a
non-finite Δ) is a rejection and a divergence. No host synchronisation: the decision is a
boolean tensor, applied with `torch.where`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def accept(log_alpha: torch.Tensor, generator: Optional[torch.Generator] = None
           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(accepted, divergent), boolean tensors of shape (N,), from log α of shape (N,).

    Draws one uniform per chain: accepted = finite(log α) and log u < log α.
    """
    u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype, device=log_alpha.device)
    divergent = ~torch.isfinite(log_alpha)
    accepted = ~divergent & (torch.log(u) < log_alpha)
    return accepted, divergent


def select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per chain: `new` where mask (shape (N,)) holds, else `old`."""
    return torch.where(mask.reshape((-1,) + (1,) * (new.dim() - 1)), new, old)


def normal(like: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard normal noise with the shape, dtype and device of `like`."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
