"""The style graph: z and psi -> the per-latent weights of the pixel graph (export/pixels.py), in torch.

For a fixed latent every modulated layer is a plain dense layer, so everything that depends on the
latent (mapping network, truncation, modulation, demodulation) runs here once per latent, in float32,
and the weights come out already arranged for a chain of bare GEMMs:

- the bias rides in a constant column: every activation carries a column of ones (leaky(1) = 1), and
  each weight matrix has one more row holding the bias;
- the sqrt(2) gain of each layer is folded into the next layer's rows (leaky(a x) = a leaky(x), a > 0);
- the ToRGB skips ride along as the column pair (+v, -v): leaky(v) - leaky(-v) = (1 + slope) v for every
  v, so the running RGB survives each LeakyRelu and the next GEMM recombines it with weights +-1
  (exact in any precision); its scale grows by (1 + slope) a layer and the last GEMM divides it out.

Widths are padded to multiples of 8 (tensor-core friendly). Per layer the pixel graph then runs one
GEMM and one LeakyRelu; the final GEMM has 3 columns. int8 files also get the plain layout (bias apart,
ToRGB apart) with per-column int8 weights, since a per-tensor quantized activation cannot carry the RGB.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cips_edge.config import GeneratorConfig
from cips_edge.model import LRELU_GAIN, LRELU_SLOPE, CIPSGenerator

EXTRA = 7  # per activation: 1 constant column, 3 + 3 carried RGB columns
INT8_MAX = 127


def pad8(n: int) -> int:
    return -(-n // 8) * 8


def fourier_width(config: GeneratorConfig) -> int:
    """Columns of the Fourier block: hidden_size features, the constant column, padding."""
    return pad8(config.hidden_size + 1)


def extended_width(out: int) -> int:
    return pad8(out + EXTRA)


def rgb_sources(config: GeneratorConfig) -> list[int]:
    """Index (0 = input layer) of the modulated layer whose output each ToRGB reads."""
    return [(k + 1) * config.to_rgb_every for k in range(config.n_to_rgb)]


def weight_names(config: GeneratorConfig) -> list[str]:
    """The folded per-latent weights, in chain order: w0_fo, w0_co, w1 ... w{L-1}, rgb_weight."""
    n_conv = len(config.layer_shapes)
    return ["w0_fo", "w0_co", *(f"w{i}" for i in range(1, n_conv)), "rgb_weight"]


def int8_names(config: GeneratorConfig) -> list[str]:
    n_conv = len(config.layer_shapes)
    return ([f"q{i}" for i in range(1, n_conv)] + [f"qscale{i}" for i in range(1, n_conv)]
            + [f"t{k}" for k in range(config.n_to_rgb)])


def fp16_name(name: str) -> str:
    return f"{name}_fp16"


def carry_scales(config: GeneratorConfig) -> list[float]:
    """Scale of the carried RGB in the output of each modulated layer (0 before the first skip)."""
    sources = rgb_sources(config)
    scales, scale = [], 0.0
    for layer in range(len(config.layer_shapes)):
        if scale:
            scale *= 1.0 + LRELU_SLOPE
        elif layer - 1 in sources:
            scale = 1.0
        scales.append(scale)
    return scales


class StyleGraph(nn.Module):
    """z [B, S], truncation [B] -> embedding table (constant) and the per-latent weights [B, ...].

    precisions: which pixel graphs the file holds ("fp32" always; "fp16" adds float16 copies of the
    GEMM weights, "int8" the plain-layout int8 weights with per-column scales and the ToRGB weights).
    Each folded weight is the modulated weight, zero-padded into place, plus a constant matrix
    (bias row, constant-column 1, RGB carry) made here once."""

    def __init__(self, generator: CIPSGenerator, w_avg: torch.Tensor, precisions: tuple[str, ...]):
        super().__init__()
        self.generator = generator
        self.precisions = precisions
        self.register_buffer("w_avg", w_avg.detach().reshape(1, -1).float().cpu())  # [1, S]
        for name, block in self._constants().items():
            self.register_buffer(f"const_{name}", block)

    def output_names(self) -> list[str]:
        c = self.generator.config
        names = ["embedding", *weight_names(c)]
        if "fp16" in self.precisions:
            names += [fp16_name(n) for n in weight_names(c)[:-1]]  # the last GEMM stays float32
        if "int8" in self.precisions:
            names += int8_names(c)
        return names

    def forward(self, z: torch.Tensor, truncation: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g = self.generator
        w = g.truncate(g.mapping(z), truncation[:, None], self.w_avg)  # [B, S]
        mods = g.modulated_weights(w)  # [B, in, out] per modulated layer, then per ToRGB
        n_conv = len(g.config.layer_shapes)
        convs, rgbs = mods[:n_conv], mods[n_conv:]
        folded = self.fold(convs, rgbs)
        outputs = [g.embedding.table.unsqueeze(0), *folded]  # [1, H, size, size]
        if "fp16" in self.precisions:
            outputs += [t.half() for t in folded[:-1]]
        if "int8" in self.precisions:
            outputs += self.quantized(convs, rgbs)
        return tuple(outputs)

    # -- the folded layout (fp32 and fp16 pixel graphs) --------------------------------------------
    def _constants(self) -> dict[str, torch.Tensor]:
        """The latent-independent part of every folded weight: [rows, columns] each."""
        g, c = self.generator, self.generator.config
        layers = [g.input_layer, *g.layers]
        scales = carry_scales(c)
        hidden, widths = c.hidden_size, [m for _, m in c.layer_shapes]
        out = {}
        with torch.no_grad():
            w0 = torch.zeros(fourier_width(c), extended_width(widths[0]))
            w0[hidden, :widths[0]] = layers[0].bias
            w0[hidden, widths[0]] = 1.0
            out["w0_fo"] = w0
            for i in range(1, len(widths)):
                k, m = widths[i - 1], widths[i]
                block = torch.zeros(extended_width(k), extended_width(m))
                block[k, :m] = layers[i].bias  # the bias row, read through the constant column
                block[k, m] = 1.0  # passes the constant column on
                if scales[i - 1]:  # recombine the carried pair: leaky(v) - leaky(-v) = (1 + slope) v
                    for sign_in, row in ((1.0, k + 1), (-1.0, k + 4)):
                        block[row:row + 3, m + 1:m + 4] = sign_in * torch.eye(3)
                        block[row:row + 3, m + 4:m + 7] = -sign_in * torch.eye(3)
                out[f"w{i}"] = block
            last = widths[-1]
            final = torch.zeros(extended_width(last), 3)
            final[last] = sum(t.fc.bias for t in g.to_rgbs)  # the ToRGB biases, once
            if scales[-1]:
                undo = 1.0 / ((1.0 + LRELU_SLOPE) * scales[-1])
                final[last + 1:last + 4] = undo * torch.eye(3)
                final[last + 4:last + 7] = -undo * torch.eye(3)
            out["rgb_weight"] = final
        return {name: block.detach().clone() for name, block in out.items()}

    def fold(self, convs: list[torch.Tensor], rgbs: list[torch.Tensor]) -> list[torch.Tensor]:
        c = self.generator.config
        sources, scales = rgb_sources(c), carry_scales(c)
        hidden = c.hidden_size
        shapes = c.layer_shapes  # static ints: traced tensor shapes would turn this arithmetic into graph ops
        m0 = shapes[0][1]
        e0 = extended_width(m0)
        w0_fo = F.pad(convs[0][:, :hidden], (0, e0 - m0, 0, fourier_width(c) - hidden)) + self.const_w0_fo
        w0_co = F.pad(convs[0][:, hidden:], (0, e0 - m0))
        chain = []
        for i in range(1, len(convs)):
            k, m = shapes[i]
            ek, em = extended_width(k), extended_width(m)
            weight = F.pad(LRELU_GAIN * convs[i], (0, em - m, 0, ek - k))
            if i - 1 in sources:  # this layer's input is a ToRGB's input: add it to the carried RGB
                t = LRELU_GAIN * scales[i] * rgbs[sources.index(i - 1)]  # [B, k, 3]
                weight = weight + F.pad(t, (m + 1, em - m - 4, 0, ek - k)) - F.pad(t, (m + 4, em - m - 7, 0, ek - k))
            chain.append(weight + getattr(self, f"const_w{i}"))
        last = shapes[-1][1]
        final = F.pad(LRELU_GAIN * rgbs[-1], (0, 0, 0, extended_width(last) - last)) + self.const_rgb_weight
        return [w0_fo, w0_co, *chain, final]

    # -- the plain layout with int8 weights (int8 pixel graph) -------------------------------------
    def quantized(self, convs: list[torch.Tensor], rgbs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-column symmetric int8 weights (sqrt 2 folded in) and their scales for layers 1..L-1,
        then the ToRGB weights (sqrt 2 folded in). Layer 1 reads the folded layer 0's output, whose
        extra columns get zero rows."""
        qs, scales = [], []
        shapes = self.generator.config.layer_shapes
        for i in range(1, len(convs)):
            weight = LRELU_GAIN * convs[i]
            if i == 1:
                weight = F.pad(weight, (0, 0, 0, extended_width(shapes[0][1]) - shapes[1][0]))
            scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / INT8_MAX  # [B, 1, out]
            qs.append(torch.round(weight / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8))
            scales.append(scale[:, 0])
        return [*qs, *scales, *(LRELU_GAIN * t for t in rgbs)]


def gain_check() -> None:
    """The folding relies on the activation's gain being sqrt(2) and its slope positive."""
    assert math.isclose(LRELU_GAIN, math.sqrt(2.0)) and 0 < LRELU_SLOPE < 1
