"""The model in a browser: `cips view` (a local server rendering tiles live) and `cips web` (a static
site whose tiles the visitor's browser renders)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import model_path, open_model, user_errors
from .options import DeviceOpt, ModelOpt, PrecisionOpt, ThreadsOpt


@user_errors()
def view(
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on; anything but a loopback address lets other "
                                           "machines in (the viewer has no login)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one")] = 8000,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = None,
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
    from cips_edge.core.errors import UserError
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
        m = open_model(model, device, threads, precision)
        what = f"model {m.path.name} " + ("rendered in the browser" if browser else f"on {m.provider}")
    sock = bind(host, port)
    hosts, any_address = served_hosts(sock, host)
    app = create_app(m, cache_bytes=cache_mb << 20, hosts=hosts, any_address=any_address, browser=browser)
    typer.echo(f"cips view: {url_of(sock)} ({what}; Ctrl-C stops)")
    if not is_loopback(sock):
        typer.echo(f"warning: listening on {host}: anyone who can reach this machine can use the viewer", err=True)
    serve(app, sock)


@user_errors()
def web(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="folder for the site: new, empty, or an earlier "
                                                                    "`cips web` site (replaced)")],
    model: ModelOpt = None,
    webgpu: Annotated[bool, typer.Option(help="include onnxruntime-web's WebGPU build (the page uses the GPU where "
                                              "the browser offers WebGPU; --no-webgpu makes the site 29 MB "
                                              "smaller)")] = True,
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

    files = write_site(out_dir, model_path(model), webgpu=webgpu)
    total = sum(files.values())
    runtime = sum(size for name, size in files.items() if "onnxruntime-web" in name)
    typer.echo(f"wrote {out_dir}: {len(files)} files, {total / 1e6:.1f} MB (model {files['model.onnx'] / 1e6:.1f} MB, "
               f"onnxruntime-web {runtime / 1e6:.1f} MB); serve it with: python -m http.server -d {out_dir} 8000")
