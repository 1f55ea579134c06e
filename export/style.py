"""The style graph: z and psi -> the per-latent weights of the pixel graphs (export/pixels.py), in torch.

For a fixed latent every modulated layer is a plain dense layer, so everything that depends on the
latent (mapping network, truncation, modulation, demodulation) runs here once per latent, in float32,
and the weights come out arranged for a chain of bare GEMMs. In every layout the sqrt(2) gain of each
layer is folded into the next layer's rows (leaky(a x) = a leaky(x), a > 0). Two layouts:

- plain (the fp32 and int8 pixel graphs; suits CPUs): the real widths, the biases in the pixel graph
  (a Gemm's bias input; ONNX Runtime's CPU provider fuses Gemm + LeakyRelu into one FusedGemm), ToRGB
  as separate 3-column products. (A constant bias column, as below, measured ~10% slower on the CPU:
  odd widths waste part of MLAS's 16-column panels.)
- folded (the fp16 pixel graph; suits GPUs, where every extra pass over the activations costs as much
  as a GEMM): the bias rides in a constant column (every activation carries a column of ones,
  leaky(1) = 1, and each weight has one more row holding the bias), and the ToRGB skips ride along as
  the column pair (+v, -v): leaky(v) - leaky(-v) = (1 + slope) v for every v, so the running RGB
  survives each LeakyRelu and the next GEMM recombines it with weights +-1 (exact in any precision);
  its scale grows by (1 + slope) a layer and the last GEMM divides it out. Widths are padded to
  multiples of 8 (tensor cores). Per layer: one GEMM, one LeakyRelu; then one 3-column GEMM.
"""
from __future__ import annotations

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


def plain_names(config: GeneratorConfig) -> list[str]:
    """The plain per-latent weights: p0_fo, p0_co (the input layer's halves), p1 ... p{L-1}, t0 ... (ToRGB)."""
    n_conv = len(config.layer_shapes)
    return ["p0_fo", "p0_co", *(f"p{i}" for i in range(1, n_conv)), *(f"t{k}" for k in range(config.n_to_rgb))]


def weight_names(config: GeneratorConfig) -> list[str]:
    """The folded per-latent weights, in chain order: w0_fo, w0_co, w1 ... w{L-1}, rgb_weight."""
    n_conv = len(config.layer_shapes)
    return ["w0_fo", "w0_co", *(f"w{i}" for i in range(1, n_conv)), "rgb_weight"]


def fp16_names(config: GeneratorConfig) -> list[str]:
    """What the fp16 pixel graph reads: the folded weights in float16, the last one in float32."""
    return [fp16_name(n) for n in weight_names(config)[:-1]] + ["rgb_weight"]


def int8_names(config: GeneratorConfig) -> list[str]:
    n_conv = len(config.layer_shapes)
    return [f"q{i}" for i in range(1, n_conv)] + [f"qscale{i}" for i in range(1, n_conv)]


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

    precisions: which pixel graphs the file holds ("fp32" always: the plain weights; "fp16" adds the
    folded weights in float16; "int8" the plain weights in int8 with per-column scales).
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
        names = ["embedding", *plain_names(c)]
        if "fp16" in self.precisions:
            names += fp16_names(c)
        if "int8" in self.precisions:
            names += int8_names(c)
        return names

    def forward(self, z: torch.Tensor, truncation: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g = self.generator
        w = g.truncate(g.mapping(z), truncation[:, None], self.w_avg)  # [B, S]
        mods = g.modulated_weights(w)  # [B, in, out] per modulated layer, then per ToRGB
        n_conv = len(g.config.layer_shapes)
        convs, rgbs = mods[:n_conv], mods[n_conv:]
        plain = self.plain(convs, rgbs)
        table = g.embedding.table  # [H, size, table width]
        if g.config.panorama:  # the first column again after the last, for the wrapped lookup
            table = torch.cat([table, table[:, :, :1]], dim=2)
        outputs = [table.unsqueeze(0), *plain]
        if "fp16" in self.precisions:
            folded = self.fold(convs, rgbs)
            outputs += [t.half() for t in folded[:-1]] + [folded[-1]]  # the last GEMM stays float32
        if "int8" in self.precisions:
            outputs += self.quantized(plain[2:len(convs) + 1])  # layers 1 .. L-1
        return tuple(outputs)

    # -- the plain layout (fp32 and int8 pixel graphs) ----------------------------------------------
    def plain(self, convs: list[torch.Tensor], rgbs: list[torch.Tensor]) -> list[torch.Tensor]:
        """[B, in, out] weights with sqrt 2 folded in; the input layer's Fourier half carries its bias in
        the row that reads the Fourier block's constant column; ToRGB [B, in, 3]."""
        c = self.generator.config
        hidden = c.hidden_size
        p0_fo = F.pad(convs[0][:, :hidden], (0, 0, 0, fourier_width(c) - hidden)) + self.const_p0_fo
        return [p0_fo, convs[0][:, hidden:], *(LRELU_GAIN * w for w in convs[1:]), *(LRELU_GAIN * t for t in rgbs)]

    # -- the folded layout (fp32 and fp16 pixel graphs) --------------------------------------------
    def _constants(self) -> dict[str, torch.Tensor]:
        """The latent-independent part of every folded weight: [rows, columns] each."""
        g, c = self.generator, self.generator.config
        layers = [g.input_layer, *g.layers]
        scales = carry_scales(c)
        hidden, widths = c.hidden_size, [m for _, m in c.layer_shapes]
        out = {}
        with torch.no_grad():
            p0 = torch.zeros(fourier_width(c), widths[0])
            p0[hidden] = layers[0].bias
            out["p0_fo"] = p0
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

    # -- int8 weights (int8 pixel graph) -----------------------------------------------------------
    @staticmethod
    def quantized(weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """Plain weights of layers 1..L-1 as per-column symmetric int8, then their scales [B, out]."""
        qs, scales = [], []
        for weight in weights:
            scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / INT8_MAX  # [B, 1, out]
            qs.append(torch.round(weight / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8))
            scales.append(scale[:, 0])
        return [*qs, *scales]
