"""Quadrature for the pseudo-energy difference: Δ = ∫ s(γ(u)) · γ'(u) du (docs/quadrature.md).

The path is a chain of straight pieces (one piece from x to x' for the line; one per leapfrog
step for the curve). On a piece from a to b a rule with n interior nodes u_1 < … < u_n in (0, 1)
and weights c_0, c_1, …, c_n, c_{n+1} (c_0 and c_{n+1} belong to the end points) gives

    ∫₀¹ s(a + u(b − a)) · (b − a) du ≈ (b − a) · [c_0 s(a) + Σ_j c_j s(a + u_j(b − a)) + c_{n+1} s(b)].

Both rules keep the end points, whose scores the kernel already has, so a piece costs n
evaluations:

    trapezoid  u_j = j/(n+1), c = h/2, h, …, h, h/2 with h = 1/(n+1).  Error O(h²); exact for
               integrands linear in u.
    lobatto    Gauss–Lobatto: u_j = (1 + x_j)/2 with x_j the roots of P′_{n+1} (Legendre),
               c_j = 1 / ((n+1)(n+2) P_{n+1}(x_j)²), c_0 = c_{n+1} = 1/((n+1)(n+2)).
               Exact for integrands of degree 2n + 1 in u; error O(‖b − a‖^{2n+3}) per piece.
               n = 1 is Simpson's rule (0, ½, 1; 1/6, 4/6, 1/6).

With n = 0 both are the trapezoid rule on the end points.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Optional, Tuple

import torch

RULES = ("trapezoid", "lobatto")

# The largest Gauss–Lobatto rule built (its Jacobi matrix is dense: n² floats, about 3 s at
# n = 1000). Float64 accuracy is reached with a few dozen nodes on any smooth path.
MAX_LOBATTO_POINTS = 1000


def check_rule(rule) -> str:
    """The rule's name, or a ValueError naming the valid ones."""
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"rule: must be one of {', '.join(RULES)}, got {rule!r}")
    return rule


def _legendre(N: int, x: float) -> Tuple[float, float]:
    """(P_N(x), P′_N(x)) by the three-term recurrence k P_k = (2k − 1) x P_{k−1} − (k − 1) P_{k−2}
    and P′_N = N (x P_N − P_{N−1}) / (x² − 1) (|x| < 1)."""
    p_prev, p = 1.0, x
    for k in range(2, N + 1):
        p_prev, p = p, ((2 * k - 1) * x * p - (k - 1) * p_prev) / k
    return p, N * (x * p - p_prev) / (x * x - 1.0)


@functools.lru_cache(maxsize=None)
def lobatto(n: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Gauss–Lobatto rule on [0, 1] with n interior nodes, in float64.

    Returns (nodes, weights): nodes 0, u_1, …, u_n, 1 and their n + 2 weights (summing to 1).
    The interior nodes are the roots of P′_{n+1}: the eigenvalues of the Jacobi matrix of the
    Jacobi polynomials with α = β = 1 (Golub–Welsch; zero diagonal, off-diagonal
    √(k(k+2)/((2k+1)(2k+3))), k = 1 … n−1), polished by Newton steps on P′_{n+1} using the
    Legendre equation P″_N = (2x P′_N − N(N+1) P_N) / (1 − x²).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"points: number of interior nodes must be an integer ≥ 0, got {n!r}")
    if n > MAX_LOBATTO_POINTS:
        raise ValueError(f"points: Gauss–Lobatto rules are built with at most {MAX_LOBATTO_POINTS} "
                         f"interior nodes (float64 accuracy is reached with far fewer), got {n}")
    n, N = int(n), int(n) + 1
    if n == 0:
        return (0.0, 1.0), (0.5, 0.5)
    k = torch.arange(1, n, dtype=torch.float64)
    off = torch.sqrt(k * (k + 2) / ((2 * k + 1) * (2 * k + 3)))
    jacobi = torch.diag(off, 1) + torch.diag(off, -1)
    roots = torch.linalg.eigvalsh(jacobi).tolist()
    xs = []
    for x in roots:
        for _ in range(3):                                  # polish: Newton on P′_N
            p, dp = _legendre(N, x)
            x -= dp * (1.0 - x * x) / (2.0 * x * dp - N * (N + 1) * p)
        xs.append(x)
    xs.sort()
    end = 1.0 / (N * (N + 1))
    weights = [end] + [end / _legendre(N, x)[0] ** 2 for x in xs] + [end]
    nodes = [0.0] + [0.5 * (1.0 + x) for x in xs] + [1.0]
    return tuple(nodes), tuple(weights)


def trapezoid(n: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The composite trapezoid rule on [0, 1] with n interior nodes: (nodes, weights)."""
    h = 1.0 / (n + 1)
    return tuple(j * h for j in range(n + 2)), (0.5 * h,) + (h,) * n + (0.5 * h,)


def rule_nodes(rule: str, n: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(nodes, weights) of `rule` on [0, 1] with n interior nodes, end points included."""
    return lobatto(n) if check_rule(rule) == "lobatto" else trapezoid(n)


def interior_points(starts: torch.Tensor, ends: torch.Tensor, n: int,
                    rule: str = "trapezoid") -> torch.Tensor:
    """Points a + u_j (b − a) at the rule's n interior nodes of each piece: (n, *starts.shape)."""
    if check_rule(rule) == "trapezoid":
        u = torch.arange(1, n + 1, dtype=starts.dtype, device=starts.device) / (n + 1)
    else:
        u = _interior_tensor(rule, n, 0, starts.dtype, starts.device)
    u = u.reshape((n,) + (1,) * starts.dim())
    return starts.unsqueeze(0) + u * (ends - starts).unsqueeze(0)


@functools.lru_cache(maxsize=64)
def _interior_tensor(rule: str, n: int, which: int, dtype: torch.dtype, device) -> torch.Tensor:
    """The interior nodes (which = 0) or weights (1) as a tensor, made once per dtype and device,
    so that a step copies nothing from the host (and stays capturable in a CUDA graph)."""
    return torch.tensor(rule_nodes(rule, n)[which][1:-1], dtype=dtype, device=device)


def integrate_pieces(starts: torch.Tensor, ends: torch.Tensor, score_starts: torch.Tensor,
                     score_ends: torch.Tensor, interior_scores: Optional[torch.Tensor], n: int,
                     rule: str = "trapezoid") -> torch.Tensor:
    """Σ over pieces of the rule's integral of s · dγ, one value per chain.

    Args:
        starts, ends: piece end points, shape (P, N, *event) (P pieces; P = 1 for a line).
        score_starts, score_ends: the integrand's scores there, same shape.
        interior_scores: (n, P, N, *event) scores at the rule's interior nodes, or None (n = 0).
        n: number of interior nodes per piece. rule: "trapezoid" or "lobatto".
    Returns:
        shape (N,).
    """
    if rule == "trapezoid" or n == 0:
        total = 0.5 * (score_starts + score_ends)
        if n > 0:
            total = total + interior_scores.sum(0)
        return ((ends - starts) * total).flatten(2).sum(2).sum(0) / (n + 1)
    weights = rule_nodes(rule, n)[1]
    c = _interior_tensor(rule, n, 1, interior_scores.dtype, interior_scores.device)
    total = weights[0] * (score_starts + score_ends)
    total = total + (c.reshape((n,) + (1,) * (interior_scores.dim() - 1)) * interior_scores).sum(0)
    return ((ends - starts) * total).flatten(2).sum(2).sum(0)
