"""The fp16 grid graph (regular grids: full images, regions, bands): the same picture as the fp16 pixel
graph at the grid's points, for flat and panorama models, through plain calls and the GPU's I/O-binding
path run on the CPU; every pixel is rendered exactly once whatever the chunk."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cips_edge.core.config import preset
from cips_edge.runtime import (CIPSModel, UserError, latent_for_seed, psnr, region_grid, render_image, render_images,
                               render_points)
from cips_edge.runtime.split import SplitEngine, grid_calls
from benchmark_scripts import load

REGIONS = [((-1.0, -1.0, 1.0, 1.0), 21, 34), ((-1.4, 0.3, 2.2, -1.25), 9, 40), ((0.2, 0.5, 0.2001, 0.9), 6, 5)]


def _export(folder: Path, panorama: int) -> Path:
    from cips_edge.export import export_generator
    from cips_edge.model import CIPSGenerator

    torch.manual_seed(panorama)
    generator = CIPSGenerator(dataclasses.replace(preset("tiny"), panorama=panorama))
    with torch.no_grad():  # biases as training leaves them, not the init's zeros
        for layer in [generator.input_layer, *generator.layers]:
            layer.bias.copy_(0.2 * torch.randn(layer.bias.shape))
    return export_generator(generator, folder / f"p{panorama}.onnx", precision="fp16").path


@pytest.fixture(scope="module", params=[0, 3], ids=["flat", "panorama"])
def fp16_file(request, tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("grid"), request.param)


@pytest.mark.parametrize("chunk", [None, 7, 64])
def test_the_grid_graph_renders_what_the_pixel_graph_renders_at_the_grids_points(fp16_file, chunk):
    grid = CIPSModel(fp16_file, device="cpu", precision="fp16")
    reference = CIPSModel(fp16_file, device="cpu", precision="fp32")
    assert grid.grid_ready and not reference.grid_ready
    z = latent_for_seed(5, grid.style_dim)
    for region, h, w in REGIONS:
        if grid.config.panorama:  # round the circle and past the wrap
            region = (region[0] * 3, region[1], region[2] * 3, region[3])
        got = render_image(grid, z, h, w, region=region, chunk=chunk)
        points = region_grid(*region, h, w)
        fp16_points = render_points(grid, z, points, chunk=chunk)[0].reshape(h, w, 3)
        fp32 = render_points(reference, z, points)[0].reshape(h, w, 3)
        # float16 rounding only: the two fp16 paths round in different places, both far from fp32's
        assert np.abs(got - fp16_points).max() < 5e-3
        assert psnr(got, fp32) > 60 and abs(psnr(got, fp32) - psnr(fp16_points, fp32)) < 6


def test_a_batch_of_latents_renders_each_latents_image(fp16_file):
    model = CIPSModel(fp16_file, device="cpu", precision="fp16")
    z = np.stack([latent_for_seed(s, model.style_dim) for s in (1, 2, 3)])
    batch = render_images(model, z, 10, 13, truncation=np.array([1.0, 0.6, 1.0], np.float32), chunk=32)
    assert batch.shape == (3, 10, 13, 3)
    for b, psi in enumerate((1.0, 0.6, 1.0)):
        # the style part of a batch rounds like a single latent's to float32 (MLAS picks its kernels by
        # batch size), which float16 can round one step apart
        single = render_image(model, z[b], 10, 13, truncation=psi, chunk=32)
        assert np.abs(batch[b] - single).max() < 5e-3


def test_the_bound_grid_path_gives_the_plain_paths_pixels(fp16_file):
    """The GPU's path (weights sliced from one style run, every latent's calls queued, one download),
    here on the CPU: bit-identical to plain calls."""
    plain = CIPSModel(fp16_file, device="cpu", precision="fp16")
    e = plain.engine
    bound = SplitEngine(plain.ort, e.style_session, e.pixel_session, e.info, e.precision, bound="cpu",
                        table=e.host_table, grid_session=e.grid_session, batch_style=e.style_for(2))
    z = np.stack([latent_for_seed(s, plain.style_dim) for s in (4, 9)])
    psi = np.array([1.0, 0.8], np.float32)
    xs, ys = np.linspace(-1.1, 0.9, 23, dtype=np.float32), np.linspace(1.0, -1.0, 11, dtype=np.float32)
    expected = e.render_grids(plain.styles(z, psi), xs, ys, chunk=50)
    got = bound.render_grids(bound.styles(z, psi), xs, ys, chunk=50)
    assert np.array_equal(got, expected)


class _Recorded:
    """A session whose run_with_iobinding calls are counted by run options."""

    def __init__(self, session):
        self.session, self.options = session, []

    def io_binding(self):
        return self.session.io_binding()

    def run_with_iobinding(self, binding, options):
        self.options.append(options)
        self.session.run_with_iobinding(binding, options)


def test_the_bound_grid_path_hands_arena_regions_back_only_when_its_call_shapes_change(fp16_file):
    """A render whose grid calls differ in shape from the last render's runs one more call first, with
    ONNX Runtime's arena shrinkage on; the pixels stay the plain path's."""
    plain = CIPSModel(fp16_file, device="cpu", precision="fp16")
    e = plain.engine
    bound = SplitEngine(plain.ort, e.style_session, e.pixel_session, e.info, e.precision, bound="cpu",
                        table=e.host_table, grid_session=e.grid_session, batch_style=e.style_for(2))
    bound.grid_session = recorded = _Recorded(e.grid_session)
    z = np.stack([latent_for_seed(s, plain.style_dim) for s in (4, 9)])
    psi = np.ones(2, np.float32)
    wide, narrow = np.linspace(-1, 1, 23, dtype=np.float32), np.linspace(-1, 1, 12, dtype=np.float32)
    ys = np.linspace(1.0, -1.0, 11, dtype=np.float32)
    shrinks = []
    for xs in (wide, wide, narrow, wide):  # calls of 2 x 23 and 1 x 23, the same, 4 x 12 and 3 x 12, as first
        recorded.options.clear()
        got = bound.render_grids(bound.styles(z, psi), xs, ys, chunk=50)
        assert np.array_equal(got, e.render_grids(plain.styles(z, psi), xs, ys, chunk=50))
        shrinks.append(sum(o is bound.shrink_options for o in recorded.options))
        assert len(recorded.options) == 2 * len(list(grid_calls(11, len(xs), 50))) + shrinks[-1]
        assert recorded.options[-1] is bound.sync_options
    assert shrinks == [0, 0, 1, 1]


@pytest.mark.parametrize("height,width,chunk", [(5, 7, 7), (5, 7, 20), (4, 10, 3), (3, 1, 1), (1, 9, 100)])
def test_grid_calls_cover_every_pixel_once(height, width, chunk):
    seen = np.zeros(height * width, int)
    for start, (c0, c1), (r0, r1) in grid_calls(height, width, chunk):
        assert (c1 - c0) * (r1 - r0) <= max(chunk, width if width <= chunk else chunk)
        for r in range(r0, r1):  # a call's pixels are contiguous, row by row, from start
            first = start + (r - r0) * (c1 - c0)
            assert first == r * width + c0 and (r1 - r0 == 1 or (c0, c1) == (0, width))
            seen[first:first + c1 - c0] += 1
    assert (seen == 1).all()


def test_fp32_runs_render_grids_through_their_points_and_the_metadata_is_checked(tmp_path):
    """Precisions without a grid graph render images as points; a grid graph needs its pixel graph."""
    import onnx

    from cips_edge.core.format import parse_metadata

    path = _export(tmp_path, 0)
    assert not CIPSModel(path, device="cpu", precision="fp32").grid_ready
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert "cips.grid_graph.fp16" in meta
    del meta["cips.pixel_graph.fp16"]
    meta["cips.precision"] = "fp32"
    with pytest.raises(UserError, match="grid graphs"):  # a grid graph with no fp16 pixel graph beside it
        parse_metadata(meta, "m.onnx")


def test_eight_bit_colours_from_the_grid_graph_are_to_uint8_of_its_raw_values(fp16_file):
    """rgb8 is computed in the graph (float32 rounding of (v + 1) * 127.5): the host's float64
    conversion of the raw output, but for a value that lands within float32 rounding of a .5 tie."""
    from cips_edge.runtime import to_uint8

    model = CIPSModel(fp16_file, device="cpu", precision="fp16")
    z = latent_for_seed(6, model.style_dim)
    raw = render_image(model, z, 33, 41, region=(-1.2, -1.0, 1.1, 1.3))
    eight = render_image(model, z, 33, 41, region=(-1.2, -1.0, 1.1, 1.3), uint8=True)
    assert eight.dtype == np.uint8 and eight.shape == raw.shape
    diff = np.abs(eight.astype(int) - to_uint8(raw).astype(int))
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.999
    # the bound path gives the same bytes
    e = model.engine
    bound = SplitEngine(model.ort, e.style_session, e.pixel_session, e.info, e.precision, bound="cpu",
                        table=e.host_table, grid_session=e.grid_session, batch_style=e.style_for(2))
    xs, ys = np.linspace(-1, 1, 9, dtype=np.float32), np.linspace(-1, 1, 7, dtype=np.float32)
    psi = np.ones(1, np.float32)
    assert np.array_equal(bound.render_grids(bound.styles(z[None], psi), xs, ys, 20, uint8=True),
                          e.render_grids(e.styles(z[None], psi), xs, ys, 20, uint8=True))


def test_a_streamed_png_renders_through_the_grid_graph(fp16_file, tmp_path, monkeypatch):
    """A streamed PNG of a grid model, band by band in whole rows: the in-memory 8-bit render."""
    from PIL import Image

    from cips_edge.runtime import stream
    from cips_edge.runtime.stream import StreamRender

    model = CIPSModel(fp16_file, device="cpu", precision="fp16")
    calls = []
    monkeypatch.setattr(stream, "BLOCK_PIXELS", 64)  # many bands, a short last one
    original = model.grids
    monkeypatch.setattr(model, "grids", lambda *a, **k: calls.append(a[2].shape) or original(*a, **k))
    z, region = latent_for_seed(2, model.style_dim), (-0.7, 0.9, 1.3, -1.1)
    job = StreamRender.open(tmp_path / "x.png", model, z, 30, 17, region=region, truncation=0.8)
    job.run([model], chunk=40)
    assert calls, "the stream did not use the grid graph"
    got = np.asarray(Image.open(tmp_path / "x.png").convert("RGB"))
    # the same rows per call (one): a float16 batched product may round a row differently in a larger batch
    assert np.array_equal(got, render_image(model, z, 17, 30, region=region, truncation=0.8, chunk=40, uint8=True))


@pytest.mark.parametrize("mode,half_head", [("product", False), ("gemm", False), ("sum", True), ("gemm", True)])
def test_every_way_of_forming_the_fourier_features_renders_the_same_picture(fp16_file, tmp_path, mode, half_head):
    """grid_graph's variants (benchmarks/grid_fourier.py times them): the same colours as the sum mode
    with a float32 ToRGB that the file holds, up to float16 rounding, including a deep zoom where the
    phases matter."""
    other = load("grid_fourier").with_grid_fourier(fp16_file, tmp_path / f"{mode}.onnx", mode, half_head)
    base = CIPSModel(fp16_file, device="cpu", precision="fp16")
    model = CIPSModel(other, device="cpu", precision="fp16")
    reference = CIPSModel(fp16_file, device="cpu", precision="fp32")
    assert model.grid_ready
    z = latent_for_seed(3, model.style_dim)
    for region, h, w in REGIONS:
        if model.config.panorama:
            region = (region[0] * 3, region[1], region[2] * 3, region[3])
        got, same = (render_image(m, z, h, w, region=region, chunk=40) for m in (model, base))
        fp32 = render_points(reference, z, region_grid(*region, h, w))[0].reshape(h, w, 3)
        assert np.abs(got - same).max() < 5e-3
        assert psnr(got, fp32) > 60 and abs(psnr(got, fp32) - psnr(same, fp32)) < 6


def test_an_unknown_fourier_mode_is_refused():
    from cips_edge.export.pixels import grid_graph

    with pytest.raises(ValueError, match="fourier must be one of"):
        grid_graph(preset("tiny"), {}, "cosine")


def test_the_batched_grid_graph_renders_each_latents_image(fp16_file):
    """grid_graph(batched=True) (benchmarks/grid_batch_probe.py times it): the style part's batched
    weights as they are, the Fourier block once, batched MatMuls: the runtime's images, latent by latent."""
    probe = load("grid_batch_probe")
    model = CIPSModel(fp16_file, device="cpu", precision="fp16")
    z = np.stack([latent_for_seed(s, model.style_dim) for s in (2, 5, 11)])
    expected = render_images(model, z, 12, 12)
    for mode, half_head, tolerance in (("sum", False, 1e-6), ("product", True, 5e-3)):
        session, weights = probe.batched_session(model.ort, fp16_file, mode, half_head)
        for per_call in (1, 2, 3):
            got = probe.render_batched(model, session, weights, z, 12, per_call, "cpu")
            assert got.shape == expected.shape and np.abs(got - expected).max() < tolerance
    with pytest.raises(ValueError, match="batched: sum or product"):
        from cips_edge.export.pixels import grid_graph
        grid_graph(model.config, {}, "gemm", batched=True)
