"""LIBERO's reset retries only the placement sampler's failures, a bounded number of times.

Unit tests on stubs: they need robosuite (for its RandomizationError) but no LIBERO scene; the real
reset path is covered by tests/sim_envs/test_libero_env.py."""

from types import SimpleNamespace

import numpy as np
import pytest

from sim_envs import libero_env
from sim_envs.libero_env import MAX_RESET_ATTEMPTS, LiberoEnv, LiberoResetError, reset_placing_objects

pytestmark = pytest.mark.robosuite


class StubInnerEnv:
    """LIBERO's inner robosuite env: ``reset`` raises ``errors[i]`` on call i (None: succeeds)."""

    def __init__(self, errors):
        self.errors, self.calls = list(errors), 0
        self.sim = SimpleNamespace()  # no offscreen render context

    def reset(self):
        self.calls += 1
        error = self.errors[self.calls - 1] if self.calls <= len(self.errors) else None
        if error is not None:
            raise error
        return {"reset": self.calls}


def stub_libero_env(inner) -> LiberoEnv:
    env = object.__new__(LiberoEnv)  # no LIBERO scene: only what reset() touches
    env.task_name, env.instruction, env.num_noop_steps = "libero_goal_00", "stub", 0
    env._env = SimpleNamespace(env=inner)  # no reset() of its own: LIBERO's ControlEnv.reset must not be used
    env._observation = lambda raw: raw
    env._settle = lambda libero, raw: (raw, {"unsettled": None})  # the stub has no objects to settle
    env.render_mode, env._last_raw = "rgb_array", {}
    return env


def randomization_error():
    from robosuite.utils.errors import RandomizationError

    return RandomizationError("Cannot place all objects ;(")


def test_a_reset_that_always_fails_to_place_objects_ends_with_a_clear_error():
    inner = StubInnerEnv([randomization_error()] * 1000)
    env = stub_libero_env(inner)
    state = np.random.get_state()
    with pytest.raises(LiberoResetError, match=f"libero_goal_00.*{MAX_RESET_ATTEMPTS} resets"):
        env.reset(options={"init_state_id": 3, "split": "train"})
    assert inner.calls == MAX_RESET_ATTEMPTS
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global RNG is restored anyway


def test_placement_failures_are_retried_and_other_errors_are_not():
    inner = StubInnerEnv([randomization_error(), randomization_error()])
    assert reset_placing_objects(inner, "libero_goal_00") == {"reset": 3}
    for error in (ValueError("broken scene"), KeyboardInterrupt()):
        inner = StubInnerEnv([error])
        with pytest.raises(type(error)):
            stub_libero_env(inner).reset(options={"init_state_id": 0, "split": "train"})
        assert inner.calls == 1


def test_eval_ids_are_checked_before_the_reset_and_drawn_from_the_eval_states(monkeypatch):
    """LIBERO's reset takes over a second: a bad eval id must fail before it, and an eval reset
    without an id must draw one of the task's fixed states (not an id of the unbounded training stream)."""
    monkeypatch.setattr(libero_env, "fixed_init_states", lambda task: np.zeros((50, 3)))
    inner = StubInnerEnv([])
    env = stub_libero_env(inner)
    env._env.set_init_state = lambda state: {"state": state}
    with pytest.raises(IndexError, match="50 evaluation init states; got id 50"):
        env.reset(options={"init_state_id": 50, "split": "eval"})
    assert inner.calls == 0
    ids = {env.reset(seed=seed, options={"split": "eval"})[1]["init_state_id"] for seed in range(5)}
    assert ids <= set(range(50)) and len(ids) > 1


def test_a_step_limit_below_one_is_refused_before_the_scene_is_built():
    """None means the suite's own limit; 0 is an error (as in every suite), not the default in disguise."""
    with pytest.raises(ValueError, match=r"max_episode_steps must be >= 1 \(None: the task's own limit\), got 0"):
        LiberoEnv("libero_goal_00", image_size=32, max_episode_steps=0)


def test_a_closed_env_says_so():
    env = stub_libero_env(StubInnerEnv([]))
    env._env = None  # what close() leaves
    with pytest.raises(RuntimeError, match=r"LiberoEnv \(libero_goal_00\) has been closed"):
        env.reset(options={"init_state_id": 0, "split": "train"})
    with pytest.raises(RuntimeError, match="has been closed"):
        env.step(np.zeros(7))
    env.close()  # closing twice is fine


def test_render_needs_a_reset_and_returns_a_copy():
    import gymnasium as gym

    env = stub_libero_env(StubInnerEnv([]))
    with pytest.raises(gym.error.ResetNeeded, match=r"reset\(\) before render\(\)"):
        env.render()
    frame = np.zeros((4, 4, 3), np.uint8)
    env._last_raw["agentview"] = frame
    rendered = env.render()
    rendered[:] = 255
    assert np.array_equal(rendered, np.full((4, 4, 3), 255)) and not frame.any()  # the env's frame is untouched
    env.render_mode = None
    assert env.render() is None


def test_init_state_ids_must_be_non_negative_integers(monkeypatch):
    """A float or negative training id would seed a layout no id of the training stream names."""
    monkeypatch.setattr(libero_env, "fixed_init_states", lambda task: np.zeros((50, 3)))
    inner = StubInnerEnv([])
    env = stub_libero_env(inner)
    for bad_id in (2.0, 2.5, "3", True):
        with pytest.raises(TypeError, match="init_state_id must be an int"):
            env.reset(options={"init_state_id": bad_id, "split": "train"})
    with pytest.raises(ValueError, match="training init-state id must be >= 0, got -1"):
        env.reset(options={"init_state_id": -1, "split": "train"})
    with pytest.raises(IndexError, match="50 evaluation init states; got id -1"):
        env.reset(options={"init_state_id": -1, "split": "eval"})
    assert inner.calls == 0  # all refused before LIBERO's reset
    _, info = env.reset(options={"init_state_id": np.int64(7), "split": "train"})
    assert info["init_state_id"] == 7 and type(info["init_state_id"]) is int
