"""Guided diffusion on the 8×8 digits (SPEC section 6.2; the stand-in for the paper's Table 2).

An unconditional diffusion model (a small UNet, `SmallUNet`, in the score and in the energy
parameterisation) is composed with a noise-level-aware classifier by classifier guidance,

    model | class=k @ λ        log π_t(x) = log p_t(x) + λ · log p_t(y = k | x),

and sampled for every class k with each of

    Reverse       the ancestral reverse process with the guided score
    U-LA          K unadjusted Langevin steps per level, then the reverse step
    LA-8-line     K MALA steps per level (Δ of the score model on the line, 8 interior points)
    U-HMC         K unadjusted HMC steps (L leapfrog steps, partial momentum refresh)
    HMC-3-curve   K HMC steps, Δ along the leapfrog path with the midpoint of each of the L = 3
                  segments (3 extra evaluations per step)

all with the reverse step after the MCMC steps at each level (as in the paper's image
experiments) and the same λ. For the energy model Δ is exact, so LA-8-line and HMC-3-curve need
no extra points. Step sizes η_t = a · β_tᵇ come from `compose.tuning.tune_step_size` on the
guided target (MALA into [0.55, 0.85], HMC into [0.6, 0.9]); U-LA and U-HMC reuse the a, b of
their adjusted counterparts.

All classes are sampled in one batch of chains: the guidance classifier is wrapped so that, for
chain i, column 0 of its logits is the logit of the class requested for chain i
(`RequestedClass`), and the composition is ``model | class=0 @ λ``. For each chain this is exactly
``model | class=k_i @ λ`` (log-softmax is invariant to permuting the logits); the chains are
independent, so it equals ten separate runs, at a tenth of the network calls.

Metrics (`compose.metrics`): accuracy (the evaluation classifier gives the requested class with
probability ≥ 0.5) and the Fréchet distance between the evaluation classifier's penultimate-layer
features (`DigitClassifier.features`) of the generated images (clipped to [−1, 1]) and of the
held-out images. The models are trained once (or reused from checkpoints); the seeds vary the
sampling.

`run_experiment` does everything and writes results.md, results.json, samples_score.png,
samples_energy.png and acceptance.png; `register(subparsers)` adds the ``digits`` command;
``python -m compose.experiments.digits`` runs it directly.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from compose.experiments import commandline
from compose.experiments.reporting import format_mean_std, mean_std, seed_from, write_json
from torch import nn

import compose
from compose import metrics
from compose.components import Classifier, EnergyModel, ScoreModel
from compose.models.data import IMAGE_SHAPE, NUM_CLASSES, DigitsSplit, digits_split
from compose.kernels import Kernel
from compose.schedule import Schedule
from compose.kernels.stepsize import PowerLaw
from compose.models.checkpoints import read_checkpoint, save_checkpoint
from compose.models.training import train_diffusion
from compose.models.classifier_training import classifier_accuracy, train_classifier
from compose.models.unet import DigitClassifier, NoisyClassifier, SmallUNet
from compose.tuning import TuningResult, tune_step_size

PARAMETERISATIONS = ("score", "energy")
SAMPLER_NAMES = ("Reverse", "U-LA", "LA-8-line", "U-HMC", "HMC-3-curve")


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sets the numbers of a run.

    Schedule: cosine, T levels. Diffusion models: `SmallUNet(base, mults, blocks, embed)`,
    `train_steps` Adam steps at `lr`, batch `batch_size`, EMA `ema_decay`. Guidance classifier:
    `NoisyClassifier(clf_base, mults)`, `clf_steps` AdamW steps. Evaluation classifier:
    `DigitClassifier(eval_width, eval_features)`, `eval_steps` steps. Sampling:
    `samples_per_class` chains per class, K = `steps_per_level` MCMC steps per level, L =
    `num_leapfrog`, `damping`, `mass`; Δ of the score model with `la_points` points on the line
    (LA) and `curve_points` per leapfrog segment (HMC). Tuning: `tune_chains` chains,
    `tune_steps_per_level` steps per level, exponents b from `tune_b_mala` (LA) and
    `tune_b_hmc` (HMC), at most `tune_trials` runs per b. (A Langevin step η should scale like
    the variance of π_t, an HMC step ε like its standard deviation, hence the two grids.)
    """

    T: int = 40
    base: int = 16
    mults: Tuple[int, ...] = (1, 2)
    blocks: int = 1
    embed: int = 64
    train_steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.995
    clf_base: int = 16
    clf_steps: int = 1500
    eval_width: int = 32
    eval_features: int = 64
    eval_steps: int = 1500
    classifier_batch: int = 128
    classifier_lr: float = 2e-3
    samples_per_class: int = 20
    steps_per_level: int = 2
    num_leapfrog: int = 3
    damping: float = 0.5
    mass: float = 1.0
    la_points: int = 8
    curve_points: int = 1
    tune_chains: int = 20
    tune_steps_per_level: int = 1
    tune_b_mala: Tuple[float, ...] = (1.0, 1.5, 2.0)
    tune_b_hmc: Tuple[float, ...] = (0.5, 1.0, 1.5)
    tune_trials: int = 8
    split_seed: int = 0

    def schedule(self) -> Schedule:
        """The cosine schedule with T levels."""
        return Schedule.cosine(self.T)

    def unet_config(self) -> dict:
        return {"channels": IMAGE_SHAPE[0], "size": IMAGE_SHAPE[1], "T": self.T,
                "base": self.base, "mults": list(self.mults), "blocks": self.blocks,
                "embed": self.embed, "groups": 8}

    def classifier_config(self) -> dict:
        return {"channels": IMAGE_SHAPE[0], "size": IMAGE_SHAPE[1], "T": self.T,
                "num_classes": NUM_CLASSES, "base": self.clf_base, "mults": list(self.mults),
                "blocks": 1, "embed": self.embed, "groups": 8}

    def eval_config(self) -> dict:
        return {"channels": IMAGE_SHAPE[0], "size": IMAGE_SHAPE[1], "num_classes": NUM_CLASSES,
                "width": self.eval_width, "features": self.eval_features, "dropout": 0.2}


#: The reduced real run (about half an hour on one thread of a shared 2-core CPU).
DEFAULT = Settings()
#: End-to-end in seconds: T = 5, tiny nets, a few dozen training steps, 2 samples per class.
QUICK = Settings(T=5, base=8, embed=16, train_steps=20, batch_size=32, ema_decay=0.5,
                 clf_base=8, clf_steps=20, eval_width=8, eval_features=16, eval_steps=30,
                 classifier_batch=64, samples_per_class=2, steps_per_level=1, tune_chains=10,
                 tune_b_mala=(1.0,), tune_b_hmc=(1.0,), tune_trials=2)


# -- samplers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec:
    """One row of the table: its name, family ("reverse", "ula", "mala", "uhmc", "hmc"), the
    Δ path and interior points of the score model."""

    name: str
    family: str
    path: str = "line"
    points: int = 0

    @property
    def adjusted(self) -> bool:
        return self.family in ("mala", "hmc")

    @property
    def tuned_as(self) -> Optional[str]:
        """The adjusted family whose step size this sampler uses (None for Reverse)."""
        return {"ula": "mala", "mala": "mala", "uhmc": "hmc", "hmc": "hmc"}.get(self.family)


def sampler_specs(settings: Settings) -> List[SamplerSpec]:
    """Reverse, U-LA, LA-8-line, U-HMC, HMC-3-curve (point counts from `settings`)."""
    return [SamplerSpec("Reverse", "reverse"), SamplerSpec("U-LA", "ula"),
            SamplerSpec("LA-8-line", "mala", "line", settings.la_points),
            SamplerSpec("U-HMC", "uhmc"),
            SamplerSpec("HMC-3-curve", "hmc", "curve", settings.curve_points)]


def make_kernel(family: str, step: PowerLaw, settings: Settings) -> Optional[Kernel]:
    """The kernel of a family at step sizes `step` (None for the reverse process)."""
    if family == "reverse":
        return None
    if family in ("ula", "mala"):
        return compose.ULA(step) if family == "ula" else compose.MALA(step)
    return compose.HMC(step, num_leapfrog=settings.num_leapfrog, damping=settings.damping,
                       mass=settings.mass, adjusted=family == "hmc")


class RequestedClass(nn.Module):
    """A classifier whose logits are rotated per row so that column 0 holds each row's
    requested class: out[i, j] = logits[i, (labels[i] + j) mod C].

    With it, ``model | class=0`` asks every chain i for class labels[i]. It must see exactly
    one row per chain, in chain order (what `compose.sample` passes); anything else is a
    ValueError.
    """

    def __init__(self, net: nn.Module, labels: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("labels", labels.long())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.labels.shape[0]:
            raise ValueError(f"RequestedClass: got {x.shape[0]} rows, but it holds a class for "
                             f"each of {self.labels.shape[0]} chains")
        logits = self.net(x, t)
        columns = torch.arange(logits.shape[1], device=logits.device)
        index = (self.labels[:, None] + columns[None]) % logits.shape[1]
        return logits.gather(1, index)


def guided_target(model, guide_net: nn.Module, labels: torch.Tensor, scale: float,
                  schedule: Schedule, spec: SamplerSpec):
    """``model | class=labels[i] @ scale`` for every chain i, compiled for `spec`'s Δ path."""
    clf = Classifier(RequestedClass(guide_net, labels), schedule, variable="class",
                     name="classifier", event_shape=IMAGE_SHAPE)
    return compose.compile(model.guide(clf.condition(0), scale=scale), path=spec.path,
                           points=spec.points)


def class_labels(samples_per_class: int, device=None) -> torch.Tensor:
    """(0, …, 0, 1, …, 1, …, 9, …, 9): `samples_per_class` chains per class."""
    return torch.arange(NUM_CLASSES, device=device).repeat_interleave(samples_per_class)


# -- models ---------------------------------------------------------------------------------


ROLES = ("score", "energy", "guide", "eval")


def load_model(path, schedule: Optional[Schedule], architecture: type,
               config: Optional[dict] = None) -> Tuple[nn.Module, dict]:
    """A checkpoint of this experiment: (net, the stored `extra` dict).

    Raises ValueError if the schedule differs (`load_checkpoint`), the file holds another
    architecture, or its configuration (image shape, widths, T) differs from `config`.
    """
    net, _, _, extra = read_checkpoint(path, schedule)
    if type(net) is not architecture:
        raise ValueError(f"{os.fspath(path)}: holds a {type(net).__name__}, expected a "
                         f"{architecture.__name__}")
    if config is not None and net.config() != config:
        diff = {k: (net.config().get(k), v) for k, v in config.items() if net.config().get(k) != v}
        raise ValueError(f"{os.fspath(path)}: the stored {architecture.__name__} does not match "
                         f"(stored, wanted): {diff}")
    return net, extra


def train_models(out_dir, settings: Settings, split: DigitsSplit, seed: int = 0, device=None,
                 progress: bool = True, say: Callable[[str], None] = lambda s: None
                 ) -> Tuple[Dict[str, nn.Module], List[dict]]:
    """Train (or reuse from OUT/checkpoints) the four networks.

    score / energy: `SmallUNet`s trained with `train_diffusion` (EMA weights kept); guide: the
    noise-aware `NoisyClassifier` trained on x_t, t ~ U{1..T}; eval: the `DigitClassifier` on
    clean training images. A checkpoint is reused when its schedule, architecture, training
    settings, seed and split all match; otherwise the model is retrained and overwritten.

    Returns:
        ({role: net on `device`, eval mode, gradients off}, one info dict per role with
        seconds, reused, final loss, and held-out accuracy for the classifiers).
    """
    device = torch.device(device or "cpu")
    schedule = settings.schedule()
    folder = os.path.join(os.fspath(out_dir), "checkpoints")
    os.makedirs(folder, exist_ok=True)
    train = split.to(device)
    nets, info = {}, []
    for index, role in enumerate(ROLES):
        path = os.path.join(folder, f"{role}.pt")
        if role in PARAMETERISATIONS:
            architecture, config = SmallUNet, settings.unet_config()
            recipe = {"steps": settings.train_steps, "batch_size": settings.batch_size,
                      "lr": settings.lr, "ema_decay": settings.ema_decay}
        else:
            architecture = NoisyClassifier if role == "guide" else DigitClassifier
            config = settings.classifier_config() if role == "guide" else settings.eval_config()
            recipe = {"steps": settings.clf_steps if role == "guide" else settings.eval_steps,
                      "batch_size": settings.classifier_batch, "lr": settings.classifier_lr}
        model_seed = seed_from(seed, index)
        expected = {"experiment": "digits", "role": role, "seed": model_seed,
                    "split_seed": split.seed, "train": recipe}
        net, extra = None, {}
        if os.path.exists(path):
            try:
                net, extra = load_model(path, schedule, architecture, config)
                if {k: extra.get(k) for k in expected} != expected:
                    net = None
                    say(f"  {role}: checkpoint trained differently, retraining")
            except (ValueError, OSError) as err:      # unreadable or another model: absent
                net = None
                print(f"digits: {role}: {err}; retraining", file=sys.stderr, flush=True)
        reused = net is not None
        if not reused:
            with torch.random.fork_rng(devices=[]):           # the initial weights
                torch.manual_seed(model_seed)
                net = architecture(**config)
            net = net.to(device)
            generator = torch.Generator(device).manual_seed(seed_from(model_seed, 1))
            if role in PARAMETERISATIONS:
                result = train_diffusion(net, schedule, train.sampler(), parameterisation=role,
                                         steps=recipe["steps"], batch_size=recipe["batch_size"],
                                         lr=recipe["lr"], ema_decay=recipe["ema_decay"],
                                         generator=generator, progress=progress)
                net = result.ema_net
            else:
                result = train_classifier(net, train.sampler(labelled=True),
                                          schedule=schedule if role == "guide" else None,
                                          steps=recipe["steps"], batch_size=recipe["batch_size"],
                                          lr=recipe["lr"], generator=generator,
                                          progress=progress)
                net = result.net
            extra = dict(expected, losses=[float(v) for v in result.losses],
                         seconds=float(result.seconds))
            net = net.eval().requires_grad_(False)
            if role != "score" and role != "energy":
                extra["heldout_accuracy"] = _heldout_accuracy(net, role, train, schedule)
            save_checkpoint(path, net, schedule,
                            role if role in PARAMETERISATIONS else "classifier", extra=extra)
        net = net.to(device).eval().requires_grad_(False)
        nets[role] = net
        losses = extra.get("losses", [])
        entry = {"role": role, "architecture": architecture.__name__, "config": config,
                 "parameters": sum(p.numel() for p in net.parameters()), "path": path,
                 "reused": reused, "steps": recipe["steps"],
                 "seconds": float(extra.get("seconds", math.nan)),
                 "final_loss": float(np.mean(losses[-100:])) if losses else math.nan}
        if "heldout_accuracy" in extra:
            entry["heldout_accuracy"] = extra["heldout_accuracy"]
        info.append(entry)
        say(f"  {role:6s} {'reused' if reused else 'trained'} in {entry['seconds']:.1f} s, "
            f"loss {entry['final_loss']:.4f}"
            + (f", held-out accuracy {_accuracy_text(entry['heldout_accuracy'])}"
               if "heldout_accuracy" in entry else ""))
    return nets, info


def _heldout_accuracy(net, role: str, split: DigitsSplit, schedule: Schedule):
    """Held-out top-1 accuracy: one number for the evaluation classifier; for the guidance
    classifier a dict {level: accuracy} at levels 1, T/4, T/2, 3T/4 and T."""
    if role == "eval":
        return classifier_accuracy(net, split.test_images, split.test_labels)
    levels = sorted({1, max(1, schedule.T // 4), max(1, schedule.T // 2),
                     max(1, 3 * schedule.T // 4), schedule.T})
    generator = torch.Generator(split.test_images.device).manual_seed(0)
    return {str(t): classifier_accuracy(net, split.test_images, split.test_labels, schedule, t,
                                        generator) for t in levels}


def _accuracy_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"t={t}: {v:.3f}" for t, v in value.items())
    return f"{value:.4f}"


# -- tuning and sampling --------------------------------------------------------------------
def wrap_model(net: nn.Module, parameterisation: str, schedule: Schedule):
    """The UNet as a `ScoreModel` or `EnergyModel` named "model"."""
    cls = ScoreModel if parameterisation == "score" else EnergyModel
    return cls(net, schedule, name="model", event_shape=IMAGE_SHAPE)


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
    acceptance (mean over levels; nan for Reverse, 1 for unadjusted samplers) and per_level
    (T down to 1); evaluations per sample of the model and of the classifier; divergences;
    step (a, b) and seconds (wall time of sampling only).
    """
    schedule = model.schedule
    labels = class_labels(settings.samples_per_class, generator.device)
    target = guided_target(model, guide_net, labels, scale, schedule, spec)
    step = steps[spec.tuned_as].step_size if spec.tuned_as else None
    kernel = make_kernel(spec.family, step, settings) if step is not None else None
    start = time.perf_counter()
    result = compose.sample(target, kernel, labels.numel(),
                            steps_per_level=settings.steps_per_level if kernel else 0,
                            reverse_step=True, generator=generator, device=generator.device,
                            progress=progress)
    seconds = time.perf_counter() - start
    samples = result.samples.detach().clamp(-1.0, 1.0)
    with torch.no_grad():
        features = eval_net.features(samples)
    per_sample = result.diagnostics.evaluations_per_sample()
    return {"sampler": spec.name, "samples": samples.cpu(), "labels": labels.cpu(),
            "accuracy": metrics.accuracy(eval_net, samples, labels),
            "frechet": metrics.frechet_distance(features, heldout_features),
            "acceptance": (result.diagnostics.mean_acceptance() if spec.adjusted else
                           (1.0 if kernel is not None else math.nan)),
            "per_level": [float(v) for v in result.diagnostics.acceptance],
            "evaluations": float(per_sample.get("model", 0.0)),
            "classifier_evaluations": float(sum(v for k, v in per_sample.items()
                                                if k != "model")),
            "divergences": result.diagnostics.divergences,
            "step": None if step is None else [step.a, step.b], "seconds": seconds}


# -- the experiment -------------------------------------------------------------------------
def run_experiment(out_dir, quick: bool = False, seeds: int = 1, scale: float = 1.0,
                   seed: int = 0, device=None, settings: Optional[Settings] = None,
                   progress: bool = True, threads: Optional[int] = 1,
                   command: Optional[str] = None) -> dict:
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
        command: recorded in results.md.
    Returns:
        the results dict written to results.json.
    """
    settings = settings or (QUICK if quick else DEFAULT)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: must be an integer ≥ 1, got {seeds!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale: the guidance scale must be a finite number, got {scale!r}")
    device = torch.device(device or "cpu")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    schedule = settings.schedule()
    results = {"settings": dataclasses.asdict(settings), "seeds": seeds, "seed": seed,
               "scale": float(scale), "device": str(device), "threads": torch.get_num_threads(),
               "command": command, "started": datetime.datetime.now().isoformat(timespec="seconds"),
               "environment": {"python": platform.python_version(), "torch": torch.__version__,
                               "machine": platform.machine(), "cpus": os.cpu_count()},
               "training": [], "tuning": {}, "runs": []}
    json_path = os.path.join(out_dir, "results.json")
    try:
        split = digits_split(seed=settings.split_seed, device=device)
        results["data"] = {"train": int(split.train_labels.numel()),
                           "heldout": int(split.test_labels.numel()),
                           "split_seed": split.seed}
        say("training (or reusing) the networks")
        nets, results["training"] = train_models(out_dir, settings, split, seed, device,
                                                 progress, say)
        eval_net, guide_net = nets["eval"], nets["guide"]
        with torch.no_grad():
            heldout_features = eval_net.features(split.test_images)
        results["reference"] = _reference_rows(split, eval_net, heldout_features, settings, seed)
        say(f"  reference: {results['reference']}")
        specs = sampler_specs(settings)
        samples_by_seed: List[Dict[str, dict]] = []
        for param in PARAMETERISATIONS:
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
                        f"FD {run['frechet']:.3f}  acceptance {run['acceptance']:.3f}  "
                        f"{run['evaluations']:.0f} evals/sample  {run['seconds']:.1f} s")
                    write_json(json_path, results)
        for s, runs in enumerate(samples_by_seed):
            np.savez_compressed(os.path.join(out_dir, f"samples_seed{s}.npz"),
                                **{k.replace("/", "__"): r["samples"].numpy()
                                   for k, r in runs.items()},
                                labels=class_labels(settings.samples_per_class).numpy())
        first = samples_by_seed[0]
        for param in PARAMETERISATIONS:
            sample_grid({name: first[f"{param}/{name}"]["samples"] for name in SAMPLER_NAMES},
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
    lines = ["# Guided diffusion on the 8×8 digits (SPEC section 6.2)", ""]
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
        f"over seeds. Acceptance: mean over levels (— for Reverse; 1 for unadjusted "
        f"samplers). Evaluations: of the diffusion model per sample (each energy evaluation "
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
        acc = "—" if acc is None else _accuracy_text(acc)
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


# -- figures --------------------------------------------------------------------------------
def _mosaic(images: np.ndarray, per_side: int) -> np.ndarray:
    """Up to per_side² images (n, 8, 8) tiled into one array with 1-pixel gaps (gaps = nan)."""
    size = images.shape[-1]
    side = per_side * size + per_side - 1
    out = np.full((side, side), np.nan)
    for i, image in enumerate(images[:per_side ** 2]):
        r, c = divmod(i, per_side)
        out[r * (size + 1):r * (size + 1) + size, c * (size + 1):c * (size + 1) + size] = image
    return out


def sample_grid(rows: Dict[str, torch.Tensor], samples_per_class: int, path: str,
                title: Optional[str] = None, real: Optional[DigitsSplit] = None) -> str:
    """A grid: one row per sampler, one column per class, each cell up to 4 samples (2×2).

    `rows` maps sampler name → samples (N, 1, 8, 8) ordered by class (samples_per_class each).
    With `real`, a first row shows held-out images of each class. Returns `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per_side = 2 if samples_per_class >= 4 else 1
    cells = []
    if real is not None:
        images, labels = real.test_images.cpu().numpy()[:, 0], real.test_labels.cpu().numpy()
        cells.append(("held-out data", [images[labels == k] for k in range(NUM_CLASSES)]))
    for name, samples in rows.items():
        x = samples.cpu().numpy()[:, 0].reshape(NUM_CLASSES, samples_per_class, *IMAGE_SHAPE[1:])
        cells.append((name, list(x)))
    fig = Figure(figsize=(1.0 * NUM_CLASSES + 1.4, 1.05 * len(cells) + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cells), NUM_CLASSES, squeeze=False)
    cmap = __import__("matplotlib").colormaps["gray"].with_extremes(bad="white")
    for r, (name, per_class) in enumerate(cells):
        for k in range(NUM_CLASSES):
            ax = axes[r, k]
            ax.imshow(_mosaic(per_class[k], per_side), cmap=cmap, vmin=-1, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(k), fontsize=9)
            if k == 0:
                ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.13, right=0.99, top=0.92 if title else 0.97, bottom=0.01,
                        wspace=0.05, hspace=0.08)
    fig.savefig(path, dpi=100)
    return path


def acceptance_plot(per_level: Dict[str, List[float]], path: str) -> str:
    """Acceptance per level (x: level t, from T down to 1) of each named run; returns `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, rates in per_level.items():
        levels = list(range(len(rates), 0, -1))
        ax.plot(levels, rates, marker=".", lw=1, label=name.replace("/", ": "))
    ax.set_xlabel("level t (sampling runs from T down to 1)")
    ax.set_ylabel("acceptance rate")
    ax.set_ylim(-0.02, 1.02)
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


# -- command line ---------------------------------------------------------------------------
def _add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quick", action="store_true",
                        help="T = 5, tiny nets, a few training steps, 2 samples per class")
    parser.add_argument("--seeds", type=int, default=1, help="sampling seeds (default 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="guidance scale λ, the same for all samplers (default 1)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--T", type=int, default=None, help="number of levels (default 40)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps of each diffusion model (default 2000)")
    parser.add_argument("--samples-per-class", type=int, default=None,
                        help="samples per class and sampler (default 20)")
    parser.add_argument("--steps-per-level", type=int, default=None,
                        help="MCMC steps per level K (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    return parser


def _run_from_args(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else DEFAULT
    overrides = {k: v for k, v in (("T", args.T), ("train_steps", args.train_steps),
                                   ("samples_per_class", args.samples_per_class),
                                   ("steps_per_level", args.steps_per_level)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    command = commandline.recorded_command(args)
    run_experiment(args.out, quick=args.quick, seeds=args.seeds, scale=args.scale,
                   seed=args.seed, device=args.device, settings=settings,
                   progress=not args.no_progress, threads=args.threads, command=command)
    print(os.path.join(args.out, "results.md"))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``digits`` command to an argparse subparsers object (see commandline.register)."""
    return commandline.register(subparsers, "digits", "guided diffusion on the 8×8 digits (the paper's Table 2, SPEC 6.2)",
                                __doc__.split("\n\n")[0], _add_arguments, _run_from_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m compose.experiments.digits --out DIR ...``; returns an exit status."""
    return commandline.module_main("compose.experiments.digits", __doc__.split("\n\n")[0],
                                   _add_arguments, _run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
