"""Vectorised environments of any suite (tabletop, robosuite, LIBERO): ``num_envs`` slots stepped in
``num_workers`` processes.

Why not ``gymnasium.vector.AsyncVectorEnv``: it runs one process per environment, but rollouts
want many more environments than cores (64 envs on 2 cores) and a different task per slot on
every reset. Here each worker owns a contiguous group of slots, steps and renders them, and writes
images straight into shared memory; only small arrays travel through the pipe.

Autoreset is off: once a slot's episode ends it is frozen (not stepped, not rendered), keeps
returning its final observation with reward 0 and its final done flags, until the next reset.
A worker that raises sends its traceback back; a worker that dies is reported with its exit code
(``EnvWorkerError``) instead of a hang. After a worker died or stopped answering (``EnvWorkerDied``)
every call but ``close()`` refuses: a hung worker's late reply would otherwise answer the next call.
Workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and a worker that quit on
it would turn the parent's clean interruption (its ``KeyboardInterrupt``, then ``close()``) into a
dead-worker error; the parent shuts its workers down itself.

``num_workers=0`` steps the envs in the calling process: an env that raises is still an
``EnvWorkerError`` (with the original exception as its ``__cause__``), but nothing isolates a crash
(a segfault in the renderer takes the caller down) and ``step_timeout_s`` is not enforced (a hung
env hangs the caller). Both need worker processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Literal, Sequence

import numpy as np

from vla_rl.core.config import option
from vla_rl.core.protocols import EnvCrashed
from vla_rl.core.types import EnvSpec, ObsBatch, StepResult, TaskSpec

from sim_envs.suites import ACTION_DIM, PROPRIO_DIM, get_suite


class EnvWorkerError(RuntimeError):
    """An env worker process raised or died; the message says which and why."""


class EnvWorkerDied(EnvWorkerError, EnvCrashed):
    """An env worker process died or stopped answering: this vector env cannot step any more."""


@dataclass(frozen=True)
class VecEnvConfig:
    suite: str = option("tabletop", "environment suite: tabletop, robosuite or a LIBERO suite (`vla-rl envs list`)")
    num_envs: int = option(8, "number of parallel environments (slots)")
    num_workers: int = option(-1, "worker processes; -1 = one per CPU core this process may use, 0 = step in "
                                  "this process (no crash isolation and no step timeout)")
    image_size: int = option(64, "camera image height and width in pixels (32-256)")
    wrist_camera: bool = option(False, "also render the wrist camera")
    antialias: bool = option(True, "render observations with 4x multisampling; false: ~1.9x faster frames on a CPU "
                                   "(tabletop only; the policy must have been trained on such frames)")
    start_method: Literal["spawn", "forkserver", "fork"] = option("spawn", "multiprocessing start method")
    step_timeout_s: float = option(120.0, "seconds per env a worker may take to answer before it counts as hung "
                                          "(worker processes only: not enforced with num_workers=0)")
    max_envs_per_slot: int = option(0, "envs kept built per slot (one per task; the least recently used "
                                       "closes); 0 = the suite's default (tabletop 8, robosuite 2, LIBERO 1)")
    check_memory: bool = option(True, "refuse to start, or to reset slots to tasks they have no env of yet, when "
                                      "the envs would not fit in the available memory")

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.num_workers < -1:
            raise ValueError(f"num_workers must be -1, 0 or positive, got {self.num_workers}")
        if self.max_envs_per_slot < 0:
            raise ValueError(f"max_envs_per_slot must be >= 0 (0 = the suite's default), got {self.max_envs_per_slot}")
        suite = get_suite(self.suite)  # an unknown suite is an error here, listing the valid ones
        if not self.antialias and not suite.antialias_optional:
            raise ValueError(f"antialias=False is not available in the {self.suite} suite (it renders its own way); "
                             f"only in the tabletop suite")

    def resolved_workers(self) -> int:
        workers = usable_cpus() if self.num_workers == -1 else self.num_workers
        return min(workers, self.num_envs)


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, which cpusets and container CPU pinning
    narrow), not every core of the machine (``os.cpu_count``); the latter where there is no mask."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def stop_process(process: mp.process.BaseProcess, grace_s: float = 5.0) -> None:
    """Wait up to ``grace_s`` for ``process`` to exit, then SIGTERM it, then SIGKILL it: a worker stuck in
    native code (or ignoring SIGTERM) must not outlive its vector env."""
    process.join(timeout=grace_s)
    if process.is_alive():
        process.terminate()
        process.join(timeout=grace_s)
    if process.is_alive():
        process.kill()
        process.join(timeout=grace_s)


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored while worker processes start: they inherit it (an ignored signal stays ignored across
    exec), so a Ctrl-C while a spawned worker is still importing its modules cannot kill it with a traceback.
    Only the main thread may change signal handlers; elsewhere the worker's own ``signal.signal`` call covers it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, which Python cannot put back
            signal.signal(signal.SIGINT, previous)


# The boolean entries of an env's step info that the vector env passes on, per env, in StepResult.info:
# physics_diverged (on the step it happened only), init_state_unsettled (LIBERO: every step of such an episode)
STEP_INFO_FLAGS = ("physics_diverged", "init_state_unsettled")


def envs_per_slot(config: VecEnvConfig) -> int:
    return config.max_envs_per_slot or get_suite(config.suite).envs_per_slot


def available_memory_mb() -> float | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_memory(config: VecEnvConfig) -> None:
    """A clear error instead of an out-of-memory kill halfway through a rollout: LIBERO envs hold
    ~1.7 GB each, so 16 of them do not fit where a tabletop rollout of 64 does.

    Counts the one env every slot builds on its first reset. A slot keeps one env per task it is reset to,
    up to ``envs_per_slot``, but which tasks is known only at reset: ``SimVecEnv`` checks those envs when a
    reset would build them (``check_new_envs_fit``). Counting ``envs_per_slot`` per slot here would refuse
    a 32-env tabletop evaluation on a machine with 8 GB free, and a 2-task rollout never builds more
    than 2 per slot."""
    suite = get_suite(config.suite)
    available = available_memory_mb()
    needed = config.num_envs * suite.env_memory_mb
    if available is not None and needed > available:
        fit = max(1, int(available // suite.env_memory_mb))
        raise ValueError(
            f"{config.num_envs} {config.suite} envs need about {needed / 1024:.1f} GB (~{suite.env_memory_mb} MB "
            f"each, one per slot; a slot keeps up to {envs_per_slot(config)}, one per task, checked when a reset "
            f"builds them) but {available / 1024:.1f} GB is available: use at most {fit} envs, or set "
            "check_memory=False to try anyway")


def check_new_envs_fit(config: VecEnvConfig, new_envs: int, passing_envs: int = 0) -> None:
    """Before a reset that would build ``new_envs`` more envs (slots reset to tasks they keep no env of)
    and ``passing_envs`` more for a moment (full slots that change task build the new env before closing
    their least recently used one): a clear error instead of an out-of-memory kill, while nothing is built."""
    suite = get_suite(config.suite)
    available = available_memory_mb()
    needed = (new_envs + passing_envs) * suite.env_memory_mb
    if available is not None and needed > available:
        passing = (f" and {passing_envs} more for a moment (a full slot builds its new task's env before closing "
                   "its least recently used one)") if passing_envs else ""
        raise ValueError(
            f"this reset would build {new_envs} more {config.suite} envs{passing} (a slot keeps one per task it is "
            f"reset to, up to max_envs_per_slot={envs_per_slot(config)}), about {needed / 1024:.1f} GB, but "
            f"{available / 1024:.1f} GB is available: set max_envs_per_slot lower (slots then rebuild envs when "
            "they change task), use fewer envs or fewer tasks, or set check_memory=False to try anyway")


class _SlotGroup:
    """Environment slots of one process; lazily built envs per (slot, task), least recently used closed."""

    def __init__(self, slots: int, suite: str, image_size: int, wrist_camera: bool, max_envs_per_slot: int,
                 antialias: bool = True):
        self.make_env = get_suite(suite).make_env
        self.image_size, self.wrist_camera, self.max_envs = image_size, wrist_camera, max_envs_per_slot
        self.render_options = {} if antialias else {"antialias": False}  # suites without the option never see it
        self.envs: list[dict[str, Any]] = [{} for _ in range(slots)]  # insertion order = least recent first
        self.current: list[Any] = [None] * slots
        self.done = np.zeros(slots, dtype=bool)
        self.final = [(False, False, False)] * slots  # terminated, truncated, success
        self.last_proprio = np.zeros((slots, PROPRIO_DIM), np.float32)

    def _env(self, slot: int, task: str):
        envs = self.envs[slot]
        if task in envs:
            envs[task] = envs.pop(task)  # most recently used goes last
            return envs[task]
        # Built before the least recently used closes: a build that raises leaves the slot's envs as they were.
        env = self.make_env(task, image_size=self.image_size, wrist_camera=self.wrist_camera, **self.render_options)
        while len(envs) >= self.max_envs:
            evicted = envs.pop(next(iter(envs)))
            if self.current[slot] is evicted:  # if this slot's reset now fails, step() must not reach a closed env
                self.current[slot] = None
            evicted.close()
        envs[task] = env
        return env

    def reset(self, specs: Sequence[TaskSpec], images: dict[str, np.ndarray]) -> dict[str, Any]:
        instructions = []
        for slot, spec in enumerate(specs):
            env = self._env(slot, spec.task)
            obs, info = env.reset(options={"init_state_id": spec.init_state_id, "split": spec.split})
            self.current[slot] = env
            self._store(slot, obs, images)
            instructions.append(info["instruction"])
        self.done[:] = False
        self.final = [(False, False, False)] * len(specs)
        return {"proprio": self.last_proprio.copy(), "instructions": instructions}

    def reset_slots(self, pairs: Sequence[tuple[int, TaskSpec]], images: dict[str, np.ndarray]) -> dict[str, Any]:
        """Reset only the ``(slot, spec)`` pairs; every other slot keeps its episode (running or ended)."""
        instructions = {}
        for slot, spec in pairs:
            env = self._env(slot, spec.task)
            obs, info = env.reset(options={"init_state_id": spec.init_state_id, "split": spec.split})
            self.current[slot] = env
            self._store(slot, obs, images)
            instructions[slot] = info["instruction"]
            self.done[slot] = False
            self.final[slot] = (False, False, False)
        return {"proprio": self.last_proprio.copy(), "instructions": instructions}

    def step(self, actions: np.ndarray, images: dict[str, np.ndarray]) -> dict[str, Any]:
        slots = len(self.current)
        reward = np.zeros(slots, np.float32)
        flags = np.zeros((slots, 3), bool)
        info_flags = {name: np.zeros(slots, bool) for name in STEP_INFO_FLAGS}  # False for slots not stepped
        for slot, env in enumerate(self.current):
            if env is None:
                raise RuntimeError("step() called before reset()")
            if self.done[slot]:
                flags[slot] = self.final[slot]
                continue
            obs, reward[slot], terminated, truncated, info = env.step(actions[slot])
            self._store(slot, obs, images)
            flags[slot] = (terminated, truncated, info["success"])
            for name, values in info_flags.items():
                values[slot] = bool(info.get(name) or False)
            if terminated or truncated:
                self.done[slot] = True
                self.final[slot] = (terminated, truncated, info["success"])
        return {"proprio": self.last_proprio.copy(), "reward": reward, "flags": flags, "info_flags": info_flags}

    def held_tasks(self, _payload: Any = None, _images: Any = None) -> list[list[str]]:
        """Each slot's tasks with an env built, least recently used first."""
        return [list(envs) for envs in self.envs]

    def _store(self, slot: int, obs: dict[str, np.ndarray], images: dict[str, np.ndarray]) -> None:
        self.last_proprio[slot] = obs["proprio"]
        for camera, buffer in images.items():
            buffer[slot] = obs[f"{camera}_image"]

    def close(self) -> None:
        for envs in self.envs:
            for env in envs.values():
                env.close()


def _attach(shm_names: dict[str, str], shape: tuple[int, ...]) -> tuple[dict, dict[str, np.ndarray]]:
    handles = {cam: shared_memory.SharedMemory(name=name) for cam, name in shm_names.items()}
    arrays = {cam: np.ndarray(shape, np.uint8, buffer=h.buf) for cam, h in handles.items()}
    return handles, arrays


def _worker_main(conn, start: int, stop: int, config: VecEnvConfig, shm_names) -> None:
    # Again here, not only inherited from _sigint_ignored: a forkserver child gets the server's handlers back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    handles, arrays = _attach(shm_names, (config.num_envs, config.image_size, config.image_size, 3))
    views = {cam: array[start:stop] for cam, array in arrays.items()}
    group = None
    try:
        group = _SlotGroup(stop - start, config.suite, config.image_size, config.wrist_camera, envs_per_slot(config),
                           config.antialias)
        while True:
            command, payload = conn.recv()
            try:
                if command == "reset":
                    conn.send(("ok", group.reset(payload, views)))
                elif command == "reset_slots":
                    conn.send(("ok", group.reset_slots(payload, views)))
                elif command == "step":
                    conn.send(("ok", group.step(payload, views)))
                elif command == "held_tasks":
                    conn.send(("ok", group.held_tasks()))
                elif command == "close":
                    conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception:  # noqa: BLE001 - the traceback is sent to the parent, which raises
                conn.send(("error", traceback.format_exc()))
    except EOFError:  # the parent is gone
        return
    finally:
        if group is not None:
            group.close()
        del views, arrays
        for handle in handles.values():
            handle.close()


class SimVecEnv:
    """The ``VecEnv`` of one suite (``config.suite``). Use as a context manager or call ``close()``."""

    def __init__(self, config: VecEnvConfig = VecEnvConfig()):
        self.config = config
        self.suite = get_suite(config.suite)
        cameras = ("agentview", "wrist") if config.wrist_camera else ("agentview",)
        # Every suite speaks the tabletop's 8-D proprio and 7-D action (sim_envs.suites).
        self.spec = EnvSpec(
            num_envs=config.num_envs, cameras=cameras, image_size=config.image_size, proprio_dim=PROPRIO_DIM,
            action_dim=ACTION_DIM, control_hz=self.suite.control_hz,
            max_episode_steps=max(self.suite.max_steps(t) for t in self.suite.tasks()),
        )
        self.num_workers = config.resolved_workers()
        if config.check_memory:
            check_memory(config)
        shape = (config.num_envs, config.image_size, config.image_size, 3)
        self._shm = {cam: shared_memory.SharedMemory(create=True, size=int(np.prod(shape))) for cam in cameras}
        self._images = {cam: np.ndarray(shape, np.uint8, buffer=h.buf) for cam, h in self._shm.items()}
        self._instructions = [""] * config.num_envs
        self._closed = False
        # Why the env is broken, once a worker died or stopped answering: a hung worker may still send the
        # reply it owes, which the next call would read as its own answer, so every later call but close() refuses.
        self._broken: str | None = None
        # The tasks each slot keeps an env of, least recently used first, as _SlotGroup keeps them (up to
        # envs_per_slot; the least recently used closes to make room), so the parent knows what a reset builds.
        self._slot_tasks: list[list[str]] = [[] for _ in range(config.num_envs)]
        self._processes: list[mp.process.BaseProcess] = []
        self._conns = []
        if self.num_workers == 0:
            self._local = _SlotGroup(config.num_envs, config.suite, config.image_size, config.wrist_camera,
                                     envs_per_slot(config), config.antialias)
            self._bounds = [(0, config.num_envs)]
            return
        self._local = None
        edges = np.linspace(0, config.num_envs, self.num_workers + 1).round().astype(int)
        self._bounds = list(zip(edges[:-1], edges[1:]))
        context = mp.get_context(config.start_method)
        names = {cam: h.name for cam, h in self._shm.items()}
        with _sigint_ignored():
            for start, stop in self._bounds:
                parent, child = context.Pipe()
                process = context.Process(
                    target=_worker_main, daemon=True,
                    args=(child, int(start), int(stop), config, names),
                )
                process.start()
                child.close()
                self._processes.append(process)
                self._conns.append(parent)

    # ---- VecEnv API ---------------------------------------------------------------------
    def reset(self, tasks: Sequence[TaskSpec]) -> ObsBatch:
        if len(tasks) != self.config.num_envs:
            raise ValueError(f"reset needs one TaskSpec per env ({self.config.num_envs}), got {len(tasks)}")
        for spec in tasks:
            self.suite.check_task(spec.task)
        self._check_memory_for(range(self.config.num_envs), tasks)
        replies = self._resetting("reset", [list(tasks[a:b]) for a, b in self._bounds])
        self._instructions = [text for reply in replies for text in reply["instructions"]]
        return self._obs(np.concatenate([r["proprio"] for r in replies]))

    def reset_slots(self, slots: Sequence[int], tasks: Sequence[TaskSpec]) -> ObsBatch:
        """Start new episodes of ``tasks`` in ``slots`` only (after ``reset``); the other slots go on
        with their episodes, and ended ones stay ended. Evaluation refills each slot as soon as its
        episode ends instead of waiting for the whole wave's slowest one."""
        if len(slots) != len(tasks) or len(set(slots)) != len(slots):
            raise ValueError(f"reset_slots needs distinct slots, one per task; got {list(slots)} for {len(tasks)} tasks")
        if any(not 0 <= slot < self.config.num_envs for slot in slots):
            raise ValueError(f"slots must be in 0..{self.config.num_envs - 1}, got {list(slots)}")
        for spec in tasks:
            self.suite.check_task(spec.task)
        self._check_memory_for(slots, tasks)
        payloads = [[(slot - a, spec) for slot, spec in zip(slots, tasks) if a <= slot < b] for a, b in self._bounds]
        replies = self._resetting("reset_slots", payloads)
        for (a, _), reply in zip(self._bounds, replies):
            for local, instruction in reply["instructions"].items():
                self._instructions[a + local] = instruction
        return self._obs(np.concatenate([r["proprio"] for r in replies]))

    def step(self, actions: np.ndarray) -> StepResult:
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.config.num_envs, ACTION_DIM):
            raise ValueError(f"actions must be [{self.config.num_envs}, {ACTION_DIM}], got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            bad = sorted(set(np.nonzero(~np.isfinite(actions))[0].tolist()))
            raise ValueError(f"actions contain NaN or inf for envs {bad}; no env was stepped")
        replies = self._call("step", [actions[a:b] for a, b in self._bounds])
        flags = np.concatenate([r["flags"] for r in replies])
        info_flags = {name: np.concatenate([r["info_flags"][name] for r in replies]) for name in STEP_INFO_FLAGS}
        return StepResult(
            obs=self._obs(np.concatenate([r["proprio"] for r in replies])),
            reward=np.concatenate([r["reward"] for r in replies]),
            terminated=flags[:, 0], truncated=flags[:, 1], success=flags[:, 2],
            info=[{name: bool(values[i]) for name, values in info_flags.items()} for i in range(len(flags))],
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._local is not None:
            self._local.close()
        for conn, process in zip(self._conns, self._processes):
            try:
                if process.is_alive():
                    conn.send(("close", None))
                    if conn.poll(5):
                        conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            stop_process(process)
            conn.close()
        self._images = {}
        for handle in self._shm.values():
            handle.close()
            handle.unlink()

    def __enter__(self) -> "SimVecEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing left to report to
            pass

    # ---- internals ------------------------------------------------------------------------
    def _obs(self, proprio: np.ndarray) -> ObsBatch:
        return ObsBatch(
            images={cam: array.copy() for cam, array in self._images.items()},
            proprio=proprio,
            instructions=list(self._instructions),
        )

    def _check_memory_for(self, slots: Sequence[int], tasks: Sequence[TaskSpec]) -> None:
        """Refuse (``check_new_envs_fit``) a reset whose new envs would not fit, before any is built; else
        record the slots' tasks. A full slot that changes task builds its new env before closing its least
        recently used one, so for that moment it holds one env more: its worker process resets its slots one
        after another, so each process with such a slot needs room for one env beyond the reset's lasting ones."""
        limit = envs_per_slot(self.config)
        held = {slot: list(self._slot_tasks[slot]) for slot in slots}
        new_envs, switching_processes = 0, set()
        for slot, spec in zip(slots, tasks):
            envs = held[slot]
            if spec.task in envs:
                envs.remove(spec.task)
            elif len(envs) >= limit:
                switching_processes.add(next(i for i, (a, b) in enumerate(self._bounds) if a <= slot < b))
                envs.pop(0)
            else:
                new_envs += 1
            envs.append(spec.task)
        if (new_envs or switching_processes) and self.config.check_memory:
            check_new_envs_fit(self.config, new_envs, len(switching_processes))
        for slot, envs in held.items():
            self._slot_tasks[slot] = envs

    def _resetting(self, command: str, payloads: list[Any]) -> list[Any]:
        """``_call`` for a reset. One that fails in a slot (an env that would not build or reset) has built and
        closed envs up to there, not what ``_check_memory_for`` recorded: the slots' envs are read back from
        the workers that still answer, so the next memory check counts what exists."""
        try:
            return self._call(command, payloads)
        except EnvWorkerError:
            if self._broken is None and not self._closed:
                try:
                    held = [tasks for reply in self._call("held_tasks", [None] * len(self._bounds)) for tasks in reply]
                    self._slot_tasks = held
                except EnvWorkerError:  # the first error is the one to report
                    pass
            raise

    def _call(self, command: str, payloads: list[Any]) -> list[Any]:
        if self._closed:
            raise EnvWorkerError("the vector env is closed")
        if self._broken is not None:
            raise EnvWorkerDied(f"this vector env is broken ({self._broken}): close this env and build a new one")
        if self._local is not None:
            try:
                return [getattr(self._local, command)(payloads[0], self._images)]
            except Exception as error:  # the same contract as a worker's: an EnvWorkerError, the cause chained
                raise EnvWorkerError(f"envs stepped in this process (num_workers=0) failed during {command!r}: "
                                     f"{type(error).__name__}: {error}") from error
        for index, (conn, payload) in enumerate(zip(self._conns, payloads)):
            try:
                conn.send((command, payload))
            except (BrokenPipeError, OSError):
                self._raise_dead(index, command)
        # Read every worker's reply before raising, so no stale reply is left in a pipe.
        replies, errors = [], []
        for index in range(len(self._conns)):
            try:
                replies.append(self._receive(index, command))
            except EnvWorkerError as error:
                errors.append(error)
        if errors:  # a dead worker first: it decides what the caller must do (build a new env)
            raise next((e for e in errors if isinstance(e, EnvCrashed)), errors[0])
        return replies

    def _receive(self, index: int, command: str) -> Any:
        conn, process = self._conns[index], self._processes[index]
        start, stop = self._bounds[index]
        timeout = self.config.step_timeout_s * (stop - start)  # a worker steps its envs one after another
        deadline = time.monotonic() + timeout
        while not conn.poll(0.05):
            if not process.is_alive():
                self._raise_dead(index, command)
            if time.monotonic() > deadline:
                self._broken = f"env worker {index} did not answer {command!r} in time"
                raise EnvWorkerDied(
                    f"env worker {index} (pid {process.pid}) did not answer {command!r} within "
                    f"{timeout:g} s ({self.config.step_timeout_s:g} s per env); close this env and build a new one"
                )
        try:
            status, payload = conn.recv()
        except (EOFError, ConnectionResetError):
            self._raise_dead(index, command)
        if status == "error":
            raise EnvWorkerError(f"env worker {index} failed during {command!r}:\n{payload}")
        return payload

    def _raise_dead(self, index: int, command: str) -> None:
        process = self._processes[index]
        process.join(timeout=1)
        a, b = self._bounds[index]
        self._broken = f"env worker {index} died during {command!r}"
        raise EnvWorkerDied(
            f"env worker {index} (pid {process.pid}, envs {a}..{b - 1}) died with exit code "
            f"{process.exitcode} during {command!r}; close this vector env and create a new one"
        )


TabletopVecEnv = SimVecEnv  # the name it had before other suites joined; kept for existing callers
