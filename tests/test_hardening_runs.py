"""Hardening of levels, `compose sample` and `sample_run`: each case is one a user met (issue
16), and each failed before its fix. One reading of `levels`; a refused start writes nothing;
a resume with other components (plain functions included) is refused; NumPy scalars are
settings like any number; damaged run.json and forged checkpoints are named; Ctrl-C exits 130
with the command that resumes; a torchrun rendezvous that cannot work is refused at once; a
bad option value names the option."""
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

import compose
from compose import cli
from compose.runs import RunError, checkpoint, group, sample_run
from compose.schedule import parse_levels

ROOT = Path(__file__).resolve().parents[1]
SCHEDULE = compose.Schedule.cosine(4)
RUN = dict(kernel="MALA", step_size=0.05, steps=1, samples=3, picture=False)


def _components(net=None):
    g = compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=SCHEDULE, name="g")
    n = compose.ScoreModel(net or (lambda x, t: 0.1 * x), SCHEDULE, name="n", event_shape=(2,))
    return {"g": g, "n": n}


def _run(out, expression="g * n", components=None, **options):
    settings = {**RUN, **options}
    return sample_run(expression, components or _components(), out, log=lambda m: None, **settings)


# -- 1. one reading of levels ----------------------------------------------------------------
@pytest.mark.parametrize("levels", [3, np.int64(3), np.int32(3), torch.tensor(3), np.array(3)])
def test_every_integral_scalar_means_that_many_levels(levels):
    linear = compose.Schedule.linear(1000)
    assert linear.respaced(levels) == linear.respaced(3)       # a 0-d tensor gave 1 level
    assert parse_levels(levels) == 3 and type(parse_levels(levels)) is int
    target = compose.compile("g", {"g": _components()["g"]}, levels=levels)
    assert target.schedule.T == 3


@pytest.mark.parametrize("levels", [[1, 3], (1, 3), range(1, 4, 2), torch.tensor([1, 3]),
                                    np.array([1, 3]), [np.int64(1), torch.tensor(3)]])
def test_every_integral_sequence_is_those_levels(levels):
    assert parse_levels(levels) == (1, 3)
    assert SCHEDULE.respaced(levels).network_levels.tolist() == [1, 3]


@pytest.mark.parametrize("bad, message", [
    ({3: "a", 7: "b"}, "got {3: 'a', 7: 'b'}"), (torch.tensor([[1, 2], [3, 4]]), "2-D Tensor"),
    (np.array([[1, 2]]), "2-D ndarray of shape (1, 2)"), ([2.7, 9.2], "got 2.7"), ([True, 5], "got True"),
    (True, "got True"), (2.0, "got 2.0"), ("5", "got '5'"), ([], "at least one"),
    ({1, 3}, "got {1, 3}"), (torch.tensor([1.0, 3.0]), "dtype torch.float32"),
    (torch.tensor(2.0), "0-D Tensor of dtype torch.float32"), (torch.tensor(True), "dtype torch.bool"),
    ([3, 2], "strictly increasing"), (0, "≥ 1"), ([0, 2], "≥ 1"), (None, "got None")])
def test_anything_else_is_refused_everywhere_by_name(tmp_path, bad, message):
    with pytest.raises(ValueError, match="levels: .*" + _escape(message)):
        parse_levels(bad)
    if bad is not None:
        with pytest.raises(ValueError, match="^levels: "):
            SCHEDULE.respaced(bad)
        with pytest.raises(ValueError, match="^levels: "):
            compose.compile("g", {"g": _components()["g"]}, levels=bad)
        with pytest.raises(RunError, match="^levels: "):
            _run(tmp_path / "run", levels=bad)
        assert not (tmp_path / "run").exists()


def _escape(text):
    import re
    return re.escape(text)


def test_sample_run_records_the_levels_it_samples_on(tmp_path):
    result = _run(tmp_path / "a", levels=torch.tensor([2, 4]))
    assert json.loads((tmp_path / "a" / "run.json").read_text())["settings"]["levels"] == [2, 4]
    assert [row["level"] for row in result.diagnostics["levels"]] == [2, 1]
    _run(tmp_path / "b", levels=np.int64(3))
    assert json.loads((tmp_path / "b" / "run.json").read_text())["settings"]["levels"] == 3
    _run(tmp_path / "c", levels=SCHEDULE.respaced([1, 4]))       # a respaced schedule stands for its levels
    assert json.loads((tmp_path / "c" / "run.json").read_text())["settings"]["levels"] == [1, 4]


# -- 8. the repr of a respaced schedule means its levels ---------------------------------------
def test_repr_of_a_respaced_schedule_names_its_levels():
    linear = compose.Schedule.linear(1000)
    assert repr(linear.respaced([3, 7, 20])) == "Schedule.linear(T=1000).respaced([3, 7, 20])"
    assert repr(linear.respaced(50)) == "Schedule.linear(T=1000).respaced(50)"
    assert repr(linear.respaced([500, 1000])) == "Schedule.linear(T=1000).respaced(2)"   # = respaced(2)
    for schedule in (linear.respaced([3, 7, 20]), linear.respaced(7), linear.respaced(100).respaced([2, 9])):
        again = eval(repr(schedule), {"Schedule": compose.Schedule})
        assert again == schedule


# -- 2. a refused start writes nothing -----------------------------------------------------------
def _failing(x, t):
    return x[:, :1]                     # the wrong shape: refused at the first call


@pytest.mark.parametrize("options", [
    dict(path="curve"),                                     # MALA has no leapfrog path
    dict(components=_components(_failing)),                 # the network fails at its first call
    dict(threads=0), dict(progress="yes"), dict(levels=[2.7]), dict(checkpoint_every=0)])
def test_a_refused_start_leaves_no_directory_and_the_corrected_command_runs(tmp_path, options):
    out = tmp_path / "deep" / "run"
    with pytest.raises(ValueError):
        _run(out, **options)
    assert not (tmp_path / "deep").exists()
    assert _run(out).samples.shape == (3, 2)                # no "holds a run already"


def test_a_refused_start_in_an_existing_empty_directory_keeps_the_directory(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(ValueError, match="network returned shape"):
        _run(out, components=_components(_failing))
    assert out.is_dir() and list(out.iterdir()) == []


def test_the_command_leaves_nothing_after_a_refused_start(tmp_path, capsys):
    source = tmp_path / "components.py"
    source.write_text("import compose\nschedule = compose.Schedule.cosine(4)\n"
                      "g = compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=schedule, name='g')\n")
    out = tmp_path / "run"
    argv = ["sample", "g", "--components", str(source), "--kernel", "MALA", "--step-size",
            "0.05", "--steps", "1", "--samples", "3", "--out", str(out), "--no-picture"]
    assert cli.main(argv + ["--path", "curve"]) == 2
    assert not out.exists()
    assert cli.main(argv) == 0


# -- 3. the identity of the components -------------------------------------------------------
def _scaled(scale):
    return lambda x, t: scale * x


def _with_default(x, t, scale=0.1):
    return scale * x


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def forward(self, x, t):
        return self.layer(x)


def _linear(seed):
    torch.manual_seed(seed)
    return _Linear()


@pytest.mark.parametrize("make_first, make_second", [
    (lambda: lambda x, t: 0.1 * x, lambda: lambda x, t: 0.2 * x),            # the constants
    (lambda: lambda x, t: 0.1 * x, lambda: lambda x, t: 0.1 * x * x),        # the bytecode
    (lambda: _scaled(0.1), lambda: _scaled(0.2)),                            # a closure's number
    (lambda: _scaled(torch.tensor(0.1)), lambda: _scaled(torch.tensor(0.2))),  # a closure's tensor
    (lambda: _with_default, lambda: lambda x, t, scale=0.2: scale * x),     # the defaults
    (lambda: _linear(0), lambda: _linear(1)),                                # a module's weights
])
def test_a_resume_with_another_network_is_refused(tmp_path, make_first, make_second):
    out = tmp_path / "run"
    _run(out, components=_components(make_first()))
    with pytest.raises(RunError, match="components_sha256.*not the ones the run started with"):
        _run(out, components=_components(make_second()), resume=True)
    # the same network made again is the same: no false refusal
    assert _run(out, components=_components(make_first()), resume=True) is not None


def test_a_module_buffer_that_is_not_saved_is_part_of_the_identity(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.register_buffer("scale", torch.tensor(scale), persistent=False)

        def forward(self, x, t):
            return self.scale * x

    out = tmp_path / "run"
    _run(out, components=_components(Net(0.1)))
    with pytest.raises(RunError, match="components_sha256"):
        _run(out, components=_components(Net(0.2)), resume=True)


def test_a_network_whose_identity_cannot_be_established_needs_trust_to_resume(tmp_path):
    generator = torch.Generator().manual_seed(1)

    def net(x, t):
        return 0.0 * x + 0.0 * generator.initial_seed()

    out = tmp_path / "run"
    _run(out, components=_components(net))
    record = json.loads((out / "run.json").read_text())
    assert any("closure 'generator'" in line for line in record["components_unverified"])
    with pytest.raises(RunError, match=r"cannot tell whether the components .*closure 'generator'"
                                       r".*torch\._C\.Generator.*--trust-components"):
        _run(out, components=_components(net), resume=True)
    assert _run(out, components=_components(net), resume=True, trust_components=True) is not None


# -- 10. NumPy scalars are settings like any number ---------------------------------------------
def test_numpy_scalars_are_normalised_and_sample_as_the_numbers_they_are(tmp_path):
    plain = dict(kernel="HMC", step_size=0.125, steps=2, samples=5, seed=3, block_size=2,
                 leapfrog=2, damping=0.5, points=1, chunk_rows=4, threads=1, checkpoint_every=1,
                 levels=3)
    numpy = dict(kernel="HMC", step_size=np.float32(0.125), steps=np.int64(2),
                 samples=np.int64(5), seed=np.int64(3), block_size=np.int32(2),
                 leapfrog=np.int64(2), damping=np.float32(0.5), points=np.int64(1),
                 chunk_rows=np.int64(4), threads=np.int64(1), checkpoint_every=np.int64(1),
                 levels=np.int64(3))
    a = _run(tmp_path / "a", **plain)
    b = _run(tmp_path / "b", **numpy)
    assert torch.equal(a.samples, b.samples)
    assert (tmp_path / "a" / "run.json").read_text().split('"started"')[0] == \
        (tmp_path / "b" / "run.json").read_text().split('"started"')[0]
    power = _run(tmp_path / "c", step_size=(np.float64(0.5), np.float32(1.0)))
    assert power is not None
    adapt = _run(tmp_path / "d", adaptation=compose.Adaptation(band=(np.float32(0.5), 0.75),
                                                              warmup_steps=np.int64(1)))
    assert adapt is not None


@pytest.mark.parametrize("options, message", [
    (dict(threads=0), "threads: must be an integer ≥ 1, got 0"),
    (dict(threads=2.0), "threads: must be an integer ≥ 1"),
    (dict(samples=np.float64(3.0)), "samples: must be an integer ≥ 1"),
    (dict(seed=np.int64(-1)), "seed: must be an integer ≥ 0"),
    (dict(damping="0.5"), r"damping: must be in \[0, 1\)"),
    (dict(step_size=np.float32("nan")), "step_size: must be a finite number > 0"),
    (dict(chunk_rows=True), "chunk_rows: must be an integer ≥ 1"),
])
def test_bad_numbers_are_named_and_the_thread_count_is_untouched(tmp_path, options, message):
    threads = torch.get_num_threads()
    with pytest.raises(RunError, match=message):
        _run(tmp_path / "run", **options)
    assert torch.get_num_threads() == threads and not (tmp_path / "run").exists()


def test_the_expression_and_the_dtype_are_checked_before_anything(tmp_path):
    with pytest.raises(RunError, match="expression: expected a composition string"):
        _run(tmp_path / "run", expression=_components()["g"])
    with pytest.raises(RunError, match="dtype: expected one of float32, float64"):
        _run(tmp_path / "run", dtype=torch.float16)
    assert not (tmp_path / "run").exists()
    a, b = _run(tmp_path / "a", dtype="float64"), _run(tmp_path / "b", dtype=torch.float64)
    assert a.samples.dtype == torch.float64 and torch.equal(a.samples, b.samples)


# -- 15. what is read on resume is checked ------------------------------------------------------
@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    result = _run(out, expression="g", samples=5, block_size=3, steps=2)
    return out, result


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "holds a JSON list"), ('{"settings": null}', "'settings' is null"),
    ("{}", "'settings' is missing"), ('{"settings": {"kernel": "MALA"}}', "the settings lack expression"),
    ("not json", "unreadable"), ('"text"', "holds a JSON string")])
def test_a_damaged_run_json_is_named_with_its_damage(finished, content, message):
    out, _ = finished
    (out / "run.json").write_text(content)
    with pytest.raises(RunError, match=f"{_escape(str(out / 'run.json'))}: .*{_escape(message)}"):
        _run(out, expression="g", samples=5, block_size=3, steps=2, resume=True)


def _forge_checkpoint(out, change):
    """Replace block 0's file by a checkpoint after level 4 with well-formed contents (and a
    valid checksum), then apply `change` to them."""
    block = checkpoint.load(out / "blocks" / "block-000000.pt")
    payload = {"format": block["format"], "settings_sha256": block["settings_sha256"], "block": 0,
               "rows": [0, 3], "level": 4, "x": torch.zeros(3, 2), "multiplier": 1.0,
               "generator": torch.Generator().get_state(), "diagnostics": block["diagnostics"][:1],
               "saved": 0.0}
    change(payload)
    (out / "blocks" / "block-000000.pt").unlink()
    path = out / "blocks" / "block-000000.t0004.ckpt"
    checkpoint.save(path, payload)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(generator=torch.zeros(5, dtype=torch.uint8)),
     "generator state a torch.uint8 tensor of shape (5,), expected a torch.uint8 tensor of shape (5056,)"),
    (lambda p: p.update(diagnostics={"level": 4}), "diagnostics are a dict of 1, expected a list of 1 (levels 4..4)"),
    (lambda p: p.update(diagnostics="abc"), "diagnostics are a str"),
    (lambda p: p.update(diagnostics=[{"level": 4}]), "the diagnostics of level 4 hold a dict of 1"),
    (lambda p: p.update(x=torch.zeros(2, 2)),
     "'x' is a torch.float32 tensor of shape (2, 2), expected a torch.float32 tensor of shape (3, 2)"),
    (lambda p: p.update(x=torch.zeros(3, 2, dtype=torch.float64)), "'x' is a torch.float64 tensor"),
    (lambda p: p.update(x=[0.0] * 6), "'x' is a list of 6"),
    (lambda p: p.update(multiplier="1"), "step-size multiplier '1'"),
    (lambda p: p.update(multiplier=float("nan")), "step-size multiplier nan"),
    (lambda p: p.update(rows=(0, 3, 5)), "holds rows (0, 3, 5), expected [0, 3]"),
    (lambda p: p.update(level=3), "holds level 3, its name says 4"),
])
def test_a_forged_checkpoint_is_named_removed_and_the_block_recomputed(finished, change, message):
    out, result = finished
    path = _forge_checkpoint(out, change)
    said = []
    again = sample_run("g", _components(), out, resume=True, log=said.append,
                       **{**RUN, "samples": 5, "block_size": 3, "steps": 2})
    assert any(message in line and str(path) in line and "continues from the start" in line
               for line in said), said
    assert torch.equal(again.samples, result.samples)


def test_a_well_formed_forged_checkpoint_is_taken_as_it_is(finished):
    """The control of the test above: the unchanged forgery passes every check (and, starting
    from other chains, gives other samples), so each failure there is the changed field's."""
    out, result = finished
    _forge_checkpoint(out, lambda p: None)
    said = []
    again = sample_run("g", _components(), out, resume=True, log=said.append,
                       **{**RUN, "samples": 5, "block_size": 3, "steps": 2})
    assert said == [] and not torch.equal(again.samples, result.samples)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(samples=torch.zeros(2, 2)),
     "'samples' is a torch.float32 tensor of shape (2, 2), expected a torch.float32 tensor of shape (3, 2)"),
    (lambda p: p.update(diagnostics=p["diagnostics"][:2]), "expected a list of 4 (levels 4..1)"),
    (lambda p: p["diagnostics"][1].update(acceptance="high"), "level 3 hold values that are not numbers"),
    (lambda p: p["diagnostics"][2].update(level=9), "level 2 hold level 9, expected 2"),
])
def test_a_forged_block_file_is_named_and_resampled(finished, change, message):
    out, result = finished
    path = out / "blocks" / "block-000000.pt"
    payload = checkpoint.load(path)
    change(payload)
    checkpoint.save(path, payload)
    said = []
    again = sample_run("g", _components(), out, resume=True, log=said.append,
                       **{**RUN, "samples": 5, "block_size": 3, "steps": 2})
    assert any(message in line and "sampling it again" in line for line in said), said
    assert torch.equal(again.samples, result.samples)


# -- 16. Ctrl-C -----------------------------------------------------------------------------------
SLOW = '''\
import time
import compose
schedule = compose.Schedule.cosine(12)
class Slow(compose.GaussianMixture):
    def log_density_and_score(self, x, t, conditions=()):
        time.sleep(0.05)
        return super().log_density_and_score(x, t, conditions)
g = Slow([[0.0, 0.0]], 0.5, schedule=schedule, name="g")
'''


def _sample_argv(components, out):
    return ["sample", "g", "--components", str(components), "--kernel", "MALA", "--step-size",
            "0.05", "--steps", "1", "--samples", "4", "--out", str(out), "--no-picture"]


def test_ctrl_c_in_process_says_how_to_resume(tmp_path, capsys, monkeypatch):
    source = tmp_path / "components.py"
    source.write_text(SLOW.replace("0.05", "0"))
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        out.mkdir()
        (out / "run.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("compose.runs.sample_run", interrupted)
    assert cli.main(_sample_argv(source, out)) == 130
    err = capsys.readouterr().err
    assert err.startswith("compose sample: interrupted") and "Traceback" not in err
    assert err.rstrip().endswith(f"--no-picture --resume") and f"--out {out}" in err
    monkeypatch.setattr("compose.runs.sample_run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli.main(_sample_argv(source, tmp_path / "nothing")) == 130
    assert "nothing was written" in capsys.readouterr().err


@pytest.mark.slow
def test_sigint_to_compose_sample_exits_130_with_the_resume_command(tmp_path):
    source = tmp_path / "components.py"
    source.write_text(SLOW)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "compose", *_sample_argv(source, out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not list((out / "blocks").glob("*.ckpt")) if (out / "blocks").is_dir() else True:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "compose sample: interrupted" in err and "--resume" in err
    command = err.strip().splitlines()[-1].split()
    assert command[:2] == ["compose", "sample"] and command[-1] == "--resume"
    assert cli.main(command[1:]) == 0 and (out / "samples.pt").exists()


# -- 9. torchrun's static rendezvous with port 0 ------------------------------------------------
def _launched(monkeypatch, port, rank="0"):
    for name in ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("LOCAL_RANK", rank)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", port)


def test_master_port_0_is_refused_at_once_with_the_launch_forms_that_work(tmp_path, monkeypatch):
    _launched(monkeypatch, "0")
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"MASTER_ADDR='127\.0\.0\.1', MASTER_PORT='0'.*"
                                         r"--rdzv-endpoint=HOST:0.*--standalone.*--rdzv-backend=c10d"):
        _run(tmp_path / "run", device="cpu")
    assert time.monotonic() - started < 5 and not (tmp_path / "run").exists()
    assert not torch.distributed.is_initialized()


def test_a_store_that_cannot_be_reached_is_an_error_within_the_rendezvous_timeout(monkeypatch):
    import socket
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _launched(monkeypatch, str(port), rank="1")
    monkeypatch.setattr(group, "RENDEZVOUS_TIMEOUT", timedelta(seconds=1))
    started = time.monotonic()
    with pytest.raises(ValueError, match=rf"could not reach the store at .*MASTER_PORT='{port}' "
                                         r"within 1 s.*--standalone"):
        group.Group(torch.device("cpu"))
    assert time.monotonic() - started < 30


# -- 18. an option's error names the option and its form ---------------------------------------
@pytest.mark.parametrize("options, message", [
    (["--step-size", "0,1"], "--step-size: a power law a,b (η_t = a·β_t^b) needs two finite numbers with a > 0"),
    (["--step-size", "x"], "--step-size: expected a number or 'a,b'"),
    (["--step-size", "-1"], "--step-size: must be a finite number > 0"),
    (["--step-size", "1,2,3"], "--step-size: a power law a,b"),
    (["--damping", "nan", "--kernel", "HMC"], "--damping: must be in [0, 1), got nan"),
    (["--adapt", "--adapt-band", "0.9,0.6"], "--adapt-band: need 0 < low < high < 1"),
    (["--adapt", "--adapt-factor", "0.5"], "--adapt-factor: must be a finite number > 1"),
    (["--event-shape", "0"], "--event-shape: sizes must be ≥ 1"),
    (["--event-shape", "3"], "--event-shape: the canvas (3,) differs from the sample shape (2,)"),
    (["--levels", "2.7"], "--levels: expected a number of levels S or increasing training levels"),
    (["--levels", "3,2"], "--levels: expected a number of levels S or increasing training levels τ,τ,..., "
                          "e.g. 50 or 1,250,500,750,1000; got '3,2' (must be strictly increasing"),
    (["--levels", "99"], "--levels: number of levels must be in 1..4, got 99"),
])
def test_a_bad_option_value_names_the_option(tmp_path, capsys, options, message):
    source = tmp_path / "components.py"
    source.write_text("import compose\nschedule = compose.Schedule.cosine(4)\n"
                      "g = compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=schedule, name='g')\n")
    argv = ["sample", "g", "--components", str(source), "--kernel", "MALA", "--step-size",
            "0.05", "--steps", "1", "--samples", "3", "--out", str(tmp_path / "run"), *options]
    if options[0] != "--step-size" and "--kernel" in options:
        argv = argv[:argv.index("--kernel")] + argv[argv.index("--kernel") + 2:]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("compose sample: error: " + message), err
    assert not (tmp_path / "run").exists()
    if options[0] == "--levels":                            # compose plan reads them the same way
        assert cli.main(["plan", "g", "--components", str(source), *options]) == 2
        assert capsys.readouterr().err.startswith("compose plan: error: " + message)
