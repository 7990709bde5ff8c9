"""Text- and class-conditional diffusers UNets: prompts, classifier-free guidance, stacked calls,
respaced schedules, save/reload, half precision.

Every score is compared with a direct computation from diffusers' own UNet: −ε̂/σ at the
diffusers timestep τ − 1 of the training level τ. Nothing is downloaded: tiny random UNets,
a DDPMScheduler and a deterministic stand-in for the text encoder are built here.
"""
import math
import zlib

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import compose  # noqa: E402
from compose.adapters import PromptEmbeddings, from_diffusers, load  # noqa: E402

T = 100
DIM = 12


def tiny_text_unet(seed=0, **overrides):
    config = dict(sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=4, cross_attention_dim=DIM,
                  attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    config.update(overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.UNet2DConditionModel(**config).eval()


def tiny_class_unet(seed=0, **overrides):
    config = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=4, add_attention=False, num_class_embeds=4,
                  down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    config.update(overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.UNet2DModel(**config).eval()


class StandInEncoder:
    """Deterministic prompt → (1, L, DIM) embedding; L = 3 + len(prompt) % 3 unless fixed.
    Counts its calls; with `masks`, also returns an attention mask hiding the last token."""

    def __init__(self, length=None, masks=False):
        self.length, self.masks, self.calls = length, masks, []

    def __call__(self, prompt):
        self.calls.append(prompt)
        g = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
        length = self.length or 3 + len(prompt) % 3
        embedding = torch.randn((1, length, DIM), generator=g)
        if not self.masks:
            return embedding
        mask = torch.ones(1, length, dtype=torch.long)       # integer, as tokenizers give it
        mask[0, -1] = 0
        return embedding, mask


class TimestepRecorder:
    """Forward pre-hook recording the batch size and the timesteps of every UNet call."""

    def __init__(self, unet):
        self.calls = []
        unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        sample, timestep = args[0], args[1]
        self.calls.append((sample.shape[0], sorted(set(timestep.tolist()))))


@pytest.fixture(scope="module")
def unet():
    return tiny_text_unet()


@pytest.fixture(scope="module")
def scheduler():
    return diffusers.DDPMScheduler(num_train_timesteps=T)


@pytest.fixture
def x():
    return torch.randn((3, 2, 8, 8), generator=torch.Generator().manual_seed(1))


def direct_score(unet, scheduler, x, tau, prediction_type="epsilon", prompt=None, encoder=None,
                 class_labels=None, mask=True):
    """−ε̂/σ_τ by hand in float64: the UNet at diffusers' timestep τ − 1."""
    kwargs = {}
    if prompt is not None:
        result = encoder(prompt)
        embedding, attention = result if isinstance(result, tuple) else (result, None)
        kwargs["encoder_hidden_states"] = embedding.expand(x.shape[0], -1, -1)
        if attention is not None and mask:
            kwargs["encoder_attention_mask"] = attention.expand(x.shape[0], -1)
    if class_labels is not None:
        kwargs["class_labels"] = torch.full((x.shape[0],), class_labels)
    with torch.no_grad():
        out = unet(x, torch.full((x.shape[0],), tau - 1), **kwargs).sample
    out = out[:, :x.shape[1]].double()
    abar = scheduler.alphas_cumprod.double()[tau - 1]         # the table diffusers trains with
    root, sigma = abar.sqrt(), (1 - abar).sqrt()
    if prediction_type == "epsilon":
        eps = out
    else:
        x0 = root * x.double() - sigma * out if prediction_type == "v_prediction" else out
        eps = (x.double() - root * x0) / sigma
    return -eps / sigma


def assert_close_relative(actual, expected, rtol=1e-4):
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=rtol * scale)


# -- prompts -----------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prompt_condition_is_the_encoders_embedding_and_the_bare_leaf_the_empty_prompt(
        unet, x, prediction_type):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, prediction_type=prediction_type)
    encoder, reference = StandInEncoder(), StandInEncoder()
    model = from_diffusers(unet, scheduler, name="p", encode_prompt=encoder)
    for tau in (1, 37, T):
        assert_close_relative(model.score(x, tau, (("prompt", "a castle"),)),
                              direct_score(unet, scheduler, x, tau, prediction_type, "a castle", reference))
        assert_close_relative(model.score(x, tau),
                              direct_score(unet, scheduler, x, tau, prediction_type, "", reference))
    assert sorted(set(encoder.calls)) == ["", "a castle"] and len(encoder.calls) == 2   # cached


def test_attention_masks_reach_the_unet(unet, scheduler, x):
    encoder = StandInEncoder(masks=True)
    model = from_diffusers(unet, scheduler, name="p", encode_prompt=encoder)
    score = model.score(x, 40, (("prompt", "a dog"),))
    assert_close_relative(score, direct_score(unet, scheduler, x, 40, "epsilon", "a dog", encoder))
    unmasked = direct_score(unet, scheduler, x, 40, "epsilon", "a dog", encoder, mask=False)
    assert (score.double() - unmasked).abs().max() > 1e-3 * unmasked.abs().max()


def test_embeddings_are_cached_per_prompt_device_and_dtype():
    encoder = StandInEncoder(length=4)
    prompts = PromptEmbeddings(encoder)
    first, _ = prompts("a hat", "cpu", torch.float32)
    assert prompts("a hat", torch.device("cpu"), torch.float32)[0] is first
    half, _ = prompts("a hat", "cpu", torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.shape == (1, 4, DIM)
    assert encoder.calls == ["a hat"] and len(prompts) == 1


@pytest.mark.parametrize("result, message", [
    (torch.zeros(2, 4, DIM), r"shape \(1, L, D\)"), ("text", "floating-point tensor"),
    ((torch.zeros(1, 4, DIM), torch.ones(1, 3)), "mask of 3 tokens"),
    ((torch.zeros(1, 4, DIM),) * 3, "got 3 values")])
def test_bad_encoder_outputs_are_named(result, message):
    with pytest.raises(ValueError, match=message):
        PromptEmbeddings(lambda prompt: result)("p", "cpu", torch.float32)


# -- compositions: CFG and AND / NOT on a respaced schedule --------------------------------
def test_cfg_on_a_respaced_schedule_matches_direct_computation_in_one_call(unet, scheduler, x):
    encoder = StandInEncoder()
    model = from_diffusers(unet, scheduler, name="p", encode_prompt=encoder)
    recorder = TimestepRecorder(unet)
    target = compose.compile('p(prompt="a castle") ** 7.5 / p ** 6.5', p=model, levels=10)
    try:
        for i in (1, 4, 10):
            tau = 10 * i
            recorder.calls.clear()
            expected = (7.5 * direct_score(unet, scheduler, x, tau, prompt="a castle", encoder=encoder)
                        - 6.5 * direct_score(unet, scheduler, x, tau, prompt="", encoder=encoder))
            recorder.calls.clear()                          # (the direct computation's calls)
            assert_close_relative(target.score(x, i), expected)
            assert recorder.calls == [(6, [tau - 1])]      # one call, both conditions stacked
    finally:
        unet._forward_pre_hooks.clear()


def test_and_not_composition_has_exact_weights_in_score_and_delta(unet, scheduler, x):
    encoder = StandInEncoder(length=5)
    model = from_diffusers(unet, scheduler, name="p", encode_prompt=encoder)
    text = 'p(prompt="a dog") ** 3 * p(prompt="a hat") ** 3 / p(prompt=rain) / p ** 4'
    target = compose.compile(text, p=model, levels=[5, 50, 100])
    weights = {"a dog": 3.0, "a hat": 3.0, "rain": -1.0, "": -4.0}

    def composed(y, tau):
        return sum(w * direct_score(unet, scheduler, y, tau, prompt=prompt, encoder=encoder)
                   for prompt, w in weights.items())

    x_new = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    for i, tau in ((1, 5), (2, 50), (3, 100)):
        s, s_new = composed(x, tau), composed(x_new, tau)
        assert_close_relative(target.score(x, i), s)
        # Δ with no interior points: the trapezoid ½ (s(x) + s(x')) · (x' − x), exact weights
        trapezoid = 0.5 * ((s + s_new) * (x_new - x).double()).flatten(1).sum(1)
        delta = target.log_ratio(x, x_new, i)
        torch.testing.assert_close(delta.double(), trapezoid, rtol=1e-4, atol=1e-4 * trapezoid.abs().max().item())
    plan = target.plan_for(compose.MALA(0.01), steps_per_level=2, num_samples=3)
    assert plan.totals["calls_per_level"] == 1 + 2           # 4 terms, one call per point
    assert "4 conditions stacked" in str(plan)


def test_prompt_compositions_round_trip_through_str(unet, scheduler):
    model = from_diffusers(unet, scheduler, name="p", encode_prompt=StandInEncoder())
    for text in ['p(prompt="a castle") ** 7.5 / p ** 6.5',
                 'p(prompt="a dog") ** 3 * p(prompt="a hat") ** 3 / p(prompt=rain) / p ** 4',
                 'p(prompt="say \\"hi\\", ok") ** 2 / p']:
        expr = compose.parse(text, p=model)
        assert compose.parse(str(expr), p=model) == expr
    expr = model.given(prompt='a "quoted" castle') ** 2 / model
    assert compose.parse(str(expr), p=model) == expr


def test_stacked_call_equals_separate_calls_for_ragged_and_masked_prompts(unet, scheduler, x):
    for encoder in (StandInEncoder(), StandInEncoder(masks=True)):
        model = from_diffusers(unet, scheduler, name="p", encode_prompt=encoder)
        conditions = [(("prompt", "a castle"),), (), (("prompt", "fog"),)]
        stacked = model.scores(x, 30, conditions)
        for c, s in zip(conditions, stacked):
            torch.testing.assert_close(s, model.score(x, 30, c), rtol=1e-5, atol=1e-5)


def test_composition_samples_end_to_end_on_a_respaced_schedule(unet, scheduler):
    model = from_diffusers(unet, scheduler, name="p", encode_prompt=StandInEncoder())
    recorder = TimestepRecorder(unet)
    try:
        target = compose.compile('p(prompt="a castle") ** 2 / p', p=model, levels=4, path="curve", points=1)
        kernel = compose.HMC(compose.PowerLaw(0.3, 0.5), num_leapfrog=2)
        plan = target.plan_for(kernel, steps_per_level=1, num_samples=2)
        result = compose.sample(target, kernel, 2, steps_per_level=1, reverse_step=True,
                                generator=torch.Generator().manual_seed(5), progress=False)
    finally:
        unet._forward_pre_hooks.clear()
    assert result.samples.shape == (2, 2, 8, 8) and torch.isfinite(result.samples).all()
    assert {t for _, ts in recorder.calls for t in ts} == {24, 49, 74, 99}
    assert len(recorder.calls) == plan.totals["calls_per_run"]
    assert sum(target.counter.calls.values()) == len(recorder.calls)


# -- class-conditional with a null class ----------------------------------------------------
def test_class_cfg_with_a_null_class_is_one_stacked_call():
    unet = tiny_class_unet()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    model = from_diffusers(unet, scheduler, name="d", null_class=3)
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(6))
    recorder = TimestepRecorder(unet)
    try:
        target = compose.compile(model.given({"class": 1}) ** 3 / model ** 2, levels=20)
        score = target.score(x, 7)
    finally:
        unet._forward_pre_hooks.clear()
    expected = (3 * direct_score(unet, scheduler, x, 35, class_labels=1)
                - 2 * direct_score(unet, scheduler, x, 35, class_labels=3))
    assert_close_relative(score, expected)
    assert recorder.calls == [(4, [34])]
    with pytest.raises(ValueError, match="null_class: class must be in 0..3"):
        from_diffusers(unet, scheduler, null_class=4)
    with pytest.raises(ValueError, match="null_class"):
        from_diffusers(unet, scheduler).score(x, 5)


# -- DeepFloyd IF's kind of UNet: pooled text embedding and learned variance -------------------
def test_if_style_unet_with_text_addition_embedding_and_learned_variance():
    unet = tiny_text_unet(in_channels=2, out_channels=4, addition_embed_type="text",
                          encoder_hid_dim=6, encoder_hid_dim_type="text_proj",
                          addition_embed_type_num_heads=2)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, variance_type="learned_range",
                                        beta_schedule="squaredcos_cap_v2")

    def encoder(prompt):
        g = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
        return torch.randn((1, 4, 6), generator=g)

    model = from_diffusers(unet, scheduler, name="p", encode_prompt=encoder)
    assert model.learned_variance
    x = torch.randn((2, 2, 8, 8), generator=torch.Generator().manual_seed(7))
    target = compose.compile('p(prompt="a castle") ** 20 / p ** 19', p=model, levels=10)
    expected = (20 * direct_score(unet, scheduler, x, 50, prompt="a castle", encoder=encoder)
                - 19 * direct_score(unet, scheduler, x, 50, prompt="", encoder=encoder))
    assert_close_relative(target.score(x, 5), expected)
    ragged = from_diffusers(unet, scheduler, name="q", encode_prompt=lambda p: torch.zeros(1, 2 + len(p), 6))
    with pytest.raises(ValueError, match="different lengths.*addition_embed_type='text'"):
        ragged.scores(x, 5, [(("prompt", "ab"),), ()])


# -- refusals ------------------------------------------------------------------------------
def test_refusals_name_what_is_wrong(unet, scheduler, x):
    with pytest.raises(ValueError, match="encode_prompt: a UNet2DConditionModel needs"):
        from_diffusers(unet, scheduler)
    with pytest.raises(ValueError, match="a UNet2DModel takes no text"):
        from_diffusers(tiny_class_unet(), scheduler, encode_prompt=StandInEncoder())
    with pytest.raises(ValueError, match="text_time.*SDXL"):
        from_diffusers(tiny_text_unet(addition_embed_type="text_time", addition_time_embed_dim=4,
                                      projection_class_embeddings_input_dim=28),
                       scheduler, encode_prompt=StandInEncoder())
    model = from_diffusers(unet, scheduler, name="p", encode_prompt=StandInEncoder())
    with pytest.raises(ValueError, match="prompt: expected a string, got 3"):
        model.score(x, 5, (("prompt", 3),))
    with pytest.raises(ValueError, match="unknown condition.*style.*'prompt'"):
        model.score(x, 5, (("style", 1),))
    plain = from_diffusers(tiny_class_unet(num_class_embeds=None), scheduler, name="u")
    with pytest.raises(ValueError, match="prompts need a UNet2DConditionModel"):
        plain.score(torch.zeros(1, 1, 8, 8), 5, (("prompt", "a"),))


# -- save_pretrained / from_pretrained, local files only ------------------------------------
def test_saved_and_reloaded_unet_and_scheduler_give_the_same_scores(unet, scheduler, x, tmp_path):
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "scheduler")
    encoder = StandInEncoder()
    reloaded = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "unet", local_files_only=True).eval()
    again = diffusers.DDPMScheduler.from_pretrained(tmp_path / "scheduler", local_files_only=True)
    a = from_diffusers(reloaded, again, name="p", encode_prompt=encoder)
    b = load(tmp_path, name="p", encode_prompt=encoder)
    assert b.schedule == a.schedule and type(b.net) is diffusers.UNet2DConditionModel
    expr = 'p(prompt="a castle") ** 3 / p ** 2'
    expected = compose.compile(expr, p=from_diffusers(unet, scheduler, name="p", encode_prompt=encoder),
                               levels=10).score(x, 3)
    for model in (a, b):
        torch.testing.assert_close(compose.compile(expr, p=model, levels=10).score(x, 3), expected)
    with pytest.raises(ValueError, match="neither model_index.json"):
        load(tmp_path / "unet")


# -- half precision --------------------------------------------------------------------------
def test_bfloat16_unet_runs_in_bfloat16_and_scores_stay_float32(unet, scheduler, x):
    encoder = StandInEncoder()
    half = tiny_text_unet().to(torch.bfloat16)
    seen = []
    half.register_forward_pre_hook(lambda m, args, kwargs: seen.append(
        (args[0].dtype, kwargs["encoder_hidden_states"].dtype)), with_kwargs=True)
    reference = from_diffusers(unet, scheduler, name="p", encode_prompt=encoder)
    model = from_diffusers(half, scheduler, name="p", encode_prompt=encoder)
    expr = 'p(prompt="a castle") ** 2 / p'
    score = compose.compile(expr, p=model, levels=10).score(x, 5)
    full = compose.compile(expr, p=reference, levels=10).score(x, 5)
    assert score.dtype == torch.float32 and seen == [(torch.bfloat16, torch.bfloat16)]
    # bfloat16 keeps 8 significant bits (relative rounding 2⁻⁸ per operation); through a few
    # layers a few percent of the score's scale, far below the difference between prompts
    error = (score - full).abs().max() / full.abs().max()
    assert 0 < error < 0.1


# -- a noise-aware classifier guiding a pretrained model on a respaced schedule ---------------
class LevelRecordingClassifier(torch.nn.Module):
    """Logits of 3 classes from x and the level; records the levels it is called with."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        self.linear = torch.nn.Linear(64 + 1, 3)
        self.seen = []

    def forward(self, x, t):
        self.seen.extend(t.tolist())
        return self.linear(torch.cat([x.flatten(1), t[:, None].float() / T], 1))


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "class-conditional"])
def test_classifier_guides_a_pretrained_model_on_a_respaced_schedule(conditional):
    unet = tiny_class_unet(num_class_embeds=4 if conditional else None)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    model = from_diffusers(unet, scheduler, name="u")
    net = LevelRecordingClassifier()
    classifier = compose.Classifier(net, model.schedule, name="clf")
    text = "u(class=2) | class=1 @ 2.5" if conditional else "u | class=1 @ 2.5"
    target = compose.compile(text, {"u": model, "class": classifier}, levels=[10, 40, 100])
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(9))
    for i, tau in ((1, 10), (2, 40), (3, 100)):
        net.seen.clear()
        score = target.score(x, i)
        assert net.seen == [tau, tau]                       # the training level, not i
        xg = x.clone().requires_grad_(True)
        log_p = torch.log_softmax(net(xg, torch.full((2,), tau)), 1)[:, 1]
        (grad,) = torch.autograd.grad(log_p.sum(), xg)
        expected = direct_score(unet, scheduler, x, tau, class_labels=2 if conditional else None) \
            + 2.5 * grad.double()
        assert_close_relative(score, expected)
    result = compose.sample(target, compose.MALA(compose.PowerLaw(0.1, 1.0)), 2, steps_per_level=1,
                            reverse_step=True, generator=torch.Generator().manual_seed(10),
                            progress=False)
    assert torch.isfinite(result.samples).all()
    assert set(net.seen) <= {10, 40, 100}
