"""`cips info`: what a model file says about itself, and which providers this machine offers."""
from __future__ import annotations

import typer

from cips_edge.core.format import int8_summary

from .common import open_model, user_errors
from .options import ModelOpt


@user_errors()
def info(model: ModelOpt = None) -> None:
    """Show a model's config, metadata, parameter count and the providers this machine offers.

    \b
    cips info                     (the packaged model)
    cips info --model m.onnx
    """
    from cips_edge import runtime as rt

    m = open_model(model, device="cpu")
    have = rt.available_providers()
    auto = "CUDAExecutionProvider" if "CUDAExecutionProvider" in have else "CPUExecutionProvider"
    lines = [
        ("model", f"{m.path} ({m.path.stat().st_size / 1e6:.1f} MB, {rt.FORMAT} v{m.info.format_version})"),
        ("precision", _precision_line(m.info)),
        *([("int8", int8_summary(m.provenance["int8"]))] if "int8" in m.provenance else []),
        ("config", ", ".join(f"{k}={v}" for k, v in m.config.to_dict().items())),
        ("parameters", f"{m.parameter_count:,}"),
        ("cost", f"{2 * m.config.macs_per_pixel / 1e6:.2f} MFLOP per pixel"),
        *_provenance_lines(m.provenance, m.style_dim),
        ("providers", f"{', '.join(have)} (--device auto picks {auto})"),
    ]
    for key, value in lines:
        typer.echo(f"{key:<11} {value}")


def _precision_line(info) -> str:
    """"fp16 (pixel graphs fp16, fp32)", or for format-1 files "fp32 (format 1: one graph)"."""
    if info.format_version < 2:
        return "fp32 (format 1: one graph; re-export for the faster format-3 layout)"
    return f"{info.precision} (pixel graphs {', '.join(sorted(info.pixel_graphs))})"


def _provenance_lines(p: dict, style_dim: int) -> list[tuple[str, str]]:
    """Where the file came from: w_avg, the checkpoint, the recipe and training facts when recipes
    wrote them ("training": "1x NVIDIA H200, 38.6 min; preset=edge-64, batch=64, ..."), the export."""
    w_source = p.get("w_avg")
    w_source = (f"mean of w over {w_source['latents']} latents (seed {w_source['seed']})"
                if isinstance(w_source, dict) else "given at export" if w_source else "not recorded")
    source = (f"{p['kind']} checkpoint {p['source']} (step {p.get('step')}, images seen {p.get('images_seen')})"
              if "source" in p else "not recorded (exported from a generator in memory)")
    lines = [("w_avg", f"{style_dim} values, {w_source}"), ("source", source)]
    if p.get("recipe"):
        lines.append(("recipe", str(p["recipe"])))
    training = p.get("training")
    if isinstance(training, dict) and training:
        facts = dict(training)
        where = [str(facts.pop("gpu"))] if "gpu" in facts else []
        if isinstance(facts.get("wall_s"), (int, float)):
            where.append(f"{facts.pop('wall_s') / 60:.1f} min")
        options = ", ".join(f"{k}={v}" for k, v in facts.items())
        lines.append(("training", "; ".join(part for part in (", ".join(where), options) if part)))
    elif training:
        lines.append(("training", str(training)))
    origin = p.get("init_from")  # trained on from another run's weights (cips train --init-from)
    if isinstance(origin, dict):
        before = ", ".join(f"{k}={v}" for k, v in (origin.get("training") or {}).items())
        lines.append(("init from", f"{origin.get('source')} (images seen {origin.get('images_seen')})"
                                   + (f"; {before}" if before else "")))
    total = p.get("total")  # every run of an --init-from chain
    if isinstance(total, dict) and total.get("runs"):
        seen = total.get("images_seen")
        parts = [f"{total['runs']} runs", f"{seen:,} images" if isinstance(seen, int) else "images not all recorded"]
        wall = total.get("wall_s")
        parts.append(f"{wall / 60:.1f} min of training" if isinstance(wall, (int, float)) else "time not all recorded")
        lines.append(("in all", ", ".join(parts)))
    exported = f"{p.get('exported_at', '?')} with cips-edge {p.get('cips_edge', '?')}, torch {p.get('torch', '?')}"
    return [*lines, ("exported", exported)]
