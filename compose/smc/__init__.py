"""Sequential Monte Carlo over the levels: Feynman–Kac weights from the component scores,
resampling, and resample-move with the library's kernels (docs/smc.md).

    result = compose.sample(target, kernel_or_None, N, smc=compose.SMC())
    result.diagnostics.log_normaliser          # log Ẑ of ∫ ∏ p_i^{w_i}
"""
from .options import INCREMENTS, SMC
from .resampling import SCHEMES, ancestors, ess, resample
from .system import ParticleSystem, SMCLevelDiagnostics, SMCState
from .weights import FeynmanKac, default_start_level, rate_factor

__all__ = ["SMC", "SMCState", "SMCLevelDiagnostics", "ParticleSystem", "FeynmanKac",
           "default_start_level", "rate_factor", "SCHEMES", "INCREMENTS", "ancestors", "ess",
           "resample"]
