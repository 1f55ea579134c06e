"""`cips info` prints the recipe and training facts a model's provenance holds, and nothing about them
when it holds none."""
from __future__ import annotations

import json
from pathlib import Path

import onnx

import cips_edge.cli as cli
from cli_helpers import runner
from cips_edge.core.format import KEY_PROVENANCE


def with_provenance(src: Path, dst: Path, **extra) -> Path:
    """A copy of src whose cips.provenance has `extra` added."""
    model = onnx.load(src)
    prop = next(p for p in model.metadata_props if p.key == KEY_PROVENANCE)
    prop.value = json.dumps({**json.loads(prop.value), **extra})
    onnx.save(model, dst)
    return dst


def info_lines(path: Path) -> dict[str, str]:
    r = runner.invoke(cli.app, ["info", "--model", str(path)])
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return {line[:11].strip(): line[12:] for line in r.stdout.splitlines()}


def test_info_prints_recipe_and_training(tiny_onnx, tmp_path):
    training = {"gpu": "1x NVIDIA H200", "wall_s": 2315.9, "preset": "edge-64", "batch": 64, "xflip": False}
    lines = info_lines(with_provenance(tiny_onnx, tmp_path / "m.onnx", recipe="recipes/emoji (3,916 images)",
                                       training=training))
    assert lines["recipe"] == "recipes/emoji (3,916 images)"
    assert lines["training"] == "1x NVIDIA H200, 38.6 min; preset=edge-64, batch=64, xflip=False"
    keys = list(lines)
    assert keys.index("source") < keys.index("recipe") < keys.index("training") < keys.index("exported")


def test_info_training_without_gpu_or_time(tiny_onnx, tmp_path):
    lines = info_lines(with_provenance(tiny_onnx, tmp_path / "m.onnx", training={"batch": 8}))
    assert lines["training"] == "batch=8" and "recipe" not in lines


def test_info_without_recipe_prints_no_such_lines(tiny_onnx):
    lines = info_lines(tiny_onnx)
    assert "recipe" not in lines and "training" not in lines and "source" in lines
