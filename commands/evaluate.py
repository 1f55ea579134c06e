"""`cips eval`: a model's samples against a data set (cips_edge.metrics): SWD without torch; FID, KID
and precision/recall, and torch checkpoints, with it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cips_edge.core.errors import UserError

from .common import open_model, user_errors
from .options import ModelOpt, PrecisionOpt, TruncationOpt


@user_errors()
def eval_(
    data: Annotated[Path, typer.Argument(help="data set: a folder of images (searched recursively) or a .zip; "
                                              "centre-cropped and resized to --size")],
    model: ModelOpt = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="evaluate a torch checkpoint or run folder instead of an "
                                                            "ONNX file (needs torch; default: none)")] = None,
    num: Annotated[int, typer.Option(help="images per set: N samples against N data images (fewer if the data set "
                                          "is smaller); at least 2")] = 2000,
    truncation: TruncationOpt = 1.0,
    seed: Annotated[int, typer.Option(help="first sample seed: the samples are seeds S, S+1, ..., S+N-1 (the data "
                                           "subset and the metrics' own randomness use seed 0)")] = 0,
    draws: Annotated[int, typer.Option(help="independent draws, reported as their mean ± standard deviation: draw r "
                                            "renders seeds S+r*N .. S+r*N+N-1 and uses seed r for the data subset "
                                            "and the metrics (r = 0 is the single draw); K draws take K times as "
                                            "long")] = 1,
    batch: Annotated[int, typer.Option(help="samples rendered per call, in images")] = 16,
    device: Annotated[str, typer.Option(help="auto (CUDA when it loads, else CPU), cuda (error if it cannot run) or "
                                             "cpu; for the generator and the Inception network")] = "auto",
    precision: PrecisionOpt = None,
    metrics: Annotated[Optional[str], typer.Option(help="comma list of swd, fid, kid, pr (precision/recall) "
                                                        "(default: swd, plus fid,kid,pr with --inception-weights)")] = None,
    inception_weights: Annotated[Optional[Path], typer.Option(help="pt_inception-2015-12-05-6726825d.pth, needed for "
                                                                   "fid, kid and pr (docs/metrics.md; default: "
                                                                   "none)")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the result to this .json file, "
                                                                    "atomically (default: none)")] = None,
    size: Annotated[Optional[int], typer.Option(help="side of the compared images in pixels (default: the model's "
                                                     "training size)")] = None,
) -> None:
    """Compare images of a model with a data set: SWD (numpy only), and FID, KID, precision/recall.

    \b
    cips eval data/ --model m.onnx --num 2000               (SWD)
    cips eval data.zip --checkpoint cips-runs/00003-ffhq --inception-weights pt_inception-2015-12-05-6726825d.pth
    cips eval data/ --metrics swd,fid --inception-weights W.pth --json metrics.json
    cips eval data/ --draws 4                                (mean ± std of 4 independent draws)

    Sample i is seed S+i (z = numpy default_rng(seed).standard_normal(style_dim)), so an ONNX export
    and its checkpoint give the same images. Prints a table; see docs/metrics.md for the numbers.
    """
    from cips_edge import metrics as cm
    from cips_edge import runtime as rt
    from cips_edge.metrics.evaluation import FEATURE_METRICS
    from cips_edge.metrics.sliced_wasserstein import check_swd_size

    try:
        wanted = None if metrics is None else [m.strip().lower() for m in metrics.split(",") if m.strip()]
        chosen = cm.check_request(wanted, num, batch, inception_weights is not None)  # fail before any work
        rt.check_truncation(truncation)
        if set(chosen) & set(FEATURE_METRICS):
            _require_torch("fid, kid and pr need")
        if model is not None and checkpoint is not None:
            raise UserError("give either --model or --checkpoint, not both")
        if precision is not None and checkpoint is not None:
            raise UserError("--precision picks an ONNX file's pixel graph; a --checkpoint renders in torch fp32")
        if draws < 1:
            raise UserError(f"--draws must be at least 1, got {draws}")
        if size is not None:
            rt.check_image_size(size, size)
        if json_out is not None:
            rt.prepare_output(json_out, (".json",))
        if checkpoint is not None:
            source, size, what = _checkpoint_source(checkpoint, size, truncation, device)
        else:
            m = open_model(model, device, precision=precision)
            size = size or m.config.size
            source, what = cm.onnx_source(m, size, truncation), f"{m.path} on {m.provider}"
        if "swd" in chosen:
            check_swd_size(size, size)
        start = time.perf_counter()
        result = cm.evaluate_draws(source, data, draws, num_images=num, metrics=wanted,
                                   inception_weights=inception_weights, batch_size=batch, first_seed=seed,
                                   device=device, progress=True)
    except cm.MetricsError as e:
        raise UserError(str(e)) from None
    cm.print_report(result)
    if json_out is not None:
        cm.write_report(result, json_out)
    wrote = f"; wrote {json_out}" if json_out is not None else ""
    typer.echo(f"evaluated {what} in {time.perf_counter() - start:.1f} s{wrote}")


def _require_torch(what: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(f"{what} torch: pip install torch==2.13.0 'cips-edge[train]'") from None


def _checkpoint_source(checkpoint: Path, size: Optional[int], truncation: float, device: str):
    """(sample source, image size, description) for a torch checkpoint, file or run folder."""
    _require_torch("--checkpoint needs")
    from cips_edge import metrics as cm
    from cips_edge.checkpoint import CheckpointError, load_generator

    torch_device = cm.torch_device(device)
    try:
        loaded = load_generator(checkpoint, device=torch_device)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    if loaded.notice:
        typer.echo(loaded.notice, err=True)
    size = size or loaded.generator.config.size
    return cm.generator_source(loaded.generator, size, truncation), size, f"{loaded.source} on torch {torch_device}"
