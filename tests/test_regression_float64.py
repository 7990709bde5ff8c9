"""Behaviour guard that holds on any x86-64 CPU: short float64 runs of analytic targets, one per
kernel and Δ method, compared with stored samples (tests/data/regression_float64.json).

The bitwise hashes of tests/test_fixed_seed_hashes.py hold only in the environment they were
recorded in (the vector instructions and BLAS change the last bits), so elsewhere they skip.
Here every run is in float64 on closed-form components, where such rounding differences stay
near 1e-16 relative through a short run, while a real change of a kernel, a schedule or a
quadrature rule moves the samples by far more: the samples must agree within `RTOL` = 1e-9
relative (`ATOL` near zero). `test_a_deliberate_change_of_a_kernel_is_caught` checks that a
change of 1e-6 in one factor of one kernel exceeds that tolerance by orders of magnitude.

Each stored run keeps the first `ROWS` chains whole, the mean of every coordinate over all
chains, and per level the acceptance and the mean |Δ| (which guards Δ: a small change of Δ
rarely flips an accept decision of a short run, so the samples alone would not show it). To record them anew (only after a change that is meant to
change samples, and say so in the commit), run this file with ``COMPOSE_RECORD_REGRESSION=1``.
"""
import json
import math
import os
from pathlib import Path

import pytest
import torch

import compose
from compose.kernels import langevin

DATA = Path(__file__).parent / "data" / "regression_float64.json"
RTOL, ATOL = 1e-9, 1e-11
T, N, STEPS, ROWS = 8, 16, 3, 3


def _ring_and_bar(schedule):
    ring = compose.GaussianMixture(means=[[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]],
                                   std=0.05, schedule=schedule, name="ring")
    bar = compose.UniformBox(low=[-0.2, -1.0], high=[0.2, 1.0], schedule=schedule, name="bar")
    return ring, bar


def _analytic(**options):
    ring, bar = _ring_and_bar(compose.Schedule.cosine(T))
    return compose.compile(ring * bar ** 0.5, **options)


def _score_only(**options):
    ring, bar = _ring_and_bar(compose.Schedule.cosine(T))
    return compose.compile(compose.ScoreModel.from_analytic(ring, name="rs")
                           * compose.ScoreModel.from_analytic(bar, name="bs") ** 0.5, **options)


def _windows(**options):
    schedule = compose.Schedule.cosine(T)
    a = compose.GaussianMixture([[0.3, -0.4], [-0.3, 0.2]], 0.2, schedule=schedule, name="a")
    b = compose.ScoreModel.from_analytic(
        compose.GaussianMixture([[0.1, 0.5]], 0.3, schedule=schedule, name="b0"), name="b")
    return compose.compile(a[0:2] * b[1:3] ** 2, event_shape=(3,), **options)


# name: (target, kernel, sample options)
RUNS = {
    "analytic-ULA": (_analytic, lambda: compose.ULA(2e-2), {}),
    "analytic-MALA": (_analytic, lambda: compose.MALA(6e-2), {}),
    "analytic-MALA-reverse": (_analytic, lambda: compose.MALA(3e-2), {"reverse_step": True}),
    "analytic-HMC": (_analytic, lambda: compose.HMC(0.35, num_leapfrog=3, damping=0.5), {}),
    "analytic-UHMC": (_analytic, lambda: compose.HMC(0.2, num_leapfrog=3, adjusted=False), {}),
    "analytic-RWMH": (_analytic, lambda: compose.RandomWalkMH(0.2), {}),
    "analytic-Reverse": (_analytic, lambda: None, {"reverse_step": True, "steps_per_level": 0}),
    "analytic-Reverse-large": (_analytic, lambda: None, {"reverse_step": True, "steps_per_level": 0,
                                                          "variance": "large"}),
    "line-trapezoid-MALA": (lambda: _score_only(points=3), lambda: compose.MALA(6e-2), {}),
    "line-lobatto-MALA": (lambda: _score_only(points=2, rule="lobatto"), lambda: compose.MALA(6e-2), {}),
    "line-trapezoid-HMC": (lambda: _score_only(points=2), lambda: compose.HMC(0.3, num_leapfrog=3), {}),
    "line-lobatto-RWMH": (lambda: _score_only(points=1, rule="lobatto"),
                          lambda: compose.RandomWalkMH(0.2), {"reverse_step": True}),
    "curve-trapezoid-HMC": (lambda: _score_only(path="curve", points=1),
                            lambda: compose.HMC(0.35, num_leapfrog=4), {}),
    "curve-lobatto-HMC": (lambda: _score_only(path="curve", points=2, rule="lobatto"),
                          lambda: compose.HMC(0.35, num_leapfrog=3, damping=0.3), {}),
    "windows-MALA": (lambda: _windows(points=1), lambda: compose.MALA(6e-2), {}),
}


def _finite_or_none(value):
    return None if value is None or math.isnan(value) else float(value)


def _run(name):
    """The stored summary of one run: its first chains, the mean of every coordinate over all
    chains, and per level the acceptance and mean |Δ| (None where a level has none), which
    guard Δ itself: a changed Δ rarely flips an accept decision of a short run."""
    build, kernel, options = RUNS[name]
    options = {"steps_per_level": STEPS, **options}
    result = compose.sample(build(), kernel(), N, generator=torch.Generator().manual_seed(7),
                            dtype=torch.float64, progress=False, **options)
    samples = result.samples.detach()
    levels = result.diagnostics.levels
    return {"rows": samples[:ROWS].flatten(1).tolist(),
            "mean": samples.flatten(1).mean(0).tolist(),
            "acceptance": [_finite_or_none(d.acceptance) for d in levels],
            "log_ratio": [_finite_or_none(d.mean_abs_log_ratio) for d in levels]}


def _recorded():
    with open(DATA, encoding="utf-8") as fh:
        return json.load(fh)["runs"]


def _flat(value):
    if isinstance(value, list):
        return [x for item in value for x in _flat(item)]
    return [value]


def _differences(got, want):
    """Where `got` leaves the tolerance around `want`: [(what, got, want)], at most three per
    quantity; [] if nowhere."""
    out = []
    for key in sorted(want):
        a, b = _flat(got.get(key)), _flat(want[key])
        if len(a) != len(b):
            out.append((key, f"{len(a)} values", f"{len(b)} values"))
            continue
        bad = [(f"{key}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b))
               if (x is None) != (y is None)
               or (y is not None and not abs(x - y) <= ATOL + RTOL * abs(y))]
        out += bad[:3]
    return out


def _worst(got, want) -> float:
    """The largest |got − want| over the tolerance at that place."""
    return max(abs(x - y) / (ATOL + RTOL * abs(y)) for key in want
               for x, y in zip(_flat(got[key]), _flat(want[key])) if x is not None and y is not None)


def test_record():
    """With COMPOSE_RECORD_REGRESSION=1, write the stored runs (otherwise nothing)."""
    if not os.environ.get("COMPOSE_RECORD_REGRESSION"):
        pytest.skip("set COMPOSE_RECORD_REGRESSION=1 to record the stored runs")
    DATA.parent.mkdir(exist_ok=True)
    note = ("float64 runs of tests/test_regression_float64.py: the first chains, the mean of "
            "every coordinate, and per level the acceptance and mean |delta|; recorded with torch "
            f"{torch.__version__}, compared within rtol {RTOL}")
    lines = [f"  {json.dumps(name)}: {json.dumps(_run(name))}" for name in sorted(RUNS)]
    with open(DATA, "w", encoding="utf-8") as fh:
        fh.write('{"note": ' + json.dumps(note) + ',\n "runs": {\n' + ",\n".join(lines) + "\n}}\n")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_float64_samples_unchanged(name):
    recorded = _recorded()
    assert name in recorded, f"{name}: no stored run (record with COMPOSE_RECORD_REGRESSION=1)"
    wrong = _differences(_run(name), recorded[name])
    assert not wrong, f"{name}: samples changed beyond rtol {RTOL}: {wrong}"


def test_every_stored_run_is_a_run():
    assert sorted(_recorded()) == sorted(RUNS)


def test_a_deliberate_change_of_a_kernel_is_caught(monkeypatch):
    """A step-size factor of 1 + 1e-6 in the Langevin proposal moves the MALA samples far
    beyond the tolerance, and an unchanged rerun agrees bitwise (the comparison is not
    loose, the runs are deterministic)."""
    recorded = _recorded()["analytic-MALA"]
    again = _run("analytic-MALA")
    assert not _differences(again, recorded)
    assert again == _run("analytic-MALA")
    proposal = langevin.langevin_proposal

    def changed(x, score, step_size, generator=None):
        return proposal(x, score, step_size * (1 + 1e-6), generator)

    monkeypatch.setattr(langevin, "langevin_proposal", changed)
    moved = _run("analytic-MALA")
    assert _differences(moved, recorded)
    assert _worst(moved, recorded) > 100


def test_a_deliberate_change_of_a_quadrature_rule_is_caught(monkeypatch):
    """Lobatto nodes moved by a factor 1 + 1e-6 change Δ of the score-only terms: caught
    through the stored mean |Δ| of every level."""
    from compose.compiler import quadrature
    recorded = _recorded()["line-lobatto-MALA"]
    nodes = quadrature._interior_tensor

    def shifted(rule, n, which, dtype, device):
        values = nodes(rule, n, which, dtype, device)
        return values * (1 + 1e-6) if which == 0 else values

    monkeypatch.setattr(quadrature, "_interior_tensor", shifted)
    moved = _run("line-lobatto-MALA")
    assert any(what.startswith("log_ratio") for what, _, _ in _differences(moved, recorded))
