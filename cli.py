"""The `cips` command: render, grid, view, info, eval, export and train. Wiring only: each command checks its
options and calls cips_edge.runtime or cips_edge.metrics (torch-free), or cips_edge.export /
cips_edge.checkpoint (imported lazily: they need torch)."""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cips_edge.runtime.errors import UserError

app = typer.Typer(
    help="Render CIPS images (a pixel-independent GAN, G(x, y; z)) from ONNX files; evaluate, export and train models.",
    pretty_exceptions_enable=False, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _user_errors(command):
    """Every problem a user can cause ends as one line on stderr and exit 1, never a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            _fail(str(e))
        except MemoryError:
            _fail("out of memory: render fewer points at once (--chunk) or a smaller image")
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
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when it loads, else CPU), cuda (error if it cannot run) or cpu")]
ChunkOpt = Annotated[Optional[int], typer.Option(help="points per ONNX Runtime call (default: 16384 on CPU, 262144 on CUDA)")]
ThreadsOpt = Annotated[int, typer.Option(help="CPU threads, each running whole chunks; 0 = the cores this process may use")]


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
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="output .png or .npy; with several seeds a folder or a pattern with {seed}")] = None,
    model: ModelOpt = None,
    truncation: Annotated[float, typer.Option(help="psi: 1 = none, smaller = closer to the average image")] = 1.0,
    device: DeviceOpt = "auto",
    chunk: ChunkOpt = None,
    threads: ThreadsOpt = 0,
    force: Annotated[bool, typer.Option(help="allow images beyond the per-side limit")] = False,
) -> None:
    """Render images (or raw RGB at given points) from a cips-edge ONNX model.

    \b
    cips render --seed 7 --size 1024                  -> cips-seed7.png
    cips render --seeds 0-15 --out faces/             -> faces/cips-seed0.png ... cips-seed15.png
    cips render --seed 3 --width 512 --height 256 --out wide.npy   (raw float32 [H, W, 3])
    cips render --coords pts.npy --out rgb.npy        (raw float32 RGB at your points)
    cips render --seed 63 --region -0.5 -0.6 0.5 0.4 --size 512   (a crop, rendered at full detail)

    A seed's latent is numpy.random.default_rng(seed).standard_normal(style_dim) as float32: the
    same image on every machine and provider.
    """
    from cips_edge import runtime as rt

    if latent is not None and (seed or seeds):
        raise UserError("give either --latent or seeds (--seed/--seeds), not both")
    seed_list = [] if latent is not None else rt.parse_seeds([*(seed or []), *([seeds] if seeds else [])] or ["0"])
    w = size if width is None else width
    h = size if height is None else height
    rt.check_image_size(w, h, force)
    if region is not None and coords is not None:
        raise UserError("give either --region or --coords, not both (--coords points are already in the frame)")
    frame = rt.FULL_FRAME if region is None else rt.check_region(region, h, w)
    suffixes, default = ((".npy",), "cips-seed{seed}-rgb.npy") if coords else (rt.image.IMAGE_SUFFIXES, "cips-seed{seed}.png")
    if latent is not None:  # one output, named after the latent file
        paths = rt.output_paths(out, [0], default.replace("seed{seed}", latent.stem))
    else:
        paths = rt.output_paths(out, seed_list, default)
    paths = [rt.prepare_output(p, suffixes) for p in paths]  # fail before any work
    points = rt.load_coords(coords) if coords is not None else None

    m = rt.CIPSModel(_model_path(model), device=device, threads=threads)
    if latent is not None:
        latents = [rt.load_latent(latent, m.style_dim)]
    else:
        latents = [rt.latent_for_seed(s, m.style_dim) for s in seed_list]
    n_points = points.size // 2 if points is not None else w * h
    start = time.perf_counter()
    with _progress(total=n_points * len(latents), show=len(latents) > 1 or n_points >= 1 << 20) as advance:
        for z, path in zip(latents, paths):
            if points is not None:
                rgb = rt.render_points(m, z, points.reshape(-1, 2), truncation, chunk, advance)
                rgb = rgb.reshape(*points.shape[:-1], 3)
            else:
                rgb = rt.render_image(m, z, h, w, region=frame, truncation=truncation, chunk=chunk,
                                      progress=advance)
            rt.write_output(path, rgb)
    ms = (time.perf_counter() - start) * 1000
    what = f"{len(paths)} files, {paths[0]} ... {paths[-1]}" if len(paths) > 1 else str(paths[0])
    shape = f"{n_points} points" if points is not None else f"{w}x{h}"
    if region is not None:
        shape += ", region " + " ".join(f"{v:g}" for v in frame)
    typer.echo(f"wrote {what} ({shape}) on {m.provider} in {ms:.0f} ms")


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
    truncation: Annotated[float, typer.Option(help="psi: 1 = none, smaller = closer to the average image")] = 1.0,
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
) -> None:
    """Explore a model in the browser: pan and zoom its endless image, tiles rendered live.

    \b
    cips view                          -> open the printed URL, http://127.0.0.1:8000/
    cips view --model m.onnx --port 8080
    cips view --device cpu --cache-mb 64

    Zoom 0 shows the trained frame [-1, 1]^2 in one 256 x 256 tile; every zoom level halves a tile's
    side; the plane goes on past the frame. "save view" renders the view server-side as
    `cips render --region` does, and the page shows that command. Ctrl-C stops the server.
    """
    from cips_edge import runtime as rt
    from cips_edge.runtime.view import check_installed

    check_installed()
    if cache_mb < 0:
        raise UserError(f"--cache-mb must be 0 or more, got {cache_mb}")
    from cips_edge.runtime.view.app import create_app
    from cips_edge.runtime.view.server import bind, is_loopback, serve, url_of

    m = rt.CIPSModel(_model_path(model), device=device, threads=threads)
    app_ = create_app(m, cache_bytes=cache_mb << 20)
    sock = bind(host, port)
    typer.echo(f"cips view: {url_of(sock)} (model {m.path.name} on {m.provider}; Ctrl-C stops)")
    if not is_loopback(sock):
        typer.echo(f"warning: listening on {host}: anyone who can reach this machine can use the viewer", err=True)
    serve(app_, sock)


class _progress:
    """A rich progress bar on stderr for long or multi-seed renders; nothing otherwise."""

    def __init__(self, total: int, show: bool):
        self.total, self.show, self.bar = total, show, None

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        console = Console(stderr=True)
        if self.show and console.is_terminal:
            self.bar = Progress(TextColumn("rendering"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                TimeRemainingColumn(), console=console, transient=True)
            self.bar.start()
            task = self.bar.add_task("render", total=self.total)
            return lambda n: self.bar.advance(task, n)
        return None

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
) -> None:
    """Export a generator checkpoint to a cips-edge ONNX file, verified against torch before it is kept.

    \b
    cips export model.onnx                                  (newest checkpoint under cips-runs/)
    cips export model.onnx --checkpoint cips-runs/00003-ffhq
    cips export ffhq.onnx --checkpoint 550000.pt            (original CIPS code's format, detected)
    """
    try:
        from cips_edge.export import export_checkpoint
    except ImportError as e:
        raise UserError(f"export needs torch and onnx ({e.name} is missing): pip install torch==2.13.0 "
                        "'cips-edge[train]'") from None

    start = time.perf_counter()
    report = export_checkpoint(out, checkpoint, n_mlp=n_mlp, lr_mlp=lr_mlp, say=lambda s: typer.echo(s, err=True))
    ms = (time.perf_counter() - start) * 1000
    typer.echo(f"wrote {report.path} ({report.bytes / 1e6:.1f} MB, opset {report.opset}) in {ms:.0f} ms; "
               f"ONNX Runtime (CPUExecutionProvider) matches torch (relative error {report.rel_error:.1e}, max abs {report.max_abs_error:.1e})")


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
