import dataclasses
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from sim_envs.vector import EnvWorkerDied, EnvWorkerError, TabletopVecEnv, VecEnvConfig, stop_process
from vla_rl.core import TaskSpec, VecEnv

TASK_MIX = ["Reach", "Lift", "Push", "PressButton"]


def specs(n):
    return [TaskSpec(TASK_MIX[i % len(TASK_MIX)], i, "eval") for i in range(n)]


def rollout(workers, steps=6, n=4):
    rng = np.random.default_rng(0)
    with TabletopVecEnv(VecEnvConfig(num_envs=n, num_workers=workers, image_size=32)) as venv:
        obs = venv.reset(specs(n))
        results = [venv.step(rng.uniform(-1, 1, (n, 7)).astype(np.float32)) for _ in range(steps)]
    return obs, results


def test_worker_processes_match_in_process_stepping():
    obs_local, local = rollout(workers=0)
    obs_remote, remote = rollout(workers=2)
    np.testing.assert_array_equal(obs_local.images["agentview"], obs_remote.images["agentview"])
    assert obs_local.instructions == obs_remote.instructions
    for a, b in zip(local, remote):
        np.testing.assert_allclose(a.obs.proprio, b.obs.proprio, atol=1e-6)
        np.testing.assert_array_equal(a.obs.images["agentview"], b.obs.images["agentview"])


def test_spec_shapes_and_protocol():
    with TabletopVecEnv(VecEnvConfig(num_envs=3, num_workers=0, image_size=32, wrist_camera=True)) as venv:
        assert isinstance(venv, VecEnv)
        obs = venv.reset(specs(3))
        assert venv.spec.cameras == ("agentview", "wrist")
        assert obs.images["wrist"].shape == (3, 32, 32, 3) and obs.proprio.shape == (3, venv.spec.proprio_dim)
        with pytest.raises(ValueError, match="one TaskSpec per env"):
            venv.reset(specs(2))
        with pytest.raises(KeyError, match="valid tasks"):
            venv.reset([TaskSpec("Nope", 0)] * 3)
        bad = np.zeros((3, 7), np.float32)
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match=r"envs \[1\]"):
            venv.step(bad)


def test_finished_envs_are_frozen_until_reset():
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as venv:
        venv.reset([TaskSpec("Reach", 0, "eval"), TaskSpec("Lift", 0, "eval")])
        env0 = venv._local.current[0]
        env0.max_episode_steps = 2  # make env 0 truncate quickly
        results = [venv.step(np.zeros((2, 7), np.float32)) for _ in range(4)]
        assert [bool(r.truncated[0]) for r in results] == [False, True, True, True]
        assert not results[-1].truncated[1]
        np.testing.assert_array_equal(results[1].obs.images["agentview"][0], results[3].obs.images["agentview"][0])
        assert env0.elapsed_steps == 2 and results[3].reward[0] == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_reset_slots_starts_new_episodes_where_asked_and_leaves_the_rest_running(workers):
    moves = np.tile(np.array([[0.5, 0, 0, 0, 0, 0, 0]], np.float32), (4, 1))
    with TabletopVecEnv(VecEnvConfig(num_envs=4, num_workers=workers, image_size=32)) as venv:
        start = venv.reset(specs(4))
        moved = venv.step(moves).obs
        fresh = venv.reset_slots([3, 1], [TaskSpec("Stack", 7, "eval"), specs(4)[1]])
        assert fresh.instructions[0] == start.instructions[0] and fresh.instructions[2] == start.instructions[2]
        assert "stack" in fresh.instructions[3] and fresh.instructions[1] == start.instructions[1]
        np.testing.assert_array_equal(fresh.proprio[[0, 2]], moved.proprio[[0, 2]])  # untouched slots kept going
        np.testing.assert_allclose(fresh.proprio[1], start.proprio[1], atol=1e-6)  # slot 1 back at its start
        np.testing.assert_array_equal(fresh.images["agentview"][1], start.images["agentview"][1])
        assert venv.step(moves).obs.proprio.shape == (4, 8)
        with pytest.raises(ValueError, match="distinct slots"):
            venv.reset_slots([0, 0], specs(2))
        with pytest.raises(ValueError, match="slots must be in"):
            venv.reset_slots([4], specs(1))


def test_dead_worker_is_a_clear_error_not_a_hang():
    venv = TabletopVecEnv(VecEnvConfig(num_envs=4, num_workers=2, image_size=32, step_timeout_s=60))
    try:
        venv.reset(specs(4))
        os.kill(venv._processes[1].pid, signal.SIGKILL)
        with pytest.raises(EnvWorkerError, match=r"worker 1 .*died with exit code -9"):
            venv.step(np.zeros((4, 7), np.float32))
    finally:
        venv.close()
    assert all(not p.is_alive() for p in venv._processes)


def test_workers_ignore_ctrl_c_and_leave_the_shutdown_to_the_parent():
    """Ctrl-C in a terminal signals the whole process group: workers that quit on it made the parent's next
    step write into dead pipes (a silent exit 141 under SIG_DFL, or a dead-worker traceback) instead of
    its own clean interruption."""
    venv = TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=1, image_size=32))
    try:
        venv.reset(specs(2))
        os.kill(venv._processes[0].pid, signal.SIGINT)
        time.sleep(0.5)
        assert venv._processes[0].is_alive()
        assert venv.step(np.zeros((2, 7), np.float32)).obs.proprio.shape == (2, 8)
    finally:
        venv.close()
    assert venv._processes[0].exitcode == 0  # close() still stops it


def test_after_a_worker_timeout_every_call_but_close_is_refused():
    """A hung worker's late reply must not be read as the answer to the next call."""
    venv = TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=2, image_size=32))
    try:
        venv.reset(specs(2))
        venv.config = dataclasses.replace(venv.config, step_timeout_s=0.5)  # after the workers' slow start
        hung = venv._processes[1].pid
        os.kill(hung, signal.SIGSTOP)
        try:
            with pytest.raises(EnvWorkerDied, match=r"worker 1 .*did not answer 'step'"):
                venv.step(np.zeros((2, 7), np.float32))
        finally:
            os.kill(hung, signal.SIGCONT)  # it now sends the step reply it owed
        time.sleep(0.5)
        for call in (lambda: venv.step(np.zeros((2, 7), np.float32)), lambda: venv.reset(specs(2)),
                     lambda: venv.reset_slots([0], specs(1))):
            with pytest.raises(EnvWorkerDied, match="close this env and build a new one"):
                call()
    finally:
        venv.close()
    assert all(not p.is_alive() for p in venv._processes)


def test_worker_exception_carries_the_remote_traceback():
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=1, image_size=32)) as venv:
        with pytest.raises(EnvWorkerError, match="before reset"):
            venv.step(np.zeros((2, 7), np.float32))
        venv.reset(specs(2))  # the worker survived its exception
        assert venv.step(np.zeros((2, 7), np.float32)).obs.batch_size == 2


def test_in_process_env_errors_are_env_worker_errors_too():
    """num_workers=0 keeps the failure contract of worker processes: EnvWorkerError, cause chained."""
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as venv:
        with pytest.raises(EnvWorkerError, match="before reset") as caught:
            venv.step(np.zeros((2, 7), np.float32))
        assert isinstance(caught.value.__cause__, RuntimeError)
        with pytest.raises(EnvWorkerError, match="0..49") as caught:
            venv.reset([TaskSpec("Lift", 99, "eval"), TaskSpec("Lift", 0, "eval")])
        assert isinstance(caught.value.__cause__, IndexError)
        venv.reset(specs(2))
        assert venv.step(np.zeros((2, 7), np.float32)).obs.batch_size == 2


def test_one_failing_worker_leaves_the_others_in_step():
    """Worker 1 fails (eval id out of range) while worker 0 succeeds; the next call must get
    fresh replies from both, not worker 0's stale one."""
    with TabletopVecEnv(VecEnvConfig(num_envs=4, num_workers=2, image_size=32)) as venv:
        bad = specs(2) + [TaskSpec("Lift", 99, "eval"), TaskSpec("Lift", 0, "eval")]
        with pytest.raises(EnvWorkerError, match="0..49"):
            venv.reset(bad)
        good = [TaskSpec("PressButton", 3, "eval")] * 4
        obs = venv.reset(good)
        assert len(set(obs.instructions)) == 1
        np.testing.assert_allclose(obs.proprio[0], obs.proprio[3], atol=1e-6)


def test_a_failed_build_keeps_the_slots_envs_and_a_failed_reset_never_steps_a_closed_env():
    with TabletopVecEnv(VecEnvConfig(num_envs=1, num_workers=0, image_size=32, max_envs_per_slot=1)) as venv:
        venv.reset([TaskSpec("Reach", 0, "eval")])
        group = venv._local
        reach, build = group.current[0], group.make_env

        def failing_build(task, **kwargs):
            raise RuntimeError("no GL context")

        group.make_env = failing_build
        with pytest.raises(EnvWorkerError, match="no GL context"):
            venv.reset([TaskSpec("Lift", 0, "eval")])
        assert group.envs[0] == {"Reach": reach} and group.current[0] is reach
        assert venv._slot_tasks == [["Reach"]]  # the memory check's record follows what exists
        assert reach._renderers  # not closed: its episode goes on
        assert venv.step(np.zeros((1, 7), np.float32)).obs.batch_size == 1
        group.make_env = build
        with pytest.raises(EnvWorkerError, match="0..49"):  # Lift is built and Reach closed, then the reset fails
            venv.reset([TaskSpec("Lift", 99, "eval")])
        assert group.current[0] is None and venv._slot_tasks == [["Lift"]]
        with pytest.raises(EnvWorkerError, match="before reset"):
            venv.step(np.zeros((1, 7), np.float32))


def test_after_a_failed_reset_in_a_worker_process_the_memory_record_follows_its_envs():
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=1, image_size=32, max_envs_per_slot=1)) as venv:
        venv.reset([TaskSpec("Reach", 0, "eval")] * 2)
        with pytest.raises(EnvWorkerError, match="0..49"):  # slot 0 builds Lift (closing Reach) and fails
            venv.reset([TaskSpec("Lift", 99, "eval"), TaskSpec("Lift", 0, "eval")])
        assert venv._slot_tasks == [["Lift"], ["Reach"]]  # slot 1 was never reached
        venv.reset([TaskSpec("Push", 0, "eval")] * 2)
        assert venv._slot_tasks == [["Push"], ["Push"]]


def test_close_releases_shared_memory():
    venv = TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=1, image_size=32))
    names = [h.name for h in venv._shm.values()]
    venv.close()
    venv.close()  # idempotent
    for name in names:
        assert not os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(EnvWorkerError, match="closed"):
        venv.reset(specs(2))


def _ignore_sigterm_and_wait(ready):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(60)


def test_a_worker_that_ignores_sigterm_is_killed():
    context = mp.get_context("fork")
    ready = context.Event()
    process = context.Process(target=_ignore_sigterm_and_wait, args=(ready,), daemon=True)
    process.start()
    assert ready.wait(10)
    start = time.monotonic()
    stop_process(process, grace_s=0.3)
    assert not process.is_alive() and process.exitcode == -signal.SIGKILL
    assert time.monotonic() - start < 5


def test_one_worker_per_usable_core_not_per_machine_core(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert VecEnvConfig(num_envs=16, num_workers=-1).resolved_workers() == 3
    assert VecEnvConfig(num_envs=2, num_workers=-1).resolved_workers() == 2
    assert VecEnvConfig(num_envs=16, num_workers=5).resolved_workers() == 5


def test_antialias_reaches_the_worker_processes_and_only_tabletop_offers_it_off():
    frames = {}
    for antialias in (True, False):
        with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=1, image_size=32, antialias=antialias)) as venv:
            frames[antialias] = venv.reset(specs(2)).images["agentview"].copy()
    assert (frames[True] != frames[False]).any()
    with pytest.raises(ValueError, match="not available in the robosuite suite"):
        VecEnvConfig(suite="robosuite", antialias=False)


def test_envs_that_would_not_fit_in_memory_are_refused_before_any_worker_starts():
    from sim_envs.vector import SimVecEnv, available_memory_mb

    if available_memory_mb() is None:
        pytest.skip("no /proc/meminfo on this platform")
    with pytest.raises(ValueError, match="use at most .* envs"):
        SimVecEnv(VecEnvConfig(suite="libero_10", num_envs=4096, num_workers=2, image_size=32))
    with pytest.raises(KeyError, match="valid suites"):
        VecEnvConfig(suite="isaac")


def test_a_reset_that_would_build_envs_beyond_the_available_memory_is_refused_before_building(monkeypatch):
    """Slots keep one env per task (up to max_envs_per_slot): the memory check counts the envs a reset builds."""
    import sim_envs.vector as vector

    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as venv:
        venv.reset([TaskSpec("Reach", 0, "eval")] * 2)
        monkeypatch.setattr(vector, "available_memory_mb", lambda: 60.0)  # one more 50-MB tabletop env fits, not two
        venv.reset([TaskSpec("Reach", 1, "eval")] * 2)  # builds nothing
        venv.reset_slots([0], [TaskSpec("Lift", 0, "eval")])  # builds one
        with pytest.raises(ValueError, match=r"build 2 more tabletop envs .*max_envs_per_slot=8"):
            venv.reset([TaskSpec("Push", 0, "eval")] * 2)
        assert [sorted(envs) for envs in venv._local.envs] == [["Lift", "Reach"], ["Reach"]]  # none was built
        venv.reset([TaskSpec("Reach", 0, "eval"), TaskSpec("Reach", 2, "eval")])  # still usable
    monkeypatch.undo()
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32, max_envs_per_slot=1)) as venv:
        venv.reset([TaskSpec("Reach", 0, "eval")] * 2)
        monkeypatch.setattr(vector, "available_memory_mb", lambda: 10.0)
        # each slot builds its Push env before closing its Reach env: one process, one slot at a time
        with pytest.raises(ValueError, match=r"build 0 more tabletop envs and 1 more for a moment"):
            venv.reset([TaskSpec("Push", 0, "eval")] * 2)
        assert [list(envs) for envs in venv._local.envs] == [["Reach"], ["Reach"]]
        monkeypatch.setattr(vector, "available_memory_mb", lambda: 60.0)
        venv.reset([TaskSpec("Push", 0, "eval")] * 2)  # room for the one passing env: no more envs than before
        assert [list(envs) for envs in venv._local.envs] == [["Push"], ["Push"]]
        venv.reset_slots([1], [TaskSpec("Push", 1, "eval")])
        monkeypatch.setattr(vector, "available_memory_mb", lambda: 10.0)
        venv.reset([TaskSpec("Push", 2, "eval")] * 2)  # kept envs build nothing, not even for a moment


def test_a_diverged_episode_is_flagged_in_the_step_info_once(tmp_path, monkeypatch):
    """The slot whose physics blew up says so on the step that cut it, and only there; the other never does."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as venv:
        venv.reset([TaskSpec("Lift", 0, "eval"), TaskSpec("Lift", 1, "eval")])
        first = venv.step(np.zeros((2, 7), np.float32))
        assert len(first.info) == 2 and not first.info_flag("physics_diverged").any()
        venv._local.current[1].data.qvel[:] = 1e12
        cut, after = (venv.step(np.zeros((2, 7), np.float32)) for _ in range(2))
    assert cut.info_flag("physics_diverged").tolist() == [False, True] and cut.truncated.tolist() == [False, True]
    assert after.truncated.tolist() == [False, True] and not after.info_flag("physics_diverged").any()
