"""`cips view --zarr`: a rendered pyramid's tiles are read from it, the level whose pixels match the
tile's, pixel for pixel; where the pyramid has no pixel the tile is transparent."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the viewer's tests need the [view] extra (fastapi, uvicorn)")
pytest.importorskip("zarr")
from fastapi.testclient import TestClient  # noqa: E402

from cli_helpers import cips  # noqa: E402
from cips_edge.runtime import pyramid as pz  # noqa: E402
from cips_edge.runtime.view import app as view_app  # noqa: E402
from cips_edge.runtime.view import tiles  # noqa: E402
from cips_edge.runtime.view.stored import StoredPyramid  # noqa: E402

SIDE = 512  # conftest.pyramid_path: the frame at 512 x 512, levels 512 and 256


def _rgba(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_tiles_are_the_levels_pixels(pyramid_path):
    stored, p = StoredPyramid(pyramid_path), pz.Pyramid(pyramid_path)
    zoom0 = _rgba(stored.render_tile(tiles.TileKey(0, 1.0, 0, 0, 0)))  # 256 tile pixels over 512: level 1
    assert (zoom0[..., 3] == 255).all() and np.array_equal(zoom0[..., :3], p.read(1, 0, 0, 256, 256))
    zoom1 = _rgba(stored.render_tile(tiles.TileKey(0, 1.0, 1, 1, 0)))  # the top right quarter at level 0
    assert np.array_equal(zoom1[..., :3], p.read(0, 0, 256, 256, 256))
    out = _rgba(stored.render_tile(tiles.TileKey(0, 1.0, -1, 0, 0)))  # [-1, 3]^2: the pyramid is its top left quarter
    assert (out[:128, :128, 3] == 255).all() and (out[128:, :, 3] == 0).all() and (out[:, 128:, 3] == 0).all()
    # a tile pixel's centre falls on the edge between level-1 pixels 2j and 2j + 1: the later one is taken
    assert np.array_equal(out[:128, :128, :3], p.read(1, 0, 0, 256, 256)[1::2, 1::2])


def test_the_app_serves_a_pyramid(pyramid_path):
    with TestClient(view_app.create_app(StoredPyramid(pyramid_path)), base_url="http://127.0.0.1") as c:
        info = c.get("/api/info").json()
        assert info["provider"] == "OME-Zarr" and info["pyramid"]["width"] == SIDE
        assert info["train_size"] == pytest.approx(SIDE)  # its level-0 pixels across the frame
        tile = c.get("/tiles/0/3/40/40.png")  # far outside: transparent
        assert tile.status_code == 200 and (_rgba(tile.content)[..., 3] == 0).all()
        view = c.get("/api/view.png", params={"seed": 0, "x0": -1, "y0": -1, "x1": 1, "y1": 1, "width": 512,
                                              "height": 512})
        assert view.status_code == 200 and "X-Cips-Command" not in view.headers
        assert np.array_equal(_rgba(view.content)[..., :3], pz.Pyramid(pyramid_path).read(0, 0, 0, SIDE, SIDE))


def test_cips_view_zarr_errors(tmp_path, tiny_onnx):
    result = cips("view", "--zarr", tmp_path / "none.zarr")
    assert result.exit_code == 1 and "no OME-Zarr pyramid at" in result.stderr
    (tmp_path / "empty.zarr").mkdir()
    result = cips("view", "--zarr", tmp_path / "empty.zarr")
    assert result.exit_code == 1 and "is not an OME-Zarr multiscale image" in result.stderr
    result = cips("view", "--zarr", tmp_path / "empty.zarr", "--model", tiny_onnx)
    assert result.exit_code == 1 and "either --model or --zarr" in result.stderr
