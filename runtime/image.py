"""From raw generator values to files: 8-bit conversion, output names, atomic PNG / .npy writes."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import UserError

MAX_SIDE = 16_384  # pixels per side without --force: 16384^2 already takes ~4 GB of float32 output
IMAGE_SUFFIXES = (".png", ".npy")


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Raw values ([-1, 1] is the colour range) -> uint8: clip(round((v + 1) * 127.5), 0, 255).

    Computed in float64 so that the formula is applied as written; round is round-half-to-even."""
    return np.clip(np.rint((rgb.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of raw generator values against a reference, with the colour
    range [-1, 1] as the peak (so the same as for 8-bit images with peak 255, up to rounding)."""
    mse = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(4.0 / mse))


def check_image_size(width: int, height: int, force: bool = False) -> None:
    if width < 1 or height < 1:
        raise UserError(f"image size must be at least 1 x 1 pixels, got {width} x {height}")
    if not force and max(width, height) > MAX_SIDE:
        raise UserError(f"image size {width} x {height} is beyond {MAX_SIDE} pixels per side; "
                        "pass --force if you mean it")


def output_pattern(out: str | None, count: int, default: str) -> str | None:
    """The str.format pattern (with {seed}) that names each seed's output, or None when --out is one
    file (allowed only for one seed). The rule is output_paths'."""
    if out is None:
        return default
    if "{" in out:
        return out
    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        return str(Path(out) / default)
    if count == 1:
        return None
    raise UserError(f"with {count} seeds, --out must be a folder or a pattern with {{seed}} "
                    f"(e.g. --out 'img-{{seed}}.png'), not one file name: {out}")


def output_paths(out: str | None, seeds: Sequence[int], default: str) -> list[Path]:
    """Where each seed's output goes.

    Rule: --out with "{seed}" is a pattern (str.format, e.g. "faces/img-{seed:04d}.png"); --out that is
    an existing folder or ends in "/" puts the default names (`default`, e.g. "cips-seed{seed}.png")
    there; any other --out is one file, allowed only with one seed. No --out: the default names here.
    """
    pattern = output_pattern(out, len(seeds), default)
    if pattern is None:
        return [Path(out)]
    try:
        paths = [Path(pattern.format(seed=s)) for s in seeds]
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"bad --out pattern {pattern!r}: only {{seed}} may be used ({e})") from None
    if len(set(paths)) != len(paths):
        raise UserError(f"--out pattern {pattern!r} gives the same file for several seeds; put {{seed}} in it")
    return paths


def prepare_output(path: str | os.PathLike, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> Path:
    """Check, before any work, that `path` has a supported type and can be written (by creating and
    removing a temporary file beside it: permission bits alone say nothing when running as root)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserError(f"cannot write {path}: the output must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    folder = path.parent
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"cannot write {path}: {folder} {problem}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None],
                 check: Callable[[Path], None] | None = None) -> None:
    """write(f) into a temporary file in the same folder, check(temporary path) if given, then rename
    it over `path`: readers never see a half-written file, and a failure leaves nothing behind."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode of a new file
        if check is not None:
            check(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_output(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Raw float32 values to .npy as they are; an [H, W, 3] image to .png as 8-bit RGB."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        atomic_write(path, lambda f: np.save(f, np.asarray(rgb, dtype=np.float32), allow_pickle=False))
    elif path.suffix.lower() == ".png":
        from PIL import Image  # only needed for PNG; pillow is a base dependency

        assert rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
        image = Image.fromarray(to_uint8(rgb))  # [H, W, 3] uint8 is RGB
        atomic_write(path, lambda f: image.save(f, format="PNG"))
    else:
        raise UserError(f"cannot write {path}: the output must end in {' or '.join(IMAGE_SUFFIXES)}")
