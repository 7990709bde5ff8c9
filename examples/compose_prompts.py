"""Compose prompts of a pretrained text-to-image pipeline and sample with HMC-curve.

    python examples/compose_prompts.py PIPELINE_DIR "<composition>" [options]

PIPELINE_DIR is a folder written by ``save_pretrained`` (for example a Stable Diffusion
pipeline you downloaded once and saved); it is read from local files only. In the
composition the model is called ``p`` (``--name`` changes that), e.g.

    'p(prompt="a castle") ** 7.5 / p ** 6.5'                                (classifier-free guidance)
    'p(prompt="a dog") ** 3 * p(prompt="a hat") ** 3 / p(prompt="rain") / p ** 4'  (AND / NOT)

The composition is sampled on a respaced schedule (``--levels`` of the pipeline's training
levels) with annealed HMC whose Metropolis–Hastings correction integrates the score along the
leapfrog path (HMC-curve), an ancestral step after each level, and the step size kept in an
acceptance band during warm-up. The samples are decoded (the VAE of a latent model) and
written as one image grid; the plan and the per-level acceptance are printed.
"""
from __future__ import annotations

import argparse
import math
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

import compose
from compose.adapters import load

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def image_grid(images: torch.Tensor, columns: Optional[int] = None) -> Image.Image:
    """Images (N, C, H, W) in [0, 1] as one RGB grid, `columns` wide (default ⌈√N⌉)."""
    n, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = torch.ones((3, rows * height, columns * width))
    for i, image in enumerate(images.detach().float().cpu().clamp(0, 1)):
        image = image.expand(3, -1, -1) if channels == 1 else image[:3]
        r, c = divmod(i, columns)
        grid[:, r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    pixels = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(pixels)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pipeline_dir", help="a folder written by save_pretrained")
    parser.add_argument("composition", help="e.g. 'p(prompt=\"a castle\") ** 7.5 / p ** 6.5'")
    parser.add_argument("--name", default="p", help="the model's name in the composition")
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
    model = load(args.pipeline_dir, name=args.name, dtype=DTYPES[args.dtype], device=args.device)
    target = compose.compile(args.composition, {args.name: model}, levels=args.levels,
                             path="curve", points=args.points)
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
    images = model.decode(result.samples)
    image_grid(images).save(args.out)
    print(f"wrote {args.out}: {images.shape[0]} images of {tuple(images.shape[1:])}")
    return result


if __name__ == "__main__":
    main()
