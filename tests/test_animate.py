"""`cips zoom` and `cips interpolate`: frames equal the renders they stand for (full frame, regions,
seeds, slerp in z, lerp in w against the torch generator), the written GIF/MP4/.npy hold the frames, and
bad input is one line with no file."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageSequence

from cli_helpers import cips, ok
from cips_edge.runtime import CIPSModel, latent_for_seed, render_image, to_uint8, zoom_regions
from cips_edge.runtime.walk import walk_stops
from cips_edge.runtime.wspace import WSpaceModel


@pytest.fixture(scope="module")
def tiny(tiny_onnx) -> CIPSModel:
    return CIPSModel(tiny_onnx, device="cpu")


def frames_npy(tiny_onnx, path, command, *args) -> np.ndarray:
    ok(cips(command, "--model", tiny_onnx, "--out", path, *args))
    return np.load(path)


def gif_frames(path) -> list[np.ndarray]:
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))]


def assert_fails(result, message, folder):
    assert result.exit_code != 0 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, \
        (result.exit_code, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert list(folder.iterdir()) == []


# -- zoom ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("center", [(0.0, 0.0), (0.3, -0.45)])
def test_zoom_frames_are_renders_of_the_shrinking_regions(tiny_onnx, tiny, tmp_path, center):
    x, y = center
    frames = frames_npy(tiny_onnx, tmp_path / "z.npy", "zoom", "--seed", 5, "--size", 9, "--frames", 3,
                        "--factor", 4, "--center", x, y)
    z = latent_for_seed(5, tiny.style_dim)
    assert frames.shape == (3, 9, 9, 3) and frames.dtype == np.float32
    assert np.array_equal(frames[0], render_image(tiny, z, 9, 9, region=(x - 1, y - 1, x + 1, y + 1)))
    if center == (0.0, 0.0):  # the first frame is the full render
        assert np.array_equal(frames[0], render_image(tiny, z, 9, 9))
    assert np.array_equal(frames[1], render_image(tiny, z, 9, 9, region=(x - 0.5, y - 0.5, x + 0.5, y + 0.5)))
    assert np.array_equal(frames[2], render_image(tiny, z, 9, 9, region=(x - 0.25, y - 0.25, x + 0.25, y + 0.25)))


def test_zoom_half_width_shrinks_geometrically_with_square_pixels():
    regions = np.array(zoom_regions((0.5, -0.25), 10.0, 5, width=21, height=11))
    half_w = (regions[:, 2] - regions[:, 0]) / 2
    half_h = (regions[:, 3] - regions[:, 1]) / 2
    assert half_w[0] == 1.0 and np.isclose(half_w[-1], 0.1)
    assert np.allclose(half_w[1:] / half_w[:-1], 10 ** -0.25)  # a constant ratio per frame
    assert np.allclose(half_h, half_w * 10 / 20)  # (H - 1) / (W - 1): equal steps along x and y
    assert np.allclose((regions[:, 0] + regions[:, 2]) / 2, 0.5) and np.allclose((regions[:, 1] + regions[:, 3]) / 2, -0.25)


def test_zoom_gif_holds_every_frame_at_its_size_and_rate(tiny_onnx, tmp_path):
    args = ["zoom", "--model", tiny_onnx, "--seed", 2, "--width", 12, "--height", 8, "--frames", 5, "--fps", 25]
    out = ok(cips(*args, "--out", tmp_path / "z.gif"))
    assert out.startswith(f"wrote {tmp_path / 'z.gif'} (5 frames of 12x8, x8 into 0 0) on CPUExecutionProvider")
    raw = frames_npy(tiny_onnx, tmp_path / "z.npy", *args[:1], *args[3:])
    image = Image.open(tmp_path / "z.gif")
    assert image.n_frames == 5 and image.size == (12, 8)
    assert image.info["duration"] == 40 and image.info["loop"] == 0  # 1/25 s, looping
    # 96 pixels have at most 96 colours: the 256-colour palette of each frame is exact
    for frame, rgb in zip(gif_frames(tmp_path / "z.gif"), raw):
        assert np.array_equal(frame, to_uint8(rgb))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.gif", "z.npy"]  # no temporary file left


def test_mp4_holds_every_frame_at_its_size(tiny_onnx, tmp_path):
    av = pytest.importorskip("av", reason="writing .mp4 needs the [video] extra (PyAV)")
    ok(cips("zoom", "--model", tiny_onnx, "--width", 16, "--height", 10, "--frames", 6, "--fps", 30,
            "--out", tmp_path / "z.mp4"))
    raw = frames_npy(tiny_onnx, tmp_path / "z.npy", "zoom", "--width", 16, "--height", 10, "--frames", 6)
    with av.open(str(tmp_path / "z.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 30
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 6 and decoded[0].shape == (10, 16, 3)
    # lossy (H.264, colour at half resolution: the tiny model's pixel noise suffers), but each decoded
    # frame is nearest to its own render, and its mean colour is kept
    errors = np.array([[np.abs(frame.astype(int) - to_uint8(rgb)).mean() for rgb in raw] for frame in decoded])
    assert (errors.argmin(axis=1) == np.arange(6)).all(), errors
    means = np.array([f.reshape(-1, 3).mean(0) for f in decoded]) - to_uint8(raw).reshape(6, -1, 3).mean(1)
    assert np.abs(means).max() < 4, means


def test_mp4_without_pyav_names_the_install_command(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # `import av` raises ImportError
    r = cips("zoom", "--model", tiny_onnx, "--size", 8, "--frames", 2, "--out", tmp_path / "z.mp4")
    assert_fails(r, "pip install 'cips-edge[video]'", tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--factor", 0], "--factor must be a positive number"),
    (["--factor", -2], "--factor must be a positive number"),
    (["--factor", "nan"], "--factor must be a positive number"),
    (["--frames", 1], "--frames must be at least 2"),
    (["--frames", 100_000_000], "--frames 100,000,000 is beyond 100,000 per sequence"),  # refused before any work
    (["--center", "inf", 0], "--center must be two finite numbers"),
    (["--center", 0, 1e39], "--center must be two finite numbers"),
    (["--factor", 1e6, "--center", 0.5, 0.5], "too deep for float32"),
    (["--size", 1], "at least 2 x 2 pixels"),
    (["--size", 0], "image size must be at least 1 x 1"),
    (["--fps", 0], "--fps must be a positive number"),
    (["--fps", 60], "beyond what GIF players show"),
    (["--out", "{tmp}/z.png"], "must end in .gif or .mp4 or .npy"),
    (["--out", "{tmp}/missing/z.gif"], "does not exist"),
    (["--width", 9, "--out", "{tmp}/z.mp4"], "needs an even width and height"),
])
def test_bad_zoom_input_is_one_line_and_no_file(tiny_onnx, tmp_path, args, message):
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "--out" in args else ["--out", tmp_path / "z.gif"]
    assert_fails(cips("zoom", "--model", tiny_onnx, "--size", 8, "--frames", 3, *args, *out), message, tmp_path)


# -- latent walks --------------------------------------------------------------------------------------
def slerp_formula(a, b, t):
    a, b = a.astype(np.float64), b.astype(np.float64)
    omega = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


@pytest.mark.parametrize("space, psi", [("z", 1.0), ("w", 1.0), ("w", 0.7)])
def test_walk_ends_are_the_seeds_renders(tiny_onnx, tiny, tmp_path, space, psi):
    frames = frames_npy(tiny_onnx, tmp_path / "w.npy", "interpolate", "--seeds", "3,8", "--frames", 4,
                        "--space", space, "--truncation", psi, "--width", 7, "--height", 5)
    assert frames.shape == (4, 5, 7, 3)
    for frame, seed in ((frames[0], 3), (frames[-1], 8)):
        assert np.array_equal(frame, render_image(tiny, latent_for_seed(seed, tiny.style_dim), 5, 7, truncation=psi))


def test_walk_midpoints_follow_slerp_in_z_and_lerp_in_w(tiny_onnx, tiny, tiny_checkpoint, tmp_path):
    import torch

    from cips_edge.checkpoint import load_generator
    from cips_edge.coords import pixel_grid

    args = ["--seeds", "3,8", "--frames", 3, "--size", 6]
    in_z = frames_npy(tiny_onnx, tmp_path / "z.npy", "interpolate", *args, "--space", "z")[1]
    in_w = frames_npy(tiny_onnx, tmp_path / "w.npy", "interpolate", *args, "--space", "w", "--truncation", 0.7)[1]
    z3, z8 = (latent_for_seed(s, tiny.style_dim) for s in (3, 8))
    assert np.array_equal(in_z, render_image(tiny, slerp_formula(z3, z8, 0.5), 6, 6))

    g = load_generator(tiny_checkpoint).generator.eval()  # the torch generator the file was exported from
    with torch.no_grad():
        w_mid = g.mapping(torch.from_numpy(np.stack([z3, z8]))).mean(0, keepdim=True)  # (w3 + w8) / 2
        w_avg = torch.from_numpy(tiny.w_avg)[None]
        weights = g.modulated_weights(g.truncate(w_mid, 0.7, w_avg))
        ref = g.synthesize(g.features(pixel_grid(6, 6)[None]), weights)[0].reshape(6, 6, 3).numpy()
    assert np.abs(in_w - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    # the two walks pass through different images half-way (slerp in z at psi 0.7 is another image again)
    in_z_07 = frames_npy(tiny_onnx, tmp_path / "z7.npy", "interpolate", *args, "--truncation", 0.7)[1]
    assert np.abs(in_z_07 - in_w).max() > 1e-3


def test_w_space_model_renders_a_seed_as_the_model_does(tiny):
    wspace = WSpaceModel(tiny)
    z = latent_for_seed(11, tiny.style_dim)
    for psi in (1.0, 0.5):
        assert np.array_equal(render_image(wspace, wspace.mapped(z), 5, 4, truncation=psi),
                              render_image(tiny, z, 5, 4, truncation=psi))


def test_loop_returns_to_the_first_seed_and_keys_may_repeat(tiny_onnx, tmp_path):
    looped = frames_npy(tiny_onnx, tmp_path / "l.npy", "interpolate", "--seeds", "3,8", "--frames", 4, "--loop",
                        "--size", 5)
    there_and_back = frames_npy(tiny_onnx, tmp_path / "r.npy", "interpolate", "--seeds", "3,8,3", "--frames", 5,
                                "--size", 5)
    assert np.array_equal(looped, there_and_back[:4])  # 3 -> 8 -> (3): the loop leaves out the final repeat
    assert np.array_equal(there_and_back[0], there_and_back[4])
    assert np.abs(looped[1] - looped[3]).max() <= 1e-5  # half-way 3 -> 8 and 8 -> 3


def test_walk_stops_put_the_keys_on_frames():
    assert walk_stops(3, 5) == [(0, 1, 0.0), (0, 1, 0.5), (1, 2, 0.0), (1, 2, 0.5), (1, 2, 1.0)]
    assert walk_stops(3, 6, loop=True) == [(0, 1, 0.0), (0, 1, 0.5), (1, 2, 0.0), (1, 2, 0.5), (2, 0, 0.0),
                                          (2, 0, 0.5)]


def test_walk_gif_has_its_frames(tiny_onnx, tmp_path):
    out = ok(cips("interpolate", "--model", tiny_onnx, "--seeds", "1,2", "--seed", "4", "--frames", 7,
                  "--width", 10, "--height", 6, "--out", tmp_path / "w.gif"))
    assert "(7 frames of 10x6, seeds 1,2,4, slerp in z)" in out
    image = Image.open(tmp_path / "w.gif")
    assert image.n_frames == 7 and image.size == (10, 6)
    many = ok(cips("interpolate", "--model", tiny_onnx, "--seeds", "0-99", "--frames", 2, "--size", 4,
                   "--out", tmp_path / "many.npy"))
    assert "(2 frames of 4x4, 100 seeds 0,1,2 ... 99, slerp in z)" in many, many
    assert len(many) < len(str(tmp_path)) + 120, many  # one short line, however many seeds


@pytest.mark.parametrize("args, message", [
    (["--seeds", "3"], "at least 2 seeds"),
    (["--seeds", "3,x"], "bad seed 'x'"),
    (["--seeds", "3,4", "--frames", 1], "--frames must be at least 2"),
    (["--seeds", "3,4", "--frames", 100_001], "--frames 100,001 is beyond 100,000 per sequence"),
    (["--seeds", "3,4", "--space", "q"], "unknown --space 'q'"),
    (["--seeds", "3,4", "--out", "{tmp}/w.avi"], "must end in .gif or .mp4 or .npy"),
    (["--seeds", "3,4", "--truncation", "nan"], "truncation must be a finite number"),
])
def test_bad_walk_input_is_one_line_and_no_file(tiny_onnx, tmp_path, args, message):
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "--out" in args else ["--out", tmp_path / "w.gif"]
    assert_fails(cips("interpolate", "--model", tiny_onnx, "--size", 4, "--frames", 3, *args, *out), message, tmp_path)


def test_zoom_walks_fovea_and_video_run_where_torch_cannot_be_imported(tiny_onnx, torchless_env, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from cips_edge import runtime as rt\n"
        f"m = rt.CIPSModel({str(tiny_onnx)!r}, device='cpu')\n"
        "z = [rt.latent_for_seed(s, m.style_dim) for s in (1, 2)]\n"
        "rt.write_video('z.gif', rt.zoom_frames(m, z[0], rt.zoom_regions((0, 0), 2, 2, 6, 6), 6, 6), 2, 6, 6, 10)\n"
        "for space in 'zw':\n"
        "    rt.write_video(space + '.npy', rt.walk_frames(m, z, 3, 6, 6, space=space), 3, 6, 6, 10)\n"
        "rt.render_foveated(m, z[0], rt.fovea_plan(8, 8, (0, 0), 0.3))\n"
        "assert not any(k == 'torch' or k.startswith('torch.') for k in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=torchless_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npy", "z.gif", "z.npy"]
