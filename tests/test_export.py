"""Export: one self-contained ONNX file (format 3: the whole generator as its graph, with the weight-free
fast pixel graphs in its metadata) with clean per-point graphs and the metadata the runtime needs,
verified against torch before it is kept, from any checkpoint format."""
from __future__ import annotations

import base64
import json
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import cips_edge
from cips_edge.checkpoint import atomic_torch_save, generator_checkpoint, load_generator
from cips_edge.core.config import preset
from cips_edge.coords import pixel_grid
from cips_edge.export import ExportError, check_parity, export_checkpoint, export_generator
from cips_edge.export import verify
from cips_edge.model import CIPSGenerator
from cips_edge.runtime import CIPSModel, render_points
from cips_edge.export.style import plain_names
from cips_edge.core.format import FORMAT, INPUTS, RGB
from cli_helpers import cli, runner

# Node types of the fp32 pixel graph: features (Gemm + Sin, the table lookup), then Gemm (bias
# inside) + LeakyRelu per modulated layer, ToRGB MatMuls and their sum. Nothing else runs per point.
# the bilinear table lookup (export/pixels.py _bilinear): texel coordinates, four row Gathers, weights
LOOKUP_OPS = {"Min", "Max", "Floor", "Sub", "Mul", "ReduceSum", "Cast", "Slice", "Gather"}
PIXEL_OPS = {"Gemm", "Sin", "LeakyRelu", "MatMul", "Add", *LOOKUP_OPS}


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_metadata_holds_what_the_runtime_needs(tiny_onnx, tiny_checkpoint):
    meta = metadata(tiny_onnx)
    assert meta["cips.format"] == FORMAT and meta["cips.format_version"] == "3"
    assert meta["cips.precision"] == "fp32" and [k for k in meta if k.startswith("cips.pixel_graph.")] == [
        "cips.pixel_graph.fp32"]
    assert "cips.style_extension" not in meta  # fp32 only: the style part's own tensors suffice
    assert json.loads(meta["cips.config"]) == preset("tiny").to_dict()
    assert meta["cips.style_dim"] == str(preset("tiny").style_dim)
    prov = json.loads(meta["cips.provenance"])
    assert prov["source"] == str(tiny_checkpoint.resolve()) and prov["kind"] == "cips-edge"
    assert (prov["step"], prov["images_seen"]) == (123, 4567)
    assert prov["cips_edge"] == cips_edge.__version__ and prov["torch"] == torch.__version__
    assert datetime.fromisoformat(prov["exported_at"]).utcoffset().total_seconds() == 0
    assert prov["w_avg"] == {"latents": 4096, "seed": 0}


def test_w_avg_is_the_mean_w_of_4096_latents_in_metadata_and_graph(tiny_onnx, tiny_checkpoint):
    expected = load_generator(tiny_checkpoint).generator.mean_w(4096).numpy()[0]
    assert np.array_equal(np.asarray(json.loads(metadata(tiny_onnx)["cips.w_avg"]), np.float32), expected)
    graph = {t.name: numpy_helper.to_array(t) for t in onnx.load(tiny_onnx).graph.initializer}
    assert np.array_equal(graph["w_avg"].reshape(-1), expected)


def pixel_model(path: Path, precision: str = "fp32") -> onnx.ModelProto:
    return onnx.load_from_string(base64.b64decode(metadata(path)[f"cips.pixel_graph.{precision}"]))


def dims_of(values) -> dict[str, list]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_graph_is_one_clean_file_with_dynamic_batch_and_points(tiny_onnx):
    model = onnx.load(tiny_onnx, load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    c = preset("tiny")
    assert tuple(i.name for i in model.graph.input) == INPUTS and [o.name for o in model.graph.output] == [RGB]
    dims = dims_of([*model.graph.input, *model.graph.output, *model.graph.value_info])
    assert dims["z"] == ["batch", c.style_dim] and dims["truncation"] == ["batch"]
    assert dims["coords"] == ["batch", "points", 2] and dims[RGB] == ["batch", "points", 3]
    assert all(dims[name][0] == "batch" for name in plain_names(c))  # the style part's named tensors
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    assert inits["embedding"] == [c.size * c.size, c.hidden_size]  # texel rows, stored once

    pixels = pixel_model(tiny_onnx)
    ops = [n.op_type for n in pixels.graph.node]
    assert set(ops) <= PIXEL_OPS, set(ops) - PIXEL_OPS
    assert ops.count("Gather") == 4 and ops.count("Sin") == 1
    # one LeakyRelu and one Gemm (bias inside) per modulated layer (two for the input layer's two
    # halves) plus the Fourier Gemm; a MatMul per ToRGB, summed with their biases: no passes of their own
    # for biases or gains
    assert ops.count("LeakyRelu") == len(c.layer_shapes)
    assert ops.count("Gemm") == len(c.layer_shapes) + 2
    # (the lookup has 7 Adds of its own: x' + 1, three corner offsets, the sum of the four corners)
    assert ops.count("MatMul") == ops.count("Add") - 7 == c.n_to_rgb
    # the fast graph holds no weights: the per-point ones are inputs named like the file's initializers
    assert max(np.prod(t.dims) for t in pixels.graph.initializer) <= 2
    shared = {i.name for i in pixels.graph.input} & set(inits)
    assert shared == {"embedding", "fourier_weight", "fourier_bias", "rgb_bias",
                      *(f"bias{i}" for i in range(1, len(c.layer_shapes)))}
    dims = dims_of([*pixels.graph.input, *pixels.graph.output])
    assert dims["coords"] == ["points", 2] and dims[RGB] == ["points", 3]


def test_any_batch_and_number_of_points_run(tiny_onnx, tiny_checkpoint):
    """The file's graph with a plain InferenceSession, as anyone would run it."""
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    g = load_generator(tiny_checkpoint).generator
    for batch, n in [(1, 1), (3, 517), (2, 0)]:
        z, coords = torch.randn(batch, g.config.style_dim), torch.rand(batch, n, 2) * 4 - 2
        out = session.run(None, {"z": z.numpy(), "coords": coords.numpy(), "truncation": np.ones(batch, np.float32)})[0]
        assert out.shape == (batch, n, 3)
        if n:
            with torch.no_grad():
                ref = g(coords, z).numpy()
            assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-5


@pytest.mark.slow  # a full-width preset through export and verification
def test_random_edge_preset_exports_and_matches_torch(tmp_path):
    torch.manual_seed(1)
    g = CIPSGenerator(preset("edge-64"))
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt-0000000000.pt"
    atomic_torch_save(generator_checkpoint(g), ckpt)
    report = export_checkpoint(tmp_path / "edge.onnx", tmp_path / "run")  # a run folder
    assert report.rel_error < 1e-5 and report.path.stat().st_size == report.bytes
    model = CIPSModel(report.path, device="cpu")
    z = torch.randn(1, 256)
    coords = pixel_grid(40, 24)[None]
    with torch.no_grad():
        ref = g.eval()(coords, z).numpy()
    out = render_points(model, z.numpy(), coords.numpy())
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-5


# -- the parity check and the refusal -------------------------------------------------------------
def test_check_parity_tolerance():
    ref = np.random.default_rng(0).standard_normal((2, 100, 3)).astype(np.float32)
    assert check_parity(ref, ref, "x") == (0.0, 0.0)
    check_parity(ref * np.float32(1 + 1e-6), ref, "x")  # float32 rounding passes
    for bad in (ref + 1e-3, ref * 1.0001, np.where(ref > 2, np.nan, ref)):
        with pytest.raises(verify.ParityError):
            check_parity(bad.astype(np.float32), ref, "x")


class _CorruptModel(CIPSModel):
    def run(self, z, coords, truncation):
        return super().run(z, coords, truncation) + np.float32(1e-3)


def test_export_that_does_not_match_torch_is_refused_and_leaves_no_file(tmp_path, monkeypatch, tiny_checkpoint):
    monkeypatch.setattr(verify, "CIPSModel", _CorruptModel)
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="export refused, no file written: ONNX Runtime differs from torch"):
        export_checkpoint(out, tiny_checkpoint)
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous")  # an older file of that name stays as it was
    with pytest.raises(ExportError):
        export_checkpoint(out, tiny_checkpoint)
    assert out.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


# -- where the weights come from ------------------------------------------------------------------
def test_original_checkpoint_is_detected_and_its_provenance_recorded(official_dir, tmp_path):
    lines = []
    report = export_checkpoint(tmp_path / "o.onnx", official_dir / "checkpoint.pt", n_mlp=2, lr_mlp=0.01,
                               say=lines.append)
    prov = json.loads(metadata(report.path)["cips.provenance"])
    assert prov["kind"] == "original" and prov["step"] is None
    assert any("dropped 7 per-pixel noise weights" in line for line in lines)


def test_original_format_overrides_are_passed_on(official_dir, tmp_path):
    with pytest.raises(ExportError, match="--n-mlp 3 but the checkpoint holds 2"):
        export_checkpoint(tmp_path / "o.onnx", official_dir / "checkpoint.pt", n_mlp=3)
    with pytest.raises(ExportError, match="--lr-mlp must be positive"):
        export_checkpoint(tmp_path / "o.onnx", official_dir / "checkpoint.pt", lr_mlp=0.0)
    assert list(tmp_path.iterdir()) == []


def test_newest_checkpoint_of_the_default_folder_is_used_and_named(tmp_path, tiny_checkpoint):
    runs = tmp_path / "cips-runs"
    with pytest.raises(ExportError, match="no --checkpoint given and no checkpoint under"):
        export_checkpoint(tmp_path / "m.onnx", runs_dir=runs)
    older = runs / "00001-a" / "checkpoints" / "ckpt-0000000100.pt"
    newer = runs / "00002-b" / "checkpoints" / "ckpt-0000000050.pt"
    for path, age in ((older, 100), (newer, 0)):
        path.parent.mkdir(parents=True)
        path.write_bytes(tiny_checkpoint.read_bytes())
        os.utime(path, (time.time() - age, time.time() - age))
    lines = []
    report = export_checkpoint(tmp_path / "m.onnx", runs_dir=runs, say=lines.append)
    assert str(newer) in lines[0]
    assert json.loads(metadata(report.path)["cips.provenance"])["source"] == str(newer.resolve())


@pytest.mark.parametrize("content", [{"foo": 1}, "garbage"])
def test_checkpoint_of_neither_format_is_refused(tmp_path, content):
    ckpt = tmp_path / "x.pt"
    if content == "garbage":
        ckpt.write_bytes(b"\x00not a checkpoint at all")
    else:
        torch.save(content, ckpt)
    with pytest.raises(ExportError, match="neither a cips-edge checkpoint|not a readable PyTorch checkpoint"):
        export_checkpoint(tmp_path / "m.onnx", ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_export_generator_checks_its_arguments(tmp_path):
    g = CIPSGenerator(preset("tiny"))
    with pytest.raises(ExportError, match="w_avg has shape"):
        export_generator(g, tmp_path / "m.onnx", w_avg=torch.zeros(3))
    with pytest.raises(Exception, match="must end in .onnx"):
        export_generator(g, tmp_path / "m.png")
    assert list(tmp_path.iterdir()) == []


# -- format-2 files upgraded without their checkpoint ----------------------------------------------
FORMAT_2_FILE = Path(__file__).parent / "data" / "format2-tiny.onnx"
FORMAT_1_FILE = Path(__file__).parent / "data" / "format1-emoji-1052kimg.onnx"


def test_a_format_2_file_upgrades_to_format_3_with_the_same_weights(tmp_path, tiny_onnx):
    """`cips export NEW --checkpoint OLD.onnx`: the old file's weights in format 3, checked against the
    old file at export; it renders what a fresh export of the same generator renders."""
    out = tmp_path / "up.onnx"
    r = runner.invoke(cli.app, ["export", str(out), "--checkpoint", str(FORMAT_2_FILE), "--precision", "fp16"])
    assert r.exit_code == 0, r.stderr
    meta = metadata(out)
    assert meta["cips.format_version"] == "3" and meta["cips.precision"] == "fp16"
    assert json.loads(meta["cips.provenance"])["upgraded_from_format"] == 2
    assert sorted(k.rsplit(".", 1)[1] for k in meta if k.startswith("cips.pixel_graph.")) == ["fp16", "fp32", "int8"]
    z = np.random.default_rng(1).standard_normal((2, preset("tiny").style_dim)).astype(np.float32)
    coords = np.random.default_rng(2).uniform(-1.2, 1.2, (2, 300, 2)).astype(np.float32)
    feeds = {"z": z, "coords": coords, "truncation": np.array([1.0, 0.7], np.float32)}
    upgraded = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    fresh = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.linalg.norm(upgraded - fresh) / np.linalg.norm(fresh) < 1e-5
    # a format-3 file keeps its graph and its default precision, and gets this version's fast paths
    again = tmp_path / "again.onnx"
    r = runner.invoke(cli.app, ["export", str(again), "--checkpoint", str(out)])
    assert r.exit_code == 0, r.stderr
    rewritten = onnx.load(str(again))
    assert [n.name for n in rewritten.graph.node] == [n.name for n in onnx.load(str(out)).graph.node]
    meta = metadata(again)
    assert meta["cips.precision"] == "fp16" and "cips.grid_graph.fp16" in meta
    assert json.loads(meta["cips.provenance"])["upgraded_from_format"] == 3
    # a format-1 file has no plain weights to build fast paths from: refused, nothing written
    r = runner.invoke(cli.app, ["export", str(tmp_path / "old.onnx"), "--checkpoint", str(FORMAT_1_FILE)])
    assert r.exit_code == 1 and "only format-2 and -3 files are upgraded" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "old.onnx").exists()


# -- metadata that does not match the graph -------------------------------------------------------
def _with_metadata(path: Path, out: Path, **changes) -> Path:
    model = onnx.load(path)
    for prop in model.metadata_props:
        if prop.key in changes:
            prop.value = changes[prop.key]
    onnx.save(model, out)
    return out


def test_tampered_metadata_is_refused_when_the_file_is_opened(tiny_onnx, tmp_path):
    config = json.loads(metadata(tiny_onnx)["cips.config"])
    style_dim = config["style_dim"]
    cases = {
        "panorama": ({"cips.config": json.dumps({**config, "panorama": 4})}, "does not match its graph"),
        "nan-w_avg": ({"cips.w_avg": json.dumps([float("nan")] * style_dim)}, "w_avg holds NaN"),
        "other-w_avg": ({"cips.w_avg": json.dumps([0.5] * style_dim)}, "w_avg differs between the metadata and the graph"),
        "size": ({"cips.config": json.dumps({**config, "size": config["size"] * 2})}, "does not match its graph"),
    }
    for name, (changes, message) in cases.items():
        path = _with_metadata(tiny_onnx, tmp_path / f"{name}.onnx", **changes)
        r = runner.invoke(cli.app, ["render", "--model", str(path), "--size", "8", "--out", str(tmp_path / "x.png")])
        assert r.exit_code == 1 and message in r.stderr and r.stderr.count("\n") == 1, (name, r.stderr)
        assert not (tmp_path / "x.png").exists()
