"""Training and evaluation of the progress critic on episodes with simulator progress labels.

Training pairs ``(frame_a, frame_b, instruction) -> (progress_b - progress_a, success_b)`` are drawn on
the fly from the training episodes:
- half of them anchored at frame 0 (how ``ProgressCritic.score`` uses the critic), the rest from any
  two frames in either order, so time-reversed pairs (negative deltas) and stalls (equal or static
  frames, delta 0) occur naturally;
- ``done_fraction`` of the pairs end on a success frame, since success is rare among frames;
- ``mismatch_fraction`` get an instruction the episode was not recorded with. ``hard_negative_fraction``
  of those name another object of the same scene (a distractor block, the other tray, ...) and keep
  the simulator's labels for that objective (``other_progress``: the progress made towards the
  distractor, which is not always 0: the right block carried to the wrong tray earns its grasp), so
  the labels can only be fitted by reading the instruction. The rest take another task's instruction
  with the labels "no progress, not done" (episodes recorded before ``other_progress`` existed: any
  other episode's instruction, half from the same task).

Evaluation (held-out init states, and a behaviour the critic never trained on) reports:
- ``success_auroc``: frame-level success detection from ``done_prob``;
- ``value_spearman``: rank correlation of the value curve with time on successful episodes;
- ``mismatch_lower``: the fraction of episodes whose final value with a mismatched instruction is
  lower than with the right one;
- ``distractor_lower``: the same with an instruction naming another object of the same scene (the
  hardest mismatch; episodes recorded with ``other_progress``);
- ``done_recall`` and ``false_done``: at a done probability of 0.5, the share of success frames called
  done, and of the other frames by the simulator's progress (below 0.5, 0.5-0.8, 0.8 and above: near
  misses): whether false successes are near misses or frames far from done.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Sequence

import numpy as np
import torch

from vla_rl.core.atomic_file import write_text_atomic
from vla_rl.core.checkpoint_dir import refuse_previous_run
from vla_rl.core.config import option, require_finite
from vla_rl.core.optim import make_adamw
from vla_rl.core.schedules import set_budgeted_lr
from vla_rl.core.types import EpisodeFrames
from vla_rl.policy.localiser import localisation_loss
from vla_rl.policy.sft import lr_at  # the same warm-up + cosine schedule as SFT
from vla_rl.reward.critic import (CRITIC_FILES, CriticConfig, ProgressCritic, critic_checkpoint_config, load_critic,
                                  read_critic_meta, save_critic)


class LabelledEpisode(Protocol):
    """What the critic trains on (``sim_envs.progress_episodes.ProgressEpisode`` has it)."""

    task: str
    instruction: str
    behaviour: str
    frames: np.ndarray  # uint8 [T + 1, H, W, 3]
    wrist_frames: np.ndarray | None  # uint8 [T + 1, H, W, 3] (needed by a critic with wrist_view)
    progress: np.ndarray  # float32 [T + 1]
    success: np.ndarray  # bool [T + 1]
    named_pixels: np.ndarray | None  # float32 [T + 1, 2, 2] localiser labels (needed with a localiser)
    gripper_pixels: np.ndarray | None  # float32 [T + 1, 2]
    other_instructions: tuple[str, ...]  # the scene's other objectives (``Task.other_objectives``)
    other_progress: np.ndarray | None  # float32 [T + 1, K] progress towards each of them
    other_named_pixels: np.ndarray | None  # float32 [T + 1, K, 2, 2]


@dataclass(frozen=True)
class CriticTrainConfig:
    critic: CriticConfig = option(factory=CriticConfig, doc="the critic model")
    data_dir: Path = option(Path("runs/critic_data"), "train.hdf5 and eval.hdf5 from `vla-rl critic collect` (each "
                                                      "episode's split is checked: train, and held out)")
    extra_train_files: tuple[Path, ...] = option((), "more training episode files (split train), read after "
                                                     "data_dir's train.hdf5 (e.g. extra policy episodes of the tasks "
                                                     "RL will train on, collected with `vla-rl critic collect "
                                                     "--eval-episodes none`, or `vla-rl wm imagine`'s imagined copies)")
    out_dir: Path = option(Path("runs/critic"), "checkpoints, metrics.jsonl, eval.json and plots")
    init_from: Path | None = option(None, "a critic checkpoint to start from instead of a fresh critic (fine-tuning, "
                                          "e.g. with imagined episodes from `vla-rl wm imagine`); its model must "
                                          "equal `critic`")
    steps: int = option(2000, "optimiser steps")
    time_limit_minutes: float = option(0.0, "stop early after this wall-clock time (0 = no limit)")
    batch_size: int = option(64, "pairs per step")
    lr: float = option(3e-4, "peak learning rate (linear warm-up, cosine decay over the steps or the time "
                                 "limit, whichever ends first)")
    warmup_steps: int = option(100, "linear warm-up steps")
    weight_decay: float = option(0.01, "AdamW weight decay")
    anchor_fraction: float = option(0.5, "pairs whose first frame is the episode's frame 0")
    done_fraction: float = option(0.2, "pairs that end on a success frame")
    mismatch_fraction: float = option(0.2, "pairs with an instruction the episode was not recorded with")
    hard_negative_fraction: float = option(0.5, "of those, the pairs whose instruction names another object of the "
                                                "same scene, labelled with the progress towards it (the rest: another "
                                                "task's instruction, labels 'no progress, not done')")
    done_weight: float = option(1.0, "weight of the done loss against the progress loss")
    localiser_weight: float = option(0.2, "weight of the localiser's loss (with critic.localiser_points)")
    checkpoint_every: int = option(500, "steps between step_ checkpoints (0 = none; the final one is always written)")
    seed: int = option(0, "seed of initialisation and pair sampling")

    def __post_init__(self) -> None:
        for name in ("anchor_fraction", "done_fraction", "mismatch_fraction", "hard_negative_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        require_finite(self, positive=("lr",), non_negative=("weight_decay", "time_limit_minutes", "done_weight",
                                                             "localiser_weight"))
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: only the final checkpoint), "
                             f"got {self.checkpoint_every}")


class Pairs(NamedTuple):
    """A batch of ``B`` training pairs."""

    frames_a: torch.Tensor  # uint8 [B, H, W, 3]
    frames_b: torch.Tensor
    instructions: list[str]
    deltas: torch.Tensor  # float [B]: progress of b minus progress of a
    dones: torch.Tensor  # float [B]: 1.0 where b is a success frame
    pixel_labels: torch.Tensor | None  # [2B, K, 2]: a's rows, then b's (with a localiser)
    wrist_a: torch.Tensor | None  # uint8 [B, H, W, 3] (with wrist_view)
    wrist_b: torch.Tensor | None


class PairSampler:
    """Draws labelled training pairs from episodes (see the module docstring)."""

    def __init__(self, episodes: Sequence[LabelledEpisode], config: CriticTrainConfig, seed: int):
        if not episodes:
            raise ValueError("no training episodes")
        if config.critic.located_points and any(e.named_pixels is None for e in episodes):
            raise ValueError("a critic with a localiser trains on episodes with pixel labels (named_pixels): "
                             "collect them again with this version's `vla-rl critic collect`")
        if config.critic.wrist_view and any(e.wrist_frames is None for e in episodes):
            raise ValueError("a critic with wrist_view trains on episodes with the wrist camera's frames: "
                             "collect them again with this version's `vla-rl critic collect` (without --no-wrist)")
        self.episodes, self.config = list(episodes), config
        self.rng = np.random.default_rng(seed)
        self.successful = [i for i, e in enumerate(self.episodes) if e.success.any()]
        self.instructions = sorted({e.instruction for e in self.episodes})
        self.by_task: dict[str, list[str]] = {}
        for e in self.episodes:
            self.by_task.setdefault(e.task, [])
            if e.instruction not in self.by_task[e.task]:
                self.by_task[e.task].append(e.instruction)

    def mismatched(self, episode: LabelledEpisode, same_task: bool = True) -> str | None:
        """Another episode's instruction: half of the time one of the same task (``same_task``), else any.
        A same-task instruction may name an object of this scene, so "no progress" is not always right
        for it: training draws those as hard negatives (``other_objective``) when the labels exist."""
        same = [t for t in self.by_task[episode.task] if t != episode.instruction] if same_task else []
        pool = same if same and self.rng.random() < 0.5 else \
            [t for t in self.instructions if t != episode.instruction and (same_task or t not in self.by_task[episode.task])]
        return str(self.rng.choice(pool)) if pool else None

    def other_objective(self, episode: LabelledEpisode) -> int | None:
        """A random one of the episode's other objectives (index into ``other_instructions``), if any."""
        if getattr(episode, "other_progress", None) is None or not episode.other_instructions:
            return None
        return int(self.rng.integers(len(episode.other_instructions)))

    def pixel_labels(self, episode: LabelledEpisode, frame: int, objective: int | None) -> np.ndarray:
        """``[K, 2]`` localiser labels of one frame at the critic's image size for the episode's own
        objective (``objective`` -1), another one of its scene (index into ``other_instructions``), or
        none (``None``: -1 everywhere, ignored by the loss, for an instruction from another task)."""
        critic = self.config.critic
        points = np.full((critic.located_points, 2), -1.0, np.float32)
        if objective is not None:
            named = episode.named_pixels[frame] if objective < 0 else episode.other_named_pixels[frame, objective]
            labels = named[: critic.localiser_points]
            if critic.localiser_gripper:
                labels = np.concatenate([labels, episode.gripper_pixels[frame][None]])
            points[:] = labels * (critic.image_size / episode.frames.shape[1])
        return points

    def sample(self, batch_size: int) -> Pairs:
        """``batch_size`` pairs; the pixel labels are a's rows, then b's, as
        ``ProgressCritic.forward_with_maps`` returns its logits; the wrist frames are None unless the
        critic has ``wrist_view``."""
        cfg, rng = self.config, self.rng
        frames_a, frames_b, texts, deltas, dones = [], [], [], [], []
        labels_a, labels_b, wrist_a, wrist_b = [], [], [], []
        for _ in range(batch_size):
            if self.successful and rng.random() < cfg.done_fraction:
                episode = self.episodes[int(rng.choice(self.successful))]
                b = int(rng.choice(np.nonzero(episode.success)[0]))
                a = 0 if rng.random() < cfg.anchor_fraction else int(rng.integers(0, b + 1))
            else:
                episode = self.episodes[int(rng.integers(len(self.episodes)))]
                length = len(episode.progress)
                a = 0 if rng.random() < cfg.anchor_fraction else int(rng.integers(length))
                b = int(rng.integers(length))
            delta, done = float(episode.progress[b] - episode.progress[a]), float(episode.success[b])
            text, objective = episode.instruction, -1
            if rng.random() < cfg.mismatch_fraction:
                other = self.other_objective(episode)
                wrong = None
                if other is None or rng.random() >= cfg.hard_negative_fraction:
                    wrong = self.mismatched(episode, same_task=other is None)
                if wrong is not None:
                    text, delta, done, objective = wrong, 0.0, 0.0, None
                elif other is not None:  # (also when no other task's instruction exists)
                    progress = episode.other_progress[:, other]
                    text, objective = episode.other_instructions[other], other
                    delta, done = float(progress[b] - progress[a]), float(progress[b] >= 1.0)
            if cfg.critic.located_points:
                labels_a.append(self.pixel_labels(episode, a, objective))
                labels_b.append(self.pixel_labels(episode, b, objective))
            frames_a.append(episode.frames[a])
            frames_b.append(episode.frames[b])
            if cfg.critic.wrist_view:
                wrist_a.append(episode.wrist_frames[a])
                wrist_b.append(episode.wrist_frames[b])
            texts.append(text)
            deltas.append(delta)
            dones.append(done)
        labels = torch.from_numpy(np.stack(labels_a + labels_b)) if labels_a else None
        wrist = (torch.from_numpy(np.stack(wrist_a)), torch.from_numpy(np.stack(wrist_b))) if wrist_a else (None, None)
        return Pairs(torch.from_numpy(np.stack(frames_a)), torch.from_numpy(np.stack(frames_b)), texts,
                     torch.tensor(deltas), torch.tensor(dones), labels, *wrist)


def check_init_from(config: CriticTrainConfig) -> None:
    """Raise unless ``init_from`` (when set) is a checkpoint of the configured critic model; reads only its
    config, so the CLI checks it before reading the episodes."""
    if config.init_from is None:
        return
    have = critic_checkpoint_config(Path(config.init_from))
    differing = {f.name: (getattr(have, f.name), getattr(config.critic, f.name))
                 for f in fields(config.critic) if getattr(have, f.name) != getattr(config.critic, f.name)}
    if differing:
        raise ValueError(f"init_from {config.init_from} is a different critic model than `critic`: "
                         + ", ".join(f"{name} {old!r} there, {want!r} configured" for name, (old, want) in differing.items()))


CHECKPOINT_PREFIX = "step_"


def refuse_previous_critic_run(config: CriticTrainConfig) -> None:
    """Raise if ``out_dir`` holds an earlier run: ``metrics.jsonl`` would be overwritten and its checkpoints
    (some maybe of later steps) would stand beside the new ones. Critic training has no --resume; the CLI
    checks this before reading the episodes."""
    out_dir = Path(config.out_dir)
    critics = [out_dir / "final"] + sorted(out_dir.glob(f"{CHECKPOINT_PREFIX}*"), reverse=True)
    critic = next((path for path in critics if ".tmp-" not in path.name
                   and all((path / name).is_file() for name in CRITIC_FILES)), None)
    refuse_previous_run(out_dir, CHECKPOINT_PREFIX,
                        "choose another out_dir (critic training cannot resume; to go on training its critic, "
                        f"start a new run from it with init_from={critic})" if critic is not None else
                        "it holds no critic checkpoint (the run stopped before its first one): remove it, or choose "
                        "another out_dir")


def start_critic(config: CriticTrainConfig) -> ProgressCritic:
    """A fresh critic, or the ``init_from`` checkpoint's when its model is the configured one."""
    if config.init_from is None:
        return ProgressCritic(config.critic)
    check_init_from(config)
    return load_critic(Path(config.init_from))


def train_critic(config: CriticTrainConfig, episodes: Sequence[LabelledEpisode], show_progress: bool = True,
                 eval_episodes: Sequence[LabelledEpisode] = ()) -> dict[str, Any]:
    """Train a critic (fresh, or from ``init_from``); checkpoints in ``out_dir/step_XXXXXX`` and ``out_dir/final``."""
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)
    refuse_previous_critic_run(config)  # before any work: a second run would mix its outputs with the first's
    out_dir.mkdir(parents=True, exist_ok=True)
    critic = start_critic(config).train()
    params = [p for p in critic.parameters() if p.requires_grad]
    optimizer = make_adamw(params, config.lr, config.weight_decay)
    sampler = PairSampler(episodes, config, config.seed)
    started = time.perf_counter()
    meta = {"train_episodes": len(episodes), "train_frames": int(sum(len(e.progress) for e in episodes)),
            "tasks": sorted({e.task for e in episodes}), "behaviours": sorted({e.behaviour for e in episodes}),
            "train_config": json.loads(json.dumps(asdict(config), default=str))}
    step, loss_avg = 0, {}
    with open(out_dir / "metrics.jsonl", "w") as log, \
            tqdm(total=config.steps, desc="critic", unit="step", disable=not show_progress) as bar:
        for step in range(1, config.steps + 1):
            # a time-limited run ends its cosine when its budget ends, not part-way down (as SFT does)
            lr = set_budgeted_lr(optimizer, lambda at: lr_at(at, config), step - 1, config.steps, started,
                                 config.time_limit_minutes)
            pairs = sampler.sample(config.batch_size)
            delta, logit, located_logits = critic.forward_with_maps(pairs.frames_a, pairs.frames_b, pairs.instructions,
                                                                    pairs.wrist_a, pairs.wrist_b)
            progress_loss = torch.nn.functional.smooth_l1_loss(delta, pairs.deltas, beta=0.1)
            done_loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, pairs.dones)
            loss = progress_loss + config.done_weight * done_loss
            localiser_values = {}
            if located_logits is not None:
                located_loss, pixel_error = localisation_loss(located_logits, pairs.pixel_labels, config.critic.image_size)
                loss = loss + config.localiser_weight * located_loss
                localiser_values = {"localiser_loss": located_loss.item(), "located_px": pixel_error.item()}
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite critic loss at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            values = {"loss": loss.item(), "progress_loss": progress_loss.item(), "done_loss": done_loss.item(),
                      **localiser_values}
            for key, value in values.items():  # located_px is NaN in a batch with no label inside the image
                if math.isfinite(value):
                    loss_avg[key] = 0.95 * loss_avg.get(key, value) + 0.05 * value
            log.write(json.dumps({"step": step, **values, "lr": lr}) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss_avg['loss']:.3f}", done=f"{loss_avg['done_loss']:.3f}",
                            **({"loc_px": f"{loss_avg['located_px']:.2f}"} if "located_px" in loss_avg else {}))
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save_critic(out_dir / f"{CHECKPOINT_PREFIX}{step:06d}", critic.eval(), {**meta, "step": step})
                critic.train()
            if config.time_limit_minutes and time.perf_counter() - started > 60 * config.time_limit_minutes:
                break
    seconds = time.perf_counter() - started
    final = save_critic(out_dir / "final", critic.eval(), {**meta, "step": step, "seconds": seconds})
    summary = {"checkpoint": str(final), "steps": step, "seconds": seconds, **{k: v for k, v in loss_avg.items()},
               **{k: meta[k] for k in ("train_episodes", "train_frames")}}
    if eval_episodes:
        summary["eval"] = evaluate_critic(critic, eval_episodes, out_dir, seed=config.seed)
    return summary


# ---- evaluation ------------------------------------------------------------------------------
def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    labels = np.asarray(labels, bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    r = ranks(scores)
    return float((r[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


PROGRESS_BANDS = ((0.0, 0.5), (0.5, 0.8), (0.8, 1.0))


def done_errors(done_probs: np.ndarray, success: np.ndarray, progress: np.ndarray,
                threshold: float = 0.5) -> dict[str, Any]:
    """Per-frame verdicts at ``threshold``: the share of success frames called done (``done_recall``)
    and, per band of the simulator's progress, the share of the other frames called done
    (``false_done``, with the band's frame count): near misses (progress >= 0.8) look almost done.
    None where there is no such frame."""
    called = np.asarray(done_probs) >= threshold
    success = np.asarray(success, bool)
    progress = np.asarray(progress)
    bands = {}
    for low, high in PROGRESS_BANDS:
        inside = ~success & (progress >= low) & (progress < high)
        bands[f"{low:g}-{high:g}"] = {"frames": int(inside.sum()),
                                      "rate": float(called[inside].mean()) if inside.any() else None}
    return {"done_recall": float(called[success].mean()) if success.any() else None, "false_done": bands}


def score_episodes(critic: ProgressCritic, episodes: Sequence[LabelledEpisode],
                   instructions: Sequence[str] | None = None, chunk: int = 16):
    """(value curves, done probabilities), one array per episode, with the given instructions."""
    values, dones = [], []
    for start in range(0, len(episodes), chunk):
        group = episodes[start:start + chunk]
        texts = list(instructions[start:start + chunk]) if instructions is not None else [e.instruction for e in group]
        steps = max(len(e.progress) for e in group)
        frames = np.zeros((len(group), steps, *group[0].frames.shape[1:]), np.uint8)
        mask = np.zeros((len(group), steps), bool)
        wrist = np.zeros_like(frames) if critic.config.wrist_view else None
        for i, e in enumerate(group):
            frames[i, : len(e.progress)] = e.frames
            mask[i, : len(e.progress)] = True
            if wrist is not None:
                if e.wrist_frames is None:
                    raise ValueError(f"this critic reads the wrist camera; a {e.task} episode has no wrist frames "
                                     f"(collect with this version's `vla-rl critic collect`, without --no-wrist)")
                wrist[i, : len(e.progress)] = e.wrist_frames
        out = critic.score(EpisodeFrames(frames=frames, instructions=texts, mask=mask, wrist_frames=wrist))
        for i, e in enumerate(group):
            n = len(e.progress)
            values.append(np.cumsum(out.progress[i, :n]))
            dones.append(out.done_prob[i, :n])
    return values, dones


def critic_training_files(checkpoint: Path) -> list[Path] | None:
    """The episode files a critic checkpoint trained on, as ``train_critic`` recorded them in its
    ``critic.json``: ``data_dir``'s train.hdf5 and ``extra_train_files``, and those of the ``init_from``
    critic it was fine-tuned from (its weights have seen them too), as the paths were given (relative ones
    to the directory training ran in). None when a critic of that chain did not record them (an older
    checkpoint, or one saved outside ``train_critic``): what it saw is unknown. An ``init_from`` critic that
    cannot be read here (moved, deleted, damaged, or a relative path from elsewhere) is listed itself, a
    directory in place of its unknown files, and the chain stops there."""
    files: list[Path] = []
    seen: set[Path] = set()
    current: Path | None = Path(checkpoint)
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        try:
            train_config = read_critic_meta(current).get("train_config")
        except (FileNotFoundError, ValueError):  # (the checkpoint asked about itself was loaded already)
            files.append(current)
            break
        if not isinstance(train_config, dict) or "data_dir" not in train_config:
            return None
        files += [Path(train_config["data_dir"]) / "train.hdf5",
                  *(Path(name) for name in train_config.get("extra_train_files") or ())]
        current = Path(train_config["init_from"]) if train_config.get("init_from") else None
    return list(dict.fromkeys(files))


def evaluate_critic(critic: ProgressCritic, episodes: Sequence[LabelledEpisode], out_dir: Path | None = None,
                    seed: int = 0) -> dict[str, Any]:
    """The three quality figures, overall and per behaviour; plots of value curves into ``out_dir``."""
    critic.eval()
    episodes = list(episodes)
    values, dones = score_episodes(critic, episodes)
    rng = np.random.default_rng(seed)
    sampler = PairSampler(episodes, CriticTrainConfig(), seed)
    sampler.rng = rng
    mismatched = [sampler.mismatched(e) or e.instruction for e in episodes]
    wrong_values, _ = score_episodes(critic, episodes, mismatched)
    distractors = {i: e.other_instructions[k] for i, e in enumerate(episodes)
                   if (k := sampler.other_objective(e)) is not None}  # one draw per episode
    distractor_values = dict(zip(distractors, score_episodes(
        critic, [episodes[i] for i in distractors], list(distractors.values()))[0])) if distractors else {}

    def figures(selected: list[int]) -> dict[str, Any]:
        successful = [i for i in selected if episodes[i].success.any()]
        labels = np.concatenate([episodes[i].success for i in selected])
        scores = np.concatenate([dones[i] for i in selected])
        correlations = [spearman(values[i], np.arange(len(values[i]))) for i in successful]
        true_correlations = [spearman(values[i], episodes[i].progress) for i in selected
                             if episodes[i].progress.std() > 0]
        lower = [wrong_values[i][-1] < values[i][-1] for i in successful]
        distractor_lower = [distractor_values[i][-1] < values[i][-1] for i in successful if i in distractor_values]
        return {"episodes": len(selected), "successful_episodes": len(successful),
                "success_auroc": auroc(scores, labels),
                "value_spearman": float(np.mean(correlations)) if correlations else float("nan"),
                "value_vs_true_progress_spearman": float(np.mean(true_correlations)) if true_correlations else float("nan"),
                "mismatch_lower": float(np.mean(lower)) if lower else float("nan"),
                "distractor_lower": float(np.mean(distractor_lower)) if distractor_lower else float("nan"),
                **done_errors(scores, labels, np.concatenate([episodes[i].progress for i in selected]))}

    report = {"all": figures(list(range(len(episodes))))}
    for behaviour in sorted({e.behaviour for e in episodes}):
        report[behaviour] = figures([i for i, e in enumerate(episodes) if e.behaviour == behaviour])
    for task in sorted({e.task for e in episodes}):  # RL trains per task: a reward is only as good as its task's
        report[f"task:{task}"] = figures([i for i, e in enumerate(episodes) if e.task == task])
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_value_curves(episodes, values, dones, wrong_values, out_dir / "value_curves.png")
        write_text_atomic(out_dir / "eval.json", json.dumps(report, indent=1) + "\n")
    return report


def plot_value_curves(episodes, values, dones, wrong_values, path: Path, count: int = 8) -> Path:
    """Predicted value and done probability against the simulator's progress, for a few episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks, seen = [], set()
    for i, e in enumerate(episodes):  # one episode per (task, behaviour) first, then the rest
        if (e.task, e.behaviour) not in seen:
            picks.append(i)
            seen.add((e.task, e.behaviour))
    picks = picks[:count]
    columns = 4
    rows = math.ceil(len(picks) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for ax, i in zip(axes.flat, picks):
        e = episodes[i]
        ax.plot(e.progress, "k-", label="sim progress")
        ax.plot(values[i], "b-", label="critic value")
        ax.plot(wrong_values[i], "r:", label="value, wrong instruction")
        ax.plot(dones[i], "g--", label="done prob")
        success = np.nonzero(e.success)[0]
        if len(success):
            ax.axvline(success[0], color="g", alpha=0.3)
        ax.set_title(f"{e.task} / {e.behaviour}", fontsize=9)
        ax.set_ylim(-0.6, 1.1)
    for ax in list(axes.flat)[len(picks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


__all__ = ["CriticTrainConfig", "PairSampler", "train_critic", "critic_training_files", "evaluate_critic",
           "score_episodes", "auroc", "spearman"]
