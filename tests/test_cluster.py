"""Renders on a Dask cluster: a LocalCluster of two worker processes writes OME-Zarr pyramids whose
level 0 is the single-process render pixel for pixel, survives a killed worker and a killed client,
and writes metadata that ome-zarr's own reader understands; many seeds become the usual files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

from cli_helpers import cips, ok  # noqa: E402

from cips_edge.runtime import CIPSModel, latent_for_seed, render_image, to_uint8  # noqa: E402
from cips_edge.runtime import cluster as cl  # noqa: E402
from cips_edge.runtime import pyramid as pz  # noqa: E402
from cips_edge.runtime.coords import FULL_FRAME  # noqa: E402

SIDE, CHUNK, SEED = 2048, 256, 3  # 64 level-0 chunks: enough to kill something mid-run


@pytest.fixture(scope="module")
def reference(tiny_onnx) -> np.ndarray:
    """The single-process render as `cips render --size 2048` writes it: [H, W, 3] uint8."""
    m = CIPSModel(tiny_onnx, device="cpu")
    return to_uint8(render_image(m, latent_for_seed(SEED, m.style_dim), SIDE, SIDE))


@pytest.fixture(scope="module")
def client():
    with cl.connect(None, cl.Plan(workers=2, task_threads=1, model_threads=1, gpus=False)) as c:
        yield c


def _spec(tiny_onnx):
    return cl.ModelSpec.of(Path(tiny_onnx), False, "cpu", None, 1)


def _z(tiny_onnx) -> np.ndarray:
    return latent_for_seed(SEED, CIPSModel(tiny_onnx, device="cpu").style_dim)


def _level0_files(path: Path) -> int:
    """Level 0's finished chunk files (their keys are numbers; a file being written has another name)."""
    return sum(name.isdigit() for _, _, files in os.walk(path / "0" / "c") for name in files)


def _chain(level0: np.ndarray, count: int) -> list[np.ndarray]:
    levels = [level0]
    for _ in range(count - 1):
        h, w = levels[-1].shape[:2]
        levels.append(pz.downsample(levels[-1], -(-h // 2), -(-w // 2)))
    return levels


def test_levels_halve_to_one_tile_and_edge_means_cover_what_is_there():
    levels = pz.plan_levels(3000, 700, 256)
    assert [(lv.height, lv.width) for lv in levels] == [(3000, 700), (1500, 350), (750, 175), (375, 88), (188, 44)]
    assert levels[1].grid == (6, 2) and levels[1].block(5, 1) == (1280, 256, 220, 94)
    assert pz.children(levels[1], levels[0], 5, 1) == [(10, 2), (11, 2)]  # level 0 has 12 x 3 chunks
    pixels = np.arange(3 * 3 * 3, dtype=np.uint8).reshape(3, 3, 3) * 9
    small = pz.downsample(pixels, 2, 2)
    assert small[0, 0].tolist() == np.rint(pixels[:2, :2].reshape(4, 3).mean(0)).tolist()
    assert small[1, 1].tolist() == pixels[2, 2].tolist()  # a lone corner pixel is its own mean
    assert small[0, 1].tolist() == np.rint(pixels[:2, 2].mean(0)).tolist()


def test_a_local_cluster_shares_the_cores_out_on_a_cpu():
    from cips_edge.runtime.model import default_threads

    assert cl.local_plan(None, "cpu", 0) == cl.Plan(cl.cpu_sockets(), 1, default_threads() // cl.cpu_sockets(), False)
    two = cl.local_plan(2, "cpu", 0)
    assert (two.workers, two.model_threads) == (2, max(1, default_threads() // 2))
    assert cl.local_plan(2, "cpu", 3).model_threads == 3
    assert two.adapt(cl.ModelSpec("m.onnx", "0" * 64)).threads == two.model_threads
    with pytest.raises(cl.UserError, match="^workers must be at least 1"):
        cl.local_plan(0, "cpu", 0)


def test_two_workers_render_level0_equal_to_the_single_render(tmp_path, tiny_onnx, reference, client):
    spec, providers = cl.agree(client, _spec(tiny_onnx))
    assert providers == ["CPUExecutionProvider"] and spec.precision == "fp32"
    out = tmp_path / "img.zarr"
    report = cl.render_pyramid(client, spec, out, _z(tiny_onnx), SIDE, SIDE, FULL_FRAME, zarr_chunk=CHUNK)
    assert (report.done, report.skipped) == (64 + 16 + 4 + 1, 0)
    assert not pz.partial_path(out).exists()
    pyramid = pz.Pyramid(out)
    assert np.array_equal(pyramid.read(0, 0, 0, SIDE, SIDE), reference)
    for k, expected in enumerate(_chain(reference, len(pyramid.levels))):
        assert np.array_equal(pyramid.read(k, 0, 0, *expected.shape[:2]), expected), k


def test_workers_numbered_by_gpu_open_their_model_when_probed(tiny_onnx, client):
    """Our LocalCluster's workers pick their GPU by their name; the probe that opens the model on every
    worker runs outside a task (client.run), where the worker is handed over rather than found."""
    import dataclasses

    spec = dataclasses.replace(_spec(tiny_onnx), gpu_by_name=True)
    _, providers = cl.agree(client, spec)
    assert providers == ["CPUExecutionProvider"]


def test_ome_zarr_reads_the_metadata_back(tmp_path, tiny_onnx, reference, client):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    spec, _ = cl.agree(client, _spec(tiny_onnx))
    z = _z(tiny_onnx)
    out = tmp_path / "small.zarr"
    cl.render_pyramid(client, spec, out, z, 600, 520, FULL_FRAME, zarr_chunk=CHUNK)
    node = next(iter(Reader(parse_url(str(out)))()))
    assert node.load(Multiscales) is not None
    assert [tuple(a.shape) for a in node.data] == [(3, 520, 600), (3, 260, 300), (3, 130, 150)]
    multiscale = node.metadata
    assert [a["name"] for a in multiscale["axes"]] == ["c", "y", "x"]
    assert [t[0]["scale"] for t in multiscale["coordinateTransformations"]] == [[1, 1, 1], [1, 2, 2], [1, 4, 4]]
    assert multiscale["channel_names"] == ["red", "green", "blue"]
    m = CIPSModel(tiny_onnx, device="cpu")
    expected = to_uint8(render_image(m, z, 520, 600))
    assert np.array_equal(np.asarray(node.data[0]).transpose(1, 2, 0), expected)


def test_a_killed_worker_ends_with_the_same_array(tmp_path, tiny_onnx, reference, client):
    spec, _ = cl.agree(client, _spec(tiny_onnx))
    z = _z(tiny_onnx)
    out = tmp_path / "killed.zarr"
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(
        report=cl.render_pyramid(client, spec, out, z, SIDE, SIDE, FULL_FRAME, zarr_chunk=CHUNK)))
    job.start()
    deadline = time.monotonic() + 60
    while _level0_files(pz.partial_path(out)) < 8 and time.monotonic() < deadline:
        time.sleep(0.005)
    at_kill = _level0_files(pz.partial_path(out))
    os.kill(victim, signal.SIGKILL)
    job.join(120)
    assert 8 <= at_kill < 64, at_kill  # killed mid-run
    assert result["report"].done == 85
    assert victim not in client.run(os.getpid).values()  # the nanny started a new worker
    assert np.array_equal(pz.Pyramid(out).read(0, 0, 0, SIDE, SIDE), reference)


def test_killing_the_client_and_rerunning_skips_the_chunks_written(tmp_path, tiny_onnx, reference):
    out = tmp_path / "resumed.zarr"
    command = [sys.executable, "-m", "cips_edge.cli", "render", "--seed", str(SEED), "--size", str(SIDE), "--out",
               str(out), "--model", str(tiny_onnx), "--zarr-chunk", str(CHUNK), "--workers", "2", "--threads", "1"]
    # its own session: the kill takes the client, its scheduler and its workers at once, like a lost machine
    first = subprocess.Popen(command, cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _level0_files(pz.partial_path(out)) < 8 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    partial = pz.partial_path(out)
    kept = sum(len(pz.Pyramid(partial).done(lv)) for lv in pz.plan_levels(SIDE, SIDE, CHUNK))
    assert 8 <= kept < 85, kept
    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"chunks: {85 - kept} written, {kept} already there)" in second.stdout, second.stdout
    assert not partial.exists()
    assert np.array_equal(pz.Pyramid(out).read(0, 0, 0, SIDE, SIDE), reference)


def test_a_small_pyramid_is_one_level(tmp_path, tiny_onnx):
    """An image within one chunk is a pyramid of one level, and the line says so in the singular."""
    result = cips("render", "--seed", "1", "--size", 64, "--out", tmp_path / "one.zarr", "--model", tiny_onnx,
                  "--workers", 1, "--threads", 1)
    assert result.exit_code == 0, result.stderr
    assert "(OME-Zarr 0.5, 64x64, 1 level in 1024^2 chunks: 1 written, 0 already there)" in result.stdout
    assert len(pz.Pyramid(tmp_path / "one.zarr").done(pz.plan_levels(64, 64)[0])) == 1


def test_cli_refuses_a_changed_render_of_an_unfinished_pyramid(tmp_path, tiny_onnx):
    out = tmp_path / "x.zarr"
    pz.create(pz.partial_path(out), pz.plan_levels(512, 512, CHUNK), {"version": pz.STATE_VERSION, "width": 512,
                                                                       "height": 512, "truncation": 0.5})
    result = cips("render", "--seed", "1", "--size", 512, "--out", out, "--model", tiny_onnx, "--workers", 1,
                  "--zarr-chunk", CHUNK)
    assert result.exit_code == 1
    assert "cannot continue" in result.stderr and "truncation" in result.stderr and "delete" in result.stderr
    assert result.stderr.count("\n") == 1


def test_cli_errors_before_any_work(tmp_path, tiny_onnx, monkeypatch):
    monkeypatch.setattr(cl, "CONNECT_TIMEOUT", "1s")
    (tmp_path / "done.zarr").mkdir()
    for args, message in [
        (("--out", tmp_path / "done.zarr"), "already exists"),
        (("--seeds", "0-3", "--out", tmp_path / "many.zarr"), "pattern with {seed}"),
        (("--out", tmp_path / "a.zarr", "--coords", tmp_path / "c.npy"), "--coords does not work with --cluster, --scheduler or a .zarr output"),
        (("--out", tmp_path / "a.zarr", "--zarr-chunk", 10), "--zarr-chunk must be"),
        (("--out", tmp_path / "a.png", "--workers", 2), "--workers sizes the local Dask workers of --cluster"),
        (("--seeds", "0-20000", "--out", tmp_path), "at most 10000 per command (up to 10000000 with --cluster, on a Dask cluster)"),
        (("--seeds", "0-3", "--out", tmp_path, "--scheduler", "tcp://127.0.0.1:9"), "cannot reach the Dask scheduler"),
        (("--out", tmp_path / "a.zarr", "--scheduler", "tcp://127.0.0.1:9", "--workers", 2), "--workers sizes a local"),
    ]:
        result = cips("render", "--model", tiny_onnx, *args)
        assert result.exit_code == 1, (args, result.stdout)
        assert message in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)


def test_a_folder_that_refuses_the_pyramid_is_one_line(tmp_path, monkeypatch):
    """A folder the checks pass (writable by os.access) whose mkdir is refused, as /sys is for root: one
    line naming the output, not zarr's traceback."""
    from cips_edge.core.errors import UserError

    out = tmp_path / "b.zarr"
    zarr, local_store = pz._zarr()

    def refuse(store, **kwargs):
        raise PermissionError(1, "Operation not permitted", str(pz.partial_path(out)))
    monkeypatch.setattr(pz, "_zarr", lambda: (type("Zarr", (), {"open_group": staticmethod(refuse)}), local_store))
    with pytest.raises(UserError) as e:
        pz.create(pz.partial_path(out), pz.plan_levels(512, 512, CHUNK), {})
    assert str(e.value) == f"cannot write {out}: Operation not permitted"


def test_seeds_on_a_running_scheduler_are_the_files_a_plain_render_writes(tmp_path, tiny_onnx, client):
    alone, shards = tmp_path / "alone", tmp_path / "shards"
    alone.mkdir()
    shards.mkdir()
    ok(cips("render", "--seeds", "0-4", "--size", 48, "--out", alone, "--model", tiny_onnx))
    (shards / "cips-seed2.png").write_bytes(b"kept as it is")  # a file there counts as done
    text = ok(cips("render", "--seeds", "0-4", "--size", 48, "--out", f"{shards}/", "--model", tiny_onnx,
                   "--scheduler", client.scheduler.address, "--threads", 1))
    assert "5 files" in text and "4 rendered, 1 already there" in text and "2 Dask workers" in text, text
    for seed in (0, 1, 3, 4):
        name = f"cips-seed{seed}.png"
        assert (shards / name).read_bytes() == (alone / name).read_bytes()
    assert (shards / "cips-seed2.png").read_bytes() == b"kept as it is"
    one = ok(cips("render", "--seed", 3, "--size", 48, "--out", shards / "three.png", "--model", tiny_onnx,
                  "--scheduler", client.scheduler.address, "--threads", 1))
    assert one.startswith(f"wrote {shards / 'three.png'} (48x48: 1 rendered, 0 already there)"), one  # the file, named
    assert (shards / "three.png").read_bytes() == (alone / "cips-seed3.png").read_bytes()


def test_only_the_cluster_module_imports_dask(tmp_path):
    import cips_edge

    package = Path(cips_edge.__file__).parent  # installed layout (not resolved: editable installs link files)
    importers = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")
                       if any(line.lstrip().startswith(("import dask", "from dask", "import distributed", "from distributed"))
                              for line in p.read_text().splitlines()))
    assert importers == ["runtime/cluster.py"]
    code = ("import sys\n"
            "import cips_edge.cli, cips_edge.runtime, cips_edge.runtime.pyramid, cips_edge.runtime.view.app\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed', 'zarr', 'torch'}))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)


def test_without_the_extra_a_cluster_render_names_the_install_command(tmp_path, tiny_onnx):
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoDask:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('dask', 'distributed'):\n"
        "            raise ImportError(f'{name} is blocked for this test', name=name)\n"
        "sys.meta_path.insert(0, _NoDask())\n")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "cips_edge.cli", "render", "--model", str(tiny_onnx), "--out",
                        str(tmp_path / "a.zarr")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "needs the [cluster] extra" in r.stderr and "pip install 'cips-edge[cluster]'" in r.stderr
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "a.zarr.partial").exists()
