"""Convert published LIBERO and robomimic HDF5 demonstrations into our demo files for SFT.

One source file becomes ``<out_dir>/<task>_demo.hdf5`` in the layout of ``vla_rl.core.demo_file``
(read by ``vla_rl.policy.sft.load_demos``). Two source layouts are recognised:

- **libero** (``libero_spatial/<task>_demo.hdf5``): ``data`` attrs ``problem_info`` (JSON with
  ``language_instruction``) and ``env_args``; per demo ``actions [T, 7]``, ``states``, ``rewards``,
  ``obs/agentview_rgb``, ``obs/eye_in_hand_rgb``, ``obs/ee_pos``, ``obs/ee_ori`` (axis-angle; or both
  in ``obs/ee_states [T, 6]``), ``obs/gripper_states [T, 2]``, ``obs/joint_states [T, 7]``.
- **robomimic** (``lift/ph/image.hdf5``): ``data`` attr ``env_args`` (JSON with ``env_name``), no
  language; per demo ``obs/agentview_image``, ``obs/robot0_eye_in_hand_image``, ``obs/robot0_eef_pos``,
  ``obs/robot0_eef_quat`` (x, y, z, w), ``obs/robot0_gripper_qpos``, ``obs/robot0_joint_pos``; optional
  demo subsets in ``mask/<filter>`` (byte-string demo names).

What the conversion does, per demo:

- **images** (every camera, the agent view required): both layouts store the raw robosuite render
  (OpenGL: upside down). Our envs show the scene as a person sees it, so ``flip="auto"`` rotates
  LIBERO images by 180 degrees (``raw[::-1, ::-1]``, as ``sim_envs.libero_env`` and OpenVLA's LIBERO
  evaluation do) and flips robomimic images vertically (``raw[::-1]``, as our robosuite env does).
  With ``image_size`` they are resized to ``image_size x image_size``: box (area) averaging when
  shrinking, antialiased bilinear when enlarging;
- **proprio**: ``ee_pos``, ``ee_ori``, ``gripper_states``, ``joint_states`` as float32. ``ee_ori`` is
  the world-frame rotation vector from "gripper pointing straight down" to the EE orientation, the
  convention of our robosuite and LIBERO envs' proprio (``sim_envs.suites.rotation_from_down``), so
  converted demos and live observations agree. It is computed from robomimic's quaternion, and from
  LIBERO's ``ee_ori`` (robosuite's ``quat2axisangle`` of the EE body quaternion, angle in [0, 2 pi],
  which is what OpenVLA-OFT feeds its policy) through the quaternion of that rotation;
- **actions** are copied unchanged (checked: float ``[T, 7]``, finite); ``states`` and ``rewards``
  too; ``dones`` are rewritten by our writer (1 on the last step); every published demo is a
  success, so ``success=True``; ``init_state_id=-1`` (not one of our init states).

Memory: a source file can be several GB, so it is read one demo at a time; converted images go to a
scratch HDF5 next to the output and our writer reads them back one demo at a time, so the peak
memory is about one demo. The output appears atomically: our writer writes ``*.partial``, the
provenance attrs are added to it, then it is renamed to ``<task>_demo.hdf5``.

Task and instruction: a LIBERO dataset of one of LIBERO's 130 tasks is written under our task name
(``libero_spatial_03``), found from LIBERO's name of the task (``resolve_libero_task``), and its demos
get the instruction our env gives that task (LIBERO's ``task.language``, what evaluation conditions
on), not the dataset's own ``(:language ...)`` text of the BDDL file, which differs for most tasks.
Other files are named after their stem and keep their own instruction; ``task`` and ``instruction``
override both.

Provenance (``data`` attrs of the output): ``source_path``, ``source_layout``, ``flip``,
``source_image_size`` and ``image_size`` (``[H, W]``), ``source_mask``, ``converter``,
``ee_ori_convention``, ``source_instruction`` (the dataset's own, "" for robomimic),
``source_bddl_file_name`` ("" when absent) and ``instruction_from`` ("env", "dataset" or
"argument"); each demo group records its ``source_demo`` name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import h5py
import numpy as np

from sim_envs.suites import axis_angle_to_quat_xyzw, rotation_from_down
from vla_rl.core.demo_file import Episode, write_demo_file
from vla_rl.core.hdf5_file import open_hdf5

Flip = Literal["auto", "libero", "robosuite", "none"]

# How each flip turns a raw (OpenGL) render ``[T, H, W, 3]`` into what our envs return.
FLIPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "libero": lambda images: images[:, ::-1, ::-1],  # rotate by 180 degrees
    "robosuite": lambda images: images[:, ::-1],     # flip vertically
    "none": lambda images: images,
}
AUTO_FLIP = {"libero": "libero", "robomimic": "robosuite"}
ACTION_DIM = 7
RESIZE_BATCH = 64  # frames resized at once (bounds the float32 copy)
# What ``obs/ee_ori`` holds in a converted file (also stored in its ``data`` attrs)
EE_ORI_CONVENTION = "rotation vector from gripper pointing down (sim_envs.suites.rotation_from_down)"


@dataclass(frozen=True)
class SourceLayout:
    """One published layout: its camera keys (source -> ours) and how it stores proprio."""

    name: str
    cameras: dict[str, str]
    main_camera: str  # source key that must be present (our ``agentview_rgb``)
    proprio: Callable[[h5py.Group, int], dict[str, np.ndarray]]


# ---- proprio ---------------------------------------------------------------------------------
def _obs_array(obs: h5py.Group, key: str, steps: int, width: int | None) -> np.ndarray:
    array = obs[key][()]
    if array.ndim != 2 or len(array) != steps or (width is not None and array.shape[1] != width):
        want = f"[{steps}, {width if width is not None else 'J'}]"
        raise ValueError(f"obs/{key} has shape {array.shape}, expected {want}")
    return array


def _require(obs: h5py.Group, *keys: str) -> None:
    missing = [key for key in keys if key not in obs]
    if missing:
        raise ValueError(f"missing obs {missing}; obs keys present: {sorted(obs.keys())}")


def _libero_proprio(obs: h5py.Group, steps: int) -> dict[str, np.ndarray]:
    if "ee_pos" in obs and "ee_ori" in obs:
        ee_pos, ee_ori = _obs_array(obs, "ee_pos", steps, 3), _obs_array(obs, "ee_ori", steps, 3)
    else:
        _require(obs, "ee_states")
        ee_states = _obs_array(obs, "ee_states", steps, 6)
        ee_pos, ee_ori = ee_states[:, :3], ee_states[:, 3:]
    _require(obs, "gripper_states", "joint_states")
    # LIBERO's ee_ori is robosuite's quat2axisangle of the EE body quaternion (angle in [0, 2 pi])
    return {"ee_pos": ee_pos, "ee_ori": rotation_from_down(axis_angle_to_quat_xyzw(ee_ori)),
            "gripper_states": _obs_array(obs, "gripper_states", steps, 2),
            "joint_states": _obs_array(obs, "joint_states", steps, None)}


def _robomimic_proprio(obs: h5py.Group, steps: int) -> dict[str, np.ndarray]:
    _require(obs, "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "robot0_joint_pos")
    return {"ee_pos": _obs_array(obs, "robot0_eef_pos", steps, 3),
            "ee_ori": rotation_from_down(_obs_array(obs, "robot0_eef_quat", steps, 4)),
            "gripper_states": _obs_array(obs, "robot0_gripper_qpos", steps, 2),
            "joint_states": _obs_array(obs, "robot0_joint_pos", steps, None)}


LAYOUTS: dict[str, SourceLayout] = {
    "libero": SourceLayout("libero", {"agentview_rgb": "agentview_rgb", "eye_in_hand_rgb": "eye_in_hand_rgb"},
                           "agentview_rgb", _libero_proprio),
    "robomimic": SourceLayout("robomimic", {"agentview_image": "agentview_rgb",
                                            "robot0_eye_in_hand_image": "eye_in_hand_rgb"},
                              "agentview_image", _robomimic_proprio),
}


# ---- images ----------------------------------------------------------------------------------
def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` -> ``uint8 [T, size, size, 3]``: box averaging when shrinking (exact
    block means for integer factors), antialiased bilinear when enlarging."""
    import torch  # lazy: importing this module stays cheap

    steps, height, width, _ = images.shape
    mode = {"mode": "area"} if size <= height and size <= width else {
        "mode": "bilinear", "align_corners": False, "antialias": True}
    out = np.empty((steps, size, size, 3), np.uint8)
    for start in range(0, steps, RESIZE_BATCH):
        block = torch.from_numpy(np.ascontiguousarray(images[start:start + RESIZE_BATCH]))
        pixels = torch.nn.functional.interpolate(block.permute(0, 3, 1, 2).float(), size=(size, size), **mode)
        out[start:start + RESIZE_BATCH] = pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


# ---- source file -----------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _json_attr(group: h5py.Group, name: str) -> Any:
    """A JSON string attr parsed (``{}`` when absent; the raw text when it is not JSON)."""
    if name not in group.attrs:
        return {}
    text = _text(group.attrs[name])
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _demo_names(data: h5py.Group) -> list[str]:
    names = [name for name in data.keys() if name.startswith("demo_") and name[5:].isdigit()]
    return sorted(names, key=lambda name: int(name[5:]))


def detect_layout(f: h5py.File, source: Path) -> str:
    """``"libero"`` or ``"robomimic"``; a ValueError saying what was found otherwise."""
    if "data" not in f:
        raise ValueError(f"{source}: no 'data' group (top-level keys: {sorted(f.keys())}); "
                         f"expected the LIBERO or robomimic HDF5 layout")
    data = f["data"]
    names = _demo_names(data)
    if not names:
        raise ValueError(f"{source}: 'data' holds no demo_<i> groups (keys: {sorted(data.keys())[:10]})")
    first = data[names[0]]
    if {"instruction", "task", "init_state_id"} <= set(first.attrs):
        raise ValueError(f"{source} is already in our demo format (vla_rl.core.demo_file); use it as it is")
    obs_keys = set(first["obs"].keys()) if "obs" in first else set()
    if "problem_info" in data.attrs or obs_keys & {"agentview_rgb", "ee_pos", "ee_states", "gripper_states"}:
        return "libero"
    if any(key.startswith("robot0_") for key in obs_keys):
        return "robomimic"
    raise ValueError(f"{source}: neither the LIBERO nor the robomimic layout: data attrs "
                     f"{sorted(data.attrs.keys())}, {names[0]}/obs keys {sorted(obs_keys)} (LIBERO has "
                     f"obs/agentview_rgb and problem_info; robomimic has obs/robot0_* keys)")


def _select_demos(f: h5py.File, source: Path, mask: str | None, max_demos: int) -> list[str]:
    names = _demo_names(f["data"])
    if mask is not None:
        filters = sorted(f["mask"].keys()) if "mask" in f else []
        if mask not in filters:
            raise ValueError(f"{source}: no demo filter mask/{mask}; filters present: {filters or 'none'}")
        wanted = {_text(name) for name in f["mask"][mask][()]}
        unknown = sorted(wanted - set(names))
        if unknown:
            raise ValueError(f"{source}: mask/{mask} names demos that are not in 'data': {unknown[:10]}")
        names = [name for name in names if name in wanted]
    if not names:
        raise ValueError(f"{source}: no demos selected (mask={mask!r})")
    return names[:max_demos] if max_demos else names


def default_task_name(source: Path) -> str:
    """The task name of a source file without ``task``: its stem without a trailing ``_demo``."""
    stem = Path(source).stem
    return stem.removesuffix("_demo") or stem


def _bddl_task_name(data: h5py.Group) -> str | None:
    """LIBERO's name of a dataset's task: the stem of its ``bddl_file_name`` attr (a path on the machine
    that recorded it), or None without that attr."""
    if "bddl_file_name" not in data.attrs:
        return None
    file_name = _text(data.attrs["bddl_file_name"]).replace("\\", "/").rsplit("/", 1)[-1]
    return file_name.removesuffix(".bddl") or None


def resolve_libero_task(data: h5py.Group, source: Path) -> str | None:
    """Our task name (``libero_spatial_03``) of a LIBERO dataset, or None when it names no LIBERO task
    (or LIBERO is not installed).

    The task is found by LIBERO's name of it, which is unique per task: the stem of the dataset's
    ``bddl_file_name`` attr, or else the file's stem without ``_demo`` (LIBERO's datasets are named
    ``<task name>_demo.hdf5``). Not by the instruction: the datasets store the BDDL file's
    ``(:language ...)`` text, which differs from the env's ``task.language`` for most tasks, and
    libero_90 shares a dozen instructions between scenes. When the attr and the file name name two
    different tasks it is an error (pass ``task`` to choose)."""
    by_attr, by_file = _bddl_task_name(data), default_task_name(source)
    try:
        from sim_envs.libero_env import find_task_by_libero_name

        task_by_attr = find_task_by_libero_name(by_attr) if by_attr else None
        task_by_file = find_task_by_libero_name(by_file)
    except (ImportError, RuntimeError):  # LIBERO is not installed: the file's name is all we have
        return None
    if task_by_attr and task_by_file and task_by_attr != task_by_file:
        raise ValueError(f"{source}: its bddl_file_name names LIBERO task {by_attr!r} ({task_by_attr}) but its "
                         f"file name names {by_file!r} ({task_by_file}); pass the task (--task) to choose")
    return task_by_attr or task_by_file


def _default_task(source: Path) -> str:
    """Our LIBERO task name when ``source`` is a LIBERO dataset of a known task (so SFT, RL and
    evaluation agree on it, see ``resolve_libero_task``); otherwise ``default_task_name``."""
    with open_hdf5(source) as f:
        if detect_layout(f, source) == "libero":
            found = resolve_libero_task(f["data"], source)
            if found:
                return found
    return default_task_name(source)


def _env_instruction(task: str) -> str | None:
    """The instruction our LIBERO env gives ``task`` (what evaluation conditions on), or None when
    ``task`` is not one of our LIBERO tasks or LIBERO is not installed."""
    from sim_envs.libero_env import parse_task, task_info

    try:
        parse_task(task)  # a KeyError for any other name
        return task_info(task)["instruction"]
    except (KeyError, ImportError, RuntimeError):
        return None


def _dataset_instruction(data: h5py.Group) -> str:
    """A LIBERO dataset's own instruction (``problem_info.language_instruction``), "" when absent."""
    problem = _json_attr(data, "problem_info")
    text = problem.get("language_instruction") if isinstance(problem, dict) else None
    return " ".join(str(text).split()) if text else ""


def _resolve_instruction(data: h5py.Group, layout: str, instruction: str | None, source: Path) -> str:
    if instruction is None and layout == "libero":
        instruction = _dataset_instruction(data)
        if not instruction:
            raise ValueError(f"{source}: no problem_info.language_instruction; pass --instruction")
    if instruction is None:
        raise ValueError(f"{source}: {layout} files carry no language instruction; pass --instruction "
                         f"(e.g. --instruction 'lift the cube')")
    instruction = " ".join(str(instruction).split())
    if not instruction:
        raise ValueError(f"{source}: the instruction is empty")
    return instruction


def _convert_demo(group: h5py.Group, name: str, spec: SourceLayout, flip: str, image_size: int | None,
                  cameras: dict[str, str] | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], tuple]:
    """One source demo -> (small arrays incl. proprio, images by our key, source image size (H, W))."""
    if "actions" not in group:
        raise ValueError(f"{name}: no 'actions' dataset (keys: {sorted(group.keys())})")
    actions = group["actions"][()]
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or len(actions) == 0:
        raise ValueError(f"{name}: actions must be [T, {ACTION_DIM}] with T >= 1, got {actions.shape}")
    if not np.issubdtype(actions.dtype, np.floating) or not np.all(np.isfinite(actions)):
        bad = np.flatnonzero(~np.isfinite(actions.astype(np.float64)).all(axis=1))
        raise ValueError(f"{name}: actions must be finite floats; non-finite at steps {bad[:10].tolist()} "
                         f"(dtype {actions.dtype})")
    steps = len(actions)
    if "obs" not in group:
        raise ValueError(f"{name}: no 'obs' group (keys: {sorted(group.keys())})")
    obs = group["obs"]
    wanted = cameras if cameras is not None else {k: v for k, v in spec.cameras.items() if k in obs}
    missing = [key for key in [spec.main_camera, *wanted] if key not in obs]
    if missing:
        raise ValueError(f"{name}: missing image obs {sorted(set(missing))}; obs keys present: {sorted(obs.keys())}")
    images, source_size = {}, None
    for source_key, our_key in wanted.items():
        raw = obs[source_key][()]
        if raw.dtype != np.uint8 or raw.ndim != 4 or raw.shape[-1] != 3 or len(raw) != steps:
            raise ValueError(f"{name}: obs/{source_key} must be uint8 [{steps}, H, W, 3], got {raw.dtype} {raw.shape}")
        source_size = source_size or raw.shape[1:3]
        image = FLIPS[flip](raw)
        if image_size is not None and image.shape[1:3] != (image_size, image_size):
            image = resize_images(image, image_size)
        images[our_key] = np.ascontiguousarray(image)
    try:
        proprio = spec.proprio(obs, steps)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    arrays = {key: value.astype(np.float32) for key, value in proprio.items()}
    arrays["actions"] = actions.astype(np.float32)
    arrays["rewards"] = group["rewards"][()].astype(np.float32) if "rewards" in group else np.zeros(steps, np.float32)
    arrays["states"] = group["states"][()].astype(np.float64) if "states" in group else np.zeros((steps, 0))
    return arrays, images, tuple(int(s) for s in source_size)


def convert_hdf5(source: Path, out_dir: Path, task: str | None = None, instruction: str | None = None,
                 image_size: int | None = None, flip: Flip = "auto", max_demos: int = 0,
                 mask: str | None = None, show_progress: bool = True) -> dict:
    """Convert one LIBERO or robomimic HDF5 file into ``<out_dir>/<task>_demo.hdf5``.

    ``task`` defaults to our task name of a LIBERO dataset of a known task (``resolve_libero_task``),
    else to the file stem without ``_demo``; ``instruction`` defaults to our env's instruction of a
    LIBERO task, else to the dataset's ``problem_info``, and is required for robomimic; ``image_size`` resizes to a square (None keeps the
    source size); ``flip`` "auto" picks the layout's orientation fix; ``max_demos`` keeps the first N
    (0 = all) of the demos in ``mask/<mask>`` (or of all demos). Returns a summary: task, instruction,
    demos, samples, file, layout, flip, source_image_size, image_size."""
    from tqdm import tqdm  # lazy

    source, out_dir = Path(source), Path(out_dir)
    if flip not in (*FLIPS, "auto"):
        raise ValueError(f"unknown flip {flip!r}; valid: auto, {', '.join(FLIPS)}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    if max_demos < 0:
        raise ValueError(f"max_demos must be >= 0 (0 = all), got {max_demos}")
    if not source.is_file():
        raise FileNotFoundError(f"source dataset {source} does not exist")
    task = task if task is not None else _default_task(source)
    if not task or task != Path(task).name or task in (".", ".."):
        raise ValueError(f"task {task!r} must be a plain file-name part (no path separators)")
    out_path = out_dir / f"{task}_demo.hdf5"
    if out_path.resolve() == source.resolve():
        raise ValueError(f"converting {source} into {out_dir} would overwrite the source; choose another out_dir")
    partial = out_dir / f"{out_path.name}.partial"
    scratch_path = out_dir / f".{out_path.name}.scratch"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open_hdf5(source) as f, h5py.File(scratch_path, "w") as scratch:
            layout = detect_layout(f, source)
            spec = LAYOUTS[layout]
            data = f["data"]
            names = _select_demos(f, source, mask, max_demos)
            # A LIBERO task of ours is trained on the instruction its env gives (what evaluation uses),
            # not on the dataset's BDDL text, which differs from it for most tasks.
            env_instruction = _env_instruction(task) if layout == "libero" and instruction is None else None
            instruction_from = "argument" if instruction is not None else "env" if env_instruction else "dataset"
            instruction = env_instruction or _resolve_instruction(data, layout, instruction, source)
            source_instruction = _dataset_instruction(data) if layout == "libero" else ""
            source_bddl = _text(data.attrs["bddl_file_name"]) if "bddl_file_name" in data.attrs else ""
            applied_flip = AUTO_FLIP[layout] if flip == "auto" else flip
            episodes, cameras, source_size, size = [], None, None, None
            for name in tqdm(names, desc=f"convert {task}", unit="demo", disable=not show_progress):
                try:
                    arrays, images, demo_size = _convert_demo(data[name], name, spec, applied_flip, image_size, cameras)
                except ValueError as error:
                    raise ValueError(f"{source}: {error}") from None
                if cameras is None:  # the first demo fixes the cameras and the image size
                    cameras = {k: v for k, v in spec.cameras.items() if v in images}
                    source_size, size = demo_size, images["agentview_rgb"].shape[1:3]
                elif images["agentview_rgb"].shape[1:3] != size:
                    raise ValueError(f"{source}: {name} has {demo_size} images but {names[0]} has {source_size}; "
                                     f"pass image_size to resize them all to one size")
                stored = scratch.create_group(name)
                obs = {key: stored.create_dataset(key, data=array) for key, array in images.items()}
                obs.update({key: arrays.pop(key) for key in ("ee_pos", "ee_ori", "gripper_states", "joint_states")})
                # obs images stay in the scratch file (h5py datasets) until the writer copies them
                episodes.append(Episode(
                    instruction=instruction, task=task, actions=arrays["actions"], rewards=arrays["rewards"],
                    obs=obs, states=arrays["states"], success=True, init_state_id=-1, split="train",
                    extra_attrs={"source_demo": name},
                ))
            env_args = {"env_name": task, "suite": layout, "source_env_args": _json_attr(data, "env_args"),
                        "converted_by": __name__}
            write_demo_file(partial, episodes, env_args)
            samples = sum(episode.num_steps for episode in episodes)
        with h5py.File(partial, "a") as f:
            f["data"].attrs.update(
                source_path=str(source.resolve()), source_layout=layout, flip=applied_flip,
                source_image_size=np.asarray(source_size, np.int64), image_size=np.asarray(size, np.int64),
                source_mask=mask or "", converter=__name__, ee_ori_convention=EE_ORI_CONVENTION,
                source_instruction=source_instruction, source_bddl_file_name=source_bddl,
                instruction_from=instruction_from,
            )
        os.replace(partial, out_path)
    finally:
        for leftover in (scratch_path, partial, partial.with_name(partial.name + ".tmp")):
            leftover.unlink(missing_ok=True)
    return {"task": task, "instruction": instruction, "demos": len(episodes), "samples": int(samples),
            "file": str(out_path), "layout": layout, "flip": applied_flip,
            "source_image_size": list(source_size), "image_size": list(size)}


def conversion_plan(sources: list[Path], out_dir: Path, task: str | None = None) -> list[tuple[str, Path]]:
    """``(task, file)`` for every file of ``sources`` (a directory stands for its ``*.hdf5`` files, e.g. a LIBERO
    suite's one per task), under the task name it will be written as: ``task`` for a single file, else a LIBERO
    dataset's resolved task or the file stem. Checked before converting any: two files of one name would silently
    replace each other in ``out_dir``."""
    plan: list[tuple[str, Path]] = []
    for source in map(Path, sources):
        if source.is_dir():
            if task is not None:
                raise ValueError("--task names one output file; it cannot be used with a directory")
            files = sorted(source.glob("*.hdf5"))
            if not files:
                raise FileNotFoundError(f"no *.hdf5 files in {source}")
            plan += [(_default_task(path), path) for path in files]
        elif not source.is_file():
            raise FileNotFoundError(f"source dataset {source} does not exist")
        else:
            plan.append((task if task is not None else _default_task(source), source))
    sources_of: dict[str, Path] = {}
    for name, path in plan:
        if name in sources_of:
            raise ValueError(f"{sources_of[name]} and {path} would both become task {name!r} "
                             f"({out_dir}/{name}_demo.hdf5); convert them separately with --task")
        sources_of[name] = path
    return plan


def convert_directory(source_dir: Path, out_dir: Path, **kwargs: Any) -> list[dict]:
    """Convert every ``*.hdf5`` of ``source_dir`` (e.g. a LIBERO suite: one file per task) with
    ``convert_hdf5(file, out_dir, **kwargs)``; returns one summary per file, in file-name order."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise NotADirectoryError(f"{source_dir} is not a directory")
    if kwargs.pop("task", None) is not None:
        raise ValueError("task names a single output; converting a directory names each file's task after it")
    return [convert_hdf5(path, out_dir, task=task, **kwargs) for task, path in conversion_plan([source_dir], out_dir)]


__all__ = ["convert_hdf5", "convert_directory", "conversion_plan", "detect_layout", "default_task_name", "resolve_libero_task",
           "resize_images",
           "LAYOUTS", "FLIPS", "AUTO_FLIP", "EE_ORI_CONVENTION"]
