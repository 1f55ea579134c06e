"""Shared test fixtures: where the official-code fixture lives, and a tiny generator."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DIR = Path(os.environ.get("CIPS_FIXTURES", REPO.parent / "shared" / "fixtures" / "official_cips"))


@pytest.fixture(scope="session")
def official_dir() -> Path:
    d = FIXTURE_DIR / "skip16"
    assert (d / "checkpoint.pt").exists(), f"official fixture missing at {d} (set CIPS_FIXTURES)"
    return d
