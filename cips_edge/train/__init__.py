"""Training CIPS (the paper's recipe, fast): `run(TrainOptions(...))` trains or resumes a run folder.

Importing this package does not import torch; `run` does, when called.
"""
from __future__ import annotations

from pathlib import Path

from .options import TrainError, TrainOptions

__all__ = ["TrainError", "TrainOptions", "run"]


def run(options: TrainOptions, explicit: set[str] | None = None) -> Path:
    """Train (or resume) a run; returns its folder. explicit: the options the user gave, which a resume
    takes instead of the run's own (default: those that differ from their defaults). Raises TrainError
    (one line for the user) for problems the user can fix, and KeyboardInterrupt after saving a checkpoint
    when stopped by Ctrl-C or SIGTERM."""
    from .loop import run as _run

    return _run(options, explicit)
