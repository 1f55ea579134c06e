"""Latent walks: frames that pass through the images of several latents in turn.

Two ways between two latents:
- "z": spherical interpolation (slerp) of z: z(t) = sin((1-t) a) / sin a z1 + sin(t a) / sin a z2, with a
  the angle between z1 and z2. Gaussian latents of high dimension lie near a sphere; slerp stays near
  it, where a straight line would pass through the less likely middle (Shoemake 1985; White 2016).
- "w": linear interpolation of the mapped latents, w(t) = (1-t) w1 + t w2, then truncation. W is the
  space the synthesis network reads (StyleGAN's perceptual-path-length argument): this needs the mapped
  latent out of the model (runtime/wspace.py).
Both are computed in float64 and give the key latents exactly at t = 0 and t = 1.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from cips_edge.core.errors import UserError
from .video import check_frames
from .latents import parse_seeds
from .model import CIPSModel
from .render import render_image

SPACES = ("z", "w")


def parse_keys(specs: Sequence[str]) -> list[int]:
    """Key seeds in the order given, repeats kept (a walk may return to a seed): '1,2,1', '0-4'."""
    return [seed for spec in specs for part in str(spec).split(",") if part.strip() for seed in parse_seeds([part])]


def lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """(1-t) a + t b in float64 -> float32; exactly a at t = 0 and b at t = 1."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return ((1.0 - t) * a64 + t * b64).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between a and b, applied to the vectors as they are (not normalised), as
    usual for GAN latents; lerp when the two point the same way (no angle to divide by)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cos = np.dot(a64, b64) / (np.linalg.norm(a64) * np.linalg.norm(b64))
    angle = float(np.arccos(np.clip(cos, -1.0, 1.0)))
    if np.sin(angle) < 1e-6:
        return lerp(a, b, t)
    s = np.sin(angle)
    return (np.sin((1.0 - t) * angle) / s * a64 + np.sin(t * angle) / s * b64).astype(np.float32)


def walk_stops(keys: int, frames: int, loop: bool = False) -> list[tuple[int, int, float]]:
    """(from key, to key, t) of every frame. Without loop the frames span key 0 to the last key, both
    shown; with loop the walk returns to key 0, which is not repeated at the end (the GIF cycles)."""
    if keys < 2:
        raise UserError(f"a walk needs at least 2 seeds, got {keys}")
    check_frames(frames)
    segments = keys if loop else keys - 1
    stops = []
    for k in range(frames):
        u = k * segments / (frames if loop else frames - 1)  # exact at every key frame k * segments / N
        i = min(int(u), segments - 1)
        stops.append((i, (i + 1) % keys, u - i))
    return stops


def check_space(space: str) -> str:
    if space not in SPACES:
        raise UserError(f"unknown space {space!r}: choose z (slerp of z) or w (lerp of w)", params="space")
    return space


def walk_latents(keys: Sequence[np.ndarray], frames: int, loop: bool = False, space: str = "z") -> list[np.ndarray]:
    """The latent of every frame: slerp between z keys for space "z", lerp between w keys for "w"."""
    check_space(space)
    step = slerp if space == "z" else lerp
    return [step(keys[i], keys[j], t) for i, j, t in walk_stops(len(keys), frames, loop)]


def walk_frames(model: CIPSModel, zs: Sequence[np.ndarray], frames: int, width: int, height: int,
                loop: bool = False, space: str = "z", truncation: float = 1.0,
                chunk: int | None = None) -> Iterator[np.ndarray]:
    """Raw RGB [height, width, 3] of each frame of the walk through the latents zs [S] (full frame).
    In space "w" the keys are the mapped zs and truncation is applied to each interpolated w. Bad
    values fail here, before the first frame is rendered; the frames are rendered as they are taken."""
    walk_stops(len(zs), frames, loop)
    if check_space(space) == "w":
        from .wspace import WSpaceModel

        renderer = WSpaceModel(model)
        keys = [renderer.mapped(z) for z in zs]
    else:
        renderer, keys = model, list(zs)
    latents = walk_latents(keys, frames, loop, space)
    return (render_image(renderer, latent, height, width, truncation=truncation, chunk=chunk) for latent in latents)
