"""cips_edge.train.act_blur: D's first bias, leaky ReLU and blur of a residual block as one op (Speed.act_blur),
against the layers it replaces, to every order R1 needs, compiled into D, and its Triton kernel where triton
is installed (run by Triton's interpreter on the CPU)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from cips_edge.model import plain_scaled_leaky_relu
from cips_edge.train import act_blur as ab
from cips_edge.train.discriminator import (
    Blur,
    Discriminator,
    DiscriminatorConfig,
    ResBlock,
)


def _inputs(dtype=torch.float64, shape=(2, 6, 7, 7), seed=0):
    torch.manual_seed(seed)
    y = torch.randn(shape, dtype=dtype)
    y = (y + 0.1 * y.sign()).contiguous(memory_format=torch.channels_last)  # away from the kink at 0
    return y, torch.randn(shape[1], dtype=dtype) * 0.01


@pytest.mark.parametrize("pad", [(2, 2), (1, 2), (3, 0)])
def test_it_is_the_bias_activation_and_blur_it_replaces(pad):
    y, bias = _inputs()
    blur = Blur(y.shape[1], pad=pad).double()
    want = blur(plain_scaled_leaky_relu(y + bias[:, None, None]))  # eager: the depthwise convolution
    out, positive = ab._act_blur(y, bias, *pad)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.shape[2] == ab.output_size(7, pad)
    assert torch.equal(positive, y + bias[:, None, None] > 0)


def test_its_gradients_hold_to_the_second_order():
    """The backward is plain ops (the blur's transpose times the activation's slope), so that R1 can
    differentiate it again: float64 gradcheck and gradgradcheck for y and the bias."""
    y, bias = _inputs(shape=(2, 3, 5, 5))
    y.requires_grad_(True)
    bias.requires_grad_(True)
    def fn(y, b):
        return ab.act_blur(y, b, (2, 2))
    assert torch.autograd.gradcheck(fn, (y, bias))
    assert torch.autograd.gradgradcheck(fn, (y, bias))


def _d_pair(size=16):
    torch.manual_seed(0)
    plain = Discriminator(DiscriminatorConfig(size, 2, 16)).to(memory_format=torch.channels_last)
    fused = Discriminator(DiscriminatorConfig(size, 2, 16)).to(memory_format=torch.channels_last)
    fused.load_state_dict(plain.state_dict())
    for d, on in ((plain, False), (fused, True)):
        d.use_forms(blur_shifts=True, from_rgb_fma=False, act_blur=on)
    assert all(m.act_blur for m in fused.modules() if isinstance(m, ResBlock))
    return plain, fused


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_d_with_it_matches_the_plain_forms(backend):
    """Compiled (the op's CPU path in the graph), D's logits, its weight gradients and its input gradient
    with the op equal those of the plain forms."""
    plain, fused = _d_pair()
    x = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
    results = []
    for d in (plain, fused):
        torch._dynamo.reset()
        d.zero_grad()
        xx = x.clone().requires_grad_(True)
        logits = torch.compile(d, backend=backend)(xx)
        logits.square().sum().backward()
        results.append((logits.detach(), xx.grad, {n: p.grad for n, p in d.named_parameters()}))
    (want, want_x, want_w), (got, got_x, got_w) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_x, want_x, rtol=1e-4, atol=1e-6)
    for name in want_w:
        torch.testing.assert_close(got_w[name], want_w[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_trainer_refuses_it_where_compiled_r1_differentiates_d_forward():
    """Compiled torch.func transforms do not differentiate the op's backward again: R1 through D's forward
    (r1_compile without r1_explicit) would get wrong gradients, so that combination is refused."""
    from cips_edge.core.config import preset
    from cips_edge.train.trainer import Recipe, Speed, Trainer

    recipe = Recipe(batch=4, lr=0.002, r1_gamma=10.0, r1_every=2, ema_half_life_kimg=10.0, global_batch=4,
                    augment=False, xflip=False, g_lazy_correction=True, seed=0)
    d_config = DiscriminatorConfig(16, channel_max=8)
    with pytest.raises(ValueError, match="act_blur needs r1_explicit where R1 is compiled"):
        Trainer(preset("tiny"), d_config, recipe, torch.device("cpu"),
                speed=Speed(compile=True, r1_compile=True, act_blur=True))
    trainer = Trainer(preset("tiny"), d_config, recipe, torch.device("cpu"),
                      speed=Speed(compile=True, r1_compile=True, r1_explicit=True, act_blur=True))
    assert all(m.act_blur for m in trainer.D.modules() if isinstance(m, ResBlock))


KERNEL_CHECK = """
import sys, torch
from cips_edge.train import act_blur as ab
pad, dtype = (int(sys.argv[1]), int(sys.argv[2])), getattr(torch, sys.argv[3])
torch.manual_seed(1)
y = torch.randn(3, 16, 9, 9)
y = (y + 0.1 * y.sign()).to(dtype).contiguous(memory_format=torch.channels_last)
bias = torch.randn(16) * 0.01
want, want_positive = ab._reference(y, bias, pad)
size = ab.output_size(9, pad)
out, positive = ab._cuda(y, bias, pad, block=64)  # the launcher, on CPU tensors under the interpreter
step = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -20
assert ((out.float() - want.float()).abs() <= want.float().abs() * step + 1e-6).all()
assert torch.equal(positive, want_positive)
# the backward kernel: the blur's transpose of a gradient times the slope, and its sums over the rows
g = torch.randn(3, 16, size, size).to(dtype).contiguous(memory_format=torch.channels_last)
want_grad = ab._reference_grad(g, positive, pad)
grad, sums = ab._cuda_grad(g, positive, pad, block=64)
assert ((grad.float() - want_grad).abs() <= want_grad.abs() * step + 1e-6).all()
torch.testing.assert_close(sums.view(3, 9, 16).sum(dim=(0, 1)), want_grad.sum(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("pad,dtype", [((2, 2), "float32"), ((2, 2), "bfloat16"), ((1, 2), "float32")])
def test_the_triton_kernel_matches_the_plain_ops(pad, dtype):
    """The kernels themselves, run by Triton's interpreter on CPU tensors in a process of its own (the
    interpreter is chosen when a kernel is defined): the forward's output to its dtype's rounding and its
    signs exactly; the backward's gradient to its dtype's rounding and its row sums to float32's."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", KERNEL_CHECK, str(pad[0]), str(pad[1]), dtype], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
