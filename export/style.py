"""The style half, in torch: z and psi -> the per-latent weights the per-point graphs read (export/pixels.py).

For a fixed latent every modulated layer is a plain dense layer, so everything that depends on the
latent (mapping network, truncation, modulation, demodulation) runs here once per latent, in float32,
and the weights come out arranged for a chain of bare GEMMs. In every layout the sqrt(2) gain of each
layer is folded into the next layer's rows (leaky(a x) = a leaky(x), a > 0). StyleGraph gives the
plain layout (the file's own graph's tensors); FastStyle derives the others from it (the metadata's
style extension). Two layouts:

- plain (the file's graph, the fp32 and int8 fast paths; suits CPUs): the real widths, the biases added per point
  (a Gemm's bias input; ONNX Runtime's CPU provider fuses Gemm + LeakyRelu into one FusedGemm), ToRGB
  as separate 3-column products. (A constant bias column, as below, measured ~10% slower on the CPU:
  odd widths waste part of MLAS's 16-column panels.) The int8 path's weights are the plain ones with
  each layer's input channels equalized (FastStyle.equalized), then quantized.
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

from cips_edge.core.config import GeneratorConfig
from cips_edge.core.format import EMBEDDING
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


def int8_names(config: GeneratorConfig, float_layers: int = 0) -> list[str]:
    """What the int8 pixel graph reads per latent (FastStyle.quantized): the input layer's halves and the
    ToRGB weights in float32, layers 1 .. float_layers in float32 too, the rest as int8 weights with
    per-column scales; a bias per layer."""
    layers = range(1, len(config.layer_shapes))
    return ["q0_fo", "q0_co", *(f"q{i}" for i in layers), *(f"qscale{i}" for i in layers if i > float_layers),
            *(f"qbias{i}" for i in layers), *(f"qt{k}" for k in range(config.n_to_rgb))]


def fp16_name(name: str) -> str:
    return f"{name}_fp16"


CO_TABLE = "co_table_fp16"  # the coordinate table times the input layer's table half, per latent (grid graph)


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


def bias_names(config: GeneratorConfig) -> list[str]:
    """The layer biases the per-point part adds (layers 1 .., not the input layer: its bias is a row of
    p0_fo), then the summed ToRGB biases: initializers of the file's graph."""
    return [f"bias{i}" for i in range(1, len(config.layer_shapes))] + ["rgb_bias"]


def biases(generator: CIPSGenerator) -> dict[str, torch.Tensor]:
    """bias_names -> the generator's values (float32, detached)."""
    out = {f"bias{i}": layer.bias for i, layer in enumerate(generator.layers, start=1)}
    out["rgb_bias"] = sum(t.fc.bias for t in generator.to_rgbs)
    return {name: value.detach().float().cpu().clone() for name, value in out.items()}


class StyleGraph(nn.Module):
    """z [B, S], truncation [B] -> the plain per-latent weights [B, ...] (plain_names): the mapping
    network, truncation, modulation and demodulation, in float32, traced into the file's graph."""

    def __init__(self, generator: CIPSGenerator, w_avg: torch.Tensor):
        super().__init__()
        self.generator = generator
        self.register_buffer("w_avg", w_avg.detach().reshape(1, -1).float().cpu())  # [1, S]

    def output_names(self) -> list[str]:
        return plain_names(self.generator.config)

    def forward(self, z: torch.Tensor, truncation: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g, c = self.generator, self.generator.config
        w = g.truncate(g.mapping(z), truncation[:, None], self.w_avg)  # [B, S]
        mods = g.modulated_weights(w)  # [B, in, out] per modulated layer, then per ToRGB
        n_conv = len(c.layer_shapes)
        convs, rgbs = mods[:n_conv], mods[n_conv:]
        hidden, m0 = c.hidden_size, c.layer_shapes[0][1]
        batch = z.shape[0]
        # the input layer's Fourier half, with its bias in the row that reads the constant column
        bias_row = g.input_layer.bias.reshape(1, 1, m0).expand(batch, 1, m0)
        pad = z.new_zeros(1, fourier_width(c) - hidden - 1, m0).expand(batch, -1, -1)
        p0_fo = torch.cat([convs[0][:, :hidden], bias_row, pad], dim=1)
        return (p0_fo, convs[0][:, hidden:], *(LRELU_GAIN * w for w in convs[1:]), *(LRELU_GAIN * t for t in rgbs))


class FastStyle(nn.Module):
    """The plain weights and the biases -> the weights of cips' fast pixel graphs (metadata: the style
    extension): the folded layout in float16 (fp16), and the plain layout with equalized channels, layers
    1.. in int8 with per-column scales (int8).

    Inputs, in order: plain_names, then bias_names and the coordinate table's texel rows (initializers of
    the file's graph, found by name).
    Each folded weight is the plain one with its extra rows and columns concatenated: the bias row, the
    constant column's 1, the carried RGB's +-1 blocks and the ToRGB columns, then zero padding."""

    def __init__(self, config: GeneratorConfig, precisions: tuple[str, ...], int8_float_layers: int = 0):
        super().__init__()
        self.config = config
        self.precisions = tuple(p for p in precisions if p in ("fp16", "int8"))
        self.int8_float_layers = int8_float_layers  # leading hidden layers the int8 graph runs in float32
        for name, block in self._constants().items():
            self.register_buffer(f"const_{name}", block)

    def input_names(self) -> list[str]:
        return plain_names(self.config) + bias_names(self.config) + [EMBEDDING]

    def output_names(self) -> list[str]:
        names = []
        if "fp16" in self.precisions:
            names += fp16_names(self.config) + [CO_TABLE]
        if "int8" in self.precisions:
            names += int8_names(self.config, self.int8_float_layers)
        return names

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.config
        n_conv, n_plain = len(c.layer_shapes), len(plain_names(c))
        plain, bias, table = list(tensors[:n_plain]), list(tensors[n_plain:-1]), tensors[-1]
        outputs = []
        if "fp16" in self.precisions:
            folded = self.fold(plain[:n_conv + 1], plain[n_conv + 1:], bias)
            half = [t.half() for t in folded[:-1]]
            # the grid graph's table: the input layer is linear in the looked-up texel, so its table half
            # is applied to the table's texels once per latent, and the lookup then interpolates the
            # products ([B, rows * columns, folded width])
            outputs += half + [folded[-1], torch.matmul(table.half(), half[1])]  # the last GEMM stays float32
        if "int8" in self.precisions:
            outputs += self.quantized(plain, bias[:-1])
        return tuple(outputs)

    def _constants(self) -> dict[str, torch.Tensor]:
        """The latent-independent rows and columns of the folded weights: small blocks, no weights."""
        c = self.config
        scales = carry_scales(c)
        hidden, widths = c.hidden_size, [m for _, m in c.layer_shapes]
        out = {}
        e0 = extended_width(widths[0])
        column = torch.zeros(fourier_width(c), e0 - widths[0])
        column[hidden, 0] = 1.0  # the constant column passes on
        out["w0_fo"] = column
        for i in range(1, len(widths)):
            k, m = widths[i - 1], widths[i]
            em = extended_width(m)
            tail = torch.zeros(1, em - m)  # the bias row after the bias: the constant column's 1
            tail[0, 0] = 1.0
            rest = torch.zeros(extended_width(k) - k - 1, em)
            if scales[i - 1]:  # recombine the carried pair: leaky(v) - leaky(-v) = (1 + slope) v
                for sign_in, row in ((1.0, 0), (-1.0, 3)):
                    rest[row:row + 3, m + 1:m + 4] = sign_in * torch.eye(3)
                    rest[row:row + 3, m + 4:m + 7] = -sign_in * torch.eye(3)
            out[f"w{i}_tail"], out[f"w{i}_rest"] = tail, rest
        last = widths[-1]
        rest = torch.zeros(extended_width(last) - last - 1, 3)
        if scales[-1]:
            undo = 1.0 / ((1.0 + LRELU_SLOPE) * scales[-1])
            rest[0:3] = undo * torch.eye(3)
            rest[3:6] = -undo * torch.eye(3)
        out["rgb_rest"] = rest
        return out

    def fold(self, convs: list[torch.Tensor], rgbs: list[torch.Tensor], bias: list[torch.Tensor]) -> list[torch.Tensor]:
        """convs: p0_fo, p0_co, p1 ... (plain, gain folded in); rgbs: t0 ... (plain); bias: bias1 ..., rgb_bias."""
        c = self.config
        sources, scales = rgb_sources(c), carry_scales(c)
        shapes = c.layer_shapes  # static ints: traced tensor shapes would turn this arithmetic into graph ops
        batch = convs[0].shape[0]

        def expand(block: torch.Tensor) -> torch.Tensor:
            return block.unsqueeze(0).expand(batch, -1, -1)

        m0 = shapes[0][1]
        w0_fo = torch.cat([convs[0], expand(self.const_w0_fo)], dim=2)
        w0_co = F.pad(convs[1], (0, extended_width(m0) - m0))
        chain = []
        for i in range(1, len(shapes)):
            k, m = shapes[i]
            em = extended_width(m)
            columns = [convs[i + 1], convs[i + 1].new_zeros(1, 1, 1).expand(batch, k, 1)]
            if i - 1 in sources:  # this layer's input is a ToRGB's input: add it to the carried RGB
                t = scales[i] * rgbs[sources.index(i - 1)]  # [B, k, 3]
                columns += [t, -t]
            top = F.pad(torch.cat(columns, dim=2), (0, em - sum(x.shape[2] for x in columns)))
            bias_row = torch.cat([bias[i - 1], getattr(self, f"const_w{i}_tail")[0]]).reshape(1, em)
            bottom = torch.cat([bias_row, getattr(self, f"const_w{i}_rest")], dim=0)
            chain.append(torch.cat([top, expand(bottom)], dim=1))
        final = torch.cat([rgbs[-1], expand(torch.cat([bias[-1].reshape(1, 3), self.const_rgb_rest], dim=0))], dim=1)
        return [w0_fo, w0_co, *chain, final]

    def equalized(self, plain: list[torch.Tensor], bias: list[torch.Tensor]) -> list[torch.Tensor]:
        """The plain weights (plain_names) and layer biases (bias1 ...) with every int8 layer's input
        channels equalized, in float32, in int8_names' order (layers 1 .. L-1 not yet quantized): the
        same function of the input (exact in float).

        The int8 graph quantizes each layer's input per tensor, so the weight rows and the activation
        channels share the rounding error: a row of large weights feeds its channel's error in large,
        and per-column weight scales are set by their largest rows. Dividing each row of layer i by
        g = sqrt(its largest |weight|) and multiplying the channel it reads by g (the previous layer's
        columns and bias times g, since leaky(g x) = g leaky(x) for g > 0; the ToRGB rows that read
        that channel divided by g) balances the two: on the packaged emoji model the worst of seeds
        0-15 gains ~3 dB PSNR over plain per-tensor activations; sqrt did better than other powers of
        the row maximum."""
        c = self.config
        n_conv = len(c.layer_shapes)
        convs, rgbs = plain[2:n_conv + 1], plain[n_conv + 1:]  # p1 .. p{L-1}, t0 ...
        # gains[i]: the channels that layer i + 1 reads, [B, in]; the last layer's output feeds ToRGB only
        gains = [w.abs().amax(dim=2).clamp_min(1e-12).sqrt() for w in convs] + [None]

        def columns_times(w: torch.Tensor, gain: torch.Tensor | None) -> torch.Tensor:
            return w if gain is None else w * gain.unsqueeze(1)

        weights, shifted = [], []
        for i, weight in enumerate(convs):
            weights.append(columns_times(weight / gains[i].unsqueeze(2), gains[i + 1]))
            b = bias[i].unsqueeze(0).expand(weight.shape[0], -1)  # [B, out]
            shifted.append(b if gains[i + 1] is None else b * gains[i + 1])
        # ToRGB k reads layer `source`'s output, which comes multiplied by the next layer's gains
        to_rgb = [t if gains[source] is None else t / gains[source].unsqueeze(2)
                  for t, source in zip(rgbs, rgb_sources(c))]
        first = [columns_times(plain[0], gains[0]), columns_times(plain[1], gains[0])]
        return [*first, *weights, *shifted, *to_rgb]

    def quantized(self, plain: list[torch.Tensor], bias: list[torch.Tensor]) -> list[torch.Tensor]:
        """int8_names: the equalized weights, layers after the first int8_float_layers as per-column
        symmetric int8 with their per-column scales [B, out] (the float ones stay float32)."""
        n = len(self.config.layer_shapes) - 1
        equal = self.equalized(plain, bias)
        first, weights, rest = equal[:2], equal[2:2 + n], equal[2 + n:]
        qs, scales = list(weights[:self.int8_float_layers]), []
        for weight in weights[self.int8_float_layers:]:
            scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / INT8_MAX  # [B, 1, out]
            qs.append(torch.round(weight / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8))
            scales.append(scale[:, 0])
        return [*first, *qs, *scales, *rest]
