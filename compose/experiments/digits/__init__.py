"""Guided diffusion on the 8×8 digits (docs/experiments.md, section 2; the stand-in for the
paper's Table 2).

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
``python -m compose.experiments.digits`` runs it directly. One module per job:

    settings   `Settings`, the reduced real run (`DEFAULT`) and a quick variant (`QUICK`)
    samplers   the rows of the table and their kernels
    target     the guided target for all classes in one batch (`RequestedClass`)
    models     training the four networks, reusing matching checkpoints
    run        step-size tuning, one sampler scored, the whole experiment
    report     summaries over seeds and results.md
    figures    sample grids and acceptance per level
    command    ``compose experiment digits`` and ``python -m compose.experiments.digits``
"""
from .command import main, register
from .figures import acceptance_plot, sample_grid
from .models import ROLES, load_model, train_models
from .report import results_markdown, summarise
from .run import run_experiment, run_sampler, tune
from .samplers import EXTRA_SAMPLER_NAMES, SamplerSpec, make_kernel, sampler_specs
from .settings import DEFAULT, PARAMETERISATIONS, QUICK, SAMPLER_NAMES, Settings
from .target import RequestedClass, class_labels, guided_target, wrap_model

__all__ = [
    "main", "register", "acceptance_plot", "sample_grid", "ROLES", "load_model", "train_models",
    "results_markdown", "summarise", "run_experiment", "run_sampler", "tune", "SamplerSpec",
    "make_kernel", "sampler_specs", "EXTRA_SAMPLER_NAMES", "DEFAULT", "PARAMETERISATIONS", "QUICK", "SAMPLER_NAMES",
    "Settings", "RequestedClass", "class_labels", "guided_target", "wrap_model",
]
