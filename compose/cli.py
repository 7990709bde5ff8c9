"""The `compose` command line.

    compose plan "<expr>" --components <file.py or module> [--kernel MALA] [--steps K]
                 [--samples N] [--path line|curve] [--points n] [--rule trapezoid|lobatto]
                 [--reverse-step] [--event-shape D,D,...] [--json]
    compose sample "<expr>" --components ... --kernel KERNEL --step-size X --out DIR [...]
                 (blocks, checkpoints, --resume; under torchrun, sharded over processes)
    (both: --model NAME=PATH_OR_ID binds a diffusers folder or hub id, instead of or beside
     --components; with --null-class [NAME=]C, and --dtype float16|bfloat16 for its networks)
    compose demo [...]            (compose.experiments.product2d.demo; arguments passed through)

Every subcommand is registered in `commands()`: a name, a help line, a function that adds its
arguments to an argparse parser, and a function that runs it and returns the exit status.
A composition error or a bad components file prints its message to stderr and exits with 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from .compiler.quadrature import RULES
from .errors import CompositionError
from .smc.resampling import SCHEMES as SMC_SCHEMES

#: Exit status for a usage, composition or components-file error (as argparse uses).
USAGE_ERROR = 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130


class CommandError(Exception):
    """A user error of a subcommand: printed as 'compose <command>: error: <message>', exit 2."""


@dataclass(frozen=True)
class Command:
    """A subcommand: `configure(parser)` adds its arguments, `run(args)` returns the exit
    status. With `passthrough`, arguments argparse does not know go to `args.rest`."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    passthrough: bool = False


def commands() -> Dict[str, Command]:
    """All subcommands, by name: register new ones here."""
    return {
        "plan": Command("print the sampler plan of a composition", _configure_plan, _run_plan),
        "sample": Command("sample a composition into a directory: blocks, checkpoints, "
                          "torchrun", _configure_sample, _run_sample),
        "demo": Command("run the demonstration (the 2D product with exact components); "
                        "arguments are passed through",
                        lambda parser: None, _run_demo, passthrough=True),
        "experiment": Command("run one of the paper's experiments (product2d, digits, tapestry)",
                              _configure_experiment, lambda args: args.func(args)),
    }


def _configure_experiment(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="experiment", metavar="experiment")
    sub.required = True
    from .experiments import digits, product2d, tapestry          # imported only when asked for
    product2d.register(sub)
    digits.register(sub)
    tapestry.register(sub)


def build_parser(registry: Optional[Mapping[str, Command]] = None) -> argparse.ArgumentParser:
    """The argument parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="compose", description="Compose diffusion models and sample the composition with "
                                    "annealed MCMC.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    for name, command in (registry or commands()).items():
        # A pass-through command leaves -h to the command itself.
        command.configure(sub.add_parser(name, help=command.help, description=command.help,
                                         add_help=not command.passthrough))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on a user error)."""
    registry = commands()
    parser = build_parser(registry)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    command = registry[args.command]
    if rest and not command.passthrough:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return int(command.run(args) or 0)
    except KeyboardInterrupt:
        _interrupted(args, sys.argv[1:] if argv is None else list(argv))
        return INTERRUPTED
    except CompositionError as error:
        print(f"compose {args.command}: error: {error}", file=sys.stderr)
    except CommandError as error:
        print(f"compose {args.command}: error: {error}", file=sys.stderr)
    except BrokenPipeError:             # output piped into e.g. `head`, which has quit
        sys.stdout = open(os.devnull, "w")
        return 0
    return USAGE_ERROR


def _interrupted(args: argparse.Namespace, argv: List[str]) -> None:
    """Ctrl-C: one line saying so, and for `compose sample` how to continue the run."""
    if os.environ.get("RANK", "0") != "0":         # under torchrun, rank 0 speaks for all
        return
    message = f"compose {args.command}: interrupted"
    out = getattr(args, "out", None)
    if args.command == "sample" and out is not None:
        if (Path(out) / "run.json").exists():
            again = argv if "--resume" in argv else argv + ["--resume"]
            message += (f"; the finished blocks and checkpoints are kept in {out}. Continue the "
                        f"run with:\n  compose {shlex.join(again)}")
            if "TORCHELASTIC_RUN_ID" in os.environ:
                message += "\n(under torchrun: the same torchrun command with --resume)"
        else:
            message += f"; nothing was written to {out}"
    print(message, file=sys.stderr, flush=True)


def _option_error(error: ValueError, args: argparse.Namespace) -> "CommandError":
    """A library error 'name: ...' about a value given by an option, as '--option: ...'."""
    message = str(error)
    name, colon, rest = message.partition(": ")
    option = OPTION_OF.get(name) or (f"--{name.replace('_', '-')}" if name in vars(args)
                                     and name not in ("expression", "command", "rest") else None)
    return CommandError(f"{option}: {rest}" if colon and option else message)


#: Library parameter names whose option is not --name-with-dashes.
OPTION_OF = {"band": "--adapt-band", "warmup_steps": "--adapt-warmup", "factor": "--adapt-factor",
             "adaptation": "--adapt", "picture": "--no-picture"}


def _levels(text: Optional[str]):
    """--levels: S ("50") or the training levels ("1,250,500,750,1000"), read as compile reads
    `levels`; None when not given."""
    if text is None:
        return None
    from .schedule import parse_levels
    parts = text.split(",")
    try:
        values = [int(part) for part in parts]
        return parse_levels(values[0] if len(parts) == 1 else values)
    except ValueError as error:
        detail = "" if str(error).startswith("invalid literal") else f" ({str(error).partition(': ')[2]})"
        raise CommandError(f"--levels: expected a number of levels S or increasing training "
                           f"levels τ,τ,..., e.g. 50 or 1,250,500,750,1000; got {text!r}{detail}") from None


# -- compose plan ---------------------------------------------------------------------------
KERNELS = ("MALA", "ULA", "HMC", "U-HMC", "RWMH", "Reverse")


def _add_composition_options(parser: argparse.ArgumentParser) -> None:
    """The options `compose plan` and `compose sample` share: the composition, how it is
    compiled, and the run it is planned or sampled for."""
    parser.add_argument("expression", help='the composition, e.g. "ring * bar ** 0.5"')
    parser.add_argument("--components", default="", metavar="FILE_OR_MODULE",
                        help="a Python file or module; its top-level components (or a dict "
                             "named `components`) are bound by name")
    _add_model_options(parser)
    parser.add_argument("--steps", type=_count(0), default=10, metavar="K",
                        help="MCMC steps per level (default 10)")
    parser.add_argument("--samples", type=_count(1), default=2000, metavar="N",
                        help="number of chains (default 2000)")
    parser.add_argument("--leapfrog", type=_count(1), default=3, metavar="L",
                        help="leapfrog steps per HMC step (default 3)")
    parser.add_argument("--path", choices=("line", "curve"), default="line",
                        help="integration path for score-only terms (default line)")
    parser.add_argument("--points", type=_count(0), default=0, metavar="n",
                        help="interior integration points per straight piece (default 0)")
    parser.add_argument("--rule", choices=RULES, default="trapezoid",
                        help="quadrature rule for score-only terms (default trapezoid; "
                             "docs/quadrature.md)")
    parser.add_argument("--chunk-rows", type=_count(1), default=None, metavar="R",
                        help="most rows per network call of a score-only term")
    parser.add_argument("--levels", metavar="S|τ,τ,...",
                        help="sample on a respaced schedule: S evenly spaced training levels, or "
                             "the training levels themselves (docs/pretrained.md)")
    parser.add_argument("--reverse-step", action="store_true",
                        help="take the ancestral step after the MCMC steps at each level")
    parser.add_argument("--event-shape", metavar="D,D,...",
                        help="shape of one sample, when no component declares it: e.g. 2, or "
                             "1,8,14 for the canvas of windowed compositions (docs/windows.md)")


def _event_shape(args: argparse.Namespace):
    """--event-shape as a tuple of ints, or None."""
    if args.event_shape is None:
        return None
    return tuple(_numbers(args.event_shape, int, "--event-shape", "sizes, e.g. 2 or 1,8,8"))


def _configure_plan(parser: argparse.ArgumentParser) -> None:
    _add_composition_options(parser)
    parser.add_argument("--kernel", choices=KERNELS,
                        help="count evaluations for this sampler (Reverse: no MCMC, the "
                             "reverse process)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--dtype", choices=("float32",) + HALF_DTYPES, default=None,
                        help="load the --model networks in this dtype (default: as saved)")
    _add_smc_options(parser)


def _add_smc_options(parser: argparse.ArgumentParser) -> None:
    """--smc and its options (docs/smc.md)."""
    parser.add_argument("--smc", action="store_true",
                        help="sequential Monte Carlo: Feynman–Kac weights and resampling at "
                             "every level, the kernel's steps as moves (with --kernel Reverse: "
                             "the weighted reverse process); each block is one particle system")
    parser.add_argument("--ess-threshold", type=float, default=None, metavar="X",
                        help="with --smc: resample where ESS < X·N, X in [0, 1] (default 0.5; "
                             "1 every level, 0 never)")
    parser.add_argument("--resampling", choices=SMC_SCHEMES, default=None,
                        help="with --smc: the resampling scheme (default systematic)")
    parser.add_argument("--smc-increment", choices=("trapezoid", "left"), default=None,
                        help="with --smc: the weight increment's rule (default trapezoid)")
    parser.add_argument("--start-level", type=_count(1), default=None, metavar="T",
                        help="with --smc: the level the particles start at (default: T, or "
                             "below a schedule's huge top steps)")


#: The SMC options and their defaults (as compose.SMC's).
SMC_OPTIONS = {"ess_threshold": "ess_threshold", "resampling": "resampling",
               "smc_increment": "increment", "start_level": "start_level"}


def _smc(args: argparse.Namespace):
    """The compose.SMC of --smc and its options; its options without --smc are an error."""
    given = [name for name in SMC_OPTIONS if getattr(args, name, None) is not None]
    if not getattr(args, "smc", False):
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CommandError(f"{options}: an option of sequential Monte Carlo, which is off "
                               "without --smc: add --smc (or leave it out)")
        return None
    from .smc import SMC
    options = {SMC_OPTIONS[name]: getattr(args, name) for name in given}
    try:
        return SMC(**options)
    except ValueError as error:
        option = next((n for n in given if SMC_OPTIONS[n] in str(error).split(":")[0]), None)
        message = str(error)
        if option is not None:
            message = "--" + option.replace("_", "-") + ":" + message.split(":", 1)[1]
        raise CommandError(message) from None


def _run_plan(args: argparse.Namespace) -> int:
    from .compiler import compile
    bindings = load_components(args.components)
    bindings = with_models(bindings, args)
    shape = _event_shape(args)
    levels = _levels(args.levels)
    try:
        target = compile(args.expression, bindings, path=args.path, points=args.points,
                         rule=args.rule, chunk_rows=args.chunk_rows, levels=levels,
                         event_shape=shape)
    except CompositionError:
        raise
    except ValueError as error:
        raise _option_error(error, args) from None
    if args.kernel is None:
        if args.smc:
            raise CommandError("--smc needs --kernel (use --kernel Reverse for the weighted "
                               "reverse process)")
        if args.reverse_step:
            raise CommandError("--reverse-step needs --kernel (use --kernel Reverse for the "
                               "reverse process alone)")
        plan = target.plan
    else:
        reverse = args.reverse_step or args.kernel == "Reverse"
        smc = _smc(args)
        try:
            plan = target.plan_for(_kernel(args.kernel, args.leapfrog), args.steps, args.samples,
                                   reverse or smc is not None, smc=smc)
        except ValueError as error:
            raise _option_error(error, args) from None
    print(json.dumps(plan.to_dict(), indent=2, allow_nan=False) if args.json else str(plan))
    return 0


def _kernel(name: str, leapfrog: int):
    """A kernel of the named kind; step sizes do not change a plan, so a placeholder is used."""
    from . import kernels
    return {
        "MALA": lambda: kernels.MALA(1e-3),
        "ULA": lambda: kernels.ULA(1e-3),
        "HMC": lambda: kernels.HMC(1e-2, num_leapfrog=leapfrog),
        "U-HMC": lambda: kernels.HMC(1e-2, num_leapfrog=leapfrog, adjusted=False),
        "RWMH": lambda: kernels.RandomWalkMH(1e-2),
        "Reverse": lambda: None,
    }[name]()


# -- bindings: --components and --model -------------------------------------------------------
#: --dtype values that load the --model networks in half precision (the chains stay float32).
HALF_DTYPES = ("float16", "bfloat16")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model NAME=PATH_OR_ID (repeatable) and how such models are loaded."""
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH_OR_ID",
                        help="bind a diffusers model to NAME: a folder written by "
                             "save_pretrained (a pipeline, or unet/ and scheduler/), or a hub "
                             "id in the local cache; repeatable, beside or instead of "
                             "--components")
    parser.add_argument("--null-class", action="append", default=[], metavar="[NAME=]C",
                        help="the class label of the bare leaf of a class-conditional --model "
                             "(the unconditional model of guidance): C for every --model, "
                             "NAME=C for one")


def with_models(bindings: Dict[str, object], args: argparse.Namespace,
                device=None) -> Dict[str, object]:
    """The --components `bindings` and the --model ones; a name bound twice is an error."""
    if not args.components and not args.model:
        raise CommandError("give the components: --model NAME=PATH_OR_ID (a diffusers folder "
                           "or hub id) and/or --components FILE_OR_MODULE")
    models = load_models(args.model, args.null_class, _network_dtype(args), device,
                         progress=getattr(args, "progress", None))
    for name in models:
        if name in bindings:
            raise CommandError(f"--model {name}=...: {name!r} is also bound by --components "
                               f"{args.components}; choose another name")
    return {**bindings, **models}


def _network_dtype(args: argparse.Namespace) -> Optional[str]:
    """The dtype the --model networks load in: --dtype float16 or bfloat16 (else as saved)."""
    dtype = getattr(args, "dtype", None)
    return dtype if dtype in HALF_DTYPES else None


def _chain_dtype(args: argparse.Namespace) -> str:
    """The chains' dtype: --dtype float32 or float64; float32 when --dtype names a half type."""
    return "float32" if args.dtype in HALF_DTYPES else args.dtype


def _bindings_label(args: argparse.Namespace) -> str:
    """Where the components came from, as run.json records it."""
    return "; ".join(([args.components] if args.components else [])
                     + [f"--model {spec}" for spec in args.model])


def _model_device(args: argparse.Namespace):
    """The device the chains of `compose sample --device` run on, for the --model networks."""
    if not args.model:
        return None
    from .runs.group import pick_device
    try:
        return pick_device(args.device)
    except ValueError as error:
        raise CommandError(str(error)) from None


def load_models(specs, null_classes=(), dtype: Optional[str] = None,
                device=None, progress: Optional[bool] = None) -> Dict[str, object]:
    """`compose.adapters.load` of each NAME=PATH_OR_ID, with --null-class and a half dtype;
    loading bars follow --progress / --no-progress (None: on a terminal only)."""
    if not specs:
        if null_classes or dtype is not None:
            raise CommandError("--null-class and --dtype float16/bfloat16 apply to --model "
                               "networks; no --model given")
        return {}
    parsed: Dict[str, str] = {}
    for spec in specs:
        name, sep, where = spec.partition("=")
        name, where = name.strip(), where.strip()
        if not sep or not name.isidentifier() or not where:
            raise CommandError(f"--model: expected NAME=PATH_OR_ID, e.g. p=./my-pipeline or "
                               f"p=google/ddpm-cifar10-32, got {spec!r}")
        if name in parsed:
            raise CommandError(f"--model: {name!r} is bound twice")
        parsed[name] = where
    classes = _null_classes(null_classes, parsed)
    try:
        from . import adapters
        load = adapters.load
    except ImportError as error:
        raise CommandError(f"--model needs diffusers: {error}") from None
    import torch
    options = {} if dtype is None else {"dtype": getattr(torch, dtype)}
    if progress is not None:
        options["progress"] = progress
    if device is not None:
        options["device"] = device
    models = {}
    for name, where in parsed.items():
        extra = {"null_class": classes[name]} if name in classes else {}
        try:
            models[name] = load(where, name=name, **options, **extra)
        except (ValueError, OSError) as error:
            raise CommandError(f"--model {name}={where}: {error}") from None
        except Exception as error:      # any other failure of a model's files, in one line
            raise CommandError(f"--model {name}={where}: {type(error).__name__}: {error}") from None
    return models


def _null_classes(values, names) -> Dict[str, int]:
    """--null-class C (every model) or NAME=C (one) as name → class."""
    out: Dict[str, int] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        targets = [name.strip()] if sep else list(names)
        if sep and name.strip() not in names:
            raise CommandError(f"--null-class {value}: no --model named {name.strip()!r} "
                               f"(models: {', '.join(names)})")
        try:
            label = int(number)
        except ValueError:
            raise CommandError(f"--null-class: expected a class number C or NAME=C, got "
                               f"{value!r}") from None
        for target in targets:
            out[target] = label
    return out


def load_components(spec: str) -> Dict[str, object]:
    """Name → component bindings from a Python file or an importable module.

    An empty `spec` (no --components) binds nothing. A dict named `components` is used as it
    is. Otherwise every top-level attribute that is a compose `Component` is bound by its
    attribute name, and each classifier is also bound to its guidance variable (``class``)
    unless that name is taken.
    """
    from .components import Component
    if not spec:
        return {}
    module = _load_module(spec)
    explicit = getattr(module, "components", None)
    if explicit is not None:
        if not isinstance(explicit, Mapping):
            raise CommandError(f"{spec}: `components` must be a dict of name -> component, "
                               f"got {type(explicit).__name__}")
        return dict(explicit)
    bindings = {name: value for name, value in vars(module).items()
                if not name.startswith("_") and isinstance(value, Component)}
    for value in list(bindings.values()):
        if getattr(value, "is_classifier", False):
            bindings.setdefault(value.variable, value)
    if not bindings:
        raise CommandError(f"{spec}: defines no compose components (and no `components` dict)")
    return bindings


def _load_module(spec: str):
    """The module of a Python file (a path, or a name ending in .py) or an importable module.

    A relative file path is taken from the working directory, and the file's own folder is
    importable while it runs (so it may import its neighbours); a module name is looked up
    with the working directory on the import path, as ``python -m`` does. ``sys.path`` is left
    as it was. A file that calls ``sys.exit`` while loading is an error, not an exit.
    """
    path = Path(spec)
    is_file = spec.endswith(".py") or path.is_file()
    if is_file and not path.is_file():
        where = "" if path.is_absolute() else f" (looked in {Path.cwd()})"
        raise CommandError(f"components file not found: {spec}{where}")
    folder = str(path.resolve().parent) if is_file else os.getcwd()
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        if not is_file:
            return importlib.import_module(spec)
        module_spec = importlib.util.spec_from_file_location(f"_compose_components_{path.stem}",
                                                             path.resolve())
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    except CompositionError:
        raise
    except SystemExit as exit:
        code = "" if exit.code is None else repr(exit.code)
        raise CommandError(f"{spec}: called sys.exit({code}) while loading, so it defines no "
                           "components") from None
    except ModuleNotFoundError as error:
        if not is_file and error.name is not None and spec.startswith(error.name):
            raise CommandError(f"no components file or module named {spec!r}") from None
        raise CommandError(f"{spec}: {type(error).__name__}: {error}") from None
    except Exception as error:          # any failure of the user's file, in one line
        raise CommandError(f"{spec}: {type(error).__name__}: {error}") from None
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _count(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {low}, got {value}")
        return value
    return parse


# -- compose sample -------------------------------------------------------------------------
def _configure_sample(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Sample a composition into --out: samples.pt (N, *event), diagnostics.json, plan.txt, "
        "and for image models images.pt and images.png (decoded through a latent model's VAE, "
        "clipped to [0, 1]), else samples.png; at the end, a table of the levels. Chains run "
        "in blocks seeded from (seed, block), checkpointed after every level; under torchrun the processes take blocks in turn. The samples are bitwise the "
        "same for any number of processes and after --resume (docs/sampling_at_scale.md).")
    _add_composition_options(parser)
    parser.add_argument("--kernel", choices=KERNELS, required=True,
                        help="the MCMC kernel (Reverse: no MCMC, the reverse process)")
    parser.add_argument("--step-size", metavar="X",
                        help="step size: a number, or a,b for the per-level power law "
                             "a·β_t^b (needed by every kernel but Reverse)")
    parser.add_argument("--seed", type=_count(0), default=0, metavar="S", help="seed (default 0)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (new, or the run to continue with --resume); "
                             "on several machines, on a filesystem they all share")
    parser.add_argument("--block-size", type=_count(1), metavar="B",
                        help="chains per block (default: sized for the device); part of the "
                             "settings, it changes the samples")
    parser.add_argument("--damping", type=float, default=0.5, metavar="G",
                        help="HMC momentum damping γ in [0, 1) (default 0.5)")
    parser.add_argument("--variance", choices=("small", "large"), default=None,
                        help="reverse-step noise: small (β̃_t) or large (β_t) (default small; "
                             "large with --smc)")
    parser.add_argument("--adapt", action="store_true",
                        help="adapt the step size during a warm-up at each level")
    # defaults applied with --adapt (None here: given without --adapt, they are refused)
    parser.add_argument("--adapt-band", default=None, metavar="LOW,HIGH",
                        help="acceptance band of --adapt (default 0.6,0.9)")
    parser.add_argument("--adapt-warmup", type=_count(1), default=None, metavar="W",
                        help="warm-up steps per level of --adapt (default 3)")
    parser.add_argument("--adapt-factor", type=float, default=None, metavar="F",
                        help="step-size factor of --adapt (default 1.5)")
    parser.add_argument("--dtype", choices=("float32", "float64") + HALF_DTYPES,
                        default="float32",
                        help="floating-point type of the chains (default float32); float16 or "
                             "bfloat16 loads the --model networks in it, the chains float32")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda:LOCAL_RANK when CUDA is available, else the CPU")
    parser.add_argument("--threads", type=_count(1), default=1, metavar="T",
                        help="torch threads per process (default 1; part of the settings)")
    parser.add_argument("--checkpoint-every", type=_count(1), default=1, metavar="K",
                        help="checkpoint each block after every K levels (default 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out: finished blocks are reused, the others "
                             "continue from their last good checkpoint")
    parser.add_argument("--trust-components", action="store_true",
                        help="with --resume: continue even where the identity of a component "
                             "cannot be established (you vouch that it is the same)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar (default: only when stderr is a terminal)")
    parser.add_argument("--no-picture", dest="picture", action="store_false",
                        help="do not write samples.png / images.png")
    _add_smc_options(parser)


#: The options of --adapt and their defaults.
ADAPT_DEFAULTS = {"adapt_band": "0.6,0.9", "adapt_warmup": 3, "adapt_factor": 1.5}


def _adapt_options(args: argparse.Namespace) -> None:
    """--adapt-band/-warmup/-factor take their defaults with --adapt; without it they would
    change nothing, so giving one is an error that says to add --adapt."""
    given = [name for name in ADAPT_DEFAULTS if getattr(args, name) is not None]
    if given and not args.adapt:
        options = ", ".join("--" + name.replace("_", "-") for name in given)
        raise CommandError(f"{options}: set{'s' if len(given) == 1 else ''} up step-size "
                           "adaptation, which is off without --adapt: add --adapt (or leave "
                           f"{'it' if len(given) == 1 else 'them'} out)")
    for name, default in ADAPT_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def _run_sample(args: argparse.Namespace) -> int:
    from .runs import RunError, sample_run
    from .sampler import Adaptation
    _adapt_options(args)
    smc = _smc(args)
    levels = _levels(args.levels)
    shape = _event_shape(args)
    bindings = load_components(args.components)
    source = Path(args.components) if args.components else None
    bindings = with_models(bindings, args, device=_model_device(args))
    # what the run records: the chains' dtype, and where the components came from
    args.dtype, args.components = _chain_dtype(args), _bindings_label(args)
    try:
        adaptation = None
        if args.adapt:
            band = _numbers(args.adapt_band, float, "--adapt-band", "LOW,HIGH, e.g. 0.6,0.9")
            if len(band) != 2:
                raise CommandError(f"--adapt-band: expected LOW,HIGH, e.g. 0.6,0.9, got {args.adapt_band!r}")
            adaptation = Adaptation(band=tuple(band), warmup_steps=args.adapt_warmup,
                                    factor=args.adapt_factor)
        result = sample_run(
            args.expression, bindings, args.out, kernel=args.kernel, step_size=args.step_size,
            steps=args.steps, samples=args.samples, seed=args.seed, block_size=args.block_size,
            leapfrog=args.leapfrog, damping=args.damping, path=args.path, points=args.points,
            rule=args.rule, levels=levels, chunk_rows=args.chunk_rows, reverse_step=args.reverse_step,
            variance=args.variance, smc=smc,
            adaptation=adaptation, event_shape=shape, dtype=args.dtype, device=args.device,
            threads=args.threads, checkpoint_every=args.checkpoint_every, resume=args.resume,
            trust_components=args.trust_components,
            progress=args.progress, picture=args.picture, components_label=args.components,
            components_source=source.read_bytes() if source is not None and source.is_file() else None)
    except CompositionError:
        raise
    except ValueError as error:        # RunError, and bad option values named by the library
        raise _option_error(error, args) from None
    if result is not None:
        print(f"{result.samples.shape[0]} samples of shape {tuple(result.samples.shape[1:])} "
              f"written to {result.out}")
        _print_run_summary(result)
    return 0


def _print_run_summary(result) -> None:
    """After a run: its images (how many values were clipped) and the per-level table."""
    from .runs import outputs
    images = getattr(result, "images", None)
    if images is not None:
        print(f"{len(images)} images of shape {tuple(images.images.shape[1:])} (from "
              f"{images.decoder}) written to {result.out / 'images.pt'}; {images.clipping()}")
    print(outputs.summary(result.diagnostics))


def _numbers(text: str, kind, option: str, expected: str) -> list:
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise CommandError(f"{option}: expected {expected}, got {text!r}") from None


# -- compose demo ---------------------------------------------------------------------------
def _run_demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("compose.experiments.product2d.demo")   # imported only when asked for
    except ModuleNotFoundError as error:
        if error.name != "compose.experiments.product2d.demo":
            raise
        raise CommandError("the demo is not available in this installation "
                           "(no compose.experiments.product2d.demo)") from None
    return demo.main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
