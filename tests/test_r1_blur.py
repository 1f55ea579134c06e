"""The discriminator's blur: eager, a custom autograd Function (so R1's double backward does not form the
blur kernel's gradient one channel group at a time); compiled, shifted sums of the separable taps or of
the sixteen 2-D ones. All must give the same outputs, R1 penalty and gradients as the plain depthwise conv2d of the [1, 3, 3, 1]
taps (the original's upfirdn2d)."""
import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from cips_edge.train import discriminator as dmod
from cips_edge.train.augment import diff_augment
from cips_edge.train.discriminator import Discriminator, DiscriminatorConfig
from cips_edge.train.losses import r1_penalty


def plain_blur_forward(self, x):  # the filter as a depthwise convolution, as the original's upfirdn2d
    taps = torch.tensor(dmod.BLUR_TAPS, dtype=x.dtype)
    kernel = (torch.outer(taps, taps) / taps.sum() ** 2).expand(x.shape[1], 1, 4, 4)
    p0, p1 = self.pad
    x = F.pad(x, (p0, p1, p0, p1))
    return F.conv2d(x, kernel, stride=self.stride, groups=x.shape[1])


def r1_and_grads(D, reals, augment):
    reals = reals.detach().clone().requires_grad_(True)
    x = diff_augment(reals, torch.Generator().manual_seed(3)) if augment else reals
    penalty = r1_penalty(D(x), reals)
    D.zero_grad(set_to_none=True)
    penalty.backward()
    return penalty.detach(), {n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("augment", [False, True])
def test_r1_penalty_and_gradients_match_depthwise_conv(monkeypatch, augment):
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(16, 2, 32))
    with torch.no_grad():  # nonzero biases and a larger output so every path carries signal
        for p in D.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    reals = torch.rand(4, 3, 16, 16) * 2 - 1
    new_penalty, new_grads = r1_and_grads(D, reals, augment)
    D_old = copy.deepcopy(D)
    monkeypatch.setattr(dmod.Blur, "forward", plain_blur_forward)
    old_penalty, old_grads = r1_and_grads(D_old, reals, augment)
    assert old_penalty > 0
    assert new_grads.keys() == old_grads.keys() and len(old_grads) >= len(list(D.parameters())) - 1
    torch.testing.assert_close(new_penalty, old_penalty, rtol=1e-5, atol=0)
    for name, g in old_grads.items():
        assert g.abs().max() > 0 or not name.endswith("weight"), name  # biases: 0 (piecewise-linear D)
        torch.testing.assert_close(new_grads[name], g, rtol=1e-4, atol=1e-6 * max(g.abs().max().item(), 1e-6), msg=name)


@pytest.mark.parametrize("stride,pad", [(1, (2, 2)), (2, (1, 1))])
def test_blur_grads_of_every_order_match_conv2d(stride, pad):
    torch.manual_seed(1)
    blur = dmod.Blur(5, pad=pad, stride=stride).double()
    ref = copy.deepcopy(blur)
    x = torch.randn(2, 5, 8, 8, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(blur(x), plain_blur_forward(ref, x), rtol=0, atol=1e-12)
    torch.autograd.gradcheck(blur, (x,))
    torch.autograd.gradgradcheck(blur, (x,))


@pytest.mark.parametrize("shifts", [False, True], ids=["separable", "sixteen shifts"])
@pytest.mark.parametrize("stride,pad", [(1, (2, 2)), (2, (1, 1))])
def test_blur_taps_in_plain_ops_match_conv2d_to_every_order(stride, pad, shifts):
    """Blur.taps, what runs under torch.compile, in either form: the depthwise convolution's values and
    gradients of the first and second order (float64)."""
    torch.manual_seed(1)
    blur = dmod.Blur(5, pad=pad, stride=stride).double()
    blur.shifts = shifts
    x = torch.randn(2, 5, 9, 9, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(blur.taps(x), plain_blur_forward(blur, x), rtol=0, atol=1e-12)
    torch.autograd.gradcheck(blur.taps, (x,))
    torch.autograd.gradgradcheck(blur.taps, (x,))


@pytest.mark.slow  # Inductor compiles on the CPU
@pytest.mark.parametrize("shifts", [False, True], ids=["separable", "sixteen shifts"])
@pytest.mark.parametrize("stride,pad", [(1, (2, 2)), (2, (1, 1))])
def test_compiled_blur_shifted_sums_match_conv2d(stride, pad, shifts):
    """Under torch.compile the blur is shifted sums (the separable taps, or the sixteen 2-D ones); outputs
    and input gradients must match the depthwise convolution (Inductor on the CPU here; the GPU
    benchmarks run the same code)."""
    torch.manual_seed(2)
    blur = dmod.Blur(6, pad=pad, stride=stride)
    blur.shifts = shifts
    x = torch.randn(2, 6, 12, 12, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(blur, backend="inductor", fullgraph=True, dynamic=False)
    out = compiled(x)
    ref = plain_blur_forward(blur, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(ref)
    (g_new,) = torch.autograd.grad(out, x, grad)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(g_new, g_ref, rtol=1e-5, atol=1e-6)


def test_channels_last_discriminator_matches_nchw_with_r1():
    """Channels-last D runs its 1x1 convolutions as GEMMs over the channels (NCHW D as convolutions);
    logits, the R1 penalty and its gradients must equal the NCHW path's."""
    torch.manual_seed(4)
    D = Discriminator(DiscriminatorConfig(16, 2, 32))
    reals = torch.rand(4, 3, 16, 16) * 2 - 1
    nchw_penalty, nchw_grads = r1_and_grads(D, reals, False)
    D_cl = copy.deepcopy(D).to(memory_format=torch.channels_last)
    cl_penalty, cl_grads = r1_and_grads(D_cl, reals.contiguous(memory_format=torch.channels_last), False)
    assert D_cl.from_rgb.weight.grad is not None and nchw_penalty > 0
    torch.testing.assert_close(D_cl(reals.contiguous(memory_format=torch.channels_last)), D(reals), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cl_penalty, nchw_penalty, rtol=1e-5, atol=0)
    # R1's bias gradients are zero in exact arithmetic (D is piecewise linear): float32 noise of GEMM and
    # convolution kernels summing in different orders, judged against the scale of the whole gradient.
    scale = max(g.abs().max().item() for g in nchw_grads.values())
    for name, g in nchw_grads.items():
        torch.testing.assert_close(cl_grads[name], g, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_output_keeping_leaky_relu_matches_autograds_to_every_order(monkeypatch):
    """D's activation keeps its output for the backward (one tensor per layer fewer in R1): the same
    gradients of every order as leaky_relu(x) * sqrt(2) under autograd, and the same R1 penalty and
    D gradients, bit for bit."""
    from cips_edge import model

    x = torch.randn(3, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(model.scaled_leaky_relu, (x,))
    torch.autograd.gradgradcheck(model.scaled_leaky_relu, (x,))
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(16, 2, 32))
    reals = torch.rand(4, 3, 16, 16) * 2 - 1
    new_penalty, new_grads = r1_and_grads(D, reals, augment=False)
    monkeypatch.setattr(dmod, "scaled_leaky_relu", model.plain_scaled_leaky_relu)
    old_penalty, old_grads = r1_and_grads(D, reals, augment=False)
    assert old_penalty > 0 and torch.equal(new_penalty, old_penalty)
    assert new_grads.keys() == old_grads.keys()
    for name, g in old_grads.items():
        assert torch.equal(new_grads[name], g), name


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW (1x1 convolutions)", "channels-last (GEMMs)"])
def test_explicit_input_gradient_gives_autograds_gradient_and_r1(channels_last):
    """D(img, input_grad=True) forms the gradient of the logits' sum layer by layer, each convolution's as
    a transposed convolution: the same logits, input gradient, R1 penalty and D gradients as autograd's
    backward and double backward (float64), the latter through torch.func as the compiled R1 takes them
    (a parameter R1 does not reach gets zeros there, and none from autograd)."""
    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(16, 2, 32)).double()
    with torch.no_grad():
        for p in D.parameters():
            if p.ndim == 1:
                p.normal_()  # nonzero biases: every activation's mask matters
    img = torch.rand(8, 3, 16, 16, dtype=torch.float64) * 2 - 1
    if channels_last:
        D, img = D.to(memory_format=torch.channels_last), img.contiguous(memory_format=torch.channels_last)
    x = img.clone().requires_grad_(True)
    logits = D(x)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    penalty = grad.square().sum(dim=(1, 2, 3)).mean()
    names = [n for n, _ in D.named_parameters()]
    expected = dict(zip(names, torch.autograd.grad(penalty, list(D.parameters()), allow_unused=True)))

    explicit_logits, explicit_grad = D(img, input_grad=True)
    assert torch.equal(explicit_logits, logits.detach())
    torch.testing.assert_close(explicit_grad, grad.detach(), rtol=1e-12, atol=1e-12 * grad.abs().max().item())

    def explicit_penalty(params):
        _, g = torch.func.functional_call(D, params, (img,), {"input_grad": True})
        return g.square().sum(dim=(1, 2, 3)).mean()

    grads, value = torch.func.grad_and_value(explicit_penalty)({n: p.detach() for n, p in D.named_parameters()})
    torch.testing.assert_close(value, penalty.detach(), rtol=1e-12, atol=0)
    assert 0 < sum(g is None for g in expected.values()) < len(expected)
    for name, want in expected.items():
        if want is None:
            assert not grads[name].any(), name
        else:
            torch.testing.assert_close(grads[name], want, rtol=1e-10, atol=1e-12 * want.abs().max().item(), msg=name)


@functools.cache  # the default forms' code serves both tests below
def _compiled_d_code(shifts: bool = False, fma: bool = False) -> tuple[str, ...]:
    """The code Inductor writes for a compiled 32x32 D's forward and backward, with its GPU limits on what a
    kernel inlines (the CPU's are looser)."""
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    D = Discriminator(DiscriminatorConfig(32, 2, 16)).to(memory_format=torch.channels_last)
    D.use_forms(blur_shifts=shifts, from_rgb_fma=fma)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last).requires_grad_(True)
    torch._dynamo.reset()
    step = torch.compile(lambda x: D(x).square().sum(),
                         options={"realize_opcount_threshold": 30, "realize_acc_reads_threshold": 8})
    _, codes = run_and_get_code(lambda: step(x).backward())
    return tuple(codes)


def _stored_shapes(shifts: bool) -> set[tuple[int, ...]]:
    """The shapes of the buffers that code stores."""
    import re

    return {tuple(int(n) for n in m.split(",") if n.strip())
            for code in _compiled_d_code(shifts) for m in re.findall(r"empty_strided_cpu\(\(([^)]*)\)", code)}


@pytest.mark.slow  # Inductor compiles D's forward and backward on the CPU twice: about 30 s
def test_sixteen_shifts_keep_the_blurs_passes_inside_the_kernels_around_them():
    """Compiled, the separable taps store each 1-D pass of a blur and of its gradient at the padded size
    (the 32x32 level's blur pads to 36: [B, C, 36, 33] and [B, C, 36, 36] tensors); the sixteen shifts
    store none: the forward's sum is the next convolution's input and the gradient's sum lands on the
    32x32 activation's own size."""
    def padded(shapes):
        return {s for s in shapes if len(s) == 4 and {33, 34, 35, 36} & set(s[2:]) and s[2:] != (33, 33)}
    separable, shifted = _stored_shapes(False), _stored_shapes(True)
    assert padded(separable), separable
    assert not padded(shifted), shifted


@pytest.mark.slow  # Inductor compiles D's forward and backward on the CPU: about 15 s
def test_from_rgb_as_multiply_adds_leaves_no_gemm_with_an_inner_dimension_of_3():
    """Speed.from_rgb_fma: compiled, from_rgb is not a GEMM of the [B*H*W, 3] image but multiply-adds
    inside the pass that applies its activation, and the image's gradient a reduction fused into the pass
    around it; its weight and bias gradients are one GEMM with [image, 1] padded to 8 columns."""
    def gemms(codes: tuple[str, ...]) -> list[str]:
        return [line.strip() for code in codes for line in code.splitlines()
                if "extern_kernels.mm(" in line or "extern_kernels.addmm(" in line]

    with_gemm, with_fma = gemms(_compiled_d_code(fma=False)), gemms(_compiled_d_code(fma=True))
    image = "(4096, 3)"  # the [B*H*W, 3] image as a GEMM operand
    assert any(image in line for line in with_gemm) and not any(image in line for line in with_fma), with_fma
    assert len(with_fma) == len(with_gemm) - 2  # its forward and the image's gradient; the weights' stays
