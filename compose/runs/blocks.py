"""Blocks of chains: their seeds, their files, and running one block with checkpoints.

The N chains of a run are cut into blocks of `block_size` rows (the last may be shorter).
Block b holds rows [b·B, min((b + 1)·B, N)) and draws every random number it uses (its
starting point, the kernels' noise and accept/reject uniforms, the reverse steps) from its own
generator,

    torch.Generator(device).manual_seed(s_b),
    s_b = numpy.random.SeedSequence(entropy=seed, spawn_key=(b,)).generate_state(1, uint64)[0],

so its samples depend on the seed, b and the settings only: never on which process ran it,
how many processes there are, or whether it was interrupted and resumed.

Files of a run under DIR/blocks/ (all written atomically with a checksum, `checkpoint`):

    block-000003.pt             a finished block: its samples and per-level diagnostics
    block-000003.t0042.ckpt     block 3 after level 42 (the state before level 41)

A checkpoint holds what the annealed driver carries from one level to the next: the position
x, the step-size multiplier of adaptation (the kernels' own state, e.g. HMC's momentum, is
drawn afresh at the start of each level, so nothing else carries over), the generator's state,
the diagnostics so far and the settings' hash; in an SMC run also the particle system
(`SMCState`: log-weights, log-normaliser, the pending step). The two latest checkpoints of a
block are kept: a damaged one falls back to the one before it (or to the start).

With `compose.SMC` a block is one particle system: its particles are reweighted and resampled
among themselves only, so the block size is the number of particles and changes the samples,
while the number of processes still does not.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..sampler import LevelDiagnostics, anneal
from ..smc import SMCState
from ..smc.weights import FeynmanKac
from . import checkpoint
from .settings import SampleSettings

FORMAT = 1
_CHECKPOINT = re.compile(r"^block-(\d{6})\.t(\d{4,})\.ckpt$")


def block_seed(seed: int, block: int) -> int:
    """The 64-bit seed of block `block` of a run with seed `seed` (see the module docstring)."""
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(block),)).generate_state(1, np.uint64)
    return int(state[0])


def block_rows(samples: int, block_size: int) -> List[Tuple[int, int]]:
    """[start, stop) rows of every block, in order."""
    return [(start, min(start + block_size, samples)) for start in range(0, samples, block_size)]


def blocks_of_rank(num_blocks: int, rank: int, world: int) -> List[int]:
    """Blocks taken by `rank` of `world` processes: in turn, rank, rank + world, …"""
    return list(range(rank, num_blocks, world))


class BlockFiles:
    """Paths of the block and checkpoint files under DIR/blocks/."""

    def __init__(self, out: Path):
        self.directory = Path(out) / "blocks"

    def block(self, b: int) -> Path:
        return self.directory / f"block-{b:06d}.pt"

    def checkpoint(self, b: int, level: int) -> Path:
        return self.directory / f"block-{b:06d}.t{level:04d}.ckpt"

    def checkpoints(self, b: int) -> List[Tuple[int, Path]]:
        """(level, path) of block b's checkpoints, the furthest first (lowest level)."""
        found = []
        if self.directory.is_dir():
            for path in list(self.directory.iterdir()):
                match = _CHECKPOINT.match(path.name)
                if match and int(match.group(1)) == b:
                    found.append((int(match.group(2)), path))
        return sorted(found)


def load_block(files: BlockFiles, b: int, digest: str, rows: Tuple[int, int],
               settings: SampleSettings, T: int) -> dict:
    """The finished block b; `checkpoint.DamagedFile` if damaged, from other settings, or not
    holding what a finished block of these settings holds (`T`: the level the run starts at)."""
    path = files.block(b)
    payload = checkpoint.load(path)
    _check_payload(payload, path, digest, b, rows)
    _check_tensor(payload, "samples", path, settings, rows)
    _check_diagnostics(payload, path, T, 1, rows, settings.smc is not None)
    return payload


def load_checkpoint(path: Path, b: int, level: int, digest: str, rows: Tuple[int, int],
                    settings: SampleSettings, T: int, device: torch.device) -> dict:
    """Block b's checkpoint after `level` (the level its name gives); `checkpoint.DamagedFile`
    if it is damaged or does not hold what such a checkpoint holds: x of the block's shape
    and dtype, a positive multiplier, a generator state for `device`, the diagnostics of
    levels T..level."""
    payload = checkpoint.load(path)
    _check_payload(payload, path, digest, b, rows)
    if payload.get("level") != level:
        raise checkpoint.DamagedFile(f"{path}: holds level {payload.get('level')!r}, its name "
                                     f"says {level}")
    _check_tensor(payload, "x", path, settings, rows)
    multiplier = payload.get("multiplier")
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) \
            or not math.isfinite(multiplier) or multiplier <= 0:
        raise checkpoint.DamagedFile(f"{path}: step-size multiplier {multiplier!r}, expected a "
                                     "finite number > 0")
    state, expected = payload.get("generator"), torch.Generator(device=device).get_state()
    if not isinstance(state, torch.Tensor) or state.dtype != expected.dtype \
            or tuple(state.shape) != tuple(expected.shape):
        raise checkpoint.DamagedFile(f"{path}: generator state {_describe(state)}, expected a "
                                     f"{expected.dtype} tensor of shape {tuple(expected.shape)} "
                                     f"(a {device.type} generator)")
    _check_diagnostics(payload, path, T, level, rows, settings.smc is not None)
    if settings.smc is not None:
        _check_smc_state(payload, path, rows, level, device)
    return payload


#: How far from 0 the log-sum-exp of a checkpoint's normalised log-weights may be (rounding).
_NORMALISED = 1e-4


def _check_smc_state(payload, path, rows, level: int, device: torch.device) -> None:
    """An SMC checkpoint's particle system after `level`: log-weights (one per chain of the
    block, float64, or float32 on MPS) that are normalised, log Σ_i exp(log W_i) = 0, with no
    NaN or +inf; a finite 0-d log-normaliser; the excess of the step `level` → `level` − 1 that
    the next level completes (`pending_level` = `level`), of the weights' dtype."""
    state, n = payload.get("smc_state"), rows[1] - rows[0]
    dtype = torch.float32 if device.type == "mps" else torch.float64
    problem = None
    if not isinstance(state, dict):
        problem = f"an SMC state that is {_describe(state)}"
    else:
        weights, total, pending, pending_level = (state.get("log_weights"), state.get("log_normaliser"),
                                                  state.get("pending"), state.get("pending_level"))
        if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (n,) or weights.dtype != dtype:
            problem = f"log-weights {_describe(weights)}, expected a {dtype} tensor of shape ({n},)"
        elif not isinstance(total, torch.Tensor) or total.dim() != 0 or total.dtype != dtype:
            problem = f"a log-normaliser {_describe(total)}, expected a 0-d {dtype} tensor"
        elif not isinstance(pending, torch.Tensor) or tuple(pending.shape) != (n,) \
                or pending.dtype != dtype:
            problem = (f"a pending excess {_describe(pending)}, expected a {dtype} tensor of shape "
                       f"({n},) (the step {level} → {level - 1})")
        elif not _integer(pending_level) or pending_level != level:
            problem = f"a pending step from level {pending_level!r}, expected {level}"
        elif bool(torch.isnan(weights).any()) or bool(torch.isposinf(weights).any()):
            problem = "NaN or +inf log-weights"
        elif not abs(float(torch.logsumexp(weights, 0))) <= _NORMALISED:
            problem = (f"log-weights that are not normalised (log Σ W = "
                       f"{float(torch.logsumexp(weights, 0)):.3g}, expected 0)")
        elif not math.isfinite(float(total)):
            problem = f"a log-normaliser of {float(total)}, expected a finite number"
    if problem is not None:
        raise checkpoint.DamagedFile(f"{path}: holds {problem}")


def _check_payload(payload, path, digest, b, rows) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise checkpoint.DamagedFile(f"{path}: not a block file of this version")
    if payload.get("settings_sha256") != digest:
        raise checkpoint.DamagedFile(f"{path}: written by a run with other settings")
    if payload.get("block") != b:
        raise checkpoint.DamagedFile(f"{path}: holds block {payload.get('block')!r}, expected {b}")
    held = payload.get("rows")
    if not isinstance(held, (list, tuple)) or [type(r) for r in held] != [int, int] \
            or tuple(held) != tuple(rows):
        raise checkpoint.DamagedFile(f"{path}: holds rows {held!r}, expected {list(rows)}")


def _check_tensor(payload, key, path, settings: SampleSettings, rows) -> None:
    """payload[key] is the block's chains: shape (rows, *event_shape), the run's dtype."""
    value = payload.get(key)
    shape = (rows[1] - rows[0],) + tuple(settings.event_shape)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape \
            or value.dtype != settings.torch_dtype:
        raise checkpoint.DamagedFile(f"{path}: '{key}' is {_describe(value)}, expected a "
                                     f"{settings.torch_dtype} tensor of shape {shape}")


_DIAGNOSTICS = {f.name for f in fields(LevelDiagnostics)}


def _check_diagnostics(payload, path, T: int, last: int, span: Tuple[int, int],
                       smc: bool = False) -> None:
    """payload['diagnostics'] holds one dict per level T, T − 1, …, `last`, with the fields of
    `LevelDiagnostics` (numbers, or dicts of label → number such as the evaluations); `smc`
    at every level of an SMC run (`_check_smc_level`) and None at every level of the others."""
    rows = payload.get("diagnostics")
    count = T - last + 1
    if not isinstance(rows, list) or len(rows) != count:
        raise checkpoint.DamagedFile(f"{path}: diagnostics are {_describe(rows)}, expected a list "
                                     f"of {count} (levels {T}..{last})")
    for expected, row in zip(range(T, last - 1, -1), rows):
        problem = None
        if not isinstance(row, dict) or set(row) != _DIAGNOSTICS:
            problem = f"{_describe(row)}, expected a dict of {', '.join(sorted(_DIAGNOSTICS))}"
        elif row["level"] != expected:
            problem = f"level {row['level']!r}, expected {expected}"
        else:
            wrong = [k for k in sorted(_DIAGNOSTICS) if not _FIELD_CHECKS.get(k, _number)(row[k])]
            if wrong:
                problem = (f"values that are not numbers of their kind: {wrong[0]} is "
                           f"{_shown(row[wrong[0]])} (level, steps and divergences are integers, "
                           "evaluations and acceptance_quantiles dicts of label → number, the "
                           "others numbers)")
        if problem is None:
            problem = _check_smc_level(row["smc"], expected, span[1] - span[0], smc)
        if problem is not None:
            raise checkpoint.DamagedFile(f"{path}: the diagnostics of level {expected} hold {problem}")


def _check_smc_level(value, level: int, n: int, smc: bool) -> Optional[str]:
    """What is wrong with a level's `smc` diagnostics (already of their kinds, `_smc_level`) in
    a block of n particles, or None: present exactly in SMC runs, 0 ≤ ESS ≤ n, 1 ≤ distinct
    ancestors ≤ n, a finite log-normaliser increment, the final ESS at level 1 only."""
    if (value is None) == smc:
        return ("no SMC diagnostics in a run with SMC" if smc
                else "SMC diagnostics in a run without SMC")
    if value is None:
        return None
    if not 0 <= value["ess"] <= n * (1 + 1e-9):
        return f"an ESS of {value['ess']!r}, expected a number in [0, {n}]"
    if not 1 <= value["ancestors"] <= n:
        return f"{value['ancestors']!r} distinct ancestors, expected 1..{n}"
    if not math.isfinite(value["log_normaliser_increment"]):
        return (f"a log-normaliser increment of {value['log_normaliser_increment']!r}, expected a "
                "finite number")
    final = value["final_ess"]
    if (final is None) != (level != 1) or (final is not None and not 0 <= final <= n * (1 + 1e-9)):
        return (f"a final ESS of {final!r}, expected " +
                (f"a number in [0, {n}] at level 1" if level == 1 else "None above level 1"))
    return None


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seconds(value) -> bool:
    return _number(value) and value is not None


def _numbers_by_name(value) -> bool:
    """A dict of label → number (the evaluations per term, the acceptance quantiles)."""
    return isinstance(value, dict) and all(isinstance(k, str) and _number(v) for k, v in value.items())


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _smc_level(value) -> bool:
    """None, or an SMC level's numbers: ESS, resampled (a bool), distinct ancestors (an int),
    the log-normaliser increment and the final ESS (a number or None)."""
    if value is None:
        return True
    return (isinstance(value, dict)
            and set(value) == {"ess", "resampled", "ancestors", "log_normaliser_increment", "final_ess"}
            and _seconds(value["ess"]) and isinstance(value["resampled"], bool)
            and _integer(value["ancestors"]) and _seconds(value["log_normaliser_increment"])
            and _number(value["final_ess"]))


#: What each field of a level's diagnostics holds (the others: a number, or None).
_FIELD_CHECKS = {"level": _integer, "steps": _integer, "divergences": _integer,
                 "seconds": _seconds, "evaluations": _numbers_by_name,
                 "acceptance_quantiles": _numbers_by_name, "smc": _smc_level}


def _shown(value) -> str:
    return "None" if value is None else _describe(value)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}" if value is not None else "missing"


def run_block(b: int, settings: SampleSettings, digest: str, target, kernel, adaptation,
              files: BlockFiles, device: torch.device, checkpoint_every: int = 1,
              log: Callable[[str], None] = print, on_level: Callable[[int], None] = lambda n: None
              ) -> dict:
    """Sample block b (or reuse/continue it from its files); returns its finished payload.

    `on_level(n)` is called with the number of levels done each time some are (progress).
    """
    rows = block_rows(settings.samples, settings.block_size)[b]
    T = settings.top_level(target.schedule)          # T, or where an SMC run starts
    smc = settings.make_smc()
    if files.block(b).exists():
        try:
            payload = load_block(files, b, digest, rows, settings, T)
            on_level(T)
            return payload
        except FileNotFoundError:       # removed meanwhile (by another run in this directory)
            pass
        except checkpoint.DamagedFile as error:
            log(f"block {b}: {error}; sampling it again")
            files.block(b).unlink(missing_ok=True)

    state = _latest_checkpoint(b, files, digest, rows, settings, T, device, log)
    generator = torch.Generator(device=device)
    smc_state = None
    if state is None:
        generator.manual_seed(block_seed(settings.seed, b))
        shape = (rows[1] - rows[0],) + tuple(settings.event_shape)
        if smc is None:
            x = torch.randn(shape, generator=generator, device=device, dtype=settings.torch_dtype)
        else:              # a block is one particle system, from N(0, I/Σw)
            x = FeynmanKac(target, settings.event_shape).start(shape[0], generator, device,
                                                               settings.torch_dtype)
        start, multiplier, levels = T, 1.0, []
    else:
        generator.set_state(state["generator"])
        x = state["x"].to(device)
        start, multiplier, levels = state["level"] - 1, state["multiplier"], list(state["diagnostics"])
        if smc is not None:
            smc_state = SMCState.from_state_dict(state["smc_state"], device)
        on_level(T - start)

    for step in anneal(target, kernel, x, settings.steps, settings.reverse_step, generator,
                       start=start, multiplier=multiplier, variance=settings.variance,
                       adaptation=adaptation, smc=smc, smc_state=smc_state):
        x, multiplier = step.x, step.multiplier
        _check_weights_alive(step.diagnostics, b)
        levels.append(asdict(step.diagnostics))
        done = T - step.level + 1
        if step.level > 1 and done % checkpoint_every == 0:
            _save_checkpoint(files, b, rows, digest, step.level, x, multiplier, generator, levels,
                             step.smc_state)
        on_level(1)

    payload = {"format": FORMAT, "settings_sha256": digest, "block": b, "rows": list(rows),
               "samples": x.detach().cpu(), "diagnostics": levels}
    checkpoint.save(files.block(b), payload)
    for _, path in files.checkpoints(b):
        path.unlink(missing_ok=True)
    return payload


def _check_weights_alive(level: LevelDiagnostics, b: int) -> None:
    """Refuse a level whose log-normaliser increment log Σ_i W_i exp(Δ_i) is not finite: every
    particle's weight was zero (or NaN). The particle system reports that itself only where it
    did not resample; where it did, the weights came back uniform and the run would go on with
    log Ẑ = −inf, so the block stops here as it does elsewhere."""
    increment = None if level.smc is None else level.smc.log_normaliser_increment
    if increment is not None and not math.isfinite(increment):
        raise FloatingPointError(
            f"block {b}, level {level.level}: every particle's Feynman–Kac weight is zero (the "
            f"level's log-normaliser increment is {increment}): the weight increments were not "
            "finite; check the components' scores at this level, or take more levels")


def _save_checkpoint(files, b, rows, digest, level, x, multiplier, generator, levels,
                     smc_state=None) -> None:
    payload = {"format": FORMAT, "settings_sha256": digest, "block": b, "rows": list(rows),
               "level": level, "x": x.detach().cpu(), "multiplier": float(multiplier),
               "generator": generator.get_state(), "diagnostics": list(levels),
               "saved": time.time()}
    if smc_state is not None:
        payload["smc_state"] = smc_state.state_dict()
    checkpoint.save(files.checkpoint(b, level), payload)
    # keep this one and the one before it: a damaged latest falls back to the previous
    for _, path in files.checkpoints(b)[2:]:
        path.unlink(missing_ok=True)


def _latest_checkpoint(b, files, digest, rows, settings, T, device, log) -> Optional[dict]:
    """The furthest good checkpoint of block b; damaged ones are reported and removed."""
    for level, path in files.checkpoints(b):
        try:
            return load_checkpoint(path, b, level, digest, rows, settings, T, device)
        except FileNotFoundError:       # removed meanwhile: the next one is tried
            continue
        except checkpoint.DamagedFile as error:
            remaining = [lv for lv, p in files.checkpoints(b) if lv > level]
            where = f"its checkpoint after level {remaining[0]}" if remaining else "the start"
            log(f"block {b}: {error}; removed it, the block continues from {where}")
            path.unlink(missing_ok=True)
    return None
