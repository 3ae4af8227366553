"""Learning-rate scaling and schedule."""

from __future__ import annotations

import math

from .config import TrainConfig


def scaled_lr(cfg: TrainConfig, world_size: int) -> tuple[float, int]:
    """(peak lr, global batch): lr × global_batch / reference_batch (linear scaling, as in Vistral-V)."""
    global_batch = cfg.batch_size * cfg.grad_accum * world_size
    return cfg.lr * global_batch / cfg.reference_batch, global_batch


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over `warmup_steps`, then cosine from 1 to `min_lr_ratio` at `max_steps`."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
