"""Sampling runs of the 2D product: one sampler scored, and the whole experiment."""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import compose
from compose import metrics
from compose.components import Component
from compose.experiments import commandline
from compose.experiments.reporting import (SMOKE_TEST, environment, format_acceptance, seed_from,
                                             write_json)

from . import likelihood
from .models import train_models
from .report import figure1, results_markdown, summarise
from .samplers import QUICK_SAMPLERS, SamplerSpec, needed_evaluations, select_samplers
from .settings import BLOCKS, PAPER, PARAMETERISATIONS, QUICK, Settings
from .target import exact_product_samples, oracle_components


# -- one sampler ----------------------------------------------------------------------------
def run_sampler(spec: SamplerSpec, components: Tuple[Component, Component],
                generator: torch.Generator, num_samples: int = 2000, *,
                settings: Settings = PAPER, reference: Optional[torch.Tensor] = None,
                progress: bool = False) -> dict:
    """Sample the product of two components with one sampler and score the samples.

    Args:
        spec: the sampler. components: (ring, bar), any components on `settings`' schedule.
        generator: the only source of randomness of the run (initial x and the kernel's noise).
        num_samples: number of chains. settings: step sizes, K, L, damping, mass.
        reference: exact product samples to compare with (default: `num_samples` drawn with a
            CPU generator seeded from `generator`'s seed).
    Returns:
        a dict: samples (num_samples, 2) CPU tensor; metrics {ll, ll_paper, w2, w2_paper, gmm};
        acceptance (mean over levels; NaN for the reverse process and unadjusted samplers), divergences, evaluations
        (max over components, per sample), evaluations_per_component, seconds (wall time of the
        sampling run, metrics excluded).
    """
    ring, bar = components
    target = compose.compile(ring * bar, path=spec.path, points=spec.points, rule=spec.rule)
    kernel = spec.make_kernel(settings)
    steps = spec.steps(settings, target, kernel)
    start = time.perf_counter()
    result = compose.sample(target, kernel, num_samples, steps_per_level=steps,
                            reverse_step=spec.reverse_step, generator=generator,
                            event_shape=(2,), progress=progress,
                            smc=compose.SMC() if spec.smc else None)
    seconds = time.perf_counter() - start
    samples = result.samples.detach().cpu().float()
    if reference is None:
        reference = exact_product_samples(num_samples, torch.Generator().manual_seed(
            seed_from(generator.initial_seed(), 99)))
    per_component = result.diagnostics.evaluations_per_sample()
    return {"sampler": spec.name, "samples": samples, "metrics": score_samples(samples, reference),
            "acceptance": result.diagnostics.mean_acceptance(),   # NaN: Reverse, unadjusted
            "divergences": result.diagnostics.divergences,
            "evaluations": max(per_component.values()) if per_component else 0.0,
            "evaluations_per_component": per_component, "seconds": seconds}


def score_samples(samples: torch.Tensor, reference: torch.Tensor) -> Dict[str, float]:
    """{ll, ll_paper, w2, w2_paper, gmm} of samples (N, 2) against N exact samples `reference`."""
    reference = reference[: samples.shape[0]]
    ll = likelihood.log_likelihood(samples)
    w2 = metrics.wasserstein2(samples, reference)
    return {"ll": ll, "ll_paper": likelihood.paper_scale_ll(ll), "w2": w2,
            "w2_paper": likelihood.paper_scale_w2(w2, samples.shape[0]),
            "gmm": metrics.gmm_metric(samples, reference)}


# -- the experiment -------------------------------------------------------------------------
def block_samplers(block: str, specs: Sequence[SamplerSpec]) -> List[Tuple[str, SamplerSpec]]:
    """(row name, spec) of a block: every spec, except that in the energy block the line/curve
    variants of LA and HMC coincide (exact Δ) and are run once, as "LA" and "HMC"."""
    if block != "energy":
        return [(s.name, s) for s in specs]
    rows: Dict[str, SamplerSpec] = {}
    for s in specs:
        rows.setdefault(s.energy_name(), s)
    return list(rows.items())


def run_experiment(out_dir, trials: int = 1, quick: bool = False,
                   samplers: Optional[Sequence[str]] = None, blocks: Sequence[str] = BLOCKS,
                   seed: int = 0, progress: Optional[bool] = None, settings: Optional[Settings] = None,
                   device=None, threads: Optional[int] = 1, command: Optional[str] = None) -> dict:
    """Train (or reuse) the models of each trial, run every sampler in every block, write the results.

    Per trial: 2000 (settings.num_samples) exact product samples as the reference; the four
    models (only those the blocks need); then each block's samplers, all started from the same
    generator seed (common random numbers). Written to `out_dir`: results.json (updated after
    every sampler run, so an interrupted run keeps what it had), results.md, figure1.png,
    samples_trialI.npz, and checkpoints/ with loss curves.

    Args:
        out_dir: output directory (created). trials: number of trials, each with its own models.
        quick: use `QUICK` settings and `QUICK_SAMPLERS` (unless `settings`/`samplers` given).
        samplers: sampler names (default all of Table 1). blocks: any of "oracle", "score",
            "energy". seed: base seed. settings: overrides the paper's/quick settings.
        device: torch device for nets and sampling (default CPU). threads: torch threads to use
            during the run (None leaves the setting alone). command: recorded in results.md.
    Returns:
        the results dict also written to results.json.
    """
    settings = settings or (QUICK if quick else PAPER)
    if samplers is None and quick:
        samplers = QUICK_SAMPLERS
    specs = select_samplers(samplers)
    if isinstance(blocks, str) or not blocks or set(blocks) - set(BLOCKS):
        raise ValueError(f"blocks: choose one or more of {', '.join(BLOCKS)}, got {blocks!r}")
    blocks = [b for b in BLOCKS if b in set(blocks)]
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials: must be an integer ≥ 1, got {trials!r}")
    device = torch.device(device or "cpu")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    say = commandline.status_printer(progress)
    if quick:
        say(SMOKE_TEST)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    schedule = settings.schedule()
    results = {"settings": dataclasses.asdict(settings), "trials": trials, "seed": seed,
               "blocks": blocks, "samplers": [s.name for s in specs], "device": str(device),
               "threads": torch.get_num_threads(), "command": command,
               "started": datetime.datetime.now().isoformat(timespec="seconds"),
               "environment": environment(), "smoke_test": bool(quick),
               "training": [], "runs": []}
    try:
        for trial in range(trials):
            say(f"trial {trial + 1}/{trials}")
            reference = exact_product_samples(settings.num_samples,
                                              torch.Generator().manual_seed(seed_from(seed, trial, 99)))
            needed = [p for p in PARAMETERISATIONS if p in blocks]
            models = {}
            if needed:
                models, info = train_models(out_dir, trial, settings, seed, needed, device, progress)
                results["training"].extend(info)
            models["oracle"] = tuple(m.to(device) for m in oracle_components(schedule))
            saved = {"reference": reference.numpy()}
            for block in blocks:
                for row, spec in block_samplers(block, specs):
                    generator = torch.Generator(device).manual_seed(seed_from(seed, trial, 7))
                    run = run_sampler(spec, models[block], generator, settings.num_samples,
                                      settings=settings, reference=reference, progress=progress)
                    saved[f"{block}/{row}"] = run.pop("samples").numpy()
                    run.update(block=block, sampler=row, trial=trial,
                               needed=needed_evaluations(spec, settings, exact=block == "energy"))
                    results["runs"].append(run)
                    say(f"  {block:6s} {row:11s} W2 {run['metrics']['w2']:.4f}  "
                         f"LL {run['metrics']['ll']:.3f}  acc {format_acceptance(run['acceptance'])}  "
                         f"{run['evaluations']:.0f} evals/sample  {run['seconds']:.1f} s")
                    write_json(os.path.join(out_dir, "results.json"), results)
            np.savez_compressed(os.path.join(out_dir, f"samples_trial{trial}.npz"), **saved)
            if trial == 0:
                figure1(saved, os.path.join(out_dir, "figure1.png"), schedule, seed)
    finally:
        torch.set_num_threads(previous_threads)
    results["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    results["summary"] = summarise(results)
    write_json(os.path.join(out_dir, "results.json"), results)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(results_markdown(results))
    return results
