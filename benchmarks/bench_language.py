"""Benchmark of the composition language and the compiled target (issue 3).

1. Parse + compile of a 50-node composition string: the first parse (which builds the LALR
   parser), then the mean over repeats of parse, bind+compile, and both.
2. The overhead of the compiled `target.score(x, t)` against the hand-written weighted sum of
   the same component calls, ``a.score(x, t) + 0.5 * b.score(x, t)``, for the paper's 2D
   product (two ResidualMLPs with random weights, 2000 chains, CPU), timed side by side in
   alternating order over many repeats. Target: ratio ≤ 1.05. Then the same with a trivial
   network, which leaves only the compiled target's bookkeeping (checks, counting, weights).

    .venv/bin/python benchmarks/bench_language.py [--repeats 60] [--chains 2000] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compose  # noqa: E402
from compose.language import grammar  # noqa: E402
from compose.models.nets import ResidualMLP  # noqa: E402


def count_nodes(expr) -> int:
    """Nodes of an expression tree: leaves and operators."""
    return 1 + sum(count_nodes(child) for child in expr.children())


class ClassConditional(torch.nn.Module):
    """A stand-in ε-network taking a `class` keyword (never called here)."""

    def forward(self, x, t, **conditions):
        return torch.zeros_like(x)


def fifty_node_composition(schedule):
    """A 50-node string over 20 components (score models, analytic, a class-conditional score
    model) with classifier guidance."""
    components = {}
    for i in range(19):
        mean = [[0.1 * i, -0.05 * i]]
        g = compose.GaussianMixture(mean, 0.5 + 0.01 * i, schedule=schedule, name=f"g{i}")
        components[f"p{i}"] = compose.ScoreModel.from_analytic(g, name=f"p{i}") if i % 2 else g
    components["q"] = compose.ScoreModel(ClassConditional(), schedule, name="q")
    components["class"] = compose.Classifier(torch.nn.Linear(2, 10), schedule, name="clf")
    text = "p0"
    for i in range(1, 19):
        # ' * p ** w' adds 3 nodes (product, power, leaf), ' / p' adds 2 (quotient, leaf)
        text += f" * p{i} ** {0.25 * (i % 4 + 1)}" if i <= 10 else f" / p{i}"
    text += " * q(class=3) | class=7 @ 2.5"     # product, conditional leaf, guidance: 3 nodes
    return text, components


def bench_parse_compile(repeats: int) -> None:
    schedule = compose.Schedule.cosine(100)
    text, components = fifty_node_composition(schedule)
    grammar.parser.cache_clear()
    start = time.perf_counter()
    expr = compose.parse(text, components)
    cold = time.perf_counter() - start
    nodes = count_nodes(expr)
    assert nodes == 50, nodes
    parse_times, compile_times, both_times = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        tree = compose.parse(text)
        parsed = time.perf_counter()
        target = compose.compile(compose.language.bind(tree, components, source=text))
        done = time.perf_counter()
        parse_times.append(parsed - start)
        compile_times.append(done - parsed)
        start = time.perf_counter()
        compose.compile(text, components)
        both_times.append(time.perf_counter() - start)
    ms = lambda xs: 1e3 * statistics.fmean(xs)  # noqa: E731
    print(f"parse + compile of a {nodes}-node composition ({len(target.terms)} terms after "
          f"merging), mean of {repeats}:")
    print(f"  first parse, building the LALR parser: {1e3 * cold:8.2f} ms")
    print(f"  parse (text -> unbound tree):          {ms(parse_times):8.3f} ms")
    print(f"  bind + compile (tree -> target):       {ms(compile_times):8.3f} ms")
    print(f"  compose.compile(text, components):     {ms(both_times):8.3f} ms")


def random_mlp(T: int, seed: int) -> ResidualMLP:
    """The paper's 2D ResidualMLP with random weights everywhere (also in the zero-initialised
    output layers, so the outputs are not trivially zero); no parameter requires grad."""
    torch.manual_seed(seed)
    net = ResidualMLP(dim=2, T=T)
    for module in net.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    return net.eval().requires_grad_(False)


def bench_score_overhead(repeats: int, chains: int) -> None:
    schedule = compose.Schedule.cosine(100)
    a = compose.ScoreModel(random_mlp(100, 0), schedule, name="a", event_shape=(2,))
    b = compose.ScoreModel(random_mlp(100, 1), schedule, name="b", event_shape=(2,))
    target = compose.compile("a * b ** 0.5", a=a, b=b)
    x = torch.randn(chains, 2, generator=torch.Generator().manual_seed(0))
    t = 50

    def compiled():
        return target.score(x, t)

    def by_hand():
        return a.score(x, t) + 0.5 * b.score(x, t)

    with torch.no_grad():
        assert torch.allclose(compiled(), by_hand(), atol=1e-6)
        for _ in range(3):                          # warm-up
            compiled(), by_hand()
        times = {"compiled": [], "by hand": []}
        for i in range(repeats):
            order = (("compiled", compiled), ("by hand", by_hand))
            for name, fn in (order if i % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    c, h = times["compiled"], times["by hand"]
    pair = [ci / hi for ci, hi in zip(c, h)]
    print(f"target.score vs hand-written weighted sum, 'a * b ** 0.5' (2 ResidualMLPs, "
          f"{sum(p.numel() for p in a.net.parameters()):,} parameters each), {chains} chains, "
          f"{torch.get_num_threads()} thread(s), {repeats} interleaved repeats:")
    print(f"  compiled  median {1e3 * statistics.median(c):7.2f} ms   mean {1e3 * statistics.fmean(c):7.2f} ms")
    print(f"  by hand   median {1e3 * statistics.median(h):7.2f} ms   mean {1e3 * statistics.fmean(h):7.2f} ms")
    print(f"  ratio compiled / by hand: median of ratios {statistics.median(pair):.4f}, "
          f"ratio of medians {statistics.median(c) / statistics.median(h):.4f}, "
          f"ratio of means {statistics.fmean(c) / statistics.fmean(h):.4f}  (target ≤ 1.05)")


class Scale(torch.nn.Module):
    """A trivial ε-network: what is left is the bookkeeping around the calls."""

    def forward(self, x, t):
        return 0.1 * x


def bench_bookkeeping(repeats: int, chains: int) -> None:
    schedule = compose.Schedule.cosine(100)
    a = compose.ScoreModel(Scale(), schedule, name="a", event_shape=(2,))
    b = compose.ScoreModel(Scale(), schedule, name="b", event_shape=(2,))
    target = compose.compile("a * b ** 0.5", a=a, b=b)
    x = torch.randn(chains, 2)
    fns = {"compiled": lambda: target.score(x, 50),
           "by hand": lambda: a.score(x, 50) + 0.5 * b.score(x, 50)}
    times = {name: [] for name in fns}
    with torch.no_grad():
        for i in range(repeats):
            for name in (fns if i % 2 == 0 else reversed(list(fns))):
                start = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - start)
    c, h = (statistics.median(times[n]) for n in fns)
    print(f"the same with a trivial network (bookkeeping only), {repeats} interleaved repeats:")
    print(f"  compiled {1e6 * c:.1f} µs, by hand {1e6 * h:.1f} µs: {1e6 * (c - h):+.1f} µs per "
          "composed score")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60, help="timed repeats of the score")
    parser.add_argument("--compile-repeats", type=int, default=200)
    parser.add_argument("--chains", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU")
    bench_parse_compile(args.compile_repeats)
    bench_score_overhead(args.repeats, args.chains)
    bench_bookkeeping(50 * args.repeats, args.chains)


if __name__ == "__main__":
    main()
