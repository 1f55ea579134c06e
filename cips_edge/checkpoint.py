"""The project's checkpoint format, atomic writes, and loading a generator from any supported source.

A checkpoint is a plain dict of tensors and JSON-able values, loaded with weights_only=True:
  {"format": "cips-edge", "version": 1, "config": GeneratorConfig.to_dict(), "g_ema": state_dict,
   "step": int, "images_seen": int, ...training state (G, D, optimizers, RNG) when written by training}
A run folder keeps them as RUN/checkpoints/ckpt-<images seen, 10 digits>.pt.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cips_edge.core.files import replacing  # torch-free

from . import legacy
from .core.config import GeneratorConfig
from .model import CIPSGenerator

FORMAT = "cips-edge"
VERSION = 1
DEFAULT_RUNS_DIR = Path("cips-runs")  # where `cips train` puts runs unless told otherwise
CHECKPOINT_GLOB = "checkpoints/ckpt-*.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line for the user."""


@dataclass
class LoadedGenerator:
    generator: CIPSGenerator
    source: str  # path of the file the weights came from
    kind: str  # "cips-edge" or "original"
    step: int | None
    images_seen: int | None
    notice: str | None = None  # one line to show the user (e.g. dropped noise weights)
    init_from: dict | None = None  # the run it started from (cips train --init-from): path, images_seen, options
    elapsed_s: float | None = None  # the run's training time


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the final name. A failed
    write (disk full, say) leaves nothing behind and raises CheckpointError with the system's reason."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, fsync=True) as f:
            torch.save(obj, f)
    except BaseException as e:
        os_error = _os_error(e)
        if os_error is None:
            raise
        raise CheckpointError(f"cannot write {path}: {os_error.strerror or os_error}") from None


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`: torch.save reports a failed write of its file as a RuntimeError whose
    context is the OSError the file raised."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def generator_checkpoint(generator: CIPSGenerator, step: int = 0, images_seen: int = 0, **extra) -> dict:
    return {"format": FORMAT, "version": VERSION, "config": generator.config.to_dict(),
            "g_ema": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
            "step": step, "images_seen": images_seen, **extra}


def run_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints of a run folder, oldest first."""
    return sorted(Path(run_dir).glob(CHECKPOINT_GLOB))


def newest_checkpoint(runs_dir: str | os.PathLike = DEFAULT_RUNS_DIR) -> Path | None:
    """The most recently written checkpoint of any run under runs_dir."""
    found = list(Path(runs_dir).glob(f"*/{CHECKPOINT_GLOB}"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A file, or a run folder (its newest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        ckpts = run_checkpoints(path)
        if not ckpts:
            raise CheckpointError(f"{path} is a folder without checkpoints ({CHECKPOINT_GLOB})")
        return ckpts[-1]
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():  # a pipe or device: torch.load would wait on it
        raise CheckpointError(f"checkpoint is not a regular file (a device, pipe or socket): {path}")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint dict")
    return ckpt


def load_generator(path: str | os.PathLike, n_mlp: int | None = None, lr_mlp: float | None = None,
                   device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load the EMA generator from a project checkpoint, a run folder or an original-code checkpoint
    (detected from its contents). n_mlp / lr_mlp override what shapes cannot tell (original format)."""
    file = resolve_checkpoint_path(path)
    ckpt = read_checkpoint(file)
    if ckpt.get("format") == FORMAT:
        if ckpt.get("version", 0) > VERSION:
            raise CheckpointError(f"{file} was written by a newer cips-edge (format {ckpt['version']})")
        config = GeneratorConfig.from_dict(ckpt["config"])
        # The file states its config: an option that says otherwise is a mistake, not an override.
        if n_mlp is not None and n_mlp != config.n_mlp:
            raise CheckpointError(f"--n-mlp {n_mlp} but {file} holds {config.n_mlp} mapping layers (its config is "
                                  "stored in the file: leave --n-mlp out)")
        if lr_mlp is not None and lr_mlp != config.lr_mlp:
            raise CheckpointError(f"--lr-mlp {lr_mlp:g} but {file} was trained with {config.lr_mlp:g} (its config "
                                  "is stored in the file: leave --lr-mlp out)")
        state, kind, notice = ckpt["g_ema"], FORMAT, None
        step, seen, origin = ckpt.get("step"), ckpt.get("images_seen"), ckpt.get("init_from")
        elapsed = ckpt.get("elapsed_s")
    elif legacy.is_original_checkpoint(ckpt):
        try:
            config = legacy.infer_config(ckpt["g_ema"], n_mlp=n_mlp, lr_mlp=0.01 if lr_mlp is None else lr_mlp)
            state, dropped = legacy.convert_state(ckpt["g_ema"], config)
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{file}: cannot read this original-format checkpoint: {e}") from None
        kind, step, seen, origin, elapsed = "original", None, None, None, None
        notice = (f"original-format checkpoint: dropped {len(dropped)} per-pixel noise weights "
                  "(deterministic rendering has no noise)") if dropped else None
    else:
        raise CheckpointError(f"{file} is neither a cips-edge checkpoint nor one of the original CIPS code")
    generator = CIPSGenerator(config)
    try:
        generator.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{file}: weights do not fit the stored config ({str(e).splitlines()[0]})") from None
    generator.eval().requires_grad_(False).to(device)
    return LoadedGenerator(generator, str(file), kind, step, seen, notice, origin, elapsed)


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def training_total(loaded: LoadedGenerator) -> dict | None:
    """All the training behind a run that started from another's weights (cips train --init-from), through
    every run before it: {"runs": n, "images_seen": sum, "wall_s": sum}, a sum None where some run's
    figure is not recorded; None for a run that started from scratch."""
    origin = loaded.init_from
    if not origin:
        return None
    runs, images, wall = 1, loaded.images_seen, loaded.elapsed_s
    while origin:
        if origin.get("model_file"):  # a model file ends the chain with what its provenance records
            earlier = _file_total(origin.get("provenance") or {})
            return {"runs": runs + earlier["runs"], "images_seen": _plus(images, earlier["images_seen"]),
                    "wall_s": _plus(wall, earlier["wall_s"])}
        runs, images, wall = runs + 1, _plus(images, origin.get("images_seen")), _plus(wall, origin.get("elapsed_s"))
        origin = origin.get("init_from")
    return {"runs": runs, "images_seen": images, "wall_s": wall}


def _file_total(made: dict) -> dict:
    """The training a model file's provenance records: its own total, or one run (its images and time), or
    two where it started from another run (whose time it does not record)."""
    if made.get("total"):
        return made["total"]
    before = made.get("init_from")
    if not before:
        return {"runs": 1, "images_seen": made.get("images_seen"), "wall_s": (made.get("training") or {}).get("wall_s")}
    return {"runs": 2, "images_seen": _plus(made.get("images_seen"), before.get("images_seen")), "wall_s": None}
