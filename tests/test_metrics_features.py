"""Fréchet distance, KID and precision/recall on feature arrays, against closed forms and brute force."""
from __future__ import annotations

import numpy as np
import pytest

from cips_edge.metrics.feature_metrics import (feature_stats, fid_from_features, frechet_distance, kid,
                                               precision_recall, trace_sqrt_product)


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    d = 32
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
    # Shared eigenvectors: tr sqrt(S1 S2) = sum sqrt(a_i b_i) exactly, even with zero eigenvalues.
    rng = np.random.default_rng(1)
    d = 64
    q = random_rotation(d, rng)
    a, b = rng.uniform(0, 3, d), rng.uniform(0, 3, d)
    a[:10] = 0  # singular
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    mu = rng.standard_normal(d)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    # sqrt of the round-off left in the zero eigenvalues (~1e-16) costs ~1e-8 each: rel 1e-7, not 1e-12.
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("rank", [200, 50])  # full rank, and N < D as with 2048-d features from few images
def test_trace_sqrt_of_general_covariances_matches_a_float64_eigen_reference(rank):
    rng = np.random.default_rng(rank)
    d = 200
    x, y = rng.standard_normal((rank, d)), rng.standard_normal((rank, d)) @ rng.standard_normal((d, d)) / 10
    s1, s2 = x.T @ x / rank, y.T @ y / rank
    # Reference: sum of sqrt of the eigenvalues of the non-symmetric product (real, >= 0 in theory).
    reference = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(reference, rel=1e-8)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    if rank == d:  # sqrtm is only reliable for the non-singular product
        assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(scipy_linalg.sqrtm(s1 @ s2)).real, rel=1e-8)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_mean_shift():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((300, 64))
    assert fid_from_features(f, f) == pytest.approx(0, abs=1e-8)
    shift = np.zeros(64)
    shift[0] = 3
    assert fid_from_features(f, f + shift) == pytest.approx(9, rel=1e-9)  # ||shift||^2, covariance unchanged


@pytest.mark.parametrize("n_a, n_b", [(30, 45), (45, 30), (300, 250)])
def test_fid_in_sample_space_equals_the_covariance_formula(n_a, n_b):
    rng = np.random.default_rng(n_a)
    d = 100  # the first two cases have fewer samples than dimensions: the sample-space path
    a = rng.standard_normal((n_a, d)) @ rng.standard_normal((d, d)) / 10
    b = rng.standard_normal((n_b, d)) + 0.3
    expected = frechet_distance(*feature_stats(a), *feature_stats(b))
    # rel 1e-7: with N < D the covariance formula takes square roots of D - N round-off eigenvalues.
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-7)


def test_feature_stats_are_unbiased_mean_and_covariance():
    rng = np.random.default_rng(3)
    f = rng.standard_normal((50, 4)).astype(np.float32)
    mu, sigma = feature_stats(f)
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0))
    centred = f.astype(np.float64) - mu
    np.testing.assert_allclose(sigma, centred.T @ centred / 49)


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, by explicit sums over pairs."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.5
    # Subsets as large as the sets: every subset is the whole set, so every estimate is the same.
    result = kid(real, fake, n_subsets=3, subset_size=12)
    assert result["mean"] == pytest.approx(brute_force_mmd2(fake, real), rel=1e-5)
    assert result["std"] == pytest.approx(0, abs=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((1000, 64)), rng.standard_normal((1000, 64))
    same = kid(real, fake, n_subsets=20, subset_size=500)
    shifted = kid(real, fake + 0.5, n_subsets=20, subset_size=500)
    assert abs(same["mean"]) < 3 * same["std"] + 1e-3, same
    assert shifted["mean"] > 20 * abs(same["mean"]) and shifted["mean"] > 10 * shifted["std"], (same, shifted)


def test_kid_without_a_precomputed_kernel_gives_the_same_numbers(monkeypatch):
    from cips_edge.metrics import feature_metrics

    rng = np.random.default_rng(6)
    real, fake = rng.standard_normal((60, 8)), rng.standard_normal((50, 8)) + 0.2
    full = kid(real, fake, n_subsets=5, subset_size=30, seed=1)
    monkeypatch.setattr(feature_metrics, "KID_FULL_KERNEL_MAX", 0)
    blockwise = kid(real, fake, n_subsets=5, subset_size=30, seed=1)
    assert blockwise["mean"] == pytest.approx(full["mean"], rel=1e-5)


def test_precision_recall_is_one_for_identical_sets_and_drops_for_shifted_sets():
    rng = np.random.default_rng(7)
    real = rng.standard_normal((400, 16))
    assert precision_recall(real, real.copy(), chunk=128) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real, real + 3.0)
    assert far["precision"] < 0.1 and far["recall"] < 0.1, far
    near = precision_recall(real, rng.standard_normal((400, 16)))
    assert near["precision"] > 0.5 and near["recall"] > 0.5, near


def test_mode_collapse_keeps_precision_and_loses_recall():
    rng = np.random.default_rng(8)
    centres = np.zeros((2, 4))
    centres[1, 0] = 20
    real = rng.standard_normal((600, 4)) + centres[rng.integers(0, 2, 600)]
    matched = precision_recall(real, rng.standard_normal((600, 4)) + centres[rng.integers(0, 2, 600)])
    collapsed = precision_recall(real, rng.standard_normal((600, 4)) + centres[0])  # one of the two modes
    assert matched["precision"] > 0.9 and matched["recall"] > 0.9, matched
    assert collapsed["precision"] > 0.9 and 0.35 < collapsed["recall"] < 0.6, collapsed


def test_precision_recall_counts_each_point_once_across_chunks():
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((100, 4)), rng.standard_normal((90, 4)) + 0.3
    assert precision_recall(real, fake, chunk=7) == precision_recall(real, fake, chunk=1000)
