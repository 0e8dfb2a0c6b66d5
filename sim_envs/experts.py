"""Scripted privileged experts: closed-loop state machines that read object poses from the simulator.

They emit the same 7-D actions a policy does, so their episodes are valid demonstrations.
``noise_std`` adds Gaussian noise to the motion part of each action (a "perturbed expert" for
diverse data; ``rotation_noise=False`` perturbs only the translation); with noise 0 an expert is
deterministic given the init state.

By default the grasping experts keep the gripper at yaw 0 whatever the block's yaw (within +-45
degrees; the fingers open wide enough and the closing fingers square the cube up: 30/30 grasps on
Lift, PickPlace and Stack, measured). ``align_yaw=True`` turns the gripper to the block first. A
policy learns only what its inputs show: the block's yaw is a pixel or two in a 64 px agent view,
so yaw-aligned demos teach a turn it must guess (measured: its first yaw action had the wrong
sign and the grasp failed). Align only for policies that see the yaw, e.g. through a wrist camera.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np

from sim_envs.arm import DOWN_QUAT, MAX_POS_DELTA, MAX_ROT_DELTA, axis_angle_to_quat, orientation_error, quat_mul
from sim_envs.scene import BLOCK_HALF, FINGER_OPEN
from sim_envs.tabletop_env import TabletopEnv
from sim_envs.tasks import body_position, body_yaw

OPEN, CLOSE = -1.0, 1.0
PICK_OPENING = 0.036  # wide enough for a cube at any yaw error we allow, narrow enough to miss walls
GRIP_BELOW_SITE = 0.014  # fingertips are this far below the grip site
SAFE_Z = 0.13


def gripper_command(finger_opening: float) -> float:
    """The gripper action that holds each finger ``finger_opening`` metres from the centre line."""
    return float(np.clip(1.0 - 2.0 * finger_opening / FINGER_OPEN, -1.0, 1.0))


def wrap_quarter_turn(yaw: float) -> float:
    """A cube looks the same every 90 degrees: the equivalent yaw in [-pi/4, pi/4]."""
    return (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4


class Expert:
    """Base: a list of phases, each a function returning (action, phase_done)."""

    task: ClassVar[str]

    def __init__(self, env: TabletopEnv, noise_std: float = 0.0, seed: int | None = None, align_yaw: bool = False,
                 rotation_noise: bool = True):
        self.env = env
        self.noise_std = noise_std
        self.noisy_dims = 6 if rotation_noise else 3  # translation (3) and rotation (3); never the gripper
        self.align_yaw = align_yaw
        self.rng = np.random.default_rng(seed)
        self.phase = 0
        self.phase_steps = 0
        self.memory: dict = {}

    def reset(self) -> None:
        self.phase, self.phase_steps, self.memory = 0, 0, {}

    def phases(self) -> list[Callable[[], tuple[np.ndarray, bool]]]:
        raise NotImplementedError

    def act(self) -> np.ndarray:
        phases = self.phases()
        action, done = phases[min(self.phase, len(phases) - 1)]()
        self.phase_steps += 1
        if done and self.phase < len(phases) - 1:
            self.phase += 1
            self.phase_steps = 0
        self.clean_action = np.clip(action, -1.0, 1.0).astype(np.float32)  # the label DART-style data keeps
        if self.noise_std > 0:
            action = action.copy()
            action[:self.noisy_dims] += self.rng.normal(0.0, self.noise_std, size=self.noisy_dims)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # ---- motion primitives -------------------------------------------------------------
    @property
    def layout(self) -> dict:
        return self.env.layout

    def ee(self) -> np.ndarray:
        return self.env.arm.ee_position()

    def servo(self, target: np.ndarray, gripper: float, yaw: float = 0.0, gain: float = 1.0) -> np.ndarray:
        """Action moving the grip site toward ``target`` with the gripper pointing down at ``yaw``."""
        move = np.clip((target - self.ee()) * gain / MAX_POS_DELTA, -1.0, 1.0)
        goal_quat = quat_mul(axis_angle_to_quat(np.array([0.0, 0.0, yaw])), DOWN_QUAT)
        turn = np.clip(orientation_error(goal_quat, self.env.arm.ee_quat()) / MAX_ROT_DELTA, -1.0, 1.0)
        return np.concatenate([move, turn, [gripper]])

    def reached(self, target: np.ndarray, tolerance: float = 0.01, z_tolerance: float | None = None) -> bool:
        error = target - self.ee()
        z_tol = tolerance if z_tolerance is None else z_tolerance
        return bool(np.linalg.norm(error[:2]) < tolerance and abs(error[2]) < z_tol)

    def go(self, target, gripper: float, yaw: float = 0.0, tolerance: float = 0.01, z_tolerance=None):
        target = np.asarray(target, dtype=np.float64)
        return self.servo(target, gripper, yaw), self.reached(target, tolerance, z_tolerance)

    def wait(self, target, gripper: float, steps: int, yaw: float = 0.0):
        return self.servo(np.asarray(target, dtype=np.float64), gripper, yaw), self.phase_steps + 1 >= steps

    def grasp_yaw(self, body: str) -> float:
        """The gripper yaw for grasping or placing on ``body``: its yaw, or 0 without ``align_yaw``."""
        return wrap_quarter_turn(body_yaw(self.env.data, body)) if self.align_yaw else 0.0

    def remember(self, key: str, value_fn: Callable[[], object]):
        if key not in self.memory:
            self.memory[key] = value_fn()
        return self.memory[key]

    # ---- pick phases shared by the grasping experts --------------------------------------
    def pick_phases(self, body: str) -> list[Callable[[], tuple[np.ndarray, bool]]]:
        def block() -> np.ndarray:
            return body_position(self.env.data, body)

        def yaw() -> float:
            return self.grasp_yaw(body)

        def grasp_point() -> np.ndarray:
            return block() + [0.0, 0.0, GRIP_BELOW_SITE - BLOCK_HALF + 0.008]

        ready = gripper_command(PICK_OPENING)
        return [
            lambda: self.go(block() + [0, 0, SAFE_Z - block()[2]], ready, yaw(), tolerance=0.012, z_tolerance=0.03),
            lambda: self.go(grasp_point(), ready, yaw(), tolerance=0.008),
            lambda: self.wait(self.remember("grasp_at", grasp_point), CLOSE, steps=4, yaw=yaw()),
            lambda: self.go(self.remember("grasp_at", grasp_point) + [0, 0, 0.12], CLOSE, yaw(), z_tolerance=0.02),
        ]


class ReachExpert(Expert):
    task = "Reach"

    def phases(self):
        def target():
            return body_position(self.env.data, "block0") + [0.0, 0.0, 0.03]

        return [lambda: self.go(target(), OPEN, tolerance=0.005)]


class LiftExpert(Expert):
    task = "Lift"

    def phases(self):
        pick = self.pick_phases("block0")
        grasp_at = lambda: self.memory["grasp_at"]  # noqa: E731
        return pick[:3] + [lambda: self.go(grasp_at() + [0, 0, 0.16], CLOSE)]


class StackExpert(Expert):
    task = "Stack"

    def phases(self):
        base = lambda: body_position(self.env.data, "block1")  # noqa: E731
        base_yaw = lambda: self.grasp_yaw("block1")  # noqa: E731
        drop = lambda: base() + [0, 0, 2 * BLOCK_HALF + GRIP_BELOW_SITE - BLOCK_HALF + 0.016]  # noqa: E731
        return self.pick_phases("block0") + [
            lambda: self.go(base() + [0, 0, SAFE_Z - base()[2]], CLOSE, base_yaw(), tolerance=0.006, z_tolerance=0.03),
            lambda: self.go(drop(), CLOSE, base_yaw(), tolerance=0.005, z_tolerance=0.006),
            lambda: self.wait(drop(), OPEN, steps=3, yaw=base_yaw()),
            lambda: self.go(drop() + [0, 0, 0.1], OPEN, base_yaw()),
        ]


class PickPlaceExpert(Expert):
    task = "PickPlace"

    def phases(self):
        tray = lambda: np.array([*self.layout["tray_positions"][0], 0.0])  # noqa: E731
        release = lambda: tray() + [0, 0, 0.085]  # noqa: E731
        return self.pick_phases("block0") + [
            lambda: self.go(tray() + [0, 0, SAFE_Z], CLOSE, tolerance=0.012, z_tolerance=0.03),
            lambda: self.go(release(), CLOSE, tolerance=0.01),
            lambda: self.wait(release(), OPEN, steps=3),
            lambda: self.go(release() + [0, 0, 0.08], OPEN),
        ]


class PushExpert(Expert):
    """Pushes the block along the line to the target square, re-approaching if it drifts off line."""

    task = "Push"
    PUSH_Z = 0.03  # grip-site height while pushing: fingertips ~1.6 cm above the table
    STANDOFF = BLOCK_HALF + 0.035

    def _geometry(self):
        block = body_position(self.env.data, "block0")
        zone = np.array([*self.layout["zone_positions"][0], 0.0])
        direction = zone[:2] - block[:2]
        distance = float(np.linalg.norm(direction))
        direction = direction / max(distance, 1e-6)
        behind = np.array([*(block[:2] - direction * self.STANDOFF), self.PUSH_Z])
        return block, zone, direction, distance, behind

    def _off_line(self) -> bool:
        block, _, direction, _, _ = self._geometry()
        offset = self.ee()[:2] - block[:2]
        lateral = abs(offset[0] * direction[1] - offset[1] * direction[0])
        along = -float(offset @ direction)  # positive when the pusher is behind the block
        return lateral > 0.018 or along < BLOCK_HALF

    def phases(self):
        def above_start():
            behind = self._geometry()[4]
            return self.go([behind[0], behind[1], SAFE_Z - 0.04], CLOSE, tolerance=0.008, z_tolerance=0.03)

        def lower():
            return self.go(self._geometry()[4], CLOSE, tolerance=0.008, z_tolerance=0.008)

        def push():
            block, zone, direction, distance, _ = self._geometry()
            if distance < 0.012:
                return self.servo(self.ee() + [0, 0, 0.05], CLOSE), False
            if self._off_line():
                self.phase, self.phase_steps = -1, 0  # lift and re-approach (act() advances to 0)
                return self.servo(self.ee() + [0, 0, 0.05], CLOSE), True
            # Advance along the push line while steering the pusher back onto it.
            target = np.array([0.0, 0.0, self.PUSH_Z])
            lateral = np.array([-direction[1], direction[0]])
            pusher_offset = (self.ee()[:2] - block[:2]) @ lateral
            target[:2] = self.ee()[:2] + direction * min(distance, 0.04) - lateral * pusher_offset
            return self.servo(target, CLOSE, gain=0.8), False

        return [above_start, lower, push]


class OpenDrawerExpert(Expert):
    """Pinches the target drawer's handle bar (gripper turned 90 degrees) and pulls it open."""

    task = "OpenDrawer"
    YAW = np.pi / 2  # fingers close along world x, across the handle bar
    PINCH_OPENING = 0.022  # finger opening that fits between handle bar and drawer front

    def phases(self):
        handle = lambda: self.env.data.geom(f"drawer{self.layout['target']}_handle").xpos.copy()  # noqa: E731
        ready = gripper_command(self.PINCH_OPENING)
        grasp = lambda: handle() + [0, 0, GRIP_BELOW_SITE - 0.004]  # noqa: E731
        pulled = lambda: self.memory["grasp_at"] + [-0.13, 0, 0]  # noqa: E731
        return [
            lambda: self.go(handle() + [0, 0, 0.1], ready, self.YAW, tolerance=0.006, z_tolerance=0.02),
            lambda: self.go(grasp(), ready, self.YAW, tolerance=0.005, z_tolerance=0.005),
            lambda: self.wait(self.remember("grasp_at", grasp), CLOSE, steps=4, yaw=self.YAW),
            lambda: self.go(pulled(), CLOSE, self.YAW, tolerance=0.01),
        ]


class PressButtonExpert(Expert):
    task = "PressButton"

    def phases(self):
        cap = lambda: body_position(self.env.data, "button0_cap")  # noqa: E731
        return [
            lambda: self.go(cap() + [0, 0, 0.09], CLOSE, tolerance=0.006, z_tolerance=0.02),
            lambda: self.go(cap() + [0, 0, GRIP_BELOW_SITE - 0.02], CLOSE, tolerance=0.004),
        ]


EXPERTS: dict[str, type[Expert]] = {
    cls.task: cls
    for cls in (ReachExpert, LiftExpert, StackExpert, PickPlaceExpert, PushExpert, OpenDrawerExpert, PressButtonExpert)
}


def make_expert(env: TabletopEnv, noise_std: float = 0.0, seed: int | None = None, align_yaw: bool = False,
                rotation_noise: bool = True) -> Expert:
    try:
        cls = EXPERTS[env.task_name]
    except KeyError:
        raise KeyError(f"no scripted expert for {env.task_name!r}; experts exist for {', '.join(EXPERTS)}") from None
    return cls(env, noise_std=noise_std, seed=seed, align_yaw=align_yaw, rotation_noise=rotation_noise)

