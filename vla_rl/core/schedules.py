"""Learning-rate schedules shared by every training loop (SFT, the critic, the world model)."""

from __future__ import annotations

import math
import time
from typing import Callable


def linear_warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps`` (0 = none), then constant (RL: the run's length is a
    time budget, not a step count)."""
    return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr


def warmup_cosine_lr(step: float, lr: float, warmup_steps: int, total_steps: int, floor: float = 0.0) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``floor * lr`` at ``total_steps``."""
    if step < warmup_steps:
        return linear_warmup_lr(step, lr, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def budget_step(step: int, total_steps: int, elapsed_seconds: float, time_limit_seconds: float) -> float:
    """The step a schedule should read when a run may stop on a time limit before ``total_steps``: the
    further along of the step count and the elapsed fraction of the time budget (scaled to steps).

    Without it a time-limited run stops part-way down its cosine, at a learning rate that depends on
    how fast the machine is (a 2-core run stopped at step 1216 of 1500 still had 6x the final learning
    rate of one stopped at 1382); with it the decay ends when the budget does, on any machine."""
    if time_limit_seconds <= 0:
        return float(step)
    return max(float(step), total_steps * elapsed_seconds / time_limit_seconds)


def set_budgeted_lr(optimizer, schedule: Callable[[float], float], step: int, total_steps: int,
                    started: float, time_limit_minutes: float) -> float:
    """Sets every parameter group's learning rate to ``schedule(budget_step(...))``, with the time
    elapsed since ``started`` (a ``time.perf_counter()`` reading; a resumed run moves it back by the
    time its checkpoint had run), and returns it: the schedule step of every time-limited training loop."""
    lr = schedule(budget_step(step, total_steps, time.perf_counter() - started, 60 * time_limit_minutes))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


__all__ = ["budget_step", "linear_warmup_lr", "set_budgeted_lr", "warmup_cosine_lr"]
