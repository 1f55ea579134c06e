"""evaluate(): a sample source and a data folder in, metrics out; feature cache; report and JSON;
torch-free when only SWD is asked for. Feature metrics here use a RANDOM-INIT Inception (tests only)."""
from __future__ import annotations

import json
import subprocess
import sys
from unittest.mock import ANY

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from cips_edge.metrics import MetricsError, evaluate, evaluate_draws, print_report, write_report

SIZE = 32


def colour_source(seeds: np.ndarray) -> np.ndarray:
    """A stand-in generator: one flat random colour plus noise per seed, uint8 [B, 32, 32, 3]."""
    out = np.empty((len(seeds), SIZE, SIZE, 3), np.uint8)
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(int(seed))
        out[i] = np.clip(rng.uniform(0, 255, 3) + rng.normal(0, 20, (SIZE, SIZE, 3)), 0, 255)
    return out


@pytest.fixture
def data_dir(tmp_path):
    """8 non-square images (48x40: centre-cropped and resized to 32 when loaded)."""
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        image = np.clip(rng.uniform(0, 255, 3) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


def test_swd_only_needs_no_torch(data_dir, torchless_env, tmp_path):
    code = ("import sys, numpy as np\n"
            "from cips_edge.metrics import evaluate, write_report\n"
            f"src = lambda seeds: np.full((len(seeds), {SIZE}, {SIZE}, 3), 200, np.uint8)\n"
            f"r = evaluate(src, sys.argv[1], num_images=8, progress=False)\n"
            "write_report(r, sys.argv[2])\n")
    out = tmp_path / "result.json"
    run = subprocess.run([sys.executable, "-c", code, str(data_dir), str(out)], env=torchless_env,
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["num_images"] == 8 and result["size"] == SIZE
    assert set(result["swd"]) == {"resolutions", "levels", "mean"} and "fid" not in result


@pytest.mark.slow
def test_random_init_for_tests_end_to_end_with_feature_cache(data_dir, tmp_path):
    cache = tmp_path / "cache"
    kwargs = dict(num_images=8, cache_dir=cache, progress=False, random_init_for_tests=True)  # NOT FID
    first = evaluate(colour_source, data_dir, **kwargs)
    assert {"swd", "fid", "kid", "precision", "recall"} <= set(first)
    assert first["feature_cache"]["state"] == "miss" and len(list(cache.rglob("*.npz"))) == 1
    assert first["fid"] >= 0 and 0 <= first["precision"] <= 1 and 0 <= first["recall"] <= 1
    second = evaluate(colour_source, data_dir, **kwargs)
    assert second["feature_cache"]["state"] == "hit"
    assert second["fid"] == first["fid"] and second["swd"] == first["swd"]

    json_path = write_report(second, tmp_path / "out" / "metrics.json")
    assert json.loads(json_path.read_text())["fid"] == second["fid"]
    console = Console(record=True, width=120)
    print_report(second, console=console)
    text = console.export_text()
    assert "FID" in text and "SWD x1e3 @ 32x32" in text and "RANDOM" in text.upper()

    Image.new("RGB", (48, 40), (255, 0, 0)).save(data_dir / "03.png")  # a changed file: a new cache entry
    third = evaluate(colour_source, data_dir, **kwargs | {"metrics": ["fid"]})
    assert third["feature_cache"]["state"] == "miss" and third["fid"] != first["fid"]
    assert len(list(cache.rglob("*.npz"))) == 2


def test_one_draw_is_evaluate_itself_and_no_draw_is_an_error(data_dir):
    assert evaluate_draws(colour_source, data_dir, 1, num_images=6, first_seed=2, progress=False) == \
        {**evaluate(colour_source, data_dir, num_images=6, first_seed=2, progress=False), "seconds": ANY}
    with pytest.raises(MetricsError, match="at least 1"):
        evaluate_draws(colour_source, data_dir, 0, num_images=6)


def test_a_later_first_draw_is_that_draw_of_a_run_from_draw_0(data_dir):
    kwargs = dict(metrics=["swd"], progress=False)
    both = evaluate_draws(colour_source, data_dir, 2, num_images=4, first_seed=3, **kwargs)["draws"]
    later = evaluate_draws(colour_source, data_dir, 1, num_images=4, first_seed=3, first_draw=1, **kwargs)
    assert later["first_seed"] == 7 and later["seed"] == 1 and later["swd"] == both[1]["swd"]
    # 9 asked of 8 data images: draws step by the 8 used, as a run from draw 0 numbers them
    capped = evaluate_draws(colour_source, data_dir, 1, num_images=9, first_draw=2, **kwargs)
    assert capped["num_images"] == 8 and capped["first_seed"] == 16
    with pytest.raises(MetricsError, match="first draw must be 0 or more"):
        evaluate_draws(colour_source, data_dir, 1, num_images=4, first_draw=-1)


@pytest.mark.slow
def test_draws_average_every_metric_and_keep_each_draw(data_dir, tmp_path):
    kwargs = dict(num_images=4, cache_dir=tmp_path / "cache", progress=False, random_init_for_tests=True)  # NOT FID
    result = evaluate_draws(colour_source, data_dir, 2, first_seed=1, **kwargs)
    singles = [evaluate(colour_source, data_dir, first_seed=1 + 4 * r, seed=r, **kwargs) for r in range(2)]
    for name, value in [("swd", lambda r: r["swd"]["mean"]), ("fid", lambda r: r["fid"]),
                        ("kid", lambda r: r["kid"]["mean"]), ("precision", lambda r: r["precision"]),
                        ("recall", lambda r: r["recall"])]:
        values = [value(r) for r in singles]
        assert result["spread"][name]["values"] == pytest.approx(values, rel=1e-6, abs=1e-12), name
        assert value(result) == pytest.approx(np.mean(values), rel=1e-6, abs=1e-12), name
    assert [d["first_seed"] for d in result["draws"]] == [1, 5] and result["draws"][1]["seed"] == 1
    assert json.loads(write_report(result, tmp_path / "m.json").read_text())["spread"].keys() == result["spread"].keys()
    console = Console(record=True, width=160)
    print_report(result, console=console)
    fid_row = next(line for line in console.export_text().splitlines() if "FID" in line)
    assert f"{result['fid']:.3f} ± {result['spread']['fid']['std']:.3f}" in fid_row


def test_unreadable_data_files_are_skipped_and_reported(data_dir):
    (data_dir / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    result = evaluate(colour_source, data_dir, num_images=9, progress=False)
    assert result["num_images"] == 8 and result["skipped_files"][0].startswith("zz-broken.png")


@pytest.mark.parametrize("kwargs, message", [
    (dict(data="missing-folder"), "data not found"),
    (dict(metrics=["fid"]), "need the Inception weights"),
    (dict(metrics=["swd", "is"]), "unknown metric"),
    (dict(sample_source=lambda seeds: np.zeros((len(seeds), 8, 8, 3), np.float32)), "expected uint8"),
    (dict(sample_source=lambda seeds: np.zeros((len(seeds), 32, 16, 3), np.uint8)), "square"),
])
def test_user_errors_are_one_line(data_dir, kwargs, message):
    args = dict(sample_source=colour_source, data=data_dir, num_images=4, progress=False) | kwargs
    with pytest.raises(MetricsError, match=message) as e:
        evaluate(**args)
    assert "\n" not in str(e.value)
