"""--batch auto: the largest global batch whose training step fits in this GPU's memory, found by trying
one whole step (D, R1, G, EMA) on a throwaway trainer at each candidate, largest first.

Candidates are the number of processes times a power of two, from the recipe's batch down: 32, 16, 8, ...
on one GPU, 24, 12, 6, 3 on three. A candidate fits when its step runs without torch.cuda.OutOfMemoryError
and a second step (cuDNN's algorithms chosen, no autotuning trials) peaks below FIT_FRACTION of the card,
which leaves room for sample grids, metrics and fragmentation over a long run.
"""
from __future__ import annotations

import gc
from typing import Callable

import torch

from . import distributed
from .trainer import Trainer

FIT_FRACTION = 0.9  # a steady step may use at most this share of the GPU's memory


def candidate_batches(most: int, processes: int) -> list[int]:
    """Global batches to try, largest first: processes * 2**k <= most (at least one per process)."""
    per_process, out = 1, []
    while processes * per_process * 2 <= most:
        per_process *= 2
    while per_process >= 1:
        out.append(processes * per_process)
        per_process //= 2
    return out


def largest_fitting(candidates: list[int], fits: Callable[[int], bool]) -> int | None:
    """The first candidate fits() accepts; an out-of-memory error inside fits() counts as no. None: none fit."""
    for batch in candidates:
        try:
            ok = fits(batch)
        except torch.OutOfMemoryError:
            ok = False
        release_memory()
        if ok:
            return batch
    return None


def release_memory() -> None:
    """Give the failed try's blocks back (its tensors die with the frames collected here)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def step_fits(make_trainer: Callable[[int], Trainer], per_process: int, device: torch.device) -> bool:
    """One training step at this per-process batch, then a second whose peak must leave FIT_FRACTION."""
    trainer = make_trainer(per_process)
    try:
        trainer.train_step(0)  # step 0 includes R1
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # the autotuning trials' workspace, so the peak below is the step's own
        torch.cuda.reset_peak_memory_stats(device)
        trainer.train_step(0)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_reserved(device)
        return peak <= FIT_FRACTION * torch.cuda.get_device_properties(device).total_memory
    finally:
        del trainer


def agree(batch: int, world: distributed.World, device: torch.device) -> int:
    """The smallest batch any process found (each tries on its own GPU)."""
    if world.size <= 1:
        return batch
    value = torch.tensor([float(batch)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return int(value.item())
