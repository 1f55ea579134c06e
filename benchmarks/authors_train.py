"""The paper authors' own training step, timed on random data: the baseline issue 23's ratios are taken
against, run on the card at hand beside benchmarks/train_memory.py.

    python benchmarks/authors_train.py --code DIR --configs paper-256,paper-64 --out authors-train.json

(with cips-edge installed: it writes the JSON through cips_edge's writer; on a GPU machine without the
install, `bash benchmarks/on_gpu.sh benchmarks/authors_train.py ...` lays the package out for it).

DIR holds the authors' code as its import root: their `model` package (CIPSskip and Discriminator from
advimman/CIPS), `tensor_transforms.py`, and the `op` package their blocks import (rosinality's
fused_act and upfirdn2d CUDA extensions, which torch compiles on first import: nvcc and ninja needed).
Nothing of theirs is in this repository. This script writes only the loop, which does per iteration what
their train.py does: D on G's fakes (G without grad) and on the reals, logistic loss, Adam; R1 (gamma 10)
on the reals when i % 16 == 0, scaled by 16, Adam; G's non-saturating loss through D, Adam; EMA of G
(decay 0.5 ** (32 / 10000)); and the seven loss reads (`.item()`) of its progress bar. Their flags for
the paper's runs: `--img2dis` (D sees the image alone), no style mixing, n_mlp 8, channel multiplier 2,
Adam lr 0.002 and betas (0, 0.99) with the lazy-regularisation correction. Random images in [-1, 1] and
their coordinate grid already on the GPU stand in for their data loader (whose workers run beside the
step). cuDNN and matmul precision are torch's defaults, which their code leaves as they are.

Each configuration runs in its own subprocess (its own peak memory). Iterations 0 to --warmup - 1 warm
up (iteration 0 runs R1); the timed --steps (a multiple of 16) hold steps / 16 R1 iterations, as a long
run does. GB are 1e9 bytes: the peak allocated over the whole run, and the peak reserved.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1e9
R1_EVERY = 16
# name: (G and D size, batch), as benchmarks/train_memory.py's CONFIGS; their CIPSskip at 64 has ten
# 512-wide layers, which train_memory.py's authors-64 builds (its paper-64 keeps paper-256's fourteen)
CONFIGS = {"paper-256": (256, 16), "paper-64": (64, 128)}


def _requires_grad(module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad = flag


def _accumulate(ema, model, decay: float) -> None:
    ema_params = dict(ema.named_parameters())
    for name, p in model.named_parameters():
        ema_params[name].data.mul_(decay).add_(p.data, alpha=1 - decay)


def run_config(code: Path, size: int, batch: int, steps: int, warmup: int, device: str) -> dict:
    """One configuration in this process: the authors' models at this size and batch, their loop, timed."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(code))
    import model as authors  # their package, from --code
    from tensor_transforms import convert_to_coord_format

    device = torch.device(device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    kwargs = {"size": size, "hidden_size": 512, "style_dim": 512, "n_mlp": 8, "activation": None,
              "channel_multiplier": 2}
    generator = authors.CIPSskip(**kwargs).to(device)
    g_ema = authors.CIPSskip(**kwargs).to(device)
    g_ema.eval()
    _accumulate(g_ema, generator, 0)
    discriminator = authors.Discriminator(size=size, channel_multiplier=2, n_scales=1, input_size=3,
                                          n_first_layers=0).to(device)
    g_ratio, d_ratio = 4 / 5, R1_EVERY / (R1_EVERY + 1)  # their g_reg_every 4 (unused by CIPS), d_reg_every 16
    g_optim = torch.optim.Adam(generator.parameters(), lr=0.002 * g_ratio, betas=(0 ** g_ratio, 0.99 ** g_ratio))
    d_optim = torch.optim.Adam(discriminator.parameters(), lr=0.002 * d_ratio, betas=(0 ** d_ratio, 0.99 ** d_ratio))
    decay = 0.5 ** (32 / (10 * 1000))

    coords = convert_to_coord_format(batch, size, size, device)
    reals = torch.rand(4, batch, 3, size, size, device=device) * 2 - 1  # a few batches, reused in turn
    r1_loss = zero = torch.tensor(0.0, device=device)  # their loop's r1 until the first R1, and path terms

    def iteration(i: int) -> None:
        nonlocal r1_loss
        real = reals[i % len(reals)].clone()
        _requires_grad(generator, False)
        _requires_grad(discriminator, True)
        fake, _ = generator(coords, [torch.randn(batch, 512, device=device)])
        fake_pred = discriminator(fake)
        real_pred = discriminator(real)
        d_loss = F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()
        scores = (real_pred.mean(), fake_pred.mean())
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()
        if i % R1_EVERY == 0:
            real.requires_grad = True
            real_pred = discriminator(real)
            grad, = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
            r1_loss = grad.pow(2).reshape(batch, -1).sum(1).mean()
            discriminator.zero_grad()
            (10 / 2 * r1_loss * R1_EVERY + 0 * real_pred[0]).backward()
            d_optim.step()
        _requires_grad(generator, True)
        _requires_grad(discriminator, False)
        fake, _ = generator(coords, [torch.randn(batch, 512, device=device)])
        g_loss = F.softplus(-discriminator(fake)).mean()
        generator.zero_grad()
        g_loss.backward()
        g_optim.step()
        _accumulate(g_ema, generator, decay)
        for value in (d_loss, g_loss, r1_loss, zero, *scores, zero):
            value.item()

    start = time.perf_counter()
    for i in range(warmup):
        iteration(i)
    if cuda:
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        iteration(i)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "size": size, "batch": batch, "steps": steps, "warmup": warmup, "r1_iterations_timed": steps // R1_EVERY,
        "images_per_s": round(steps * batch / seconds, 2), "step_ms": round(1e3 * seconds / steps, 2),
        "warmup_s": round(warmup_s, 1),
        "peak_allocated_gb": round(torch.cuda.max_memory_allocated() / GB, 2) if cuda else None,
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / GB, 2) if cuda else None,
        "g_params_m": round(sum(p.numel() for p in generator.parameters()) / 1e6, 2),
        "d_params_m": round(sum(p.numel() for p in discriminator.parameters()) / 1e6, 2),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, required=True, help="import root of the authors' code")
    parser.add_argument("--configs", default="paper-256,paper-64", help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=32, help="timed iterations, a multiple of 16 (default 32)")
    parser.add_argument("--warmup", type=int, default=3, help="iterations before timing (default 3)")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/authors-train-<gpu>.json)")
    parser.add_argument("--size", type=int, help="override the configs' size (a CPU smoke check)")
    parser.add_argument("--batch", type=int, help="override the configs' batch (a CPU smoke check)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu with a pure-torch `op` (smoke check)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "SIZE,BATCH": one configuration, in this process
    args = parser.parse_args()
    if args.steps % R1_EVERY:
        parser.error(f"--steps must be a multiple of {R1_EVERY}")
    unknown = [name for name in args.configs.split(",") if name not in CONFIGS]
    if unknown and not args.child:
        parser.error(f"unknown config {', '.join(unknown)}: use {', '.join(CONFIGS)}")
    if args.child:
        size, batch = (int(v) for v in args.child.split(","))
        print(json.dumps(run_config(args.code.resolve(), size, batch, args.steps, args.warmup, args.device)))
        return

    import torch

    from cips_edge.train.report import atomic_write_json
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    tag = gpu.split()[1].lower() if args.device == "cuda" and len(gpu.split()) > 1 else args.device
    out = args.out or RESULTS / f"authors-train-{tag}.json"
    result = {"benchmark": "authors_train", "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
              "gpu": gpu, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "r1_every": R1_EVERY, "configs": {}}
    for name in args.configs.split(","):
        size, batch = CONFIGS[name]
        cmd = [sys.executable, os.path.abspath(__file__), "--code", str(args.code), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--device", args.device,
               "--child", f"{args.size or size},{args.batch or batch}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.stderr.write(proc.stderr[-4000:])
            result["configs"][name] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
        else:
            result["configs"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(name, json.dumps(result["configs"][name]), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)
    print(f"wrote {out}")
    if any("error" in c for c in result["configs"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
