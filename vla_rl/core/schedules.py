"""Learning-rate schedules shared by every training loop (SFT, the critic, the world model)."""

from __future__ import annotations

import math


def linear_warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps`` (0 = none), then constant (RL: the run's length is a
    time budget, not a step count)."""
    return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr


def warmup_cosine_lr(step: int, lr: float, warmup_steps: int, total_steps: int, floor: float = 0.0) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``floor * lr`` at ``total_steps``."""
    if step < warmup_steps:
        return linear_warmup_lr(step, lr, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


__all__ = ["linear_warmup_lr", "warmup_cosine_lr"]
