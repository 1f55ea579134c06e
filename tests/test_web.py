"""`cips web`: the browser's seeds, pixel grid and 8-bit rule equal the Python side's bit for bit (the
page's JavaScript run in Node), and the command writes a whole site or nothing. The page in a real
browser: tests/test_web_browser.py."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ziggurat_tables
from cips_edge.runtime.coords import grid_chunks, region_grid
from cips_edge.runtime.image import to_uint8
from cips_edge.runtime.view import tiles
from cips_edge.runtime.view.web import BACKEND_FILES, STATIC
from cli_helpers import cips, ok

DATA = Path(__file__).resolve().parent / "data"
FORMAT_1 = DATA / "format1-emoji-1052kimg.onnx"  # its graph is z, coords, truncation -> rgb
FORMAT_2 = DATA / "format2-gridsample-tiny.onnx"  # its graph is the style graph
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (it runs the page's JavaScript here)")


def node(tmp_path: Path, body: str) -> bytes:
    """Run JavaScript in Node with the page's modules imported as `latent`, `pixels` and `zig`; its stdout."""
    script = tmp_path / "run.mjs"
    script.write_text(
        f'import * as latent from "{(STATIC / "latent.mjs").as_uri()}";\n'
        f'import * as pixels from "{(STATIC / "pixels.mjs").as_uri()}";\n'
        f'import * as zig from "{(STATIC / "ziggurat.mjs").as_uri()}";\n'
        'const write = (typed) => process.stdout.write(Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength));\n'
        + body)
    return subprocess.run([NODE, str(script)], capture_output=True, check=True, timeout=300).stdout


def numpy_latents(seeds, n: int) -> np.ndarray:
    return np.stack([np.random.default_rng(s).standard_normal(n).astype(np.float32) for s in seeds])


@needs_node
def test_js_latents_of_seeds_0_to_999_are_numpys_bit_for_bit(tmp_path):
    n = 512
    out = node(tmp_path, f"for (let s = 0; s < 1000; s++) write(latent.latentForSeed(s, {n}));")
    js = np.frombuffer(out, dtype=np.float32).reshape(1000, n)
    py = numpy_latents(range(1000), n)
    assert np.array_equal(js.view(np.uint32), py.view(np.uint32))
    assert (np.abs(py) > ziggurat_tables.R).sum() > 20  # the tail's exponential sampler ran too


@needs_node
def test_js_latents_of_large_seeds_are_numpys(tmp_path):
    seeds = [2 ** 32 - 1, 2 ** 32, 2 ** 53 + 1, tiles.MAX_SEED, 2 ** 128 + 5]  # 1 to 5 words of entropy
    out = node(tmp_path, "".join(f"write(latent.latentForSeed({s}n, 64));" for s in seeds))
    js = np.frombuffer(out, dtype=np.float32).reshape(len(seeds), 64)
    assert np.array_equal(js.view(np.uint32), numpy_latents(seeds, 64).view(np.uint32))


@needs_node
def test_js_ziggurat_tables_are_the_ones_compiled_into_numpy(tmp_path):
    tables = ziggurat_tables.numpy_tables()
    if tables is None:
        pytest.skip("no ziggurat tables found in this numpy's compiled modules")
    out = node(tmp_path, "write(Float64Array.from(zig.KI)); write(zig.WI); write(zig.FI);")
    ki, wi, fi = np.frombuffer(out, dtype=np.float64).reshape(3, 256)
    assert np.array_equal(ki, tables["ki"].astype(np.float64))  # < 2^52: exact as float64
    assert np.array_equal(wi.view(np.uint64), tables["wi"].view(np.uint64))
    assert np.array_equal(fi.view(np.uint64), tables["fi"].view(np.uint64))


@needs_node
def test_js_tile_points_are_the_points_cips_render_feeds_the_model(tmp_path):
    keys = [(0, 0, 0), (1, -1, 2), (-8, 0, -1), (5, 31, 0), (17, 65536, 65535), (24, 2 ** 23, 2 ** 23 - 1)]
    body = "".join(
        f"{{ const r = pixels.tileRegion({z}, {x}, {y}, 256); write(Float64Array.from(r));"
        f" write(pixels.gridPoints(pixels.linspace32(r[0], r[2], 256), pixels.linspace32(r[1], r[3], 256), 0, 65536)); }}"
        for z, x, y in keys)
    out = memoryview(node(tmp_path, body))
    step = 4 * 8 + 65536 * 2 * 4
    for k, (z, x, y) in enumerate(keys):
        region = struct.unpack("<4d", out[k * step:k * step + 32])
        assert region == tiles.tile_region(z, x, y), (z, x, y)
        points = np.frombuffer(out[k * step + 32:(k + 1) * step], dtype=np.float32).reshape(-1, 2)
        assert np.array_equal(points, region_grid(*region, 256, 256)), (z, x, y)


@needs_node
def test_js_rows_of_any_grid_are_grid_chunks_rows(tmp_path):
    """Saved views come in bands of rows, each from the whole grid's linspace: (7 x 5 from pixel 9,
    1 x 1, a mirrored region); the same float32 points as grid_chunks."""
    cases = [((-0.3, 0.25, 1.7, 1.1), 5, 7, 9, 20), ((0.5, 0.5, 0.5, 0.5), 1, 1, 0, 1), ((1.0, 1.0, -1.0, -3.0), 4, 3, 0, 12)]
    body = "".join(f"write(pixels.gridPoints(pixels.linspace32({r[0]}, {r[2]}, {w}), "
                   f"pixels.linspace32({r[1]}, {r[3]}, {h}), {first}, {count}));" for r, h, w, first, count in cases)
    out = np.frombuffer(node(tmp_path, body), dtype=np.float32)
    offset = 0
    for region, h, w, first, count in cases:
        expected = np.concatenate([p for _, p in grid_chunks(h, w, 1000, region)])[first:first + count]
        assert np.array_equal(out[offset:offset + 2 * count].reshape(-1, 2), expected), region
        offset += 2 * count


@needs_node
def test_js_8_bit_rule_is_to_uint8(tmp_path):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 0.8, 30_000), [0.0, -1.0, 1.0, -1.2, 1.3, 1e30, -1e30],
                             np.linspace(-1.01, 1.01, 3001)]).astype(np.float32)
    values = values[: len(values) // 3 * 3]
    (tmp_path / "values.bin").write_bytes(values.tobytes())
    out = node(tmp_path, f"""
        import("node:fs").then(({{ readFileSync }}) => {{
          const b = readFileSync("{(tmp_path / 'values.bin').as_posix()}");
          const rgb = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
          const rgba = new Uint8ClampedArray(4 * rgb.length / 3);
          pixels.toRGBA(rgb, rgba, 0);
          write(rgba);
        }});""")
    rgba = np.frombuffer(out, dtype=np.uint8).reshape(-1, 4)
    assert np.array_equal(rgba[:, :3], to_uint8(values.reshape(-1, 3))) and (rgba[:, 3] == 255).all()


# -- the command ----------------------------------------------------------------------------------------
def vendored_sha256() -> dict[str, str]:
    text = (STATIC / "vendor/onnxruntime-web/VENDORED.md").read_text()
    return dict(re.findall(r"^\| `([^`]+)`.*\| ([0-9a-f]{64}) \|$", text, flags=re.M))


def test_cips_web_writes_a_site_with_the_model_and_onnxruntime_web(tmp_path, tiny_onnx):
    out = ok(cips("web", tmp_path / "site", "--model", tiny_onnx))
    site = tmp_path / "site"
    assert f"wrote {site}: " in out and "python -m http.server -d" in out
    info = json.loads((site / "info.json").read_text())
    assert info["renderer"] == "browser" and info["style_dim"] == 16 and info["train_size"] == 16  # the tiny preset
    assert info["model"] == tiny_onnx.name and info["backends"] == ["wasm", "webgpu"]
    assert (site / info["model_url"]).read_bytes() == tiny_onnx.read_bytes()
    assert 'data-info="info.json"' in (site / "index.html").read_text()
    for name in ("viewer.js", "browser-tiles.mjs", "tile-worker.mjs", "latent.mjs", "vendor/leaflet/leaflet.js"):
        assert (site / "static" / name).read_bytes() == (STATIC / name).read_bytes(), name
    vendor = site / info["vendor"]
    hashes = vendored_sha256()
    shipped = sorted(p.name for p in vendor.iterdir())
    assert shipped == sorted(["LICENSE", *BACKEND_FILES["wasm"], *BACKEND_FILES["webgpu"]])
    for name in BACKEND_FILES["wasm"] + BACKEND_FILES["webgpu"]:  # the npm package's files, unchanged
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == hashes[name], name


def test_no_webgpu_ships_the_wasm_build_only_and_an_earlier_site_is_replaced(tmp_path, tiny_onnx):
    site = tmp_path / "site"
    ok(cips("web", site, "--model", tiny_onnx))
    ok(cips("web", site, "--model", FORMAT_1, "--no-webgpu"))  # format-1 files render in a browser too
    info = json.loads((site / "info.json").read_text())
    assert info["backends"] == ["wasm"] and info["style_dim"] == 256
    assert sorted(p.name for p in (site / info["vendor"]).iterdir()) == sorted(["LICENSE", *BACKEND_FILES["wasm"]])
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # nothing left beside it


def test_a_model_whose_graph_does_not_render_pixels_is_refused(tmp_path):
    result = cips("web", tmp_path / "site", "--model", FORMAT_2)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "cannot render in a browser" in result.stderr and "not z, coords, truncation to rgb" in result.stderr
    assert not any(tmp_path.iterdir())


def test_a_folder_holding_other_files_is_refused_and_kept(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = cips("web", tmp_path, "--model", FORMAT_1)
    assert result.exit_code == 1 and "other files in it" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_missing_model_and_missing_parent_are_one_line_errors(tmp_path):
    result = cips("web", tmp_path / "site", "--model", tmp_path / "nope.onnx")
    assert result.exit_code == 1 and result.stderr.startswith("error: model not found")
    result = cips("web", tmp_path / "no" / "site", "--model", FORMAT_1)
    assert result.exit_code == 1 and "does not exist" in result.stderr and result.stderr.count("\n") == 1
    (tmp_path / "notes.png").write_bytes(b"a file")
    result = cips("web", tmp_path / "notes.png" / "site", "--model", FORMAT_1)
    assert result.exit_code == 1 and result.stderr.endswith(f"{tmp_path / 'notes.png'} is a file\n"), result.stderr



def test_cips_view_browser_hands_the_page_the_model_and_the_runtime(tiny_onnx):
    pytest.importorskip("fastapi", reason="the viewer's tests need the [view] extra (fastapi, uvicorn)")
    from fastapi.testclient import TestClient

    from cips_edge.runtime import CIPSModel
    from cips_edge.core.errors import UserError
    from cips_edge.runtime.view.app import create_app

    hashes = vendored_sha256()
    with TestClient(create_app(CIPSModel(tiny_onnx, device="cpu"), browser=True), base_url="http://127.0.0.1") as client:
        info = client.get("/api/info").json()
        assert info["renderer"] == "browser" and info["style_dim"] == 16
        assert client.get("/" + info["model_url"]).content == tiny_onnx.read_bytes()
        for backend in ("wasm", "webgpu"):
            loader, wasm = BACKEND_FILES[backend][1:]
            r = client.get(f"/{info['vendor']}{wasm}")  # sent gzipped, unpacked by the client
            assert r.headers["content-encoding"] == "gzip" and r.headers["content-type"] == "application/wasm"
            assert hashlib.sha256(r.content).hexdigest() == hashes[wasm]
            assert client.get(f"/{info['vendor']}{loader}").content == (STATIC / "vendor/onnxruntime-web" / loader).read_bytes()
        assert client.get(f"/{info['vendor']}other.wasm").status_code == 404
    with pytest.raises(UserError, match="cannot render in a browser"):
        create_app(CIPSModel(FORMAT_2, device="cpu"), browser=True)
