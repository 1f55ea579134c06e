#!/usr/bin/env python3
"""Make a synthetic 360-degree landscape panorama data set: sky, sun, clouds and ranges of hills, drawn
from a seed with numpy alone, one PNG per panorama. Every horizontal shape is periodic in the angle
(sums of sines of whole frequencies, wrapped angular distances), so each image's right edge joins its left.

    python recipes/panorama/make_dataset.py /work/pano-data --count 4000 --height 64 --frames 4

Image k of seed s is the same on every machine (numpy's PCG64 stream of default_rng([s, k])).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

SUPERSAMPLE = 2  # drawn at 2x and box-filtered down: soft, alias-free ridge lines


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def _angle_to(theta: np.ndarray, centre: float) -> np.ndarray:
    """Signed angular distance from centre, wrapped into [-pi, pi): the seam never shows."""
    return (theta - centre + np.pi) % (2 * np.pi) - np.pi


def _ridge(rng: np.random.Generator, theta: np.ndarray, base: float, amplitude: float, octaves: int) -> np.ndarray:
    """A hill line: height above the bottom (fraction of the image) at each angle. Whole frequencies
    1..octaves, amplitudes falling as 1/f, random phases: periodic in theta with period 2 pi."""
    f = np.arange(1, octaves + 1)[:, None]
    weights = rng.uniform(0.3, 1.0, (octaves, 1)) / f
    phases = rng.uniform(0, 2 * np.pi, (octaves, 1))
    wave = (weights * np.sin(f * theta[None] + phases)).sum(axis=0)
    return base + amplitude * wave / weights.sum()


def landscape(seed: int, index: int, height: int, width: int) -> np.ndarray:
    """Panorama `index` of `seed`: uint8 [height, width, 3]; column j looks at the angle 2 pi j / width."""
    rng = np.random.default_rng([seed, index])
    h, w = height * SUPERSAMPLE, width * SUPERSAMPLE
    theta = 2 * np.pi * (np.arange(w) + 0.5) / w  # [W]
    up = 1.0 - (np.arange(h)[:, None] + 0.5) / h  # [H, 1]: 1 at the top, 0 at the bottom
    px = 1.0 / h  # one (supersampled) pixel, in image heights

    # Sky: from the zenith colour down to a paler horizon, by time of day (day, golden hour, dusk).
    time_of_day = rng.uniform()
    zenith = _mix(np.array([0.16, 0.38, 0.78]), np.array([0.10, 0.10, 0.32]), time_of_day)
    horizon = _mix(np.array([0.72, 0.86, 0.96]), np.array([0.98, 0.62, 0.38]), time_of_day ** 0.7)
    horizon_line = rng.uniform(0.25, 0.45)
    t = np.clip((up - horizon_line) / (1 - horizon_line), 0, 1) ** 0.6
    image = np.broadcast_to(_mix(horizon, zenith, t[..., None]), (h, w, 3)).copy()

    # Sun: a disc with a glow, at a random angle and elevation (distance measured around the circle).
    sun_theta, sun_up = rng.uniform(0, 2 * np.pi), rng.uniform(horizon_line + 0.1, 0.85)
    dx = _angle_to(theta, sun_theta)[None] * (w / (2 * np.pi)) / h  # in image heights
    dist = np.sqrt(dx ** 2 + (up - sun_up) ** 2)
    sun = _mix(np.array([1.0, 0.98, 0.85]), np.array([1.0, 0.72, 0.40]), time_of_day)
    glow = 0.55 * np.exp(-dist / 0.12)[..., None]
    image = _mix(image, sun, np.clip(glow + np.clip((0.07 - dist) / px, 0, 1)[..., None], 0, 1))

    # Clouds: soft flat ellipses, a few per sky.
    for _ in range(rng.integers(0, 5)):
        c_theta, c_up = rng.uniform(0, 2 * np.pi), rng.uniform(horizon_line + 0.2, 0.95)
        c_w, c_h = rng.uniform(0.25, 0.7), rng.uniform(0.04, 0.09)
        cx = _angle_to(theta, c_theta)[None] * (w / (2 * np.pi)) / h
        cloud = np.exp(-((cx / c_w) ** 2 + ((up - c_up) / c_h) ** 2) * 3)[..., None]
        image = _mix(image, _mix(np.array([1.0, 1.0, 1.0]), horizon, 0.3), 0.8 * cloud)

    # Hills: three ranges, far (pale, hazy, low-frequency) to near (dark, rugged), each covering the last.
    ground = _mix(np.array([0.22, 0.42, 0.18]), np.array([0.42, 0.36, 0.22]), rng.uniform())  # green .. dry
    for base, amplitude, octaves, haze in [(horizon_line + 0.06, 0.24, 6, 0.6), (horizon_line - 0.06, 0.16, 10, 0.3),
                                           (horizon_line - 0.17, 0.10, 16, 0.0)]:
        top = _ridge(rng, theta, base, amplitude * rng.uniform(0.6, 1.4), octaves)[None]  # [1, W]
        cover = np.clip((top - up) / px + 0.5, 0, 1)[..., None]  # anti-aliased inside-the-hill mask
        shade = 0.6 + 0.4 * np.clip((up - (top - 0.3)) / 0.3, 0, 1)[..., None]  # darker towards the foot
        colour = _mix(ground * shade, horizon, haze)
        image = _mix(image, colour, cover)

    image = image.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def _write(index: int, folder: Path, seed: int, height: int, width: int) -> None:
    Image.fromarray(landscape(seed, index, height, width)).save(folder / f"pano-{index:05d}.png")


def make_dataset(out_dir: str | os.PathLike, count: int, height: int, frames: int, seed: int = 0,
                 workers: int = 1) -> Path:
    """count panoramas of (frames x height) x height as OUT_DIR/pano-NNNNN.png, drawn by `workers`
    processes (each image depends on its index alone). Written beside the destination and renamed into
    place: an interrupted run leaves no half-made set."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} exists and is not an empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    tmp.mkdir()
    try:
        write = partial(_write, folder=tmp, seed=seed, height=height, width=frames * height)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(write, range(count), chunksize=16))
        else:
            for k in range(count):
                write(k)
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="folder to create (must not exist or be empty)")
    parser.add_argument("--count", type=int, default=4000, help="number of panoramas (default 4000)")
    parser.add_argument("--height", type=int, default=64, help="height in pixels (default 64)")
    parser.add_argument("--frames", type=int, default=4, help="width in heights: the panorama is "
                                                              "frames x height wide (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole set (default 0)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes drawing images (default: the CPU count); the images do not depend on it")
    args = parser.parse_args(argv)
    if args.count < 1 or args.height < 1 or args.frames < 1 or args.seed < 0:
        parser.error("--count, --height and --frames must be positive, --seed non-negative")
    try:
        out = make_dataset(args.out_dir, args.count, args.height, args.frames, args.seed, max(1, args.workers))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.count} panoramas of {args.frames * args.height}x{args.height} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
