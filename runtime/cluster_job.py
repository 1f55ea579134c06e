"""A RenderJob on a Dask cluster (job.py sends it here): each image a .zarr pyramid, or many seeds'
image files written by the workers. Needs the [cluster] extra."""
from __future__ import annotations

import time
from pathlib import Path

from cips_edge.core.errors import UserError

from . import pyramid as pz
from .coords import FULL_FRAME, check_region, panorama_view
from .image import check_image_size, output_paths, output_pattern, prepare_output
from .jobspec import JobReport, ProgressFactory, RenderJob, Timings, latents_of
from .latents import CLUSTER_MAX_SEEDS, parse_seeds
from .model import CIPSModel
from .stream import STREAM_MIN_PIXELS, streams


def _cluster_module():
    try:
        from . import cluster
    except ImportError as e:
        raise UserError(f"rendering on a Dask cluster needs the [cluster] extra ({e.name} is missing): "
                        "pip install 'cips-edge[cluster]'") from None
    return cluster


def render_on_cluster(job: RenderJob, progress: ProgressFactory, made: list[Path] | None = None) -> JobReport:
    cl = _cluster_module()
    to_zarr = job.out is not None and pz.is_zarr(job.out)
    zarr_chunk = pz.CHUNK if job.zarr_chunk is None else job.zarr_chunk
    if job.latent is not None and not to_zarr:
        raise UserError("latent on a Dask cluster renders one big image: give out NAME.zarr",
                        params=("latent", "out"))
    if job.scheduler is not None and job.workers is not None:
        raise UserError("workers sizes a local Dask cluster; the workers of scheduler are its own",
                        params=("workers", "scheduler"))
    seeds = [] if job.latent is not None else parse_seeds(job.seeds or ["0"], CLUSTER_MAX_SEEDS)
    w, h = (job.size if job.width is None else job.width), (job.size if job.height is None else job.height)
    timings = Timings()
    with timings.measure("session"):
        meta = CIPSModel(job.model, device="cpu", threads=1)  # the client reads the file's config only
    frame = FULL_FRAME
    if job.panorama:
        if job.region is not None:
            raise UserError("panorama renders the whole circle: for part of it use region alone",
                            params=("panorama", "region"))
        w, frame = panorama_view(meta.config, h, job.width, str(job.model))
    if to_zarr:  # never held in memory whole: no force needed
        pz.check_size(w, h, zarr_chunk)
    else:
        check_image_size(w, h, job.force)
    if job.region is not None:
        frame = check_region(job.region, h, w)
    if to_zarr:  # one pyramid per image, checked before any work
        named = [0] if job.latent is not None else seeds
        default = "cips-seed{seed}.zarr" if job.latent is None else f"cips-{Path(job.latent).stem}.zarr"
        if "{" not in job.out and len(named) > 1:  # a name.zarr is one pyramid, never a folder to put them in
            raise UserError(f"with {len(named)} seeds, out must be a pattern with {{seed}} (e.g. "
                            f"'img-{{seed}}.zarr'), not one pyramid: {job.out}", params="out")
        outs = [job.out] if "{" not in job.out else output_paths(job.out, named, default, made)
        paths = [pz.prepare(p) for p in outs]
        latents = latents_of(job, seeds, meta.style_dim)
    else:  # one file per seed, named by a pattern the workers fill in
        pattern = output_pattern(job.out, len(seeds), "cips-seed{seed}.png", made) or job.out
        sample = output_paths(pattern if "{" in pattern else job.out, seeds[:10_000], "")  # checks the pattern
        prepare_output(sample[0])
        if streams(sample[0], w * h):
            raise UserError(f"a cluster writes each seed's image whole: .png below {STREAM_MIN_PIXELS} pixels, "
                            "or .npy; write one big image as a .zarr pyramid")
    spec = cl.ModelSpec.of(Path(job.model), job.packaged, job.device, job.precision, job.threads)
    plan = None if job.scheduler is not None else cl.local_plan(job.workers, job.device, job.threads)
    if plan is not None:
        spec = plan.adapt(spec)
    levels = pz.plan_levels(h, w, zarr_chunk)
    total = len(paths) * sum(lv.height * lv.width for lv in levels) if to_zarr else len(seeds) * w * h
    start = time.perf_counter()
    with cl.connect(job.scheduler, plan) as client:
        with timings.measure("session"):
            spec, providers = cl.agree(client, spec)
        workers = len(client.scheduler_info()["workers"])
        with progress(total, True, "pixels") as advance, timings.measure("render"):
            if to_zarr:
                report = cl.Report()
                for z, path in zip(latents, paths):
                    one = cl.render_pyramid(client, spec, path, z, w, h, frame, job.truncation, job.chunk,
                                            zarr_chunk, advance)
                    report.done, report.skipped = report.done + one.done, report.skipped + one.skipped
            else:
                report = cl.render_files(client, spec, pattern, seeds, w, h, frame, job.truncation, job.chunk,
                                         advance)
    ms = (time.perf_counter() - start) * 1000

    where = f"{workers} Dask worker{'s' if workers != 1 else ''} ({', '.join(providers)}, {spec.precision})"
    shape = f"{w}x{h}" + (", region " + " ".join(f"{v:g}" for v in frame) if job.region is not None else "")
    if to_zarr:
        what = str(paths[0]) if len(paths) == 1 else f"{len(paths)} pyramids, {paths[0]} ... {paths[-1]}"
        levels_text = f"{len(levels)} level{'s' if len(levels) > 1 else ''}"
        summary = (f"wrote {what} (OME-Zarr {pz.NGFF_VERSION}, {shape}, {levels_text} in {zarr_chunk}^2 "
                   f"chunks: {report.done} written, {report.skipped} already there) on {where} in {ms:.0f} ms")
        return JobReport(paths, summary, timings)
    what = str(sample[0]) if len(seeds) == 1 else f"{len(seeds)} files, {pattern}"
    summary = (f"wrote {what} ({shape}: {report.done} rendered, {report.skipped} already there) on {where} in "
               f"{ms:.0f} ms")
    return JobReport([sample[0]] if len(seeds) == 1 else [Path(pattern)], summary, timings)
