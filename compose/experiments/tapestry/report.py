"""Summaries over seeds, results.md, and the figure of canvases per sampler."""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np
import torch

from compose.experiments.reporting import format_mean_std, mean_std, smoke_test_lines
from compose.models.data import NUM_CLASSES

from .canvas import canvas_shape, window_starts
from .settings import Settings


def summarise(results: dict) -> Dict[str, dict]:
    """{sampler: {"windows": {"3 7 / 3": accuracy (mean, std), ...}, "accuracy": the mean over
    windows (mean, std over seeds), "frechet", "acceptance", "seconds" (all canvases of a seed),
    "evaluations" (per canvas, mean over canvases and seeds), "divergences", "step"}}."""
    names = list(dict.fromkeys(r["sampler"] for r in results["runs"]))
    out: Dict[str, dict] = {}
    for name in names:
        runs = [r for r in results["runs"] if r["sampler"] == name]
        windows: Dict[str, List[float]] = {}
        per_seed, fds, seconds, acceptance = [], [], [], []
        for s in sorted({r["seed"] for r in runs}):
            rows = [r for r in runs if r["seed"] == s]
            values = []
            for r in rows:
                for digit, a in zip(r["canvas"].split(), r["accuracy"]):
                    windows.setdefault(f"{r['canvas']} / {digit}", []).append(a)
                    values.append(a)
            per_seed.append(float(np.mean(values)))
            fds.append(rows[0]["frechet"])
            seconds.append(sum(r["seconds"] for r in rows))
            acceptance.append(float(np.mean([r["acceptance"] for r in rows])))
        out[name] = {"seeds": len(per_seed),
                     "windows": {k: mean_std(v) for k, v in windows.items()},
                     "accuracy": mean_std(per_seed), "frechet": mean_std(fds),
                     "acceptance": mean_std(acceptance), "seconds": mean_std(seconds),
                     "evaluations": float(np.mean([r["evaluations"] for r in runs])),
                     "divergences": int(sum(r["divergences"] for r in runs)),
                     "step": runs[0]["step"]}
    return out


def _settings(results: dict) -> Settings:
    def back(value):
        return tuple(back(v) for v in value) if isinstance(value, list) else value
    return Settings(**{k: back(v) for k, v in results["settings"].items()})


def results_markdown(results: dict) -> str:
    """The report: setup, the per-window table, the scale search, step sizes and cost."""
    s = _settings(results)
    summary = results.get("summary") or summarise(results)
    env, ref = results["environment"], results["reference"]
    windows = list(next(iter(summary.values()))["windows"]) if summary else []
    canvases = ", ".join(f"\"{' '.join(map(str, row))}\" (1×8×"
                         f"{canvas_shape(len(row), s.overlap)[-1]})" for row in s.canvases)
    lines = ["# The image tapestry on the 8×8 digits", ""] + smoke_test_lines(results)
    if results.get("command"):
        lines += ["Command:", "", "```", results["command"], "```", ""]
    lines += [
        f"Composition of a canvas: Π_i (u(class=d_i) ** w / u(class=∅) ** (w − 1))"
        f"[:, :, s_i:s_i+8] with w = {results['scale']:g} (docs/windows.md); canvases {canvases}; "
        f"8-column windows overlapping by {s.overlap}. Model: a diffusers UNet2DModel "
        f"({results['model']['parameters']} parameters, channels {list(s.channels)}, "
        f"{NUM_CLASSES} + 1 class embeddings, the last the null class ∅) trained for "
        f"{s.train_steps} steps with each label dropped to ∅ with probability "
        f"{s.null_probability}, saved with save_pretrained and loaded through the diffusers "
        f"adapter. Cosine schedule, T = {s.T}. {s.chains} chains per canvas, "
        f"{results['seeds']} sampling seed(s), the same generator seed for every sampler. Every "
        f"sampler takes the reverse step after its MCMC steps at each level. U-LA and LA: "
        f"K = {s.steps_per_level} steps per level, LA's Δ on the line with {s.la_points} interior "
        f"points; HMC-curve: {s.hmc_steps_per_level} HMC step(s) of L = {s.num_leapfrog} leapfrog "
        f"steps per level (damping {s.damping}), Δ along the leapfrog path with no extra points "
        f"({s.hmc_steps_per_level * s.num_leapfrog} evaluations per level, as U-LA's "
        f"{s.steps_per_level}).", "",
        f"Metrics: per window, accuracy = fraction of its 8×8 crops (clipped to [−1, 1]) to which "
        f"the evaluation classifier (the digits experiment's; held-out accuracy "
        f"{results['eval_classifier'].get('heldout_accuracy', math.nan):.3f}) gives the "
        f"requested digit probability ≥ 0.5. FD = Fréchet distance between its penultimate "
        f"features of all crops of a run and of the {ref['heldout_images']} held-out images of "
        f"the requested digits; {ref['floor_count']} training images of the same digits score "
        f"{ref['floor_frechet']:.2f} (the floor at this sample size). Mean ± std over seeds. "
        f"Evaluations: UNet evaluations on 8×8 crops per canvas (each window's conditional and "
        f"null-class factor count once each; all of them go through one stacked UNet call per "
        f"evaluation of the composition).", "",
        "| sampler | " + " | ".join(f"acc. {w}" for w in windows)
        + " | mean accuracy | FD | acceptance | step a, b | evaluations / canvas | seconds / seed |",
        "|---" * (len(windows) + 7) + "|"]
    for name, e in summary.items():
        step = "—" if e["step"] is None else f"{e['step'][0]:.3g}, {e['step'][1]:g}"
        lines.append(f"| {name} | " + " | ".join(format_mean_std(e["windows"][w], 2) for w in windows)
                     + f" | {format_mean_std(e['accuracy'], 3)} | {format_mean_std(e['frechet'], 2)}"
                     f" | {format_mean_std(e['acceptance'], 2)} | {step} | {e['evaluations']:.0f} | "
                     f"{format_mean_std(e['seconds'], 0)} |")
    lines.append("")
    if results.get("scale_search"):
        lines += ["## Guidance scale", "",
                  f"The reverse process on every canvas with {s.search_chains} chains each, at "
                  "each scale; chosen: the best mean per-window accuracy, ties within 0.02 going "
                  "to the lower FD.", "", "| w | mean accuracy | FD |", "|---|---|---|"]
        lines += [f"| {r['scale']:g} | {r['accuracy']:.3f} | {r['frechet']:.2f} |"
                  for r in results["scale_search"]]
        lines.append("")
    lines += ["## Step sizes", "",
              f"`compose.tuning.tune_step_size` on the first canvas with {s.tune_chains} chains, "
              f"{s.tune_steps_per_level} MCMC step(s) per level, b from {list(s.tune_b_mala)} (LA) "
              f"and {list(s.tune_b_hmc)} (HMC); U-LA uses LA's step.", "",
              "| family | a | b | acceptance | in band |", "|---|---|---|---|---|"]
    for family, r in results.get("tuning", {}).items():
        lines.append(f"| {family.upper()} | {r['a']:.4g} | {r['b']:g} | {r['acceptance']:.3f} | "
                     f"{'yes' if r['converged'] else '**no**'} |")
    model = results["model"]
    lines += ["", "## Cost", "",
              f"{env['machine']}, {env['cpus']} CPUs shared with other jobs (timings are noisy), "
              f"torch {env['torch']}, {results['threads']} thread(s). UNet "
              f"{'reused' if model['reused'] else 'trained'} ({model['seconds']:.0f} s of "
              f"training); models including the evaluation classifier "
              f"{results.get('seconds_models', math.nan):.0f} s, scale search "
              f"{results.get('seconds_scale_search', math.nan):.0f} s, step sizes "
              f"{results.get('seconds_tuning', math.nan):.0f} s, sampling "
              f"{results.get('seconds_sampling', math.nan):.0f} s; total "
              f"{results.get('seconds_total', math.nan):.0f} s.", "",
              "Figure: canvases.png (first seed; one row per sampler, the first canvases of each "
              "kind; red lines bound the overlaps of neighbouring windows).", ""]
    return "\n".join(lines)


def canvas_figure(first_seed: Dict[str, Dict[str, torch.Tensor]], settings: Settings, path: str,
                  scale: float, per_canvas: int = 4) -> str:
    """Rows of canvases per sampler: for each canvas kind its first `per_canvas` samples, the
    overlaps between red lines. Returns `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(first_seed)
    kinds = [" ".join(map(str, row)) for row in settings.canvases]
    columns = [(kind, i) for kind in kinds for i in range(per_canvas)]
    widths = [canvas_shape(len(k.split()), settings.overlap)[-1] for k, _ in columns]
    fig = Figure(figsize=(sum(widths) / 8 * 0.85 + 1.3, 0.95 * len(names) + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), len(columns), squeeze=False,
                        gridspec_kw={"width_ratios": widths})
    for r, name in enumerate(names):
        for c, (kind, i) in enumerate(columns):
            ax = axes[r, c]
            images = first_seed[name][kind]
            if i < images.shape[0]:
                ax.imshow(images[i, 0].numpy(), cmap="gray", vmin=-1, vmax=1,
                          interpolation="nearest")
                for start in window_starts(len(kind.split()), settings.overlap)[1:]:
                    ax.axvline(start - 0.5, color="red", lw=0.6)
                    ax.axvline(start + settings.overlap - 0.5, color="red", lw=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and i == 0:
                ax.set_title(f"\"{kind}\"", fontsize=8, loc="left")
            if c == 0:
                ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"tapestries of 8×8 windows, guidance w = {scale:g}", fontsize=9)
    fig.subplots_adjust(left=0.09, right=0.995, top=0.88, bottom=0.02, wspace=0.08, hspace=0.1)
    fig.savefig(path, dpi=110)
    return path
