"""The CIPSskip generator (Anokhin et al., CVPR 2021): G(x, y; z) with no spatial operations.

Activations are laid out channels-last, (batch, points, channels), so that every modulated layer is a
batched matmul with per-sample weights: modulation and demodulation act on the (tiny) weights once per
sample, and the per-point work is plain GEMMs. Training, export and rendering all use this one code.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .core.config import GeneratorConfig

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # StyleGAN2's fused leaky ReLU keeps unit second moment
# (x, weight, bias, gain, slope) -> leaky_relu(x @ weight + bias, slope) * gain, or None where it cannot
LayerOp = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], "torch.Tensor | None"]
# (x, [weight, ...], [bias, ...], gain, slope) -> those layers one after another, or None where it cannot
StackOp = Callable[[torch.Tensor, list, list, float, float], "torch.Tensor | None"]
# (x, [weight, ...], [bias, ...], [ToRGB weight, ...], gain, slope) -> every ToRGB group's layers one after
# another and each group's ToRGB product x @ weight (without its bias), or None where it cannot
GroupsOp = Callable[[torch.Tensor, list, list, list, float, float], "list[torch.Tensor] | None"]
# (x, weight) -> x @ weight
ProductOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DEMOD_EPS = 1e-8


def _leaky_grad(grad: torch.Tensor, out: torch.Tensor, gain_first: bool) -> torch.Tensor:
    """grad times the scaled leaky ReLU's slope, read off the sign of its output (the input's sign); in
    the order autograd multiplies for leaky_relu(x) * gain (gain, then the mask) or for its transpose."""
    if gain_first:
        grad = grad * LRELU_GAIN
    grad = torch.ops.aten.leaky_relu_backward(grad, out, LRELU_SLOPE, True)  # the kernel autograd runs
    return grad if gain_first else grad * LRELU_GAIN


class _ScaledLeakyReLU(torch.autograd.Function):
    """leaky_relu(x) * sqrt(2) keeping its output for the backward instead of its input. The output is
    kept anyway, as the next layer's input, so each activation holds one tensor for the backward, not two
    (as StyleGAN2's FusedLeakyReLU): G's per-pixel layers and, in R1's double backward, D's largest
    tensors once fewer. The same values and gradients as autograd's, of every order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = plain_scaled_leaky_relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        return _LeakyGrad.apply(grad, out, True)


class _LeakyGrad(torch.autograd.Function):
    """grad -> grad * slope(out): linear in grad, so its backward is itself (the mask has no gradient)."""

    @staticmethod
    def forward(ctx, grad: torch.Tensor, out: torch.Tensor, gain_first: bool) -> torch.Tensor:
        ctx.save_for_backward(out)
        ctx.gain_first = gain_first
        return _leaky_grad(grad, out, gain_first)

    @staticmethod
    def backward(ctx, grad_grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        return _LeakyGrad.apply(grad_grad, out, not ctx.gain_first), None, None


def scaled_leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """leaky_relu(x, 0.2) * sqrt(2). Eager with gradients (training): the output-keeping Function above;
    compiled (Inductor fuses it and picks what to keep) or without gradients (rendering, export): the
    plain ops."""
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return plain_scaled_leaky_relu(x)
    return _ScaledLeakyReLU.apply(x)


def plain_scaled_leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """scaled_leaky_relu in plain ops, whatever the mode (torch.func transforms take no Function above)."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def scaled_leaky_relu_grad(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The gradient at scaled_leaky_relu's input from the gradient at its output `out`, as autograd forms
    it, in plain ops (differentiable again: the mask has no gradient)."""
    return _leaky_grad(grad, out, True)


class EqualLinear(nn.Module):
    """Equalized-learning-rate linear layer: weights stored as randn / lr_mul, scaled at run time."""

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 1.0, bias_init: float = 0.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Bias is added before the activation, as in StyleGAN2's fused_leaky_relu.
        out = F.linear(x, self.weight * self.scale) + self.bias * self.lr_mul
        return scaled_leaky_relu(out) if self.activate else out


class MappingNetwork(nn.Module):
    """M: z -> w. PixelNorm, then n_mlp equalized-lr layers with leaky ReLU at lr multiplier lr_mlp."""

    def __init__(self, style_dim: int, n_mlp: int, lr_mlp: float):
        super().__init__()
        self.layers = nn.ModuleList(
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [B, S] -> [B, S]
        x = z * torch.rsqrt(torch.mean(z * z, dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        return x


class FourierFeatures(nn.Module):
    """e_fo = sin(B (x', y') + b), initialised like SIREN's first layer."""

    def __init__(self, hidden_size: int, in_features: int = 2):
        super().__init__()
        self.linear = nn.Linear(in_features, hidden_size)
        bound = math.sqrt(9.0 / 2.0)  # per coordinate, so a cylinder's features have the flat frequencies
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:  # [B, N, 2] -> [B, N, H]
        return torch.sin(self.linear(coords))


class CylinderFourierFeatures(FourierFeatures):
    """Panorama e_fo = sin(B (R cos theta, R sin theta, y') + b), theta = pi x' / frames: periodic in x'
    with period 2 * frames. The radius R = frames / pi makes arc length equal x', so locally the cylinder
    is the flat frame and B has the flat model's scale."""

    def __init__(self, hidden_size: int, frames: int):
        super().__init__(hidden_size, in_features=3)
        self.frames = frames

    def forward(self, coords: torch.Tensor) -> torch.Tensor:  # [B, N, 2] -> [B, N, H]
        theta = coords[..., 0] * (math.pi / self.frames)
        radius = self.frames / math.pi
        cylinder = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta), coords[..., 1]], dim=-1)
        return torch.sin(self.linear(cylinder))


class CoordinateEmbedding(nn.Module):
    """e_co: a learned (hidden, size, size) table, sampled bilinearly with align_corners=True.

    With align_corners=True the points linspace(-1, 1, size) land exactly on texels, so the
    native-grid output equals the training-time output (where the table is read directly).
    """

    def __init__(self, hidden_size: int, size: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(hidden_size, size, size))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:  # [B, N, 2] -> [B, N, H]
        batch, n, _ = coords.shape
        # One table for the whole batch: sample all B*N points at once rather than expanding the
        # table to B copies (which would cost B x its memory, and as much again in its gradient).
        out = F.grid_sample(self.table.unsqueeze(0), coords.reshape(1, 1, batch * n, 2), mode="bilinear",
                            padding_mode="border", align_corners=True)  # [1, H, 1, B*N]
        return out.reshape(-1, batch, n).permute(1, 2, 0)

    def native(self, coords: torch.Tensor) -> torch.Tensor:
        """The table itself, for coords that are the native size x size grid, row-major: [B, S*S, H]."""
        hidden = self.table.shape[0]
        return self.table.reshape(hidden, -1).t().unsqueeze(0).expand(coords.shape[0], -1, -1)


class CylinderEmbedding(nn.Module):
    """Panorama e_co: a learned (hidden, size, frames * size) table around the cylinder. Column c sits at
    x' = -frames + 2c / size; x' wraps every 2 * frames, so the last column blends into the first.
    Vertically as the flat table (rows at linspace(-1, 1, size), border beyond)."""

    def __init__(self, hidden_size: int, size: int, frames: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(hidden_size, size, size * frames))
        self.frames = frames

    def forward(self, coords: torch.Tensor) -> torch.Tensor:  # [B, N, 2] -> [B, N, H]
        batch, n, _ = coords.shape
        turns = (coords[..., 0] + self.frames) / (2 * self.frames)
        turns = turns - torch.floor(turns)  # [0, 1]: 1 only where rounding lands on the wrap
        # The first column again after the last: grid_sample's align_corners maps turns 0..1 onto columns
        # 0..W of this (W + 1)-column table, so a point between the last column and the wrap blends the two.
        table = torch.cat([self.table, self.table[:, :, :1]], dim=2)  # [H, S, W + 1]
        grid = torch.stack([2 * turns - 1, coords[..., 1]], dim=-1)  # [B, N, 2]
        out = F.grid_sample(table.unsqueeze(0), grid.reshape(1, 1, batch * n, 2), mode="bilinear",
                            padding_mode="border", align_corners=True)  # [1, H, 1, B*N]
        return out.reshape(-1, batch, n).permute(1, 2, 0)

    def native(self, coords: torch.Tensor) -> torch.Tensor:
        """The texels under coords that lie on the table's own grid (training's crops), read directly
        rather than sampled: [B, N, 2] -> [B, N, H]."""
        hidden, size, width = self.table.shape
        column = torch.remainder(torch.round((coords[..., 0] + self.frames) * (size / 2)), width)
        row = torch.round((coords[..., 1] + 1) * ((size - 1) / 2)).clamp(0, size - 1)
        index = (row * width + column).long().reshape(-1)  # [B*N]
        return self.table.reshape(hidden, -1)[:, index].reshape(hidden, *coords.shape[:2]).permute(1, 2, 0)


class ModulatedFC(nn.Module):
    """A modulated fully-connected layer (StyleGAN2's modulated 1x1 conv), optionally demodulated."""

    def __init__(self, in_dim: int, out_dim: int, style_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.modulation = EqualLinear(style_dim, in_dim, bias_init=1.0)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)
        self.demodulate = demodulate

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Per-sample weight, [B, S] -> [B, in, out], ready for x @ weight."""
        s = self.modulation(w)  # [B, in]
        weight = self.scale * self.weight.unsqueeze(0) * s.unsqueeze(1)  # [B, out, in]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=2, keepdim=True) + DEMOD_EPS)
        return weight.transpose(1, 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.apply_weight(x, self.modulated_weight(w))

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor, gain: bool = True,
                     layer_op: LayerOp | None = None) -> torch.Tensor:
        # [B, N, in] @ [B, in, out] -> [B, N, out]; bias then leaky ReLU (gain sqrt 2; gain=False leaves
        # it to the consumer's weights). The bias follows the matmul's dtype so that autocast keeps
        # activations in bf16 between layers. layer_op: the whole layer as one fused op, where it takes it.
        if layer_op is not None and gain:
            fused = layer_op(x, weight, self.bias, LRELU_GAIN, LRELU_SLOPE)
            if fused is not None:
                return fused
        out = torch.matmul(x, weight)
        if not gain:
            return F.leaky_relu(out + self.bias.to(out.dtype), LRELU_SLOPE)
        return scaled_leaky_relu(out + self.bias.to(out.dtype))


class ToRGB(nn.Module):
    """Modulated (not demodulated) projection to RGB plus a bias, added to the running image."""

    def __init__(self, in_dim: int, style_dim: int):
        super().__init__()
        self.fc = ModulatedFC(in_dim, 3, style_dim, demodulate=False)

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        return self.fc.modulated_weight(w)

    def apply_weight(self, x: torch.Tensor, weight: torch.Tensor, product: ProductOp | None = None) -> torch.Tensor:
        """product: computes x @ weight in its place (training's cips_edge.train.projection.project)."""
        return self.add_bias(torch.matmul(x, weight) if product is None else product(x, weight))

    def add_bias(self, product: torch.Tensor) -> torch.Tensor:
        """x @ weight (computed elsewhere) -> this ToRGB's output."""
        return product + self.fc.bias.to(product.dtype)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.apply_weight(x, self.modulated_weight(w))


class CIPSGenerator(nn.Module):
    """CIPSskip: e = [FourierFeatures, CoordinateEmbedding] -> input layer -> groups of ModulatedFC,
    a ToRGB skip after each group, summed."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        c = config
        self.mapping = MappingNetwork(c.style_dim, c.n_mlp, c.lr_mlp)
        if c.panorama:
            self.fourier = CylinderFourierFeatures(c.hidden_size, c.panorama)
            self.embedding = CylinderEmbedding(c.hidden_size, c.size, c.panorama)
        else:
            self.fourier = FourierFeatures(c.hidden_size)
            self.embedding = CoordinateEmbedding(c.hidden_size, c.size)
        shapes = c.layer_shapes
        self.input_layer = ModulatedFC(*shapes[0], c.style_dim)
        self.layers = nn.ModuleList(ModulatedFC(i, o, c.style_dim) for i, o in shapes[1:])
        self.to_rgbs = nn.ModuleList(
            ToRGB(c.synthesis_widths[(k + 1) * c.to_rgb_every - 1], c.style_dim) for k in range(c.n_to_rgb)
        )

    # -- the style part: once per latent ---------------------------------------------------------
    def truncate(self, w: torch.Tensor, psi: float | torch.Tensor, w_avg: torch.Tensor | None) -> torch.Tensor:
        """w' = w_avg + psi (w - w_avg), in W space as the paper and StyleGAN define it."""
        if w_avg is None:
            raise ValueError("truncation needs w_avg (the mean mapped latent)")
        return w_avg + psi * (w - w_avg)

    def modulated_weights(self, w: torch.Tensor) -> list[torch.Tensor]:
        """Per-sample weights of every modulated layer then every ToRGB, each [B, in, out]."""
        convs = [self.input_layer, *self.layers]
        return [m.modulated_weight(w) for m in convs] + [t.modulated_weight(w) for t in self.to_rgbs]

    # -- the per-pixel part ----------------------------------------------------------------------
    def features(self, coords: torch.Tensor, native: bool = False) -> torch.Tensor:
        """e(x, y) = [e_fo, e_co]: [B, N, 2] -> [B, N, 2H]. native: coords lie on the table's texels (the
        size x size grid; for a panorama any points of cips_edge.coords.native_grid), read directly."""
        e_fo = self.fourier(coords)
        e_co = self.embedding.native(coords) if native else self.embedding(coords)
        return torch.cat([e_fo, e_co], dim=2)

    def synthesize(self, e: torch.Tensor, weights: list[torch.Tensor], fold_gain: bool = False,
                   recompute: bool = False, layer_op: LayerOp | None = None,
                   stack_op: StackOp | None = None, rgb_op: ProductOp | None = None,
                   groups_op: GroupsOp | None = None) -> torch.Tensor:
        """[B, N, 2H] features (or [1, N, 2H], one table for every sample) and baked per-sample weights ->
        raw RGB [B, N, 3].

        fold_gain: the same function with the activations' sqrt(2) gain moved into the weights that
        read them (leaky(x) @ (g W) = (g leaky(x)) @ W): one elementwise pass fewer per layer, forward
        and backward, on the [B, N, width] activations; the per-sample weights are small.
        recompute: activation checkpointing, one ToRGB group (the layers up to and including a ToRGB) at
        a time: the backward keeps only each group's input and recomputes the rest, the same operations
        again (for training with less memory).
        layer_op: computes a modulated layer (matmul, bias, leaky ReLU, gain) in one op where it returns a
        tensor (training's fused kernel, cips_edge.train.fused_fc.layer); None: the layer computes itself.
        stack_op: computes a ToRGB group's modulated layers together where it returns a tensor
        (cips_edge.train.fused_fc.stack); None, or where it returns None: layer by layer.
        rgb_op: computes each ToRGB's product x @ weight (cips_edge.train.projection.project, whose
        backward the compiled step fuses); None: torch.matmul.
        groups_op: computes all ToRGB groups' layers and ToRGB products together where it returns them
        (cips_edge.train.fused_fc.groups); None, or where it returns None: group by group."""
        n_conv = 1 + len(self.layers)
        if fold_gain:
            weights = [weights[0], *(wt * LRELU_GAIN for wt in weights[1:])]
        gain = not fold_gain
        every = self.config.to_rgb_every

        def group(x: torch.Tensor, k: int, *group_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Layers k*every .. (k+1)*every - 1 and ToRGB k: -> (x, this group's RGB)."""
            layers = self.layers[k * every:(k + 1) * every]
            together = None
            if stack_op is not None and gain:
                together = stack_op(x, list(group_weights[:-1]), [layer.bias for layer in layers], LRELU_GAIN,
                                    LRELU_SLOPE)
            if together is not None:
                x = together
            else:
                for j, layer in enumerate(layers):
                    x = layer.apply_weight(x, group_weights[j], gain, layer_op)
            return x, self.to_rgbs[k].apply_weight(x, group_weights[-1], rgb_op)

        if recompute:
            x = checkpoint(self.input_layer.apply_weight, e, weights[0], gain, layer_op, use_reentrant=False)
        else:
            x = self.input_layer.apply_weight(e, weights[0], gain, layer_op)
        products = None  # every group's ToRGB product, where groups_op computes them all
        if groups_op is not None and gain and not recompute and len(self.layers) == every * len(self.to_rgbs):
            products = groups_op(x, list(weights[1:n_conv]), [layer.bias for layer in self.layers],
                                 list(weights[n_conv:]), LRELU_GAIN, LRELU_SLOPE)
        rgb = None
        for k in range(len(self.to_rgbs)):
            if products is not None:
                out = self.to_rgbs[k].add_bias(products[k])
            else:
                group_weights = (*weights[1 + k * every:1 + (k + 1) * every], weights[n_conv + k])
                if recompute:
                    x, out = checkpoint(group, x, k, *group_weights, use_reentrant=False)
                else:
                    x, out = group(x, k, *group_weights)
            rgb = out if rgb is None else rgb + out
        return rgb

    def forward(self, coords: torch.Tensor, z: torch.Tensor | None = None, *, w: torch.Tensor | None = None,
                truncation: float = 1.0, w_avg: torch.Tensor | None = None, native: bool = False) -> torch.Tensor:
        """coords [B, N, 2] (x' first, [-1, 1] frame) and z or w [B, S] -> raw RGB [B, N, 3]."""
        if (z is None) == (w is None):
            raise ValueError("pass exactly one of z and w")
        if w is None:
            w = self.mapping(z)
        if truncation != 1.0:
            w = self.truncate(w, truncation, w_avg)
        return self.synthesize(self.features(coords, native), self.modulated_weights(w))

    @torch.no_grad()
    def mean_w(self, n: int = 4096, seed: int = 0, batch: int = 1024) -> torch.Tensor:
        """Mean of w over n random z, for truncation: [1, S]."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        device = self.embedding.table.device
        total = torch.zeros(1, self.config.style_dim, dtype=torch.float64, device=device)
        for start in range(0, n, batch):
            z = torch.randn(min(batch, n - start), self.config.style_dim, generator=gen).to(device)
            total += self.mapping(z).double().sum(dim=0, keepdim=True)
        return (total / n).float()
