"""Differentiable augmentation (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN
Training", 2020): the policy colour + translation + cutout, applied to every image D sees, real or fake,
so D cannot memorise a small data set and G still gets gradients through the augmentation.
Random draws come from an explicit torch.Generator, so a run replays exactly."""
from __future__ import annotations

import torch

TRANSLATE_RATIO = 0.125  # shift by up to 1/8 of the side, zero filled
CUTOUT_RATIO = 0.5  # erase one square of half the side


def diff_augment(x: torch.Tensor, gen: torch.Generator, share: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> same shape; differentiable w.r.t. x. share = (k, n): x is share k of a
    batch of n * B split over n processes (its samples k, k + n, ...); the random parameters are drawn
    for the whole batch and this share's are used, so the split does not change them."""
    return apply_augment(x, augment_draws(x.shape[0], gen, x.device, share))


def augment_draws(batch: int, gen: torch.Generator, device: torch.device,
                  share: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """The random parameters of one augmentation of `batch` images (this share's of the whole batch),
    [batch, 7, 1, 1, 1] in [0, 1): drawn apart from their use, so the use can be compiled with the
    discriminator (torch.compile does not take an explicit generator)."""
    k, n = share
    return torch.rand(batch * n, 7, 1, 1, 1, device=device, generator=gen, dtype=torch.float32)[k::n].contiguous()


def apply_augment(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The augmentation of x [B, 3, H, W] with parameters r from augment_draws."""
    batch, _, h, w = x.shape
    # Colour: brightness, saturation, contrast (DiffAugment's ranges).
    x = x + (r[:, 0] - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (r[:, 1] * 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (r[:, 2] + 0.5) + mean
    # Translation by whole pixels; pixels shifted in from outside are zero.
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    sh, sw = int(h * TRANSLATE_RATIO + 0.5), int(w * TRANSLATE_RATIO + 0.5)
    ty = (r[:, 3].view(batch, 1, 1) * (2 * sh + 1)).long() - sh
    tx = (r[:, 4].view(batch, 1, 1) * (2 * sw + 1)).long() - sw
    src_r, src_c = rows - ty, cols - tx  # [B, H, W]
    inside = (src_r >= 0) & (src_r < h) & (src_c >= 0) & (src_c < w)
    index = (src_r.clamp(0, h - 1) * w + src_c.clamp(0, w - 1)).view(batch, 1, h * w)
    x = x.reshape(batch, -1, h * w).gather(2, index.expand(-1, x.shape[1], -1)).view(x.shape)
    # Cutout: a square of half the side, centred anywhere (it may be clipped by the border).
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = (r[:, 5].view(batch, 1, 1) * (h + 1 - ch % 2)).long() - ch // 2
    cx = (r[:, 6].view(batch, 1, 1) * (w + 1 - cw % 2)).long() - cw // 2
    erased = (rows >= cy) & (rows < cy + ch) & (cols >= cx) & (cols < cx + cw)
    keep = (inside & ~erased).unsqueeze(1).to(x.dtype)  # [B, 1, H, W]
    return x * keep
