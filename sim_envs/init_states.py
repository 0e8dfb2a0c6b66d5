"""Fixed evaluation init states (stored as files, like LIBERO's) and the disjoint training stream.

Evaluation layouts come from seeds ``(EVAL_STREAM, task_index, i)`` and are frozen into
``sim_envs/init_states/<Task>.json`` so that code changes to the samplers cannot silently move the
benchmark. Training layouts come from seeds ``(TRAIN_STREAM, task_index, i)``: a different
``SeedSequence`` entropy, so the two streams never share a seed, and ``tests`` check that no
training layout equals an evaluation one.

Regenerate the files (only when a task's objects change, and say so in the changelog) with
``python -m sim_envs.init_states --write``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
from pathlib import Path

import numpy as np

from sim_envs.tasks import TASKS, Layout, get_task

EVAL_STREAM = 20_261_121
TRAIN_STREAM = 77_000_001
EVAL_STATES_PER_TASK = 50
FORMAT_VERSION = 1
INIT_STATE_DIR = Path(__file__).parent / "init_states"


def _task_index(task: str) -> int:
    if task not in TASKS:
        raise KeyError(f"unknown tabletop task {task!r}; valid tasks: {', '.join(TASKS)}")
    return list(TASKS).index(task)


def sample_layout(task: str, stream: int, index: int) -> Layout:
    rng = np.random.default_rng([stream, _task_index(task), index])
    return get_task(task).sample_layout(rng)


def train_layout(task: str, index: int) -> Layout:
    """The ``index``-th training init state of ``task`` (any non-negative index)."""
    if index < 0:
        raise ValueError(f"training init-state index must be >= 0, got {index}")
    return sample_layout(task, TRAIN_STREAM, index)


@functools.lru_cache(maxsize=None)
def _eval_file(task: str) -> tuple[Layout, ...]:
    _task_index(task)  # an unknown task is not a missing file
    path = INIT_STATE_DIR / f"{task}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"evaluation init states for {task!r} are missing ({path}); "
            "regenerate them with `python -m sim_envs.init_states --write`"
        )
    content = json.loads(path.read_text())
    if content.get("format_version") != FORMAT_VERSION or content.get("task") != task:
        raise ValueError(f"{path} is not a format-{FORMAT_VERSION} init-state file for {task!r}")
    return tuple(content["states"])


def eval_layout(task: str, index: int) -> Layout:
    """The ``index``-th of the task's fixed evaluation init states."""
    states = _eval_file(task)
    if not 0 <= index < len(states):
        raise IndexError(f"{task} has evaluation init states 0..{len(states) - 1}, got {index}")
    return copy.deepcopy(states[index])  # the file is read once per process: editing a copy must not move the state


def num_eval_states(task: str) -> int:
    return len(_eval_file(task))


def get_layout(task: str, init_state_id: int, split: str) -> Layout:
    if split == "eval":
        return eval_layout(task, init_state_id)
    if split == "train":
        return train_layout(task, init_state_id)
    raise ValueError(f"init-state split must be 'eval' or 'train', got {split!r}")


def write_eval_files(directory: Path = INIT_STATE_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task in TASKS:
        states = [sample_layout(task, EVAL_STREAM, i) for i in range(EVAL_STATES_PER_TASK)]
        content = {
            "format_version": FORMAT_VERSION,
            "task": task,
            "split": "eval",
            "seed_stream": [EVAL_STREAM, _task_index(task)],
            "states": states,
        }
        path = directory / f"{task}.json"
        path.write_text(json.dumps(content, indent=1) + "\n")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="regenerate the evaluation init-state files")
    args = parser.parse_args()
    if args.write:
        for path in write_eval_files():
            print(f"wrote {path}")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
