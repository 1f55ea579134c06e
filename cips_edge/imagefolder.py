"""The project's one definition of an image data set and of turning its files into images, used by training
(cips_edge.train.data), evaluation (cips_edge.metrics) and the data recipes. torch-free.

A data set is a folder (searched recursively) or a .zip of .png/.jpg/.jpeg/.webp files; hidden files (.*, ._*,
__MACOSX/) are ignored; names are sorted, so the order, and any seeded subset of it, is the same on every
machine. An image is EXIF-upright, its transparency (alpha, palette or colour-key) composited on white, made
square (centre crop, or padding with white), Lanczos-resized to size x size: uint8 [size, size, 3]. A 360-degree
panorama (training with --panorama) is never cropped: the whole image is resized to width x size.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
WHITE = (255, 255, 255)
Fit = Literal["crop", "pad"]


def subset_indices(count: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """All of range(count), or a seeded random `limit` of them in increasing order: the one rule by
    which evaluation (a file list) and training (a decoded array) pick the same data subset."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


class ImageFolderError(ValueError):
    """A data path that cannot be used (missing, not a folder or zip, no images); the message is one line.
    Training and metrics re-raise it as their own error type."""


def on_white(image: Image.Image) -> Image.Image:
    """Composite any transparency (alpha channel, palette or colour-key tRNS) onto opaque white: RGB."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    # Every mode (P with tRNS included) converts to RGBA with its transparency as alpha; an opaque
    # image gets alpha 255, so compositing it is a no-op.
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")


def to_square(image: Image.Image, fit: Fit = "crop") -> Image.Image:
    """The centred square: 'crop' keeps the middle min(w, h) square, 'pad' centres the image on a white
    max(w, h) square (nothing is cut off). Odd margins put the extra pixel right / bottom."""
    w, h = image.size
    if w == h:
        return image
    if fit == "crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return image.crop((left, top, left + s, top + s))
    if fit == "pad":
        s = max(w, h)
        canvas = Image.new("RGB", (s, s), WHITE)
        canvas.paste(image, ((s - w) // 2, (s - h) // 2))
        return canvas
    raise ValueError(f"fit must be 'crop' or 'pad', not {fit!r}")


def prepare_image(image: Image.Image, size: int, fit: Fit = "crop") -> np.ndarray:
    """A decoded PIL image -> uint8 [size, size, 3] under the project's convention (module docstring)."""
    square = to_square(on_white(ImageOps.exif_transpose(image)), fit)
    if square.size != (size, size):
        # Square first, then resize: the filter never reads pixels outside the square. Pillow's
        # Lanczos scales its support with the reduction, so downscaling does not alias.
        square = square.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8)


def prepare_panorama(image: Image.Image, height: int, width: int) -> np.ndarray:
    """A 360-degree panorama -> uint8 [height, width, 3]: the whole image, EXIF-upright, on white, Lanczos-resized
    (stretched where its aspect differs). Cropping would cut the circle: its left and right edges are the seam."""
    image = on_white(ImageOps.exif_transpose(image))
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def decode_image(data: bytes, size: int, fit: Fit = "crop", width: int | None = None) -> np.ndarray:
    """Image file bytes -> uint8 [size, size, 3], or a panorama's [size, width, 3] when width is given. JPEGs
    are decoded at >= 2x the target size (DCT scaling: fast, and still low-passed by the Lanczos resize)."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (2 * (width or size), 2 * size))
    return prepare_image(image, size, fit) if width is None else prepare_panorama(image, size, width)


def is_image_name(name: str) -> bool:
    parts = Path(name).parts
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)  # .DS_Store, ._foo.png, macOS zips
    return not hidden and name.lower().endswith(IMAGE_EXTENSIONS)


class ImageFolder:
    """The image files of a folder (recursive) or of a .zip, by sorted relative name. read() may be called
    from several threads at once (each thread reads a zip through its own handle)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
            self.is_zip = False
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            with zipfile.ZipFile(self.path) as z:
                names = [i.filename for i in z.infolist() if not i.is_dir()]
            self.is_zip = True
        elif self.path.exists():
            raise ImageFolderError(f"{self.path} is neither a folder nor a zip of images")
        else:
            raise ImageFolderError(f"data not found: {self.path}")
        self.names: list[str] = sorted(n for n in names if is_image_name(n))
        if not self.names:
            raise ImageFolderError(f"no images in {self.path} (looked for {', '.join(IMAGE_EXTENSIONS)}, "
                                   "subfolders too)")
        self._local = threading.local()
        self._opened: list[zipfile.ZipFile] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.names)

    def _zip(self) -> zipfile.ZipFile:
        z = getattr(self._local, "zip", None)
        if z is None:
            z = self._local.zip = zipfile.ZipFile(self.path)
            with self._lock:
                self._opened.append(z)
        return z

    def read(self, name: str) -> bytes:
        return self._zip().read(name) if self.is_zip else (self.path / name).read_bytes()

    def subset(self, limit: int | None, seed: int = 0) -> list[str]:
        """All names, or a seeded random `limit` of them (kept in sorted order)."""
        return [self.names[i] for i in subset_indices(len(self.names), limit, seed)]

    def fingerprint(self, names: list[str], salt: str | None = None) -> str:
        """SHA-256 (hex) of `salt` (default: the resolved path) followed by what identifies each named
        file without reading it: name, size and mtime (folder) or name, size and CRC-32 (zip member)."""
        digest = hashlib.sha256((str(self.path.resolve()) if salt is None else salt).encode())
        for name in names:
            if self.is_zip:
                info = self._zip().getinfo(name)
                item = f"{name}\t{info.file_size}\t{info.CRC}"
            else:
                st = (self.path / name).stat()
                item = f"{name}\t{st.st_size}\t{st.st_mtime_ns}"
            digest.update(item.encode() + b"\n")
        return digest.hexdigest()

    def decode(self, name: str, size: int, fit: Fit = "crop", width: int | None = None) -> np.ndarray | str:
        """The named file as uint8 [size, size, 3] (a panorama: [size, width, 3]), or a one-line reason why
        it cannot be decoded."""
        try:
            return decode_image(self.read(name), size, fit, width)
        except UnidentifiedImageError:
            return "not an image PIL can read"
        except Exception as e:  # Pillow raises many types for truncated or foreign files
            return f"{type(e).__name__}: {e}".splitlines()[0][:120]

    def close(self) -> None:
        with self._lock:
            for z in self._opened:
                z.close()
            self._opened.clear()
        self._local = threading.local()

    def __enter__(self) -> "ImageFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
