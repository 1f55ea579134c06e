"""Multi-scale sliced Wasserstein distance (SWD) on Laplacian-pyramid patches: Karras et al. 2018,
"Progressive Growing of GANs", appendix D, as their public code computes it. numpy only.

Per image: a Laplacian pyramid (5-tap binomial filter, mirror edges) from full size down to 16x16
(the last level is the low-pass residual); per level, 128 random 7x7x3 neighbourhoods per image. Each
set's descriptors are normalised per colour channel over the set (so SWD ignores a global per-channel
gain and offset: FID sees those). Per level, the two sets are projected on the same random unit
directions, the sorted projections are compared (1-D Wasserstein-1 distance), averaged over
directions and reported x1e3; `mean` averages the levels.

Random numbers come from `seed` only (patch positions: one stream per set; directions: one per
level), so the same call gives the same numbers (up to floating-point differences between machines).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import MetricsError
from .progress import track

BINOMIAL = np.array([1, 4, 6, 4, 1], np.float32) / 16  # 1-D factor of the 5x5 pyramid kernel (cv2.pyrDown)
DIRECTION_CHUNK = 128  # directions projected at once: bounds memory at 128 x descriptors floats


def _blur_axis(x: np.ndarray, axis: int, step: int = 1) -> np.ndarray:
    """5-tap binomial filter along one axis with mirror edges (d c b | a b c d | c b a), keeping every
    `step`-th output sample (2 for pyrDown: the discarded samples are never computed)."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    xp = np.pad(x, pad, mode="reflect")

    def tap(k: int) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[axis] = slice(k, k + n, step)
        return xp[tuple(index)]

    # The kernel is symmetric: (1, 4, 6, 4, 1)/16 as three products instead of five.
    out = tap(0) + tap(4)
    out *= BINOMIAL[0]
    out += BINOMIAL[1] * (tap(1) + tap(3))
    out += BINOMIAL[2] * tap(2)
    return out


def pyr_down(x: np.ndarray) -> np.ndarray:
    """Blur and keep even pixels: [N, H, W, C] -> [N, H/2, W/2, C]."""
    return _blur_axis(_blur_axis(x, 1, 2), 2, 2)


def _upsample_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """Along one axis: insert zeros between samples and filter with 2x the 5-tap kernel, mirror edges,
    computed per output phase: even outputs (x[i-1] + 6 x[i] + x[i+1]) / 8, odd (x[i] + x[i+1]) / 2.
    Mirroring the zero-stuffed signal reflects x at the start and repeats its last sample at the end."""
    x = np.moveaxis(x, axis, 0)
    xp = np.concatenate([x[1:2], x, x[-1:]])  # x[-1] = x[1], x[n] = x[n-1]
    even = (xp[:-2] + xp[2:]) * np.float32(1 / 8) + x * np.float32(6 / 8)
    odd = (x + xp[2:]) * np.float32(0.5)
    out = np.stack([even, odd], axis=1).reshape((2 * x.shape[0],) + x.shape[1:])
    return np.moveaxis(out, 0, axis)


def pyr_up(x: np.ndarray) -> np.ndarray:
    """Insert zeros between pixels and blur with 4x the kernel (cv2.pyrUp): [N, H, W, C] -> [N, 2H, 2W, C]."""
    return _upsample_axis(_upsample_axis(x, 1), 2)


def laplacian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """uint8 [N, H, W, C] -> float32 band-pass levels, finest first; the last is the low-pass residual."""
    pyramid = [images.astype(np.float32)]
    for _ in range(levels - 1):
        pyramid.append(pyr_down(pyramid[-1]))
        pyramid[-2] -= pyr_up(pyramid[-1])
    return pyramid


def pyramid_resolutions(height: int, width: int, min_resolution: int = 16) -> list[int]:
    """Level sizes (of the shorter side) from full size down to min_resolution."""
    res = [min(height, width)]
    while res[-1] // 2 >= min_resolution:
        res.append(res[-1] // 2)
    return res


def _patch_positions(rng: np.random.Generator, n_images: int, per_image: int, h: int, w: int,
                     half: int) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres [N, P], uniform over those whose whole neighbourhood lies inside the image."""
    ys = rng.integers(half, h - half, size=(n_images, per_image))
    xs = rng.integers(half, w - half, size=(n_images, per_image))
    return ys, xs


def descriptors(images: np.ndarray, levels: int, rng: np.random.Generator, patches_per_image: int = 128,
                patch_size: int = 7, chunk: int = 256, progress: bool = False) -> list[np.ndarray]:
    """Normalised patch descriptors of a set, per pyramid level: float32 [N * P, C * patch^2] each
    (components ordered channel, row, column, as in the paper's code)."""
    n, h, w, c = images.shape
    half = patch_size // 2
    # All positions are drawn before any image is touched, so chunking cannot change them.
    positions = [_patch_positions(rng, n, patches_per_image, h >> lvl, w >> lvl, half) for lvl in range(levels)]
    out = [np.empty((n, patches_per_image, c, patch_size, patch_size), np.float32) for _ in range(levels)]
    sums = np.zeros((levels, 2, c))  # per level: sum and sum of squares per channel, in float64
    for start in track(range(0, n, chunk), "SWD descriptors", progress, total=-(-n // chunk)):
        stop = min(start + chunk, n)
        for lvl, band in enumerate(laplacian_pyramid(images[start:stop], levels)):
            ys, xs = (p[start:stop] - half for p in positions[lvl])  # top-left corners [n, P]
            windows = sliding_window_view(band, (patch_size, patch_size), axis=(1, 2))  # [n, h', w', C, 7, 7]
            patches = windows[np.arange(stop - start)[:, None], ys, xs]  # [n, P, C, 7, 7]
            out[lvl][start:stop] = patches
            per_channel = patches.reshape(-1, c, patch_size * patch_size)
            sums[lvl, 0] += per_channel.sum(axis=(0, 2), dtype=np.float64)
            sums[lvl, 1] += np.einsum("ncp,ncp->c", per_channel, per_channel, dtype=np.float64)
    result = []
    count = n * patches_per_image * patch_size * patch_size
    for lvl, d in enumerate(out):
        mean = sums[lvl, 0] / count
        std = np.sqrt(np.maximum(sums[lvl, 1] / count - mean**2, 0))
        d -= mean.astype(np.float32)[:, None, None]
        d /= np.maximum(std, 1e-8).astype(np.float32)[:, None, None]  # a constant channel stays 0, not NaN
        result.append(d.reshape(n * patches_per_image, -1))  # [N*P, C*7*7]
    return result


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_directions: int, rng: np.random.Generator) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between the projections of two
    equally large point sets a, b [n, d]."""
    assert a.shape == b.shape and a.ndim == 2, (a.shape, b.shape)
    directions = rng.standard_normal((n_directions, a.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions = directions.astype(np.float32)
    total = 0.0
    for start in range(0, n_directions, DIRECTION_CHUNK):
        d = directions[start:start + DIRECTION_CHUNK]
        # [directions, n] keeps each direction's projections contiguous, so sorting them is fast.
        pa = np.sort(d @ a.T, axis=1)
        pb = np.sort(d @ b.T, axis=1)
        total += float(np.abs(pa - pb).sum(dtype=np.float64))
    return total / (n_directions * a.shape[0])


def check_swd_size(h: int, w: int, min_resolution: int = 16) -> list[int]:
    """The pyramid's resolutions for h x w images; a MetricsError where SWD cannot run on that size
    (callers check before rendering anything)."""
    if min(h, w) < min_resolution:
        raise MetricsError(f"images of {h}x{w} are smaller than the coarsest SWD level ({min_resolution})")
    resolutions = pyramid_resolutions(h, w, min_resolution)
    levels = len(resolutions)
    if h % (1 << (levels - 1)) or w % (1 << (levels - 1)):
        raise MetricsError(f"{h}x{w} does not halve evenly down to {resolutions[-1]} (use a power-of-two size)")
    return resolutions


def swd(images_a: np.ndarray, images_b: np.ndarray, seed: int = 0, patches_per_image: int = 128,
        patch_size: int = 7, n_directions: int = 512, min_resolution: int = 16,
        progress: bool = False) -> dict:
    """SWD x1e3 between two equally large sets of uint8 [N, H, W, 3] images.

    n_directions=512 is the paper's count (its code: 4 repeats of 128; averaging the repeats is the
    same as averaging all 512). Returns {"resolutions": [64, 32, 16], "levels": [...], "mean": float}.
    """
    for name, x in (("images_a", images_a), ("images_b", images_b)):
        if x.dtype != np.uint8 or x.ndim != 4:
            raise MetricsError(f"{name} must be uint8 [N, H, W, C], got {x.dtype} {x.shape}")
    if images_a.shape != images_b.shape:
        raise MetricsError(f"SWD needs two sets of the same shape, got {images_a.shape} and {images_b.shape}")
    n, h, w, _ = images_a.shape
    resolutions = check_swd_size(h, w, min_resolution)
    levels = len(resolutions)
    desc_a = descriptors(images_a, levels, np.random.default_rng([seed, 0]), patches_per_image, patch_size,
                         progress=progress)
    desc_b = descriptors(images_b, levels, np.random.default_rng([seed, 1]), patches_per_image, patch_size,
                         progress=progress)
    dists = [1e3 * sliced_wasserstein(a, b, n_directions, np.random.default_rng([seed, 2, lvl]))
             for lvl, (a, b) in enumerate(track(list(zip(desc_a, desc_b)), "SWD projections", progress))]
    return {"resolutions": resolutions, "levels": dists, "mean": float(np.mean(dists))}
