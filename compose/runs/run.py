"""`sample_run`: a whole sampling run into a directory, sharded over processes, resumable.

    1. every rank builds the target and the settings; their hashes must agree
    2. rank 0 checks the directory (a fresh one, or with ``resume`` the same settings) and
       writes run.json and the plan
    3. ranks take blocks in turn (rank r: blocks r, r + P, …); each block is sampled, or
       continued from its last checkpoint, or reused when already finished
    4. rank 0 merges the blocks in block order: samples.pt, diagnostics.json, and for image
       models images.pt and images.png (decoded by the component that decodes), else
       samples.png

The same call runs in one plain process or in every process of ``torchrun``; the samples are
bitwise the same either way (docs/sampling_at_scale.md gives the conditions).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Union

import torch

from .. import __version__
from ..compiler import compile
from ..kernels.stepsize import PowerLaw
from ..progress import progress_bar, wants_progress
from ..sampler import Adaptation
from . import blocks as _blocks
from . import checkpoint, outputs
from .group import Group, pick_device
from ..schedule import Schedule
from .identity import ComponentsIdentity
from .settings import (RunError, SampleSettings, adaptation_setting, default_block_size,
                       differences, integer_setting, levels_setting, smc_setting,
                       step_size_setting)


@dataclass
class RunResult:
    """The merged samples (N, *event), the diagnostics written to diagnostics.json, the run
    directory, and for image models the images written to images.pt (`compose.images.Images`:
    clipped to [0, 1], the clipped values counted)."""

    samples: torch.Tensor
    diagnostics: dict
    out: Path
    images: Optional[object] = None


def sample_run(expression: str, components: Mapping[str, object], out: Union[str, Path], *,
               kernel: str = "MALA", step_size: Union[None, float, Sequence[float], PowerLaw] = None,
               steps: int = 10, samples: int = 2000, seed: int = 0,
               block_size: Optional[int] = None, leapfrog: int = 3, damping: float = 0.5,
               path: str = "line", points: int = 0, rule: str = "trapezoid",
               levels: Union[None, int, Sequence[int]] = None, chunk_rows: Optional[int] = None,
               reverse_step: bool = False, variance: Optional[str] = None,
               adaptation: Union[None, bool, Adaptation] = None, smc=None,
               event_shape: Optional[Sequence[int]] = None, dtype: str = "float32",
               device: str = "auto", threads: Optional[int] = 1, checkpoint_every: int = 1,
               resume: bool = False, trust_components: bool = False,
               progress: Optional[bool] = None, picture: bool = True,
               components_label: Optional[str] = None, components_source: Optional[bytes] = None,
               log: Optional[Callable[[str], None]] = None) -> Optional[RunResult]:
    """Sample a composition into the directory `out`; the Python form of ``compose sample``.

    Args (as the command's options; see ``compose sample --help``):
        expression, components: the composition string and its name → component bindings.
        kernel: "MALA", "ULA", "HMC", "U-HMC", "RWMH" or "Reverse".
        step_size: a number, or (a, b) / `PowerLaw` for η_t = a·β_tᵇ.
        steps, samples, seed: K per level, N chains, the run's seed.
        block_size: chains per block (default: sized for the device). Changes the samples.
        leapfrog, damping: HMC's L and γ. path, points, rule, levels, chunk_rows: as in `compose.compile` (levels:
            sample on S evenly spaced or on the given training levels).
        reverse_step, variance, adaptation: as in `compose.sample` (variance: "small" by
            default, "large" with smc).
        smc: a `compose.SMC` (or True for the default one): each block is one particle system
            (docs/sampling_at_scale.md); the reverse step is then always taken.
        event_shape: shape of one sample, when no component declares it.
        dtype: "float32" or "float64". device: "auto", "cpu" or "cuda" (cuda:LOCAL_RANK).
        threads: torch intra-op threads per process (None: leave as is). Part of the settings:
            a different number of threads may change the last bits of network outputs.
        checkpoint_every: checkpoint each block after every this many levels.
        resume: continue the run in `out` (an error if its settings differ, or if the identity
            of some component cannot be established: `ComponentsIdentity`).
        trust_components: resume even so (you vouch that the components are the same).
        progress: a bar over levels on rank 0 (default: when stderr is a terminal).
        picture: write samples.png.
        components_label, components_source: where the components came from (recorded in
            run.json) and the bytes of their file (hashed into the settings); the command line
            passes its FILE|MODULE and that file's bytes.
        log: where messages go (default: stderr, prefixed with the rank under torchrun).
    Returns:
        RunResult on rank 0 (None on the other ranks).
    """
    # checked before anything happens: a refused call changes no thread count, starts no
    # process group and writes no file
    if threads is not None:
        threads = integer_setting("threads", threads, 1)
    checkpoint_every = integer_setting("checkpoint_every", checkpoint_every, 1)
    wants_progress(progress)
    if not isinstance(expression, str):
        raise RunError(f"expression: expected a composition string such as \"p * q\", got "
                       f"{type(expression).__name__}")
    if not isinstance(components, Mapping):
        raise RunError(f"components: expected a dict of name -> component, got {type(components).__name__}")
    if not isinstance(out, (str, Path)):
        raise RunError(f"out: expected a directory path, got {type(out).__name__}")
    out = Path(out)
    samples = integer_setting("samples", samples, 1)
    if block_size is not None:
        block_size = integer_setting("block_size", block_size, 1)
    points = integer_setting("points", points, 0)
    if chunk_rows is not None:
        chunk_rows = integer_setting("chunk_rows", chunk_rows, 1)
    torch_device = pick_device(device)
    group = Group(torch_device)
    previous_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        say = log or _stderr(group)
        respacing = levels_setting(levels)
        smc_options = smc_setting(smc)
        target = compile(expression, dict(components), path=path, points=points, rule=rule,
                         chunk_rows=chunk_rows, event_shape=event_shape,
                         levels=levels if isinstance(levels, Schedule) else respacing)
        shape = _event_shape(target, event_shape)
        block = block_size if block_size is not None else default_block_size(shape, torch_device.type, samples)
        identity = ComponentsIdentity.of(dict(components), components_source)
        settings = SampleSettings(
            expression=expression, components_sha256=identity.digest,
            kernel=kernel, step_size=step_size_setting(step_size),
            steps=0 if kernel == "Reverse" else steps, samples=samples, seed=seed,
            block_size=block, event_shape=shape, leapfrog=leapfrog, damping=damping, path=path,
            points=points, rule=rule, levels=respacing, chunk_rows=chunk_rows,
            reverse_step=reverse_step or kernel == "Reverse" or smc_options is not None,
            variance=variance if variance is not None else ("large" if smc_options else "small"),
            adaptation=adaptation_setting(adaptation), dtype=dtype,
            device=torch_device.type, threads=threads, smc=smc_options)
        sampler_kernel, adapt = settings.make_kernel(), settings.make_adaptation()
        # the plan of one block: its calls are what a process evaluates at a time (a kernel
        # the composition cannot be sampled with is refused here, before any file)
        plan = target.plan_for(sampler_kernel, settings.steps, settings.block_size,
                               settings.reverse_step, device=torch_device, smc=settings.make_smc())
        digest = settings.digest()

        # 1. every rank must be running the same thing
        everyone = group.gather(settings.to_dict())
        for rank, other in enumerate(everyone):
            if other != everyone[0]:
                raise RunError(f"rank {rank}'s settings differ from rank 0's: "
                               + "; ".join(differences(everyone[0], other)))
        # 2. rank 0 prepares the directory; everyone learns whether that worked
        problem, created = None, []
        if group.rank == 0:
            try:
                created = _prepare(out, settings, digest, resume, plan, identity, trust_components,
                                   say, components_label or "<dict>")
            except RunError as error:
                problem = str(error)
            except OSError as error:         # a file in the way, no permission, no such disk
                problem = f"out: cannot use {out} as the run directory: {error.strerror or error}"
        problem = group.broadcast(problem)
        if problem is not None:
            raise RunError(problem)
        if settings.num_blocks < group.world and group.rank == 0:
            say(f"{settings.num_blocks} block(s) for {group.world} processes: some processes "
                "have nothing to do (a smaller block_size shares the work)")
        # 3. blocks in turn
        files = _blocks.BlockFiles(out)
        started = time.perf_counter()
        mine = _blocks.blocks_of_rank(settings.num_blocks, group.rank, group.world)
        bar = progress_bar(len(mine) * settings.top_level(target.schedule), settings.kernel,
                           progress if group.rank == 0 else False, unit="level")
        try:
            for b in mine:
                _blocks.run_block(b, settings, digest, target, sampler_kernel, adapt, files,
                                  torch_device, checkpoint_every, say, bar.update)
        except Exception:
            # a run that failed before anything was sampled (a network that fails at its first
            # call) did not start: its directory is left as it was found
            _unmake(created, files)
            raise
        finally:
            bar.close()
        group.barrier()
        # 4. rank 0 merges
        result = None
        if group.rank == 0:
            timing = {"processes": group.world, "sampling_seconds": time.perf_counter() - started}
            result = _merge(out, settings, digest, files, target, sampler_kernel, picture, timing,
                            say)
        group.barrier()
        return result
    finally:
        torch.set_num_threads(previous_threads)
        group.close()


def _event_shape(target, event_shape) -> tuple:
    if target.event_shape is not None:
        if event_shape is not None and tuple(event_shape) != tuple(target.event_shape):
            raise RunError(f"event_shape: {tuple(event_shape)} differs from the components' "
                           f"{tuple(target.event_shape)}")
        return tuple(target.event_shape)
    if event_shape is None:
        raise RunError("event_shape: no component declares its sample shape; pass it "
                       "(--event-shape 2, or 1,8,8 for images)")
    return tuple(int(d) for d in event_shape)


def _prepare(out: Path, settings: SampleSettings, digest: str, resume: bool, plan,
             identity: "ComponentsIdentity", trust_components: bool, say,
             components_label: str) -> List[Path]:
    """Check or create the run directory; write run.json and the plan (rank 0). Everything
    is checked before the first file is written; returns what was created (for `_unmake`)."""
    record = out / "run.json"
    files = _blocks.BlockFiles(out)
    created: List[Path] = []
    if record.exists():
        if not resume:
            raise RunError(f"{out} holds a run already: pass --resume (resume=True) to continue "
                           "it, or choose another output directory")
        previous = read_record(record)
        changed = differences(previous["settings"], settings.to_dict())
        if changed:
            hint = ""
            if any(c.startswith("components_sha256") for c in changed):
                hint = (" (the components are not the ones the run started with: their "
                        "weights, code, schedules or the file they come from differ)")
            raise RunError(f"--resume: the settings differ from the run in {out}: "
                           + "; ".join(changed) + hint)
        if identity.unverified and not trust_components:
            raise RunError(f"--resume: cannot tell whether the components are the ones the run in "
                           f"{out} started with: {identity.describe()}; pass "
                           "--trust-components (trust_components=True) to continue it anyway")
        if previous.get("torch") != torch.__version__:
            say(f"note: the run was started with torch {previous.get('torch')}, this is "
                f"{torch.__version__}; the last bits of the samples may differ")
    else:
        if out.exists() and any(out.iterdir()) and not resume:
            raise RunError(f"{out} is not empty: choose a new output directory (or resume a run "
                           "with --resume)")
        if identity.unverified:
            say(f"note: cannot hash all of the components ({identity.describe()}); resuming this "
                "run will need --trust-components (trust_components=True)")
        missing = [d for d in [out, *out.parents] if not d.exists()]
        out.mkdir(parents=True, exist_ok=True)
        created.extend(reversed(missing))              # outermost first
        created.append(record)
        outputs.write_json(record, {"settings": settings.to_dict(), "settings_sha256": digest,
                                    "components": components_label,
                                    "components_unverified": identity.unverified,
                                    "torch": torch.__version__, "compose": __version__,
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if not files.directory.exists():
        created.append(files.directory)
    files.directory.mkdir(exist_ok=True)
    for stale in files.directory.glob(".*.tmp-*"):      # writes cut short by a kill
        stale.unlink(missing_ok=True)
    run = {"samples": settings.samples, "block_size": settings.block_size,
           "blocks": settings.num_blocks}
    header = (f"run of {settings.samples} chains in {settings.num_blocks} block(s) of "
              f"{settings.block_size}; the plan of one block:\n")
    for name in ("plan.txt", "plan.json"):
        if not (out / name).exists():
            created.append(out / name)
    checkpoint.write_atomic(out / "plan.txt", (header + str(plan) + "\n").encode())
    outputs.write_json(out / "plan.json", {"run": run, **plan.to_dict()})
    return created


def _unmake(created: List[Path], files: "_blocks.BlockFiles") -> None:
    """Remove what `_prepare` created, when no block has left a file yet (a run that failed
    before sampling anything); folders only when empty."""
    if not created or (files.directory.is_dir() and any(files.directory.iterdir())):
        return
    for path in reversed(created):
        try:
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
        except OSError:
            return


def read_record(record: Path) -> dict:
    """run.json of a run, checked: a JSON object whose 'settings' hold every setting."""
    try:
        previous = json.loads(record.read_text())
    except (ValueError, OSError) as error:
        raise RunError(f"{record}: unreadable ({error}); cannot check what the run ran") from None
    if not isinstance(previous, dict):
        raise RunError(f"{record}: holds a JSON {_json_kind(previous)}, expected the object "
                       "score-compose writes (settings, settings_sha256, ...); the file is "
                       "damaged: start the run again in a new directory")
    old = previous.get("settings")
    if not isinstance(old, dict):
        raise RunError(f"{record}: 'settings' is {_json_kind(old) if 'settings' in previous else 'missing'}, "
                       "expected an object of the run's settings; the file is damaged: start "
                       "the run again in a new directory")
    missing = [f.name for f in fields(SampleSettings) if f.name not in old
               and f.name != "smc"]                 # recorded only for SMC runs
    if missing:
        raise RunError(f"{record}: the settings lack {', '.join(missing)} (the file is damaged, or "
                       f"written by another version of score-compose: {previous.get('compose')!r}, "
                       f"this is {__version__}); cannot check what the run ran")
    return previous


def _json_kind(value) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null",
            int: "number", float: "number"}.get(type(value), type(value).__name__)


def _merge(out, settings, digest, files, target, kernel, picture, timing, say=None) -> RunResult:
    rows = _blocks.block_rows(settings.samples, settings.block_size)
    # one block in memory at a time beside the merged samples
    samples = torch.empty((settings.samples,) + tuple(settings.event_shape), dtype=settings.torch_dtype)
    finished = []
    for b, span in enumerate(rows):
        if not files.block(b).exists():
            raise RunError(f"block {b}: {files.block(b)} is missing after every rank finished; "
                           "on several machines the output directory must be on a filesystem "
                           "they all share")
        try:
            block = _blocks.load_block(files, b, digest, span, settings,
                                       settings.top_level(target.schedule))
        except checkpoint.DamagedFile as error:
            raise RunError(f"block {b}: {error}; run again with --resume to resample it") from None
        samples[span[0]:span[1]] = block.pop("samples")
        finished.append(block)
    name = ("Reverse" if kernel is None or settings.steps == 0
            else kernel.name + (" + reverse" if settings.reverse_step else ""))
    if settings.smc is not None:
        name += " + SMC"
    diagnostics = outputs.merge_diagnostics(finished, name, settings.samples)
    diagnostics["settings_sha256"] = digest
    diagnostics.update(timing)          # this session's processes and wall time of its blocks
    outputs.write_tensor(out / "samples.pt", samples)
    images, note = outputs.images_of(target, samples)
    if note is not None and say is not None:
        say(note)
    if images is not None:
        outputs.write_tensor(out / "images.pt", images.images)
        diagnostics["images"] = outputs.images_record(images)
    outputs.write_json(out / "diagnostics.json", diagnostics)
    if picture:
        outputs.picture(samples, out / ("samples.png" if images is None else "images.png"),
                        f"{settings.expression}  ({name}, N = {settings.samples})", images=images)
    return RunResult(samples, diagnostics, out, images)


def _stderr(group: Group) -> Callable[[str], None]:
    prefix = f"[rank {group.rank}] " if group.world > 1 else ""
    return lambda message: print(f"{prefix}{message}", file=sys.stderr, flush=True)
