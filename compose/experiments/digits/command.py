"""Guided diffusion on the 8×8 digits (docs/experiments.md, section 2; the stand-in for the
paper's Table 2).

The command line of the experiment: ``compose experiment digits`` (`register`) and
``python -m compose.experiments.digits`` (`main`), both calling `run.run_experiment`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Optional, Sequence

from compose.experiments import commandline

from .run import run_experiment
from .samplers import EXTRA_SAMPLER_NAMES
from .settings import DEFAULT, PARAMETERISATIONS, QUICK


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
    parser.add_argument("--samplers", nargs="+", default=None, metavar="NAME",
                        help="rows to run (default the table's five); beyond the table: "
                             + " ".join(EXTRA_SAMPLER_NAMES))
    parser.add_argument("--parameterisations", nargs="+", choices=PARAMETERISATIONS,
                        default=list(PARAMETERISATIONS),
                        help="which diffusion models to train and sample (default both)")
    return commandline.add_output_options(parser)


def _run_from_args(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else DEFAULT
    overrides = {k: v for k, v in (("T", args.T), ("train_steps", args.train_steps),
                                   ("samples_per_class", args.samples_per_class),
                                   ("steps_per_level", args.steps_per_level)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    command = commandline.recorded_command(args)
    run_experiment(args.out, quick=args.quick, seeds=args.seeds, scale=args.scale,
                   seed=args.seed, device=args.device, settings=settings,
                   progress=args.progress, threads=args.threads, command=command,
                   samplers=args.samplers, parameterisations=args.parameterisations)
    print(os.path.join(args.out, "results.md")
          + ("  (a smoke test: --quick numbers mean nothing)" if args.quick else ""))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``digits`` command to an argparse subparsers object (see commandline.register)."""
    return commandline.register(subparsers, "digits",
                                "guided diffusion on the 8×8 digits (the paper's Table 2; docs/experiments.md)",
                                __doc__.split("\n\n")[0], _add_arguments, _run_from_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m compose.experiments.digits --out DIR ...``; returns an exit status."""
    return commandline.module_main("compose.experiments.digits", __doc__.split("\n\n")[0],
                                   _add_arguments, _run_from_args, argv)
