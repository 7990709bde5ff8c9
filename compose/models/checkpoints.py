"""Checkpoints that record a network's architecture and training schedule.

`save_checkpoint` stores the weights with the class name and `config()` of the network (one of
`ARCHITECTURES`), the kind of model (score, energy or classifier) and the schedule; a checkpoint
is read back with ``weights_only=True`` by `load_checkpoint`, which rebuilds the network and
checks the schedule.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from torch import nn

from ..schedule import Schedule
from .nets import ResidualMLP
from .training import PARAMETERISATIONS
from .unet import DigitClassifier, NoisyClassifier, SmallUNet

#: What a checkpoint may hold: a diffusion model in either parameterisation, or a classifier
#: (noise-aware, for guidance, or on clean images, for evaluation).
CHECKPOINT_KINDS = PARAMETERISATIONS + ("classifier",)


def _check_kind(parameterisation: str) -> str:
    if parameterisation not in CHECKPOINT_KINDS:
        raise ValueError(f"parameterisation: a checkpoint holds one of "
                         f"{', '.join(map(repr, CHECKPOINT_KINDS))}, got {parameterisation!r}")
    return parameterisation


#: Architectures a checkpoint may name, by class name.
ARCHITECTURES = {"ResidualMLP": ResidualMLP, "SmallUNet": SmallUNet,
                 "NoisyClassifier": NoisyClassifier, "DigitClassifier": DigitClassifier}


def save_checkpoint(path, net: nn.Module, schedule: Schedule, parameterisation: str,
                    extra: Optional[dict] = None) -> None:
    """Write net, schedule and parameterisation with `torch.save` to `path`.

    `parameterisation` is "score" or "energy" for a diffusion model, "classifier" for a
    classifier (its schedule: the one it was trained with, or the experiment's for a classifier
    of clean images).

    The file holds {"state_dict", "architecture": {"class", "config"}, "schedule",
    "parameterisation", "extra"}; `extra` must hold only plain values (numbers, strings,
    lists, dicts, tensors) so that `load_checkpoint` can read it with weights_only=True.
    """
    _check_kind(parameterisation)
    name = type(net).__name__
    if ARCHITECTURES.get(name) is not type(net) or not hasattr(net, "config"):
        raise ValueError(f"net: cannot checkpoint a {name}; known architectures: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    torch.save({"state_dict": state,
                "architecture": {"class": name, "config": dict(net.config())},
                "schedule": schedule.to_dict(),
                "parameterisation": parameterisation,
                "extra": extra}, os.fspath(path))


def load_checkpoint(path, schedule: Optional[Schedule] = None
                    ) -> Tuple[nn.Module, Schedule, str]:
    """Read a checkpoint written by `save_checkpoint` (with weights_only=True).

    Args:
        path: the file.
        schedule: if given, the schedule the caller will use; it must equal the stored one.
    Returns:
        (net in eval mode on the CPU, the stored schedule, the parameterisation).
    Raises:
        ValueError: the schedules differ, or the file is not a checkpoint of a known
            architecture whose weights fit it.
    """
    data = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    keys = ("state_dict", "architecture", "schedule", "parameterisation")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise ValueError(f"{os.fspath(path)}: not a checkpoint (expected a dict with keys "
                         f"{', '.join(keys)})")
    stored = Schedule.from_dict(data["schedule"])
    if schedule is not None and not schedule.same_as(stored):
        raise ValueError(f"schedule: the checkpoint {os.fspath(path)} was trained with "
                         f"{stored!r} but {schedule!r} was given"
                         + (" (same name and T, different β's)"
                            if repr(stored) == repr(schedule) else ""))
    try:
        parameterisation = _check_kind(data["parameterisation"])
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: {err}") from None
    arch = data["architecture"]
    cls = ARCHITECTURES.get(arch.get("class")) if isinstance(arch, dict) else None
    if cls is None:
        raise ValueError(f"{os.fspath(path)}: unknown architecture {arch!r}; known: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    try:
        net = cls(**arch.get("config", {}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{os.fspath(path)}: cannot build {arch['class']} from config "
                         f"{arch.get('config')!r}: {err}") from None
    try:
        net.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"{os.fspath(path)}: the stored weights do not fit "
                         f"{arch['class']}({arch.get('config')!r}): "
                         f"{' '.join(line.strip() for line in first[:4])}") from None
    if getattr(net, "T", stored.T) != stored.T:
        raise ValueError(f"{os.fspath(path)}: the net has T={net.T} but the stored schedule "
                         f"has T={stored.T}")
    return net.eval(), stored, parameterisation
