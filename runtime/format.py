"""The cips-edge ONNX format: graph names and metadata keys, written by export and read here.

One module holds both sides so that writer and reader cannot drift; docs/onnx-format.md describes it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from cips_edge.config import GeneratorConfig  # plain dataclass, no torch

from .errors import UserError

FORMAT = "cips-edge-onnx"
FORMAT_VERSION = 1
INPUTS = ("z", "coords", "truncation")  # [B, style_dim], [B, N, 2], [B]; all float32
OUTPUT = "rgb"  # [B, N, 3] float32, raw generator values (about [-1, 1])

KEY_FORMAT = "cips.format"
KEY_VERSION = "cips.format_version"
KEY_CONFIG = "cips.config"
KEY_STYLE_DIM = "cips.style_dim"
KEY_W_AVG = "cips.w_avg"
KEY_PROVENANCE = "cips.provenance"


@dataclass(frozen=True)
class ModelInfo:
    """What the metadata of a cips-edge ONNX file says."""

    config: GeneratorConfig
    style_dim: int
    w_avg: np.ndarray  # [style_dim] float32, the mean mapped latent that truncation pulls towards
    provenance: dict  # source checkpoint, kind, step, images_seen, exported_at, versions
    format_version: int


def metadata_props(config: GeneratorConfig, w_avg: np.ndarray, provenance: dict) -> dict[str, str]:
    """The metadata_props that export writes (string values, as ONNX requires)."""
    w_avg = np.asarray(w_avg, dtype=np.float32).reshape(-1)
    assert w_avg.shape == (config.style_dim,), w_avg.shape
    return {
        KEY_FORMAT: FORMAT,
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_CONFIG: json.dumps(config.to_dict()),
        KEY_STYLE_DIM: str(config.style_dim),
        # float32 -> Python float is exact, and repr round-trips: the list reads back bit-identical.
        KEY_W_AVG: json.dumps([float(v) for v in w_avg]),
        KEY_PROVENANCE: json.dumps(provenance),
    }


def parse_metadata(meta: dict[str, str], source: str) -> ModelInfo:
    """Validate a file's metadata; every problem is a one-line UserError naming the file."""
    if meta.get(KEY_FORMAT) != FORMAT:
        raise UserError(f"{source} is an ONNX file but not a cips-edge model (no {KEY_FORMAT}={FORMAT} "
                        "metadata); make one with `cips export`")
    try:
        version = int(meta[KEY_VERSION])
        if version > FORMAT_VERSION:
            raise UserError(f"{source} has format version {version}; this cips-edge reads up to "
                            f"{FORMAT_VERSION}: upgrade cips-edge")
        config = GeneratorConfig.from_dict(json.loads(meta[KEY_CONFIG]))
        style_dim = int(meta[KEY_STYLE_DIM])
        w_avg = np.asarray(json.loads(meta[KEY_W_AVG]), dtype=np.float32)
        provenance = json.loads(meta.get(KEY_PROVENANCE, "{}"))
    except UserError:
        raise
    except (KeyError, ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{source} has damaged cips metadata ({type(e).__name__}: {e})") from None
    if style_dim != config.style_dim or w_avg.shape != (style_dim,):
        raise UserError(f"{source} has inconsistent cips metadata (style_dim {style_dim}, config "
                        f"{config.style_dim}, w_avg shape {w_avg.shape})")
    return ModelInfo(config, style_dim, w_avg, provenance if isinstance(provenance, dict) else {}, version)
