"""Every ```python block of the README runs, in order, in one namespace."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "torch.Size([500, 2])" in out
    assert "line 1, column" in out and "^" in out          # the rendered syntax error
    assert "(20, 256, 2)" in out or "torch.Size([20, 256, 2])" in out
    # the pretrained-models section: respaced levels and both prompts in one call
    assert "training levels 50, 100, 150, …, 1000 of 1000" in out
    assert "2 conditions stacked" in out
    assert namespace["images"].shape == (2, 4, 8, 8) and float(namespace["images"].min()) >= 0
    # the integrated Δ in the second block is close to the exact difference
    assert float(namespace["delta"].sub(namespace["exact"]).abs().max()) < 1e-2


def test_readme_names_the_two_setup_commands():
    text = README.read_text()
    assert "./dev.sh demo" in text and "./dev.sh test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev.sh test" in ci
