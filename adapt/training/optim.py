"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from adapt.recipe import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                    own_lr: dict[float, list[torch.nn.Parameter]] | None = None) -> torch.optim.Optimizer:
    """Weight decay on matrices only: decaying biases and LayerNorm gains just pulls them toward 0 for no
    regularisation benefit (nanoGPT's rule: decay parameters with >= 2 dimensions).

    `own_lr` maps a peak learning rate to the parameters that take it instead of `cfg.lr` (a method's head that
    must learn faster than the encoder); the schedule scales every group alike. The first group is always the
    encoder's, whose rate the training log reports."""
    special = {id(p): lr for lr, ps in (own_lr or {}).items() for p in ps}
    by_lr: dict[float, list[torch.nn.Parameter]] = {cfg.lr: []}  # the encoder's rate first
    for p in model.parameters():
        if p.requires_grad:
            by_lr.setdefault(special.get(id(p), cfg.lr), []).append(p)
    groups = [g for lr, ps in by_lr.items() for g in (
        {"params": [p for p in ps if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr": lr},
        {"params": [p for p in ps if p.dim() < 2], "weight_decay": 0.0, "lr": lr},
    ) if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    # The fused kernel updates every tensor of a group in one pass: on this project's 2-core CPU one AdamW step
    # over MiniLM-L6 takes 0.018 s fused against 0.093 s with `foreach` (0.139 s per-tensor).
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> LambdaLR:
    """Linear warmup to the peak, then linear or cosine decay to 0 (or constant)."""
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return LambdaLR(optimizer, factor)
