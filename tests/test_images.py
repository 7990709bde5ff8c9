"""compose.images: decoding through the component that decodes, clipping to [0, 1] with the
clipped values counted, and grids with gutters, a title and labels.

The latent model is the tiny Stable Diffusion pipeline of test_pipelines (built and saved
here, nothing downloaded); its VAE's own decoder is the reference for decoding.
"""

import numpy as np
import pytest
import torch

import compose
from compose import images as img

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from compose.adapters import from_diffusers, from_pipeline, load  # noqa: E402
from test_pipelines import tiny_stable_diffusion  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd_images"))


def pixel_unet(channels=3, classes=None):
    torch.manual_seed(3)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2, num_class_embeds=classes).eval()


def vae_reference(pipeline, latents):
    with torch.no_grad():
        x = pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor).sample
    return x / 2 + 0.5


# -- clipping --------------------------------------------------------------------------------
def test_postprocess_clips_to_the_unit_range_and_counts_what_was_outside():
    x = torch.full((2, 3, 4, 4), 0.25)
    x[0, 0, 0, :3] = torch.tensor([1.5, -0.2, float("nan")])
    x[1, 2, 3, 3] = 1.0                                       # on the edge: inside
    out = img.postprocess(x)
    assert (out.clipped, out.values) == (3, 96)
    assert out.fraction_clipped == pytest.approx(3 / 96)
    assert out.images[0, 0, 0, :3].tolist() == [1.0, 0.0, 0.0]
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert out.clipping() == "3 of 96 values (3.12%) were outside the image range and were clipped"
    assert "(100%)" in img.postprocess(x + 5).clipping()
    assert "(<0.01%)" in img.Images(x, 1, 10 ** 6).clipping()
    as_np = img.postprocess(x, "np").images
    assert as_np.shape == (2, 4, 4, 3) and as_np.dtype == np.float32
    np.testing.assert_array_equal(as_np, out.images.permute(0, 2, 3, 1).numpy())
    pil = img.postprocess(x, "pil").images
    assert len(pil) == 2 and pil[0].size == (4, 4) and pil[0].mode == "RGB"
    assert img.postprocess(x[:, :1], "pil").images[0].mode == "L"
    with pytest.raises(ValueError, match="output_type: expected one of 'pt', 'np', 'pil'"):
        img.postprocess(x, "numpy")


def test_pixel_samples_far_outside_are_clipped_and_counted_the_raw_kept():
    """A guided pixel run can hand back ±9452: the images are clipped, the samples are not."""
    model = from_diffusers(pixel_unet(), diffusers.DDPMScheduler(num_train_timesteps=50), name="u")
    x = torch.zeros((3, 3, 8, 8))
    x[0, 0, 0, 0], x[1, 1, 2, 3], x[2, 2, 7, 7] = 9452.0, -9452.0, 0.999
    raw = x.clone()
    out = compose.compile("u", u=model).decode(x)
    assert out.clipped == 2 and out.decoder == "u"
    assert out.images[0, 0, 0, 0] == 1 and out.images[1, 1, 2, 3] == 0
    torch.testing.assert_close(out.images[2, 2, 7, 7], torch.tensor(0.9995))
    assert torch.equal(x, raw)                                 # the samples are untouched
    assert out.images[0, 1].eq(0.5).all()                      # 0 ↦ 1/2


# -- decoding ----------------------------------------------------------------------------------
def test_a_latent_pipeline_decodes_through_its_vae_from_a_target_or_a_result(saved):
    pipeline, folder = saved
    model = load(folder, name="p")
    latents = 3 * torch.randn((5, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    reference = vae_reference(pipeline, latents)
    target = compose.compile('p(prompt="a cat") ** 2 / p', p=model, levels=4)
    result = compose.SampleResult(latents, compose.Diagnostics("ULA", 5))
    for out in (target.decode(result), img.decode(target, latents, batch_size=2),
                img.decode(target.expr, latents), img.decode(model, latents)):
        assert out.images.shape == (5, 3, 16, 16) and out.decoder == "p"
        torch.testing.assert_close(out.images, reference.clamp(0, 1))
        assert out.clipped == int(((reference < 0) | (reference > 1)).sum())
    assert out.clipped > 0                                     # the test exercises clipping
    pil = target.decode(latents, output_type="pil").images
    assert len(pil) == 5 and pil[0].size == (16, 16)
    assert "5 × (3, 16, 16), decoded by p" in repr(out)


def test_the_first_component_that_decodes_decodes(saved):
    _, folder = saved
    model = load(folder, name="p")
    other = compose.GaussianMixture(torch.zeros((1, 4 * 8 * 8)), 1.0, schedule=model.schedule,
                                    name="g")
    assert img.decoder_of(other * model) is model
    with pytest.raises(ValueError, match=r"no component of 'g \*\* 2' decodes .*components: g"):
        img.decoder_of(other ** 2)
    with pytest.raises(ValueError, match=r"no component of 'g' decodes"):
        img.decode(other, torch.zeros((1, 4, 8, 8)))
    with pytest.raises(ValueError, match="source: expected a compiled target"):
        img.decode(object(), torch.zeros((1, 2)))


def test_a_latent_unet_without_its_vae_refuses_to_decode_and_says_to_pass_it(saved):
    pipeline, _ = saved
    def encode(prompt):
        return pipeline.encode_prompt(prompt, "cpu", 1, False)[0]
    bare = from_diffusers(pipeline.unet, pipeline.scheduler, name="q", encode_prompt=encode)
    latents = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="4 channels are latents.*pass the VAE.*decode=pipeline.vae"):
        bare.decode(latents)
    with pytest.raises(ValueError, match="pass the VAE"):
        img.decode(bare, latents)
    with_vae = from_diffusers(pipeline.unet, pipeline.scheduler, name="q", encode_prompt=encode,
                              decode=pipeline.vae)
    torch.testing.assert_close(with_vae.decode(latents), vae_reference(pipeline, latents))


# -- grids -------------------------------------------------------------------------------------
def test_a_grid_has_white_gutters_between_exact_cells():
    g = torch.Generator().manual_seed(2)
    x = torch.rand((5, 3, 4, 6), generator=g)
    picture = img.grid(x, columns=3, gutter=2, scale=2)
    assert picture.size == (3 * 12 + 4 * 2, 2 * 8 + 3 * 2)
    pixels = np.asarray(picture)
    expected = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for k in range(5):
        r, c = divmod(k, 3)
        x0, y0 = 2 + c * 14, 2 + r * 10
        cell = pixels[y0:y0 + 8, x0:x0 + 12]
        np.testing.assert_array_equal(cell, expected[k].repeat(2, 0).repeat(2, 1))
    assert (pixels[:2] == 255).all() and (pixels[:, 14:16] == 255).all()     # gutters
    assert (pixels[12:20, 2 + 2 * 14:] == 255).all()                        # the empty 6th cell
    np.testing.assert_allclose(img.grid(x, columns=3, gutter=2, scale=2, output_type="np"),
                               pixels / 255, atol=1e-7)
    assert img.grid(x, 3, gutter=2, scale=2, output_type="pt").shape == (3, 22, 44)
    for same in (img.postprocess(x, "pil").images, img.postprocess(x, "np").images):
        np.testing.assert_array_equal(np.asarray(img.grid(same, 3, gutter=2, scale=2)), pixels)


def test_a_grid_of_tiny_images_is_scaled_up_and_draws_its_title_and_labels():
    x = torch.zeros((4, 1, 8, 8))                                  # black grey-scale cells
    plain = img.grid(x)
    assert plain.size[0] >= 2 * 96 and plain.mode == "RGB"
    titled = img.grid(x, title="p(prompt=\"a dog\") ** 3 / p ** 2", labels=list("abcd"))
    assert titled.size[0] == plain.size[0] and titled.size[1] > plain.size[1]
    band = np.asarray(titled)[:titled.size[1] - plain.size[1] - 2]          # the title band
    assert (band < 128).any()                                               # text is drawn
    with pytest.raises(ValueError, match="labels: expected one per image"):
        img.grid(x, labels=["a"])
    with pytest.raises(ValueError, match="C = 1 or 3"):
        img.grid(torch.zeros((2, 4, 8, 8)))
    grey = img.postprocess(torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(8)))
    np.testing.assert_array_equal(np.asarray(img.grid(img.postprocess(grey.images, "pil").images)),
                                  np.asarray(grey.grid()))               # "L" images as grey cells
    out = img.postprocess(x * 2 - 1)                                        # Images themselves
    assert out.grid(columns=4).size[0] > out.grid(columns=2).size[0]


def test_a_long_title_wraps_to_the_grid_width():
    x = torch.rand((2, 3, 8, 8), generator=torch.Generator().manual_seed(4))
    short = img.grid(x, title="p")
    long = img.grid(x, title=" ".join(["p(prompt=\"a castle\") ** 7.5"] * 6))
    assert long.size[0] == short.size[0] and long.size[1] > short.size[1]


def test_a_latent_model_with_three_latent_channels_decodes_through_its_vqvae():
    """LDM pipelines keep a VQ autoencoder as `vqvae`; 3 latent channels are not pixels."""
    from types import SimpleNamespace
    torch.manual_seed(6)
    vqvae = diffusers.VQModel(block_out_channels=(8,), norm_num_groups=4, latent_channels=3,
                              layers_per_block=1, num_vq_embeddings=16).eval()
    pipeline = SimpleNamespace(unet=pixel_unet(), scheduler=diffusers.DDIMScheduler(num_train_timesteps=50),
                               vqvae=vqvae)
    model = from_pipeline(pipeline, name="ldm")
    z = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        reference = vqvae.decode(z / vqvae.config.scaling_factor).sample / 2 + 0.5
    torch.testing.assert_close(model.decode(z), reference)
    assert img.decode(model, z).clipped == int(((reference < 0) | (reference > 1)).sum())
