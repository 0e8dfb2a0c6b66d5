"""Episodes with simulator progress labels, the training and test data of the reward critic and of
the world model.

Each episode keeps its agent-view frames (and the wrist camera's, when recorded), the executed
actions and the proprio state, and for every frame the task's progress in [0, 1] (``Task.progress``:
stage predicates and distances) and whether the success predicate holds.
Behaviours:
- ``expert``: the scripted expert; it succeeds and its progress rises to 1;
- ``perturbed``: the expert with Gaussian noise (std 0.6) on its motion, which often stalls,
  overshoots or fails;
- ``random``: uniform random actions; the progress stays low;
- ``sluggish``: the expert at half speed with noise 0.4 and its gripper command sometimes dropped.
  The critic never trains on it; it is the "policy the critic never trained on" of the evaluation.
- ``policy``: a VLA policy sampling its actions (temperature from its loader), e.g. an SFT
  checkpoint: ``--policy CKPT`` of ``vla-rl critic collect`` / ``vla-rl wm collect``. The CLI passes
  a picklable ``policy_factory``; this module never imports the policy package.

File layout (HDF5, written atomically)::

    episode_<i>/frames     uint8 [T + 1, H, W, 3]   frame 0 is the reset observation
    episode_<i>/wrist_frames  uint8 [T + 1, H, W, 3]  the wrist camera (when recorded; older files lack it)
    episode_<i>/progress   float32 [T + 1]
    episode_<i>/success    bool [T + 1]
    episode_<i>/actions    float32 [T, 7]           the executed action of step t (files of older versions lack it)
    episode_<i>/proprio    float32 [T + 1, P]       (files of older versions lack it)
    episode_<i>/named_pixels    float32 [T + 1, 2, 2]  where the instruction's object and goal are in
                                                       each frame, (column, row) pixels (older files lack it)
    episode_<i>/gripper_pixels  float32 [T + 1, 2]     where the grip site is (older files lack it)
    episode_<i>/other_progress      float32 [T + 1, K]        progress towards each other objective of the
                                                              scene (``Task.other_objectives``; older files lack it)
    episode_<i>/other_named_pixels  float32 [T + 1, K, 2, 2]  where each other objective's objects are
    episode_<i>            attrs: task, instruction, behaviour, split, init_state_id,
                                  other_instructions (JSON list of K instructions)
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from vla_rl.core.hdf5_file import open_hdf5
from vla_rl.core.output_paths import check_output_file

BEHAVIOURS = ("expert", "perturbed", "random", "sluggish", "policy")


@dataclass
class ProgressEpisode:
    task: str
    instruction: str
    behaviour: str
    split: str
    init_state_id: int
    frames: np.ndarray  # uint8 [T + 1, H, W, 3]
    progress: np.ndarray  # float32 [T + 1]
    success: np.ndarray  # bool [T + 1]
    actions: np.ndarray | None = None  # float32 [T, 7], executed
    proprio: np.ndarray | None = None  # float32 [T + 1, P]
    named_pixels: np.ndarray | None = None  # float32 [T + 1, 2, 2]: localiser labels of each frame
    gripper_pixels: np.ndarray | None = None  # float32 [T + 1, 2]
    # the same frames labelled for the scene's other objectives (a distractor named instead): hard negatives
    other_instructions: tuple[str, ...] = ()
    other_progress: np.ndarray | None = None  # float32 [T + 1, K]; 1.0 exactly where that objective succeeds
    other_named_pixels: np.ndarray | None = None  # float32 [T + 1, K, 2, 2]
    wrist_frames: np.ndarray | None = None  # uint8 [T + 1, H, W, 3], when the wrist camera was recorded

    @property
    def succeeded(self) -> bool:
        return bool(self.success.any())


def _policy_action(policy, obs: dict, instruction: str) -> np.ndarray:
    from vla_rl.core.types import ObsBatch

    batch = ObsBatch.from_env_obs(obs, instruction)
    return np.asarray(policy.act(batch, explore=True).actions[0, 0], np.float32)  # first action of a chunk


def run_episode(env, task: str, behaviour: str, split: str, init_state_id: int, seed: int,
                policy=None, hold_after_success: int = 0) -> ProgressEpisode:
    """One episode of ``behaviour`` on a ``TabletopEnv`` from the given init state (``policy``: an
    object with ``act(ObsBatch, explore=True)``, needed by the ``policy`` behaviour).

    ``hold_after_success``: the behaviour goes on acting for up to this many steps after the first
    success frame (the step limit still ends it), and those frames keep the simulator's labels. An
    RL episode ends at its first success, so such an episode has one success frame; a done head
    trained on those alone sees few, all on the boundary (session 15: done probability 0.1-0.3 on
    held-out success frames)."""
    from sim_envs.experts import make_expert

    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; valid: {', '.join(BEHAVIOURS)}")
    if behaviour == "policy" and policy is None:
        raise ValueError("the 'policy' behaviour needs a policy (vla-rl ... collect --policy CHECKPOINT)")
    rng = np.random.default_rng(seed)
    obs, info = env.reset(options={"init_state_id": init_state_id, "split": split})
    noise = {"perturbed": 0.6, "sluggish": 0.4}.get(behaviour, 0.0)
    expert = make_expert(env, noise_std=noise, seed=seed) if behaviour not in ("random", "policy") else None
    others = env.task.other_objectives(env.layout)

    def record_labels() -> None:
        named.append(env.named_pixels())
        gripper.append(env.gripper_pixels())
        other_progress.append([env.progress(other) for other in others])
        other_named.append([env.named_pixels(layout=other) for other in others])

    frames, progress, success = [obs["agentview_image"]], [info["progress"]], [False]
    wrist = [obs["wrist_image"]] if "wrist_image" in obs else None
    actions, proprio = [], [obs["proprio"]]
    named, gripper, other_progress, other_named = [], [], [], []
    record_labels()
    done, held = False, -1  # held: steps taken since the first success frame
    while not done:
        if behaviour == "policy":
            action = _policy_action(policy, obs, env.instruction)
        elif expert is None:
            action = rng.uniform(-1, 1, 7).astype(np.float32)
        else:
            action = expert.act()
            if behaviour == "sluggish":
                action[:6] *= 0.5
                if rng.random() < 0.3:
                    action[6] = 0.0
        action = np.asarray(action, np.float32)
        obs, _, _, truncated, info = env.step(action)
        frames.append(obs["agentview_image"])
        if wrist is not None:
            wrist.append(obs["wrist_image"])
        progress.append(info["progress"])
        success.append(info["success"])
        actions.append(action)
        proprio.append(obs["proprio"])
        record_labels()
        held = held + 1 if held >= 0 or info["success"] else -1
        done = truncated or held >= hold_after_success  # (terminated is the success predicate)
    steps = len(frames)
    return ProgressEpisode(task, env.instruction, behaviour, split, init_state_id, np.stack(frames),
                           np.asarray(progress, np.float32), np.asarray(success, bool),
                           np.stack(actions).astype(np.float32), np.stack(proprio).astype(np.float32),
                           np.stack(named).astype(np.float32), np.stack(gripper).astype(np.float32),
                           tuple(other["instruction"] for other in others),
                           np.asarray(other_progress, np.float32).reshape(steps, len(others)),
                           np.asarray(other_named, np.float32).reshape(steps, len(others), 2, 2),
                           np.stack(wrist) if wrist is not None else None)


def require_antialiased_policy(antialias: bool, name: str) -> None:
    """Critic and world-model episodes are rendered antialiased: a policy trained on frames without
    multisampling (``VLAConfig.antialias: false``) would act on frames unlike its own."""
    if not antialias:
        raise ValueError(f"{name} was trained on frames rendered without antialiasing (antialias: false); critic "
                         "and world-model episodes are antialiased, so it would act on frames unlike its own: "
                         "collect them with a policy trained with antialias: true")


def _work(args) -> list[ProgressEpisode]:
    task, behaviour, split, ids, image_size, wrist_camera, seed, policy_factory, hold_after_success = args
    import torch

    from sim_envs.tabletop_env import TabletopEnv

    policy = None
    if behaviour == "policy":
        torch.set_num_threads(1)  # one process per core already
        policy = policy_factory()
        policy.generator.manual_seed(seed)
        require_antialiased_policy(policy.config.antialias, "the policy")
    env = TabletopEnv(task, image_size=image_size, wrist_camera=wrist_camera)
    try:
        return [run_episode(env, task, behaviour, split, i, seed + i, policy, hold_after_success) for i in ids]
    finally:
        env.close()


def collect_progress_episodes(tasks: Sequence[str], behaviours: dict[str, int], split: str, image_size: int = 64,
                              first_init_state: int = 0, workers: int = -1, seed: int = 0,
                              show_progress: bool = True, policy_factory=None,
                              hold_after_success: int = 0, wrist_camera: bool = True) -> list[ProgressEpisode]:
    """``behaviours[b]`` episodes of each behaviour on each task, from init states ``first_init_state``
    onwards of ``split``, in ``workers`` processes (-1 = one per core). ``policy_factory``: a
    picklable callable returning a policy, needed for the ``policy`` behaviour. ``hold_after_success``:
    see ``run_episode``. ``wrist_camera``: also record the wrist camera's frames (a critic that reads
    it needs them)."""
    from tqdm import tqdm

    unknown = [b for b in behaviours if b not in BEHAVIOURS]
    if unknown:
        raise ValueError(f"unknown behaviours {unknown}; valid: {', '.join(BEHAVIOURS)}")
    if behaviours.get("policy") and policy_factory is None:
        raise ValueError("policy episodes need a policy checkpoint (--policy CHECKPOINT)")
    jobs = []
    for task in tasks:
        for b_index, (behaviour, count) in enumerate(behaviours.items()):
            ids = list(range(first_init_state, first_init_state + count))
            for chunk in np.array_split(ids, max(1, (count + 9) // 10)):  # ~10 episodes per job
                if len(chunk):
                    jobs.append((task, behaviour, split, [int(i) for i in chunk], image_size, wrist_camera,
                                 seed + 100_003 * b_index, policy_factory, hold_after_success))
    workers = (os.cpu_count() or 1) if workers == -1 else workers
    results: dict[int, list[ProgressEpisode]] = {}
    total = sum(len(job[3]) for job in jobs)
    with tqdm(total=total, desc=f"{split} episodes", unit="ep", disable=not show_progress) as bar:
        if workers <= 1:
            for index, job in enumerate(jobs):
                results[index] = _work(job)
                bar.update(len(job[3]))
        else:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                todo = [i for i in range(len(jobs)) if i not in results]
                if not todo:
                    break
                lost = _run_jobs(jobs, todo, workers, results, bar)
                if lost and attempt == MAX_ATTEMPTS:
                    raise RuntimeError(f"episode collection: worker processes died {MAX_ATTEMPTS} times "
                                       f"({lost}); {len(results)}/{len(jobs)} jobs done")
    return [episode for index in sorted(results) for episode in results[index]]


MAX_ATTEMPTS = 3


def _run_jobs(jobs, todo, workers, results, bar) -> str:
    """Run ``jobs[todo]`` in a process pool; a worker that dies (e.g. a crash in a native library)
    breaks the pool, and the jobs it took down are returned to the caller for another attempt."""
    from concurrent import futures

    lost = ""
    with futures.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        running = {pool.submit(_work, jobs[i]): i for i in todo}
        for future in futures.as_completed(running):
            try:
                results[running[future]] = future.result()
                bar.update(len(jobs[running[future]][3]))
            except futures.process.BrokenProcessPool as error:
                lost = f"{type(error).__name__}: {error}"
    return lost


def write_episodes(path: Path, episodes: Sequence[ProgressEpisode]) -> Path:
    """Write ``episodes`` to ``path`` atomically (a ``.tmp`` file renamed; removed if writing fails)."""
    path = check_output_file(path, "episode file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_episode_file(tmp, episodes)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_episode_file(path: Path, episodes: Sequence[ProgressEpisode]) -> None:
    with h5py.File(path, "w") as f:
        for i, episode in enumerate(episodes):
            group = f.create_group(f"episode_{i}")
            group.create_dataset("frames", data=episode.frames, compression="gzip", compression_opts=1)
            if episode.wrist_frames is not None:
                group.create_dataset("wrist_frames", data=episode.wrist_frames, compression="gzip",
                                     compression_opts=1)
            group["progress"] = episode.progress
            group["success"] = episode.success
            if episode.actions is not None:
                group["actions"] = episode.actions
                group["proprio"] = episode.proprio
            if episode.named_pixels is not None:
                group["named_pixels"] = episode.named_pixels
                group["gripper_pixels"] = episode.gripper_pixels
            if episode.other_progress is not None:
                group["other_progress"] = episode.other_progress
                group["other_named_pixels"] = episode.other_named_pixels
                group.attrs["other_instructions"] = json.dumps(list(episode.other_instructions))
            group.attrs.update(task=episode.task, instruction=episode.instruction, behaviour=episode.behaviour,
                               split=episode.split, init_state_id=episode.init_state_id)


# what a command uses episodes for; their split must suit it: "train" for training, any other split held out
TRAINING, HELD_OUT = "training", "held-out"


def check_split(path: Path, splits: Sequence[str], role: str, use: str) -> None:
    """Training episodes (split "train") must not measure a model (the critic, the world model), nor held-out
    ones train or calibrate it: a file of the wrong split is refused, not silently used. ``use`` says what
    the episodes of ``path`` were for."""
    if role not in (TRAINING, HELD_OUT):
        raise ValueError(f"unknown episode role {role!r}; valid: {TRAINING}, {HELD_OUT}")
    wrong = sorted({split for split in splits if (split == "train") != (role == TRAINING)})
    if wrong:
        needed = 'split "train"' if role == TRAINING else 'a held-out split (not "train")'
        raise ValueError(f"{path} holds episodes of split {wrong}: {use} needs {role} episodes ({needed})")


def read_split_episodes(path: Path, role: str, use: str) -> list[ProgressEpisode]:
    """The episodes of ``path``, every one of the split ``role`` needs (``check_split``)."""
    episodes = list(read_episodes(path))
    check_split(path, [episode.split for episode in episodes], role, use)
    return episodes


def _episode_names(f: h5py.File, path: Path) -> list[str]:
    """The ``episode_<i>`` groups of an open episode file in episode order; any other key means the file is
    something else (a demonstration file, say), which is refused naming it."""
    foreign = sorted(name for name in f if not (name.startswith("episode_") and name[8:].isdigit()))
    if foreign:  # e.g. a demonstration file (SFT input), whose only key is "data"
        what = " but a demonstration file (robomimic/LIBERO layout, SFT input)" if "data" in foreign else ""
        raise ValueError(f"{path} is not a labelled-episode file{what}: expected only episode_<i> groups, as "
                         f"`vla-rl critic collect` and `vla-rl wm collect` write, found {foreign[:10]}")
    return sorted(f, key=lambda name: int(name[8:]))


def read_episodes(path: Path) -> Iterator[ProgressEpisode]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"episode file {path} does not exist (make it with `vla-rl critic collect` or "
                                "`vla-rl wm collect`)")
    with open_hdf5(path) as f:
        for name in _episode_names(f, path):
            group = f[name]
            attrs = group.attrs
            yield ProgressEpisode(str(attrs["task"]), str(attrs["instruction"]), str(attrs["behaviour"]),
                                  str(attrs["split"]), int(attrs["init_state_id"]), group["frames"][()],
                                  group["progress"][()], group["success"][()].astype(bool),
                                  group["actions"][()] if "actions" in group else None,
                                  group["proprio"][()] if "proprio" in group else None,
                                  group["named_pixels"][()] if "named_pixels" in group else None,
                                  group["gripper_pixels"][()] if "gripper_pixels" in group else None,
                                  tuple(json.loads(attrs.get("other_instructions", "[]"))),
                                  group["other_progress"][()] if "other_progress" in group else None,
                                  group["other_named_pixels"][()] if "other_named_pixels" in group else None,
                                  group["wrist_frames"][()] if "wrist_frames" in group else None)


def episode_fingerprints(path: Path) -> list[str]:
    """One digest per episode of ``path`` (in file order) that a copy of the episode shares, also an imagined
    copy (``vla-rl wm imagine`` keeps the real first frame, the actions and every label, and renames only the
    behaviour and the later frames): the task, instruction and init state, the first agent-view frame, the
    progress and success labels and the actions. Reads only those, not the whole frames."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"episode file {path} does not exist")
    digests = []
    with open_hdf5(path) as f:
        for name in _episode_names(f, path):
            group = f[name]
            digest = hashlib.sha256()
            digest.update(json.dumps([str(group.attrs[key]) for key in ("task", "instruction", "init_state_id")])
                          .encode())
            for part in (group["frames"][0], group["progress"][()], group["success"][()].astype(bool),
                         group["actions"][()] if "actions" in group else np.zeros(0, np.float32)):
                digest.update(np.ascontiguousarray(part).tobytes())
            digests.append(digest.hexdigest())
    return digests


__all__ = ["BEHAVIOURS", "ProgressEpisode", "run_episode", "collect_progress_episodes", "write_episodes",
           "read_episodes", "TRAINING", "HELD_OUT", "check_split", "read_split_episodes", "episode_fingerprints"]
