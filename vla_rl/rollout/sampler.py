"""Task sampler for group-relative RL: groups of ``G`` rollouts that share (task, init state).

Init states are drawn only from the ``train`` split (an unbounded stream disjoint from the frozen
evaluation states), uniformly from the first ``train_states`` ids of each task, round-robin over
tasks so every task gets the same share. The sampler's state is a plain dict so a resumed run draws
exactly the groups the uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vla_rl.core.types import TaskSpec


class TaskSampler:
    def __init__(self, tasks: Sequence[str], group_size: int, train_states: int = 10_000, seed: int = 0):
        if not tasks:
            raise ValueError("the task sampler needs at least one task")
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 (a group-relative baseline needs a group), got {group_size}")
        if train_states < 1:
            raise ValueError(f"train_states must be >= 1, got {train_states}")
        self.tasks = list(tasks)
        self.group_size = group_size
        self.train_states = train_states
        self.rng = np.random.default_rng(seed)
        self.next_task = 0
        self.groups_drawn = 0

    def next_groups(self, count: int) -> list[list[TaskSpec]]:
        """``count`` groups, each ``group_size`` copies of one training (task, init state)."""
        groups = []
        for _ in range(count):
            task = self.tasks[self.next_task % len(self.tasks)]
            self.next_task += 1
            spec = TaskSpec(task, int(self.rng.integers(self.train_states)), "train")
            groups.append([spec] * self.group_size)
            self.groups_drawn += 1
        return groups

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "next_task": self.next_task, "groups_drawn": self.groups_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.next_task = int(state["next_task"])
        self.groups_drawn = int(state["groups_drawn"])
