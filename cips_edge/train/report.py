"""What the user watches: a progress bar (images/s, losses), RUN/metrics.jsonl, sample grids, and
TensorBoard scalars when tensorboard is installed. Only rank 0 reports."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cips_edge.model import CIPSGenerator
from cips_edge.core.files import replacing
from cips_edge.core.seeds import latents_for_seeds

PLAIN_LINE_EVERY_S = 60.0  # without a terminal, print a progress line at most this often


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Written whole or not at all; an OSError (a full disk) propagates to the training entry."""
    with replacing(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: dict) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_grid(images: np.ndarray, path: Path, columns: int) -> None:
    """uint8 [N, H, W, 3] -> one PNG, row-major, written atomically."""
    n, h, w, _ = images.shape
    rows = math.ceil(n / columns)
    grid = np.full((rows * h, columns * w, 3), 255, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[k]
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(grid)
    with replacing(path) as f:
        image.save(f, format="PNG")


def sample_latents(grid: int, style_dim: int) -> torch.Tensor:
    """The sample grid's latents, [grid * grid, S]: cell k (row by row) is seed k, the latent that
    `cips render --seed k` renders."""
    return torch.from_numpy(latents_for_seeds(range(grid * grid), style_dim))


@torch.no_grad()
def render_images(g: CIPSGenerator, z: torch.Tensor, chunk: int) -> np.ndarray:
    """EMA samples at the training grid (a panorama: its whole circle): z [N, S] -> uint8 [N, H, W, 3]
    (fp32, no truncation)."""
    from cips_edge.coords import native_grid

    coords, height, width = native_grid(g.config, z.device)
    coords = coords.unsqueeze(0)
    out = []
    for part in z.split(chunk):
        rgb = g(coords.expand(part.shape[0], -1, -1), part, native=True)  # [b, H*W, 3]
        u8 = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        out.append(u8.reshape(-1, height, width, 3).cpu().numpy())
    return np.concatenate(out)


def grid_name(images_seen: int) -> str:
    return f"grid-{images_seen / 1000:010.3f}.png"  # kimg, sortable: grid-000120.000.png


class Reporter:
    """Progress bar, JSON-lines metrics and TensorBoard for the main rank; silent elsewhere."""

    def __init__(self, run_dir: Path, total_images: int, start_images: int, active: bool):
        self.active = active
        self.run_dir = run_dir
        self.total = total_images
        self._progress = self._task = self._tb = None
        self._last_line = -math.inf
        self._mark = (time.perf_counter(), start_images)
        if not active:
            return
        from rich.console import Console

        self.console = Console(file=sys.stderr)

    def say(self, message: str) -> None:
        if self.active:  # soft_wrap: a line stays one line in a log (commands and paths copy whole)
            self.console.print(message, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        if self.active:
            self.console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    def start(self, images_seen: int) -> None:
        if not self.active:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self._tb = None

        self._mark = (time.perf_counter(), images_seen)
        if not self.console.is_terminal:  # a log gets plain lines (log), not a bar cut to 80 columns at its end
            return
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(),
            TextColumn("{task.fields[kimg]}"), TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=self.console, transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=self.total, completed=images_seen,
                                             kimg=self._kimg(images_seen), speed="", losses="")

    def _kimg(self, images: int) -> str:
        digits = 1 if self.total >= 10_000 else 3
        return f"{images / 1000:.{digits}f}/{self.total / 1000:g} kimg"

    def advance(self, images_seen: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=images_seen, kimg=self._kimg(images_seen))

    def log(self, step: int, images_seen: int, elapsed_s: float, stats: dict) -> dict:
        """Record one metrics line (call right after reading stats, which synchronised the device)."""
        now = time.perf_counter()
        t0, seen0 = self._mark
        ips = (images_seen - seen0) / max(now - t0, 1e-9)
        self._mark = (now, images_seen)
        record = {"step": step, "images_seen": images_seen, "kimg": images_seen / 1000,
                  **{k: (None if v is None else round(v, 6)) for k, v in stats.items()},
                  "images_per_s": round(ips, 2), "time_s": round(elapsed_s, 2)}
        if not self.active:
            return record
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "images_seen", "kimg") and v is not None:
                    self._tb.add_scalar(k, v, images_seen)
        r1 = "" if stats["r1"] is None else f" r1 {stats['r1']:.3g}"
        g = "held" if stats["loss_g"] is None else f"{stats['loss_g']:.3f}"
        losses = f"D {stats['loss_d']:.3f} G {g}{r1}"
        if self._progress is not None:
            self._progress.update(self._task, speed=f"{ips:.1f} img/s", losses=losses)
        if not self.console.is_terminal and now - self._last_line >= PLAIN_LINE_EVERY_S:
            # Logs of batch jobs get no live bar: a plain line now and then instead.
            self._last_line = now
            self.console.print(f"{self._kimg(images_seen)}  {ips:.1f} img/s  {losses}", highlight=False)
        return record

    def log_quality(self, step: int, images_seen: int, record: dict) -> dict:
        """One metrics line for an evaluation of the EMA generator (quality.QualityMetrics), TensorBoard
        scalars under metrics/, and a short line above the progress bar. The evaluation's time is left
        out of the next images/s."""
        line = {"step": step, "images_seen": images_seen, "kimg": images_seen / 1000, **record}
        if not self.active:
            return line
        t0, seen0 = self._mark
        self._mark = (t0 + record["metric_s"], seen0)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        parts = []
        if "swd" in record:
            levels = "/".join(f"{v:.2f}" for v in record["swd_levels"])
            parts.append(f"SWD {record['swd']:.2f} ({levels} at {'/'.join(map(str, record['swd_resolutions']))})")
        if "fid" in record:
            parts.append(f"FID {record['fid']:.2f}")
        if self._tb is not None:
            if "swd" in record:
                self._tb.add_scalar("metrics/swd", record["swd"], images_seen)
                for res, v in zip(record["swd_resolutions"], record["swd_levels"]):
                    self._tb.add_scalar(f"metrics/swd_{res}", v, images_seen)
            if "fid" in record:
                self._tb.add_scalar("metrics/fid", record["fid"], images_seen)
        self.console.print(f"{images_seen / 1000:g} kimg  {'  '.join(parts)}  ({record['metric_samples']} images, "
                           f"{record['metric_s']:.1f} s)", highlight=False)
        return line

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def truncate_metrics(path: Path, images_seen: int) -> None:
    """On resume, drop lines past the checkpoint (the interrupted session's tail is replayed)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("images_seen", 0) <= images_seen]
    _atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())
