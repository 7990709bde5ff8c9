"""The digits report: summaries over seeds and results.md."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from compose.experiments.reporting import format_mean_std, mean_std, smoke_test_lines
from compose.models.data import NUM_CLASSES

from .models import accuracy_text
from .settings import PARAMETERISATIONS, Settings


# -- summaries and report -------------------------------------------------------------------


def summarise(results: dict) -> Dict[str, Dict[str, dict]]:
    """{parameterisation: {sampler: mean ± std over seeds of accuracy, frechet, acceptance,
    seconds; mean evaluations per sample of the model and the classifier}}."""
    grouped: Dict[str, Dict[str, List[dict]]] = {}
    for run in results["runs"]:
        grouped.setdefault(run["parameterisation"], {}).setdefault(run["sampler"], []).append(run)
    summary = {}
    for param, rows in grouped.items():
        summary[param] = {}
        for name, runs in rows.items():
            summary[param][name] = {
                "seeds": len(runs),
                **{k: mean_std([r[k] for r in runs])
                   for k in ("accuracy", "frechet", "acceptance", "seconds")},
                "evaluations": float(np.mean([r["evaluations"] for r in runs])),
                "classifier_evaluations": float(np.mean([r["classifier_evaluations"]
                                                         for r in runs])),
                "divergences": int(sum(r["divergences"] for r in runs)),
                "step": runs[0]["step"]}
    return summary


def results_markdown(results: dict) -> str:
    """The report: settings, training (times, held-out accuracies), step-size search, one table
    per parameterisation, and the comparison with Reverse."""
    s = Settings(**{k: tuple(v) if isinstance(v, list) else v
                    for k, v in results["settings"].items()})
    summary = results.get("summary") or summarise(results)
    ref = results.get("reference", {})
    env = results["environment"]
    n_gen = s.samples_per_class * NUM_CLASSES
    lines = ["# Guided diffusion on the 8×8 digits (docs/experiments.md, section 2)", ""] \
        + smoke_test_lines(results)
    if results.get("command"):
        lines += ["Command:", "", "```", results["command"], "```", ""]
    lines += [
        f"Composition: `model | class=k @ λ` with λ = {results['scale']:g} for every class k and "
        f"every sampler; {s.samples_per_class} samples per class ({n_gen} per run), "
        f"{results['seeds']} sampling seed(s), models trained once (seed {results['seed']}). "
        f"Cosine schedule, T = {s.T}; every sampler takes the reverse step after the MCMC steps "
        f"at each level; K = {s.steps_per_level} MCMC steps per level; HMC: L = "
        f"{s.num_leapfrog}, damping {s.damping}, mass {s.mass}, momentum negated on rejection; "
        f"LA-8-line: Δ of the score model on the line with {s.la_points} interior points; "
        f"HMC-3-curve: Δ along the leapfrog path with {s.curve_points} extra point (the "
        f"midpoint) per segment. For the energy model Δ is exact and these rows need no extra "
        f"points. Samples are clipped to [−1, 1] before scoring.", "",
        f"Data: scikit-learn's digits scaled to [−1, 1], stratified split (seed "
        f"{s.split_seed}): {results.get('data', {}).get('train', '?')} training, "
        f"{results.get('data', {}).get('heldout', '?')} held-out images.", "",
        f"Metrics: accuracy = fraction of samples to which the evaluation classifier gives the "
        f"requested class probability ≥ 0.5; FD = Fréchet distance (squared, as FID) between "
        f"Gaussian fits of the evaluation classifier's penultimate-layer features "
        f"({s.eval_features} dimensions) of the {n_gen} generated images and of the "
        f"{results.get('data', {}).get('heldout', '?')} held-out images. Mean ± std (ddof 1) "
        f"over seeds. Acceptance: mean over levels (— for Reverse and unadjusted "
        f"samplers, which reject nothing). Evaluations: of the diffusion model per sample (each energy evaluation "
        f"is one forward and one backward pass); the classifier's in parentheses.", "",
        f"Machine: {env['machine']}, {env['cpus']} CPUs (shared), torch {env['torch']} on "
        f"{results['device']} with {results['threads']} thread(s); started "
        f"{results['started']}, finished {results.get('finished', '(unfinished)')}.", ""]
    if ref:
        lines += [f"Reference: {ref['count']} training images (balanced classes) against the "
                  f"held-out set: accuracy {ref['train_accuracy']:.3f}, FD "
                  f"{ref['train_frechet']:.3f} (the floor of FD at this sample count). "
                  f"Evaluation classifier on the held-out images: accuracy (p ≥ 0.5) "
                  f"{ref['heldout_accuracy']:.4f}, top-1 {ref['heldout_top1']:.4f}.", ""]
    for param in PARAMETERISATIONS:
        rows = summary.get(param)
        if not rows:
            continue
        lines += [f"## {param.capitalize()} model", "",
                  "| sampler | accuracy | FD | acceptance | step a, b | evaluations / sample "
                  "(classifier) | wall time (s) |", "|---|---|---|---|---|---|---|"]
        for name, e in rows.items():
            step = "—" if e["step"] is None else f"{e['step'][0]:.4g}, {e['step'][1]:g}"
            lines.append(f"| {name} | {format_mean_std(e['accuracy'], 3)} | {format_mean_std(e['frechet'], 3)} | "
                         f"{format_mean_std(e['acceptance'], 3)} | {step} | {e['evaluations']:.0f} "
                         f"({e['classifier_evaluations']:.0f}) | {format_mean_std(e['seconds'], 1)} |")
        lines.append("")
    lines += _claims(summary)
    lines += ["## Step-size search", "",
              f"`compose.tuning.tune_step_size` on the guided target with "
              f"{max(1, s.tune_chains // NUM_CLASSES) * NUM_CLASSES} chains (all classes), "
              f"{s.tune_steps_per_level} MCMC step(s) per level, b from {list(s.tune_b_mala)} "
              f"(LA) and {list(s.tune_b_hmc)} (HMC), at most {s.tune_trials} runs per b, a "
              f"found by bisection on log a, then the b whose per-level acceptances stray least "
              f"from the band; bands MALA [0.55, 0.85], HMC [0.6, 0.9]. U-LA and U-HMC use the "
              f"step of LA and HMC.", "",
              "| model | family | a | b | acceptance (tuning run) | in band | runs (all b) | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for param, found in results.get("tuning", {}).items():
        for family, r in found.items():
            lines.append(f"| {param} | {family.upper()} | {r['a']:.4g} | {r['b']:g} | "
                         f"{r['acceptance']:.3f} | {'yes' if r['converged'] else '**no**'} | "
                         f"{len(r['trials'])} | {r['seconds']:.1f} |")
    lines += ["", "## Training", "",
              "| network | architecture | parameters | steps | reused | seconds | final loss "
              "| held-out accuracy |", "|---|---|---|---|---|---|---|---|"]
    for t in results.get("training", []):
        acc = t.get("heldout_accuracy")
        acc = "—" if acc is None else accuracy_text(acc)
        lines.append(f"| {t['role']} | {t['architecture']} | {t['parameters']} | {t['steps']} | "
                     f"{'yes' if t['reused'] else 'no'} | {t['seconds']:.1f} | "
                     f"{t['final_loss']:.4f} | {acc} |")
    lines += ["", "Figures: samples_score.png and samples_energy.png (first seed; one row per "
              "sampler, one column per class, up to 4 samples per cell; top row: held-out "
              "images), acceptance.png (acceptance per level of LA-8-line and HMC-3-curve, first "
              "seed).", ""]
    return "\n".join(lines)


def _claims(summary: dict) -> List[str]:
    """FD and accuracy of each MCMC sampler against Reverse, per parameterisation."""
    lines = ["## Against the reverse process", "",
             "| model | sampler | FD − FD(Reverse) | FD better | accuracy − accuracy(Reverse) |",
             "|---|---|---|---|---|"]
    any_row = False
    for param, rows in summary.items():
        reverse = rows.get("Reverse")
        if reverse is None:
            continue
        for name, e in rows.items():
            if name == "Reverse":
                continue
            d_fd = e["frechet"][0] - reverse["frechet"][0]
            d_acc = e["accuracy"][0] - reverse["accuracy"][0]
            lines.append(f"| {param} | {name} | {d_fd:+.3f} | {'yes' if d_fd < 0 else '**no**'} "
                         f"| {d_acc:+.3f} |")
            any_row = True
    return lines + [""] if any_row else []
