"""`compose sample` and `compose.runs.sample_run`: blocks seeded from (seed, block), bitwise the
same samples for one plain process and for torchrun with 2 processes (gloo), after a SIGKILL
and --resume, and after a damaged checkpoint; a resume with other settings is refused.

Runs are tiny (T = 12, a few dozen chains): CI has two cores. torchrun is started as
``python -m torch.distributed.run`` from this interpreter.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import compose
from compose import cli
from compose.runs import (DamagedFile, RunError, block_rows, block_seed, blocks_of_rank,
                          checkpoint, sample_run)

ROOT = Path(__file__).resolve().parents[1]

COMPONENTS = '''\
"""Test components on a 12-level schedule; SLOW_DELAY seconds of sleep per ring evaluation."""
import os
import time

import compose

DELAY = float(os.environ.get("SLOW_DELAY", "0"))


class SlowMixture(compose.GaussianMixture):
    def log_density_and_score(self, x, t, conditions=()):
        time.sleep(DELAY)
        return super().log_density_and_score(x, t, conditions)


schedule = compose.Schedule.cosine(12)
ring = SlowMixture([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]], 0.1, schedule=schedule,
                   name="ring")
bar = compose.UniformBox([-0.2, -1.0], [0.2, 1.0], schedule=schedule, name="bar")
'''

# 3 blocks (20, 20, 10 chains): on 2 processes an uneven split
OPTIONS = ["--kernel", "HMC", "--step-size", "0.05", "--steps", "2", "--leapfrog", "2",
           "--samples", "50", "--block-size", "20", "--seed", "7", "--adapt", "--no-picture"]


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    path = tmp_path_factory.mktemp("components") / "slow_components.py"
    path.write_text(COMPONENTS)
    return str(path)


def _argv(components, out, *more):
    return ["sample", "ring * bar", "--components", components, *OPTIONS, "--out", str(out), *more]


def _env(**more):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", **more)
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _bits(path) -> np.ndarray:
    return torch.load(path, weights_only=True).contiguous().view(torch.int32).numpy()


@pytest.fixture(scope="module")
def reference(components, tmp_path_factory):
    """One plain, uninterrupted run in this process."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert cli.main(_argv(components, out)) == 0
    return out


# -- blocks and their seeds ----------------------------------------------------------------
def test_block_seeds_rows_and_turns():
    assert block_seed(7, 2) == int(np.random.SeedSequence(7, spawn_key=(2,)).generate_state(1, np.uint64)[0])
    assert len({block_seed(s, b) for s in range(3) for b in range(50)}) == 150
    assert block_rows(50, 20) == [(0, 20), (20, 40), (40, 50)]
    assert block_rows(40, 20) == [(0, 20), (20, 40)]
    assert blocks_of_rank(3, 0, 2) == [0, 2] and blocks_of_rank(3, 1, 2) == [1]
    assert blocks_of_rank(1, 1, 2) == []


def test_each_block_is_compose_sample_with_its_own_generator(components, reference):
    # the documented derivation: block b = compose.sample on its rows with a generator seeded
    # by block_seed(seed, b), nothing else
    bindings = cli.load_components(components)
    target = compose.compile("ring * bar", bindings)
    samples = torch.load(reference / "samples.pt", weights_only=True)
    assert samples.shape == (50, 2) and samples.dtype == torch.float32
    for b, (start, stop) in enumerate(block_rows(50, 20)):
        expected = compose.sample(target, compose.HMC(0.05, num_leapfrog=2), stop - start,
                                  steps_per_level=2, adaptation=compose.Adaptation(),
                                  generator=torch.Generator().manual_seed(block_seed(7, b)),
                                  progress=False).samples
        assert torch.equal(samples[start:stop].view(torch.int32), expected.view(torch.int32)), b


def test_outputs_of_a_run(reference):
    import json
    diagnostics = json.loads((reference / "diagnostics.json").read_text())
    assert [lv["level"] for lv in diagnostics["levels"]] == list(range(12, 0, -1))
    assert [b["rows"] for b in diagnostics["blocks"]] == [[0, 20], [20, 40], [40, 50]]
    assert all(0 <= lv["acceptance"] <= 1 for lv in diagnostics["levels"])
    # HMC, L = 2, K = 2: one evaluation at each level's start and 2 per step
    assert diagnostics["levels"][0]["evaluations"] == {"ring": 5.0, "bar": 5.0}
    assert "ring * bar" in (reference / "plan.txt").read_text()
    settings = json.loads((reference / "run.json").read_text())["settings"]
    assert settings["block_size"] == 20 and settings["adaptation"]["band"] == [0.6, 0.9]
    assert not list((reference / "blocks").glob("*.ckpt"))     # finished blocks keep no checkpoints


def test_a_picture_for_2d_samples_and_for_images(tmp_path):
    from compose.runs import outputs
    assert outputs.picture(torch.randn(100, 2), tmp_path / "a.png", "2d").exists()
    assert outputs.picture(torch.rand(10, 1, 8, 8) * 2 - 1, tmp_path / "b.png", "digits").exists()
    assert outputs.picture(torch.randn(5, 7), tmp_path / "c.png", "7d") is None


# -- processes ---------------------------------------------------------------------------
def test_torchrun_with_2_processes_is_bitwise_the_plain_run(components, reference, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "compose.cli", *_argv(components, out)]
    status, err = _run_all(command, timeout=300)
    assert status == 0, err[-3000:]
    assert np.array_equal(_bits(out / "samples.pt"), _bits(reference / "samples.pt"))


def _run_all(command, timeout):
    """Run a command; on a timeout kill it and every process it started (torchrun's workers
    live in sessions of their own). Returns (exit status, stderr)."""
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    try:
        _, err = process.communicate(timeout=timeout)
        return process.returncode, err
    except subprocess.TimeoutExpired:
        for pid in [*_descendants(process.pid), process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()
        raise


def _descendants(pid):
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# -- interruption and resumption ------------------------------------------------------------
def kill_after_checkpoints(argv, out):
    """Run `compose <argv>` slowly in a process and SIGKILL it once block 1 of the run in
    `out` has two checkpoints (block 0 finished)."""
    command = [sys.executable, "-m", "compose.cli", *argv]
    process = subprocess.Popen(command, env=_env(SLOW_DELAY="0.02"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(list((out / "blocks").glob("block-000001.t*.ckpt"))) < 2:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoints appeared"
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "samples.pt").exists()


@pytest.fixture(scope="module")
def killed(components, tmp_path_factory):
    """A plain run killed with SIGKILL once block 1 has two checkpoints (block 0 finished)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    kill_after_checkpoints(_argv(components, out), out)
    return out


def test_sigkill_to_torchrun_ends_its_workers_and_resume_is_bitwise_the_same(components, reference, tmp_path):
    # SIGKILL to the launcher alone: its workers (in sessions of their own) must end with it;
    # the run is then resumed by a plain process (a different number of processes)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "compose.cli", *_argv(components, out)]
    launcher = subprocess.Popen(command, env=_env(SLOW_DELAY="0.02"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers = []
    try:
        while not list((out / "blocks").glob("*.ckpt")) if (out / "blocks").is_dir() else True:
            assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        workers = _descendants(launcher.pid)
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    assert len(workers) >= 2
    while any(_running(pid) for pid in workers):
        assert time.monotonic() < deadline, "torchrun's workers outlived it"
        time.sleep(0.01)
    assert not (out / "samples.pt").exists()
    assert cli.main(_argv(components, out, "--resume")) == 0
    assert np.array_equal(_bits(out / "samples.pt"), _bits(reference / "samples.pt"))


def _running(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _copy(directory, to):
    import shutil
    shutil.copytree(directory, to)
    return to


def test_sigkill_then_resume_is_bitwise_the_uninterrupted_run(components, reference, killed, tmp_path, capsys):
    out = _copy(killed, tmp_path / "run")
    block0 = (out / "blocks" / "block-000000.pt").stat().st_mtime_ns
    assert cli.main(_argv(components, out, "--resume")) == 0
    assert np.array_equal(_bits(out / "samples.pt"), _bits(reference / "samples.pt"))
    assert (out / "blocks" / "block-000000.pt").stat().st_mtime_ns == block0    # reused


def test_a_corrupted_checkpoint_falls_back_to_the_previous_one(components, reference, killed, tmp_path, capsys):
    out = _copy(killed, tmp_path / "run")
    checkpoints = sorted((out / "blocks").glob("block-000001.t*.ckpt"))
    latest = checkpoints[0]                                   # lowest level: the furthest
    data = bytearray(latest.read_bytes())
    data[-10] ^= 0xFF
    latest.write_bytes(bytes(data))
    with pytest.raises(DamagedFile, match="checksum"):
        checkpoint.load(latest)
    block0 = (out / "blocks" / "block-000000.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(_argv(components, out, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"block 1: {latest}: checksum mismatch" in err and "continues from its checkpoint after level" in err
    assert (out / "blocks" / "block-000000.pt").stat().st_mtime_ns == block0
    assert np.array_equal(_bits(out / "samples.pt"), _bits(reference / "samples.pt"))


def test_damaged_files_everywhere_still_give_the_same_answer(components, reference, killed, tmp_path, capsys):
    # every checkpoint of block 1 truncated (it restarts from the start), block 0's file too
    out = _copy(killed, tmp_path / "run")
    for path in [*(out / "blocks").glob("block-000001.t*.ckpt"), out / "blocks" / "block-000000.pt"]:
        path.write_bytes(path.read_bytes()[:100])
    capsys.readouterr()
    assert cli.main(_argv(components, out, "--resume")) == 0
    err = capsys.readouterr().err
    assert "block 0:" in err and "truncated" in err and "continues from the start" in err
    assert np.array_equal(_bits(out / "samples.pt"), _bits(reference / "samples.pt"))


# -- settings --------------------------------------------------------------------------------
def test_resume_with_other_settings_names_them(components, reference, capsys):
    argv = _argv(components, reference, "--resume")
    argv[argv.index("--steps") + 1] = "3"
    argv[argv.index("--seed") + 1] = "8"
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("compose sample: error: --resume: the settings differ from the run in")
    assert "steps (was 2, now 3)" in err and "seed (was 7, now 8)" in err
    # and a finished run resumed with the same settings is merged again from its blocks
    assert cli.main(_argv(components, reference, "--resume")) == 0


def test_a_run_directory_is_not_overwritten(components, reference, capsys):
    capsys.readouterr()
    assert cli.main(_argv(components, reference)) == 2
    assert "holds a run already: pass --resume" in capsys.readouterr().err


def test_changed_components_are_a_different_setting(components, reference, tmp_path, capsys):
    changed = tmp_path / "changed.py"
    changed.write_text(Path(components).read_text().replace("0.1, schedule", "0.2, schedule"))
    argv = _argv(str(changed), reference, "--resume")
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "components_sha256 (was" in err and "steps" not in err


@pytest.mark.parametrize("options, message", [
    (dict(kernel="NUTS"), "kernel: expected one of MALA"),
    (dict(kernel="MALA", step_size=None), "step_size: the MALA kernel needs a step size"),
    (dict(step_size="0.1,x"), "step_size: expected a number or 'a,b'"),
    (dict(step_size=-1.0), "step_size: must be a finite number > 0"),
    (dict(block_size=0), "block_size: must be an integer ≥ 1"),
    (dict(damping=1.0), r"damping: must be in \[0, 1\)"),
    (dict(kernel="ULA", adaptation=True), "adaptation: step-size adaptation needs an adjusted kernel"),
    (dict(checkpoint_every=0), "checkpoint_every: must be an integer ≥ 1"),
    (dict(progress="yes"), "progress: must be True, False or None"),
])
def test_bad_settings_are_named(components, tmp_path, options, message):
    kwargs = dict(kernel="MALA", step_size=0.01, steps=1, samples=4)
    kwargs.update(options)
    with pytest.raises(ValueError, match=message):
        sample_run("ring * bar", cli.load_components(components), tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_checkpoint_files_detect_damage(tmp_path):
    path = tmp_path / "a.ckpt"
    checkpoint.save(path, {"x": torch.arange(5.0), "level": 3})
    assert torch.equal(checkpoint.load(path)["x"], torch.arange(5.0))
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]          # no temporary left
    good = path.read_bytes()
    path.write_bytes(good[:-1])
    with pytest.raises(DamagedFile, match="truncated"):
        checkpoint.load(path)
    path.write_bytes(b"junk" + good)
    with pytest.raises(DamagedFile, match="bad header"):
        checkpoint.load(path)


def test_respaced_levels_are_a_setting(components, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["sample", "ring * bar", "--components", components, "--kernel", "MALA",
                     "--step-size", "0.01", "--steps", "2", "--samples", "16", "--seed", "3",
                     "--levels", "4", "--no-picture", "--out", str(out)]) == 0
    samples = torch.load(out / "samples.pt", weights_only=True)
    target = compose.compile("ring * bar", cli.load_components(components), levels=4)
    expected = compose.sample(target, compose.MALA(0.01), 16, steps_per_level=2, progress=False,
                              generator=torch.Generator().manual_seed(block_seed(3, 0))).samples
    assert torch.equal(samples.view(torch.int32), expected.view(torch.int32))
    import json
    assert len(json.loads((out / "diagnostics.json").read_text())["levels"]) == 4
    capsys.readouterr()
    assert cli.main(["sample", "ring * bar", "--components", components, "--kernel", "MALA",
                     "--step-size", "0.01", "--steps", "2", "--samples", "16", "--seed", "3",
                     "--levels", "1,6,12", "--no-picture", "--out", str(out), "--resume"]) == 2
    assert "levels (was 4, now [1, 6, 12])" in capsys.readouterr().err


def test_python_dash_m_compose_is_the_command():
    # torchrun -m compose sample ... relies on it
    done = subprocess.run([sys.executable, "-m", "compose", "sample", "--help"], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--resume" in done.stdout and "--block-size" in done.stdout


# -- on a GPU (skipped without one; `pytest -m gpu`) -----------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_blocks_and_the_checkpointed_generator_state(components, tmp_path):
    from compose.sampler import anneal
    bindings = cli.load_components(components)
    run = sample_run("ring * bar", bindings, tmp_path / "run", kernel="HMC", step_size=0.05,
                     steps=2, samples=30, block_size=20, seed=5, device="cuda", picture=False)
    target = compose.compile("ring * bar", bindings)
    for b, (start, stop) in enumerate(block_rows(30, 20)):
        g = torch.Generator(device="cuda").manual_seed(block_seed(5, b))
        expected = compose.sample(target, compose.HMC(0.05), stop - start, steps_per_level=2,
                                  generator=g, device="cuda", progress=False).samples.cpu()
        assert torch.equal(run.samples[start:stop].view(torch.int32), expected.view(torch.int32))

    # a CUDA generator's state as a checkpoint holds it (on the host) continues it exactly
    def start():
        g = torch.Generator(device="cuda").manual_seed(1)
        return g, torch.randn(20, 2, generator=g, device="cuda")
    g, x = start()
    whole = list(anneal(target, compose.HMC(0.05), x, 2, generator=g))[-1].x
    g, x = start()
    for step in anneal(target, compose.HMC(0.05), x, 2, generator=g):
        if step.level == 9:
            break
    restored = torch.Generator(device="cuda")
    restored.set_state(g.get_state().cpu())
    rest = list(anneal(target, compose.HMC(0.05), step.x.cpu().to("cuda"), 2, generator=restored,
                       start=step.level - 1, multiplier=step.multiplier))
    assert torch.equal(rest[-1].x.cpu().view(torch.int32), whole.cpu().view(torch.int32))
