"""`cips render` as one Python call: every option checked before any work, the model opened, and for
each seed the path that suits the output (streamed to disk block by block, raw RGB at given points,
foveated, or in memory); a .zarr output or a cluster goes to cluster_job.py.

    report = render_job(RenderJob(model="m.onnx", seeds=["0-3"], size=512, out="faces/"))
    print(report.summary)   # wrote 4 files, faces/cips-seed0.png ... (512x512) on CPUExecutionProvider in 812 ms
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from cips_edge.core.errors import Interrupted, UserError
from cips_edge.core.files import remove_empty_folders

from . import fovea as fv
from .coords import FULL_FRAME, check_region, load_coords, panorama_view
from .devices import open_models, parse_devices
from .image import IMAGE_SUFFIXES, check_image_size, output_paths, prepare_output, write_output
from .jobspec import JobReport, ProgressFactory, RenderJob, Timings, latents_of, no_progress
from .latents import parse_seeds
from .pyramid import is_zarr
from .render import check_truncation, render_image, render_points
from .stream import STREAM_SUFFIXES, StreamRender, streams

def frame_size(size: int, width: int | None, height: int | None, force: bool) -> tuple[int, int]:
    """(width, height): each defaults to size; checked against the per-side limit."""
    w, h = size if width is None else width, size if height is None else height
    check_image_size(w, h, force)
    return w, h


def render_job(job: RenderJob, progress: ProgressFactory = no_progress) -> JobReport:
    """Render every output of `job` and write it; UserError (naming job's fields) before any work when
    an option is wrong or contradicts another. A job that fails leaves no empty folder it made for out."""
    made: list[Path] = []
    try:
        return _render_job(job, progress, made)
    except BaseException:
        remove_empty_folders(made)
        raise


def _render_job(job: RenderJob, progress: ProgressFactory, made: list[Path]) -> JobReport:
    if job.latent is not None and job.seeds:
        raise UserError("give either latent or seeds, not both", params=("latent", "seeds"))
    check_truncation(job.truncation)
    if job.zarr_chunk is not None and not (job.out is not None and is_zarr(job.out)):
        raise UserError("zarr_chunk sizes the chunks of a .zarr output (an OME-Zarr pyramid)", params="zarr_chunk")
    if job.on_cluster:
        for name in ("coords", "fovea", "fovea_map", "devices"):
            if getattr(job, name) is not None:
                raise UserError(f"{name} does not work with cluster, scheduler or a .zarr output (they render "
                                "on a Dask cluster)", params=(name, "cluster", "scheduler"))
        from .cluster_job import render_on_cluster

        return render_on_cluster(job, progress, made)
    if job.workers is not None:
        raise UserError("workers sizes the local Dask workers of cluster or of a .zarr output",
                        params=("workers", "cluster"))
    return _render_here(job, progress, made)


def _render_here(job: RenderJob, progress: ProgressFactory, made: list[Path]) -> JobReport:
    seeds = [] if job.latent is not None else parse_seeds(job.seeds or ["0"])
    w, h = frame_size(job.size, job.width, job.height, job.force)
    if job.region is not None and job.coords is not None:
        raise UserError("give either region or coords, not both (coords points are already in the frame)",
                        params=("region", "coords", "coords"))
    if job.panorama and (job.region is not None or job.coords is not None):
        raise UserError("panorama renders the whole circle: for part of it use region alone (a panorama "
                        "model's x' wraps around every 2 x its frames), and coords on its own",
                        params=("panorama", "region", "coords"))
    frame = FULL_FRAME if job.region is None else check_region(job.region, h, w)
    suffixes, default = (((".npy",), "cips-seed{seed}-rgb.npy") if job.coords is not None
                         else ((*IMAGE_SUFFIXES, *STREAM_SUFFIXES[1:]), "cips-seed{seed}.png"))
    if job.latent is not None:  # one output, named after the latent file
        paths = output_paths(job.out, [0], default.replace("seed{seed}", Path(job.latent).stem), made)
    else:
        paths = output_paths(job.out, seeds, default, made)
    paths = [prepare_output(p, suffixes) for p in paths]  # fail before any work
    points = load_coords(job.coords) if job.coords is not None else None
    plan = _fovea_plan(job, len(paths), h, w, frame)
    streamed = streams(paths[0], w * h, job.resume, job.devices is not None, points is not None or plan is not None)
    gpus = parse_devices(job.devices) if job.devices is not None else None

    timings = Timings()
    with timings.measure("session"):
        models = open_models(job.model, job.device, gpus, job.threads, job.precision)
    m = models[0]
    if job.panorama:
        w, frame = panorama_view(m.config, h, job.width, str(m.path))
        check_image_size(w, h, job.force)
        streamed = streams(paths[0], w * h, job.resume, job.devices is not None, plan is not None)
    latents = latents_of(job, seeds, m.style_dim)
    n_points = points.size // 2 if points is not None else w * h
    streams_ = [StreamRender.open(p, m, z, w, h, frame, job.truncation, job.resume)
                for z, p in zip(latents, paths)] if streamed else []
    work = n_points if plan is None else plan.points
    total = sum(s.remaining_pixels for s in streams_) if streamed else work * len(latents)
    unit = "points" if points is not None or plan is not None else "pixels"
    start = time.perf_counter()
    written = 0
    with progress(total, streamed or len(latents) > 1 or work >= 1 << 20, unit) as advance, \
            _count_on_interrupt(lambda: written, len(paths)):
        for z, path, stream in zip(latents, paths, streams_ or [None] * len(paths)):
            if stream is not None:  # encoded and written while it renders: all of it counts as render
                with timings.measure("render"):
                    stream.run(models, job.chunk, advance)
                written += 1
                continue
            with timings.measure("render"):
                if points is not None:
                    rgb = render_points(m, z, points.reshape(-1, 2), job.truncation, job.chunk, advance)
                    rgb = rgb.reshape(*points.shape[:-1], 3)
                elif plan is not None:
                    rgb = fv.render_foveated(m, z, plan, job.truncation, job.chunk, advance)
                else:
                    rgb = render_image(m, z, h, w, region=frame, truncation=job.truncation, chunk=job.chunk,
                                       progress=advance, uint8=path.suffix.lower() == ".png")
            with timings.measure("write"):
                if plan is not None and job.fovea_map is not None:
                    write_output(job.fovea_map, fv.sample_map(plan, rgb))
                write_output(path, rgb)
            written += 1
    ms = (time.perf_counter() - start) * 1000

    what = f"{len(paths)} files, {paths[0]} ... {paths[-1]}" if len(paths) > 1 else str(paths[0])
    shape = f"{n_points} points" if points is not None else f"{w}x{h}"
    if job.region is not None:
        shape += ", region " + " ".join(f"{v:g}" for v in frame)
    if plan is not None:
        shape += (f", fovea {job.fovea[0]:g} {job.fovea[1]:g} radius {job.fovea_radius:g}: {plan.points} of "
                  f"{w * h} points, {w * h / plan.points:.1f}x fewer")
    if job.panorama:
        shape += ", 360-degree panorama"
    if streamed:
        shape += ", streamed" + _resumed(job, streams_)
    where = m.provider + (f" x{len(models)} (GPUs {job.devices})" if len(models) > 1 else "")
    where += "" if m.precision == "fp32" else f" ({m.precision})"
    verb = "kept" if streams_ and all(s.complete for s in streams_) else "wrote"  # --resume found them finished
    return JobReport(paths, f"{verb} {what} ({shape}) on {where} in {ms:.0f} ms", timings)


@contextlib.contextmanager
def _count_on_interrupt(written, count: int):
    """Ctrl-C during a render of several files says how many were written (each whole); a streamed render's
    own message (what it kept) passes as it is."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        if count == 1:
            raise
        raise Interrupted(f"interrupted: {written()} of {count} files are written, each whole") from None


def _resumed(job: RenderJob, streams_: list[StreamRender]) -> str:
    """What --resume found, for the job's line: nothing to add without it."""
    complete = sum(s.complete for s in streams_)
    if complete == len(streams_) and complete:
        return ", already complete: nothing rendered"
    said = [", resumed"] if any(s.resumed for s in streams_) else []
    if complete:
        said.append(f", {complete} already complete")
    if job.resume and not said:
        said.append(", nothing to resume: rendered whole")
    return "".join(said)


def _fovea_plan(job: RenderJob, outputs: int, h: int, w: int, frame) -> fv.FoveaPlan | None:
    """The foveation plan (None without fovea), its options checked before any work."""
    if job.fovea is None:
        if job.fovea_map is not None:
            raise UserError("fovea_map needs fovea X Y", params=("fovea_map", "fovea"))
        return None
    if job.coords is not None:
        raise UserError("give either fovea or coords, not both (fovea renders an image)",
                        params=("fovea", "coords", "fovea"))
    if job.fovea_map is not None:
        if outputs > 1:
            raise UserError("fovea_map writes one picture: give one seed", params="fovea_map")
        prepare_output(job.fovea_map, (".png",))
    plan = fv.fovea_plan(h, w, job.fovea, job.fovea_radius, frame)
    if not plan.fovea.any():  # a gaze off the image renders it all coarse: most likely pixels given as X Y
        x0, y0, x1, y1 = frame
        raise UserError(f"fovea {job.fovea[0]:g} {job.fovea[1]:g} with fovea_radius {job.fovea_radius:g} covers no "
                        f"pixel of the image, which spans x' {x0:g} to {x1:g}, y' {y0:g} to {y1:g}: both are in "
                        "these plane units, not pixels", params=("fovea", "fovea_radius"))
    return plan
