"""Multi-scale SWD: the pyramid is the standard one, the distance is ~0 for the same distribution and
grows monotonically with blur and with colour change; deterministic; torch-free."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cips_edge.metrics.sliced_wasserstein import BINOMIAL, laplacian_pyramid, pyr_down, pyr_up, swd

N, SIZE = 256, 32  # 32k patches a level: the sampling noise floor is ~10 (x1e3), distortions reach 100+
DIRECTIONS = 128  # a quarter of the default, to keep the tests fast; the same code path


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return swd(a, b, n_directions=DIRECTIONS)["mean"]


def shapes(n: int, size: int, seed: int) -> np.ndarray:
    """Random soft-edged ellipses in warm colours on white: uint8 [n, size, size, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = np.full((n, size, size, 3), 255.0)
    for i in range(n):
        for _ in range(3):
            cx, cy = rng.uniform(0.2, 0.8, 2) * size
            rx, ry = rng.uniform(0.08, 0.3, 2) * size
            colour = np.array([rng.uniform(150, 255), rng.uniform(0, 200), rng.uniform(0, 90)])
            r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
            alpha = np.clip((1 - r) * min(rx, ry), 0, 1)[..., None]  # ~1 px anti-aliased edge
            out[i] = out[i] * (1 - alpha) + colour * alpha
    return np.round(out).astype(np.uint8)


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(sigma))) for x in images])


def hue_rotation(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate colours about the grey axis (a hue shift that keeps brightness)."""
    t = np.deg2rad(degrees)
    k = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / np.sqrt(3)  # cross-product matrix of the grey axis
    rotation = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    return np.clip(np.round(images.astype(np.float64) @ rotation.T), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sets() -> tuple[np.ndarray, np.ndarray]:
    """Two independent draws of the same distribution."""
    return shapes(N, SIZE, seed=1), shapes(N, SIZE, seed=2)


def test_pyramid_filters_match_scipy_mirror_convolution():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 24, 3)).astype(np.float32)
    kernel = np.outer(BINOMIAL, BINOMIAL)[None, :, :, None]
    np.testing.assert_allclose(pyr_down(x), ndimage.convolve(x, kernel, mode="mirror")[:, ::2, ::2], atol=1e-6)
    up = np.zeros((2, 32, 48, 3), np.float32)
    up[:, ::2, ::2] = x
    np.testing.assert_allclose(pyr_up(x), ndimage.convolve(up, 4 * kernel, mode="mirror"), atol=1e-5)


def test_laplacian_pyramid_reconstructs_the_image():
    images = shapes(4, 64, seed=0)
    pyramid = laplacian_pyramid(images, 3)
    assert [p.shape[1] for p in pyramid] == [64, 32, 16]
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = pyr_up(image) + band
    np.testing.assert_allclose(image, images, atol=1e-3)


def test_levels_go_down_to_16():
    images = shapes(8, 64, seed=0)
    result = swd(images, images, patches_per_image=4, n_directions=8)
    assert result["resolutions"] == [64, 32, 16] and len(result["levels"]) == 3
    assert result["mean"] == pytest.approx(np.mean(result["levels"]))


def test_same_distribution_is_near_zero_and_blur_grows_monotonically(sets):
    a, b = sets
    itself = distance(a, a)  # same images, other random patches: the estimator's noise floor
    other_draw = distance(a, b)
    blurred = [distance(a, blur(b, s)) for s in (0.5, 1.0, 1.5, 2.0)]
    assert itself < 12 and other_draw < 25, (itself, other_draw)
    assert itself < other_draw < blurred[0], (itself, other_draw, blurred)
    assert np.all(np.diff(blurred) > 0), blurred
    assert blurred[-1] > 4 * other_draw, blurred


def test_colour_change_grows_monotonically(sets):
    a, b = sets
    values = [distance(a, hue_rotation(b, d)) for d in (0, 20, 40, 60)]
    assert np.all(np.diff(values) > 0), values
    assert values[-1] > 1.5 * values[0], values


def test_global_channel_gain_and_offset_are_normalised_away(sets):
    # Per-set, per-channel normalisation (as in the paper's code): SWD does not see a global affine
    # colour change; FID does. Documented in docs/metrics.md.
    a, b = sets
    affine = np.clip(np.round(b * 0.8 + np.array([30, 10, 0])), 0, 255).astype(np.uint8)
    assert distance(a, affine) == pytest.approx(distance(a, b), rel=0.15)


def test_seeded_and_deterministic(sets):
    a, b = sets
    first = swd(a[:64], b[:64], seed=3)
    assert swd(a[:64], b[:64], seed=3) == first
    assert swd(a[:64], b[:64], seed=4)["mean"] != first["mean"]


def test_rejects_unequal_or_float_sets(sets):
    a, b = sets
    with pytest.raises(ValueError, match="same shape"):
        swd(a, b[:10])
    with pytest.raises(ValueError, match="uint8"):
        swd(a.astype(np.float32), b)
    with pytest.raises(ValueError, match="smaller than"):
        swd(a[:, :8, :8], b[:, :8, :8])


def test_metrics_package_imports_without_torch(torchless_env, tmp_path):
    code = ("import numpy as np, cips_edge.metrics as m; x = np.zeros((4, 16, 16, 3), np.uint8); "
            "print(m.swd(x, x, patches_per_image=2, n_directions=4)['mean'])")
    run = subprocess.run([sys.executable, "-c", code], env=torchless_env, cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) == 0.0
