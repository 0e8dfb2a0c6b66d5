import json

import numpy as np
import pytest

from sim_envs import init_states
from sim_envs.tabletop_env import TabletopEnv
from sim_envs.tasks import TASKS


def test_every_task_has_50_stored_eval_states_matching_the_generator(tmp_path):
    written = init_states.write_eval_files(tmp_path)
    for path in written:
        stored = json.loads((init_states.INIT_STATE_DIR / path.name).read_text())
        assert len(stored["states"]) == init_states.EVAL_STATES_PER_TASK == 50
        # If this fails a sampler changed: the benchmark moved. Regenerate deliberately, say so.
        assert json.loads(path.read_text()) == stored, f"{path.name} no longer matches its generator"


@pytest.mark.parametrize("task", list(TASKS))
def test_training_stream_is_disjoint_from_eval(task):
    eval_states = {json.dumps(init_states.eval_layout(task, i), sort_keys=True) for i in range(50)}
    for i in range(200):
        assert json.dumps(init_states.train_layout(task, i), sort_keys=True) not in eval_states
    assert init_states.train_layout(task, 7) == init_states.train_layout(task, 7)


@pytest.mark.parametrize("task", list(TASKS))
def test_no_eval_state_starts_solved(task):
    env = TabletopEnv(task, image_size=32)
    for i in range(50):
        env.reset(options={"init_state_id": i, "split": "eval"})
        assert not env.is_success(), f"{task} eval init state {i} is already solved at reset"
    env.close()


def test_bad_ids_are_clear_errors():
    with pytest.raises(IndexError, match="0..49"):
        init_states.eval_layout("Lift", 50)
    with pytest.raises(ValueError, match="split"):
        init_states.get_layout("Lift", 0, "test")
    with pytest.raises(ValueError):
        init_states.train_layout("Lift", -1)
    for split in ("eval", "train"):  # not "missing init-state files", nor list.index's "'Nope' is not in list"
        with pytest.raises(KeyError, match="unknown tabletop task 'Nope'; valid tasks: Reach, Lift"):
            init_states.get_layout("Nope", 0, split)


def test_resetting_to_the_same_init_state_is_deterministic():
    env = TabletopEnv("PickPlace", image_size=32)
    a, _ = env.reset(options={"init_state_id": 5, "split": "eval"})
    env.step(np.ones(7) * 0.3)
    b, _ = env.reset(options={"init_state_id": 5, "split": "eval"})
    np.testing.assert_array_equal(a["agentview_image"], b["agentview_image"])
    np.testing.assert_allclose(a["proprio"], b["proprio"])
    env.close()


def test_editing_a_layout_in_place_leaves_the_eval_state_as_stored():
    """Eval states are read once per process; the layout a reset hands out (env.layout) is the caller's copy."""
    stored = json.loads((init_states.INIT_STATE_DIR / "Lift.json").read_text())["states"][0]
    env = TabletopEnv("Lift", image_size=32)
    first, _ = env.reset(options={"init_state_id": 0, "split": "eval"})
    env.layout["positions"][0][0] += 0.1
    env.layout["ee_start"][2] = 0.3
    again, _ = env.reset(options={"init_state_id": 0, "split": "eval"})
    np.testing.assert_array_equal(first["agentview_image"], again["agentview_image"])
    assert init_states.eval_layout("Lift", 0) == stored
    env.close()
