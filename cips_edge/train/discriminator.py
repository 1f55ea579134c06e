"""StyleGAN2's residual discriminator (Karras et al. 2020), which CIPS trains against: equalized-lr
convolutions, [1, 3, 3, 1] blur before every downsampling, residual blocks halving the resolution down
to 4x4, minibatch standard deviation, and two linear layers to one logit."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cips_edge.model import (
    plain_scaled_leaky_relu,
    scaled_leaky_relu,
    scaled_leaky_relu_grad,
)
from cips_edge.train.act_blur import TAPS, act_blur, shifted_taps

BLUR_TAPS = TAPS  # per axis, / 8 ([1, 1] / 2 three times); Blur is their outer product
# An output and the map from the gradient at it to the gradient at the input (with_input_grad)
WithInputGrad = tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def _vjp(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> WithInputGrad:
    """fn(x) and the map from its output's gradient to x's, through torch.func.vjp (fn in plain ops)."""
    out, grad_fn = torch.func.vjp(fn, x)
    return out, lambda grad: grad_fn(grad)[0]


@dataclass(frozen=True)
class DiscriminatorConfig:
    size: int  # input resolution, a power of two >= 8
    channel_multiplier: int = 2
    channel_max: int = 512
    mbstd_group: int = 4  # minibatch-stddev group size (fewer if the batch is not a multiple)

    def channels(self, res: int) -> int:
        """StyleGAN2's table: 512 up to 32x32, then 16384 * multiplier / res (256x256, m=2: 128)."""
        return max(1, min(16384 * self.channel_multiplier // res, self.channel_max))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _ConstDepthwiseConv(torch.autograd.Function):
    """conv2d(x, kernel, stride, groups=C) for a constant kernel, with gradients of any order.

    Autograd's own double backward of a convolution (aten::_convolution_double_backward) always computes
    the kernel's gradient, even for a kernel that needs none, and for groups > 1 it does so one group at a
    time: a depthwise blur over C channels becomes C tiny convolutions plus copies in every R1 step. Here
    the backward is the input gradient alone, a transposed convolution with the same kernel (cuDNN's
    backward-data call, as autograd makes it), and its backward is this convolution again (the op is
    linear in x), so no kernel gradient is ever formed. The backward needs only x's shape, so x itself
    (the padded activation, the largest tensor of each blur) is not kept for it. Same math, same kernels."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, stride: int) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        ctx.stride, ctx.in_size, ctx.dtype = stride, x.shape[2:], x.dtype
        with torch.autocast(x.device.type, enabled=False):  # run in x's dtype (what autocast would pick)
            return F.conv2d(x, kernel.to(x.dtype), stride=stride, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (kernel,) = ctx.saved_tensors
        return _ConstDepthwiseConvInputGrad.apply(grad_out, kernel, ctx.stride, ctx.in_size, ctx.dtype), None, None


class _ConstDepthwiseConvInputGrad(torch.autograd.Function):
    """grad_x of _ConstDepthwiseConv: the transposed convolution back to x's size (in_size) and dtype."""

    @staticmethod
    def forward(ctx, grad_out: torch.Tensor, kernel: torch.Tensor, stride: int, in_size: torch.Size,
                dtype: torch.dtype) -> torch.Tensor:
        ctx.save_for_backward(kernel)
        ctx.stride = stride
        k = kernel.shape[-1]
        # conv2d's output drops up to stride - 1 trailing rows/columns; the transposed output gets them back
        extra = [n - ((o - 1) * stride + k) for n, o in zip(in_size, grad_out.shape[2:])]
        with torch.autocast(grad_out.device.type, enabled=False):
            return F.conv_transpose2d(grad_out.to(dtype), kernel.to(dtype), stride=stride, output_padding=extra,
                                      groups=grad_out.shape[1])

    @staticmethod
    def backward(ctx, grad_grad_x: torch.Tensor):
        (kernel,) = ctx.saved_tensors
        return _ConstDepthwiseConv.apply(grad_grad_x, kernel, ctx.stride), None, None, None, None


def _taps(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The [1, 3, 3, 1] / 8 filter along one dimension, valid part only (4 shifted slices)."""
    n = x.shape[dim] - 3
    return (x.narrow(dim, 0, n) + x.narrow(dim, 3, n) + 3.0 * (x.narrow(dim, 1, n) + x.narrow(dim, 2, n))) * 0.125


class Blur(nn.Module):
    """Depthwise [1, 3, 3, 1] x [1, 3, 3, 1] / 64 filter with zero padding (upfirdn2d with up = down = 1).
    stride 2 computes only the samples a following stride-2 1x1 convolution would keep.

    Two implementations of the same function, picked by what runs fastest (H200 profiles in
    benchmarks/results/train-profile-paper-256-h200*.json):
    - eager (the plain and fast paths, and R1's double backward, which is never compiled): a depthwise
      convolution through _ConstDepthwiseConv.
    - under torch.compile: sums of shifted slices in plain ops (taps), which Inductor compiles into its
      pointwise kernels. The convolution there cost ~45% of a paper-256 D step (cuDNN's NHWC layout
      transforms and its depthwise data-gradient kernel). Eager, the same filter as three 2x2 average
      pools was slower than the convolution (39 vs 50 img/s)."""

    def __init__(self, channels: int, pad: tuple[int, int], stride: int = 1):
        super().__init__()
        taps = torch.tensor(BLUR_TAPS)
        kernel = torch.outer(taps, taps) / taps.sum() ** 2
        self.register_buffer("kernel", kernel.expand(channels, 1, 4, 4).contiguous(), persistent=False)
        self.pad, self.stride = pad, stride
        self.shifts = False  # taps() as sixteen shifted terms (Speed.blur_shifts; set before compiling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self.taps(x)
        p0, p1 = self.pad
        return _ConstDepthwiseConv.apply(F.pad(x, (p0, p1, p0, p1)), self.kernel, self.stride)

    def taps(self, x: torch.Tensor) -> torch.Tensor:
        """The filter as shifted sums in plain ops: what runs under torch.compile. Separable (the 1-D taps
        along columns, then rows), or with self.shifts the sixteen 2-D taps, each a shift of x itself: a pad
        that may crop (F.pad's negative widths), so that every term's gradient is a shift of the output's
        gradient back to x's size, and the terms' sum has the iteration space of the passes around it
        (Inductor stores each 1-D pass of the separable form, and of its gradient, at the padded size)."""
        p0, p1 = self.pad
        s = self.stride
        if not self.shifts:
            x = _taps(_taps(F.pad(x, (p0, p1, p0, p1)), 3), 2)
            return x[:, :, ::s, ::s] if s > 1 else x
        return shifted_taps(x, self.pad, s)


class _MultiplyAdds(torch.autograd.Function):
    """rows @ weight.T + bias for rows [N, in] with a small in: the products summed by multiply-adds in
    float32 (or rows' wider dtype), rounded to rows' dtype. The gradients are rounded as a GEMM's are,
    operands in their dtype with float32 sums: the rows' as sums over the output channels (plain ops, which
    Inductor fuses into the pass that forms the output's gradient), the weight's and the bias's as one GEMM
    of that gradient with [rows, 1]. As plain ops, Inductor fuses the latter into the same pass as a
    reduction over every row of the batch: for D's from_rgb at 64x64 with 256 images, a 5.6 ms kernel of a
    59.5 ms D step on an H100 (benchmarks/results/train-profile-authors-64-fused-h100.json)."""

    @staticmethod
    def forward(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        acc = torch.promote_types(rows.dtype, torch.float32)
        out = None if bias is None else bias.to(acc)
        for c in range(weight.shape[1]):
            term = rows[:, c, None].to(acc) * weight[:, c].to(acc)
            out = term if out is None else out + term
        return out.to(rows.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        rows, weight, bias = inputs
        ctx.save_for_backward(rows, weight)
        ctx.with_bias = bias is not None

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rows, weight = ctx.saved_tensors
        grad_rows = grad_weight = grad_bias = None
        inner = weight.shape[1]
        if ctx.needs_input_grad[0]:
            acc = torch.promote_types(rows.dtype, torch.float32)
            g = grad.to(acc)
            grad_rows = torch.stack([(g * weight[:, c].to(acc)).sum(-1) for c in range(inner)], -1).to(rows.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            columns = [rows, rows.new_ones(len(rows), 1)] if ctx.with_bias else [rows]
            pad = -(inner + ctx.with_bias) % 8  # [rows, 1] padded to 16-byte rows (bf16) for the GEMM
            if pad:
                columns.append(rows.new_zeros(len(rows), pad))
            sums = grad.t() @ torch.cat(columns, dim=1)  # [out, 8k]
            grad_weight = sums[:, :inner]
            grad_bias = sums[:, inner] if ctx.with_bias else None
        return grad_rows, grad_weight, grad_bias


class EqualConv2d(nn.Module):
    """Equalized-lr convolution (weights randn, scaled by 1/sqrt(fan_in) at run time); optional bias and
    fused leaky ReLU (bias added before it, output times sqrt 2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.stride, self.padding, self.activate = stride, padding, activate
        self.fma = False  # a 1x1 layer under torch.compile as in_ch multiply-adds (Speed.from_rgb_fma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._pre_activation(x, self.weight * self.scale)
        return scaled_leaky_relu(out) if self.activate else out

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution alone, without the bias and activation (for an op that applies them itself)."""
        return F.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)

    def _as_gemm(self, x: torch.Tensor) -> bool:
        # A 1x1 convolution of channels-last activations is a GEMM over the channels. As GEMMs, from_rgb and
        # the skips took R1's float32 double backward from 244 to 205 ms on an H200; as convolutions cuDNN
        # ran part of their work in a slow "analytic" tf32 kernel
        # (benchmarks/results/train-profile-paper-256-h200*.json).
        return self.weight.shape[2] == 1 and self.stride == 1 and self.padding == 0 and not x.is_contiguous()

    def _pre_activation(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self._as_gemm(x):
            if self.fma and torch.compiler.is_compiling():
                return self._multiply_adds(x, weight)
            return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), self.bias).permute(0, 3, 1, 2)
        return F.conv2d(x, weight, self.bias, stride=self.stride, padding=self.padding)

    def _multiply_adds(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The 1x1 layer of channels-last x as one multiply-add per input channel (_MultiplyAdds): compiled,
        the pass that applies the activation computes it, where a GEMM with an inner dimension of in_ch (3
        for from_rgb) writes the [B, H, W, out] result for that pass to read back. Rounded as the GEMM is:
        the operands (and the bias, as autocast casts it) in the compute dtype, the products summed in
        float32, the sum rounded to the compute dtype."""
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        bias = None if self.bias is None else self.bias.to(dtype)
        # the rows as one [B*H*W, in] matrix: compiling a graph with convolutions, Inductor lays out the 4-D
        # tensors it stores channels-last, which for [B, H, W, in] rows would put H fastest
        batch, channels, height, width = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, channels).to(dtype)
        out = _MultiplyAdds.apply(rows, weight.flatten(1).to(dtype), bias)
        return out.reshape(batch, height, width, -1).permute(0, 3, 1, 2)

    def with_input_grad(self, x: torch.Tensor) -> WithInputGrad:
        """forward(x) in plain ops, and the map from its output's gradient to x's: the convolution's
        transpose, a transposed convolution (or the GEMM's transpose). Differentiated again (R1), that
        op's weight gradient is cuDNN's weight-gradient kernel; autograd's double backward of a
        convolution forms the same products as a forward convolution of batch-transposed tensors, whose
        kernel is a whole activation (R1's slowest kernel on GPUs, docs/speed.md)."""
        weight = self.weight * self.scale
        out = self._pre_activation(x, weight)
        if self.activate:
            out = plain_scaled_leaky_relu(out)
        gemm, size = self._as_gemm(x), x.shape[2:]

        def input_grad(grad: torch.Tensor) -> torch.Tensor:
            if self.activate:
                grad = scaled_leaky_relu_grad(grad, out)
            if gemm:
                return (grad.permute(0, 2, 3, 1) @ weight.flatten(1)).permute(0, 3, 1, 2)
            # conv2d's output drops up to stride - 1 trailing rows/columns; the transpose gets them back
            extra = [n - ((o - 1) * self.stride - 2 * self.padding + k)
                     for n, o, k in zip(size, grad.shape[2:], weight.shape[2:])]
            return F.conv_transpose2d(grad, weight, stride=self.stride, padding=self.padding, output_padding=extra)
        return out, input_grad


class EqualLinear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, activate: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias)
        return scaled_leaky_relu(out) if self.activate else out

    def with_input_grad(self, x: torch.Tensor) -> WithInputGrad:
        """forward(x) in plain ops, and the map from its output's gradient to x's."""
        weight = self.weight * self.scale
        out = F.linear(x, weight, self.bias)
        if self.activate:
            out = plain_scaled_leaky_relu(out)

        def input_grad(grad: torch.Tensor) -> torch.Tensor:
            return (scaled_leaky_relu_grad(grad, out) if self.activate else grad) @ weight
        return out, input_grad


class ResBlock(nn.Module):
    """conv3x3 -> blur + conv3x3 stride 2, plus a blur + 1x1 stride-2 skip, summed / sqrt 2."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3, padding=1)
        self.blur = Blur(in_ch, pad=(2, 2))  # then 3x3 stride 2, no padding: out = in / 2
        self.conv2 = EqualConv2d(in_ch, out_ch, 3, stride=2)
        self.skip_blur = Blur(in_ch, pad=(1, 1), stride=2)  # blur sampled where the 1x1 stride 2 reads
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, activate=False)
        self.act_blur = False  # compiled: conv1's bias and activation and the blur as one op (Speed.act_blur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, R, R] -> [B, C', R/2, R/2]
        if self.act_blur and torch.compiler.is_compiling():  # conv1's bias and activation go in the op
            out = self.conv2(act_blur(self.conv1.convolve(x), self.conv1.bias, self.blur.pad))
        else:
            out = self.conv2(self.blur(self.conv1(x)))
        return (out + self.skip(self.skip_blur(x))) * (1.0 / math.sqrt(2.0))

    def with_input_grad(self, x: torch.Tensor) -> WithInputGrad:
        """forward(x) in plain ops, and the map from its output's gradient to x's."""
        main, conv1_grad = self.conv1.with_input_grad(x)
        main, blur_grad = _vjp(self.blur.taps, main)
        main, conv2_grad = self.conv2.with_input_grad(main)
        side, skip_blur_grad = _vjp(self.skip_blur.taps, x)
        side, skip_grad = self.skip.with_input_grad(side)

        def input_grad(grad: torch.Tensor) -> torch.Tensor:
            grad = grad * (1.0 / math.sqrt(2.0))
            return conv1_grad(blur_grad(conv2_grad(grad))) + skip_blur_grad(skip_grad(grad))
        return (main + side) * (1.0 / math.sqrt(2.0)), input_grad


class Discriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = c = config
        log_size = int(math.log2(c.size))
        assert 2 ** log_size == c.size and c.size >= 8, c.size
        self.from_rgb = EqualConv2d(3, c.channels(c.size), 1)
        self.blocks = nn.Sequential(*(ResBlock(c.channels(2 ** i), c.channels(2 ** (i - 1)))
                                      for i in range(log_size, 2, -1)))
        top = c.channels(4)
        self.final_conv = EqualConv2d(top + 1, top, 3, padding=1)
        self.final_linear = EqualLinear(top * 4 * 4, top, activate=True)
        self.out = EqualLinear(top, 1, activate=False)

    def mbstd_group(self, batch: int) -> int:
        """The minibatch-stddev group size for a batch: the configured one, or the largest that divides it."""
        return max(g for g in range(1, min(self.config.mbstd_group, batch) + 1) if batch % g == 0)

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Append the mean over features of the stddev across a group (samples i, i + B/G, ...)."""
        batch, ch, h, w = x.shape
        group = self.mbstd_group(batch)
        y = x.float().reshape(group, -1, ch, h, w)
        y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8).mean(dim=(1, 2, 3))  # [B/G]
        y = y.reshape(1, -1, 1, 1, 1).expand(group, -1, 1, h, w).reshape(batch, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def use_forms(self, blur_shifts: bool, from_rgb_fma: bool, act_blur: bool = False) -> None:
        """The forms its layers take under torch.compile: every blur's taps as sixteen shifts (Blur.taps),
        from_rgb as multiply-adds (EqualConv2d._multiply_adds), each block's first bias, activation and
        blur as one op (act_blur.py). Set before compiling."""
        for module in self.modules():
            if isinstance(module, Blur):
                module.shifts = blur_shifts
            if isinstance(module, ResBlock):
                module.act_blur = act_blur
        self.from_rgb.fma = from_rgb_fma

    def forward(self, img: torch.Tensor, input_grad: bool = False):
        """[B, 3, R, R] in [-1, 1] -> logits [B]; with input_grad, (logits, the gradient of their sum
        with respect to img), the latter formed layer by layer in plain ops (with_input_grad): R1's input
        gradient as a function that torch.func and torch.compile differentiate once more, where autograd
        would differentiate its own backward (whose convolutions' weight gradients run slowly on GPUs)."""
        assert img.shape[1:] == (3, self.config.size, self.config.size), img.shape
        if input_grad:
            return self._with_input_grad(img)
        x = self.blocks(self.from_rgb(img))  # [B, C, 4, 4]
        x = self.final_conv(self.minibatch_stddev(x))
        x = self.final_linear(x.flatten(1))
        return self.out(x).squeeze(1).float()

    def _with_input_grad(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = []  # each step's map from its output's gradient to its input's, in forward order

        def step(pair: WithInputGrad) -> torch.Tensor:
            out, grad_fn = pair
            steps.append(grad_fn)
            return out

        x = step(self.from_rgb.with_input_grad(img))
        for block in self.blocks:
            x = step(block.with_input_grad(x))
        x = step(self.final_conv.with_input_grad(step(_vjp(self.minibatch_stddev, x))))
        x = step(_vjp(lambda t: t.flatten(1), x))
        x = step(self.out.with_input_grad(step(self.final_linear.with_input_grad(x))))
        grad = torch.ones_like(x)  # d(sum of logits) / d(logits)
        for grad_fn in reversed(steps):
            grad = grad_fn(grad)
        return x.squeeze(1).float(), grad
