"""The exported file's own graph is the whole generator in standard ONNX: any runtime renders it with
only z, coords and truncation. Proved here with three independent runtimes against the original
code's fixture output: ONNX Runtime (a plain InferenceSession), onnx's ReferenceEvaluator (numpy) and
OpenVINO."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cips_edge.core.config import preset
from cips_edge.export import export_generator
from cips_edge.model import CIPSGenerator

REL_TOL = 1e-5


def run_onnxruntime(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["rgb"], feeds)[0]


def run_reference(path, feeds):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(onnx.load(path)).run(["rgb"], feeds)[0]


def run_openvino(path, feeds):
    ov = pytest.importorskip("openvino", reason="OpenVINO is in the [dev] extra")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(feeds)[compiled.output("rgb")]


RUNTIMES = {"onnxruntime": run_onnxruntime, "reference": run_reference, "openvino": run_openvino}


def relative_error(out, ref) -> float:
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


def points(a: np.ndarray) -> np.ndarray:
    """[B, C, H, W] fixture layout -> [B, H*W, C]"""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1).reshape(a.shape[0], -1, a.shape[1]))


def fixture_cases(expected: dict, few: bool) -> list[tuple[str, dict, np.ndarray]]:
    """(what, feeds, expected rgb [B, N, 3]) from the original generator's outputs. few: a few dozen
    points per case (the reference evaluator is plain numpy)."""
    take = (lambda a: a[:, :24]) if few else (lambda a: a)
    native, arbitrary = points(expected["coords_native"]), points(expected["coords_arbitrary"])
    z, z_arbitrary = expected["z"], expected["z_arbitrary"]
    cases = [("native grid", z, native, 1.0, expected["rgb_native"]),
             ("native grid, psi 0.7", z, native, 0.7, expected["rgb_native_trunc0.7"]),
             ("arbitrary points", z_arbitrary, arbitrary, 1.0, expected["rgb_arbitrary"])]
    out = []
    for what, z, coords, psi, rgb in cases:
        feeds = {"z": z, "coords": take(coords), "truncation": np.full(len(z), psi, np.float32)}
        out.append((what, feeds, take(points(rgb))))
    return out


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_renders_the_original_generators_output(official_onnx, official_expected, runtime):
    for what, feeds, rgb in fixture_cases(official_expected, few=runtime == "reference"):
        error = relative_error(RUNTIMES[runtime](official_onnx, feeds), rgb)
        assert error <= REL_TOL, f"{runtime}, {what}: relative error {error:.2e}"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict:
    """The same small generator, flat and as a panorama, exported in each precision."""
    files = {}
    folder = tmp_path_factory.mktemp("portable")
    for frames in (0, 3):
        torch.manual_seed(5)
        generator = CIPSGenerator(dataclasses.replace(preset("tiny"), panorama=frames))
        for precision in ("fp32", "fp16", "int8"):
            path = folder / f"p{frames}-{precision}.onnx"
            export_generator(generator, path, precision=precision)
            files[frames, precision] = (path, generator)
    return files


@pytest.mark.parametrize("frames", (0, 3))
@pytest.mark.parametrize("precision", ("fp32", "fp16", "int8"))
def test_any_precision_flat_or_panorama_is_a_standard_graph_every_runtime_renders(tiny_files, frames, precision):
    path, generator = tiny_files[frames, precision]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [i.name for i in model.graph.input] == ["z", "coords", "truncation"]
    assert [o.name for o in model.graph.output] == ["rgb"]
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)

    rng = np.random.default_rng(frames)
    z = rng.standard_normal((2, generator.config.style_dim)).astype(np.float32)
    coords = (rng.random((2, 30, 2)) * 3 - 1.5).astype(np.float32)
    coords[..., 0] *= max(1, frames)  # a panorama wraps at x' = +-frames: go past it
    psi = np.array([1.0, 0.6], np.float32)
    w_avg = torch.tensor(np.asarray(stored_w_avg(model)))
    with torch.no_grad():
        g = generator.double()
        ref = np.concatenate([g(torch.from_numpy(coords[b:b + 1]).double(), torch.from_numpy(z[b:b + 1]).double(),
                                truncation=float(psi[b]), w_avg=w_avg.double()).numpy() for b in range(2)])
        generator.float()
    for runtime, run in RUNTIMES.items():
        error = relative_error(run(path, {"z": z, "coords": coords, "truncation": psi}), ref)
        assert error <= REL_TOL, f"{runtime}: relative error {error:.2e}"


def stored_w_avg(model: onnx.ModelProto) -> list:
    """The mean mapped latent the export computed, as its metadata holds it."""
    return [json.loads(p.value) for p in model.metadata_props if p.key == "cips.w_avg"][0]


def readme_example() -> str:
    """The README's plain-ONNX-Runtime example: the python block that follows its marker line."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("<!-- example: plain onnxruntime -->")
    block = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    return block


def test_readme_example_renders_what_cips_renders(tiny_onnx, tmp_path):
    """The README's ~15 lines of plain ONNX Runtime (no cips import) give `cips render`'s picture."""
    import subprocess
    import sys

    from PIL import Image

    from cips_edge.runtime import CIPSModel, latent_for_seed, render_image, to_uint8

    code = readme_example()
    assert "cips_edge" not in code and "import cips" not in code, "the example must not use cips"
    assert len(code.strip().splitlines()) <= 16
    (tmp_path / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    picture = np.asarray(Image.open(tmp_path / "seed7.png"))
    model = CIPSModel(tiny_onnx, device="cpu", precision="fp32")
    expected = to_uint8(render_image(model, latent_for_seed(7, model.style_dim), *picture.shape[:2]))
    assert picture.shape == expected.shape
    assert np.abs(picture.astype(int) - expected).max() <= 1  # two float32 roundings of one value may differ by 1
    assert np.mean(picture == expected) > 0.99
