"""The int8 pixel path: its channel equalization (export/style.py FastStyle.equalized) computes the
same chain in float, its int8 weights are its float ones rounded, and on the packaged model it renders
closer to fp32 than the same graph fed weights quantized without it; its leading float32 layers
(export/calibrate.py) are the fewest that keep the calibration seeds within the target."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from cips_edge.core.config import preset
from cips_edge.core.format import packaged_model
from cips_edge.export import ExportError, export_generator, generator_from_onnx
from cips_edge.export.calibrate import CALIBRATION_SEEDS, CALIBRATION_SIDE, INT8_TARGET_DB
from cips_edge.export.style import INT8_MAX, FastStyle, StyleGraph, biases, bias_names, int8_names, rgb_sources
from cips_edge.model import LRELU_SLOPE, CIPSGenerator
from cips_edge.runtime import CIPSModel, latent_for_seed, psnr_uint8, render_points, to_uint8
from cips_edge.runtime.coords import FULL_FRAME, region_grid


def chain(first: list, weights: list, shifts: list, to_rgb: list, fo: torch.Tensor, co: torch.Tensor,
          sources: list[int]) -> torch.Tensor:
    """The plain layout's per-point chain in float64: [B, n, F], [B, n, H] -> rgb [B, n, 3] (no rgb_bias)."""
    def leaky(x):
        return torch.nn.functional.leaky_relu(x, LRELU_SLOPE)

    x = leaky(fo @ first[0].double() + co @ first[1].double())
    rgb = 0
    for i, (w, b) in enumerate(zip(weights, shifts), start=1):
        x = leaky(x @ w.double() + b.double().unsqueeze(-2))  # b: [out] (plain) or [B, out]
        if i in sources:
            rgb = rgb + x @ to_rgb[sources.index(i)].double()
    return rgb


def test_equalized_weights_compute_the_same_chain_and_quantize_to_within_half_a_step():
    torch.manual_seed(0)
    config = preset("tiny")
    generator = CIPSGenerator(config).eval()
    n = len(config.layer_shapes) - 1
    with torch.no_grad():
        plain = StyleGraph(generator, generator.mean_w(64)).forward(torch.randn(2, config.style_dim), torch.ones(2))
        bias = [biases(generator)[name] for name in bias_names(config)[:-1]]
        style = FastStyle(config, ("int8",))
        equal = style.equalized(list(plain), bias)
        quantized = dict(zip(int8_names(config), style.quantized(list(plain), bias)))
    fo = torch.randn(2, 500, plain[0].shape[1], dtype=torch.float64)
    co = torch.randn(2, 500, config.hidden_size, dtype=torch.float64)
    sources = rgb_sources(config)
    expected = chain(plain[:2], plain[2:n + 2], bias, plain[n + 2:], fo, co, sources)
    got = chain(equal[:2], equal[2:n + 2], equal[n + 2:2 * n + 2], equal[2 * n + 2:], fo, co, sources)
    assert float((got - expected).norm() / expected.norm()) < 1e-5
    assert not torch.allclose(equal[2], plain[2])  # the gains did change the weights
    for i, weight in enumerate(equal[2:n + 2], start=1):
        q, scale = quantized[f"q{i}"], quantized[f"qscale{i}"][:, None]  # [B, in, out], [B, 1, out]
        assert q.dtype == torch.int8 and int(q.abs().max()) == INT8_MAX
        assert float(((q.float() * scale - weight).abs() - scale / 2).max()) <= 1e-6


def psnr8(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR (dB) of the 8-bit images of two raw renders."""
    return psnr_uint8(to_uint8(image), to_uint8(reference))


@pytest.fixture(scope="module")
def packaged_generator() -> tuple[CIPSGenerator, torch.Tensor]:
    generator, _ = generator_from_onnx(packaged_model())
    return generator, torch.from_numpy(CIPSModel(packaged_model(), device="cpu").w_avg).reshape(1, -1)


def export_int8(tmp_path_factory, packaged_generator, float_layers: int | None) -> CIPSModel:
    generator, w_avg = packaged_generator
    path = tmp_path_factory.mktemp("int8") / "m.onnx"
    export_generator(generator, path, w_avg=w_avg, include=("int8",), int8_float_layers=float_layers)
    return CIPSModel(path, device="cpu", precision="int8", threads=1)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, packaged_generator) -> tuple[CIPSModel, CIPSModel, dict]:
    """The packaged model's fp32 path and an int8 path with every hidden layer in 8 bits."""
    path = packaged_model()
    shared = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name.startswith("bias")}
    return (CIPSModel(path, device="cpu", precision="fp32", threads=1),
            export_int8(tmp_path_factory, packaged_generator, 0), shared)


def test_int8_renders_of_the_packaged_model_beat_unequalized_quantization(packaged):
    """Over seeds 0-15 (64x64), channel equalization lifts the worst seed's int8 PSNR and the mean: the
    packaged model 31.1 -> 31.8 dB worst, 36.0 -> 36.7 dB mean; seed by seed it can lose a little."""
    fp32, int8, shared = packaged
    points = region_grid(*FULL_FRAME, 64, 64)
    chunk = int8.default_chunk  # each call quantizes its activations with its own scale: chunk as rendered
    config = fp32.config

    def render(model: CIPSModel, style: dict) -> np.ndarray:
        return np.concatenate([model.pixels(style, points[i:i + chunk]) for i in range(0, len(points), chunk)])

    before, equalized = [], []
    for seed in range(16):
        z, psi = latent_for_seed(seed, fp32.style_dim)[None], np.ones(1, np.float32)
        plain = fp32.styles(z, psi)[0]
        reference = render(fp32, plain)
        equalized.append(psnr8(render(int8, int8.styles(z, psi)[0]), reference))
        # the same int8 graph fed the plain weights, quantized per column as they are
        unequal = {"q0_fo": plain["p0_fo"], "q0_co": plain["p0_co"]}
        for i in range(1, len(config.layer_shapes)):
            scale = np.abs(plain[f"p{i}"]).max(0) / INT8_MAX
            unequal[f"q{i}"] = np.clip(np.round(plain[f"p{i}"] / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
            unequal[f"qscale{i}"], unequal[f"qbias{i}"] = scale.astype(np.float32), shared[f"bias{i}"]
        unequal.update({f"qt{k}": plain[f"t{k}"] for k in range(config.n_to_rgb)})
        before.append(psnr8(render(int8, unequal), reference))
    assert min(equalized) > min(before) + 0.2 and np.mean(equalized) > np.mean(before) + 0.2, (before, equalized)
    assert 25 < min(equalized) and max(equalized) < 60, equalized


def worst_calibration_psnr(int8: CIPSModel, fp32: CIPSModel) -> float:
    """The worst 8-bit PSNR over the calibration seeds, rendered as cips renders them on the CPU."""
    points = region_grid(*FULL_FRAME, CALIBRATION_SIDE, CALIBRATION_SIDE)
    scores = []
    for seed in CALIBRATION_SEEDS:
        z = latent_for_seed(seed, fp32.style_dim)
        scores.append(psnr_uint8(to_uint8(render_points(int8, z, points, chunk=int8.default_chunk)[0]),
                                 to_uint8(render_points(fp32, z, points, chunk=fp32.default_chunk)[0])))
    return min(scores)


def test_calibration_keeps_the_fewest_float_layers_that_reach_the_target(tmp_path_factory, packaged_generator, packaged):
    """The exported file records how many leading hidden layers its int8 graph keeps in float32; with
    them its renders reach INT8_TARGET_DB on every calibration seed, and with one layer fewer they do not."""
    fp32 = packaged[0]
    calibrated = export_int8(tmp_path_factory, packaged_generator, None)
    facts = calibrated.provenance["int8"]
    k = facts["float_layers"]
    assert 0 < k < len(fp32.config.layer_shapes) - 1, facts  # this model needs some, not all
    graph = onnx.load_from_string(calibrated.info.pixel_graphs["int8"]).graph
    kinds = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    assert [i for i in range(1, len(fp32.config.layer_shapes)) if kinds[f"q{i}"] == onnx.TensorProto.FLOAT] == \
        list(range(1, k + 1))
    worst = worst_calibration_psnr(calibrated, fp32)
    assert worst >= INT8_TARGET_DB and abs(worst - facts["worst_psnr_db"]) < 0.05, (worst, facts)
    fewer = export_int8(tmp_path_factory, packaged_generator, k - 1)
    assert fewer.provenance["int8"] == {"float_layers": k - 1, "hidden_layers": 8, "chosen": "given"}
    assert worst_calibration_psnr(fewer, fp32) < INT8_TARGET_DB


@pytest.mark.parametrize("float_layers", [-1, 9])
def test_float_layers_beyond_the_hidden_layers_are_refused(tmp_path, packaged_generator, float_layers):
    generator, w_avg = packaged_generator
    with pytest.raises(ExportError, match=r"int8_float_layers must be in 0\.\.8 \(the hidden layers\), got"):
        export_generator(generator, tmp_path / "m.onnx", w_avg=w_avg, include=("int8",), int8_float_layers=float_layers)
    assert not (tmp_path / "m.onnx").exists()
