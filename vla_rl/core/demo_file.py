"""Demonstrations on disk in the robomimic / LIBERO HDF5 layout: the contract between data sources
(scripted experts, converted datasets, robot recordings) and SFT.

One file per task, written atomically (to ``*.tmp`` then renamed)::

    data                      attrs: total, env_args (JSON), problem_info (JSON with language_instruction)
    data/demo_<i>             attrs: num_samples, instruction, task, init_state_id, split, success, seed
    data/demo_<i>/actions     float32 [T, 7]    action taken at step t
    data/demo_<i>/rewards     float32 [T]
    data/demo_<i>/dones       uint8   [T]       1 on the last step
    data/demo_<i>/states      float64 [T, S]    simulator state (qpos, qvel) before step t
    data/demo_<i>/obs/agentview_rgb    uint8 [T, H, W, 3]   observation before step t
    data/demo_<i>/obs/eye_in_hand_rgb  uint8 [T, H, W, 3]   (when a wrist camera was recorded)
    data/demo_<i>/obs/ee_pos           float32 [T, 3]
    data/demo_<i>/obs/ee_ori           float32 [T, 3]      rotation vector from pointing down (the live proprio)
    data/demo_<i>/obs/gripper_states   float32 [T, 2]
    data/demo_<i>/obs/joint_states     float32 [T, J]
    data/demo_<i>/obs/agentview_named_pixels  float32 [T, 2, 2]  (tabletop) where the instruction's
                              object and its goal are in agentview_rgb, (column, row): localiser labels
    data/demo_<i>/obs/agentview_gripper_pixels  float32 [T, 2]  (tabletop) where the grip site is in
                              agentview_rgb: the label of the localiser's gripper point
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from vla_rl.core.hdf5_file import open_hdf5


# camera name (the policy's ``cameras``) -> obs key of its images in a demo file
CAMERA_OBS_KEYS = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}
# the 8-D proprio of the envs' observations, in order: EE position, EE orientation, fingers
PROPRIO_OBS_KEYS = ("ee_pos", "ee_ori", "gripper_states")
# labels of the localiser (vla_rl/policy/localiser.py): the named objects' image positions
NAMED_PIXELS_OBS_KEY = "agentview_named_pixels"
GRIPPER_PIXELS_OBS_KEY = "agentview_gripper_pixels"
LOCALISER_LABEL_KEYS = (NAMED_PIXELS_OBS_KEY, GRIPPER_PIXELS_OBS_KEY)


@dataclass
class Episode:
    """One demonstration in memory; ``obs`` maps the layout's obs keys to ``[T, ...]`` arrays."""

    instruction: str
    task: str
    actions: np.ndarray
    rewards: np.ndarray
    obs: dict[str, np.ndarray]
    states: np.ndarray
    success: bool
    init_state_id: int = -1
    split: str = "train"
    seed: int = 0
    extra_attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        steps = len(self.actions)
        if self.actions.ndim != 2:
            raise ValueError(f"actions must be [T, A], got {self.actions.shape}")
        for name, array in {"rewards": self.rewards, "states": self.states, **self.obs}.items():
            if len(array) != steps:
                raise ValueError(f"{name} has {len(array)} steps but actions have {steps}")

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    def camera_images(self, camera: str) -> np.ndarray:
        """``uint8 [T, H, W, 3]`` of a policy camera (``agentview``, ``wrist``)."""
        if camera not in CAMERA_OBS_KEYS:
            raise ValueError(f"unknown camera {camera!r}; demo files hold {sorted(CAMERA_OBS_KEYS)}")
        key = CAMERA_OBS_KEYS[camera]
        if key not in self.obs:
            raise KeyError(f"the {self.task} demo has no obs/{key} for camera {camera!r} "
                           f"(record it with `vla-rl demos`, whose wrist camera is on by default)")
        return self.obs[key]

    def named_pixels(self, gripper: bool = False) -> np.ndarray:
        """``float32 [T, K, 2]``: (column, row) in the agent-view images of the instruction's named
        objects (the object, then its goal), then with ``gripper`` the grip site: the localiser's
        training labels."""
        for key in LOCALISER_LABEL_KEYS[:1 + gripper]:
            if key not in self.obs:
                raise KeyError(f"the {self.task} demo has no obs/{key} (localiser labels); tabletop demos get them "
                               f"with `vla-rl demos`, or `vla-rl demos --label DIR` for files recorded earlier")
        named = self.obs[NAMED_PIXELS_OBS_KEY].astype(np.float32)
        if not gripper:
            return named
        return np.concatenate([named, self.obs[GRIPPER_PIXELS_OBS_KEY].astype(np.float32)[:, None]], axis=1)

    def proprio(self) -> np.ndarray:
        """``float32 [T, 8]``: the envs' proprio layout, from ``obs/ee_pos``, ``ee_ori``, ``gripper_states``."""
        missing = [key for key in PROPRIO_OBS_KEYS if key not in self.obs]
        if missing:
            raise KeyError(f"the {self.task} demo has no obs/{missing[0]}, needed for proprio input")
        return np.concatenate([self.obs[key] for key in PROPRIO_OBS_KEYS], axis=1).astype(np.float32)


def write_demo_file(path: Path, episodes: list[Episode], env_args: dict[str, Any]) -> Path:
    """Write ``episodes`` to ``path`` atomically; returns the path."""
    if not episodes:
        raise ValueError(f"no episodes to write to {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["total"] = int(sum(e.num_steps for e in episodes))
        data.attrs["env_args"] = json.dumps(env_args)
        data.attrs["problem_info"] = json.dumps(
            {"problem_name": episodes[0].task, "language_instruction": episodes[0].instruction}
        )
        for index, episode in enumerate(episodes):
            group = data.create_group(f"demo_{index}")
            group.attrs.update(
                num_samples=episode.num_steps, instruction=episode.instruction, task=episode.task,
                init_state_id=episode.init_state_id, split=episode.split, success=bool(episode.success),
                seed=episode.seed, **episode.extra_attrs,
            )
            group.create_dataset("actions", data=episode.actions.astype(np.float32))
            group.create_dataset("rewards", data=episode.rewards.astype(np.float32))
            dones = np.zeros(episode.num_steps, np.uint8)
            dones[-1] = 1
            group.create_dataset("dones", data=dones)
            group.create_dataset("states", data=episode.states)
            obs = group.create_group("obs")
            for key, array in episode.obs.items():
                compress = {"compression": "gzip", "compression_opts": 4} if array.dtype == np.uint8 else {}
                obs.create_dataset(key, data=array, **compress)
    os.replace(tmp, path)
    return path


def read_env_args(path: Path) -> dict[str, Any]:
    """A demo file's ``env_args`` (the collecting config under ``config``, versions); {} if it has none."""
    with open_hdf5(path) as f:
        return json.loads(f["data"].attrs.get("env_args", "{}")) if "data" in f else {}


def rendered_antialiased(path: Path) -> bool:
    """Whether a demo file's images were rendered with multisampling: the ``antialias`` of the config
    that collected it. Files from before that option and converted datasets count as antialiased (the
    simulators' default)."""
    return bool(read_env_args(path).get("config", {}).get("antialias", True))


def check_orientation_convention(path: Path) -> None:
    """A ValueError for demo files whose ``ee_ori`` is not the suites' live proprio orientation (the
    rotation from pointing down): files ``convert-demos`` wrote before it converted orientations
    (their angle wrapped into [0, pi] flips sign near pi, which a downward gripper always is), and
    LIBERO datasets as LIBERO wrote them (raw ``quat2axisangle``). Both train a policy on a proprio
    it never sees live."""
    with open_hdf5(path) as f:
        attrs = f["data"].attrs if "data" in f else {}
        converted, libero_raw = "converter" in attrs, "bddl_file_name" in attrs  # bddl_file_name: LIBERO's writers
        convention = "ee_ori_convention" in attrs
    if converted and not convention:
        raise ValueError(f"{path} was converted before convert-demos turned orientations into the suites' "
                         f"convention (rotation from pointing down): convert its source again with `vla-rl "
                         f"convert-demos`")
    if libero_raw and not converted:
        raise ValueError(f"{path} is a LIBERO dataset as LIBERO wrote it (other image flips, raw axis-angle "
                         f"orientation): convert it with `vla-rl convert-demos` first")


def read_demo_file(path: Path) -> Iterator[Episode]:
    """Yield the episodes of a file in the layout above (``demo_0``, ``demo_1``, ... in order)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"demonstration file {path} does not exist")
    with open_hdf5(path) as f:
        if "data" not in f:
            raise ValueError(f"{path} has no 'data' group: not a robomimic/LIBERO-layout demo file")
        data = f["data"]
        problem = json.loads(data.attrs.get("problem_info", "{}"))
        names = sorted(data.keys(), key=lambda name: int(name.split("_")[-1]))
        for name in names:
            group = data[name]
            attrs = dict(group.attrs)
            instruction = attrs.pop("instruction", problem.get("language_instruction", ""))
            yield Episode(
                instruction=str(instruction),
                task=str(attrs.pop("task", problem.get("problem_name", ""))),
                actions=group["actions"][()],
                rewards=group["rewards"][()] if "rewards" in group else np.zeros(len(group["actions"]), np.float32),
                obs={key: group["obs"][key][()] for key in group["obs"]},
                states=group["states"][()] if "states" in group else np.zeros((len(group["actions"]), 0)),
                success=bool(attrs.pop("success", True)),
                init_state_id=int(attrs.pop("init_state_id", -1)),
                split=str(attrs.pop("split", "train")),
                seed=int(attrs.pop("seed", 0)),
            )
