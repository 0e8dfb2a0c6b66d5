"""scripts/policy_drift.py: errors against the demonstrated actions, on a stand-in policy with known
actions and end to end on a tiny checkpoint with real Lift demos."""

import types

import numpy as np
import pytest

from sim_envs.demos import run_expert_episode
from sim_envs.tabletop_env import TabletopEnv
from tests.policy.conftest import make_policy
from tests.scripts.conftest import load_script
from vla_rl.core.demo_file import write_demo_file
from vla_rl.policy.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demos")
    env = TabletopEnv("Lift", image_size=64, wrist_camera=False)
    episodes = [run_expert_episode(env, i, "train", noise_std=0.1, seed=i, rotation_noise=False)[0] for i in range(2)]
    env.close()
    write_demo_file(directory / "Lift_demo.hdf5", episodes, {"env_name": "Lift", "suite": "tabletop"})
    return directory


class ShiftedPolicy:
    """Answers each observation with the demonstrated action, shifted by ``offset``; finds the action
    by the proprio row, which is unique within these demos."""

    def __init__(self, episodes, offset):
        self.table = {row.tobytes(): action for episode in episodes
                      for row, action in zip(episode.proprio().astype(np.float32), episode.actions)}
        self.offset = np.asarray(offset, np.float32)
        self.model = types.SimpleNamespace(config=make_policy().config)
        self.config = self.model.config

    def predict_actions(self, obs):
        return np.stack([self.table[row.tobytes()] + self.offset for row in obs.proprio])[:, None]


def test_errors_measure_the_offset_from_the_demonstrated_actions(lift_demos):
    drift = load_script("policy_drift")
    episodes = drift.demo_episodes(lift_demos, "Lift", 2)
    exact = drift.drift_of(ShiftedPolicy(episodes, np.zeros(7)), episodes, "expected")
    assert exact["translation_error"] == 0 and exact["rotation_error"] == 0
    assert exact["weak_grip_fraction"] == 0 and exact["grip_where_expert_closes"] > 0.5  # the expert closes to lift
    shifted = drift.drift_of(ShiftedPolicy(episodes, [0.3, 0.4, 0, 0, 0, 0.1, -1.0]), episodes, "expected")
    assert shifted["translation_error"] == pytest.approx(0.5, abs=1e-6)
    assert shifted["rotation_error"] == pytest.approx(0.1, abs=1e-6)
    assert shifted["grip_where_expert_closes"] == pytest.approx(exact["grip_where_expert_closes"] - 1.0, abs=1e-6)
    assert shifted["steps"] == sum(e.num_steps for e in episodes)


def test_a_tiny_checkpoint_against_real_demos(tmp_path, lift_demos):
    policy = make_policy()
    checkpoint = save_checkpoint(tmp_path / "ckpt", policy.model, policy.action_tokenizer, {"step": 0})
    rows = load_script("policy_drift").main(["--demos", str(lift_demos), "--tasks", "Lift", "--episodes", "1",
                                              "--checkpoints", str(checkpoint), str(checkpoint),
                                              "--json", str(tmp_path / "drift.json")])
    assert [(row["task"], row["decoding"]) for row in rows] == [("Lift", "expected"), ("Lift", "argmax")] * 2
    assert rows[0] == {**rows[2]} and rows[1] == rows[3]  # the same checkpoint twice: the same figures
    assert all(row["translation_error"] >= 0 for row in rows) and (tmp_path / "drift.json").is_file()
    with pytest.raises(FileNotFoundError, match="no demos for Push"):
        load_script("policy_drift").main(["--demos", str(lift_demos), "--tasks", "Push", "--checkpoints", str(checkpoint)])
