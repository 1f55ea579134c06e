"""Cache of data-set Inception features, keyed by what determines them: the chosen files (names, sizes,
mtimes or CRCs), the evaluation size, the image convention and the feature extractor's weights."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from cips_edge.core.files import atomic_write

CACHE_ENV = "CIPS_EDGE_CACHE"
FORMAT_VERSION = 1  # bump when the preprocessing or the file layout changes: old entries are then ignored


def default_cache_dir() -> Path:
    """$CIPS_EDGE_CACHE, else ~/.cache/cips-edge."""
    return Path(os.environ.get(CACHE_ENV, "~/.cache/cips-edge")).expanduser()


def feature_cache_key(data_fingerprint: str, size: int, fit: str, extractor: str) -> str:
    text = json.dumps([FORMAT_VERSION, data_fingerprint, size, fit, extractor])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / "features" / f"{key}.npz"


def load_features(cache_dir: str | os.PathLike, key: str) -> np.ndarray | None:
    """The cached features [N, D], or None when absent or unreadable (then it is recomputed and rewritten)."""
    path = cache_path(cache_dir, key)
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["features"]
    except (OSError, KeyError, ValueError):
        return None


def save_features(cache_dir: str | os.PathLike, key: str, features: np.ndarray, meta: dict) -> Path:
    """Write atomically (temporary file, then rename), so a reader never sees half an entry."""
    path = cache_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, features=features, meta=np.array(json.dumps(meta))))
    return path
