"""cips_edge::modulated_fc, G's layer as one op for training (cips_edge/train/fused_fc.py): its function and
the backward written for it, checked on the CPU (where the op computes in torch) against autograd of the
model's own layers. The CUDA kernel's host-side checks are tests/test_train_ops_build.py's; its results on
a GPU are benchmarks' to check."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from cips_edge.core.config import PRESETS
from cips_edge.model import LRELU_GAIN, LRELU_SLOPE, CIPSGenerator
from cips_edge.train import fused_fc
from cips_edge.train.loop import speed_for
from cips_edge.train.options import TrainError, TrainOptions
from cips_edge.train.trainer import Speed


def op(x, w, b):
    return torch.ops.cips_edge.modulated_fc(x, w, b, LRELU_GAIN, LRELU_SLOPE)


def cpu_layer_op(x, weight, bias, gain, slope):
    """fused_fc.layer without its CUDA condition."""
    if x.shape[0] > 1 and x.stride(0) == 0:
        return None
    return torch.ops.cips_edge.modulated_fc(x, weight, bias, gain, slope)


def cpu_stack_op(x, weights, biases, gain, slope):
    """fused_fc.stack without its CUDA condition."""
    return None if x.stride(0) == 0 else fused_fc._Stack.apply(x, gain, slope, *weights, *biases)


def tiny_generator_float64() -> tuple[CIPSGenerator, torch.Tensor, torch.Tensor]:
    """The tiny preset's generator in float64, three latents and 40 random points of the frame."""
    torch.manual_seed(0)
    g = CIPSGenerator(PRESETS["tiny"]).double()
    z = torch.randn(3, g.config.style_dim, dtype=torch.float64)
    coords = torch.rand(1, 40, 2, dtype=torch.float64) * 2 - 1
    return g, z, coords


def counting(op, calls: list):
    """op, appending to calls whether it computed (rather than declined) each time it is called."""
    def counted(*args):
        out = op(*args)
        calls.append(out is not None)
        return out
    return counted


@pytest.mark.parametrize("rows", [2, 1], ids=["a batch of rows", "one table for every sample"])
def test_the_ops_backward_is_the_gradient_of_its_function(rows):
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
               for shape in ((rows, 5, 8), (2, 8, 16), (16,)))
    assert torch.autograd.gradcheck(op, (x, w, b))
    expected = torch.nn.functional.leaky_relu(x @ w + b, LRELU_SLOPE) * LRELU_GAIN
    got = op(x, w, b)
    assert got.shape == (2, 5, 16) and torch.allclose(got, expected, rtol=0, atol=1e-12)
    if rows == 1:  # the samples side by side, as one GEMM against [K, B*N] writes them
        assert got.stride() == (16, 32, 1)


def test_a_generator_with_the_fused_layers_computes_and_trains_as_the_plain_one():
    """The same outputs and the same gradient for every parameter (float64, so rounding cannot hide a
    wrong term). With the op the input layer takes the one table of features, as the trainer passes it."""
    g, z, coords = tiny_generator_float64()
    calls = []
    counted = counting(cpu_layer_op, calls)

    def run(layer_op, stack_op=None):
        g.zero_grad()
        e = g.features(coords)
        e = e if layer_op else e.expand(3, -1, -1)
        rgb = g.synthesize(e, g.modulated_weights(g.mapping(z)), layer_op=layer_op, stack_op=stack_op)
        (rgb * torch.linspace(-1, 1, rgb.numel(), dtype=torch.float64).reshape(rgb.shape)).sum().backward()
        return rgb.detach(), {n: p.grad.clone() for n, p in g.named_parameters() if p.grad is not None}

    plain_rgb, plain_grads = run(None)
    fused_rgb, fused_grads = run(counted)
    assert calls == [True] * (1 + len(g.layers))  # the input layer and every hidden layer
    calls.clear()
    g.zero_grad()
    g.synthesize(g.features(coords).expand(3, -1, -1), g.modulated_weights(g.mapping(z)), layer_op=counted)
    assert calls == [False] + [True] * len(g.layers)  # an expanded table is left to the layer itself

    # each ToRGB group's layers together: the backward into the inner layers through modulated_fc_grad_input
    calls.clear()
    stacked_rgb, stacked_grads = run(counted, cpu_stack_op)
    assert calls == [True]  # the input layer alone; the groups went through the stack
    assert torch.allclose(stacked_rgb, plain_rgb, rtol=0, atol=1e-12)
    for name, grad in plain_grads.items():
        assert torch.allclose(stacked_grads[name], grad, rtol=1e-9, atol=1e-12), name
    assert torch.allclose(fused_rgb, plain_rgb, rtol=0, atol=1e-12)
    assert fused_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(fused_grads[name], grad, rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("rows", [2, 1], ids=["a batch of rows", "one table for every sample"])
def test_the_op_traces_under_torch_compile_with_its_backward(rows):
    g = torch.Generator().manual_seed(1)
    x, w, b = (torch.randn(*shape, generator=g, requires_grad=True) for shape in ((rows, 6, 8), (2, 8, 8), (8,)))
    eager = op(x, w, b)
    eager.square().sum().backward()
    want = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    compiled = torch.compile(op, backend="aot_eager", fullgraph=True)(x, w, b)
    compiled.square().sum().backward()
    assert torch.allclose(compiled, eager)
    for t, grad in zip((x, w, b), want):
        assert torch.allclose(t.grad, grad, rtol=1e-5, atol=1e-6)


def test_a_stack_of_layers_backpropagates_as_its_layers_one_by_one():
    """gradcheck of the stack (three layers: two inner backwards through modulated_fc_grad_input), and the
    op alone against autograd's gradient at the previous layer's pre-activation."""
    g = torch.Generator().manual_seed(2)
    shapes = ((2, 5, 8), (2, 8, 16), (2, 16, 8), (2, 8, 8), (16,), (8,), (8,))
    x, *params = (torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True) for shape in shapes)
    assert torch.autograd.gradcheck(lambda x, *p: cpu_stack_op(x, p[:3], p[3:], LRELU_GAIN, LRELU_SLOPE), (x, *params))

    pre = (x @ params[0] + params[3]).detach().requires_grad_(True)  # the first layer's pre-activation
    z = torch.nn.functional.leaky_relu(pre, LRELU_SLOPE) * LRELU_GAIN
    nxt = z @ params[1] + params[4]
    upstream = torch.randn(nxt.shape, generator=g, dtype=torch.float64)
    nxt.backward(upstream)
    got = torch.ops.cips_edge.modulated_fc_grad_input(upstream, params[1].detach(), z.detach(), LRELU_GAIN,
                                                      LRELU_SLOPE)
    assert torch.allclose(got, pre.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [False, True], ids=["stacks", "groups"])
def test_a_generator_with_fused_layers_and_stacks_compiles_to_the_same_gradients(groups):
    """torch.compile traces the stack or the groups (autograd.Functions around the ops) and the ops,
    forward and backward; float32, so within its rounding of the eager plain generator."""
    torch.manual_seed(3)
    g = CIPSGenerator(PRESETS["tiny"])
    z = torch.randn(3, g.config.style_dim)
    coords = torch.rand(1, 40, 2) * 2 - 1

    def loss(layer_op, stack_op, groups_op=None):
        e = g.features(coords)
        e = e if layer_op else e.expand(3, -1, -1)
        rgb = g.synthesize(e, g.modulated_weights(g.mapping(z)), layer_op=layer_op, stack_op=stack_op,
                           groups_op=groups_op)
        return rgb.square().sum()

    fused = torch.compile(lambda: loss(cpu_layer_op, cpu_stack_op, cpu_groups_op if groups else None),
                          backend="aot_eager")
    results = []
    for fn in (lambda: loss(None, None), fused):
        g.zero_grad()
        value = fn()
        value.backward()
        results.append((value.detach(), {n: p.grad.clone() for n, p in g.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (fused, fused_grads) = results
    assert torch.allclose(fused, plain, rtol=1e-5)
    for name, grad in plain_grads.items():
        assert torch.allclose(fused_grads[name], grad, rtol=1e-4, atol=1e-5 * grad.abs().max()), name


@pytest.mark.parametrize("rows", [3, 1], ids=["a batch of rows", "one table for every sample"])
def test_the_kernels_operands_read_as_it_reads_them_give_the_layer(rows):
    """The CUDA kernel reads X with the strides it is given and W^T [N, K] and the bias row-major from their
    first element. The model's weights are transposed views of [out, in] memory (ModulatedFC.modulated_weight),
    which is W^T: the kernel reads that memory itself, without a copy."""
    fc = CIPSGenerator(PRESETS["edge-64"]).layers[0]
    weight = fc.modulated_weight(torch.randn(3, fc.modulation.weight.shape[1])).detach()
    assert not weight.is_contiguous()
    k, n = weight.shape[1:]
    x = fused_fc._side_by_side(torch.randn(rows, 5, k)) if rows > 1 else torch.randn(1, 5, k)
    bias = torch.randn(n)
    x_op, w_op, b_op = fused_fc._forward_operands(x, weight, bias, LRELU_GAIN)
    assert w_op.data_ptr() == weight.data_ptr()
    wide = w_op.shape[1]
    product = (torch.as_strided(x_op, (len(w_op), 5, k), (x_op.stride(0), x_op.stride(1), 1))
               @ torch.as_strided(w_op, (len(w_op), wide, k), (k * wide, k, 1)).transpose(1, 2))
    got = torch.nn.functional.leaky_relu(LRELU_GAIN * product + torch.as_strided(b_op, (wide,), (1,)), LRELU_SLOPE)
    if rows == 1:  # [M, B*N]: the samples side by side
        got = got[0].view(5, 3, n).permute(1, 0, 2)
    expected = fused_fc._reference(x, weight, bias, LRELU_GAIN, LRELU_SLOPE)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_kernel_takes_only_batched_cuda_layers_with_aligned_widths():
    x, w = torch.zeros(2, 4, 16), torch.zeros(2, 16, 8)
    assert not fused_fc.takes(x, w)  # the CPU: the layer computes itself
    assert fused_fc.layer(x, w, torch.zeros(8), LRELU_GAIN, LRELU_SLOPE) is None
    assert fused_fc.stack(x, [w], [torch.zeros(8)], LRELU_GAIN, LRELU_SLOPE) is None


def test_fused_fc_is_a_cuda_bf16_switch():
    cpu = Speed.for_device(torch.device("cpu"), bf16=True, compile=True, fused_fc=True)
    assert cpu.fused_fc is False
    cuda_fp32 = Speed.for_device(torch.device("cuda"), bf16=False, compile=True, fused_fc=True)
    assert cuda_fp32.fused_fc is False
    assert Speed.for_device(torch.device("cuda"), bf16=True, compile=True, fused_fc=True).fused_fc is True
    assert Speed.for_device(torch.device("cuda"), bf16=True, compile=True, fused_stack=True).fused_stack is False
    both = Speed.for_device(torch.device("cuda"), bf16=True, compile=True, fused_fc=True, fused_stack=True)
    assert both.fused_fc and both.fused_stack
    assert dataclasses.replace(Speed(), fused_fc=True).fused_fc


def test_the_cuda_kernel_without_its_library_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv(fused_fc.LIBRARY_ENV, str(tmp_path / "nowhere.so"))
    assert fused_fc.library_path() is None
    x, w = torch.zeros(2, 4, 16, dtype=torch.bfloat16), torch.zeros(2, 16, 8, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="not built: run cips_edge/train/cuda_ops/build.sh or set CIPS_TRAIN_OPS"):
        fused_fc._cuda(x, w, torch.zeros(8), LRELU_GAIN, LRELU_SLOPE)


@pytest.fixture
def hopper(monkeypatch, tmp_path):
    """A CUDA device that says it is an H100, with a library file where $CIPS_TRAIN_OPS points."""
    library = tmp_path / "libcips_train_ops.so"
    library.write_bytes(b"")
    monkeypatch.setenv(fused_fc.LIBRARY_ENV, str(library))
    monkeypatch.setattr(fused_fc, "library_abi", lambda path: fused_fc.ABI)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    return library


def test_fused_layers_turns_on_both_switches_on_a_hopper_gpu_and_nothing_on_the_cpu(hopper):
    on = speed_for(TrainOptions(data="d", fused_layers=True), torch.device("cuda:0"))
    assert on.fused_fc and on.fused_stack
    off = speed_for(TrainOptions(data="d"), torch.device("cuda:0"))
    assert not (off.fused_fc or off.fused_stack)
    cpu = speed_for(TrainOptions(data="d", fused_layers=True), torch.device("cpu"))
    assert not (cpu.fused_fc or cpu.fused_stack)
    assert speed_for(TrainOptions(data="d", fused_layers=True, plain=True), torch.device("cuda:0")) == Speed()


def test_fused_layers_refuses_in_one_line_what_its_kernels_cannot_run(hopper, monkeypatch):
    cuda = torch.device("cuda:0")
    with pytest.raises(TrainError, match=r"^--fused-layers needs --bf16 \(its kernels take bfloat16\): "
                                         r"drop --no-bf16 or give --no-fused-layers$"):
        speed_for(TrainOptions(data="d", fused_layers=True, bf16=False), cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(TrainError, match=r"9\.0\): cuda:0 is NVIDIA A100-SXM4-80GB \(8\.0\); give --no-fused-layers$"):
        speed_for(TrainOptions(data="d", fused_layers=True), cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(fused_fc, "library_abi", lambda path: fused_fc.ABI - 1)
    with pytest.raises(TrainError, match=r"^--fused-layers: the training kernels at .* were built from other "
                                         r"sources; run `bash cips_edge/train/cuda_ops/build.sh` again"):
        speed_for(TrainOptions(data="d", fused_layers=True), cuda)
    monkeypatch.undo()  # the real check: the fixture's empty file is no library
    monkeypatch.setenv(fused_fc.LIBRARY_ENV, str(hopper))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with pytest.raises(TrainError, match=r"^--fused-layers: cannot load the training kernels at .*\(.*\); run "):
        speed_for(TrainOptions(data="d", fused_layers=True), cuda)
    hopper.unlink()
    with pytest.raises(TrainError, match=r"not built; in a source checkout run `bash cips_edge/train/cuda_ops/build.sh`"
                                         r".* or give --no-fused-layers$"):
        speed_for(TrainOptions(data="d", fused_layers=True), cuda)


def cpu_groups_op(x, weights, biases, rgb_weights, gain, slope):
    """fused_fc.groups without its CUDA condition."""
    if x.stride(0) == 0:
        return None
    return list(fused_fc._Groups.apply(x, gain, slope, len(rgb_weights), *weights, *biases, *rgb_weights))


@pytest.mark.parametrize("every", [1, 2, 3])
def test_the_groups_backpropagate_as_their_layers_and_torgbs_one_by_one(every):
    """gradcheck of _Groups (float64, three groups): within a group through modulated_fc_grad_input, across
    each boundary through it too, with the ToRGB's gradient and weights beside the product's inner
    dimension; and its products against the layers and ToRGBs one by one."""
    g = torch.Generator().manual_seed(3)
    n_groups, width, batch, rows = 3, 8, 2, 5
    n = every * n_groups
    x = torch.randn(batch, rows, width, generator=g, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(batch, width, width, generator=g, dtype=torch.float64) / width ** 0.5 for _ in range(n)]
    biases = [torch.randn(width, generator=g, dtype=torch.float64) * 0.1 for _ in range(n)]
    rgbs = [torch.randn(batch, width, 3, generator=g, dtype=torch.float64) for _ in range(n_groups)]
    params = [t.requires_grad_(True) for t in (*weights, *biases, *rgbs)]

    def together(x, *p):
        return tuple(cpu_groups_op(x, list(p[:n]), list(p[n:2 * n]), list(p[2 * n:]), LRELU_GAIN, LRELU_SLOPE))

    assert torch.autograd.gradcheck(together, (x, *params))

    def one_by_one(x, *p):
        h, out = x, []
        for i in range(n):
            h = torch.nn.functional.leaky_relu(h @ p[i] + p[n + i], LRELU_SLOPE) * LRELU_GAIN
            if i % every == every - 1:
                out.append(h @ p[2 * n + i // every])
        return tuple(out)

    upstream = [torch.randn(batch, rows, 3, generator=g, dtype=torch.float64) for _ in range(n_groups)]
    grads = []
    for fn in (together, one_by_one):
        outs = fn(x, *params)
        grads.append(torch.autograd.grad(outs, (x, *params), upstream))
        if fn is together:
            want = outs
        else:
            for got, expected in zip(want, outs):
                assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    for got, expected in zip(*grads):
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_the_grad_input_op_writes_the_torgb_gradient_beside_its_rows():
    g = torch.Generator().manual_seed(4)
    grad, weight, z = (torch.randn(*shape, generator=g) for shape in ((2, 5, 16), (2, 8, 16), (2, 5, 8)))
    side = torch.randn(2, 5, 3, generator=g)
    narrow = torch.ops.cips_edge.modulated_fc_grad_input(grad, weight, z, LRELU_GAIN, LRELU_SLOPE)
    wide = torch.ops.cips_edge.modulated_fc_grad_input(grad, weight, z, LRELU_GAIN, LRELU_SLOPE, side)
    assert wide.shape == (2, 5, 8 + fused_fc.SIDE)
    assert torch.equal(wide[..., :8], narrow) and torch.equal(wide[..., 8:11], side)
    assert not wide[..., 11:].any()


def test_a_generator_with_its_groups_together_computes_and_trains_as_the_plain_one():
    """synthesize's groups_op: the same image and the same gradient for every parameter as the layers one by
    one (float64), the ToRGB biases added outside; where the op declines, the groups run one by one."""
    g, z, coords = tiny_generator_float64()
    assert len(g.to_rgbs) > 1 and len(g.layers) == g.config.to_rgb_every * len(g.to_rgbs)
    calls = []
    counted = counting(cpu_groups_op, calls)

    def run(**ops):
        g.zero_grad()
        rgb = g.synthesize(g.features(coords).expand(3, -1, -1), g.modulated_weights(g.mapping(z)), **ops)
        (rgb * torch.linspace(-1, 1, rgb.numel(), dtype=torch.float64).reshape(rgb.shape)).sum().backward()
        return rgb.detach(), {n: p.grad.clone() for n, p in g.named_parameters() if p.grad is not None}

    plain_rgb, plain_grads = run()
    rgb, grads = run(groups_op=counted)
    assert calls == [True]
    assert torch.allclose(rgb, plain_rgb, rtol=0, atol=1e-12)
    assert grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(grads[name], grad, rtol=1e-9, atol=1e-12), name
    calls.clear()
    declined_rgb, _ = run(groups_op=lambda *args: calls.append(False))
    assert calls == [False] and torch.equal(declined_rgb, plain_rgb)
