"""Quadrature for the pseudo-energy difference: Δ = ∫ s(γ(u)) · γ'(u) du (SPEC section 3).

Both rules are the composite trapezoid rule on straight pieces. With n interior nodes
u_j = j/(n+1) on a piece from a to b, h = 1/(n+1):

    ∫₀¹ s(a + u(b − a)) · (b − a) du ≈ h (b − a) · [½ s(a) + Σ_j s(a + u_j(b − a)) + ½ s(b)]

The line path is one piece from x to x'; the curve path is the chain of leapfrog positions,
one piece per leapfrog step. Error O(h²) for smooth scores.
"""
from __future__ import annotations

import torch


def interior_nodes(n: int, like: torch.Tensor) -> torch.Tensor:
    """The n interior nodes u_j = j/(n+1), j = 1..n, as a tensor like `like`."""
    return torch.arange(1, n + 1, dtype=like.dtype, device=like.device) / (n + 1)


def interior_points(starts: torch.Tensor, ends: torch.Tensor, n: int) -> torch.Tensor:
    """Points a + u_j (b − a) for each piece: (n, *starts.shape)."""
    u = interior_nodes(n, starts).reshape((n,) + (1,) * starts.dim())
    return starts.unsqueeze(0) + u * (ends - starts).unsqueeze(0)


def trapezoid_pieces(starts: torch.Tensor, ends: torch.Tensor, score_starts: torch.Tensor,
                     score_ends: torch.Tensor, interior_scores, n: int) -> torch.Tensor:
    """Σ over pieces of the trapezoid integral of s · d γ, one value per chain.

    Args:
        starts, ends: piece end points, shape (P, N, *event) (P pieces; P = 1 for a line).
        score_starts, score_ends: the integrand's scores there, same shape.
        interior_scores: (n, P, N, *event) scores at the interior nodes, or None when n = 0.
        n: number of interior nodes per piece.
    Returns:
        shape (N,).
    """
    total = 0.5 * (score_starts + score_ends)
    if n > 0:
        total = total + interior_scores.sum(0)
    increments = (ends - starts) * total
    return increments.flatten(2).sum(2).sum(0) / (n + 1)
