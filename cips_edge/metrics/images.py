"""The one image convention shared by data sets, training and evaluation: EXIF-upright, transparency
composited on white, made square (centre crop, or padding with white), Lanczos-resized to
size x size, uint8 [size, size, 3] (NHWC for sets). torch-free, so the runtime side can use it.

A data source is a folder (searched recursively) or a .zip of .png/.jpg/.jpeg/.webp files; hidden
files (.*, ._*, __MACOSX/) are ignored; names are sorted, so the order, and any seeded subset of it,
is the same on every machine. Files that cannot be decoded are skipped and reported, as in training.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from .errors import MetricsError
from .progress import track

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
WHITE = (255, 255, 255)
Fit = Literal["crop", "pad"]


class ImageSourceError(MetricsError):
    """A data folder or zip that cannot be used."""


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


def decode_image(data: bytes, size: int, fit: Fit = "crop") -> np.ndarray:
    """Image file bytes -> uint8 [size, size, 3]. JPEGs are decoded at >= 2x the target size (DCT
    scaling: fast, and still low-passed by the Lanczos resize)."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (2 * size, 2 * size))
    return prepare_image(image, size, fit)


def is_image_name(name: str) -> bool:
    parts = Path(name).parts
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)  # .DS_Store, ._foo.png, macOS zips
    return not hidden and name.lower().endswith(IMAGE_EXTENSIONS)


class ImageSource:
    """The image files of a folder (recursive) or of a .zip, by sorted relative name."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
        elif self.path.exists():
            raise ImageSourceError(f"{self.path} is neither a folder nor a zip of images")
        else:
            raise ImageSourceError(f"data not found: {self.path}")
        self.names: list[str] = sorted(n for n in names if is_image_name(n))
        if not self.names:
            raise ImageSourceError(f"no images in {self.path} (looked for {', '.join(IMAGE_EXTENSIONS)}, "
                                   "subfolders too)")

    def __len__(self) -> int:
        return len(self.names)

    def read(self, name: str) -> bytes:
        return self._zip.read(name) if self._zip is not None else (self.path / name).read_bytes()

    def subset(self, limit: int | None, seed: int = 0) -> list[str]:
        """All names, or a seeded random `limit` of them (kept in sorted order)."""
        if limit is None or limit >= len(self.names):
            return list(self.names)
        picked = np.random.default_rng(seed).choice(len(self.names), size=limit, replace=False)
        return [self.names[i] for i in sorted(picked)]

    def fingerprint(self, names: list[str]) -> str:
        """SHA-256 over what identifies the chosen files without reading them: relative name, size and
        mtime (folder) or name, size and CRC-32 (zip members)."""
        digest = hashlib.sha256(str(self.path.resolve()).encode())
        for name in names:
            if self._zip is not None:
                info = self._zip.getinfo(name)
                item = f"{name}\t{info.file_size}\t{info.CRC}"
            else:
                st = (self.path / name).stat()
                item = f"{name}\t{st.st_size}\t{st.st_mtime_ns}"
            digest.update(item.encode() + b"\n")
        return digest.hexdigest()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> "ImageSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_images(source: ImageSource, names: list[str], size: int, fit: Fit = "crop",
                progress: bool = False) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The named images as one uint8 [N, size, size, 3] array (in name order), and (name, reason) of
    each file that could not be decoded (left out)."""
    out = np.empty((len(names), size, size, 3), np.uint8)
    skipped = []
    n = 0
    for name in track(names, f"loading {size}x{size} data", progress):
        try:
            out[n] = decode_image(source.read(name), size, fit)
            n += 1
        except Exception as e:  # Pillow raises many types for truncated or foreign files
            skipped.append((name, f"{type(e).__name__}: {e}".splitlines()[0][:120]))
    return out[:n], skipped


def load_image_folder(path: str | os.PathLike, size: int, limit: int | None = None, seed: int = 0,
                      fit: Fit = "crop", progress: bool = False) -> np.ndarray:
    """A folder or .zip of images -> uint8 [N, size, size, 3] (all images, or a seeded `limit` of the
    files); undecodable files are left out."""
    with ImageSource(path) as source:
        return load_images(source, source.subset(limit, seed), size, fit, progress)[0]
