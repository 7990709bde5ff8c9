"""Discrete variance-preserving noise schedules (docs/algebra.md, section 1).

Levels are t = 1..T. Level 0 is the clean data: ᾱ_0 = 1, σ_0 = 0.

    β_t,  α_t = 1 − β_t,  ᾱ_t = ∏_{s≤t} α_s,  σ_t = √(1 − ᾱ_t)
    forward:  x_t = √ᾱ_t · x_0 + σ_t · ε
    reverse:  x_{t−1} = (x_t + β_t s_t(x_t)) / √α_t + τ_t z,
              τ_t² = β_t ("large") or β̃_t = β_t σ²_{t−1} / σ²_t ("small"), z = 0 at t = 1.

The schedule's tables are float64 on the CPU; the per-level lookups return Python floats, so a
sampling loop multiplies by scalars and never copies a table to the device.

Respacing (Nichol & Dhariwal 2021): a model trained on T levels is sampled on an increasing
subsequence τ_1 < … < τ_S of them. `Schedule.respaced` gives the schedule over the new levels
i = 1..S with ᾱ_i = ᾱ_{τ_i} (the training table's value, copied), β_i = 1 − ᾱ_i / ᾱ_{i−1}
(ᾱ_0 = 1), and `network_levels[i − 1] = τ_i`, the level a network trained on the original
schedule must be called with (docs/pretrained.md).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import numpy as np

import torch

Level = int


class Schedule:
    """A noise schedule over levels 1..T, built from its β's.

    Args:
        betas: the T values β_1..β_T, each in (0, 1).
        name: a label for printing and checkpoints: "linear" and "cosine" for the built-in
            schedules, the source's own name for imported ones (e.g. "diffusers scaled_linear"),
            "custom" (the default) for anything else.

    Attributes:
        network_levels: int64 tensor of the T training levels that networks are called with;
            1..T for a training schedule, τ_1..τ_S for a respaced one (`respaced`).
        training: the schedule the levels refer to: itself, or the schedule it was respaced from.
    """

    def __init__(self, betas: Union[Sequence[float], torch.Tensor], name: str = "custom"):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name: expected a non-empty string naming the schedule, got {name!r:.60}")
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
        if betas.numel() < 1:
            raise ValueError("betas: need at least one level, got an empty sequence")
        if not bool(torch.all((betas > 0) & (betas < 1))):
            raise ValueError("betas: every β_t must lie in the open interval (0, 1)")
        self._set_tables(betas, torch.cumprod(1.0 - betas, 0), name)
        self.network_levels = torch.arange(1, self.T + 1, dtype=torch.int64)
        self.training = self

    def _set_tables(self, betas: torch.Tensor, alpha_bars: torch.Tensor, name: str) -> None:
        self.name = name
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = alpha_bars
        self.sigmas = torch.sqrt(1.0 - self.alpha_bars)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars[:-1]])
        # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t); zero at t = 1.
        self.posterior_variances = betas * (1.0 - previous) / (1.0 - self.alpha_bars)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_betas(cls, betas: Union[Sequence[float], torch.Tensor], name: str = "custom") -> "Schedule":
        """The schedule with these β_1..β_T, named `name` in plans and checkpoints (what
        ``Schedule(betas, name)`` builds; the name says where the β's came from)."""
        return cls(betas, name=name)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        """Ho et al. (2020): β linear from β_start to β_end at T = 1000, rescaled by 1000/T."""
        T = _check_T(T)
        scale = 1000.0 / T
        start, end = beta_start * scale, beta_end * scale
        if not 0 < start < 1 or not 0 < end < 1:
            raise ValueError(f"T: the rescaled linear β's leave (0, 1) at T={T}; use T ≥ 21")
        return cls(torch.linspace(start, end, T, dtype=torch.float64), name="linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "Schedule":
        """Nichol & Dhariwal (2021): ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2)."""
        T = _check_T(T)
        steps = torch.arange(T + 1, dtype=torch.float64)
        f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
        return cls(betas, name="cosine")

    @classmethod
    def from_alpha_bars(cls, alpha_bars: Union[Sequence[float], torch.Tensor],
                        name: str = "custom") -> "Schedule":
        """The schedule with these ᾱ_1 > … > ᾱ_T in (0, 1), kept exactly:
        β_t = 1 − ᾱ_t / ᾱ_{t−1} (ᾱ_0 = 1)."""
        alpha_bars = torch.as_tensor(alpha_bars, dtype=torch.float64).flatten().cpu()
        if alpha_bars.numel() < 1:
            raise ValueError("alpha_bars: need at least one level, got an empty sequence")
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        if not bool(torch.all((alpha_bars > 0) & (alpha_bars < previous))):
            raise ValueError("alpha_bars: must be strictly decreasing in (0, 1)")
        return cls._from_tables((previous - alpha_bars) / previous, alpha_bars, name)

    @classmethod
    def from_sigmas(cls, sigmas: Union[Sequence[float], torch.Tensor],
                    name: str = "custom") -> "Schedule":
        """The VP schedule of variance-exploding noise levels σ_1 < … < σ_T (x_VE = x_0 + σ ε).

        x_t = √ᾱ_t x_0 + σ_t ε is x_VE = x_t/√ᾱ_t at σ_VE = σ_t/√ᾱ_t, so
        ᾱ_t = 1/(1 + σ_t²) and β_t = (σ_t² − σ_{t−1}²)/(1 + σ_t²) (σ_0 = 0): level t of this
        schedule is the VE noise level σ_t exactly (`ve_sigma`; docs/pretrained.md).
        """
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten().cpu()
        if sigmas.numel() < 1:
            raise ValueError("sigmas: need at least one noise level, got an empty sequence")
        previous = torch.cat([torch.zeros(1, dtype=torch.float64), sigmas[:-1]])
        if not bool(torch.all(torch.isfinite(sigmas) & (sigmas > previous))):
            raise ValueError("sigmas: must be finite, positive and strictly increasing "
                             "(level 1 the least noisy)")
        s2, p2 = sigmas ** 2, previous ** 2
        return cls._from_tables((s2 - p2) / (1 + s2), 1 / (1 + s2), name)

    @classmethod
    def edm(cls, T: int = 40, sigma_min: float = 0.002, sigma_max: float = 80.0,
            rho: float = 7.0) -> "Schedule":
        """Karras et al. (2022)'s noise levels as a VP schedule (`from_sigmas`):
        σ_t = (σ_min^{1/ρ} + (t − 1)/(T − 1) (σ_max^{1/ρ} − σ_min^{1/ρ}))^ρ, t = 1..T, so
        level 1 is σ_min and level T is σ_max (EDM's sampling range for its training range)."""
        T = _check_T(T)
        if T < 2:
            raise ValueError("T: the EDM schedule needs at least 2 levels")
        if not (0 < sigma_min < sigma_max < math.inf):
            raise ValueError(f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max < inf, got "
                             f"{sigma_min!r} and {sigma_max!r}")
        if not rho > 0:
            raise ValueError(f"rho: must be > 0, got {rho!r}")
        ramp = torch.arange(T, dtype=torch.float64) / (T - 1)
        low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sigmas = (low + ramp * (high - low)) ** rho
        sigmas[0], sigmas[-1] = sigma_min, sigma_max
        return cls.from_sigmas(sigmas, name="edm")

    @classmethod
    def continuous_vp(cls, T: int = 1000, beta_min: float = 0.1,
                      beta_max: float = 20.0) -> "Schedule":
        """The continuous VP process of score SDEs (Song et al. 2021) at times s = t/T:
        ᾱ_t = ᾱ(t/T), ᾱ(s) = exp(−β_min s − ½ (β_max − β_min) s²), so level T is s = 1."""
        T = _check_T(T)
        if not (0 <= beta_min <= beta_max) or not beta_max > 0 or not math.isfinite(beta_max):
            raise ValueError(f"beta_min, beta_max: need 0 ≤ beta_min ≤ beta_max, beta_max > 0 "
                             f"and finite, got {beta_min!r} and {beta_max!r}")
        s = torch.arange(T + 1, dtype=torch.float64) / T
        log_abar = -(beta_min * s + 0.5 * (beta_max - beta_min) * s * s)
        betas = -torch.expm1(log_abar[1:] - log_abar[:-1])
        return cls._from_tables(betas, torch.exp(log_abar[1:]), name="continuous_vp")

    @classmethod
    def _from_tables(cls, betas: torch.Tensor, alpha_bars: torch.Tensor, name: str) -> "Schedule":
        if not bool(torch.all((betas > 0) & (betas < 1))):
            raise ValueError("the noise levels give a β_t outside (0, 1): make them strictly "
                             "increasing and finite")
        schedule = cls.__new__(cls)
        schedule._set_tables(betas, alpha_bars, name)
        schedule.network_levels = torch.arange(1, schedule.T + 1, dtype=torch.int64)
        schedule.training = schedule
        return schedule

    def respaced(self, levels: Union[int, Sequence[int], torch.Tensor]) -> "Schedule":
        """This schedule sampled on fewer levels (improved DDPM's respacing).

        Args:
            levels: an int S (S levels evenly spaced and ending at T: τ_k = round(k T / S),
                k = 1..S, diffusers' "trailing" spacing) or a strictly increasing sequence of
                levels of this schedule.
        Returns:
            a Schedule with T = S, ᾱ_i = ᾱ_{τ_i} exactly, β_i = 1 − ᾱ_i / ᾱ_{i−1} (ᾱ_0 = 1;
            this schedule's β_τ itself where τ_i = τ_{i−1} + 1),
            `network_levels` the training levels τ_i (composed when this schedule is itself
            respaced) and `training` this schedule's training schedule.
        """
        taus = self._respacing_levels(levels)
        alpha_bars = self.alpha_bars[taus - 1].clone()
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        # Where consecutive levels are kept, β is this schedule's own (no rounding), so that
        # respacing on every level gives back the same β's.
        consecutive = torch.diff(taus, prepend=torch.zeros(1, dtype=torch.int64)) == 1
        betas = torch.where(consecutive, self.betas[taus - 1], 1.0 - alpha_bars / previous)
        respaced = Schedule.__new__(Schedule)
        respaced._set_tables(betas, alpha_bars, self.name)
        respaced.network_levels = self.network_levels[taus - 1].clone()
        respaced.training = self.training
        return respaced

    def _respacing_levels(self, levels) -> torch.Tensor:
        T = self.T
        levels = parse_levels(levels, T)
        if isinstance(levels, int):
            k = torch.arange(1, levels + 1, dtype=torch.int64)
            return (2 * k * T + levels) // (2 * levels)                    # round(k T / S), half up
        return torch.tensor(levels, dtype=torch.int64)

    @property
    def is_respaced(self) -> bool:
        """True when some level is called on a different training level (see `respaced`)."""
        return self.training is not self

    def network_level(self, t: Level) -> int:
        """The training level a network is called with at level t (t itself unless respaced)."""
        return int(self.network_levels[self.check_level(t) - 1])

    # -- lookup -------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return int(self.betas.numel())

    def check_level(self, t: Level, name: str = "t", allow_zero: bool = False) -> int:
        """`t` as an int, or a ValueError naming the allowed range."""
        low = 0 if allow_zero else 1
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not low <= t <= self.T:
            raise ValueError(f"{name}: level must be an integer in {low}..{self.T}, got {t!r}")
        return int(t)

    def beta(self, t: Level) -> float:
        return float(self.betas[self.check_level(t) - 1])

    def alpha(self, t: Level) -> float:
        return float(self.alphas[self.check_level(t) - 1])

    def alpha_bar(self, t: Level) -> float:
        t = self.check_level(t, allow_zero=True)
        return 1.0 if t == 0 else float(self.alpha_bars[t - 1])

    def sigma(self, t: Level) -> float:
        t = self.check_level(t, allow_zero=True)
        return 0.0 if t == 0 else float(self.sigmas[t - 1])

    def ve_sigma(self, t: Level) -> float:
        """σ_t/√ᾱ_t: the variance-exploding noise level of level t (x_VE = x_t/√ᾱ_t =
        x_0 + σ_VE ε); 0 at t = 0."""
        t = self.check_level(t, allow_zero=True)
        return 0.0 if t == 0 else float(self.sigmas[t - 1] / self.alpha_bars[t - 1].sqrt())

    def posterior_variance(self, t: Level) -> float:
        return float(self.posterior_variances[self.check_level(t) - 1])

    # -- the processes ------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, t: Union[Level, torch.Tensor],
                  noise: torch.Tensor) -> torch.Tensor:
        """Forward process x_t = √ᾱ_t x_0 + σ_t ε; `t` an int or an int64 tensor of shape (N,)."""
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            table = self.alpha_bars.to(device=x0.device, dtype=x0.dtype)
            abar = table[t - 1].reshape((-1,) + (1,) * (x0.dim() - 1))
        else:
            abar = self.alpha_bar(int(t))
            abar = torch.tensor(abar, dtype=x0.dtype, device=x0.device)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def reverse_step(self, x: torch.Tensor, score: torch.Tensor, t: Level,
                     generator: Optional[torch.Generator] = None,
                     variance: str = "small") -> torch.Tensor:
        """One ancestral step from level t to t − 1, given the composed score at (x, t).

        x_{t−1} = (x_t + β_t s) / √α_t + τ_t z, with τ_t² = β̃_t ("small") or β_t ("large").
        """
        t = self.check_level(t)
        if variance not in ("small", "large"):
            raise ValueError(f"variance: must be 'small' or 'large', got {variance!r}")
        beta = self.beta(t)
        mean = (x + beta * score) / math.sqrt(1.0 - beta)
        if t == 1:
            return mean
        tau2 = self.posterior_variance(t) if variance == "small" else beta
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mean + math.sqrt(tau2) * noise

    def same_as(self, other: "Schedule") -> bool:
        """True when both schedules have the same T, the same β's and the same network levels."""
        return other is self or (other.T == self.T and torch.equal(other.betas, self.betas)
                                 and torch.equal(other.network_levels, self.network_levels))

    def __eq__(self, other):
        return isinstance(other, Schedule) and self.same_as(other)

    def __hash__(self):
        return hash((self.T, self.betas[0].item(), self.betas[-1].item()))

    def to_dict(self) -> dict:
        """Enough to rebuild the schedule: name, T and the β's (for checkpoints); a respaced
        schedule also records its training schedule and levels."""
        if self.is_respaced:
            return {"name": self.name, "T": self.T, "training": self.training.to_dict(),
                    "network_levels": self.network_levels.tolist()}
        return {"name": self.name, "T": self.T, "betas": self.betas.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Schedule":
        if "training" in data:
            return cls.from_dict(data["training"]).respaced(data["network_levels"])
        return cls(data["betas"], name=data.get("name", "custom"))

    def __repr__(self) -> str:
        if self.is_respaced:
            levels = self.network_levels.tolist()
            T, S = self.training.T, self.T
            even = [(2 * k * T + S) // (2 * S) for k in range(1, S + 1)]
            return f"{self.training!r}.respaced({S if levels == even else levels})"
        if self.name in ("linear", "cosine"):
            return f"Schedule.{self.name}(T={self.T})"
        return f"Schedule(T={self.T})" if self.name == "custom" else f"Schedule(T={self.T}, name={self.name!r})"


def parse_levels(levels, T: Optional[int] = None, name: str = "levels") -> Union[int, Tuple[int, ...]]:
    """The one reading of a respacing's `levels` (compile, `Schedule.respaced`, `sample_run`,
    the command line): S, a number of levels ≥ 1, or the strictly increasing training levels
    τ_1 < … < τ_S, within 1..T when the schedule's T is given (returned as an int or a tuple).

    S is any integral scalar: a Python or NumPy integer, a 0-d integer tensor or array. The
    levels are a list, tuple or range of such scalars, or a 1-D integer tensor or array. Any
    other value (a bool, a float such as 2.7, a string, a dict, a set, a 2-D tensor, an empty
    sequence) is a ValueError naming it: nothing is rounded, flattened or read as keys.
    """
    expected = (f"{name}: expected an int or an increasing sequence of integer levels (S levels, "
                "or the levels τ_1 < … < τ_S), e.g. 50 or [1, 250, 500, 750, 1000]")
    bounds = "≥ 1" if T is None else f"in 1..{T}"
    scalar = _integral(levels)
    if scalar is not None:
        if scalar < 1 or (T is not None and scalar > T):
            raise ValueError(f"{name}: number of levels must be {bounds}, got {scalar}")
        return scalar
    if isinstance(levels, (torch.Tensor, np.ndarray)):
        if levels.ndim != 1 or not _integer_dtype(levels.dtype):
            raise ValueError(f"{expected}; got {_show(levels)}")
        values = levels.tolist()
    elif isinstance(levels, (list, tuple, range)):
        values = []
        for value in levels:
            integer = _integral(value)
            if integer is None:
                raise ValueError(f"{name}: every level must be an integer, got {_show(value)} in "
                                 f"{_show(levels)}")
            values.append(integer)
    else:
        raise ValueError(f"{expected}; got {_show(levels)}")
    if not values:
        raise ValueError(f"{name}: need at least one level, got an empty sequence")
    for value in values:
        if value < 1 or (T is not None and value > T):
            raise ValueError(f"{name}: every level must be an integer {bounds}, got {value}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name}: must be strictly increasing, got "
                         f"{values if len(values) < 12 else values[:12]}")
    return tuple(values)


def _integer_dtype(dtype) -> bool:
    """Whether `dtype` (torch's or NumPy's) is an integer type other than bool."""
    if isinstance(dtype, torch.dtype):
        return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    return np.dtype(dtype).kind in "iu"


def _integral(value) -> Optional[int]:
    """`value` as an int when it is an integral scalar (not a bool, not a float); else None."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 0 or not _integer_dtype(value.dtype):
            return None
        return int(value.item())
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return None


def _show(value) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        shape = f" of shape {tuple(value.shape)} and" if value.ndim > 1 else " of"
        return f"a {value.ndim}-D {type(value).__name__}{shape} dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
        raise ValueError(f"T: number of levels must be an integer ≥ 1, got {T!r}")
    return int(T)
