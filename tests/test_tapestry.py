"""The tapestry experiment: its composition on a real (tiny) diffusers UNet, conditional
training with a null class, and the quick run end to end."""
import json
import os

import pytest
import torch

import compose
from compose.experiments import digits, tapestry
from compose.experiments.tapestry.model import LevelIndexed
from compose.models.data import digits_split
from compose.models.training import train_diffusion

diffusers = pytest.importorskip("diffusers")
from compose.adapters import from_diffusers  # noqa: E402


@pytest.fixture(scope="module")
def model():
    settings = tapestry.QUICK
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(**settings.unet_config()).eval()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=settings.T,
                                        beta_schedule="squaredcos_cap_v2")
    return from_diffusers(unet, scheduler, name="u")


def test_canvas_geometry():
    assert tapestry.window_starts(3, 2) == [0, 6, 12]
    assert tapestry.canvas_shape(2, 2) == (1, 8, 14) and tapestry.canvas_shape(3, 2) == (1, 8, 20)
    x = torch.arange(14.0).expand(2, 1, 8, 14)
    left, right = tapestry.crops(x, 2, 2)
    assert torch.equal(left[0, 0, 0], torch.arange(8.0)) and torch.equal(right[0, 0, 0], torch.arange(6.0, 14.0))


def test_tapestry_text_and_one_call_per_condition(model):
    expr = tapestry.tapestry(model, (3, 7), 3.0, 2)
    assert str(expr) == ("(u(class=3) ** 3 / u(class=10) ** 2)[:, :, 0:8] * "
                         "(u(class=7) ** 3 / u(class=10) ** 2)[:, :, 6:14]")
    assert compose.parse(str(expr), {"u": model}) == expr
    target = compose.compile(expr, event_shape=(1, 8, 14))
    x = torch.randn(5, 1, 8, 14, generator=torch.Generator().manual_seed(0))
    target.counter.reset()
    score = target.score(x, 2)
    # every window and condition of the one UNet goes through one call of 4 · 5 rows
    assert sum(target.counter.calls.values()) == 1
    assert target.counter.rows == {"u(class=3)[:, :, 0:8]": 5, "u(class=10)[:, :, 0:8]": 5,
                                   "u(class=7)[:, :, 6:14]": 5, "u(class=10)[:, :, 6:14]": 5}
    assert list(target.counter.rows) == target.labels()
    # the score is the sum of the windows' guided scores, each put back at its place
    expected = torch.zeros_like(x)
    for digit, start in ((3, 0), (7, 6)):
        crop = x[..., start:start + 8]
        s = 3 * model.score(crop, 2, (("class", digit),)) - 2 * model.score(crop, 2, (("class", 10),))
        expected[..., start:start + 8] += s
    assert torch.allclose(score, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    plan = str(target.plan_for(compose.MALA(0.1), 2, 5))
    assert "call (20, 1, 8, 8) at chain points, 4 (window, condition) crops stacked" in plan


def test_conditional_training_drops_labels_to_the_null_class():
    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, class_labels):
            seen.append(class_labels.clone())
            return x * self.w

    def data(n, generator):
        return torch.randn(n, 2, generator=generator), torch.full((n,), 3)

    train_diffusion(Net(), compose.Schedule.cosine(5), data, steps=20, batch_size=200,
                    condition="class_labels", null_value=10, null_probability=0.25,
                    generator=torch.Generator().manual_seed(0), progress=False)
    labels = torch.cat(seen)
    assert set(labels.tolist()) == {3, 10}
    share = float((labels == 10).double().mean())
    assert abs(share - 0.25) < 4.5 * (0.25 * 0.75 / labels.numel()) ** 0.5
    with pytest.raises(ValueError, match="only for a conditional model"):
        train_diffusion(Net(), compose.Schedule.cosine(5), data, steps=1, null_probability=0.1)
    with pytest.raises(ValueError, match="null_value"):
        train_diffusion(Net(), compose.Schedule.cosine(5), data, steps=1,
                        condition="class_labels", null_probability=0.1)


def test_level_indexed_calls_the_unet_with_timestep_t_minus_one():
    calls = []

    class Fake(torch.nn.Module):
        def forward(self, x, timestep, class_labels=None, return_dict=True):
            calls.append(timestep)
            return (x,)

    LevelIndexed(Fake())(torch.zeros(2, 1, 8, 8), torch.tensor([1, 4]), torch.tensor([0, 10]))
    assert calls[0].tolist() == [0, 3]


def test_digits_trains_only_the_roles_asked_for(tmp_path):
    nets, info = digits.train_models(tmp_path, digits.QUICK, digits_split(), roles=("eval",),
                                     progress=False)
    assert list(nets) == ["eval"] and [i["role"] for i in info] == ["eval"]
    with pytest.raises(ValueError, match="roles"):
        digits.train_models(tmp_path, digits.QUICK, digits_split(), roles=("nope",), progress=False)


def test_quick_experiment_end_to_end(tmp_path):
    results = tapestry.run_experiment(tmp_path, quick=True, seeds=2, progress=False,
                                      command="compose experiment tapestry --quick")
    for name in ("results.md", "results.json", "canvases.png",
                 os.path.join("checkpoints", "unet", "config.json"),
                 os.path.join("checkpoints", "unet", "scheduler_config.json")):
        assert os.path.exists(tmp_path / name), name
    summary = results["summary"]
    assert list(summary) == ["Reverse", "U-LA", "LA-3-line", "HMC-curve"]
    for row in summary.values():
        assert row["seeds"] == 2
        assert set(row["windows"]) == {"3 7 / 3", "3 7 / 7", "2 5 9 / 2", "2 5 9 / 5", "2 5 9 / 9"}
        assert all(0.0 <= m <= 1.0 for m, _ in row["windows"].values())
    assert results["scale"] in tapestry.QUICK.scales
    # the evaluations reported are the plan's, averaged over the canvases
    q = tapestry.QUICK
    model, _ = tapestry.train_or_load_model(tmp_path, q, digits_split())
    spec = tapestry.sampler_specs(q)[1]
    kernel = digits.make_kernel("ula", compose.PowerLaw(1.0, 1.0), q)
    planned = [compose.compile(tapestry.tapestry(model, row, results["scale"], q.overlap),
                               event_shape=tapestry.canvas_shape(len(row), q.overlap))
               .plan_for(kernel, q.steps_per_level, q.chains, reverse_step=True)
               .totals["per_sample"] for row in q.canvases]
    assert spec.name == "U-LA"
    assert summary["U-LA"]["evaluations"] == pytest.approx(sum(planned) / len(planned))
    text = (tmp_path / "results.md").read_text()
    assert "compose experiment tapestry --quick" in text and "| LA-3-line |" in text
    assert results["smoke_test"] and text.index("SMOKE TEST (--quick)") < text.index("| sampler")
    with open(tmp_path / "results.json") as f:
        assert len(json.load(f)["runs"]) == 2 * 4 * 2
    # a second run reuses the saved UNet
    again = tapestry.run_experiment(tmp_path, quick=True, seeds=1, scale=1.0, progress=False)
    assert again["model"]["reused"]
