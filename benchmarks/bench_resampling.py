"""Time per call of each resampling scheme (compose.smc.resampling.ancestors) and of one level's
SMC bookkeeping (normalise + ESS + ancestors + distinct ancestors + gather of a (N, 2) state) on the CPU, 1 thread.

    python benchmarks/bench_resampling.py [--sizes 1000 100000 1000000]
"""
import argparse
import time

import torch

from compose.smc.resampling import SCHEMES, ancestors, distinct, ess, normalise


def per_call(fn, repeats):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    print(f"{'N':>9}  " + "  ".join(f"{s:>12}" for s in SCHEMES) + "  level bookkeeping")
    for n in args.sizes:
        lw = torch.randn(n, generator=g, dtype=torch.float64) * 2
        x = torch.randn(n, 2, generator=g)
        repeats = max(3, int(2e6 // n))
        times = [per_call(lambda s=s: ancestors(lw, s, g), repeats) for s in SCHEMES]

        def level():
            w = normalise(lw)
            e = ess(w)
            index = torch.where(e < 0.5 * n, ancestors(w, "systematic", g), torch.arange(n))
            return x.index_select(0, index), distinct(index)
        bookkeeping = per_call(level, repeats)
        print(f"{n:>9}  " + "  ".join(f"{t * 1e3:>9.3f} ms" for t in times) + f"  {bookkeeping * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
