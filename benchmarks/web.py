"""Tiles/s of the `cips web` page (tiles rendered in headless Chromium by onnxruntime-web) against `cips
view`'s server-side CPU tiles, same model, same tiles. Writes benchmarks/results/web-<name>.json.

    python benchmarks/web.py                              # 16 zoom-2 tiles, packaged model (or the format-1 file)
    python benchmarks/web.py --zoom 3 --tiles 32 --name cpu2

Server: `cips view --device cpu` in its own process, the tiles fetched by 4 concurrent clients
(benchmarks/view_load.py's cold pass). Browser: the site of `cips web` served by Python's http.server;
once the page has drawn its own view, the same tiles are handed to the page's worker pool at once
(window.cipsView.pool, as the map would) and timed until the last one is back. Pool layouts: single-
threaded wasm sessions, 1 and 2 workers (what a plain static server allows), and 1 worker with 2 wasm
threads (the server sends the COOP/COEP headers that cross-origin isolation needs). Every browser tile
is compared with the server's PNG of it (the largest difference per channel, in 8-bit steps).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import tempfile
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tests/browser.py: the headless Chromium and static server of the tests

import browser  # noqa: E402
import view_load  # noqa: E402  (benchmarks/ is this script's folder)
from PIL import Image  # noqa: E402

from cips_edge.runtime.view import tiles as t  # noqa: E402
from cips_edge.runtime.view.web import browser_info, write_site  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FORMAT_1 = REPO / "tests" / "data" / "format1-emoji-1052kimg.onnx"
ISOLATED = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
LAYOUTS = [  # (workers, wasm threads per worker, cross-origin isolated)
    (1, 1, False), (2, 1, False), (1, 2, True),
]
RUN_TILES = """
const [regions, done] = [arguments[0], arguments[arguments.length - 1]];
const pool = window.cipsView.pool, start = performance.now();
const b64 = (bytes) => { let s = ""; for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192)); return btoa(s); };
Promise.all(regions.map((region) => pool.render({ seed: "0", psi: 1, region, width: 256, height: 256, rows: [0, 256] }).promise))
  .then((out) => done({ seconds: (performance.now() - start) / 1000, ms: out.map((r) => r.ms), rgba: out.map((r) => b64(r.rgba)),
                        layout: pool.description, isolated: crossOriginIsolated }))
  .catch((e) => done({ error: String(e) }));
"""


def default_model() -> Path:
    import cips_edge

    packaged = Path(cips_edge.__file__).resolve().parent / "models" / "default.onnx"
    try:
        browser_info(packaged)
        return packaged
    except Exception:  # a file whose own graph does not render pixels
        return FORMAT_1


def server_tiles(model: Path, keys: list[tuple[int, int, int]], clients: int) -> tuple[dict, list[np.ndarray]]:
    """`cips view --device cpu`: its cold pass over the tiles, then each tile's PNG (from its cache)."""
    args = argparse.Namespace(device="cpu", model=str(model))
    server, host, port = view_load.start_server(args)
    paths = [f"/tiles/0/{z}/{x}/{y}.png?psi=1" for z, x, y in keys]
    try:
        info = view_load.get_json(host, port, "/api/info")
        cold = view_load.run_pass(host, port, [paths[k::clients] for k in range(clients)])
        pngs = [np.asarray(Image.open(urllib.request.urlopen(f"http://{host}:{port}{p}", timeout=60)).convert("RGB"))
                for p in paths]
    finally:
        server.terminate()
        server.wait(60)
    return {"provider": info["provider"], "clients": clients, **cold}, pngs


def browser_tiles(site: Path, keys, workers: int, threads: int, isolated: bool, reference) -> dict:
    regions = [list(t.tile_region(*key)) for key in keys]
    with browser.static_server(site, ISOLATED if isolated else None) as (url, _):
        driver = browser.chromium(256, 256)
        try:
            driver.set_script_timeout(3600)
            driver.get(url + f"#seed=0&x=0&y=0&z=0&backend=wasm&workers={workers}&threads={threads}")
            browser.wait_for_tiles(driver, timeout=600)  # the page's own view first, so that it is idle
            result = driver.execute_async_script(RUN_TILES, regions)
            version = driver.capabilities.get("browserVersion")
        finally:
            driver.quit()
    if "error" in result:
        sys.exit(f"the page failed: {result['error']}")
    diffs = [int(np.abs(np.frombuffer(base64.b64decode(b), np.uint8).reshape(256, 256, 4)[..., :3].astype(int)
                        - ref.astype(int)).max()) for b, ref in zip(result["rgba"], reference)]
    ms = np.array(result["ms"])
    return {"layout": result["layout"], "workers": workers, "threads": threads,
            "cross_origin_isolated": result["isolated"], "tiles": len(keys), "seconds": round(result["seconds"], 2),
            "tiles_per_s": round(len(keys) / result["seconds"], 3), "tile_ms_p50": round(float(np.median(ms)), 1),
            "tile_ms_max": round(float(ms.max()), 1), "max_diff_vs_server_8bit": max(diffs), "chromium": version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoom", type=int, default=2, help="zoom level of the tiles (default 2)")
    parser.add_argument("--tiles", type=int, default=16, help="tiles, row by row over the frame (default 16)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of the server (default 4)")
    parser.add_argument("--model", help="ONNX file whose own graph renders pixels (default: the packaged model "
                                        "if it does, else tests/data/format1-emoji-1052kimg.onnx)")
    parser.add_argument("--name", default="cpu2", help="results go to web-NAME.json (default cpu2)")
    args = parser.parse_args()
    if browser.missing():
        sys.exit(f"no headless browser: {browser.missing()}")
    side = 2 ** args.zoom
    if args.tiles > side * side:
        parser.error(f"zoom {args.zoom} has {side * side} tiles in the frame, fewer than {args.tiles}")
    model = Path(args.model) if args.model else default_model()
    keys = [(args.zoom, i % side, i // side) for i in range(args.tiles)]

    load_before = os.getloadavg()
    server, reference = server_tiles(model, keys, args.clients)
    print(f"cips view (server, CPU): {server['tiles_per_s']} tiles/s")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        write_site(site, model, webgpu=False)
        for workers, threads, isolated in LAYOUTS:
            run = browser_tiles(site, keys, workers, threads, isolated, reference)
            print(f"cips web ({run['layout']}, isolated {isolated}): {run['tiles_per_s']} tiles/s, "
                  f"max diff {run['max_diff_vs_server_8bit']}/255")
            runs.append(run)
    result = {
        "benchmark": f"{args.tiles} zoom-{args.zoom} 256x256 tiles of the frame (seed 0, psi 1): `cips web`'s page in "
                     "headless Chromium (onnxruntime-web, wasm) against `cips view --device cpu` (4 clients, cold)",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "model": model.name, "model_id": t.model_id(model), "onnxruntime_web": browser_info(model)["onnxruntime_web"],
        "server": server, "browser": runs,
        "browser_vs_server": {r["layout"]: round(r["tiles_per_s"] / server["tiles_per_s"], 3) for r in runs},
    }
    out = RESULTS / f"web-{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
