"""The demo: the paper's 2D product composition with exact (analytic) components.

A ring of 8 Gaussians times a uniform bar (docs/experiments.md, section 1), sampled with
Reverse, U-LA, LA-3-line, U-HMC and HMC-curve (the paper's names) at its settings (cosine T = 100, K = 10
steps per level, η = 0.001, ε = 0.03, L = 3, damping 0.5). The MCMC samplers see the components
through score-only wrappers, so their Δ really is a line or curve integral of scores; no
training or download is needed. Prints LL and W2 against exact target samples and writes a
scatter plot.

Run: ``compose demo`` or ``python -m compose.experiments.product2d.demo [--out DIR] [--samples N]``.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import List, Optional

import torch

from ... import components, kernels, sampler
from ...compiler import compile as compile_target
from ...metrics import wasserstein2
from ...schedule import Schedule
from ..reporting import format_acceptance, scatter_row
from . import target as geometry
from .likelihood import log_likelihood

SAMPLERS = [
    # name, kernel, compile options, reverse step
    ("Reverse", None, {}, True),
    ("U-LA", lambda: kernels.ULA(0.001), {}, False),
    ("LA-3-line", lambda: kernels.MALA(0.001), {"path": "line", "points": 3}, False),
    ("U-HMC", lambda: kernels.HMC(0.03, num_leapfrog=3, damping=0.5, adjusted=False), {}, False),
    ("HMC-curve", lambda: kernels.HMC(0.03, num_leapfrog=3, damping=0.5), {"path": "curve"}, False),
]


def run(num_samples: int = 2000, seed: int = 0, out: Optional[str] = "demo-output",
        progress: Optional[bool] = None) -> List[dict]:
    """Sample with every demo sampler; returns one row per sampler and writes the plot.

    Returns:
        rows with keys sampler, ll, w2, acceptance (NaN for unadjusted samplers), evaluations (per sample), seconds.
    """
    schedule = Schedule.cosine(100)
    ring, bar = geometry.analytic_components(schedule)
    score_only = components.ScoreModel.from_analytic(ring, name="ring") * \
        components.ScoreModel.from_analytic(bar, name="bar")
    generator = torch.Generator().manual_seed(seed)
    reference = geometry.exact_product_samples(num_samples, generator)
    rows, samples = [], {}
    for name, make_kernel, options, reverse in SAMPLERS:
        target = compile_target(score_only, **options)
        kernel = make_kernel() if make_kernel else None
        start = time.perf_counter()
        result = sampler.sample(target, kernel, num_samples, steps_per_level=10, reverse_step=reverse,
                                generator=generator, progress=progress)
        seconds = time.perf_counter() - start
        evaluations = max(result.diagnostics.evaluations_per_sample().values())
        samples[name] = result.samples
        rows.append({"sampler": name, "ll": log_likelihood(result.samples),
                     "w2": wasserstein2(result.samples, reference),
                     "acceptance": result.diagnostics.mean_acceptance(),  # NaN: none
                     "evaluations": evaluations, "seconds": seconds})
    if out:
        os.makedirs(out, exist_ok=True)
        _scatter(samples, reference, os.path.join(out, "product2d_demo.png"))
    return rows


def format_table(rows: List[dict]) -> str:
    """A plain-text table of the demo's rows."""
    lines = [f"{'sampler':<13}{'LL ↑':>8}{'W2 ↓':>9}{'accept':>8}{'evals/sample':>14}{'seconds':>9}",
             "-" * 61]
    for r in rows:
        acc = format_acceptance(r["acceptance"], 2)
        lines.append(f"{r['sampler']:<13}{r['ll']:>8.3f}{r['w2']:>9.4f}{acc:>8}{r['evaluations']:>14.0f}"
                     f"{r['seconds']:>9.1f}")
    return "\n".join(lines)


def _scatter(samples, reference, path):
    panels = [("exact product", reference)] + [(k, v.detach().cpu().numpy()) for k, v in samples.items()]
    bar = (tuple(geometry.BAR_LOW), tuple(geometry.BAR_HIGH))
    scatter_row(panels, path, limit=1.0, box=bar)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="compose demo", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=2000, help="chains (default 2000, as in the paper)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="demo-output", help="folder for the scatter plot")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: only when stderr is a terminal)")


def run_from_args(args) -> int:
    torch.set_num_threads(1)          # small batches: intra-op threads only add overhead here
    start = time.perf_counter()
    rows = run(args.samples, args.seed, args.out, progress=args.progress)
    print("2D product composition: ring of 8 Gaussians × uniform bar (analytic components, "
          "score-only view; T = 100, K = 10)")
    print(format_table(rows))
    print(f"LL: mean log-density under the exact target (higher is better); W2 against "
          f"{args.samples} exact samples (lower is better).")
    if args.out:
        print(f"scatter plot: {os.path.join(args.out, 'product2d_demo.png')}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
