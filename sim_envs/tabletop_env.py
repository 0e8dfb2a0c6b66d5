"""One tabletop task as a standard ``gymnasium.Env``.

Observation (a ``Dict`` space):
- ``agentview_image``: ``uint8 [H, W, 3]`` from the camera facing the robot across the table;
- ``wrist_image``: ``uint8 [H, W, 3]`` from the hand camera, only when ``wrist_camera=True``;
- ``proprio``: ``float32 [8]`` = EE position (3), EE orientation relative to pointing straight down
  as an axis-angle vector (3; zero at the home orientation, so it never wraps around pi during
  tabletop work), finger positions (2).

Action: ``float32 [7]`` in ``[-1, 1]``, OpenVLA's EE-delta convention (see ``sim_envs.arm``).
Reward is 1.0 on the step the success predicate holds, else 0.0; ``terminated`` is that success,
``truncated`` is the task's step limit. The instruction is ``env.instruction`` and
``info["instruction"]`` (gymnasium spaces have no natural place for free text). ``info["progress"]``
(also ``env.progress()``) is the task's dense staged progress in [0, 1], 1.0 exactly on success
(see ``Task.progress``): a training label for learned reward critics, not the reward. A step during
which the physics diverged (MuJoCo then resets the simulation itself) ends the episode as a failure:
``truncated``, ``info["physics_diverged"]`` true, progress 0.

Rendering: observations use MuJoCo's default 4x multisampling (``antialias=True``). ``antialias=False``
renders observations without it, about 1.9x faster on a CPU (llvmpipe: 4.6 -> 2.4 ms a 64 px frame) with
aliased edges: a different image, so a policy must be trained and evaluated with one setting
(``VLAConfig.antialias`` records it). Frames at any other size (videos) are always antialiased.

``reset(options=...)`` chooses the init state: ``{"init_state_id": i, "split": "eval" | "train"}``
or ``{"layout": layout_dict}``; without an id, one of the split's states is drawn from the env's seed
(a training one with no options).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from sim_envs.arm import DOWN_QUAT, ArmController
from sim_envs.init_states import get_layout, num_eval_states
from sim_envs.scene import ARM_JOINTS, FINGER_JOINTS, CameraSetup, build_scene_xml
from sim_envs.suites import checked_action, contract_spaces, step_limit
from sim_envs.tasks import Layout, get_task

CONTROL_HZ = 10
PHYSICS_DT = 0.002
SUBSTEPS = int(round(1.0 / (CONTROL_HZ * PHYSICS_DT)))
SETTLE_SUBSTEPS = 25
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512
MSAA_SAMPLES = 4  # MuJoCo's default multisampling of offscreen frames
# When a position, velocity or acceleration blows up (NaN, inf or huge), MuJoCo resets the simulation to
# the model's default state in the middle of mj_step and counts one of these warnings.
DIVERGENCE_WARNINGS = (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                       mujoco.mjtWarning.mjWARN_BADQACC)


class TabletopEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        task: str,
        image_size: int = 64,
        wrist_camera: bool = False,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        antialias: bool = True,
    ):
        if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.task_name = task
        self.task = get_task(task)
        self.image_size = image_size
        self.wrist_camera = wrist_camera
        self.antialias = antialias
        self.render_mode = render_mode
        self.max_episode_steps = step_limit(max_episode_steps, self.task.max_steps)
        xml = build_scene_xml(self.task.objects_xml(), CameraSetup(wrist=wrist_camera))
        self.scene_xml = xml  # also the kinematic model a joint-space deployment solves IK on
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.model.vis.global_.offwidth = MAX_IMAGE_SIZE
        self.model.vis.global_.offheight = MAX_IMAGE_SIZE
        self.data = mujoco.MjData(self.model)
        self.arm = ArmController(self.model, self.data)
        self._renderers: dict[int, mujoco.Renderer] = {}  # one per image size (observations, videos)
        self._home_base = self.arm.home_configuration()
        self.layout: Layout | None = None
        self.instruction = ""
        self.elapsed_steps = 0

        self.observation_space, self.action_space = contract_spaces(image_size, wrist_camera)

    # ---- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        if "layout" in options:
            layout = options.pop("layout")
            init_state_id, split = options.pop("init_state_id", None), options.pop("split", "custom")
        else:
            split = options.pop("split", "train")
            init_state_id = options.pop("init_state_id", None)
            if init_state_id is None:  # one of the task's fixed evaluation states, or any of the training stream
                high = num_eval_states(self.task_name) if split == "eval" else 2**31 - 1
                init_state_id = int(self.np_random.integers(0, high))
            layout = get_layout(self.task_name, int(init_state_id), split)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; valid: init_state_id, split, layout")
        self._apply(layout)
        info = {"instruction": self.instruction, "init_state_id": init_state_id, "split": split, "success": False,
                "progress": self.progress()}
        return self._observation(), info

    def step(self, action):
        self.arm.set_action(checked_action(action))
        return self._advance()

    def _advance(self):
        divergences = self._divergences()
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS)
        self.elapsed_steps += 1
        if self._divergences() > divergences:
            # The episode's scene is gone (MuJoCo reset it): a failure, ended as truncated because a
            # simulator fault is no outcome of the task; progress 0 rather than that of the default state.
            info = {"success": False, "instruction": self.instruction, "progress": 0.0, "physics_diverged": True}
            return self._observation(), 0.0, False, True, info
        success = self.is_success()
        truncated = self.elapsed_steps >= self.max_episode_steps and not success
        info = {"success": success, "instruction": self.instruction, "progress": self.progress(),
                "physics_diverged": False}
        return self._observation(), float(success), success, truncated, info

    def _divergences(self) -> int:
        return sum(int(self.data.warning[warning].number) for warning in DIVERGENCE_WARNINGS)

    def render(self):
        if self.render_mode == "rgb_array":
            return self.render_camera("agentview")
        return None

    def close(self):
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}

    # ---- robot-side read-out and joint control (the ROS sim bridge) -------------------------------
    def joint_state(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Names, positions and velocities of the arm joints then the finger joints."""
        names = list(ARM_JOINTS) + list(FINGER_JOINTS)
        qpos_adr = [self.model.joint(name).qposadr[0] for name in names]
        dof_adr = [self.model.joint(name).dofadr[0] for name in names]
        return names, self.data.qpos[qpos_adr].copy(), self.data.qvel[dof_adr].copy()

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Grip-site position (m, world frame) and orientation quaternion (w, x, y, z)."""
        return self.arm.ee_position(), self.arm.ee_quat()

    def step_joint_targets(self, arm_targets: np.ndarray, gripper: float):
        """Like ``step`` but with arm joint targets (rad, ``ARM_JOINTS`` order) instead of an
        end-effector delta; ``gripper`` as in the action (-1 open .. +1 closed)."""
        targets = np.asarray(arm_targets, dtype=np.float64)
        if targets.shape != (len(ARM_JOINTS),) or not np.all(np.isfinite(targets)) or not np.isfinite(gripper):
            raise ValueError(f"arm targets must be {len(ARM_JOINTS)} finite values and a finite gripper value")
        self.arm.set_joint_targets(np.clip(targets, self.arm.joint_low, self.arm.joint_high), gripper)
        return self._advance()

    # ---- helpers --------------------------------------------------------------------------
    def is_success(self) -> bool:
        return self.task.is_success(self.model, self.data, self.layout)

    def progress(self, layout: Layout | None = None) -> float:
        """The task's dense progress in [0, 1] for the current state (1.0 exactly on success); towards
        another objective of the same scene with ``layout`` from ``task.other_objectives``."""
        return self.task.progress(self.model, self.data, layout or self.layout)

    def named_pixels(self, camera: str = "agentview", size: int | None = None,
                     layout: Layout | None = None) -> np.ndarray:
        """``float32 [2, 2]``: where the instruction's named objects (``Task.named_points``: the object,
        then its goal) are now in ``camera``'s image of ``size`` pixels, as (column, row) with pixel
        i spanning [i, i + 1). Labels for training a localiser; may lie outside the image. ``layout``
        as in ``progress``."""
        points = self.task.named_points(self.model, self.data, layout or self.layout)
        return project_to_pixels(self.model, self.data, camera, points, size or self.image_size)

    def gripper_pixels(self, camera: str = "agentview", size: int | None = None) -> np.ndarray:
        """``float32 [2]``: where the grip site (between the fingertips) is in ``camera``'s image, as in
        ``named_pixels``: the label of the localiser's gripper point."""
        return project_to_pixels(self.model, self.data, camera, self.arm.ee_position()[None], size or self.image_size)[0]

    def set_state(self, state: np.ndarray) -> None:
        """Restore a demo file's ``states`` row (qpos then qvel) in the current layout's scene."""
        nq = self.model.nq
        if len(state) != nq + self.model.nv:
            raise ValueError(f"a state of this scene has {nq + self.model.nv} values, got {len(state)}")
        self.data.qpos[:], self.data.qvel[:] = state[:nq], state[nq:]
        mujoco.mj_forward(self.model, self.data)

    def render_camera(self, camera: str, size: int | None = None) -> np.ndarray:
        size = size or self.image_size
        if size not in self._renderers:
            if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
                raise ValueError(f"render size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {size}")
            # the context reads the sample count when it is made: only observations may go without
            self.model.vis.quality.offsamples = MSAA_SAMPLES if self.antialias or size != self.image_size else 0
            self._renderers[size] = mujoco.Renderer(self.model, size, size)
        renderer = self._renderers[size]
        renderer.update_scene(self.data, camera)
        return renderer.render()

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"agentview_image": self.render_camera("agentview"), "proprio": self.arm.proprio()}
        if self.wrist_camera:
            obs["wrist_image"] = self.render_camera("wrist")
        return obs

    def _home(self, ee_start: list[float]) -> np.ndarray:
        # The jittered start is a few cm from the solved home pose: two IK solves converge.
        q = self._home_base
        for _ in range(2):
            q = self.arm.solve_ik(np.asarray(ee_start), DOWN_QUAT, q)
        return q

    def _apply(self, layout: Layout) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.task.apply_layout(self.model, self.data, layout)
        self.arm.reset_to(self._home(layout["ee_start"]))
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_step(self.model, self.data, nstep=SETTLE_SUBSTEPS)
        self.layout = layout
        self.instruction = layout["instruction"]
        self.elapsed_steps = 0


def project_to_pixels(model: mujoco.MjModel, data: mujoco.MjData, camera: str, points: np.ndarray,
                      size: int) -> np.ndarray:
    """``[N, 3]`` world points -> ``float32 [N, 2]`` (column, row) in a ``size``-pixel square render of
    ``camera`` (pinhole with the camera's vertical field of view; rows grow downwards)."""
    cam = model.camera(camera).id
    offsets = np.asarray(points, np.float64) - data.cam_xpos[cam]
    local = offsets @ data.cam_xmat[cam].reshape(3, 3)  # camera frame: x right, y up, looking along -z
    depth = np.maximum(-local[:, 2], 1e-6)
    focal = (size / 2) / np.tan(np.radians(model.cam_fovy[cam]) / 2)
    return np.stack([size / 2 + focal * local[:, 0] / depth, size / 2 - focal * local[:, 1] / depth], 1).astype(np.float32)


def tabletop_suite():
    """Our own MuJoCo tabletop suite as a ``sim_envs.suites.Suite``."""
    from sim_envs import gym_id
    from sim_envs.init_states import EVAL_STREAM, eval_layout, num_eval_states
    from sim_envs.suites import Suite
    from sim_envs.tasks import TASKS

    def describe() -> list[dict[str, Any]]:
        return [{"task": name, "gym_id": gym_id(name), "max_steps": cls.max_steps,
                 "eval_init_states": num_eval_states(name), "train_init_states": "unbounded stream",
                 "summary": cls.summary, "instruction": eval_layout(name, 0)["instruction"]}
                for name, cls in TASKS.items()]

    return Suite(
        name="tabletop", summary="our MuJoCo tabletop arm: 7 tasks, 7-D EE-delta actions", control_hz=CONTROL_HZ,
        tasks=lambda: list(TASKS), make_env=TabletopEnv, num_eval_states=num_eval_states,
        max_steps=lambda task: get_task(task).max_steps, describe=describe,
        init_state_provenance={"eval_init_states": "sim_envs/init_states/<task>.json (frozen layouts)",
                               "stream": EVAL_STREAM, "seed_of_state": "SeedSequence([stream, task_index, id])"},
        antialias_optional=True,
    )


__all__ = ["TabletopEnv", "project_to_pixels", "CONTROL_HZ", "SUBSTEPS", "tabletop_suite"]
