"""What sequential Monte Carlo adds to a sampler's cost: wall time / time inside the networks
for Reverse, U-LA and HMC-curve, each with reverse steps, with and without `compose.SMC`, on
bench_core.py's set-up (the 2D product of two residual MLPs with random weights, 2000 chains,
cosine T = 20, K = 5, 1 thread). Prints figures; asserts nothing.

    python benchmarks/bench_smc.py [--chains 2000] [--levels 20] [--steps 5] [--repeats 3]

Each pair runs interleaved `--repeats` times and the smallest overhead of each is kept, so
both see the same machine load. The SMC runs start at level T (`start_level=T`) so that both
runs evaluate the same levels.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import product_of_networks  # noqa: E402  (the same set-up)

import compose  # noqa: E402

SAMPLERS = [
    ("Reverse", None, {}),
    ("U-LA", lambda: compose.ULA(0.001), {}),
    ("HMC-curve", lambda: compose.HMC(0.03), {"path": "curve"}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=2000)
    parser.add_argument("--levels", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets, expr = product_of_networks(args.levels)
    smc = compose.SMC(start_level=args.levels)
    print(f"{args.chains} chains, T = {args.levels}, K = {args.steps}, {torch.get_num_threads()} thread(s)")
    print(f"{'sampler':<11}{'evals/sample':>13}{'overhead':>10}{'with SMC':>10}{'ratio':>8}")
    for name, make, options in SAMPLERS:
        target = compose.compile(expr, **options)
        best = {False: float("inf"), True: float("inf")}
        evals = {}
        for _ in range(args.repeats):
            for with_smc in (False, True):
                for net in nets:
                    net.calls.clear()
                    net.seconds = 0.0
                start = time.perf_counter()
                result = compose.sample(target, make() if make else None, args.chains,
                                        steps_per_level=args.steps, reverse_step=True,
                                        generator=torch.Generator().manual_seed(0), progress=False,
                                        smc=smc if with_smc else None)
                wall = time.perf_counter() - start
                best[with_smc] = min(best[with_smc], wall / sum(net.seconds for net in nets))
                evals[with_smc] = max(result.diagnostics.evaluations_per_sample().values())
        assert evals[False] == evals[True]
        print(f"{name:<11}{evals[True]:>13.0f}{best[False]:>10.3f}{best[True]:>10.3f}"
              f"{best[True] / best[False]:>8.3f}")


if __name__ == "__main__":
    main()
