"""The Inception-v3 of TensorFlow FID (graph "inception-2015-12-05", as ported to PyTorch by
pytorch-fid), in plain torch (torchvision not needed): 2048-d pool3 features for FID, KID and
precision/recall. The weights are supplied by the user and checked against their published SHA-256.

Architecture: torchvision's Inception3 layer names (so the ported state dict loads as is) with the TF
graph's differences: average pools that ignore padding, and a max pool in the last block. Input:
uint8 images of any size, resized to 299x299 the way TF1's resize_bilinear does it (corner-aligned
source grid, no half-pixel offset), then (x - 128) / 128 as the TF graph does.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cips_edge.core.files import file_sha256

from .errors import MetricsError

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
# torch.hub names files by their SHA-256 prefix (6726825d); the full digest and size below are the
# ones independent projects pin for this file (it is byte-identical to torch-fidelity's
# weights-inception-2015-12-05-6726825d.pth).
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_BYTES = 95_628_359
INPUT_SIZE = 299
FEATURE_DIM = 2048


class InceptionWeightsError(MetricsError):
    """Weights that are missing or not the FID Inception file."""


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in TF), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool divides by the number of real (unpadded) pixels at the border.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Factorised 7x7 convolutions (1x7 then 7x1)."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            b7d = layer(b7d)
        return torch.cat([self.branch1x1(x), b7, b7d, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Expanded filter bank; the FID graph's last block (Mixed_7c) pools with max instead of average."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        assert pool in ("avg", "max"), pool
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        pooled = _avg_pool_3x3(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, b3d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """[N, 3, 299, 299] in [-1, 1] -> pool3 features [N, 2048]."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        # The 1008-class logits layer is part of the weights file; pool3 features do not use it, but
        # keeping it lets the file load strictly (every key accounted for).
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1:] == (3, INPUT_SIZE, INPUT_SIZE), x.shape  # [NCHW]
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # [N, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # [N, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [N, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ... [N, 768, 17, 17] ... [N, 2048, 8, 8]
        return x.mean(dim=(2, 3))  # [N, 2048]


def tf1_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """[out, in] weights of TF1 resize_bilinear (align_corners=False, half_pixel_centers=False): output
    pixel i reads source position i * in / out, interpolating its two neighbours (clamped at the end)."""
    src = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    lo = src.floor().long()
    frac = src - lo
    hi = (lo + 1).clamp(max=in_size - 1)
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    m[torch.arange(out_size), lo] += 1 - frac
    m[torch.arange(out_size), hi] += frac
    return m.float()


def preprocess(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, 299, 299]: TF1 bilinear resize, then (x - 128) / 128."""
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] == 3, (images.dtype, images.shape)
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
    ry = tf1_resize_matrix(x.shape[2], INPUT_SIZE).to(device)
    rx = tf1_resize_matrix(x.shape[3], INPUT_SIZE).to(device)
    x = ry @ x @ rx.T  # [N, 3, 299, 299]
    return (x - 128) / 128


def _where_to_get() -> str:
    return f"get {WEIGHTS_FILE} from {WEIGHTS_URL}"


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The FID Inception state dict from a user-supplied file, after checking its SHA-256."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InceptionWeightsError(f"Inception weights not found: {path} ({_where_to_get()})")
    digest = file_sha256(path)
    if digest != WEIGHTS_SHA256:
        raise InceptionWeightsError(f"{path} is not the FID Inception weights file (SHA-256 {digest[:16]}..., "
                                    f"expected {WEIGHTS_SHA256[:16]}...; {_where_to_get()})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # The bytes are the pinned file (checked above), so full unpickling runs no unknown code.
        return torch.load(path, map_location="cpu", weights_only=False)


class InceptionFeatures:
    """Callable: uint8 images [N, H, W, 3] -> float32 pool3 features [N, 2048], in batches."""

    def __init__(self, network: FIDInceptionV3, identity: str, device: torch.device | str = "cpu",
                 batch_size: int = 64):
        self.network = network.eval().requires_grad_(False).to(device)
        self.identity = identity  # names the weights: part of the feature cache key
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty((len(images), FEATURE_DIM), np.float32)
        # Full fp32 convolutions on GPUs too (cuDNN would use TF32): FID should not depend on the card.
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            for start in range(0, len(images), self.batch_size):
                batch = preprocess(images[start:start + self.batch_size], self.device)
                out[start:start + len(batch)] = self.network(batch).float().cpu().numpy()
        return out


def load_inception(weights: str | os.PathLike | None, device: torch.device | str = "cpu",
                   batch_size: int = 64, random_init_for_tests: bool = False) -> InceptionFeatures:
    """The FID feature extractor from the user's weights file.

    random_init_for_tests=True (weights must then be None) builds the same network with seeded random
    weights instead: TESTS ONLY, to run the FID plumbing where the real file is absent. Its numbers are
    not FID and its cache entries are kept apart from real ones.
    """
    network = FIDInceptionV3()
    if random_init_for_tests:
        assert weights is None, "random_init_for_tests takes no weights file"
        _random_init(network)
        return InceptionFeatures(network, "inception-v3 RANDOM INIT (tests only)", device, batch_size)
    if weights is None:
        raise InceptionWeightsError(f"FID, KID and precision/recall need the Inception weights ({_where_to_get()})")
    state = read_weights(weights)
    missing, unexpected = network.load_state_dict(state, strict=False)
    # Older PyTorch versions wrote no batch-norm step counters; those are the only keys that may lack.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # cannot happen for the checked file; a bug in this module if it does
        raise RuntimeError(f"Inception weights do not fit the network: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    return InceptionFeatures(network, f"inception-v3 {WEIGHTS_FILE} sha256:{WEIGHTS_SHA256}", device, batch_size)


def _random_init(network: nn.Module) -> None:
    """He-normal convolutions and identity batch norms from a fixed seed, so activations stay O(1) and
    the features differ from image to image."""
    generator = torch.Generator().manual_seed(0)
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()
