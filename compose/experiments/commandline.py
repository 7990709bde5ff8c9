"""The command-line wiring every experiment shares: `compose experiment NAME` and
`python -m compose.experiments.NAME`, both recording the command line in the results."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Callable, Optional, Sequence


def recorded_command(args: argparse.Namespace) -> str:
    """The command line to write into a results file."""
    command = getattr(args, "command_line", None)
    if command is None:
        program = "compose" if os.path.basename(sys.argv[0]) == "compose" else sys.argv[0]
        command = " ".join(shlex.quote(a) for a in [program] + sys.argv[1:])
    return command


def register(subparsers, name: str, help: str, description: str,
             add_arguments: Callable, run: Callable) -> argparse.ArgumentParser:
    """Add experiment `name` to an argparse subparsers object; ``args.func(args)`` runs it."""
    parser = subparsers.add_parser(name, help=help, description=description)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def module_main(module: str, description: str, add_arguments: Callable, run: Callable,
                argv: Optional[Sequence[str]] = None) -> int:
    """``python -m <module> ...``; a ValueError becomes an argparse error. Returns the status."""
    parser = add_arguments(argparse.ArgumentParser(prog=f"python -m {module}", description=description))
    args = parser.parse_args(argv)
    args.command_line = f"python -m {module} " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        return run(args)
    except ValueError as err:
        parser.error(str(err))


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value}")
    return value


def add_output_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every experiment takes after its own: torch threads and progress output."""
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: only when stderr is a terminal); "
                             "--no-progress also silences the status lines")
    return parser


def status_printer(progress: Optional[bool]) -> Callable[[str], None]:
    """`say(text)`: a status line on stderr, unless progress output is off (`progress=False`)."""
    if progress is False:
        return lambda text: None
    return lambda text: print(text, file=sys.stderr, flush=True)
