"""The `cips` command: render, grid, view, web, info, eval, export and train. Wiring only: each command checks its
options and calls cips_edge.runtime or cips_edge.metrics (torch-free), or cips_edge.export /
cips_edge.checkpoint (imported lazily: they need torch)."""
from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from cips_edge.core.errors import Interrupted, UserError

app = typer.Typer(
    help="Render CIPS images (a pixel-independent GAN, G(x, y; z)) from ONNX files; evaluate, export and train models.",
    pretty_exceptions_enable=False, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _user_errors(command):
    """Every problem a user can cause ends as one line on stderr and exit 1, never a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            _fail(e.spelled(_flag))
        except MemoryError:
            _fail("out of memory: render fewer points at once (--chunk) or a smaller image")
        except Interrupted as e:  # a streamed render says what it kept (runtime/stream.py)
            _fail(e.spelled(_flag), 130)
    return wrapper


def default_model_path() -> Path:
    """The model packaged with cips-edge (package data of cips_edge, wherever it is installed)."""
    import cips_edge

    return Path(cips_edge.__file__).resolve().parent / "models" / "default.onnx"


def _model_path(model: Optional[Path]) -> Path:
    if model is not None:
        return model
    path = default_model_path()
    if not path.is_file():
        raise UserError("no model is packaged with cips-edge yet (cips_edge/models/default.onnx); pass --model "
                        "PATH.onnx (make one with `cips export model.onnx --checkpoint CKPT`)")
    return path


ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="cips-edge ONNX file (default: the packaged model)")]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when it loads, else CPU), cuda (error if it cannot run), cpu, "
                                             "or tensorrt (ONNX Runtime's TensorRT provider; error if it cannot load)")]
ChunkOpt = Annotated[Optional[int], typer.Option(help="points per ONNX Runtime call (default: 1024 on CPU (16384 for "
                                                      "format-1 files), smaller images split evenly over the threads; "
                                                      "on CUDA the largest power of two whose activations fit ~2 GB, "
                                                      "16384-1048576)")]
PrecisionOpt = Annotated[Optional[str], typer.Option(help="pixel precision: fp32, fp16 or int8, if the model holds it "
                                                          "(default: the model's own where the device suits it - fp16 "
                                                          "on a GPU, int8 on a CPU - else fp32)")]
ThreadsOpt = Annotated[int, typer.Option(help="CPU threads, each running whole chunks; 0 = the cores this process may use")]
TruncationOpt = Annotated[float, typer.Option(help="psi: 1 = none, smaller = closer to the average image")]


@app.command()
@_user_errors
def render(
    seed: Annotated[Optional[list[str]], typer.Option(help="seed(s): 7, 0-15 or 1,2,5; repeatable (default: 0)")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="same as --seed, e.g. 0-15")] = None,
    latent: Annotated[Optional[Path], typer.Option(help=".npy latent, shape (style_dim,) or (1, style_dim), instead of a seed")] = None,
    coords: Annotated[Optional[Path], typer.Option(help=".npy points shaped (..., 2) (x' first); writes raw RGB (..., 3) to a .npy --out")] = None,
    size: Annotated[int, typer.Option(help="width and height in pixels")] = 256,
    width: Annotated[Optional[int], typer.Option(help="width in pixels (default: --size)")] = None,
    height: Annotated[Optional[int], typer.Option(help="height in pixels (default: --size)")] = None,
    region: Annotated[Optional[tuple[float, float, float, float]], typer.Option(
        metavar="X0 Y0 X1 Y1", help="the rectangle [X0, X1] x [Y0, Y1] to render, in frame units (the paper's "
        "coordinates: [-1, 1] is the trained image; may reach outside it; X0 > X1 mirrors) "
        "(default: the full frame -1 -1 1 1)")] = None,
    panorama: Annotated[bool, typer.Option(help="the whole 360 degrees of a panorama model, the right edge joining "
        "the left: --size or --height is the height, --width defaults to the model's frames x height")] = False,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="output .png, .tif (tiled BigTIFF), .npy or .zarr (an OME-Zarr pyramid, rendered on Dask); with several seeds a folder or a pattern with {seed}")] = None,
    model: ModelOpt = None,
    truncation: TruncationOpt = 1.0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
    chunk: ChunkOpt = None,
    threads: ThreadsOpt = 0,
    force: Annotated[bool, typer.Option(help="allow images beyond the per-side limit (16384 pixels)")] = False,
    resume: Annotated[bool, typer.Option(help="continue the interrupted render kept in OUT.partial (same options "
                                              "needed), or start one; .png/.tif only (a .zarr always continues its .partial)")] = False,
    devices: Annotated[Optional[str], typer.Option(help="GPUs to spread a .png/.tif render over: 0,1 or 0-3 or all, "
                                                        "one CUDA session each (default: one device)")] = None,
    fovea: Annotated[Optional[tuple[float, float]], typer.Option(
        metavar="X Y", help="foveated rendering around the gaze point (X, Y), in frame units: every pixel within "
        "--fovea-radius, sparser grids further out, interpolated (default: off)")] = None,
    fovea_radius: Annotated[float, typer.Option(help="radius of the fully rendered disc around --fovea, in frame "
                                                     "units (2 = the frame's width)")] = 0.25,
    fovea_map: Annotated[Optional[Path], typer.Option(help="with --fovea and one seed: also write this .png of the "
                                                           "pixels the model computed, black elsewhere (default: none)")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="render on the running Dask scheduler at this address "
        "(tcp://HOST:8786); its workers need cips-edge[cpu or gpu,cluster] and the model and --out at the same paths "
        "(default: a local cluster for a .zarr output or --cluster)")] = None,
    cluster: Annotated[bool, typer.Option("--cluster", help="render the seeds as tasks of a local Dask cluster, up to "
                                                            "10 million of them, skipping files that exist (a .zarr "
                                                            "output always uses one)")] = False,
    workers: Annotated[Optional[int], typer.Option(help="workers of the local Dask cluster (default: one per GPU, "
                                                        "else one per CPU socket, the cores shared out)")] = None,
    zarr_chunk: Annotated[int, typer.Option(help="pixels per side of an OME-Zarr chunk, each one render task")] = 1024,
) -> None:
    """Render images (or raw RGB at given points) from a cips-edge ONNX model.

    \b
    cips render --seed 7 --size 1024                  -> cips-seed7.png
    cips render --seeds 0-15 --out faces/             -> faces/cips-seed0.png ... cips-seed15.png
    cips render --seed 3 --width 512 --height 256 --out wide.npy   (raw float32 [H, W, 3])
    cips render --coords pts.npy --out rgb.npy        (raw float32 RGB at your points)
    cips render --seed 63 --region -0.5 -0.6 0.5 0.4 --size 512   (a crop, rendered at full detail)
    cips render --seed 63 --size 1024 --fovea 0 -0.1 --fovea-radius 0.25   (foveated: ~7x fewer points)
    cips render --seed 2 --panorama --width 1024 --height 256 --model pano.onnx   (all 360 degrees)
    cips render --seed 7 --size 32768 --force --out big.png --resume   (streamed to disk band by band)
    cips render --seed 7 --size 65536 --out big.zarr  (OME-Zarr pyramid, chunks as Dask tasks; rerun continues)
    cips render --seeds 0-999999 --size 256 --out shards/ --scheduler tcp://head:8786   (on a Dask cluster)

    A seed's latent is numpy.random.default_rng(seed).standard_normal(style_dim) as float32: the
    same image on every machine and provider.
    """
    from cips_edge import runtime as rt
    from cips_edge.runtime.pyramid import is_zarr

    if latent is not None and (seed or seeds):
        raise UserError("give either --latent or seeds (--seed/--seeds), not both")
    rt.check_truncation(truncation)
    if (out is not None and is_zarr(out)) or cluster or scheduler is not None:
        for option, given in (("--coords", coords), ("--fovea", fovea), ("--fovea-map", fovea_map), ("--devices", devices)):
            if given is not None:
                raise UserError(f"{option} does not work on a Dask cluster (a .zarr output, --cluster or --scheduler)")
        _render_on_cluster(ClusterRender([*(seed or []), *([seeds] if seeds else [])], latent, size, width, height,
                                         region, panorama, out, model, truncation, device, precision, chunk, threads,
                                         force, scheduler, workers, zarr_chunk))
        return
    if workers is not None:
        raise UserError("--workers sizes a local Dask cluster: use it with a .zarr output or --cluster")
    seed_list = [] if latent is not None else rt.parse_seeds([*(seed or []), *([seeds] if seeds else [])] or ["0"])
    w, h = _frame_size(size, width, height, force)
    if region is not None and coords is not None:
        raise UserError("give either --region or --coords, not both (--coords points are already in the frame)")
    if panorama and (region is not None or coords is not None):
        raise UserError("--panorama renders the whole circle: for part of it use --region alone (a panorama "
                        "model's x' wraps around every 2 x its frames), and --coords on its own")
    frame = rt.FULL_FRAME if region is None else rt.check_region(region, h, w)
    suffixes, default = (((".npy",), "cips-seed{seed}-rgb.npy") if coords
                         else ((*rt.image.IMAGE_SUFFIXES, *rt.STREAM_SUFFIXES[1:]), "cips-seed{seed}.png"))
    if latent is not None:  # one output, named after the latent file
        paths = rt.output_paths(out, [0], default.replace("seed{seed}", latent.stem))
    else:
        paths = rt.output_paths(out, seed_list, default)
    paths = [rt.prepare_output(p, suffixes) for p in paths]  # fail before any work
    points = rt.load_coords(coords) if coords is not None else None
    plan = _fovea_plan(fovea, fovea_radius, fovea_map, coords, len(paths), h, w, frame)
    stream = rt.streams(paths[0], w * h, resume, devices is not None, coords is not None or plan is not None)
    gpus = rt.parse_devices(devices) if devices is not None else None

    models = rt.open_models(_model_path(model), device, gpus, threads, precision)
    m = models[0]
    if panorama:
        w, frame = rt.panorama_view(m.config, h, width, str(m.path))
        rt.check_image_size(w, h, force)
        stream = rt.streams(paths[0], w * h, resume, devices is not None, plan is not None)
    if latent is not None:
        latents = [rt.load_latent(latent, m.style_dim)]
    else:
        latents = [rt.latent_for_seed(s, m.style_dim) for s in seed_list]
    n_points = points.size // 2 if points is not None else w * h
    jobs = [rt.StreamRender.open(p, m, z, w, h, frame, truncation, resume) for z, p in zip(latents, paths)] if stream else []
    start = time.perf_counter()
    work = n_points if plan is None else plan.points
    total = sum(j.remaining_pixels for j in jobs) if stream else work * len(latents)
    unit = "points" if points is not None or plan is not None else "pixels"
    with _progress(total=total, show=stream or len(latents) > 1 or work >= 1 << 20, unit=unit) as advance:
        for z, path, job in zip(latents, paths, jobs or [None] * len(paths)):
            if job is not None:
                job.run(models, chunk, advance)
                continue
            if points is not None:
                rgb = rt.render_points(m, z, points.reshape(-1, 2), truncation, chunk, advance)
                rgb = rgb.reshape(*points.shape[:-1], 3)
            elif plan is not None:
                rgb = rt.render_foveated(m, z, plan, truncation, chunk, advance)
                if fovea_map is not None:
                    rt.write_output(fovea_map, rt.fovea.sample_map(plan, rgb))
            else:
                rgb = rt.render_image(m, z, h, w, region=frame, truncation=truncation, chunk=chunk,
                                      progress=advance)
            rt.write_output(path, rgb)
    ms = (time.perf_counter() - start) * 1000
    what = f"{len(paths)} files, {paths[0]} ... {paths[-1]}" if len(paths) > 1 else str(paths[0])
    shape = f"{n_points} points" if points is not None else f"{w}x{h}"
    if region is not None:
        shape += ", region " + " ".join(f"{v:g}" for v in frame)
    if plan is not None:
        shape += (f", fovea {fovea[0]:g} {fovea[1]:g} radius {fovea_radius:g}: {plan.points} of {w * h} points, "
                  f"{w * h / plan.points:.1f}x fewer")
    if panorama:
        shape += ", 360-degree panorama"
    if stream:
        shape += ", streamed" + (", resumed" if any(j.resumed for j in jobs) else "")
    where = m.provider + (f" x{len(models)} (GPUs {devices})" if len(models) > 1 else "")
    where += "" if m.precision == "fp32" else f" ({m.precision})"  # fp32: the line as it always was
    typer.echo(f"wrote {what} ({shape}) on {where} in {ms:.0f} ms")


@dataclass(frozen=True)
class ClusterRender:
    """The options of `cips render` that a cluster render uses."""

    seed_specs: list
    latent: Optional[Path]
    size: int
    width: Optional[int]
    height: Optional[int]
    region: Optional[tuple]
    panorama: bool
    out: Optional[str]
    model: Optional[Path]
    truncation: float
    device: str
    precision: Optional[str]
    chunk: Optional[int]
    threads: int
    force: bool
    scheduler: Optional[str]
    workers: Optional[int]
    zarr_chunk: int


def _cluster_module():
    try:
        from cips_edge.runtime import cluster as cl
    except ImportError as e:
        raise UserError(f"rendering on a Dask cluster needs the [cluster] extra ({e.name} is missing): "
                        "pip install 'cips-edge[cluster]'") from None
    return cl


def _render_on_cluster(o: ClusterRender) -> None:
    """`cips render` on a Dask cluster: each image a .zarr pyramid, or many seeds' image files."""
    from cips_edge import runtime as rt
    from cips_edge.runtime import pyramid as pz

    cl = _cluster_module()
    to_zarr = o.out is not None and pz.is_zarr(o.out)
    if o.latent is not None and not to_zarr:
        raise UserError("--latent on a Dask cluster renders one big image: give --out NAME.zarr")
    if o.scheduler is not None and o.workers is not None:
        raise UserError("--workers sizes a local Dask cluster; the workers of --scheduler are its own")
    seed_list = [] if o.latent is not None else rt.parse_seeds(o.seed_specs or ["0"], rt.latents.CLUSTER_MAX_SEEDS)
    w, h = (o.size if o.width is None else o.width), (o.size if o.height is None else o.height)
    model_path = _model_path(o.model)
    meta = rt.CIPSModel(model_path, device="cpu", threads=1)  # the client reads the file's config only
    frame = rt.FULL_FRAME
    if o.panorama:
        if o.region is not None:
            raise UserError("--panorama renders the whole circle: for part of it use --region alone")
        w, frame = rt.panorama_view(meta.config, h, o.width, str(model_path))
    if to_zarr:  # never held in memory whole: no --force needed
        pz.check_size(w, h, o.zarr_chunk)
    else:
        rt.check_image_size(w, h, o.force)
    if o.region is not None:
        frame = rt.check_region(o.region, h, w)
    if to_zarr:  # one pyramid per image, checked before any work
        named = [0] if o.latent is not None else seed_list
        default = "cips-seed{seed}.zarr" if o.latent is None else f"cips-{o.latent.stem}.zarr"
        if "{" not in o.out and len(named) > 1:  # a name.zarr is one pyramid, never a folder to put them in
            raise UserError(f"with {len(named)} seeds, --out must be a pattern with {{seed}} (e.g. --out "
                            f"'img-{{seed}}.zarr'), not one pyramid: {o.out}")
        paths = [pz.prepare(p) for p in ([o.out] if "{" not in o.out else rt.output_paths(o.out, named, default))]
        latents = ([rt.load_latent(o.latent, meta.style_dim)] if o.latent is not None
                   else [rt.latent_for_seed(s, meta.style_dim) for s in seed_list])
    else:  # one file per seed, named by a pattern the workers fill in
        pattern = rt.output_pattern(o.out, len(seed_list), "cips-seed{seed}.png") or o.out
        sample = rt.output_paths(pattern if "{" in pattern else o.out, seed_list[:10_000], "")  # checks the pattern
        rt.prepare_output(sample[0])
        if rt.streams(sample[0], w * h):
            raise UserError(f"a cluster writes each seed's image whole: .png below {rt.stream.STREAM_MIN_PIXELS} "
                            "pixels, or .npy; write one big image as a .zarr pyramid")
    spec = cl.ModelSpec.of(model_path, o.model is None, o.device, o.precision, o.threads)
    plan = None if o.scheduler is not None else cl.local_plan(o.workers, o.device, o.threads)
    if plan is not None:
        spec = plan.adapt(spec)
    levels = pz.plan_levels(h, w, o.zarr_chunk)
    total = len(paths) * sum(lv.height * lv.width for lv in levels) if to_zarr else len(seed_list) * w * h
    start = time.perf_counter()
    with cl.connect(o.scheduler, plan) as client:
        spec, providers = cl.agree(client, spec)
        workers = len(client.scheduler_info()["workers"])
        with _progress(total=total, show=True) as advance:
            if to_zarr:
                report = cl.Report()
                for z, path in zip(latents, paths):
                    one = cl.render_pyramid(client, spec, path, z, w, h, frame, o.truncation, o.chunk, o.zarr_chunk,
                                            advance)
                    report.done, report.skipped = report.done + one.done, report.skipped + one.skipped
            else:
                report = cl.render_files(client, spec, pattern, seed_list, w, h, frame, o.truncation, o.chunk, advance)
    ms = (time.perf_counter() - start) * 1000
    where = f"{workers} Dask worker{'s' if workers != 1 else ''} ({', '.join(providers)}, {spec.precision})"
    shape = f"{w}x{h}" + (", region " + " ".join(f"{v:g}" for v in frame) if o.region is not None else "")
    if to_zarr:
        what = str(paths[0]) if len(paths) == 1 else f"{len(paths)} pyramids, {paths[0]} ... {paths[-1]}"
        typer.echo(f"wrote {what} (OME-Zarr {pz.NGFF_VERSION}, {shape}, {len(levels)} levels in {o.zarr_chunk}^2 "
                   f"chunks: {report.done} written, {report.skipped} already there) on {where} in {ms:.0f} ms")
    else:
        typer.echo(f"wrote {len(seed_list)} files, {pattern} ({shape}: {report.done} rendered, {report.skipped} "
                   f"already there) on {where} in {ms:.0f} ms")


@app.command()
@_user_errors
def grid(
    seeds: Annotated[Optional[list[str]], typer.Option("--seeds", "--seed", help="seeds, one per cell in this order: "
                                                       "0-63, 1,2,5 or 7; repeatable (required)")] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="the .png to write (written atomically)")] = "cips-grid.png",
    size: Annotated[int, typer.Option(help="width and height of each cell in pixels")] = 128,
    columns: Annotated[Optional[int], typer.Option(help="cells per row, at most the number of seeds "
                                                        "(default: ceil(sqrt(number of seeds)))")] = None,
    padding: Annotated[int, typer.Option(help="white pixels between cells and around the edge")] = 2,
    truncation: TruncationOpt = 1.0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    chunk: ChunkOpt = None,
    threads: ThreadsOpt = 0,
    force: Annotated[bool, typer.Option(help="allow a grid beyond 16384 pixels per side")] = False,
) -> None:
    """Render many seeds into one PNG, a contact sheet: cells fill rows left to right.

    \b
    cips grid --seeds 0-63 --out grid.png               (8 x 8 cells of 128 x 128 pixels)
    cips grid --seeds 0-15 --size 256 --columns 8 --truncation 0.7

    Cell k is pixel for pixel what `cips render --seed K --size SIZE` writes for the k-th seed.
    """
    from cips_edge import runtime as rt
    from cips_edge.runtime.grid import grid_layout, render_grid

    rt.check_truncation(truncation)
    specs = [s for s in seeds or [] if s.strip()]
    seed_list = rt.parse_seeds(specs) if specs else []
    layout = grid_layout(len(seed_list), size, columns, padding, force)  # fails before any work
    path = rt.prepare_output(out, (".png",))
    m = rt.CIPSModel(_model_path(model), device=device, threads=threads)
    latents = [rt.latent_for_seed(s, m.style_dim) for s in seed_list]
    start = time.perf_counter()
    with _progress(total=len(latents) * size * size, show=True) as advance:
        sheet = render_grid(m, latents, layout, truncation=truncation, chunk=chunk, progress=advance)
        rt.write_output(path, sheet)
    ms = (time.perf_counter() - start) * 1000
    typer.echo(f"wrote {path} ({layout.rows} x {layout.columns} cells of {size}x{size}, "
               f"{layout.width}x{layout.height}) on {m.provider} in {ms:.0f} ms")


def _fovea_plan(fovea, radius, fovea_map, coords, outputs, h, w, frame):
    """render's foveation plan (None without --fovea), its options checked before any work."""
    from cips_edge import runtime as rt

    if fovea is None:
        if fovea_map is not None:
            raise UserError("--fovea-map needs --fovea X Y")
        return None
    if coords is not None:
        raise UserError("give either --fovea or --coords, not both (--fovea renders an image)")
    if fovea_map is not None:
        if outputs > 1:
            raise UserError("--fovea-map writes one picture: give one seed")
        rt.prepare_output(fovea_map, (".png",))
    return rt.fovea_plan(h, w, fovea, radius, frame)


def _frame_size(size: int, width: Optional[int], height: Optional[int], force: bool) -> tuple[int, int]:
    from cips_edge import runtime as rt

    w, h = size if width is None else width, size if height is None else height
    rt.check_image_size(w, h, force)
    return w, h


def _write_frames(path: Path, frames, count: int, w: int, h: int, fps: float) -> float:
    """Write a sequence with a progress bar over its frames; returns the milliseconds taken."""
    from cips_edge import runtime as rt

    start = time.perf_counter()
    with _progress(total=count, show=True, unit="frames") as advance:
        def counted():
            for frame in frames:
                yield frame
                if advance is not None:
                    advance(1)
        rt.write_video(path, counted(), count, w, h, fps)
    return (time.perf_counter() - start) * 1000


FpsOpt = Annotated[float, typer.Option(help="frames per second of the .gif/.mp4 (GIF rounds the delay to 1/100 s; "
                                            "at most 50)")]
SeqOutHelp = ".gif, .mp4 (needs the [video] extra) or .npy (raw float32 [frames, H, W, 3]), written atomically"


@app.command()
@_user_errors
def zoom(
    seed: Annotated[int, typer.Option(help="seed of the latent")] = 0,
    center: Annotated[tuple[float, float], typer.Option(
        metavar="X Y", help="the point zoomed into, in frame units ([-1, 1] is the trained image)")] = (0.0, 0.0),
    factor: Annotated[float, typer.Option(help="magnification of the last frame over the first: the half-width "
                                               "shrinks geometrically from 1 to 1/F (F < 1 zooms out)")] = 8.0,
    frames: Annotated[int, typer.Option(help="number of frames, at least 2")] = 48,
    fps: FpsOpt = 24.0,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help=f"{SeqOutHelp} (default: cips-zoom-seed<seed>.gif)")] = None,
    size: Annotated[int, typer.Option(help="width and height of a frame in pixels")] = 256,
    width: Annotated[Optional[int], typer.Option(help="frame width in pixels (default: --size)")] = None,
    height: Annotated[Optional[int], typer.Option(help="frame height in pixels (default: --size); the half-height "
                                                       "is the half-width x (H-1)/(W-1): square pixels")] = None,
    truncation: TruncationOpt = 1.0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    chunk: ChunkOpt = None,
    threads: ThreadsOpt = 0,
    force: Annotated[bool, typer.Option(help="allow frames beyond the per-side limit")] = False,
) -> None:
    """Zoom into a point of one latent's image: every frame rendered at full detail, no upscaling.

    \b
    cips zoom --seed 63 --center 0.2 -0.1 --factor 16 --frames 48 --out zoom.gif
    cips zoom --seed 7 --factor 100 --frames 240 --fps 30 --size 512 --out zoom.mp4

    Frame k of N renders the region centred at (X, Y) with half-width F^(-k/(N-1)) (frame units).
    """
    from cips_edge import runtime as rt

    rt.check_truncation(truncation)
    w, h = _frame_size(size, width, height, force)
    regions = rt.zoom_regions(center, factor, frames, w, h)
    path = rt.prepare_video(out or f"cips-zoom-seed{seed}.gif", w, h, fps)
    m = rt.CIPSModel(_model_path(model), device=device, threads=threads)
    z = rt.latent_for_seed(seed, m.style_dim)
    ms = _write_frames(path, rt.zoom_frames(m, z, regions, w, h, truncation, chunk), frames, w, h, fps)
    typer.echo(f"wrote {path} ({frames} frames of {w}x{h}, x{factor:g} into {center[0]:g} {center[1]:g}) "
               f"on {m.provider} in {ms:.0f} ms")


@app.command()
@_user_errors
def interpolate(
    seeds: Annotated[Optional[list[str]], typer.Option("--seeds", "--seed", help="key seeds, visited in this order: "
                                                       "1,2,3 or 0-4; repeats allowed; repeatable (at least 2)")] = None,
    frames: Annotated[int, typer.Option(help="number of frames, at least 2; keys fall on frames when frames - 1 "
                                             "(with --loop: frames) is a multiple of the number of steps")] = 60,
    space: Annotated[str, typer.Option(help="z: slerp between the seeds' latents z; w: lerp between their mapped "
                                            "latents w, truncation applied after (needs the onnx package)")] = "z",
    loop: Annotated[bool, typer.Option(help="walk on from the last seed back to the first (a seamless loop)")] = False,
    fps: FpsOpt = 24.0,
    out: Annotated[str, typer.Option("--out", "-o", help=SeqOutHelp)] = "cips-walk.gif",
    size: Annotated[int, typer.Option(help="width and height of a frame in pixels")] = 256,
    width: Annotated[Optional[int], typer.Option(help="frame width in pixels (default: --size)")] = None,
    height: Annotated[Optional[int], typer.Option(help="frame height in pixels (default: --size)")] = None,
    truncation: TruncationOpt = 1.0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    chunk: ChunkOpt = None,
    threads: ThreadsOpt = 0,
    force: Annotated[bool, typer.Option(help="allow frames beyond the per-side limit")] = False,
) -> None:
    """A latent walk: frames that pass through the images of several seeds in turn.

    \b
    cips interpolate --seeds 1,2,3 --frames 60 --out walk.gif          (slerp in z)
    cips interpolate --seeds 7,63,12 --frames 96 --space w --loop --out walk.mp4

    The first frame is the image of the first seed; without --loop the last frame is the last seed's.
    """
    from cips_edge import runtime as rt
    from cips_edge.runtime.walk import check_space, parse_keys, walk_stops

    rt.check_truncation(truncation)
    keys = parse_keys(seeds or [])
    w, h = _frame_size(size, width, height, force)
    walk_stops(len(keys), frames, loop)  # fail before any work
    check_space(space)
    path = rt.prepare_video(out, w, h, fps)
    m = rt.CIPSModel(_model_path(model), device=device, threads=threads)
    zs = [rt.latent_for_seed(s, m.style_dim) for s in keys]
    walk = rt.walk_frames(m, zs, frames, w, h, loop=loop, space=space, truncation=truncation, chunk=chunk)
    ms = _write_frames(path, walk, frames, w, h, fps)
    typer.echo(f"wrote {path} ({frames} frames of {w}x{h}, seeds {','.join(map(str, keys))}{' and back' if loop else ''}, "
               f"{'slerp in z' if space == 'z' else 'lerp in w'}) on {m.provider} in {ms:.0f} ms")
@app.command()
@_user_errors
def view(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on; anything but a loopback address lets other "
                                           "machines in (the viewer has no login)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one")] = 8000,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    cache_mb: Annotated[int, typer.Option(help="memory for rendered tiles in MiB (least recently used go first)")] = 256,
    browser: Annotated[bool, typer.Option(help="render the tiles in the browser (onnxruntime-web), as the site of "
                                               "`cips web` does: the server only hands the page its files")] = False,
    zarr: Annotated[Optional[Path], typer.Option(help="show this OME-Zarr pyramid (`cips render --out big.zarr`): "
                                                      "tiles read from it, nothing rendered (default: the model)")] = None,
) -> None:
    """Explore a model in the browser: pan and zoom its endless image, tiles rendered live.

    \b
    cips view                          -> open the printed URL, http://127.0.0.1:8000/
    cips view --model m.onnx --port 8080
    cips view --device cpu --cache-mb 64
    cips view --browser                (tiles rendered by the browser's own CPU or GPU)
    cips view --zarr big.zarr          (a rendered pyramid, served without rendering)

    Zoom 0 shows the trained frame [-1, 1]^2 in one 256 x 256 tile; every zoom level halves a tile's
    side; the plane goes on past the frame. "save view" renders the view as `cips render --region`
    does (server-side; with --browser in the browser), and the page shows that command. Ctrl-C stops
    the server.
    """
    from cips_edge import runtime as rt
    from cips_edge.runtime.view import check_installed

    check_installed()
    if cache_mb < 0:
        raise UserError(f"--cache-mb must be 0 or more, got {cache_mb}")
    from cips_edge.runtime.view.app import create_app
    from cips_edge.runtime.view.server import bind, is_loopback, serve, served_hosts, url_of

    if zarr is not None:
        if model is not None:
            raise UserError("give either --model or --zarr, not both (a pyramid is shown as rendered)")
        if browser:
            raise UserError("--browser renders a model in the browser; a --zarr pyramid is read, not rendered")
        from cips_edge.runtime.view.stored import StoredPyramid

        m = StoredPyramid(zarr)
        what = f"pyramid {m.path.name}, {m.width}x{m.height}, read from disk"
    else:
        m = rt.CIPSModel(_model_path(model), device=device, threads=threads)
        what = f"model {m.path.name} " + ("rendered in the browser" if browser else f"on {m.provider}")
    sock = bind(host, port)
    hosts, any_address = served_hosts(sock, host)
    app_ = create_app(m, cache_bytes=cache_mb << 20, hosts=hosts, any_address=any_address, browser=browser)
    typer.echo(f"cips view: {url_of(sock)} ({what}; Ctrl-C stops)")
    if not is_loopback(sock):
        typer.echo(f"warning: listening on {host}: anyone who can reach this machine can use the viewer", err=True)
    serve(app_, sock)


@app.command()
@_user_errors
def web(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="folder for the site: new, empty, or an earlier "
                                                                    "`cips web` site (replaced)")],
    model: ModelOpt = None,
    webgpu: Annotated[bool, typer.Option(help="include onnxruntime-web's WebGPU build (the page uses the GPU where "
                                              "the browser offers WebGPU; --no-webgpu makes the site 29 MB smaller)")] = True,
) -> None:
    """Write a static site that renders the model in the visitor's browser: the viewer of `cips view`
    (pan, zoom, seed, truncation, save view), with tiles rendered on the visitor's machine by
    onnxruntime-web (WebAssembly, or WebGPU where the browser has it). No server work: serve the
    folder with any static file server.

    \b
    cips web site/                          -> site/index.html, the model, onnxruntime-web
    python -m http.server -d site 8000      -> open http://127.0.0.1:8000/
    cips web site/ --model m.onnx --no-webgpu
    """
    from cips_edge.runtime.view.web import write_site

    files = write_site(out_dir, _model_path(model), webgpu=webgpu)
    total = sum(files.values())
    runtime = sum(size for name, size in files.items() if "onnxruntime-web" in name)
    typer.echo(f"wrote {out_dir}: {len(files)} files, {total / 1e6:.1f} MB (model {files['model.onnx'] / 1e6:.1f} MB, "
               f"onnxruntime-web {runtime / 1e6:.1f} MB); serve it with: python -m http.server -d {out_dir} 8000")


class _progress:
    """Progress of long or multi-seed renders on stderr: a rich bar on a terminal; elsewhere (a pipe, a
    log file) a start line when the first work lands (so a command refused before any work prints only
    its error), then a plain line whenever another tenth is done, at most one every
    PLAIN_LINE_EVERY_S. Nothing when not `show`."""

    PLAIN_LINE_EVERY_S = 30.0

    def __init__(self, total: int, show: bool, unit: str = "pixels"):
        self.total, self.show, self.unit, self.bar = total, show, unit, None

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        if not self.show:
            return None
        console = Console(stderr=True)
        if console.is_terminal:
            self.bar = Progress(TextColumn("rendering"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                TimeRemainingColumn(), console=console, transient=True)
            self.bar.start()
            task = self.bar.add_task("render", total=self.total)
            return lambda n: self.bar.advance(task, n)
        self.start = self.last_line = time.perf_counter()
        self.done, self.tenths = 0, 0
        return self._plain

    def _plain(self, n: int) -> None:
        if not self.done:
            typer.echo(f"rendering {self.total:,} {self.unit}", err=True)
        self.done += n
        tenths = self.done * 10 // max(self.total, 1)
        now = time.perf_counter()
        if tenths > self.tenths and self.done < self.total and now - self.last_line >= self.PLAIN_LINE_EVERY_S:
            self.tenths, self.last_line = tenths, now
            elapsed = now - self.start
            left = elapsed * (self.total - self.done) / self.done
            typer.echo(f"rendering: {tenths * 10}% of {self.total:,} {self.unit} after {elapsed:.0f} s, "
                       f"about {left:.0f} s left", err=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


@app.command()
@_user_errors
def info(
    model: Annotated[Optional[Path], typer.Argument(help="cips-edge ONNX file (default: the packaged model)")] = None,
) -> None:
    """Show a model's config, metadata, parameter count and the providers this machine offers."""
    from cips_edge import runtime as rt

    m = rt.CIPSModel(_model_path(model), device="cpu")
    c, p = m.config, m.provenance
    have = rt.available_providers()
    w_source = p.get("w_avg")
    w_source = (f"mean of w over {w_source['latents']} latents (seed {w_source['seed']})"
                if isinstance(w_source, dict) else "given at export" if w_source else "not recorded")
    source = (f"{p['kind']} checkpoint {p['source']} (step {p.get('step')}, images seen {p.get('images_seen')})"
              if "source" in p else "not recorded (exported from a generator in memory)")
    auto = "CUDAExecutionProvider" if "CUDAExecutionProvider" in have else "CPUExecutionProvider"
    lines = [
        ("model", f"{m.path} ({m.path.stat().st_size / 1e6:.1f} MB, {rt.FORMAT} v{m.info.format_version})"),
        ("precision", _precision_line(m.info)),
        ("config", ", ".join(f"{k}={v}" for k, v in c.to_dict().items())),
        ("parameters", f"{m.parameter_count:,}"),
        ("cost", f"{2 * c.macs_per_pixel / 1e6:.2f} MFLOP per pixel"),
        ("w_avg", f"{m.style_dim} values, {w_source}"),
        ("source", source),
        *_training_lines(p),
        ("exported", f"{p.get('exported_at', '?')} with cips-edge {p.get('cips_edge', '?')}, torch {p.get('torch', '?')}"),
        ("providers", f"{', '.join(have)} (--device auto picks {auto})"),
    ]
    for key, value in lines:
        typer.echo(f"{key:<11} {value}")


def _precision_line(info) -> str:
    """"fp16 (pixel graphs fp16, fp32)", or for format-1 files "fp32 (format 1: one graph)"."""
    if info.format_version < 2:
        return "fp32 (format 1: one graph; re-export for the faster format-3 layout)"
    return f"{info.precision} (pixel graphs {', '.join(sorted(info.pixel_graphs))})"


def _training_lines(provenance: dict) -> list[tuple[str, str]]:
    """The recipe and training facts that recipes write into the provenance, when they are there:
    ("training", "1x NVIDIA H200, 38.6 min; preset=edge-64, batch=64, ...")."""
    lines = []
    if provenance.get("recipe"):
        lines.append(("recipe", str(provenance["recipe"])))
    training = provenance.get("training")
    if isinstance(training, dict) and training:
        facts = dict(training)
        where = [str(facts.pop("gpu"))] if "gpu" in facts else []
        if isinstance(facts.get("wall_s"), (int, float)):
            where.append(f"{facts.pop('wall_s') / 60:.1f} min")
        options = ", ".join(f"{k}={v}" for k, v in facts.items())
        lines.append(("training", "; ".join(part for part in (", ".join(where), options) if part)))
    elif training:
        lines.append(("training", str(training)))
    return lines


@app.command()
@_user_errors
def export(
    out: Annotated[Path, typer.Argument(help="the .onnx file to write")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="checkpoint file, run folder, or original CIPS checkpoint (default: newest under cips-runs/)")] = None,
    n_mlp: Annotated[Optional[int], typer.Option(help="mapping layers (original-format checkpoints)")] = None,
    lr_mlp: Annotated[Optional[float], typer.Option(help="mapping lr multiplier (original-format checkpoints; default 0.01)")] = None,
    precision: Annotated[str, typer.Option(help="default pixel precision of the file: fp32, fp16 (float16 GEMMs; for "
                                                "GPUs) or int8 (int8 GEMMs; for CPUs); every file also holds fp32")] = "fp32",
) -> None:
    """Export a generator checkpoint to a cips-edge ONNX file, verified against torch before it is kept.

    \b
    cips export model.onnx                                  (newest checkpoint under cips-runs/)
    cips export model.onnx --checkpoint cips-runs/00003-ffhq
    cips export ffhq.onnx --checkpoint 550000.pt            (original CIPS code's format, detected)
    cips export fast.onnx --precision fp16                  (float16 pixel graph for GPUs)
    """
    try:
        from cips_edge.export import export_checkpoint
    except ImportError as e:
        raise UserError(f"export needs torch and onnx ({e.name} is missing): pip install torch==2.13.0 "
                        "'cips-edge[train]'") from None

    start = time.perf_counter()
    report = export_checkpoint(out, checkpoint, n_mlp=n_mlp, lr_mlp=lr_mlp, precision=precision,
                               say=lambda s: typer.echo(s, err=True))
    ms = (time.perf_counter() - start) * 1000
    typer.echo(f"wrote {report.path} ({report.bytes / 1e6:.1f} MB, opset {report.opset}, {report.precision}) in "
               f"{ms:.0f} ms; ONNX Runtime (CPUExecutionProvider) matches torch (relative error "
               f"{report.rel_error:.1e}, max abs {report.max_abs_error:.1e})" + (
                   f"; its {report.precision} pixel graph differs by {report.precision_error:.1e} (relative)"
                   if report.precision != "fp32" else ""))


@app.command("eval")
@_user_errors
def eval_(
    data: Annotated[Path, typer.Argument(help="data set: a folder of images (searched recursively) or a .zip; "
                                              "centre-cropped and resized to --size")],
    model: ModelOpt = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="evaluate a torch checkpoint or run folder instead of an "
                                                            "ONNX file (needs torch; default: none)")] = None,
    num: Annotated[int, typer.Option(help="images per set: N samples against N data images (fewer if the data set "
                                          "is smaller); at least 2")] = 2000,
    truncation: Annotated[float, typer.Option(help="psi of the samples: 1 = none, smaller = closer to the average "
                                                   "image")] = 1.0,
    seed: Annotated[int, typer.Option(help="first sample seed: the samples are seeds S, S+1, ..., S+N-1 (the data "
                                           "subset and the metrics' own randomness use seed 0)")] = 0,
    batch: Annotated[int, typer.Option(help="samples rendered per call, in images")] = 16,
    device: Annotated[str, typer.Option(help="auto (CUDA when it loads, else CPU), cuda (error if it cannot run) or "
                                             "cpu; for the generator and the Inception network")] = "auto",
    metrics: Annotated[Optional[str], typer.Option(help="comma list of swd, fid, kid, pr (precision/recall) "
                                                        "(default: swd, plus fid,kid,pr with --inception-weights)")] = None,
    inception_weights: Annotated[Optional[Path], typer.Option(help="pt_inception-2015-12-05-6726825d.pth, needed for "
                                                                   "fid, kid and pr (docs/metrics.md; default: none)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the result to this .json file, "
                                                                    "atomically (default: none)")] = None,
    size: Annotated[Optional[int], typer.Option(help="side of the compared images in pixels (default: the model's "
                                                     "training size)")] = None,
) -> None:
    """Compare images of a model with a data set: SWD (numpy only), and FID, KID, precision/recall.

    \b
    cips eval data/ --model m.onnx --num 2000               (SWD)
    cips eval data.zip --checkpoint cips-runs/00003-ffhq --inception-weights pt_inception-2015-12-05-6726825d.pth
    cips eval data/ --metrics swd,fid --inception-weights W.pth --json metrics.json

    Sample i is seed S+i (z = numpy default_rng(seed).standard_normal(style_dim)), so an ONNX export
    and its checkpoint give the same images. Prints a table; see docs/metrics.md for the numbers.
    """
    from cips_edge import metrics as cm
    from cips_edge import runtime as rt
    from cips_edge.metrics.evaluation import FEATURE_METRICS

    try:
        wanted = None if metrics is None else [m.strip().lower() for m in metrics.split(",") if m.strip()]
        has_extractor = inception_weights is not None
        chosen = cm.check_request(wanted, num, batch, has_extractor, size)  # fail before any work
        rt.check_truncation(truncation)
        if set(chosen) & set(FEATURE_METRICS):
            _require_torch("fid, kid and pr need")
        if model is not None and checkpoint is not None:
            raise UserError("give either --model or --checkpoint, not both")
        if size is not None:
            rt.check_image_size(size, size)
        if json_out is not None:
            rt.prepare_output(json_out, (".json",))
        if checkpoint is not None:
            source, size, what = _checkpoint_source(checkpoint, size, truncation, device)
        else:
            m = rt.CIPSModel(_model_path(model), device=device)
            size = size or m.config.size
            source, what = cm.onnx_source(m, size, truncation), f"{m.path} on {m.provider}"
        cm.check_request(wanted, num, batch, has_extractor, size)  # again, now that the size is known
        start = time.perf_counter()
        result = cm.evaluate(source, data, num_images=num, metrics=wanted, inception_weights=inception_weights,
                             batch_size=batch, first_seed=seed, device=device, progress=True)
    except cm.MetricsError as e:
        raise UserError(str(e)) from None
    cm.print_report(result)
    if json_out is not None:
        cm.write_report(result, json_out)
    wrote = f"; wrote {json_out}" if json_out is not None else ""
    typer.echo(f"evaluated {what} in {time.perf_counter() - start:.1f} s{wrote}")


def _require_torch(what: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(f"{what} torch: pip install torch==2.13.0 'cips-edge[train]'") from None


def _checkpoint_source(checkpoint: Path, size: Optional[int], truncation: float, device: str):
    """(sample source, image size, description) for a torch checkpoint, file or run folder."""
    _require_torch("--checkpoint needs")
    from cips_edge import metrics as cm
    from cips_edge.checkpoint import CheckpointError, load_generator

    torch_device = cm.torch_device(device)
    try:
        loaded = load_generator(checkpoint, device=torch_device)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if loaded.notice:
        typer.echo(loaded.notice, err=True)
    size = size or loaded.generator.config.size
    return cm.generator_source(loaded.generator, size, truncation), size, f"{loaded.source} on torch {torch_device}"


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train a generator (the paper's recipe); same options as `python -m cips_edge.train --help`."""
    try:
        from cips_edge.train.__main__ import main as train_main
    except ImportError as e:
        _fail(f"training needs torch ({e.name} is missing): pip install torch==2.13.0 'cips-edge[train]'")
    raise typer.Exit(train_main(ctx.args, prog="cips train"))


def main() -> None:
    """Console entry point: click's own usage errors are shortened to one line as well."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 130
    except Exception as e:
        # click's exceptions (vendored inside newer typer, so matched by shape): bad option values,
        # unknown options, missing arguments. Anything else is a bug and keeps its traceback.
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # plain `cips`: the help text
        else:
            typer.echo(f"error: {e.format_message()}", err=True)
        code = e.exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
