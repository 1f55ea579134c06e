"""Streamed .png/.tif renders (runtime/stream.py): pixel for pixel the in-memory render, valid files,
resumable byte for byte after an interruption, one-line errors; several sessions share the work."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tifffile  # a dev dependency: an independent reader for our TIFFs
from PIL import Image

from cli_helpers import cips, ok
from cips_edge.runtime import CIPSModel, StreamRender, latent_for_seed, parse_devices, render_image, streams, to_uint8
from cips_edge.runtime import devices as dev
from cips_edge.runtime import pngstream, stream, tiffstream
from cips_edge.core.errors import UserError


@pytest.fixture(scope="module")
def tiny(tiny_onnx):
    return CIPSModel(tiny_onnx, device="cpu", threads=2)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of ~64 pixels and 16-pixel TIFF tiles, so that tiny images have many blocks, a short
    last band and partial edge tiles."""
    monkeypatch.setattr(stream, "BLOCK_PIXELS", 64)
    monkeypatch.setattr(tiffstream, "TILE", 16)


def expected(model, seed, h, w, **kw) -> np.ndarray:
    return to_uint8(render_image(model, latent_for_seed(seed, model.style_dim), h, w, **kw))


def stream_render(path, model, seed, h, w, models=None, resume=False, chunk=None, progress=None, **kw):
    job = StreamRender.open(path, model, latent_for_seed(seed, model.style_dim), w, h, resume=resume, **kw)
    job.run(models or [model], chunk=chunk, progress=progress)
    return job


def read(path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path).convert("RGB"))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == pngstream.SIGNATURE
    out, at = [], 8
    while at < len(data):
        (n,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        body, (crc,) = data[at + 8:at + 8 + n], struct.unpack(">I", data[at + 8 + n:at + 12 + n])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        at += 12 + n
    return out


# -- the PNG writer itself ---------------------------------------------------------------------------
def test_adler32_combine_equals_adler32_of_the_concatenation():
    rng = np.random.default_rng(0)
    for n1, n2 in [(0, 5), (5, 0), (1, 1), (1000, 70000), (6000, 123)]:
        a, b = rng.integers(0, 256, n1, dtype=np.uint8).tobytes(), rng.integers(0, 256, n2, dtype=np.uint8).tobytes()
        assert pngstream.adler32_combine(zlib.adler32(a), zlib.adler32(b), n2) == zlib.adler32(a + b)


@pytest.mark.parametrize("h, w, band", [(1, 1, 1), (9, 7, 4), (40, 33, 7), (64, 5, 64)])
def test_band_encoded_png_decodes_to_its_pixels_and_is_one_checked_zlib_stream(h, w, band):
    rng = np.random.default_rng(h * w)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 7 % 256, yy * 3 % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)  # smooth: all filters win
    img[h // 2:] = rng.integers(0, 256, img[h // 2:].shape)  # and noise
    bands = [img[i:i + band] for i in range(0, h, band)]
    data, adler, raw = pngstream.header(w, h), 1, b""
    for k, rows in enumerate(bands):
        piece, a, n = pngstream.encode_band(rows, last=k == len(bands) - 1)
        adler = pngstream.adler32_combine(adler, a, n)
        raw += pngstream.filter_rows(rows).tobytes()
        data += pngstream.idat((pngstream.zlib_header() if k == 0 else b"") + piece)
    data += pngstream.trailer(adler)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), img)
    chunks = png_chunks(data)
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    # zlib checks the Adler-32 and that the stream ends exactly once, at the end
    assert zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")) == raw


def test_a_band_first_row_never_looks_at_the_row_above():
    rows = np.tile(np.arange(30, dtype=np.uint8)[None, :, None], (6, 1, 3))  # identical rows: Up would win row 0
    kinds = pngstream.filter_rows(rows)[:, 0]
    assert kinds[0] in (0, 1) and (kinds[1:] == 2).all()


# -- streamed renders equal the in-memory render ---------------------------------------------------
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_streamed_render_equals_the_in_memory_render(tiny, tmp_path, small_blocks, suffix):
    path = tmp_path / f"x{suffix}"
    region = (-0.7, 0.9, 1.3, -1.1)
    stream_render(path, tiny, 3, 37, 50, chunk=23, region=region, truncation=0.8)
    assert np.array_equal(read(path), expected(tiny, 3, 37, 50, region=region, truncation=0.8))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial files left


def test_streamed_tiff_is_a_tiled_bigtiff(tiny, tmp_path, small_blocks):
    stream_render(tmp_path / "x.tif", tiny, 1, 37, 50)
    with tifffile.TiffFile(tmp_path / "x.tif") as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.tile == (16, 16) and page.shape == (37, 50, 3)
        assert len(page.dataoffsets) == 3 * 4 and page.compression == 8 and page.predictor == 2


def test_several_sessions_share_the_chunks_and_give_the_same_image(tiny_onnx, tiny, tmp_path, small_blocks):
    sessions = [CIPSModel(tiny_onnx, device="cpu", threads=1) for _ in range(3)]
    calls = {id(m): 0 for m in sessions}
    for m in sessions:
        run = m.run

        def counted(*a, _run=run, _id=id(m)):
            calls[_id] += 1
            return _run(*a)
        m.run = counted
    stream_render(tmp_path / "x.png", sessions[0], 4, 30, 41, models=sessions, chunk=16)
    assert np.array_equal(read(tmp_path / "x.png"), expected(tiny, 4, 30, 41))
    assert all(n > 0 for n in calls.values()), calls


def test_run_ordered_returns_results_in_order_from_every_session(tiny_onnx):
    sessions = [CIPSModel(tiny_onnx, device="cpu", threads=2), CIPSModel(tiny_onnx, device="cpu", threads=1)]
    seen = []

    def task(model, item):
        seen.append(id(model))
        return item * item

    assert list(dev.run_ordered(sessions, task, range(200))) == [i * i for i in range(200)]
    assert {id(m) for m in sessions} <= set(seen)


# -- resume ------------------------------------------------------------------------------------------
def interrupt_after(pixels: int):
    """A progress callback that presses Ctrl-C once `pixels` pixels have landed."""
    done = [0]

    def progress(n):
        done[0] += n
        if done[0] >= pixels:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_an_interrupted_render_resumes_to_the_same_bytes(tiny, tmp_path, small_blocks, suffix):
    whole = tmp_path / f"whole{suffix}"
    stream_render(whole, tiny, 2, 45, 40)
    path = tmp_path / f"x{suffix}"
    with pytest.raises(stream.Interrupted, match="with resume continues"):
        stream_render(path, tiny, 2, 45, 40, progress=interrupt_after(700))
    assert not path.exists()  # nothing under the final name
    partial = path.with_name(path.name + ".partial")
    job = StreamRender.open(path, tiny, latent_for_seed(2, tiny.style_dim), 40, 45, resume=True)
    assert 0 < job.blocks_done < len(job.blocks) and job.remaining_pixels < 45 * 40
    with open(partial, "ab") as f:  # a block that was being written when the process was killed
        f.write(b"half a block")
    with pytest.raises(stream.Interrupted):  # interrupted a second time, later on
        job.run([tiny], progress=interrupt_after(400))
    stream_render(path, tiny, 2, 45, 40, resume=True)
    assert path.read_bytes() == whole.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([whole.name, path.name])


@pytest.mark.parametrize("change, named", [
    ({"seed": 9}, "seed or latent"),
    ({"w": 41}, "size"),
    ({"truncation": 0.5}, "truncation"),
    ({"region": (-1, -1, 1, 0.5)}, "region"),
])
def test_resuming_with_other_parameters_is_a_one_line_error(tiny, tmp_path, small_blocks, change, named):
    path = tmp_path / "x.png"
    with pytest.raises(stream.Interrupted):
        stream_render(path, tiny, 2, 20, 40, progress=interrupt_after(200))
    args = {"seed": 2, "w": 40, "truncation": 1.0, "region": (-1, -1, 1, 1), **change}
    with pytest.raises(UserError) as e:
        StreamRender.open(path, tiny, latent_for_seed(args["seed"], tiny.style_dim), args["w"], 20,
                          region=args["region"], truncation=args["truncation"], resume=True)
    message = str(e.value)
    assert f"started with another {named};" in message and "\n" not in message
    with pytest.raises(UserError, match="pass resume to continue it"):  # and never silently overwritten
        StreamRender.open(path, tiny, latent_for_seed(2, tiny.style_dim), 40, 20)


def test_a_full_disk_is_a_one_line_error_that_keeps_the_finished_blocks(tiny, tmp_path, small_blocks, monkeypatch):
    import errno

    path, writes = tmp_path / "x.png", [0]
    fsync = stream.os.fsync

    def fsync_until_full(fd):
        writes[0] += 1
        if writes[0] == 4:  # the header, then three blocks
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)
    monkeypatch.setattr(stream.os, "fsync", fsync_until_full)
    with pytest.raises(UserError) as e:
        stream_render(path, tiny, 2, 20, 40)
    assert "No space left on device; 2 of 20 bands" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(stream.os, "fsync", fsync)
    stream_render(path, tiny, 2, 20, 40, resume=True)
    assert np.array_equal(read(path), expected(tiny, 2, 20, 40))


def test_resume_without_a_partial_file_starts_the_render(tiny, tmp_path, small_blocks):
    stream_render(tmp_path / "x.png", tiny, 5, 12, 9, resume=True)
    assert np.array_equal(read(tmp_path / "x.png"), expected(tiny, 5, 12, 9))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_finished_file_records_its_render_and_resume_keeps_it(tiny, tmp_path, small_blocks, suffix):
    path = tmp_path / f"x{suffix}"
    stream_render(path, tiny, 5, 12, 9)
    z = latent_for_seed(5, tiny.style_dim)
    same = StreamRender.open(path, tiny, z, 9, 12, resume=True)  # width 9, height 12
    assert same.complete and same.remaining_pixels == 0
    assert not StreamRender.open(path, tiny, z, 9, 12, resume=False).complete  # without resume: rendered again
    assert not StreamRender.open(path, tiny, z, 9, 13, resume=True).complete  # another size
    other = StreamRender.open(path, tiny, latent_for_seed(6, tiny.style_dim), 9, 12, resume=True)
    assert not other.complete
    other.run([tiny])
    assert np.array_equal(read(path), expected(tiny, 6, 12, 9))  # and readers still read the file


# -- the command ---------------------------------------------------------------------------------------
def test_cli_streams_resumes_and_matches_the_in_memory_png(tiny_onnx, tmp_path, small_blocks, monkeypatch):
    base = ["render", "--model", tiny_onnx, "--seed", 6, "--width", 33, "--height", 21]
    ok(cips(*base, "--out", tmp_path / "mem.png"))  # small: Pillow's in-memory writer
    calls = [0]
    append = StreamRender._append

    def append_then_stop(self, *a):
        append(self, *a)
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(StreamRender, "_append", append_then_stop)
    r = cips(*base, "--out", tmp_path / "s.png", "--resume")
    # not on a terminal: the start line, then the one line that says what is kept
    assert r.exit_code == 130 and r.stderr.splitlines()[0] == "rendering 693 pixels", r.stderr
    assert r.stderr.count("\n") == 2 and "3 of 21 bands" in r.stderr.splitlines()[1], r.stderr
    assert not (tmp_path / "s.png").exists() and (tmp_path / "s.png.partial").exists()
    r = cips(*base, "--out", tmp_path / "s.png")
    assert r.exit_code == 1 and "pass --resume to continue it" in r.stderr and r.stderr.count("\n") == 1
    monkeypatch.setattr(StreamRender, "_append", append)
    assert "(33x21, streamed, resumed) on CPUExecutionProvider" in ok(cips(*base, "--out", tmp_path / "s.png", "--resume"))
    assert np.array_equal(read(tmp_path / "s.png"), read(tmp_path / "mem.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mem.png", "s.png"]
    # finished: the file records its render, so the same command with --resume leaves it as it is
    before = (tmp_path / "s.png").stat()
    again = ok(cips(*base, "--out", tmp_path / "s.png", "--resume"))
    assert again.startswith(f"kept {tmp_path / 's.png'} (33x21, streamed, already complete: nothing rendered) on CPU")
    after = (tmp_path / "s.png").stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    # another render into the same file: nothing of it to resume, so it renders whole, and says so
    other = ok(cips(*base[:4], 7, *base[5:], "--out", tmp_path / "s.png", "--resume"))
    assert "(33x21, streamed, nothing to resume: rendered whole) on CPUExecutionProvider" in other
    assert not np.array_equal(read(tmp_path / "s.png"), read(tmp_path / "mem.png"))


def test_cli_resume_with_another_seed_fails_in_one_line(tiny_onnx, tmp_path, small_blocks, monkeypatch):
    def stop(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(StreamRender, "_append", stop)
    base = ["render", "--model", tiny_onnx, "--size", 12, "--out", tmp_path / "s.tif", "--resume"]
    assert cips(*base, "--seed", 1).exit_code == 130
    before = sorted(tmp_path.iterdir())
    r = cips(*base, "--seed", 2)
    assert r.exit_code == 1 and r.stderr.startswith("error: cannot resume") and r.stderr.count("\n") == 1
    assert "another seed or latent" in r.stderr and sorted(tmp_path.iterdir()) == before


def test_streaming_rule():
    assert streams("a.tif", 4) and streams("a.tiff", 4) and not streams("a.png", 4)
    assert streams("a.png", stream.STREAM_MIN_PIXELS) and not streams("a.png", stream.STREAM_MIN_PIXELS - 1)
    assert streams("a.png", 4, resume=True) and streams("a.png", 4, devices=True)
    assert not streams("a.npy", 1 << 30)
    for kwargs in ({"resume": True}, {"devices": True}):
        with pytest.raises(UserError, match="for .png and .tif images only"):
            streams("a.npy", 4, **kwargs)


# -- --devices -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, ids", [("0", [0]), ("0,1", [0, 1]), ("1-3", [1, 2, 3]), (" 2 , 0-1 ", [2, 0, 1]),
                                       ("all", [0, 1, 2, 3])])
def test_parse_devices(spec, ids):
    assert parse_devices(spec, visible=lambda: 4) == ids


@pytest.mark.parametrize("spec, message", [
    ("", "takes GPU numbers"), ("x", "takes GPU numbers"), ("-1", "takes GPU numbers"), ("0,,1", "takes GPU numbers"),
    ("1.5", "takes GPU numbers"), ("3-1", "runs backwards"), ("0,0", "names a GPU twice"), ("1,0-2", "twice"),
    ("4", "shows 4 GPU(s), numbered 0-3"),
])
def test_bad_devices_are_one_line_errors(spec, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_devices(spec, visible=lambda: 4)


def test_devices_all_without_a_gpu_count_is_an_error():
    with pytest.raises(UserError, match="cannot tell how many GPUs"):
        parse_devices("all", visible=lambda: None)


def test_visible_gpus_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert dev.visible_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert dev.visible_gpus() == 0


@pytest.mark.parametrize("args, message", [
    (["--devices", "zero"], "--devices takes GPU numbers"),
    (["--devices", "0", "--device", "cpu"], "with --device cpu use --threads"),
    (["--devices", "0", "--out", "{tmp}/x.npy"], "--devices works for .png and .tif images only"),
    (["--resume", "--out", "{tmp}/x.npy"], "--resume works for .png and .tif images only"),
])
def test_cli_device_and_resume_misuse_fails_in_one_line(tiny_onnx, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    args = [a.format(tmp=tmp_path) for a in args]
    out = [] if "--out" in args else ["--out", tmp_path / "x.png"]
    r = cips("render", "--model", tiny_onnx, "--size", 8, *out, *args)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_devices_without_cuda_is_an_error(tiny_onnx, tmp_path, monkeypatch):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    r = cips("render", "--model", tiny_onnx, "--size", 8, "--devices", "0,1", "--out", tmp_path / "x.png")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: --devices 0,1 needs CUDA, and this onnxruntime has no CUDA provider"), r.stderr
    assert list(tmp_path.iterdir()) == []


def test_streaming_runs_where_torch_cannot_be_imported(tiny_onnx, torchless_env, tmp_path):
    code = (
        "import sys\n"
        "from cips_edge.runtime import CIPSModel, StreamRender, latent_for_seed\n"
        "from cips_edge.runtime import devices, pngstream, stream, tiffstream\n"
        f"m = CIPSModel({str(tiny_onnx)!r}, device='cpu')\n"
        "for name in ('x.png', 'x.tif'):\n"
        "    StreamRender.open(name, m, latent_for_seed(1, m.style_dim), 9, 7).run([m])\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=torchless_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png", "x.tif"]
