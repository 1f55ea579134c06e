"""Renders spread over a Dask cluster: one big image into a multiscale OME-Zarr pyramid
(runtime/pyramid.py), or many seeds into image files. The only module that imports dask.

    plan = local_plan(workers=None, device="auto", threads=0)          # or None for a --scheduler
    with connect(None, plan) as client:
        spec, providers = agree(client, plan.adapt(ModelSpec.of(Path("m.onnx"), False, "auto", None, 0)))
        report = render_pyramid(client, spec, Path("big.zarr"), z, 65536, 65536, FULL_FRAME)

A task is one chunk of the pyramid (or one batch of seeds). Workers render through their own
CIPSModel (opened once per worker process, kept between tasks) and write straight to the shared
output folder, so no pixels pass through the scheduler or the client. Dask reruns the tasks of a
worker that dies; a render whose client dies leaves its chunks (or files) on disk, each written whole,
and the same command skips them.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from dask.distributed import Client, LocalCluster, as_completed, get_worker
from distributed.scheduler import KilledWorker

from . import pyramid as pz
from .devices import visible_gpus
from cips_edge.core.errors import Interrupted, UserError, first_line
from cips_edge.core.files import file_sha256
from cips_edge.core.format import packaged_model
from cips_edge.core.seeds import latent_for_seed
from .image import write_output
from .model import CUDA, CIPSModel, available_providers, default_threads
from .coords import grid_axes
from .render import render_grid, render_image

GPU_TASK_THREADS = 2  # tasks at once on a GPU worker: one renders while the other compresses and writes
SEED_BATCH_PIXELS = 1 << 22  # pixels a seed task renders (whole images; at least one)
SEED_BATCH_MAX = 256  # seeds in a task at most: a lost worker loses little
CONNECT_TIMEOUT = "20s"  # to reach a --scheduler (Dask retries a refused connection until then)
KEPT_PYRAMIDS = 4  # open pyramids a worker keeps between tasks
RETRIES = 1  # a task that raised (an I/O hiccup) runs once more; a lost worker's tasks are rerun by Dask anyway


@dataclass(frozen=True)
class ModelSpec:
    """How each worker opens the model: the file (the same bytes everywhere: checked by SHA-256),
    and the options of CIPSModel. threads 0: the worker's cores."""

    path: str
    sha256: str
    packaged: bool = False  # the model packaged with cips-edge: a worker may have it at another path
    device: str = "auto"
    precision: str | None = None
    threads: int = 0
    gpu_by_name: bool = False  # workers of our LocalCluster: worker k renders on GPU k

    @classmethod
    def of(cls, path: Path, packaged: bool, device: str, precision: str | None, threads: int) -> "ModelSpec":
        return cls(str(path.resolve()), file_sha256(path), packaged, device, precision, threads)

    def open(self, worker: str | None = None) -> CIPSModel:
        """The model on this worker; worker: its name where get_worker() does not know it (client.run)."""
        path = Path(self.path)
        if self.packaged and not path.is_file():
            path = packaged_model()
        if not path.is_file():
            raise UserError(f"worker {_worker_name()} finds no model at {path}: put the model in a folder that every "
                            "worker reads at the same path")
        if file_sha256(path) != self.sha256:
            raise UserError(f"worker {_worker_name()} has another file at {path} (its SHA-256 differs): give every "
                            "worker the same model")
        device_id = int(worker if worker is not None else get_worker().name) if self.gpu_by_name else 0
        return CIPSModel(path, device=self.device, threads=self.threads or None, precision=self.precision,
                         device_id=device_id)


def _worker_name() -> str:
    try:
        return str(get_worker().name)
    except ValueError:  # not in a worker
        return "(local)"


# -- on the workers --------------------------------------------------------------------------------
_kept: dict = {}  # per worker process: open models and pyramids, by key
_kept_lock = threading.Lock()


def _kept_open(key, make):
    with _kept_lock:
        if key not in _kept:
            _kept[key] = make()
        return _kept[key]


def _model(spec: ModelSpec, worker: str | None = None) -> CIPSModel:
    return _kept_open(("model", spec), lambda: spec.open(worker))


def _pyramid(job: "ImageJob") -> pz.Pyramid:
    """The pyramid of this run of a job (a pyramid made again at the same path is another run: its
    arrays are opened afresh); a worker keeps the latest few."""
    pyramid = _kept_open(("pyramid", job.path, job.run), lambda: pz.Pyramid(job.path, mode="r+"))
    with _kept_lock:
        old = [k for k in _kept if k[0] == "pyramid"][:-KEPT_PYRAMIDS]
        for key in old:
            del _kept[key]
    return pyramid


def _probe(spec: ModelSpec, dask_worker=None) -> tuple[str, str]:
    """Open the model on this worker: (provider, precision). Run by client.run, which hands over the
    worker (get_worker() knows it only inside tasks)."""
    m = _model(spec, str(dask_worker.name) if dask_worker is not None else None)
    return m.provider, m.precision


@dataclass(frozen=True)
class ImageJob:
    """One image: latent z [S] float32, width x height pixels over region, in the pyramid at `path`."""

    path: str
    run: str  # this call of render_pyramid
    z: np.ndarray = field(repr=False)
    width: int
    height: int
    region: tuple[float, float, float, float]
    truncation: float
    chunk: int | None  # points per ONNX Runtime call (None: the model's default)


def _render_chunk(spec: ModelSpec, job: ImageJob, row: int, column: int) -> tuple[str, int]:
    """Render chunk (row, column) of level 0 and write it: (provider, pixels)."""
    model, pyramid = _model(spec), _pyramid(job)
    level = pyramid.levels[0]
    top, left, h, w = level.block(row, column)
    xs, ys = grid_axes(job.height, job.width, job.region)  # the whole image's, as a single render's
    rgb = render_grid(model, job.z, xs[left:left + w], ys[top:top + h], job.truncation, job.chunk, uint8=True)
    pyramid.write(level, row, column, rgb[0])
    return model.provider, h * w


def _reduce_chunk(job: ImageJob, index: int, row: int, column: int, *after) -> tuple[None, int]:
    """Chunk (row, column) of level `index` from the level above (`after`: the tasks that wrote it)."""
    pyramid = _pyramid(job)
    level = pyramid.levels[index]
    pyramid.reduce(level, row, column)
    _, _, h, w = level.block(row, column)
    return None, h * w


def _render_seeds(spec: ModelSpec, pattern: str, seeds: list[int], width: int, height: int,
                  region: tuple[float, float, float, float], truncation: float, chunk: int | None) -> tuple[str, int, int]:
    """Each seed's image to pattern.format(seed=...) unless that file exists: (provider, rendered, skipped)."""
    model = _model(spec)
    rendered = skipped = 0
    for seed in seeds:
        path = Path(pattern.format(seed=seed))
        if path.exists():  # written atomically: a file there is whole
            skipped += 1
            continue
        rgb = render_image(model, latent_for_seed(seed, model.style_dim), height, width, region=region,
                           truncation=truncation, chunk=chunk)
        write_output(path, rgb)
        rendered += 1
    return model.provider, rendered, skipped


# -- the cluster -----------------------------------------------------------------------------------
def cpu_sockets() -> int:
    """CPU sockets among the cores this process may use (1 where Linux's topology files are missing)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return 1
    packages = set()
    for cpu in cpus:
        try:
            packages.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id").read_text().strip())
        except OSError:
            return 1
    return max(1, len(packages))


@dataclass(frozen=True)
class Plan:
    """Workers of a LocalCluster: how many, dask threads each, and whether worker k takes GPU k."""

    workers: int
    task_threads: int
    model_threads: int  # CPU threads of each worker's model (0: the worker's own default)
    gpus: bool

    def adapt(self, spec: ModelSpec) -> ModelSpec:
        """The model options for these workers: their share of the cores, or their GPU."""
        return replace(spec, threads=self.model_threads, gpu_by_name=self.gpus)


def local_plan(workers: int | None, device: str, threads: int) -> Plan:
    """One worker per GPU when the model will run on CUDA, else one per CPU socket, the cores shared
    out between them (workers: --workers; threads: --threads, CPU threads per worker)."""
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}", params="workers")
    gpus = 0
    if device in ("auto", "cuda", "tensorrt") and CUDA in available_providers():
        gpus = visible_gpus() or 0
    if device in ("cuda", "tensorrt") and not gpus:
        raise UserError(f"device {device}: no GPU visible to start workers on", params="device")
    if gpus:
        n = workers or gpus
        if n > gpus:
            raise UserError(f"workers {n}: this machine shows {gpus} GPU(s), one worker each", params="workers")
        return Plan(n, GPU_TASK_THREADS, threads, True)
    n = workers or cpu_sockets()
    return Plan(n, 1, threads or max(1, default_threads() // n), False)


@contextlib.contextmanager
def connect(scheduler: str | None, plan: Plan | None) -> Iterator[Client]:
    """A client of the running scheduler at `scheduler`, or of a LocalCluster made by `plan`."""
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as e:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {first_line(e)}") from None
        with client:
            if not client.scheduler_info().get("workers"):
                client.wait_for_workers(1, timeout=60)
            yield client
        return
    with LocalCluster(n_workers=plan.workers, threads_per_worker=plan.task_threads, processes=True,
                      host="127.0.0.1", dashboard_address=":0", scheduler_kwargs={"dashboard": False}) as cluster, \
            Client(cluster) as client:
        yield client


def agree(client: Client, spec: ModelSpec) -> tuple[ModelSpec, list[str]]:
    """Open the model on every worker (a missing model fails here, before any task); the spec with
    the precision they all run, so that a worker that joins later renders the same; their providers.
    Workers that would choose different precisions (fp16 on a GPU, int8 on a CPU) are an error."""
    try:
        seen = client.run(_probe, spec)
    except UserError:  # the model is missing or differs on a worker: the message says so
        raise
    except Exception as e:  # noqa: BLE001 - a worker's error from ONNX Runtime and the like
        raise UserError(f"a worker could not open the model: {type(e).__name__}: {first_line(e)}") from None
    if not seen:
        raise UserError("the Dask cluster has no workers")
    precisions = sorted({p for _, p in seen.values()})
    if len(precisions) > 1:
        raise UserError(f"the workers would render in different precisions ({', '.join(precisions)}): pass precision",
                        params="precision")
    return replace(spec, precision=precisions[0]), sorted({p for p, _ in seen.values()})


# -- on the client ---------------------------------------------------------------------------------
@dataclass
class Report:
    """What a cluster render did: tasks run and skipped (already on disk), the providers that ran."""

    done: int = 0
    skipped: int = 0
    providers: set = field(default_factory=set)


def _params(spec: ModelSpec, z: np.ndarray, width: int, height: int, region, truncation: float, chunk: int) -> dict:
    return {"version": pz.STATE_VERSION, "width": width, "height": height, "region": [float(v) for v in region],
            "truncation": float(np.float32(truncation)), "latent": hashlib.sha256(z.tobytes()).hexdigest(),
            "model": spec.sha256, "precision": spec.precision, "chunk": chunk}


_PARAM_NAMES = {"width": "size", "height": "size", "region": "region", "truncation": "truncation",
                "latent": "seed or latent", "model": "model file", "precision": "precision", "chunk": "zarr_chunk",
                "version": "pyramid version"}


def _open_partial(partial: Path, levels: list[pz.Level], params: dict) -> bool:
    """Create the pyramid at `partial`, or check that the one there is of the same render. Returns
    whether it was there."""
    if not partial.exists():
        pz.create(partial, levels, params)
        return False
    again = f"delete {partial} to start over"
    old = pz.read_params(partial)
    if old is None:
        raise UserError(f"{partial} is not an unfinished cips-edge pyramid (no readable metadata): {again}")
    differ = sorted({_PARAM_NAMES.get(k, k) for k in params.keys() | old.keys() if params.get(k) != old.get(k)})
    if differ:
        raise UserError(f"cannot continue {partial}: it was started with another {', '.join(differ)}; use the same "
                        f"options, or {again}", params=tuple(d for d in differ if d == "zarr_chunk"))
    return True


def render_pyramid(client: Client, spec: ModelSpec, out: Path, z: np.ndarray, width: int, height: int,
                   region: tuple[float, float, float, float], truncation: float = 1.0, chunk: int | None = None,
                   zarr_chunk: int = pz.CHUNK, progress: Callable[[int], None] | None = None) -> Report:
    """Render one image into the pyramid `out` (built in OUT.partial, renamed when complete), skipping
    the chunks already there. progress(pixels) after every chunk of every level."""
    partial = pz.partial_path(out)
    levels = pz.plan_levels(height, width, zarr_chunk)
    z = np.asarray(z, dtype=np.float32).reshape(-1)
    _open_partial(partial, levels, _params(spec, z, width, height, region, truncation, zarr_chunk))
    pyramid = pz.Pyramid(partial)
    run = uuid.uuid4().hex[:8]
    job = ImageJob(str(partial), run, z, width, height, tuple(float(v) for v in region), float(truncation), chunk)
    report = Report()
    futures: dict = {}
    wanted = []
    for level in levels:
        done = pyramid.done(level)
        report.skipped += len(done)
        if progress is not None:
            progress(sum(level.block(r, c)[2] * level.block(r, c)[3] for r, c in done))
        for r, c in level.chunks():
            if (r, c) in done:
                continue
            key = f"cips-{run}-level{level.index}-{r}-{c}"
            if level.index == 0:
                futures[0, r, c] = client.submit(_render_chunk, spec, job, r, c, key=key, retries=RETRIES)
            else:
                after = [futures[k] for k in ((level.index - 1, *rc) for rc in pz.children(level, levels[level.index - 1], r, c))
                         if k in futures]
                futures[level.index, r, c] = client.submit(_reduce_chunk, job, level.index, r, c, *after, key=key,
                                                           retries=RETRIES)
            wanted.append(futures[level.index, r, c])
    total = sum(len(lv.chunks()) for lv in levels)
    try:
        for future in as_completed(wanted):
            provider, pixels = future.result()
            if provider is not None:
                report.providers.add(provider)
            report.done += 1
            if progress is not None:
                progress(pixels)
    except KeyboardInterrupt:
        kept = sum(len(pyramid.done(lv)) for lv in levels)
        raise Interrupted(f"interrupted: {kept} of {total} chunks of {out} are kept in {partial}; the same command "
                          "continues") from None
    except KilledWorker as e:
        kept = sum(len(pyramid.done(lv)) for lv in levels)
        raise UserError(f"a task ended every worker that ran it ({first_line(e)}; out of memory?); {kept} of {total} "
                        f"chunks of {out} are kept in {partial}, and the same command continues") from None
    finally:
        for future in wanted:
            future.cancel()
    _remove_strays(partial)
    os.replace(partial, out)
    return report


def _remove_strays(path: Path) -> None:
    """Temporary chunk files of writes that a killed worker never finished (zarr names them *.partial)."""
    for folder, _, files in os.walk(path):
        for name in files:
            if name.endswith(".partial"):
                Path(folder, name).unlink(missing_ok=True)


def seed_batches(seeds: list[int], width: int, height: int) -> list[list[int]]:
    per = max(1, min(SEED_BATCH_MAX, SEED_BATCH_PIXELS // (width * height)))
    return [seeds[i:i + per] for i in range(0, len(seeds), per)]


def render_files(client: Client, spec: ModelSpec, pattern: str, seeds: list[int], width: int, height: int,
                 region: tuple[float, float, float, float], truncation: float = 1.0, chunk: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Report:
    """Every seed's image into its file (pattern.format(seed=...)), as `cips render` writes it alone;
    files that exist are skipped (counted). progress(pixels) after every batch."""
    report, run = Report(), uuid.uuid4().hex[:8]
    wanted = [client.submit(_render_seeds, spec, pattern, batch, width, height, region, truncation, chunk,
                            key=f"cips-{run}-seeds-{batch[0]}-{len(batch)}", retries=RETRIES)
              for batch in seed_batches(seeds, width, height)]
    try:
        for future in as_completed(wanted):
            provider, rendered, skipped = future.result()
            report.providers.add(provider)
            report.done += rendered
            report.skipped += skipped
            if progress is not None:
                progress((rendered + skipped) * width * height)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {report.done + report.skipped} of {len(seeds)} images are written; the same "
                          "command renders the rest") from None
    except KilledWorker as e:
        raise UserError(f"a task ended every worker that ran it ({first_line(e)}; out of memory?); the same command "
                        "renders the images not yet written") from None
    finally:
        for future in wanted:
            future.cancel()
    return report
