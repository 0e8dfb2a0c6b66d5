"""MJCF for the tabletop suite: a 6-DoF arm with a parallel gripper on a table, plus task objects.

The arm is our own model built only from capsules and boxes (MJX cannot collide cylinders with
boxes, and we want the same scene to run under MJX later). Its kinematics is a classic
yaw-pitch-pitch arm with a roll-pitch-roll spherical wrist, so any end-effector pose in the
workspace is reachable and the 7-D OpenVLA action (delta position, delta rotation, gripper) maps
onto it without loss.

Collision groups (contype / conaffinity bits): bit 1 = world and objects, bit 2 = robot.
Robot links collide with objects but not with each other or the table; fingers also collide with
the table so they cannot dig through it.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE_TOP_Z = 0.0
ROBOT_BASE_X = -0.42
ARM_JOINTS = ("j1", "j2", "j3", "j4", "j5", "j6")
FINGER_JOINTS = ("finger_left", "finger_right")
FINGER_OPEN = 0.045  # metres each finger travels from the centre line
BLOCK_HALF = 0.022

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.1),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.12, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.6, 0.2, 0.75),
}


@dataclass(frozen=True)
class CameraSetup:
    """Which cameras the scene renders; the agent view is always present."""

    wrist: bool = False


def _rgba(color: tuple[float, float, float], alpha: float = 1.0) -> str:
    return f"{color[0]:.3f} {color[1]:.3f} {color[2]:.3f} {alpha:.3f}"


ROBOT_XML = f"""
    <body name="robot_base" pos="{ROBOT_BASE_X} 0 0">
      <geom name="pedestal" type="capsule" fromto="0 0 0 0 0 0.12" size="0.06" material="robot_dark"
            contype="2" conaffinity="0"/>
      <body name="link1" pos="0 0 0.14" gravcomp="1">
        <inertial pos="0 0 0.1" mass="2" diaginertia="0.02 0.02 0.01"/>
        <joint name="j1" axis="0 0 1" range="-2.9 2.9" damping="8" armature="0.1"/>
        <geom type="capsule" fromto="0 0 0 0 0 0.2" size="0.05" material="robot" contype="2" conaffinity="0"/>
        <body name="link2" pos="0 0 0.2" gravcomp="1">
          <inertial pos="0.2 0 0" mass="1.5" diaginertia="0.005 0.03 0.03"/>
          <joint name="j2" axis="0 1 0" range="-2.2 1.2" damping="8" armature="0.1"/>
          <geom type="capsule" fromto="0 0 0 0.4 0 0" size="0.04" material="robot" contype="2" conaffinity="0"/>
          <body name="link3" pos="0.4 0 0" gravcomp="1">
            <inertial pos="0.17 0 0" mass="1" diaginertia="0.004 0.02 0.02"/>
            <joint name="j3" axis="0 1 0" range="-0.3 2.9" damping="6" armature="0.08"/>
            <geom type="capsule" fromto="0 0 0 0.34 0 0" size="0.033" material="robot" contype="2" conaffinity="0"/>
            <body name="link4" pos="0.34 0 0" gravcomp="1">
              <inertial pos="0 0 0" mass="0.4" diaginertia="0.001 0.001 0.001"/>
              <joint name="j4" axis="1 0 0" range="-3.1 3.1" damping="3" armature="0.05"/>
              <geom type="capsule" fromto="0 0 0 0.04 0 0" size="0.03" material="robot_dark" contype="2" conaffinity="0"/>
              <body name="link5" pos="0.04 0 0" gravcomp="1">
                <inertial pos="0.02 0 0" mass="0.3" diaginertia="0.001 0.001 0.001"/>
                <joint name="j5" axis="0 1 0" range="-2.3 2.3" damping="3" armature="0.05"/>
                <geom type="capsule" fromto="0 0 0 0.05 0 0" size="0.028" material="robot" contype="2" conaffinity="0"/>
                <body name="link6" pos="0.05 0 0" gravcomp="1">
                  <inertial pos="0.01 0 0" mass="0.2" diaginertia="0.0005 0.0005 0.0005"/>
                  <joint name="j6" axis="1 0 0" range="-3.1 3.1" damping="2" armature="0.03"/>
                  <body name="hand" pos="0 0 0" quat="0.7071068 0 0.7071068 0" gravcomp="1">
                    <inertial pos="0 0 0.03" mass="0.4" diaginertia="0.001 0.001 0.001"/>
                    <geom name="palm" type="box" pos="0 0 0.03" size="0.025 0.07 0.018" material="robot_dark"
                          contype="2" conaffinity="0"/>
                    {{wrist_camera}}
                    <body name="finger_left_body" pos="0 0 0.05" gravcomp="1">
                      <inertial pos="0 0 0.03" mass="0.05" diaginertia="0.0001 0.0001 0.0001"/>
                      <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_OPEN}" damping="5" armature="0.01"/>
                      <geom name="finger_left_pad" type="box" pos="0 0.008 0.032" size="0.012 0.008 0.032"
                            material="finger" friction="1.5 0.02 0.001" condim="4" contype="2" conaffinity="1"
                            solref="0.005 1" solimp="0.95 0.99 0.001"/>
                    </body>
                    <body name="finger_right_body" pos="0 0 0.05" gravcomp="1">
                      <inertial pos="0 0 0.03" mass="0.05" diaginertia="0.0001 0.0001 0.0001"/>
                      <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_OPEN}" damping="5" armature="0.01"/>
                      <geom name="finger_right_pad" type="box" pos="0 -0.008 0.032" size="0.012 0.008 0.032"
                            material="finger" friction="1.5 0.02 0.001" condim="4" contype="2" conaffinity="1"
                            solref="0.005 1" solimp="0.95 0.99 0.001"/>
                    </body>
                    <site name="grip_site" pos="0 0 0.1" size="0.006" rgba="1 0 0 0" group="3"/>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
"""

# Mounted on the robot side of the palm, looking down past the fingertips.
WRIST_CAMERA_XML = '<camera name="wrist" pos="0.05 0 0.0" xyaxes="0 1 0 0.995 0 0.1" fovy="75"/>'

ACTUATORS_XML = """
  <actuator>
    <!-- Joint position servos with kv = 0.05 kp: measured to track a full-scale step command
         at ~0.043 m per control step with no overshoot and < 0.02 rad orientation drift. -->
    <position name="a_j1" joint="j1" kp="1500" kv="75" forcerange="-200 200"/>
    <position name="a_j2" joint="j2" kp="1950" kv="97" forcerange="-200 200"/>
    <position name="a_j3" joint="j3" kp="1500" kv="75" forcerange="-200 200"/>
    <position name="a_j4" joint="j4" kp="500" kv="25" forcerange="-60 60"/>
    <position name="a_j5" joint="j5" kp="500" kv="25" forcerange="-60 60"/>
    <position name="a_j6" joint="j6" kp="350" kv="17" forcerange="-60 60"/>
    <position name="a_finger_left" joint="finger_left" kp="600" forcerange="-25 25"/>
    <position name="a_finger_right" joint="finger_right" kp="600" forcerange="-25 25"/>
  </actuator>
"""


def build_scene_xml(objects_xml: str, cameras: CameraSetup, extra_xml: str = "") -> str:
    """Return the full MJCF of the arm on the table with the task's objects inserted.

    ``objects_xml`` is inserted into the worldbody; ``extra_xml`` after it at the top level
    (e.g. an ``<equality>`` or ``<contact>`` section).
    """
    robot = ROBOT_XML.replace("{wrist_camera}", WRIST_CAMERA_XML if cameras.wrist else "")
    return f"""
<mujoco model="vla_rl_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <global offwidth="512" offheight="512"/>
    <quality shadowsize="1024"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <texture name="floor_tex" type="2d" builtin="checker" rgb1="0.35 0.37 0.4" rgb2="0.3 0.32 0.35"
             width="64" height="64"/>
    <material name="floor" texture="floor_tex" texrepeat="6 6"/>
    <texture name="wood_tex" type="2d" builtin="flat" rgb1="0.62 0.5 0.38" width="16" height="16"/>
    <material name="table" texture="wood_tex" specular="0.1"/>
    <material name="robot" rgba="0.88 0.88 0.9 1" specular="0.3"/>
    <material name="robot_dark" rgba="0.25 0.25 0.28 1" specular="0.3"/>
    <material name="finger" rgba="0.15 0.15 0.15 1"/>
  </asset>
  <default>
    <!-- Unless a geom says otherwise it is part of the world: it collides with objects (bit 1)
         and with every robot link (bit 2). -->
    <geom contype="1" conaffinity="3" solref="0.01 1" solimp="0.9 0.95 0.001"/>
  </default>
  <worldbody>
    <light name="top" pos="0.1 0 1.2" dir="0 0 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <light name="side" pos="0.8 -0.6 0.9" dir="-0.6 0.5 -0.6" diffuse="0.3 0.3 0.3" castshadow="false"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" material="floor" contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="0 0 -0.025" size="0.6 0.5 0.025" material="table"
          contype="1" conaffinity="1" friction="0.6 0.005 0.0001"/>
    <geom name="table_leg" type="box" pos="0 0 -0.4" size="0.5 0.4 0.35" rgba="0.4 0.32 0.25 1"
          contype="0" conaffinity="0"/>
    <camera name="agentview" pos="0.42 0 0.48" xyaxes="0 1 0 -0.671 0 0.741" fovy="58"/>
    {robot}
    {objects_xml}
  </worldbody>
  <contact>
    <exclude body1="finger_left_body" body2="finger_right_body"/>
  </contact>
  {ACTUATORS_XML}
  {extra_xml}
</mujoco>
"""


def block_xml(name: str, half: float = BLOCK_HALF, mass: float = 0.06) -> str:
    """A free-floating cube; its colour and pose are set per init state at reset."""
    return f"""
    <body name="{name}" pos="0 0 {half}">
      <freejoint name="{name}_joint"/>
      <geom name="{name}_geom" type="box" size="{half} {half} {half}" mass="{mass}" rgba="1 1 1 1"
            friction="1.2 0.01 0.0005" condim="4" contype="1" conaffinity="3"/>
    </body>"""
