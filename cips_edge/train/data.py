"""Training images: found in a folder or zip and decoded as cips_edge.imagefolder defines (shared with
evaluation), once, into one uint8 array, from which batches are gathered on the GPU (no per-step
decoding, no loader processes).

Why: a CIPS step needs only size x size x 3 bytes per image, so even FFHQ at 256 (70k images) is
13.8 GB as uint8, which fits in GPU memory next to the models; a batch is then one index_select.
Sets too large for that stay in host memory (pinned) or, beyond half of RAM, memory-mapped from the
.npy cache; each batch is gathered on the host and copied asynchronously.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cips_edge.imagefolder import ImageFolder, ImageFolderError

from .options import TrainError

# Bump when decoding/cropping/resizing changes: it is part of the data fingerprint, so it invalidates caches.
# (Still 1 after moving to cips_edge.imagefolder: that only adds colour-key (tRNS) compositing for RGB/L
# PNGs, and the cache lives in the run folder, where it should keep the pixels the run was trained on.)
PREPROCESS_VERSION = 1
DEVICE_FRACTION = 0.25  # keep the data on the GPU when it needs at most this share of its memory
HOST_FRACTION = 0.5  # else in RAM when it needs at most this share, else memory-mapped


def find_images(path: Path) -> ImageFolder:
    try:
        return ImageFolder(path)
    except ImageFolderError as e:
        raise TrainError(str(e)) from None


def data_fingerprint(source: ImageFolder, size: int, width: int | None = None) -> str:
    """Names, sizes and mtimes (folder) or CRCs (zip), plus the size and preprocessing: keys the cache and
    is stored in checkpoints. width: a panorama's (flat data keep the fingerprints they always had)."""
    shape = f"size {size}" if width is None else f"size {size} panorama width {width}"
    return source.fingerprint(source.names, salt=f"cips-edge-data v{PREPROCESS_VERSION} {shape}\n")[:16]


@dataclass
class Decoded:
    images: np.ndarray  # [N, size, size, 3] uint8, a panorama's [N, size, width, 3] (in memory or a read-only memory map)
    fingerprint: str
    skipped: list[tuple[str, str]]  # (name, reason) of files that could not be read
    from_cache: bool


def decode_images(source: ImageFolder, size: int, workers: int, out_path: Path | None = None,
                  width: int | None = None) -> Decoded:
    """Decode every file once into one array (written to out_path as .npy when given); width: panoramas,
    each resized whole to size x width."""
    n = len(source.names)
    shape = (n, size, width or size, 3)
    tmp = None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    else:
        images = np.empty(shape, dtype=np.uint8)
    skipped, kept = [], 0
    try:
        # Threads suffice: PIL releases the GIL while decoding and resizing.
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = pool.map(lambda name: source.decode(name, size, width=width), source.names) if workers > 0 \
                else (source.decode(name, size, width=width) for name in source.names)
            for name, result in zip(source.names, results):
                if isinstance(result, str):
                    skipped.append((name, result))
                else:
                    images[kept] = result
                    kept += 1
        if tmp is not None:
            if kept < n:  # the .npy header holds the shape: rewrite the kept rows into a right-sized file
                compact_tmp = tmp.with_name(tmp.name + ".compact")
                compact = np.lib.format.open_memmap(compact_tmp, mode="w+", dtype=np.uint8,
                                                    shape=(kept, *shape[1:]))
                compact[:] = images[:kept]
                compact.flush()
                del images, compact
                os.replace(compact_tmp, tmp)
            else:
                images.flush()
                del images
            os.replace(tmp, out_path)
            images = np.load(out_path, mmap_mode="r")
        else:
            images = images[:kept]
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return Decoded(images, data_fingerprint(source, size, width), skipped, from_cache=False)


def load_images(path: Path, size: int, workers: int, cache_dir: Path | None,
                decode: bool = True, width: int | None = None) -> Decoded | None:
    """The decoded data set, from cache_dir/<fingerprint>.npy when present. decode=False: only the
    cache (None if absent), for processes that wait for another to decode. width: panoramas'."""
    with find_images(path) as source:  # closes the zip handles the decoding threads opened
        fingerprint = data_fingerprint(source, size, width)
        cache = cache_dir / f"{fingerprint}.npy" if cache_dir is not None else None
        if cache is not None and cache.exists():
            return Decoded(np.load(cache, mmap_mode="r"), fingerprint, [], from_cache=True)
        if not decode:
            return None
        decoded = decode_images(source, size, workers, cache, width)
        if len(decoded.images) == 0:
            if cache is not None:
                cache.unlink(missing_ok=True)
            first = decoded.skipped[0]
            raise TrainError(f"none of the {len(source.names)} image files in {path} could be read "
                             f"(e.g. {first[0]}: {first[1]})")
        return decoded


def _total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class ImageBank:
    """The whole data set as uint8 [N, H, W, 3]; gathers batches onto the training device."""

    def __init__(self, images: np.ndarray, device: torch.device):
        self.device = device
        self.count = len(images)
        nbytes = images.nbytes
        on_device = device.type == "cuda" and nbytes <= DEVICE_FRACTION * torch.cuda.get_device_properties(
            device).total_memory
        if on_device:
            self.store = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        elif device.type == "cpu" or nbytes <= HOST_FRACTION * _total_ram() or not isinstance(images, np.memmap):
            self.store = torch.from_numpy(np.array(images))  # a private, writable copy in RAM
        else:
            self.store = None  # too large for RAM: gather from the memory map
            self.mapped = images
        self.location = "device" if on_device else ("host" if self.store is not None else "memory-map")

    @property
    def index_device(self) -> torch.device:
        """Where batch indices must be drawn (the generator's device)."""
        return self.device if self.location == "device" else torch.device("cpu")

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """index [B] (on index_device) -> uint8 [B, H, W, 3] on the training device."""
        if self.location == "device":
            return self.store.index_select(0, index)
        if self.store is not None:
            batch = self.store.index_select(0, index)
        else:
            batch = torch.from_numpy(self.mapped[np.sort(index.numpy())])
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch
