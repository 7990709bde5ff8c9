"""The diffusers adapter against direct computations with diffusers' own UNet and scheduler.

Everything is built locally: a tiny randomly initialised UNet2DModel (8×8, one channel) and a
DDPMScheduler with T = 20. Nothing is downloaded.
"""
import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import compose  # noqa: E402
from compose.adapters import DiffusersScoreModel, from_diffusers  # noqa: E402

T = 20
LEVELS = (1, 7, T)


def tiny_unet(seed=0, **overrides):
    config = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=4, add_attention=False,
                  down_block_types=("DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D"))
    config.update(overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.UNet2DModel(**config).eval()


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.fixture
def x():
    return torch.randn((3, 1, 8, 8), generator=torch.Generator().manual_seed(1))


def direct_score(unet, scheduler, x, t, prediction_type, class_labels=None, timestep=None):
    """−ε̂/σ_t computed by hand in float64: UNet at diffusers' timestep t − 1, ε̂ through x̂_0."""
    timestep = t - 1 if timestep is None else timestep
    with torch.no_grad():
        out = unet(x, torch.full((x.shape[0],), timestep), class_labels=class_labels).sample
    out = out[:, :x.shape[1]].double()
    xd = x.double()
    # ᾱ_t = the scheduler's table alphas_cumprod[t − 1], the noise level diffusers trains the
    # UNet at (add_noise) and samples with; 1 − ᾱ in float64, without float32 cancellation.
    abar = scheduler.alphas_cumprod.double()[t - 1]
    root, sigma = abar.sqrt(), (1 - abar).sqrt()
    if prediction_type == "epsilon":
        eps = out
    else:
        x0 = root * xd - sigma * out if prediction_type == "v_prediction" else out
        eps = (xd - root * x0) / sigma
    return -eps / sigma


def assert_close_relative(actual, expected, rtol=1e-4):
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=rtol * scale)


# -- the schedule and the timestep mapping ---------------------------------------------------
def test_schedule_is_the_schedulers_and_levels_are_shifted_timesteps(unet):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    model = from_diffusers(unet, scheduler)
    assert model.schedule.T == T and model.event_shape == (1, 8, 8)
    # ᾱ is the scheduler's own table (what diffusers trains and samples with), to float64
    # rounding; our level t is diffusers' 0-based timestep t − 1
    table = scheduler.alphas_cumprod.double()
    torch.testing.assert_close(model.schedule.alpha_bars, table, rtol=1e-14, atol=0)
    for t in range(1, T + 1):
        assert model.schedule.alpha_bar(t) == pytest.approx(float(scheduler.alphas_cumprod[t - 1]), rel=1e-14)
    # the β's are those of diffusers' DDPM step, 1 − ᾱ_t/ᾱ_{t−1}: the scheduler's β's up to
    # the float32 rounding of its table
    torch.testing.assert_close(model.schedule.betas, scheduler.betas.double(), rtol=2e-3, atol=0)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_conversion_inverts_diffusers_definitions(unet, prediction_type):
    """ε recovered from diffusers' own v (get_velocity) and x_0 at x_t = add_noise(x_0, ε, t − 1)."""
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, prediction_type=prediction_type)
    model = from_diffusers(unet, scheduler)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn((4, 1, 8, 8), generator=g), torch.randn((4, 1, 8, 8), generator=g)
    for t in LEVELS:
        k = torch.full((4,), t - 1)
        xt = scheduler.add_noise(x0, eps, k)
        output = scheduler.get_velocity(x0, eps, k) if prediction_type == "v_prediction" else x0
        # "sample" at t = 1 divides by σ_1 = 0.01: float32 rounding is amplified 100 times
        atol = 1e-4 if prediction_type == "v_prediction" else 1e-2 / float(model.schedule.sigma(t))
        torch.testing.assert_close(model.noise_from_output(output, xt, t), eps, rtol=0, atol=atol)


# -- the score -------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_score_matches_direct_computation(unet, x, prediction_type):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, prediction_type=prediction_type)
    model = from_diffusers(unet, scheduler)
    assert model.prediction_type == prediction_type
    for t in LEVELS:
        assert_close_relative(model.score(x, t), direct_score(unet, scheduler, x, t, prediction_type))


@pytest.mark.xfail(strict=True, reason="negative control: level t must call the UNet at t − 1")
def test_negative_control_off_by_one_timestep_is_caught(unet, x):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    model = from_diffusers(unet, scheduler)
    assert_close_relative(model.score(x, 7), direct_score(unet, scheduler, x, 7, "epsilon", timestep=7))


def test_prediction_type_argument_overrides_the_scheduler(unet, x):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    model = from_diffusers(unet, scheduler, prediction_type="v_prediction")
    assert_close_relative(model.score(x, 7), direct_score(unet, scheduler, x, 7, "v_prediction"))


def test_learned_variance_keeps_the_first_half_of_the_channels(x):
    unet = tiny_unet(out_channels=2)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, variance_type="learned_range")
    model = from_diffusers(unet, scheduler)
    assert model.learned_variance
    for t in LEVELS:
        score = model.score(x, t)
        assert score.shape == x.shape
        assert_close_relative(score, direct_score(unet, scheduler, x, t, "epsilon"))


def test_tables_follow_the_input_dtype_and_are_cached(unet, x):
    model = from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T, prediction_type="sample"))
    score = model.score(x.double(), 7)
    assert score.dtype == torch.float64
    assert set(model._tables) == {(x.device, torch.float64)}
    first = model.tables(x.double())[0]
    model.score(x.double(), 3)
    assert model.tables(x.double())[0] is first
    assert_close_relative(score, model.score(x, 7).double())


def test_score_keeps_no_autograd_graph_unless_x_requires_grad(unet, x):
    model = from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T))
    assert model.score(x, 5).grad_fn is None
    assert model.score(x.clone().requires_grad_(True), 5).grad_fn is not None


def test_class_conditional_unet_takes_the_class_from_a_leaf_condition(x):
    unet = tiny_unet(num_class_embeds=3)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    model = from_diffusers(unet, scheduler, name="cond")
    target = compose.compile(model.given({"class": 2}))
    labels = torch.full((3,), 2)
    assert_close_relative(target.score(x, 7), direct_score(unet, scheduler, x, 7, "epsilon", labels))
    other = compose.compile(model.given({"class": 0})).score(x, 7)
    assert not torch.allclose(other, target.score(x, 7))
    with pytest.raises(ValueError, match="class-conditional"):
        model.score(x, 7)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        model.score(x, 7, (("class", 3),))
    plain = from_diffusers(tiny_unet(), scheduler)
    with pytest.raises(ValueError, match="not class-conditional"):
        plain.score(x, 7, (("class", 1),))


# -- refusals --------------------------------------------------------------------------------
def test_bad_prediction_type_names_the_allowed_values(unet):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    with pytest.raises(ValueError, match="epsilon, v_prediction, sample.*'flow_prediction'"):
        from_diffusers(unet, scheduler, prediction_type="flow_prediction")
    scheduler.register_to_config(prediction_type="velocity")
    with pytest.raises(ValueError, match="prediction_type: must be one of"):
        from_diffusers(unet, scheduler)


def test_refuses_fourier_embedded_unets_and_ve_schedulers(unet):
    fourier = tiny_unet(time_embedding_type="fourier")
    with pytest.raises(ValueError, match="fourier.*variance-exploding.*variance-preserving"):
        from_diffusers(fourier, diffusers.DDPMScheduler(num_train_timesteps=T))
    with pytest.raises(ValueError, match="ScoreSdeVeScheduler has no discrete β schedule"):
        from_diffusers(unet, diffusers.ScoreSdeVeScheduler(num_train_timesteps=T))


def test_refuses_other_models_and_mismatched_channels(unet):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    with pytest.raises(ValueError, match="expected a diffusers UNet2DModel"):
        from_diffusers(torch.nn.Identity(), scheduler)
    with pytest.raises(ValueError, match="out_channels=3"):
        from_diffusers(tiny_unet(out_channels=3), scheduler)
    if "num_train_timesteps" not in inspect.signature(diffusers.UNet2DModel.__init__).parameters:
        pytest.skip("this diffusers has no learned time embedding in UNet2DModel")
    with pytest.raises(ValueError, match="num_train_timesteps=20, but the scheduler has 30"):
        from_diffusers(tiny_unet(time_embedding_type="learned", num_train_timesteps=T),
                       diffusers.DDPMScheduler(num_train_timesteps=30))


# -- composition end to end ------------------------------------------------------------------
@pytest.mark.parametrize("kernel", [compose.MALA(compose.PowerLaw(0.5, 1.0)), None], ids=["MALA", "Reverse"])
def test_composition_compiles_plans_and_samples(unet, kernel):
    model = from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T), name="unet")
    assert isinstance(model, DiffusersScoreModel) and isinstance(model, compose.ScoreModel)
    means = torch.stack([torch.full((1, 8, 8), -0.5), torch.full((1, 8, 8), 0.5)])
    prior = compose.GaussianMixture(means, 0.3, schedule=model.schedule, name="gmm")
    target = compose.compile(model * prior ** 0.5, points=1)
    assert target.event_shape == (1, 8, 8)
    assert "unet" in str(target.plan)
    steps = 2 if kernel is not None else 0
    g = torch.Generator().manual_seed(3)
    result = compose.sample(target, kernel, 4, steps_per_level=steps, reverse_step=True,
                            generator=g, progress=False)
    assert result.samples.shape == (4, 1, 8, 8)
    assert torch.isfinite(result.samples).all()
    assert len(result.diagnostics.levels) == T
    per_sample = result.diagnostics.evaluations_per_sample()
    # MALA: per level 1 at the start + 2 steps × (1 proposal + 1 line point); Reverse: 1
    assert per_sample["unet"] == (T * (1 + steps * 2) if kernel is not None else T)
