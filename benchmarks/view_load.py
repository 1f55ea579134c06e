"""Load check of `cips view`: N concurrent clients each fetch M distinct tiles from a server on
localhost, twice: cold (every tile rendered) and warm (every tile from the cache). Writes tiles/s,
latency percentiles and the error count to benchmarks/results/view-load-<device>.json.

    python benchmarks/view_load.py                       # 4 clients x 200 tiles, packaged model, CPU
    python benchmarks/view_load.py --device cuda         # on a GPU machine (onnxruntime-gpu)

The server is `cips view --port 0` in its own process (so the clients do not share its interpreter);
the tiles are zoom-Z tiles of the trained frame, seed 0, psi 1, spread over the clients in turn. Each
client is one keep-alive HTTP connection with one request at a time, as a browser connection is.
Traffic goes to 127.0.0.1 only; every request has a timeout, so the run always ends.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TIMEOUT_S = 300  # per request: a tile waits at most for every other client's tile to render


def start_server(args) -> tuple[subprocess.Popen, str, int]:
    command = [sys.executable, "-m", "cips_edge.cli", "view", "--host", "127.0.0.1", "--port", "0",
               "--device", args.device]
    if args.model:
        command += ["--model", str(Path(args.model).resolve())]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd="/")
    line = server.stdout.readline()  # "cips view: http://127.0.0.1:PORT/ (model ... on PROVIDER; ...)"
    if not line.startswith("cips view: "):
        server.kill()
        sys.exit(f"the server did not start: {line!r}")
    host, port = line.split()[2][len("http://"):].rstrip("/").split(":")
    return server, host, int(port)


def get_json(host: str, port: int, path: str) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def fetch_all(host: str, port: int, paths: list[str]) -> tuple[list[float], list[str]]:
    """GET each path in turn on one keep-alive connection: (latencies in s, error descriptions)."""
    latencies, errors = [], []
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    for path in paths:
        start = time.perf_counter()
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200 or not body.startswith(b"\x89PNG"):
                errors.append(f"{path}: HTTP {r.status}")
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"{path}: {type(e).__name__} {e}")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
        latencies.append(time.perf_counter() - start)
    conn.close()
    return latencies, errors


def run_pass(host: str, port: int, per_client: list[list[str]]) -> dict:
    results: list = [None] * len(per_client)

    def client(i: int) -> None:
        results[i] = fetch_all(host, port, per_client[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(per_client))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    latencies = np.array([x for lat, _ in results for x in lat]) * 1000
    errors = [e for _, errs in results for e in errs]
    return {"tiles": int(latencies.size), "seconds": round(seconds, 2),
            "tiles_per_s": round(latencies.size / seconds, 2),
            **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 1) for q in (50, 95, 99)},
            "max_ms": round(float(latencies.max()), 1), "errors": len(errors), "first_errors": errors[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--tiles", type=int, default=200, help="distinct tiles per client (default 200)")
    parser.add_argument("--zoom", type=int, default=5, help="zoom level of the tiles; the frame holds 4^zoom (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--model", help="ONNX file (default: the packaged model)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/view-load-<device>.json)")
    args = parser.parse_args()
    side = 2 ** args.zoom
    total = args.clients * args.tiles
    if total > side * side:
        parser.error(f"zoom {args.zoom} has {side * side} tiles in the frame, fewer than {total}")
    # row by row over the frame, dealt to the clients in turn: each client sweeps its own columns
    paths = [f"/tiles/0/{args.zoom}/{i % side}/{i // side}.png?psi=1" for i in range(total)]
    per_client = [paths[k::args.clients] for k in range(args.clients)]

    load_before = os.getloadavg()
    server, host, port = start_server(args)
    try:
        info = get_json(host, port, "/api/info")
        cold = run_pass(host, port, per_client)
        warm = run_pass(host, port, per_client)
        stats = get_json(host, port, "/api/stats")
    finally:
        server.terminate()
        server.wait(60)

    result = {
        "benchmark": f"cips view: {args.clients} concurrent clients x {args.tiles} distinct 256x256 tiles "
                     f"(zoom {args.zoom}, seed 0, psi 1) on localhost, cold (rendered) then warm (cached)",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "model": info["model"], "model_id": info["model_id"], "provider": info["provider"],
        "clients": args.clients, "tiles_per_client": args.tiles, "zoom": args.zoom,
        "cold": cold, "warm": warm, "server_stats": stats,
    }
    out = Path(args.out) if args.out else RESULTS / f"view-load-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("cold", "warm"):
        r = result[name]
        print(f"{name}: {r['tiles']} tiles in {r['seconds']} s, {r['tiles_per_s']} tiles/s, p50 {r['p50_ms']} ms, "
              f"p95 {r['p95_ms']} ms, errors {r['errors']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
