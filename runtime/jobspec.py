"""What a render job is and what it reports, shared by the renderer here (job.py) and on a Dask cluster
(cluster_job.py): the job's options, its timings and report, how a caller shows progress, and the latents
it renders."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .latents import latent_for_seed, load_latent
from .pyramid import is_zarr

Advance = Callable[[int], None]
# progress(total, show, unit) -> a context that gives advance(n) (or None): how a caller shows progress
ProgressFactory = Callable[[int, bool, str], AbstractContextManager]


@contextlib.contextmanager
def no_progress(total: int, show: bool, unit: str) -> Iterator[Advance | None]:
    yield None


@dataclass(frozen=True)
class RenderJob:
    """What to render and where, as `cips render` takes it (its --help says what each one means)."""

    model: str | os.PathLike
    seeds: Sequence[str | int] = ()  # seed specs: 7, "0-15", "1,2,5"; none: seed 0
    latent: Path | None = None  # a .npy latent instead of seeds
    coords: Path | None = None  # a .npy of points (..., 2): raw RGB (..., 3) to a .npy
    size: int = 256
    width: int | None = None  # default: size
    height: int | None = None  # default: size
    region: tuple[float, float, float, float] | None = None  # default: the full frame
    panorama: bool = False
    out: str | None = None  # a file, folder or {seed} pattern (default: cips-seed{seed}.png here)
    truncation: float = 1.0
    device: str = "auto"
    precision: str | None = None
    chunk: int | None = None  # default: chunks.default_chunk
    threads: int = 0
    force: bool = False
    resume: bool = False
    devices: str | None = None  # GPUs for a streamed render, "0,1" or "all"
    fovea: tuple[float, float] | None = None
    fovea_radius: float = 0.25
    fovea_map: Path | None = None
    scheduler: str | None = None  # a Dask scheduler's address (cluster_job.py)
    cluster: bool = False
    workers: int | None = None
    zarr_chunk: int | None = None  # pixels per side of a .zarr output's chunks (None: pyramid.CHUNK, 1024)
    packaged: bool = False  # the model is the one packaged with cips-edge (cluster workers find their own)

    @property
    def on_cluster(self) -> bool:
        return (self.out is not None and is_zarr(self.out)) or self.cluster or self.scheduler is not None


@dataclass
class Timings:
    """Milliseconds of a job's parts: opening the model, rendering, writing (encoding) the outputs."""

    session: float = 0.0
    render: float = 0.0
    write: float = 0.0

    @contextlib.contextmanager
    def measure(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, part, getattr(self, part) + (time.perf_counter() - start) * 1000)


@dataclass
class JobReport:
    paths: list[Path]
    summary: str  # one line: what was written, where it ran, how long it took
    timings: Timings = field(default_factory=Timings)


def latents_of(job: RenderJob, seeds: list[int], style_dim: int) -> list[np.ndarray]:
    """The latents of a job: its latent file's, or its seeds'."""
    if job.latent is not None:
        return [load_latent(job.latent, style_dim)]
    return [latent_for_seed(s, style_dim) for s in seeds]
