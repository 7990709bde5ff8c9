"""The processes of a run: one plain process, or the ranks started by ``torchrun``.

Under ``torchrun`` (the environment holds WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, …) the
process joins the default `torch.distributed` process group: NCCL when it samples on a GPU,
which is then ``cuda:LOCAL_RANK``, gloo on the CPU. Samples never travel through the group
(blocks go through files in the shared output directory); it carries only small messages (the
settings' hash, an error) and the barriers that order the phases of a run. A group the caller
already initialised is used as it is and left open.
"""
from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta
from typing import Any, List

import torch
import torch.distributed as dist

#: How long a rank waits for the others at a barrier: a rank that finished its blocks waits
#: for the slowest one, which can take hours on a large run.
TIMEOUT = timedelta(hours=72)
#: How long a rank waits to reach the launcher's store at MASTER_ADDR:MASTER_PORT. torchrun
#: starts its workers only after its own rendezvous, so they find the store at once; a
#: store that cannot be reached is a launch error, not a slow rank.
RENDEZVOUS_TIMEOUT = timedelta(minutes=2)
LAUNCH_FORMS = ("torchrun --standalone --nproc_per_node=P -m compose sample ... (one machine), or "
                "--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT (a free port, or HOST:0 on one "
                "machine for torchrun to pick one)")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher with its variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def pick_device(device: str) -> torch.device:
    """'auto': cuda:LOCAL_RANK when CUDA is available, else the CPU; 'cpu'; 'cuda'."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for, but this torch has no CUDA device "
                         "(torch.cuda.is_available() is False); use --device cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise ValueError(f"device: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs "
                         "on this machine; start at most that many processes per node")
    return torch.device("cuda", local)


def _end_with_launcher() -> None:
    """Under torchrun on Linux, have the kernel end this worker when the launcher dies.

    torchrun starts each worker in a session of its own, so a SIGKILL to torchrun alone would
    leave its workers running, unseen, beside a resumed run. With PR_SET_PDEATHSIG they get a
    SIGKILL too: killing the launcher kills the run, which `--resume` then continues.
    """
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)             # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:                                   # the launcher died before that
        os.kill(os.getpid(), signal.SIGKILL)


def _rendezvous():
    """(store, rank, world size) of the env:// rendezvous that `init_process_group` would make,
    but bounded by RENDEZVOUS_TIMEOUT instead of the barriers' 72 hours: MASTER_PORT=0 (the
    static rendezvous of ``torchrun --rdzv-endpoint=HOST:0`` passes it on as it is) and a store
    that cannot be reached are errors that say how to launch, never a silent wait."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    where = f"MASTER_ADDR={addr!r}, MASTER_PORT={port!r}"
    if not addr or not port or not port.isdigit() or not 0 < int(port) < 2 ** 16:
        zero = " (port 0 is what torchrun's static rendezvous passes on from " \
               "--rdzv-endpoint=HOST:0; only --rdzv-backend=c10d picks a free port)" \
            if port == "0" else ""
        raise ValueError(f"torchrun: the workers got {where}, which no process can listen on "
                         f"or reach{zero}; launch with {LAUNCH_FORMS}")
    try:
        store, rank, world = next(dist.rendezvous("env://", timeout=RENDEZVOUS_TIMEOUT))
    except Exception as error:          # DistStoreError, RuntimeError, TimeoutError, ValueError
        seconds = int(RENDEZVOUS_TIMEOUT.total_seconds())
        raise ValueError(f"torchrun: could not reach the store at {where} within {seconds} s "
                         f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                         f"launch with {LAUNCH_FORMS}") from None
    store.set_timeout(TIMEOUT)
    # as init_process_group does with the store it makes: the store may be shared (torchrun's)
    return dist.PrefixStore("default_pg", store), rank, world


class Group:
    """Rank, world size and the few collective operations a run needs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.owned = False
        if dist.is_available() and dist.is_initialized():
            self.distributed = True
        elif launched():
            _end_with_launcher()
            if not dist.is_available():
                raise ValueError("torchrun: this torch was built without torch.distributed")
            store, rank, world = _rendezvous()
            if device.type == "cuda":
                torch.cuda.set_device(device)
                dist.init_process_group("nccl", store=store, rank=rank, world_size=world,
                                        timeout=TIMEOUT, device_id=device)
            else:
                dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                        timeout=TIMEOUT)
            self.distributed = self.owned = True
        else:
            self.distributed = False
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1

    def barrier(self) -> None:
        if not self.distributed:
            return
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> List[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: List[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False
