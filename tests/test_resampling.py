"""Resampling schemes: unbiased offspring counts, their variance, ESS, and bad weights."""
import math

import numpy as np
import pytest
import torch

from compose.smc import resampling
from compose.smc.resampling import SCHEMES, ancestors, distinct, ess, offspring, resample

WEIGHTS = torch.tensor([0.31, 0.02, 0.155, 0.005, 0.21, 0.3], dtype=torch.float64)
LOG_W = WEIGHTS.log()
N = WEIGHTS.shape[0]
DRAWS = 4000


def counts(scheme, log_w=LOG_W, draws=DRAWS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([offspring(ancestors(log_w, scheme, g), log_w.shape[0]) for _ in range(draws)]).double()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_offspring_counts_have_expectation_n_w(scheme):
    """Mean offspring over 4000 draws against N W_i, within 5 standard errors (the per-scheme
    spread measured from the same draws; at least the binomial one over 100 for exact schemes)."""
    c = counts(scheme)
    expected = N * WEIGHTS
    se = torch.maximum(c.std(0), torch.full((N,), 0.01)) / math.sqrt(DRAWS)
    assert torch.all((c.mean(0) - expected).abs() < 5 * se), (scheme, c.mean(0), expected)
    assert torch.all(c.sum(1) == N)


def test_systematic_counts_are_floor_or_ceil_and_residual_keeps_the_floor():
    floor, ceil = torch.floor(N * WEIGHTS), torch.ceil(N * WEIGHTS)
    for row in counts("systematic", draws=500):
        assert torch.all((row == floor) | (row == ceil))
    for row in counts("residual", draws=500):
        assert torch.all(row >= floor)


def test_lower_variance_than_multinomial():
    variance = {scheme: counts(scheme).var(0).sum().item() for scheme in SCHEMES}
    multinomial = N * (WEIGHTS * (1 - WEIGHTS)).sum().item()
    assert variance["multinomial"] == pytest.approx(multinomial, rel=0.1)
    for scheme in ("systematic", "stratified", "residual"):
        assert variance[scheme] < variance["multinomial"], variance


def test_a_biased_scheme_is_caught_by_the_expectation_check(monkeypatch):
    """Negative control: inverse-CDF points squeezed into [0, 0.9) under-sample the last parent."""
    original = resampling._invert
    monkeypatch.setattr(resampling, "_invert", lambda c, p: original(c, 0.9 * p))
    c = counts("systematic")
    se = torch.maximum(c.std(0), torch.full((N,), 0.01)) / math.sqrt(DRAWS)
    assert torch.any((c.mean(0) - N * WEIGHTS).abs() > 5 * se)


def test_equal_weights_and_a_single_weight():
    equal = torch.zeros(50, dtype=torch.float64)
    assert torch.equal(ancestors(equal, "systematic", torch.Generator().manual_seed(0)), torch.arange(50))
    one = torch.full((50,), -math.inf, dtype=torch.float64)
    one[17] = 0.0
    for scheme in SCHEMES:
        assert torch.all(ancestors(one, scheme, torch.Generator().manual_seed(1)) == 17)


def test_ess_against_numpy():
    rng = np.random.default_rng(0)
    lw = rng.normal(size=1000) * 2
    w = np.exp(lw - lw.max())
    exact = w.sum() ** 2 / (w ** 2).sum()
    t = torch.tensor(lw)
    assert float(ess(t)) == pytest.approx(exact, rel=1e-12)
    assert float(ess(t + 123.0)) == pytest.approx(exact, rel=1e-12)
    assert float(ess(torch.zeros(40))) == pytest.approx(40)
    single = torch.full((40,), -math.inf)
    single[3] = 5.0
    assert float(ess(single)) == pytest.approx(1.0)


def test_all_minus_infinity_is_an_error_at_the_front_door_and_no_nan_inside():
    dead = torch.full((10,), -math.inf, dtype=torch.float64)
    with pytest.raises(ValueError, match="every particle has weight zero"):
        resample(torch.zeros(10, 2), dead)
    a = ancestors(dead, "residual", torch.Generator().manual_seed(0))
    assert a.min() >= 0 and a.max() <= 9
    assert bool(resampling.all_zero(dead)) and float(ess(dead)) == 0.0
    assert not bool(torch.isnan(resampling.normalise(dead)).any())


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([0.0, float("nan")]), "NaN"), (torch.tensor([0.0, math.inf]), r"\+inf"),
    (torch.zeros(2, 2), "1-D"), (torch.zeros(3, dtype=torch.int64), "floating"),
    ([0.0, 0.0], "1-D floating")])
def test_bad_weights(bad, match):
    with pytest.raises(ValueError, match=match):
        resample(torch.zeros(2, 1), bad)


def test_bad_scheme_and_shapes():
    with pytest.raises(ValueError, match="resampling: must be one of"):
        resample(torch.zeros(2, 1), torch.zeros(2), "bootstrap")
    with pytest.raises(ValueError, match="x: expected 3 particles"):
        resample(torch.zeros(2, 1), torch.zeros(3))


def test_a_million_float32_weights():
    g = torch.Generator().manual_seed(0)
    lw = torch.randn(1_000_000, generator=g) * 3
    for scheme in SCHEMES:
        a = ancestors(lw, scheme, g)
        assert a.shape == (1_000_000,) and int(a.min()) >= 0 and int(a.max()) < 1_000_000
        assert bool((a[1:] >= a[:-1]).all())                   # sorted: copies adjacent
    heavy_last = torch.zeros(1_000_000)
    heavy_last[-1] = 20.0
    assert int(ancestors(heavy_last, "systematic", g)[-1]) == 999_999


def test_deterministic_for_a_seed_and_distinct_counts():
    one = ancestors(LOG_W, "stratified", torch.Generator().manual_seed(5))
    two = ancestors(LOG_W, "stratified", torch.Generator().manual_seed(5))
    assert torch.equal(one, two)
    assert int(distinct(torch.tensor([0, 0, 2, 2, 2, 5]))) == 3
    x, index = resample(torch.arange(N).double().unsqueeze(1), LOG_W, "residual", torch.Generator().manual_seed(2))
    assert torch.equal(x[:, 0].long(), index)


def test_residual_counts_are_floor_or_ceil_and_stratified_within_one_more():
    """Residual resampling's remainder is systematic on weights whose expected counts are below
    one, so its counts are ⌊N W_i⌋ or ⌈N W_i⌉ too; stratified points, one per stratum of width
    1/N, give each parent between ⌊N W_i⌋ − 1 and ⌈N W_i⌉ + 1."""
    floor, ceil = torch.floor(N * WEIGHTS), torch.ceil(N * WEIGHTS)
    for row in counts("residual", draws=500):
        assert torch.all((row == floor) | (row == ceil)), row
    rows = counts("stratified", draws=500)
    assert torch.all(rows >= (floor - 1).clamp(min=0)) and torch.all(rows <= ceil + 1)
    assert torch.any(rows < floor) or torch.any(rows > ceil)     # it does leave floor/ceil


def test_offspring_and_distinct_match_bincount_and_unique():
    g = torch.Generator().manual_seed(3)
    for n in (1, 7, 1000):
        a = torch.randint(0, n, (n,), generator=g)
        assert torch.equal(offspring(a, n), torch.bincount(a, minlength=n))
        assert offspring(a, n).dtype == torch.int64
        assert int(distinct(a)) == torch.unique(a).numel()
    assert torch.equal(offspring(torch.tensor([4, 4, 0], dtype=torch.int32), 6),
                       torch.tensor([1, 0, 0, 0, 2, 0]))
    assert int(distinct(torch.arange(5))) == 5 and int(distinct(torch.zeros(5, dtype=torch.int64))) == 1


def test_float32_weights_are_normalised_in_float64():
    """The cumulative weights of float32 log-weights are those of the same values in float64
    (10⁶ particles); normalising in float32 first, the old path, is off by ~4e-10 (control)."""
    lw = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0)) * 3
    exact = resampling._cumulative(lw.double())
    assert torch.equal(resampling._cumulative(lw), exact)
    in_float32 = torch.cumsum(resampling.normalise(lw).double().exp(), 0)
    assert (in_float32 / in_float32[-1] - exact).abs().max() > 1e-11


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_synchronisation_on_cuda():
    """Every function the particle system calls per level runs without a host read (CUDA's sync
    debug mode turns one into an error), on live and on dead weights."""
    g = torch.Generator(device="cuda").manual_seed(0)
    live = torch.randn(100_000, device="cuda", generator=g)
    dead = torch.full((1000,), -math.inf, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for lw in (live, dead):
            for scheme in SCHEMES:
                a = ancestors(lw, scheme, g)
                offspring(a, lw.shape[0]), distinct(a)
            resampling.normalise(lw), ess(lw), resampling.all_zero(lw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    a = ancestors(live, "residual", g)
    assert int(offspring(a, live.shape[0]).sum()) == live.shape[0]
    assert int(distinct(a)) == torch.unique(a).numel()


def _residual_by_hand(log_w, u):
    """The textbook construction in numpy: ⌊N W_i⌋ copies of each i, then R = N − Σ⌊N W_i⌋
    systematic points (m + u) / R on the cumulative residual weights, all sorted."""
    w = np.exp(log_w - np.logaddexp.reduce(log_w))
    n = w.shape[0]
    copies = np.floor(n * w).astype(np.int64)
    fixed = np.repeat(np.arange(n), copies)
    residual = n * w - copies
    r = n - copies.sum()
    c = np.cumsum(residual) / residual.sum()
    rest = np.minimum(np.searchsorted(c, (np.arange(r) + u) / r, side="right"), n - 1)
    return np.sort(np.concatenate([fixed, rest]))


def test_residual_equals_the_textbook_construction():
    """The sort-free residual scheme (cumulative offspring counts) picks exactly the ancestors of
    the explicit construction with the same uniform, over weights with zeros and exact copies."""
    rng = np.random.default_rng(1)
    for seed in range(60):
        n = int(rng.integers(1, 400))
        lw = rng.normal(size=n) * rng.uniform(0, 4)
        if seed % 3 == 0:
            lw[rng.uniform(size=n) < 0.4] = -np.inf
            lw[0] = 0.0
        if seed % 5 == 0:
            lw[:] = 0.0
        u = float(torch.rand(1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        got = ancestors(torch.tensor(lw), "residual", torch.Generator().manual_seed(seed))
        assert np.array_equal(got.numpy(), _residual_by_hand(lw, u)), seed
