"""How many points go into one session call: the one rule for every renderer. The result never depends
on the chunk size (model.py, render.py); the rule is about speed and memory."""
from __future__ import annotations

import numpy as np

from cips_edge.core.errors import UserError

from .protocol import RenderModel
from .split import auto_cuda_chunk

CPU = "CPUExecutionProvider"  # model.CPU (model.py imports this module)
# On the CPU small chunks keep the activations in the caches: files with fast paths (formats 2 and 3)
# use 1,024 (on 2 cores, whole `cips render` runs took 0.63-0.72x the time of 16,384 at about half the
# peak memory; 512 was no faster). Format-1 files redo the style part in every call, so they take 16,384
# on the CPU and 262,144 on CUDA. On CUDA, files with fast paths take the largest power of two whose
# activations fit a memory budget (split.auto_cuda_chunk).
CPU_CHUNK = 1_024
FORMAT_1_CPU_CHUNK = 16_384
FORMAT_1_CUDA_CHUNK = 262_144
MIN_SPLIT = 256  # points: below this a CPU image is not split further to keep every thread busy
# Streaming on the CPU: the chunks running at once hold about 32 bytes x the widest layer of
# activations per point (7.3 KB a point for edge-64, widest 256), so with many threads the chunk
# shrinks to keep all of them within ACTIVATION_BYTES, down to MIN_STREAM_CHUNK (1k-4k-point chunks
# ran as fast as 16k on 2 cores).
ACTIVATION_BYTES = 128 << 20
MIN_STREAM_CHUNK = 1024
GRID_CPU_CHUNK = 16_384  # points per grid-graph call on the CPU (each call runs on every core)


def default_chunk(model: RenderModel, points: int | None = None, threads: int | None = None,
                  grid: bool = False) -> int:
    """Points per session call when none is asked for.

    points: the render's size; on the CPU an image smaller than workers x the chunk is split evenly
    over model.workers threads. threads: the CPU threads of every session running at once (a streamed
    render): the chunk shrinks so that their activations fit ACTIVATION_BYTES. grid: a call of the grid
    graph (model.grid_ready): on a GPU the largest power of two whose activations fit, on the CPU
    GRID_CPU_CHUNK."""
    if grid:
        return auto_cuda_chunk(model.info, model.precision, grid=True) if model.on_device else GRID_CPU_CHUNK
    if model.on_device:
        return auto_cuda_chunk(model.info, model.precision)
    if model.provider != CPU:
        return FORMAT_1_CUDA_CHUNK
    base = FORMAT_1_CPU_CHUNK if model.engine is None else CPU_CHUNK
    if threads is not None:
        widest = max(2 * model.config.hidden_size, *model.config.synthesis_widths)
        return int(np.clip(ACTIVATION_BYTES // (threads * 32 * widest), MIN_STREAM_CHUNK, base))
    if points is not None and model.workers > 1:
        return min(base, max(MIN_SPLIT, -(-points // model.workers)))
    return base


def chunk_size(model: RenderModel, chunk: int | None, points: int | None = None, threads: int | None = None,
               grid: bool = False) -> int:
    """`chunk` when asked for (at least 1 point), else default_chunk(model, points, threads, grid)."""
    if chunk is None:
        return default_chunk(model, points, threads, grid)
    if chunk < 1:
        raise UserError(f"chunk must be at least 1 point, got {chunk}", params="chunk")
    return chunk
