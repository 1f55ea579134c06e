"""Tiled BigTIFF written tile by tile: header first, then the compressed tiles as they finish, then the
directory (IFD) at the end, once every tile's offset and size is known.

Why our own writer and not tifffile: tifffile writes tiles from an iterator, but in one call; a file
left half-written cannot be continued. Here the file is plain appends until the last tile, so an
interrupted render resumes by truncating to the last finished tile (runtime/stream.py). BigTIFF (64-bit
offsets) always, so any size works; 8-bit RGB, Adobe deflate (zlib) with horizontal differencing
(predictor 2), 256 x 256 tiles: what libtiff, GDAL, vips, tifffile and slide viewers read.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

TILE = 256  # pixels per tile side (a multiple of 16, as TIFF requires)
MAX_SIDE = 2**32 - 1  # width and height are 32-bit in the directory
LEVEL = 6
HEADER_BYTES = 16
_ASCII, _SHORT, _LONG, _LONG8 = 2, 3, 4, 16  # TIFF field types
_SIZE = {_SHORT: 2, _LONG: 4, _LONG8: 8}
_CODE = {_SHORT: "H", _LONG: "I", _LONG8: "Q"}
RECORD_PREFIX = "cips-edge render "  # ImageDescription of a streamed render: this, then its parameters


def header(ifd_offset: int = 0) -> bytes:
    """Little-endian BigTIFF header: 'II', 43, offset size 8, 0, offset of the first IFD (0 until the
    tiles are all written: readers then see an empty file, not a wrong one)."""
    return struct.pack("<2sHHHQ", b"II", 43, 8, 0, ifd_offset)


def encode_tiles(pixels: np.ndarray, tile: int = TILE, level: int = LEVEL) -> list[bytes]:
    """A block of whole tiles in one tile row, [<=tile, <=k*tile, 3] uint8 -> each tile compressed,
    left to right. Tiles past the image's right or bottom edge are padded with zeros (TIFF tiles
    are always full size); readers crop them."""
    h, w, _ = pixels.shape
    assert h <= tile, (h, tile)
    out = []
    for left in range(0, w, tile):
        t = np.zeros((tile, tile, 3), dtype=np.uint8)
        part = pixels[:, left:left + tile]
        t[:h, :part.shape[1]] = part
        rows = t.reshape(tile, 3 * tile)
        diff = rows.copy()
        diff[:, 3:] -= rows[:, :-3]  # predictor 2: each sample minus the same channel to its left (mod 256)
        out.append(zlib.compress(diff.tobytes(), level))
    return out


def directory(width: int, height: int, offsets: list[int], counts: list[int], at: int, tile: int = TILE,
              record: str | None = None) -> bytes:
    """The image file directory placed at byte `at` (a multiple of 8), followed by the arrays that do
    not fit in its entries (tile offsets and byte counts); with record, an ImageDescription of
    RECORD_PREFIX and that text (ASCII)."""
    assert at % 8 == 0 and len(offsets) == len(counts), (at, len(offsets), len(counts))
    assert 1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE, (width, height)
    fields = [  # (tag, type, values), in tag order
        (256, _LONG, [width]),  # ImageWidth
        (257, _LONG, [height]),  # ImageLength
        (258, _SHORT, [8, 8, 8]),  # BitsPerSample
        (259, _SHORT, [8]),  # Compression: Adobe deflate
        (262, _SHORT, [2]),  # PhotometricInterpretation: RGB
        *([(270, _ASCII, (RECORD_PREFIX + record).encode("ascii") + b"\0")] if record is not None else []),
        (277, _SHORT, [3]),  # SamplesPerPixel
        (284, _SHORT, [1]),  # PlanarConfiguration: RGBRGB...
        (317, _SHORT, [2]),  # Predictor: horizontal differencing
        (322, _LONG, [tile]),  # TileWidth
        (323, _LONG, [tile]),  # TileLength
        (324, _LONG8, offsets),  # TileOffsets
        (325, _LONG8, counts),  # TileByteCounts
    ]
    entries, extra = [], b""
    extra_at = at + 8 + 20 * len(fields) + 8  # after the count, the entries and the next-IFD offset
    for tag, kind, values in fields:
        data = values if kind == _ASCII else struct.pack(f"<{len(values)}{_CODE[kind]}", *values)
        if len(data) <= 8:
            value = data.ljust(8, b"\0")
        else:
            value = struct.pack("<Q", extra_at + len(extra))
            extra += data + b"\0" * (-len(data) % 8)
        entries.append(struct.pack("<HHQ", tag, kind, len(values)) + value)
    return struct.pack("<Q", len(fields)) + b"".join(entries) + struct.pack("<Q", 0) + extra


def read_record(path) -> str | None:
    """The text a directory() record put in the BigTIFF at path, or None (none, or not such a file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES or head[:4] != b"II+\0":
                return None
            f.seek(struct.unpack("<Q", head[8:])[0])
            count = struct.unpack("<Q", f.read(8))[0]
            if count > 64:
                return None
            for _ in range(count):
                tag, kind, n, value = struct.unpack("<HHQ8s", f.read(20))
                if tag == 270 and kind == _ASCII:
                    if n > 8:
                        f.seek(struct.unpack("<Q", value)[0])
                        value = f.read(n) if n <= 1 << 20 else b""
                    text = value[:n].rstrip(b"\0").decode("ascii", "replace")
                    return text[len(RECORD_PREFIX):] if text.startswith(RECORD_PREFIX) else None
    except (OSError, struct.error):
        return None
    return None
