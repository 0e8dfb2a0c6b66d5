"""Conversions between ROS 2 messages and the arrays the policy and the safety layer use.

The message classes come from the registry's ROS 2 wheels (the ``ros`` extra); they are imported
inside the functions so that importing this module never needs ROS.
"""

from __future__ import annotations

import importlib

import numpy as np

# encoding -> (channels, channel order to get RGB); see sensor_msgs/image_encodings.hpp
ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]), "bgra8": (4, [2, 1, 0]),
             "mono8": (1, [0, 0, 0])}


# where a simulated robot names the init state it was reset to (std_msgs/String JSON: task, split, init_state_id),
# latched: recorded into every bag, so episodes recorded on held-out init states stay marked as held out
SIM_INIT_STATE_TOPIC = "/sim/init_state"


def latched_qos():
    """Reliable, transient-local, depth 1: the newest message reaches a subscriber that starts after it was sent."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def require_ros():
    """Import rclpy with a message that names the extra to install."""
    try:
        return importlib.import_module("rclpy")
    except ImportError as error:
        raise ModuleNotFoundError(
            "ROS 2 deployment needs rclpy and the message packages: pip install -e '.[ros]' "
            "(registry wheels, no ROS install needed; see docs/ros.md)") from error


def image_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8 [H, W, 3]`` RGB (row padding in ``step`` is honoured)."""
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; supported: {sorted(ENCODINGS)}")
    if msg.height == 0 or msg.width == 0:  # would be resized to a black frame the policy then acts on
        raise ValueError(f"empty image ({msg.width}x{msg.height})")
    channels, order = ENCODINGS[msg.encoding]
    row_bytes = msg.width * channels
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise ValueError(f"image data too short: {len(msg.data)} bytes for {msg.height} rows of step {msg.step}")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8)[:msg.step * msg.height].reshape(msg.height, msg.step)
    pixels = rows[:, :row_bytes].reshape(msg.height, msg.width, channels)
    return np.ascontiguousarray(pixels[..., order])


def rgb_to_image(rgb: np.ndarray, stamp, frame_id: str, encoding: str = "rgb8"):
    """``uint8 [H, W, 3]`` RGB -> ``sensor_msgs/Image`` in ``rgb8`` or ``bgr8``."""
    from sensor_msgs.msg import Image

    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"rgb_to_image writes rgb8 or bgr8, not {encoding!r}")
    pixels = rgb if encoding == "rgb8" else rgb[..., ::-1]
    msg = Image(height=int(rgb.shape[0]), width=int(rgb.shape[1]), encoding=encoding, is_bigendian=0,
                step=int(rgb.shape[1]) * 3, data=np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize (antialiased bilinear) to ``size`` pixels per side."""
    from PIL import Image

    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return np.array(Image.fromarray(square).resize((size, size), Image.BILINEAR))  # writable copy


def joint_positions(msg, names: tuple[str, ...]) -> np.ndarray:
    """Positions of ``names`` (in that order) from a ``sensor_msgs/JointState``; all if empty.
    A message without one position per name (legal: e.g. velocity-only) is a ``ValueError``."""
    if len(msg.position) != len(msg.name) or not len(msg.position):
        raise ValueError(f"joint_states has {len(msg.position)} positions for {len(msg.name)} joints")
    if not names:
        return np.asarray(msg.position, dtype=np.float64)
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [name for name in names if name not in index]
    if missing:
        raise KeyError(f"joint_states lacks joints {missing}; it has {list(msg.name)}")
    return np.asarray([msg.position[index[name]] for name in names], dtype=np.float64)


def twist_message(linear: np.ndarray, angular: np.ndarray, stamp, frame_id: str):
    from geometry_msgs.msg import TwistStamped

    msg = TwistStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in angular)
    return msg


def twist_vectors(msg) -> tuple[np.ndarray, np.ndarray]:
    linear, angular = msg.twist.linear, msg.twist.angular
    return np.array([linear.x, linear.y, linear.z]), np.array([angular.x, angular.y, angular.z])


def joint_trajectory_message(names: tuple[str, ...], positions: np.ndarray, seconds: float, stamp, frame_id: str):
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory(joint_names=list(names))
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    nanoseconds = int(round(seconds * 1e9))
    msg.points = [JointTrajectoryPoint(positions=[float(q) for q in positions],
                                       time_from_start=Duration(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9))]
    return msg


def gripper_closure(action_value: float) -> float:
    """The policy's gripper value (-1 open .. +1 closed) -> closure in [0, 1] for ``/gripper/command``."""
    return float(np.clip((action_value + 1.0) / 2.0, 0.0, 1.0))


def gripper_action(closure: float) -> float:
    """Inverse of ``gripper_closure``."""
    return float(np.clip(2.0 * closure - 1.0, -1.0, 1.0))


def stamp_ns(header) -> int:
    """A std_msgs/Header's stamp in nanoseconds (0: the publisher left it unset)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def pose_position(msg) -> np.ndarray:
    position = msg.pose.position
    return np.array([position.x, position.y, position.z])


def pose_quaternion_wxyz(msg) -> np.ndarray:
    q = msg.pose.orientation
    return np.array([q.w, q.x, q.y, q.z])
