"""Checkpoints that record a network's architecture and training schedule.

`save_checkpoint` stores the weights with the class name and `config()` of the network (one of
`ARCHITECTURES`), the kind of model (score, energy or classifier) and the schedule; a checkpoint
is read back with ``weights_only=True`` by `load_checkpoint`, which rebuilds the network and
checks the schedule.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import NamedTuple, Optional, Tuple

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


class Checkpoint(NamedTuple):
    """What `read_checkpoint` found: the rebuilt net (eval mode, CPU), the stored schedule, the
    kind of model, and the `extra` dict saved with it (empty if none)."""

    net: nn.Module
    schedule: Schedule
    parameterisation: str
    extra: dict


def load_checkpoint(path, schedule: Optional[Schedule] = None
                    ) -> Tuple[nn.Module, Schedule, str]:
    """Read a checkpoint written by `save_checkpoint` (with weights_only=True).

    Args:
        path: the file.
        schedule: if given, the schedule the caller will use; it must equal the stored one.
    Returns:
        (net in eval mode on the CPU, the stored schedule, the parameterisation).
    Raises:
        FileNotFoundError: there is no file at `path`.
        ValueError: naming the file and what is wrong: it is empty, truncated or damaged, not
            a torch checkpoint, holds objects a weights-only load refuses, lacks a field or has
            a malformed one, its weights do not fit the stored architecture, or its schedule
            differs from `schedule`.
    """
    net, stored, parameterisation, _ = read_checkpoint(path, schedule)
    return net, stored, parameterisation


def read_checkpoint(path, schedule: Optional[Schedule] = None) -> Checkpoint:
    """`load_checkpoint` that also returns the stored `extra` dict, from one read of the file."""
    where = os.fspath(path)
    data = _read(where)
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"{where}: not a checkpoint: missing {', '.join(missing)} (a checkpoint "
                         f"holds {', '.join(_KEYS)})")
    stored = _schedule(where, data["schedule"])
    if schedule is not None and not schedule.same_as(stored):
        raise ValueError(f"schedule: the checkpoint {where} was trained with "
                         f"{stored!r} but {schedule!r} was given"
                         + (" (same name and T, different β's)"
                            if repr(stored) == repr(schedule) else ""))
    try:
        parameterisation = _check_kind(data["parameterisation"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: {err}") from None
    net = _network(where, data["architecture"], data["state_dict"])
    if getattr(net, "T", stored.T) != stored.T:
        raise ValueError(f"{where}: the net has T={net.T} but the stored schedule "
                         f"has T={stored.T}")
    extra = data.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"{where}: malformed extra: expected a dict, got {type(extra).__name__}")
    return Checkpoint(net.eval(), stored, parameterisation, dict(extra or {}))


_KEYS = ("state_dict", "architecture", "schedule", "parameterisation")
#: The first bytes of the zip archive `torch.save` writes.
_ZIP_MAGIC = b"PK\x03\x04"


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _reason(error: BaseException, limit: int = 160) -> str:
    """The first line of an error message, shortened."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read(where: str) -> dict:
    """The dict stored at `where`, read with weights_only=True; one ValueError for anything that
    is not a readable checkpoint file (FileNotFoundError and other access errors pass)."""
    with open(where, "rb") as handle:             # access errors name the file themselves
        head = handle.read(4)
    if not head:
        raise ValueError(f"{where}: the file is empty (0 bytes), not a checkpoint")
    try:
        data = torch.load(where, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            raise ValueError(f"{where}: holds a {found.group(1)} object, which a weights-only "
                             "load refuses to build (a checkpoint holds only tensors and plain "
                             "values)") from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        reason = detail.group(1).strip() if detail else _reason(err)
        damage = ("truncated or damaged torch checkpoint" if _ZIP_MAGIC.startswith(head)
                  else "not a torch checkpoint")
        raise ValueError(f"{where}: {damage} (unpickling: {reason[:160]})") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as err:                     # torch's readers raise many kinds here
        if _ZIP_MAGIC.startswith(head):
            raise ValueError(f"{where}: truncated or damaged torch checkpoint "
                             f"({type(err).__name__}: {_reason(err)})") from None
        raise ValueError(f"{where}: not a torch checkpoint ({type(err).__name__}: "
                         f"{_reason(err)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: not a checkpoint: it holds a {type(data).__name__}, expected "
                         f"a dict with keys {', '.join(_KEYS)}")
    return data


def _schedule(where: str, stored) -> Schedule:
    if not isinstance(stored, dict):
        raise ValueError(f"{where}: malformed schedule: expected a dict with name and betas, "
                         f"got {_short(stored)}")
    try:
        return Schedule.from_dict(stored)
    except KeyError as err:
        raise ValueError(f"{where}: malformed schedule: missing {err}") from None
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{where}: malformed schedule {_short(stored)}: {_reason(err)}") from None


def _network(where: str, arch, state_dict) -> nn.Module:
    """The stored architecture rebuilt from its config, with the stored weights loaded."""
    name = arch.get("class") if isinstance(arch, dict) else None
    cls = ARCHITECTURES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{where}: unknown architecture {_short(arch)}; known: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    config = arch.get("config", {})
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"{where}: malformed architecture config: expected a dict of keyword "
                         f"arguments, got {_short(config)}")
    try:
        net = cls(**config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: cannot build {name} from config "
                         f"{_short(config)}: {_reason(err)}") from None
    if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise ValueError(f"{where}: malformed state_dict: expected a dict of parameter name → "
                         f"tensor, got {_short(state_dict)}")
    try:
        net.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, ValueError) as err:
        lines = str(err).strip().splitlines()
        raise ValueError(f"{where}: the stored weights do not fit {name}({_short(config)}): "
                         f"{_reason(' '.join(line.strip() for line in lines[:4]), 300)}") from None
    return net
