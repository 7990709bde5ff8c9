"""Loading by the name a diffusers user has: hub ids resolved from a Hugging Face cache that the
test builds (models--org--name/refs/main → snapshots/<commit>/, files linked to blobs/ as
huggingface_hub stores them), offline, with no network at all; `compose.adapters` reachable
from `import compose` without importing diffusers; loading quiet on a non-terminal.
"""
import hashlib
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
huggingface_hub = pytest.importorskip("huggingface_hub")

import compose  # noqa: E402
from compose.adapters import load  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
T = 20
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_unet(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return diffusers.UNet2DModel(
            sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            layers_per_block=1, norm_num_groups=4, add_attention=False,
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")).eval()


def cache_repo(cache: pathlib.Path, repo_id: str, folder: pathlib.Path, commit: str = COMMIT,
               ref: str = "main") -> pathlib.Path:
    """Put the files of `folder` into `cache` as huggingface_hub lays a repo out: blobs named by
    content hash, snapshots/<commit>/<path> linking to them, refs/<ref> holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:                                   # no symlinks here: a copy
            link.write_bytes(data)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A DDPMPipeline folder, and the same model in the older layout of hub repos such as
    google/ddpm-cifar10-32 (config.json, scheduler_config.json and weights beside
    model_index.json)."""
    root = tmp_path_factory.mktemp("models")
    unet, scheduler = tiny_unet(), diffusers.DDPMScheduler(num_train_timesteps=T)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root / "pipeline")
    legacy = root / "legacy"
    unet.save_pretrained(legacy)
    scheduler.save_pretrained(legacy)
    (legacy / "model_index.json").write_text((root / "pipeline" / "model_index.json").read_text())
    return root / "pipeline", legacy


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty hub cache in use, offline, with every network connection refused."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))

    def refuse(*args, **kwargs):
        raise AssertionError("loading tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return hub


x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))


def test_a_hub_id_in_the_cache_loads_its_snapshot(folders, cache):
    pipeline, _ = folders
    cache_repo(cache, "org/tiny-ddpm", pipeline)
    model = load("org/tiny-ddpm", name="p")
    torch.testing.assert_close(model.score(x, 7), load(pipeline, name="p").score(x, 7), rtol=0, atol=0)
    assert model.schedule.T == T
    # a commit hash names its snapshot directly; another branch is resolved through refs/
    assert load("org/tiny-ddpm", revision=COMMIT).schedule.T == T
    cache_repo(cache, "org/tiny-ddpm", pipeline, commit="f" * 40, ref="v2")
    assert load("org/tiny-ddpm", revision="v2").schedule.T == T


def test_the_older_layout_of_hub_repos_loads(folders, cache):
    """google/ddpm-cifar10-32 keeps the UNet's and scheduler's files beside model_index.json;
    diffusers reads them from there, and so does load."""
    pipeline, legacy = folders
    cache_repo(cache, "google/ddpm-tiny", legacy)
    torch.testing.assert_close(load("google/ddpm-tiny").score(x, 3), load(pipeline).score(x, 3),
                               rtol=0, atol=0)
    os.remove(legacy / "model_index.json")        # a UNet folder without a pipeline index
    try:
        torch.testing.assert_close(load(legacy).score(x, 3), load(pipeline).score(x, 3), rtol=0, atol=0)
    finally:
        (legacy / "model_index.json").write_text((pipeline / "model_index.json").read_text())


def test_a_miss_says_where_it_looked_and_how_to_download(folders, cache):
    with pytest.raises(ValueError) as caught:
        load("org/absent")
    message = str(caught.value)
    assert "'org/absent' is neither a folder nor a model in the local Hugging Face cache" in message
    assert f"there is no {cache / 'models--org--absent'}" in message
    assert "HF_HUB_CACHE, or HF_HOME/hub" in message and str(cache) in message
    assert "hf download org/absent" in message and "Nothing is downloaded" in message
    cache_repo(cache, "org/tiny-ddpm", folders[0])
    with pytest.raises(ValueError, match=r"models--org--tiny-ddpm holds no snapshot of revision 'v9'"):
        load("org/tiny-ddpm", revision="v9")


def test_what_is_neither_a_folder_nor_an_id(tmp_path, cache):
    with pytest.raises(ValueError, match=r"is not a folder written by save_pretrained \(nor a hub id"):
        load(tmp_path / "missing")                # a path, never looked up as an id
    with pytest.raises(ValueError, match=r"'a/b/c' is not a folder"):
        load("a/b/c")
    with pytest.raises(ValueError, match=r"revision: .* is a folder; a revision applies to hub ids only"):
        load(tmp_path, revision="main")
    with pytest.raises(ValueError, match=r"path: expected a folder or a Hugging Face hub id, got int"):
        load(3)


def test_the_cache_is_found_as_huggingface_hub_finds_it(tmp_path, monkeypatch):
    """HF_HUB_CACHE first, else HF_HOME/hub, read when loading; else huggingface_hub's own."""
    from compose.adapters.loading import hub_cache
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(variable, raising=False)
    assert hub_cache() == huggingface_hub.constants.HF_HUB_CACHE
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache() == str(tmp_path / "home" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache() == str(tmp_path / "cache")


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose stdout and stderr are pipes (not terminals)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=300)


def test_import_compose_reaches_the_adapters_without_importing_diffusers():
    done = _run("""
        import sys
        import compose
        assert "diffusers" not in sys.modules and "transformers" not in sys.modules
        adapters = compose.adapters                      # the package, lazily
        assert adapters is sys.modules["compose.adapters"] and "diffusers" not in sys.modules
        print("ok")
        """, {})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
    # here, with diffusers installed, the names behind it are the adapters' own
    assert compose.adapters.load is compose.adapters.loading.load
    assert compose.adapters.from_diffusers is compose.adapters.diffusers.from_diffusers
    with pytest.raises(AttributeError, match=r"module 'compose' has no attribute 'adapter'"):
        compose.adapter


@pytest.mark.slow
def test_loading_prints_nothing_on_a_non_terminal(folders, tmp_path):
    """A text pipeline (transformers parts) by hub id and a UNet folder: no warning, no bar,
    on stdout or stderr; the control: progress=True shows diffusers' bar."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_pipelines import tiny_stable_diffusion
    _, text_pipeline = tiny_stable_diffusion(tmp_path / "sd")
    cache_repo(tmp_path / "home" / "hub", "org/tiny-sd", text_pipeline)
    done = _run(f"""
        import sys
        import compose
        compose.adapters.load("org/tiny-sd", name="p")
        compose.adapters.load({str(folders[0])!r}, progress=False)
        sys.stderr.write("MARK\\n")
        compose.adapters.load("org/tiny-sd", name="p", progress=True)
        """, {"HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    quiet, _, shown = done.stderr.partition("MARK\n")
    assert done.stdout == "" and quiet == "", (done.stdout, quiet)
    assert "Loading pipeline components" in shown
