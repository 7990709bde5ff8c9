"""The kernels under `pyro.infer.MCMC`: Pyro's diagnostics contract (so `summary()` works) and
non-finite samples handled exactly as `compose.sample` handles them."""
import pytest
import torch
from pyro.infer import MCMC

import compose
from conftest import gaussian


def _nan_score_model(schedule, bound=0.6):
    """An exact Gaussian ε-prediction that is NaN where x₀ > bound: moves landing there make Δ
    NaN, i.e. a divergence, which an adjusted kernel rejects."""
    def net(x, t):
        eps = 0.5 * x
        return torch.where(x[:, :1] > bound, torch.full_like(x, float("nan")), eps)
    return compose.ScoreModel(net, schedule, name="holey", event_shape=(2,))


def _run(kernel, target, t, x0, warmup, samples, seed):
    kernel.at_level(target, t, torch.Generator().manual_seed(seed))
    mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, initial_params={"x": x0},
                disable_progbar=True)
    mcmc.run()
    return mcmc


def _direct(kernel, target, t, x0, steps, seed):
    g = torch.Generator().manual_seed(seed)
    state, infos = kernel.init(target, x0, t, g), []
    for _ in range(steps):
        state, info = kernel.step(target, state, t, kernel.step_sizes(target)[t - 1], g)
        infos.append(info)
    return infos


@pytest.mark.parametrize("make_kernel", [lambda: compose.MALA(0.05), lambda: compose.HMC(0.1),
                                         lambda: compose.RandomWalkMH(0.4)], ids=["MALA", "HMC", "RWMH"])
def test_diagnostics_follow_pyros_contract_and_summary_prints(schedule, make_kernel, capsys):
    target = compose.compile(_nan_score_model(schedule) * gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(2)) * 0.3
    warmup, samples, t = 4, 12, 5
    mcmc = _run(make_kernel(), target, t, x0, warmup, samples, seed=7)
    infos = _direct(make_kernel(), target, t, x0, warmup + samples, seed=7)
    after = infos[warmup:]
    # Pyro's contract: divergences a list of post-warm-up step indices (here one entry per
    # divergent chain), acceptance rate over the post-warm-up steps
    diagnostics = mcmc.diagnostics()
    divergences = diagnostics["divergences"]["chain 0"]
    expected = [i for i, info in enumerate(after) for _ in range(int(info.divergent.sum()))]
    assert divergences == expected and len(expected) > 0
    accepted = sum(int(info.accepted.sum()) for info in after)
    assert diagnostics["acceptance rate"]["chain 0"] == pytest.approx(accepted / (samples * 64), rel=1e-12)
    capsys.readouterr()
    mcmc.summary()
    out = capsys.readouterr().out
    assert f"Number of divergences: {len(expected)}" in out
    assert "n_eff" in out


def test_summary_without_divergences(schedule, capsys):
    target = compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    mcmc = _run(compose.ULA(0.01), target, 3, torch.zeros(8, 2), 2, 5, seed=0)
    assert mcmc.diagnostics()["divergences"] == {"chain 0": []}
    mcmc.summary()
    assert "Number of divergences: 0" in capsys.readouterr().out


@pytest.mark.parametrize("make_kernel", [lambda: compose.ULA(1e6), lambda: compose.HMC(1e3, adjusted=False)],
                         ids=["ULA", "U-HMC"])
@pytest.mark.parametrize("path", ["compose.sample", "pyro.infer.MCMC"])
def test_non_finite_samples_raise_on_both_paths(schedule, make_kernel, path):
    target = compose.compile(gaussian(schedule, [0.0, 0.0], 0.01, "narrow"))
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="level 100: some samples became non-finite; "
                                                 "reduce the step size at this level"):
        if path == "compose.sample":
            compose.sample(target, make_kernel(), 8, steps_per_level=50, initial=x0,
                           generator=torch.Generator().manual_seed(0), progress=False)
        else:
            _run(make_kernel(), target, 100, x0, 0, 50, seed=0)


def test_pyro_argument_checks(schedule):
    target = compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    with pytest.raises(ValueError, match="generator: expected a torch.Generator"):
        compose.MALA(0.1).at_level(target, 3, generator=0)
    kernel = compose.MALA(0.1).at_level(target, 3)
    with pytest.raises(ValueError, match=r"initial_params: .*floating-point.*torch.int64"):
        MCMC(kernel, num_samples=2, initial_params={"x": torch.zeros(4, 2, dtype=torch.long)},
             disable_progbar=True).run()
