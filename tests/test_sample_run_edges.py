"""`compose sample` at its edges: an output directory that cannot be used is a clear error on
every rank (never an OSError trace), found by probing the command as a user would."""
from pathlib import Path

import pytest

import compose
from compose import cli
from compose.runs import RunError, sample_run


def _components():
    schedule = compose.Schedule.cosine(4)
    return {"g": compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=schedule, name="g")}


def _unusable(tmp_path: Path, kind: str) -> Path:
    if kind == "a file":
        out = tmp_path / "not-a-directory"
        out.write_text("x")
        return out
    if kind == "under a file":
        parent = tmp_path / "file"
        parent.write_text("x")
        return parent / "run"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_an_unusable_output_directory_is_a_run_error_naming_it(tmp_path, kind):
    out = _unusable(tmp_path, kind)
    with pytest.raises(RunError, match="out: cannot use"):
        sample_run("g", _components(), out, kernel="MALA", step_size=0.01, steps=1, samples=3)
    with pytest.raises(RunError, match="not-a-directory|file"):
        sample_run("g", _components(), out, kernel="MALA", step_size=0.01, steps=1, samples=3)


def test_the_command_reports_an_unusable_output_directory(tmp_path, capsys):
    source = tmp_path / "components.py"
    source.write_text("import compose\nschedule = compose.Schedule.cosine(4)\n"
                      "g = compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=schedule, name='g')\n")
    out = _unusable(tmp_path, "a file")
    capsys.readouterr()
    assert cli.main(["sample", "g", "--components", str(source), "--kernel", "MALA",
                     "--step-size", "0.01", "--steps", "1", "--samples", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("compose sample: error: --out: cannot use") and str(out) in err
