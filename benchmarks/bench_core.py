"""Core engine benchmark: evaluations, wall time and overhead per sampler; batched versus
one-call-per-point line integration. Prints figures; asserts nothing.

    python benchmarks/bench_core.py [--chains 2000] [--levels 20] [--steps 5]

The composition is the paper's 2D product with two residual MLPs (random weights) as score
models. Overhead = wall time of the run / time spent inside the network calls of that same run
(each call timed where it happens, so machine load affects both alike). 1.0 means the library
adds nothing beyond the network calls. Beside it, the estimate the issue names: calls × the
median time of one isolated raw call at that batch size, measured right after the run.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch

import compose
from compose.compiler import quadrature
from compose.models.nets import ResidualMLP


class Counting(torch.nn.Module):
    """Wraps a network; counts its calls by batch size and times them inside the run."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.calls = Counter()
        self.seconds = 0.0

    def forward(self, x, t):
        self.calls[x.shape[0]] += 1
        start = time.perf_counter()
        out = self.net(x, t)
        self.seconds += time.perf_counter() - start
        return out


def raw_time(net, rows, T, repeats=15):
    """Median seconds of one isolated raw call `net(x, t)` at `rows` rows (no grad)."""
    x = torch.randn(rows, 2)
    t = torch.randint(1, T + 1, (rows,))
    with torch.no_grad():
        for _ in range(3):
            net(x, t)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            net(x, t)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def product_of_networks(levels: int):
    """(the two timed networks, their product p0 * p1): residual MLPs with random weights as
    ε-models on the cosine schedule with `levels` levels."""
    schedule = compose.Schedule.cosine(levels)
    nets = [Counting(ResidualMLP(T=levels)).eval() for _ in range(2)]
    for net in nets:                      # zero-initialised output layers: give them weights
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.05)
    models = [compose.ScoreModel(n, schedule, name=f"p{i}", event_shape=(2,)) for i, n in enumerate(nets)]
    return nets, models[0] * models[1]


SAMPLERS = [
    ("Reverse", None, {}, True),
    ("U-LA", lambda: compose.ULA(0.001), {}, False),
    ("LA-3-line", lambda: compose.MALA(0.001), {"points": 3}, False),
    ("U-HMC", lambda: compose.HMC(0.03, adjusted=False), {}, False),
    ("HMC-3-line", lambda: compose.HMC(0.03), {"points": 3}, False),
    ("HMC-curve", lambda: compose.HMC(0.03), {"path": "curve"}, False),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=2000)
    parser.add_argument("--levels", type=int, default=20, help="T of the cosine schedule")
    parser.add_argument("--steps", type=int, default=5, help="kernel steps per level")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets, expr = product_of_networks(args.levels)
    N = args.chains

    print(f"{N} chains, T = {args.levels}, K = {args.steps}, {torch.get_num_threads()} thread(s), "
          f"ResidualMLP {sum(p.numel() for p in nets[0].net.parameters())} parameters")
    print(f"{'sampler':<13}{'evals/sample':>13}{'calls':>8}{'wall s':>9}{'in-net s':>10}{'overhead':>10}"
          f"{'calls×raw s':>13}{'wall/(calls×raw)':>18}")
    for name, make, options, reverse in SAMPLERS:
        target = compose.compile(expr, **options)
        for net in nets:
            net.calls.clear()
            net.seconds = 0.0
        start = time.perf_counter()
        result = compose.sample(target, make() if make else None, N, steps_per_level=args.steps,
                                reverse_step=reverse, generator=torch.Generator().manual_seed(0),
                                progress=False)
        wall = time.perf_counter() - start
        in_net = sum(net.seconds for net in nets)
        # raw call times measured right after the run, so both see the same machine load
        raw = {rows: raw_time(nets[0].net, rows, args.levels) for rows in set(nets[0].calls) | set(nets[1].calls)}
        expected = sum(count * raw[rows] for net in nets for rows, count in net.calls.items())
        calls = sum(sum(n.calls.values()) for n in nets)
        evals = max(result.diagnostics.evaluations_per_sample().values())
        print(f"{name:<13}{evals:>13.0f}{calls:>8}{wall:>9.2f}{in_net:>10.2f}{wall / in_net:>10.3f}"
              f"{expected:>13.2f}{wall / expected:>18.3f}")

    # Batched versus one call per point for the interior nodes of the line integral.
    print("\nline integration, interior points of all chains: one batched call vs one call per point")
    target = compose.compile(expr, points=1, chunk_rows=10**9)          # force one batched call
    print(f"{'points':>7}{'batched ms':>12}{'per-point ms':>14}{'batching speed-up':>19}")
    x = torch.randn(N, 2)
    for n in (1, 3, 8):
        points = quadrature.interior_points(x, x + 0.1, n)           # (n, N, 2)
        batched, separate = [], []
        for _ in range(7):                                                   # interleaved repeats
            start = time.perf_counter()
            target._interior_scores(points, 5, 1)
            batched.append(time.perf_counter() - start)
            start = time.perf_counter()
            for j in range(n):
                target._implicit(points[j], 5)
            separate.append(time.perf_counter() - start)
        b, s = statistics.median(batched) * 1e3, statistics.median(separate) * 1e3
        print(f"{n:>7}{b:>12.1f}{s:>14.1f}{s / b:>19.2f}")


if __name__ == "__main__":
    main()
