"""score-compose: compose pre-trained diffusion models and sample the composition correctly.

Compositions (``p1 * p2 ** 0.5 / p3 | class=7``) are built with Python operators on components
or parsed from strings, compiled into a score field and a pseudo-energy-difference evaluator,
and sampled with annealed ULA, MALA, HMC or random-walk MH along the diffusion schedule.
"""
from .compiler import Evaluation, Target, compile
from .components import (AnalyticComponent, Classifier, Component, EnergyModel, GaussianMixture,
                         ScoreModel, UniformBox)
from .errors import CompositionError
from .expr import Condition, Expr, Guidance, Leaf, Mixture, Power, Product, Quotient, Window
from .kernels import HMC, MALA, ULA, ChainState, Kernel, RandomWalkMH, StepInfo
from .sampler import Adaptation, Diagnostics, SampleResult, sample
from .schedule import Schedule
from .kernels.stepsize import PowerLaw
from .smc import SMC
from . import images, presets, smc

__version__ = "0.1.0"


def __getattr__(name):
    """``compose.adapters`` on first use, so that ``import compose`` imports no diffusers."""
    if name == "adapters":
        import importlib
        return importlib.import_module(".adapters", __name__)     # also binds compose.adapters
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse(text, components=None, /, **more):
    """Parse a composition string into an expression tree (see `compose.language.parse`)."""
    from .language import parse as _parse
    return _parse(text, components, **more)


__all__ = [
    "Schedule", "Component", "ScoreModel", "EnergyModel", "Classifier", "GaussianMixture",
    "UniformBox", "AnalyticComponent", "compile", "Target", "Evaluation", "parse",
    "CompositionError", "Expr", "Leaf", "Product", "Quotient", "Power", "Mixture", "Guidance",
    "Window", "Condition", "ULA", "MALA", "HMC", "RandomWalkMH", "Kernel", "ChainState", "StepInfo",
    "sample", "SampleResult", "Diagnostics", "Adaptation", "PowerLaw", "SMC",
]
