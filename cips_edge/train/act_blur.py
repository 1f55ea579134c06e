"""D's residual block between its two convolutions, as one op: the first convolution's bias, scaled leaky ReLU
and the [1, 3, 3, 1] blur with zero padding, act_blur(y, bias) = blur(leaky_relu(y + bias, 0.2) * sqrt 2).

Compiled as plain ops (sixteen shifted terms, Blur.taps), Inductor computes each output from sixteen loads of
the convolution's output and sixteen of a stored sign mask, each a different row or column: at 64x64 with
512 channels and 256 images that pass takes 4.6 ms on an H100 for about 2.2 GB of traffic
(benchmarks/results/train-profile-authors-64-fused-h100.json). On CUDA this op is one Triton kernel that
walks down the rows of a strip of (column, channel) pairs, keeps the last three rows' horizontal sums in
registers, and reads each input once from memory (its column shifts come from the L1 cache); the output and
the sign mask the backward needs are its only writes: 1.37 ms against 4.54 ms for the plain ops compiled
(benchmarks/results/act-blur-check-h100.json). Its backward, the blur's transpose (a blur with the
complementary padding) of the output's gradient times the activation's slope, is a second kernel of the same
shape that also sums each (column, channel) over the rows for the bias gradient. Elsewhere both run in plain
ops, which autograd differentiates again; the kernels' backward is not (ResBlock uses the op only under
compile, and the trainer only where R1 does not differentiate D's forward twice).

Layout: y and the outputs are channels-last [B, C, H, W]; the arithmetic is float32, rounded to y's dtype
once at the end (as Inductor rounds its fused pass); float64 stays float64."""
from __future__ import annotations

import torch

from cips_edge.model import LRELU_GAIN as GAIN
from cips_edge.model import LRELU_SLOPE as SLOPE

TAPS = (1.0, 3.0, 3.0, 1.0)  # per axis; the 2-D filter is their outer product / 64


def output_size(size: int, pad: tuple[int, int]) -> int:
    return size + pad[0] + pad[1] - 3


def shifted_taps(x: torch.Tensor, pad: tuple[int, int], stride: int = 1) -> torch.Tensor:
    """The [1, 3, 3, 1] x [1, 3, 3, 1] / 64 filter of x zero-padded by pad (before, after) on both spatial
    axes, as sixteen shifted terms: each a pad of x itself that may crop (F.pad's negative widths)."""
    p0, p1 = pad
    out = None
    for i, wi in enumerate(TAPS):
        for j, wj in enumerate(TAPS):
            # term[r, c] = padded x[r + i, c + j]: x moved down p0 - i rows and right p0 - j columns
            term = torch.nn.functional.pad(x, (p0 - j, p1 - 3 + j, p0 - i, p1 - 3 + i))
            term = (term[:, :, ::stride, ::stride] if stride > 1 else term) * (wi * wj / 64.0)
            out = term if out is None else out + term
    return out


def _reference(y: torch.Tensor, bias: torch.Tensor, pad: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    acc = torch.promote_types(y.dtype, torch.float32)
    v = y.to(acc) + bias.to(acc)[:, None, None]
    positive = v > 0
    act = torch.where(positive, v, v * SLOPE) * GAIN
    out = shifted_taps(act, pad).to(y.dtype)
    return out.contiguous(memory_format=torch.channels_last), positive.contiguous(memory_format=torch.channels_last)


def _reference_grad(grad_out: torch.Tensor, positive: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """The gradient at y + bias from the output's, in float32 at least: the blur's transpose (a blur with the
    complementary padding) back to y's size, times the activation's slope."""
    grad_act = shifted_taps(grad_out.to(torch.promote_types(grad_out.dtype, torch.float32)), (3 - pad[0], 3 - pad[1]))
    return grad_act * torch.where(positive, GAIN, SLOPE * GAIN)


try:  # triton ships with torch's CUDA builds; elsewhere the op runs in plain ops
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:
    @triton.jit
    def _strip(C: tl.constexpr, BLOCK: tl.constexpr):
        """This program's image and its BLOCK consecutive (column, channel) pairs: (image, pair, column, channel)."""
        e = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        return tl.program_id(0).to(tl.int64), e, e // C, e % C

    @triton.jit
    def _act_at(row_ptr, col, ch, row_ok, width, bias, C: tl.constexpr, SLOPE: tl.constexpr, GAIN: tl.constexpr):
        """The activation at input column col of one row (0 outside the image) and its sign."""
        ok = row_ok & (col >= 0) & (col < width)
        v = tl.load(row_ptr + col * C + ch, mask=ok, other=0.0).to(tl.float32) + bias
        positive = v > 0
        return tl.where(ok, tl.where(positive, v, v * SLOPE) * GAIN, 0.0), positive, ok

    @triton.jit
    def _kernel(y_ptr, bias_ptr, out_ptr, mask_ptr, height, width, out_height, out_width,
                C: tl.constexpr, P0: tl.constexpr, BLOCK: tl.constexpr, SLOPE: tl.constexpr, GAIN: tl.constexpr):
        # one program: one image, BLOCK consecutive (output column, channel) pairs, every output row
        image, e, col, ch = _strip(C, BLOCK)
        in_cols = col < out_width
        bias = tl.load(bias_ptr + ch).to(tl.float32)
        y_image = y_ptr + image * height * width * C
        mask_image = mask_ptr + image * height * width * C
        out_image = out_ptr + image * out_height * out_width * C
        h0 = tl.zeros([BLOCK], tl.float32)
        h1 = tl.zeros([BLOCK], tl.float32)
        h2 = tl.zeros([BLOCK], tl.float32)
        for r in range(out_height + 3):
            row = tl.full([BLOCK], r - P0, tl.int32)  # the input row that output row r - 3 reads last
            row_ok = in_cols & (row >= 0) & (row < height)
            row_ptr = y_image + row * width * C
            a0, s0, ok0 = _act_at(row_ptr, col - P0, ch, row_ok, width, bias, C, SLOPE, GAIN)
            a1, s1, ok1 = _act_at(row_ptr, col - P0 + 1, ch, row_ok, width, bias, C, SLOPE, GAIN)
            a2, s2, ok2 = _act_at(row_ptr, col - P0 + 2, ch, row_ok, width, bias, C, SLOPE, GAIN)
            a3, s3, ok3 = _act_at(row_ptr, col - P0 + 3, ch, row_ok, width, bias, C, SLOPE, GAIN)
            # the sign of input column col (the tap P0 reads it), written by the one program that covers col
            if P0 == 0:
                positive, ok = s0, ok0
            elif P0 == 1:
                positive, ok = s1, ok1
            elif P0 == 2:
                positive, ok = s2, ok2
            else:
                positive, ok = s3, ok3
            tl.store(mask_image + row * width * C + col * C + ch, positive, mask=ok)
            h3 = a0 + a3 + 3.0 * (a1 + a2)
            out = (h0 + h3 + 3.0 * (h1 + h2)) * (1.0 / 64.0)
            tl.store(out_image + (r - 3) * out_width * C + e, out.to(out_ptr.dtype.element_ty),
                     mask=in_cols & (r >= 3))
            h0, h1, h2 = h1, h2, h3


    @triton.jit
    def _grad_kernel(g_ptr, mask_ptr, out_ptr, sums_ptr, height, width, g_height, g_width,
                     C: tl.constexpr, Q0: tl.constexpr, BLOCK: tl.constexpr, SLOPE: tl.constexpr,
                     GAIN: tl.constexpr):
        # the backward: the blur with padding Q0 = 3 - P0 of the output's gradient g, back to y's size, times
        # the activation's slope; one program: one image, BLOCK (column, channel) pairs of y, every row. Each
        # program also writes its pairs' sums over the rows, which the bias gradient adds up.
        image, e, col, ch = _strip(C, BLOCK)
        in_cols = col < width
        g_image = g_ptr + image * g_height * g_width * C
        mask_image = mask_ptr + image * height * width * C
        out_image = out_ptr + image * height * width * C
        h0 = tl.zeros([BLOCK], tl.float32)
        h1 = tl.zeros([BLOCK], tl.float32)
        h2 = tl.zeros([BLOCK], tl.float32)
        total = tl.zeros([BLOCK], tl.float32)
        for r in range(height + 3):
            row = tl.full([BLOCK], r - Q0, tl.int32)  # the gradient's row that y's row r - 3 reads last
            row_ok = in_cols & (row >= 0) & (row < g_height)
            row_ptr = g_image + row * g_width * C
            h3 = tl.zeros([BLOCK], tl.float32)
            for v in tl.static_range(4):
                c = col - Q0 + v
                ok = row_ok & (c >= 0) & (c < g_width)
                tap = tl.load(row_ptr + c * C + ch, mask=ok, other=0.0).to(tl.float32)
                h3 += tap * (3.0 if v == 1 or v == 2 else 1.0)
            out_row = tl.full([BLOCK], r - 3, tl.int32)
            store = in_cols & (out_row >= 0)
            positive = tl.load(mask_image + out_row * width * C + e, mask=store, other=0).to(tl.int1)
            grad = (h0 + h3 + 3.0 * (h1 + h2)) * (1.0 / 64.0) * tl.where(positive, GAIN, SLOPE * GAIN)
            tl.store(out_image + out_row * width * C + e, grad.to(out_ptr.dtype.element_ty), mask=store)
            total += tl.where(store, grad, 0.0)
            h0, h1, h2 = h1, h2, h3
        tl.store(sums_ptr + image * width * C + e, total, mask=in_cols)


BLOCK, WARPS = 1024, 4  # (column, channel) pairs per program, and its warps (act_blur_check.py --configs)


def _cuda(y: torch.Tensor, bias: torch.Tensor, pad: tuple[int, int], block: int = BLOCK,
          warps: int = WARPS) -> tuple[torch.Tensor, torch.Tensor]:
    batch, channels, height, width = y.shape
    out_height, out_width = output_size(height, pad), output_size(width, pad)
    y = y.contiguous(memory_format=torch.channels_last)
    out = torch.empty((batch, channels, out_height, out_width), dtype=y.dtype, device=y.device,
                      memory_format=torch.channels_last)
    positive = torch.empty(y.shape, dtype=torch.bool, device=y.device, memory_format=torch.channels_last)
    grid = (batch, -(-out_width * channels // block))
    _kernel[grid](y, bias.contiguous(), out, positive, height, width, out_height, out_width,
                  C=channels, P0=pad[0], BLOCK=block, SLOPE=SLOPE, GAIN=GAIN, num_warps=warps)
    return out, positive


def _cuda_grad(grad_out: torch.Tensor, positive: torch.Tensor, pad: tuple[int, int], block: int = BLOCK,
               warps: int = WARPS) -> tuple[torch.Tensor, torch.Tensor]:
    batch, channels, height, width = positive.shape
    grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    grad = torch.empty(positive.shape, dtype=grad_out.dtype, device=grad_out.device,
                       memory_format=torch.channels_last)
    sums = torch.empty((batch, width * channels), dtype=torch.float32, device=grad_out.device)
    grid = (batch, -(-width * channels // block))
    _grad_kernel[grid](grad_out, positive, grad, sums, height, width, grad_out.shape[2], grad_out.shape[3],
                       C=channels, Q0=3 - pad[0], BLOCK=block, SLOPE=SLOPE, GAIN=GAIN, num_warps=warps)
    return grad, sums


def supported(y: torch.Tensor, pad: tuple[int, int]) -> bool:
    """Whether the Triton kernel takes y: on CUDA, padding under 4 that keeps every input column inside the
    output's (so that each sign is written, once), an image's offsets within int32."""
    channels, height, width = y.shape[1:]
    return (triton is not None and y.is_cuda and 0 <= pad[0] <= 3 and output_size(width, pad) >= width
            and max(height, output_size(height, pad)) * max(width, output_size(width, pad)) * channels < 2 ** 31)


@torch.library.custom_op("cips_edge::act_blur", mutates_args=())
def _act_blur(y: torch.Tensor, bias: torch.Tensor, pad0: int, pad1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(blur(scaled_leaky_relu(y + bias)), y + bias > 0), both channels-last."""
    if supported(y, (pad0, pad1)):
        return _cuda(y, bias, (pad0, pad1))
    return _reference(y, bias, (pad0, pad1))


@_act_blur.register_fake
def _(y, bias, pad0, pad1):
    batch, channels, height, width = y.shape
    size = (batch, channels, output_size(height, (pad0, pad1)), output_size(width, (pad0, pad1)))
    return (torch.empty(size, dtype=y.dtype, device=y.device, memory_format=torch.channels_last),
            torch.empty(y.shape, dtype=torch.bool, device=y.device, memory_format=torch.channels_last))


@torch.library.custom_op("cips_edge::act_blur_grad", mutates_args=())
def _act_blur_grad(grad_out: torch.Tensor, positive: torch.Tensor, pad0: int,
                   pad1: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton backward (CUDA only): y's gradient in grad_out's dtype, and the float32 sums over the rows
    of each (image, column, channel), [B, W * C], which the bias gradient adds up."""
    return _cuda_grad(grad_out, positive, (pad0, pad1))


@_act_blur_grad.register_fake
def _(grad_out, positive, pad0, pad1):
    batch, channels, _, width = positive.shape
    return (torch.empty(positive.shape, dtype=grad_out.dtype, device=grad_out.device,
                        memory_format=torch.channels_last),
            torch.empty((batch, width * channels), dtype=torch.float32, device=grad_out.device))


class _ActBlur(torch.autograd.Function):
    """_act_blur's output with its gradients (an autograd.Function rather than the op's own autograd
    registration, so that torch.func's transforms, R1's, can take it): on CUDA the backward kernel,
    elsewhere plain ops."""

    @staticmethod
    def forward(y: torch.Tensor, bias: torch.Tensor, pad: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return _act_blur(y, bias, pad[0], pad[1])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        y, bias, pad = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.pad, ctx.y_dtype, ctx.bias_dtype = pad, y.dtype, bias.dtype

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _grad_positive):
        (positive,) = ctx.saved_tensors
        if supported(positive, ctx.pad):  # not differentiable again (see ResBlock's use)
            grad, sums = _act_blur_grad(grad_out, positive, *ctx.pad)
            batch, channels, _, width = positive.shape
            return grad.to(ctx.y_dtype), sums.view(batch, width, channels).sum(dim=(0, 1)).to(ctx.bias_dtype), None
        grad_v = _reference_grad(grad_out, positive, ctx.pad)
        return grad_v.to(ctx.y_dtype), grad_v.sum(dim=(0, 2, 3)).to(ctx.bias_dtype), None


def act_blur(y: torch.Tensor, bias: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """blur(scaled_leaky_relu(y + bias)) for y [B, C, H, W], bias [C], the blur zero-padded by pad."""
    return _ActBlur.apply(y, bias, tuple(pad))[0]
