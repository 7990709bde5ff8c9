"""What networks return: every kernel keeps the chains' dtype whatever floating dtype a network
returns, and outputs that cannot be used (not a tensor, complex or integer, on another device,
the wrong shape, logits that do not depend on x) are a ValueError naming the component and what
it returned."""
import numpy as np
import pytest
import torch

import compose
from conftest import gaussian

T = 10
N = 8


@pytest.fixture(scope="module")
def short():
    return compose.Schedule.cosine(T)


def _models(schedule, out_dtype):
    """A score model, an energy model and a classifier whose networks return `out_dtype`."""
    score = compose.ScoreModel(lambda x, t: (0.5 * x).to(out_dtype), schedule, name="s",
                               event_shape=(2,))
    energy = compose.EnergyModel(lambda x, t: (0.8 * x).to(out_dtype), schedule, name="e",
                                 event_shape=(2,))
    clf = compose.Classifier(lambda x, t: torch.stack([x[:, 0], x[:, 1], -x[:, 0]], 1).to(out_dtype),
                             schedule, name="clf", event_shape=(2,))
    return score, energy, clf


KERNELS = {
    "ULA": (lambda: compose.ULA(0.01), "line"),
    "MALA": (lambda: compose.MALA(0.01), "line"),
    "HMC-line": (lambda: compose.HMC(0.05, num_leapfrog=2), "line"),
    "HMC-curve": (lambda: compose.HMC(0.05, num_leapfrog=2), "curve"),
    "U-HMC": (lambda: compose.HMC(0.05, num_leapfrog=2, adjusted=False), "line"),
    "RWMH": (lambda: compose.RandomWalkMH(0.1), "line"),
    "Reverse": (lambda: None, "line"),
}
OUTPUT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("chain_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("out_dtype", OUTPUT_DTYPES, ids=str)
@pytest.mark.parametrize("kernel_name", list(KERNELS))
def test_samples_keep_the_chains_dtype(short, kernel_name, out_dtype, chain_dtype):
    make_kernel, path = KERNELS[kernel_name]
    score, energy, clf = _models(short, out_dtype)
    target = compose.compile("s * e * g | class=1 @ 0.5", s=score, e=energy,
                             g=gaussian(short, [0.0, 0.0], 1.0, "g"), path=path, points=1,
                             **{"class": clf})
    kernel = make_kernel()
    result = compose.sample(target, kernel, N, steps_per_level=2, reverse_step=kernel is None,
                            generator=torch.Generator().manual_seed(0), dtype=chain_dtype, progress=False)
    assert result.samples.dtype == chain_dtype
    assert bool(torch.isfinite(result.samples).all())


@pytest.mark.parametrize("out_dtype", OUTPUT_DTYPES, ids=str)
def test_every_evaluated_quantity_has_the_chains_dtype(short, out_dtype):
    score, energy, clf = _models(short, out_dtype)
    target = compose.compile("s * e | class=1", s=score, e=energy, path="line", points=2,
                             **{"class": clf})
    x = torch.randn(N, 2, generator=torch.Generator().manual_seed(1))
    evaluation = target.evaluate(x, 3)
    assert {evaluation.score.dtype, evaluation.implicit_score.dtype,
            evaluation.log_density.dtype} == {torch.float32}
    assert target.log_ratio(x, x + 0.1, 3).dtype == torch.float32
    assert target.log_ratio_curve([x, x + 0.1, x + 0.2], 3).dtype == torch.float32


@pytest.mark.parametrize("make_kernel", [lambda: compose.ULA(0.01), lambda: compose.MALA(0.01),
                                         lambda: compose.HMC(0.05), lambda: compose.RandomWalkMH(0.1)],
                         ids=["ULA", "MALA", "HMC", "RWMH"])
def test_the_pyro_path_keeps_the_chains_dtype(short, make_kernel):
    from pyro.infer import MCMC
    score, energy, _ = _models(short, torch.float64)
    kernel = make_kernel().at_level(compose.compile(score * energy), 3, torch.Generator().manual_seed(0))
    mcmc = MCMC(kernel, num_samples=3, warmup_steps=0, initial_params={"x": torch.zeros(N, 2)},
                disable_progbar=True)
    mcmc.run()
    assert mcmc.get_samples()["x"].dtype == torch.float32


# -- unusable outputs -----------------------------------------------------------------------
BAD_OUTPUTS = {
    "tuple": (lambda out: (out,), r"returned a tuple"),
    "list": (lambda out: [out, out], r"returned a list"),
    "numpy": (lambda out: out.detach().numpy(), r"returned a numpy.ndarray"),
    "float": (lambda out: 0.5, r"returned a float"),
    "none": (lambda out: None, r"returned None"),
    "complex": (lambda out: out.to(torch.complex64), r"complex64"),
    "integer": (lambda out: out.to(torch.int64), r"int64"),
    "boolean": (lambda out: out > 0, r"torch.bool"),
    "other-device": (lambda out: out.to("meta"), r"on meta.*inputs are on cpu"),
}


def _component(kind, schedule, transform):
    if kind == "score":
        return compose.ScoreModel(lambda x, t: transform(0.5 * x), schedule, name="bad", event_shape=(2,))
    if kind == "energy":
        return compose.EnergyModel(lambda x, t: transform(0.8 * x), schedule, name="bad", event_shape=(2,))
    return compose.Classifier(lambda x, t: transform(torch.stack([x[:, 0], -x[:, 0]], 1)), schedule,
                              name="bad", event_shape=(2,))


def _target(kind, component, schedule):
    g = gaussian(schedule, [0.0, 0.0], 1.0, "g")
    if kind == "classifier":
        return compose.compile("g | class=1", g=g, **{"class": component})
    return compose.compile(component * g)


@pytest.mark.parametrize("case", list(BAD_OUTPUTS))
@pytest.mark.parametrize("kind", ["score", "energy", "classifier"])
def test_unusable_outputs_name_the_component_and_what_it_returned(short, kind, case):
    transform, what = BAD_OUTPUTS[case]
    target = _target(kind, _component(kind, short, transform), short)
    with pytest.raises(ValueError, match="bad: ") as caught:
        compose.sample(target, compose.MALA(0.01), N, steps_per_level=1, progress=False)
    assert caught.match(what)


@pytest.mark.parametrize("kind", ["score", "energy"])
def test_wrong_shape_names_the_component(short, kind):
    target = _target(kind, _component(kind, short, lambda out: out[:, :1]), short)
    with pytest.raises(ValueError, match=r"bad: .*shape \(8, 1\) for input \(8, 2\)"):
        compose.sample(target, compose.ULA(0.01), N, steps_per_level=1, progress=False)


def test_classifier_logits_of_the_wrong_shape(short):
    target = _target("classifier", _component("classifier", short, lambda out: out[:, 0]), short)
    with pytest.raises(ValueError, match=r"bad: .*logits of shape \(N, classes\), got \(8,\)"):
        compose.sample(target, compose.ULA(0.01), N, steps_per_level=1, progress=False)


@pytest.mark.parametrize("net", [lambda x, t: torch.zeros(x.shape[0], 3),
                                 lambda x, t: torch.zeros(x.shape[0], 3, requires_grad=True) * 2.0,
                                 lambda x, t: x.detach()[:, :1].repeat(1, 3)],
                         ids=["constant", "depends-on-parameters-only", "detached"])
def test_a_classifier_whose_logits_do_not_depend_on_x(short, net):
    clf = compose.Classifier(net, short, name="flat", event_shape=(2,))
    target = compose.compile("g | class=1", g=gaussian(short, [0.0, 0.0], 1.0, "g"), **{"class": clf})
    with pytest.raises(ValueError, match=r"flat: the logits do not depend on x"):
        target.score(torch.zeros(N, 2), 3)


def test_numpy_output_under_ula_is_refused_too(short):
    """ULA never forms Δ; before the check a numpy ε slipped through it silently."""
    target = _target("score", _component("score", short, lambda out: out.numpy()), short)
    with pytest.raises(ValueError, match="bad: the network returned a numpy.ndarray"):
        compose.sample(target, compose.ULA(0.01), N, steps_per_level=1, progress=False)
