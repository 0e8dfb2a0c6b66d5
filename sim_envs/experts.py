"""Scripted privileged experts: reactive controllers that read object poses from the simulator.

They emit the same 7-D actions a policy does, so their episodes are valid demonstrations.
``noise_std`` adds Gaussian noise to the motion part of each action (a "perturbed expert" for
diverse data; ``rotation_noise=False`` perturbs only the translation); with noise 0 an expert is
deterministic given the init state.

**Reactive, not phased.** Each expert's action is a function of the current state alone (gripper
pose, finger opening, object poses), with no phase counter, timer or remembered grasp point. A
policy cloned from the demos sees only the current observation, so labels that depend on hidden
history cannot be fitted, and off-path states get no consistent correction. Measured with an MLP
given the true named-object pixels and proprio, trained on 50 demos per task with translation
noise 0.1 and run closed-loop on the 50 held-out states per task (docs/policy.md, session 11): the
phased experts of sessions 1-10 gave 36% mean success, these reactive ones 65%. The ingredients:
- a **funnel** instead of "go above, then go down": the target height falls smoothly from a hover
  height to the goal as the gripper centres in xy, so the label varies continuously with the error;
- gripper decisions from **observable** conditions: close when the fingertips are at the grasp
  point; lift once the fingers have closed on the block (opening below ``PICK_OPENING`` and the block
  between the fingertips); open and back off when they closed on nothing;
- **margins**: Reach aims 1.5 cm above the block's centre, well inside its 5 cm success radius (the
  old target, 3 cm above, ended every demo on that radius's edge), and the button is pressed
  anywhere over its 5 cm cap.

By default the grasping experts keep the gripper at yaw 0 whatever the block's yaw (within +-45
degrees; the fingers open wide enough and the closing fingers square the cube up). ``align_yaw=True``
turns the gripper to the block first. A policy learns only what its inputs show: the block's yaw is
a pixel or two in a 64 px agent view, so yaw-aligned demos teach a turn it must guess (measured: its
first yaw action had the wrong sign and the grasp failed). Align only for policies that see the yaw,
e.g. through a wrist camera.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from sim_envs.arm import DOWN_QUAT, MAX_POS_DELTA, MAX_ROT_DELTA, axis_angle_to_quat, orientation_error, quat_mul
from sim_envs.scene import BLOCK_HALF, FINGER_OPEN
from sim_envs.tabletop_env import TabletopEnv
from sim_envs.tasks import body_position, body_yaw

OPEN, CLOSE = -1.0, 1.0
PICK_OPENING = 0.036  # wide enough for a cube at any yaw error we allow, narrow enough to miss walls
GRIP_BELOW_SITE = 0.014  # fingertips are this far below the grip site
GRASP_ABOVE_CENTRE = GRIP_BELOW_SITE - BLOCK_HALF + 0.008  # grip site above a block's centre when grasping
SAFE_Z = 0.13  # hover height (grip site) over a block before descending
FUNNEL_WIDTH = 0.03  # xy error over which a funnel rises from its goal to its hover height


def gripper_command(finger_opening: float) -> float:
    """The gripper action that holds each finger ``finger_opening`` metres from the centre line."""
    return float(np.clip(1.0 - 2.0 * finger_opening / FINGER_OPEN, -1.0, 1.0))


def wrap_quarter_turn(yaw: float) -> float:
    """A cube looks the same every 90 degrees: the equivalent yaw in [-pi/4, pi/4]."""
    return (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4


class Expert:
    """Base: ``policy()`` maps the current simulator state to a clean action; ``act()`` adds noise."""

    task: ClassVar[str]

    def __init__(self, env: TabletopEnv, noise_std: float = 0.0, seed: int | None = None, align_yaw: bool = False,
                 rotation_noise: bool = True):
        self.env = env
        self.noise_std = noise_std
        self.noisy_dims = 6 if rotation_noise else 3  # translation (3) and rotation (3); never the gripper
        self.align_yaw = align_yaw
        self.rng = np.random.default_rng(seed)
        self.clean_action = np.zeros(7, np.float32)

    def policy(self) -> np.ndarray:
        raise NotImplementedError

    def act(self) -> np.ndarray:
        action = self.policy()
        self.clean_action = np.clip(action, -1.0, 1.0).astype(np.float32)  # the label DART-style data keeps
        if self.noise_std > 0:
            action = action.copy()
            action[:self.noisy_dims] += self.rng.normal(0.0, self.noise_std, size=self.noisy_dims)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # ---- state and motion primitives -----------------------------------------------------
    @property
    def layout(self) -> dict:
        return self.env.layout

    def ee(self) -> np.ndarray:
        return self.env.arm.ee_position()

    def finger_opening(self) -> float:
        """Mean distance of the two fingers from the centre line, metres (the proprio shows both)."""
        return float(np.mean(self.env.arm.gripper_qpos()))

    def servo(self, target: np.ndarray, gripper: float, yaw: float = 0.0, gain: float = 1.0) -> np.ndarray:
        """Action moving the grip site toward ``target`` with the gripper pointing down at ``yaw``."""
        move = np.clip((np.asarray(target, dtype=np.float64) - self.ee()) * gain / MAX_POS_DELTA, -1.0, 1.0)
        goal_quat = quat_mul(axis_angle_to_quat(np.array([0.0, 0.0, yaw])), DOWN_QUAT)
        turn = np.clip(orientation_error(goal_quat, self.env.arm.ee_quat()) / MAX_ROT_DELTA, -1.0, 1.0)
        return np.concatenate([move, turn, [gripper]])

    def funnel(self, goal: np.ndarray, hover_z: float, xy_tolerance: float = 0.008) -> np.ndarray:
        """A target over ``goal``: at ``hover_z`` while the grip site is ``FUNNEL_WIDTH`` or more off in
        xy, at ``goal``'s own height once within ``xy_tolerance``, linear in between."""
        goal = np.asarray(goal, dtype=np.float64)
        xy_error = float(np.linalg.norm(goal[:2] - self.ee()[:2]))
        fraction = np.clip((xy_error - xy_tolerance) / FUNNEL_WIDTH, 0.0, 1.0)
        return np.array([goal[0], goal[1], goal[2] + fraction * (hover_z - goal[2])])

    def near(self, goal: np.ndarray, tolerance: float) -> bool:
        error = np.asarray(goal) - self.ee()
        return bool(np.linalg.norm(error[:2]) < tolerance and abs(error[2]) < tolerance)

    def grasp_yaw(self, body: str) -> float:
        """The gripper yaw for grasping or placing on ``body``: its yaw, or 0 without ``align_yaw``."""
        return wrap_quarter_turn(body_yaw(self.env.data, body)) if self.align_yaw else 0.0

    # ---- picking, shared by the grasping experts ----------------------------------------
    def holding(self, body: str) -> bool:
        """The fingers have closed on ``body``: narrower than the pick opening, not shut on air, and
        the block between the fingertips (a cube at 45 degrees stops them at 3.1 cm, hence no
        tighter bound)."""
        opening = self.finger_opening()
        offset = self.ee() - (body_position(self.env.data, body) + [0, 0, GRASP_ABOVE_CENTRE])
        return bool(BLOCK_HALF - 0.008 < opening < PICK_OPENING - 0.004
                    and np.linalg.norm(offset[:2]) < 0.02 and abs(offset[2]) < 0.02)

    def pick(self, body: str) -> np.ndarray:
        """Action towards grasping ``body`` (not yet held): funnel down open, close at the grasp point."""
        grasp = body_position(self.env.data, body) + [0, 0, GRASP_ABOVE_CENTRE]
        yaw, ready = self.grasp_yaw(body), gripper_command(PICK_OPENING)
        opening = self.finger_opening()
        if opening < BLOCK_HALF - 0.008:  # closed on nothing: open and back off upwards
            return self.servo(grasp + [0, 0, 0.04], ready, yaw)
        closing = opening < PICK_OPENING - 0.003  # once closing, a nudged block must not reopen the hand
        if self.near(grasp, 0.015 if closing else 0.008):
            return self.servo(grasp, CLOSE, yaw)
        return self.servo(self.funnel(grasp, SAFE_Z), ready, yaw)

    def lift(self, body: str) -> np.ndarray:
        """Pick ``body`` and raise it straight up."""
        if self.holding(body):
            return self.servo(np.array([*self.ee()[:2], 0.25]), CLOSE)
        return self.pick(body)


class ReachExpert(Expert):
    task = "Reach"
    AIM_ABOVE_CENTRE = 0.015  # well inside Reach.SUCCESS_DISTANCE (5 cm) of the block's centre

    def policy(self):
        return self.servo(body_position(self.env.data, "block0") + [0, 0, self.AIM_ABOVE_CENTRE], OPEN)


class LiftExpert(Expert):
    task = "Lift"

    def policy(self):
        return self.lift("block0")


class PlaceExpert(Expert):
    """Pick ``block0``, carry it over ``release_point()`` (funnel), open there, then back off upwards."""

    def release_point(self) -> np.ndarray:
        raise NotImplementedError

    def placed(self) -> bool:
        raise NotImplementedError

    def place_yaw(self) -> float:
        return 0.0

    def policy(self):
        released = self.finger_opening() > BLOCK_HALF + 0.004
        if released and self.placed():
            return self.servo(self.ee() + [0, 0, 0.05], OPEN)
        if not self.holding("block0"):
            return self.pick("block0")
        release = self.release_point()
        if self.near(release, 0.008):
            return self.servo(release, OPEN, self.place_yaw())
        return self.servo(self.funnel(release, release[2] + 0.06), CLOSE, self.place_yaw())


class PickPlaceExpert(PlaceExpert):
    task = "PickPlace"

    def tray(self) -> np.ndarray:
        return np.array([*self.layout["tray_positions"][0], 0.0])

    def release_point(self):
        return self.tray() + [0, 0, 0.085]

    def placed(self):
        block = body_position(self.env.data, "block0")
        return bool(np.all(np.abs(block[:2] - self.tray()[:2]) < 0.03) and block[2] < 0.06)


class StackExpert(PlaceExpert):
    task = "Stack"

    def release_point(self):
        return body_position(self.env.data, "block1") + [0, 0, 2 * BLOCK_HALF + GRASP_ABOVE_CENTRE + 0.008]

    def place_yaw(self):
        return self.grasp_yaw("block1")

    def placed(self):
        top, base = body_position(self.env.data, "block0"), body_position(self.env.data, "block1")
        return bool(np.linalg.norm(top[:2] - base[:2]) < BLOCK_HALF and abs(top[2] - base[2] - 2 * BLOCK_HALF) < 0.01)


class PushExpert(Expert):
    """Pushes the block along the line to the target square from a spot behind it; off that line it
    funnels back to the spot (rising over the block while far from it)."""

    task = "Push"
    PUSH_Z = 0.03  # grip-site height while pushing: fingertips ~1.6 cm above the table
    STANDOFF = BLOCK_HALF + 0.035

    def policy(self):
        block = body_position(self.env.data, "block0")
        zone = np.array([*self.layout["zone_positions"][0], 0.0])
        direction = zone[:2] - block[:2]
        distance = float(np.linalg.norm(direction))
        direction = direction / max(distance, 1e-6)
        if distance < 0.012:
            return self.servo(self.ee() + [0, 0, 0.05], CLOSE)
        lateral_axis = np.array([-direction[1], direction[0]])
        offset = self.ee()[:2] - block[:2]
        lateral = float(offset @ lateral_axis)
        behind = -float(offset @ direction)  # how far the pusher is behind the block along the line
        if abs(lateral) < 0.018 and BLOCK_HALF <= behind < self.STANDOFF + 0.02 and self.ee()[2] < self.PUSH_Z + 0.015:
            # Advance along the push line while steering the pusher back onto it.
            ahead = self.ee()[:2] + direction * min(distance, 0.04) - lateral_axis * lateral
            return self.servo(np.array([*ahead, self.PUSH_Z]), CLOSE, gain=0.8)
        spot = np.array([*(block[:2] - direction * self.STANDOFF), self.PUSH_Z])
        return self.servo(self.funnel(spot, SAFE_Z - 0.04), CLOSE)


class OpenDrawerExpert(Expert):
    """Pinches the target drawer's handle bar (gripper turned 90 degrees) and pulls it open."""

    task = "OpenDrawer"
    YAW = np.pi / 2  # fingers close along world x, across the handle bar
    PINCH_OPENING = 0.022  # finger opening that fits between handle bar and drawer front
    BAR_HALF = 0.008  # the bar's half thickness along x: the opening when pinched

    def policy(self):
        handle = self.env.data.geom(f"drawer{self.layout['target']}_handle").xpos.copy()
        grasp = handle + [0, 0, GRIP_BELOW_SITE - 0.004]
        opening, ready = self.finger_opening(), gripper_command(self.PINCH_OPENING)
        if self.near(grasp, 0.012) and self.BAR_HALF / 2 < opening < self.PINCH_OPENING - 0.004:
            return self.servo(grasp + [-0.06, 0, 0], CLOSE, self.YAW)  # pinched: pull
        if opening < self.BAR_HALF / 2:  # closed on nothing: open and back off upwards
            return self.servo(grasp + [0, 0, 0.05], ready, self.YAW)
        closing = opening < self.PINCH_OPENING - 0.002
        if self.near(grasp, 0.012 if closing else 0.005):
            return self.servo(grasp, CLOSE, self.YAW)
        return self.servo(self.funnel(grasp, grasp[2] + 0.1, 0.005), ready, self.YAW)


class PressButtonExpert(Expert):
    """Funnels down onto the target button's cap with the gripper closed; the 5 cm cap needs no
    millimetre alignment, so the descent starts within 1 cm."""

    task = "PressButton"

    def policy(self):
        cap = body_position(self.env.data, "button0_cap")
        press = cap + [0, 0, GRIP_BELOW_SITE - 0.02]
        return self.servo(self.funnel(press, cap[2] + 0.09, 0.01), CLOSE)


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

