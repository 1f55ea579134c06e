"""Training images: found in a folder or zip and decoded as cips_edge.imagefolder defines (shared with
evaluation), once, into one uint8 array, from which batches are gathered on the GPU (no per-step
decoding, no loader processes).

Why: a CIPS step needs only size x size x 3 bytes per image, so even FFHQ at 256 (70k images) is
13.8 GB as uint8, which fits in GPU memory next to the models; a batch is then one index_select.
Sets too large for that stay in host memory (pinned) or, beyond half of RAM, memory-mapped from the
.npy cache; each batch is gathered on the host and copied asynchronously.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cips_edge.imagefolder import ImageFolder, ImageFolderError
from cips_edge.core.files import clean_stale_temporaries, replacing

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
    # [N, size, size, 3] uint8, a panorama's [N, size, width, 3] (in memory or a read-only memory map)
    images: np.ndarray
    fingerprint: str
    skipped: list[tuple[str, str]]  # (name, reason) of files that could not be read
    from_cache: bool


def decode_images(source: ImageFolder, size: int, workers: int, out_path: Path | None = None,
                  width: int | None = None) -> Decoded:
    """Decode every file once into one array (written to out_path as .npy when given); width: panoramas,
    each resized whole to size x width."""
    shape = (len(source.names), size, width or size, 3)
    skipped: list[tuple[str, str]] = []
    # Threads suffice: PIL releases the GIL while decoding and resizing. Results come in file order.
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda name: source.decode(name, size, width=width), source.names) if workers > 0 \
            else (source.decode(name, size, width=width) for name in source.names)

        def readable():
            for name, result in zip(source.names, results):
                if isinstance(result, str):
                    skipped.append((name, result))
                else:
                    yield result

        try:
            if out_path is None:
                images = np.empty(shape, dtype=np.uint8)
                kept = 0
                for image in readable():
                    images[kept] = image
                    kept += 1
                images = images[:kept]
            else:
                kept = write_npy_rows(out_path, shape, readable())
                images = np.load(out_path, mmap_mode="r") if kept else np.empty((0, *shape[1:]), np.uint8)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # no decoding for a write that failed
            raise
    return Decoded(images, data_fingerprint(source, size, width), skipped, from_cache=False)


def _npy_header(shape: tuple[int, ...], length: int | None = None) -> bytes:
    """The .npy (version 1.0) header of a C-order uint8 array; padded with spaces to `length` bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    header = buffer.getvalue()
    if length is not None and length != len(header):
        assert length > len(header), (length, len(header))
        pad = length - len(header)
        header = header[:8] + struct.pack("<H", length - 10) + header[10:-1] + b" " * pad + b"\n"
    return header


def write_npy_rows(path: Path, shape: tuple[int, ...], rows) -> int:
    """Write uint8 rows of shape[1:] (at most shape[0] of them) to `path` as one .npy, atomically;
    returns how many came. Plain write() calls, not a memory map: on a full disk a write into a mapped
    sparse file kills the process (SIGBUS), where write() raises, which becomes a one-line TrainError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = _npy_header(shape)
    count = 0
    try:
        with replacing(path) as f:
            f.write(header)
            for row in rows:
                assert row.shape == shape[1:] and row.dtype == np.uint8, (row.shape, row.dtype)
                f.write(np.ascontiguousarray(row).data)
                count += 1
            if count < shape[0]:  # the header holds the count: rewrite it, as long as before
                f.seek(0)
                f.write(_npy_header((count, *shape[1:]), len(header)))
                f.truncate(len(header) + count * int(np.prod(shape[1:])))
    except OSError as e:
        raise TrainError(f"cannot write the data cache {path}: {e.strerror or e} (free some space, or train "
                         "with --no-data-cache)") from None
    return count


def load_images(path: Path, size: int, workers: int, cache_dir: Path | None,
                decode: bool = True, width: int | None = None) -> Decoded | None:
    """The decoded data set, from cache_dir/<fingerprint>.npy when present. decode=False: only the
    cache (None if absent), for processes that wait for another to decode. width: panoramas'."""
    if decode and cache_dir is not None and cache_dir.is_dir():
        clean_stale_temporaries(cache_dir)  # of a decoding that was killed
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

    def __init__(self, images: np.ndarray, device: torch.device, allow_device: bool = True):
        self.device = device
        self.count = len(images)
        nbytes = images.nbytes
        on_device = allow_device and device.type == "cuda" and nbytes <= DEVICE_FRACTION * \
            torch.cuda.get_device_properties(device).total_memory
        if on_device:
            with warnings.catch_warnings():  # a read-only memory map: torch only reads it for the upload
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
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
