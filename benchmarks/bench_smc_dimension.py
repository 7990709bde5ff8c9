"""How the Feynman–Kac weights of compose.SMC degenerate with the dimension (docs/smc.md §7).

A product of two Gaussians N(1, 0.5² I) · N(−0.5, 0.8² I) in d = 2, 8, 64, 256 dimensions
(analytic components, float64, linear schedule T = 100, N = 2000 particles): for the reverse
process, SMC without moves, and SMC with 2 and 5 MALA moves per level, the smallest ESS / N over
the levels, the number of levels that resampled, and the errors against the closed form: the
mean coordinate error of the mean in units of the exact standard deviation, and the mean
relative error of the variances. Mean ± standard error over --seeds runs.

    python benchmarks/bench_smc_dimension.py [--dims 2 8 64 256] [--seeds 3] [--samples 2000]
"""
import argparse
import math
import time

import torch

import compose

MU_A, SD_A, MU_B, SD_B = 1.0, 0.5, -0.5, 0.8


def exact():
    precision = 1 / SD_A ** 2 + 1 / SD_B ** 2
    return (MU_A / SD_A ** 2 + MU_B / SD_B ** 2) / precision, 1 / precision


def run(d, sampler, n, seed, T):
    schedule = compose.Schedule.linear(T)
    a = compose.GaussianMixture([[MU_A] * d], SD_A, schedule=schedule, name="a")
    b = compose.GaussianMixture([[MU_B] * d], SD_B, schedule=schedule, name="b")
    target = compose.compile(a * b)
    g = torch.Generator().manual_seed(seed)
    if sampler == "Reverse":
        result = compose.sample(target, None, n, reverse_step=True, generator=g, dtype=torch.float64,
                                progress=False)
    else:
        k = {"SMC": 0, "SMC + 2 MALA": 2, "SMC + 5 MALA": 5}[sampler]
        kernel = compose.MALA(0.01) if k else None
        result = compose.sample(target, kernel, n, k, generator=g, dtype=torch.float64,
                                smc=compose.SMC(), progress=False)
    mean, var = exact()
    x = result.samples
    mean_error = float(((x.mean(0) - mean).abs() / math.sqrt(var)).mean())
    var_error = float(((x.var(0) - var).abs() / var).mean())
    d_ = result.diagnostics
    ess = min(d_.ess()) / n if d_.smc else math.nan
    resampled = sum(l.smc.resampled for l in d_.levels) if d_.smc else 0
    return mean_error, var_error, ess, resampled


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8, 64, 256])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--T", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"N = {args.samples}, T = {args.T} (linear), {args.seeds} seeds; mean ± s.e. over seeds")
    print(f"{'d':>4}  {'sampler':<13}  {'min ESS/N':>10}  {'resampled':>9}  {'|mean err|/sd':>15}  "
          f"{'|var err|/var':>15}  seconds")
    for d in args.dims:
        for sampler in ("Reverse", "SMC", "SMC + 2 MALA", "SMC + 5 MALA"):
            start = time.perf_counter()
            rows = torch.tensor([run(d, sampler, args.samples, seed, args.T) for seed in range(args.seeds)],
                                dtype=torch.float64)
            m, se = rows.mean(0), rows.std(0) / math.sqrt(args.seeds)
            ess = "—" if math.isnan(m[2]) else f"{m[2]:.3f}"
            print(f"{d:>4}  {sampler:<13}  {ess:>10}  {m[3]:>9.1f}  {m[0]:>7.3f} ± {se[0]:.3f}  "
                  f"{m[1]:>7.3f} ± {se[1]:.3f}  {time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
