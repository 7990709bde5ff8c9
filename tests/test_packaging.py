"""A built wheel ships the grammar, and installed in a fresh venv it parses (no network).

The wheel is built from a copy of the sources (so the checkout gets no build/ folder), installed
with the project's pip into a new venv without pip, whose dependencies (torch, lark, ...) come
from the project venv through a .pth file; the project itself is not importable there, so the
grammar can only come from the installed package.
"""
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import compose, importlib.resources as r, pathlib
from compose.language import grammar
assert pathlib.Path(compose.__file__).is_relative_to({site!r}), compose.__file__
installed = r.files("compose").joinpath("_grammar", "compose.lark")
assert installed.is_file()
print(compose.parse("a * b ** 2 / c | class=7 @ 3"))
# negative control: without the installed file there is no other grammar to fall back on
moved = pathlib.Path(str(installed)).rename(pathlib.Path(str(installed)) .with_suffix(".moved"))
grammar.parser.cache_clear()
try:
    grammar.grammar_text()
except FileNotFoundError:
    print("no fallback")
finally:
    moved.rename(pathlib.Path(str(installed)))
"""


def _run(args, **kw):
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_wheel_ships_the_grammar_and_parses_in_a_fresh_venv(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "compose", src / "compose", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "grammar", src / "grammar")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
          "--no-index", "--quiet", "-w", str(tmp_path / "dist")])
    (wheel,) = (tmp_path / "dist").glob("score_compose-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "compose/_grammar/compose.lark" in names
        assert archive.read("compose/_grammar/compose.lark") == \
            (ROOT / "grammar" / "compose.lark").read_bytes()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "compose = compose.cli:main" in archive.read(entry_points).decode()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--quiet", str(wheel)])
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    out = _run([str(python), "-I", "-c", CHECK.format(site=str(site))], cwd=tmp_path)
    assert out.splitlines() == ["a * b ** 2 / c | class=7 @ 3", "no fallback"]
    # the console script works too
    out = _run([str(venv / "bin" / "compose"), "plan", "ring * bar",
                "--components", str(ROOT / "examples" / "components_2d.py")], cwd=tmp_path)
    assert out.startswith("plan for ring * bar\n")


def test_pyproject_lists_every_package_of_the_source_tree():
    """The explicit package list (needed for the grammar's mapping) names every folder of
    compose/ with an __init__.py, so a new subpackage cannot be left out of the wheel."""
    tomllib = pytest.importorskip("tomllib")              # Python ≥ 3.11
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "compose").rglob("__init__.py")}
    missing = sorted(found - listed)
    assert not missing, f"pyproject.toml [tool.setuptools] packages is missing {missing}"
