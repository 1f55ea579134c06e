"""Latents: seeds (the rule itself is cips_edge.core.seeds) and seed lists, latents from .npy files."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable

import numpy as np

from .coords import read_npy
from cips_edge.core.errors import UserError
from cips_edge.core.seeds import latent_for_seed  # noqa: F401 (re-exported: the runtime's API)

MAX_SEEDS = 10_000  # more files than this from one command is almost surely a typo (e.g. 0-1000000)
# ... unless the seeds go to a Dask cluster (--cluster, --scheduler): a data set of images. The list
# of seeds is then held by the client, about 100 bytes a seed.
CLUSTER_MAX_SEEDS = 10_000_000
_RANGE = re.compile(r"^(\d+)-(\d+)$")


def parse_seeds(specs: Iterable[str | int], limit: int = MAX_SEEDS) -> list[int]:
    """'7', '0-15', '1,2,5-7' (and several of them) -> seeds in order, duplicates dropped; at most
    `limit` of them."""
    more = "" if limit >= CLUSTER_MAX_SEEDS else f" (up to {CLUSTER_MAX_SEEDS} with cluster, on a Dask cluster)"
    cluster = ("cluster",) if more else ()
    seeds: list[int] = []
    for spec in specs:
        for part in str(spec).split(","):
            part = part.strip()
            if part.isdigit():
                seeds.append(int(part))
            elif m := _RANGE.match(part):
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo:
                    raise UserError(f"seed range {part!r} is empty (write low-high)")
                if hi - lo + 1 > limit:
                    raise UserError(f"seed range {part!r} has {hi - lo + 1} seeds; at most {limit} per command{more}",
                                    params=cluster)
                seeds.extend(range(lo, hi + 1))
            else:
                raise UserError(f"bad seed {part!r}: seeds are non-negative integers, ranges like 0-15, "
                                "or comma lists like 1,2,5-7")
    unique = list(dict.fromkeys(seeds))
    if len(unique) > limit:
        raise UserError(f"{len(unique)} seeds; at most {limit} per command{more}", params=cluster)
    return unique


def load_latent(path: str | os.PathLike, style_dim: int) -> np.ndarray:
    """A .npy latent shaped (style_dim,) or (1, style_dim) -> [style_dim] float32."""
    z = read_npy(path, "latent")
    if z.shape not in ((style_dim,), (1, style_dim)):
        raise UserError(f"latent in {path} has shape {z.shape}; the model expects ({style_dim},) or (1, {style_dim})")
    if z.dtype.kind not in "iuf":
        raise UserError(f"latent in {path} must hold real numbers; got dtype {z.dtype}")
    z = z.reshape(style_dim).astype(np.float32)
    if not np.isfinite(z).all():
        raise UserError(f"latent in {path} holds NaN or infinite values")
    return z
