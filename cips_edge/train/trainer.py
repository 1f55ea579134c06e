"""One CIPS training step (the paper's recipe) and the state it changes: G, D, the EMA generator, both
optimizers. No host syncs inside a step: losses accumulate on the device and are read every few steps.

Randomness: every step draws batch indices, flips, latents and augmentation from generators seeded by
(seed, step), so a run resumed from any checkpoint replays the uninterrupted run exactly without any
generator state to save. Every rank draws for the whole global batch and keeps its share, samples
rank, rank + N, rank + 2N, ... of N processes: so N processes train, up to float rounding, the model one
process trains with the whole batch (D's minibatch-stddev groups, samples i, i + B/G, ..., come out the
same when each rank's batch is a multiple of the group size).

Panoramas (config.panorama = N frames): the data are whole circles, size x N*size; D sees size x size
crops at random whole-column angles of them, and G renders crops at other random angles, each on its
own columns of the circle's native grid (so G reads its wrapping coordinate table texel for texel).
"""
from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from cips_edge.core.config import GeneratorConfig
from cips_edge.coords import native_grid
from cips_edge.model import CIPSGenerator

from . import distributed, fused_fc, projection
from .augment import apply_augment, augment_draws
from .data import ImageBank
from .discriminator import Discriminator, DiscriminatorConfig
from .losses import d_logistic_loss, ema_beta, g_nonsaturating_loss, lazy_adam_settings, r1_penalty

ADAM_BETAS = (0.0, 0.99)
# the switches that shape the compiled graphs: set_speed compiles afresh for them
GRAPH_SWITCHES = ("compile", "autotune", "activation_budget", "blur_shifts", "from_rgb_fma", "act_blur")
BUILT_SWITCHES = ("channels_last", "fused_adam")  # fixed when the trainer is built
G_REG_EVERY_ORIGINAL = 4  # the interval the original's G optimizer is corrected for (see TrainOptions)
STAT_NAMES = ("loss_d", "loss_g", "r1", "real_score", "fake_score")


@dataclass(frozen=True)
class Speed:
    """The fast-path switches; Speed() is eager fp32, NCHW, TF32 matmuls off (as PyTorch's default).
    None of them changes the recipe; those marked (rounding) change float rounding, the others nothing."""
    bf16: bool = False  # (rounding) autocast G's per-pixel layers and D's forward to bfloat16
    channels_last: bool = False  # NHWC activations for D's convolutions
    fused_adam: bool = False
    tuned_backends: bool = False  # (rounding) TF32 for fp32 matmuls
    cudnn_benchmark: bool = False  # cuDNN times its algorithms per shape (shapes never change); its trials
    # take workspace from whatever GPU memory is free, so the first steps' peak is not what a step needs
    compile: bool = False
    fold_gain: bool = False  # G's sqrt(2) activation gains folded into the next weights (synthesize)
    autotune: str = ""  # benchmarks only: which compiled graphs compile in max-autotune mode, "g" (G's) or
    # "gd" (G's and D's: did not finish tuning in 9 min on an H200 nor in 700 s on an H100)
    r1_bf16: bool = False  # (rounding) R1's forward and double backward of D under bf16 autocast
    r1_compile: bool = False  # (rounding) R1 as one compiled function: torch.func's gradient of the input
    # gradient's norm, which torch.compile traces whole (it cannot take autograd's double backward)
    r1_explicit: bool = False  # (rounding) with r1_compile: D's input gradient formed layer by layer in plain
    # ops (Discriminator.forward's input_grad), each convolution's as a transposed convolution, so that its
    # weight gradients in R1 are cuDNN's weight-gradient kernels rather than forward convolutions of
    # batch-transposed tensors
    recompute_g: bool = False  # activation checkpointing of G's per-pixel layers, one ToRGB group at a time:
    # G's step keeps about half the activations and runs G's forward twice
    activation_budget: float | None = None  # (rounding) compiled graphs: torch's activation memory budget
    # (fraction of the saved activations Inductor may keep; it recomputes the rest in the backward)
    fused_fc: bool = False  # (rounding) G's modulated layers as one CUTLASS kernel each (--fused-layers),
    # bias, leaky ReLU and gain in the GEMM's epilogue (fused_fc.py; needs bf16 and the built library)
    fused_stack: bool = False  # (rounding) with fused_fc: each ToRGB group's layers together, the backward
    # into each inner layer with its activation's derivative in the GEMM's epilogue (fused_fc.stack)
    rgb_grad: bool = False  # (rounding) each ToRGB's gradient into its input as 3 multiply-adds that the
    # compiled backward fuses into the pass that reads it (projection.py) instead of a GEMM of its own
    d_pair: bool = False  # (rounding) the D step's reals and fakes through D in one call of twice the batch,
    # laid out so that every minibatch-stddev group holds the samples it holds in two calls
    fused_groups: bool = False  # (rounding) with fused_stack: all ToRGB groups together, the backward across
    # each group boundary in one grad-input kernel whose product carries the ToRGB's gradient (fused_fc.groups)
    blur_shifts: bool = False  # (rounding) compiled D: its blurs as sixteen shifted terms rather than two 1-D
    # passes (Blur.taps)
    from_rgb_fma: bool = False  # (rounding) compiled D: from_rgb as three multiply-adds inside the pass that
    # applies its bias and activation, not a GEMM with an inner dimension of 3 (EqualConv2d._multiply_adds)
    act_blur: bool = False  # (rounding) compiled D: each block's first bias, leaky ReLU and blur as one op, a
    # Triton kernel on CUDA that reads the convolution's output once (act_blur.py)

    @classmethod
    def for_device(cls, device: torch.device, bf16: bool, compile: bool, **choices) -> "Speed":
        """`cips train`'s fast path on CUDA (compiled: R1 with the rest, its explicit input gradient and
        under bf16, rgb_grad, d_pair and D's forms; no cuDNN autotuning); on CPU only what changes nothing
        there. choices: the memory switches above (cudnn_benchmark, r1_bf16, recompute_g, activation_budget),
        r1_compile, r1_explicit (with r1_compile), rgb_grad, d_pair, blur_shifts and from_rgb_fma (with
        compile), act_blur (with compile; off unless asked), fused_fc (with bf16) and fused_stack (with
        fused_fc); r1_bf16 None or left out: on with bf16 where r1_explicit is."""
        cuda = device.type == "cuda"
        # on by default where the step is compiled
        compiled = ("r1_compile", "r1_explicit", "rgb_grad", "d_pair", "blur_shifts", "from_rgb_fma")
        choices = {**dict.fromkeys(compiled, True), **choices}
        if not cuda:
            choices = {k: v for k, v in choices.items() if k == "recompute_g"}
        if not (compile and cuda):
            for key in (*compiled, "act_blur"):
                choices.pop(key, None)
        if not choices.get("r1_compile"):
            choices.pop("r1_explicit", None)
        if choices.get("r1_bf16") is None:  # R1 under bf16 by default where its input gradient is explicit
            choices["r1_bf16"] = bool(bf16 and cuda and choices.get("r1_explicit"))
        if not (bf16 and cuda):
            choices.pop("fused_fc", None)
        if not choices.get("fused_fc"):
            choices.pop("fused_stack", None)
        return cls(bf16=bf16 and cuda, channels_last=cuda, fused_adam=cuda, tuned_backends=cuda,
                   compile=compile and cuda, **choices)

    def apply_backend_flags(self, device: torch.device) -> None:
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = self.tuned_backends
            torch.backends.cudnn.allow_tf32 = True  # PyTorch's default, which the original code ran with


def _with_budget(fn, budget: float | None):
    """fn, compiled (on its first call) under torch's activation memory budget when one is given."""
    if budget is None:
        return fn

    def call(*args):
        with torch._functorch.config.patch(activation_memory_budget=budget):
            return fn(*args)
    return call


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a and b (of one shape) lay their elements out alike: the same strides wherever a dimension
    has more than one element (the stride of a size-1 dimension is arbitrary)."""
    return all(x == y for x, y, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def _seed(seed: int, step: int, stream: str) -> int:
    # key "seed/0/step/stream": fixed, since changing it would change every run's random numbers
    digest = hashlib.blake2b(f"{seed}/0/{step}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class Recipe:
    batch: int  # per rank
    lr: float
    r1_gamma: float
    r1_every: int
    ema_half_life_kimg: float
    global_batch: int
    augment: bool
    xflip: bool
    g_lazy_correction: bool
    seed: int
    g_hold_steps: int = 0  # steps at the start that train D alone (G and its EMA held): a fresh D catching up


class Trainer:
    def __init__(self, g_config: GeneratorConfig, d_config: DiscriminatorConfig, recipe: Recipe,
                 device: torch.device, world: distributed.World = distributed.World(), speed: Speed = Speed()):
        self.recipe, self.device, self.world, self.speed = recipe, device, world, speed
        self.size = g_config.size
        self.width = g_config.table_width  # of the training images: size, or a panorama's N*size
        self.panorama = g_config.panorama
        torch.manual_seed(recipe.seed)  # the same initial weights on every rank (and broadcast below)
        self.G = CIPSGenerator(g_config).to(device)
        self.D = Discriminator(d_config).to(device)
        distributed.broadcast_module(self.G, world)
        distributed.broadcast_module(self.D, world)  # before channels-last: collectives want dense tensors
        if speed.channels_last:
            self.D = self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.ema_beta = ema_beta(recipe.global_batch, recipe.ema_half_life_kimg)

        g_lr, g_betas = lazy_adam_settings(recipe.lr, ADAM_BETAS,
                                           G_REG_EVERY_ORIGINAL if recipe.g_lazy_correction else None)
        d_lr, d_betas = lazy_adam_settings(recipe.lr, ADAM_BETAS, recipe.r1_every if recipe.r1_gamma > 0 else None)
        fused = True if speed.fused_adam else None
        self.g_params = list(self.G.parameters())
        self.d_params = list(self.D.parameters())
        self.g_optim = torch.optim.Adam(self.g_params, lr=g_lr, betas=g_betas, fused=fused)
        self.d_optim = torch.optim.Adam(self.d_params, lr=d_lr, betas=d_betas, fused=fused)

        grid, _, _ = native_grid(g_config, device)
        self.grid = grid.reshape(self.size, self.width, 2)  # [S, W, 2]: the frame, or a whole panorama
        self.coords = self.grid[:, :self.size].reshape(1, -1, 2)  # [1, S*S, 2]: the frame (a panorama's first crop)
        self.gen_device = torch.Generator(device=device)
        self.gen_index = self.gen_device
        self._stats = torch.zeros(len(STAT_NAMES), device=device)
        self._steps_in_stats = 0
        self._r1_in_stats = 0
        self._g_in_stats = 0
        self._r1_params: frozenset[str] | None = None  # D's parameters R1 reaches (the others get no gradient)
        self._build_graphs()

    def _build_graphs(self) -> None:
        """D's layer forms and the compiled functions (G's, D's, R1's on first use) that self.speed asks for."""
        speed = self.speed
        if speed.act_blur and speed.compile and speed.r1_compile and not speed.r1_explicit:
            # R1 through D's forward under torch.func inside compile: the op's backward is not differentiated
            raise ValueError("act_blur needs r1_explicit where R1 is compiled")
        self.D.use_forms(speed.blur_shifts, speed.from_rgb_fma, speed.act_blur)
        self.generate = self._generate
        self.discriminate = self._discriminate
        self.discriminate_pair = self._discriminate_pair
        self._r1_compiled = None  # the compiled R1 (speed.r1_compile), made on first use
        if speed.compile:
            def mode(part: str) -> str | None:
                return "max-autotune-no-cudagraphs" if part in speed.autotune else None
            self.generate = _with_budget(torch.compile(self._generate, mode=mode("g")), speed.activation_budget)
            self.discriminate = _with_budget(torch.compile(self._discriminate, mode=mode("d")),
                                             speed.activation_budget)
            self.discriminate_pair = _with_budget(torch.compile(self._discriminate_pair, mode=mode("d")),
                                                  speed.activation_budget)

    def set_speed(self, speed: Speed) -> None:
        """Switch the fast path between steps (benchmarks compare switches on one trainer). Switches that
        shape the compiled graphs (GRAPH_SWITCHES) compile them afresh; those that shape the trainer's
        state (D's memory format, the optimizers) cannot change."""
        fixed = [f for f in BUILT_SWITCHES if getattr(speed, f) != getattr(self.speed, f)]
        if fixed:
            raise ValueError(f"{', '.join(fixed)} cannot change after the trainer is built")
        rebuild = any(getattr(speed, f) != getattr(self.speed, f) for f in GRAPH_SWITCHES)
        self.speed = speed
        if rebuild:
            torch._dynamo.reset()  # compiled code is cached per function: drop what the old switches traced
            self._build_graphs()

    # -- forward passes ------------------------------------------------------------------------
    def _generate(self, z: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        """z [B, S] -> images [B, 3, size, size], float32 in about [-1, 1]. coords: texels of the native grid,
        [1, S*S, 2] for the whole batch (default: self.coords) or [B, S*S, 2] (panorama crops). The style
        part (mapping, modulation, demodulation) and the coordinate features run in float32; only the
        per-pixel matmuls run under bf16 autocast."""
        g = self.G
        weights = g.modulated_weights(g.mapping(z))
        # Coordinate features the same for every sample are computed once (cast once) and broadcast
        # over the batch without copying.
        e = g.features(self.coords if coords is None else coords, native=True)  # [1 or B, S*S, 2H]
        if self.speed.bf16:
            e = e.to(torch.bfloat16)
        if not self.speed.fused_fc:  # the fused input layer takes the one table as it is
            e = e.expand(z.shape[0], -1, -1)  # [B, S*S, 2H]
        layer_op = fused_fc.layer if self.speed.fused_fc else None
        stack_op = fused_fc.stack if self.speed.fused_fc and self.speed.fused_stack else None
        groups_op = fused_fc.groups if stack_op is not None and self.speed.fused_groups else None
        rgb_op = projection.project if self.speed.rgb_grad else None
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed.bf16):
            rgb = g.synthesize(e, weights, fold_gain=self.speed.fold_gain,
                               recompute=self.speed.recompute_g and torch.is_grad_enabled(),
                               layer_op=layer_op, stack_op=stack_op, rgb_op=rgb_op,
                               groups_op=groups_op)  # [B, S*S, 3]
        img = rgb.float().reshape(-1, self.size, self.size, 3).permute(0, 3, 1, 2)  # NCHW view of NHWC
        return img if self.speed.channels_last else img.contiguous()

    def _discriminate(self, img: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        """D's logits of img, augmented first with `draws` (self.draws) if given: compiled, the augmentation
        fuses into D's first kernels instead of running as some thirty small eager ones per call."""
        img = self._d_input(img, draws)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed.bf16):
            return self.D(img).float()

    def _discriminate_pair(self, reals: torch.Tensor, fakes: torch.Tensor, real_draws: torch.Tensor | None,
                           fake_draws: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits of reals and of fakes (B each) from one call on 2B images: both laid out [G, B/G] and
        interleaved group by group, so that D's minibatch-stddev groups (samples i, i + 2B/G, ...) hold
        the samples they hold in two calls of B. Needs D.mbstd_group(2B) == D.mbstd_group(B)."""
        a, b = self._d_input(reals, real_draws), self._d_input(fakes, fake_draws)
        batch, group = len(a), self.D.mbstd_group(len(a))
        # stacked as [B, H, W, 3] rows, so that the pair keeps a channels-last input's layout (a stack of
        # [B, 3, H, W] tensors is laid out [B, 3, H, W] whatever their strides)
        rows = [x.permute(0, 2, 3, 1).reshape(group, batch // group, *x.shape[2:], x.shape[1]) for x in (a, b)]
        both = torch.stack(rows, dim=1).reshape(2 * batch, *a.shape[2:], a.shape[1]).permute(0, 3, 1, 2)
        logits = self._discriminate(both).reshape(group, 2, batch // group)  # augmented already: no draws
        return logits[:, 0].reshape(batch), logits[:, 1].reshape(batch)

    def pairs_keep_groups(self, batch: int) -> bool:
        """Whether D's minibatch-stddev groups of 2 * batch images are those of batch (see _discriminate_pair)."""
        return self.D.mbstd_group(2 * batch) == self.D.mbstd_group(batch)

    def _d_input(self, img: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
        """What D reads: img augmented with draws (if given), channels-last on the fast path."""
        if draws is not None:
            img = apply_augment(img, draws)
        return img.contiguous(memory_format=torch.channels_last) if self.speed.channels_last else img

    def draws(self, batch: int) -> torch.Tensor | None:
        """The parameters of one DiffAugment call on this rank's `batch` images; None without augmentation."""
        if not self.recipe.augment:
            return None
        return augment_draws(batch, self.gen_device, self.device, (self.world.rank, self.world.size))

    def share(self, drawn: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a draw for the whole global batch: rows rank, rank + N, ... of N processes."""
        return drawn[self.world.rank::self.world.size] if self.world.size > 1 else drawn

    # -- inputs --------------------------------------------------------------------------------
    def use_bank(self, bank: ImageBank) -> None:
        self.bank = bank
        if bank.index_device != self.device:
            self.gen_index = torch.Generator(device=bank.index_device)

    def reseed(self, step: int) -> None:
        s = self.recipe.seed
        self.gen_device.manual_seed(_seed(s, step, "device"))
        if self.gen_index is not self.gen_device:
            self.gen_index.manual_seed(_seed(s, step, "index"))

    def crop_columns(self) -> torch.Tensor | None:
        """Panoramas: the columns of a size-wide crop at a random angle for each sample, [B, size] (the
        crop wraps around past the last column); None for flat images."""
        if not self.panorama:
            return None
        start = self.share(torch.randint(self.width, (self.recipe.global_batch, 1), generator=self.gen_device,
                                         device=self.device))
        return (start + torch.arange(self.size, device=self.device)) % self.width

    def fake_coords(self) -> torch.Tensor | None:
        """What G renders: None (the frame, shared) or, for panoramas, a crop per sample [B, S*S, 2]."""
        columns = self.crop_columns()
        if columns is None:
            return None
        return self.grid[:, columns].transpose(0, 1).reshape(len(columns), -1, 2)  # [S, B, S, 2] -> [B, S*S, 2]

    def real_batch(self) -> torch.Tensor:
        total = self.recipe.global_batch
        index = self.share(torch.randint(self.bank.count, (total,), generator=self.gen_index,
                                         device=self.bank.index_device)).contiguous()
        u8 = self.bank.gather(index)  # [B, H, W, 3] uint8 on the device
        columns = self.crop_columns()
        if columns is not None:  # [B, S, N*S, 3] -> [B, S, S, 3]
            u8 = u8.gather(2, columns[:, None, :, None].expand(-1, self.size, -1, 3))
        img = u8.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0  # [B, 3, H, W], channels-last strides
        if self.recipe.xflip:
            flip = self.share(torch.rand(total, 1, 1, 1, generator=self.gen_device, device=self.device)) < 0.5
            img = torch.where(flip, img.flip(3), img)
        return img if self.speed.channels_last else img.contiguous()

    def latents(self) -> torch.Tensor:
        return self.share(torch.randn(self.recipe.global_batch, self.G.config.style_dim, generator=self.gen_device,
                                      device=self.device))

    # -- the phases of a step (separate so the benchmark can time each) --------------------------
    def d_backward(self, reals: torch.Tensor) -> None:
        with torch.no_grad():
            fakes = self.generate(self.latents(), self.fake_coords())
        real_draws, fake_draws = self.draws(len(reals)), self.draws(len(fakes))
        if self.speed.d_pair and len(reals) == len(fakes) and self.pairs_keep_groups(len(reals)):
            real_logits, fake_logits = self.discriminate_pair(reals, fakes, real_draws, fake_draws)
        else:
            real_logits = self.discriminate(reals, real_draws)
            fake_logits = self.discriminate(fakes, fake_draws)
        loss = d_logistic_loss(real_logits, fake_logits)
        self.d_optim.zero_grad(set_to_none=True)
        loss.backward()
        # Integer indices are views: indexing with a list would copy the index to the GPU (a host sync).
        self._stats[0] += loss.detach()
        self._stats[3] += real_logits.detach().mean()
        self._stats[4] += fake_logits.detach().mean()

    def r1_backward(self, reals: torch.Tensor) -> None:
        """Lazy R1, scaled by its interval: eager D (torch.compile has no double backward), in float32,
        or with speed.r1_bf16 under bf16 autocast (the penalty itself is summed in float32); with
        speed.r1_compile, one compiled function computes the penalty and D's gradients (after a first,
        eager call that finds which of D's parameters R1 reaches)."""
        draws = self.draws(len(reals))
        if self.speed.r1_compile and self._r1_params is not None:
            penalty = self._r1_compiled_backward(reals, draws)
        else:
            reals = reals.detach().requires_grad_(True)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed.r1_bf16):
                logits = self.D(self._d_input(reals, draws))
                penalty = r1_penalty(logits, reals)
                self.d_optim.zero_grad(set_to_none=True)
                (penalty * self._r1_weight).backward()
            if self.speed.r1_compile and self._r1_params is None:
                self._r1_params = frozenset(name for name, p in self.D.named_parameters() if p.grad is not None)
        self._stats[2] += penalty.detach()

    @property
    def _r1_weight(self) -> float:
        return self.recipe.r1_gamma / 2 * self.recipe.r1_every

    def _r1_compiled_backward(self, reals: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
        if self._r1_compiled is None:
            self._r1_compiled = torch.compile(self._r1_functional)
        params, fixed = {}, dict(self.D.named_buffers())  # fixed: buffers and the parameters R1 does not reach
        for name, p in self.D.named_parameters():
            (params if name in self._r1_params else fixed)[name] = p.detach()
        penalty, grads = self._r1_compiled(params, fixed, reals.detach(), draws)
        self.d_optim.zero_grad(set_to_none=True)
        weight = self._r1_weight
        for name, p in self.D.named_parameters():
            if name in grads:
                grad = grads[name] * weight
                if not same_layout(grad, p):  # autograd's layout: the parameter's (channels-last weights)
                    grad = torch.empty_like(p).copy_(grad)
                p.grad = grad
        return penalty

    def _r1_functional(self, params: dict, fixed: dict, reals: torch.Tensor,
                       draws: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """(R1 penalty, its gradient for each of params): the same as the eager path, as functions."""
        def penalty(p: dict) -> torch.Tensor:
            def logits_sum(x: torch.Tensor) -> torch.Tensor:
                d_in = self._d_input(x, draws)
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed.r1_bf16):
                    return torch.func.functional_call(self.D, {**p, **fixed}, (d_in,)).float().sum()

            def input_grad(x: torch.Tensor) -> torch.Tensor:  # the same gradient, D's part formed explicitly
                d_in, augment_grad = torch.func.vjp(lambda x: self._d_input(x, draws), x)
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed.r1_bf16):
                    _, grad = torch.func.functional_call(self.D, {**p, **fixed}, (d_in,), {"input_grad": True})
                return augment_grad(grad.to(d_in.dtype))[0]

            grad = input_grad(reals) if self.speed.r1_explicit else torch.func.grad(logits_sum)(reals)
            return grad.float().square().sum(dim=(1, 2, 3)).mean()

        grads, value = torch.func.grad_and_value(penalty)(params)
        return value, grads

    def g_backward(self) -> None:
        self.D.requires_grad_(False)  # no weight gradients for D in G's step
        try:
            fakes = self.generate(self.latents(), self.fake_coords())
            fake_logits = self.discriminate(fakes, self.draws(len(fakes)))
            loss = g_nonsaturating_loss(fake_logits)
            self.g_optim.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            self.D.requires_grad_(True)
        self._stats[1] += loss.detach()

    def d_optimizer_step(self) -> None:
        distributed.average_gradients(self.d_params, self.world)
        self.d_optim.step()

    def g_optimizer_step(self) -> None:
        distributed.average_gradients(self.g_params, self.world)
        self.g_optim.step()

    @torch.no_grad()
    def update_ema(self) -> None:
        torch._foreach_lerp_(list(self.G_ema.parameters()), self.g_params, 1.0 - self.ema_beta)

    def r1_due(self, step: int) -> bool:
        return self.recipe.r1_gamma > 0 and step % self.recipe.r1_every == 0

    def train_step(self, step: int) -> None:
        """Step `step` (0-based): D on reals and fakes, lazy R1, G, EMA, as the original orders them; within
        the recipe's g_hold_steps, D's part alone."""
        self.reseed(step)
        reals = self.real_batch()
        self.d_backward(reals)
        self.d_optimizer_step()
        if self.r1_due(step):
            self.r1_backward(reals)
            self.d_optimizer_step()
            self._r1_in_stats += 1
        if step >= self.recipe.g_hold_steps:
            self.g_backward()
            self.g_optimizer_step()
            self.update_ema()
            self._g_in_stats += 1
        self._steps_in_stats += 1

    # -- reading out -----------------------------------------------------------------------------
    def read_stats(self) -> dict[str, float]:
        """Mean losses since the last call, averaged over ranks (one host sync; all ranks must call)."""
        values = distributed.mean_over_ranks(self._stats, self.world).tolist()
        n, n_r1, n_g = max(self._steps_in_stats, 1), self._r1_in_stats, self._g_in_stats
        out = {name: v / n for name, v in zip(STAT_NAMES, values)}
        out["r1"] = values[2] / n_r1 if n_r1 else None
        out["loss_g"] = values[1] / n_g if n_g else None  # None while G is held
        self._stats.zero_()
        self._steps_in_stats = self._r1_in_stats = self._g_in_stats = 0
        return out

    def state_dict(self) -> dict:
        return {"g": self.G.state_dict(), "d": self.D.state_dict(), "g_ema": self.G_ema.state_dict(),
                "g_optim": self.g_optim.state_dict(), "d_optim": self.d_optim.state_dict()}

    def load_weights(self, state: dict) -> None:
        """G, D and the EMA generator from a checkpoint's state (cips train --init-from; D None: a model
        file's generator, D as initialised); Adam as it is."""
        self.G.load_state_dict(state["g"])
        if state["d"] is not None:
            self.D.load_state_dict(state["d"])
        self.G_ema.load_state_dict(state["g_ema"])

    def load_state_dict(self, state: dict) -> None:
        self.load_weights(state)
        for optim, key in ((self.g_optim, "g_optim"), (self.d_optim, "d_optim")):
            if key not in state:
                warnings.warn(f"checkpoint has no {key} state: Adam moments start afresh", stacklevel=2)
                continue
            # Keep this machine's implementation choice (a CUDA run's fused Adam resumed on CPU, say);
            # it decides where the loaded step counters go, so set it before loading.
            saved = dict(state[key])
            saved["param_groups"] = [{**group, **{k: now.get(k) for k in ("fused", "foreach")}}
                                     for group, now in zip(saved["param_groups"], optim.param_groups)]
            optim.load_state_dict(saved)

    @property
    def models(self) -> list[nn.Module]:
        return [self.G, self.D, self.G_ema]
