"""Tests of compose.models.nets and compose.models.training: architecture, noise-prediction
training against the exact noise predictor of a Gaussian, the energy parameterisation, and
checkpoints."""
import math

import pytest
import torch
from torch import nn

from compose.models.checkpoints import load_checkpoint, save_checkpoint
from compose.models.nets import ResidualMLP
from compose.models.training import TrainResult, plot_loss_curve, predict_noise, train_diffusion
from compose.schedule import Schedule

T = 20
MU = torch.tensor([1.0, -0.5])
S = 0.5  # data: N(MU, S² I)


def tiny_net(seed=0):
    torch.manual_seed(seed)  # tests only: the library itself never seeds globally
    return ResidualMLP(dim=2, T=T, hidden=32, inner=64, embed=8, blocks=2)


def gaussian_data(n, generator):
    return MU + S * torch.randn((n, 2), generator=generator)


def exact_eps(schedule, x, t):
    """ε*(x, t) = E[ε | x_t = x] = σ_t (x − √ᾱ_t μ) / (ᾱ_t s² + σ_t²) for data N(μ, s² I)."""
    abar = schedule.alpha_bars.float()[t - 1][:, None]
    sigma = schedule.sigmas.float()[t - 1][:, None]
    return sigma * (x - abar.sqrt() * MU) / (abar * S ** 2 + sigma ** 2)


def eps_error(net, schedule, parameterisation):
    """E‖ε̂(x_t, t) − ε*(x_t, t)‖² over x_t from the forward process, t uniform (fixed seed)."""
    g = torch.Generator().manual_seed(123)
    n = 2000
    t = torch.randint(1, T + 1, (n,), generator=g)
    xt = schedule.add_noise(gaussian_data(n, g), t, torch.randn((n, 2), generator=g))
    eps_hat = predict_noise(net, xt, t, parameterisation).detach()
    return float(((eps_hat - exact_eps(schedule, xt, t)) ** 2).sum(1).mean())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks train several times faster on one thread than on contended cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def schedule():
    return Schedule.cosine(T)


@pytest.fixture(scope="module", params=["score", "energy"])
def trained(request, schedule, one_thread):
    parameterisation = request.param
    net = tiny_net()
    initial_error = eps_error(net, schedule, parameterisation)
    result = train_diffusion(net, schedule, gaussian_data, parameterisation=parameterisation,
                             steps=200, batch_size=128, lr=3e-3, ema_decay=0.95,
                             generator=torch.Generator().manual_seed(0), progress=False)
    return parameterisation, initial_error, result


# -- the network ----------------------------------------------------------------------------
def test_default_parameter_count():
    # embedding 100·32 + input 2·128+128 + 4 blocks · (LayerNorm 2·128 + 128·256+256
    # + 32·256+256 + 256·256+256 + 256·128+128) + output 128·2+2
    block = 2 * 128 + (128 * 256 + 256) + (32 * 256 + 256) + (256 * 256 + 256) + (256 * 128 + 128)
    expected = 100 * 32 + (2 * 128 + 128) + 4 * block + (128 * 2 + 2)
    assert expected == 565_506
    assert sum(p.numel() for p in ResidualMLP().parameters()) == expected


def test_output_is_zero_at_init_and_config_rebuilds():
    net = ResidualMLP()
    x = torch.randn(5, 2)
    out = net(x, torch.tensor([1, 2, 50, 99, 100]))
    assert out.shape == (5, 2) and torch.equal(out, torch.zeros(5, 2))
    assert ResidualMLP(**net.config()).config() == net.config()
    with pytest.raises(ValueError, match=r"1\.\.100"):
        net(x, torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(5, 3), torch.ones(5, dtype=torch.long))


def test_time_embedding_uses_row_t_minus_1():
    net = tiny_net()
    nn.init.normal_(net.out.weight)  # make the output depend on the input
    for block in net.blocks:
        nn.init.normal_(block.out.weight)
    x = torch.randn(3, 2)
    t = torch.tensor([1, 7, T])
    reference = net(x, t)
    with torch.no_grad():
        net.embedding.weight[6] += 1.0  # row of level 7 only
    changed = net(x, t)
    assert torch.equal(changed[[0, 2]], reference[[0, 2]])
    assert not torch.allclose(changed[1], reference[1])


# -- the energy parameterisation --------------------------------------------------------------
class _Linear(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, x, t):
        return x @ self.A.T


def test_energy_noise_prediction_is_gradient_of_g():
    # f(x) = A x: g = ‖(A − I) x‖², ∇_x g = 2 (A − I)ᵀ (A − I) x.
    A = torch.tensor([[1.5, 0.2], [-0.3, 0.7]], dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.ones(4, dtype=torch.long)
    B = A - torch.eye(2, dtype=torch.float64)
    expected = 2 * x @ (B.T @ B).T
    got = predict_noise(_Linear(A), x, t, "energy")
    torch.testing.assert_close(got, expected)
    assert not got.requires_grad
    with pytest.raises(ValueError, match="'score' or 'energy'"):
        predict_noise(_Linear(A), x, t, "energies")


# -- training -------------------------------------------------------------------------------
def test_training_reduces_loss_and_learns_exact_noise_predictor(trained, schedule):
    parameterisation, initial_error, result = trained
    assert isinstance(result, TrainResult)
    assert len(result.losses) == 200 and all(math.isfinite(v) for v in result.losses)
    assert result.seconds > 0
    # The loss falls: the mean over the last 50 steps is well below the first 20.
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-50:]) / 50
    assert last < 0.8 * first
    # The EMA net approximates ε* far better than the untrained net (error ≈ 1.4 for score,
    # 3.6 for energy at init; ≈ 0.02 after training).
    error = eps_error(result.ema_net, schedule, parameterisation)
    assert error < 0.1 * initial_error and error < 0.1
    assert not any(p.requires_grad for p in result.ema_net.parameters())


def test_ema_net_differs_from_last_iterate(trained):
    _, _, result = trained
    differ = [not torch.equal(a, b) for a, b in
              zip(result.ema_net.parameters(), result.net.parameters())]
    assert any(differ)


def test_training_is_reproducible_from_the_generator(schedule):
    runs = []
    for _ in range(2):
        result = train_diffusion(tiny_net(), schedule, gaussian_data, steps=5, batch_size=16,
                                 generator=torch.Generator().manual_seed(7), progress=False)
        runs.append(result.losses)
    assert runs[0] == runs[1]
    other = train_diffusion(tiny_net(), schedule, gaussian_data, steps=5, batch_size=16,
                            generator=torch.Generator().manual_seed(8), progress=False)
    assert other.losses != runs[0]


def test_callback_sees_every_step(schedule):
    seen = []
    train_diffusion(tiny_net(), schedule, gaussian_data, steps=3, batch_size=8,
                    generator=torch.Generator().manual_seed(0), progress=False,
                    callback=lambda info: seen.append((info["step"], info["loss"])))
    assert [s for s, _ in seen] == [0, 1, 2]


def test_training_rejects_bad_arguments(schedule):
    with pytest.raises(ValueError, match="parameterisation"):
        train_diffusion(tiny_net(), schedule, gaussian_data, parameterisation="eps", steps=1)
    with pytest.raises(ValueError, match="T=20.*T=10"):
        train_diffusion(tiny_net(), Schedule.cosine(10), gaussian_data, steps=1)
    with pytest.raises(ValueError, match="ema_decay"):
        train_diffusion(tiny_net(), schedule, gaussian_data, steps=1, ema_decay=1.0)


def test_plot_loss_curve_writes_png(tmp_path):
    path = plot_loss_curve([1.0 / (i + 1) for i in range(200)], tmp_path / "loss.png")
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


# -- checkpoints ----------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_outputs(trained, schedule, tmp_path):
    parameterisation, _, result = trained
    path = tmp_path / "model.pt"
    save_checkpoint(path, result.ema_net, schedule, parameterisation, extra={"steps": 200})
    net, stored, loaded_parameterisation = load_checkpoint(path, schedule=schedule)
    assert type(net) is ResidualMLP and net.config() == result.ema_net.config()
    assert stored.same_as(schedule) and loaded_parameterisation == parameterisation
    x = torch.randn(64, 2)
    t = torch.randint(1, T + 1, (64,))
    assert torch.equal(predict_noise(net, x, t, parameterisation),
                       predict_noise(result.ema_net, x, t, parameterisation))
    assert torch.load(path, weights_only=True)["extra"] == {"steps": 200}


def test_checkpoint_schedule_mismatch_raises(schedule, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, tiny_net(), schedule, "score")
    with pytest.raises(ValueError, match=r"Schedule\.cosine\(T=20\).*Schedule\.cosine\(T=30\)"):
        load_checkpoint(path, schedule=Schedule.cosine(30))
    with pytest.raises(ValueError, match="different β's"):
        load_checkpoint(path, schedule=Schedule.cosine(T, s=0.02))
    load_checkpoint(path, schedule=Schedule.cosine(T))  # an equal schedule is fine


def test_checkpoint_with_mismatched_weights_raises(schedule, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, tiny_net(), schedule, "score")
    data = torch.load(path, weights_only=True)
    data["architecture"]["config"]["hidden"] = 48
    torch.save(data, path)
    with pytest.raises(ValueError, match="do not fit ResidualMLP"):
        load_checkpoint(path)
    data["architecture"] = {"class": "UNet", "config": {}}
    torch.save(data, path)
    with pytest.raises(ValueError, match="unknown architecture"):
        load_checkpoint(path)
    data["architecture"] = {"class": "ResidualMLP", "config": {"width": 3}}
    torch.save(data, path)
    with pytest.raises(ValueError, match="cannot build ResidualMLP"):
        load_checkpoint(path)
    torch.save({"weights": 1}, path)
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(path)


def test_save_checkpoint_rejects_unknown_architecture(schedule, tmp_path):
    with pytest.raises(ValueError, match="cannot checkpoint a _Linear"):
        save_checkpoint(tmp_path / "m.pt", _Linear(torch.eye(2)), schedule, "score")
