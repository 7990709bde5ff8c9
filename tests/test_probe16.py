"""Second acceptance pass over issue 16: cases the first hardening left open, each failing
before its fix (forged diagnostics of the wrong kind, callables whose identity hid behind a
library wrapper or a private attribute, pipeline parts whose folder is missing, UNet event
shapes the network cannot take, scheduler timestep counts that are not integers, sample_run
options of the wrong kind, --adapt-* options given without --adapt)."""
import functools

import numpy as np
import pytest
import torch

import compose
from compose import cli
from compose.runs import RunError, checkpoint, sample_run
from compose.runs.identity import ComponentsIdentity

SCHEDULE = compose.Schedule.cosine(4)
RUN = dict(kernel="MALA", step_size=0.05, steps=2, samples=5, block_size=3, picture=False)


def _components():
    return {"g": compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=SCHEDULE, name="g")}


def _run(out, **options):
    return sample_run("g", _components(), out, **{"log": lambda m: None, **RUN, **options})


# -- forged block files: every diagnostics field of its own kind ----------------------------------
@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    return out, _run(out)


@pytest.mark.parametrize("field, value, shown", [
    ("acceptance", {"a": 1.0}, "acceptance is a dict of 1"),
    ("seconds", None, "seconds is None"),
    ("steps", None, "steps is None"),
    ("steps", 1.5, "steps is a float"),
    ("divergences", {"a": 1}, "divergences is a dict of 1"),
    ("level", True, None),
    ("acceptance_quantiles", 0.5, "acceptance_quantiles is a float"),
    ("evaluations", {"g": "2"}, "evaluations is a dict of 1"),
])
def test_a_forged_diagnostics_field_of_another_kind_is_named_and_the_block_resampled(
        finished, field, value, shown):
    """These passed the checksum and the old check (a number, or a dict of numbers, in any
    field) and then failed in the merge with a TypeError."""
    out, result = finished
    path = out / "blocks" / "block-000000.pt"
    payload = checkpoint.load(path)
    payload["diagnostics"][1][field] = value
    checkpoint.save(path, payload)
    said = []
    again = _run(out, resume=True, log=said.append)
    expected = shown if shown is not None else "hold level True, expected 3"
    assert any(expected in line and "sampling it again" in line for line in said), said
    assert torch.equal(again.samples, result.samples)


def test_an_intact_block_file_is_reused_without_a_word(finished):
    """The control: resaving the unchanged payload passes every check."""
    out, result = finished
    path = out / "blocks" / "block-000000.pt"
    checkpoint.save(path, checkpoint.load(path))
    said = []
    again = _run(out, resume=True, log=said.append)
    assert said == [] and torch.equal(again.samples, result.samples)


# -- component identity: what hid behind a library wrapper or a private attribute -------------
class _Scaled(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self._scale = scale

    def forward(self, x, t):
        return self._scale * x


class _CallableScaled:
    def __init__(self, scale):
        self._scale = scale

    def __call__(self, x, t):
        return self._scale * x


def _cached_net(scale):
    @functools.lru_cache(maxsize=None)
    def factor():
        return scale
    return lambda x, t: factor() * x


def _lru_net(scale):
    return functools.lru_cache(maxsize=None)(lambda: scale)


def _score(net):
    return compose.ScoreModel(net, SCHEDULE, name="n", event_shape=(2,))


@pytest.mark.parametrize("make", [_Scaled, _CallableScaled, _cached_net, _lru_net],
                         ids=["module private attribute", "callable private attribute",
                              "lru_cache in a closure", "lru_cache as the network"])
def test_two_networks_that_differ_in_what_they_hide_have_other_identities(make):
    """Each pair gave one digest, so a resume with the other network mixed two models."""
    first, again, other = (ComponentsIdentity.of({"n": _score(make(s))}) for s in (0.1, 0.1, 0.2))
    assert first.digest == again.digest                    # the control: the same network
    assert first.digest != other.digest
    assert first.unverified == other.unverified == []


def test_a_resume_with_a_network_that_differs_in_a_private_attribute_is_refused(tmp_path):
    components = lambda scale: {"n": _score(_Scaled(scale))}
    settings = {**RUN, "samples": 3, "block_size": 3, "steps": 1}
    sample_run("n", components(0.1), tmp_path / "run", log=lambda m: None, **settings)
    with pytest.raises(RunError, match="components_sha256"):
        sample_run("n", components(0.2), tmp_path / "run", resume=True, log=lambda m: None,
                   **settings)
    sample_run("n", components(0.1), tmp_path / "run", resume=True, log=lambda m: None, **settings)


def test_library_caches_stay_out_of_the_identity():
    """Compose components keep caches in private attributes (tables per device): sampling
    with them leaves their digest as it was, so an in-process resume is not refused."""
    components = {"g": _components()["g"], "n": _score(_Scaled(0.1))}
    before = ComponentsIdentity.of(components).digest
    target = compose.compile("g * n", **components, points=1)
    compose.sample(target, compose.MALA(0.01), 4, steps_per_level=2,
                   generator=torch.Generator().manual_seed(0), progress=False)
    assert ComponentsIdentity.of(components).digest == before


# -- loading: missing pipeline parts, timestep counts, image shapes ----------------------------
diffusers = pytest.importorskip("diffusers")
from compose.adapters import from_diffusers, load  # noqa: E402

T = 20


def _tiny_unet(**overrides):
    config = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=4, add_attention=False,
                  down_block_types=("DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D"))
    config.update(overrides)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return diffusers.UNet2DModel(**config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    unet, scheduler = _tiny_unet(), diffusers.DDPMScheduler(num_train_timesteps=T)
    unet.save_pretrained(root / "model" / "unet")
    scheduler.save_pretrained(root / "model" / "scheduler")
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root / "pipeline")
    return root


def _copy(saved, tmp_path, which):
    import shutil
    shutil.copytree(saved / which, tmp_path / which)
    return tmp_path / which


def _edit(path, **changes):
    import json
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("part, add", [("unet", None), ("scheduler", None),
                                       ("vae", ["diffusers", "AutoencoderKL"])])
def test_a_pipeline_part_without_its_folder_is_named_with_its_folder(saved, tmp_path, part, add):
    """These said '<pipeline>/config.json: the file is missing' (or scheduler_config.json),
    a file no one was asked to put there."""
    import shutil
    folder = _copy(saved, tmp_path, "pipeline")
    if add is not None:
        _edit(folder / "model_index.json", **{part: add})
    else:
        shutil.rmtree(folder / part)
    message = (f"model_index.json: names a {part} (diffusers.", f"but {folder / part} is missing")
    with pytest.raises(ValueError) as error:
        load(folder)
    assert all(m in str(error.value) for m in message), str(error.value)


def test_an_intact_pipeline_loads(saved):
    """The control of the test above."""
    assert isinstance(load(saved / "pipeline", name="p"), compose.ScoreModel)


@pytest.mark.parametrize("which", ["model", "pipeline"])
@pytest.mark.parametrize("steps", [20.5, "20", -5, True])
def test_a_timestep_count_that_is_not_a_positive_integer_is_named_with_its_file(
        saved, tmp_path, which, steps):
    """These ended in torch.linspace's 'invalid combination of arguments' or 'number of steps
    must be non-negative' (0 alone was named)."""
    folder = _copy(saved, tmp_path, which)
    path = folder / "scheduler" / "scheduler_config.json"
    _edit(path, num_train_timesteps=steps)
    with pytest.raises(ValueError, match=f"{_escape(str(path))}: num_train_timesteps={_escape(repr(steps))}; "
                                         r"a DDPMScheduler needs .*\(an integer ≥ 1\)"):
        load(folder)


def _escape(text):
    import re
    return re.escape(text)


def test_a_sample_size_that_is_not_an_image_size_is_named(saved, tmp_path):
    """'eight' ended in int('e'): "invalid literal for int() with base 10: 'e'"."""
    folder = _copy(saved, tmp_path, "model")
    _edit(folder / "unet" / "config.json", sample_size="eight")
    with pytest.raises(ValueError, match=r"unet: its config's sample_size is 'eight', not an image "
                                         r"size .*pass event_shape=\(C, H, W\)"):
        load(folder)


@pytest.mark.parametrize("shape, message", [
    ((3, 8, 8), r"event_shape: \(3, 8, 8\) has 3 channel\(s\), but the UNet takes in_channels=1"),
    ((1, 9, 9), r"halves the image once, so H and W must be multiples of 2"),
    ((1, 8), r"event_shape: a UNet's samples are images \(C, H, W\), got \(1, 8\)"),
])
def test_an_event_shape_the_unet_cannot_take_is_refused_when_the_component_is_made(shape, message):
    """These compiled and failed in the first call inside torch (a conv's channel count, a
    skip connection's size mismatch)."""
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    with pytest.raises(ValueError, match=message):
        from_diffusers(_tiny_unet(), scheduler, name="p", event_shape=shape)


def test_an_event_shape_the_unet_can_take_samples():
    """The control: a larger canvas of multiples of 2 is a shape the convolutions take."""
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T)
    p = from_diffusers(_tiny_unet(), scheduler, name="p", event_shape=(1, 16, 12))
    result = compose.sample(compose.compile(p), compose.MALA(1e-3), 2, steps_per_level=1,
                            generator=torch.Generator().manual_seed(0), progress=False)
    assert result.samples.shape == (2, 1, 16, 12)


# -- sample_run options of other kinds; --adapt-* without --adapt --------------------------------
@pytest.mark.parametrize("step_size", [[0.05] * 4, np.full(4, 0.05), torch.full((4,), 0.05), [0.05]])
def test_per_level_step_sizes_are_named_as_what_a_run_does_not_take(tmp_path, step_size):
    """These said 'a power law a,b needs two finite numbers' (a list) or 'must be a finite
    number' (an array), for a value that was neither meant."""
    with pytest.raises(RunError, match=r"step_size: a run takes one step size or a power law a,b "
                                       r".*got \d+ values?: .*one step size per level is an option "
                                       r"of compose.sample"):
        _run(tmp_path / "run", step_size=step_size)
    assert not (tmp_path / "run").exists()


def test_a_power_law_given_as_an_array_is_the_pair_it_holds(tmp_path):
    a = _run(tmp_path / "a", step_size=np.array([4.0, 1.3]))
    b = _run(tmp_path / "b", step_size=(4.0, 1.3))
    assert torch.equal(a.samples, b.samples)


def test_a_numpy_bool_adaptation_is_the_bool_it_is(tmp_path):
    """np.True_ said 'expected a compose.Adaptation, True or None, got bool'."""
    a = _run(tmp_path / "a", adaptation=np.True_)
    b = _run(tmp_path / "b", adaptation=True)
    assert torch.equal(a.samples, b.samples)


def _components_file(tmp_path):
    source = tmp_path / "components.py"
    source.write_text("import compose\nschedule = compose.Schedule.cosine(4)\n"
                      "g = compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=schedule, name='g')\n")
    return source


def _sample_argv(tmp_path, *more):
    return ["sample", "g", "--components", str(_components_file(tmp_path)), "--kernel", "MALA",
            "--step-size", "0.05", "--samples", "3", "--steps", "1", "--no-picture",
            "--no-progress", "--out", str(tmp_path / "run"), *more]


@pytest.mark.parametrize("options", [["--adapt-band", "0.2,0.4"], ["--adapt-factor", "3"],
                                     ["--adapt-warmup", "2", "--adapt-band", "0.2,0.4"]])
def test_adaptation_options_without_adapt_are_refused(tmp_path, capsys, options):
    """They ran without a word and adapted nothing."""
    assert cli.main(_sample_argv(tmp_path, *options)) == 2
    error = capsys.readouterr().err
    assert options[0] in error and "add --adapt" in error, error
    assert not (tmp_path / "run").exists()


def test_adaptation_options_with_adapt_and_the_defaults_run(tmp_path):
    """The controls: with --adapt they apply; --adapt alone takes the defaults, which are
    the library's (the same samples as Adaptation())."""
    assert cli.main(_sample_argv(tmp_path, "--adapt", "--adapt-factor", "3")) == 0
    plain = tmp_path / "plain"
    plain.mkdir()
    assert cli.main(_sample_argv(plain, "--adapt")) == 0
    library = _run(tmp_path / "library", samples=3, steps=1, block_size=None, adaptation=True)
    assert torch.equal(torch.load(plain / "run" / "samples.pt"), library.samples)
