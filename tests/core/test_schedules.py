"""The learning-rate schedules, against hand-computed values."""

import math
import time

import pytest
import torch

from vla_rl.core.schedules import budget_step, linear_warmup_lr, set_budgeted_lr, warmup_cosine_lr


def test_warmup_then_cosine_to_zero():
    assert linear_warmup_lr(0, 1.0, 10) == pytest.approx(0.1)
    assert warmup_cosine_lr(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine_lr(60, 1.0, 10, 110) == pytest.approx(0.5)  # half-way down the cosine
    assert warmup_cosine_lr(110, 1.0, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_lr(500, 1.0, 10, 110, floor=0.1) == pytest.approx(0.1)


def test_budget_step_follows_whichever_budget_runs_out_first():
    # no time limit: the step itself
    assert budget_step(700, 1500, elapsed_seconds=290.0, time_limit_seconds=0) == 700
    # a slow machine: 1200 of 1500 steps when 290 s of 300 are gone -> the schedule reads 1450
    assert budget_step(1200, 1500, elapsed_seconds=290.0, time_limit_seconds=300.0) == pytest.approx(1450.0)
    # a fast machine that runs out of steps first: the step count leads
    assert budget_step(1400, 1500, elapsed_seconds=150.0, time_limit_seconds=300.0) == 1400
    # so a time-limited run ends its cosine near zero whatever its step count
    at_the_limit = warmup_cosine_lr(budget_step(1200, 1500, 299.0, 300.0), 1e-3, 50, 1500)
    step_only = warmup_cosine_lr(1200, 1e-3, 50, 1500)
    assert at_the_limit < 1e-6 < step_only
    assert step_only == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 1150 / 1450)))


def test_set_budgeted_lr_sets_every_group_from_the_elapsed_budget():
    weights = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    optimizer = torch.optim.SGD([{"params": weights[:1]}, {"params": weights[1:]}], lr=1.0)
    schedule = lambda at: warmup_cosine_lr(at, 1e-3, 0, 1000)  # noqa: E731
    # no time limit: the step count alone (step 500 of 1000 -> half-way down the cosine)
    assert set_budgeted_lr(optimizer, schedule, 500, 1000, time.perf_counter(), 0) == pytest.approx(5e-4)
    # 59 s gone of a 1-minute budget at step 100: the schedule reads ~983 of 1000, near its end
    lr = set_budgeted_lr(optimizer, schedule, 100, 1000, time.perf_counter() - 59.0, 1.0)
    assert lr < 1e-5
    assert [group["lr"] for group in optimizer.param_groups] == [lr, lr]
