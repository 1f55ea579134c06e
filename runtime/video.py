"""Frame sequences to files, atomically: GIF (Pillow), MP4 (H.264 through PyAV, an optional extra) or
.npy (the raw float32 frames, [frames, H, W, 3]).

Frames arrive one at a time as raw generator values [H, W, 3] and are written as they come (a GIF keeps
its frames as 1-byte palette images until the end), so the renders of a long sequence never sit in
memory together. The file appears under its name only when complete: a failure or Ctrl-C mid-way leaves
nothing (runtime/image.py atomic_write).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cips_edge.core.errors import UserError
from cips_edge.core.files import atomic_write

from .image import prepare_output, to_uint8

VIDEO_SUFFIXES = (".gif", ".mp4", ".npy")
MAX_FRAMES = 100_000  # per sequence: 69 minutes at 24 fps; more is a typo that would run for days
GIF_MAX_FPS = 50.0  # GIF delays are whole hundredths of a second, and players slow down delays below 2
MP4_CRF = 18  # x264 constant-rate factor: 18 is close to visually lossless at a few hundred kB per second
MP4_INSTALL = "pip install 'cips-edge[video]' (PyAV)"


def _av():
    try:
        import av
    except ImportError:
        raise UserError(f"writing .mp4 needs PyAV: {MP4_INSTALL}; or write a .gif") from None
    return av


def prepare_video(path: str | os.PathLike, width: int, height: int, fps: float) -> Path:
    """Check, before any rendering, that the sequence can be written: suffix, folder, fps, and for MP4
    that PyAV is installed and the size is even (H.264 in yuv420p halves the colour resolution)."""
    path = prepare_output(path, VIDEO_SUFFIXES)
    kind = path.suffix.lower()
    if not math.isfinite(fps) or fps <= 0:
        raise UserError(f"fps must be a positive number, got {fps:g}", params="fps")
    if kind == ".gif" and fps > GIF_MAX_FPS:
        raise UserError(f"fps {fps:g} is beyond what GIF players show ({GIF_MAX_FPS:g}); use .mp4 for more",
                        params="fps")
    if kind == ".mp4":
        # the options first: the same answer for them whether or not PyAV is installed
        if width % 2 or height % 2:
            raise UserError(f"an .mp4 (H.264, yuv420p) needs an even width and height, got {width} x {height}")
        _av()
    return path


def check_frames(frames: int) -> None:
    """A one-line UserError unless a sequence's frame count is from 2 to MAX_FRAMES."""
    if frames < 2:
        raise UserError(f"frames must be at least 2, got {frames}", params="frames")
    if frames > MAX_FRAMES:
        raise UserError(f"frames {frames:,} is beyond {MAX_FRAMES:,} per sequence (69 minutes at 24 fps); "
                        "render a long walk or zoom as several sequences", params="frames")


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], count: int, width: int, height: int,
                fps: float) -> None:
    """Write `count` raw [height, width, 3] frames to path (.gif, .mp4 or .npy) at fps frames per second."""
    path = Path(path)
    kind = path.suffix.lower()
    writers = {".gif": _write_gif, ".mp4": _write_mp4, ".npy": _write_npy}
    if kind not in writers:
        raise UserError(f"cannot write {path}: the output must end in {' or '.join(VIDEO_SUFFIXES)}")

    def checked():
        n = 0
        for frame in frames:
            assert frame.shape == (height, width, 3), (frame.shape, height, width)
            n += 1
            yield frame
        assert n == count, (n, count)

    atomic_write(path, lambda f: writers[kind](f, checked(), count, width, height, fps))


def _write_gif(f: BinaryIO, frames: Iterable[np.ndarray], count: int, width: int, height: int, fps: float) -> None:
    from PIL import Image

    # each frame gets its own 256-colour palette (median cut, no dithering: the generator's images are
    # smooth, and undithered frames compress several times smaller)
    images = [Image.fromarray(to_uint8(rgb)).quantize(256, method=Image.Quantize.MEDIANCUT) for rgb in frames]
    delay = 10 * max(2, round(100 / fps))  # ms, a whole number of hundredths as GIF stores it
    images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=delay, loop=0,
                   disposal=1, optimize=False)


def _write_mp4(f: BinaryIO, frames: Iterable[np.ndarray], count: int, width: int, height: int, fps: float) -> None:
    av = _av()
    with av.open(f, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(MP4_CRF)}
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(to_uint8(rgb), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder


def _write_npy(f: BinaryIO, frames: Iterable[np.ndarray], count: int, width: int, height: int, fps: float) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (count, height, width, 3)}
    np.lib.format.write_array_header_1_0(f, header)
    for rgb in frames:
        f.write(np.ascontiguousarray(rgb, dtype=np.float32).tobytes())
