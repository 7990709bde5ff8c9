"""TEMPORARY stub (replaced by the resampling branch)."""
import math
import torch
SCHEMES = ("systematic", "stratified", "residual", "multinomial")
def check_scheme(name):
    if name not in SCHEMES:
        raise ValueError(f"resampling: must be one of {', '.join(map(repr, SCHEMES))}, got {name!r}")
    return name
def normalise(lw):
    return lw - torch.logsumexp(lw, 0)
def ess(lw):
    return torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))
def all_zero(lw):
    return ~torch.isfinite(torch.logsumexp(lw, 0))
def ancestors(lw, scheme, generator=None):
    n = lw.shape[0]
    w = torch.softmax(lw.double(), 0)
    w = torch.where(torch.isfinite(w), w, torch.full_like(w, 1.0 / n))
    c = torch.cumsum(w, 0); c = c / c[-1]
    u = torch.rand((), generator=generator, device=lw.device, dtype=torch.float64)
    pts = (u + torch.arange(n, device=lw.device, dtype=torch.float64)) / n
    return torch.searchsorted(c, pts).clamp_(max=n - 1)
def distinct(a):
    return (torch.bincount(a, minlength=a.shape[0]) > 0).sum()
def resample(x, lw, scheme="systematic", generator=None):
    a = ancestors(lw, scheme, generator); return x.index_select(0, a), a
