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
