"""Import of checkpoints written by the paper authors' code (advimman/CIPS, CIPSskip).

The only module that knows that format. A checkpoint is a dict whose `g_ema` entry is the
generator's state dict; the config is inferred from tensor shapes. Per-pixel noise weights are
dropped: deterministic rendering has no noise.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .core.config import GeneratorConfig

_STYLE = re.compile(r"^style\.(\d+)\.weight$")
_LINEAR = re.compile(r"^linears\.(\d+)\.conv\.weight$")
_TO_RGB = re.compile(r"^to_rgbs\.(\d+)\.conv\.weight$")


def is_original_state(state: Mapping) -> bool:
    return isinstance(state, Mapping) and "lff.ffm.conv.weight" in state and "emb.input" in state


def is_original_checkpoint(ckpt: object) -> bool:
    return isinstance(ckpt, Mapping) and is_original_state(ckpt.get("g_ema"))


def infer_config(state: Mapping[str, torch.Tensor], n_mlp: int | None = None,
                 lr_mlp: float = 0.01) -> GeneratorConfig:
    """Read the config off the shapes. lr_mlp is not visible in shapes (the original default is 0.01)."""
    hidden = state["lff.ffm.conv.weight"].shape[0]
    size = state["emb.input"].shape[-1]
    style_dim = state["conv1.conv.modulation.weight"].shape[1]
    linear_ids = sorted(int(m.group(1)) for k in state if (m := _LINEAR.match(k)))
    n_rgb = sum(1 for k in state if _TO_RGB.match(k))
    found_mlp = sum(1 for k in state if _STYLE.match(k))
    if n_mlp is None:
        n_mlp = found_mlp
    elif n_mlp != found_mlp:
        raise ValueError(f"--n-mlp {n_mlp} but the checkpoint holds {found_mlp} mapping layers")
    if not linear_ids or n_rgb == 0 or linear_ids != list(range(len(linear_ids))):
        raise ValueError("original checkpoint without a complete set of linears / to_rgbs")
    widths = tuple(state[f"linears.{i}.conv.weight"].shape[1] for i in linear_ids)
    if len(widths) % n_rgb:
        raise ValueError(f"{len(widths)} linears do not split evenly over {n_rgb} ToRGB layers")
    return GeneratorConfig(size=size, hidden_size=hidden, style_dim=style_dim, n_mlp=n_mlp, lr_mlp=lr_mlp,
                           synthesis_widths=widths, to_rgb_every=len(widths) // n_rgb)


def _modulated(prefix: str, dst: str, state: Mapping[str, torch.Tensor], out: dict) -> None:
    out[f"{dst}.weight"] = state[f"{prefix}.conv.weight"][0, :, :, 0, 0]
    out[f"{dst}.modulation.weight"] = state[f"{prefix}.conv.modulation.weight"]
    out[f"{dst}.modulation.bias"] = state[f"{prefix}.conv.modulation.bias"]


def convert_state(state: Mapping[str, torch.Tensor], config: GeneratorConfig) -> tuple[dict, list[str]]:
    """Original g_ema state dict -> (our CIPSGenerator state dict, names of dropped noise weights)."""
    out: dict[str, torch.Tensor] = {}
    for i in range(config.n_mlp):
        # style.0 is PixelNorm (no weights); the equalized-lr layers are style.1 .. style.n_mlp
        out[f"mapping.layers.{i}.weight"] = state[f"style.{i + 1}.weight"]
        out[f"mapping.layers.{i}.bias"] = state[f"style.{i + 1}.bias"]
    out["fourier.linear.weight"] = state["lff.ffm.conv.weight"][:, :, 0, 0]
    out["fourier.linear.bias"] = state["lff.ffm.conv.bias"]
    out["embedding.table"] = state["emb.input"][0]
    _modulated("conv1", "input_layer", state, out)
    out["input_layer.bias"] = state["conv1.activate.bias"]
    for i in range(len(config.synthesis_widths)):
        _modulated(f"linears.{i}", f"layers.{i}", state, out)
        out[f"layers.{i}.bias"] = state[f"linears.{i}.activate.bias"]
    for k in range(config.n_to_rgb):
        _modulated(f"to_rgbs.{k}", f"to_rgbs.{k}.fc", state, out)
        out[f"to_rgbs.{k}.fc.bias"] = state[f"to_rgbs.{k}.bias"].reshape(3)
    dropped = sorted(k for k in state if k.endswith("noise.weight"))
    unused = set(state) - set(dropped) - _consumed_keys(config)
    if unused:
        raise ValueError(f"original checkpoint has unexpected tensors: {sorted(unused)[:5]}")
    return {k: v.float().contiguous() for k, v in out.items()}, dropped


def _consumed_keys(config: GeneratorConfig) -> set[str]:
    keys = {"lff.ffm.conv.weight", "lff.ffm.conv.bias", "emb.input", "conv1.activate.bias"}
    keys |= {f"style.{i + 1}.{p}" for i in range(config.n_mlp) for p in ("weight", "bias")}
    mods = ["conv1"] + [f"linears.{i}" for i in range(len(config.synthesis_widths))]
    mods += [f"to_rgbs.{k}" for k in range(config.n_to_rgb)]
    for m in mods:
        keys |= {f"{m}.conv.weight", f"{m}.conv.modulation.weight", f"{m}.conv.modulation.bias"}
    keys |= {f"linears.{i}.activate.bias" for i in range(len(config.synthesis_widths))}
    keys |= {f"to_rgbs.{k}.bias" for k in range(config.n_to_rgb)}
    return keys
