"""Many renders of one model in one file: `cips grid` (a contact sheet of seeds), `cips zoom` and
`cips interpolate` (animations: a zoom into one image, a walk through several seeds)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import Progress, user_errors
from .options import SEQUENCE_OUT, ForceOpt, FpsOpt, ImageSize, Rendering, SeedOpt, SeedsOpt, bundled, out_option


@user_errors({"cell": "--size"})
@bundled
def grid(
    seeds: SeedsOpt = None,
    out: Annotated[str, out_option("the .png to write (written atomically)")] = "cips-grid.png",
    size: Annotated[int, typer.Option(help="width and height of each cell in pixels")] = 128,
    columns: Annotated[Optional[int], typer.Option(help="cells per row, at most the number of seeds "
                                                        "(default: ceil(sqrt(number of seeds)))")] = None,
    padding: Annotated[int, typer.Option(help="white pixels between cells and around the edge")] = 2,
    run: Rendering = Rendering(),
    force: ForceOpt = False,
) -> None:
    """Render many seeds into one PNG, a contact sheet: one cell per seed, in order, filling rows left
    to right.

    \b
    cips grid --seeds 0-63 --out grid.png               (8 x 8 cells of 128 x 128 pixels)
    cips grid --seeds 0-15 --size 256 --columns 8 --truncation 0.7

    Cell k is pixel for pixel what `cips render --seed K --size SIZE` writes for the k-th seed.
    """
    from cips_edge import runtime as rt
    from cips_edge.runtime.grid import grid_layout, render_grid

    rt.check_truncation(run.truncation)
    specs = [s for s in seeds or [] if s.strip()]
    seed_list = rt.parse_seeds(specs) if specs else []
    layout = grid_layout(len(seed_list), size, columns, padding, force)  # fails before any work
    path = rt.prepare_output(out, (".png",))
    m = run.open()
    latents = [rt.latent_for_seed(s, m.style_dim) for s in seed_list]
    start = time.perf_counter()
    with Progress(total=len(latents) * size * size, show=True) as advance:
        sheet = render_grid(m, latents, layout, truncation=run.truncation, chunk=run.chunk, progress=advance)
        rt.write_output(path, sheet)
    ms = (time.perf_counter() - start) * 1000
    typer.echo(f"wrote {path} ({layout.rows} x {layout.columns} cells of {size}x{size}, "
               f"{layout.width}x{layout.height}) on {m.provider} in {ms:.0f} ms")


def _write_frames(path: Path, frames, count: int, w: int, h: int, fps: float) -> float:
    """Write a sequence with a progress bar over its frames; returns the milliseconds taken."""
    from cips_edge import runtime as rt

    start = time.perf_counter()
    with Progress(total=count, show=True, unit="frames") as advance:
        def counted():
            for frame in frames:
                yield frame
                if advance is not None:
                    advance(1)
        rt.write_video(path, counted(), count, w, h, fps)
    return (time.perf_counter() - start) * 1000


@user_errors()
@bundled
def zoom(
    seed: SeedOpt = 0,
    center: Annotated[tuple[float, float], typer.Option(
        metavar="X Y", help="the point zoomed into, in frame units ([-1, 1] is the trained image)")] = (0.0, 0.0),
    factor: Annotated[float, typer.Option(help="magnification of the last frame over the first: the half-width "
                                               "shrinks geometrically from 1 to 1/F (F < 1 zooms out)")] = 8.0,
    frames: Annotated[int, typer.Option(help="number of frames, at least 2")] = 48,
    fps: FpsOpt = 24.0,
    out: Annotated[Optional[str], out_option(f"{SEQUENCE_OUT} (default: cips-zoom-seed<seed>.gif)")] = None,
    image: ImageSize = ImageSize(),
    run: Rendering = Rendering(),
) -> None:
    """Zoom into a point of one latent's image: every frame rendered at full detail, no upscaling.

    \b
    cips zoom --seed 63 --center 0.2 -0.1 --factor 16 --frames 48 --out zoom.gif
    cips zoom --seed 7 --factor 100 --frames 240 --fps 30 --size 512 --out zoom.mp4

    Frame k of N renders the region centred at (X, Y) with half-width F^(-k/(N-1)) (frame units); the
    half-height is the half-width x (H-1)/(W-1): square pixels.
    """
    from cips_edge import runtime as rt
    from cips_edge.runtime.job import frame_size

    rt.check_truncation(run.truncation)
    w, h = frame_size(image.size, image.width, image.height, image.force)
    regions = rt.zoom_regions(center, factor, frames, w, h)
    path = rt.prepare_video(out or f"cips-zoom-seed{seed}.gif", w, h, fps)
    m = run.open()
    z = rt.latent_for_seed(seed, m.style_dim)
    ms = _write_frames(path, rt.zoom_frames(m, z, regions, w, h, run.truncation, run.chunk), frames, w, h, fps)
    typer.echo(f"wrote {path} ({frames} frames of {w}x{h}, x{factor:g} into {center[0]:g} {center[1]:g}) "
               f"on {m.provider} in {ms:.0f} ms")


@user_errors()
@bundled
def interpolate(
    seeds: SeedsOpt = None,
    frames: Annotated[int, typer.Option(help="number of frames, at least 2; keys fall on frames when frames - 1 "
                                             "(with --loop: frames) is a multiple of the number of steps")] = 60,
    space: Annotated[str, typer.Option(help="z: slerp between the seeds' latents z; w: lerp between their mapped "
                                            "latents w, truncation applied after (needs the onnx package)")] = "z",
    loop: Annotated[bool, typer.Option(help="walk on from the last seed back to the first (a seamless loop)")] = False,
    fps: FpsOpt = 24.0,
    out: Annotated[str, out_option(SEQUENCE_OUT)] = "cips-walk.gif",
    image: ImageSize = ImageSize(),
    run: Rendering = Rendering(),
) -> None:
    """A latent walk: frames that pass through the images of several seeds (at least 2, in the order
    given, repeats allowed) in turn.

    \b
    cips interpolate --seeds 1,2,3 --frames 60 --out walk.gif          (slerp in z)
    cips interpolate --seeds 7,63,12 --frames 96 --space w --loop --out walk.mp4

    The first frame is the image of the first seed; without --loop the last frame is the last seed's.
    """
    from cips_edge import runtime as rt
    from cips_edge.runtime.job import frame_size
    from cips_edge.runtime.walk import check_space, parse_keys, walk_stops

    rt.check_truncation(run.truncation)
    keys = parse_keys(seeds or [])
    w, h = frame_size(image.size, image.width, image.height, image.force)
    walk_stops(len(keys), frames, loop)  # fail before any work
    check_space(space)
    path = rt.prepare_video(out, w, h, fps)
    m = run.open()
    zs = [rt.latent_for_seed(s, m.style_dim) for s in keys]
    walk = rt.walk_frames(m, zs, frames, w, h, loop=loop, space=space, truncation=run.truncation, chunk=run.chunk)
    ms = _write_frames(path, walk, frames, w, h, fps)
    back = " and back" if loop else ""
    shown = (f"seeds {','.join(map(str, keys))}" if len(keys) <= 8
             else f"{len(keys)} seeds {keys[0]},{keys[1]},{keys[2]} ... {keys[-1]}")  # a line, however many
    typer.echo(f"wrote {path} ({frames} frames of {w}x{h}, {shown}{back}, "
               f"{'slerp in z' if space == 'z' else 'lerp in w'}) on {m.provider} in {ms:.0f} ms")
