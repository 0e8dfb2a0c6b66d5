"""The settle check: init states that do not settle into the layout LIBERO stores are flagged.

Under MuJoCo >= 3.4 (we pin 3.9) libero_spatial_05's bowl stays tilted on the ramekin's rim instead
of dropping onto it, and libero_10_00's ketchup, stored 2.9 cm inside the table, is launched with
two other bottles (docs/libero.md, "Known differences from published LIBERO numbers")."""

import numpy as np
import pytest

from sim_envs.libero_env import (SETTLE_SHIFT_LIMIT_M, SETTLE_SPEED_LIMIT_M_S, SETTLE_TURN_LIMIT_DEG, LiberoEnv,
                                 settle_report)


def pose(x=0.0, z=0.0, turn_deg=0.0):
    angle = np.radians(turn_deg)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    return np.array([x, 0.0, z]), rotation


def test_settle_report_flags_objects_that_do_more_than_drop_into_place():
    stored = {"dropped": pose(z=0.10), "slid": pose(), "tipped": pose(), "falling": pose(z=0.5)}
    before_last = {"dropped": pose(), "slid": pose(x=0.02), "tipped": pose(turn_deg=8), "falling": pose(z=0.2)}
    settled = {"dropped": pose(), "slid": pose(x=0.02), "tipped": pose(turn_deg=8), "falling": pose(z=0.15)}
    report = settle_report(stored, before_last, settled, step_seconds=0.05)
    assert report["unsettled_objects"] == ["slid", "tipped", "falling"]  # a straight drop is what settling is for
    assert report["shift_m"] == pytest.approx(0.02) and report["turn_deg"] == pytest.approx(8)
    assert report["speed_m_s"] == pytest.approx(1.0)
    assert SETTLE_SHIFT_LIMIT_M < 0.02 and SETTLE_TURN_LIMIT_DEG < 8 and SETTLE_SPEED_LIMIT_M_S < 1.0
    assert settle_report(stored, stored, stored, 0.05)["unsettled_objects"] == []


@pytest.mark.libero
@pytest.mark.parametrize("task, unsettled", [("libero_spatial_05", True), ("libero_10_00", True),
                                             ("libero_spatial_00", False)])
def test_init_states_that_do_not_settle_are_flagged(task, unsettled):
    env = LiberoEnv(task, image_size=32)
    try:
        for init_state_id in (0, 1):
            _, info = env.reset(options={"init_state_id": init_state_id, "split": "eval"})
            assert info["init_state_unsettled"] is unsettled, (task, init_state_id, info["settle"])
            *_, step_info = env.step(np.zeros(7))
            assert step_info["init_state_unsettled"] is unsettled  # also where an evaluator reads step infos
    finally:
        env.close()
    settle = info["settle"]
    if task == "libero_spatial_05":  # the bowl ends up on the rim, tilted and still moving
        assert "akita_black_bowl_1" in settle["unsettled_objects"] and settle["turn_deg"] > 8
    if task == "libero_10_00":  # the ketchup starts inside the table and is launched
        assert settle["penetration_m"] > 0.02 and "ketchup_1" in settle["unsettled_objects"]
        assert settle["speed_m_s"] > 0.5
    if not unsettled:
        assert settle["unsettled_objects"] == [] and settle["shift_m"] < 0.002 and settle["turn_deg"] < 1


@pytest.mark.libero
def test_evaluation_counts_the_episodes_of_unsettled_init_states(monkeypatch):
    """The flag reaches eval's report through the vector env: each episode is marked, each task counts them and
    gives the success rate over the other episodes (what published numbers can be compared with)."""
    from sim_envs import libero_env
    from sim_envs.vector import SimVecEnv, VecEnvConfig
    from vla_rl.core.types import TaskSpec
    from vla_rl.rollout.evaluate import evaluate

    limits = {suite: dict(row) for suite, row in libero_env.LIBERO_SUITES.items()}
    limits["libero_spatial"]["max_steps"] = 2  # the flag is known from the reset: no need to run 220 steps
    monkeypatch.setattr(libero_env, "LIBERO_SUITES", limits)
    specs = [TaskSpec("libero_spatial_05", 0, "eval"), TaskSpec("libero_spatial_00", 0, "eval"),
             TaskSpec("libero_spatial_05", 1, "eval")]
    with SimVecEnv(VecEnvConfig(suite="libero_spatial", num_envs=2, num_workers=0, image_size=32)) as env:
        result = evaluate(lambda obs: np.zeros((obs.batch_size, 1, 7), np.float32), env, specs)  # refills a slot
    assert [e.init_state_unsettled for e in result.episodes] == [True, False, True]
    table = result.per_task()
    assert table["libero_spatial_05"]["unsettled_init_states"] == 2
    assert table["libero_spatial_05"]["success_rate_settled"] is None  # no episode of it settled
    assert table["libero_spatial_00"]["unsettled_init_states"] == 0 and "success_rate_settled" not in table[
        "libero_spatial_00"]
