"""Second acceptance pass over issue 16: cases the first hardening left open, each failing
before its fix (forged diagnostics of the wrong kind, callables whose identity hid behind a
library wrapper or a private attribute, pipeline parts whose folder is missing, UNet event
shapes the network cannot take, scheduler timestep counts that are not integers, sample_run
options of the wrong kind, --adapt-* options given without --adapt)."""
import functools

import numpy as np
import pytest
import torch

import compose
from compose import cli
from compose.runs import RunError, checkpoint, sample_run
from compose.runs.identity import ComponentsIdentity

SCHEDULE = compose.Schedule.cosine(4)
RUN = dict(kernel="MALA", step_size=0.05, steps=2, samples=5, block_size=3, picture=False)


def _components():
    return {"g": compose.GaussianMixture([[0.0, 0.0]], 0.5, schedule=SCHEDULE, name="g")}


def _run(out, **options):
    return sample_run("g", _components(), out, **{"log": lambda m: None, **RUN, **options})


# -- forged block files: every diagnostics field of its own kind ----------------------------------
@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    return out, _run(out)


@pytest.mark.parametrize("field, value, shown", [
    ("acceptance", {"a": 1.0}, "acceptance is a dict of 1"),
    ("seconds", None, "seconds is None"),
    ("steps", None, "steps is None"),
    ("steps", 1.5, "steps is a float"),
    ("divergences", {"a": 1}, "divergences is a dict of 1"),
    ("level", True, None),
    ("acceptance_quantiles", 0.5, "acceptance_quantiles is a float"),
    ("evaluations", {"g": "2"}, "evaluations is a dict of 1"),
])
def test_a_forged_diagnostics_field_of_another_kind_is_named_and_the_block_resampled(
        finished, field, value, shown):
    """These passed the checksum and the old check (a number, or a dict of numbers, in any
    field) and then failed in the merge with a TypeError."""
    out, result = finished
    path = out / "blocks" / "block-000000.pt"
    payload = checkpoint.load(path)
    payload["diagnostics"][1][field] = value
    checkpoint.save(path, payload)
    said = []
    again = _run(out, resume=True, log=said.append)
    expected = shown if shown is not None else "hold level True, expected 3"
    assert any(expected in line and "sampling it again" in line for line in said), said
    assert torch.equal(again.samples, result.samples)


def test_an_intact_block_file_is_reused_without_a_word(finished):
    """The control: resaving the unchanged payload passes every check."""
    out, result = finished
    path = out / "blocks" / "block-000000.pt"
    checkpoint.save(path, checkpoint.load(path))
    said = []
    again = _run(out, resume=True, log=said.append)
    assert said == [] and torch.equal(again.samples, result.samples)


# -- component identity: what hid behind a library wrapper or a private attribute -------------
class _Scaled(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self._scale = scale

    def forward(self, x, t):
        return self._scale * x


class _CallableScaled:
    def __init__(self, scale):
        self._scale = scale

    def __call__(self, x, t):
        return self._scale * x


def _cached_net(scale):
    @functools.lru_cache(maxsize=None)
    def factor():
        return scale
    return lambda x, t: factor() * x


def _lru_net(scale):
    return functools.lru_cache(maxsize=None)(lambda: scale)


def _score(net):
    return compose.ScoreModel(net, SCHEDULE, name="n", event_shape=(2,))


@pytest.mark.parametrize("make", [_Scaled, _CallableScaled, _cached_net, _lru_net],
                         ids=["module private attribute", "callable private attribute",
                              "lru_cache in a closure", "lru_cache as the network"])
def test_two_networks_that_differ_in_what_they_hide_have_other_identities(make):
    """Each pair gave one digest, so a resume with the other network mixed two models."""
    first, again, other = (ComponentsIdentity.of({"n": _score(make(s))}) for s in (0.1, 0.1, 0.2))
    assert first.digest == again.digest                    # the control: the same network
    assert first.digest != other.digest
    assert first.unverified == other.unverified == []


def test_a_resume_with_a_network_that_differs_in_a_private_attribute_is_refused(tmp_path):
    components = lambda scale: {"n": _score(_Scaled(scale))}
    settings = {**RUN, "samples": 3, "block_size": 3, "steps": 1}
    sample_run("n", components(0.1), tmp_path / "run", log=lambda m: None, **settings)
    with pytest.raises(RunError, match="components_sha256"):
        sample_run("n", components(0.2), tmp_path / "run", resume=True, log=lambda m: None,
                   **settings)
    sample_run("n", components(0.1), tmp_path / "run", resume=True, log=lambda m: None, **settings)


def test_library_caches_stay_out_of_the_identity():
    """Compose components keep caches in private attributes (tables per device): sampling
    with them leaves their digest as it was, so an in-process resume is not refused."""
    components = {"g": _components()["g"], "n": _score(_Scaled(0.1))}
    before = ComponentsIdentity.of(components).digest
    target = compose.compile("g * n", **components, points=1)
    compose.sample(target, compose.MALA(0.01), 4, steps_per_level=2,
                   generator=torch.Generator().manual_seed(0), progress=False)
    assert ComponentsIdentity.of(components).digest == before
