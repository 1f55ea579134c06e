"""Multi-GPU training scaling: images/s, efficiency against one GPU, peak memory per GPU, and the step
split into compute, communication and data, for 1, 2, 4, ... GPUs of one host (weak scaling: the
batch per GPU stays fixed, as `cips train --batch` = GPUs x per-GPU batch does).

    python benchmarks/train_scaling.py --gpus 1,2,4 --configs paper-256:16,edge-64:64

Each point is one `torchrun --standalone --nproc_per_node N` launch of this file in worker mode on random
uint8 images held on the GPU (the training data path for sets that fit, as `cips train` uses). The
fast path (bf16, channels-last, fused Adam) runs the full training step: D, lazy R1 every 16 steps, G,
EMA, each optimizer step after one flat all-reduce of the gradients (cips_edge/train/distributed.py).

Timing: `images_per_s` comes from free-running steps (a multiple of the R1 interval). The split is a
separate pass with a device sync around each phase; "communication" is the all-reduce and includes
waiting for the slowest rank. Results: benchmarks/results/train-scaling-<preset>-<gpu>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    import dataclasses

    import numpy as np
    import torch
    import torch.distributed as dist

    from cips_edge.core.config import PRESETS
    from cips_edge.train import distributed
    from cips_edge.train.data import ImageBank
    from cips_edge.train.discriminator import DiscriminatorConfig
    from cips_edge.train.trainer import Recipe, Speed, Trainer

    local = distributed.local_rank_from_env()
    cuda = torch.cuda.is_available()  # CPU (gloo) only for a smoke check of this script
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    world = distributed.init_from_env(device)
    speed = Speed.for_device(device, bf16=True, compile=False)
    speed.apply_backend_flags(device)
    g_config = PRESETS[args.preset]
    if args.size:
        g_config = dataclasses.replace(g_config, size=args.size)
    d_config = DiscriminatorConfig(g_config.size, 2, args.d_channel_max or (32 if args.preset == "tiny" else 512))
    recipe = Recipe(batch=args.batch, lr=0.002, r1_gamma=10.0, r1_every=16, ema_half_life_kimg=10.0,
                    global_batch=args.batch * world.size, augment=False, xflip=True, g_lazy_correction=True,
                    seed=0)
    trainer = Trainer(g_config, d_config, recipe, device, world, speed)
    images = np.random.default_rng(world.rank).integers(
        0, 256, (max(256, 4 * args.batch), g_config.size, g_config.size, 3), dtype=np.uint8)
    trainer.use_bank(ImageBank(images, device))

    def device_sync():
        if cuda:
            torch.cuda.synchronize(device)

    def sync():
        device_sync()
        distributed.barrier(world)

    step = 0
    for _ in range(args.warmup):
        trainer.train_step(step)
        step += 1
    trainer.read_stats()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step(step)
        step += 1
    trainer.read_stats()  # what training does every --log-every steps
    sync()
    wall = time.perf_counter() - t0

    phases: dict[str, list[float]] = {"data": [], "compute": [], "communication": []}

    def timed(name, fn, *a):
        device_sync()
        t = time.perf_counter()
        fn(*a)
        device_sync()
        phases[name][-1] += (time.perf_counter() - t) * 1000

    # One R1 interval per repetition, so R1 is amortised as in training.
    for _ in range(args.phase_reps):
        for name in phases:
            phases[name].append(0.0)
        for _ in range(16):
            trainer.reseed(step)
            reals = []
            timed("data", lambda: reals.append(trainer.real_batch()))
            timed("compute", trainer.d_backward, reals[0])
            timed("communication", distributed.average_gradients, trainer.d_params, world)
            timed("compute", trainer.d_optim.step)
            if trainer.r1_due(step):
                timed("compute", trainer.r1_backward, reals[0])
                timed("communication", distributed.average_gradients, trainer.d_params, world)
                timed("compute", trainer.d_optim.step)
            timed("compute", trainer.g_backward)
            timed("communication", distributed.average_gradients, trainer.g_params, world)
            timed("compute", trainer.g_optim.step)
            timed("compute", trainer.update_ema)
            step += 1
    split = {k: round(statistics.median(v) / 16, 3) for k, v in phases.items()}
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if cuda else 0.0
    peaks = [None] * world.size
    if world.size > 1:
        dist.all_gather_object(peaks, peak)
    else:
        peaks = [peak]
    distributed.assert_same_weights(trainer.models, world)
    if world.is_main:
        grad_bytes = 4 * sum(p.numel() for p in trainer.g_params + trainer.d_params)
        result = {
            "gpus": world.size, "batch_per_gpu": args.batch, "global_batch": args.batch * world.size,
            "steps": args.steps, "images_per_s": round(args.steps * args.batch * world.size / wall, 2),
            "step_ms": round(wall / args.steps * 1000, 2), "split_ms_per_step": split,
            "peak_gpu_memory_gib_per_gpu": [round(p, 2) for p in peaks],
            "gradient_mib_per_step": round(grad_bytes / 2 ** 20, 1),
            "device_name": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
        }
        Path(args.out).write_text(json.dumps(result) + "\n")
    distributed.shutdown(world)


def driver(args) -> None:
    gpus = [int(g) for g in args.gpus.split(",")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
           # NVLink multicast (NVLS) is off on the lent machines (see the device notes)
           "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
    for item in args.configs.split(","):
        preset, batch = item.split(":")
        report = {"benchmark": "train-scaling", "preset": preset, "size": args.size, "batch_per_gpu": int(batch),
                  "method": __doc__.strip().split("\n\n", 1)[1], "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "points": []}
        for n in gpus:
            tmp = Path(f"/tmp/cips-scaling-{preset}-{n}.json")
            tmp.unlink(missing_ok=True)
            cmd = ["torchrun", "--standalone", f"--nproc_per_node={n}", __file__, "--worker", "--preset", preset,
                   "--batch", batch, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--phase-reps", str(args.phase_reps), "--out", str(tmp)]
            if args.size:
                cmd += ["--size", str(args.size)]
            if args.d_channel_max:
                cmd += ["--d-channel-max", str(args.d_channel_max)]
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0 or not tmp.exists():
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                report["points"].append({"gpus": n, "error": proc.stderr.strip().splitlines()[-1:]})
                continue
            point = json.loads(tmp.read_text())
            point["launch_s"] = round(time.perf_counter() - t, 1)
            report["points"].append(point)
            print(preset, json.dumps(point), flush=True)
        one = next((p for p in report["points"] if p.get("gpus") == 1 and "images_per_s" in p), None)
        for p in report["points"]:
            if one and "images_per_s" in p:
                p["efficiency"] = round(p["images_per_s"] / (p["gpus"] * one["images_per_s"]), 3)
        name = next((p["device_name"] for p in report["points"] if "device_name" in p), "gpu")
        tag = name.replace("NVIDIA ", "").split()[0].lower()
        out = Path(args.out_dir) / f"train-scaling-{preset}{'-' + str(args.size) if args.size else ''}-{tag}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", default="1,2,4,8", help="GPU counts to measure (default 1,2,4,8)")
    parser.add_argument("--configs", default="paper-256:16,edge-64:64", help="preset:batch-per-GPU list")
    parser.add_argument("--size", type=int, default=None, help="training size override for every preset")
    parser.add_argument("--d-channel-max", type=int, default=None)
    parser.add_argument("--steps", type=int, default=32, help="free-running steps timed (multiple of 16)")
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--phase-reps", type=int, default=2, help="R1 intervals (16 steps) of the split pass")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
