"""benchmarks/bench_envs.py: every loop stays within one episode, and the vector env's rate counts only the
slots it stepped (it freezes a slot whose episode ended), so a step limit cannot inflate its figure."""

import numpy as np
import pytest

from tests.scripts.conftest import BENCHMARKS, load_script
from vla_rl.core.types import ObsBatch, StepResult


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_envs", BENCHMARKS)


def test_timed_steps_stay_within_the_tasks_step_limit(bench):
    assert bench.timed_steps("Lift", None) == 60  # limit 70: the default fits
    assert bench.timed_steps("PressButton", None) == 49  # limit 50: 1 warm-up step + 49 timed
    assert bench.timed_steps("Reach", 49) == 49
    with pytest.raises(ValueError, match="PressButton's episodes end after 50 steps.*1..49"):
        bench.timed_steps("PressButton", 60)
    with pytest.raises(ValueError, match="1..69"):
        bench.timed_steps("Lift", 0)


class _EndingVecEnv:
    """Two slots; slot 0's episode ends on the second timed step (by success), slot 1 runs on."""

    def __init__(self, config):
        self.calls = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def reset(self, tasks):
        return None

    def step(self, actions):
        self.calls += 1
        ended = np.array([self.calls >= 3, False])
        obs = ObsBatch({"agentview": np.zeros((2, 8, 8, 3), np.uint8)}, np.zeros((2, 8), np.float32), ["", ""])
        return StepResult(obs=obs, reward=np.zeros(2, np.float32), terminated=ended, truncated=np.zeros(2, bool),
                          success=ended)


def test_the_vector_rate_counts_only_the_slots_it_stepped(bench, monkeypatch):
    import sim_envs.vector

    clock = iter([0.0, 1.0])
    monkeypatch.setattr(sim_envs.vector, "TabletopVecEnv", _EndingVecEnv)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    # timed steps 1 and 2 step both slots, steps 3 and 4 only slot 1: 6 env steps in 1 s, not 8
    assert bench.vectorised("Reach", 64, num_envs=2, workers=0, steps=4) == 6.0
