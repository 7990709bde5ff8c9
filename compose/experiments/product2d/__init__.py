"""The 2D product composition (the paper's section 5.1, Table 1; docs/experiments.md, section 1).

Two diffusion models, one trained on a ring of 8 Gaussians and one on a uniform bar, are composed
into their product (the ring restricted to the bar) and sampled with every sampler of Table 1:

    Reverse, U-LA, LA-{1,3,8}-line, U-HMC, HMC-{1,3,8}-line, HMC-curve

in three blocks:

    oracle   the analytic components seen score-only (`ScoreModel.from_analytic`): exact scores,
             Δ integrated on the line or curve. Separates sampler error from model error.
    score    trained ε-networks (`ScoreModel`): Δ integrated on the line or curve.
    energy   trained energy networks (`EnergyModel`): exact Δ, no extra evaluations, so the
             line/curve variants collapse to one "LA" and one "HMC" row.

One module per job:

    settings     `Settings`, the paper's values (`PAPER`) and a quick variant (`QUICK`)
    samplers     the rows of Table 1 (`SAMPLERS`) and the evaluations each needs
    target       the ring and the bar: geometry, exact product samples, components
    likelihood   the LL metric with the extended bar, and the paper's reporting scales
    models       training the four networks of a trial, reusing matching checkpoints
    run          one sampler scored (`run_sampler`), the whole experiment (`run_experiment`)
    report       summaries over trials, results.md, Figure 1
    command      ``compose experiment product2d`` and ``python -m compose.experiments.product2d``
    demo         ``compose demo``: the exact components with five samplers, in about a minute
"""
from .command import main, register
from .models import checkpoint_path, train_models
from .report import BLOCK_TITLES, figure1, results_markdown, summarise
from .run import block_samplers, run_experiment, run_sampler, score_samples
from .samplers import (PUBLISHED_EVALUATIONS, QUICK_SAMPLERS, SAMPLERS, SamplerSpec,
                       needed_evaluations, select_samplers)
from .settings import BLOCKS, COMPONENT_NAMES, PAPER, PARAMETERISATIONS, QUICK, Settings
from .target import analytic_components, exact_product_samples, oracle_components

__all__ = [
    "main", "register", "checkpoint_path", "train_models", "BLOCK_TITLES", "figure1",
    "results_markdown", "summarise", "block_samplers", "run_experiment", "run_sampler", "score_samples",
    "PUBLISHED_EVALUATIONS", "QUICK_SAMPLERS", "SAMPLERS", "SamplerSpec", "needed_evaluations",
    "select_samplers", "BLOCKS", "COMPONENT_NAMES", "PAPER", "PARAMETERISATIONS", "QUICK",
    "Settings", "analytic_components", "exact_product_samples", "oracle_components",
]
