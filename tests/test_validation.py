"""Bad input raises a ValueError naming the argument and the allowed range."""
import math

import pytest
import torch

import compose
from conftest import gaussian


@pytest.fixture
def target(schedule):
    return compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))


def test_mismatched_event_shapes_between_components(schedule):
    a = gaussian(schedule, [0.0, 0.0], 1.0, "a")
    b = compose.GaussianMixture([[0.0, 0.0, 0.0]], 1.0, schedule=schedule, name="b")
    with pytest.raises(ValueError, match=r"event_shape: components 'a' \(2,\) and 'b' \(3,\)"):
        compose.compile(a * b)


def test_mismatched_schedules_between_components(schedule):
    a = gaussian(schedule, [0.0, 0.0], 1.0, "a")
    b = gaussian(compose.Schedule.linear(100), [0.0, 0.0], 1.0, "b")
    with pytest.raises(ValueError, match="schedule: components 'a'.*'b'.*different noise schedules"):
        compose.compile(a * b)


@pytest.mark.parametrize("exponent", [math.inf, math.nan, "2"])
def test_non_finite_or_non_numeric_weights(schedule, exponent):
    a = gaussian(schedule, [0.0, 0.0], 1.0, "a")
    with pytest.raises(ValueError, match="exponent"):
        a ** exponent


def test_weight_overflow(schedule):
    a = gaussian(schedule, [0.0, 0.0], 1.0, "a")
    with pytest.raises(ValueError, match="weight overflows"):
        compose.compile((a ** 1e200) ** 1e200)


@pytest.mark.parametrize("make, name", [(lambda: compose.ULA(0.0), "step_size"),
                                        (lambda: compose.MALA(-1.0), "step_size"),
                                        (lambda: compose.HMC(math.nan), "step_size"),
                                        (lambda: compose.RandomWalkMH(math.inf), "scale"),
                                        (lambda: compose.MALA([0.1, -0.1]), "step_size")])
def test_step_size_must_be_positive(make, name):
    with pytest.raises(ValueError, match=name + r": .*> 0"):
        make()


def test_per_level_step_sizes_need_one_value_per_level(target):
    kernel = compose.MALA([0.1] * 99)
    with pytest.raises(ValueError, match="step_size: expected one value per level, 100 in all, got 99"):
        compose.sample(target, kernel, 4, progress=False)


@pytest.mark.parametrize("damping", [-0.1, 1.0, 1.5])
def test_damping_outside_unit_interval(damping):
    with pytest.raises(ValueError, match=r"damping: must be in \[0, 1\)"):
        compose.HMC(0.1, damping=damping)


def test_leapfrog_count_and_mass():
    with pytest.raises(ValueError, match="num_leapfrog: must be an integer ≥ 1"):
        compose.HMC(0.1, num_leapfrog=0)
    with pytest.raises(ValueError, match="mass: must be finite and > 0"):
        compose.HMC(0.1, mass=0.0)


@pytest.mark.parametrize("t", [0, 101, -3, 1.5])
def test_level_outside_range(target, t):
    with pytest.raises(ValueError, match=r"t: level must be an integer in 1\.\.100"):
        target.score(torch.zeros(3, 2), t)
    with pytest.raises(ValueError, match=r"level must be an integer in 1\.\.100"):
        target.log_ratio(torch.zeros(3, 2), torch.ones(3, 2), t)


def test_wrong_batch_shape(target):
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 2\), got \(3, 3\)"):
        target.score(torch.zeros(3, 3), 5)
    with pytest.raises(ValueError, match=r"x_new: expected shape \(N, 2\)"):
        target.log_ratio(torch.zeros(3, 2), torch.zeros(3, 1), 5)


def test_compile_options(target, schedule):
    g = gaussian(schedule, [0.0, 0.0], 1.0, "g")
    with pytest.raises(ValueError, match="path: must be one of line, curve"):
        compose.compile(g, path="spline")
    with pytest.raises(ValueError, match="points: .* integer ≥ 0"):
        compose.compile(g, points=-1)


def test_sample_arguments(target):
    with pytest.raises(ValueError, match="num_samples: must be an integer ≥ 1"):
        compose.sample(target, compose.MALA(0.1), 0)
    with pytest.raises(ValueError, match="steps_per_level: must be an integer ≥ 0"):
        compose.sample(target, compose.MALA(0.1), 4, steps_per_level=-1)
    with pytest.raises(ValueError, match="reverse_step=True is needed"):
        compose.sample(target, None, 4)


def test_unbound_and_classifier_leaves(schedule):
    with pytest.raises(compose.CompositionError, match="name 'p' is not bound"):
        compose.compile(compose.Leaf("p"))
    clf = compose.Classifier(lambda x, t: x, schedule, name="clf")
    with pytest.raises(compose.CompositionError, match="'clf' is a classifier"):
        compose.compile(clf * gaussian(schedule, [0.0, 0.0], 1.0, "a"))


def test_mixture_refuses_score_only_components(schedule):
    s = compose.ScoreModel.from_analytic(gaussian(schedule, [0.0, 0.0], 1.0, "a"), name="s")
    with pytest.raises(compose.CompositionError, match="mixture needs log-densities: 's' is a score-only"):
        compose.compile(s + gaussian(schedule, [1.0, 0.0], 1.0, "b"))


def test_diverging_chains_raise_instead_of_returning_nan(schedule):
    g = gaussian(schedule, [0.0, 0.0], 0.01, "narrow")
    with pytest.raises(FloatingPointError, match="level 100: some samples became non-finite"):
        compose.sample(compose.compile(g), compose.ULA(1e6), 8, steps_per_level=50,
                       generator=torch.Generator().manual_seed(0), progress=False)
