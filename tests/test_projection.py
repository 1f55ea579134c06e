"""cips_edge.train.projection: ToRGB's product with a backward written as multiply-adds (Speed.rgb_grad),
against autograd of torch.matmul: its gradient, the generator's with it, and under Inductor (the trainer's
switch is tests/test_train_parts.py's)."""
from __future__ import annotations

import pytest
import torch

from cips_edge.core.config import PRESETS
from cips_edge.model import CIPSGenerator
from cips_edge.train import projection


def test_the_projections_backward_is_the_gradient_of_its_product():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(projection.project, (x, w))
    assert torch.equal(projection.project(x, w), x @ w)


def test_in_bf16_the_projections_gradient_rounds_as_the_gemm():
    """The C products of bf16 values summed in float32 and rounded once: the matmul's gradient, within
    bf16's rounding of the same sum (its order may differ), and the dtypes autograd expects."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 64, 32, generator=g).to(torch.bfloat16).requires_grad_(True)
    w = torch.randn(2, 32, 3, generator=g, requires_grad=True)
    upstream = torch.randn(2, 64, 3, generator=g).to(torch.bfloat16)
    grads = []
    for fn in (projection.project, lambda x, w: x @ w.to(x.dtype)):
        x.grad = w.grad = None
        out = fn(x, w)
        assert out.dtype == torch.bfloat16
        out.backward(upstream)
        grads.append((x.grad, w.grad))
    (gx, gw), (want_x, want_w) = grads
    assert gx.dtype == torch.bfloat16 and gw.dtype == torch.float32
    assert torch.allclose(gx.float(), want_x.float(), rtol=2 ** -7, atol=0)
    assert torch.equal(gw, want_w)


def test_a_generator_with_the_projection_has_the_same_outputs_and_gradients():
    torch.manual_seed(2)
    g = CIPSGenerator(PRESETS["tiny"]).double()
    z = torch.randn(3, g.config.style_dim, dtype=torch.float64)
    coords = torch.rand(1, 40, 2, dtype=torch.float64) * 2 - 1

    def run(rgb_op):
        g.zero_grad()
        rgb = g.synthesize(g.features(coords).expand(3, -1, -1), g.modulated_weights(g.mapping(z)), rgb_op=rgb_op)
        (rgb * torch.linspace(-1, 1, rgb.numel(), dtype=torch.float64).reshape(rgb.shape)).sum().backward()
        return rgb.detach(), {n: p.grad.clone() for n, p in g.named_parameters() if p.grad is not None}

    (plain, plain_grads), (projected, projected_grads) = run(None), run(projection.project)
    assert torch.equal(projected, plain)
    assert projected_grads.keys() == plain_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        assert torch.allclose(projected_grads[name], grad, rtol=1e-12, atol=1e-14), name


@pytest.mark.slow
def test_the_projection_compiles_and_its_gradient_fuses_into_the_next_pass():
    """Inductor (CPU) compiles a layer with a ToRGB on its output: the same gradients as eager, and no
    product of its own for the ToRGB's gradient into the layer's output (one batched matmul fewer)."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(3)
    inputs = [torch.randn(2, 16, 8), torch.randn(2, 8, 8), torch.randn(2, 8, 3), torch.randn(2, 8, 8)]

    def loss(rgb_op, x0, w1, wr, w2):
        h = torch.nn.functional.leaky_relu(x0 @ w1, 0.2)
        return rgb_op(h, wr).sum() + torch.nn.functional.leaky_relu(h @ w2, 0.2).square().sum()

    def grads(fn):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        fn(*leaves).backward()
        return [t.grad for t in leaves]

    want = grads(lambda *a: loss(torch.matmul, *a))
    products = {}
    for name, rgb_op in (("matmul", torch.matmul), ("projection", projection.project)):
        torch._dynamo.reset()
        compiled = torch.compile(lambda *a, op=rgb_op: loss(op, *a))
        got, code = run_and_get_code(grads, compiled)  # the forward's code and the backward's
        products[name] = sum(c.count("extern_kernels.bmm(") for c in code)
        for a, b in zip(got, want):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    assert products["projection"] == products["matmul"] - 1, products
