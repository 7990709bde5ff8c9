"""Where `--components` is looked up: a file path relative to the working directory (with its
own directory importable), a module name found from the working directory, and a file that
exits instead of defining components."""
import sys
import textwrap
import uuid

import pytest

from compose import cli

COMPONENTS = """\
import compose
{extra}
schedule = compose.Schedule.cosine(10)
{name} = compose.GaussianMixture([[0.0, 0.0]], 1.0, schedule=schedule, name="{name}")
"""


def _write(path, name="p", extra=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(COMPONENTS.format(name=name, extra=textwrap.dedent(extra)))


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def unique():
    """A module name nobody has imported (imports are cached per process)."""
    return f"comps_{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _keep_sys_path():
    before = list(sys.path)
    yield
    assert sys.path == before          # loading components leaves sys.path as it was


def test_a_relative_file_path_from_the_working_directory(tmp_path, monkeypatch, capsys, unique):
    _write(tmp_path / "work" / "sub" / f"{unique}.py")
    monkeypatch.chdir(tmp_path / "work")
    status, out, err = run(capsys, "plan", "p", "--components", f"sub/{unique}.py")
    assert (status, err) == (0, "") and out.startswith("plan for p")


def test_a_file_may_import_its_neighbours(tmp_path, monkeypatch, capsys, unique):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / f"{unique}_helper.py").write_text("STD = 0.5\n")
    _write(tmp_path / "dir" / f"{unique}.py", extra=f"from {unique}_helper import STD\n")
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "plan", "p", "--components", f"dir/{unique}.py")
    assert (status, err) == (0, "")


def test_a_module_name_from_the_working_directory(tmp_path, monkeypatch, capsys, unique):
    _write(tmp_path / "pkg" / f"{unique}.py", name="q")
    (tmp_path / "pkg" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "plan", "q", "--components", f"pkg.{unique}")
    assert (status, err) == (0, "") and out.startswith("plan for q")


def test_the_example_module_from_the_repository_root(monkeypatch, capsys):
    from pathlib import Path
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(Path.cwd()))])
    sys.modules.pop("examples.components_2d", None)
    sys.modules.pop("examples", None)
    status, out, err = run(capsys, "plan", "ring * bar", "--components", "examples.components_2d")
    assert (status, err) == (0, "") and out.startswith("plan for ring * bar")


@pytest.mark.parametrize("code, shown", [("0", "sys.exit(0)"), ("3", "sys.exit(3)"), ("'bye'", "sys.exit('bye')")])
def test_a_components_file_that_exits(tmp_path, capsys, unique, code, shown):
    path = tmp_path / f"{unique}.py"
    path.write_text(f"import sys\nsys.exit({code})\n")
    status, out, err = run(capsys, "plan", "p", "--components", str(path))
    assert status == 2 and out == ""
    assert f"called {shown}" in err and "defines no components" in err


def test_a_missing_relative_file_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "plan", "p", "--components", "nowhere/comps.py")
    assert status == 2
    assert "components file not found: nowhere/comps.py" in err and str(tmp_path) in err
