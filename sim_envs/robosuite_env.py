"""Five robosuite 1.5.2 Panda tasks behind the tabletop env's gymnasium contract.

Tasks: Lift, Stack, PickPlaceCan (robosuite's single-can PickPlace), NutAssemblySquare (square nut
only) and Door, each with robosuite's Panda arm and its default BASIC composite controller. robosuite
is imported only when an env is built; ``make setup`` installs it
(``pip install --no-deps robosuite==1.5.2 mink==0.0.5``).

**Action** ``float32 [7]`` in ``[-1, 1]`` = EE delta position (3), EE delta rotation as an
axis-angle vector (3), gripper (1). It is passed (clipped to [-1, 1]) to robosuite's OSC_POSE
controller in delta mode, whose input range is [-1, 1] and whose output is scaled linearly to
``MAX_POS_DELTA`` = 0.05 m and ``MAX_ROT_DELTA`` = 0.5 rad per control step at ``|a| = 1``; the
constructor checks that the controller config still says so. Both deltas are expressed in the
robot base frame, whose axes are the world axes in all five tasks (+x points from the robot across
the table, +z up), and are applied to the *achieved* pose of the current step (the goal is the
current pose plus the delta; the arm lags the goal, so +1 on x for 10 steps moves ~0.1 m, not 0.5 m).
Gripper: -1 opens, +1 closes (verified by test: +1 shrinks the finger gap). robosuite's Panda
gripper uses only the *sign* of the command: each step moves the finger target by 0.2 of its range
towards open (< 0) or closed (> 0), so a full close takes about 5 steps and 0 holds the target.
Control runs at 20 Hz (25 physics steps of 2 ms per action).

**Observation**: the keys, dtypes and layout of ``sim_envs.tabletop_env``, but not every value means
the same (see the finger positions below; the action's rotation scale differs too, 0.5 rad per step
here and in LIBERO against the tabletop arm's 0.3):
- ``agentview_image``: ``uint8 [H, W, 3]`` from robosuite's ``agentview`` camera (facing the robot
  across the table); ``wrist_image`` from ``robot0_eye_in_hand`` only when ``wrist_camera=True``.
  robosuite renders with the OpenGL convention (bottom row first); we flip the rows, so the images
  are the true camera view with "up" up (pixel-identical to ``mujoco.Renderer``, checked by test).
  No left-right mirroring: this is *not* the 180-degree rotation OpenVLA applies to LIBERO frames.
- ``proprio``: ``float32 [8]`` = EE position (``robot0_eef_pos``, world frame, metres; the table top
  is at z = 0.8 m), EE orientation (from ``robot0_eef_quat``, x-y-z-w) as the world-frame rotation
  vector from "gripper pointing straight down" (as in the tabletop env: the raw axis-angle of a
  downward gripper sits at a rotation of about pi, the relative one stays near zero;
  ``sim_envs.suites.rotation_from_down``), and the two finger joint positions
  (``robot0_gripper_qpos``). The Panda's fingers mirror each other, so these are about (+q, -q)
  with q in [0, 0.04] m; the tabletop arm's are both positive. Clipped to ``PROPRIO_BOUND``, which
  real values never reach.

**Reward / termination.** Reward 1.0 on a step where robosuite's own success predicate
(``_check_success``) holds, else 0.0; ``terminated`` is that success; ``truncated`` is our step
limit without success, never both. robosuite's own horizon and done flag are switched off
(``ignore_done=True``). The instruction is ``env.instruction`` and ``info["instruction"]``.

**Init states.** ``reset(options={"init_state_id": i, "split": "eval" | "train"})``. robosuite draws
every random part of a reset (object placements through the placement sampler, the robot's joint
initialisation noise) from one ``numpy.random.Generator``, ``env.rng``, which the samplers hold by
reference. Before each reset we set that generator's state to ``default_rng([stream, crc32(task),
i])``, where ``stream`` is ``EVAL_STREAM`` or ``TRAIN_STREAM``: the init state is a deterministic
function of (task, split, id), and the two splits never share a seed. ``eval`` has the fixed ids
0-49 per task, ``train`` any id >= 0; without an id, one is drawn from the env's ``np_random`` (a
train id unless ``split`` says eval), so ``reset(seed=s)`` is reproducible. Resets are soft
(``hard_reset=False``: the MuJoCo model is built once), and the model's own random choices (e.g.
Lift's cube size) are drawn once at construction from ``MODEL_SEED``, so every env instance has the
same model. The states are reproducible for a given robosuite (1.5.2) and MuJoCo (3.9.0); unlike the
tabletop suite they are not frozen into files, so a change to robosuite's samplers would move them.

**Rendering.** Several envs may share a process: each re-activates its own offscreen GL context
before robosuite renders (robosuite itself does so only once, at creation). On the CPU renderer
(llvmpipe) a frame costs ~75 ms at any size (4x MSAA over ~350k mesh vertices), physics ~25 ms.

**Step limits** at 20 Hz: Lift 200, Stack 300, PickPlaceCan 400, NutAssemblySquare 400, Door 300
(see ``TASKS`` for why).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from sim_envs.suites import (PROPRIO_BOUND, checked_action, contract_spaces, rotation_from_down, split_and_id,
                             step_limit)

CONTROL_HZ = 20
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512
NUM_EVAL_STATES = 50
EVAL_STREAM = 31_415_001
TRAIN_STREAM = 27_182_002
MODEL_SEED = 0
MAX_POS_DELTA = 0.05  # metres per control step at |a| = 1 (robosuite's Panda OSC_POSE output range)
MAX_ROT_DELTA = 0.5  # radians per control step at |a| = 1
ROBOSUITE_HORIZON = 1_000_000  # robosuite's own episode limit: never reached, and ignore_done=True anyway
CAMERAS = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
SPLITS = ("eval", "train")
ROBOSUITE_VERSION = "1.5"


@dataclass(frozen=True)
class RobosuiteTask:
    """One task: robosuite env name, step limit at 20 Hz, fixed instruction, one-line summary."""

    env_name: str
    max_steps: int
    instruction: str
    summary: str


# Step limits: robomimic's proficient-human demos at 20 Hz take roughly 50 steps (Lift), 120 (Can)
# and 150 (Square), and robomimic evaluates with 400-step rollouts. We allow ~3-4x a human demo so a
# policy may retry a failed grasp, but cap Lift lower (a short reach-and-lift, 200 steps = 10 s) and
# give Stack (two cube placements close together, ~Lift plus a careful place) and Door (reach,
# turn the latch handle, pull) 300. Can and Square keep robomimic's 400 (a long carry; a precise insertion).
TASKS: dict[str, RobosuiteTask] = {
    "Lift": RobosuiteTask("Lift", 200, "lift the red cube", "lift a small red cube off the table"),
    # Stack: cubeA (red) must end resting on cubeB (green) and released (robosuite's r_stack).
    "Stack": RobosuiteTask("Stack", 300, "stack the red cube on top of the green cube",
                           "put the red cube on the green cube and let go"),
    "PickPlaceCan": RobosuiteTask("PickPlaceCan", 400, "pick up the can and place it in its bin",
                                  "carry the can from the source bin into its compartment of the target bin"),
    "NutAssemblySquare": RobosuiteTask("NutAssemblySquare", 400, "fit the square nut onto the square peg",
                                       "pick up the square nut by its handle and slide it down the square peg"),
    "Door": RobosuiteTask("Door", 300, "open the door", "turn the handle to unlatch the door and pull it open"),
}
ROBOSUITE_TASKS: tuple[str, ...] = tuple(TASKS)


def get_task(task: str) -> RobosuiteTask:
    if task not in TASKS:
        raise KeyError(f"unknown robosuite task {task!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[task]


def num_eval_states(task: str) -> int:
    get_task(task)
    return NUM_EVAL_STATES


def max_steps(task: str) -> int:
    return get_task(task).max_steps


def gym_id(task: str) -> str:
    return f"vla_rl/robosuite-{task}-v0"


def init_state_seed(task: str, split: str, init_state_id: int) -> list[int]:
    """The seed of robosuite's reset RNG for one init state; the two splits use different streams."""
    get_task(task)
    if split not in SPLITS:
        raise ValueError(f"init-state split must be 'eval' or 'train', got {split!r}")
    if isinstance(init_state_id, bool) or not isinstance(init_state_id, (int, np.integer)):
        raise TypeError(f"init_state_id must be an int, got {init_state_id!r}")
    init_state_id = int(init_state_id)
    if split == "eval" and not 0 <= init_state_id < NUM_EVAL_STATES:
        raise IndexError(f"{task} has evaluation init states 0..{NUM_EVAL_STATES - 1}, got {init_state_id}")
    if init_state_id < 0:
        raise ValueError(f"training init-state id must be >= 0, got {init_state_id}")
    stream = EVAL_STREAM if split == "eval" else TRAIN_STREAM
    return [stream, zlib.crc32(task.encode()), init_state_id]


def _import_robosuite():
    """robosuite, or an ImportError that says how to install it."""
    hint = "run `make setup` (it installs `pip install --no-deps robosuite==1.5.2 mink==0.0.5`)"
    try:
        import robosuite
    except ImportError as err:
        raise ImportError(f"the robosuite suite needs robosuite {ROBOSUITE_VERSION}.x, which is not installed; "
                          f"{hint}") from err
    if not robosuite.__version__.startswith(ROBOSUITE_VERSION + "."):
        raise ImportError(f"the robosuite suite needs robosuite {ROBOSUITE_VERSION}.x, found {robosuite.__version__}; "
                          f"{hint}")
    return robosuite


def _check_controller(config: dict[str, Any]) -> None:
    """Fail loudly if robosuite's default Panda controller no longer maps our action as documented."""
    arm = config.get("body_parts", {}).get("right", {})
    expected_out = [MAX_POS_DELTA] * 3 + [MAX_ROT_DELTA] * 3
    checks = {
        "type": (arm.get("type"), "OSC_POSE"),
        "input_type": (arm.get("input_type"), "delta"),
        "input range": ((arm.get("input_min"), arm.get("input_max")), (-1, 1)),
        "output_max": (list(np.broadcast_to(arm.get("output_max", 0), 6)), expected_out),
        "output_min": (list(-np.broadcast_to(arm.get("output_min", 0), 6)), expected_out),
        "input_ref_frame": (arm.get("input_ref_frame"), "base"),
        "gripper": (arm.get("gripper", {}).get("type"), "GRIP"),
    }
    wrong = {name: got for name, (got, want) in checks.items() if not np.array_equal(got, want)}
    if config.get("type") != "BASIC" or wrong:
        raise RuntimeError(f"robosuite's default Panda controller is not the BASIC/OSC_POSE delta controller this "
                           f"env's action mapping assumes (mismatched: {wrong or {'type': config.get('type')}})")


class RobosuiteEnv(gym.Env):
    """One robosuite task as a ``gymnasium.Env``; see the module docstring for the contract.

    ``robosuite_env`` is the wrapped robosuite env (for inspection: its ``sim`` holds the MuJoCo state).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        task: str,
        image_size: int = 64,
        wrist_camera: bool = False,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
    ):
        if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.task_name = task
        self.task = get_task(task)
        self.instruction = self.task.instruction
        self.image_size = image_size
        self.wrist_camera = wrist_camera
        self.render_mode = render_mode
        self.max_episode_steps = step_limit(max_episode_steps, self.task.max_steps)
        self.cameras = ["agentview", "wrist"] if wrist_camera else ["agentview"]
        self.elapsed_steps = 0
        self._frames: dict[str, np.ndarray] = {}

        robosuite = _import_robosuite()
        import robosuite.macros

        # Rows come bottom-first unless someone switched robosuite to the OpenCV convention.
        self._flip_rows = robosuite.macros.IMAGE_CONVENTION == "opengl"
        controller = robosuite.load_composite_controller_config(robot="Panda")
        _check_controller(controller)
        self.robosuite_env = robosuite.make(
            self.task.env_name,
            robots="Panda",
            controller_configs=controller,
            control_freq=CONTROL_HZ,
            use_camera_obs=True,
            has_offscreen_renderer=True,
            has_renderer=False,
            renderer="mujoco",  # the default "mjviewer" builds an on-screen viewer object even when unused
            camera_names=[CAMERAS[c] for c in self.cameras],
            camera_heights=image_size,
            camera_widths=image_size,
            use_object_obs=False,  # success predicates read the MuJoCo state directly; object obs unused
            reward_shaping=False,
            horizon=ROBOSUITE_HORIZON,
            ignore_done=True,
            hard_reset=False,  # build the model once; resets reseed ``rng`` (see module docstring)
            seed=MODEL_SEED,
        )

        self.observation_space, self.action_space = contract_spaces(image_size, wrist_camera)

    # ---- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        split, init_state_id = split_and_id(options)
        if init_state_id is None:
            high = NUM_EVAL_STATES if split == "eval" else 2**31 - 1
            init_state_id = int(self.np_random.integers(0, high))
        seed_words = init_state_seed(self.task_name, split, init_state_id)
        rng = self._require_env().rng
        # Set the state in place: robosuite's placement samplers keep a reference to this Generator.
        rng.bit_generator.state = np.random.default_rng(seed_words).bit_generator.state
        self._make_gl_current()
        raw = self.robosuite_env.reset()
        self.elapsed_steps = 0
        info = {"instruction": self.instruction, "init_state_id": int(init_state_id), "split": split,
                "success": False}
        return self._observation(raw), info

    def step(self, action):
        action = checked_action(action)
        self._make_gl_current()
        raw, _, _, _ = self._require_env().step(np.clip(action, -1.0, 1.0))
        self.elapsed_steps += 1
        success = bool(self.robosuite_env._check_success())
        truncated = self.elapsed_steps >= self.max_episode_steps and not success
        info = {"success": success, "instruction": self.instruction}
        return self._observation(raw), float(success), success, truncated, info

    def render(self):
        """The latest ``agentview`` frame (at ``image_size``), in ``rgb_array`` mode; None otherwise."""
        if self.render_mode != "rgb_array":
            return None
        if "agentview" not in self._frames:
            raise RuntimeError("call reset() before render()")
        return self._frames["agentview"].copy()

    def close(self):
        if getattr(self, "robosuite_env", None) is not None:
            make_render_context_current(self.robosuite_env)  # freeing needs it too (make_render_context_current)
            self.robosuite_env.close()
            self.robosuite_env = None

    # ---- helpers --------------------------------------------------------------------------
    def is_success(self) -> bool:
        return bool(self._require_env()._check_success())

    def _require_env(self):
        if self.robosuite_env is None:
            raise RuntimeError("this RobosuiteEnv has been closed")
        return self.robosuite_env

    def _make_gl_current(self) -> None:
        make_render_context_current(self._require_env())

    def _observation(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = {}
        for camera in self.cameras:
            image = raw[f"{CAMERAS[camera]}_image"]
            image = np.ascontiguousarray(image[::-1] if self._flip_rows else image)
            self._frames[camera] = image
            obs[f"{camera}_image"] = image
        orientation = rotation_from_down(raw["robot0_eef_quat"])  # rotation from "pointing down" to now
        proprio = np.concatenate([raw["robot0_eef_pos"], orientation, raw["robot0_gripper_qpos"]])
        obs["proprio"] = np.clip(proprio, -PROPRIO_BOUND, PROPRIO_BOUND).astype(np.float32)
        return obs


def make_render_context_current(robosuite_env) -> None:
    """Call before a robosuite env (robosuite's own or LIBERO's) steps or resets.

    robosuite makes its offscreen GL context current only when it creates it, then renders into
    whatever context is current: with a second env (or any mujoco.Renderer) in the same thread its
    camera frames would come out of the wrong context, silently garbled. This re-activates its own.
    Call it before closing such an env too: MuJoCo frees the env's textures and buffers by their ids
    in the *current* context, so closing one env while another's context is current deletes the
    other's objects and garbles every frame it renders afterwards.
    """
    context = getattr(robosuite_env.sim, "_render_context_offscreen", None)
    if context is not None:
        context.gl_ctx.make_current()


def register_gym_ids() -> None:
    """Register each task with gymnasium as ``vla_rl/robosuite-<Task>-v0`` (cheap: imports no robosuite)."""
    for name in ROBOSUITE_TASKS:
        if gym_id(name) not in gym.registry:
            # No gymnasium TimeLimit: the env truncates at its own limit and never reports both flags.
            gym.register(id=gym_id(name), entry_point="sim_envs.robosuite_env:RobosuiteEnv", kwargs={"task": name})


def robosuite_suite():
    """The five robosuite tasks as a ``sim_envs.suites.Suite`` (building it imports no robosuite)."""
    from sim_envs.suites import Suite

    def describe() -> list[dict[str, Any]]:
        return [{"task": name, "gym_id": gym_id(name), "max_steps": task.max_steps,
                 "eval_init_states": NUM_EVAL_STATES, "train_init_states": "unbounded stream",
                 "summary": task.summary, "instruction": task.instruction} for name, task in TASKS.items()]

    return Suite(
        env_memory_mb=450, envs_per_slot=2,  # ~410 MB per env measured (meshes and the GL context)
        name="robosuite",
        summary="robosuite 1.5 Panda (Lift, Stack, PickPlaceCan, NutAssemblySquare, Door): 7-D EE-delta actions "
                "through OSC_POSE at 20 Hz, 50 seeded eval init states per task",
        control_hz=CONTROL_HZ, tasks=lambda: list(ROBOSUITE_TASKS), make_env=RobosuiteEnv,
        num_eval_states=num_eval_states, max_steps=max_steps, describe=describe, default_image_size=64,
        # not frozen into files: the seeds below (and robosuite's samplers) are the only record of the states
        init_state_provenance={"eval_init_states": f"ids 0..{NUM_EVAL_STATES - 1} per task, re-sampled on reset",
                               "stream": EVAL_STREAM, "train_stream": TRAIN_STREAM,
                               "seed_of_state": "numpy default_rng([stream, crc32(task), id]) as env.rng",
                               "model_seed": MODEL_SEED, "robosuite": ROBOSUITE_VERSION},
    )


__all__ = ["RobosuiteEnv", "RobosuiteTask", "TASKS", "ROBOSUITE_TASKS", "CONTROL_HZ", "MAX_POS_DELTA",
           "MAX_ROT_DELTA", "get_task", "num_eval_states", "max_steps", "gym_id", "init_state_seed",
           "register_gym_ids", "robosuite_suite"]
