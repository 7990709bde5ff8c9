"""Pipelines as users hold them: a tiny Stable Diffusion pipeline built here (CLIP text encoder
and a tokenizer from vocabulary files this test writes, a VAE, a text UNet, a PNDM scheduler),
saved with save_pretrained and loaded back from local files only. Nothing is downloaded.
"""
import importlib.util
import json
import pathlib
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

import compose  # noqa: E402
from compose.adapters import from_pipeline, load  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
T = 100
TOKENS = 8


def clip_tokenizer(folder: pathlib.Path):
    """A CLIP BPE tokenizer over single letters (no merges), from files written here."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                      model_max_length=TOKENS), vocab


def tiny_stable_diffusion(folder: pathlib.Path):
    torch.manual_seed(0)
    tokenizer, vocab = clip_tokenizer(folder / "vocab")
    end = vocab["<|endoftext|>"]
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=TOKENS, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=end, pad_token_id=end)).eval()
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, cross_attention_dim=16, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=16).eval()
    scheduler = diffusers.PNDMScheduler(num_train_timesteps=T, beta_schedule="scaled_linear",
                                        skip_prk_steps=True, steps_offset=1)
    pipeline = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder / "pipeline")
    return pipeline, folder / "pipeline"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd"))


def direct_score(pipeline, x, tau, prompt):
    """−ε̂/σ_τ from the pipeline's own parts: its encode_prompt, its UNet at timestep τ − 1."""
    with torch.no_grad():
        embedding, _ = pipeline.encode_prompt(prompt, "cpu", 1, False)
        eps = pipeline.unet(x, torch.full((x.shape[0],), tau - 1),
                            encoder_hidden_states=embedding.expand(x.shape[0], -1, -1)).sample
    abar = pipeline.scheduler.alphas_cumprod.double()[tau - 1]
    return -eps.double() / (1 - abar).sqrt()


def test_loaded_pipeline_scores_prompts_with_its_own_encoder(saved):
    pipeline, folder = saved
    model = load(folder, name="p")
    assert model.text_conditional and model.event_shape == (4, 8, 8)
    assert model.schedule.T == T
    torch.testing.assert_close(model.schedule.alpha_bars, pipeline.scheduler.alphas_cumprod.double(),
                               rtol=1e-14, atol=0)
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    target = compose.compile('p(prompt="a castle") ** 7.5 / p ** 6.5', p=model, levels=10)
    expected = 7.5 * direct_score(pipeline, x, 60, "a castle") - 6.5 * direct_score(pipeline, x, 60, "")
    torch.testing.assert_close(target.score(x, 6).double(), expected, rtol=0,
                               atol=1e-4 * expected.abs().max().item())
    same = from_pipeline(pipeline, name="p")
    torch.testing.assert_close(compose.compile('p(prompt="a castle") ** 7.5 / p ** 6.5', p=same,
                                               levels=10).score(x, 6), target.score(x, 6))


def test_decode_goes_through_the_vae(saved):
    pipeline, folder = saved
    model = load(folder, name="p")
    latents = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    images = model.decode(latents)
    with torch.no_grad():
        direct = pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor).sample
    assert images.shape == (2, 3, 16, 16)
    torch.testing.assert_close(images, direct / 2 + 0.5)          # not clipped: compose.images clips
    decoded = compose.images.decode(model, latents)
    torch.testing.assert_close(decoded.images, (direct / 2 + 0.5).clamp(0, 1))


def test_load_in_bfloat16_keeps_chains_in_float32(saved):
    _, folder = saved
    model = load(folder, name="p", dtype=torch.bfloat16)
    assert model.net.dtype == torch.bfloat16
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(2))
    score = compose.compile('p(prompt="a dog") ** 2 / p', p=model, levels=5).score(x, 3)
    reference = compose.compile('p(prompt="a dog") ** 2 / p', p=load(folder, name="p"), levels=5).score(x, 3)
    assert score.dtype == torch.float32
    assert 0 < (score - reference).abs().max() < 0.1 * reference.abs().max()


def test_load_refuses_what_is_not_a_saved_model(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        load(tmp_path / "missing")
    with pytest.raises(ValueError, match="neither model_index.json"):
        load(tmp_path)
    with pytest.raises(ValueError, match="expected a diffusers pipeline with a unet"):
        from_pipeline(object())


def run_example(argv):
    spec = importlib.util.spec_from_file_location("compose_prompts", ROOT / "examples" / "compose_prompts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compose_prompts"] = module
    spec.loader.exec_module(module)
    return module.main(argv)


def test_example_samples_a_prompt_composition_and_writes_a_grid(saved, tmp_path, capsys):
    _, folder = saved
    out = tmp_path / "grid.png"
    result = run_example([str(folder), 'p(prompt="a dog") ** 3 * p(prompt="a hat") ** 3 / p ** 5',
                          "--levels", "4", "--steps", "1", "--leapfrog", "2", "--samples", "3",
                          "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "respaced: level i calls the networks at training levels 25, 50, 75, 100 of 100" in printed
    assert "3 conditions stacked" in printed and "HMC" in printed
    assert result.samples.shape == (3, 4, 8, 8) and torch.isfinite(result.samples).all()
    from PIL import Image
    with Image.open(out) as image:
        # 3 images on a 2 × 2 grid: 16-pixel images drawn 6× (96), gutters of 96/20 → 4 pixels
        assert image.size[0] == 2 * 96 + 3 * 4
        assert image.size[1] > 2 * 96 + 3 * 4               # and the composition as a title
    assert "values (" in printed and "clipped" in printed


class IFStylePipeline:
    """DeepFloyd IF's shape of pipeline without its T5 encoder: encode_prompt with IF's
    signature (prompt, do_classifier_free_guidance, num_images_per_prompt, device, ...), a
    pixel UNet2DConditionModel with learned variance and a pooled text embedding."""

    def __init__(self):
        torch.manual_seed(4)
        self.unet = diffusers.UNet2DConditionModel(
            sample_size=8, in_channels=3, out_channels=6, block_out_channels=(8, 16),
            layers_per_block=1, norm_num_groups=4, cross_attention_dim=16, attention_head_dim=4,
            addition_embed_type="text", encoder_hid_dim=6, encoder_hid_dim_type="text_proj",
            addition_embed_type_num_heads=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
        self.scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, variance_type="learned_range",
                                                 beta_schedule="squaredcos_cap_v2")
        self.calls = []

    def encode_prompt(self, prompt, do_classifier_free_guidance=True, num_images_per_prompt=1,
                      device=None, negative_prompt=None, prompt_embeds=None,
                      negative_prompt_embeds=None, clean_caption=False):
        self.calls.append((prompt, do_classifier_free_guidance, num_images_per_prompt))
        g = torch.Generator().manual_seed(len(prompt))
        return torch.randn((1, 5, 6), generator=g), None


def test_if_style_pipeline_uses_its_own_encode_prompt_without_guidance():
    pipeline = IFStylePipeline()
    model = from_pipeline(pipeline, name="p")
    assert model.learned_variance and model.decoder is None and model.event_shape == (3, 8, 8)
    x = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(5))
    score = compose.compile('p(prompt="a castle") ** 20 / p ** 19', p=model, levels=10).score(x, 5)
    assert sorted(pipeline.calls) == [("", False, 1), ("a castle", False, 1)]
    embeddings = {prompt: pipeline.encode_prompt(prompt)[0] for prompt in ("a castle", "")}
    abar = pipeline.scheduler.alphas_cumprod.double()[49]
    with torch.no_grad():
        eps = {prompt: pipeline.unet(x, torch.full((2,), 49), encoder_hidden_states=e.expand(2, -1, -1)
                                     ).sample[:, :3].double() for prompt, e in embeddings.items()}
    expected = -(20 * eps["a castle"] - 19 * eps[""]) / (1 - abar).sqrt()
    torch.testing.assert_close(score.double(), expected, rtol=0, atol=1e-4 * expected.abs().max().item())
    torch.testing.assert_close(model.decode(x), x / 2 + 0.5)
    images = compose.images.decode(model, x).images
    assert images.min() >= 0 and images.max() <= 1
