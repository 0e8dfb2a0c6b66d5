"""The learning-rate schedules, against hand-computed values."""

import math

import pytest

from vla_rl.core.schedules import budget_step, linear_warmup_lr, warmup_cosine_lr


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
