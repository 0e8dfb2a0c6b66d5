"""Supervised fine-tuning of the VLA on demonstrations: cross-entropy on the action tokens.

Data: robomimic/LIBERO-layout HDF5 files (``vla_rl.core.demo_file``); each step gives (the images
of the model's cameras, the proprio when the model takes it, the instruction, and the action chunk of
the next K actions, padded with the last action). Action statistics (q01/q99, gripper unnormalised)
are computed from the training data and stored with every checkpoint. Images get a random shift (pad and crop, as in DrQ) and optionally their object colours
permuted together with the colour words of the instruction (``colour_swap``, augment.py), so that
the policy must find the named object in unseen init states instead of memorising scenes.

The loop is plain: sample a batch, forward teacher-forced logits over the 256 action bins, CE, AdamW
with warm-up + cosine decay, grad clipping. Progress bar, TensorBoard scalars, atomic checkpoints
every ``checkpoint_every`` steps (0: none before the end) and at the end; ``resume`` continues from the
latest one with the optimiser, scheduler, RNG and step restored.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import numpy as np
import torch

from vla_rl.core.checkpoint_dir import HISTORY_FILE, checkpoint_to_resume, refuse_previous_run, truncate_history
from vla_rl.core.schedules import set_budgeted_lr, warmup_cosine_lr
from vla_rl.core.config import option, require_finite, to_dict
from vla_rl.core.demo_file import check_orientation_convention, read_demo_file, rendered_antialiased
from vla_rl.core.optim import load_optimizer_state, make_adamw
from vla_rl.core.rng import global_rng_state, restore_global_rng_state
from vla_rl.policy.action_tokenizer import ActionTokenizer, NormStats, gripper_from_env
from vla_rl.policy.augment import ColourSwap, ColourSwapConfig
from vla_rl.policy.checkpoint import (load_checkpoint, model_config_differences, point_latest, read_training_state,
                                      read_vla_config, resolve_checkpoint, save_checkpoint)
from vla_rl.policy.localiser import localisation_loss
from vla_rl.policy.lora import (LoRAConfig, apply_lora, lora_base_weights, lora_tensors, merged_state_dict,
                                restore_lora)
from vla_rl.policy.model import VLAConfig, VLAModel

CHECKPOINT_PREFIX = "step_"  # step_000500: the checkpoint after 500 optimiser steps


@dataclass(frozen=True)
class SFTConfig:
    model: VLAConfig = option(factory=VLAConfig, doc="the VLA to train from scratch (or init_checkpoint)")
    init_checkpoint: str = option("", "start from this policy checkpoint (or a run directory's newest) instead of "
                                      "random weights")
    lora: LoRAConfig = option(factory=LoRAConfig, doc="LoRA adapters on the decoder (rank 0 = full fine-tuning)")
    freeze_vision: bool = option(False, "keep the vision tower's weights fixed (train projector, FiLM and decoder)")
    demo_dir: Path = option(Path("runs/demo/demos"), "directory of <Task>_demo.hdf5 files")
    tasks: tuple[str, ...] = option((), "tasks to train on; empty = every file in demo_dir")
    demos_per_task: int = option(0, "use at most this many demos per task (0 = all)")
    out_dir: Path = option(Path("runs/sft"), "checkpoints, TensorBoard logs and metrics")
    steps: int = option(2000, "optimiser steps")
    time_limit_minutes: float = option(0.0, "stop early after this wall-clock time (0 = no limit); the cosine "
                                            "decay then follows whichever of steps and time runs out first")
    batch_size: int = option(64, "samples per step")
    lr: float = option(3e-4, "peak learning rate")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_steps: int = option(100, "linear warm-up steps")
    grad_clip: float = option(1.0, "max gradient norm")
    shift_pixels: int = option(4, "random-shift augmentation: pad by this many pixels, crop back")
    located_noise_pixels: float = option(0.0, "std (pixels) of Gaussian noise on the localiser's points as the action "
                                               "head reads them, so it cannot key on the exact points of its training "
                                               "scenes")
    proprio_noise: float = option(0.0, "std of Gaussian noise on the standardised proprio, for the same reason")
    head_points: Literal["localiser", "labels"] = option(
        "localiser", "points the action head reads in training: 'localiser' (its own output, "
                     "detached) or 'labels' (the demos' true points; with located_noise_pixels "
                     "they stand in for a localiser's small errors, and the localiser then "
                     "only needs localiser_batch_size images per step)")
    localiser_batch_size: int = option(0, "with head_points: labels, train the localiser on this many of each "
                                          "batch's images (0 = all): the full-resolution maps dominate a step")
    localiser_frames_dir: Path | None = option(
        None, "with localiser_batch_size: a directory of <Task>_demo.hdf5 episodes whose frames and simulator "
              "pixel labels the localiser trains on instead of the demos' (their actions are never used). "
              "Perception labels cost the simulator nothing, and a localiser that saw only the demos' few layouts "
              "confuses similar objects in new ones (docs/training.md, session 17)")
    localiser_loss_weight: float = option(1.0, "weight of the localiser's loss (model.localiser_points > 0) beside the "
                                               "action tokens' cross-entropy")
    action_label_sigma_bins: float = option(
        0.0, "std, in bins, of a Gaussian soft target around each demo action's bin (0 = one-hot, OpenVLA). A "
             "one-hot cross-entropy charges a neighbouring bin as much as the opposite end of the range; soft "
             "targets make near misses cheap, so the bins' order is learnt from fewer samples (tokens unchanged)")
    colour_swap: ColourSwapConfig = option(factory=ColourSwapConfig, doc="permute object colours in image and "
                                                                         "instruction together (augment.py)")
    checkpoint_every: int = option(500, "steps between checkpoints (and one at the end; 0 = only at the end)")
    log_every: int = option(20, "steps between TensorBoard/progress updates (>= 1)")
    seed: int = option(0, "seed of weights init, sampling and augmentation")
    eval_episodes_per_task: int = option(10, "held-out eval init states per task after training (0 = skip)")
    eval_num_envs: int = option(16, "parallel envs for the final evaluation (>= 1)")
    eval_suite: str = option("tabletop", "suite of the final evaluation (tabletop, robosuite, libero_spatial, ...)")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        for name in ("log_every", "eval_num_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "demos_per_task", "checkpoint_every", "eval_episodes_per_task", "shift_pixels"):
            if getattr(self, name) < 0:  # demos_per_task, checkpoint_every, eval_episodes_per_task: 0 has a meaning
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        require_finite(self, positive=("lr", "grad_clip"),
                       non_negative=("weight_decay", "time_limit_minutes", "located_noise_pixels", "proprio_noise",
                                     "localiser_loss_weight", "action_label_sigma_bins"))
        if self.head_points not in ("localiser", "labels"):
            raise ValueError(f"head_points must be 'localiser' or 'labels', got {self.head_points!r}")
        if self.localiser_batch_size < 0 or (self.localiser_batch_size and self.head_points != "labels"):
            raise ValueError("localiser_batch_size must be >= 0, and > 0 only with head_points: labels (the head "
                             "reading the localiser's points needs them for the whole batch)")
        if self.localiser_frames_dir is not None and not self.localiser_batch_size:
            raise ValueError("localiser_frames_dir needs localiser_batch_size > 0 (with head_points: labels): the "
                             "localiser then trains on its own batch of those frames")


@dataclass
class DemoData:
    images: dict[str, np.ndarray]  # camera -> uint8 [N, H, W, 3]
    proprio: np.ndarray | None  # float32 [N, 8] (when asked for)
    named_pixels: np.ndarray | None  # float32 [N, K, 2] localiser labels in the first camera (when asked for)
    chunks: np.ndarray          # float32 [N, K, A]
    instruction_ids: np.ndarray  # int [N] -> instructions
    instructions: list[str]
    tasks: list[str]
    episodes: int

    def __len__(self) -> int:
        return len(self.chunks)


def demo_files(demo_dir: Path, tasks: tuple[str, ...] = ()) -> list[Path]:
    """The ``<Task>_demo.hdf5`` files in ``demo_dir`` (of ``tasks`` only, if given), sorted; a
    FileNotFoundError when a task has none or there are none at all."""
    files = sorted(Path(demo_dir).glob("*_demo.hdf5"))
    if tasks:
        files = [f for f in files if f.name.removesuffix("_demo.hdf5") in tasks]
        found = {f.name.removesuffix("_demo.hdf5") for f in files}
        if set(tasks) - found:
            raise FileNotFoundError(f"no demo files for {sorted(set(tasks) - found)} in {demo_dir}")
    if not files:
        raise FileNotFoundError(f"no *_demo.hdf5 files in {demo_dir}; collect some with `vla-rl demos`")
    return files


def check_demo_files(demo_dir: Path, tasks: tuple[str, ...], antialias: bool) -> None:
    """A policy must learn from frames rendered the way its rollouts and evaluations will render them
    (``VLAConfig.antialias``) and from the proprio orientation the envs give it: a ValueError naming
    the first demo file that differs."""
    for path in demo_files(demo_dir, tasks):
        check_orientation_convention(path)
        if rendered_antialiased(path) != antialias:
            raise ValueError(f"{path} was rendered with antialias={not antialias} but model.antialias is {antialias}: "
                             f"collect the demos with --set antialias={str(antialias).lower()}, or set "
                             f"model.antialias={str(not antialias).lower()}")


def load_demos(demo_dir: Path, chunk_size: int, tasks: tuple[str, ...] = (), demos_per_task: int = 0,
               cameras: tuple[str, ...] = ("agentview",), proprio: bool = False, named_pixels: bool = False,
               gripper_pixels: bool = False) -> DemoData:
    files = demo_files(demo_dir, tasks)
    images: dict[str, list] = {camera: [] for camera in cameras}
    chunks, instruction_ids, instructions, task_names, episodes, states, labels = [], [], [], [], 0, [], []
    index: dict[str, int] = {}
    for path in files:
        for number, episode in enumerate(read_demo_file(path)):
            if demos_per_task and number >= demos_per_task:
                break
            if episode.split == "eval":  # other splits ("train", a robot's, a dataset's) are not held out
                raise ValueError(
                    f"{path} episode {number} was recorded on evaluation init state {episode.init_state_id} "
                    "(split 'eval'): training on it would make held-out success rates dishonest; collect the "
                    "demos on training init states (--set split=train, the default)")
            episodes += 1
            task_names.append(episode.task)
            steps = episode.num_steps
            future = np.minimum(np.arange(steps)[:, None] + np.arange(chunk_size)[None], steps - 1)
            chunks.append(episode.actions[future])
            for camera in cameras:
                images[camera].append(episode.camera_images(camera))
            if proprio:
                states.append(episode.proprio())
            if named_pixels:
                labels.append(episode.named_pixels(gripper=gripper_pixels))
            text_id = index.setdefault(episode.instruction, len(index))
            instruction_ids.append(np.full(steps, text_id))
    instructions = list(index)
    return DemoData({camera: np.concatenate(parts) for camera, parts in images.items()},
                    np.concatenate(states) if proprio else None, np.concatenate(labels) if named_pixels else None,
                    np.concatenate(chunks).astype(np.float32),
                    np.concatenate(instruction_ids), instructions, sorted(set(task_names)), episodes)


def demo_action_tokens(chunks: np.ndarray, action_tokenizer: ActionTokenizer, gripper_convention: str) -> np.ndarray:
    """The ``[N, K * A]`` token ids SFT trains on for the demos' env actions ``[N, K, A]``: in the model's
    gripper convention (an OpenVLA model's gripper is 1 = open, the env's command -1)."""
    return action_tokenizer.encode(gripper_from_env(chunks, gripper_convention)).reshape(len(chunks), -1)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator, pixels: torch.Tensor | None = None):
    """``uint8 [B, H, W, 3]``: replicate-pad by ``pad`` and crop back at a random offset per image.
    Given ``pixels`` ``[B, ..., 2]`` (column, row) image positions, returns them moved with their
    image too: ``(images, pixels)``."""
    if pad <= 0:
        return images if pixels is None else (images, pixels)
    batch, height, width, _ = images.shape
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height)[None])[:, :, None].expand(batch, height, width)
    cols = (dx[:, None] + torch.arange(width)[None])[:, None, :].expand(batch, height, width)
    out = padded[torch.arange(batch)[:, None, None], :, rows, cols].to(torch.uint8)  # [B, H, W, 3]
    if pixels is None:
        return out
    moved = torch.stack([dx, dy], -1).float() - pad  # where each crop starts in the original image
    return out, pixels - moved.view(batch, *([1] * (pixels.ndim - 2)), 2)


def lr_at(step: float, config) -> float:
    """Linear warm-up to ``config.lr`` over ``config.warmup_steps``, then cosine decay to 0 at
    ``config.steps`` (any config with these three fields: SFT, the reward critic). A time-limited run
    reads it through ``set_budgeted_lr`` so that the decay ends with its time budget."""
    return warmup_cosine_lr(step, config.lr, config.warmup_steps, config.steps)


def soft_bin_targets(targets: torch.Tensor, n_bins: int, sigma: float) -> torch.Tensor:
    """Integer bin indices ``[...]`` -> target distributions ``[..., n_bins]``: a Gaussian of std
    ``sigma`` bins around each index, cut at the range's ends and renormalised (one-hot at 0)."""
    if sigma <= 0:
        return torch.nn.functional.one_hot(targets, n_bins).float()
    bins = torch.arange(n_bins, device=targets.device, dtype=torch.float32)
    weights = torch.exp(-0.5 * ((bins - targets.unsqueeze(-1).float()) / sigma) ** 2)
    return weights / weights.sum(-1, keepdim=True)


def sft_loss(model: VLAModel, tokens: torch.Tensor, images: torch.Tensor, instructions: list[str],
             proprio: torch.Tensor | None, named_pixels: torch.Tensor | None,
             config: SFTConfig, localiser_batch: tuple[torch.Tensor, list[str], torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean CE over all action tokens (against soft targets with ``action_label_sigma_bins``; plus,
    with a localiser, ``localiser_loss_weight`` times its loss against the ``[B, K, 2]``
    ``named_pixels``) and metrics; tokens ``[B, L]``, images ``uint8 [B, C, H, W, 3]`` for the
    model's C cameras in order, proprio ``[B, P]``; the input-noise levels come from ``config``.
    ``localiser_batch`` (first-camera images ``uint8 [b, H, W, 3]``, instructions, labels ``[b, K, 2]``):
    with the head reading the labels, the localiser trains on these instead of the batch's first images."""
    localiser = model.config.localiser_points > 0
    if localiser and named_pixels is None:
        raise ValueError("the model has a localiser: SFT needs its labels (named_pixels)")
    head_labels = named_pixels if localiser and config.head_points == "labels" else None
    prefix = model.build_prefix({camera: images[:, i] for i, camera in enumerate(model.config.cameras)},
                                instructions, proprio, config.located_noise_pixels, config.proprio_noise,
                                points=head_labels)
    logits = model.teacher_forced_logits(prefix, tokens)
    targets = tokens - model.config.first_action_token_id
    n_bins = logits.shape[-1]
    sigma = config.action_label_sigma_bins
    # Index targets at sigma 0: the plain cross-entropy, without building [B, L, n_bins] one-hots.
    labels = soft_bin_targets(targets, n_bins, sigma).reshape(-1, n_bins) if sigma > 0 else targets.reshape(-1)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n_bins), labels)
    metrics = {"token_accuracy": (logits.argmax(-1) == targets).float().mean(), "action_loss": loss.detach()}
    if localiser:
        located_logits, map_labels = prefix.located_logits, named_pixels[:, :model.config.localiser_maps]
        if located_logits is None and localiser_batch is not None:  # the localiser has its own frames
            located_images, located_instructions, located_labels = localiser_batch
            located_logits = model.localise(located_images, located_instructions)
            map_labels = located_labels[:, :model.config.localiser_maps]
        elif located_logits is None:  # the head read the labels: the localiser runs on its own share
            count = config.localiser_batch_size or len(images)
            located_logits, map_labels = model.localise(images[:count, 0], instructions[:count]), map_labels[:count]
        located_loss, pixel_error = localisation_loss(located_logits, map_labels, images.shape[2])
        loss = loss + config.localiser_loss_weight * located_loss
        metrics.update(localiser_loss=located_loss.detach(), localiser_pixel_error=pixel_error)
    return loss, metrics


def perception_batch(perception: DemoData, config: SFTConfig, colour_swap: ColourSwap, generator: torch.Generator
                     ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """``localiser_batch_size`` frames of ``perception`` with their instructions and pixel labels, shifted
    and colour-swapped as the demos are (a colour swap renames the object, so its pixels stay)."""
    index = torch.randint(0, len(perception), (config.localiser_batch_size,), generator=generator)
    camera = next(iter(perception.images))
    images, labels = random_shift(torch.from_numpy(perception.images[camera][index.numpy()]), config.shift_pixels,
                                  generator, torch.from_numpy(perception.named_pixels[index.numpy()]))
    instructions = [perception.instructions[i] for i in perception.instruction_ids[index.numpy()]]
    images, instructions = colour_swap(images[:, None], instructions, generator)
    return images[:, 0], instructions, labels


def _init_checkpoint_of_run(given: str, resume_from: Path | None, resumed_state: dict | None) -> str:
    """The checkpoint the run starts from: ``given``, or a run directory's newest checkpoint. A resumed run
    (``resume_from``, its training state ``resumed_state``) keeps the one its checkpoints record (re-resolving a
    run directory that has grown since would name another, and one that has moved none); a different ``given``
    is reported, not used."""
    recorded_config = (resumed_state or {}).get("sft_config")
    if recorded_config is None:  # a fresh run (or a checkpoint from before the config was recorded)
        return str(resolve_checkpoint(Path(given)))
    recorded = recorded_config.get("init_checkpoint") or ""  # "": the run started from random weights
    if not recorded or Path(given).resolve() not in (Path(recorded).resolve(), Path(recorded).resolve().parent):
        print(f"sft --resume: the run continues from {resume_from}, which started from "
              f"{recorded or 'random weights'}; init_checkpoint {given} is not used")
    return recorded


def train_sft(config: SFTConfig, resume: bool = False, show_progress: bool = True,
              stop_at_step: int | None = None) -> dict:
    """Run SFT; returns a summary (final loss, accuracy, steps, checkpoint path, seconds).

    ``stop_at_step`` ends the run early without changing the schedule (as a crash would; tests use
    it to check that ``resume`` reproduces an uninterrupted run exactly)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out_dir = Path(config.out_dir)
    if not resume:  # before any work: a fresh run into an earlier run's out_dir would mix their outputs
        refuse_previous_run(out_dir, CHECKPOINT_PREFIX)
    resume_from = checkpoint_to_resume(out_dir, CHECKPOINT_PREFIX) if resume else None
    # read once: it names the run's init_checkpoint and restores the optimiser and RNGs below
    resumed_state = read_training_state(resume_from) if resume_from is not None else None
    if config.init_checkpoint:  # a checkpoint, or a run directory's newest one (recorded as the checkpoint)
        config = dataclasses.replace(config, init_checkpoint=_init_checkpoint_of_run(config.init_checkpoint,
                                                                                     resume_from, resumed_state))
    out_dir.mkdir(parents=True, exist_ok=True)
    # the model this run trains: the one init_checkpoint holds (a resumed run: the one it has been training, as
    # init_checkpoint may have moved since), else config.model
    if config.init_checkpoint:
        model_config = read_vla_config(Path(resume_from or config.init_checkpoint) / "vla_config.json")
    else:
        model_config = config.model
    for directory in (config.demo_dir, config.localiser_frames_dir):
        if directory is not None:
            check_demo_files(directory, config.tasks, model_config.antialias)
    # the demos are loaded for that model (its chunk size, cameras, proprio, points), not for config.model
    data = load_demos(config.demo_dir, model_config.chunk_size, config.tasks, config.demos_per_task,
                      model_config.cameras, proprio=model_config.proprio_dim > 0,
                      named_pixels=model_config.localiser_points > 0, gripper_pixels=model_config.localiser_gripper)
    if data.named_pixels is not None and data.named_pixels.shape[1] != model_config.located_points:
        raise ValueError(f"model.localiser_points is {model_config.localiser_points} but the demos label "
                         f"{data.named_pixels.shape[1] - int(model_config.localiser_gripper)} named points")
    if data.proprio is not None and data.proprio.shape[1] != model_config.proprio_dim:
        raise ValueError(f"model.proprio_dim is {model_config.proprio_dim} but the demos' proprio is "
                         f"{data.proprio.shape[1]}-D")
    perception = None
    if config.localiser_frames_dir is not None:
        perception = load_demos(config.localiser_frames_dir, 1, config.tasks, 0, model_config.cameras[:1],
                                named_pixels=True, gripper_pixels=model_config.localiser_gripper)
        print(f"localiser frames: {len(perception)} from {perception.episodes} episodes in {config.localiser_frames_dir}")
    torch.manual_seed(config.seed)
    start_step, state = 0, None
    if resume_from is not None:
        differing = model_config_differences(resume_from, model_config)  # the run continues the model it started
        if differing:
            raise ValueError(f"--resume: {resume_from} holds another model than model (they differ in "
                             f"{', '.join(differing)}); resume with the config the run started with, or choose "
                             f"another out_dir")
        model, action_tokenizer, _ = load_checkpoint(resume_from)
        state = resumed_state
        start_step = int(state["step"])
        truncate_history(out_dir / HISTORY_FILE, "step", start_step)  # the steps after it are redone
    elif config.init_checkpoint:
        model, action_tokenizer, _ = load_checkpoint(Path(config.init_checkpoint))
    else:
        model = VLAModel(config.model)
        targets = gripper_from_env(data.chunks, model_config.gripper_convention)
        stats = NormStats.from_actions(targets.reshape(-1, targets.shape[-1]))
        action_tokenizer = ActionTokenizer(model_config.action_vocab_size, stats, model_config.n_action_bins)
        if data.proprio is not None:
            model.set_proprio_stats(data.proprio.mean(0), data.proprio.std(0))
    if model.config.gripper_from_proprio and not torch.any(model.gripper_projection):
        fit = model.fit_gripper_projection(data.proprio[:, :3], data.named_pixels[:, -1])
        print(f"gripper projection fitted to {len(data)} labelled EE positions: residual median "
              f"{fit['median_pixels']:.3f} px, max {fit['max_pixels']:.3f} px")
    if config.lora.enabled:
        if state:  # resumed: the frozen base from the checkpoint the run started from, if any (a bit-exact resume)
            base = lora_base_weights(config.init_checkpoint or None, model, config.lora)
            trainable = restore_lora(model, config.lora, state["lora"], base)
        else:
            trainable = apply_lora(model, config.lora)
    else:
        trainable = list(model.parameters())
    if config.freeze_vision:
        frozen = {id(p) for p in model.vision_backbone.parameters()}
        for parameter in model.vision_backbone.parameters():
            parameter.requires_grad_(False)
        trainable = [p for p in trainable if id(p) not in frozen]
    model.train()
    tokens_all = torch.from_numpy(demo_action_tokens(data.chunks, action_tokenizer, model.config.gripper_convention))
    images_all = torch.from_numpy(np.stack([data.images[camera] for camera in model_config.cameras], axis=1))
    proprio_all = torch.from_numpy(data.proprio) if data.proprio is not None else None
    labels_all = torch.from_numpy(data.named_pixels) if data.named_pixels is not None else None
    optimizer = make_adamw(trainable, config.lr, config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    if state is not None:
        load_optimizer_state(optimizer, state["optimizer"])
        generator.set_state(state["generator"])
        restore_global_rng_state(state)
    colour_swap = ColourSwap(config.colour_swap)
    writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)  # as RL's
    # the time limit and the time-budgeted schedule count the time before a resume too: a resumed run continues
    # the interrupted one's schedule and gets what was left of its budget
    started = time.perf_counter() - (float(state.get("elapsed_seconds", 0.0)) if state is not None else 0.0)
    history_path = out_dir / HISTORY_FILE
    loss_value = accuracy_value = float("nan")
    steps_done = start_step
    checkpoint, checkpoint_step = resume_from, start_step

    def save(step_done: int) -> Path:
        name = f"{CHECKPOINT_PREFIX}{step_done:06d}"
        training_state = {"step": step_done, "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                          **global_rng_state(), "sft_config": to_dict(config),
                          "elapsed_seconds": time.perf_counter() - started}
        if config.lora.enabled:
            training_state["lora"] = lora_tensors(model)
        path = save_checkpoint(out_dir / name, model, action_tokenizer, training_state,
                               extra={"trained_tasks": data.tasks, "demo_episodes": data.episodes},
                               weights=merged_state_dict(model))
        point_latest(out_dir, name, step_done)
        return path

    bar = tqdm(total=config.steps, initial=start_step, desc="sft", unit="step", disable=not show_progress)
    for step in range(start_step, config.steps):
        if config.time_limit_minutes and time.perf_counter() - started > 60 * config.time_limit_minutes:
            break
        if stop_at_step is not None and step >= stop_at_step:
            break
        index = torch.randint(0, len(data), (config.batch_size,), generator=generator)
        images = images_all[index]  # [B, C, H, W, 3]
        labels = labels_all[index] if labels_all is not None else None
        if labels is None:
            images = random_shift(images.flatten(0, 1), config.shift_pixels, generator).view(images.shape)
        else:  # every camera moves by its own offset; the labels follow the first camera's
            cameras = images.shape[1]
            per_camera = labels[:, None].expand(-1, cameras, -1, -1).flatten(0, 1)
            shifted, per_camera = random_shift(images.flatten(0, 1), config.shift_pixels, generator, per_camera)
            images, labels = shifted.view(images.shape), per_camera.view(len(index), cameras, -1, 2)[:, 0]
        instructions = [data.instructions[i] for i in data.instruction_ids[index.numpy()]]
        images, instructions = colour_swap(images, instructions, generator)
        # a time-limited run decays over its time budget (a resumed run's clock includes the time before it)
        lr = set_budgeted_lr(optimizer, lambda at: lr_at(at, config), step, config.steps, started,
                             config.time_limit_minutes)
        localiser_batch = None if perception is None else perception_batch(perception, config, colour_swap, generator)
        loss, metrics = sft_loss(model, tokens_all[index], images, instructions,
                                 proprio_all[index] if proprio_all is not None else None, labels, config,
                                 localiser_batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SFT loss became {loss.item()} at step {step}; last checkpoint: {checkpoint}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        loss_value = loss.item()
        values = {name: float(value) for name, value in metrics.items()}
        accuracy_value = values["token_accuracy"]
        bar.update(1)
        if (step + 1) % config.log_every == 0:
            postfix = {"loss": f"{loss_value:.3f}", "acc": f"{accuracy_value:.2f}"}
            if "localiser_pixel_error" in values:
                postfix["loc_px"] = f"{values['localiser_pixel_error']:.2f}"
            bar.set_postfix(postfix)
            for name, value in {"loss": loss_value, **values, "grad_norm": float(grad_norm),
                                "lr": lr}.items():
                writer.add_scalar(f"sft/{name}", value, step + 1)
            with open(history_path, "a") as f:
                f.write(json.dumps({"step": step + 1, "loss": loss_value, **values, "lr": lr,
                                    "seconds": time.perf_counter() - started}) + "\n")
        steps_done = step + 1
        if config.checkpoint_every and steps_done % config.checkpoint_every == 0:
            checkpoint, checkpoint_step = save(steps_done), steps_done
    bar.close()
    if resume_from is not None and steps_done == start_step:  # say so: a silent resume looks like a hang or a no-op
        reason = (f"all {config.steps} steps" if start_step >= config.steps else
                  f"its time limit ({config.time_limit_minutes:g} min; raise time_limit_minutes to train on)")
        print(f"sft: nothing left to do: the run in {out_dir} had reached {reason} at step {start_step} "
              f"({resume_from.name})")
    if checkpoint is None or checkpoint_step != steps_done:  # the last step's checkpoint
        checkpoint = save(steps_done)
    writer.close()
    return {"steps": steps_done, "loss": loss_value, "token_accuracy": accuracy_value, "checkpoint": str(checkpoint),
            "seconds": time.perf_counter() - started, "samples": len(data), "episodes": data.episodes,
            "tasks": data.tasks}
