"""The 2D product report: summaries over trials, results.md, and Figure 1."""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import torch

from compose.experiments.reporting import (format_acceptance, format_mean_std, mean_std, scatter_row,
                                           seed_from, smoke_test_lines)
from compose.schedule import Schedule

from .samplers import PUBLISHED_EVALUATIONS
from .settings import PARAMETERISATIONS, Settings
from .target import analytic_components


# -- summaries ------------------------------------------------------------------------------
METRIC_KEYS = ("ll", "ll_paper", "w2", "w2_paper", "gmm")


def summarise(results: dict) -> Dict[str, Dict[str, dict]]:
    """Per block and sampler row: mean and std over trials of each metric, the acceptance, the
    evaluations per sample (max over components, and per component), the needed count and the
    wall time. Returns {block: {row: {...}}}."""
    out: Dict[str, Dict[str, dict]] = {}
    for run in results["runs"]:
        out.setdefault(run["block"], {}).setdefault(run["sampler"], []).append(run)
    summary = {}
    for block, rows in out.items():
        summary[block] = {}
        for row, runs in rows.items():
            entry = {"trials": len(runs)}
            for key in METRIC_KEYS:
                entry[key] = mean_std([r["metrics"][key] for r in runs])
            entry["acceptance"] = float(np.mean([r["acceptance"] for r in runs]))
            entry["divergences"] = int(sum(r["divergences"] for r in runs))
            entry["evaluations"] = float(np.mean([r["evaluations"] for r in runs]))
            per = {}
            for r in runs:
                for label, count in r["evaluations_per_component"].items():
                    per.setdefault(label, []).append(count)
            entry["evaluations_per_component"] = {k: float(np.mean(v)) for k, v in per.items()}
            entry["needed"] = runs[0]["needed"]
            entry["seconds"] = mean_std([r["seconds"] for r in runs])
            summary[block][row] = entry
    return summary


BLOCK_TITLES = {
    "oracle": "Oracle: exact scores of the analytic components, Δ integrated (score-only view)",
    "score": "Score models (trained ε-networks), Δ integrated on the line or the curve",
    "energy": "Energy models (trained), exact Δ (line/curve variants coincide)",
}


def results_markdown(results: dict) -> str:
    """The markdown report: configuration, one table per block, the evaluation counts against
    the published code's, the paper's claims checked on these numbers, and training times."""
    s = Settings(**results["settings"])
    summary = results.get("summary") or summarise(results)
    lines = ["# 2D product composition (Table 1)", ""] + smoke_test_lines(results)
    if results.get("command"):
        lines += ["Command:", "", "```", results["command"], "```", ""]
    env = results["environment"]
    lines += [f"Trials: {results['trials']} (seed {results['seed']}); {s.num_samples} samples per "
              f"sampler; cosine schedule, T = {s.T}; K = {s.steps_per_level} MCMC steps per level, no "
              f"reverse step for MCMC samplers; η = {s.la_step} (LA); ε = {s.hmc_step}, "
              f"L = {s.num_leapfrog}, damping {s.damping}, mass {s.mass} (HMC), momentum "
              f"{'negated' if s.negate_on_reject else 'kept (+v′, as the published code)'} on "
              f"rejection. Reverse: T ancestral steps, small variance.",
              "",
              (f"Models: ResidualMLP(hidden {s.hidden}, inner {s.inner}, embed {s.embed}, "
               f"{s.blocks} blocks), {s.train_steps} Adam steps at lr {s.lr}, batch "
               f"{s.batch_size}, EMA decay {s.ema_decay}; new models for every trial."
               if set(results["blocks"]) & set(PARAMETERISATIONS) else
               "Models: none (oracle block only; trials differ only in their random seeds)."),
              "",
              f"Machine: {env['machine']}, {env['cpus']} CPUs, torch {env['torch']} on "
              f"{results['device']} with {results['threads']} thread(s); started "
              f"{results['started']}, finished {results.get('finished', '(unfinished)')}.",
              "",
              "LL: mean log-density under the product with 1% of the bar's mass moved outside "
              "(higher is better); paper scale = true − 6.1916. W2: exact assignment against as "
              "many exact product samples (lower is better); paper scale = W2 · √(N/2). GMM: "
              "covariance distance of 2-component diagonal mixtures, components matched by their "
              "means. Mean ± std (ddof 1) over trials. Acceptance: mean over levels (— for Reverse and "
              "unadjusted samplers, which reject nothing). Evaluations: "
              "of each component per sample, measured by the sampler's counters.", ""]
    for block in results["blocks"]:
        rows = summary.get(block, {})
        if not rows:
            continue
        lines += [f"## {BLOCK_TITLES[block]}", "",
                  "| sampler | LL (true) | LL (paper scale) | W2 (true) | W2 (paper scale) | GMM "
                  "| acceptance | evaluations / sample | wall time (s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row, e in rows.items():
            acc = format_acceptance(e["acceptance"])
            lines.append(f"| {row} | {format_mean_std(e['ll'], 3)} | {format_mean_std(e['ll_paper'], 3)} | "
                         f"{format_mean_std(e['w2'], 4)} | {format_mean_std(e['w2_paper'], 2)} | {format_mean_std(e['gmm'], 4)} | "
                         f"{acc} | {e['evaluations']:.0f} | {format_mean_std(e['seconds'], 1)} |")
        lines.append("")
    lines += _evaluation_table(results, summary, s)
    lines += _claims(summary)
    if results["training"]:
        lines += ["## Training", "", "| trial | component | parameterisation | reused | seconds "
                  "| loss (last 100 steps) |", "|---|---|---|---|---|---|"]
        for t in results["training"]:
            lines.append(f"| {t['trial']} | {t['component']} | {t['parameterisation']} | "
                         f"{'yes' if t['reused'] else 'no'} | {t['seconds']:.1f} | "
                         f"{t['final_loss']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def _evaluation_table(results: dict, summary: dict, s: Settings) -> List[str]:
    block = next((b for b in ("score", "oracle") if b in summary), None)
    if block is None:
        return []
    paper = s.is_paper_sampling()
    lines = ["## Evaluations per sample against the published code", "",
             f"Measured in the {block} block: evaluations of each component (each network) per "
             "sample. Published counts are for T = 100, K = 10, L = 3 (docs/experiments.md)"
             + ("." if paper else f"; this run uses T = {s.T}, K = {s.steps_per_level}, "
                f"L = {s.num_leapfrog}, so no ratio is given."),
             "Our counts include one evaluation per level at the chains' starting point (the "
             "score there belongs to the previous level), which the \"needed\" column of "
             "docs/experiments.md leaves out.", "",
             "| sampler | ours (measured) | ours (needed, docs/sampler.md §4) | published code "
             "| needed (docs/experiments.md) | ours / published | mean wall time (s) |",
             "|---|---|---|---|---|---|---|"]
    for row, e in summary[block].items():
        published, needed = PUBLISHED_EVALUATIONS.get(row, (None, None))
        ratio = f"{e['evaluations'] / published:.0%}" if paper and published else "—"
        lines.append(f"| {row} | {e['evaluations']:.0f} | {e['needed']} | "
                     f"{published if published else '—'} | {needed if needed else '—'} | {ratio} | "
                     f"{format_mean_std(e['seconds'], 1)} |")
    if "energy" in summary:
        lines += ["", "Energy block (each evaluation is one forward and one backward pass, which "
                  "give the energy and the score together; the published code adds 2 energy "
                  "forwards per MCMC step): "
                  + ", ".join(f"{row} {e['evaluations']:.0f}" for row, e in summary["energy"].items())
                  + "."]
    lines.append("")
    return lines


def _better(a: dict, b: dict, key: str) -> Optional[bool]:
    x, y = a[key][0], b[key][0]
    if math.isnan(x) or math.isnan(y):
        return None
    return x > y if key == "ll" else x < y


def _yes(flag: Optional[bool]) -> str:
    return "n/a" if flag is None else ("yes" if flag else "**no**")


def _difference(a: float, b: float, digits: int) -> str:
    d = a - b
    return f"{d:+.{digits}f}" if math.isfinite(d) else "n/a"


def _claims(summary: dict) -> List[str]:
    """The paper's claims, checked on the means of this run."""
    lines = ["## The paper's claims on these numbers", "",
             "| block | sampler | LL better than its unadjusted version | W2 better than its "
             "unadjusted version | LL better than Reverse | W2 better than Reverse |",
             "|---|---|---|---|---|---|"]
    any_row = False
    for block, rows in summary.items():
        for row, e in rows.items():
            base = "U-LA" if row.startswith("LA") else "U-HMC" if row.startswith("HMC") else None
            if base is None:
                continue
            u, r = rows.get(base), rows.get("Reverse")
            cells = [_yes(_better(e, u, k)) if u else "n/a" for k in ("ll", "w2")]
            cells += [_yes(_better(e, r, k)) if r else "n/a" for k in ("ll", "w2")]
            lines.append(f"| {block} | {row} | " + " | ".join(cells) + " |")
            any_row = True
    if not any_row:
        return []
    lines.append("")
    if "score" in summary and "energy" in summary:
        lines += ["Score rows against the energy rows (difference of means, score − energy):", "",
                  "| score row | energy row | ΔLL | ΔW2 |", "|---|---|---|---|"]
        for row, e in summary["score"].items():
            other = "LA" if row.startswith("LA") else "HMC" if row.startswith("HMC") else row
            if other in summary["energy"]:
                o = summary["energy"][other]
                lines.append(f"| {row} | {other} | {_difference(e['ll'][0], o['ll'][0], 3)} | "
                             f"{_difference(e['w2'][0], o['w2'][0], 4)} |")
        lines.append("")
    return lines


# -- the figure -----------------------------------------------------------------------------
def figure1(saved: Dict[str, np.ndarray], path: str, schedule: Schedule, seed: int = 0) -> str:
    """A figure like the paper's Figure 1: the ring, the bar, the product (exact samples), the
    reverse process's samples and HMC's samples (score block if run, else energy, else oracle).
    `saved` maps "block/row" to samples and "reference" to exact samples; returns `path`."""
    gen = torch.Generator().manual_seed(seed_from(seed, 1234))
    ring, bar = analytic_components(schedule)
    n = len(saved["reference"])
    panels = [("Ring (component 1)", ring.sample(n, gen).numpy()),
              ("Bar (component 2)", bar.sample(n, gen).numpy()),
              ("Product (exact samples)", saved["reference"])]
    block = next((b for b in ("score", "energy", "oracle") if f"{b}/Reverse" in saved
                  or any(k.startswith(b + "/HMC") for k in saved)), None)
    if block is not None:
        if f"{block}/Reverse" in saved:
            panels.append((f"Reverse ({block})", saved[f"{block}/Reverse"]))
        for row in ("HMC-curve", "HMC", "HMC-3-line", "HMC-1-line", "HMC-8-line", "U-HMC"):
            if f"{block}/{row}" in saved:
                panels.append((f"{row} ({block})", saved[f"{block}/{row}"]))
                break
    return scatter_row(panels, path, limit=1.1, size=3.2, dpi=110)
