"""PNG written band by band: each band of rows is filtered and deflated on its own, so bands can be
encoded in parallel, written as they finish, and a render can resume at any band boundary.

A PNG is the signature, IHDR, IDAT chunks whose data concatenated form one zlib stream, and IEND. The
zlib stream here is a 2-byte header, then every band's raw deflate output, then the Adler-32 of all
the uncompressed scanlines. Each band gets a fresh compressor that ends with a sync flush (an empty
stored block, so the band ends on a byte boundary and its blocks are not final), and the last band
ends with Z_FINISH (the final block): concatenated, that is one valid deflate stream (pigz does the
same). The Adler-32 of the whole is combined from the bands' own. A band's first row uses only the
filters that do not look at the row above (None, Sub), so no band depends on another.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 2**31 - 1  # the PNG spec's limit on width and height
LEVEL = 6  # zlib level of streamed PNGs: Pillow's default (the bands deflate in parallel; docs/rendering.md)
_ADLER_BASE = 65521
_MAX_CHUNK = 1 << 30  # IDAT data per chunk (the spec allows 2**31 - 1)
RECORD_KEY = b"cips-edge render"  # tEXt keyword of a streamed render's parameters (runtime/stream.py)


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def header(width: int, height: int, record: str | None = None) -> bytes:
    """Signature and IHDR of an 8-bit RGB, non-interlaced image; with record, a tEXt chunk after it
    holding that text under RECORD_KEY (ASCII)."""
    assert 1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE, (width, height)
    head = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return head if record is None else head + chunk(b"tEXt", RECORD_KEY + b"\0" + record.encode("ascii"))


def read_record(path) -> str | None:
    """The text a header() record put in the PNG at path, or None (no such chunk before the image data,
    or not a PNG). Reads the chunks before the first IDAT only."""
    try:
        with open(path, "rb") as f:
            if f.read(len(SIGNATURE)) != SIGNATURE:
                return None
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND") or length > 1 << 20:
                    return None
                data = f.read(length)
                f.seek(4, 1)  # the CRC
                if kind == b"tEXt" and data.startswith(RECORD_KEY + b"\0"):
                    return data[len(RECORD_KEY) + 1:].decode("ascii", "replace")
    except OSError:
        return None


def zlib_header(level: int = LEVEL) -> bytes:
    """The 2 bytes that start a zlib stream at this level (what zlib itself writes)."""
    return zlib.compress(b"", level)[:2]


def idat(data: bytes) -> bytes:
    """data as IDAT chunks (one unless it is beyond 1 GiB)."""
    return b"".join(chunk(b"IDAT", data[i:i + _MAX_CHUNK]) for i in range(0, max(len(data), 1), _MAX_CHUNK))


def trailer(adler: int) -> bytes:
    """The zlib stream's Adler-32 in a last IDAT, then IEND."""
    return chunk(b"IDAT", struct.pack(">I", adler)) + chunk(b"IEND", b"")


def adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """Adler-32 of A + B from adler32(A), adler32(B) and len(B) (zlib has it in C, not in Python).

    With s1 = 1 + sum of bytes and s2 = sum of the running s1: s1(AB) = s1(A) + s1(B) - 1 and
    s2(AB) = s2(A) + s2(B) + len(B) * (s1(A) - 1), all modulo 65521."""
    a1, b1 = adler1 & 0xFFFF, adler1 >> 16
    a2, b2 = adler2 & 0xFFFF, adler2 >> 16
    a = (a1 + a2 - 1) % _ADLER_BASE
    b = (b1 + b2 + length2 * (a1 - 1)) % _ADLER_BASE
    return (b << 16) | a


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def filter_rows(pixels: np.ndarray) -> np.ndarray:
    """Scanlines of pixels [h, w, 3] uint8 -> [h, 1 + 3w] uint8, each row prefixed by its filter type.

    Per row, the filter whose output has the smallest sum of absolute values taken as signed bytes
    (the PNG spec's recommended heuristic); row 0 chooses between None and Sub only."""
    h, w, _ = pixels.shape
    x = pixels.reshape(h, 3 * w).astype(np.int16)
    a = np.zeros_like(x)
    a[:, 3:] = x[:, :-3]  # left (0 before the first pixel)
    b = np.zeros_like(x)
    b[1:] = x[:-1]  # above
    c = np.zeros_like(x)
    c[:, 3:] = b[:, :-3]  # above-left
    candidates = (lambda: x - a, lambda: x - b, lambda: x - ((a + b) >> 1), lambda: x - _paeth(a, b, c))
    best = x.copy()  # filter 0, None
    kind = np.zeros(h, dtype=np.uint8)
    score = np.minimum(best, 256 - best).sum(axis=1)
    for k, make in enumerate(candidates, start=1):  # one at a time: a band's temporaries stay a few copies
        f = make() & 0xFF
        s = np.minimum(f, 256 - f).sum(axis=1)
        if k >= 2:
            s[0] = np.iinfo(s.dtype).max  # the row above belongs to another band
        better = s < score
        kind[better], score[better], best[better] = k, s[better], f[better]
    out = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    out[:, 0] = kind
    out[:, 1:] = best
    return out


def encode_band(pixels: np.ndarray, last: bool, level: int = LEVEL) -> tuple[bytes, int, int]:
    """Rows [h, w, 3] uint8 -> (raw deflate bytes, Adler-32 and length of the filtered scanlines).

    The bytes end on a byte boundary with no final block unless `last`, so bands concatenate."""
    raw = filter_rows(pixels).tobytes()
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: no header, no checksum
    data = compressor.compress(raw) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return data, zlib.adler32(raw), len(raw)
