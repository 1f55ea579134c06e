"""The torch-free runtime: parity with the original generator through ONNX, chunk invariance, the
coordinate and seed conventions, and clear errors for bad models, devices and arrays."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from cips_edge.runtime import (CIPSModel, UserError, count_parameters, latent_for_seed, load_coords, load_latent,
                               output_paths, parse_seeds, pixel_grid, prepare_output, region_grid, render_image,
                               render_points, to_uint8, write_output)
from cips_edge.runtime.coords import grid_chunks
from cips_edge.core.format import KEY_CONFIG, KEY_VERSION
from cips_edge.core.files import atomic_write

TOL = 1e-5


def rel(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def points(nchw: np.ndarray) -> np.ndarray:  # [B, 2, H, W] -> [B, H*W, 2]
    return nchw.transpose(0, 2, 3, 1).reshape(nchw.shape[0], -1, 2)


def image(rgb: np.ndarray, h: int, w: int) -> np.ndarray:  # [B, H*W, 3] -> [B, 3, H, W]
    return rgb.reshape(rgb.shape[0], h, w, 3).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def official(official_onnx) -> CIPSModel:
    return CIPSModel(official_onnx, device="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_onnx) -> CIPSModel:
    return CIPSModel(tiny_onnx, device="cpu")


# -- the original generator's numbers, through ONNX Runtime ------------------------------------------
@pytest.mark.parametrize("key,psi", [("rgb_native", 1.0), ("rgb_native_trunc0.7", 0.7)])
def test_native_grid_matches_original(official, official_expected, key, psi):
    e = official_expected
    # the fixture's expected outputs are defined from its stored w; our graph maps z -> w itself
    rgb = render_points(official, e["z"], points(e["coords_native"]), truncation=psi)
    assert rel(image(rgb, 16, 16), e[key]) < TOL


def test_arbitrary_points_match_original(official, official_expected):
    e = official_expected
    rgb = render_points(official, e["z_arbitrary"], points(e["coords_arbitrary"]))
    assert rel(image(rgb, 23, 37), e["rgb_arbitrary"]) < TOL


def test_3x_grid_matches_original(official, official_expected):
    rgb = render_image(official, official_expected["z_arbitrary"][0], 48, 48)  # [H, W, 3]
    assert rel(rgb.transpose(2, 0, 1)[None], official_expected["rgb_3x_native_grid"]) < TOL


def test_w_avg_of_the_file_is_the_one_given_at_export(official, official_expected):
    assert np.array_equal(official.w_avg, official_expected["truncation_latent"][0])


# -- chunking, batching ------------------------------------------------------------------------------
def test_result_does_not_depend_on_chunk_size_or_threads(official, official_onnx, official_expected):
    z = official_expected["z_arbitrary"][0]
    ref = render_image(official, z, 48, 48, chunk=48 * 48)
    for chunk in (13, 1000, None):
        assert np.abs(render_image(official, z, 48, 48, chunk=chunk) - ref).max() <= 1e-6, chunk
    for threads in (1, 3):
        other = CIPSModel(official_onnx, device="cpu", threads=threads)
        assert np.abs(render_image(other, z, 48, 48, chunk=100) - ref).max() <= 1e-6, threads
    zs, pts = official_expected["z"], points(official_expected["coords_native"])
    ref = render_points(official, zs, pts, chunk=10**6)
    for chunk in (1, 2, 33, None):  # chunk 1: one point of each latent per call
        assert np.abs(render_points(official, zs, pts, chunk=chunk) - ref).max() <= 1e-6, chunk


def test_truncation_is_per_sample_in_a_batch(tiny):
    z = np.stack([latent_for_seed(s, tiny.style_dim) for s in (1, 2)])
    pts = region_grid(-1.2, -1, 1, 1.3, 5, 7)
    both = render_points(tiny, z, pts, truncation=np.array([1.0, 0.5]))
    assert np.abs(both[0] - render_points(tiny, z[0], pts, truncation=1.0)[0]).max() <= 1e-6
    assert np.abs(both[1] - render_points(tiny, z[1], pts, truncation=0.5)[0]).max() <= 1e-6
    assert np.abs(both[1] - render_points(tiny, z[1], pts)[0]).max() > 1e-3  # psi does something


def test_one_latent_runs_a_style_part_of_batch_one_and_a_batch_the_general_one(tiny_onnx):
    """One latent a call (every single image) runs the style part with its batch fixed to 1, so the
    traced shape arithmetic folds into constants; the first batch of several opens the general style
    part. Both give the same weights, bit for bit."""
    model = CIPSModel(tiny_onnx, device="cpu")
    e = model.engine
    assert e.style_session.get_inputs()[0].shape[0] == 1
    assert not hasattr(e._batch_style, "run")  # not opened yet
    z = np.stack([latent_for_seed(s, model.style_dim) for s in (1, 2, 3)])
    psi = np.array([1.0, 0.7, 1.0], np.float32)
    together = model.styles(z, psi)
    assert e.style_for(3) is not e.style_session and e.style_for(3).get_inputs()[0].shape[0] == "batch"
    for b, style in enumerate(together):
        [alone] = model.styles(z[b:b + 1], psi[b:b + 1])
        assert style.keys() == alone.keys() and all(np.array_equal(style[k], alone[k]) for k in style)


def test_render_image_is_render_points_on_the_region_grid(tiny):
    z = latent_for_seed(3, tiny.style_dim)
    region = (-0.5, -1.5, 2.0, 0.25)
    img = render_image(tiny, z, 9, 13, region=region, chunk=10)
    ref = render_points(tiny, z, region_grid(*region, 9, 13))[0].reshape(9, 13, 3)
    assert np.abs(img - ref).max() <= 1e-6
    assert render_points(tiny, z, np.zeros((0, 2), np.float32)).shape == (1, 0, 3)


def test_psi_zero_renders_w_avg_for_every_latent(tiny):
    z = np.stack([latent_for_seed(s, tiny.style_dim) for s in (4, 5)])
    rgb = render_points(tiny, z, pixel_grid(4, 4), truncation=0.0)
    assert np.abs(rgb[0] - rgb[1]).max() <= 1e-6


# -- conventions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(3, 5), (7, 2), (16, 16), (1, 4)])
def test_numpy_coords_match_torch_coords(h, w):
    torch_coords = pytest.importorskip("cips_edge.coords")
    # numpy's and torch's float64 linspace differ in the last bit (1e-16) at some points: within a
    # float32 ulp near 1, and rounding to float32 almost always hides it
    assert np.abs(pixel_grid(h, w) - torch_coords.pixel_grid(h, w).numpy()).max() <= 1.2e-7
    region = (-0.3, 0.1, 1.7, -2.0)
    assert np.abs(region_grid(*region, h, w) - torch_coords.region_grid(*region, h, w).numpy()).max() <= 2.4e-7
    chunks = np.concatenate([c for _, c in grid_chunks(h, w, 3, region)])
    assert np.array_equal(chunks, region_grid(*region, h, w))


def test_pixel_grid_follows_the_papers_formula():
    h, w = 4, 6
    grid = pixel_grid(h, w).reshape(h, w, 2)
    i, j = 2, 5
    assert grid[i, j, 0] == np.float32(2 * j / (w - 1) - 1) and grid[i, j, 1] == np.float32(2 * i / (h - 1) - 1)


def test_seed_latent_is_numpys_default_rng_in_float32():
    z = latent_for_seed(7, 8)
    assert z.dtype == np.float32 and z.shape == (8,)
    assert np.array_equal(z, np.random.default_rng(7).standard_normal(8).astype(np.float32))
    # pinned: the same numbers on every machine (numpy keeps PCG64's stream stable)
    assert np.allclose(latent_for_seed(0, 3), [0.12573022, -0.13210486, 0.64042265], atol=1e-7)
    with pytest.raises(UserError, match="non-negative"):
        latent_for_seed(-1, 8)


def test_parse_seeds():
    assert parse_seeds(["7"]) == [7]
    assert parse_seeds(["0-3", "2,9", "11"]) == [0, 1, 2, 3, 9, 11]
    for bad in ("-3", "a", "5-2", "1,,2", "3.5", "0-99999"):
        with pytest.raises(UserError):
            parse_seeds([bad])


def test_to_uint8_formula():
    v = np.array([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5], np.float32)
    expected = np.clip(np.rint((v.astype(np.float64) + 1) * 127.5), 0, 255)
    assert to_uint8(v).tolist() == expected.astype(np.uint8).tolist() == [0, 0, 64, 128, 166, 255, 255]


def test_parameter_count_matches_torch(official_dir):
    torch_model = pytest.importorskip("cips_edge.model")
    from cips_edge.core.config import PRESETS, GeneratorConfig

    for name in ("tiny", "edge-64"):
        g = torch_model.CIPSGenerator(PRESETS[name])
        assert count_parameters(PRESETS[name]) == sum(p.numel() for p in g.parameters()), name
    config = json.loads((official_dir / "config.json").read_text())
    params = config.pop("params")  # the original counts 7 per-pixel noise weights that we drop
    assert count_parameters(GeneratorConfig.from_dict(config)) == params - 7


# -- torch-free ---------------------------------------------------------------------------------------
def test_runtime_runs_where_torch_cannot_be_imported(tiny_onnx, torchless_env, tmp_path):
    code = (
        "import sys\n"
        "try:\n    import torch\nexcept ImportError:\n    pass\nelse:\n    sys.exit('blocker failed')\n"
        "from cips_edge.runtime import CIPSModel, render_image, latent_for_seed, write_output\n"
        f"m = CIPSModel({str(tiny_onnx)!r}, device='cpu')\n"
        "write_output('x.png', render_image(m, latent_for_seed(1, m.style_dim), 8, 8))\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules)\n"
        "assert m.engine is not None and 'cips_edge.runtime.split' in sys.modules  # the format-2 path ran\n"
        "print(m.provider)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=torchless_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "CPUExecutionProvider" and (tmp_path / "x.png").exists()


# -- devices --------------------------------------------------------------------------------------
def test_cpu_device_reports_its_provider(tiny_onnx):
    m = CIPSModel(tiny_onnx, device="cpu", threads=1)
    assert m.provider == "CPUExecutionProvider" and m.providers == ["CPUExecutionProvider"]


def test_cuda_without_a_cuda_build_is_an_error(tiny_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(UserError, match="no CUDA provider"):
        CIPSModel(tiny_onnx, device="cuda")


def test_cuda_that_falls_back_to_cpu_is_an_error(tiny_onnx, monkeypatch):
    """onnxruntime quietly runs on CPU when CUDA fails to load: the model must notice and refuse."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.warns(UserWarning), pytest.raises(UserError, match="could not load its CUDA provider"):
        CIPSModel(tiny_onnx, device="cuda")


@pytest.mark.parametrize("kwargs,match", [({"device": "gpu"}, "unknown device"), ({"threads": -1}, "^threads must be 0")])
def test_bad_options(tiny_onnx, kwargs, match):
    with pytest.raises(UserError, match=match):
        CIPSModel(tiny_onnx, **kwargs)


def test_one_chunk_rule_for_every_renderer(tiny_onnx):
    """chunks.default_chunk decides every default: 1,024 points on the CPU for fast paths, a small image
    split evenly over the threads (not below MIN_SPLIT), a stream over many threads shrunk to fit
    ACTIVATION_BYTES; the model and its w-space twin answer alike and both are RenderModels."""
    from cips_edge.runtime.chunks import CPU_CHUNK, MIN_SPLIT, MIN_STREAM_CHUNK, chunk_size, default_chunk
    from cips_edge.runtime.protocol import RenderModel
    from cips_edge.runtime.wspace import WSpaceModel

    four = CIPSModel(tiny_onnx, device="cpu", threads=4)
    assert four.default_chunk == default_chunk(four) == default_chunk(four, threads=4) == CPU_CHUNK
    assert [default_chunk(four, points=p) for p in (2000, 100, 10**6)] == [500, MIN_SPLIT, CPU_CHUNK]
    assert default_chunk(four, threads=10**6) == MIN_STREAM_CHUNK
    assert chunk_size(four, 7, points=2000) == 7 and chunk_size(four, None, points=2000) == 500
    assert default_chunk(CIPSModel(tiny_onnx, device="cpu", threads=1), points=2000) == CPU_CHUNK
    w = WSpaceModel(four)
    assert isinstance(four, RenderModel) and isinstance(w, RenderModel)
    assert (w.default_chunk, w.workers, w.provider, w.precision) == (CPU_CHUNK, 4, four.provider, four.precision)


def test_bad_chunk_and_truncation(tiny):
    z = latent_for_seed(0, tiny.style_dim)
    with pytest.raises(UserError, match="^chunk must be at least 1 point, got 0$"):
        render_image(tiny, z, 4, 4, chunk=0)
    with pytest.raises(UserError, match="truncation"):
        render_image(tiny, z, 4, 4, truncation=float("nan"))
    with pytest.raises(UserError, match="style_dim"):
        render_image(tiny, z[:-1], 4, 4)


# -- bad model files ------------------------------------------------------------------------------
def _without_metadata(src: Path, dst: Path, change: dict | None = None) -> Path:
    model = onnx.load(src)
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for key, value in (change or {}).items():
        props[key] = value
    if change is not None:
        for key, value in props.items():
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, dst)
    return dst


@pytest.mark.parametrize("case,match", [
    ("missing", "model not found"),
    ("folder", "model is a folder, not an ONNX file"),
    ("pipe", "model is not a regular file"),
    ("truncated", "not a loadable ONNX model"),
    ("text", "not a loadable ONNX model"),
    ("no-metadata", "not a cips-edge model"),
    ("newer-version", "format version 99"),
    ("damaged-config", "damaged cips metadata"),
])
def test_bad_model_files(tiny_onnx, tmp_path, case, match):
    path = tmp_path / "m.onnx"
    if case == "folder":
        path.mkdir()
    elif case == "pipe":  # exists, but no file to read a model from (opening it would block)
        os.mkfifo(path)
    elif case == "truncated":
        path.write_bytes(tiny_onnx.read_bytes()[:5000])
    elif case == "text":
        path.write_text("this is not a model\n")
    elif case == "no-metadata":
        _without_metadata(tiny_onnx, path)
    elif case == "newer-version":
        _without_metadata(tiny_onnx, path, {KEY_VERSION: "99"})
    elif case == "damaged-config":
        _without_metadata(tiny_onnx, path, {KEY_CONFIG: '{"size": "oops"'})
    with pytest.raises(UserError, match=match) as info:
        CIPSModel(path, device="cpu")
    assert "\n" not in str(info.value)


# -- arrays from files ----------------------------------------------------------------------------
@pytest.mark.parametrize("array,match", [
    (np.zeros((4, 3), np.float32), r"shaped \(\.\.\., 2\)"),
    (np.array([["a", "b"]]), "real numbers"),
    (np.array([[0.0, np.nan]]), "NaN"),
    (np.array([[np.inf, 0.0]]), "NaN or infinite"),
    (np.array([[1e300, 0.0]]), "beyond float32"),
])
def test_bad_coords(tmp_path, array, match):
    np.save(tmp_path / "c.npy", array)
    with pytest.raises(UserError, match=match):
        load_coords(tmp_path / "c.npy")


def test_coords_of_any_real_dtype_are_cast(tmp_path):
    np.save(tmp_path / "c.npy", np.array([[[1, -1]], [[0, 0]]], np.int16))
    c = load_coords(tmp_path / "c.npy")
    assert c.dtype == np.float32 and c.shape == (2, 1, 2)
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError, match="not a readable .npy"):
        load_coords(tmp_path / "junk.npy")


def test_latent_files(tmp_path):
    z = latent_for_seed(4, 16)
    np.save(tmp_path / "a.npy", z[None].astype(np.float64))
    assert np.array_equal(load_latent(tmp_path / "a.npy", 16), z)
    np.save(tmp_path / "b.npy", z[:15])
    with pytest.raises(UserError, match=r"shape \(15,\); the model expects \(16,\)"):
        load_latent(tmp_path / "b.npy", 16)
    with pytest.raises(UserError, match="not found"):
        load_latent(tmp_path / "missing.npy", 16)


# -- outputs --------------------------------------------------------------------------------------
def test_output_path_rules(tmp_path):
    assert output_paths(None, [7], "cips-seed{seed}.png") == [Path("cips-seed7.png")]
    assert output_paths("a.png", [7], "cips-seed{seed}.png") == [Path("a.png")]
    assert output_paths(f"{tmp_path}/", [1, 2], "cips-seed{seed}.png") == [
        tmp_path / "cips-seed1.png", tmp_path / "cips-seed2.png"]
    assert output_paths(str(tmp_path), [3], "s{seed}.png") == [tmp_path / "s3.png"]  # an existing folder
    assert output_paths("f-{seed:03d}.npy", [1, 20], "x") == [Path("f-001.npy"), Path("f-020.npy")]
    for bad in ("a.png", "x-{nope}.png", "same.png{}"):
        with pytest.raises(UserError):
            output_paths(bad, [1, 2], "cips-seed{seed}.png")
    with pytest.raises(UserError, match=r"give the file a name before its type \(e.g. image.png\)"):
        prepare_output(tmp_path / ".png")  # Python sees a hidden file named .png, of no type
    with pytest.raises(UserError, match="must end in .png or .npy"):
        prepare_output(tmp_path / "a.jpg")


def test_writes_are_atomic(tmp_path):
    target = tmp_path / "x.npy"
    write_output(target, np.ones((2, 2, 3), np.float32))
    before = target.read_bytes()

    def fail(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match="No space left"):
        atomic_write(target, fail)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
    assert np.array_equal(np.load(target), np.ones((2, 2, 3), np.float32))
