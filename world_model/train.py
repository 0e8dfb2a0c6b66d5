"""Training of the video world model, with checkpoints that load back for imagination.

Checkpoint directory (written atomically, checksummed: ``vla_rl.core.checkpoint_dir``)::

    <dir>/world_model.safetensors   weights (incl. the proprio normalisation buffers)
    <dir>/world_model.json          {"config": WorldModelConfig, "step": ..., "train": WMTrainConfig}
    <dir>/training_state.pt         optimiser and RNG states (for --resume)
    <dir>/manifest.json
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vla_rl.core.checkpoint_dir import (HISTORY_FILE, CorruptCheckpointError, checkpoint_to_resume,
                                        commit_checkpoint_dir, point_latest, refuse_previous_run, resolve_checkpoint,
                                        staging_dir, truncate_history, verify_checkpoint)
from vla_rl.core.config import from_dict, option, to_dict
from vla_rl.core.device import resolve_device
from vla_rl.core.optim import load_optimizer_state, make_adamw
from vla_rl.core.schedules import set_budgeted_lr, warmup_cosine_lr

from world_model.data import Trajectory, TransitionBatch, TransitionSampler
from world_model.model import VideoWorldModel, WorldModelConfig
from world_model.proprio import ProprioTrack, ProprioWindows, open_loop_ee_error, open_loop_proprio_loss

PREFIX = "step_"
OPEN_LOOP_STEPS = 8  # the horizon of the held-out open-loop PSNR logged during training (shorter episodes: less)


@dataclass(frozen=True)
class WMTrainConfig:
    data_dir: Path = option(Path("runs/wm_data"), "collected episodes (train.hdf5, optional eval.hdf5)")
    out_dir: Path = option(Path("runs/world_model"), "checkpoints, metrics.jsonl, TensorBoard logs")
    model: WorldModelConfig = option(factory=WorldModelConfig, doc="the world model's architecture")
    init_checkpoint: Path = option(Path(""), "start from this world model (e.g. fine-tune on data refreshed with "
                                             "new policy rollouts); its architecture replaces `model`, which must "
                                             "equal it in cameras and image_size")
    steps: int = option(3000, "optimiser steps")
    time_limit_minutes: float = option(0.0, "stop early after this wall-clock time (0 = no limit); a resumed run "
                                            "counts the time before it too (as SFT does), so resuming a run that "
                                            "stopped on its limit needs a higher one")
    device: str = option("auto", "where the model trains: auto (cuda when a GPU is visible, else cpu), cpu, cuda, "
                                 "cuda:N")
    batch_size: int = option(32, "transitions per step")
    lr: float = option(3e-4, "peak learning rate (AdamW; linear warm-up, cosine decay to 10%)")
    warmup_steps: int = option(100, "linear warm-up steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float = option(1.0, "gradient-norm clip")
    checkpoint_every: int = option(500, "steps between checkpoints (and one at the end)")
    eval_every: int = option(500, "steps between held-out evaluations (one-step PSNR); 0 = only at the end")
    eval_transitions: int = option(64, "held-out transitions in each evaluation")
    log_every: int = option(20, "steps between logged metrics")
    threads: int = option(0, "torch threads (0 = torch's default)")
    seed: int = option(0, "seed of sampling and noise")
    self_rollout_fraction: float = option(0.0, "fraction of steps whose context frames the model imagined itself "
                                               "(open loop from real frames up to self_rollout_steps earlier): it "
                                               "learns to pull its own drifting frames back (long rollouts)")
    self_rollout_steps: int = option(8, "most imagined steps before such a step's target")
    proprio_rollout_steps: int = option(1, "actions the proprio head is rolled open loop in its loss (1: one step "
                                           "from real states); longer windows teach it what its own errors "
                                           "lead to (world_model/proprio.py)")
    proprio_batch_size: int = option(256, "windows per step of the open-loop proprio loss")
    proprio_train_files: list[Path] = option(factory=list, doc="more episode files (training split) whose proprio "
                                                               "and actions train the proprio head only")
    proprio_only: bool = option(False, "train only the proprio head (no frame loss: minutes, e.g. to refit the "
                                       "head of init_checkpoint on more episodes)")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0.0 <= self.self_rollout_fraction <= 1.0 or self.self_rollout_steps < 1:
            raise ValueError(f"self_rollout_fraction must be in [0, 1] and self_rollout_steps >= 1, got "
                             f"{self.self_rollout_fraction} and {self.self_rollout_steps}")
        if self.proprio_rollout_steps < 1 or self.proprio_batch_size < 1:
            raise ValueError(f"proprio_rollout_steps and proprio_batch_size must be >= 1, got "
                             f"{self.proprio_rollout_steps} and {self.proprio_batch_size}")
        if self.proprio_only and self.self_rollout_fraction:
            raise ValueError("proprio_only trains no frames: self_rollout_fraction must be 0")
        if self.proprio_only and str(self.init_checkpoint) in ("", "."):
            raise ValueError("proprio_only refits the proprio head of a trained model: set init_checkpoint")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        for name in ("log_every", "eval_transitions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0 = only at the end), got {self.eval_every}")
        if self.time_limit_minutes < 0:
            raise ValueError(f"time_limit_minutes must be >= 0 (0 = no limit), got {self.time_limit_minutes}")
        # here, not where the files are used: the CLI reads every one of them before training starts
        if self.proprio_train_files and self.proprio_rollout_steps == 1 and not self.proprio_only:
            raise ValueError("proprio_train_files train the proprio head's open-loop loss: set proprio_rollout_steps "
                             "> 1 or proprio_only")


def lr_at(step: int, config: WMTrainConfig) -> float:
    return warmup_cosine_lr(step, config.lr, config.warmup_steps, config.steps, floor=0.1)


def psnr(predicted: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images ``[N, H, W, C]``."""
    error = ((predicted.astype(np.float64) - real.astype(np.float64)) ** 2).reshape(len(real), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(error, 1e-10))


def save_world_model(directory: Path, model: VideoWorldModel, step: int, training_state: dict | None = None,
                     extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = staging_dir(directory)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(tmp / "world_model.safetensors"))
    (tmp / "world_model.json").write_text(json.dumps({"config": to_dict(model.config), "step": step, **(extra or {})},
                                                     indent=1))
    if training_state is not None:
        torch.save(training_state, tmp / "training_state.pt")
    return commit_checkpoint_dir(tmp, directory)


def world_model_checkpoint_config(path: Path) -> WorldModelConfig:
    """The model config of a checkpoint directory, or of a run directory's newest valid checkpoint, read
    without building the model (e.g. its cameras, to refuse a run that needs others before it starts)."""
    path = resolve_checkpoint(Path(path))
    if not (path / "world_model.json").is_file():
        raise FileNotFoundError(f"{path} is not a world-model checkpoint (no world_model.json)")
    return from_dict(WorldModelConfig, json.loads((path / "world_model.json").read_text())["config"])


def load_world_model(path: Path, device: str = "cpu") -> VideoWorldModel:
    """A checkpoint directory, or a run directory (its newest valid checkpoint)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_checkpoint(Path(path))
    verify_checkpoint(path)
    model = VideoWorldModel(world_model_checkpoint_config(path))
    try:
        state = load_file(str(path / "world_model.safetensors"))
    except (SafetensorError, OSError) as error:
        raise CorruptCheckpointError(f"{path}: world_model.safetensors is unreadable ({error})") from error
    model.load_state_dict(state)
    return model.to(device).eval()


# the model fields that decide which frames the episodes are read into: a run from a checkpoint whose `model` differs
# on them would read them for another model (the same cameras in another order: swapped channels, silently)
DATA_FIELDS = ("cameras", "image_size")


def starting_checkpoint(config: WMTrainConfig, resume: bool) -> Path | None:
    """The checkpoint whose model a run trains on: with ``resume`` the newest valid one in ``out_dir`` (never
    ``init_checkpoint``: the run started from it and has moved on), else ``init_checkpoint`` (when set), else
    None (a fresh ``config.model``)."""
    if resume:
        return checkpoint_to_resume(Path(config.out_dir), PREFIX)
    return None if str(config.init_checkpoint) in ("", ".") else resolve_checkpoint(Path(config.init_checkpoint))


def resume_training_state(config: WMTrainConfig) -> tuple[Path, dict]:
    """The checkpoint a resumed run continues from and its training state (optimiser, RNGs, step, elapsed
    seconds). A resume that would train nothing is refused instead of saving the same checkpoint again: one whose
    run has trained all ``steps``, or has spent its ``time_limit_minutes`` (the limit counts the time before a
    resume too, as SFT's does; the world model's config stops most runs on it)."""
    checkpoint = checkpoint_to_resume(Path(config.out_dir), PREFIX)
    state = torch.load(checkpoint / "training_state.pt", weights_only=False, map_location="cpu")
    step, elapsed = int(state["step"]), float(state.get("elapsed_seconds", 0.0))
    if step >= config.steps:
        raise ValueError(f"--resume: the run in {config.out_dir} has trained all its {config.steps} steps "
                         f"({checkpoint.name}): raise steps to train on (--set steps=...)")
    if config.time_limit_minutes and elapsed >= 60 * config.time_limit_minutes:
        # the whole schedule at the pace the run had, a little rounded up
        needed = math.ceil(elapsed / max(step, 1) * config.steps / 60) + 1
        raise ValueError(f"--resume: the run in {config.out_dir} stopped on its time limit: it has used "
                         f"{elapsed / 60:.1f} of time_limit_minutes={config.time_limit_minutes:g}, which counts the "
                         f"time before a resume too, at step {step} of {config.steps}. Raise the limit to train on "
                         f"(at its pace all {config.steps} steps take about {needed} minutes: --set "
                         f"time_limit_minutes={needed}), or set it to 0 for no limit")
    return checkpoint, state


def trained_model_config(config: WMTrainConfig, resume: bool = False) -> WorldModelConfig:
    """The architecture a run trains: its starting checkpoint's (``starting_checkpoint``), else ``config.model``;
    the episodes are read for its cameras, in order. A ``config.model`` that differs from the checkpoint's on
    ``DATA_FIELDS`` is refused, naming the fields (the checkpoint's other fields replace it silently)."""
    checkpoint = starting_checkpoint(config, resume)
    if checkpoint is None:
        return config.model
    have = world_model_checkpoint_config(checkpoint)
    differing = [f"{name} {getattr(have, name)!r} there, {getattr(config.model, name)!r} configured"
                 for name in DATA_FIELDS if getattr(have, name) != getattr(config.model, name)]
    if differing:
        raise ValueError(f"the world model of {checkpoint} predicts other frames than `model` configures: "
                         f"{'; '.join(differing)}. Set model.{' and model.'.join(DATA_FIELDS)} to the checkpoint's "
                         "(the episodes' frames are read for them)")
    return have


@torch.no_grad()
def one_step_psnr(model: VideoWorldModel, sampler: TransitionSampler, count: int, seed: int) -> float:
    """Mean PSNR of one-step predictions on ``count`` fixed transitions (and the copy-last-frame
    baseline is what a model that ignores the action would score)."""
    index = np.random.default_rng(seed).choice(len(sampler), min(count, len(sampler)), replace=False)
    batch = sampler.batch(index)
    was_training = model.training
    model.eval()
    frames, _ = model.sample_next(batch.context, batch.proprio, batch.previous_proprio, batch.actions,
                                  batch.instructions, generator=torch.Generator().manual_seed(seed))
    model.train(was_training)
    return float(psnr(frames.numpy(), batch.target.numpy()).mean())


@torch.no_grad()
def open_loop_context(model: VideoWorldModel, sampler: TransitionSampler, starts: np.ndarray, steps: int,
                      sampling_steps: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The context frames ``uint8 [B, S, H, W, C]`` of transitions ``starts + steps`` as the model
    imagines them: open loop from the real context of ``starts``, with the recorded actions."""
    was_training = model.training
    model.eval()
    context = sampler.batch(starts).context
    for offset in range(steps):
        now = sampler.batch(starts + offset)
        frame, _ = model.sample_next(context, now.proprio, now.previous_proprio, now.actions, now.instructions,
                                     sampling_steps, generator)
        context = torch.cat([context[:, 1:], frame[:, None]], dim=1)
    model.train(was_training)
    return context


def self_rollout_batch(model: VideoWorldModel, sampler: TransitionSampler, batch_size: int, max_steps: int,
                       rng: np.random.Generator, generator: torch.Generator) -> TransitionBatch:
    """Real transitions whose context the model imagined from real frames ``k`` actions earlier (``k``
    uniform in 1..max_steps, one sampling step: the conditional mean). The target stays the real frame,
    so the loss teaches the model to correct the errors its own rollouts make (grain, blur)."""
    steps = int(rng.integers(1, max_steps + 1))
    starts = sampler.sample_windows(batch_size, steps, rng)
    context = open_loop_context(model, sampler, starts, steps, 1, generator)
    return dataclasses.replace(sampler.batch(starts + steps), context=context)


def open_loop_psnr(model: VideoWorldModel, sampler: TransitionSampler, count: int, steps: int, seed: int) -> float:
    """Mean PSNR of the frame imagined ``steps`` actions open loop from real frames, on fixed windows."""
    starts = sampler.sample_windows(count, steps, np.random.default_rng(seed))
    context = open_loop_context(model, sampler, starts, steps, generator=torch.Generator().manual_seed(seed))
    real = sampler.batch(starts + steps).context[:, -1]
    return float(psnr(context[:, -1].numpy(), real.numpy()).mean())


def train_world_model(config: WMTrainConfig, train: list[Trajectory], held_out: list[Trajectory] | None = None,
                      resume: bool = False, show_progress: bool = True,
                      proprio_tracks: list[ProprioTrack] | None = None) -> dict:
    """Train; returns a summary (losses, held-out one-step PSNR and its copy-last-frame baseline,
    steps, seconds, checkpoint). ``proprio_tracks``: more episodes for the proprio head alone (the
    contents of ``config.proprio_train_files``)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = Path(config.out_dir)
    device = resolve_device(config.device)
    # before any work: a fresh run into an earlier run's out_dir would mix their outputs, and a resumed run that
    # has nothing left to train is refused
    checkpoint, state = resume_training_state(config) if resume else (None, None)
    if not resume:
        refuse_previous_run(out_dir, PREFIX)
    # the model of the checkpoint it starts from (resumed or init_checkpoint), as the CLI read the episodes for it
    config = dataclasses.replace(config, model=trained_model_config(config, resume))
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    if resume:  # the resumed checkpoint replaces init_checkpoint's model: that one is not read (it may be gone)
        model = load_world_model(checkpoint, device).train()
    elif str(config.init_checkpoint) not in ("", "."):
        model = load_world_model(config.init_checkpoint, device).train()
    else:
        model = VideoWorldModel(config.model).to(device)
    sampler = TransitionSampler(train, config.model.context_frames)
    eval_sampler = TransitionSampler(held_out, config.model.context_frames) if held_out else None
    frame_size = sampler.frames.shape[1:]
    expected = (config.model.image_size, config.model.image_size, 3 * len(config.model.cameras))
    if tuple(frame_size) != expected:
        raise ValueError(f"the data's frames are {tuple(frame_size)}, the model expects {expected}")
    # windows must fit in an episode: short episodes shorten them instead of failing mid-run
    self_rollout_steps = min(config.self_rollout_steps, sampler.longest_episode - 1)
    if config.self_rollout_fraction and self_rollout_steps < 1:
        raise ValueError("self_rollout_fraction needs episodes of at least 2 actions; the longest has 1")
    open_loop_steps = min(OPEN_LOOP_STEPS, eval_sampler.longest_episode - 1) if eval_sampler else 0
    proprio_windows = None
    if config.proprio_rollout_steps > 1 or config.proprio_only:
        proprio_windows = ProprioWindows([ProprioTrack(t.proprio, t.actions) for t in train] + list(proprio_tracks or []))
    elif proprio_tracks:
        raise ValueError("proprio_train_files train the proprio head's open-loop loss: set proprio_rollout_steps > 1 "
                         "or proprio_only")
    held_out_tracks = [ProprioTrack(t.proprio, t.actions) for t in held_out or []]
    optimizer = make_adamw(model.parameters(), config.lr, config.weight_decay)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    start_step, seconds_before = 0, 0.0
    if resume:
        load_optimizer_state(optimizer, state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        generator.set_state(state["generator"])
        start_step = int(state["step"])
        seconds_before = float(state.get("elapsed_seconds", 0.0))
        truncate_history(out_dir / HISTORY_FILE, "step", start_step)  # the steps after it are redone
    elif str(config.init_checkpoint) in ("", "."):
        mean, std = sampler.proprio_stats()
        model.proprio_mean.copy_(mean)
        model.proprio_std.copy_(std)
    model.train()
    writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)  # as RL's
    # the time limit and the time-budgeted schedule count the time before a resume too: a resumed run continues
    # the interrupted one's schedule and gets what was left of its budget
    started = time.perf_counter() - seconds_before
    history: list[dict] = []
    baseline = None
    if eval_sampler is not None:
        index = np.random.default_rng(config.seed).choice(len(eval_sampler), min(config.eval_transitions,
                                                                                  len(eval_sampler)), replace=False)
        held = eval_sampler.batch(index)
        baseline = float(psnr(held.context[:, -1].numpy(), held.target.numpy()).mean())

    def save(step_done: int) -> Path:
        name = f"{PREFIX}{step_done:06d}"
        state = {"step": step_done, "optimizer": optimizer.state_dict(), "numpy_rng": rng.bit_generator.state,
                 "generator": generator.get_state(), "elapsed_seconds": time.perf_counter() - started}
        path = save_world_model(out_dir / name, model, step_done, state, {"train": to_dict(config)})
        point_latest(out_dir, name, step_done)
        return path

    def log_history(row: dict) -> None:
        with open(out_dir / HISTORY_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")

    def evaluate(step_done: int) -> dict:
        """The held-out figures at ``step_done``, also in the history (its ``step`` lets a resume truncate it)."""
        row = {"step": step_done}
        if eval_sampler is not None:
            row["held_out_psnr_1step"] = one_step_psnr(model, eval_sampler, config.eval_transitions, config.seed)
            row["copy_last_frame_psnr"] = baseline
            writer.add_scalar("wm/held_out_psnr_1step", row["held_out_psnr_1step"], step_done)
            if open_loop_steps >= 1:
                name = f"held_out_psnr_{open_loop_steps}step_open_loop"
                row[name] = open_loop_psnr(model, eval_sampler, config.eval_transitions, open_loop_steps, config.seed)
                writer.add_scalar(f"wm/{name}", row[name], step_done)
            # the proprio the policy reads, fed back over whole held-out episodes
            row["held_out_ee_error_open_loop_m"] = open_loop_ee_error(model, held_out_tracks)
            writer.add_scalar("wm/held_out_ee_error_open_loop_m", row["held_out_ee_error_open_loop_m"], step_done)
            log_history(row)
        return row

    losses = {"frame_loss": float("nan"), "proprio_loss": float("nan")}
    steps_done = start_step
    bar = tqdm(total=config.steps, initial=start_step, desc="world model", unit="step", disable=not show_progress)
    for step in range(start_step, config.steps):
        if config.time_limit_minutes and time.perf_counter() - started > 60 * config.time_limit_minutes:
            break
        if config.proprio_only:
            batch = None
        elif config.self_rollout_fraction and rng.random() < config.self_rollout_fraction:
            batch = self_rollout_batch(model, sampler, config.batch_size, self_rollout_steps, rng, generator)
        else:
            batch = sampler.sample(config.batch_size, rng)
        # a time-limited run ends its cosine when its budget ends, not part-way down (as SFT and the critic do)
        lr = set_budgeted_lr(optimizer, lambda at: lr_at(at, config), step, config.steps, started,
                             config.time_limit_minutes)
        if batch is None:
            loss, losses = torch.zeros(()), {}
        else:
            loss, losses = model.loss(batch.context, batch.proprio, batch.previous_proprio, batch.actions,
                                      batch.instructions, batch.target, batch.target_proprio, generator,
                                      with_proprio=proprio_windows is None)
        if proprio_windows is not None:
            window = proprio_windows.sample(config.proprio_batch_size, config.proprio_rollout_steps, rng)
            proprio_loss = open_loop_proprio_loss(model, window)
            loss = loss + proprio_loss
            losses["proprio_loss"] = proprio_loss.item()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"world-model loss became {loss.item()} at step {step}; last checkpoint: {checkpoint}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        steps_done = step + 1
        bar.update(1)
        if steps_done % config.log_every == 0:
            bar.set_postfix({name.replace("_loss", ""): f"{value:.4f}" for name, value in losses.items()})
            for name, value in (*losses.items(), ("grad_norm", float(grad_norm)), ("lr", lr)):
                writer.add_scalar(f"wm/{name}", value, steps_done)
            log_history({"step": steps_done, **losses, "seconds": time.perf_counter() - started})
        if config.eval_every and steps_done % config.eval_every == 0:
            history.append(evaluate(steps_done))
            bar.write(json.dumps(history[-1]))
        if steps_done % config.checkpoint_every == 0:
            checkpoint = save(steps_done)
    bar.close()
    if checkpoint is None or steps_done % config.checkpoint_every:
        checkpoint = save(steps_done)
    if not history or history[-1]["step"] != steps_done:
        history.append(evaluate(steps_done))
    writer.close()
    return {"steps": steps_done, **losses, "seconds": time.perf_counter() - started,
            "train_transitions": len(sampler), "train_episodes": len(train), "eval": history[-1],
            "checkpoint": str(checkpoint)}


__all__ = ["WMTrainConfig", "train_world_model", "save_world_model", "load_world_model",
           "world_model_checkpoint_config", "trained_model_config", "psnr", "one_step_psnr", "open_loop_psnr",
           "self_rollout_batch"]
