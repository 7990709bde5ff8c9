"""The 2D product composition (the paper's section 5.1, Table 1; docs/experiments.md).

The command line of the experiment: ``compose experiment product2d`` (`register`) and
``python -m compose.experiments.product2d`` (`main`), both calling `run.run_experiment`.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Optional, Sequence

from compose.experiments import commandline

from .run import run_experiment
from .samplers import SAMPLERS
from .settings import BLOCKS, PAPER, QUICK


# -- command line ---------------------------------------------------------------------------
def _add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--trials", type=commandline.positive_int, default=1,
                        help="number of trials (default 1)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quick", action="store_true",
                        help="small T, short training, tiny nets, 200 samples, few samplers")
    parser.add_argument("--samplers", nargs="+", metavar="NAME", default=None,
                        choices=list(SAMPLERS),
                        help=f"sampler names (default all): {' '.join(SAMPLERS)}")
    parser.add_argument("--blocks", nargs="+", choices=BLOCKS, default=list(BLOCKS),
                        help="which blocks to run (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=commandline.positive_int, default=None,
                        help="training steps per model (default 15001, quick 300)")
    parser.add_argument("--batch-size", type=commandline.positive_int, default=None,
                        help="training batch size (default 2000, quick 256)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="EMA decay (default 0.999, quick 0.95)")
    parser.add_argument("--num-samples", type=commandline.positive_int, default=None,
                        help="chains per sampler (default 2000, quick 200)")
    parser.add_argument("--T", type=commandline.positive_int, default=None, help="number of levels (default 100)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    return commandline.add_output_options(parser)


def _run_from_args(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else PAPER
    overrides = {k: v for k, v in (("train_steps", args.train_steps), ("batch_size", args.batch_size),
                                   ("ema_decay", args.ema_decay),
                                   ("num_samples", args.num_samples), ("T", args.T)) if v is not None}
    settings = dataclasses.replace(settings, **overrides)
    command = commandline.recorded_command(args)
    run_experiment(args.out, trials=args.trials, quick=args.quick, samplers=args.samplers,
                   blocks=args.blocks, seed=args.seed, progress=args.progress,
                   settings=settings, device=args.device, threads=args.threads, command=command)
    print(os.path.join(args.out, "results.md")
          + ("  (a smoke test: --quick numbers mean nothing)" if args.quick else ""))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``product2d`` command to an argparse subparsers object (see commandline.register)."""
    return commandline.register(subparsers, "product2d", "the 2D product composition (the paper's Table 1)",
                                __doc__.split("\n\n")[0], _add_arguments, _run_from_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m compose.experiments.product2d --out DIR ...``; returns an exit status."""
    return commandline.module_main("compose.experiments.product2d", __doc__.split("\n\n")[0],
                                   _add_arguments, _run_from_args, argv)
