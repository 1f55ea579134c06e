"""Distances between two sets of feature vectors (Inception pool3 features in practice): the Fréchet
distance between fitted Gaussians (FID), the kernel inception distance (KID) and k-NN precision and
recall. numpy only, float64 inside.
"""
from __future__ import annotations

import numpy as np

from .errors import MetricsError


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, as in TF-FID) of features [N, D], float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise MetricsError(f"need at least 2 feature vectors [N, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    vals, vecs = np.linalg.eigh(sigma)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrt(sigma1 sigma2) for symmetric PSD matrices.

    sigma1 sigma2 is not symmetric, but it is similar to M = sqrt(sigma1) sigma2 sqrt(sigma1), which is
    symmetric PSD, so tr sqrt(sigma1 sigma2) = sum of sqrt(eigenvalues of M). Two symmetric eigen-
    decompositions give it in real arithmetic, with no iteration and no complex parts; a singular
    sigma (fewer samples than dimensions, the usual case with 2048-d features) needs no eps offset,
    unlike scipy.linalg.sqrtm(sigma1 @ sigma2).
    """
    s1 = _psd_sqrt(sigma1)
    m = s1 @ sigma2 @ s1
    m = (m + m.T) / 2  # symmetric up to round-off; make it exactly so for eigvalsh
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(m), 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)) between two Gaussians."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == mu1.shape * 2, \
        (mu1.shape, mu2.shape, sigma1.shape, sigma2.shape)
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(max(value, 0.0))  # it is a squared distance: clip round-off below zero


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets [N1, D], [N2, D].

    With fewer samples than dimensions (2,000 images, 2,048 features) it works in sample space, with
    no D x D matrix: for centred A, B, sigma_a sigma_b = A^T A B^T B / k, whose nonzero eigenvalues are
    those of C C^T with C = A B^T [N1, N2]; so tr sqrt(sigma_a sigma_b) = sum sqrt(eig(C C^T)) / sqrt(k),
    k = (N1 - 1)(N2 - 1). Same value as frechet_distance(feature_stats(...)), at a fraction of the cost.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    assert a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1], (a.shape, b.shape)
    if min(len(a), len(b)) > a.shape[1]:
        return frechet_distance(*feature_stats(a), *feature_stats(b))
    if min(len(a), len(b)) < 2:
        raise MetricsError("FID needs at least 2 feature vectors in each set")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    a_c, b_c = a - mu_a, b - mu_b
    c = a_c @ b_c.T  # [N1, N2]
    gram = c @ c.T if len(a) <= len(b) else c.T @ c  # the smaller square: same nonzero eigenvalues
    k = (len(a) - 1) * (len(b) - 1)
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0, None)).sum() / np.sqrt(k)
    diff = mu_a - mu_b
    value = diff @ diff + (a_c * a_c).sum() / (len(a) - 1) + (b_c * b_c).sum() / (len(b) - 1) - 2 * trace_sqrt
    return float(max(value, 0.0))


KID_FULL_KERNEL_MAX = 8192  # up to this many vectors in all, the kernel matrix (<= 256 MB) is computed once


def kid(real: np.ndarray, fake: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> dict:
    """Kernel inception distance (Binkowski et al. 2018): the unbiased estimate of the squared MMD with
    the kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets of both sets (as StyleGAN2-ADA
    and torch-fidelity compute it). Returns {"mean", "std"} over the subsets.

    Kernel values are float32 (each is one of ~10^6 summands, so its round-off averages out); sums
    are float64.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    assert real.ndim == fake.ndim == 2 and real.shape[1] == fake.shape[1], (real.shape, fake.shape)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise MetricsError("KID needs at least 2 samples in each set")
    z = np.concatenate([fake, real]).astype(np.float32)  # fake rows first, then real
    scale = np.float32(1 / z.shape[1])
    full = (z @ z.T * scale + 1) ** 3 if len(z) <= KID_FULL_KERNEL_MAX else None

    def kernel(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return full[np.ix_(i, j)] if full is not None else (z[i] @ z[j].T * scale + 1) ** 3

    rng = np.random.default_rng(seed)
    estimates = np.empty(n_subsets)
    for s in range(n_subsets):
        x = rng.choice(len(fake), m, replace=False)
        y = len(fake) + rng.choice(len(real), m, replace=False)
        kxx, kyy = kernel(x, x), kernel(y, y)
        off_diagonal = (kxx.sum(dtype=np.float64) - np.trace(kxx, dtype=np.float64)
                        + kyy.sum(dtype=np.float64) - np.trace(kyy, dtype=np.float64))
        estimates[s] = off_diagonal / (m * (m - 1)) - 2 * kernel(x, y).mean(dtype=np.float64)
    return {"mean": float(estimates.mean()), "std": float(estimates.std())}


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 [len(a), len(b)], float64, clipped at 0."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    return np.maximum(d, 0)


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each point of x to its k-th nearest other point of x."""
    radii = np.empty(len(x))
    for start in range(0, len(x), chunk):
        d = _squared_distances(x[start:start + chunk], x)
        radii[start:start + chunk] = np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself
    return radii


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int) -> float:
    """Fraction of points inside at least one ball (centre, k-NN radius) of the other set."""
    inside = 0
    for start in range(0, len(points), chunk):
        d = _squared_distances(points[start:start + chunk], centres)
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / len(points)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 1024) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019). Each set's manifold is the union of
    balls around its points with radius the distance to the k-th nearest neighbour; precision is the
    fraction of fake points inside the real manifold, recall the fraction of real points inside the
    fake one. Returns {"precision", "recall"}."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    assert real.ndim == fake.ndim == 2 and real.shape[1] == fake.shape[1], (real.shape, fake.shape)
    if min(len(real), len(fake)) <= k:
        raise MetricsError(f"precision/recall with k={k} needs more than {k} samples in each set")
    return {"precision": _coverage(fake, real, _knn_radii(real, k, chunk), chunk),
            "recall": _coverage(real, fake, _knn_radii(fake, k, chunk), chunk)}
