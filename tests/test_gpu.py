"""On a CUDA device (skipped without one; `pytest -m gpu` selects these): every kernel under
`compose.sample`, a generator on the device, the diffusers adapter, and a half-precision network.

The statistical checks compare against the exact product of Gaussians with tolerances from the
Monte Carlo error, as on the CPU; nothing compares CPU and GPU bits (their kernels differ).
"""
import math

import pytest
import torch

import compose
from conftest import gaussian

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = "cuda"
N = 4000


def _product(schedule):
    """g1 * g2: a Gaussian in closed form at every level."""
    return gaussian(schedule, [1.0, 0.0], 0.5, "g1"), gaussian(schedule, [-1.0, 1.0], 0.8, "g2")


def _closed_form(schedule, t, stds=(0.5, 0.8), means=((1.0, 0.0), (-1.0, 1.0))):
    a, s2 = schedule.alpha_bar(t), schedule.sigma(t) ** 2
    precision, shift = 0.0, torch.zeros(2, dtype=torch.float64)
    for std, mean in zip(stds, means):
        v = a * std ** 2 + s2
        precision += 1.0 / v
        shift += math.sqrt(a) * torch.tensor(mean, dtype=torch.float64) / v
    return shift / precision, 1.0 / precision


def _z_scores(samples, mean, var):
    samples = samples.double().cpu()
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean).abs() / math.sqrt(var / n)
    z_var = (samples.var(0) - var).abs() / (var * math.sqrt(2.0 / n))
    return torch.cat([z_mean, z_var])


KERNELS = {
    "ULA": (lambda: compose.ULA(0.005), "line"),
    "MALA": (lambda: compose.MALA(0.03), "line"),
    "HMC-line": (lambda: compose.HMC(0.15), "line"),
    "HMC-curve": (lambda: compose.HMC(0.15), "curve"),
    "U-HMC": (lambda: compose.HMC(0.05, adjusted=False), "line"),
    "RWMH": (lambda: compose.RandomWalkMH(0.4), "line"),
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_every_kernel_on_cuda(schedule, name):
    make_kernel, path = KERNELS[name]
    g1, g2 = _product(schedule)
    score = compose.ScoreModel.from_analytic(g1, name="g1_s")
    target = compose.compile(score * g2, path=path, points=1)
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    result = compose.sample(target, make_kernel(), N, steps_per_level=5, generator=generator,
                            device=DEVICE, dtype=torch.float64, progress=False)
    assert result.samples.device.type == "cuda" and result.samples.dtype == torch.float64
    mean, var = _closed_form(schedule, 1)
    # unadjusted kernels are biased by O(η); their tolerance is looser but still fails on a wrong score
    limit = 4.5 if make_kernel().adjusted else 8.0
    assert _z_scores(result.samples, mean, var).max() < limit


def test_a_generator_on_the_device_reproduces_its_run(schedule):
    g1, g2 = _product(schedule)
    target = compose.compile(g1 * g2)
    run = lambda seed: compose.sample(target, compose.HMC(0.1), 256, steps_per_level=2, device=DEVICE,
                                      generator=torch.Generator(device=DEVICE).manual_seed(seed),
                                      progress=False).samples
    first, again, other = run(3), run(3), run(4)
    assert torch.equal(first, again)                 # same seed, same device, same calls
    assert not torch.equal(first, other)


def test_the_device_follows_the_generator(schedule):
    g1, g2 = _product(schedule)
    result = compose.sample(compose.compile(g1 * g2), compose.MALA(0.01), 16, steps_per_level=1,
                            generator=torch.Generator(device=DEVICE).manual_seed(0), progress=False)
    assert result.samples.device.type == "cuda"


def test_a_half_precision_network_with_float32_chains(schedule):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2)).to(DEVICE).half()

    def eps(x, t):
        return net(x.half())                          # a float16 network, as after net.half()

    model = compose.ScoreModel(eps, schedule, name="half", event_shape=(2,))
    g1, _ = _product(schedule)
    for kernel in (compose.ULA(0.001), compose.MALA(0.001), compose.HMC(0.01)):
        result = compose.sample(compose.compile(model * g1, points=1), kernel, 64, steps_per_level=2,
                                generator=torch.Generator(device=DEVICE).manual_seed(0), device=DEVICE,
                                progress=False)
        assert result.samples.dtype == torch.float32
        assert bool(torch.isfinite(result.samples).all())


def test_the_diffusers_adapter_on_cuda(monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    # compare float32 with float32: TF32 convolutions (on by default for cuDNN) round to 10 bits
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    from compose.adapters import from_diffusers
    config = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=4, add_attention=False,
                  down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(**config).eval()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=20)
    model = from_diffusers(unet.to(DEVICE), scheduler, name="unet")
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    on_gpu = model.score(x.to(DEVICE), 7)
    on_cpu = from_diffusers(diffusers.UNet2DModel(**config).eval(), scheduler, name="unet_cpu")
    on_cpu.net.load_state_dict({k: v.cpu() for k, v in unet.state_dict().items()})
    expected = on_cpu.score(x, 7)
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    # float32 convolutions on two devices: agree to a tolerance from the dtype and the magnitudes
    tolerance = 1e3 * torch.finfo(torch.float32).eps * float(expected.abs().max())
    assert float((on_gpu.cpu() - expected).abs().max()) <= tolerance
    result = compose.sample(compose.compile(model), compose.MALA(1e-4), 4, steps_per_level=1,
                            generator=torch.Generator(device=DEVICE).manual_seed(0), device=DEVICE,
                            progress=False)
    assert result.samples.shape == (4, 1, 8, 8) and result.samples.device.type == "cuda"


@pytest.mark.parametrize("kernel", [None, "MALA"])
def test_smc_on_cuda(kernel):
    """Weights, ESS and resampling on the device: the mass of a mixture's right mode times a
    Gaussian (exact 0.729), and no host loop (the run finishes at the reverse process's pace)."""
    schedule = compose.Schedule.linear(100)
    modes = compose.GaussianMixture(means=[[-1.0], [1.0]], std=0.1, schedule=schedule, name="modes")
    prior = compose.GaussianMixture(means=[[0.5]], std=1.0, schedule=schedule, name="prior")
    target = compose.compile(modes * prior)
    masses = []
    for seed in range(4):
        generator = torch.Generator(device=DEVICE).manual_seed(seed)
        result = compose.sample(target, compose.MALA(0.002) if kernel else None, 20000,
                                steps_per_level=2 if kernel else 0, generator=generator,
                                device=DEVICE, dtype=torch.float64, smc=compose.SMC(), progress=False)
        assert result.samples.device.type == "cuda"
        masses.append(float((result.samples[:, 0] > 0).double().mean()))
    spread = torch.tensor(masses).std().item() / 2
    assert abs(sum(masses) / 4 - 0.7291) < 4 * spread + 0.01, masses
