"""The CUDA libraries' build scripts run by the tests: where nvcc is (no GPU needed), each into a temporary
folder with its own download cache."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NEEDS_NVCC = pytest.mark.skipif(shutil.which("nvcc") is None,
                                reason="no nvcc on this machine (the CUDA toolkit builds the op)")


def build(script: str, library: str, where: Path) -> Path:
    """Runs REPO/script with its output folder in `where` and returns the library it reports it built."""
    out = where / "build"
    done = subprocess.run(["bash", str(REPO / script), str(out)], capture_output=True, text=True,
                          env={**os.environ, "CACHE_DIR": str(where / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    built = out / library
    assert built.is_file() and f"built {built}" in done.stdout
    return built
