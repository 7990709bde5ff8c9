"""The samplers of the digits table and their kernels (docs/experiments.md, section 2)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import compose
from compose.kernels import Kernel
from compose.kernels.stepsize import PowerLaw

from .settings import Settings


# -- samplers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec:
    """One row of the table: its name, family ("reverse", "ula", "mala", "uhmc", "hmc"), the
    Δ path and interior points of the score model."""

    name: str
    family: str
    path: str = "line"
    points: int = 0

    @property
    def adjusted(self) -> bool:
        return self.family in ("mala", "hmc")

    @property
    def tuned_as(self) -> Optional[str]:
        """The adjusted family whose step size this sampler uses (None for Reverse)."""
        return {"ula": "mala", "mala": "mala", "uhmc": "hmc", "hmc": "hmc"}.get(self.family)


def sampler_specs(settings: Settings) -> List[SamplerSpec]:
    """Reverse, U-LA, LA-8-line, U-HMC, HMC-3-curve (point counts from `settings`)."""
    return [SamplerSpec("Reverse", "reverse"), SamplerSpec("U-LA", "ula"),
            SamplerSpec("LA-8-line", "mala", "line", settings.la_points),
            SamplerSpec("U-HMC", "uhmc"),
            SamplerSpec("HMC-3-curve", "hmc", "curve", settings.curve_points)]


def make_kernel(family: str, step: PowerLaw, settings: Settings) -> Optional[Kernel]:
    """The kernel of a family at step sizes `step` (None for the reverse process)."""
    if family == "reverse":
        return None
    if family in ("ula", "mala"):
        return compose.ULA(step) if family == "ula" else compose.MALA(step)
    return compose.HMC(step, num_leapfrog=settings.num_leapfrog, damping=settings.damping,
                       mass=settings.mass, adjusted=family == "hmc")
