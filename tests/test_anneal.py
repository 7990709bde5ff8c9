"""The annealed driver level by level (`compose.sampler.anneal`): stopped after any level and
continued from (x, multiplier, generator state), it gives bit for bit the samples of one
uninterrupted `compose.sample` call, which itself is unchanged by the refactor (hashes)."""
import hashlib

import pytest
import torch

import compose
from compose.sampler import anneal

T = 8


def _target(score_only=False):
    schedule = compose.Schedule.cosine(T)
    ring = compose.GaussianMixture([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]], 0.05,
                                   schedule=schedule, name="ring")
    bar = compose.UniformBox([-0.2, -1.0], [0.2, 1.0], schedule=schedule, name="bar")
    if score_only:
        return compose.compile(compose.ScoreModel.from_analytic(ring, name="rs")
                               * compose.ScoreModel.from_analytic(bar, name="bs"), points=1)
    return compose.compile(ring * bar)


CASES = {
    "HMC-adapted": (False, lambda: compose.HMC(0.3, num_leapfrog=2), dict(
        steps_per_level=4, adaptation=compose.Adaptation(warmup_steps=2))),
    "MALA-adapted-reverse": (True, lambda: compose.MALA(0.05), dict(
        steps_per_level=3, reverse_step=True, adaptation=compose.Adaptation())),
    "reverse-large": (False, lambda: None, dict(steps_per_level=0, reverse_step=True,
                                                variance="large")),
}

# Recorded with compose.sample before the driver became `anneal` (first 16 hex digits of the
# sha256 of the samples), per ATen CPU capability as in test_fixed_seed_hashes.py.
HASHES = {
    "default": {"HMC-adapted": "5caf805f1fceb97c", "MALA-adapted-reverse": "ba6c1ebe5f8942c4"},
    "avx2": {"HMC-adapted": "cbefdf39118e64c6", "MALA-adapted-reverse": "c72dfba8a9dbd506"},
    "avx512": {"HMC-adapted": "cbefdf39118e64c6", "MALA-adapted-reverse": "c72dfba8a9dbd506"},
}


def _sample(name, seed=0):
    score_only, kernel, options = CASES[name]
    return compose.sample(_target(score_only), kernel(), 64, generator=torch.Generator().manual_seed(seed),
                          progress=False, **options)


@pytest.mark.parametrize("name", ["HMC-adapted", "MALA-adapted-reverse"])
def test_sample_is_unchanged_by_the_level_iterator(name):
    digest = hashlib.sha256(_sample(name).samples.contiguous().numpy().tobytes()).hexdigest()[:16]
    recorded = HASHES.get(torch.backends.cpu.get_cpu_capability().lower())
    if recorded is None:
        pytest.skip("no hashes recorded for this CPU capability")
    assert digest == recorded[name]


@pytest.mark.parametrize("stop_after", [T, 5, 2])
@pytest.mark.parametrize("name", sorted(CASES))
def test_stopped_and_continued_equals_uninterrupted(name, stop_after):
    score_only, kernel, options = CASES[name]
    target = _target(score_only)
    whole = _sample(name, seed=3)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 2, generator=g)                       # what sample draws first
    steps = options["steps_per_level"]
    rest = {k: v for k, v in options.items() if k != "steps_per_level"}
    levels = []
    for step in anneal(target, kernel(), x, steps, generator=g, **rest):
        levels.append(step.diagnostics)
        if step.level == stop_after:
            break
    # a fresh process would get these back from a checkpoint
    saved = (step.x.clone(), step.multiplier, g.get_state())
    g2 = torch.Generator()
    g2.set_state(saved[2])
    for step in anneal(target, kernel(), saved[0], steps, generator=g2, start=stop_after - 1,
                       multiplier=saved[1], **rest):
        levels.append(step.diagnostics)
    assert torch.equal(step.x.view(torch.int32), whole.samples.view(torch.int32))
    assert [lv.level for lv in levels] == list(range(T, 0, -1))
    assert [lv.step_size for lv in levels] == [lv.step_size for lv in whole.diagnostics.levels]
    assert [lv.acceptance for lv in levels] == [lv.acceptance for lv in whole.diagnostics.levels]


def test_a_different_multiplier_changes_the_continuation():
    # negative control: the multiplier matters, so a checkpoint must carry it
    target = _target()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    run = lambda m: list(anneal(target, compose.HMC(0.3), x, 2, generator=torch.Generator().manual_seed(1),
                                start=4, multiplier=m))[-1].x
    assert not torch.equal(run(1.0), run(0.5))


def test_anneal_arguments_are_checked_when_called():
    target = _target()
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="multiplier"):
        anneal(target, compose.MALA(0.1), x, 2, multiplier=0.0)
    with pytest.raises(ValueError, match="level"):
        anneal(target, compose.MALA(0.1), x, 2, start=T + 1)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 2\)"):
        anneal(target, compose.MALA(0.1), torch.zeros(4, 3), 2)
    with pytest.raises(ValueError, match="reverse_step=True is needed"):
        anneal(target, None, x, 2)
