"""The cips-edge ONNX format: graph names and metadata keys, written by export and read here.

One module holds both sides so that writer and reader cannot drift; docs/onnx-format.md describes it.
"""
from __future__ import annotations

import base64
import binascii
import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import GeneratorConfig  # plain dataclass, no torch

from .errors import UserError

FORMAT = "cips-edge-onnx"


FORMAT_VERSION = 3
# Versions 1 and 3: the file's graph is the whole generator, z [B, style_dim], coords [B, N, 2],
# truncation [B] -> rgb [B, N, 3]. Version 3 also carries cips' fast paths (below, and
# docs/onnx-format.md). Version 2 (still read): the file's graph is only the style part, z [B, style_dim],
# truncation [B] -> the per-latent weights; its pixel graphs are in the metadata.
INPUTS = ("z", "coords", "truncation")
OUTPUT = "rgb"
STYLE_INPUTS = ("z", "truncation")
COORDS = "coords"
RGB = "rgb"  # float32, raw generator values (about [-1, 1])
RGB8 = "rgb8"  # uint8, the grid graph's second output: round((rgb + 1) * 127.5) clipped to [0, 255]
GRID_INPUTS = ("xs", "ys")  # the grid graph's points: x' of every column, y' of every row
EMBEDDING = "embedding"  # the coordinate table: v3 an initializer [rows * columns, H]; v2 a style output
PRECISIONS = ("fp32", "fp16", "int8")

KEY_FORMAT = "cips.format"
KEY_VERSION = "cips.format_version"
KEY_CONFIG = "cips.config"
KEY_STYLE_DIM = "cips.style_dim"
KEY_W_AVG = "cips.w_avg"
KEY_PROVENANCE = "cips.provenance"
KEY_PRECISION = "cips.precision"  # v2, v3: the pixel graph a renderer runs by default
KEY_PIXEL_GRAPH = "cips.pixel_graph."  # v2, v3: + precision -> base64 of a serialized ONNX model
KEY_STYLE_EXTENSION = "cips.style_extension"  # v3 with fp16 or int8: base64 of the graph that derives their weights
KEY_GRID_GRAPH = "cips.grid_graph."  # v3 with fp16: + precision -> base64 of the pixel graph for regular grids


@dataclass(frozen=True)
class ModelInfo:
    """What the metadata of a cips-edge ONNX file says."""

    config: GeneratorConfig
    style_dim: int
    w_avg: np.ndarray  # [style_dim] float32, the mean mapped latent that truncation pulls towards
    provenance: dict  # source checkpoint, kind, step, images_seen, exported_at, versions
    format_version: int
    precision: str = "fp32"  # the file's default pixel precision (v1 files: fp32)
    pixel_graphs: dict[str, bytes] = field(default_factory=dict)  # v2, v3: precision -> ONNX model bytes
    style_extension: bytes | None = None  # v3: ONNX model bytes, when the file has fp16 or int8
    grid_graphs: dict[str, bytes] = field(default_factory=dict)  # v3: precision -> ONNX model bytes (fp16)


def metadata_props(config: GeneratorConfig, w_avg: np.ndarray, provenance: dict, precision: str = "fp32",
                   pixel_graphs: dict[str, bytes] | None = None, style_extension: bytes | None = None,
                   grid_graphs: dict[str, bytes] | None = None) -> dict[str, str]:
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
        KEY_PRECISION: precision,
        **{KEY_PIXEL_GRAPH + name: _b64(data) for name, data in (pixel_graphs or {}).items()},
        **({KEY_STYLE_EXTENSION: _b64(style_extension)} if style_extension else {}),
        **{KEY_GRID_GRAPH + name: _b64(data) for name, data in (grid_graphs or {}).items()},
    }


def int8_summary(facts: dict) -> str:
    """A file's int8 facts (its provenance's "int8", written by export) as one line for the user."""
    worst = facts.get("worst_psnr_db")
    why = f" (calibrated: worst seed {worst:g} dB against float32)" if worst is not None else ""
    return (f"the first {facts['float_layers']} of {facts['hidden_layers']} hidden layers in float32, "
            f"the rest 8-bit{why}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


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
        precision = meta.get(KEY_PRECISION, "fp32")
        graphs = {key[len(KEY_PIXEL_GRAPH):]: base64.b64decode(value, validate=True)
                  for key, value in meta.items() if key.startswith(KEY_PIXEL_GRAPH)}
        extension = base64.b64decode(meta[KEY_STYLE_EXTENSION], validate=True) if KEY_STYLE_EXTENSION in meta else None
        grids = {key[len(KEY_GRID_GRAPH):]: base64.b64decode(value, validate=True)
                 for key, value in meta.items() if key.startswith(KEY_GRID_GRAPH)}
    except UserError:
        raise
    except (KeyError, ValueError, TypeError, binascii.Error) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{source} has damaged cips metadata ({type(e).__name__}: {e})") from None
    if style_dim != config.style_dim or w_avg.shape != (style_dim,):
        raise UserError(f"{source} has inconsistent cips metadata (style_dim {style_dim}, config "
                        f"{config.style_dim}, w_avg shape {w_avg.shape})")
    if not np.isfinite(w_avg).all():
        raise UserError(f"{source} has damaged cips metadata (w_avg holds NaN or infinite values)")
    if version >= 2 and (precision not in PRECISIONS or "fp32" not in graphs or precision not in graphs
                         or set(graphs) - set(PRECISIONS)):
        raise UserError(f"{source} has damaged cips metadata (precision {precision!r}, pixel graphs "
                        f"{sorted(graphs)})")
    if version >= 3 and set(graphs) != {"fp32"} and extension is None:
        raise UserError(f"{source} has damaged cips metadata (pixel graphs {sorted(graphs)} but no "
                        f"{KEY_STYLE_EXTENSION})")
    if grids and (version < 3 or set(grids) != {"fp16"} or "fp16" not in graphs):
        raise UserError(f"{source} has damaged cips metadata (grid graphs {sorted(grids)}, pixel graphs "
                        f"{sorted(graphs)})")
    return ModelInfo(config, style_dim, w_avg, provenance if isinstance(provenance, dict) else {}, version,
                     precision, graphs, extension, grids)


def packaged_model() -> Path:
    """The model packaged with cips-edge (cips_edge/models/default.onnx, wherever cips-edge is installed):
    what `cips` renders unless given --model."""
    return Path(str(importlib.resources.files("cips_edge") / "models" / "default.onnx"))
