"""Reading a cips-edge ONNX file back into a CIPSGenerator: the same parameters (ToRGB biases as their
sum, which is all the file holds), the same images as the file's own graph, and one-line errors for
files it cannot read."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from cips_edge.checkpoint import load_generator
from cips_edge.core.config import preset
from cips_edge.core.format import packaged_model
from cips_edge.export import ExportError, export_generator
from cips_edge.export.readback import generator_from_onnx
from cips_edge.model import CIPSGenerator

TINY_PANORAMA = dataclasses.replace(preset("tiny"), panorama=2)


def randomised(config) -> CIPSGenerator:
    """A generator with every parameter moved off its initial value, so no two biases are alike."""
    torch.manual_seed(1)
    generator = CIPSGenerator(config).eval().requires_grad_(False)
    rng = torch.Generator().manual_seed(2)
    for p in generator.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=rng))
    return generator


def exported(generator: CIPSGenerator, folder, name: str, **provenance):
    path = folder / name
    export_generator(generator, path, provenance=provenance or None)
    return path


@pytest.fixture(scope="module", params=[preset("tiny"), TINY_PANORAMA], ids=["flat", "panorama"])
def round_trip(request, tmp_path_factory):
    original = randomised(request.param)
    path = exported(original, tmp_path_factory.mktemp("readback"), "random.onnx", images_seen=321)
    return original, path, *generator_from_onnx(path)


def assert_same_parameters(read: CIPSGenerator, original: CIPSGenerator) -> None:
    """Every parameter equal to float32 rounding; the ToRGB biases only as their sum."""
    got, want = dict(read.named_parameters()), dict(original.named_parameters())
    assert got.keys() == want.keys()
    rgb = [name for name in want if name.startswith("to_rgbs.") and name.endswith(".fc.bias")]
    for name in set(want) - set(rgb):
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=0, msg=name)
    torch.testing.assert_close(sum(got[n] for n in rgb), sum(want[n] for n in rgb), rtol=1e-6, atol=1e-7)


def test_every_parameter_comes_back(round_trip):
    original, _, read, _ = round_trip
    assert read.config == original.config
    assert all(p.dtype == torch.float32 for p in read.parameters())
    assert_same_parameters(read, original)


def test_read_back_generator_renders_what_the_original_renders(round_trip):
    original, _, read, _ = round_trip
    gen = torch.Generator().manual_seed(3)
    frames = max(1, original.config.panorama)
    coords = torch.rand(2, 500, 2, generator=gen) * 2 - 1
    coords[..., 0] *= frames  # a panorama's whole circle, across the wrap
    z = torch.randn(2, original.config.style_dim, generator=gen)
    with torch.no_grad():
        want, got = original(coords, z), read(coords, z)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_info_names_the_file_and_its_provenance(round_trip):
    _, path, _, info = round_trip
    assert info["path"] == str(path.resolve())
    assert info["images_seen"] == 321 and info["provenance"]["images_seen"] == 321


def test_equal_weights_stored_once_by_the_tracer_come_back(tiny_onnx, tiny_checkpoint):
    """A freshly initialised generator: its modulation biases are all ones and its mapping biases all
    zeros, which the tracer stores once each, so the file holds fewer style tensors than parameters."""
    original = load_generator(tiny_checkpoint).generator
    read, info = generator_from_onnx(tiny_onnx)
    assert_same_parameters(read, original)
    assert info["images_seen"] == 4567


def test_packaged_model_renders_as_its_own_graph():
    """The packaged (fp16-precision) file: the read-back generator against onnxruntime on the file's own
    float32 graph, at random points inside and outside the frame, truncation 1."""
    path = packaged_model()
    read, info = generator_from_onnx(path)
    assert info["images_seen"] and info["provenance"]["images_seen"] == info["images_seen"]
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, read.config.style_dim)).astype(np.float32)
    coords = (rng.random((2, 300, 2)) * 2.4 - 1.2).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(["rgb"], {"z": z, "coords": coords, "truncation": np.ones(2, np.float32)})[0]
    with torch.no_grad():
        got = read(torch.from_numpy(coords), torch.from_numpy(z)).numpy()
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel < 1e-5, rel


def plain_onnx(path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph), path)


def foreign_style_half(path, source) -> None:
    """The tiny file with one more node in front of its style half."""
    model = onnx.load(source)
    model.graph.node.insert(0, helper.make_node("Identity", ["z"], ["z_again"]))
    onnx.save(model, path)


@pytest.mark.parametrize("make", [
    plain_onnx,
    lambda path: path.write_text("not a model\n"),
    lambda path: None,  # no file at all
], ids=["plain-onnx", "text", "missing"])
def test_files_that_are_not_cips_models_are_refused_in_one_line(tmp_path, make):
    path = tmp_path / "model.onnx"
    make(path)
    with pytest.raises(ExportError) as e:
        generator_from_onnx(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_style_half_it_cannot_match_is_refused_in_one_line(tmp_path, tiny_onnx):
    path = tmp_path / "foreign.onnx"
    foreign_style_half(path, tiny_onnx)
    with pytest.raises(ExportError, match="style graph this version cannot read back") as e:
        generator_from_onnx(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_another_format_version_is_refused_in_one_line(tmp_path, tiny_onnx):
    model = onnx.load(tiny_onnx)
    next(p for p in model.metadata_props if p.key == "cips.format_version").value = "2"
    path = tmp_path / "v2.onnx"
    onnx.save(model, path)
    with pytest.raises(ExportError, match="format version 2") as e:
        generator_from_onnx(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
