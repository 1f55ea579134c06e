"""The synthetic panorama recipe: each image joins seamlessly at its left and right edges, is the same for
the same (seed, index) whatever the worker count, and the set is written whole or not at all."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "panorama" / "make_dataset.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("recipe_panorama_make_dataset", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the worker processes find _write by this module name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize("index", range(4))
def test_right_edge_joins_the_left(recipe, index):
    image = recipe.landscape(0, index, 32, 128).astype(np.int16)
    steps = np.abs(np.diff(image, axis=1)).max(axis=(0, 2))  # per neighbouring column pair
    wrap = np.abs(image[:, -1] - image[:, 0]).max()
    assert wrap <= np.percentile(steps, 99)  # smaller than all but the sharpest 1% of column steps


def test_images_depend_on_seed_and_index_alone(recipe, tmp_path):
    a = recipe.make_dataset(tmp_path / "a", 3, 16, 4, seed=5, workers=1)
    b = recipe.make_dataset(tmp_path / "b", 3, 16, 4, seed=5, workers=2)
    names = sorted(p.name for p in a.iterdir())
    assert names == ["pano-00000.png", "pano-00001.png", "pano-00002.png"]
    for name in names:
        pixels = np.asarray(Image.open(a / name))
        assert pixels.shape == (16, 64, 3) and np.array_equal(pixels, np.asarray(Image.open(b / name)))
    assert not np.array_equal(recipe.landscape(5, 0, 16, 64), recipe.landscape(6, 0, 16, 64))


def test_refuses_a_folder_in_use_and_leaves_nothing_on_failure(recipe, tmp_path, monkeypatch):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="not an empty folder"):
        recipe.make_dataset(tmp_path / "full", 1, 8, 2)
    monkeypatch.setattr(recipe, "landscape", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        recipe.make_dataset(tmp_path / "new", 2, 8, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
