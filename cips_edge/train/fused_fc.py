"""G's modulated layers in training as one kernel each (Speed.fused_fc): leaky_relu(x @ W + b) * sqrt(2)
with the bias, activation and gain in the GEMM's epilogue (cips_edge/train/cuda_ops/modulated_fc.cu, a
CUTLASS kernel for SM90 GPUs), instead of a GEMM followed by a pass that reads and writes the whole
activation again.

The op, torch.ops.cips_edge.modulated_fc, is a torch custom op: torch.compile treats it as one opaque
call and compiles its backward, written here in torch operations. On CUDA it runs the built library
($CIPS_TRAIN_OPS, else cips_edge/train/cuda_ops/build/libcips_train_ops.so: `bash
cips_edge/train/cuda_ops/build.sh`, nvcc and no GPU needed); elsewhere it computes the same function in
torch, which the tests check the backward against.

stack() runs a ToRGB group's layers together (Speed.fused_stack): its backward forms the gradient at each
inner layer's pre-activation in the epilogue of the GEMM that reads the next layer's
(torch.ops.cips_edge.modulated_fc_grad_input), where layer by layer a pass would read that GEMM's result
and the layer's output again.

Rounding: products accumulate in float32 and are rounded once, after the activation (or its
derivative), to bf16; the unfused path rounds the product to bf16 first. The bias gradient sums, in
float32, the bf16 pre-activation gradient the products take.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch
from torch.nn import functional as F

from . import projection

LIBRARY_ENV = "CIPS_TRAIN_OPS"
LIBRARY = Path(__file__).resolve().parent / "cuda_ops" / "build" / "libcips_train_ops.so"
ALIGN = 8  # elements: the kernel's TMA loads and stores want 16-byte rows of bf16
ABI = 2  # the entry points' signatures this module calls (modulated_fc.cu's CipsTrainOpsAbi)


def library_path() -> Path | None:
    """$CIPS_TRAIN_OPS, else build.sh's output; None when neither names a file."""
    path = Path(os.environ.get(LIBRARY_ENV) or LIBRARY)
    return path if path.is_file() else None


def _abi(lib: ctypes.CDLL) -> int:
    """The library's CipsTrainOpsAbi(); 1 (the first signatures) for a library without that entry point."""
    return int(lib.CipsTrainOpsAbi()) if hasattr(lib, "CipsTrainOpsAbi") else 1


def library_abi(path: Path) -> int:
    """The entry points' signatures the library at path was built with."""
    return _abi(ctypes.CDLL(str(path)))


@functools.cache
def _library(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    if _abi(lib) != ABI:
        raise RuntimeError(f"the training ops library {path} was built from other sources: rebuild it with "
                           f"`bash cips_edge/train/cuda_ops/build.sh`")
    fn = lib.CipsTrainModulatedFc
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float, ctypes.c_float,
                   ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    grad = lib.CipsTrainModulatedFcGradInput
    grad.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                     ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                     ctypes.c_float, ctypes.c_float, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    grad.restype = ctypes.c_int
    return lib


def _launch(name: str, device: torch.device, *args) -> None:
    """Runs the library's entry point `name` with args, then the device and stream, on torch's current stream."""
    path = library_path()
    if path is None:
        raise RuntimeError(f"the training ops library is not built: run cips_edge/train/cuda_ops/build.sh "
                           f"or set {LIBRARY_ENV}")
    error = ctypes.create_string_buffer(256)
    index = device.index if device.index is not None else torch.cuda.current_device()
    status = getattr(_library(str(path)), name)(*args, index, torch.cuda.current_stream(device).cuda_stream, error,
                                                len(error))
    if status:
        raise RuntimeError(f"{name}: {error.value.decode(errors='replace')}")


def _bf16(*tensors: torch.Tensor) -> None:
    if any(t.dtype != torch.bfloat16 for t in tensors):
        raise TypeError(f"cips_edge's training ops on CUDA take bf16 tensors, not {[t.dtype for t in tensors]}")


def _shared(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """x is one table for every sample ([1, M, K] against B > 1 weights): the op then runs one GEMM of the
    table against all samples' weights side by side, [M, K] @ [K, B*N], whose result is the batch laid out
    [M, B, N] (the output's strides say so; the next layer reads it in place)."""
    return x.shape[0] == 1 and weight.shape[0] > 1


def _side_by_side(t: torch.Tensor) -> torch.Tensor:
    """[B, M, N] -> the same values laid out [M, B, N] in memory (a view where they already are)."""
    return t.permute(1, 0, 2).contiguous().permute(1, 0, 2)


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gain: float, slope: float) -> torch.Tensor:
    compute = torch.promote_types(x.dtype, torch.float32)
    acc = torch.matmul(x.to(compute), weight.to(compute))
    out = F.leaky_relu(acc * gain + bias.to(compute) * gain, slope).to(x.dtype)
    return _side_by_side(out) if _shared(x, weight) else out


@torch.library.custom_op("cips_edge::modulated_fc", mutates_args=())
def modulated_fc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gain: float,
                 slope: float) -> torch.Tensor:
    """leaky_relu(x @ weight + bias, slope) * gain (gain > 0), rounded once to x's dtype: x [B, M, K] or one
    table for every sample [1, M, K], weight [B, K, N] of x's dtype, bias [N] -> [B, M, N]."""
    return _reference(x, weight, bias, gain, slope)


def _forward_operands(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      gain: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward kernel's operands: x as it reads it (_rows_in_place), W^T [rows, N', K] and the scaled
    bias [N'] contiguous, rows = 1 with N' = B*N for a shared table (one GEMM, [M, K] @ [K, B*N]: the
    samples' W^T stacked), else rows = B with N' = N. Any weight layout; the model's are transposed views
    of [B, out, in] memory, which is W^T itself (no copy)."""
    batch, k, n = weight.shape
    bias_scaled = bias.float() * gain
    weight_t = weight.transpose(1, 2).contiguous()
    if _shared(x, weight):
        weight_t = weight_t.reshape(1, batch * n, k)
        bias_scaled = bias_scaled.repeat(batch)
    return _rows_in_place(x, k, weight_t.shape[0]), weight_t, bias_scaled.contiguous()


@modulated_fc.register_kernel("cuda")
def _cuda(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gain: float, slope: float) -> torch.Tensor:
    _bf16(x, weight)
    batch, k, n = weight.shape
    m = x.shape[1]
    x, weight_t, bias_scaled = _forward_operands(x, weight, bias, gain)
    rows, wide = weight_t.shape[:2]
    y = torch.empty(rows, m, wide, dtype=x.dtype, device=x.device)
    _launch("CipsTrainModulatedFc", x.device, x.data_ptr(), x.stride(1), x.stride(0), weight_t.data_ptr(),
            bias_scaled.data_ptr(), y.data_ptr(), rows, m, wide, k, gain, slope)
    return y[0].view(m, batch, n).permute(1, 0, 2) if rows == 1 and batch > 1 else y


def _rows_in_place(x: torch.Tensor, width: int, batch: int) -> torch.Tensor:
    """x as the kernels read it: elements of a row contiguous, rows and samples 16-byte multiples apart
    (any such strides: the side-by-side layout too); else a contiguous copy."""
    batch_ok = batch == 1 or (x.stride(0) % ALIGN == 0 and x.stride(0) != 0)
    if x.stride(2) != 1 or x.stride(1) % ALIGN or x.stride(1) < width or not batch_ok:
        return x.contiguous()
    return x


@modulated_fc.register_fake
def _fake(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gain: float, slope: float) -> torch.Tensor:
    batch, m, n = weight.shape[0], x.shape[1], weight.shape[-1]
    if _shared(x, weight):
        return x.new_empty((m, batch, n)).permute(1, 0, 2)
    return x.new_empty((batch, m, n))


def _setup_context(ctx, inputs, output) -> None:
    x, weight, _, gain, slope = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.gain, ctx.slope = gain, slope


def _pre_activation_grad(grad: torch.Tensor, out: torch.Tensor, gain: float, slope: float) -> torch.Tensor:
    """The gradient at a layer's pre-activation from the gradient at its output, in float32 at least: the
    activation's slope from the output's sign (gain and slope are positive, so out > 0 exactly where the
    pre-activation is)."""
    pre = grad.to(torch.promote_types(grad.dtype, torch.float32)) * gain
    return torch.where(out > 0, pre, pre * slope)


def _bias_grad(pre: torch.Tensor) -> torch.Tensor:
    """The sum over samples and rows of the pre-activation's gradient as the products take it (x's dtype),
    in float32 at least. Called after the products: Inductor then reads their stored operand in one pass,
    where it would otherwise form the gradient again from the output's gradient(s) and the output."""
    return pre.sum(dim=(0, 1), dtype=torch.promote_types(pre.dtype, torch.float32))


def _backward(ctx, grad: torch.Tensor):
    """The products in x's dtype, the bias gradient from the same values in float32 at least. A shared
    table's gradients come from one GEMM each over all samples side by side (no [B, M, K] gradient is
    formed and summed)."""
    x, weight, out = ctx.saved_tensors
    pre = _pre_activation_grad(grad, out, ctx.gain, ctx.slope).to(x.dtype)
    grad_x = grad_weight = None
    if _shared(x, weight):
        batch, k, n = weight.shape
        wide = pre.permute(1, 0, 2).reshape(x.shape[1], batch * n)  # [M, B*N]
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(wide, weight.transpose(1, 2).reshape(batch * n, k))[None]
        if ctx.needs_input_grad[1]:
            grad_weight = torch.matmul(x[0].transpose(0, 1), wide).view(k, batch, n).permute(1, 0, 2)
    else:
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(pre, weight.transpose(-1, -2))
        if ctx.needs_input_grad[1]:
            grad_weight = torch.matmul(x.transpose(-1, -2), pre)
    return grad_x, grad_weight, _bias_grad(pre), None, None


modulated_fc.register_autograd(_backward, setup_context=_setup_context)


def takes(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the kernel can run this layer: CUDA, x [B, M, K] or one table [1, M, K] for B samples' weights
    [B, K, N], K and N multiples of 8."""
    return (x.is_cuda and x.dim() == 3 and weight.dim() == 3 and x.shape[0] in (1, weight.shape[0])
            and x.shape[-1] % ALIGN == 0 and weight.shape[-1] % ALIGN == 0)


def layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gain: float, slope: float) -> torch.Tensor | None:
    """G's layer through the op in bf16, or None where the kernel cannot take it (the caller computes it
    the usual way). A table shared by every sample is best passed as [1, M, K]: expanded over the batch it
    is left to the caller (its gradient would be formed for every sample and summed)."""
    if not takes(x, weight) or (x.shape[0] > 1 and x.stride(0) == 0):
        return None
    return modulated_fc(x.to(torch.bfloat16), weight.to(torch.bfloat16), bias, gain, slope)


# -- a ToRGB group's layers together: the backward into each inner layer in one kernel ----------------
SIDE = 8  # columns beside a gradient for a ToRGB's (3, padded so that rows stay 16-byte multiples)


def _grad_input_reference(grad: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, gain: float,
                          slope: float) -> torch.Tensor:
    compute = torch.promote_types(grad.dtype, torch.float32)
    product = torch.matmul(grad.to(compute), weight.to(compute).transpose(-1, -2))
    return _pre_activation_grad(product, z, gain, slope).to(grad.dtype)


def _beside(d: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    """[B, M, N] d and [B, M, C] side (C <= SIDE) as rows [d | side | 0] of N + SIDE columns."""
    pad = d.new_zeros(*d.shape[:-1], SIDE - side.shape[-1])
    return torch.cat([d, side.to(d.dtype), pad], dim=-1)


@torch.library.custom_op("cips_edge::modulated_fc_grad_input", mutates_args=())
def modulated_fc_grad_input(grad: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, gain: float,
                            slope: float, side: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient at the previous layer's pre-activation from `grad`, the gradient at this layer's:
    (grad @ weight^T) * gain * (1 where z > 0, else slope), rounded once; grad [B, M, K], weight [B, N, K]
    (this layer's [in, out] weights), z [B, M, N] this layer's input (the previous layer's output).
    side [B, M, C] (C <= SIDE): the result's rows are [result | side | 0], N + SIDE wide, so that a product
    at a ToRGB group's boundary reads the ToRGB's gradient beside it (fused_fc.groups)."""
    d = _grad_input_reference(grad, weight, z, gain, slope)
    return d if side is None else _beside(d, side)


@modulated_fc_grad_input.register_kernel("cuda")
def _grad_input_cuda(grad: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, gain: float,
                     slope: float, side: torch.Tensor | None = None) -> torch.Tensor:
    _bf16(grad, weight, z)
    batch, m, k = grad.shape
    n = weight.shape[1]
    # W^T [B, K, N] contiguous, as the kernel reads it: the model's [out, in] memory (no copy)
    grad, weight_t = grad.contiguous(), weight.transpose(1, 2).contiguous()
    z = _rows_in_place(z, n, batch)
    if side is None:
        d = out = torch.empty(batch, m, n, dtype=grad.dtype, device=grad.device)
    else:  # the kernel writes the first n columns of each row; the side columns are written here
        out = torch.empty(batch, m, n + SIDE, dtype=grad.dtype, device=grad.device)
        out[..., n:n + side.shape[-1]] = side
        out[..., n + side.shape[-1]:] = 0
        d = out[..., :n]
    _launch("CipsTrainModulatedFcGradInput", grad.device, grad.data_ptr(), weight_t.data_ptr(), z.data_ptr(),
            z.stride(1), z.stride(0), d.data_ptr(), d.stride(1), d.stride(0), batch, m, n, k, gain, slope)
    return out


@modulated_fc_grad_input.register_fake
def _grad_input_fake(grad: torch.Tensor, weight: torch.Tensor, z: torch.Tensor, gain: float,
                     slope: float, side: torch.Tensor | None = None) -> torch.Tensor:
    width = weight.shape[1] + (0 if side is None else SIDE)
    return grad.new_empty((*grad.shape[:-1], width))


class _Stack(torch.autograd.Function):
    """Consecutive layers, each through modulated_fc; the backward into each layer but the first from the
    one after it in one kernel (modulated_fc_grad_input), where the layers one by one would form the
    gradient at a layer's output and then read it again, with that output, for its pre-activation."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gain: float, slope: float, *params: torch.Tensor) -> torch.Tensor:
        n = len(params) // 2
        outs, h = [], x
        for weight, bias in zip(params[:n], params[n:]):
            h = torch.ops.cips_edge.modulated_fc(h, weight, bias, gain, slope)
            outs.append(h)
        ctx.save_for_backward(x, *params[:n], *outs)
        ctx.gain, ctx.slope, ctx.n = gain, slope, n
        return h

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        n, gain, slope = ctx.n, ctx.gain, ctx.slope
        saved = ctx.saved_tensors
        x, weights, outs = saved[0], saved[1:1 + n], saved[1 + n:]
        pre = _pre_activation_grad(grad, outs[-1], gain, slope).to(x.dtype)
        grad_weights, grad_biases, grad_x = [None] * n, [None] * n, None
        for i in reversed(range(n)):
            grad_weights[i] = torch.matmul((outs[i - 1] if i else x).transpose(-1, -2), pre)
            grad_biases[i] = _bias_grad(pre)
            if i:
                pre = torch.ops.cips_edge.modulated_fc_grad_input(pre, weights[i], outs[i - 1], gain, slope)
            else:
                grad_x = torch.matmul(pre, weights[0].transpose(-1, -2))
        return grad_x, None, None, *grad_weights, *grad_biases


def stack(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], gain: float,
          slope: float) -> torch.Tensor | None:
    """A ToRGB group's layers (x's rows of its own per sample) through _Stack in bf16, or None where the
    kernels cannot take one of them (the caller computes them the usual way)."""
    if not all(takes(x, w) for w in weights) or x.shape[0] != weights[0].shape[0] or x.stride(0) == 0:
        return None
    return _Stack.apply(x.to(torch.bfloat16), gain, slope, *(w.to(torch.bfloat16) for w in weights), *biases)


# -- every ToRGB group at once: the backward across each group boundary in one kernel too ---------------
def _with_rgb(weight: torch.Tensor, rgb_weight: torch.Tensor) -> torch.Tensor:
    """[B, N, K] layer weights and [B, N, C] ToRGB weights as one [B, N, K + SIDE] table [W | W_rgb | 0],
    laid out as the grad-input kernel reads it ([B, K + SIDE, N] memory)."""
    batch, n, _ = weight.shape
    pad = weight.new_zeros(batch, SIDE - rgb_weight.shape[-1], n)
    return torch.cat([weight.transpose(1, 2), rgb_weight.transpose(1, 2).to(weight.dtype), pad], dim=1).transpose(1, 2)


class _Groups(torch.autograd.Function):
    """G's ToRGB groups one after another (each layer through modulated_fc) and each group's ToRGB product;
    the backward as _Stack's within a group, and across each boundary too: the gradient at a group's last
    pre-activation, from the next group's first layer and from the group's own ToRGB, is one grad-input
    kernel whose product carries the ToRGB's gradient and weights as SIDE more columns of its inner
    dimension, where the groups one by one form the gradient at the group's output with one GEMM, then read
    it again with the output and the ToRGB's gradient in a pass of their own. The next group's first layer
    and the ToRGB read the same input, so one weight-gradient GEMM of those wide rows gives both."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gain: float, slope: float, n_groups: int, *params: torch.Tensor):
        n = (len(params) - n_groups) // 2
        weights, biases, rgb_weights = params[:n], params[n:2 * n], params[2 * n:]
        every = n // n_groups
        outs, products, h = [], [], x
        for i, (weight, bias) in enumerate(zip(weights, biases)):
            h = torch.ops.cips_edge.modulated_fc(h, weight, bias, gain, slope)
            outs.append(h)
            if i % every == every - 1:
                products.append(torch.matmul(h, rgb_weights[i // every]))
        ctx.save_for_backward(x, *weights, *rgb_weights, *outs)
        ctx.gain, ctx.slope, ctx.n, ctx.n_groups = gain, slope, n, n_groups
        return tuple(products)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        n, n_groups, gain, slope = ctx.n, ctx.n_groups, ctx.gain, ctx.slope
        every = n // n_groups
        saved = ctx.saved_tensors
        x, weights = saved[0], saved[1:1 + n]
        rgb_weights, outs = saved[1 + n:1 + n + n_groups], saved[1 + n + n_groups:]
        g = [(outs[0].new_zeros(*outs[0].shape[:-1], w.shape[-1]) if gr is None else gr).to(x.dtype)
             for gr, w in zip(grads, rgb_weights)]  # each ToRGB product's gradient (none: unused)

        def side(i: int) -> torch.Tensor | None:
            """The ToRGB gradient that goes beside layer i's pre-activation gradient: the one of the group
            before, for a group's first layer (the boundary's product reads it)."""
            return g[i // every - 1] if i % every == 0 and i > 0 else None

        last = n - 1
        pre = _pre_activation_grad(projection.input_grad(g[-1], rgb_weights[-1]), outs[last], gain, slope)
        pre = pre.to(x.dtype)
        if side(last) is not None:
            pre = _beside(pre, side(last))
        grad_weights, grad_biases, grad_rgb, grad_x = [None] * n, [None] * n, [None] * n_groups, None
        grad_rgb[-1] = torch.matmul(outs[-1].transpose(-1, -2), g[-1])
        for i in reversed(range(n)):
            width = weights[i].shape[-1]
            core = pre[..., :width]
            # A group's first layer reads the group before's output, as that group's ToRGB does: with the
            # ToRGB's gradient beside, one product gives both weight gradients.
            grad = torch.matmul((outs[i - 1] if i else x).transpose(-1, -2), pre)
            grad_weights[i] = grad[..., :width]
            if side(i) is not None:
                grad_rgb[i // every - 1] = grad[..., width:width + g[i // every - 1].shape[-1]]
            grad_biases[i] = _bias_grad(core)
            if i == 0:
                grad_x = torch.matmul(core, weights[0].transpose(-1, -2))
            elif i % every:  # into the layer before, in the same group
                pre = torch.ops.cips_edge.modulated_fc_grad_input(core, weights[i], outs[i - 1], gain, slope,
                                                                  side(i - 1))
            else:  # into the group before's last layer, with its ToRGB's gradient beside
                weight = _with_rgb(weights[i], rgb_weights[i // every - 1])
                pre = torch.ops.cips_edge.modulated_fc_grad_input(pre, weight, outs[i - 1], gain, slope,
                                                                  side(i - 1))
        return grad_x, None, None, None, *grad_weights, *grad_biases, *grad_rgb


def groups(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], rgb_weights: list[torch.Tensor],
           gain: float, slope: float) -> list[torch.Tensor] | None:
    """G's ToRGB groups (x's rows of its own per sample; len(weights) / len(rgb_weights) layers each) through
    _Groups in bf16: each group's ToRGB product (without its bias), or None where the kernels cannot take
    one of the layers (the caller computes the groups the usual way)."""
    if (not all(takes(x, w) for w in weights) or x.shape[0] != weights[0].shape[0] or x.stride(0) == 0
            or not rgb_weights or len(weights) % len(rgb_weights) or rgb_weights[0].shape[-1] > SIDE):
        return None
    bf16 = torch.bfloat16
    return list(_Groups.apply(x.to(bf16), gain, slope, len(rgb_weights), *(w.to(bf16) for w in weights), *biases,
                              *(w.to(bf16) for w in rgb_weights)))
