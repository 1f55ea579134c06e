#!/usr/bin/env python3
"""Make the Noto Color Emoji data set: every colour bitmap in the font's CBDT table, composited on
white, padded to a centred square (nothing clipped), resized to --size with Lanczos, one PNG each;
exact duplicates dropped; optionally also one .zip of the PNGs (what `cips train --data` can take).

    python recipes/emoji/make_dataset.py /work/emoji-data/emoji-64 --size 64 --zip

Needs fonttools (pip install fonttools) and the font (apt-get install fonts-noto-color-emoji).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cips_edge.imagefolder import on_white, prepare_image
from cips_edge.core.errors import UserError
from cips_edge.core.files import atomic_write

DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
PNG_FORMATS = (17, 18, 19)  # CBDT glyph formats that hold PNG data (small, big, no metrics)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times, so the same images give the same zip bytes
NOTICE_NAME = "NOTICE.txt"  # travels with the images (folder and zip); loaders skip non-image files
NOTICE = """\
Colour emoji bitmaps of Noto Color Emoji (https://github.com/googlefonts/noto-emoji), {font_version}.
Copyright Google Inc. The emoji artwork is licensed under the Apache License, Version 2.0
(https://www.apache.org/licenses/LICENSE-2.0); flag images (from region-flags) are in the public domain.
The font file itself is under the SIL Open Font License 1.1; it is not redistributed here.
Made by cips-edge recipes/emoji/make_dataset.py: each bitmap composited on white, padded to a centred
square, resized to {size}x{size} (Lanczos); exact duplicates dropped.
"""


@dataclass
class DatasetStats:
    written: int
    duplicates: int  # bitmaps identical (after compositing on white) to an earlier glyph's
    skipped: int  # glyphs whose bitmap is not PNG data
    out_dir: Path
    zip_path: Path | None


def font_bitmaps(font_path: str | os.PathLike) -> Iterator[tuple[str, Image.Image]]:
    """(glyph name, decoded bitmap) for every PNG glyph of the font's largest CBDT strike, in glyph order.
    Glyphs whose bitmap is not PNG are yielded as (name, None)."""
    try:
        from fontTools.ttLib import TTFont, TTLibError  # a recipe-only dependency
    except ImportError:
        raise ValueError("this recipe needs fonttools: pip install fonttools") from None
    try:
        font = TTFont(font_path, lazy=True)
    except TTLibError as e:
        raise ValueError(f"{font_path} is not a font fontTools can read ({e})") from None
    if "CBDT" not in font or "CBLC" not in font:
        raise ValueError(f"{font_path} has no CBDT colour bitmaps (is it Noto Color Emoji?)")
    ppem = [s.bitmapSizeTable.ppemY for s in font["CBLC"].strikes]
    strike = font["CBDT"].strikeData[int(np.argmax(ppem))]
    glyph_id = {name: i for i, name in enumerate(font.getGlyphOrder())}
    for name in sorted(strike, key=glyph_id.__getitem__):
        bitmap = strike[name]
        if int(type(bitmap).__name__.rsplit("_", 1)[-1]) not in PNG_FORMATS:
            yield name, None
            continue
        image = Image.open(io.BytesIO(bitmap.imageData))
        image.load()
        yield name, image


def font_version(font_path: str | os.PathLike) -> str:
    """The font's version string (name ID 5), for the NOTICE; 'unknown version' if unreadable."""
    try:
        from fontTools.ttLib import TTFont, TTLibError
    except ImportError:  # a separate step: the except clause below names TTLibError
        return "unknown version"
    try:
        return TTFont(font_path, lazy=True)["name"].getDebugName(5) or "unknown version"
    except (OSError, KeyError, TTLibError):
        return "unknown version"


def emoji_image(image: Image.Image, size: int) -> np.ndarray:
    """One emoji bitmap -> uint8 [size, size, 3]: on white, padded (not cropped) to a centred square."""
    return prepare_image(image, size, fit="pad")


def file_name(glyph_name: str) -> str:
    """The glyph's name (unique in a font, fixed for a font version) made safe for any file system."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", glyph_name) + ".png"


def make_dataset(font_path: str | os.PathLike, out_dir: str | os.PathLike, size: int,
                 zip_path: str | os.PathLike | None = None) -> DatasetStats:
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} exists and is not an empty folder")
    # Write everything beside the destination, then rename: an interrupted run leaves no half set.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    tmp.mkdir()  # plain mkdir: the usual permissions (mkdtemp would make it private)
    seen: set[bytes] = set()
    written: list[str] = []
    duplicates = skipped = 0
    try:
        for glyph, bitmap in font_bitmaps(font_path):
            if bitmap is None:
                skipped += 1
                continue
            # Duplicates are judged on the full-resolution picture as it will be seen (on white), so
            # glyphs that differ only in invisible (fully transparent) pixels count as one.
            full = on_white(bitmap)
            key = hashlib.sha256(f"{full.size}".encode() + full.tobytes()).digest()
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            name = file_name(glyph)
            assert not (tmp / name).exists(), f"two glyphs map to the file name {name}"
            Image.fromarray(emoji_image(bitmap, size)).save(tmp / name, optimize=True)
            written.append(name)
        if not written:
            raise ValueError(f"{font_path} holds no PNG colour bitmaps")
        (tmp / NOTICE_NAME).write_text(NOTICE.format(font_version=font_version(font_path), size=size))
        if zip_path is not None:
            write_zip(tmp, sorted(written) + [NOTICE_NAME], Path(zip_path))
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DatasetStats(len(written), duplicates, skipped, out_dir, Path(zip_path) if zip_path else None)


def write_zip(folder: Path, names: list[str], zip_path: Path) -> None:
    """The files at the zip's root, stored (PNG is already deflated), in the given order with fixed
    times: the same images give byte-identical zips. Written to a temporary name, then renamed."""
    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            for name in names:
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                info.external_attr = 0o644 << 16
                zf.writestr(info, (folder / name).read_bytes())

    zip_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(zip_path, write)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="folder to create (must not exist or be empty)")
    parser.add_argument("--font", type=Path, default=DEFAULT_FONT, help=f"font file (default {DEFAULT_FONT})")
    parser.add_argument("--size", type=int, default=64, help="side of the square images (default 64)")
    parser.add_argument("--zip", action="store_true", help="also write OUT_DIR.zip holding the PNGs")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be positive")
    if not args.font.is_file():
        print(f"error: font not found: {args.font} (apt-get install fonts-noto-color-emoji)", file=sys.stderr)
        return 1
    zip_path = args.out_dir.with_name(args.out_dir.name + ".zip") if args.zip else None
    try:
        stats = make_dataset(args.font, args.out_dir, args.size, zip_path)
    except (OSError, ValueError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {stats.written} images of {args.size}x{args.size} to {stats.out_dir} "
          f"({stats.duplicates} exact duplicates dropped, {stats.skipped} non-PNG glyphs skipped)")
    if stats.zip_path is not None:
        print(f"zip: {stats.zip_path} ({stats.zip_path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
