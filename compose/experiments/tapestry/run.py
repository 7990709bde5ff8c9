"""Scale search, step sizes, sampling and scoring every canvas, and the whole experiment."""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import compose
from compose import metrics
from compose.experiments import commandline
from compose.experiments import digits
from compose.experiments.reporting import (SMOKE_TEST, environment, format_acceptance, seed_from,
                                             write_json)
from compose.models.data import DigitsSplit, digits_split
from compose.tuning import tune_step_size

from .canvas import canvas_shape, crops, tapestry
from .model import train_or_load_model
from .report import canvas_figure, results_markdown, summarise
from .settings import DEFAULT, QUICK, Settings


def sampler_specs(settings: Settings) -> List["digits.SamplerSpec"]:
    """Reverse, U-LA, LA-3-line (points from `settings`), HMC-curve."""
    return [digits.SamplerSpec("Reverse", "reverse"), digits.SamplerSpec("U-LA", "ula"),
            digits.SamplerSpec(f"LA-{settings.la_points}-line", "mala", "line",
                               settings.la_points),
            digits.SamplerSpec("HMC-curve", "hmc", "curve", 0)]


def _steps_per_level(spec, settings: Settings) -> int:
    if spec.family == "reverse":
        return 0
    return settings.hmc_steps_per_level if spec.family == "hmc" else settings.steps_per_level


def compile_canvas(model, digit_row: Sequence[int], scale: float, settings: Settings, spec):
    """The compiled tapestry of one row of digits for `spec`'s Δ path."""
    return compose.compile(tapestry(model, digit_row, scale, settings.overlap),
                           event_shape=canvas_shape(len(digit_row), settings.overlap),
                           path=spec.path, points=spec.points)


def run_canvas(model, digit_row: Sequence[int], spec, kernel, settings: Settings, scale: float,
               chains: int, eval_net, generator: torch.Generator) -> dict:
    """Sample `chains` canvases of one row of digits with one sampler; score every window.

    Returns a dict: canvas ("3 7"), sampler, canvases (N, 1, 8, W) clipped to [−1, 1], crops
    (all windows' crops stacked), accuracy (one per window), acceptance (mean over levels; NaN
    for Reverse and unadjusted samplers), evaluations (network evaluations on 8×8 crops per canvas),
    divergences, seconds (sampling only).
    """
    target = compile_canvas(model, digit_row, scale, settings, spec)
    start = time.perf_counter()
    result = compose.sample(target, kernel, chains,
                            steps_per_level=_steps_per_level(spec, settings) if kernel else 0,
                            reverse_step=True, generator=generator, device=generator.device,
                            progress=False)
    seconds = time.perf_counter() - start
    canvases = result.samples.detach().clamp(-1.0, 1.0).cpu()
    windows = crops(canvases, len(digit_row), settings.overlap)
    accuracy = [metrics.accuracy(eval_net, w, torch.full((chains,), int(d)))
                for w, d in zip(windows, digit_row)]
    evaluations = result.diagnostics.evaluations_per_sample()
    return {"canvas": " ".join(map(str, digit_row)), "sampler": spec.name, "canvases": canvases,
            "crops": torch.cat(windows), "accuracy": accuracy,
            "acceptance": result.diagnostics.mean_acceptance(),   # NaN: Reverse, unadjusted
            "evaluations": float(sum(evaluations.values())),
            "divergences": result.diagnostics.divergences, "seconds": seconds}


def frechet_of(eval_net, images: torch.Tensor, reference_features: torch.Tensor) -> float:
    """FD between the evaluation classifier's features of `images` and the reference's."""
    with torch.no_grad():
        return metrics.frechet_distance(eval_net.features(images), reference_features)


def heldout_reference(split: DigitsSplit, settings: Settings, eval_net, chains: int
                      ) -> Tuple[torch.Tensor, dict]:
    """Features of the held-out images of the requested digits, and the floor of FD: as many
    training images of the requested digits (`chains` per window) against them."""
    wanted = [d for row in settings.canvases for d in row]
    test = torch.cat([split.test_images[split.test_labels == d] for d in sorted(set(wanted))])
    with torch.no_grad():
        features = eval_net.features(test)
    generator = torch.Generator().manual_seed(0)
    train = []
    for d in wanted:
        members = torch.nonzero(split.train_labels == d).flatten()
        pick = members[torch.randperm(members.numel(), generator=generator)[:chains]]
        train.append(split.train_images[pick])
    train = torch.cat(train)
    return features, {"heldout_images": int(test.shape[0]), "floor_count": int(train.shape[0]),
                      "floor_frechet": frechet_of(eval_net, train, features)}


def search_scale(model, settings: Settings, eval_net, reference_features, seed: int = 0,
                 say=lambda s: None) -> Tuple[float, List[dict]]:
    """The guidance scale: the reverse process on every canvas at each of `settings.scales`;
    the best mean per-window accuracy wins, ties within 0.02 going to the lower FD."""
    rows = []
    spec = sampler_specs(settings)[0]
    for scale in settings.scales:
        generator = torch.Generator().manual_seed(seed_from(seed, 31))
        runs = [run_canvas(model, row, spec, None, settings, scale, settings.search_chains,
                           eval_net, generator) for row in settings.canvases]
        accuracy = float(np.mean([a for r in runs for a in r["accuracy"]]))
        fd = frechet_of(eval_net, torch.cat([r["crops"] for r in runs]), reference_features)
        rows.append({"scale": float(scale), "accuracy": accuracy, "frechet": fd})
        say(f"  w = {scale:g}: mean per-window accuracy {accuracy:.3f}, FD {fd:.3f}")
    best = max(r["accuracy"] for r in rows)
    near = [r for r in rows if r["accuracy"] >= best - 0.02]
    return min(near, key=lambda r: r["frechet"])["scale"], rows


def tune(model, settings: Settings, scale: float, seed: int = 0) -> dict:
    """{"mala": TuningResult, "hmc": TuningResult}: a, b of LA and HMC on the first canvas."""
    row = settings.canvases[0]
    found = {}
    for spec in sampler_specs(settings):
        if not spec.adjusted:
            continue
        found[spec.family] = tune_step_size(
            compile_canvas(model, row, scale, settings, spec),
            lambda step, family=spec.family: digits.make_kernel(family, step, settings),
            b=settings.tune_b_mala if spec.family == "mala" else settings.tune_b_hmc,
            num_chains=settings.tune_chains, steps_per_level=settings.tune_steps_per_level,
            reverse_step=True, max_trials=settings.tune_trials, seed=seed_from(seed, 5))
    return found


def run_experiment(out_dir, quick: bool = False, seeds: int = 3, seed: int = 0,
                   settings: Optional[Settings] = None, scale: Optional[float] = None,
                   progress: Optional[bool] = None, threads: Optional[int] = 1,
                   command: Optional[str] = None) -> dict:
    """Train (or reuse) the UNet and the evaluation classifier, pick the guidance scale (unless
    `scale` is given), tune LA and HMC, then sample every canvas with every sampler for each of
    `seeds` seeds (common random numbers across samplers). Writes results.json (after every
    run), results.md and canvases.png to `out_dir`; returns the results."""
    settings = settings or (QUICK if quick else DEFAULT)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: must be an integer ≥ 1, got {seeds!r}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale: the guidance scale must be a finite number, got {scale!r}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    say = commandline.status_printer(progress)      # bars: only on a terminal unless forced
    if quick:
        say(SMOKE_TEST)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    started = time.perf_counter()
    results = {"settings": dataclasses.asdict(settings), "seeds": seeds, "seed": seed,
               "command": command, "threads": torch.get_num_threads(),
               "started": datetime.datetime.now().isoformat(timespec="seconds"),
               "environment": environment(), "smoke_test": bool(quick),
               "runs": []}
    json_path = os.path.join(out_dir, "results.json")
    try:
        split = digits_split(seed=settings.split_seed)
        say("models")
        clock = time.perf_counter()
        model, results["model"] = train_or_load_model(out_dir, settings, split, seed,
                                                      progress, say)
        nets, info = digits.train_models(out_dir, settings.digits_settings(), split, seed,
                                         progress=progress, say=say, roles=("eval",))
        eval_net = nets["eval"]
        results["eval_classifier"] = info[0]
        results["seconds_models"] = time.perf_counter() - clock
        reference, results["reference"] = heldout_reference(split, settings, eval_net,
                                                            settings.chains)
        clock = time.perf_counter()
        if scale is None:
            say("guidance scale (reverse process)")
            scale, results["scale_search"] = search_scale(model, settings, eval_net, reference,
                                                          seed, say)
        results["scale"] = float(scale)
        results["seconds_scale_search"] = time.perf_counter() - clock
        clock = time.perf_counter()
        steps = tune(model, settings, scale, seed)
        results["tuning"] = {k: v.to_dict() for k, v in steps.items()}
        results["seconds_tuning"] = time.perf_counter() - clock
        say("step sizes: " + ", ".join(f"{k} a={v.a:.4g} b={v.b:g} acceptance {v.acceptance:.3f}"
                                      for k, v in steps.items()))
        first_seed: Dict[str, Dict[str, torch.Tensor]] = {}
        clock = time.perf_counter()
        for s in range(seeds):
            for spec in sampler_specs(settings):
                step = steps[spec.tuned_as].step_size if spec.tuned_as else None
                kernel = digits.make_kernel(spec.family, step, settings) if step else None
                generator = torch.Generator().manual_seed(seed_from(seed, 1000 + s))
                runs = [run_canvas(model, row, spec, kernel, settings, scale, settings.chains,
                                   eval_net, generator) for row in settings.canvases]
                fd = frechet_of(eval_net, torch.cat([r["crops"] for r in runs]), reference)
                for r in runs:
                    if s == 0:
                        first_seed.setdefault(spec.name, {})[r["canvas"]] = r["canvases"]
                    results["runs"].append(
                        {k: v for k, v in r.items() if k not in ("canvases", "crops")}
                        | {"seed": s, "frechet": fd,
                           "step": None if step is None else [step.a, step.b]})
                say(f"  seed {s} {spec.name:10s} accuracy "
                    + " | ".join(" ".join(f"{a:.2f}" for a in r["accuracy"]) for r in runs)
                    + f"   FD {fd:.2f}   {sum(r['seconds'] for r in runs):.1f} s")
                write_json(json_path, results)
        results["seconds_sampling"] = time.perf_counter() - clock
        canvas_figure(first_seed, settings, os.path.join(out_dir, "canvases.png"), scale)
    finally:
        torch.set_num_threads(previous_threads)
    results["seconds_total"] = time.perf_counter() - started
    results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    results["summary"] = summarise(results)
    write_json(json_path, results)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(results_markdown(results))
    return results
