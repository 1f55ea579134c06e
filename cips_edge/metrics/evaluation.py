"""Evaluate a generator against a data set: render N images from a sample source, load N data images
at the same size, compute the requested metrics; print them as a table and write them as JSON.

The sample source is any callable seeds -> images, so one code path serves ONNX models (the torch-free
runtime) and torch checkpoints alike; torch is imported only when FID/KID/precision-recall are asked for.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cips_edge.core.files import atomic_write  # torch-free, like this package

from . import cache
from .errors import MetricsError
from .feature_metrics import fid_from_features, kid, precision_recall
from .images import ImageSource, load_images
from .progress import track
from .sliced_wasserstein import check_swd_size, swd

# seeds int64 [B] -> uint8 [B, H, W, 3], one image per seed (its latent drawn from that seed).
SampleSource = Callable[[np.ndarray], np.ndarray]
METRICS = ("swd", "fid", "kid", "pr")  # pr: precision and recall
FEATURE_METRICS = ("fid", "kid", "pr")
DATA_FIT = "crop"  # data images are centre-cropped to a square, then resized (images.prepare_image)


def render(sample_source: SampleSource, seeds: np.ndarray, batch_size: int, progress: bool = False) -> np.ndarray:
    """All images of the seeds, batch by batch, checked: uint8 [N, H, W, 3]."""
    batches = []
    for start in track(range(0, len(seeds), batch_size), "rendering", progress,
                       total=-(-len(seeds) // batch_size)):
        chunk = seeds[start:start + batch_size]
        images = np.asarray(sample_source(chunk))
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != len(chunk) or images.shape[3] != 3:
            raise MetricsError(f"the sample source returned {images.dtype} {images.shape} for {len(chunk)} seeds; "
                               f"expected uint8 [{len(chunk)}, H, W, 3]")
        if batches and images.shape[1:] != batches[0].shape[1:]:
            raise MetricsError(f"the sample source changed image size from {batches[0].shape[1:3]} "
                               f"to {images.shape[1:3]}")
        batches.append(images)
    return np.concatenate(batches)


def check_request(metrics: Sequence[str] | None, num_images: int, batch_size: int = 16,
                  has_extractor: bool = False, size: int | None = None) -> list[str]:
    """The metrics an evaluate() call computes (metrics=None: SWD, plus the feature metrics when there
    is a feature extractor); a MetricsError for a request that cannot work, raised before any work.
    size: the samples' side in pixels, where the caller knows it up front."""
    wanted = list(metrics) if metrics is not None else ["swd"] + (list(FEATURE_METRICS) if has_extractor else [])
    unknown = sorted(set(wanted) - set(METRICS))
    if unknown:
        raise MetricsError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if not wanted:
        raise MetricsError(f"no metric asked for; choose from {', '.join(METRICS)}")
    if num_images < 2:
        raise MetricsError(f"the number of images must be at least 2, got {num_images}")
    if batch_size < 1:
        raise MetricsError(f"the batch size must be at least 1 image, got {batch_size}")
    if size is not None and "swd" in wanted:
        check_swd_size(size, size)
    return wanted


def evaluate(sample_source: SampleSource, data: str | os.PathLike, num_images: int = 2000,
             metrics: Sequence[str] | None = None, inception_weights: str | os.PathLike | None = None,
             batch_size: int = 16, first_seed: int = 0, seed: int = 0, cache_dir: str | os.PathLike | None = None,
             device: str = "cpu", progress: bool = True, random_init_for_tests: bool = False) -> dict:
    """Compare min(num_images, data set size) rendered images (seeds first_seed, first_seed + 1, ...)
    with as many data images (a seeded subset, loaded at the rendered size).

    metrics: any of "swd", "fid", "kid", "pr"; None means SWD, plus FID, KID and precision/recall when
    inception_weights is given. seed drives everything random in the metrics and the data subset.
    device: where the Inception network runs: "auto" (CUDA when torch has it), "cpu", "cuda" or "cuda:N".
    random_init_for_tests: a randomly initialised Inception instead of the weights file (TESTS ONLY).
    """
    wanted = check_request(metrics, num_images, batch_size,
                           has_extractor=inception_weights is not None or random_init_for_tests)
    seconds: dict[str, float] = {}
    extractor = None
    if any(m in FEATURE_METRICS for m in wanted):
        from .inception import load_inception  # torch, only when needed
        extractor = load_inception(inception_weights, device=torch_device(device),
                                   random_init_for_tests=random_init_for_tests)

    with ImageSource(data) as source:
        names = source.subset(num_images, seed)
        n = len(names)
        t = time.perf_counter()
        fake = render(sample_source, np.arange(first_seed, first_seed + n, dtype=np.int64), batch_size, progress)
        seconds["render"] = time.perf_counter() - t
        _, height, width, _ = fake.shape
        if height != width:
            raise MetricsError(f"evaluation needs square images; the sample source gives {width}x{height}")
        size = height
        result: dict = {"data": str(data), "num_images": n, "size": size, "first_seed": first_seed, "seed": seed}

        real_features, cache_state = None, None
        if extractor is not None:
            key = cache.feature_cache_key(source.fingerprint(names), size, DATA_FIT, extractor.identity)
            cache_root = Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()
            real_features = cache.load_features(cache_root, key)
            cache_state = "hit" if real_features is not None else "miss"
            result["feature_extractor"] = extractor.identity
        real = None
        if "swd" in wanted or real_features is None:
            t = time.perf_counter()
            real, skipped = load_images(source, names, size, DATA_FIT, progress)
            seconds["load_data"] = time.perf_counter() - t
            if skipped:
                result["skipped_files"] = [f"{name}: {reason}" for name, reason in skipped]
                if len(real) < 2:
                    raise MetricsError(f"fewer than 2 readable images in {data}")
                # Both sets must be equally large (SWD compares sorted samples): drop the last samples.
                fake = fake[:len(real)]
                result["num_images"] = len(real)

    if "swd" in wanted:
        t = time.perf_counter()
        result["swd"] = swd(real, fake, seed=seed, progress=progress)
        seconds["swd"] = time.perf_counter() - t
    if extractor is not None:
        t = time.perf_counter()
        if real_features is None:
            real_features = _features(extractor, real, "Inception features (data)", progress)
            cache.save_features(cache_root, key, real_features,
                                {"data": str(data), "num_images": n, "size": size, "extractor": extractor.identity})
        fake_features = _features(extractor, fake, "Inception features (samples)", progress)
        seconds["features"] = time.perf_counter() - t
        result["feature_cache"] = {"state": cache_state, "path": str(cache.cache_path(cache_root, key))}
        t = time.perf_counter()
        if "fid" in wanted:
            result["fid"] = fid_from_features(real_features, fake_features)
        if "kid" in wanted:
            result["kid"] = kid(real_features, fake_features, seed=seed)
        if "pr" in wanted:
            result.update(precision_recall(real_features, fake_features))
        seconds["feature_metrics"] = time.perf_counter() - t
    result["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return result


def evaluate_draws(sample_source: SampleSource, data: str | os.PathLike, draws: int, num_images: int = 2000,
                   first_seed: int = 0, first_draw: int = 0, **kwargs) -> dict:
    """evaluate() over independent draws, for figures that can be told apart from the draw's own noise.
    Draw r renders seeds first_seed + r*N .. + N-1 and takes its data subset and the metrics' randomness
    from seed r (draw 0 is evaluate()'s default call); the draws are first_draw, first_draw + 1, ..., so a
    model chosen on draws 0..K-1 can be confirmed on draws no comparison used. One draw: evaluate()'s
    result itself. Several: the same keys holding the means over draws, plus "draws" (each draw's
    result) and "spread" (per metric: each draw's value, and their sample standard deviation)."""
    if draws < 1:
        raise MetricsError(f"the number of draws must be at least 1, got {draws}")
    if first_draw < 0:
        raise MetricsError(f"the first draw must be 0 or more, got {first_draw}")

    def draw(r: int, n: int) -> dict:
        return evaluate(sample_source, data, n, first_seed=first_seed + r * n, seed=r, **kwargs)

    first = draw(first_draw, num_images)
    n = first["num_images"]  # fewer when the data set is smaller: draws step by what was used
    if first_draw and n != num_images:
        first = draw(first_draw, n)
    if draws == 1:
        return first
    results = [first] + [draw(r, n) for r in range(first_draw + 1, first_draw + draws)]
    combined = {k: v for k, v in first.items() if k not in ("swd", "fid", "kid", "precision", "recall", "seed",
                                                             "seconds", "feature_cache", "skipped_files")}
    spread = {}

    def mean_of(values: list[float], name: str) -> float:
        spread[name] = {"values": values, "std": float(np.std(values, ddof=1))}
        return float(np.mean(values))

    if "swd" in first:
        levels = np.array([r["swd"]["levels"] for r in results])
        combined["swd"] = {"resolutions": first["swd"]["resolutions"], "levels": [float(v) for v in levels.mean(0)],
                           "levels_std": [float(v) for v in levels.std(0, ddof=1)],
                           "mean": mean_of([r["swd"]["mean"] for r in results], "swd")}
    if "fid" in first:
        combined["fid"] = mean_of([r["fid"] for r in results], "fid")
    if "kid" in first:
        combined["kid"] = {"mean": mean_of([r["kid"]["mean"] for r in results], "kid")}
    for name in ("precision", "recall"):
        if name in first:
            combined[name] = mean_of([r[name] for r in results], name)
    combined.update(draws=results, spread=spread,
                    seconds={"total": round(sum(sum(r["seconds"].values()) for r in results), 3)})
    return combined


def torch_device(name: str) -> str:
    """'auto' (CUDA when torch sees a GPU, else CPU), 'cpu', 'cuda' or 'cuda:N' -> a torch device name;
    asking for CUDA where torch has none is an error, never a silent CPU run."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if not re.fullmatch(r"cuda(:\d+)?", name):
        raise MetricsError(f"unknown device {name!r}: choose auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise MetricsError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu")
    return name


def _features(extractor, images: np.ndarray, description: str, progress: bool) -> np.ndarray:
    """Features in slices, so the progress bar moves."""
    step = extractor.batch_size * 4
    parts = [extractor(images[i:i + step])
             for i in track(range(0, len(images), step), description, progress, total=-(-len(images) // step))]
    return np.concatenate(parts)


def report_rows(result: dict) -> list[tuple[str, str]]:
    """(metric, value) pairs in display order; over several draws (evaluate_draws) the means, each with
    the standard deviation between draws."""
    rows = []
    spread = result.get("spread", {})

    def between(name: str, scale: float, digits: int) -> str:
        return f" ± {scale * spread[name]['std']:.{digits}f}" if name in spread else ""

    if "swd" in result:
        stds = result["swd"].get("levels_std", [None] * len(result["swd"]["levels"]))
        for res, value, std in zip(result["swd"]["resolutions"], result["swd"]["levels"], stds):
            rows.append((f"SWD x1e3 @ {res}x{res}", f"{value:.2f}" + ("" if std is None else f" ± {std:.2f}")))
        rows.append(("SWD x1e3 (mean of levels)", f"{result['swd']['mean']:.2f}{between('swd', 1, 2)}"))
    if "fid" in result:
        rows.append(("FID", f"{result['fid']:.3f}{between('fid', 1, 3)}"))
    if "kid" in result:
        within = f" ± {1e3 * result['kid']['std']:.3f}" if "std" in result["kid"] else between("kid", 1e3, 3)
        rows.append(("KID x1e3", f"{1e3 * result['kid']['mean']:.3f}{within}"))
    for name in ("precision", "recall"):
        if name in result:
            rows.append((name, f"{result[name]:.3f}{between(name, 1, 3)}"))
    return rows


def print_report(result: dict, console=None) -> None:
    """The metrics as a rich table (to stdout unless a console is given)."""
    from rich.console import Console
    from rich.table import Table

    size = result["size"]
    draws = f", mean ± std of {len(result['draws'])} draws" if "draws" in result else ""
    table = Table(title=f"{result['num_images']} samples vs {Path(result['data']).name} at {size}x{size}{draws}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in report_rows(result):
        table.add_row(name, value)
    if "RANDOM INIT" in result.get("feature_extractor", ""):
        table.caption = "random-init Inception: feature metrics are NOT FID/KID (tests only)"
    (console or Console()).print(table)


def write_report(result: dict, path: str | os.PathLike) -> Path:
    """The result as indented JSON, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write((json.dumps(result, indent=2) + "\n").encode()))
    return path
