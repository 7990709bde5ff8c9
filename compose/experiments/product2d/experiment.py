"""The 2D product composition (the paper's section 5.1, Table 1; shared/experiments/product2d.md).

Two diffusion models, one trained on a ring of 8 Gaussians and one on a uniform bar, are composed
into their product (the ring restricted to the bar) and sampled with every sampler of Table 1:

    Reverse, U-LA, LA-{1,3,8}-line, U-HMC, HMC-{1,3,8}-line, HMC-curve

in three blocks:

    oracle   the analytic components seen score-only (`ScoreModel.from_analytic`): exact scores,
             Δ integrated on the line or curve. Separates sampler error from model error.
    score    trained ε-networks (`ScoreModel`): Δ integrated on the line or curve.
    energy   trained energy networks (`EnergyModel`): exact Δ, no extra evaluations, so the
             line/curve variants collapse to one "LA" and one "HMC" row.

`run_experiment` trains (or reuses) the four models of each trial, runs the samplers, and writes
``results.md``, ``results.json``, ``figure1.png`` and the samples to an output directory.
`register(subparsers)` adds the ``product2d`` command to an argparse parser;
``python -m compose.experiments.product2d`` runs it directly.
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
from compose.experiments.reporting import format_mean_std, mean_std, scatter_row, seed_from, write_json

import compose
from compose import metrics
from compose.experiments.product2d import likelihood
from compose.components import Component, EnergyModel, GaussianMixture, ScoreModel, UniformBox
from compose.experiments.product2d.target import (BAR_HIGH, BAR_LOW, RING_MEANS, RING_STD,
                                                  exact_product_samples)
from compose.kernels import Kernel
from compose.models.nets import ResidualMLP
from compose.schedule import Schedule
from compose.models.checkpoints import read_checkpoint, save_checkpoint
from compose.models.training import plot_loss_curve, train_diffusion

BLOCKS = ("oracle", "score", "energy")
PARAMETERISATIONS = ("score", "energy")
COMPONENT_NAMES = ("ring", "bar")


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sets the numbers of a run (the paper's values by default).

    Schedule: cosine with T levels. Training: `train_steps` Adam steps at `lr` on batches of
    `batch_size` fresh samples, EMA decay `ema_decay`, a `ResidualMLP(hidden, inner, embed,
    blocks)`. Sampling: `num_samples` chains, K = `steps_per_level` MCMC steps per level,
    η = `la_step` for (U-)LA, ε = `hmc_step`, L = `num_leapfrog`, `damping`, `mass` for (U-)HMC,
    momentum negated on rejection when `negate_on_reject` (the exact form; the published code
    keeps +v').
    """

    T: int = 100
    steps_per_level: int = 10
    num_samples: int = 2000
    train_steps: int = 15001
    batch_size: int = 2000
    lr: float = 1e-3
    ema_decay: float = 0.999
    hidden: int = 128
    inner: int = 256
    embed: int = 32
    blocks: int = 4
    la_step: float = 0.001
    hmc_step: float = 0.03
    num_leapfrog: int = 3
    damping: float = 0.5
    mass: float = 1.0
    negate_on_reject: bool = True

    def schedule(self) -> Schedule:
        """The cosine schedule with T levels."""
        return Schedule.cosine(self.T)

    def net_config(self) -> dict:
        """Keyword arguments of the `ResidualMLP` of every model."""
        return {"dim": 2, "T": self.T, "hidden": self.hidden, "inner": self.inner,
                "embed": self.embed, "blocks": self.blocks}

    def train_config(self) -> dict:
        """The training settings recorded in (and matched against) each checkpoint."""
        return {"steps": self.train_steps, "batch_size": self.batch_size, "lr": self.lr,
                "ema_decay": self.ema_decay}

    def is_paper_sampling(self) -> bool:
        """Whether T, K and L are the paper's (so evaluation counts compare with its code)."""
        return self.T == 100 and self.steps_per_level == 10 and self.num_leapfrog == 3


#: The paper's settings (product2d.md).
PAPER = Settings()
#: Small enough for an end-to-end test in seconds: T = 10, 300 training steps of tiny networks
#: (EMA decay 0.95 so the EMA weights have left their zero-output initialisation), 200 chains.
QUICK = Settings(T=10, num_samples=200, train_steps=300, batch_size=256, ema_decay=0.95,
                 hidden=32, inner=64, embed=8, blocks=2)


# -- samplers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec:
    """One row of Table 1.

    Attributes:
        name: the row's name, e.g. "HMC-3-line".
        family: "reverse", "ula", "mala", "uhmc" or "hmc".
        make_kernel: settings ↦ a compose kernel (None for the reverse process).
        path, points: compile options for Δ of score-only terms (`compose.compile`).
        reverse_step: take an ancestral step after each level (only the reverse process here).
    """

    name: str
    family: str
    make_kernel: Callable[[Settings], Optional[Kernel]]
    path: str = "line"
    points: int = 0
    reverse_step: bool = False

    @property
    def adjusted(self) -> bool:
        return self.family in ("mala", "hmc")

    def energy_name(self) -> str:
        """The row name in the energy block, where Δ is exact and line/curve variants coincide."""
        return {"mala": "LA", "hmc": "HMC"}.get(self.family, self.name)


def _reverse(settings: Settings) -> None:
    return None


def _ula(settings: Settings) -> Kernel:
    return compose.ULA(settings.la_step)


def _mala(settings: Settings) -> Kernel:
    return compose.MALA(settings.la_step)


def _hmc(adjusted: bool) -> Callable[[Settings], Kernel]:
    def make(settings: Settings) -> Kernel:
        return compose.HMC(settings.hmc_step, num_leapfrog=settings.num_leapfrog,
                           damping=settings.damping, mass=settings.mass, adjusted=adjusted,
                           negate_on_reject=settings.negate_on_reject)
    return make


def _specs() -> Dict[str, SamplerSpec]:
    specs = [SamplerSpec("Reverse", "reverse", _reverse, reverse_step=True),
             SamplerSpec("U-LA", "ula", _ula)]
    specs += [SamplerSpec(f"LA-{n}-line", "mala", _mala, "line", n) for n in (1, 3, 8)]
    specs.append(SamplerSpec("U-HMC", "uhmc", _hmc(False)))
    specs += [SamplerSpec(f"HMC-{n}-line", "hmc", _hmc(True), "line", n) for n in (1, 3, 8)]
    specs.append(SamplerSpec("HMC-curve", "hmc", _hmc(True), "curve", 0))
    return {s.name: s for s in specs}


#: The samplers of Table 1 by name, in the table's order. Reverse: T ancestral steps with the
#: summed score, small (posterior) variance, no noise at the last step. The others: pure annealed
#: MCMC, K steps per level from T down to 1, no reverse step; η = 0.001 (LA); ε = 0.03, L = 3,
#: damping 0.5, mass 1 (HMC), momentum negated on rejection (our exact default; the published
#: code keeps +v').
SAMPLERS: Dict[str, SamplerSpec] = _specs()
#: The samplers quick mode runs unless told otherwise.
QUICK_SAMPLERS = ("Reverse", "U-LA", "LA-1-line", "U-HMC", "HMC-1-line", "HMC-curve")

#: Evaluations of the product per sample made by the published code at T = 100, K = 10, L = 3,
#: and what the algorithm needs with scores reused (product2d.md, "Costs").
PUBLISHED_EVALUATIONS = {
    "Reverse": (100, 100), "U-LA": (1980, 990),
    "LA-1-line": (5000, 2000), "LA-3-line": (7000, 4000), "LA-8-line": (12000, 9000),
    "U-HMC": (5940, 2970),
    "HMC-1-line": (5940 + 990 * 3, 990 * 4), "HMC-3-line": (5940 + 990 * 5, 990 * 6),
    "HMC-8-line": (5940 + 990 * 10, 990 * 11), "HMC-curve": (3960, 2970),
}


def select_samplers(names: Optional[Sequence[str]]) -> List[SamplerSpec]:
    """The specs named (all of Table 1 if None), in the table's order; ValueError on unknown names."""
    if names is None:
        return list(SAMPLERS.values())
    names = list(names)
    unknown = [n for n in names if n not in SAMPLERS]
    if unknown:
        raise ValueError(f"samplers: unknown {', '.join(unknown)}; choose from {', '.join(SAMPLERS)}")
    return [s for s in SAMPLERS.values() if s.name in names]


def needed_evaluations(spec: SamplerSpec, settings: Settings, exact: bool = False) -> int:
    """Evaluations of each component per sample that `spec` needs (SPEC section 9).

    Per level: Reverse 1; U-LA K; LA-n-line 1 + K(1 + n); U-HMC and HMC 1 + L·K, HMC-n-line
    K·n more, HMC-curve none more. With `exact` (energy components) no interior points.
    """
    T, K, L = settings.T, settings.steps_per_level, settings.num_leapfrog
    n = 0 if exact else spec.points
    per_level = {"reverse": 1, "ula": K, "mala": 1 + K * (1 + n), "uhmc": 1 + L * K,
                 "hmc": 1 + L * K + (K * n if spec.path == "line" else K * n * L)}[spec.family]
    return T * per_level


# -- components and models ------------------------------------------------------------------
def analytic_components(schedule: Schedule) -> Tuple[GaussianMixture, UniformBox]:
    """(ring, bar): the two analytic components on `schedule`, named "ring" and "bar"."""
    ring = GaussianMixture(RING_MEANS, RING_STD, schedule=schedule, name="ring")
    bar = UniformBox(BAR_LOW, BAR_HIGH, schedule=schedule, name="bar")
    return ring, bar


def oracle_components(schedule: Schedule) -> Tuple[ScoreModel, ScoreModel]:
    """(ring, bar) as score-only models with exact noise predictions (no log-density)."""
    ring, bar = analytic_components(schedule)
    return ScoreModel.from_analytic(ring, name="ring"), ScoreModel.from_analytic(bar, name="bar")




def checkpoint_path(out_dir, trial: int, component: str, parameterisation: str) -> str:
    """Where the EMA weights of one model of one trial live: OUT/checkpoints/trialI_NAME_PARAM.pt."""
    return os.path.join(os.fspath(out_dir), "checkpoints",
                        f"trial{trial}_{component}_{parameterisation}.pt")


def _matching_checkpoint(path: str, schedule: Schedule, settings: Settings, parameterisation: str,
                         expected: dict) -> Tuple[Optional[torch.nn.Module], dict]:
    """(the stored net, its `extra` dict) if `path` holds a checkpoint of exactly this model and
    training; else (None, {}). An unreadable file counts as absent, and says so on stderr."""
    if not os.path.exists(path):
        return None, {}
    try:
        net, _, stored_param, extra = read_checkpoint(path, schedule)
    except (ValueError, OSError) as err:
        print(f"product2d: {err}; retraining", file=sys.stderr, flush=True)
        return None, {}
    if (stored_param != parameterisation or net.config() != settings.net_config()
            or {k: extra.get(k) for k in expected} != expected):
        return None, {}
    return net, extra


def train_models(out_dir, trial: int, settings: Settings = PAPER, seed: int = 0,
                 parameterisations: Sequence[str] = PARAMETERISATIONS, device=None,
                 progress: bool = True) -> Tuple[Dict[str, Tuple[Component, Component]], List[dict]]:
    """Train (or reuse from OUT/checkpoints) the ring and bar models of one trial.

    Each model is a `ResidualMLP` trained with `train_diffusion` on fresh samples of its analytic
    component; its EMA weights are saved with the schedule, the architecture, the training
    settings, the seed and the loss history, and a loss-curve PNG is written beside them. A
    checkpoint is reused when its schedule, architecture, parameterisation, training settings,
    trial and seed all match.

    Args:
        out_dir: output directory. trial: trial index. settings: network and training settings.
        seed: base seed (every model gets its own stream from (seed, trial, component, param)).
        parameterisations: which of "score", "energy" to provide.
        device: where the nets live (default CPU).
    Returns:
        ({"score": (ring, bar) ScoreModels, "energy": (ring, bar) EnergyModels}, a list of one
        dict per model: component, parameterisation, path, reused, seconds, final_loss).
    """
    device = torch.device(device or "cpu")
    schedule = settings.schedule()
    os.makedirs(os.path.join(os.fspath(out_dir), "checkpoints"), exist_ok=True)
    models, info = {}, []
    for p_index, param in enumerate(PARAMETERISATIONS):
        if param not in parameterisations:
            continue
        wrap = ScoreModel if param == "score" else EnergyModel
        pair = []
        for c_index, component in enumerate(analytic_components(schedule)):
            path = checkpoint_path(out_dir, trial, component.name, param)
            model_seed = seed_from(seed, trial, c_index, p_index)
            expected = {"experiment": "product2d", "component": component.name, "trial": trial,
                        "seed": model_seed, "train": settings.train_config()}
            net, stored = _matching_checkpoint(path, schedule, settings, param, expected)
            reused = net is not None
            if reused:
                losses, seconds = stored.get("losses", []), stored.get("seconds", math.nan)
            else:
                with torch.random.fork_rng(devices=[]):       # the net's initial weights
                    torch.manual_seed(model_seed)
                    net = ResidualMLP(**settings.net_config())
                net = net.to(device)
                data_gen = torch.Generator().manual_seed(seed_from(model_seed, 1))
                gen = torch.Generator(device).manual_seed(seed_from(model_seed, 2))

                def data(n, _generator, component=component, data_gen=data_gen):
                    return component.sample(n, data_gen).to(device)

                result = train_diffusion(net, schedule, data, parameterisation=param,
                                         steps=settings.train_steps, batch_size=settings.batch_size,
                                         lr=settings.lr, ema_decay=settings.ema_decay,
                                         generator=gen, progress=progress)
                net, losses, seconds = result.ema_net, result.losses, result.seconds
                save_checkpoint(path, net, schedule, param,
                                extra=dict(expected, losses=[float(v) for v in losses],
                                           seconds=float(seconds)))
            png = path[:-3] + "_loss.png"
            if losses and (not reused or not os.path.exists(png)):
                plot_loss_curve(losses, png, title=f"trial {trial}: {component.name}, {param} "
                                f"({len(losses)} steps)")
            net = net.to(device).eval().requires_grad_(False)
            pair.append(wrap(net, schedule, name=component.name, event_shape=(2,)))
            info.append({"trial": trial, "component": component.name, "parameterisation": param,
                         "path": path, "reused": reused, "seconds": float(seconds),
                         "final_loss": float(np.mean(losses[-100:])) if losses else math.nan})
        models[param] = tuple(pair)
    return models, info


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
        acceptance (mean over levels, nan for the reverse process), divergences, evaluations
        (max over components, per sample), evaluations_per_component, seconds (wall time of the
        sampling run, metrics excluded).
    """
    ring, bar = components
    target = compose.compile(ring * bar, path=spec.path, points=spec.points)
    kernel = spec.make_kernel(settings)
    steps = settings.steps_per_level if kernel is not None else 0
    start = time.perf_counter()
    result = compose.sample(target, kernel, num_samples, steps_per_level=steps,
                            reverse_step=spec.reverse_step, generator=generator,
                            event_shape=(2,), progress=progress)
    seconds = time.perf_counter() - start
    samples = result.samples.detach().cpu().float()
    if reference is None:
        reference = exact_product_samples(num_samples, torch.Generator().manual_seed(
            seed_from(generator.initial_seed(), 99)))
    per_component = result.diagnostics.evaluations_per_sample()
    return {"sampler": spec.name, "samples": samples, "metrics": score_samples(samples, reference),
            "acceptance": result.diagnostics.mean_acceptance() if spec.adjusted else
            (1.0 if kernel is not None else math.nan),
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
                   seed: int = 0, progress: bool = True, settings: Optional[Settings] = None,
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
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    schedule = settings.schedule()
    results = {"settings": dataclasses.asdict(settings), "trials": trials, "seed": seed,
               "blocks": blocks, "samplers": [s.name for s in specs], "device": str(device),
               "threads": torch.get_num_threads(), "command": command,
               "started": datetime.datetime.now().isoformat(timespec="seconds"),
               "environment": {"python": platform.python_version(), "torch": torch.__version__,
                               "machine": platform.machine(), "cpus": os.cpu_count()},
               "training": [], "runs": []}
    try:
        for trial in range(trials):
            _say(progress, f"trial {trial + 1}/{trials}")
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
                    _say(progress, f"  {block:6s} {row:11s} W2 {run['metrics']['w2']:.4f}  "
                         f"LL {run['metrics']['ll']:.3f}  acc {run['acceptance']:.3f}  "
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


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)




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
    lines = ["# 2D product composition (Table 1)", ""]
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
              "means. Mean ± std (ddof 1) over trials. Acceptance: mean over levels. Evaluations: "
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
            acc = "—" if math.isnan(e["acceptance"]) else f"{e['acceptance']:.3f}"
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
             "sample. Published counts are for T = 100, K = 10, L = 3 (product2d.md)"
             + ("." if paper else f"; this run uses T = {s.T}, K = {s.steps_per_level}, "
                f"L = {s.num_leapfrog}, so no ratio is given."),
             "Our counts include one evaluation per level at the chains' starting point (the "
             "score there belongs to the previous level), which the \"needed\" column of "
             "product2d.md leaves out.", "",
             "| sampler | ours (measured) | ours (needed, SPEC §9) | published code | needed "
             "(product2d.md) | ours / published | mean wall time (s) |",
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


# -- command line ---------------------------------------------------------------------------
def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value}")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--trials", type=_positive, default=1, help="number of trials (default 1)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quick", action="store_true",
                        help="small T, short training, tiny nets, 200 samples, few samplers")
    parser.add_argument("--samplers", nargs="+", metavar="NAME", default=None,
                        choices=list(SAMPLERS),
                        help=f"sampler names (default all): {' '.join(SAMPLERS)}")
    parser.add_argument("--blocks", nargs="+", choices=BLOCKS, default=list(BLOCKS),
                        help="which blocks to run (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=_positive, default=None,
                        help="training steps per model (default 15001, quick 300)")
    parser.add_argument("--batch-size", type=_positive, default=None,
                        help="training batch size (default 2000, quick 256)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="EMA decay (default 0.999, quick 0.95)")
    parser.add_argument("--num-samples", type=_positive, default=None,
                        help="chains per sampler (default 2000, quick 200)")
    parser.add_argument("--T", type=_positive, default=None, help="number of levels (default 100)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    return parser


def _run_from_args(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else PAPER
    overrides = {k: v for k, v in (("train_steps", args.train_steps), ("batch_size", args.batch_size),
                                   ("ema_decay", args.ema_decay),
                                   ("num_samples", args.num_samples), ("T", args.T)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    command = commandline.recorded_command(args)
    run_experiment(args.out, trials=args.trials, quick=args.quick, samplers=args.samplers,
                   blocks=args.blocks, seed=args.seed, progress=not args.no_progress,
                   settings=settings, device=args.device, threads=args.threads, command=command)
    print(os.path.join(args.out, "results.md"))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``product2d`` command to an argparse subparsers object (see commandline.register)."""
    return commandline.register(subparsers, "product2d", "the 2D product composition (the paper's Table 1)",
                                __doc__.split("\n\n")[0], _add_arguments, _run_from_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m compose.experiments.product2d --out DIR ...``; returns an exit status."""
    return commandline.module_main("compose.experiments.product2d", __doc__.split("\n\n")[0],
                                   _add_arguments, _run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
