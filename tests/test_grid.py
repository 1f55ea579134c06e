"""`cips grid`: each cell is the single render of its seed (bit for bit), the layout arithmetic, and a
one-line error with no file for every bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import cips, ok
from cips_edge.runtime import UserError
from cips_edge.runtime.grid import grid_layout


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("psi", [1.0, 0.7])
def test_each_cell_is_the_single_render_of_its_seed(tiny_onnx, tmp_path, psi):
    seeds, size, pad, columns = [3, 0, 11, 5, 1], 12, 3, 2  # seeds out of order: cell k is the k-th seed given
    out = ok(cips("grid", "--model", tiny_onnx, "--seeds", "3,0,11", "--seed", "5,1", "--size", size,
                  "--padding", pad, "--columns", columns, "--truncation", psi, "--out", tmp_path / "g.png"))
    assert out.startswith(f"wrote {tmp_path / 'g.png'} (3 x 2 cells of 12x12, 33x48) on CPUExecutionProvider in ")
    sheet = png(tmp_path / "g.png")
    assert sheet.shape == (3 * size + 4 * pad, 2 * size + 3 * pad, 3)
    white = np.ones(sheet.shape[:2], bool)
    for k, seed in enumerate(seeds):
        ok(cips("render", "--model", tiny_onnx, "--seed", seed, "--size", size, "--truncation", psi,
                "--out", tmp_path / f"s{seed}.png", "--chunk", 7))  # another chunk size: same pixels
        top, left = pad + (k // columns) * (size + pad), pad + (k % columns) * (size + pad)
        assert np.array_equal(sheet[top:top + size, left:left + size], png(tmp_path / f"s{seed}.png")), seed
        white[top:top + size, left:left + size] = False
    assert (sheet[white] == 255).all()  # padding and the one empty cell (row 3, column 2)


def test_default_layout_is_a_square_of_ceil_sqrt_columns(tiny_onnx, tmp_path):
    ok(cips("grid", "--model", tiny_onnx, "--seeds", "0-63", "--size", 4, "--out", tmp_path / "g.png"))
    assert png(tmp_path / "g.png").shape == (8 * 4 + 9 * 2, 8 * 4 + 9 * 2, 3)  # 8 x 8 cells, padding 2
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]  # no temporary file left


@pytest.mark.parametrize("count,columns,rows,cols", [
    (1, None, 1, 1), (2, None, 1, 2), (4, None, 2, 2), (5, None, 2, 3), (10, None, 3, 4), (63, None, 8, 8),
    (64, None, 8, 8), (65, None, 8, 9), (10_000, None, 100, 100), (7, 3, 3, 3), (7, 1, 7, 1), (3, 10, 1, 3),
])
def test_layout_arithmetic(count, columns, rows, cols):
    layout = grid_layout(count, 5, columns, padding=1)
    assert (layout.rows, layout.columns) == (rows, cols)
    assert (layout.width, layout.height) == (cols * 5 + cols + 1, rows * 5 + rows + 1)
    assert layout.origin(0) == (1, 1) and layout.origin(count - 1) == (1 + (rows - 1) * 6, 1 + ((count - 1) % cols) * 6)
    assert (rows - 1) * cols < count <= rows * cols  # no empty row


def test_layout_without_padding_and_size_limit():
    layout = grid_layout(6, 10, 3, padding=0)
    assert (layout.width, layout.height, layout.origin(4)) == (30, 20, (10, 10))
    assert grid_layout(4, 8192, padding=0).width == 16384  # exactly the per-side limit
    with pytest.raises(UserError, match="a grid of 2 x 2 cells: image size 16387 x 16387 is beyond"):
        grid_layout(4, 8192, padding=1)
    assert grid_layout(4, 8192, padding=1, force=True).width == 16387


BAD = {
    "no-seeds": [],
    "empty-seeds": ["--seeds", ""],
    "bad-seed": ["--seeds", "1,x"],
    "negative-seed": ["--seeds", "-2"],
    "reversed-range": ["--seeds", "9-3"],
    "size-zero": ["--seeds", "0-3", "--size", "0"],
    "size-absurd": ["--seeds", "0", "--size", "20000"],
    "grid-too-large": ["--seeds", "0-3", "--size", "9000"],
    "columns-zero": ["--seeds", "0-3", "--columns", "0"],
    "padding-negative": ["--seeds", "0-3", "--padding", "-1"],
    "out-folder-missing": ["--seeds", "0-3", "--out", "{tmp}/missing/g.png"],
    "out-is-a-folder": ["--seeds", "0-3", "--out", "{tmp}/sub.png"],
    "out-not-png": ["--seeds", "0-3", "--out", "{tmp}/g.npy"],
    "model-missing": ["--seeds", "0-3", "--model", "{tmp}/nope.onnx"],
    "truncation-nan": ["--seeds", "0-3", "--truncation", "nan"],
    "device-unknown": ["--seeds", "0-3", "--device", "tpu"],
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_no_file(case, tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub.png").mkdir()
    args = [a.format(tmp=tmp_path) for a in BAD[case]]
    if "--model" not in args:
        args += ["--model", str(tiny_onnx)]
    if "--size" not in args:
        args += ["--size", "4"]
    before = set(tmp_path.iterdir())
    r = cips("grid", *args)
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit)), repr(r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert set(tmp_path.iterdir()) == before  # nothing written, not even a temporary file


def test_grid_runs_where_torch_cannot_be_imported(tiny_onnx, torchless_env, tmp_path):
    r = subprocess.run([sys.executable, "-m", "cips_edge.cli", "grid", "--model", str(tiny_onnx), "--seeds", "0-3",
                        "--size", "6"], cwd=tmp_path, env=torchless_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote cips-grid.png (2 x 2 cells of 6x6, 18x18)")
    assert png(tmp_path / "cips-grid.png").shape == (18, 18, 3)
