"""Stacked conditions: one UNet call on k·N rows versus k calls on N rows. Prints figures;
asserts nothing.

    python benchmarks/bench_conditions.py [--repeats 7] [--threads 1]

A composition such as ``p(prompt="a dog") ** 3 * p(prompt="a hat") ** 3 / p ** 5`` evaluates
one network under k conditions at the same points. The compiler stacks the conditions along
the batch (one call of k·N rows, as classifier-free guidance implementations do); the
alternative is one call per condition. Both are timed here on random-weight
UNet2DConditionModels of two sizes, alternating the two ways in every repeat so that machine
load affects both alike, and the ratio separate / stacked (> 1: stacking is faster) is printed
beside the medians. Scores of both ways are checked to agree first.

Second table: whole annealed runs of ``p(prompt="a dog") ** 3 * p(prompt="a hat") ** 3 / p ** 5``
(HMC-curve on 10 respaced levels, 2 steps of 2 leapfrog steps, 1 extra point per segment,
reverse step) with the compiler stacking the three prompts, and with stacking switched off on
the same model (`stacks_conditions = False` on the instance): seconds per run, network calls
per run, and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

try:
    import diffusers
except ImportError:  # pragma: no cover
    raise SystemExit("this benchmark needs diffusers: pip install 'score-compose[diffusers]'")

from compose.adapters import from_diffusers

SIZES = {
    # name: (channels, sample size, block widths, text tokens, text width)
    "tiny": (2, 8, (8, 16), 8, 16),
    "small": (4, 16, (32, 64), 77, 64),
}


def build(size: str, seed: int = 0):
    channels, sample, widths, tokens, width = SIZES[size]
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=sample, in_channels=channels, out_channels=channels, block_out_channels=widths,
        layers_per_block=1, norm_num_groups=8, cross_attention_dim=width, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)

    def encode(prompt):
        g = torch.Generator().manual_seed(sum(map(ord, prompt)) + 1)
        return torch.randn((1, tokens, width), generator=g)

    return from_diffusers(unet, scheduler, name="p", encode_prompt=encode), (channels, sample, sample)


def annealed_run(model, n: int, count_only: bool = False):
    """Seconds of one annealed run of the AND/NOT composition (or its network calls)."""
    import compose
    target = compose.compile('p(prompt="a dog") ** 3 * p(prompt="a hat") ** 3 / p ** 5', p=model,
                             levels=10, path="curve", points=1)
    kernel = compose.HMC(compose.PowerLaw(0.3, 0.5), num_leapfrog=2)
    if count_only:
        return target.plan_for(kernel, 2, n, reverse_step=True).totals["calls_per_run"]
    start = time.perf_counter()
    compose.sample(target, kernel, n, steps_per_level=2, reverse_step=True,
                   generator=torch.Generator().manual_seed(0), progress=False)
    return time.perf_counter() - start


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = ["a dog", "a hat", "rain", ""]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats} "
          "alternating repeats (machine shared: compare ratios, not seconds)")
    print(f"{'UNet':>6} {'N':>4} {'k':>2} {'separate s':>11} {'stacked s':>10} {'separate/stacked':>17}")
    for size in SIZES:
        model, event = build(size)
        for n in (1, 4, 16):
            x = torch.randn((n,) + event, generator=torch.Generator().manual_seed(n))
            for k in (2, 4):
                conditions = [(("prompt", p),) if p else () for p in prompts[:k]]
                separate = lambda: [model.score(x, 500, c) for c in conditions]
                stacked = lambda: model.scores(x, 500, conditions)
                for a, b in zip(separate(), stacked()):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
                times = {"separate": [], "stacked": []}
                for _ in range(args.repeats):
                    times["separate"].append(time_once(separate))
                    times["stacked"].append(time_once(stacked))
                sep, st = statistics.median(times["separate"]), statistics.median(times["stacked"])
                print(f"{size:>6} {n:>4} {k:>2} {sep:>11.4f} {st:>10.4f} {sep / st:>17.2f}")
    print()
    print(f"{'UNet':>6} {'N':>4} {'calls separate':>15} {'calls stacked':>14} {'separate s':>11} "
          f"{'stacked s':>10} {'separate/stacked':>17}")
    for size in SIZES:
        for n in (1, 8):
            row = {}
            for stacked in (False, True):
                model, _ = build(size)
                model.stacks_conditions = stacked
                row[stacked] = (model, [])
            for _ in range(max(1, args.repeats // 3)):
                for stacked in (False, True):
                    model, times = row[stacked]
                    times.append(annealed_run(model, n))
            (_, sep), (_, st) = row[False], row[True]
            calls = {s: annealed_run(m, n, count_only=True) for s, (m, _) in row.items()}
            print(f"{size:>6} {n:>4} {calls[False]:>15} {calls[True]:>14} {statistics.median(sep):>11.3f} "
                  f"{statistics.median(st):>10.3f} {statistics.median(sep) / statistics.median(st):>17.2f}")


if __name__ == "__main__":
    with torch.no_grad():
        main()
