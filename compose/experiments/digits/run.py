"""Step-size tuning and sampling runs of the digits experiment, and the whole experiment."""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

import compose
from compose import metrics
from compose.experiments import commandline
from compose.experiments.reporting import (SMOKE_TEST, environment, format_acceptance, seed_from,
                                             write_json)
from compose.models.classifier_training import classifier_accuracy
from compose.models.data import IMAGE_SHAPE, NUM_CLASSES, DigitsSplit, digits_split
from compose.models.unet import DigitClassifier
from compose.schedule import Schedule
from compose.tuning import TuningResult, tune_step_size

from .figures import acceptance_plot, sample_grid
from .models import ROLES, train_models
from .report import results_markdown, summarise
from .samplers import SamplerSpec, make_kernel, sampler_specs
from .settings import DEFAULT, PARAMETERISATIONS, QUICK, Settings
from .target import class_labels, guided_target, wrap_model


def tune(model, guide_net: nn.Module, settings: Settings, scale: float, schedule: Schedule,
         seed: int = 0, device=None) -> Dict[str, TuningResult]:
    """{"mala": …, "hmc": …}: a, b of LA-8-line and HMC-3-curve on the guided target, with
    `settings.tune_chains` chains spread evenly over the classes."""
    per_class = max(1, settings.tune_chains // NUM_CLASSES)
    labels = class_labels(per_class, device)
    found = {}
    for spec in sampler_specs(settings):
        if not spec.adjusted:
            continue
        target = guided_target(model, guide_net, labels, scale, schedule, spec)
        found[spec.family] = tune_step_size(
            target, lambda step, family=spec.family: make_kernel(family, step, settings),
            b=settings.tune_b_mala if spec.family == "mala" else settings.tune_b_hmc,
            num_chains=labels.numel(),
            steps_per_level=settings.tune_steps_per_level, reverse_step=True,
            max_trials=settings.tune_trials, seed=seed_from(seed, 5), device=device)
    return found


def run_sampler(spec: SamplerSpec, model, guide_net: nn.Module, eval_net: DigitClassifier,
                heldout_features: torch.Tensor, settings: Settings, scale: float,
                steps: Dict[str, TuningResult], generator: torch.Generator,
                progress: bool = False) -> dict:
    """Sample `settings.samples_per_class` images of every class with one sampler; score them.

    Returns a dict: samples (N, 1, 8, 8) CPU, clipped to [−1, 1]; labels; accuracy; frechet;
    acceptance (mean over levels; NaN for Reverse and unadjusted samplers) and per_level
    (T down to 1); evaluations per sample of the model and of the classifier; divergences;
    step (a, b) and seconds (wall time of sampling only).
    """
    schedule = model.schedule
    labels = class_labels(settings.samples_per_class, generator.device)
    target = guided_target(model, guide_net, labels, scale, schedule, spec)
    step = steps[spec.tuned_as].step_size if spec.tuned_as else None
    kernel = make_kernel(spec.family, step, settings) if step is not None else None
    start = time.perf_counter()
    if spec.smc:
        samples, result = _per_class_smc(model, guide_net, labels, scale, schedule, spec, settings,
                                         kernel, generator, progress)
    else:
        result = compose.sample(target, kernel, labels.numel(),
                                steps_per_level=spec.steps(settings, target, kernel),
                                reverse_step=True, generator=generator, device=generator.device,
                                progress=progress)
        samples = result.samples
    seconds = time.perf_counter() - start
    samples = samples.detach().clamp(-1.0, 1.0)
    with torch.no_grad():
        features = eval_net.features(samples)
    per_sample = result.diagnostics.evaluations_per_sample()
    return {"sampler": spec.name, "samples": samples.cpu(), "labels": labels.cpu(),
            "accuracy": metrics.accuracy(eval_net, samples, labels),
            "frechet": metrics.frechet_distance(features, heldout_features),
            "acceptance": result.diagnostics.mean_acceptance(),   # NaN: Reverse, unadjusted
            "per_level": [float(v) for v in result.diagnostics.acceptance],
            "evaluations": float(per_sample.get("model", 0.0)),
            "classifier_evaluations": float(sum(v for k, v in per_sample.items()
                                                if k != "model")),
            "divergences": result.diagnostics.divergences,
            "step": None if step is None else [step.a, step.b], "seconds": seconds}


def _per_class_smc(model, guide_net, labels, scale, schedule, spec, settings, kernel, generator,
                   progress):
    """SMC (docs/smc.md) with one particle system per class: the rows of the batch ask for
    different classes, and resampling within one system would mix them. Returns the samples in
    the order of `labels` and the last class's result (whose per-sample evaluations and
    diagnostics are those of every class: the systems are alike)."""
    samples = torch.empty((labels.numel(),) + tuple(IMAGE_SHAPE), device=generator.device)
    result = None
    for k in torch.unique(labels).tolist():
        rows = (labels == k).nonzero().flatten()
        target = guided_target(model, guide_net, labels[rows], scale, schedule, spec)
        result = compose.sample(target, kernel, rows.numel(),
                                steps_per_level=spec.steps(settings, target, kernel),
                                generator=generator, device=generator.device, progress=progress,
                                smc=compose.SMC())
        samples[rows] = result.samples
    return samples, result


# -- the experiment -------------------------------------------------------------------------
def run_experiment(out_dir, quick: bool = False, seeds: int = 1, scale: float = 1.0,
                   seed: int = 0, device=None, settings: Optional[Settings] = None,
                   progress: Optional[bool] = None, threads: Optional[int] = 1,
                   command: Optional[str] = None, samplers: Optional[Sequence[str]] = None,
                   parameterisations: Sequence[str] = PARAMETERISATIONS) -> dict:
    """Train (or reuse) the networks, tune step sizes, sample with every sampler and write the
    results.

    Per parameterisation (score, energy): tune LA and HMC once (seed `seed`); then for each of
    `seeds` sampling seeds run the five samplers from the same generator seed (common random
    numbers across samplers). Written to `out_dir`: results.json (updated after every run),
    results.md, samples_score.png and samples_energy.png (first seed), acceptance.png (first
    seed), samples_seed{S}.npz, and checkpoints/.

    Args:
        out_dir: output directory. quick: `QUICK` settings (unless `settings` is given).
        seeds: number of sampling seeds. scale: the guidance scale λ, the same for all samplers.
        seed: base seed (training, split of streams). device: torch device (default CPU).
        settings: overrides. threads: torch threads during the run (None: leave as is).
        command: recorded in results.md. samplers: row names (default the table's five;
            `sampler_specs`). parameterisations: which of "score", "energy" to train and run.
    Returns:
        the results dict written to results.json.
    """
    settings = settings or (QUICK if quick else DEFAULT)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: must be an integer ≥ 1, got {seeds!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale: the guidance scale must be a finite number, got {scale!r}")
    if isinstance(parameterisations, str) or not parameterisations \
            or set(parameterisations) - set(PARAMETERISATIONS):
        raise ValueError(f"parameterisations: choose from {', '.join(PARAMETERISATIONS)}, "
                         f"got {parameterisations!r}")
    parameterisations = [p for p in PARAMETERISATIONS if p in set(parameterisations)]
    specs = sampler_specs(settings, samplers)
    device = torch.device(device or "cpu")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    say = commandline.status_printer(progress)      # bars: only on a terminal unless forced
    if quick:
        say(SMOKE_TEST)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    schedule = settings.schedule()
    results = {"settings": dataclasses.asdict(settings), "seeds": seeds, "seed": seed,
               "scale": float(scale), "device": str(device), "threads": torch.get_num_threads(),
               "command": command, "started": datetime.datetime.now().isoformat(timespec="seconds"),
               "environment": environment(), "smoke_test": bool(quick),
               "training": [], "tuning": {}, "runs": []}
    json_path = os.path.join(out_dir, "results.json")
    try:
        split = digits_split(seed=settings.split_seed, device=device)
        results["data"] = {"train": int(split.train_labels.numel()),
                           "heldout": int(split.test_labels.numel()),
                           "split_seed": split.seed}
        say("training (or reusing) the networks")
        roles = [r for r in ROLES if r not in PARAMETERISATIONS or r in parameterisations]
        nets, results["training"] = train_models(out_dir, settings, split, seed, device,
                                                 progress, say, roles)
        eval_net, guide_net = nets["eval"], nets["guide"]
        with torch.no_grad():
            heldout_features = eval_net.features(split.test_images)
        results["reference"] = _reference_rows(split, eval_net, heldout_features, settings, seed)
        say(f"  reference: {results['reference']}")
        samples_by_seed: List[Dict[str, dict]] = []
        for param in parameterisations:
            model = wrap_model(nets[param], param, schedule)
            start = time.perf_counter()
            steps = tune(model, guide_net, settings, scale, schedule, seed, device)
            results["tuning"][param] = {k: v.to_dict() for k, v in steps.items()}
            say(f"{param}: tuned in {time.perf_counter() - start:.1f} s: "
                + ", ".join(f"{k} a={v.a:.4g} b={v.b:g} acc={v.acceptance:.3f}"
                            for k, v in steps.items()))
            for s in range(seeds):
                if len(samples_by_seed) <= s:
                    samples_by_seed.append({})
                for spec in specs:
                    generator = torch.Generator(device).manual_seed(seed_from(seed, 1000 + s))
                    run = run_sampler(spec, model, guide_net, eval_net, heldout_features,
                                      settings, scale, steps, generator, progress)
                    samples_by_seed[s][f"{param}/{spec.name}"] = run
                    results["runs"].append({k: v for k, v in run.items()
                                            if k not in ("samples", "labels")}
                                           | {"parameterisation": param, "seed": s})
                    say(f"  seed {s} {param:6s} {spec.name:11s} accuracy {run['accuracy']:.3f}  "
                        f"FD {run['frechet']:.3f}  acceptance {format_acceptance(run['acceptance'])}  "
                        f"{run['evaluations']:.0f} evals/sample  {run['seconds']:.1f} s")
                    write_json(json_path, results)
        for s, runs in enumerate(samples_by_seed):
            np.savez_compressed(os.path.join(out_dir, f"samples_seed{s}.npz"),
                                **{k.replace("/", "__"): r["samples"].numpy()
                                   for k, r in runs.items()},
                                labels=class_labels(settings.samples_per_class).numpy())
        first = samples_by_seed[0]
        for param in parameterisations:
            sample_grid({spec.name: first[f"{param}/{spec.name}"]["samples"] for spec in specs},
                        settings.samples_per_class,
                        os.path.join(out_dir, f"samples_{param}.png"),
                        title=f"{param} model | class=k @ λ={scale:g}", real=split)
        acceptance_plot({k: v["per_level"] for k, v in first.items()
                         if any(k.endswith(n) for n in ("LA-8-line", "HMC-3-curve"))},
                        os.path.join(out_dir, "acceptance.png"))
    finally:
        torch.set_num_threads(previous_threads)
    results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    results["summary"] = summarise(results)
    write_json(json_path, results)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(results_markdown(results))
    return results


def _reference_rows(split: DigitsSplit, eval_net, heldout_features, settings: Settings,
                    seed: int) -> dict:
    """The floor of the metrics: as many training images as generated ones (balanced classes,
    drawn without replacement) against the held-out set, and the evaluation classifier's
    held-out accuracy."""
    generator = torch.Generator().manual_seed(seed_from(seed, 77))
    rows = []
    labels = split.train_labels.cpu()
    for k in range(NUM_CLASSES):
        members = torch.nonzero(labels == k).flatten()
        pick = members[torch.randperm(members.numel(), generator=generator)]
        rows.append(pick[:settings.samples_per_class])
    index = torch.cat(rows).to(split.train_images.device)
    images, chosen = split.train_images[index], split.train_labels[index]
    with torch.no_grad():
        features = eval_net.features(images)
    return {"count": int(index.numel()),
            "train_accuracy": metrics.accuracy(eval_net, images, chosen),
            "train_frechet": metrics.frechet_distance(features, heldout_features),
            "heldout_accuracy": metrics.accuracy(eval_net, split.test_images, split.test_labels),
            "heldout_top1": classifier_accuracy(eval_net, split.test_images, split.test_labels)}
