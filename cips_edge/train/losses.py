"""The paper's objective (StyleGAN2's): non-saturating logistic loss, lazy R1 on reals, and the small
pure functions that turn the recipe's numbers into optimizer and EMA settings."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), averaged: softplus(-real) + softplus(fake)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(G(z))), averaged."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over reals, differentiable (create_graph) so D can be trained on it."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), reals, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)).mean()


def lazy_adam_settings(lr: float, betas: tuple[float, float], every: int | None) -> tuple[float, tuple[float, float]]:
    """StyleGAN2's correction when a regulariser runs every k steps as an extra optimizer step:
    lr * c and betas ** c with c = k / (k + 1), so the optimizer's time scale stays per minibatch."""
    if not every:
        return lr, betas
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


def ema_beta(batch: int, half_life_kimg: float) -> float:
    """Per-step EMA decay so a weight's influence halves after half_life_kimg thousand images
    (the original: 0.5 ** (32 / 10_000) at batch 32)."""
    return 0.5 ** (batch / (half_life_kimg * 1000.0))
