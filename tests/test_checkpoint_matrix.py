"""Corrupted checkpoints: `load_checkpoint` raises one ValueError that names the file and says
what is wrong, for every kind of damage, and never lets a loader's own exception escape."""
import io
import pickle
import random
import re
import zipfile

import pytest
import torch

import compose
from compose.models.nets import ResidualMLP
from compose.models.checkpoints import load_checkpoint, save_checkpoint

T = 10
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


@pytest.fixture(scope="module")
def schedule():
    return compose.Schedule.cosine(T)


@pytest.fixture(scope="module")
def good_bytes(schedule, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_checkpoint(path, ResidualMLP(dim=2, T=T, hidden=8, inner=8, embed=4, blocks=1), schedule,
                    "score", extra={"note": "test"})
    return path.read_bytes()


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _with(good: bytes, **changes) -> bytes:
    """The good checkpoint with some fields replaced (None deletes the field)."""
    data = torch.load(io.BytesIO(good), weights_only=True)
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value(data[key]) if callable(value) else value
    return _saved(data)


class Foreign:
    """A class the weights-only unpickler refuses to build."""

    def __init__(self):
        self.state = 1


def _zip_of_garbage() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")
    return buffer.getvalue()


# name -> (bytes of the file from the good checkpoint's bytes, what the message must say)
CASES = {
    "empty": (lambda good: b"", r"empty"),
    "truncated-1-byte": (lambda good: good[:1], r"truncated|not a torch checkpoint"),
    "truncated-at-10%": (lambda good: good[:len(good) // 10], r"truncated|not a torch checkpoint"),
    "truncated-at-half": (lambda good: good[:len(good) // 2], r"truncated|not a torch checkpoint"),
    "truncated-at-90%": (lambda good: good[:len(good) * 9 // 10], r"truncated|not a torch checkpoint"),
    "truncated-last-byte": (lambda good: good[:-1], r"truncated|not a torch checkpoint"),
    "text": (lambda good: b"a text file, not a checkpoint\n", r"not a torch checkpoint"),
    "random-bytes": (lambda good: random.Random(0).randbytes(4096), r"not a torch checkpoint"),
    "zip-of-garbage": (lambda good: _zip_of_garbage(), r"not a torch checkpoint|truncated"),
    "plain-pickle": (lambda good: pickle.dumps({"state_dict": {}}), r"not a torch checkpoint"),
    "foreign-pickle": (lambda good: _saved(Foreign()), r"weights-only|not a checkpoint"),
    "foreign-object-in-dict": (lambda good: _saved({"state_dict": Foreign()}), r"weights-only"),
    "a-list": (lambda good: _saved([1, 2, 3]), r"not a checkpoint.*list"),
    "a-tensor": (lambda good: _saved(torch.zeros(3)), r"not a checkpoint.*Tensor"),
    "missing-keys": (lambda good: _saved({"state_dict": {}}), r"not a checkpoint.*missing"),
    "no-schedule": (lambda good: _with(good, schedule=None), r"missing.*schedule"),
    "schedule-not-a-dict": (lambda good: _with(good, schedule="cosine"), r"schedule"),
    "schedule-without-betas": (lambda good: _with(good, schedule={"name": "cosine"}), r"schedule"),
    "schedule-betas-text": (lambda good: _with(good, schedule={"name": "x", "betas": "abc"}), r"schedule"),
    "schedule-betas-invalid": (lambda good: _with(good, schedule={"name": "x", "betas": [2.0, -1.0]}),
                               r"schedule"),
    "architecture-not-a-dict": (lambda good: _with(good, architecture=["ResidualMLP"]), r"architecture"),
    "architecture-unknown": (lambda good: _with(good, architecture={"class": "Nope", "config": {}}),
                             r"architecture"),
    "architecture-class-not-text": (lambda good: _with(good, architecture={"class": [1], "config": {}}),
                                    r"architecture"),
    "config-not-a-dict": (lambda good: _with(good, architecture={"class": "ResidualMLP", "config": [1]}),
                          r"config"),
    "config-wrong-keys": (lambda good: _with(good, architecture={"class": "ResidualMLP",
                                                                 "config": {"width": 3}}), r"config"),
    "config-wrong-values": (lambda good: _with(good, architecture={"class": "ResidualMLP",
                                                                   "config": {"dim": "two"}}), r"config"),
    "parameterisation-unknown": (lambda good: _with(good, parameterisation="flow"), r"parameterisation"),
    "parameterisation-not-text": (lambda good: _with(good, parameterisation=[1]), r"parameterisation"),
    "state-dict-not-a-dict": (lambda good: _with(good, state_dict=[1, 2]), r"state_dict"),
    "state-dict-of-numbers": (lambda good: _with(good, state_dict=lambda sd: {k: 1.0 for k in sd}),
                              r"state_dict"),
    "state-dict-missing-weights": (lambda good: _with(good, state_dict=lambda sd: dict(list(sd.items())[1:])),
                                   r"weights do not fit"),
    "state-dict-wrong-shapes": (lambda good: _with(good, state_dict=lambda sd: {
        k: torch.zeros(v.numel() + 1) for k, v in sd.items()}), r"weights do not fit"),
    "state-dict-wrong-T": (lambda good: _with(good, architecture={"class": "ResidualMLP", "config": {
        "dim": 2, "T": T + 1, "hidden": 8, "inner": 8, "embed": 4, "blocks": 1}}),
        r"weights do not fit|T="),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_checkpoint_is_one_value_error_naming_the_file(tmp_path, good_bytes, schedule, case):
    make, what = CASES[case]
    path = tmp_path / f"{case}.pt"
    path.write_bytes(make(good_bytes))
    with pytest.raises(ValueError) as caught:
        load_checkpoint(path, schedule)
    message = str(caught.value)
    assert str(path) in message
    assert re.search(what, message), message
    assert len(message) < 600 and "Traceback" not in message


@pytest.mark.parametrize("case", ["empty", "truncated-at-half", "foreign-pickle", "schedule-not-a-dict"])
def test_the_same_without_a_schedule_to_compare(tmp_path, good_bytes, case):
    path = tmp_path / f"{case}.pt"
    path.write_bytes(CASES[case][0](good_bytes))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_checkpoint(path)


def test_the_good_checkpoint_loads(tmp_path, good_bytes, schedule):
    path = tmp_path / "good.pt"
    path.write_bytes(good_bytes)
    net, stored, kind = load_checkpoint(path, schedule)
    assert isinstance(net, ResidualMLP) and stored.same_as(schedule) and kind == "score"


def test_a_missing_file_is_still_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


def test_loading_stays_weights_only(tmp_path, good_bytes, monkeypatch):
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "good.pt"
    path.write_bytes(good_bytes)
    load_checkpoint(path)
    assert seen == [True]
