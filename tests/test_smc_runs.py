"""`compose sample --smc`: each block is one particle system, so the samples are bitwise the
same for any number of processes and after a SIGKILL and --resume (checkpoints hold the
particle system's log-weights); the block size is the number of particles and changes them.

The runs reuse the tiny set-up of tests/test_sample_runs.py (T = 12, 50 chains in blocks of 20).
"""
import json
import shutil
import sys

import numpy as np
import pytest
import torch

import compose
from compose import cli
from compose.runs import RunError, block_seed, checkpoint, sample_run
from test_sample_runs import _argv, _bits, _run_all, components, kill_after_checkpoints, reference  # noqa: F401

SMC_OPTIONS = ["--smc", "--ess-threshold", "0.7"]


@pytest.fixture(scope="module")
def smc_reference(components, tmp_path_factory):
    out = tmp_path_factory.mktemp("smc_reference") / "run"
    assert cli.main(_argv(components, out, *SMC_OPTIONS)) == 0
    return out


def test_a_block_is_compose_sample_with_smc_and_its_own_generator(components, smc_reference):
    namespace = {}
    exec(open(components).read(), namespace)
    target = compose.compile(namespace["ring"] * namespace["bar"])
    generator = torch.Generator().manual_seed(block_seed(7, 0))
    expected = compose.sample(target, compose.HMC(0.05, num_leapfrog=2), 20, 2, generator=generator,
                              smc=compose.SMC(ess_threshold=0.7), adaptation=compose.Adaptation(),
                              progress=False)
    samples = torch.load(smc_reference / "samples.pt", weights_only=True)
    assert torch.equal(samples[:20], expected.samples)


def test_outputs_report_log_normaliser_per_block(smc_reference, components, capsys):
    diagnostics = json.loads((smc_reference / "diagnostics.json").read_text())
    assert diagnostics["sampler"] == "HMC + reverse + SMC"
    estimates = diagnostics["smc"]["log_normaliser_per_block"]
    assert len(estimates) == 3 and all(np.isfinite(estimates))
    assert [b["log_normaliser"] for b in diagnostics["blocks"]] == estimates
    level = diagnostics["levels"][0]["smc"]
    assert 0 < level["ess_fraction"] <= 1 and 0 <= level["resampled_blocks"] <= 3
    assert "final_ess_fraction" not in level
    blocks = [b["levels"][-1]["smc"]["final_ess"] / (b["rows"][1] - b["rows"][0])
              for b in diagnostics["blocks"]]
    assert diagnostics["levels"][-1]["smc"]["final_ess_fraction"] == pytest.approx(
        (20 * blocks[0] + 20 * blocks[1] + 10 * blocks[2]) / 50, rel=1e-12)
    # pooled: log of the particle-weighted mean of the blocks' Ẑ (rows 20, 20, 10 of 50)
    pooled = float(torch.logsumexp(torch.tensor(estimates, dtype=torch.float64)
                                   + torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64).log(), 0))
    assert diagnostics["smc"]["log_normaliser_pooled"] == pytest.approx(pooled, rel=1e-12)
    assert diagnostics["smc"]["log_normaliser_pooled"] >= diagnostics["smc"]["log_normaliser_mean"] - 1e-12
    printed = compose.runs.outputs.summary(diagnostics)
    assert f"log Ẑ per block {min(estimates):.4g} to {max(estimates):.4g}" in printed
    assert f"pooled log Σ (n_b/N) Ẑ_b {pooled:.4g}" in printed
    run = json.loads((smc_reference / "run.json").read_text())
    assert run["settings"]["smc"]["ess_threshold"] == 0.7
    assert run["settings"]["variance"] == "large" and run["settings"]["reverse_step"] is True
    assert "SMC" in (smc_reference / "plan.txt").read_text()


def test_the_pooled_log_normaliser_averages_the_blocks_z():
    from compose.runs.outputs import pooled_log_normaliser
    assert pooled_log_normaliser([0.0, np.log(3.0)], [0.5, 0.5]) == pytest.approx(np.log(2.0), rel=1e-15)
    assert pooled_log_normaliser([-800.0, -800.0 + np.log(3.0)], [0.75, 0.25]) == pytest.approx(
        -800.0 + np.log(1.5), rel=1e-15)                    # no underflow far below exp's range
    assert pooled_log_normaliser([2.5], [1.0]) == 2.5
    assert pooled_log_normaliser([float("-inf")] * 2, [0.5, 0.5]) == float("-inf")


def test_torchrun_with_2_processes_is_bitwise_the_plain_smc_run(components, smc_reference, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "compose.cli", *_argv(components, out, *SMC_OPTIONS)]
    status, err = _run_all(command, timeout=300)
    assert status == 0, err[-3000:]
    assert np.array_equal(_bits(out / "samples.pt"), _bits(smc_reference / "samples.pt"))


def test_sigkill_then_resume_is_bitwise_the_uninterrupted_smc_run(components, smc_reference, tmp_path):
    out = tmp_path / "run"
    kill_after_checkpoints(_argv(components, out, *SMC_OPTIONS), out)
    state = checkpoint.load(sorted((out / "blocks").glob("block-000001.t*.ckpt"))[0])["smc_state"]
    assert state["log_weights"].dtype == torch.float64 and state["log_weights"].shape == (20,)
    assert cli.main(_argv(components, out, *SMC_OPTIONS, "--resume")) == 0
    assert np.array_equal(_bits(out / "samples.pt"), _bits(smc_reference / "samples.pt"))


@pytest.fixture(scope="module")
def smc_killed(components, tmp_path_factory):
    """An SMC run killed with SIGKILL once block 1 has two checkpoints (block 0 finished)."""
    out = tmp_path_factory.mktemp("smc_killed") / "run"
    kill_after_checkpoints(_argv(components, out, *SMC_OPTIONS), out)
    return out


def _forge_latest_smc_checkpoint(killed, tmp_path, change):
    """A copy of the killed run whose latest checkpoint of block 1 has `change` applied to its
    SMC state (and a valid checksum); returns (the run's directory, that checkpoint's path)."""
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    path = sorted((out / "blocks").glob("block-000001.t*.ckpt"))[0]
    payload = checkpoint.load(path)
    change(payload["smc_state"])
    checkpoint.save(path, payload)
    return out, path


@pytest.mark.parametrize("change, message", [
    (lambda s: None, None),                      # the control: the re-saved state is taken
    (lambda s: s.update(pending=None, pending_level=None), "holds a pending excess missing"),
    (lambda s: s.update(pending_level=s["pending_level"] + 1), "holds a pending step from level"),
    (lambda s: s.update(log_weights=s["log_weights"].float()), "holds log-weights a torch.float32"),
    (lambda s: s.update(pending=s["pending"].float()), "holds a pending excess a torch.float32"),
    (lambda s: s.update(log_weights=s["log_weights"][:5]), "expected a torch.float64 tensor of shape (20,)"),
    (lambda s: s["log_weights"].fill_(float("inf")), "holds NaN or +inf log-weights"),
    (lambda s: s["log_weights"].add_(3.0), "not normalised (log Σ W = 3"),
    (lambda s: s.update(log_normaliser=torch.tensor(float("nan"), dtype=torch.float64)),
     "a log-normaliser of nan"),
    (lambda s: s.update(log_normaliser=torch.zeros(1, dtype=torch.float64)), "expected a 0-d"),
])
def test_a_forged_smc_state_is_named_and_the_run_resumes_bitwise(smc_killed, components, smc_reference,
                                                                 tmp_path, capsys, change, message):
    """Each field of a checkpoint's particle system is checked: a wrong one is named, its
    checkpoint removed and the block continued from the one before, still bitwise the same."""
    out, path = _forge_latest_smc_checkpoint(smc_killed, tmp_path, change)
    assert cli.main(_argv(components, out, *SMC_OPTIONS, "--resume")) == 0
    err = capsys.readouterr().err
    if message is None:
        assert "block 1" not in err, err
    else:
        assert message in err and str(path) in err and "continues from its checkpoint after level" in err, err
    assert np.array_equal(_bits(out / "samples.pt"), _bits(smc_reference / "samples.pt"))


def test_zero_weights_at_a_resampling_level_stop_the_block(smc_killed, components, tmp_path):
    """Every particle's increment −inf (a pending excess of NaN): the run stops with the
    sampler's error (read before resampling could reset the dead weights), never going on
    with log Ẑ = −inf."""
    out, _ = _forge_latest_smc_checkpoint(smc_killed, tmp_path, lambda s: s["pending"].fill_(float("nan")))
    with pytest.raises(FloatingPointError, match=r"level \d+: every particle's Feynman–Kac "
                                                 r"weight is zero"):
        cli.main(_argv(components, out, *SMC_OPTIONS, "--resume"))
    assert not (out / "samples.pt").exists()


@pytest.mark.parametrize("change, message", [
    (lambda p: p["diagnostics"][3].update(smc=None), "level 8 hold no SMC diagnostics in a run with SMC"),
    (lambda p: p["diagnostics"][0]["smc"].update(resampled=1), "smc is a dict of 5"),
    (lambda p: p["diagnostics"][0]["smc"].pop("ess"), "smc is a dict of 4"),
    (lambda p: p["diagnostics"][1]["smc"].update(ess=20.5), "level 10 hold an ESS of 20.5, expected a number in [0, 20]"),
    (lambda p: p["diagnostics"][1]["smc"].update(ancestors=0), "level 10 hold 0 distinct ancestors, expected 1..20"),
    (lambda p: p["diagnostics"][2]["smc"].update(log_normaliser_increment=float("-inf")),
     "level 9 hold a log-normaliser increment of -inf"),
    (lambda p: p["diagnostics"][2]["smc"].update(final_ess=3.0), "level 9 hold a final ESS of 3.0, expected None"),
    (lambda p: p["diagnostics"][-1]["smc"].update(final_ess=None), "level 1 hold a final ESS of None"),
])
def test_a_forged_smc_block_file_is_named_and_resampled(smc_reference, components, tmp_path, capsys,
                                                       change, message):
    out = tmp_path / "run"
    shutil.copytree(smc_reference, out)
    path = out / "blocks" / "block-000000.pt"
    payload = checkpoint.load(path)
    change(payload)
    checkpoint.save(path, payload)
    assert cli.main(_argv(components, out, *SMC_OPTIONS, "--resume")) == 0
    err = capsys.readouterr().err
    assert message in err and "block 0" in err and "sampling it again" in err, err
    assert np.array_equal(_bits(out / "samples.pt"), _bits(smc_reference / "samples.pt"))


def test_smc_diagnostics_in_a_plain_run_s_block_file_are_refused(reference, components, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    path = out / "blocks" / "block-000000.pt"
    payload = checkpoint.load(path)
    payload["diagnostics"][0]["smc"] = {"ess": 20.0, "resampled": False, "ancestors": 20,
                                        "log_normaliser_increment": 0.0, "final_ess": None}
    checkpoint.save(path, payload)
    assert cli.main(_argv(components, out, "--resume")) == 0
    assert "level 12 hold SMC diagnostics in a run without SMC" in capsys.readouterr().err
    assert np.array_equal(_bits(out / "samples.pt"), _bits(reference / "samples.pt"))


def test_a_damaged_smc_state_falls_back_to_the_previous_checkpoint(components, smc_reference, tmp_path, capsys):
    out = tmp_path / "run"
    # a run stopped after levels 12..9 of block 0, by checkpointing and removing the block file
    assert cli.main(_argv(components, out, *SMC_OPTIONS, "--samples", "20")) == 0
    reference = _bits(out / "samples.pt")
    (out / "blocks" / "block-000000.pt").unlink()
    (out / "samples.pt").unlink()
    # forge a checkpoint at level 9 with a wrong SMC state: it must be refused and the block
    # sampled from the start, giving the same samples
    bad = {"format": None}
    checkpoint.save(out / "blocks" / "block-000000.t0009.ckpt", bad)
    assert cli.main(_argv(components, out, *SMC_OPTIONS, "--samples", "20", "--resume")) == 0
    assert np.array_equal(_bits(out / "samples.pt"), reference)
    assert "block 0" in capsys.readouterr().err


def test_the_block_size_is_the_number_of_particles(components, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(_argv(components, one, *SMC_OPTIONS, "--samples", "40", "--block-size", "40")) == 0
    assert cli.main(_argv(components, two, *SMC_OPTIONS, "--samples", "40", "--block-size", "20")) == 0
    assert not np.array_equal(_bits(one / "samples.pt"), _bits(two / "samples.pt"))


def test_a_resume_with_other_smc_options_is_refused(components, smc_reference, capsys):
    assert cli.main(_argv(components, smc_reference, "--smc", "--ess-threshold", "0.3", "--resume")) == 2
    assert "ess_threshold" in capsys.readouterr().err
    assert cli.main(_argv(components, smc_reference, "--resume")) == 2       # without --smc
    assert "smc" in capsys.readouterr().err
    for option, value, name in [("--resampling", "residual", "resampling"),
                                ("--smc-increment", "left", "increment"),
                                ("--start-level", "10", "start_level")]:
        assert cli.main(_argv(components, smc_reference, *SMC_OPTIONS, option, value, "--resume")) == 2
        err = capsys.readouterr().err
        assert name in err and value in err, err
    before = (smc_reference / "samples.pt").read_bytes()
    assert cli.main(_argv(components, smc_reference, *SMC_OPTIONS, "--resume")) == 0  # the same: taken
    assert (smc_reference / "samples.pt").read_bytes() == before


@pytest.mark.parametrize("options, message", [
    (["--ess-threshold", "0.5"], "--ess-threshold: an option of sequential Monte Carlo"),
    (["--resampling", "residual"], "add --smc"),
    (["--smc", "--ess-threshold", "1.5"], "--ess-threshold: must be a number in [0, 1]"),
    (["--smc", "--start-level", "13"], "--start-level: level must be an integer in 1..12")])
def test_bad_smc_options_are_named_and_write_nothing(components, tmp_path, capsys, options, message):
    out = tmp_path / "run"
    assert cli.main(_argv(components, out, *options)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_sample_run_takes_an_smc_and_refuses_weighted_output(tmp_path):
    schedule = compose.Schedule.linear(30)
    a = compose.GaussianMixture([[1.0]], 0.5, schedule=schedule, name="a")
    b = compose.GaussianMixture([[-0.5]], 0.8, schedule=schedule, name="b")
    with pytest.raises(RunError, match="return_weighted"):
        sample_run("a * b", {"a": a, "b": b}, tmp_path / "x", kernel="Reverse",
                   smc=compose.SMC(return_weighted=True), progress=False)
    assert not (tmp_path / "x").exists()
    result = sample_run("a * b", {"a": a, "b": b}, tmp_path / "y", kernel="Reverse", samples=64,
                        smc=compose.SMC(resampling="stratified"), progress=False, picture=False)
    assert result.samples.shape == (64, 1)
    assert "log Ẑ" in compose.runs.outputs.summary(result.diagnostics)


def test_the_readme_smc_command_runs(tmp_path, capsys):
    """The README's `compose sample ... --smc` block, with its --out in a temporary folder."""
    import re
    import shlex
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```bash\n(.*?)```", (root / "README.md").read_text(), re.S)
    (command,) = [b for b in blocks if "--smc" in b]
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["compose", "sample"]
    argv = [a.replace("examples/", str(root / "examples") + "/") for a in argv[1:]]
    argv[argv.index("--out") + 1] = str(tmp_path / "run")
    argv[argv.index("--samples") + 1] = argv[argv.index("--block-size") + 1] = "200"
    assert cli.main(argv + ["--no-picture"]) == 0
    assert "log Ẑ" in capsys.readouterr().out


# -- on a GPU (skipped without one; `pytest -m gpu`) -----------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_sigkill_then_resume_is_bitwise_the_uninterrupted_smc_run(components, tmp_path, capsys):
    """The particle system of a CUDA run is checkpointed (float64 weights on the host), passes
    the checks on resume, and continues bitwise."""
    whole, out = tmp_path / "whole", tmp_path / "run"
    options = [*SMC_OPTIONS, "--device", "cuda"]
    assert cli.main(_argv(components, whole, *options)) == 0
    kill_after_checkpoints(_argv(components, out, *options), out)
    assert cli.main(_argv(components, out, *options, "--resume")) == 0
    assert "block 1" not in capsys.readouterr().err          # no checkpoint refused
    assert np.array_equal(_bits(out / "samples.pt"), _bits(whole / "samples.pt"))
