"""Several processes (torchrun) training one model: process group from the environment, gradients
averaged by one all-reduce per optimizer step, and a check that every rank holds the same weights.

Gradients are all-reduced by hand (as StyleGAN2-ADA does) rather than through DistributedDataParallel:
G and D alternate which of them needs gradients, which DDP's bucketing does not follow.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we created the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> World:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT);
    a single process when WORLD_SIZE is unset or 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not dist.is_initialized():
        return World()
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns_group=True)


def local_rank_from_env() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def shutdown(world: World) -> None:
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def broadcast_module(module: nn.Module, world: World) -> None:
    """Every rank starts from rank 0's weights."""
    if world.size > 1:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(params: list[nn.Parameter], world: World) -> None:
    """Mean of every parameter's gradient over ranks; a missing gradient counts as zeros (so every
    rank's optimizer sees the same set of gradients)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if world.size <= 1:
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world.size)
    torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)])


def mean_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world.size
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def assert_same_weights(modules: list[nn.Module], world: World) -> None:
    """Raise if any rank's weights differ from rank 0's (a bug, not a user error)."""
    if world.size <= 1:
        return
    sums = torch.stack([p.detach().double().sum() for m in modules for p in m.parameters()]).cpu()
    gathered = [torch.empty_like(sums) for _ in range(world.size)]
    if dist.get_backend() == "nccl":
        device = next(modules[0].parameters()).device
        dev = [g.to(device) for g in gathered]
        dist.all_gather(dev, sums.to(device))
        gathered = [g.cpu() for g in dev]
    else:
        dist.all_gather(gathered, sums)
    for r, other in enumerate(gathered):
        if not torch.equal(other, gathered[0]):
            raise RuntimeError(f"rank {r}'s weights differ from rank 0's: the processes diverged")
