"""Sample-quality metrics (docs/metrics.md).

- W2: the Wasserstein-2 distance of two equal-sized point sets, from the optimal one-to-one
  assignment, W2 = sqrt(min_π (1/N) Σ_i ‖x_i − y_π(i)‖²).
- LL: the mean log-density of samples under the 2D product target, with 1% of the bar's mass
  spread over a larger box so that near misses score a finite value.
- GMM: the distance between the diagonal covariances of 2-component Gaussian mixtures fitted to
  the samples and to the reference, components paired by their means.
- Accuracy and Fréchet distance: the fraction of generated images that an
  evaluation classifier assigns to the requested class with probability ≥ 0.5, and the
  Fréchet distance between Gaussian fits of two feature sets.

The 2D product's log-likelihood (LL) belongs to that experiment:
compose.experiments.product2d.likelihood.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist


def as_points(x, name: str) -> np.ndarray:
    """x (a tensor or array of shape (N, d)) as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected shape (N, d), got {x.shape}")
    return x


# -- W2 -------------------------------------------------------------------------------------
def wasserstein2(samples, reference) -> float:
    """Wasserstein-2 distance between two point sets of equal size N (exact assignment).

    W2 = sqrt(min over permutations π of (1/N) Σ_i ‖x_i − y_π(i)‖²), solved with
    `scipy.optimize.linear_sum_assignment` on the squared Euclidean distances.

    Args:
        samples, reference: (N, d) tensors or arrays.
    Returns:
        W2 as a float; inf if either set has a non-finite coordinate.
    """
    x, y = as_points(samples, "samples"), as_points(reference, "reference")
    if x.shape != y.shape:
        raise ValueError(f"reference: need as many points as samples, of the same dimension; "
                         f"got {y.shape} against {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("samples: need at least one point")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.inf
    cost = cdist(x, y, "sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    return float(math.sqrt(cost[rows, cols].mean()))


# -- GMM ------------------------------------------------------------------------------------
def matched_covariance_distance(means_a, covs_a, means_b, covs_b) -> float:
    """Mean over matched component pairs of ‖cov_a − cov_b‖ (Frobenius norm of the diagonals).

    Components are paired by the assignment π minimising Σ_j ‖mean_a[j] − mean_b[π(j)]‖.

    Args:
        means_a, means_b: (K, d) component means; covs_a, covs_b: (K, d) diagonal covariances.
    Returns:
        (1/K) Σ_j ‖covs_a[j] − covs_b[π(j)]‖₂.
    """
    means_a, means_b = np.asarray(means_a, np.float64), np.asarray(means_b, np.float64)
    covs_a, covs_b = np.asarray(covs_a, np.float64), np.asarray(covs_b, np.float64)
    rows, cols = linear_sum_assignment(cdist(means_a, means_b))
    return float(np.mean(np.linalg.norm(covs_a[rows] - covs_b[cols], axis=1)))


def gmm_metric(samples, reference, random_state: int = 0, n_components: int = 2) -> float:
    """The GMM metric: fit a diagonal-covariance Gaussian mixture of `n_components` (default 2)
    to each set (scikit-learn, fixed `random_state`), pair the components by closest means and
    average the Frobenius norm of the difference of their diagonal covariances.

    Unlike the published code, which pairs components by index, the pairing here does not
    depend on the order in which the two fits happen to list their components.

    Args:
        samples, reference: (N, d) and (M, d) tensors or arrays.
    Returns:
        the metric as a float; nan if either set has a non-finite coordinate.
    """
    from sklearn.mixture import GaussianMixture

    x, y = as_points(samples, "samples"), as_points(reference, "reference")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference: dimension {y.shape[1]} differs from the samples' "
                         f"{x.shape[1]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    fits = [GaussianMixture(n_components=n_components, covariance_type="diag",
                            random_state=random_state).fit(z) for z in (x, y)]
    return matched_covariance_distance(fits[0].means_, fits[0].covariances_,
                                       fits[1].means_, fits[1].covariances_)


# -- accuracy and Fréchet distance (the digits experiment, docs/experiments.md) -------------
def accuracy(eval_classifier, images, labels, threshold: float = 0.5,
             batch_size: int = 1000) -> float:
    """Fraction of images whose requested class the evaluation classifier gives probability
    ≥ `threshold` (0.5): (1/N) Σ_i [softmax(eval_classifier(x_i))_{y_i} ≥ threshold].

    Args:
        eval_classifier: callable images → logits (N, C) (e.g. a `compose.models.unet.DigitClassifier`).
        images: (N, ...) tensor. labels: (N,) requested classes (tensor, array or list).
    Returns:
        the accuracy as a float in [0, 1]; a non-finite image counts as a miss.
    """
    import torch
    labels = torch.as_tensor(labels).detach().cpu().long().flatten()
    if images.shape[0] != labels.shape[0] or labels.numel() == 0:
        raise ValueError(f"labels: expected one label per image ({images.shape[0]}), got "
                         f"{labels.numel()}")
    hits = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size]
            logits = torch.as_tensor(eval_classifier(x)).detach().float().cpu()
            y = labels[start:start + batch_size]
            if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"eval_classifier: must return logits of shape (N, C), got "
                                 f"{tuple(logits.shape)}")
            if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
                raise ValueError(f"labels: must lie in 0..{logits.shape[1] - 1}")
            prob = torch.softmax(logits, dim=1).gather(1, y[:, None])[:, 0]
            hits += int((prob >= threshold).sum())      # nan ≥ 0.5 is False: a miss
    return hits / labels.numel()


def gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """Squared Fréchet (Wasserstein-2) distance of N(m_a, S_a) and N(m_b, S_b):

        d² = ‖m_a − m_b‖² + tr(S_a + S_b − 2 (S_a S_b)^{1/2})

    (Dowson & Landau 1982; the FID of Heusel et al. 2017). The matrix square root is
    `scipy.linalg.sqrtm`; if it is not finite (near-singular product), ε = 1e-6 is added to both
    diagonals first, as pytorch-fid does, and a negligible imaginary part is dropped.
    """
    from scipy.linalg import sqrtm
    mean_a, mean_b = np.atleast_1d(np.asarray(mean_a, np.float64)), np.atleast_1d(np.asarray(mean_b, np.float64))
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    d = mean_a.shape[0]
    if mean_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(f"expected means (d,) and covariances (d, d) with one d; got "
                         f"{mean_a.shape}, {cov_a.shape}, {mean_b.shape}, {cov_b.shape}")
    root = sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = 1e-6 * np.eye(d)
        root = sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(root):
        if np.abs(root.imag).max() > 1e-3 * max(1.0, np.abs(root.real).max()):
            raise ValueError(f"sqrtm: imaginary component {np.abs(root.imag).max():.3g} is not "
                             f"negligible; are both covariances positive semi-definite?")
        root = root.real
    diff = mean_a - mean_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance (squared, as FID reports it) between Gaussian fits of two feature sets.

    Each set (N, d) is fitted by its mean and its sample covariance (ddof 1), and the result is
    `gaussian_frechet_distance` of the two fits. In the digits experiment the features are the
    evaluation classifier's penultimate layer (`DigitClassifier.features`); the estimate is
    biased upwards for small N, so compare values computed with the same sample counts.

    Args:
        features_a, features_b: (N_a, d) and (N_b, d) tensors or arrays, N_a, N_b ≥ 2.
    Returns:
        d² ≥ 0 (up to rounding) as a float; nan if either set has a non-finite value.
    """
    a, b = as_points(features_a, "features_a"), as_points(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_b: dimension {b.shape[1]} differs from features_a's {a.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"features: need at least 2 rows in each set, got {a.shape[0]} and {b.shape[0]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False),
                                     b.mean(0), np.cov(b, rowvar=False))
