"""The command line: `compose plan` on the example components, JSON output, and user errors
that exit with status 2 and a rendered message instead of a traceback."""
import json
import sys
import tomllib
from pathlib import Path

import pytest

from compose import cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "components_2d.py")


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_plan_without_a_kernel(capsys):
    status, out, err = run(capsys, "plan", "ring * bar ** 0.5", "--components", EXAMPLE)
    assert (status, err) == (0, "")
    assert out == """\
plan for ring * bar ** 0.5
  schedule cosine, T = 100 levels, event shape (2,)
  ├─ ring  weight 1  [analytic]
  │     Δ: exact, difference of analytic log-densities
  └─ bar  weight 0.5  [analytic]
        Δ: exact, difference of analytic log-densities
"""


def test_plan_with_a_kernel(capsys):
    status, out, err = run(capsys, "plan", "ring_score * bar", "--components", EXAMPLE,
                           "--kernel", "HMC", "--path", "curve", "--points", "1",
                           "--steps", "10", "--samples", "2000")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[2] == ("  sampler HMC: 10 steps per level of 3 leapfrog steps, no reverse step, "
                        "2000 chains")
    assert lines[3] == ("  network evaluations per chain, all terms: 9 per MCMC step, "
                        "92 per level, 9200 per sample")
    assert "  │     call (2000, 2) at integration points: 3 per step, 30 per level" in lines


def test_plan_on_a_respaced_schedule(capsys):
    status, out, err = run(capsys, "plan", "ring_score * bar", "--components", EXAMPLE,
                           "--kernel", "MALA", "--levels", "20", "--steps", "2")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[1] == "  schedule cosine, T = 20 levels, event shape (2,)"
    assert lines[2] == "  respaced: level i calls the networks at training levels 5, 10, 15, …, 100 of 100"
    status, out, _ = run(capsys, "plan", "ring * bar", "--components", EXAMPLE, "--levels", "1,50,100")
    assert "training levels 1, 50, 100 of 100" in out
    status, out, err = run(capsys, "plan", "ring * bar", "--components", EXAMPLE, "--levels", "5,x")
    assert status == 2 and "--levels: expected a number of levels" in err
    status, out, err = run(capsys, "plan", "ring * bar", "--components", EXAMPLE, "--levels", "3,2")
    assert status == 2 and "strictly increasing" in err


@pytest.mark.parametrize("kernel, per_sample", [
    ("Reverse", 100), ("ULA", 1000), ("MALA", 100 * (1 + 10 * 4)), ("U-HMC", 100 * 31),
    ("HMC", 100 * (1 + 10 * 6)), ("RWMH", 100 * (1 + 10 * 4))])
def test_plan_as_json(capsys, kernel, per_sample):
    status, out, err = run(capsys, "plan", "ring_score * bar", "--components", EXAMPLE,
                           "--kernel", kernel, "--points", "3", "--json")
    assert (status, err) == (0, "")
    data = json.loads(out)
    assert data["kernel"]["name"] == {"RWMH": "RandomWalkMH"}.get(kernel, kernel)
    assert [t["label"] for t in data["terms"]] == ["ring_score", "bar"]
    assert data["terms"][0]["per_sample"] == per_sample


def test_reverse_step_and_chunks(capsys):
    status, out, _ = run(capsys, "plan", "ring_score", "--components", EXAMPLE, "--kernel",
                         "ULA", "--reverse-step", "--steps", "2", "--samples", "5",
                         "--chunk-rows", "2")
    assert status == 0
    assert "  │" not in out and "    call (2, 2) at chain points: 2 per step, 6 per level" in out
    assert "    call (1, 2) at chain points: 1 per step, 3 per level" in out


def test_a_syntax_error_exits_2_with_a_caret(capsys):
    status, out, err = run(capsys, "plan", "ring * bar **", "--components", EXAMPLE)
    assert (status, out) == (2, "")
    assert err == """\
compose plan: error: line 1, column 14: the exponent after '**' must be a number, e.g. p ** 0.5; found end of input
  ring * bar **
               ^
"""


def test_an_unknown_name_exits_2_with_a_suggestion(capsys):
    status, out, err = run(capsys, "plan", "ring * barr", "--components", EXAMPLE)
    assert (status, out) == (2, "")
    assert err == """\
compose plan: error: line 1, column 8: unknown name 'barr' (did you mean 'bar'?); known names: bar, ring, ring_score
  ring * barr
         ^^^^
"""


def test_a_mixture_of_score_components_exits_2(capsys):
    status, _, err = run(capsys, "plan", "ring_score + bar", "--components", EXAMPLE)
    assert status == 2
    assert err.startswith("compose plan: error: line 1, column 1: mixture needs log-densities")


def test_bad_components_files_exit_2(capsys, tmp_path):
    status, _, err = run(capsys, "plan", "p", "--components", str(tmp_path / "missing.py"))
    assert status == 2 and err == f"compose plan: error: components file not found: {tmp_path / 'missing.py'}\n"
    broken = tmp_path / "broken.py"
    broken.write_text("import compose\nraise RuntimeError('no weights here')\n")
    status, _, err = run(capsys, "plan", "p", "--components", str(broken))
    assert status == 2 and err == f"compose plan: error: {broken}: RuntimeError: no weights here\n"
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    status, _, err = run(capsys, "plan", "p", "--components", str(empty))
    assert status == 2 and "defines no compose components" in err
    status, _, err = run(capsys, "plan", "p", "--components", "no_such_module_here")
    assert status == 2 and err == ("compose plan: error: no components file or module named "
                                   "'no_such_module_here'\n")


def test_a_module_with_a_components_dict(capsys, tmp_path, monkeypatch):
    (tmp_path / "my_components.py").write_text(
        "import compose, torch\n"
        "s = compose.Schedule.cosine(20)\n"
        "class Logits(torch.nn.Module):\n"
        "    def forward(self, x, t):\n"
        "        return torch.cat([x, -x], 1)\n"
        "g = compose.GaussianMixture([[0.0, 0.0]], 1.0, schedule=s)\n"
        "clf = compose.Classifier(Logits(), s, name='clf')\n"
        "components = {'p': g, 'class': clf}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    status, out, err = run(capsys, "plan", "p | class=3 @ 2", "--components", "my_components",
                           "--kernel", "MALA", "--steps", "1", "--samples", "3")
    assert (status, err) == (0, "")
    assert "  └─ clf[class=3]  weight 2  [classifier]" in out
    sys.modules.pop("my_components", None)


def test_classifiers_are_also_bound_to_their_variable(capsys, tmp_path):
    path = tmp_path / "guided.py"
    path.write_text(
        "import compose, torch\n"
        "s = compose.Schedule.cosine(20)\n"
        "p = compose.GaussianMixture([[0.0, 0.0]], 1.0, schedule=s, name='p')\n"
        "clf = compose.Classifier(torch.nn.Linear(2, 4), s, name='clf')\n")
    status, out, err = run(capsys, "plan", "p | class=1", "--components", str(path))
    assert (status, err) == (0, "")
    assert "  └─ clf[class=1]  weight 1  [classifier]" in out


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", "p", "--components", EXAMPLE, "--bogus"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", "p", "--components", EXAMPLE, "--points", "-1"])
    assert exit_info.value.code == 2
    status, _, err = run(capsys, "plan", "ring", "--components", EXAMPLE, "--reverse-step")
    assert status == 2 and "--kernel Reverse" in err


def test_subcommands_are_registered_in_one_place():
    assert {"plan", "demo"} <= set(cli.commands())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["compose"] == "compose.cli:main"
