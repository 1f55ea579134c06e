"""ToRGB's product in the compiled training step (Speed.rgb_grad): x @ weight, weight [B, K, C] with few
columns (C = 3), whose gradient into x is written as C multiply-adds over x's width instead of a GEMM
whose inner dimension is C.

Written that way, Inductor computes it inside the pass that adds it to the gradient from the next layer
and applies that layer's activation derivative: the [B, N, K] gradient of a ToRGB is neither written by
its own kernel nor read back by that pass. The products of bf16 values are exact in float32 and the C of
them are summed there, then rounded to x's dtype, as the GEMM does.
"""
from __future__ import annotations

import torch


def input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """grad [B, N, C] @ weight [B, K, C]^T, the product's gradient into x, as C multiply-adds over x's width
    in float32 at least (not rounded: the caller rounds it, or adds it to more first)."""
    compute = torch.promote_types(grad.dtype, torch.float32)
    rows = weight.transpose(-1, -2).unsqueeze(-3).to(compute)  # [B, 1, C, K]
    total = None
    for c in range(weight.shape[-1]):
        term = grad[..., c, None].to(compute) * rows[..., c, :]  # [B, N, 1] * [B, 1, K]
        total = term if total is None else total + term
    return total


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.matmul(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = input_grad(grad, weight).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.matmul(x.transpose(-1, -2), grad)
        return grad_x, grad_weight


def project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [B, N, K] @ weight [B, K, C] in x's dtype (the weight cast to it), with the backward above."""
    return _Project.apply(x, weight.to(x.dtype))
