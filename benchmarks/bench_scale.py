"""Sampling at scale: throughput of `compose sample` with 1 and 2 processes (torchrun, gloo, one
thread each), and the cost of a checkpoint per level. Prints figures; asserts nothing except
that the 1- and 2-process samples are bitwise equal.

    python benchmarks/bench_scale.py [--chains 2000] [--block-size 250] [--levels 20]
                                     [--steps 2] [--repeats 3]

The composition is the paper's 2D product with two residual MLPs (565,506 parameters each,
random weights from a fixed seed) as score models, sampled with MALA: the cost is network
evaluations, as in real use. Throughput = N / sampling time, where the sampling time is the
wall time from the first block to the last one finished (diagnostics.json, rank 0), beside the
end-to-end time of the command (which adds torchrun and Python start-up). Runs with 1 and 2
processes alternate, so both see the same machine load; on a shared machine read the ratio.

Checkpoint overhead: the same single-process run (one block) with a checkpoint after every
level and with none, alternated; and the time of one checkpoint write beside one level.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

COMPONENTS = '''\
import torch
import compose
from compose.models.nets import ResidualMLP

schedule = compose.Schedule.cosine({levels})
torch.manual_seed(0)                     # the same random weights in every process
nets = [ResidualMLP(T={levels}).eval() for _ in range(2)]
for net in nets:                         # zero-initialised output layers: give them weights
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
p0 = compose.ScoreModel(nets[0], schedule, name="p0", event_shape=(2,))
p1 = compose.ScoreModel(nets[1], schedule, name="p1", event_shape=(2,))
'''


def _sample_argv(components, out, args, *more):
    return ["-m", "compose.cli", "sample", "p0 * p1", "--components", str(components),
            "--kernel", "MALA", "--step-size", "0.001", "--steps", str(args.steps),
            "--samples", str(args.chains), "--block-size", str(args.block_size), "--seed", "0",
            "--no-picture", "--no-progress", "--out", str(out), *more]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def _run(command):
    start = time.perf_counter()
    subprocess.run(command, env=_env(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def throughput(args, work: Path, components: Path):
    print(f"throughput: {args.chains} chains in blocks of {args.block_size}, T = {args.levels}, "
          f"MALA K = {args.steps}, one thread per process")
    results = {1: [], 2: []}
    for r in range(args.repeats):
        for P in (1, 2):
            out = work / f"p{P}-{r}"
            wall = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                         f"--nproc_per_node={P}", *_sample_argv(components, out, args)])
            seconds = json.loads((out / "diagnostics.json").read_text())["sampling_seconds"]
            results[P].append((seconds, wall))
    a = torch.load(work / "p1-0" / "samples.pt", weights_only=True)
    b = torch.load(work / "p2-0" / "samples.pt", weights_only=True)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32)), "1 and 2 processes differ"
    print(f"{'processes':>10}{'sampling s':>12}{'samples/s':>11}{'end-to-end s':>14}")
    median = {}
    for P, runs in results.items():
        sampling = statistics.median(s for s, _ in runs)
        wall = statistics.median(w for _, w in runs)
        median[P] = sampling
        print(f"{P:>10}{sampling:>12.2f}{args.chains / sampling:>11.0f}{wall:>14.2f}")
    print(f"speed-up with 2 processes (sampling time, median of {args.repeats}): "
          f"{median[1] / median[2]:.2f}x; samples bitwise equal: yes")


def checkpoint_overhead(args, work: Path, components: Path):
    from compose import cli
    from compose.runs import blocks, checkpoint, sample_run

    torch.set_num_threads(1)
    bindings = cli.load_components(str(components))
    T = args.levels
    print(f"\ncheckpoint overhead: one process, one block of {args.block_size} chains, "
          f"T = {T}, MALA K = {args.steps}")
    times = {1: [], T + 1: []}
    for r in range(-1, args.repeats):                 # r = -1: warm-up, not timed
        for every in (1, T + 1):
            out = work / f"ckpt-{every}-{r}"
            start = time.perf_counter()
            sample_run("p0 * p1", bindings, out, kernel="MALA", step_size=0.001, steps=args.steps,
                       samples=args.block_size, block_size=args.block_size, seed=0,
                       checkpoint_every=every, picture=False, progress=False, device="cpu",
                       log=lambda message: None)
            if r >= 0:
                times[every].append(time.perf_counter() - start)
    with_, without = statistics.median(times[1]), statistics.median(times[T + 1])
    per_level = without / T
    print(f"  per level: {1e3 * per_level:.1f} ms without checkpoints, "
          f"{1e3 * with_ / T:.1f} ms with one after every level "
          f"(+{100 * (with_ - without) / without:.1f}%, median of {args.repeats})")
    # one checkpoint write in isolation, at a few block sizes
    files = blocks.BlockFiles(work / "direct")
    files.directory.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    print(f"  one checkpoint write (x, generator state, {T} levels of diagnostics; fsync):")
    levels = json.loads((work / f"ckpt-1-0" / "diagnostics.json").read_text())["blocks"][0]["levels"]
    for rows in (250, 2000, 16000):
        x = torch.randn(rows, 2)
        spans = []
        for _ in range(10):
            start = time.perf_counter()
            blocks._save_checkpoint(files, 0, (0, rows), "0" * 64, 5, x, 1.0, generator, levels)
            spans.append(time.perf_counter() - start)
        size = files.checkpoint(0, 5).stat().st_size
        print(f"    {rows:>6} chains: {1e3 * statistics.median(spans):6.2f} ms, {size / 1024:.0f} KiB")
    checkpoint.load(files.checkpoint(0, 5))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=2000)
    parser.add_argument("--block-size", type=int, default=250)
    parser.add_argument("--levels", type=int, default=20, help="T of the cosine schedule")
    parser.add_argument("--steps", type=int, default=2, help="MALA steps per level")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start "
          "(shared: compare the ratios, not the absolute times)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        components = work / "bench_components.py"
        components.write_text(COMPONENTS.format(levels=args.levels))
        throughput(args, work, components)
        checkpoint_overhead(args, work, components)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
