"""Acceptance probes of issues 18 and 19, as a user tries them: each test failed before its fix."""
import pytest
import torch

import compose

diffusers = pytest.importorskip("diffusers")

from compose.adapters import from_diffusers  # noqa: E402

T = 30


@pytest.fixture(scope="module")
def pixel_model():
    """A tiny 3-channel pixel UNet (8 × 8) and its DDPM scheduler, as a component."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        unet = diffusers.UNet2DModel(
            sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
            layers_per_block=1, norm_num_groups=4, add_attention=False,
            down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2).eval()
    return from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T), name="q")


# -- decoding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (2, 3, 16, 16), (2, 1, 8, 8)])
def test_samples_of_another_shape_are_refused_not_decoded(pixel_model, shape):
    """Samples that are not (N, *event_shape) of the decoder gave 'images' of their own shape
    (4-channel pixels, a 16 × 16 picture from an 8 × 8 model) without a word."""
    with pytest.raises(ValueError, match=r"samples: q decodes samples of shape \(N, 3, 8, 8\)"):
        compose.images.decode(pixel_model, torch.zeros(shape))


def test_samples_of_the_right_shape_still_decode(pixel_model):
    images = compose.images.decode(pixel_model, torch.full((2, 3, 8, 8), 3.0))
    assert images.images.shape == (2, 3, 8, 8) and images.clipped == images.values == 384


def test_decoding_a_result_records_the_clipped_fraction_in_its_diagnostics(pixel_model):
    """docs/sampler.md: `diagnostics.clipped` is set by decoding; it stayed None."""
    target = compose.compile("q", q=pixel_model, levels=2)
    result = compose.sample(target, compose.ULA(0.01), 3, steps_per_level=1,
                            generator=torch.Generator().manual_seed(0), progress=False)
    assert result.diagnostics.clipped is None
    images = target.decode(result)
    assert 0 < images.clipped < images.values
    assert result.diagnostics.clipped == pytest.approx(images.fraction_clipped, abs=0)
    assert f"clipped {images.fraction_clipped:.2%}" in repr(result.diagnostics)
    # a bare tensor has no diagnostics to record into; decoding it still works
    assert compose.images.decode(target, result.samples).clipped == images.clipped


# -- docs/pretrained.md figures -----------------------------------------------------------------
DOCS = __import__("pathlib").Path(__file__).resolve().parent.parent / "docs" / "pretrained.md"


def _refused(component, levels, call):
    out = []
    for t in levels:
        try:
            call(component, t)
        except ValueError:
            out.append(t)
    return out


def test_the_documented_unreachable_levels_of_a_continuous_model_are_the_refused_ones():
    """The docs said levels 998–1000 of Schedule.linear(1000); level 997 (ᾱ = 4.288·10⁻⁵ <
    ᾱ(1) = 4.319·10⁻⁵) is refused too."""
    from compose.adapters import from_continuous
    model = from_continuous(lambda x, s: x, compose.Schedule.linear(1000), event_shape=(2,))
    refused = _refused(model, range(900, 1001), lambda m, t: m.time(t))
    assert refused == list(range(997, 1001))
    text = " ".join(DOCS.read_text().split())
    assert "its levels 997–1000 are refused" in text


def test_the_documented_cosine_levels_beyond_an_edm_denoiser_are_the_refused_ones():
    from compose.adapters import from_denoiser
    schedule = compose.Schedule.cosine(1000)
    model = from_denoiser(lambda x, sigma: x, schedule, event_shape=(2,), sigma_max=80.0)
    assert _refused(model, range(1, 1001), lambda m, t: m.ve_sigma(t)) == list(range(992, 1001))
    assert schedule.ve_sigma(1000) == pytest.approx(2e4, rel=0.05)
    text = " ".join(DOCS.read_text().split())
    assert "σ_VE > 80 from level 992 on, 2·10⁴ at level 1000" in text


# -- loading a partial folder -------------------------------------------------------------------
@pytest.mark.parametrize("removed, file", [("scheduler", "scheduler_config.json"),
                                           ("unet", "config.json")])
def test_a_pipeline_missing_a_subfolder_names_the_subfolder(tmp_path, removed, file):
    """A pipeline folder without scheduler/ (a partial download) was reported as
    '<folder>/scheduler_config.json: the file is missing', a file no pipeline has there."""
    import shutil
    from test_hub_loading import tiny_unet
    from compose.adapters import load
    folder = tmp_path / "pipeline"
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler(
        num_train_timesteps=T)).save_pretrained(folder)
    assert load(folder, name="q").event_shape == (1, 8, 8)
    shutil.rmtree(folder / removed)
    with pytest.raises(ValueError, match=rf"names a {removed} .*, but .*{removed} is missing "
                                         r"\(the pipeline folder is incomplete") as error:
        load(folder, name="q")
    assert file not in str(error.value).split("but")[1]


# -- the command line's loading bars follow --progress --------------------------------------------
@pytest.mark.parametrize("flag, expected", [("--no-progress", False), ("--progress", True),
                                            (None, "absent")])
def test_compose_sample_passes_its_progress_choice_to_loading(tmp_path, monkeypatch, capsys,
                                                              flag, expected):
    """`--no-progress` hid the sampling bar but left diffusers' loading bars to the terminal
    test, and `--progress` did not show them on a log: load() was never told."""
    import compose.adapters
    from test_hub_loading import tiny_unet
    from compose.cli import main
    folder = tmp_path / "pipeline"
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler(
        num_train_timesteps=T)).save_pretrained(folder)
    seen, real = {}, compose.adapters.load

    def spy(path, **options):
        seen.update(options)
        return real(path, **options)
    monkeypatch.setattr(compose.adapters, "load", spy)
    argv = ["sample", "q", "--model", f"q={folder}", "--kernel", "Reverse", "--samples", "2",
            "--levels", "2", "--out", str(tmp_path / "run"), "--device", "cpu", "--no-picture"]
    assert main(argv + ([flag] if flag else [])) == 0
    capsys.readouterr()
    assert seen.get("progress", "absent") == expected


# -- argument checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("event_shape", [2, -2, (0,), (2.5,), "2", (True,)])
def test_a_bad_event_shape_is_a_value_error_naming_it(event_shape):
    """event_shape=2 was a raw TypeError ('int' object is not iterable); (2.5,) became (2,),
    "2" became (2,) and (0,) was kept, all without a word."""
    from compose.adapters import from_continuous, from_denoiser
    schedule = compose.Schedule.cosine(100)
    for make in (lambda: compose.ScoreModel(lambda x, t: x, schedule, event_shape=event_shape),
                 lambda: from_denoiser(lambda x, s: x, schedule, event_shape=event_shape),
                 lambda: from_continuous(lambda x, s: x, schedule, event_shape=event_shape)):
        with pytest.raises(ValueError, match="event_shape: "):
            make()


def test_good_event_shapes_still_pass():
    schedule = compose.Schedule.cosine(100)
    for shape in ((2,), [3, 4], torch.Size([1, 8, 8])):
        assert compose.ScoreModel(lambda x, t: x, schedule, event_shape=shape).event_shape == tuple(shape)


def test_a_wrong_output_shape_names_the_prediction_in_words():
    """'an sample prediction must match the input'."""
    from compose.adapters import from_denoiser
    model = from_denoiser(lambda x, sigma: x[:, :1], compose.Schedule.cosine(100), name="d",
                          event_shape=(2,))
    with pytest.raises(ValueError, match=r"d: network returned shape \(3, 1\) for input \(3, 2\); "
                                         r"an x₀ \(\"sample\"\) prediction must match the input"):
        model.score(torch.zeros(3, 2), 5)
