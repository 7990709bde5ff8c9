"""Compose prompts of a pretrained text-to-image pipeline and sample with HMC-curve.

    python examples/compose_prompts.py PIPELINE_DIR "<composition>" [options]

PIPELINE_DIR is a folder written by ``save_pretrained`` (for example a Stable Diffusion
pipeline you downloaded once and saved); it is read from local files only. In the
composition the model is called ``p`` (``--name`` changes that), e.g.

    'p(prompt="a castle") ** 7.5 / p ** 6.5'                                (classifier-free guidance)
    'p(prompt="a dog") ** 3 * p(prompt="a hat") ** 3 / p(prompt="rain") / p ** 4'  (AND / NOT)
    'p(class=3) ** 3 / p ** 2'    (a class-conditional UNet, with --null-class for the bare p)

The composition is sampled on a respaced schedule (``--levels`` of the pipeline's training
levels) with annealed HMC whose Metropolis–Hastings correction integrates the score along the
leapfrog path (HMC-curve), an ancestral step after each level, and the step size kept in an
acceptance band during warm-up. The samples are decoded (the VAE of a latent model), clipped
to [0, 1] and written as one image grid titled with the composition; the plan, the per-level
acceptance and how many values were clipped are printed.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import torch

import compose
from compose.adapters import load

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pipeline_dir", help="a folder written by save_pretrained")
    parser.add_argument("composition", help="e.g. 'p(prompt=\"a castle\") ** 7.5 / p ** 6.5'")
    parser.add_argument("--name", default="p", help="the model's name in the composition")
    parser.add_argument("--null-class", type=int, default=None, metavar="C",
                        help="class-conditional UNets: the class label of the bare leaf (the "
                             "unconditional model of guidance), e.g. 'p(class=3) ** 3 / p ** 2'")
    parser.add_argument("--levels", type=int, default=50, help="respaced levels (of the training T)")
    parser.add_argument("--steps", type=int, default=2, help="HMC steps per level")
    parser.add_argument("--leapfrog", type=int, default=3, help="leapfrog steps per HMC step")
    parser.add_argument("--points", type=int, default=1, help="extra Δ points per leapfrog segment")
    parser.add_argument("--step-a", type=float, default=0.3, help="leapfrog step a·β_t^b: a")
    parser.add_argument("--step-b", type=float, default=0.5, help="leapfrog step a·β_t^b: b")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="the networks' dtype (chains stay float32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="compose_prompts.png", help="the image grid (PNG)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> compose.SampleResult:
    args = parse_args(argv)
    extra = {} if args.null_class is None else {"null_class": args.null_class}
    try:
        model = load(args.pipeline_dir, name=args.name, dtype=DTYPES[args.dtype],
                     device=args.device, **extra)
        target = compose.compile(args.composition, {args.name: model}, levels=args.levels,
                                 path="curve", points=args.points)
    except ValueError as error:             # CompositionError too: a message, not a traceback
        raise SystemExit(f"compose_prompts.py: error: {error}") from None
    kernel = compose.HMC(compose.PowerLaw(args.step_a, args.step_b), num_leapfrog=args.leapfrog)
    print(target.plan_for(kernel, args.steps, args.samples, reverse_step=True, device=args.device))
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    result = compose.sample(target, kernel, args.samples, steps_per_level=args.steps,
                            reverse_step=True, generator=generator, device=args.device,
                            adaptation=compose.Adaptation(), progress=False)
    acceptance = result.diagnostics.acceptance
    print(f"acceptance per level (level {target.T} first): "
          + " ".join(f"{a:.2f}" for a in acceptance))
    print(f"mean acceptance {result.diagnostics.mean_acceptance():.2f}, "
          f"{result.diagnostics.seconds:.1f} s")
    images = target.decode(result.samples)
    images.grid(title=args.composition).save(args.out)
    print(f"wrote {args.out}: {len(images)} images of {tuple(images.images.shape[1:])}; "
          f"{images.clipping()}")
    return result


if __name__ == "__main__":
    main()
