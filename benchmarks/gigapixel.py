"""Gigapixel renders with bounded memory: `cips render --seed 7 --size N --force --resume` streamed to a
.png (or .tif) with the packaged default model, in a child process whose wall time and peak resident
memory (getrusage of the child: the kernel's own high-water mark) are recorded.
Writes benchmarks/results/gigapixel-<machine>-<size>.json (<width>x<height> with --height, -t<N> with
--threads N).

    python benchmarks/gigapixel.py --size 4096 --machine dev-2core
    python benchmarks/gigapixel.py --size 32768 --device cpu --threads 64 --time-limit 540 --work /root/giga
    python benchmarks/gigapixel.py --size 32768 --device cuda --devices 0,1 --work /root/giga

With --time-limit S the render is interrupted (SIGINT, as Ctrl-C) after S seconds and the partial file
kept in --work; running the same command again resumes it, and the JSON is written once the image is
complete, with each call's segment (wall time, peak memory) and their sums. Wall time includes the
command's start (Python, model load) in every segment. --mode memory renders the same size the
in-memory way (render_image, then write_output) for comparison: gigapixel-<machine>-<size>-memory.json.
The image is deleted at the end unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_names() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def run_child(command: list[str], time_limit: float | None) -> dict:
    """Run one command; SIGINT at the time limit. Returns wall time, exit code, output, peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    load = os.getloadavg()[0]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(timeout=time_limit)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGINT)  # the render keeps its finished blocks and exits
        out, err = child.communicate()
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB on Linux; max over waited children
    return {"wall_s": round(wall, 2), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "exit_code": child.returncode, "stdout": out.strip()[-500:],
            "stderr": err.strip()[-500:], "peak_rss_mb": round(peak_kb / 1024, 1) if peak_kb > before else None}


def render_command(args, out: Path) -> list[str]:
    command = [sys.executable, "-m", "cips_edge.cli", "render", "--seed", str(args.seed), "--width", str(args.size),
               "--height", str(args.height), "--force", "--out", str(out), "--resume", "--device", args.device, "--threads", str(args.threads)]
    if args.devices:
        command += ["--devices", args.devices]
    if args.chunk:
        command += ["--chunk", str(args.chunk)]
    return command


def memory_command(args, out: Path) -> list[str]:
    code = ("import sys; from cips_edge.runtime import CIPSModel, latent_for_seed, render_image, write_output\n"
            "from cips_edge.core.format import packaged_model\n"
            f"m = CIPSModel(packaged_model(), device={args.device!r}, threads={args.threads})\n"
            f"write_output({str(out)!r}, render_image(m, latent_for_seed({args.seed}, m.style_dim), {args.height}, "
            f"{args.size}))\nprint('on', m.provider)\n")
    return [sys.executable, "-c", code]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, required=True, help="width (and height) in pixels")
    p.add_argument("--height", type=int, default=None, help="height in pixels (default: --size)")
    p.add_argument("--format", choices=["png", "tif"], default="png")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (passed to cips render)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: the cores this process may use)")
    p.add_argument("--devices", default=None, help="GPUs, e.g. 0,1 (passed to cips render)")
    p.add_argument("--chunk", type=int, default=None, help="points per call (default: cips render's)")
    p.add_argument("--mode", choices=["stream", "memory"], default="stream")
    p.add_argument("--machine", default=platform.node(), help="name in the result file (default: host name)")
    p.add_argument("--work", type=Path, default=Path("/tmp/cips-gigapixel"), help="folder for the image and the "
                   "partial files (kept between calls for --time-limit)")
    p.add_argument("--time-limit", type=float, default=None, help="interrupt after this many seconds; run again "
                   "to resume")
    p.add_argument("--keep", action="store_true", help="keep the image")
    args = p.parse_args()
    args.height = args.height or args.size
    shape = str(args.size) if args.height == args.size else f"{args.size}x{args.height}"

    args.work.mkdir(parents=True, exist_ok=True)
    image = args.work / f"gigapixel-{shape}-seed{args.seed}.{args.format}"
    log = args.work / f"{image.name}.segments.json"
    segments = json.loads(log.read_text()) if log.exists() and args.mode == "stream" else []
    command = render_command(args, image) if args.mode == "stream" else memory_command(args, image)
    segment = run_child(command, args.time_limit)
    state = image.with_name(image.name + ".partial.json")
    if state.exists():
        done = json.loads(state.read_text())
        segment["blocks_done"] = done["blocks_done"]
    segments.append(segment)
    print(json.dumps(segment, indent=1))
    if segment["exit_code"] != 0 or not image.exists():
        if args.mode == "stream" and segment["exit_code"] == 130:
            log.write_text(json.dumps(segments, indent=1))
            print(f"interrupted; run the same command again to resume ({log})")
            return
        sys.exit(f"render failed (exit {segment['exit_code']})")

    provider = re.search(r"on (\w+ExecutionProvider)", segment["stdout"])
    wall = sum(s["wall_s"] for s in segments)
    pixels = args.size * args.height
    import onnxruntime

    result = {
        "what": f"cips render --seed {args.seed}, {args.size} x {args.height} to .{args.format}, packaged default model, "
                + ("streamed (runtime/stream.py)" if args.mode == "stream" else "in memory (render_image + write_output)"),
        "machine": args.machine, "cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)), "gpus": gpu_names(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": " ".join(command[2:]) if args.mode == "stream"
        else "python -c '<render_image + write_output>'",
        "onnxruntime": onnxruntime.__version__, "provider": provider.group(1) if provider else None,
        "threads": args.threads or len(os.sched_getaffinity(0)), "devices": args.devices,
        "width": args.size, "height": args.height, "pixels": pixels, "wall_s": round(wall, 1), "mpixel_per_s": round(pixels / wall / 1e6, 3),
        "peak_rss_mb": max(s["peak_rss_mb"] or 0 for s in segments), "output_bytes": image.stat().st_size,
        "segments": segments,
    }
    RESULTS.mkdir(exist_ok=True)
    name = (f"gigapixel-{args.machine}-{shape}" + (f"-t{args.threads}" if args.threads else "")
            + ("-memory" if args.mode == "memory" else ""))
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "segments"}, indent=1))
    log.unlink(missing_ok=True)
    if not args.keep:
        image.unlink()


if __name__ == "__main__":
    main()
