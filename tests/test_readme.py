"""Every ```python block of the README runs on its own, in a fresh namespace, as a reader who
pastes just that block would run it; and the README uses the paper's sampler names."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _run(block, capsys):
    namespace = {"__name__": "__readme__"}
    exec(compile(block, str(README), "exec"), namespace)
    return namespace, capsys.readouterr().out


def test_readme_has_python_examples():
    assert len(_blocks()) >= 6


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_each_readme_block_runs_alone_and_prints_what_it_says(index, capsys):
    block = _blocks()[index]
    namespace, out = _run(block, capsys)
    if "num_samples=500" in block:
        assert "torch.Size([500, 2])" in out
    if "log_ratio" in block:            # the integrated Δ is close to the exact difference
        assert float(namespace["delta"].sub(namespace["exact"]).abs().max()) < 1e-2
    if "except compose.CompositionError" in block:
        assert "line 1, column" in out and "^" in out            # the rendered syntax error
    if "MCMC(" in block:
        assert "(20, 256, 2)" in out or "torch.Size([20, 256, 2])" in out
    if "from_diffusers" in block:       # pretrained models: respaced levels, prompts in one call
        assert "training levels 50, 100, 150, …, 1000 of 1000" in out
        assert "2 conditions stacked" in out
        images = namespace["images"].images             # decoded through the VAE, clipped
        assert images.shape == (2, 3, 16, 16) and 0 <= float(images.min()) <= float(images.max()) <= 1
        assert "Images(2 × (3, 16, 16), decoded by p" in out
    if "from_denoiser" in block:        # other families: the plan says how u is called; N(0, I)
        assert "called as net(x, t − 1, y=<class>)" in out
        x = namespace["torch"].ones(1, 2)
        assert namespace["torch"].allclose(namespace["d"].score(x, 40), -x)


def test_the_checks_above_are_not_vacuous():
    blocks = _blocks()
    for marker in ("num_samples=500", "log_ratio", "except compose.CompositionError", "MCMC(",
                   "from_diffusers", "from_denoiser"):
        assert any(marker in block for block in blocks), marker


def test_readme_names_samplers_as_the_demo_and_experiments_do():
    from compose.experiments.digits.settings import SAMPLER_NAMES
    from compose.experiments.product2d import demo
    from compose.experiments.product2d.samplers import SAMPLERS
    paper = re.compile(r"(Reverse|U-LA|LA-\d+-line|U-HMC|HMC-\d+-line|HMC(-\d+)?-curve)"
                       r"(-lobatto)?(-end(-ref)?)?(\+SMC(-\d+)?)?\Z")     # the variants the README names
    names = [row[0] for row in demo.SAMPLERS] + list(SAMPLERS) + list(SAMPLER_NAMES)
    assert all(paper.match(name) for name in names), names
    text = README.read_text()
    assert "MALA-3-line" not in text and "U-LA, LA-3-line" in text
    assert "`-lobatto`" in text and "`-end`" in text and "`+SMC-K`" in text


def test_readme_names_the_two_setup_commands():
    text = README.read_text()
    assert "./dev.sh demo" in text and "./dev.sh test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./dev.sh test" in ci
