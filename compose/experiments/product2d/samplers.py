"""The samplers of Table 1 and their evaluation counts (docs/experiments.md, docs/sampler.md §4)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import compose
from compose.kernels import Kernel

from .settings import Settings
from .target import analytic_components


# -- samplers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec:
    """One row of Table 1.

    Attributes:
        name: the row's name, e.g. "HMC-3-line".
        family: "reverse", "ula", "mala", "uhmc" or "hmc".
        make_kernel: settings ↦ a compose kernel (None for the reverse process).
        path, points, rule: compile options for Δ of score-only terms (`compose.compile`).
        reverse_step: take an ancestral step after each level (only the reverse process here).
        budget_per_level: None for K steps at every level; otherwise the steps are spread
            over the levels by `compose.presets.steps_for_budget` within budget_per_level · T
            evaluations per sample (docs/presets.md).
        smc: sequential Monte Carlo (`compose.SMC()`, docs/smc.md): Feynman–Kac weights and
            resampling, the kernel's steps as moves, a reverse step after every level.
        smc_steps: K of an SMC row (its moves per level; the table's K otherwise).
    """

    name: str
    family: str
    make_kernel: Callable[[Settings], Optional[Kernel]]
    path: str = "line"
    points: int = 0
    reverse_step: bool = False
    rule: str = "trapezoid"
    budget_per_level: Optional[float] = None
    smc: bool = False
    smc_steps: Optional[int] = None

    @property
    def adjusted(self) -> bool:
        return self.family in ("mala", "hmc")

    def energy_name(self) -> str:
        """The row name in the energy block, where Δ is exact and line/curve variants coincide."""
        if self.budget_per_level is not None:
            return self.name.replace("-curve", "").replace("-line", "")
        return {"mala": "LA", "hmc": "HMC"}.get(self.family, self.name)

    def steps(self, settings: Settings, target, kernel):
        """K, or the per-level step counts of an end-loaded row, for this target and kernel."""
        if kernel is None:
            return 0
        if self.smc_steps is not None:
            return self.smc_steps
        if self.budget_per_level is None:
            return settings.steps_per_level
        budget = int(round(self.budget_per_level * settings.T))
        return compose.presets.steps_for_budget(target, kernel, budget)


def _reverse(settings: Settings) -> None:
    return None


def _ula(settings: Settings) -> Kernel:
    return compose.ULA(settings.la_step)


def _mala(settings: Settings) -> Kernel:
    return compose.MALA(settings.la_step)


def _hmc(adjusted: bool) -> Callable[[Settings], Kernel]:
    def make(settings: Settings) -> Kernel:
        return compose.HMC(settings.hmc_step, num_leapfrog=settings.num_leapfrog,
                           damping=settings.damping, mass=settings.mass, adjusted=adjusted,
                           negate_on_reject=settings.negate_on_reject)
    return make


def _specs() -> Dict[str, SamplerSpec]:
    specs = [SamplerSpec("Reverse", "reverse", _reverse, reverse_step=True),
             SamplerSpec("U-LA", "ula", _ula)]
    specs += [SamplerSpec(f"LA-{n}-line", "mala", _mala, "line", n) for n in (1, 3, 8)]
    specs.append(SamplerSpec("U-HMC", "uhmc", _hmc(False)))
    specs += [SamplerSpec(f"HMC-{n}-line", "hmc", _hmc(True), "line", n) for n in (1, 3, 8)]
    specs.append(SamplerSpec("HMC-curve", "hmc", _hmc(True), "curve", 0))
    # Beyond Table 1: Gauss–Lobatto Δ (docs/quadrature.md) against the trapezoid at equal cost,
    # and HMC-curve with its steps end-loaded (docs/presets.md) within the evaluations of our
    # HMC-curve (31 per level) and of the published code's (39.6 per level).
    specs.append(SamplerSpec("HMC-1-line-lobatto", "hmc", _hmc(True), "line", 1, rule="lobatto"))
    specs.append(SamplerSpec("HMC-3-curve", "hmc", _hmc(True), "curve", 1))
    specs.append(SamplerSpec("HMC-3-curve-lobatto", "hmc", _hmc(True), "curve", 1, rule="lobatto"))
    specs.append(SamplerSpec("HMC-curve-end", "hmc", _hmc(True), "curve", 0, budget_per_level=31.0))
    specs.append(SamplerSpec("HMC-curve-end-ref", "hmc", _hmc(True), "curve", 0, budget_per_level=39.6))
    # Sequential Monte Carlo (docs/smc.md): the weighted reverse process, and resample-move
    # with K moves per level of U-LA, LA-3-line and HMC-curve before each reverse step.
    specs.append(SamplerSpec("Reverse+SMC", "reverse", _reverse, reverse_step=True, smc=True))
    for k in (2, 5):
        specs.append(SamplerSpec(f"U-LA+SMC-{k}", "ula", _ula, reverse_step=True, smc=True, smc_steps=k))
        specs.append(SamplerSpec(f"LA-3-line+SMC-{k}", "mala", _mala, "line", 3, reverse_step=True,
                                 smc=True, smc_steps=k))
    specs.append(SamplerSpec("HMC-curve+SMC-2", "hmc", _hmc(True), "curve", 0, reverse_step=True,
                             smc=True, smc_steps=2))
    return {s.name: s for s in specs}


#: The samplers of Table 1 by name, in the table's order. Reverse: T ancestral steps with the
#: summed score, small (posterior) variance, no noise at the last step. The others: pure annealed
#: MCMC, K steps per level from T down to 1, no reverse step; η = 0.001 (LA); ε = 0.03, L = 3,
#: damping 0.5, mass 1 (HMC), momentum negated on rejection (our exact default; the published
#: code keeps +v'). Then the rows beyond the table: Gauss–Lobatto Δ (HMC-1-line-lobatto,
#: HMC-3-curve with its trapezoid midpoints, HMC-3-curve-lobatto with Simpson per segment) and
#: end-loaded steps (HMC-curve-end at 31, HMC-curve-end-ref at 39.6 evaluations per level).
SAMPLERS: Dict[str, SamplerSpec] = _specs()


#: The samplers quick mode runs unless told otherwise.
QUICK_SAMPLERS = ("Reverse", "U-LA", "LA-1-line", "U-HMC", "HMC-1-line", "HMC-curve")


#: Evaluations of the product per sample made by the published code at T = 100, K = 10, L = 3,
#: and what the algorithm needs with scores reused (docs/experiments.md, "Costs").
PUBLISHED_EVALUATIONS = {
    "Reverse": (100, 100), "U-LA": (1980, 990),
    "LA-1-line": (5000, 2000), "LA-3-line": (7000, 4000), "LA-8-line": (12000, 9000),
    "U-HMC": (5940, 2970),
    "HMC-1-line": (5940 + 990 * 3, 990 * 4), "HMC-3-line": (5940 + 990 * 5, 990 * 6),
    "HMC-8-line": (5940 + 990 * 10, 990 * 11), "HMC-curve": (3960, 2970),
}


def select_samplers(names: Optional[Sequence[str]]) -> List[SamplerSpec]:
    """The specs named (all of Table 1 if None), in the table's order; ValueError on unknown names."""
    if names is None:
        return list(SAMPLERS.values())
    names = list(names)
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown:
        raise ValueError(f"samplers: unknown {', '.join(unknown)}; choose from {', '.join(SAMPLERS)}")
    return [s for s in SAMPLERS.values() if s.name in names]


def needed_evaluations(spec: SamplerSpec, settings: Settings, exact: bool = False) -> int:
    """Evaluations of each component per sample that `spec` needs (docs/sampler.md, section 4).

    Per level: Reverse 1; U-LA K; LA-n-line 1 + K(1 + n); U-HMC and HMC 1 + L·K, HMC-n-line
    K·n more, HMC-curve none more. With `exact` (energy components) no interior points.
    End-loaded rows: what their step counts cost (`compose.presets.evaluations_per_sample`).
    """
    if spec.smc:          # counted by the plan: the levels an SMC run takes, each with its reverse step
        ring, bar = analytic_components(settings.schedule())
        target = compose.compile(compose.ScoreModel.from_analytic(ring) * bar, path=spec.path,
                                 points=0 if exact else spec.points, rule=spec.rule)
        kernel = spec.make_kernel(settings)
        plan = target.plan_for(kernel, spec.steps(settings, target, kernel), 1, True,
                               smc=compose.SMC())
        return plan.terms[0].per_sample
    if spec.budget_per_level is not None:
        ring, bar = analytic_components(settings.schedule())
        target = compose.compile(compose.ScoreModel.from_analytic(ring) * bar, path=spec.path,
                                 points=0 if exact else spec.points, rule=spec.rule)
        kernel = spec.make_kernel(settings)
        return compose.presets.evaluations_per_sample(target, kernel, spec.steps(settings, target, kernel))
    T, K, L = settings.T, settings.steps_per_level, settings.num_leapfrog
    n = 0 if exact else spec.points
    per_level = {"reverse": 1, "ula": K, "mala": 1 + K * (1 + n), "uhmc": 1 + L * K,
                 "hmc": 1 + L * K + (K * n if spec.path == "line" else K * n * L)}[spec.family]
    return T * per_level
