"""Precisions of the pixel graph: `cips export --precision fp16|int8` files hold their own pixel graph
and the fp32 one, render transparently (fp32 where the provider does not suit the file's precision),
stay close to fp32 (PSNR), and say what they are; bad requests are one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cips_edge.cli as cli
from cips_edge.runtime import CIPSModel, UserError, latent_for_seed, psnr, render_image, render_points
from cips_edge.runtime.split import BAND_POINTS, MAX_CUDA_CHUNK, MIN_CUDA_CHUNK, auto_cuda_chunk, band_size
from cli_helpers import runner

SIZE = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    from cips_edge.export import export_checkpoint

    folder = tmp_path_factory.mktemp("precision")
    return {p: export_checkpoint(folder / f"{p}.onnx", tiny_checkpoint, precision=p).path for p in ("fp16", "int8")}


def image(model: CIPSModel, seed: int = 3) -> np.ndarray:
    return render_image(model, latent_for_seed(seed, model.style_dim), SIZE, SIZE)


@pytest.fixture(scope="module")
def reference(tiny_onnx) -> np.ndarray:
    return image(CIPSModel(tiny_onnx, device="cpu"))


def test_fp16_file_runs_its_fp32_graph_on_the_cpu_bit_for_bit(exported, reference):
    model = CIPSModel(exported["fp16"], device="cpu")
    assert model.info.precision == "fp16" and sorted(model.info.pixel_graphs) == ["fp16", "fp32"]
    assert model.precision == "fp32"  # float16 GEMMs are slow on CPUs: auto takes the fp32 graph
    assert np.array_equal(image(model), reference)


def test_fp16_pixel_graph_is_the_folded_chain(exported):
    """float16 graph: one Gemm + LeakyRelu per layer, bias, gain and ToRGB folded into the weights."""
    import onnx

    from cips_edge.core.config import preset

    model = CIPSModel(exported["fp16"], device="cpu")
    graph = onnx.load_from_string(model.info.pixel_graphs["fp16"]).graph
    ops = [n.op_type for n in graph.node]
    c = preset("tiny")
    lookup = {"Reshape", "GridSample"}  # the table lookup (GridSample: faster than Gathers on the GPU)
    assert set(ops) - lookup == {"Gemm", "Sin", "LeakyRelu", "Cast"}
    assert ops.count("LeakyRelu") == len(c.layer_shapes) and ops.count("Gemm") == len(c.layer_shapes) + 3
    # Fourier block and looked-up embedding to float16, the last activation back to float32
    assert ops.count("Cast") == 3
    assert [i.type.tensor_type.elem_type for i in graph.input if i.name == "embedding"] == [onnx.TensorProto.FLOAT]


def test_fp16_pixel_graph_is_within_40_db_of_fp32(exported, reference):
    model = CIPSModel(exported["fp16"], device="cpu", precision="fp16")
    assert model.precision == "fp16"
    quality = psnr(image(model), reference)
    assert 40 <= quality < float("inf"), quality  # close, and really computed in float16


def test_int8_file_runs_int8_on_the_cpu(exported, reference):
    model = CIPSModel(exported["int8"], device="cpu")
    assert model.precision == "int8" and sorted(model.info.pixel_graphs) == ["fp32", "int8"]
    quality = psnr(image(model), reference)
    assert 20 <= quality < 60, quality  # the same image, with int8's rounding
    exact = CIPSModel(exported["int8"], device="cpu", precision="fp32")
    assert np.array_equal(image(exact), reference)


def test_int8_result_is_the_same_for_any_thread_count(exported):
    one, two = (CIPSModel(exported["int8"], device="cpu", threads=t) for t in (1, 2))
    z = latent_for_seed(5, one.style_dim)
    assert np.array_equal(render_image(one, z, SIZE, SIZE, chunk=100), render_image(two, z, SIZE, SIZE, chunk=100))


# A format-1 file: an earlier packaged default model (the emoji recipe at 1,052 kimg).
FORMAT_1_FILE = Path(__file__).parent / "data" / "format1-emoji-1052kimg.onnx"


@pytest.mark.parametrize("precision,match", [("fp16", "holds no fp16 pixel graph"), ("fp8", "must be one of")])
def test_a_precision_the_file_lacks_is_an_error(tiny_onnx, precision, match):
    with pytest.raises(UserError, match=match):
        CIPSModel(tiny_onnx, device="cpu", precision=precision)


def test_format_1_files_render_and_refuse_other_precisions():
    path = FORMAT_1_FILE
    model = CIPSModel(path, device="cpu")
    assert model.info.format_version == 1 and model.precision == "fp32"
    z = latent_for_seed(1, model.style_dim)
    assert np.array_equal(render_image(model, z, 20, 20, chunk=7), render_image(model, z, 20, 20, chunk=400))
    with pytest.raises(UserError, match="format-1 file"):
        CIPSModel(path, device="cpu", precision="int8")


# -- the CLI ----------------------------------------------------------------------------------------
def test_cli_export_precision_info_and_render(tiny_checkpoint, tmp_path):
    out = tmp_path / "m.onnx"
    r = runner.invoke(cli.app, ["export", str(out), "--checkpoint", str(tiny_checkpoint), "--precision", "fp16"])
    assert r.exit_code == 0, r.stderr
    assert ", fp16) in" in r.stdout and "its fp16 pixel graph differs by" in r.stdout
    r = runner.invoke(cli.app, ["info", "--model", str(out)])
    assert "\nprecision   fp16 (pixel graphs fp16, fp32)\n" in r.stdout
    r = runner.invoke(cli.app, ["render", "--model", str(out), "--size", "8", "--precision", "fp16", "--device", "cpu",
                                "--out", str(tmp_path / "x.npy")])
    assert r.exit_code == 0, r.stderr
    assert "on CPUExecutionProvider (fp16) in" in r.stdout and np.load(tmp_path / "x.npy").shape == (8, 8, 3)


def test_cli_bad_precision_is_one_line_and_no_file(tiny_checkpoint, tiny_onnx, tmp_path):
    r = runner.invoke(cli.app, ["export", str(tmp_path / "m.onnx"), "--checkpoint", str(tiny_checkpoint),
                                "--precision", "fp8"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "--precision must be one of fp32, fp16, int8" in r.stderr
    r = runner.invoke(cli.app, ["render", "--model", str(tiny_onnx), "--precision", "int8", "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "holds no int8 pixel graph" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_info_says_a_format_1_file_is_fp32():
    r = runner.invoke(cli.app, ["info", "--model", str(FORMAT_1_FILE)])
    assert r.exit_code == 0, r.stderr
    assert "\nprecision   fp32 (format 1: one graph" in r.stdout


def test_info_lists_the_packaged_models_pixel_graphs():
    r = runner.invoke(cli.app, ["info"])
    assert r.exit_code == 0, r.stderr
    assert "\nprecision   fp16 (pixel graphs fp16, fp32, int8)" in r.stdout and "cips-edge-onnx v3" in r.stdout


# -- the GPU path's arithmetic (the GPU itself is measured by benchmarks/render.py) -----------------
def test_cuda_chunk_and_band_sizes(exported):
    info = CIPSModel(exported["fp16"], device="cpu").info
    chunk = auto_cuda_chunk(info, "fp16")
    assert MIN_CUDA_CHUNK <= chunk <= MAX_CUDA_CHUNK and chunk & (chunk - 1) == 0
    assert auto_cuda_chunk(info, "fp16", budget=1) == MIN_CUDA_CHUNK
    assert auto_cuda_chunk(info, "fp32", budget=1 << 24) <= auto_cuda_chunk(info, "fp16", budget=1 << 24)
    assert band_size(1000, 50) == 50 and band_size(1000, 1000) == 1000 and band_size(1 << 18, 1 << 30) == BAND_POINTS
    assert band_size(3000, 10_000) == 9000  # whole chunks


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_bound_path_gives_the_plain_paths_pixels(exported, tiny_onnx, precision):
    """The GPU's I/O-binding path (weights kept where the style graph left them, chunks bound as slices of
    one band, queued without waiting) run on the CPU: the same numbers as plain calls, for a batch of
    latents and a band that is not a whole number of chunks."""
    from cips_edge.runtime.split import SplitEngine

    plain = CIPSModel(exported["int8"] if precision == "int8" else tiny_onnx, device="cpu", precision=precision)
    e = plain.engine
    bound = SplitEngine(plain.ort, e.style_session, e.pixel_session, e.info, e.precision, bound="cpu", table=e.host_table,
                        batch_style=e.style_for(2))
    z = np.stack([latent_for_seed(s, plain.style_dim) for s in (1, 2, 3)])
    psi = np.array([1.0, 0.7, 1.0], np.float32)
    coords = np.random.default_rng(0).uniform(-1.2, 1.2, (250, 2)).astype(np.float32)
    for style_plain, style_bound in zip(plain.styles(z, psi), bound.styles(z, psi)):
        expected = plain.pixels(style_plain, coords)  # one call for all points
        got = bound.render_band(style_bound, coords, chunk=64)  # four calls of 64, 64, 64, 58
        if precision == "fp32":
            assert np.array_equal(got, expected)
        else:  # int8: each chunk quantizes its activations with its own scale
            assert 0 < np.linalg.norm(got - expected) / np.linalg.norm(expected) < 0.05


def test_renders_through_the_bound_path_equal_plain_renders(tiny_onnx, monkeypatch):
    """render_image and render_points as they run on a GPU (bands of whole chunks, a batch of latents'
    weights sliced from one style run), here on the CPU: bit-identical to the plain path in fp32."""
    from cips_edge.runtime import split
    from cips_edge.runtime.split import SplitEngine

    plain = CIPSModel(tiny_onnx, device="cpu", threads=1)
    bound = CIPSModel(tiny_onnx, device="cpu", threads=1)
    e = bound.engine
    bound.engine = SplitEngine(bound.ort, e.style_session, e.pixel_session, e.info, e.precision, bound="cpu",
                               table=e.host_table, batch_style=e.style_for(2))
    assert bound.on_device
    monkeypatch.setattr(split, "BAND_POINTS", 150)  # several bands: 150 points = 3 chunks of 50
    z = np.stack([latent_for_seed(s, plain.style_dim) for s in (4, 5)])
    assert bound.piece_size(50, 19 * 23) == 150
    assert np.array_equal(render_image(bound, z[0], 19, 23, chunk=50), render_image(plain, z[0], 19, 23))
    coords = np.random.default_rng(1).uniform(-1, 1, (2, 333, 2)).astype(np.float32)
    assert np.array_equal(render_points(bound, z, coords, truncation=np.array([1.0, 0.6]), chunk=64),
                          render_points(plain, z, coords, truncation=np.array([1.0, 0.6])))


# Format-2 files of the tiny generator of torch.manual_seed(0) (the weights of the tiny_checkpoint
# fixture), precision fp16 with int8 included. The first's pixel graphs sample the table with
# GridSample and take it as [1, H, rows, columns]; the second's gather texel rows.
GRIDSAMPLE_FILE = Path(__file__).parent / "data" / "format2-gridsample-tiny.onnx"
FORMAT_2_FILE = Path(__file__).parent / "data" / "format2-tiny.onnx"  # fp32, fp16 and int8 pixel graphs


@pytest.mark.parametrize("path,table_rank", [(GRIDSAMPLE_FILE, 4), (FORMAT_2_FILE, 2)])
def test_format_2_files_still_render(tiny_onnx, path, table_rank):
    """Format-2 files of the same tiny generator (GridSample or texel-row lookups) render what a
    format-3 export of it renders, in all three precisions."""
    old = CIPSModel(path, device="cpu", precision="fp32")
    new = CIPSModel(tiny_onnx, device="cpu", precision="fp32")
    assert old.info.format_version == 2 and new.info.format_version == 3
    assert old.engine.table.ndim == table_rank and new.engine.table.ndim == 2  # v3: texel rows from the file's graph
    z = latent_for_seed(3, old.style_dim)
    reference = render_image(new, z, 24, 24)
    rgb = render_image(old, z, 24, 24)
    assert np.linalg.norm(rgb - reference) / np.linalg.norm(reference) < 1e-5
    for precision, low in (("fp16", 40), ("int8", 20)):
        reduced = render_image(CIPSModel(path, device="cpu", precision=precision), z, 24, 24)
        assert low <= psnr(reduced, reference) < float("inf"), precision
