"""`cips export`: a generator checkpoint to a cips-edge ONNX file (cips_edge.export; needs torch)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cips_edge.core.errors import UserError

from .common import user_errors


@user_errors()
def export(
    out: Annotated[Path, typer.Argument(help="the .onnx file to write")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="checkpoint file, run folder, or original CIPS checkpoint "
                                                            "(default: newest under cips-runs/)")] = None,
    n_mlp: Annotated[Optional[int], typer.Option(help="mapping layers (original-format checkpoints; default: as "
                                                      "many as the checkpoint holds)")] = None,
    lr_mlp: Annotated[Optional[float], typer.Option(help="mapping lr multiplier (original-format checkpoints; "
                                                         "default 0.01)")] = None,
    precision: Annotated[Optional[str], typer.Option(help="default pixel precision of the file: fp32, fp16 (float16 "
                                                          "GEMMs; for GPUs) or int8 (8-bit GEMMs after the leading float32 "
                                                          "layers that a calibration on 16 seeds keeps; for CPUs); every "
                                                          "file also holds fp32 [default: fp32; an .onnx "
                                                          "--checkpoint keeps its own]")] = None,
) -> None:
    """Export a generator checkpoint to a cips-edge ONNX file, verified against torch before it is kept.

    \b
    cips export model.onnx                                  (newest checkpoint under cips-runs/)
    cips export model.onnx --checkpoint cips-runs/00003-ffhq
    cips export ffhq.onnx --checkpoint 550000.pt            (original CIPS code's format, detected)
    cips export fast.onnx --precision fp16                  (float16 pixel graph for GPUs)
    """
    try:
        from cips_edge.export import export_checkpoint
    except ImportError as e:
        raise UserError(f"export needs torch and onnx ({e.name} is missing): pip install torch==2.13.0 "
                        "'cips-edge[train]'") from None

    start = time.perf_counter()
    report = export_checkpoint(out, checkpoint, n_mlp=n_mlp, lr_mlp=lr_mlp, precision=precision,
                               say=lambda s: typer.echo(s, err=True))
    ms = (time.perf_counter() - start) * 1000
    typer.echo(f"wrote {report.path} ({report.bytes / 1e6:.1f} MB, opset {report.opset}, {report.precision}) in "
               f"{ms:.0f} ms; ONNX Runtime (CPUExecutionProvider) matches torch (relative error "
               f"{report.rel_error:.1e}, max abs {report.max_abs_error:.1e})" + (
                   f"; its {report.precision} pixel graph differs by {report.precision_error:.1e} (relative)"
                   if report.precision_error else ""))
    if report.int8 is not None:
        typer.echo(report.int8_line())
