"""Does `cips train`'s compiled path train as well as the plain one (issue 23)? Runs of the emoji recipe from
the same seed on the same images, the compiled default against `--plain` (fp32, no TF32, NCHW, for-loop
Adam: the original code's settings), plus the plain path from a second seed for the noise between two
equally good runs; SWD of the EMA generator every --metrics-kimg, as `cips train --metrics swd` logs it.
The runs go side by side on one GPU (their images/s are then shared, not comparable); each is a
`python -m cips_edge.train` process in its own folder under --work.

    python recipes/emoji/make_dataset.py emoji-64 --size 64 --zip      # the data set
    bash benchmarks/on_gpu.sh benchmarks/train_quality.py emoji-64.zip --kimg 600 --work /root/tq \\
        --time-limit 560 --out "$OUT/train-quality-compiled-vs-plain.json"
    python benchmarks/train_quality.py --collect /root/tq --out ...   # a later call: what the runs logged

Stopped by --time-limit, the runs get SIGTERM (each writes a checkpoint and exits) and the report keeps
what they logged; `--resume` continues them in a later call. The report: each run's SWD per kimg, at
every kimg all runs reached |compiled - plain| (same seed) beside |plain - plain, other seed| (the
noise), and the command of each run.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# name: (extra options, seed)
RUNS = {"compiled-seed0": ([], 0), "plain-seed0": (["--plain"], 0), "plain-seed1": (["--plain"], 1)}
RECIPE = ["--preset", "edge-64", "--d-channel-max", "256", "--xflip", "--metrics", "swd", "--checkpoint-kimg", "100",
          "--keep-checkpoints", "1", "--sample-kimg", "1000", "--log-every", "200"]


def command(args, data: Path, work: Path, name: str, resume: bool) -> list[str]:
    extra, seed = RUNS[name]
    return [sys.executable, "-m", "cips_edge.train", str(data), "--out", str(work / name), *RECIPE, *extra,
            "--batch", str(args.batch), "--seed", str(seed), "--kimg", f"{args.kimg:g}",
            "--metrics-kimg", f"{args.metrics_kimg:g}", "--metrics-samples", str(args.metrics_samples),
            "--device", args.device, *(["--resume"] if resume else [])]


def run_all(args) -> dict:
    """Start every run, wait for them or for the time limit (then SIGTERM), return their exit codes."""
    args.work.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in RUNS:
        cmd = command(args, args.data, args.work, name, args.resume and (args.work / name).exists())
        log = open(args.work / f"{name}.log", "a")
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        print(f"started {name}: {' '.join(cmd[1:])}", flush=True)
    deadline = time.monotonic() + args.time_limit if args.time_limit else None
    while any(p.poll() is None for p in procs.values()):
        if deadline is not None and time.monotonic() > deadline:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
            break
        time.sleep(2)
    return {name: p.returncode for name, p in procs.items()}


def curves(work: Path) -> dict[str, dict[float, float]]:
    """SWD x1e3 by kimg of each run, from its metrics.jsonl."""
    out = {}
    for name in RUNS:
        path = work / name / "metrics.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        out[name] = {round(r["kimg"], 3): round(r["swd"], 3) for r in lines if "swd" in r}
    return out


def compare(swd: dict[str, dict[float, float]]) -> list[dict]:
    """At every kimg all three runs reached: the compiled-vs-plain gap and the seed-to-seed noise."""
    common = sorted(set.intersection(*(set(c) for c in swd.values()))) if all(swd.values()) else []
    rows = []
    for kimg in common:
        c, p0, p1 = (swd[name][kimg] for name in RUNS)
        rows.append({"kimg": kimg, "compiled_seed0": c, "plain_seed0": p0, "plain_seed1": p1,
                     "compiled_minus_plain": round(c - p0, 3), "noise_plain_seed1_minus_seed0": round(p1 - p0, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", help="the emoji data set (folder or zip)")
    parser.add_argument("--kimg", type=float, default=600.0, help="length of each run, thousands of images")
    parser.add_argument("--metrics-kimg", type=float, default=None, help="SWD every this many kimg "
                                                                        "(default: kimg / 6)")
    parser.add_argument("--batch", type=int, default=64, help="images per step (the emoji recipe's 64)")
    parser.add_argument("--metrics-samples", type=int, default=2000, help="images per SWD evaluation")
    parser.add_argument("--work", type=Path, default=Path("train-quality"), help="folder of the runs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--time-limit", type=float, default=None, help="seconds, then SIGTERM to every run")
    parser.add_argument("--resume", action="store_true", help="continue runs already in --work")
    parser.add_argument("--collect", type=Path, default=None, help="only read the runs in this folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "train-quality-compiled-vs-plain.json")
    args = parser.parse_args()
    if args.collect is None and args.data is None:
        parser.error("give the data set, or --collect FOLDER")
    work = args.collect or args.work
    args.metrics_kimg = args.metrics_kimg or args.kimg / 6
    codes = None if args.collect else run_all(args)
    swd = curves(work)
    report = {"benchmark": "train-quality-compiled-vs-plain", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "note": f"SWD x1e3 of {args.metrics_samples} EMA samples against as many data images, lower is "
                      "better; the runs shared one GPU, so their images/s are not comparable",
              "commands": {name: " ".join(command(args, args.data or Path("DATA"), work, name, False)[1:])
                           for name in RUNS},
              "exit_codes": codes, "swd": {name: {str(k): v for k, v in c.items()} for name, c in swd.items()},
              "compare": compare(swd)}
    for row in report["compare"]:
        print(f"{row['kimg']:>8g} kimg  compiled {row['compiled_seed0']:7.2f}  plain {row['plain_seed0']:7.2f}  "
              f"plain seed 1 {row['plain_seed1']:7.2f}  gap {row['compiled_minus_plain']:+.2f}  "
              f"noise {row['noise_plain_seed1_minus_seed0']:+.2f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
