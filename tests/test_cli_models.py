"""The command line on the models a user has: `--model NAME=FOLDER` binds a save_pretrained
folder (a tiny Stable Diffusion pipeline, a class-conditional pixel UNet, a latent UNet saved
without its VAE), `compose sample` writes decoded images beside the raw samples and ends with a
per-level summary. Everything is built here; nothing is downloaded.
"""
import importlib.util
import json
import math
import pathlib
import sys

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from compose.cli import main  # noqa: E402
from compose.runs import outputs  # noqa: E402
from test_pipelines import tiny_stable_diffusion  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
T = 50


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    return tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd_cli"))


def save_unet(folder: pathlib.Path, channels: int, classes=None) -> pathlib.Path:
    """A UNet2DModel and its DDPM scheduler saved as unet/ and scheduler/ (no VAE)."""
    torch.manual_seed(5)
    diffusers.UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2, num_class_embeds=classes).save_pretrained(folder / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=T).save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="module")
def class_unet(tmp_path_factory):
    return save_unet(tmp_path_factory.mktemp("class_unet"), 3, classes=10)


def sample(capsys, *argv):
    status = main(["sample", *map(str, argv), "--device", "cpu"])
    printed = capsys.readouterr()
    return status, printed.out, printed.err


def test_sample_on_a_latent_pipeline_writes_decoded_images_beside_the_raw_latents(
        pipeline_folder, tmp_path, capsys):
    pipeline, folder = pipeline_folder
    out = tmp_path / "run"
    status, printed, _ = sample(capsys, 'p(prompt="a dog") ** 3 / p ** 2', "--model", f"p={folder}",
                                "--kernel", "MALA", "--step-size", "0.001", "--steps", "1",
                                "--samples", "3", "--levels", "4", "--out", out)
    assert status == 0
    latents = torch.load(out / "samples.pt")
    assert latents.shape == (3, 4, 8, 8)
    images = torch.load(out / "images.pt")
    assert images.shape == (3, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    with torch.no_grad():
        raw = pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor).sample / 2 + 0.5
    torch.testing.assert_close(images, raw.clamp(0, 1))
    clipped = int(((raw < 0) | (raw > 1)).sum())
    record = json.loads((out / "diagnostics.json").read_text())["images"]
    assert record["clipped"] == clipped and record["values"] == raw.numel() and record["decoder"] == "p"
    assert f"{clipped:,} of {raw.numel():,} values" in printed
    from PIL import Image
    with Image.open(out / "images.png") as picture:
        picture.load()
        assert picture.mode == "RGB" and picture.size[0] >= 2 * 96
    assert not (out / "samples.png").exists()
    assert "MALA: 3 chains, 4 levels (level 4 first)" in printed
    rows = printed.rstrip().splitlines()
    assert rows[-2].split()[0] == "1" and rows[-1].split()[:3] == ["all", "4", "4"]  # a row a level


def test_class_conditional_unet_folder_with_null_class(class_unet, tmp_path, capsys):
    expression = "u(class=3) ** 3 / u ** 2"
    assert main(["plan", expression, "--model", f"u={class_unet}"]) == 2
    err = capsys.readouterr().err
    assert "u(class=0) in the composition" in err and "--null-class" in err
    assert main(["plan", expression, "--model", f"u={class_unet}", "--null-class", "0",
                 "--kernel", "MALA"]) == 0
    assert "u" in capsys.readouterr().out
    # a wild step size: the pixel samples leave [−1, 1] by far; images are clipped, samples not
    out = tmp_path / "run"
    status, printed, _ = sample(capsys, expression, "--model", f"u={class_unet}", "--null-class",
                                "u=0", "--kernel", "ULA", "--step-size", "5", "--steps", "2",
                                "--samples", "4", "--levels", "3", "--out", out)
    assert status == 0
    samples, images = torch.load(out / "samples.pt"), torch.load(out / "images.pt")
    assert samples.abs().max() > 1
    torch.testing.assert_close(images, (samples / 2 + 0.5).clamp(0, 1))
    outside = int((samples.abs() > 1).sum())
    assert json.loads((out / "diagnostics.json").read_text())["images"]["clipped"] == outside
    assert f"{outside:,} of {samples.numel():,} values" in printed
    assert "ULA: 4 chains" in printed and "—" in printed               # no acceptance for ULA


def test_a_latent_unet_without_vae_says_to_pass_it_and_writes_no_images(tmp_path, capsys):
    folder = save_unet(tmp_path / "latent", 4)
    out = tmp_path / "run"
    status, printed, err = sample(capsys, "z", "--model", f"z={folder}", "--kernel", "Reverse",
                                  "--samples", "2", "--levels", "2", "--out", out)
    assert status == 0 and (out / "samples.pt").exists() and not (out / "images.pt").exists()
    assert "no images written" in err and "pass the VAE" in err


def test_model_options_are_checked(class_unet, tmp_path, capsys):
    components = tmp_path / "parts.py"
    components.write_text("import compose\nu = compose.GaussianMixture([[0.0, 0.0]], 1.0, "
                          "schedule=compose.Schedule.cosine(50), name='u')\n")
    cases = [
        (["plan", "u"], "give the components: --model"),
        (["plan", "u", "--model", "u"], "expected NAME=PATH_OR_ID"),
        (["plan", "u", "--model", f"u={class_unet}", "--model", f"u={class_unet}"], "bound twice"),
        (["plan", "u", "--model", f"u={class_unet}", "--components", str(components)],
         "also bound by --components"),
        (["plan", "u", "--model", f"u={class_unet}", "--null-class", "v=1"], "no --model named 'v'"),
        (["plan", "u", "--model", f"u={class_unet}", "--null-class", "x"], "expected a class number"),
        (["plan", "u", "--components", str(components), "--null-class", "1"], "apply to --model"),
        (["plan", "u", "--components", str(components), "--dtype", "float16"], "apply to --model"),
        (["plan", "u", "--model", f"u={tmp_path / 'nothing'}"], f"--model u={tmp_path / 'nothing'}: "),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_a_half_dtype_loads_the_networks_in_it_and_keeps_the_chains_float32(
        class_unet, tmp_path, capsys, monkeypatch):
    import compose.adapters
    seen = {}
    real = compose.adapters.load

    def spy(path, **options):
        seen.update(options)
        return real(path, **options)
    monkeypatch.setattr(compose.adapters, "load", spy)
    assert main(["plan", "u(class=1)", "--model", f"u={class_unet}", "--dtype", "bfloat16"]) == 0
    assert seen["dtype"] is torch.bfloat16 and seen["name"] == "u"
    seen.clear()
    out = tmp_path / "run"
    status, _, _ = sample(capsys, "u(class=1)", "--model", f"u={class_unet}", "--dtype", "bfloat16",
                          "--kernel", "Reverse", "--samples", "2", "--levels", "2", "--out", out)
    assert status == 0 and seen["dtype"] is torch.bfloat16
    assert torch.load(out / "samples.pt").dtype == torch.float32
    assert json.loads((out / "run.json").read_text())["settings"]["dtype"] == "float32"
    seen.clear()
    status, _, _ = sample(capsys, "u(class=1)", "--model", f"u={class_unet}", "--dtype", "float64",
                          "--kernel", "Reverse", "--samples", "2", "--levels", "2", "--out", out / "b")
    assert status == 0 and "dtype" not in seen
    assert torch.load(out / "b" / "samples.pt").dtype == torch.float64


# -- the summary ----------------------------------------------------------------------------
def level(t, acceptance, steps=10, divergences=0, evaluations=20.0, seconds=0.5, step_size=0.01):
    return {"level": t, "steps": steps, "step_size": step_size, "acceptance": acceptance,
            "mean_abs_log_ratio": 0.1, "divergences": divergences,
            "evaluations": {"u": evaluations}, "seconds": seconds}


def test_the_summary_of_hundreds_of_levels_is_a_short_binned_table():
    levels = [level(t, 0.5 if t > 500 else 0.9, divergences=int(t == 3), step_size=t * 1e-4)
              for t in range(1000, 0, -1)]
    table = outputs.summary({"sampler": "MALA", "num_samples": 64, "levels": levels})
    lines = table.splitlines()
    assert len(lines) == 1 + 1 + 10 + 1                     # title, header, 10 bins, totals
    assert lines[0] == "MALA: 64 chains, 1000 levels (level 1000 first, 100 levels a row)"
    first, last, total = lines[2].split(), lines[-2].split(), lines[-1].split()
    assert first[:2] == ["1000–901", "1000"] and first[3] == "0.500"
    assert last[:2] == ["100–1", "1000"] and last[3:6] == ["0.900", "0.900", "1"]
    assert total[:3] == ["all", "1000", "10000"] and total[4:6] == ["0.700", "0.500"]
    assert total[6:] == ["1", "20,000", "500.00"]


def test_the_summary_weights_acceptance_by_steps_and_shows_no_acceptance_as_a_dash():
    levels = [level(3, 1.0, steps=1), level(2, 0.0, steps=3), level(1, math.nan, steps=0)]
    table = outputs.summary({"sampler": "HMC", "num_samples": 2, "levels": levels}).splitlines()
    assert len(table) == 2 + 3 + 1                            # a row a level, and the totals
    assert table[2].split()[3] == "1.000" and table[4].split()[3:5] == ["—", "—"]
    assert table[5].split()[4:6] == ["0.250", "0.000"]        # "all 3": (1·1 + 3·0) / 4
    ula = outputs.summary({"sampler": "ULA", "num_samples": 2,
                           "levels": [level(2, math.nan), level(1, None)]})
    assert ula.splitlines()[2].split()[3] == "—"


# -- the example --------------------------------------------------------------------------------
def run_example(argv):
    spec = importlib.util.spec_from_file_location("compose_prompts", ROOT / "examples" / "compose_prompts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compose_prompts"] = module
    spec.loader.exec_module(module)
    return module.main(argv)


def test_the_example_takes_a_null_class_and_explains_without_one(class_unet, tmp_path, capsys):
    out = tmp_path / "grid.png"
    argv = [str(class_unet), "u(class=3) ** 3 / u ** 2", "--name", "u", "--levels", "3",
            "--steps", "1", "--leapfrog", "1", "--samples", "2", "--device", "cpu", "--out", str(out)]
    with pytest.raises(SystemExit, match=r"u\(class=0\) in the composition.*--null-class"):
        run_example(argv)
    result = run_example(argv + ["--null-class", "0"])
    assert result.samples.shape == (2, 3, 8, 8)
    assert "values" in capsys.readouterr().out
    from PIL import Image
    with Image.open(out) as picture:
        assert picture.size[0] >= 2 * 96
    assert np.asarray(Image.open(out)).shape[-1] == 3
