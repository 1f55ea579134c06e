"""`cips render`: parses the options into a runtime RenderJob and runs it (runtime/job.py)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import Progress, model_path, user_errors
from .options import SEEDS_HELP, ImageSize, Rendering, VerboseOpt, bundled, out_option


@user_errors()
@bundled
def render(
    seeds: Annotated[Optional[list[str]], typer.Option("--seeds", "--seed", help=f"{SEEDS_HELP} (default: 0; "
                                                       "none with --latent)")] = None,
    latent: Annotated[Optional[Path], typer.Option(help=".npy latent, shape (style_dim,) or (1, style_dim), "
                                                        "instead of a seed")] = None,
    coords: Annotated[Optional[Path], typer.Option(help=".npy points shaped (..., 2) (x' first); writes raw RGB "
                                                        "(..., 3) to a .npy --out")] = None,
    image: ImageSize = ImageSize(),
    region: Annotated[Optional[tuple[float, float, float, float]], typer.Option(
        metavar="X0 Y0 X1 Y1", help="the rectangle [X0, X1] x [Y0, Y1] to render, in frame units (the paper's "
        "coordinates: [-1, 1] is the trained image; may reach outside it; X0 > X1 mirrors) "
        "(default: the full frame -1 -1 1 1)")] = None,
    panorama: Annotated[bool, typer.Option(help="the whole 360 degrees of a panorama model, the right edge joining "
        "the left: --size or --height is the height, --width defaults to the model's frames x height")] = False,
    out: Annotated[Optional[str], out_option(
        "output .png, .tif (tiled BigTIFF), .npy or .zarr (an OME-Zarr pyramid, rendered on Dask); with several "
        "seeds a folder or a pattern with {seed} (default, in this folder: cips-seed7.png for seed 7, cips-z.png "
        "for --latent z.npy; with --coords cips-seed7-rgb.npy or cips-z-rgb.npy)")] = None,
    run: Rendering = Rendering(),
    resume: Annotated[bool, typer.Option(help="continue the interrupted render kept in OUT.partial (same options "
                                              "needed), or start one; .png/.tif only (a .zarr always continues its "
                                              ".partial)")] = False,
    devices: Annotated[Optional[str], typer.Option(help="GPUs to spread a .png/.tif render over: 0,1 or 0-3 or all, "
                                                        "one CUDA session each (default: one device)")] = None,
    fovea: Annotated[Optional[tuple[float, float]], typer.Option(
        metavar="X Y", help="foveated rendering around the gaze point (X, Y), in frame units: every pixel within "
        "--fovea-radius, sparser grids further out, interpolated (default: off)")] = None,
    fovea_radius: Annotated[float, typer.Option(help="radius of the fully rendered disc around --fovea, in frame "
                                                     "units (2 = the frame's width)")] = 0.25,
    fovea_map: Annotated[Optional[Path], typer.Option(help="with --fovea and one seed: also write this .png of the "
                                                           "pixels the model computed, black elsewhere (default: "
                                                           "none)")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="render on the running Dask scheduler at this address "
        "(tcp://HOST:8786); its workers need cips-edge[cpu or gpu,cluster] and the model and --out at the same paths "
        "(default: a local cluster for a .zarr output or --cluster)")] = None,
    cluster: Annotated[bool, typer.Option("--cluster", help="render the seeds as tasks of a local Dask cluster, up to "
                                                            "10 million of them, skipping files that exist (a .zarr "
                                                            "output always uses one)")] = False,
    workers: Annotated[Optional[int], typer.Option(help="workers of the local Dask cluster (default: one per GPU, "
                                                        "else one per CPU socket, the cores shared out)")] = None,
    zarr_chunk: Annotated[Optional[int], typer.Option(help="pixels per side of a .zarr output's chunks, each one "
                                                          "render task (default: 1024)")] = None,
    verbose: VerboseOpt = False,
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
    from cips_edge.cli import STARTED
    from cips_edge.runtime.job import RenderJob, render_job

    began = time.perf_counter()
    job = RenderJob(model=model_path(run.model), seeds=seeds or (), latent=latent, coords=coords, size=image.size,
                    width=image.width, height=image.height, region=region, panorama=panorama, out=out,
                    truncation=run.truncation, device=run.device, precision=run.precision, chunk=run.chunk,
                    threads=run.threads, force=image.force, resume=resume, devices=devices, fovea=fovea,
                    fovea_radius=fovea_radius, fovea_map=fovea_map, scheduler=scheduler, cluster=cluster,
                    workers=workers, zarr_chunk=zarr_chunk, packaged=run.model is None)
    report = render_job(job, Progress)
    typer.echo(report.summary)
    if verbose:
        t, end = report.timings, time.perf_counter()
        typer.echo(f"time: start-up {(began - STARTED) * 1000:.0f} ms, session {t.session:.0f} ms, render "
                   f"{t.render:.0f} ms, write {t.write:.0f} ms, total {(end - STARTED) * 1000:.0f} ms", err=True)
