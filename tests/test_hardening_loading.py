"""Loading and adapting diffusers models: every bad folder, scheduler, device, option or class
value is one clear ValueError (a CompositionError with a caret for conditions), never a model
with freshly initialised weights, a deep library error or a wrong answer without a word.

Tiny UNets are built and saved here; nothing is downloaded.
"""
import json
import pathlib
import re
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import compose  # noqa: E402
from compose.adapters import from_diffusers, from_pipeline, load  # noqa: E402

T = 20


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
def saved(tmp_path_factory):
    """(UNet, a unet/ + scheduler/ folder, a DDPMPipeline folder) saved with save_pretrained."""
    root = tmp_path_factory.mktemp("saved")
    unet, scheduler = tiny_unet(), diffusers.DDPMScheduler(num_train_timesteps=T)
    unet.save_pretrained(root / "model" / "unet")
    scheduler.save_pretrained(root / "model" / "scheduler")
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root / "pipeline")
    return unet, root / "model", root / "pipeline"


def damaged(saved, tmp_path, which="model"):
    source = saved[1] if which == "model" else saved[2]
    target = tmp_path / which
    shutil.copytree(source, target)
    return target


def edit_json(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))


# -- weights that do not fit the config ----------------------------------------------------------
def test_an_intact_folder_loads_the_saved_weights(saved):
    """The control: the strict path loads what was saved, score for score."""
    unet, folder, pipeline = saved
    direct = from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T), name="p")
    for path in (folder, pipeline):
        torch.testing.assert_close(load(path, name="p").score(x, 7), direct.score(x, 7), rtol=0, atol=0)


@pytest.mark.parametrize("which", ["model", "pipeline"])
def test_a_config_naming_another_class_over_the_weights_is_an_error_naming_them(saved, tmp_path, which):
    """A UNet2DConditionModel config over UNet2DModel weights: diffusers only logs that
    weights were not used and returns fresh ones."""
    folder = damaged(saved, tmp_path, which)
    edit_json(folder / "unet" / "config.json", _class_name="UNet2DConditionModel")
    if which == "pipeline":
        edit_json(folder / "model_index.json", unet=["diffusers", "UNet2DConditionModel"])
    with pytest.raises(ValueError, match=r"unet: the weights do not match its config\.json: "
                                         r"\d+ weights in the file are not used \(mid_block\."):
        load(folder)


def test_weights_missing_from_the_file_are_an_error_naming_them(saved, tmp_path):
    """add_attention=True asks for a mid-block attention the file does not have."""
    folder = damaged(saved, tmp_path)
    edit_json(folder / "unet" / "config.json", add_attention=True)
    with pytest.raises(ValueError, match=r"weights of the UNet2DModel that config\.json describes "
                                         r"are not in the file \(mid_block\.attentions\.0\."):
        load(folder)


def test_model_index_and_config_naming_different_classes(saved, tmp_path):
    folder = damaged(saved, tmp_path, "pipeline")
    edit_json(folder / "unet" / "config.json", _class_name="UNet2DConditionModel")
    with pytest.raises(ValueError, match=r"unet/config\.json: _class_name 'UNet2DConditionModel', "
                                         r"but model_index\.json names the unet a UNet2DModel"):
        load(folder)


# -- damaged files: one ValueError naming the file and the damage ------------------------------
UNET, SCHEDULER = "unet/config.json", "scheduler/scheduler_config.json"


def _write(relative, text):
    return lambda folder: (folder / relative).write_text(text)


def _edit(relative, **changes):
    return lambda folder: edit_json(folder / relative, **changes)


DAMAGE = {
    "empty config": ("model", _write(UNET, ""), UNET, r"the file is empty"),
    "blank scheduler": ("model", _write(SCHEDULER, "  \n"), SCHEDULER, r"the file is empty"),
    "config not JSON": ("model", _write(UNET, "{'a': 1}"), UNET, r"not valid JSON \(.* line 1, column 2\)"),
    "scheduler not JSON": ("model", _write(SCHEDULER, "{oops"), SCHEDULER, r"not valid JSON"),
    "config a list": ("model", _write(UNET, "[1, 2]"), UNET, r"holds a JSON list; expected a JSON object"),
    "scheduler a string": ("model", _write(SCHEDULER, '"x"'), SCHEDULER, r"holds a JSON string"),
    "index empty": ("pipeline", _write("model_index.json", "{}"), "model_index.json",
                    r"names no pipeline class \(_class_name\) and no components"),
    "index a list": ("pipeline", _write("model_index.json", "[]"), "model_index.json", r"holds a JSON list"),
    "index without unet": ("pipeline", _write("model_index.json", json.dumps(
        {"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"]})),
        "model_index.json", r"names no unet \(its components: scheduler\)"),
    "index of another pipeline": ("pipeline", _edit("model_index.json", _class_name="UNet2DModel"),
                                  "model_index.json", r"'UNet2DModel' is not a diffusers pipeline class"),
    "scheduler naming a model": ("model", _edit(SCHEDULER, _class_name="UNet2DModel"), SCHEDULER,
                                 r"_class_name 'UNet2DModel' is not a diffusers scheduler"),
    "pipeline scheduler naming a model": ("pipeline", _edit(SCHEDULER, _class_name="UNet2DModel"),
                                          SCHEDULER, r"'UNet2DModel' is not a diffusers scheduler"),
    "unet naming a scheduler": ("model", _edit(UNET, _class_name="DDPMScheduler"), UNET,
                                r"'DDPMScheduler' is not a diffusers UNet2DModel or UNet2DConditionModel"),
    "changed channels": ("model", _edit(UNET, in_channels=3, out_channels=3), "unet",
                         r"weights have other shapes than its config\.json describes .*conv_in\.weight"),
    "pipeline changed channels": ("pipeline", _edit(UNET, in_channels=3, out_channels=3), "unet",
                                  r"other shapes .*conv_in\.weight"),
    "unknown beta_schedule": ("model", _edit(SCHEDULER, beta_schedule="wavy"), SCHEDULER,
                              r"a DDPMScheduler cannot be built from it: wavy is not implemented"),
    "beta_end above 1": ("model", _edit(SCHEDULER, beta_end=1.5), SCHEDULER,
                         r"β_14 = 1\.026.* is not in \(0, 1\).*beta_end=1\.5"),
    "no timesteps": ("model", _edit(SCHEDULER, num_train_timesteps=0), SCHEDULER,
                     r"num_train_timesteps=0; a DDPMScheduler needs at least one training timestep"),
    "weights deleted": ("model", lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
                        "unet", r"holds no weights file .*; it has config\.json"),
    "weights truncated": ("model", lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors")
                          .write_bytes(b"\x00" * 7), "unet", r"cannot be loaded as a UNet2DModel"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_folder_is_one_value_error_naming_the_file(saved, tmp_path, case):
    which, damage, relative, what = DAMAGE[case]
    folder = damaged(saved, tmp_path, which)
    damage(folder)
    with pytest.raises(ValueError) as caught:
        load(folder)
    assert type(caught.value) is ValueError
    message = str(caught.value)
    assert message.startswith(str(folder / relative) + ":"), message
    assert len(message) < 900
    assert re.search(what, message), message


# -- schedulers: the true cause --------------------------------------------------------------------
def test_bad_betas_name_their_cause_and_only_zero_snr_blames_rescaling():
    unet = tiny_unet()
    with pytest.raises(ValueError) as caught:
        from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T, beta_end=1.5))
    assert "beta_end=1.5" in str(caught.value) and "rescale" not in str(caught.value)
    with pytest.raises(ValueError) as caught:
        from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T, beta_start=0.0))
    assert "β_1 = 0 " in str(caught.value) and "beta_start=0.0" in str(caught.value)
    assert "rescale" not in str(caught.value)
    with pytest.raises(ValueError, match=r"num_train_timesteps=0") as caught:
        from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=0))
    assert "rescale" not in str(caught.value)
    with pytest.raises(ValueError, match=r"β_20 = 1 .*rescale_betas_zero_snr=True makes the last β 1"):
        from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T, rescale_betas_zero_snr=True))


# -- ᾱ is the scheduler's table, as docs/pretrained.md says ----------------------------------------
@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_alpha_bar_is_the_schedulers_table(beta_schedule):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule)
    model = from_diffusers(tiny_unet(), scheduler)
    table = scheduler.alphas_cumprod.double()
    torch.testing.assert_close(model.schedule.alpha_bars, table, rtol=1e-13, atol=0)
    torch.testing.assert_close(model.schedule.sigmas, (1 - table).sqrt(), rtol=1e-10, atol=0)
    # ... which is not what float64 products of the β's give (the control: the test can tell)
    recomputed = torch.cumprod(1 - scheduler.betas.double(), 0)
    assert ((1 - recomputed[0]) / (1 - table[0]) - 1).abs() > 1e-6


def test_the_docs_say_which_alpha_bar_is_used():
    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "pretrained.md").read_text()
    assert "ᾱ_t = scheduler.alphas_cumprod[t − 1]" in text
    assert "the table itself" in text and "1 − ᾱ_t / ᾱ_{t−1}" in text


# -- devices and options ---------------------------------------------------------------------
@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_load_checks_the_device_first_with_the_message_sample_gives(saved, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("checks the message of a CPU-only torch")
    from compose.devices import available_device
    with pytest.raises(ValueError) as expected:
        available_device(device)
    with pytest.raises(ValueError) as caught:
        load(saved[1], device=device)
    assert str(caught.value) == str(expected.value)
    assert str(caught.value).startswith(f"device: {device!r} is not")
    import compose.sampler
    assert compose.sampler._available_device is available_device         # the one check


def test_unknown_options_are_named_with_the_valid_ones(saved):
    with pytest.raises(ValueError, match=r"load: unknown option foo; the options are name, dtype, "
                                         r"device, revision, progress, event_shape, .*null_class"):
        load(saved[1], foo=1)
    with pytest.raises(ValueError, match=r"load: unknown options bar, foo"):
        load(saved[1], foo=1, bar=2)
    pipeline = diffusers.DDPMPipeline(unet=saved[0], scheduler=diffusers.DDPMScheduler(num_train_timesteps=T))
    with pytest.raises(ValueError, match=r"from_pipeline: unknown option foo; the options are name, "
                                         r"event_shape"):
        from_pipeline(pipeline, foo=1)
    with pytest.raises(ValueError, match=r"dtype: expected a floating torch\.dtype"):
        load(saved[1], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"progress: must be True, False or None"):
        load(saved[1], progress="yes")


# -- class values, at compile time with a caret -----------------------------------------------
@pytest.fixture(scope="module")
def class_model():
    return from_diffusers(tiny_unet(num_class_embeds=4), diffusers.DDPMScheduler(num_train_timesteps=T),
                          name="u")


@pytest.mark.parametrize("text, what", [
    ("u(class=1.5) ** 2 / u(class=0)", r"the class is an integer in 0\.\.3, got 1\.5"),
    ("u(class=2.0)", r"the class is an integer in 0\.\.3, got 2\.0"),
    ("u(class=4)", r"class must be in 0\.\.3 \(num_class_embeds=4\), got 4"),
    ("u(class=-1)", r"class must be in 0\.\.3 \(num_class_embeds=4\), got -1"),
])
def test_class_values_the_table_cannot_take_are_refused_at_compile_time(class_model, text, what):
    with pytest.raises(compose.CompositionError, match=what) as caught:
        compose.compile(text, u=class_model)
    error = caught.value
    assert error.span is not None and "^" in str(error)          # the caret under the leaf
    assert text[error.span.start:error.span.end].startswith("u(class=")


def test_a_timestep_class_embedding_takes_real_class_values():
    model = from_diffusers(tiny_unet(class_embed_type="timestep"),
                           diffusers.DDPMScheduler(num_train_timesteps=T), name="u")
    half, two = (compose.compile(f"u(class={v})", u=model).score(x, 5) for v in ("1.5", "2"))
    assert torch.isfinite(half).all() and not torch.equal(half, two)


def test_vector_class_embeddings_are_refused_when_adapting():
    with pytest.raises(ValueError, match=r"class_embed_type='identity' takes class embedding vectors"):
        from_diffusers(tiny_unet(class_embed_type="identity"), diffusers.DDPMScheduler(num_train_timesteps=T))


# -- errors inside the UNet carry the component's note ------------------------------------------
def test_an_error_inside_the_unet_names_the_component_the_input_and_the_level():
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, cross_attention_dim=12, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    model = from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=T), name="p",
                           encode_prompt=lambda prompt: torch.zeros(1, 3, 10))    # width 10, not 12
    target = compose.compile('p(prompt="a") ** 2 / p', p=model)
    with pytest.raises(RuntimeError) as caught:
        target.score(torch.zeros(3, 2, 8, 8), 7)
    notes = getattr(caught.value, "__notes__", [])
    assert any("component 'p'" in note and "(6, 2, 8, 8)" in note and "level 7" in note
               for note in notes), notes
