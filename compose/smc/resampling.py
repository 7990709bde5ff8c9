"""Resampling of weighted particles, on the particles' device (docs/smc.md, section 5).

Given normalised weights W_1..W_N, each scheme picks N ancestors by inverting the cumulative
weights C_j = Σ_{i≤j} W_i at N points p_k ∈ [0, 1): ancestor(k) = min{j : C_j > p_k}.

    systematic   p_k = (k + u) / N,        one u ~ U[0, 1)
    stratified   p_k = (k + u_k) / N,      u_k ~ U[0, 1) independent
    multinomial  p_k = the sorted values of N independent U[0, 1)
    residual     ⌊N W_i⌋ copies of each i, and the remaining R = N − Σ ⌊N W_i⌋ by systematic
                 resampling of the residual weights (N W_i − ⌊N W_i⌋) / R

Every scheme is unbiased (particle i has N W_i offspring in expectation); systematic,
stratified and residual have lower offspring variance than multinomial (Douc, Cappé & Moulines,
*Comparison of resampling schemes for particle filtering*, 2005). The ancestors come out
sorted, so copies of one parent are adjacent.

`ancestors`, `ess` and `all_zero` never synchronise with the host and never return NaN: with
no usable weight (all −inf, or NaN) they resample uniformly and `all_zero` says so, for the
caller to raise with its own diagnostics. `resample` is the checked entry point for users.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

SCHEMES = ("systematic", "stratified", "residual", "multinomial")


def check_scheme(name) -> str:
    if not isinstance(name, str) or name not in SCHEMES:
        raise ValueError(f"resampling: must be one of {', '.join(map(repr, SCHEMES))}, got {name!r}")
    return name


def _log_total(log_weights: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_weights, 0)


def all_zero(log_weights: torch.Tensor) -> torch.Tensor:
    """0-d bool: no usable weight (all −inf, or a NaN or +inf among them)."""
    return ~torch.isfinite(_log_total(log_weights))


def normalise(log_weights: torch.Tensor) -> torch.Tensor:
    """log W_i = log w_i − log Σ w; uniform where there is no usable weight (`all_zero`)."""
    total = _log_total(log_weights)
    n = log_weights.shape[0]
    return torch.where(torch.isfinite(total), log_weights - total,
                       torch.full_like(log_weights, -math.log(n)))


def ess(log_weights: torch.Tensor) -> torch.Tensor:
    """(Σ w)² / Σ w², from unnormalised log-weights; 0 where there is no usable weight."""
    value = torch.exp(2.0 * _log_total(log_weights) - _log_total(2.0 * log_weights))
    return torch.where(all_zero(log_weights), torch.zeros_like(value), value)


def _cumulative(log_weights: torch.Tensor) -> torch.Tensor:
    """C_j in float64 (the weights normalised in float64 too), ending at exactly 1."""
    w = normalise(log_weights.double()).exp()
    c = torch.cumsum(w, 0)
    return c / c[-1]


def _invert(cumulative: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """min{j : C_j > p} for each point, clamped into 0..N−1 (rounding at the end)."""
    index = torch.searchsorted(cumulative, points, right=True)
    return index.clamp_(max=cumulative.shape[0] - 1)


def _uniforms(n: int, like: torch.Tensor, generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=like.device, dtype=torch.float64)


def ancestors(log_weights: torch.Tensor, scheme: str = "systematic",
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """N ancestor indices (int64, on the weights' device, sorted) drawn by `scheme`."""
    scheme = check_scheme(scheme)
    n = log_weights.shape[0]
    k = torch.arange(n, device=log_weights.device, dtype=torch.float64)
    if scheme == "residual":
        return _residual(log_weights, k, generator)
    if scheme == "systematic":
        points = (k + _uniforms(1, log_weights, generator)) / n
    elif scheme == "stratified":
        points = (k + _uniforms(n, log_weights, generator)) / n
    else:
        points = torch.sort(_uniforms(n, log_weights, generator)).values
    return _invert(_cumulative(log_weights), points)


def _residual(log_weights: torch.Tensor, k: torch.Tensor, generator) -> torch.Tensor:
    """Residual resampling through cumulative offspring counts, without a sort. With
    F_j = Σ_{i≤j} ⌊N W_i⌋, the residuals r_i = N W_i − ⌊N W_i⌋ and their cumulative sum scaled
    to end at R = N − F_N, the systematic remainder (points m + u, m = 0..R−1) gives parent j
    ⌈Ρ_j − u⌉ − ⌈Ρ_{j−1} − u⌉ copies (Ρ_j = R Σ_{i≤j} r_i / Σ r). So the cumulative count is
    O_j = F_j + ⌈Ρ_j − u⌉, which ends at N, and ancestor(k) = min{j : O_j > k} (sorted)."""
    n = log_weights.shape[0]
    scaled = n * normalise(log_weights.double()).exp()
    copies = torch.floor(scaled)
    fixed = torch.cumsum(copies, 0)
    remaining = n - fixed[-1]                        # R, as a tensor
    spread = torch.cumsum(scaled - copies, 0)
    last = spread[-1]
    spread = torch.where(last > 0, spread / torch.where(last > 0, last, torch.ones_like(last)),
                         torch.zeros_like(spread)) * remaining
    u = _uniforms(1, log_weights, generator)
    total = fixed + torch.ceil(spread - u).clamp_(min=0)
    return _invert(total, k)


def offspring(ancestor_indices: torch.Tensor, n: int) -> torch.Tensor:
    """o_i = #{k : a_k = i}, the copies of each of the n parents (indices in 0..n−1), int64 on
    the indices' device. A scatter-add, not torch.bincount: on CUDA bincount reads the indices'
    minimum and maximum back to the host."""
    index = ancestor_indices.long()
    counts = torch.zeros(n, dtype=torch.int64, device=index.device)
    return counts.scatter_add_(0, index, torch.ones_like(index))


def distinct(ancestor_indices: torch.Tensor) -> torch.Tensor:
    """#{i : o_i > 0}, the number of distinct parents among N indices in 0..N−1 (0-d int64
    tensor, no host synchronisation)."""
    index = ancestor_indices.long()
    seen = torch.zeros(index.shape[0], dtype=torch.bool, device=index.device)
    return seen.index_fill_(0, index, True).sum()


def resample(x: torch.Tensor, log_weights: torch.Tensor, scheme: str = "systematic",
             generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x[ancestors], ancestors) for particles x (N, ...) with log-weights (N,), checked: a
    ValueError for weights that are not a 1-D real tensor of N finite-or-(−inf) values with at
    least one finite, and for a bad scheme."""
    check_scheme(scheme)
    if not isinstance(log_weights, torch.Tensor) or log_weights.dim() != 1 \
            or not log_weights.is_floating_point():
        raise ValueError(f"log_weights: expected a 1-D floating-point tensor, got "
                         f"{_describe(log_weights)}")
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] != log_weights.shape[0]:
        raise ValueError(f"x: expected {log_weights.shape[0]} particles along its first dimension, "
                         f"got {_describe(x)}")
    if log_weights.shape[0] == 0:
        raise ValueError("log_weights: there are no particles")
    nan, positive = int(torch.isnan(log_weights).sum()), int((log_weights == math.inf).sum())
    if nan or positive:
        raise ValueError(f"log_weights: {nan} NaN and {positive} +inf entries; log-weights must "
                         "be finite or −inf")
    if bool(all_zero(log_weights)):
        raise ValueError("log_weights: every particle has weight zero (all −inf): nothing to resample")
    if generator is not None and generator.device.type != log_weights.device.type:
        raise ValueError(f"generator: it lives on {generator.device}, the weights on {log_weights.device}")
    index = ancestors(log_weights, scheme, generator)
    return x.index_select(0, index.to(x.device)), index


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
