"""MCMC kernels over batches of chains at one level: ULA, MALA, HMC/U-HMC, random-walk MH; and
Pyro's summary with the batch's chains as chains (`batch_summary`)."""
from .base import ChainState, Kernel, StepInfo
from .hmc import HMC, kinetic_energy, leapfrog
from .langevin import MALA, ULA, langevin_log_q, langevin_proposal
from .pyro_batch import batch_samples, batch_summary
from .random_walk import RandomWalkMH

__all__ = ["ChainState", "Kernel", "StepInfo", "HMC", "MALA", "ULA", "RandomWalkMH",
           "leapfrog", "kinetic_energy", "langevin_log_q", "langevin_proposal", "batch_samples",
           "batch_summary"]
