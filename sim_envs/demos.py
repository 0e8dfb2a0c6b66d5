"""Collect scripted-expert demonstrations of the tabletop tasks into HDF5 files (and MP4 videos).

Tasks are collected in parallel worker processes (one task per job); each keeps drawing training
init states until it has the requested number of *successful* episodes (failed attempts are
counted and reported, never written).
"""

from __future__ import annotations

import concurrent.futures as futures
import json
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from vla_rl.core.atomic_file import write_text_atomic
from vla_rl.core.config import option, to_dict
from vla_rl.core.demo_file import (GRIPPER_PIXELS_OBS_KEY, LOCALISER_LABEL_KEYS, NAMED_PIXELS_OBS_KEY, Episode,
                                   read_demo_file, write_demo_file)
from vla_rl.core.hdf5_file import open_hdf5

from sim_envs.experts import make_expert
from sim_envs.tabletop_env import TabletopEnv
from sim_envs.tasks import TASKS
from sim_envs.versions import environment_versions

ATTEMPTS_PER_DEMO = 3  # give up on a task after this many attempts per requested demo


@dataclass(frozen=True)
class DemoConfig:
    tasks: tuple[str, ...] = option(tuple(TASKS), "tabletop tasks to collect")
    episodes_per_task: int = option(10, "successful demonstrations to keep per task")
    out_dir: Path = option(Path("runs/demo/demos"), "output directory (one <Task>_demo.hdf5 per task; the default is "
                                                    "`vla-rl sft`'s default demo_dir)")
    image_size: int = option(64, "observation image size in pixels")
    wrist_camera: bool = option(True, "also record the wrist camera (obs/eye_in_hand_rgb)")
    antialias: bool = option(True, "render the observations with 4x multisampling; false: frames ~1.9x faster, for a "
                                   "policy with model.antialias: false (the SFT refuses demos rendered otherwise)")
    split: Literal["train", "eval"] = option("train", "init-state split; demos for training use 'train' (the SFT "
                                                      "refuses 'eval' demos: they would leak the held-out states)")
    first_init_state: int = option(0, "first init-state id; ids first..first+attempts-1 are used in order")
    noise_std: float = option(0.0, "Gaussian noise on the expert's motion actions (perturbed expert)")
    rotation_noise: bool = option(True, "the noise perturbs rotation too; off: translation only, so clean labels "
                                        "teach position corrections without tilts the policy rarely makes itself")
    action_labels: Literal["clean", "executed"] = option(
        "clean", "with noise: record the expert's noise-free action (DART: labels that correct the perturbation) "
        "or the noisy action that was executed")
    videos_per_task: int = option(1, "episodes per task also saved as MP4")
    video_size: int = option(256, "MP4 frame size in pixels")
    num_workers: int = option(-1, "parallel processes; -1 = one per core")
    seed: int = option(0, "seed of the expert's action noise")
    align_yaw: bool = option(False, "grasping experts turn the gripper to the block's yaw; off: yaw 0, which "
                                    "grasps every block too and needs no yaw the policy cannot see (experts.py)")

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; valid tasks: {', '.join(TASKS)}")
        repeated = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        if repeated:  # each would be collected again into the same file
            raise ValueError(f"tasks {repeated} are given more than once")
        if not 32 <= self.video_size <= 512:
            raise ValueError(f"video_size must be in [32, 512], got {self.video_size}")
        if self.episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):  # 0 = no noise; never a negative "none"
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std}")


def run_expert_episode(
    env: TabletopEnv, init_state_id: int, split: str, noise_std: float = 0.0, seed: int = 0,
    video_size: int | None = None, action_labels: str = "clean", align_yaw: bool = False,
    rotation_noise: bool = True,
) -> tuple[Episode, list[np.ndarray]]:
    """Roll out the task's expert once; returns the episode and (optionally) video frames."""
    obs, info = env.reset(options={"init_state_id": init_state_id, "split": split})
    expert = make_expert(env, noise_std=noise_std, seed=seed, align_yaw=align_yaw, rotation_noise=rotation_noise)
    records: dict[str, list[np.ndarray]] = {k: [] for k in ("actions", "rewards", "states", "agentview_rgb",
                                                              "eye_in_hand_rgb", "proprio", "joint_states",
                                                              "named_pixels", "gripper_pixels")}
    frames = [env.render_camera("agentview", video_size)] if video_size else []
    success = False
    for _ in range(env.max_episode_steps):
        action = expert.act()
        records["states"].append(np.concatenate([env.data.qpos, env.data.qvel]))
        records["agentview_rgb"].append(obs["agentview_image"])
        if "wrist_image" in obs:
            records["eye_in_hand_rgb"].append(obs["wrist_image"])
        records["proprio"].append(obs["proprio"])
        records["named_pixels"].append(env.named_pixels())
        records["gripper_pixels"].append(env.gripper_pixels())
        records["joint_states"].append(env.data.qpos[env.arm.arm_qpos_adr].astype(np.float32))
        obs, reward, terminated, truncated, info = env.step(action)
        records["actions"].append(expert.clean_action if action_labels == "clean" else action)
        records["rewards"].append(reward)
        if video_size:
            frames.append(env.render_camera("agentview", video_size))
        if terminated or truncated:
            success = bool(info["success"])
            break
    proprio = np.stack(records["proprio"])
    episode_obs = {
        "agentview_rgb": np.stack(records["agentview_rgb"]),
        "ee_pos": proprio[:, :3], "ee_ori": proprio[:, 3:6], "gripper_states": proprio[:, 6:8],
        "joint_states": np.stack(records["joint_states"]), NAMED_PIXELS_OBS_KEY: np.stack(records["named_pixels"]),
        GRIPPER_PIXELS_OBS_KEY: np.stack(records["gripper_pixels"]),
    }
    if records["eye_in_hand_rgb"]:
        episode_obs["eye_in_hand_rgb"] = np.stack(records["eye_in_hand_rgb"])
    episode = Episode(
        instruction=env.instruction, task=env.task_name, actions=np.stack(records["actions"]),
        rewards=np.asarray(records["rewards"], np.float32), obs=episode_obs, states=np.stack(records["states"]),
        success=success, init_state_id=init_state_id, split=split, seed=seed,
    )
    return episode, frames


def collect_task(task: str, config: DemoConfig, progress=None) -> dict:
    """Collect one task's demos, write its HDF5 (and videos); returns a summary dict."""
    import imageio.v3 as iio  # lazy: only needed here

    env = TabletopEnv(task, image_size=config.image_size, wrist_camera=config.wrist_camera, antialias=config.antialias)
    kept: list[Episode] = []
    attempts, started = 0, time.perf_counter()
    videos: list[str] = []
    try:
        while len(kept) < config.episodes_per_task and attempts < ATTEMPTS_PER_DEMO * config.episodes_per_task:
            init_state_id = config.first_init_state + attempts
            want_video = len(videos) < config.videos_per_task
            episode, frames = run_expert_episode(
                env, init_state_id, config.split, config.noise_std, config.seed + init_state_id,
                video_size=config.video_size if want_video else None, action_labels=config.action_labels,
                align_yaw=config.align_yaw, rotation_noise=config.rotation_noise,
            )
            attempts += 1
            if episode.success:
                kept.append(episode)
                if want_video:
                    video = config.out_dir / "videos" / f"{task}_init{init_state_id}.mp4"
                    video.parent.mkdir(parents=True, exist_ok=True)
                    iio.imwrite(video, np.stack(frames), fps=env.metadata["render_fps"], codec="libx264")
                    iio.imwrite(video.with_suffix(".png"), frames[0])
                    videos.append(str(video))
                if progress is not None:
                    progress.put(1)
    finally:
        env.close()
    env_args = {"env_name": task, "suite": "tabletop", "config": to_dict(config), **environment_versions()}
    path = write_demo_file(config.out_dir / f"{task}_demo.hdf5", kept, env_args) if kept else None
    return {
        "task": task, "demos": len(kept), "attempts": attempts, "instruction": kept[0].instruction if kept else "",
        "expert_success_rate": len(kept) / max(attempts, 1),
        "mean_length": float(np.mean([e.num_steps for e in kept])) if kept else 0.0,
        "file": str(path) if path else None, "videos": videos, "seconds": time.perf_counter() - started,
    }


def label_demo_file(path: Path) -> bool:
    """Add localiser labels (``obs/agentview_named_pixels``, ``obs/agentview_gripper_pixels``) to a
    tabletop demo file recorded without them, by replaying each step's recorded simulator state;
    False if it already had them."""
    episodes = list(read_demo_file(path))
    if all(key in episode.obs for episode in episodes for key in LOCALISER_LABEL_KEYS):
        return False
    with open_hdf5(path) as f:
        env_args = json.loads(f["data"].attrs["env_args"])
    if env_args.get("suite") != "tabletop":
        raise ValueError(f"{path} is not a tabletop demo file (suite {env_args.get('suite')!r}): only tabletop "
                         f"demos can be labelled from their states")
    size = episodes[0].obs["agentview_rgb"].shape[1]
    env = TabletopEnv(episodes[0].task, image_size=size, wrist_camera=False)
    try:
        for episode in episodes:
            env.reset(options={"init_state_id": episode.init_state_id, "split": episode.split})
            named, gripper = [], []
            for state in episode.states:
                env.set_state(state)
                named.append(env.named_pixels())
                gripper.append(env.gripper_pixels())
            episode.obs[NAMED_PIXELS_OBS_KEY], episode.obs[GRIPPER_PIXELS_OBS_KEY] = np.stack(named), np.stack(gripper)
    finally:
        env.close()
    write_demo_file(path, episodes, env_args)
    return True


def collect_demos(config: DemoConfig, show_progress: bool = True) -> list[dict]:
    """Collect every configured task in parallel processes with one overall progress bar."""
    from tqdm import tqdm

    config.out_dir.mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if config.num_workers == -1 else max(config.num_workers, 1)
    context = mp.get_context("spawn")
    manager = context.Manager()
    progress = manager.Queue()
    total = config.episodes_per_task * len(config.tasks)
    summaries = []
    with futures.ProcessPoolExecutor(max_workers=min(workers, len(config.tasks)), mp_context=context) as pool, tqdm(
        total=total, desc="expert demos", unit="demo", disable=not show_progress
    ) as bar:
        jobs = {pool.submit(collect_task, task, config, progress): task for task in config.tasks}
        pending = set(jobs)
        while pending:
            done, pending = futures.wait(pending, timeout=0.2)
            while not progress.empty():
                bar.update(progress.get())
            for job in done:
                summaries.append(job.result())
        while not progress.empty():
            bar.update(progress.get())
    manager.shutdown()
    summaries.sort(key=lambda s: config.tasks.index(s["task"]))
    write_text_atomic(config.out_dir / "summary.json", json.dumps(summaries, indent=1) + "\n")
    write_overview(summaries, config.out_dir / "overview.png")
    return summaries


def write_overview(summaries: list[dict], path: Path) -> Path | None:
    """One image of every task's first video frame, titled with its instruction."""
    import imageio.v3 as iio
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = [(s["task"], s["instruction"], Path(s["videos"][0]).with_suffix(".png")) for s in summaries if s["videos"]]
    if not shots:
        return None
    columns = min(4, len(shots))
    rows = -(-len(shots) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (task, instruction, image) in zip(axes.flat, shots):
        ax.imshow(iio.imread(image))
        ax.set_title(f"{task}\n\"{instruction}\"", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
