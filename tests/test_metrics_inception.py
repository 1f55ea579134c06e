"""The FID Inception-v3: weights file checks with one-line errors, the published state-dict layout, TF1
preprocessing, and (RANDOM INIT, tests only) features end to end."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cips_edge.metrics.errors import MetricsError
from cips_edge.metrics.inception import (FEATURE_DIM, WEIGHTS_FILE, WEIGHTS_URL, FIDInceptionV3, load_inception,
                                         preprocess, tf1_resize_matrix)


def test_missing_weights_file_is_a_one_line_error(tmp_path):
    with pytest.raises(MetricsError) as e:
        load_inception(tmp_path / WEIGHTS_FILE)
    assert "not found" in str(e.value) and WEIGHTS_URL in str(e.value) and "\n" not in str(e.value)


def test_wrong_weights_file_is_a_one_line_error(tmp_path):
    wrong = tmp_path / WEIGHTS_FILE
    torch.save(FIDInceptionV3().state_dict(), wrong)  # right layout, wrong numbers: the hash must catch it
    with pytest.raises(MetricsError) as e:
        load_inception(wrong)
    assert "SHA-256" in str(e.value) and WEIGHTS_URL in str(e.value) and "\n" not in str(e.value)


def test_no_weights_is_a_one_line_error():
    with pytest.raises(MetricsError, match="need the Inception weights") as e:
        load_inception(None)
    assert "\n" not in str(e.value)


def test_state_dict_has_the_layout_of_the_published_file():
    # pytorch-fid's file is torchvision's Inception3(num_classes=1008, aux_logits=False): 94 conv+BN
    # units (weight; BN weight, bias, running mean/var, step count) and the fc layer = 566 entries.
    state = FIDInceptionV3().state_dict()
    assert len(state) == 566
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch_pool.bn.running_var": (192,),
        "fc.weight": (1008, 2048),
    }
    for name, shape in shapes.items():
        assert tuple(state[name].shape) == shape, name
    assert not any("AuxLogits" in k for k in state)


def test_tf1_resize_reads_a_corner_aligned_grid_without_half_pixel_offset():
    # TF1 resize_bilinear(align_corners=False): output i reads input i * in / out; the end is clamped.
    m = tf1_resize_matrix(2, 4)
    np.testing.assert_allclose(m.numpy(), [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
    assert torch.allclose(tf1_resize_matrix(64, 299).sum(1), torch.ones(299))


def test_preprocess_scales_like_the_tf_graph():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[1] = 255
    x = preprocess(images)
    assert x.shape == (2, 3, 299, 299)
    assert torch.allclose(x[0], torch.tensor(-1.0)) and torch.allclose(x[1], torch.tensor(127 / 128))  # (x-128)/128


def test_random_init_for_tests_extractor_gives_distinct_finite_features():
    extractor = load_inception(None, random_init_for_tests=True)  # TESTS ONLY: not the FID network
    assert "RANDOM INIT" in extractor.identity
    rng = np.random.default_rng(0)
    features = extractor(rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    assert features.shape == (3, FEATURE_DIM) and features.dtype == np.float32
    assert np.isfinite(features).all() and (features >= 0).all()  # ReLU, then average pooling
    assert np.abs(features[0] - features[1]).max() > 1e-4


@pytest.mark.skipif(not os.environ.get("CIPS_INCEPTION_WEIGHTS"),
                    reason=f"set CIPS_INCEPTION_WEIGHTS to the path of {WEIGHTS_FILE} to check the real weights")
def test_real_weights_load_and_give_pool3_features():
    extractor = load_inception(os.environ["CIPS_INCEPTION_WEIGHTS"])
    features = extractor(np.full((2, 64, 64, 3), 128, np.uint8))
    assert features.shape == (2, FEATURE_DIM) and np.isfinite(features).all() and (features >= 0).all()
    np.testing.assert_allclose(features[0], features[1], rtol=1e-5)
