"""What a finished run leaves in its directory, merged from its blocks in block order.

    samples.pt         the samples, one tensor (N, *event_shape) in block order (`torch.load` it),
                       raw: never clipped
    images.pt          for image models, the images (N, C, H, W) in [0, 1]: decoded by the
                       component that decodes (a latent model's VAE), or pixels in [−1, 1]
                       mapped to [0, 1]; clipped to [0, 1], the clipped values counted in
                       diagnostics.json ("images")
    images.png         a grid of the first images, the composition as its title
    diagnostics.json   per level, over all chains: acceptance, mean |Δ|, divergences,
                       evaluations per sample, step size; and the same for every block;
                       in an SMC run also the ESS per level and log Ẑ per block and pooled
    plan.txt / .json   the sampler plan: network evaluations per step, level and sample
    samples.png        a scatter for 2-D samples
    run.json           the settings and their hash (written when the run starts)
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import images as _images
from . import checkpoint


def merge_diagnostics(blocks: Sequence[dict], sampler: str, samples: int) -> dict:
    """Per-level diagnostics over all chains, and every block's own (`blocks`: the block
    payloads in block order, their samples not needed).

    Each block's figures are per chain of the block, so the run's are their averages weighted
    by the blocks' numbers of chains (divergences and seconds add up). The run's mean |Δ| is
    weighted by chains too, which equals the mean over all finite Δ's when every Δ is finite.
    """
    weights = [(b["rows"][1] - b["rows"][0]) / samples for b in blocks]
    levels = []
    for i, first in enumerate(blocks[0]["diagnostics"]):
        rows = [b["diagnostics"][i] for b in blocks]
        evaluations: Dict[str, float] = {}
        for w, row in zip(weights, rows):
            for label, count in row["evaluations"].items():
                evaluations[label] = evaluations.get(label, 0.0) + w * count
        levels.append({
            "level": first["level"], "steps": first["steps"],
            "step_size": _weighted(weights, [r["step_size"] for r in rows]),
            "acceptance": _weighted(weights, [r["acceptance"] for r in rows]),
            "mean_abs_log_ratio": _weighted(weights, [r["mean_abs_log_ratio"] for r in rows]),
            "divergences": sum(int(r["divergences"]) for r in rows),
            "evaluations": evaluations,
            "seconds": sum(r["seconds"] for r in rows)})
        if first.get("smc") is not None:
            sizes = [b["rows"][1] - b["rows"][0] for b in blocks]
            levels[-1]["smc"] = {
                "ess_fraction": _weighted(weights, [r["smc"]["ess"] / n for r, n in zip(rows, sizes)]),
                "resampled_blocks": sum(bool(r["smc"]["resampled"]) for r in rows),
                "ancestors_fraction": _weighted(weights, [r["smc"]["ancestors"] / n
                                                          for r, n in zip(rows, sizes)])}
            if first["smc"].get("final_ess") is not None:     # level 1: before the final resampling
                levels[-1]["smc"]["final_ess_fraction"] = _weighted(
                    weights, [r["smc"]["final_ess"] / n for r, n in zip(rows, sizes)])
    out = {"sampler": sampler, "num_samples": samples, "levels": levels,
           "blocks": [{"block": b["block"], "rows": list(b["rows"]), "levels": b["diagnostics"]}
                      for b in blocks]}
    if blocks[0]["diagnostics"] and blocks[0]["diagnostics"][0].get("smc") is not None:
        # each block is its own particle system: its own estimate of log Ẑ
        for entry, b in zip(out["blocks"], blocks):
            entry["log_normaliser"] = math.fsum(d["smc"]["log_normaliser_increment"]
                                                for d in b["diagnostics"])
        estimates = [entry["log_normaliser"] for entry in out["blocks"]]
        out["smc"] = {"log_normaliser_per_block": estimates,
                      "log_normaliser_mean": sum(estimates) / len(estimates),
                      "log_normaliser_pooled": pooled_log_normaliser(estimates, weights)}
    return out


def pooled_log_normaliser(estimates: Sequence[float], fractions: Sequence[float]) -> float:
    """log Σ_b (n_b / N) Ẑ_b: the blocks' estimates of Z averaged with their shares of the
    particles. Each Ẑ_b is unbiased for Z, so their average is too (log Ẑ_b is not: it is
    biased low, which is why the mean of the log Ẑ_b sits below the pooled estimate)."""
    terms = [math.log(f) + e for f, e in zip(fractions, estimates)]
    top = max(terms)
    if not math.isfinite(top):
        return top
    return top + math.log(math.fsum(math.exp(t - top) for t in terms))


def _weighted(weights: List[float], values: List[float]) -> float:
    pairs = [(w, v) for w, v in zip(weights, values) if v is not None and not math.isnan(v)]
    total = sum(w for w, _ in pairs)
    return sum(w * v for w, v in pairs) / total if total else math.nan


def write_json(path: Path, value) -> None:
    """JSON with NaN written as null (NaN is not JSON), atomically."""
    text = json.dumps(_no_nan(value), indent=1, ensure_ascii=False) + "\n"
    checkpoint.write_atomic(path, text.encode())


def _no_nan(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def write_tensor(path: Path, tensor: torch.Tensor) -> None:
    """`torch.save(tensor)` written atomically."""
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    checkpoint.write_atomic(path, buffer.getvalue())


def images_of(target, samples: torch.Tensor):
    """(`Images` (N, C, H, W) in [0, 1], or None; a note for the user, or None).

    Through the component of `target` that decodes (a latent model's VAE); without one,
    image-shaped samples ((H, W) or (1|3, H, W)) are taken as pixels in [−1, 1]. A component
    that refuses to decode (latents without their VAE) gives no images and its message.
    """
    try:
        component = _images.decoder_of(target)
    except ValueError:
        component = None
    if component is not None:
        try:
            return _images.decode(component, samples), None
        except ValueError as error:
            return None, f"no images written: {error}"
    x = samples[:, None] if samples.dim() == 3 else samples
    if x.dim() == 4 and x.shape[1] in (1, 3):
        return _images.postprocess(_images.to_unit(x), decoder="pixels in [-1, 1]"), None
    return None, None


def images_record(images) -> dict:
    """What diagnostics.json says about the images: shape, decoder, clipped values."""
    return {"shape": list(images.images.shape[1:]), "decoder": images.decoder,
            "clipped": images.clipped, "values": images.values,
            "fraction_clipped": images.fraction_clipped}


def picture(samples: torch.Tensor, path: Path, title: str, limit: Optional[float] = None,
            most: int = 64, images=None) -> Optional[Path]:
    """A scatter of 2-D samples, or a grid of the first `most` images (`images`, or image-shaped
    samples ((H, W), (1|3, H, W)) taken as pixels in [−1, 1]); None for any other shape."""
    if images is None and tuple(samples.shape[1:]) != (2,):
        images, _ = images_of(None, samples) if samples.dim() in (3, 4) else (None, None)
        if images is None:
            return None
    if images is not None:
        picture = _images.grid(images.images[:most], title=title)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        checkpoint.write_atomic(Path(path), buffer.getvalue())
        return Path(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = samples.detach().cpu().double()
    finite = x[torch.isfinite(x).all(1)].numpy()
    fig = Figure(figsize=(4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(finite[:, 0], finite[:, 1], s=2, alpha=0.5, lw=0)
    span = limit or (float(np.abs(finite).max()) * 1.05 if finite.size else 1.0)
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


#: Samplers without an accept/reject step, by the name diagnostics record.
UNADJUSTED = ("ULA", "U-HMC", "Reverse")


def summary(diagnostics: dict, rows: int = 10) -> str:
    """The run at a glance, as a table of levels (level T first): steps, step size, acceptance
    (mean weighted by steps, and the lowest level's), divergences, network evaluations per
    sample and seconds; a last row for the whole run.

    With more than `rows` levels, consecutive levels are binned into `rows` rows. An unadjusted
    sampler (ULA, U-HMC, the reverse process: no accept/reject) has no acceptance: "—".
    """
    levels = diagnostics.get("levels") or []
    if not levels:
        return "no levels were sampled"
    sampler = str(diagnostics.get("sampler", "?"))
    if sampler.split(" ")[0] in UNADJUSTED:
        levels = [dict(d, acceptance=None) for d in levels]
    size = max(1, math.ceil(len(levels) / max(1, int(rows))))
    groups = [levels[i:i + size] for i in range(0, len(levels), size)]
    header = ("levels", "steps", "step size", "acceptance", "lowest", "divergences",
              "evals/sample", "seconds")
    table = [header] + [_summary_row(group, _level_span(group)) for group in groups]
    if len(groups) > 1:
        table.append(_summary_row(levels, f"all {len(levels)}"))
    widths = [max(len(row[j]) for row in table) for j in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if j else cell.ljust(w) for j, (cell, w) in
                       enumerate(zip(row, widths))) for row in table]
    binned = f", {size} levels a row" if size > 1 else ""
    title = (f"{sampler}: {diagnostics.get('num_samples', '?')} chains, "
             f"{len(levels)} levels (level {levels[0]['level']} first{binned})")
    out = [title] + ["  " + line for line in lines]
    smc = diagnostics.get("smc")
    if smc:
        estimates = smc["log_normaliser_per_block"]
        ess = [d["smc"]["ess_fraction"] for d in levels if d.get("smc")]
        resampled = sum(d["smc"]["resampled_blocks"] for d in levels if d.get("smc"))
        count = f"{len(estimates)} block{'s' if len(estimates) != 1 else ''}"
        if len(estimates) == 1:
            shown = f"log Ẑ {estimates[0]:.4g} (one block)"
        else:
            pooled = smc.get("log_normaliser_pooled")
            shown = (f"log Ẑ per block {min(estimates):.4g} to {max(estimates):.4g}, mean "
                     f"{smc['log_normaliser_mean']:.4g} over {count}"
                     + (f", pooled log Σ (n_b/N) Ẑ_b {pooled:.4g}" if pooled is not None else ""))
        out.append(f"  SMC, one particle system per block: {shown}; smallest ESS {min(ess):.1%} "
                   f"of a block; {resampled} resamplings in all")
    return "\n".join(out)


def _level_span(group: List[dict]) -> str:
    first, last = group[0]["level"], group[-1]["level"]
    return str(first) if first == last else f"{first}–{last}"


def _number(value) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def _summary_row(group: List[dict], label: str) -> tuple:
    steps = sum(int(d["steps"]) for d in group)
    rated = [(int(d["steps"]), _number(d["acceptance"])) for d in group if int(d["steps"]) > 0]
    rated = [(k, a) for k, a in rated if a is not None]
    moves = sum(k for k, _ in rated)
    acceptance = f"{sum(k * a for k, a in rated) / moves:.3f}" if moves else "—"
    lowest = f"{min(a for _, a in rated):.3f}" if rated else "—"
    sizes = [_number(d.get("step_size")) for d in group]
    sizes = [s for s in sizes if s is not None]
    size = (f"{sizes[0]:.3g}" if len(set(sizes)) == 1 else
            f"{min(sizes):.2g}–{max(sizes):.2g}") if sizes else "—"
    evaluations = sum(sum(d["evaluations"].values()) for d in group)
    return (label, str(steps), size, acceptance, lowest,
            str(sum(int(d["divergences"]) for d in group)), f"{evaluations:,.0f}",
            f"{sum(d['seconds'] for d in group):.2f}")
