"""Is a training step bound by the GPU's work, by the host, or by the card's power? Free-running steps of
benchmarks/train.py's trainer (random images, R1 steps left out), seen three ways:

- the GPU: CUDA events between the phases of each step (data, D's forward and backward, D's Adam, G's,
  G's Adam, EMA), recorded without synchronising, so the phases run as in training; medians over steps;
- the host: how long each `train_step` call takes to return without synchronising (a host far ahead of
  the GPU waits in the launch queue), and each phase's launch time alone;
- the card: `nvidia-smi` sampled while the steps run: SM clock against its maximum, power against the
  limit, and the throttle reasons it reports (0x4: the software power cap).

    bash benchmarks/on_gpu.sh benchmarks/step_timeline.py --size 64 --batch 128 \\
        --widths 512,512,512,512,512,512,512,512,512,512 --out "$OUT/step-timeline-authors-64-h100.json"

On the CPU (--device cpu) the phases are timed with the host clock and nothing is sampled.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import add_trainer_args, build_trainer, sync  # noqa: E402

from cips_edge.train.loop import resolve_device  # noqa: E402

CIPS_TRAIN_FUSED = "fast+compile+r1c+rgbgrad+dpair+fused+stack+r1x+r1bf16+bshift+rgbfma"
QUERY = "clocks.sm,clocks.max.sm,power.draw,power.limit,clocks_throttle_reasons.active"
POWER_CAP = 0x4  # nvidia-smi's clocks_throttle_reasons: software power cap


def parse_sample(line: str) -> dict | None:
    """One line of `nvidia-smi --query-gpu=QUERY --format=csv,noheader,nounits`; None where it is not one."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 5:
        return None
    try:
        return {"sm_mhz": float(parts[0]), "max_sm_mhz": float(parts[1]), "power_w": float(parts[2]),
                "power_limit_w": float(parts[3]), "reasons": int(parts[4], 16)}
    except ValueError:
        return None


def summarise(samples: list[dict]) -> dict | None:
    """The samples taken while steps ran: clocks and power (median, range) and how often the power cap held."""
    if not samples:
        return None
    clocks = [s["sm_mhz"] for s in samples]
    power = [s["power_w"] for s in samples]
    return {"samples": len(samples), "sm_mhz_median": statistics.median(clocks), "sm_mhz_min": min(clocks),
            "sm_mhz_max": max(clocks), "max_sm_mhz": samples[0]["max_sm_mhz"],
            "power_w_median": statistics.median(power), "power_w_max": max(power),
            "power_limit_w": samples[0]["power_limit_w"],
            "power_capped_share": round(sum(bool(s["reasons"] & POWER_CAP) for s in samples) / len(samples), 3),
            "reasons_seen": sorted({f"0x{s['reasons']:x}" for s in samples})}


class Sampler:
    """nvidia-smi in the background every `period_ms`, the samples kept while `recording` is set."""

    def __init__(self, period_ms: int = 200):
        self.samples: list[dict] = []
        self.recording = False
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits",
                                          "-lms", str(period_ms)], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            sample = parse_sample(line)
            if sample is not None and self.recording:
                self.samples.append(sample)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def free_steps(trainer, step: int, n: int, r1_every: int, device: torch.device) -> tuple[dict, int]:
    """n steps back to back: each call's host time, and the wall per step once the GPU has finished."""
    host = []
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step += step % r1_every == 0  # an R1 step's extra work is not a free-running step's
        t = time.perf_counter()
        trainer.train_step(step)
        host.append((time.perf_counter() - t) * 1000)
        step += 1
    queued = time.perf_counter()
    sync(device)
    end = time.perf_counter()
    return {"host_ms_per_call": [round(ms, 2) for ms in host], "host_ms_median": round(statistics.median(host), 2),
            "drain_ms": round((end - queued) * 1000, 1),
            "wall_ms_per_step": round((end - start) * 1000 / n, 2)}, step


def gpu_phases(trainer, step: int, n: int, r1_every: int, device: torch.device) -> tuple[dict, int]:
    """Medians over n steps of each phase's time on the GPU (between the events that bracket it), with
    nothing synchronised until the end; on the CPU, the host clock."""
    cuda = device.type == "cuda"
    marks: list[tuple[str, object]] = []

    def mark(name: str) -> None:
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            marks.append((name, event))
        else:
            marks.append((name, time.perf_counter()))

    sync(device)
    for _ in range(n):
        step += step % r1_every == 0
        trainer.reseed(step)
        mark("start")
        reals = trainer.real_batch()
        mark("data")
        trainer.d_backward(reals)
        mark("D forward and backward")
        trainer.d_optimizer_step()
        mark("D Adam")
        trainer.g_backward()
        mark("G forward and backward")
        trainer.g_optimizer_step()
        mark("G Adam")
        trainer.update_ema()
        mark("EMA")
        step += 1
    sync(device)
    spans: dict[str, list[float]] = {}
    for (_, a), (name, b) in itertools.pairwise(marks):
        ms = a.elapsed_time(b) if cuda else (b - a) * 1000
        spans.setdefault("gap before the next step" if name == "start" else name, []).append(ms)
    return {name: round(statistics.median(v), 3) for name, v in spans.items()}, step


def host_phases(trainer, device: torch.device) -> dict:
    """Each phase's launch time alone (the GPU idle before it), and its wall time to the GPU's end."""
    reals = trainer.real_batch()
    phases = {"data": trainer.real_batch,
              "D step": lambda: (trainer.d_backward(reals), trainer.d_optimizer_step()),
              "G step": lambda: (trainer.g_backward(), trainer.g_optimizer_step()), "EMA": trainer.update_ema}
    out = {}
    for name, fn in phases.items():
        sync(device)
        start = time.perf_counter()
        fn()
        launched = time.perf_counter()
        sync(device)
        out[name] = {"host_ms": round((launched - start) * 1000, 2),
                     "wall_ms": round((time.perf_counter() - start) * 1000, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_trainer_args(parser, preset="paper-256", batch=128, warmup=3)
    parser.add_argument("--path", default=CIPS_TRAIN_FUSED,
                        help="a benchmarks/train.py path (default: cips train --fused-layers)")
    parser.add_argument("--steps", type=int, default=12, help="free-running steps for each view")
    parser.add_argument("--out", type=Path, required=True, help="JSON file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    trainer = build_trainer(args.path, args, device)
    step = 0
    for _ in range(args.warmup):  # compiles; step 0 includes R1
        trainer.train_step(step)
        step += 1
    sampler = Sampler()
    sampler.recording = True
    free, step = free_steps(trainer, step, args.steps, args.r1_every, device)
    phases, step = gpu_phases(trainer, step, args.steps, args.r1_every, device)
    sampler.recording = False
    sampler.stop()
    report = {"benchmark": "step-timeline", "preset": args.preset, "size": args.size, "widths": args.widths,
              "batch": args.batch, "path": args.path, "steps": args.steps, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv[1:]), "free_running": free,
              "gpu_phase_ms" if device.type == "cuda" else "host_phase_ms": phases,
              "phases_alone": host_phases(trainer, device), "card_while_stepping": summarise(sampler.samples)}
    print(json.dumps(report, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
