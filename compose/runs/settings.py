"""The settings of a sampling run: everything that decides its samples, with a hash.

A run's samples are a function of its settings alone: the composition and its components, the
kernel and its parameters, the schedule options, N, the seed, the block size, the dtype, the
kind of device and the number of threads per process. The settings are stored with the run
(``run.json``) and their SHA-256 in every checkpoint; resuming with anything different is an
error that names what differs. Where the output goes, how often to checkpoint and whether to
show progress are not settings: they do not change a single bit of the samples.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import kernels
from ..compiler.compilation import check_event_shape
from ..compiler.quadrature import RULES
from ..sampler import Adaptation
from ..kernels.stepsize import PowerLaw
from ..schedule import Schedule, parse_levels
from ..smc import SMC

#: Kernel names, as in `compose plan --kernel`. "Reverse" is the reverse process alone.
KERNELS = ("MALA", "ULA", "HMC", "U-HMC", "RWMH", "Reverse")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Default block size: the most chains whose state fits this many numbers (per device kind).
BLOCK_BUDGET = {"cpu": 2 ** 20, "cuda": 2 ** 24}


class RunError(ValueError):
    """A run that cannot start or continue: bad settings, a directory in use, a resume that
    does not match the run it continues."""


@dataclass(frozen=True)
class SampleSettings:
    """What decides the samples of a run (see the module docstring); checked on creation."""

    expression: str
    components_sha256: str
    kernel: str
    step_size: Union[None, float, Tuple[float, float]]
    steps: int
    samples: int
    seed: int
    block_size: int
    event_shape: Tuple[int, ...]
    leapfrog: int = 3
    damping: float = 0.5
    path: str = "line"
    points: int = 0
    rule: str = "trapezoid"
    levels: Union[None, int, Tuple[int, ...]] = None
    chunk_rows: Optional[int] = None
    reverse_step: bool = False
    variance: str = "small"
    adaptation: Optional[Dict[str, Any]] = None
    dtype: str = "float32"
    device: str = "cpu"
    threads: Optional[int] = 1
    #: `compose.SMC` options as a dict (`SMC.to_dict()`), None for annealed MCMC. Left out of
    #: `to_dict` (and so of the hash) when None, so runs without SMC keep their digests.
    smc: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        # Checked and normalised: NumPy scalars, 0-d tensors and tuples given for integers,
        # numbers and shapes are stored as the Python values JSON and the hash take.
        def put(name, value):
            object.__setattr__(self, name, value)

        if not isinstance(self.expression, str):
            raise RunError(f"expression: expected a composition string, got {type(self.expression).__name__}")
        if self.kernel not in KERNELS:
            raise RunError(f"kernel: expected one of {', '.join(KERNELS)}, got {self.kernel!r}")
        for name, low in (("steps", 0), ("samples", 1), ("seed", 0), ("block_size", 1),
                          ("leapfrog", 1), ("points", 0)):
            put(name, integer_setting(name, getattr(self, name), low))
        if self.chunk_rows is not None:
            put("chunk_rows", integer_setting("chunk_rows", self.chunk_rows, 1))
        if self.threads is not None:
            put("threads", integer_setting("threads", self.threads, 1))
        put("step_size", step_size_setting(self.step_size))
        if self.kernel != "Reverse" and self.step_size is None:
            raise RunError(f"step_size: the {self.kernel} kernel needs a step size")
        damping = _real(self.damping)
        if damping is None or not 0.0 <= damping < 1.0:
            raise RunError(f"damping: must be in [0, 1), got {self.damping!r}")
        put("damping", damping)
        try:
            put("event_shape", check_event_shape(self.event_shape))
        except ValueError as error:
            raise RunError(str(error)) from None
        put("levels", levels_setting(self.levels))
        if not isinstance(self.reverse_step, (bool, np.bool_)):
            raise RunError(f"reverse_step: must be True or False, got {self.reverse_step!r}")
        put("reverse_step", bool(self.reverse_step))
        if self.path not in ("line", "curve"):
            raise RunError(f"path: must be 'line' or 'curve', got {self.path!r}")
        if self.rule not in RULES:
            raise RunError(f"rule: expected one of {', '.join(RULES)}, got {self.rule!r}")
        if self.variance not in ("small", "large"):
            raise RunError(f"variance: must be 'small' or 'large', got {self.variance!r}")
        if isinstance(self.dtype, torch.dtype):
            put("dtype", {v: k for k, v in DTYPES.items()}.get(self.dtype, self.dtype))
        if self.dtype not in DTYPES:
            raise RunError(f"dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device not in BLOCK_BUDGET:
            raise RunError(f"device: expected 'cpu' or 'cuda', got {self.device!r}")
        if self.kernel in ("Reverse",) and not self.reverse_step:
            raise RunError("reverse_step: the Reverse kernel is the reverse process; it needs "
                           "reverse_step=True")
        put("smc", smc_setting(self.smc))
        if self.smc is not None and not self.reverse_step:
            raise RunError("reverse_step: an SMC run ends every level with the reverse step; "
                           "it needs reverse_step=True")
        if self.kernel in ("ULA", "U-HMC", "Reverse") and self.adaptation is not None:
            raise RunError(f"adaptation: step-size adaptation needs an adjusted kernel "
                           f"(MALA, HMC, RWMH), not {self.kernel}")

    # -- what the run is built from --------------------------------------------------------
    def make_kernel(self) -> Optional[kernels.Kernel]:
        """The kernel these settings name (None for the reverse process alone)."""
        size = self.step_size
        step = PowerLaw(*size) if isinstance(size, tuple) else size
        return {
            "MALA": lambda: kernels.MALA(step),
            "ULA": lambda: kernels.ULA(step),
            "HMC": lambda: kernels.HMC(step, num_leapfrog=self.leapfrog, damping=self.damping),
            "U-HMC": lambda: kernels.HMC(step, num_leapfrog=self.leapfrog, damping=self.damping,
                                         adjusted=False),
            "RWMH": lambda: kernels.RandomWalkMH(step),
            "Reverse": lambda: None,
        }[self.kernel]()

    def make_smc(self) -> Optional[SMC]:
        """The `compose.SMC` these settings name (None without SMC)."""
        if self.smc is None:
            return None
        options = dict(self.smc)
        if options.get("resample_levels") is not None:
            options["resample_levels"] = tuple(options["resample_levels"])
        return SMC(**options)

    def top_level(self, schedule: Schedule) -> int:
        """The level the run starts at: T, or an SMC run's start (`SMC.start`)."""
        smc = self.make_smc()
        return schedule.T if smc is None else smc.start(schedule)

    def make_adaptation(self) -> Optional[Adaptation]:
        if self.adaptation is None:
            return None
        a = self.adaptation
        return Adaptation(band=tuple(a["band"]), warmup_steps=a["warmup_steps"], factor=a["factor"])

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def num_blocks(self) -> int:
        return -(-self.samples // self.block_size)

    # -- comparison and hashing ----------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """The settings as JSON values (tuples become lists); `smc` only when set."""
        out = json.loads(json.dumps(asdict(self)))
        if out.get("smc") is None:
            out.pop("smc", None)
        return out

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the settings."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """'name (was A, now B)' for every setting that differs between two `to_dict()`s."""
    out = []
    for key in [f.name for f in fields(SampleSettings)] + sorted(set(old) - {f.name for f in fields(SampleSettings)}):
        was, now = old.get(key), new.get(key)
        if was == now:
            continue
        if isinstance(was, dict) and isinstance(now, dict):     # name the options inside
            out.extend(f"{key}.{k} (was {_short(was.get(k))}, now {_short(now.get(k))})"
                       for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k))
        else:
            out.append(f"{key} (was {_short(was)}, now {_short(now)})")
    return out


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:18] + "…" + text[-18:]


def step_size_setting(value) -> Union[None, float, Tuple[float, float]]:
    """A step size as a setting: a positive number, or (a, b) for η_t = a·β_tᵇ (a `PowerLaw`
    or a pair). Text forms (the command line): "0.05" or "4.03,1.34"."""
    if value is None:
        return None
    if isinstance(value, PowerLaw):
        return (float(value.a), float(value.b))
    given, text = repr(value), isinstance(value, str)
    if text:
        try:
            parsed = [float(p) for p in value.split(",")]
        except ValueError:
            raise RunError(f"step_size: expected a number or 'a,b' (η_t = a·β_t^b), e.g. 0.05 or "
                           f"4.03,1.34; got {given}") from None
        value = parsed[0] if len(parsed) == 1 else tuple(parsed)
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (tuple, list)) and len(value) != 2 and not text:
        count = f"{len(value)} value{'s' if len(value) != 1 else ''}"
        shown = given if len(given) <= 60 else given[:57] + "..."
        raise RunError(f"step_size: a run takes one step size or a power law a,b (η_t = a·β_t^b, "
                       f"e.g. 4.03,1.34), got {count}: {shown}; one step size per level is an "
                       "option of compose.sample, not of a run")
    if isinstance(value, (tuple, list)):
        pair = [_real(v) for v in value]
        if len(pair) != 2 or None in pair or not all(map(math.isfinite, pair)) or pair[0] <= 0:
            raise RunError(f"step_size: a power law a,b (η_t = a·β_t^b) needs two finite numbers "
                           f"with a > 0, e.g. 4.03,1.34; got {given}")
        return (pair[0], pair[1])
    number = _real(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise RunError(f"step_size: must be a finite number > 0 or a power law a,b "
                       f"(η_t = a·β_t^b, a > 0), got {given}")
    return number


def adaptation_setting(value) -> Optional[Dict[str, Any]]:
    """An `Adaptation` (or True for the default one, None/False for none) as a setting."""
    if isinstance(value, np.bool_):
        value = bool(value)
    if value is None or value is False:
        return None
    if value is True:
        value = Adaptation()
    if not isinstance(value, Adaptation):
        raise RunError(f"adaptation: expected a compose.Adaptation, True or None, got {type(value).__name__}")
    return {"band": [float(b) for b in value.band], "warmup_steps": int(value.warmup_steps),
            "factor": float(value.factor)}


def smc_setting(value) -> Optional[Dict[str, Any]]:
    """A `compose.SMC` (or its `to_dict()`) as a setting; None for none. A run writes equally
    weighted samples, so `return_weighted` is refused."""
    if value is None or value is False:
        return None
    if value is True:
        value = SMC()
    if isinstance(value, dict):
        known = set(SMC().to_dict())
        if not set(value) <= known:
            raise RunError(f"smc: unknown options {sorted(set(value) - known)}; expected some of "
                           f"{sorted(known)}")
        options = dict(value)
        if options.get("resample_levels") is not None:
            options["resample_levels"] = tuple(options["resample_levels"])
        try:
            value = SMC(**options)
        except ValueError as error:
            raise RunError(f"smc: {error}") from None
    if not isinstance(value, SMC):
        raise RunError(f"smc: expected a compose.SMC, True or None, got {type(value).__name__}")
    if value.return_weighted:
        raise RunError("smc: a run writes equally weighted samples (each block resamples at its "
                       "end); return_weighted=True is for compose.sample")
    return value.to_dict()


def levels_setting(value) -> Union[None, int, Tuple[int, ...]]:
    """Respacing as a setting: None, S (S evenly spaced training levels) or the increasing
    training levels, read as `compose.compile` reads them (`Schedule.respaced`); a respaced
    `Schedule` stands for its training levels."""
    if value is None:
        return None
    if isinstance(value, Schedule):
        value = value.network_levels
    try:
        return parse_levels(value)
    except ValueError as error:
        raise RunError(str(error)) from None


def default_block_size(event_shape: Sequence[int], device: str, samples: int) -> int:
    """The most chains whose state fits the device's budget of numbers, at most N."""
    numel = math.prod(event_shape) if event_shape else 1
    return max(1, min(samples, BLOCK_BUDGET[device] // max(1, numel)))


def integer_setting(name: str, value, low: int) -> int:
    """`value` as an int ≥ `low` (a Python or NumPy integer, or a 0-d integer tensor or
    array), or a RunError naming `name`: bools and floats are not integers."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise RunError(f"{name}: must be an integer ≥ {low}, got {value!r}")
    return int(value)


def _scalar(value):
    """A 0-d tensor or array as its Python number (bool, int or float); anything else as is."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)) and value.ndim == 0:
        return value.item()
    return value


def _real(value) -> Optional[float]:
    """`value` as a float when it is a real number (Python, NumPy, a 0-d real tensor); else None."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)
