"""Sampling runs at scale: `compose sample` from Python, sharded over processes, resumable.

`sample_run` samples a composition into a directory in fixed blocks of chains, each seeded from
(seed, block), checkpointed after every level and merged in block order, so that the samples
are bitwise the same for any number of processes and after any interruption
(docs/sampling_at_scale.md).
"""
from .blocks import block_rows, block_seed, blocks_of_rank
from .checkpoint import DamagedFile
from .identity import ComponentsIdentity
from .run import RunResult, sample_run
from .settings import KERNELS, RunError, SampleSettings

__all__ = ["sample_run", "RunResult", "RunError", "SampleSettings", "KERNELS", "block_seed",
           "block_rows", "blocks_of_rank", "DamagedFile", "ComponentsIdentity"]
