"""Several sessions at once: one ONNX Runtime session per GPU (`--devices 0,1`), and a scheduler that
hands work items to whichever session has a free worker and returns the results in order.

The scheduler does not care what the sessions run on: CPU sessions (each with its own threads) go
through the same code, which is how it is tested on machines without GPUs.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cips_edge.core.errors import UserError
from .model import CUDA, CIPSModel, available_providers
from .protocol import RenderModel

Item = TypeVar("Item")
Result = TypeVar("Result")


def visible_gpus() -> int | None:
    """How many GPUs CUDA will show this process: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's
    list; None when neither can tell."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and not d.strip().startswith("-")])
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def parse_devices(spec: str, visible: Callable[[], int | None] = visible_gpus) -> list[int]:
    """'0,1', '0-3', '2' or 'all' -> GPU numbers (CUDA's order, after CUDA_VISIBLE_DEVICES), each once."""
    text = spec.strip().lower()
    usage = f"devices takes GPU numbers such as 0,1 or 0-3, or all; got {spec!r}"
    if text == "all":
        count = visible()
        if not count:
            raise UserError("devices all: cannot tell how many GPUs there are (no CUDA_VISIBLE_DEVICES, "
                            "no nvidia-smi, or no GPU); list them, e.g. devices 0,1", params=("devices", "devices"))
        return list(range(count))
    ids: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise UserError(usage, params="devices")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise UserError(f"devices range {part.strip()} runs backwards; write {last}-{first}", params="devices")
        ids.extend(range(first, last + 1))
    if len(set(ids)) != len(ids):
        raise UserError(f"devices names a GPU twice: {spec}", params="devices")
    count = visible()
    if count is not None and max(ids) >= count:
        raise UserError(f"devices {spec}: this machine shows {count} GPU(s), numbered 0-{count - 1}" if count
                        else f"devices {spec}: this machine shows no GPU", params="devices")
    return ids


def open_models(path, device: str = "auto", devices: list[int] | None = None, threads: int | None = None,
                precision: str | None = None) -> list[CIPSModel]:
    """One session (devices None), or one CUDA session per listed GPU."""
    if devices is None:
        return [CIPSModel(path, device=device, threads=threads, precision=precision)]
    if device == "cpu":
        raise UserError("devices picks GPUs; with device cpu use threads to set the CPU threads",
                        params=("devices", "device", "threads"))
    have = available_providers()
    if CUDA not in have:  # said of devices, the option given, rather than of a device cuda nobody asked for
        raise UserError(f"devices {','.join(map(str, devices))} needs CUDA, and this onnxruntime has no CUDA provider "
                        f"(it has {', '.join(have)}); install 'cips-edge[gpu]' in place of [cpu]", params="devices")
    return [CIPSModel(path, device="cuda", device_id=i, precision=precision) for i in devices]


def run_ordered(models: list[RenderModel], task: Callable[[RenderModel, Item], Result], items: Iterable[Item],
                workers: Callable[[RenderModel], int] = lambda m: m.workers) -> Iterator[Result]:
    """task(model, item) for every item, results in the items' order.

    Each session gets workers(model) threads (default: model.workers); a thread takes the next item
    when it is free, so faster devices do more. At most two items per thread are in flight, so memory
    stays bounded."""
    slots = [m for m in models for _ in range(workers(m))]
    if len(slots) == 1:
        for item in items:
            yield task(slots[0], item)
        return
    free: queue.SimpleQueue = queue.SimpleQueue()
    for m in slots:
        free.put(m)
    mine = threading.local()

    def take_slot():  # runs once in each pool thread: at most len(slots) threads, so never waits
        mine.model = free.get_nowait()

    def call(item):
        return task(mine.model, item)

    with ThreadPoolExecutor(len(slots), initializer=take_slot) as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(call, item))
                if len(pending) >= 2 * len(slots):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # stopped early (an interrupt, an error): drop what has not started
            for future in pending:
                future.cancel()
