"""Classifier guidance and classifier-free guidance with guided-diffusion-style networks.

    python examples/guided_imagenet_style.py [--quick] [--class K] [--levels S] [--out FILE]

This is the shape of the paper's ImageNet run (Sjöberg et al., section 5.3): OpenAI's
guided-diffusion checkpoints, sampled with LA and HMC on a respaced schedule. Those networks
differ from the library's default in three ways, and each is one argument here:

- the UNet returns twice the image channels, ε̂ then a learned variance
  (``learned_variance=True``: the first half is used);
- both the UNet and the noise-aware classifier count timesteps from 0: our level t is their
  timestep t − 1 (``level_offset=-1``; on a respaced schedule they get τ_i − 1);
- the class-conditional UNet takes its label as the keyword ``y``
  (``condition_names={"class": "y"}``: the leaf ``c(class=3)`` calls ``c_net(x, t − 1, y=3)``).

Only `load_networks` knows that the networks here are 8×8 digit stand-ins: a `SmallUNet`
with learned variance and a class embedding and a `NoisyClassifier`, both behind 0-based
wrappers, trained for about a minute of CPU time (`--quick`: a few steps, seconds). With the
real checkpoints, replace its body by the loading lines in its docstring; everything below it
stays. Compositions:

    p | class=K @ λ                    classifier guidance of the unconditional model
    c(class=K) ** w / p ** (w − 1)     classifier-free guidance (conditional over unconditional)

each sampled with LA-n-line (MALA, Δ by the line integral) and HMC-curve (Δ along the leapfrog
path), an ancestral step after each level, step sizes kept in an acceptance band during
warm-up. Printed: the plan (what each network predicts and which timestep it gets), the mean
acceptance, and how often the clean-image classifier reads the requested class.
"""
from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence

import torch
from torch import nn

import compose
from compose.models.classifier_training import train_classifier
from compose.models.data import digits_split
from compose.models.training import train_diffusion
from compose.models.unet import DigitClassifier, NoisyClassifier, SmallUNet

NUM_CLASSES = 10


# -- stand-ins with guided-diffusion's interface ------------------------------------------------
class ZeroBasedUNet(nn.Module):
    """``unet(x, timesteps, y=None)`` with timesteps 0..T−1 and 2C output channels (ε̂, then a
    variance), as guided-diffusion's ``UNetModel.forward(x, timesteps, y)``. y=None: no class."""

    def __init__(self, unet: SmallUNet):
        super().__init__()
        self.unet = unet

    def forward(self, x, timesteps, y=None):
        return self.unet(x, timesteps + 1, y=y)


class ZeroBasedClassifier(nn.Module):
    """``classifier(x, timesteps)`` → logits, timesteps 0..T−1, as guided-diffusion's
    ``EncoderUNetModel``."""

    def __init__(self, classifier: NoisyClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x, timesteps):
        return self.classifier(x, timesteps + 1)


class _TrainingView(nn.Module):
    """The 0-based UNet as `train_diffusion` calls networks: levels 1..T, the ε half only.
    (The variance half is left untrained here: the samplers never read it.)"""

    def __init__(self, net: ZeroBasedUNet, channels: int):
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x, t, y=None):
        return self.net(x, t - 1, y=y)[:, :self.channels]


def load_networks(quick: bool, seed: int = 0):
    """(conditional UNet, unconditional UNet, noise-aware classifier, β's, evaluation classifier).

    With guided-diffusion's checkpoints (e.g. 256x256_diffusion.pt, 256x256_diffusion_uncond.pt,
    256x256_classifier.pt) this body becomes::

        from guided_diffusion.script_util import (
            model_and_diffusion_defaults, classifier_defaults, create_model_and_diffusion,
            create_classifier)
        options = model_and_diffusion_defaults()
        options.update(image_size=256, class_cond=True, learn_sigma=True, ...)  # the card's flags
        cond, diffusion = create_model_and_diffusion(**options)
        cond.load_state_dict(torch.load("256x256_diffusion.pt", map_location="cpu"))
        options.update(class_cond=False)
        uncond, _ = create_model_and_diffusion(**options)
        uncond.load_state_dict(torch.load("256x256_diffusion_uncond.pt", map_location="cpu"))
        classifier = create_classifier(**{k: options.get(k, v)
                                          for k, v in classifier_defaults().items()})
        classifier.load_state_dict(torch.load("256x256_classifier.pt", map_location="cpu"))
        return cond.eval(), uncond.eval(), classifier.eval(), diffusion.betas, None

    (`diffusion.betas` are the 1000 linear β's the models were trained with.) Here the
    networks are trained on the 8×8 digits briefly: one class-conditional UNet trained
    with the label dropped 10% of the time serves as both the conditional and the
    unconditional model (y=None), as in classifier-free guidance training.
    """
    torch.manual_seed(seed)
    T = 1000
    betas = compose.Schedule.linear(T).betas
    schedule = compose.Schedule(betas)
    split = digits_split(seed=seed)
    steps, clf_steps, width = (30, 30, 8) if quick else (1500, 800, 16)
    g = torch.Generator().manual_seed(seed)
    unet = ZeroBasedUNet(SmallUNet(1, 8, T, base=width, embed=4 * width, out_channels=2,
                                   num_classes=NUM_CLASSES))
    train_diffusion(_TrainingView(unet, 1), schedule, split.sampler(labelled=True), steps=steps,
                    batch_size=128, lr=2e-3, ema_decay=0.0, condition="y",
                    null_value=NUM_CLASSES, null_probability=0.1, generator=g, progress=False)
    noisy = NoisyClassifier(1, 8, T, NUM_CLASSES, base=width, embed=4 * width)
    train_classifier(noisy, split.sampler(labelled=True), schedule=schedule, steps=clf_steps,
                     generator=g, progress=False)
    evaluator = DigitClassifier(width=width, features=2 * width)
    train_classifier(evaluator, split.sampler(labelled=True), steps=clf_steps, generator=g,
                     progress=False)
    unet.eval().requires_grad_(False)
    return unet, unet, ZeroBasedClassifier(noisy).eval(), betas, evaluator


# -- the composition and the run: unchanged with the real checkpoints ----------------------------
def components(cond_net, uncond_net, classifier_net, betas, shape):
    """The three components of guided-diffusion-style networks on their training schedule."""
    schedule = compose.Schedule(betas, name="linear")
    p = compose.ScoreModel(uncond_net, schedule, name="p", event_shape=shape,
                           learned_variance=True, level_offset=-1)
    c = compose.ScoreModel(cond_net, schedule, name="c", event_shape=shape,
                           learned_variance=True, level_offset=-1, condition_names={"class": "y"})
    clf = compose.Classifier(classifier_net, schedule, variable="class", name="clf",
                             event_shape=shape, level_offset=-1)
    return {"p": p, "c": c, "class": clf}


def kernels(points: int):
    """LA-n-line and HMC-curve; step sizes a·β_t^b on the respaced β's, adapted in warm-up."""
    return {f"LA-{points}-line": (compose.MALA(compose.PowerLaw(0.05, 1.0)), "line", points),
            "HMC-curve": (compose.HMC(compose.PowerLaw(0.1, 0.5), num_leapfrog=3), "curve", 0)}


def run(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    cond, uncond, classifier, betas, evaluator = load_networks(args.quick, args.seed)
    shape = (1, 8, 8) if args.image_shape is None else tuple(args.image_shape)
    parts = components(cond, uncond, classifier, betas, shape)
    k, scale, weight = args.label, args.scale, args.weight
    compositions = {"classifier guidance": f"p | class={k} @ {scale:g}",
                    "classifier-free guidance": f"c(class={k}) ** {weight:g} / p ** {weight - 1:g}"}
    results = {"seconds_loading": time.perf_counter() - start}
    for title, text in compositions.items():
        for kernel_name, (kernel, path, points) in kernels(args.points).items():
            target = compose.compile(compose.parse(text, parts), levels=args.levels, path=path,
                                     points=points)
            if args.verbose:
                print(target.plan_for(kernel, args.steps, args.samples, reverse_step=True))
            result = compose.sample(target, kernel, args.samples, steps_per_level=args.steps,
                                    reverse_step=True,
                                    generator=torch.Generator().manual_seed(args.seed),
                                    adaptation=compose.Adaptation(), progress=False)
            samples = result.samples.clamp(-1, 1)
            finite = bool(torch.isfinite(result.samples).all())
            hit = float("nan")
            if evaluator is not None:
                with torch.no_grad():
                    hit = float((evaluator(samples).argmax(1) == k).float().mean())
            acceptance = result.diagnostics.mean_acceptance()
            results[(title, kernel_name)] = {"acceptance": acceptance, "class_rate": hit,
                                             "finite": finite, "samples": samples}
            print(f"{title:26s} {text:28s} {kernel_name:11s} acceptance {acceptance:.2f}  "
                  f"classified as {k}: {hit:.2f}")
    if args.out:
        torch.save({key: value["samples"] for key, value in results.items()
                    if isinstance(key, tuple)}, args.out)
    results["seconds"] = time.perf_counter() - start
    print(f"done in {results['seconds']:.1f} s")
    return results


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny training and run (seconds)")
    parser.add_argument("--class", dest="label", type=int, default=3, help="the class K")
    parser.add_argument("--scale", type=float, default=3.0, help="classifier guidance scale λ")
    parser.add_argument("--weight", type=float, default=3.0, help="classifier-free weight w")
    parser.add_argument("--levels", type=int, default=None,
                        help="respaced levels of the 1000 (default 25, quick 5)")
    parser.add_argument("--steps", type=int, default=None, help="MCMC steps per level (default 2)")
    parser.add_argument("--points", type=int, default=3, help="interior points of LA's line")
    parser.add_argument("--samples", type=int, default=None, help="chains (default 32, quick 4)")
    parser.add_argument("--image-shape", type=int, nargs=3, default=None,
                        help="C H W of the samples (default 1 8 8; 3 256 256 for ImageNet 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="save the samples (torch.save) to this file")
    parser.add_argument("--verbose", action="store_true", help="print each plan")
    args = parser.parse_args(argv)
    quick = args.quick
    args.levels = args.levels or (5 if quick else 25)
    args.steps = args.steps if args.steps is not None else (1 if quick else 2)
    args.samples = args.samples or (4 if quick else 32)
    return args


if __name__ == "__main__":
    run()
