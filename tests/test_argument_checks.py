"""Arguments of kernels and of `compose.sample` that used to end in a torch-internal error:
each is now a ValueError naming the argument, raised before any network is evaluated."""
import pytest
import torch

import compose
from conftest import gaussian


@pytest.fixture
def target(schedule):
    return compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))


def _sample(target, kernel=None, **kwargs):
    kernel = compose.MALA(0.01) if kernel is None else kernel
    return compose.sample(target, kernel, 4, steps_per_level=1, progress=False, **kwargs)


# -- HMC mass -------------------------------------------------------------------------------
@pytest.mark.parametrize("mass", [torch.ones(3), torch.ones(2, 2), lambda t: torch.ones(3)],
                         ids=["(3,)", "(2, 2)", "callable"])
def test_a_mass_that_does_not_fit_the_event_shape(target, mass):
    with pytest.raises(ValueError, match=r"mass: shape \(.*\) does not fit the event shape \(2,\)"):
        _sample(target, compose.HMC(0.1, mass=mass))


def test_the_mass_is_checked_before_any_evaluation(schedule):
    calls = []
    model = compose.ScoreModel(lambda x, t: calls.append(1) or x, schedule, name="s", event_shape=(2,))
    with pytest.raises(ValueError, match="mass: shape"):
        _sample(compose.compile(model), compose.HMC(0.1, mass=torch.ones(3)))
    assert calls == []


@pytest.mark.parametrize("mass", [torch.ones(2), torch.ones(1), torch.tensor(2.0), torch.ones(1, 2)])
def test_masses_that_fit(target, mass):
    assert _sample(target, compose.HMC(0.1, mass=mass)).samples.shape == (4, 2)


@pytest.mark.parametrize("mass", ["1", [1.0, "a"], object()])
def test_a_mass_that_is_not_numbers(mass):
    with pytest.raises(ValueError, match="mass: "):
        compose.HMC(0.1, mass=mass)


# -- step sizes -----------------------------------------------------------------------------
def test_a_step_size_callable_may_return_a_zero_dimensional_tensor(target):
    # a float64 tensor holds the same number as the float (a float32 one would round 0.01)
    a = _sample(target, compose.MALA(lambda t: torch.tensor(0.01, dtype=torch.float64)),
                generator=torch.Generator().manual_seed(0))
    b = _sample(target, compose.MALA(lambda t: 0.01), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.samples, b.samples)          # same computation, same draws


@pytest.mark.parametrize("value, what", [(torch.tensor([0.1, 0.2]), r"a tensor of shape \(2,\)"),
                                         ("0.1", "a str"), (None, "None"), (-1.0, "-1.0"),
                                         (float("nan"), "nan")])
def test_a_step_size_callable_returning_something_else(target, value, what):
    with pytest.raises(ValueError, match=r"step_size: the callable returned .*" + what + ".* at t = 1"):
        _sample(target, compose.MALA(lambda t: value))


@pytest.mark.parametrize("make, name", [(lambda s: compose.MALA(s), "step_size"),
                                        (lambda s: compose.ULA(s), "step_size"),
                                        (lambda s: compose.HMC(s), "step_size"),
                                        (lambda s: compose.RandomWalkMH(s), "scale")])
@pytest.mark.parametrize("spec", ["0.01", b"0.01", {"a": 1}, [0.1, "x"], object()],
                         ids=["str", "bytes", "dict", "mixed-list", "object"])
def test_a_step_size_that_is_not_a_number(make, name, spec):
    with pytest.raises(ValueError, match=name + ": must be"):
        make(spec)


# -- generator, initial batch, dtype ----------------------------------------------------------
@pytest.mark.parametrize("generator", [0, "seed", torch.zeros(1)])
def test_a_generator_that_is_not_one(target, generator):
    with pytest.raises(ValueError, match=r"generator: expected a torch.Generator or None, got .*; "
                                         r"to seed, pass torch.Generator\(\).manual_seed\(0\)"):
        _sample(target, generator=generator)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_an_initial_batch_that_is_not_real_floating_point(target, dtype):
    with pytest.raises(ValueError, match=rf"initial: expected a real floating-point tensor, got {dtype}"):
        _sample(target, initial=torch.zeros(4, 2, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex128, "float32", float])
def test_a_dtype_that_is_not_real_floating_point(target, dtype):
    with pytest.raises(ValueError, match=r"dtype: must be a real floating-point torch.dtype"):
        _sample(target, dtype=dtype)


def test_a_non_finite_initial_batch(target):
    with pytest.raises(ValueError, match="initial: .*non-finite"):
        _sample(target, initial=torch.full((4, 2), float("nan")))


# -- path="curve" needs a kernel with a leapfrog path -----------------------------------------
@pytest.mark.parametrize("make_kernel", [lambda: compose.MALA(0.01), lambda: compose.RandomWalkMH(0.1)],
                         ids=["MALA", "RWMH"])
def test_curve_needs_a_kernel_that_provides_one(schedule, make_kernel):
    s = compose.ScoreModel.from_analytic(gaussian(schedule, [0.0, 0.0], 1.0, "g"), name="s")
    target = compose.compile(s, path="curve", points=1)
    name = make_kernel().name
    message = rf"path: {name} has no leapfrog path to integrate Δ along; compile with path='line'"
    with pytest.raises(ValueError, match=message):
        _sample(target, make_kernel())
    with pytest.raises(ValueError, match=message):
        make_kernel().at_level(target, 3)
    with pytest.raises(ValueError, match=message):
        target.plan_for(make_kernel(), 10, 100)


@pytest.mark.parametrize("make_kernel", [lambda: compose.HMC(0.05), lambda: compose.HMC(0.05, adjusted=False),
                                         lambda: compose.ULA(0.01)], ids=["HMC", "U-HMC", "ULA"])
def test_curve_is_fine_for_hmc_and_for_kernels_without_a_correction(schedule, make_kernel):
    s = compose.ScoreModel.from_analytic(gaussian(schedule, [0.0, 0.0], 1.0, "g"), name="s")
    target = compose.compile(s, path="curve", points=1)
    assert _sample(target, make_kernel()).samples.shape == (4, 2)


def test_the_kernel_says_whether_it_provides_a_curve():
    assert compose.HMC(0.1).provides_curve
    assert not compose.MALA(0.1).provides_curve and not compose.RandomWalkMH(0.1).provides_curve


# -- devices ----------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only torch")
@pytest.mark.parametrize("generator", [None, "cpu"])
def test_cuda_on_a_cpu_only_torch_is_one_clear_message(target, generator):
    generator = torch.Generator(device=generator) if generator else None
    with pytest.raises(ValueError, match=r"device: 'cuda' is not available") as caught:
        _sample(target, device="cuda", generator=generator)
    assert "torch.Generator(device=" not in str(caught.value)     # advice that cannot work here


def test_an_unknown_device_name(target):
    with pytest.raises(ValueError, match=r"device: 'gpu' is not a torch device"):
        _sample(target, device="gpu")


def test_a_generator_on_another_device_than_the_initial_batch(target):
    with pytest.raises(ValueError, match=r"generator: it lives on cpu, but initial is on meta"):
        _sample(target, initial=torch.zeros(4, 2, device="meta"), generator=torch.Generator())
