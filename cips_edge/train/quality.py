"""Image-quality metrics while training (--metrics swd,fid): the EMA generator against a fixed subset
of the training set, with the code `cips eval` runs, so a logged number is what `cips eval --checkpoint`
gives for the checkpoint saved at the same point (same seeds, same subset when every file decodes).

Only the main process evaluates. Nothing here draws from a global random generator (latents come from
numpy generators seeded by the sample's index, the subset and SWD from their own seeded generators),
so an evaluation leaves the training's random streams, and so exact resume, untouched.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from cips_edge.imagefolder import subset_indices
from cips_edge.metrics.errors import MetricsError
from cips_edge.metrics.evaluation import render
from cips_edge.metrics.feature_metrics import fid_from_features
from cips_edge.metrics.sliced_wasserstein import swd
from cips_edge.metrics.sources import generator_source
from cips_edge.model import CIPSGenerator

from .options import TrainError

SUBSET_SEED = 0  # the data subset and SWD's random patches and directions: cips eval's default --seed
RENDER_BATCH = 16  # seeds per sample-source call (cips eval's batch)


@contextlib.contextmanager
def full_fp32_matmuls(device: torch.device):
    """Training turns TF32 on for CUDA matmuls; evaluate in full fp32, as `cips eval` does."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


class QualityMetrics:
    """Callable: the EMA generator -> one metrics record ({"swd", "swd_levels", ..., "metric_s"})."""

    def __init__(self, names: tuple[str, ...], samples: int, reals: np.ndarray, device: torch.device,
                 inception_weights=None, extractor=None):
        """reals: the decoded training set, uint8 [N, size, size, 3]. extractor: an Inception feature
        extractor to use instead of loading inception_weights (tests)."""
        self.names, self.device = names, device
        index = subset_indices(len(reals), samples, SUBSET_SEED)
        self.reals = np.ascontiguousarray(reals[index])  # [n, size, size, 3], a copy (reals may be a memmap)
        self.seeds = np.arange(len(index), dtype=np.int64)
        self.extractor = extractor
        if "fid" in names and extractor is None:
            from cips_edge.metrics.inception import load_inception

            try:  # the digest is checked here, before the first step, so a wrong file costs no training
                self.extractor = load_inception(inception_weights, device=device)
            except MetricsError as e:
                raise TrainError(str(e)) from None
        self._real_features = None  # computed at the first evaluation, then kept

    @property
    def count(self) -> int:
        return len(self.seeds)

    @torch.no_grad()
    def __call__(self, g_ema: CIPSGenerator) -> dict:
        t0 = time.perf_counter()
        size = g_ema.config.size
        with full_fp32_matmuls(self.device):
            fakes = render(generator_source(g_ema, size), self.seeds, RENDER_BATCH)  # uint8 [n, size, size, 3]
        record: dict = {}
        if "swd" in self.names:
            result = swd(self.reals, fakes, seed=SUBSET_SEED)
            record.update(swd=round(result["mean"], 4), swd_levels=[round(v, 4) for v in result["levels"]],
                          swd_resolutions=result["resolutions"])
        if "fid" in self.names:
            if self._real_features is None:
                self._real_features = self.extractor(self.reals)
            record["fid"] = round(fid_from_features(self._real_features, self.extractor(fakes)), 4)
        record["metric_samples"] = self.count
        record["metric_s"] = round(time.perf_counter() - t0, 2)
        return record
