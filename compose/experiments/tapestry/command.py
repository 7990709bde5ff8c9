"""The image tapestry on the 8×8 digits (the paper's section 5.4; docs/windows.md).

The command line of the experiment: ``compose experiment tapestry`` (`register`) and
``python -m compose.experiments.tapestry`` (`main`), both calling `run.run_experiment`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Optional, Sequence

from compose.experiments import commandline

from .run import run_experiment
from .settings import DEFAULT, QUICK


def _add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quick", action="store_true",
                        help="T = 4, a tiny UNet, a few training steps, 4 chains per canvas")
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--scale", type=float, default=None,
                        help="guidance scale w for every window (default: the search picks it)")
    parser.add_argument("--chains", type=int, default=None, help="chains per canvas (default 32)")
    parser.add_argument("--train-steps", type=int, default=None,
                        help="training steps of the UNet (default 3000)")
    return commandline.add_output_options(parser)


def _run_from_args(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else DEFAULT
    overrides = {k: v for k, v in (("chains", args.chains), ("train_steps", args.train_steps))
                 if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    run_experiment(args.out, quick=args.quick, seeds=args.seeds, seed=args.seed,
                   settings=settings, scale=args.scale, progress=args.progress,
                   threads=args.threads, command=commandline.recorded_command(args))
    print(os.path.join(args.out, "results.md")
          + ("  (a smoke test: --quick numbers mean nothing)" if args.quick else ""))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``tapestry`` command to an argparse subparsers object."""
    return commandline.register(subparsers, "tapestry",
                                "windows of a canvas: the paper's image tapestry on the digits",
                                __doc__.split("\n\n")[0], _add_arguments, _run_from_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m compose.experiments.tapestry --out DIR ...``; returns an exit status."""
    return commandline.module_main("compose.experiments.tapestry", __doc__.split("\n\n")[0],
                                   _add_arguments, _run_from_args, argv)
