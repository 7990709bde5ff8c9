"""The samplers of the digits table and their kernels (docs/experiments.md, section 2)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import compose
from compose.kernels import Kernel
from compose.kernels.stepsize import PowerLaw

from .settings import Settings


# -- samplers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec:
    """One row of the table: its name, family ("reverse", "ula", "mala", "uhmc", "hmc"), the
    Δ path, interior points and quadrature rule of the score model (docs/quadrature.md), and
    whether its steps are end-loaded within the evaluations of K steps at every level
    (docs/presets.md), and whether it runs sequential Monte Carlo (docs/smc.md): one particle
    system per class, since the batch's rows ask for different classes."""

    name: str
    family: str
    path: str = "line"
    points: int = 0
    rule: str = "trapezoid"
    end_loaded: bool = False
    smc: bool = False

    @property
    def adjusted(self) -> bool:
        return self.family in ("mala", "hmc")

    @property
    def tuned_as(self) -> Optional[str]:
        """The adjusted family whose step size this sampler uses (None for Reverse)."""
        return {"ula": "mala", "mala": "mala", "uhmc": "hmc", "hmc": "hmc"}.get(self.family)

    def steps(self, settings: Settings, target, kernel):
        """K, or for an end-loaded row the per-level counts with at most the evaluations of
        K steps at every level (reverse steps included)."""
        if kernel is None:
            return 0
        if not self.end_loaded:
            return settings.steps_per_level
        budget = compose.presets.evaluations_per_sample(
            target, kernel, [settings.steps_per_level] * settings.T, reverse_step=True)
        return compose.presets.steps_for_budget(target, kernel, budget, reverse_step=True)


#: Rows beyond the table: Gauss–Lobatto Δ at fewer (LA) or the same (HMC) evaluations, and
#: HMC-3-curve with its steps end-loaded.
EXTRA_SAMPLER_NAMES = ("LA-1-line-lobatto", "LA-2-line-lobatto", "HMC-3-curve-lobatto",
                       "HMC-3-curve-end", "Reverse+SMC", "U-LA+SMC", "HMC-3-curve+SMC")


def sampler_specs(settings: Settings, names: Optional[Sequence[str]] = None) -> List[SamplerSpec]:
    """The rows named (default the table's: Reverse, U-LA, LA-8-line, U-HMC, HMC-3-curve;
    point counts from `settings`), in the order table rows, then `EXTRA_SAMPLER_NAMES`."""
    specs = [SamplerSpec("Reverse", "reverse"), SamplerSpec("U-LA", "ula"),
             SamplerSpec("LA-8-line", "mala", "line", settings.la_points),
             SamplerSpec("U-HMC", "uhmc"),
             SamplerSpec("HMC-3-curve", "hmc", "curve", settings.curve_points),
             SamplerSpec("LA-1-line-lobatto", "mala", "line", 1, rule="lobatto"),
             SamplerSpec("LA-2-line-lobatto", "mala", "line", 2, rule="lobatto"),
             SamplerSpec("HMC-3-curve-lobatto", "hmc", "curve", settings.curve_points, rule="lobatto"),
             SamplerSpec("HMC-3-curve-end", "hmc", "curve", settings.curve_points, end_loaded=True),
             SamplerSpec("Reverse+SMC", "reverse", smc=True), SamplerSpec("U-LA+SMC", "ula", smc=True),
             SamplerSpec("HMC-3-curve+SMC", "hmc", "curve", settings.curve_points, smc=True)]
    if names is None:
        return specs[:5]
    known = [s.name for s in specs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"samplers: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    return [s for s in specs if s.name in set(names)]


def make_kernel(family: str, step: PowerLaw, settings: Settings) -> Optional[Kernel]:
    """The kernel of a family at step sizes `step` (None for the reverse process)."""
    if family == "reverse":
        return None
    if family in ("ula", "mala"):
        return compose.ULA(step) if family == "ula" else compose.MALA(step)
    return compose.HMC(step, num_leapfrog=settings.num_leapfrog, damping=settings.damping,
                       mass=settings.mass, adjusted=family == "hmc")
