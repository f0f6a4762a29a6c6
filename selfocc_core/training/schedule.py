"""Learning-rate schedule: linear warm-up, then step or cosine decay (a pure function of step)."""

from __future__ import annotations

import math

import torch

from selfocc_core.training.config import OptimConfig


def lr_factor(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Multiplier of the peak lr at optimiser step ``step`` (0-based) of ``total_steps``.

    Warm-up: linear from ``warmup_init_factor`` at step 0 to 1 at ``warmup_steps``.
    'step': x ``step_gamma`` for each milestone (fraction of total_steps) reached.
    'cosine': from 1 after warm-up to ``min_lr_factor`` at ``total_steps``.
    """
    if step < cfg.warmup_steps:
        a = step / cfg.warmup_steps
        return cfg.warmup_init_factor + (1.0 - cfg.warmup_init_factor) * a
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        passed = sum(1 for m in cfg.step_milestones if step >= int(round(m * total_steps)))
        return cfg.step_gamma**passed
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min(max((step - cfg.warmup_steps) / span, 0.0), 1.0)
    return cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """A LambdaLR applying `lr_factor` to every parameter group's base lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, total_steps))


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; parameters whose name contains 'backbone' get ``lr * backbone_lr_mult``; biases and
    norm weights (1-D tensors) get no weight decay."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = ("backbone" in name, p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    param_groups = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        param_groups.append({
            "params": params,
            "lr": cfg.lr * (cfg.backbone_lr_mult if is_backbone else 1.0),
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
        })
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
