"""A GRPO iteration on a LIBERO task through the same trainer, Ray rollout actor and env worker process
as the tabletop suite (slow: two 220-step LIBERO episodes on a CPU renderer, about a minute)."""

import json

import pytest

from tests.train.test_trainer import _train_config, tiny_checkpoint  # noqa: F401 - a pytest fixture
from vla_rl.cli.factories import eval_state_counter, make_pool
from vla_rl.train.trainer import RolloutConfig, Trainer

pytestmark = [pytest.mark.libero, pytest.mark.slow]


def test_grpo_iteration_on_libero_with_ray_workers(tmp_path, tiny_checkpoint):  # noqa: F811
    rollout = RolloutConfig(backend="ray", num_workers=1, envs_per_worker=2, env_processes=1)
    config = _train_config(tmp_path, tiny_checkpoint, suite="libero_spatial", tasks=("libero_spatial_04",),
                           iterations=1, eval_episodes_per_task=0, rollout=rollout)
    pool = make_pool(config.rollout, config.suite, tiny_checkpoint, config.temperature, config.seed)
    try:
        summary = Trainer(config, pool, eval_state_counter(config.suite), show_progress=False).run()
    finally:
        pool.close()
    assert summary["iterations"] == 1
    line = json.loads((tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()[0])
    # a random policy never succeeds: both episodes run to libero_spatial's 220-step limit
    assert line["env_steps"] == 2 * 220 and line["train_success"] == 0.0
    assert line["seconds"]["rollout"] > 0 and "update" in line["seconds"]
    assert (tmp_path / "rl" / "iter_000001" / "manifest.json").is_file()
