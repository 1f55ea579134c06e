"""OME-Zarr pyramid renders on a local Dask cluster, by number of workers: `cips render --out x.zarr`'s
engine (runtime/cluster.py) with the packaged default model, timed from the first task to the rename
of the finished pyramid (cluster start and model loading are recorded apart), with each worker
process's peak resident memory (getrusage in the worker: the kernel's high-water mark).
Writes benchmarks/results/cluster-<machine>-<device>-<size>.json.

    python benchmarks/cluster.py --machine dev-2core --size 4096 --workers 1,2
    python benchmarks/cluster.py --machine h200x8 --device cuda --size 32768 --workers 1,2,4,8

On CPU each worker's model gets (cores / workers) threads unless --threads says otherwise; on CUDA
worker k renders on GPU k. The pyramid is written under --work and deleted after each run. With
--repeat N the counts run N times in turn and the summary keeps each count's best throughput;
--baseline adds a plain streamed PNG render of the same image (one process, no Dask) to each round.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gigapixel import cpu_name, gpu_names  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def run(args, workers: int) -> dict:
    from cips_edge.core.format import packaged_model
    from cips_edge.runtime import FULL_FRAME, latent_for_seed
    from cips_edge.runtime import cluster as cl
    from cips_edge.runtime import pyramid as pz

    model = Path(args.model) if args.model else packaged_model()
    plan = cl.local_plan(workers, args.device, args.threads)
    spec = plan.adapt(cl.ModelSpec.of(model, args.model is None, args.device, args.precision, args.threads))
    out = Path(args.work) / f"bench-{workers}.zarr"
    for stale in (out, pz.partial_path(out)):
        shutil.rmtree(stale, ignore_errors=True)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with cl.connect(None, plan) as client:
        spec, providers = cl.agree(client, spec)  # every worker has its model open from here on
        ready = time.perf_counter()
        z = latent_for_seed(args.seed, _style_dim(model))
        report = cl.render_pyramid(client, spec, out, z, args.size, args.size, FULL_FRAME, zarr_chunk=args.zarr_chunk)
        wall = time.perf_counter() - ready
        rss = sorted(client.run(peak_rss_mb).values())
    stored = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    levels = pz.plan_levels(args.size, args.size, args.zarr_chunk)
    shutil.rmtree(out)
    mpix = args.size * args.size / 1e6
    return {
        "workers": workers, "model_threads_per_worker": plan.model_threads, "task_threads_per_worker": plan.task_threads,
        "providers": providers, "precision": spec.precision,
        "cluster_start_and_model_load_s": round(ready - start, 2), "render_s": round(wall, 2),
        "level0_mpixel_per_s": round(mpix / wall, 3), "chunks": report.done, "levels": len(levels),
        "stored_mb": round(stored / 1e6, 1), "peak_rss_mb_per_worker": [round(r, 1) for r in rss],
        "load_average_before": round(load, 2),
    }


def baseline(args) -> dict:
    """The same image as one streamed PNG by a plain `cips render` (one process, no Dask), for scale."""
    import subprocess

    out = Path(args.work) / "baseline.png"
    command = [sys.executable, "-m", "cips_edge.cli", "render", "--seed", str(args.seed), "--size", str(args.size),
               "--out", str(out), "--device", args.device, "--force"]
    command += ["--model", args.model] if args.model else []
    command += ["--precision", args.precision] if args.precision else []
    load = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    assert child.returncode == 0, command
    out.unlink()
    return {"what": "cips render --out N.png (streamed, one process, start included)", "wall_s": round(wall, 2),
            "mpixel_per_s": round(args.size * args.size / 1e6 / wall, 3),
            "peak_rss_mb": round(usage.ru_maxrss * 1024 / 1e6, 1), "load_average_before": round(load, 2)}


def _style_dim(model: Path) -> int:
    from cips_edge.runtime import CIPSModel

    return CIPSModel(model, device="cpu", threads=1).style_dim


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--machine", required=True, help="name of this machine in the JSON file name")
    p.add_argument("--size", type=int, default=4096, help="width and height of the image")
    p.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (as cips render --device)")
    p.add_argument("--precision", default=None, help="fp32, fp16 or int8 (default: the model's for the device)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per worker's model (0: cores / workers)")
    p.add_argument("--zarr-chunk", type=int, default=1024, help="pixels per chunk side (one task)")
    p.add_argument("--model", default=None, help="ONNX file (default: the packaged model)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--baseline", action="store_true", help="also time a plain streamed `cips render --out N.png` "
                                                               "of the same image in each round")
    p.add_argument("--repeat", type=int, default=1, help="rounds over the worker counts; the summary keeps each "
                                                         "count's best (a shared machine's other load only slows)")
    p.add_argument("--work", default=None, help="folder for the pyramid (default: a temporary folder)")
    args = p.parse_args()
    own_work = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="cips-cluster-bench-")
    counts = [int(n) for n in args.workers.split(",")]
    runs, plain = [], []
    for _ in range(args.repeat):  # alternating: load drifts hit all alike
        runs += [run(args, n) for n in counts]
        plain += [baseline(args)] if args.baseline else []
    best = {n: max(r["level0_mpixel_per_s"] for r in runs if r["workers"] == n) for n in counts}
    summary = [{"workers": n, "best_level0_mpixel_per_s": best[n], "speedup_vs_first": round(best[n] / best[counts[0]], 2),
                "peak_rss_mb_per_worker_max": max(max(r["peak_rss_mb_per_worker"]) for r in runs if r["workers"] == n)}
               for n in counts]
    result = {
        "benchmark": "cluster", "machine": args.machine, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "cores": os.cpu_count(), "gpus": gpu_names(), "device": args.device,
        "model": args.model or "packaged default.onnx", "size": args.size, "zarr_chunk": args.zarr_chunk,
        "python": platform.python_version(),
        "versions": {name: metadata.version(name) for name in ("dask", "distributed", "zarr", "numpy",
                                                               "onnxruntime" if args.device == "cpu" else "onnxruntime-gpu")
                     if _installed(name)},
        "summary": summary, "runs": runs, "single_process": plain,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"cluster-{args.machine}-{args.device}-{args.size}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    if own_work:
        shutil.rmtree(args.work, ignore_errors=True)


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
