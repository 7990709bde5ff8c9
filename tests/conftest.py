"""Shared fixtures: small analytic components on a short cosine schedule.

Tests use one thread: the batches here are small, and on a 2-core machine intra-op threading
only adds overhead.
"""
import math

import pytest
import torch

import compose


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def schedule():
    return compose.Schedule.cosine(100)


def ring(schedule, std=0.03, name="ring"):
    angles = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    means = 0.5 * torch.stack([angles.cos(), angles.sin()], 1)
    return compose.GaussianMixture(means, std, schedule=schedule, name=name)


def gaussian(schedule, mean, std, name):
    return compose.GaussianMixture([mean], std, schedule=schedule, name=name)


def random_walk_path(points, chains, dims, step, seed):
    """A float64 random-walk path (points, chains, dims) from a fixed seed: the positions a
    curve integral of Δ runs through in the tests."""
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(step * torch.randn(points, chains, dims, generator=g, dtype=torch.float64), 0)
