"""The model packaged with cips-edge (cips_edge/models/default.onnx, an edge-64 CIPS trained on the
emoji recipe): it ships in the installed package, loads, gives varied images, and `cips render` uses
it when no --model is given, without torch."""
from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cips_edge.cli as cli
from cips_edge.core.format import packaged_model
from cips_edge.runtime import CIPSModel, latent_for_seed, render_image, to_uint8


@pytest.fixture(scope="module")
def default_model() -> CIPSModel:
    return CIPSModel(packaged_model(), device="cpu")


def test_the_default_model_is_package_data_and_loads(default_model):
    packaged = resources.files("cips_edge") / "models" / "default.onnx"  # package data, wherever installed
    assert packaged.is_file() and Path(str(packaged)).resolve() == packaged_model().resolve()
    assert packaged.read_bytes() == (Path(__file__).resolve().parents[1] / "cips_edge/models/default.onnx").read_bytes()
    assert default_model.path.stat().st_size > 1_000_000  # the real weights, not a Git LFS pointer
    c = default_model.config
    assert (c.size, c.style_dim, c.hidden_size) == (64, 256, 128)  # the edge-64 preset
    assert default_model.provenance["recipe"].startswith("recipes/emoji")
    assert default_model.provenance["training"]["preset"] == "edge-64"


def test_64_seeds_give_64_different_images(default_model):
    images = np.stack([to_uint8(render_image(default_model, latent_for_seed(s, default_model.style_dim), 32, 32))
                       for s in range(64)]).reshape(64, -1).astype(np.float32)  # [64, 32*32*3], 0..255
    mad = np.abs(images[:, None] - images[None]).mean(-1)[np.triu_indices(64, 1)]  # 2,016 pairs
    # Measured for this model (32x32, seeds 0-63): min 19.0, 5th percentile 34, median 58 levels;
    # 64 random images of the emoji data set: median 60, and skin-tone variants of one emoji differ by
    # only 0.2-2.6. Moving a latent by 0.05 sigma (the same picture to the eye) changes 6.4 levels,
    # 0.01 sigma 1.3. So a pair below 8 levels is a near-copy: mode collapse, or seeds that no longer
    # reach the latent. The median guards against a model whose samples all differ a little
    # (e.g. one blob in slightly different colours).
    assert mad.min() > 8, mad.min()
    assert np.median(mad) > 40, np.median(mad)


def test_info_names_the_recipe():
    r = CliRunner().invoke(cli.app, ["info"])
    assert r.exit_code == 0, r.stderr
    assert "\nrecipe      recipes/emoji" in r.stdout and "\ntraining    " in r.stdout and "preset=edge-64" in r.stdout


def test_render_without_model_uses_the_default_and_no_torch(default_model, torchless_env, tmp_path):
    r = subprocess.run([sys.executable, "-m", "cips_edge.cli", "render", "--seed", "7", "--size", "64"],
                       cwd=tmp_path, env=torchless_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote cips-seed7.png (64x64) on CPUExecutionProvider")
    image = np.asarray(Image.open(tmp_path / "cips-seed7.png"))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    expected = to_uint8(render_image(default_model, latent_for_seed(7, default_model.style_dim), 64, 64))
    assert np.array_equal(image, expected)  # the packaged model, seed 7
