"""Episode recording as ROS 2 bags (MCAP by default, or sqlite3) and their conversion to SFT data.

``BagRecorder`` is handed every message the deployment node receives or publishes (serialised with
rclpy's own CDR serialiser, so the bag holds exactly what went over the wire) and writes one bag per
episode: ``<out>/episode_0001/`` etc. Besides the robot topics it writes
- ``/vla/episode`` (std_msgs/String JSON, first message): instruction, robot config, start time;
- ``/vla/executed_action`` (std_msgs/Float64MultiArray): each policy action after the safety layer,
  in policy units (``[-1, 1]`` deltas and gripper), one per control step whose action the safety
  layer executed (a rejected one moved nothing and is left out; in joint mode it is the Cartesian
  command before IK and the ``max_joint_step_rad`` clamp);
- ``/vla/executed_action_image`` (std_msgs/Header), written just before the first executed action of each
  chunk: the header of the scene image the chunk was decided from.
A simulated robot's ``/sim/init_state`` (std_msgs/String JSON, latched; ``vla-rl sim-bridge`` publishes it) is
recorded into every bag too, so a converted episode keeps the split and id of the init state it was recorded on.

``bag_to_episode`` turns a bag back into an ``Episode`` of our demo format (the robomimic/LIBERO
HDF5 layout SFT reads): step t pairs ``/vla/executed_action`` t, when a ``/vla/executed_action_image``
precedes it, with the scene image that header's stamp names (newer frames arrive during inference, so the
newest image before the action is not the one it was decided from) and the joint state and end-effector
pose of when that image arrived; a chunk's later actions, a bag without those headers, or a stamp that
matches no recorded image (e.g. a camera driver that leaves stamps at zero; a warning counts them) get the
newest image, joint state and pose before the action.
Bags are read with ``rosbags`` (pure Python), so conversion needs no ROS installation.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from real_robot.config import RobotConfig
from real_robot.messages import SIM_INIT_STATE_TOPIC
from vla_rl.core.demo_file import Episode

log = logging.getLogger("vla_rl.deploy")

EPISODE_TOPIC = "/vla/episode"
ACTION_TOPIC = "/vla/executed_action"
ACTION_IMAGE_TOPIC = "/vla/executed_action_image"
RECENT_IMAGES = 256  # images kept while converting, to find the one an action was decided from
STORAGES = ("mcap", "sqlite3")


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def ros_type_name(msg) -> str:
    """``sensor_msgs.msg.Image`` instance -> ``sensor_msgs/msg/Image``."""
    return f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"


class BagRecorder:
    """Writes episodes on its own thread: disk I/O never stalls the control loop, and the bag
    writer (sqlite3 objects are bound to their thread) lives in one thread whatever thread the
    node calls from. ``close()`` flushes everything and ends the thread."""

    def __init__(self, out_dir: str | Path, robot: RobotConfig, storage: str = "mcap"):
        import queue
        import threading

        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
        self.out_dir, self.robot, self.storage = Path(out_dir), robot, storage
        self.out_dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.out_dir.glob("episode_*"))
        if existing:  # checked now, not at the first instruction in the middle of a run
            raise FileExistsError(f"{self.out_dir} already holds recordings ({existing[0].name}, ...); "
                                  "record into a new directory so nothing is overwritten")
        self.bags: list[Path] = []
        self.error: BaseException | None = None
        self.open = False
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    # ---- called from the node (any thread) ----------------------------------------------------
    def start_episode(self, episode: int, instruction: str) -> Path:
        """End the current bag and start ``episode_<n>``; returns its directory."""
        from rclpy.serialization import serialize_message
        from std_msgs.msg import String

        path = self.out_dir / f"episode_{episode:04d}"
        if path.exists() or path in self.bags:
            raise FileExistsError(f"{path} exists; record into a new directory so nothing is overwritten")
        self.bags.append(path)
        robot = asdict(self.robot) if is_dataclass(self.robot) else {}
        header = {"instruction": instruction, "episode": episode, "robot": robot, "started_unix_s": time.time()}
        self._queue.put(("start", path))
        self._put(EPISODE_TOPIC, "std_msgs/msg/String", serialize_message(String(data=json.dumps(header))))
        self.open = True
        return path

    def write(self, topic: str, msg) -> None:
        if self.open:
            from rclpy.serialization import serialize_message

            self._put(topic, ros_type_name(msg), serialize_message(msg))

    def write_action(self, action: np.ndarray, image_header=None) -> None:
        """One executed action; ``image_header``: the std_msgs/Header of the scene image it was decided from."""
        if self.open:
            from rclpy.serialization import serialize_message
            from std_msgs.msg import Float64MultiArray

            if image_header is not None:
                self._put(ACTION_IMAGE_TOPIC, "std_msgs/msg/Header", serialize_message(image_header))
            msg = Float64MultiArray(data=[float(v) for v in action])
            self._put(ACTION_TOPIC, "std_msgs/msg/Float64MultiArray", serialize_message(msg))

    def close(self) -> None:
        """Flush and close the bag and stop the writer thread; the first call raises what the writer hit."""
        if not self._thread.is_alive():
            return  # closed before, and any error raised then
        self._queue.put(("stop",))
        self._thread.join()
        self.open = False
        if self.error is not None:
            raise RuntimeError(f"recording into {self.out_dir} failed: {self.error}") from self.error

    def _put(self, topic: str, msgtype: str, data: bytes) -> None:
        self._queue.put(("msg", topic, msgtype, data, time.time_ns()))

    # ---- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        typestore, writer, connections = _typestore(), None, {}
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        while True:
            item = self._queue.get()
            try:
                if item[0] in ("start", "stop") and writer is not None:
                    writer.close()
                    writer = None
                if item[0] == "stop":
                    return
                if item[0] == "start":
                    writer, connections = Writer(item[1], version=9, storage_plugin=plugin), {}
                    writer.open()
                elif writer is not None:
                    _, topic, msgtype, data, stamp = item
                    if topic not in connections:
                        connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
                    writer.write(connections[topic], stamp, data)
            except Exception as error:  # noqa: BLE001 - kept and raised by close(); recording stops
                log.error("recording into %s failed, the rest of this episode is not recorded: %r", self.out_dir, error)
                self.error, self.open = error, False
                if writer is not None:
                    try:  # what was written stays readable: metadata.yaml is written on close
                        writer.close()
                    except Exception as second:  # noqa: BLE001 - the first error is the one to report
                        log.error("closing the failed bag failed too: %r", second)
                writer = None
                if item[0] == "stop":
                    return  # close() waits for this thread: it must end even when the last bag failed to close


def read_bag(path: str | Path) -> list[tuple[str, int, object]]:
    """All messages of a bag as ``(topic, log time ns, deserialised message)``, in time order; a bag that
    rosbags cannot read (a damaged metadata.yaml, say) is a ValueError naming it."""
    from rosbags.rosbag2 import Reader, ReaderError

    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise FileNotFoundError(f"{path} is not a ROS 2 bag directory (no metadata.yaml)")
    typestore = _typestore()
    out = []
    try:
        with Reader(path) as reader:
            for connection, timestamp, raw in reader.messages():
                out.append((connection.topic, timestamp, _deserialize(typestore, raw, connection.msgtype)))
    except ReaderError as error:
        raise ValueError(f"{path} is not a readable ROS 2 bag: {' '.join(str(error).split())}") from None
    out.sort(key=lambda item: item[1])
    return out


def _deserialize(typestore, raw: bytes, msgtype: str):
    """CDR -> message. rclpy (Fast CDR 2) may end a message with 4 bytes of padding where rosbags'
    strict check allows 3, so a size mismatch alone falls back to decoding without that check;
    a message that does not decode is still an error."""
    from rosbags.serde import SerdeError

    try:
        return typestore.deserialize_cdr(raw, msgtype)
    except SerdeError as error:
        if "size mismatch" not in str(error) or bytes(raw[:2]) not in (b"\x00\x00", b"\x00\x01"):
            raise
        msgdef = typestore.get_msgdef(msgtype)
        decode = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
        message, used = decode(raw[4:], 0, msgdef.cls, typestore)
        if len(raw) - 4 - used > 8:  # more than alignment padding left over: not this type
            raise
        return message


def bag_to_episode(path: str | Path, image_size: int = 64, task: str = "", success: bool = False) -> Episode:
    """One recorded episode as an ``Episode`` (see module docstring); ``success`` is the label the
    operator gives (a real arm has no success predicate)."""
    from real_robot.messages import image_to_rgb, square_resize, stamp_ns  # rosbags' Image has sensor_msgs' fields

    messages = read_bag(path)
    header = next((json.loads(m.data) for topic, _, m in messages if topic == EPISODE_TOPIC), None)
    if header is None:
        raise ValueError(f"{path} has no {EPISODE_TOPIC} message: not a bag written by BagRecorder")
    topics = header["robot"].get("topics", {})
    image_topic, joint_topic = topics.get("image", "/camera/image_raw"), topics.get("joint_states", "/joint_states")
    pose_topic = topics.get("ee_pose", "")
    latest: dict[str, object] = {}
    # each recent scene image by its header stamp, with the joint state and pose of when it arrived
    recent: dict[int, tuple[object, object, object]] = {}
    decided_from = None  # the header /vla/executed_action_image named for the next action
    images, joints, positions, actions = [], [], [], []
    unmatched = 0
    for topic, _, msg in messages:
        if topic in (image_topic, joint_topic, pose_topic):
            latest[topic] = msg
            if topic == image_topic:
                recent[stamp_ns(msg.header)] = (msg, latest.get(joint_topic), latest.get(pose_topic))
                if len(recent) > RECENT_IMAGES:
                    del recent[next(iter(recent))]
        elif topic == ACTION_IMAGE_TOPIC:
            decided_from = msg
        elif topic == ACTION_TOPIC:
            if image_topic not in latest:
                raise ValueError(f"{path}: an action was recorded before any image on {image_topic}")
            # a zero stamp (a driver that does not stamp) would match whichever zero-stamped image came last
            stamp = stamp_ns(decided_from) if decided_from is not None else 0
            source = recent.get(stamp) if stamp else None
            if source is None:
                unmatched += decided_from is not None
                source = (latest[image_topic], latest.get(joint_topic), latest.get(pose_topic))
            decided_from = None
            image, joint, pose = source
            actions.append(np.asarray(msg.data, dtype=np.float32))
            images.append(square_resize(image_to_rgb(image), image_size))
            joints.append(np.asarray(joint.position if joint is not None else [], dtype=np.float32))
            positions.append(np.array([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z]
                                      if pose is not None else [np.nan] * 3, dtype=np.float32))
    if unmatched:
        warnings.warn(f"{path}: {unmatched} executed actions name an image stamp that no recorded image has (does the "
                      "camera driver stamp its images?); they are paired with the newest image before them")
    if not actions:
        raise ValueError(f"{path} holds no executed actions ({ACTION_TOPIC}); nothing to convert")
    steps = len(actions)
    obs = {"agentview_rgb": np.stack(images), "ee_pos": np.stack(positions)}
    if len({len(j) for j in joints}) == 1 and len(joints[0]):
        obs["joint_states"] = np.stack(joints)
    # a simulated robot names its init state: the episode keeps its split, so one recorded on a held-out init
    # state stays held out (SFT refuses split "eval"); a real arm's episodes have none
    sim = [json.loads(m.data) for topic, _, m in messages if topic == SIM_INIT_STATE_TOPIC]
    split, init_state_id = (str(sim[-1]["split"]), int(sim[-1]["init_state_id"])) if sim else ("robot", -1)
    return Episode(instruction=header["instruction"], task=task or header["robot"].get("name", "robot"),
                   actions=np.stack(actions), rewards=np.zeros(steps, np.float32), obs=obs,
                   states=np.zeros((steps, 0)), success=success, init_state_id=init_state_id, split=split,
                   extra_attrs={"source_bag": str(path)})
