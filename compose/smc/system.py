"""The particle system of `compose.SMC`: weights, normaliser and resampling, level by level.

At level t the annealed driver (`compose.sample`) calls, in this order,

    arrive(state, evaluation_at_x_t, t)    complete the pending step's increment, normalise,
                                           ESS, resample where ESS < threshold · N (ancestors)
    ... the kernel's K moves, which leave π_t invariant and the weights unchanged ...
    depart(state, evaluation_at_x_t, t)    keep the excess for the increment of t → t − 1
    finish(state, t = 1)                   the last increment (left rule), before the final
                                           resampling to equal weights

Everything stays on the chains' device: the decision to resample is a tensor, the ancestors are
the identity where it is False, and the level's numbers are read once with its diagnostics.
The log-weights are float64 and kept normalised (logsumexp 0); the normaliser estimate is

    log Ẑ = log Z_T + Σ_levels log Σ_i W_i exp(increment_i)         (unbiased in Ẑ).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from . import resampling
from .options import SMC
from .weights import FeynmanKac, rate_factor


@dataclass
class SMCState:
    """What the particle system carries between levels: the normalised log-weights (N,), the
    running log-normaliser (a 0-d tensor), and the excess q at the start of the pending step
    (`pending_level` t for the step t → t − 1), which the trapezoid completes at the next level."""

    log_weights: torch.Tensor
    log_normaliser: torch.Tensor
    pending: Optional[torch.Tensor] = None
    pending_level: Optional[int] = None

    @classmethod
    def fresh(cls, n: int, fk: FeynmanKac, device) -> "SMCState":
        """Equal weights and log Z_T at the start."""
        dtype = _weight_dtype(device)
        return cls(torch.full((n,), -math.log(n), dtype=dtype, device=device),
                   torch.tensor(fk.log_normaliser_start, dtype=dtype, device=device))

    def gather(self, index: torch.Tensor) -> "SMCState":
        pending = None if self.pending is None else self.pending.index_select(0, index)
        return SMCState(self.log_weights.index_select(0, index), self.log_normaliser, pending,
                        self.pending_level)

    def state_dict(self) -> dict:
        """Tensors on the CPU, for checkpoints (`from_state_dict` restores them exactly)."""
        return {"log_weights": self.log_weights.detach().cpu(),
                "log_normaliser": self.log_normaliser.detach().cpu(),
                "pending": None if self.pending is None else self.pending.detach().cpu(),
                "pending_level": self.pending_level}

    @classmethod
    def from_state_dict(cls, state: dict, device=None) -> "SMCState":
        if not isinstance(state, dict) or not {"log_weights", "log_normaliser"} <= set(state):
            raise ValueError("smc_state: expected the dict of SMCState.state_dict()")
        def put(v):
            return None if v is None else torch.as_tensor(v).to(device) if device is not None \
                else torch.as_tensor(v)
        level = state.get("pending_level")
        return cls(put(state["log_weights"]), put(state["log_normaliser"]), put(state.get("pending")),
                   None if level is None else int(level))

    def __repr__(self) -> str:
        return (f"SMCState({self.log_weights.shape[0]} particles, "
                f"pending step {self.pending_level if self.pending_level is not None else '—'})")


@dataclass
class SMCLevelDiagnostics:
    """One level of the particle system: the ESS before resampling, whether it resampled, the
    number of distinct ancestors then (N when it did not), and the log-normaliser increment of
    the step completed on arriving here (at the start level: log Z_T; at level 1 also the last
    step's). `final_ess`: at level 1, the ESS of the final weights, before the final resampling."""

    ess: float
    resampled: bool
    ancestors: int
    log_normaliser_increment: float
    final_ess: Optional[float] = None


def _weight_dtype(device) -> torch.dtype:
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


class ParticleSystem:
    """The SMC operations of one run (see the module docstring)."""

    def __init__(self, target, smc: SMC, fk: FeynmanKac, generator: Optional[torch.Generator]):
        self.target, self.smc, self.fk, self.generator = target, smc, fk, generator

    def _excess(self, evaluation, dtype) -> torch.Tensor:
        return evaluation.excess().to(dtype)

    def arrive(self, state: SMCState, evaluation, t: int) -> Tuple[SMCState, torch.Tensor, Dict]:
        """Complete the pending step with the excess at x_t, normalise, and resample where the
        ESS is below threshold. Returns the new state, the ancestor indices (the identity where
        it did not resample) and the level's numbers as tensors."""
        log_w = state.log_weights
        n = log_w.shape[0]
        if state.pending is None:          # the start: equal weights, log Z_T
            increment_total = state.log_normaliser
            normaliser = state.log_normaliser
        else:
            if state.pending_level != t + 1:
                raise ValueError(f"smc_state: its pending step starts at level {state.pending_level}, "
                                 f"but the run continues at level {t} (expected {state.pending_level - 1})")
            excess_to = self._excess(evaluation, log_w.dtype) if self.smc.increment == "trapezoid" else None
            increment = self.fk.increment(rate_factor(self.target, t + 1), state.pending, excess_to)
            log_w, increment_total = _reweight(log_w, increment)
            normaliser = state.log_normaliser + increment_total
        ess = resampling.ess(log_w)
        zero = resampling.all_zero(log_w)            # before resampling resets dead weights
        index = torch.arange(n, device=log_w.device)
        resampled = torch.zeros((), dtype=torch.bool, device=log_w.device)
        if self.smc.resamples_at(t):
            if self.smc.ess_threshold >= 1.0:
                resampled = torch.ones((), dtype=torch.bool, device=log_w.device)
            else:
                resampled = ess < self.smc.ess_threshold * n
            chosen = resampling.ancestors(log_w, self.smc.resampling, self.generator)
            index = torch.where(resampled, chosen, index)
            log_w = torch.where(resampled, torch.full_like(log_w, -math.log(n)), log_w)
        stats = {"ess": ess, "resampled": resampled, "ancestors": resampling.distinct(index),
                 "increment": increment_total, "zero": zero}
        return SMCState(log_w, normaliser), index, stats

    def depart(self, state: SMCState, evaluation, t: int) -> SMCState:
        """Keep the excess at the point the reverse step t → t − 1 leaves from."""
        return SMCState(state.log_weights, state.log_normaliser,
                        self._excess(evaluation, state.log_weights.dtype), t)

    def finish(self, state: SMCState, x: torch.Tensor) -> Tuple[SMCState, torch.Tensor, Dict]:
        """After the step 1 → 0: its increment (left rule: no level 0 is evaluated), then, unless
        `return_weighted`, the final resampling to equal weights."""
        increment = self.fk.increment(rate_factor(self.target, 1), state.pending)
        log_w, increment_total = _reweight(state.log_weights, increment)
        ess = resampling.ess(log_w)
        zero = resampling.all_zero(log_w)
        if not self.smc.return_weighted:
            index = resampling.ancestors(log_w, self.smc.resampling, self.generator)
            x = x.index_select(0, index)
            log_w = torch.full_like(log_w, -math.log(log_w.shape[0]))
        stats = {"final_increment": increment_total, "final_ess": ess, "final_zero": zero}
        return SMCState(log_w, state.log_normaliser + increment_total), x, stats


def _reweight(log_w: torch.Tensor, increment: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(normalised log W + increment, log Σ W exp(increment)); NaN increments count as −inf."""
    increment = torch.nan_to_num(increment.to(log_w.dtype), nan=-math.inf, posinf=math.inf,
                                 neginf=-math.inf)
    unnormalised = log_w + increment
    total = torch.logsumexp(unnormalised, 0)
    safe = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
    return unnormalised - safe, total


def level_diagnostics(stats: Dict[str, float]) -> SMCLevelDiagnostics:
    """The level's numbers, read (`stats` as host floats) into diagnostics."""
    final = stats.get("final_ess")
    increment = stats["increment"] + stats.get("final_increment", 0.0)
    return SMCLevelDiagnostics(ess=stats["ess"], resampled=bool(stats["resampled"]),
                               ancestors=int(stats["ancestors"]),
                               log_normaliser_increment=increment,
                               final_ess=None if final is None else final)
