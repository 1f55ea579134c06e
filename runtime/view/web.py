"""`cips web`: a static site that renders a model in the visitor's browser.

One folder holds the viewer's page (static/, as `cips view` serves it), the model, its settings
(info.json) and the vendored onnxruntime-web; any static file server can serve it. The tiles are
rendered by the browser (static/browser-tiles.mjs): no server work, nothing fetched from elsewhere.
The model's own graph must render pixels, z [B, style_dim], coords [B, N, 2], truncation [B] ->
rgb [B, N, 3]: onnxruntime-web runs the file's graph and cannot read its metadata, so what the page
needs of the metadata goes to info.json.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

from cips_edge.core.errors import UserError
from cips_edge.core.format import INPUTS, OUTPUT, parse_metadata
from cips_edge.core.files import check_input_file, current_umask
from ..model import _onnxruntime
from .tiles import page_info

STATIC = Path(__file__).resolve().parent / "static"
ORT_WEB_VERSION = "1.31.1"  # static/vendor/onnxruntime-web/VENDORED.md says what is there
VENDOR = "static/vendor/onnxruntime-web/"
# the page's own files, as `cips view` serves them under static/
PAGE_FILES = ("viewer.js", "viewer.css", "browser-tiles.mjs", "tile-worker.mjs", "latent.mjs", "ziggurat.mjs",
              "pixels.mjs", "vendor/leaflet/leaflet.js", "vendor/leaflet/leaflet.css", "vendor/leaflet/LICENSE")
# onnxruntime-web's files per backend (the .wasm are kept gzipped in the package)
BACKEND_FILES = {
    "wasm": ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"),
}
MODEL = "model.onnx"
INFO = "info.json"
# Points per onnxruntime-web call: 32 rows of a tile, so that a tile that left the view stops within an
# eighth of its work (2,048 to 32,768 points per call rendered a tile equally fast in Chromium's wasm)
CHUNK = 8192


def browser_info(path: Path, webgpu: bool = True) -> dict:
    """The page's settings (info.json) for a model file; UserError unless its own graph renders pixels."""
    ort = _onnxruntime()
    check_input_file(path, "model", "an ONNX file")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for unreadable files
        raise UserError(f"cannot read {path} as an ONNX model ({str(e).strip().splitlines()[0][:200]})") from None
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    if sorted(inputs) != sorted(INPUTS) or outputs != (OUTPUT,):
        raise UserError(f"{path} cannot render in a browser: its graph maps {', '.join(inputs)} to "
                        f"{', '.join(outputs[:3])}{'...' if len(outputs) > 3 else ''}, not {', '.join(INPUTS)} to "
                        f"{OUTPUT} (export the model again with `cips export`)")
    meta = parse_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    return {
        **page_info(path, meta.config.size), "renderer": "browser", "model_url": MODEL,
        "model_bytes": path.stat().st_size, "style_dim": meta.style_dim, "panorama": meta.config.panorama,
        "backends": ["wasm", "webgpu"] if webgpu else ["wasm"], "vendor": VENDOR,
        "onnxruntime_web": ORT_WEB_VERSION, "chunk": CHUNK,
    }


def _is_site(folder: Path) -> bool:
    try:
        return json.loads((folder / INFO).read_text()).get("renderer") == "browser"
    except (OSError, ValueError, AttributeError):
        return False


def check_destination(out: Path) -> None:
    """UserError unless `out` can become the site: a new or empty folder, or an earlier `cips web` site."""
    if out.exists() and not out.is_dir():
        raise UserError(f"cannot write the site to {out}: it is a file")
    if out.is_dir() and any(out.iterdir()) and not _is_site(out):
        raise UserError(f"{out} is a folder with other files in it; give a new or empty folder (or an earlier "
                        "`cips web` site, which is replaced)")
    if not out.parent.is_dir():
        problem = "is a file" if out.parent.exists() else "does not exist"
        raise UserError(f"cannot write the site to {out}: {out.parent} {problem}")


def _index_html(info: dict) -> str:
    """static/index.html, told to read info.json and titled for the site."""
    html = (STATIC / "index.html").read_text()
    changes = {'<body data-tiles="loading">': f'<body data-tiles="loading" data-info="{INFO}">',
               "<title>cips view</title>": f"<title>cips web: {info['model']}</title>",
               '<div class="title">cips view ': '<div class="title">cips web '}
    for old, new in changes.items():
        assert html.count(old) == 1, old
        html = html.replace(old, new)
    return html


def _write_files(folder: Path, model: Path, info: dict) -> None:
    (folder / "index.html").write_text(_index_html(info))
    (folder / INFO).write_text(json.dumps(info, indent=1) + "\n")
    shutil.copyfile(model, folder / MODEL)
    for name in PAGE_FILES:
        (folder / "static" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STATIC / name, folder / "static" / name)
    vendor = folder / VENDOR
    vendor.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(STATIC / "vendor/onnxruntime-web/LICENSE", vendor / "LICENSE")
    for backend in info["backends"]:
        for name in BACKEND_FILES[backend]:
            source = STATIC / "vendor/onnxruntime-web" / name
            if name.endswith(".wasm"):
                with gzip.open(source.with_name(name + ".gz")) as f, open(vendor / name, "wb") as out:
                    shutil.copyfileobj(f, out)
            else:
                shutil.copyfile(source, vendor / name)


def write_site(out: str | os.PathLike, model: str | os.PathLike, webgpu: bool = True) -> dict[str, int]:
    """The site of `model` in folder `out`, written whole or not at all: {relative path: bytes}."""
    out, model = Path(out), Path(model)
    info = browser_info(model, webgpu)
    check_destination(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise UserError(f"cannot write the site to {out}: {e.strerror or e}") from None
    old = None
    try:
        _write_files(tmp, model, info)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; a web server may run as another user
        if out.exists():  # empty, or an earlier site: moved aside, then removed once the new one is in place
            old = out.with_name(tmp.name + ".old")
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old, out)
        raise UserError(f"cannot write the site to {out}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
