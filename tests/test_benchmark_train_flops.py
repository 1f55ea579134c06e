"""benchmarks/train_flops.py's counter: exact on a known matmul and convolution, and through a whole
training step (R1's double backward included, which torch's own FlopCounterMode refuses) its per-image
figures do not depend on the batch counted."""
from __future__ import annotations

import pytest
import torch

from benchmark_scripts import load

bench = load("train_flops")


def test_the_counter_is_exact_on_a_matmul_and_a_convolution():
    with bench.FlopCount() as count:
        torch.randn(5, 7) @ torch.randn(7, 3)
    assert count.total == 2 * 5 * 7 * 3
    with bench.FlopCount() as count:
        torch.nn.functional.conv2d(torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3), padding=1)
    assert count.total == 2 * (2 * 8 * 8) * 6 * (4 * 3 * 3)


def test_every_phase_is_counted_and_per_image_work_does_not_depend_on_the_batch():
    """The benchmark counts on 2 images and reports per image: that holds only if every counted operator
    scales with the batch (the mapping network, G's per-pixel layers, D's convolutions, R1's double
    backward)."""
    two = bench.phase_flops("tiny", 16, batch=2, r1_every=16)
    four = bench.phase_flops("tiny", 16, batch=4, r1_every=16)
    assert list(two) == ["D step", "R1 step", "G step"] and all(v > 0 for v in two.values())
    # within 1e-5: G's coordinate features are computed once a batch (a few kFLOP here)
    assert two == pytest.approx(four, rel=1e-5)


def test_a_variant_the_run_did_not_measure_is_refused_with_the_ones_it_did(tmp_path):
    times = tmp_path / "times.json"
    times.write_text('{"runs": {"paper-64/levers": {"variants": {"base": {"phases": {}}, '
                     '"fused_fc": {"error": "out of memory"}}}}}')
    for variant in ("rgb_grad", "fused_fc"):  # not in the file; in it, but failed
        with pytest.raises(SystemExit, match=rf"no measured variant '{variant}' \(it has base, fused_fc\)$"):
            bench.main(["--config", "paper-64", "--times", str(times), "--variant", variant,
                        "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
