"""Δ error against extra evaluations per step: the trapezoid rule against Gauss–Lobatto.

Prints the median |Δ − Δ_exact| over proposals for the trapezoid rule with n = 1 … 8 interior
points and the Gauss–Lobatto rule with n = 1 … 3 (docs/quadrature.md), on exact scores of
analytic components seen score-only (`ScoreModel.from_analytic`), so every error is the rule's:

  (a) the 2D product (ring × bar, cosine T = 100) at the paper's step sizes: MALA proposals at
      η = 0.001 on the line, HMC trajectories at ε = 0.03, L = 3 (v ~ N(0, I)) on the chord and
      on the leapfrog curve (extra evaluations m · L per step there);
  (b) a 64-dimensional Gaussian mixture (the digits' dimension: 32 k-means clusters of the 8×8
      digits scaled to [−1, 1], each with its own isotropic spread; cosine T = 40) with MALA
      proposals at a step η_t tuned per level so that exact-Δ MALA accepts 60%.

Start points are exact samples of the level-t target (rejection from the noised ring for the
product, ancestral for the mixture), proposals one kernel move from them. Everything runs in
float64, so the errors are the rules' and not rounding.

    python benchmarks/bench_quadrature.py [--pairs 1000] [--out docs/results/quadrature]

With --out: results.json, results.md and error_vs_evaluations.png there. Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

import compose
from compose.experiments.product2d.target import BAR_HIGH, BAR_LOW, RING_MEANS, RING_STD
from compose.kernels.hmc import leapfrog
from compose.kernels.langevin import langevin_log_q, langevin_proposal

TRAPEZOID = tuple(range(1, 9))
LOBATTO = (1, 2, 3)
LEVELS_2D = (1, 2, 5, 10, 20, 50)
LEVELS_64D = (1, 3, 10, 20, 30)


# -- targets ----------------------------------------------------------------------------------
def product_2d():
    """(exact target, score-only components) of the 2D product on cosine T = 100."""
    schedule = compose.Schedule.cosine(100)
    ring = compose.GaussianMixture(RING_MEANS, RING_STD, schedule=schedule, name="ring")
    bar = compose.UniformBox(BAR_LOW, BAR_HIGH, schedule=schedule, name="bar")
    scored = (compose.ScoreModel.from_analytic(ring, name="ring")
              * compose.ScoreModel.from_analytic(bar, name="bar"))
    return compose.compile(ring * bar), scored, (ring, bar)


def mixture_64d(clusters: int = 32):
    """(exact target, score-only leaf, mixture): k-means clusters of the digits in [−1, 1]^64."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_digits
    images = load_digits().data / 8.0 - 1.0
    km = KMeans(clusters, n_init=1, random_state=0).fit(images)
    means = km.cluster_centers_
    counts = np.bincount(km.labels_, minlength=clusters)
    spread = np.sqrt(np.array([((images[km.labels_ == k] - means[k]) ** 2).mean() for k in range(clusters)]))
    schedule = compose.Schedule.cosine(40)
    gmm = compose.GaussianMixture(torch.tensor(means), torch.tensor(spread), weights=torch.tensor(counts, dtype=torch.float64),
                                  schedule=schedule, name="gmm")
    return compose.compile(gmm), compose.ScoreModel.from_analytic(gmm, name="gmm"), gmm


def product_samples(ring, bar, n, t, generator):
    """n exact samples of the level-t product: noised ring samples kept with prob ∝ noised bar."""
    out, have = [], 0
    while have < n:
        x = ring.sample(4 * n, generator, t=t).double()
        log_bar = bar.log_density(x, t)
        bound = bar.log_density(torch.zeros(1, 2, dtype=torch.float64), t)
        keep = torch.rand(x.shape[0], generator=generator, dtype=torch.float64).log() < log_bar - bound
        out.append(x[keep])
        have += int(keep.sum())
    return torch.cat(out)[:n]


# -- proposals --------------------------------------------------------------------------------
def mala_pairs(exact, x, t, step, generator):
    score = exact.score(x, t)
    return x, langevin_proposal(x, score, step, generator)


def mala_acceptance(exact, x, t, step, generator):
    """Mean of min(1, α) for exact-Δ MALA from x."""
    ev = exact.evaluate(x, t)
    x_new = langevin_proposal(x, ev.score, step, generator)
    there = exact.evaluate(x_new, t)
    log_alpha = (there.log_density - ev.log_density + langevin_log_q(x, x_new, there.score, step)
                 - langevin_log_q(x_new, x, ev.score, step))
    return torch.exp(log_alpha.clamp(max=0)).mean().item()


def tune_mala(exact, x, t, seed, target_rate=0.6):
    """η with exact-Δ MALA acceptance ≈ target_rate from x (bisection on log η, common noise)."""
    lo, hi = 1e-6, 1.0
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        rate = mala_acceptance(exact, x, t, mid, torch.Generator().manual_seed(seed))
        lo, hi = (mid, hi) if rate > target_rate else (lo, mid)
    return math.sqrt(lo * hi), rate


def hmc_paths(exact, x, t, step, num_leapfrog, generator):
    """Leapfrog positions (L+1, N, d) from x with v ~ N(0, I)."""
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    positions, _, _ = leapfrog(x, v, exact.evaluate(x, t), lambda y: exact.evaluate(y, t), step,
                               num_leapfrog, 1.0)
    return torch.stack(positions)


# -- errors -----------------------------------------------------------------------------------
def rules():
    return [("trapezoid", n) for n in TRAPEZOID] + [("lobatto", n) for n in LOBATTO]


def line_errors(scored, exact, pairs_by_level):
    """{(rule, n): |Δ error| over all pairs of all levels}."""
    errors = {}
    for rule, n in rules():
        target = compose.compile(scored, points=n, rule=rule)
        errs = []
        for t, (x, x_new) in pairs_by_level.items():
            true = exact.log_ratio(x, x_new, t)
            errs.append((target.log_ratio(x, x_new, t) - true).abs())
        errors[(rule, n)] = torch.cat(errs)
    return errors


def curve_errors(scored, exact, paths_by_level, num_leapfrog):
    errors = {}
    for rule, n in [("trapezoid", m) for m in (0, 1, 2, 3)] + [("lobatto", m) for m in (1, 2)]:
        target = compose.compile(scored, path="curve", points=n, rule=rule)
        errs = []
        for t, path in paths_by_level.items():
            true = exact.log_ratio(path[0], path[-1], t)
            errs.append((target.log_ratio_curve(path, t) - true).abs())
        errors[(rule, n)] = torch.cat(errs)
    return errors


def median(e: torch.Tensor) -> float:
    return float(e.median())


# -- report -----------------------------------------------------------------------------------
def table(title, errors, per_node=1):
    """Markdown table; `per_node` extra evaluations per interior node (L on the curve)."""
    lines = [f"### {title}", "", "| rule | interior nodes per piece | extra evaluations per step "
             "| median abs Δ error | 90% quantile |", "|---|---|---|---|---|"]
    for (rule, n), e in errors.items():
        lines.append(f"| {rule} | {n} | {n * per_node} | {median(e):.3e} | "
                     f"{float(e.quantile(0.9)):.3e} |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6))
    for ax, (title, res) in zip(axes, results.items()):
        for rule, style in (("trapezoid", "o-"), ("lobatto", "s-")):
            pts = sorted((v["extra"], v["median"]) for k, v in res["errors"].items()
                         if k.startswith(rule))
            ax.semilogy([p[0] for p in pts], [p[1] for p in pts], style, label=rule)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("extra evaluations per step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("median |Δ error|")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def as_data(errors, per_node=1):
    return {"errors": {f"{rule} n={n}": {"extra": n * per_node, "median": median(e), "q90": float(e.quantile(0.9))}
                       for (rule, n), e in errors.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000, help="proposals per level (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write results.json, results.md and the plot here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    results, sections = {}, []

    # (a) the 2D product at the paper's step sizes
    exact, scored, (ring, bar) = product_2d()
    starts = {t: product_samples(ring, bar, args.pairs, t, g) for t in LEVELS_2D}
    la = {t: mala_pairs(exact, x, t, 0.001, g) for t, x in starts.items()}
    paths = {t: hmc_paths(exact, x, t, 0.03, 3, g) for t, x in starts.items()}
    chords = {t: (p[0], p[-1]) for t, p in paths.items()}
    for title, pairs in (("2D product, MALA η = 0.001, line", la), ("2D product, HMC ε = 0.03, L = 3, chord", chords)):
        errors = line_errors(scored, exact, pairs)
        results[title] = as_data(errors)
        sections.append(table(title, errors))
    curve = curve_errors(scored, exact, paths, 3)
    title = "2D product, HMC ε = 0.03, L = 3, leapfrog curve"
    results[title] = as_data(curve, 3)
    sections.append(table(title, curve, 3))

    # (b) a 64-D Gaussian mixture at steps where MALA accepts 60%
    exact64, scored64, gmm = mixture_64d()
    pairs, steps = {}, {}
    for t in LEVELS_64D:
        x = gmm.sample(args.pairs, g, t=t).double()
        step, rate = tune_mala(exact64, x, t, args.seed + t)
        steps[t] = {"step": step, "acceptance": rate}
        pairs[t] = mala_pairs(exact64, x, t, step, g)
    errors = line_errors(scored64, exact64, pairs)
    title = "64-D Gaussian mixture, MALA at 60% acceptance, line"
    results[title] = dict(as_data(errors), steps=steps)
    sections.append(table(title, errors))
    per_level = {t: {f"{rule} n={n}": median(
        (compose.compile(scored64, points=n, rule=rule).log_ratio(x, x_new, t)
         - exact64.log_ratio(x, x_new, t)).abs()) for rule, n in (("trapezoid", 8), ("lobatto", 1), ("lobatto", 2))}
        for t, (x, x_new) in pairs.items()}
    results[title]["per_level"] = per_level

    text = "\n\n".join(sections)
    print(text)
    print("\n64-D MALA steps per level:", {t: f"η={s['step']:.3g} (acc {s['acceptance']:.2f})" for t, s in steps.items()})
    print("64-D median |Δ error| per level:", json.dumps(per_level, indent=1))
    seconds = time.perf_counter() - start
    print(f"\n{seconds:.0f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        used = argv if argv is not None else sys.argv[1:]
        meta = {"command": "python benchmarks/bench_quadrature.py " + " ".join(used),
                "pairs_per_level": args.pairs, "seed": args.seed, "levels_2d": LEVELS_2D,
                "levels_64d": LEVELS_64D, "seconds": seconds,
                "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread"}
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
        header = (f"# Δ error against extra evaluations per step\n\nCommand: `{meta['command'].strip()}` "
                  f"({seconds:.0f} s, {meta['machine']}).\n\nMedian and 90% quantile of |Δ − Δ_exact| over "
                  f"{args.pairs} proposals per level from exact samples of the level-t target, exact scores "
                  f"seen score-only, float64. 2D product: levels {', '.join(map(str, LEVELS_2D))} of cosine "
                  f"T = 100. 64-D mixture: levels {', '.join(map(str, LEVELS_64D))} of cosine T = 40, MALA "
                  "step per level for 60% acceptance with the exact Δ. See docs/quadrature.md and "
                  "error_vs_evaluations.png.\n\n")
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(header + text + "\n")
        plot(results, os.path.join(args.out, "error_vs_evaluations.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
