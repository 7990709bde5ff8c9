"""Tests of compose.metrics and the 2D product target: W2 on hand-solved assignments, the LL
target's normaliser and entropy against independent numerical integration, and the GMM metric."""
import math

import numpy as np
import pytest
import torch

from compose.experiments.product2d.likelihood import (log_likelihood, paper_scale_ll, paper_scale_w2,
                                                      product2d_log_density, product2d_log_normaliser)
from compose.experiments.product2d.target import (BAR_HIGH, BAR_LOW, RING_MEANS, RING_STD,
                                                  exact_product_samples, in_bar)
from compose.metrics import gmm_metric, matched_covariance_distance, wasserstein2


def on_line(*xs):
    """Points (x, 0) in the plane."""
    return np.array([[x, 0.0] for x in xs])


# -- W2 -------------------------------------------------------------------------------------
def test_w2_hand_solved_assignment_is_neither_identity_nor_greedy():
    x = on_line(0.0, 1.0, 3.0)
    y = on_line(3.0, 1.2, 2.0)
    # Squared costs: x=0 → (9, 1.44, 4); x=1 → (4, 0.04, 1); x=3 → (0, 3.24, 1).
    # Sums over the six assignments: identity 10.04, (3,2,1.2) 13.24, (1.2,3,2) 6.44,
    # (1.2,2,3) 2.44, (2,3,1.2) 11.24, (2,1.2,3) 4.04 (what greedy matching of x=1 gives).
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(2.44 / 3), rel=1e-12)
    assert wasserstein2(torch.tensor(y), torch.tensor(x)) == pytest.approx(math.sqrt(2.44 / 3))


def test_w2_of_a_set_with_itself_is_zero_and_of_a_shift_is_its_length():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    assert wasserstein2(x, x[rng.permutation(200)]) == 0.0
    # Translating a set by v: the identity coupling is optimal, W2 = ‖v‖ exactly.
    assert wasserstein2(x, x + np.array([0.3, -0.4])) == pytest.approx(0.5, rel=1e-12)


def test_w2_paper_scale_and_bad_input():
    assert paper_scale_w2(1.0, 2000) == pytest.approx(31.6228, abs=1e-4)
    with pytest.raises(ValueError, match="as many points"):
        wasserstein2(np.zeros((3, 2)), np.zeros((4, 2)))
    assert wasserstein2(on_line(0.0, math.nan), on_line(0.0, 1.0)) == math.inf


# -- the product target and LL ----------------------------------------------------------------
# A midpoint grid whose cell edges fall on ±0.2, ±1 and ±1.1, so the piecewise-constant bar
# factor is integrated exactly; h = 0.005 is a sixth of the Gaussians' std.
H = 0.005


def grid(low, high):
    xs = np.arange(low[0] + H / 2, high[0], H)
    ys = np.arange(low[1] + H / 2, high[1], H)
    return np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)


def test_normaliser_matches_the_published_constant():
    assert math.exp(product2d_log_normaliser()) == pytest.approx(0.311232, abs=1e-6)
    assert product2d_log_normaliser() == pytest.approx(-1.167218, abs=1e-6)


def test_density_integrates_to_one():
    points = grid((-1.1, -1.1), (1.1, 1.1))
    total = np.exp(product2d_log_density(points)).sum() * H * H
    assert total == pytest.approx(1.0, abs=1e-6)


def test_log_density_by_hand_at_three_points():
    log_c = product2d_log_normaliser()
    peak = -math.log(8) - math.log(2 * math.pi * RING_STD ** 2)  # the other 7 Gaussians add ~0
    got = product2d_log_density(np.array([[0.0, 0.5], [0.5, 0.0], [1.2, 0.0], [math.nan, 0.0]]))
    assert got[0] == pytest.approx(peak + math.log(0.99 / 0.8) - log_c, abs=1e-9)
    assert got[1] == pytest.approx(peak + math.log(0.01 / (4 * 1.1 ** 2 - 0.8)) - log_c,
                                   abs=1e-9)
    assert got[2] == -math.inf and math.isnan(got[3])
    assert log_likelihood(np.array([[0.0, 0.5], [1.2, 0.0]])) == -math.inf


def test_exact_samples_lie_in_the_bar_split_evenly_between_the_modes():
    n = 4000
    x = exact_product_samples(n, torch.Generator().manual_seed(1))
    assert x.shape == (n, 2) and bool(in_bar(x).all())
    # Number in the upper mode ~ Binomial(n, 1/2): |count − n/2| < 4 sd (false alarm 6e-5).
    upper = int((x[:, 1] > 0).sum())
    assert abs(upper - n / 2) < 4 * math.sqrt(n / 4)
    # Each mode has the ring's std 0.03 around (0, ±0.5) (the bar cuts off nothing there).
    modes = torch.where(x[:, 1:] > 0, torch.tensor([0.0, 0.5]), torch.tensor([0.0, -0.5]))
    assert float((x - modes).std()) == pytest.approx(RING_STD, rel=0.05)


def test_ll_of_exact_samples_matches_the_integral_of_q_log_p():
    # q: the exact product ∝ ring · 1{bar}; its E_q[log p] by grid integration over the bar,
    # normalising q on the grid itself (independent of the CDF-based constant).
    points = grid(BAR_LOW, BAR_HIGH)
    log_p = product2d_log_density(points)
    q = np.exp(log_p - log_p.max())
    q /= q.sum()
    expected = float((q * log_p).sum())  # ≈ 3.4811
    # Monte Carlo: 20000 exact samples; the standard error is sd(log p)/√n ≈ 1/141 ≈ 0.0071.
    # A 4-standard-error band has a false-alarm rate of about 6e-5.
    n = 20000
    x = exact_product_samples(n, torch.Generator().manual_seed(2))
    values = product2d_log_density(x)
    tolerance = 4 * values.std() / math.sqrt(n)
    assert log_likelihood(x) == pytest.approx(expected, abs=tolerance)
    # Negative control: the band is far narrower than the published code's offset of 6.19.
    assert abs(paper_scale_ll(log_likelihood(x)) - expected) > 100 * tolerance
    assert paper_scale_ll(expected) == pytest.approx(expected - 6.1916)


def test_ring_constants():
    assert RING_MEANS.shape == (8, 2)
    torch.testing.assert_close(RING_MEANS[2], torch.tensor([0.0, 0.5], dtype=torch.float64))
    assert (BAR_LOW, BAR_HIGH, RING_STD) == ((-0.2, -1.0), (0.2, 1.0), 0.03)


# -- GMM ------------------------------------------------------------------------------------
def two_clusters(spread_right_x):
    """Clusters around (−5, 0) and (5, 0), points at (±a, 0), (0, ±b) from each centre, so the
    sample (maximum-likelihood) variances are exactly (a²/2, b²/2); repeated 5 times."""
    def cluster(centre, a, b):
        return np.array([[a, 0], [-a, 0], [0, b], [0, -b]], dtype=float) + centre
    points = np.concatenate([cluster((-5.0, 0.0), 1.0, 1.0),
                             cluster((5.0, 0.0), spread_right_x, 1.0)])
    return np.tile(points, (5, 1))


def test_gmm_metric_identical_sets_is_zero():
    x = exact_product_samples(500, torch.Generator().manual_seed(3))
    assert gmm_metric(x, x.clone()) == 0.0


def test_gmm_metric_hand_checked_case():
    # Left clusters: variances (0.5, 0.5) in both sets. Right: (0.5, 0.5) against (2, 0.5).
    # Far-apart clusters give responsibilities of 0 or 1 (to e^−50), so each fitted component
    # has its cluster's variances (plus the same reg_covar on both sides):
    # metric = (‖(0.5, 0.5) − (0.5, 0.5)‖ + ‖(0.5, 0.5) − (2, 0.5)‖) / 2 = 0.75.
    a, b = two_clusters(1.0), two_clusters(2.0)
    assert gmm_metric(a, b) == pytest.approx(0.75, abs=1e-6)
    assert gmm_metric(b[::-1], a) == pytest.approx(0.75, abs=1e-6)


def test_components_are_paired_by_their_means_not_their_order():
    # b lists the same two components as a in the other order (means moved by 0.1).
    means_a, covs_a = [[-5.0, 0.0], [5.0, 0.0]], [[0.5, 0.5], [3.0, 3.0]]
    means_b, covs_b = [[5.1, 0.0], [-4.9, 0.0]], [[2.0, 0.5], [0.5, 1.5]]
    # Paired by means: left ‖(0.5, 0.5) − (0.5, 1.5)‖ = 1, right ‖(3, 3) − (2, 0.5)‖ = √7.25.
    paired = (1.0 + math.sqrt(7.25)) / 2
    # Paired by index (the published code): ‖(−1.5, 0)‖ = 1.5 and ‖(2.5, 1.5)‖ = √8.5.
    by_index = (1.5 + math.sqrt(8.5)) / 2
    got = matched_covariance_distance(means_a, covs_a, means_b, covs_b)
    assert got == pytest.approx(paired, rel=1e-12) and not math.isclose(got, by_index)


def test_gmm_metric_non_finite_is_nan():
    assert math.isnan(gmm_metric(on_line(0.0, math.inf, 1.0), on_line(0.0, 1.0, 2.0)))
