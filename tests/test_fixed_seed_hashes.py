"""Behaviour guard: fixed-seed runs give the same samples, bit for bit, as when the hashes below
were recorded.

Refactors (moving modules, splitting files, adding options with defaults) must not change a
single sample. Float rounding depends on the CPU's vector instructions, so the hashes are kept
per ATen CPU capability (``ATEN_CPU_CAPABILITY=default|avx2|avx512``); a capability with no
recorded hashes is skipped rather than guessed. To record them for a new capability, run this
file with ``COMPOSE_PRINT_HASHES=1 -s`` and add the printed table.

The capability picks only ATen's own kernels: the BLAS and oneDNN libraries under matrix
products and convolutions choose their code from the CPU they run on, and another torch build
may round differently too. So the hashes hold for the environment they were recorded in
(`RECORDED_IN`: torch version, CPU vendor and widest vector extension); elsewhere the test is
skipped, never failed, so the suite passes on any x86-64 CPU. The guard that holds everywhere
is tests/test_regression_float64.py: float64 runs compared with stored values within 1e-9.
"""
import hashlib
import os
import platform

import pytest
import torch

import compose
from compose.models.unet import NoisyClassifier, SmallUNet

T = 8
N = 64


def _ring_and_bar(schedule):
    ring = compose.GaussianMixture(means=[[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]],
                                   std=0.05, schedule=schedule, name="ring")
    bar = compose.UniformBox(low=[-0.2, -1.0], high=[0.2, 1.0], schedule=schedule, name="bar")
    return ring, bar


def _run(target, kernel, reverse_step=False, steps=3, n=N, seed=0, **options):
    result = compose.sample(target, kernel, num_samples=n, steps_per_level=steps, **options,
                            reverse_step=reverse_step, generator=torch.Generator().manual_seed(seed),
                            progress=False)
    return result.samples


def _analytic(kernel, **kw):
    ring, bar = _ring_and_bar(compose.Schedule.cosine(T))
    return _run(compose.compile(ring * bar), kernel, **kw)


def _score_only(kernel, path="line", points=1, **kw):
    ring, bar = _ring_and_bar(compose.Schedule.cosine(T))
    target = compose.compile(compose.ScoreModel.from_analytic(ring, name="rs")
                             * compose.ScoreModel.from_analytic(bar, name="bs"),
                             path=path, points=points)
    return _run(target, kernel, **kw)


def _guided_digits():
    schedule = compose.Schedule.linear(24)
    torch.manual_seed(0)  # tests only: fixed random weights
    unet = SmallUNet(T=24, base=8)
    clf = NoisyClassifier(T=24)
    model = compose.ScoreModel(unet, schedule, name="unet")
    classifier = compose.Classifier(clf, schedule, name="clf")
    target = compose.compile(model.guide(classifier.condition(3), scale=2.0), path="line", points=1)
    return _run(target, compose.MALA(1e-3), n=8, steps=2, reverse_step=True, event_shape=(1, 8, 8))


RUNS = {
    "analytic-ULA": lambda: _analytic(compose.ULA(1e-3)),
    "analytic-MALA": lambda: _analytic(compose.MALA(1e-3)),
    "analytic-HMC": lambda: _analytic(compose.HMC(0.03, num_leapfrog=3, damping=0.5)),
    "analytic-UHMC": lambda: _analytic(compose.HMC(0.03, num_leapfrog=3, adjusted=False)),
    "analytic-RWMH": lambda: _analytic(compose.RandomWalkMH(0.05)),
    "analytic-reverse": lambda: _analytic(None, reverse_step=True),
    "score-MALA-line": lambda: _score_only(compose.MALA(1e-3), points=3),
    "score-HMC-line": lambda: _score_only(compose.HMC(0.05, num_leapfrog=3), points=3),
    "score-HMC-curve": lambda: _score_only(compose.HMC(0.05, num_leapfrog=4), path="curve", points=1),
    "score-RWMH": lambda: _score_only(compose.RandomWalkMH(0.05), points=2, reverse_step=True),
    "digits-guided-MALA": _guided_digits,
}

# Where the hashes below were recorded (see the module docstring).
RECORDED_IN = {"torch": "2.13.0+cpu", "machine": "x86_64", "cpu": "GenuineIntel avx512"}

# sha256 of the samples' bytes (first 16 hex digits), per ATen CPU capability.
HASHES = {
    "default": {
        "analytic-HMC": "d9d36116cdff4ea0",
        "analytic-MALA": "153c2c9e7883fd6c",
        "analytic-RWMH": "110645c3df391a8d",
        "analytic-UHMC": "11926ce030bce739",
        "analytic-ULA": "88c5bd965e03a077",
        "analytic-reverse": "fa23fd6fc1de85de",
        "digits-guided-MALA": "be43ffd9defc47b9",
        "score-HMC-curve": "3afda1252ee35e09",
        "score-HMC-line": "d21847a8fe576cbd",
        "score-MALA-line": "b813ce219818caca",
        "score-RWMH": "c67de989dae1b03c",
    },
    "avx2": {
        "analytic-HMC": "731939f94152a2e3",
        "analytic-MALA": "4acac02aab0dd7c9",
        "analytic-RWMH": "e8a918a3bb41a005",
        "analytic-UHMC": "488a4a82e53c22de",
        "analytic-ULA": "e6092626c10c4ed8",
        "analytic-reverse": "89bd7aa2a516bd05",
        "digits-guided-MALA": "3ff6f52f11208b33",
        "score-HMC-curve": "dec38a174ca127f5",
        "score-HMC-line": "3d3fb8468490493c",
        "score-MALA-line": "4cd7bc11cb5ea3fc",
        "score-RWMH": "bf9efe707f3556bd",
    },
    "avx512": {
        "analytic-HMC": "731939f94152a2e3",
        "analytic-MALA": "4acac02aab0dd7c9",
        "analytic-RWMH": "e8a918a3bb41a005",
        "analytic-UHMC": "488a4a82e53c22de",
        "analytic-ULA": "e6092626c10c4ed8",
        "analytic-reverse": "89bd7aa2a516bd05",
        "digits-guided-MALA": "645673b7807d3168",
        "score-HMC-curve": "dec38a174ca127f5",
        "score-HMC-line": "3d3fb8468490493c",
        "score-MALA-line": "4cd7bc11cb5ea3fc",
        "score-RWMH": "bf9efe707f3556bd",
    },
}


def _digest(samples: torch.Tensor) -> str:
    return hashlib.sha256(samples.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def _capability() -> str:
    return torch.backends.cpu.get_cpu_capability().lower()


def _hardware() -> str:
    """CPU vendor and widest vector extension the hardware has, whatever ATen was told to use."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info = fh.read()
    except OSError:
        return "unknown"
    vendor = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                   if line.startswith("vendor_id")), "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                      if line.startswith("flags")), []))
    widest = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "default"
    return f"{vendor} {widest}"


def _environment() -> dict:
    return {"torch": torch.__version__, "machine": platform.machine(), "cpu": _hardware()}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_fixed_seed_samples_unchanged(name):
    samples = RUNS[name]()
    digest = _digest(samples)
    if os.environ.get("COMPOSE_PRINT_HASHES"):
        print(f'HASH {_capability()} "{name}": "{digest}",')
    if _environment() != RECORDED_IN:
        pytest.skip(f"hashes were recorded in {RECORDED_IN}, this is {_environment()}")
    recorded = HASHES.get(_capability())
    if recorded is None:
        pytest.skip(f"no hashes recorded for CPU capability {_capability()!r}")
    assert digest == recorded[name], f"{name}: samples changed (digest {digest})"
