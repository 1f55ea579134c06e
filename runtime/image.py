"""From raw generator values to files: 8-bit conversion, output names, atomic PNG / .npy writes."""
from __future__ import annotations

import os
import re
import string
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cips_edge.core.errors import UserError
from cips_edge.core.files import atomic_write, clean_stale_temporaries, make_folders, shown, temporary_prefix

# zlib level of in-memory PNGs (up to STREAM_MIN_PIXELS): 3 deflates a 1024^2 render several times faster
# than Pillow's default 6 for a file about a fifth larger (docs/rendering.md)
PNG_LEVEL = 3

MAX_SIDE = 16_384  # pixels per side without --force: 16384^2 already takes ~4 GB of float32 output
IMAGE_SUFFIXES = (".png", ".npy")
# Room kept in a file name for what is added beside an output (a streamed render's OUT.partial.json).
NAME_RESERVE = len(".partial.json")
# {seed}'s format spec: fill and align (no path separator as fill), sign, #, 0, a width of at most
# three digits, grouping and an integer type; "04d", ">6", "x" pass, "{seed:.2f}" or nested fields do not.
_SEED_SPEC = re.compile(r"(?:[^/\\\0]?[<>=^])?[-+ ]?#?0?\d{0,3}[,_]?[bdnoxX]?")


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Raw values ([-1, 1] is the colour range) -> uint8: clip(round((v + 1) * 127.5), 0, 255).

    Computed in float64 so that the formula is applied as written; round is round-half-to-even."""
    return np.clip(np.rint((rgb.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of raw generator values against a reference, with the colour
    range [-1, 1] as the peak (so the same as for 8-bit images with peak 255, up to rounding)."""
    mse = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(4.0 / mse))


def psnr_uint8(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two 8-bit images (peak 255); inf when equal."""
    mse = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def check_image_size(width: int, height: int, force: bool = False) -> None:
    if width < 1 or height < 1:
        raise UserError(f"image size must be at least 1 x 1 pixels, got {width} x {height}")
    if not force and max(width, height) > MAX_SIDE:
        raise UserError(f"image size {width} x {height} is beyond {MAX_SIDE} pixels per side; "
                        "pass force if you mean it", params="force")


def output_pattern(out: str | None, count: int, default: str, made: list[Path] | None = None) -> str | None:
    """The str.format pattern (with {seed}) that names each seed's output, or None when --out is one
    file (allowed only for one seed); a folder --out is created, and the folders made for it are added
    to `made` (the deepest first: core.files.remove_empty_folders undoes them). The rule is output_paths'."""
    if out is None:
        pattern = default
    elif "{" in out or "}" in out:
        pattern = out
    elif out.endswith(("/", os.sep)) or _is_dir(Path(out), out):
        folder = Path(out)
        try:
            new = make_folders(folder)
        except OSError as e:
            raise UserError(f"cannot create the folder {shown(folder)}: {e.strerror or e}") from None
        if made is not None:
            made.extend(new)
        pattern = str(folder / default)
    elif count == 1:
        return None
    else:
        raise UserError(f"with {count} seeds, out must be a folder or a pattern with {{seed}} "
                        f"(e.g. 'img-{{seed}}.png'), not one file name: {shown(out)}", params="out")
    check_seed_pattern(pattern)
    return pattern


def output_paths(out: str | None, seeds: Sequence[int], default: str, made: list[Path] | None = None) -> list[Path]:
    """Where each seed's output goes.

    Rule: --out with "{seed}" is a pattern (e.g. "faces/img-{seed:04d}.png": {seed} with an optional
    integer format spec, nothing else); --out that is an existing folder or ends in "/" puts the default
    names (`default`, e.g. "cips-seed{seed}.png") there, creating the folder if needed; any other --out
    is one file, allowed only with one seed. No --out: the default names here. made: as output_pattern's.
    """
    pattern = output_pattern(out, len(seeds), default, made)
    if pattern is None:
        return [Path(out)]
    paths = [Path(pattern.format(seed=s)) for s in seeds]
    if len(set(paths)) != len(paths):
        raise UserError(f"out pattern {shown(pattern)!r} gives the same file for several seeds; put {{seed}} in it",
                        params="out")
    return paths


def check_seed_pattern(pattern: str) -> None:
    """UserError unless every replacement field of `pattern` is {seed} or {seed:SPEC} for an integer
    SPEC such as 04d: no attributes, indexes, conversions, other names or nested fields."""
    bad = f"bad out pattern {shown(pattern)!r}: only {{seed}} or {{seed:FORMAT}} (e.g. {{seed:04d}}) may be used"
    try:
        fields = [(name, conversion, spec) for _, name, spec, conversion in string.Formatter().parse(pattern)
                  if name is not None]
    except ValueError as e:  # an unmatched brace
        raise UserError(f"{bad} ({e}; write {{{{ and }}}} for literal braces)", params="out") from None
    for name, conversion, spec in fields:
        field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name != "seed" or conversion is not None or not _SEED_SPEC.fullmatch(spec or ""):
            raise UserError(f"{bad}, not {shown(field)}", params="out")
        try:
            format(0, spec)
        except ValueError:
            raise UserError(f"{bad}, not {shown(field)}", params="out") from None


def _is_dir(path: Path, what: str | os.PathLike) -> bool:
    try:
        return path.is_dir()
    except OSError as e:  # a name too long for the file system, say
        raise UserError(f"cannot write {shown(what)}: {e.strerror or e}") from None


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def prepare_output(path: str | os.PathLike, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> Path:
    """Check, before any work, that `path` has a supported type and can be written (by creating and
    removing a temporary file beside it: permission bits alone say nothing when running as root).
    Stale temporary files of earlier, killed writes in that folder are removed (clean_stale_temporaries)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        if path.name.lower() in suffixes:  # ".png" alone is a hidden file without a type to Python
            raise UserError(f"cannot write {shown(path)}: give the file a name before its type (e.g. image{path.name})")
        raise UserError(f"cannot write {shown(path)}: the output must end in {' or '.join(suffixes)}")
    if _is_dir(path, path):
        raise UserError(f"cannot write {shown(path)}: it is a folder")
    folder = path.parent
    if not _is_dir(folder, path):
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"cannot write {shown(path)}: {shown(folder)} {problem}")
    limit = _name_max(folder) - NAME_RESERVE
    if len(os.fsencode(path.name)) > limit:
        raise UserError(f"cannot write {shown(path)}: its name is {len(os.fsencode(path.name))} bytes long; "
                        f"at most {limit} fit this folder's file system")
    clean_stale_temporaries(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {shown(path)}: {e.strerror or e}") from None
    return path


def write_output(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Raw float32 values to .npy as they are; an [H, W, 3] image to .png as 8-bit RGB (given as raw
    values, or as uint8 colours already)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        assert rgb.dtype != np.uint8, "a .npy output holds raw values"
        atomic_write(path, lambda f: np.save(f, np.asarray(rgb, dtype=np.float32), allow_pickle=False))
    elif path.suffix.lower() == ".png":
        from PIL import Image  # only needed for PNG; pillow is a base dependency

        assert rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
        image = Image.fromarray(rgb if rgb.dtype == np.uint8 else to_uint8(rgb))  # [H, W, 3] uint8 is RGB
        atomic_write(path, lambda f: image.save(f, format="PNG", compress_level=PNG_LEVEL))
    else:
        raise UserError(f"cannot write {path}: the output must end in {' or '.join(IMAGE_SUFFIXES)}")
