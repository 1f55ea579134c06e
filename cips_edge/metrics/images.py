"""Evaluation's side of the data set: a folder or zip (cips_edge.imagefolder, the convention shared with
training) loaded, whole or as a seeded subset, into one uint8 NHWC array, with MetricsError for bad paths.
Files that cannot be decoded are skipped and reported, as in training.
"""
from __future__ import annotations

import os

import numpy as np

from cips_edge.imagefolder import Fit, ImageFolder, ImageFolderError

from .errors import MetricsError
from .progress import track


class ImageSourceError(MetricsError):
    """A data folder or zip that cannot be used."""


class ImageSource(ImageFolder):
    """ImageFolder whose path errors are MetricsErrors."""

    def __init__(self, path: str | os.PathLike):
        try:
            super().__init__(path)
        except ImageFolderError as e:
            raise ImageSourceError(str(e)) from None


def load_images(source: ImageFolder, names: list[str], size: int, fit: Fit = "crop",
                progress: bool = False) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The named images as one uint8 [N, size, size, 3] array (in name order), and (name, reason) of
    each file that could not be decoded (left out)."""
    out = np.empty((len(names), size, size, 3), np.uint8)
    skipped = []
    n = 0
    for name in track(names, f"loading {size}x{size} data", progress):
        image = source.decode(name, size, fit)
        if isinstance(image, str):
            skipped.append((name, image))
        else:
            out[n] = image
            n += 1
    return out[:n], skipped


def load_image_folder(path: str | os.PathLike, size: int, limit: int | None = None, seed: int = 0,
                      fit: Fit = "crop", progress: bool = False) -> np.ndarray:
    """A folder or .zip of images -> uint8 [N, size, size, 3] (all images, or a seeded `limit` of the
    files); undecodable files are left out."""
    with ImageSource(path) as source:
        return load_images(source, source.subset(limit, seed), size, fit, progress)[0]
