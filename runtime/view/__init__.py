"""`cips view`: a local web viewer that pans and zooms a model's endless image, tiles rendered live.

tiles.py (tile scheme, request checks, LRU cache; numpy and ONNX Runtime only), app.py (the FastAPI
app), server.py (uvicorn on a socket of our own), static/ (the page, with Leaflet vendored). The web
parts need the `[view]` extra; check_installed() says so in one line.
"""
from __future__ import annotations

import importlib.util

from cips_edge.core.errors import UserError

INSTALL = "pip install 'cips-edge[view]'"


def check_installed() -> None:
    """UserError naming the install command when fastapi or uvicorn is missing."""
    for name in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(name) is None:
            raise UserError(f"cips view needs fastapi and uvicorn ({name} is not installed): {INSTALL}")
