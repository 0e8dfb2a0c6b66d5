"""An action-conditioned video world model on ``diffusers`` components.

Given the last ``context_frames`` camera frames, the proprio state, the 7-D action and the
instruction, it predicts the next frame and the next proprio state:

- **frames**: a conditional diffusion model. ``diffusers.UNet2DModel`` denoises the next frame
  while seeing the context frames as extra input channels. Frames are folded 4x4 pixels into
  channels first (pixel-unshuffle, 64x64x3 -> 16x16x48) so the UNet works on a 16x16 grid: about
  10x cheaper on a CPU than at full resolution, at no loss of resolution in the output.
- **conditioning**: action, normalised proprio and a hashed bag-of-words instruction embedding go
  through an MLP into the UNet's class embedding (added to its timestep embedding), so every
  block is modulated by the action.
- **sampling**: the UNet predicts the clean frame (``prediction_type="sample"``) and a DDIM
  scheduler with trailing timestep spacing samples in ``sampling_steps`` (default 4, at most 8)
  steps. Even one step gives the conditional-mean frame, so rollouts are cheap.
- **proprio**: a small MLP predicts the change of the normalised proprio state from the last two
  proprio states and the action (the arm follows its commanded motion closely).
- **residual**: what is denoised is the change from the last context frame (halved, so it stays in
  [-1, 1]): "nothing moves" is the zero prediction, and the loss concentrates on the arm and the
  objects that move instead of the static background.
- **drift**: in training, half of the samples get Gaussian noise of a random level up to
  ``context_noise`` on their context frames (clamped to [-1, 1], the range of every real or
  imagined frame), and the level is an input of the conditioning (0 at inference), as in GameNGen.
  The residual target is taken from the *noisy* last context frame, because sampling adds the
  prediction to whatever context the model has: it learns to lead from an imperfect frame back to
  the real next one, which is what it needs in long rollouts, instead of carrying the error forward.
  With the clamp, the halved residual stays in [-1, 1] in training as at sampling, so the
  schedulers' ``clip_sample`` at +-1 never cuts a target the model should reach.

It implements the ``WorldModel`` contract (``init_state``, ``predict``) of ``vla_rl.core``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vla_rl.core.config import option
from vla_rl.core.types import ObsBatch

MAX_SAMPLING_STEPS = 8
ATTENTION_HEAD_DIM = 32  # the UNet's attention head width (narrower only where the block is)


@dataclass(frozen=True)
class WorldModelConfig:
    image_size: int = option(64, "frame height and width (a multiple of 4 * 2**(levels - 1))")
    cameras: tuple[str, ...] = option(("agentview",), "cameras predicted together (channels stacked)")
    context_frames: int = option(2, "past frames the prediction conditions on")
    fold: int = option(4, "pixel-unshuffle factor: the UNet works on image_size / fold")
    channels: tuple[int, ...] = option((64, 128, 128), "UNet block widths, one per resolution level")
    attention_last: bool = option(True, "self-attention in the lowest-resolution UNet block")
    layers_per_block: int = option(1, "UNet resnet layers per block")
    proprio_dim: int = option(8, "proprio state size")
    action_dim: int = option(7, "action size")
    instruction_buckets: int = option(512, "hash buckets of the bag-of-words instruction embedding (0 = no text)")
    instruction_dim: int = option(32, "instruction embedding width")
    train_timesteps: int = option(1000, "diffusion noise levels in training")
    sampling_steps: int = option(4, f"DDIM denoising steps per predicted frame (1-{MAX_SAMPLING_STEPS})")
    context_noise: float = option(0.1, "training: max std of noise on context frames (robustness to drift)")
    predict_residual: bool = option(True, "denoise the change from the last context frame instead of the frame")

    def __post_init__(self) -> None:
        multiple = self.fold * 2 ** (len(self.channels) - 1)
        if self.image_size % multiple:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {multiple} "
                             f"(fold {self.fold} and {len(self.channels)} UNet levels)")
        if not 1 <= self.sampling_steps <= MAX_SAMPLING_STEPS:
            raise ValueError(f"sampling_steps must be in [1, {MAX_SAMPLING_STEPS}], got {self.sampling_steps}")
        if self.context_frames < 1 or not self.cameras:
            raise ValueError("context_frames must be >= 1 and cameras non-empty")
        if any(c % 16 for c in self.channels):
            raise ValueError(f"channels must be multiples of 16 (group norm), got {self.channels}")


def instruction_word_ids(instruction: str, buckets: int) -> list[int]:
    """Stable hash buckets of an instruction's words (crc32: the same in every process)."""
    words = instruction.lower().replace(",", " ").replace(".", " ").split() or [""]
    return [zlib.crc32(word.encode()) % buckets for word in words]


@dataclass
class WMState:
    """Imagination state of ``B`` rollouts: context ``uint8 [B, S, H, W, 3 * cameras]`` (oldest
    first), proprio and the previous proprio ``float32 [B, P]``, instructions."""

    context: torch.Tensor
    proprio: torch.Tensor
    previous_proprio: torch.Tensor
    instructions: list[str]


class VideoWorldModel(nn.Module):
    """See the module docstring."""

    def __init__(self, config: WorldModelConfig = WorldModelConfig()):
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

        self.config = config
        folded = 3 * len(config.cameras) * config.fold ** 2
        levels = len(config.channels)
        down = ["DownBlock2D"] * levels
        if config.attention_last:
            down[-1] = "AttnDownBlock2D"
        up = [name.replace("Down", "Up") for name in reversed(down)]
        # the mid block always attends at the last width (and attention_last there too): diffusers splits it
        # into width // head_dim heads, so a last width under the usual 32 gets one head of its own width
        # instead of zero heads (a ZeroDivisionError); widths from 32 on keep 32 (checkpoints unchanged)
        attention_head_dim = min(ATTENTION_HEAD_DIM, config.channels[-1])
        self.unet = UNet2DModel(
            sample_size=config.image_size // config.fold, in_channels=folded * (1 + config.context_frames),
            out_channels=folded, block_out_channels=tuple(config.channels), layers_per_block=config.layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), class_embed_type="identity",
            norm_num_groups=16, attention_head_dim=attention_head_dim,
        )
        if config.predict_residual:  # start as "nothing moves" (zero change), the strong baseline
            nn.init.zeros_(self.unet.conv_out.weight)
            nn.init.zeros_(self.unet.conv_out.bias)
        embed_dim = config.channels[0] * 4  # the UNet's timestep-embedding width
        text_dim = config.instruction_dim if config.instruction_buckets else 0
        self.words = nn.EmbeddingBag(config.instruction_buckets, text_dim, mode="mean") if text_dim else None
        self.condition = nn.Sequential(
            nn.Linear(config.action_dim + config.proprio_dim + text_dim + 1, embed_dim), nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
        )
        self.proprio_head = nn.Sequential(
            nn.Linear(2 * config.proprio_dim + config.action_dim, 256), nn.SiLU(),
            nn.Linear(256, 256), nn.SiLU(), nn.Linear(256, config.proprio_dim),
        )
        nn.init.zeros_(self.proprio_head[-1].weight)
        nn.init.zeros_(self.proprio_head[-1].bias)
        self.register_buffer("proprio_mean", torch.zeros(config.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(config.proprio_dim))
        schedule = dict(num_train_timesteps=config.train_timesteps, beta_schedule="squaredcos_cap_v2",
                        prediction_type="sample", clip_sample=True)
        self.train_scheduler = DDPMScheduler(**schedule)
        self.sample_scheduler = DDIMScheduler(**schedule, timestep_spacing="trailing")

    # ---- tensors in and out -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.proprio_mean.device

    def fold_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``uint8 [..., H, W, C]`` -> ``float [..., C * fold**2, H / fold, W / fold]`` in [-1, 1]."""
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        x = F.pixel_unshuffle(x, self.config.fold)
        return x.reshape(*lead, *x.shape[1:])

    def unfold_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of ``fold_frames``, rounded to ``uint8 [B, H, W, C]``."""
        x = F.pixel_shuffle(x, self.config.fold)
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)

    def normalise_proprio(self, proprio: torch.Tensor) -> torch.Tensor:
        return (proprio.to(self.device) - self.proprio_mean) / self.proprio_std

    def conditioning(self, actions: torch.Tensor, proprio: torch.Tensor, instructions: Sequence[str],
                     context_noise: torch.Tensor | None = None) -> torch.Tensor:
        """``context_noise [B]``: the std of the noise added to the context frames (training only)."""
        if context_noise is None:
            context_noise = torch.zeros(len(actions), device=self.device)
        scale = max(self.config.context_noise, 1e-6)
        parts = [actions.to(self.device).float(), self.normalise_proprio(proprio), context_noise[:, None] / scale]
        if self.words is not None:
            ids = [instruction_word_ids(text, self.config.instruction_buckets) for text in instructions]
            flat = torch.tensor([i for row in ids for i in row], device=self.device)
            offsets = torch.tensor(np.cumsum([0] + [len(row) for row in ids[:-1]]), device=self.device)
            parts.append(self.words(flat, offsets))
        return self.condition(torch.cat(parts, dim=-1))

    def next_proprio(self, proprio: torch.Tensor, previous: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        now, before = self.normalise_proprio(proprio), self.normalise_proprio(previous)
        delta = self.proprio_head(torch.cat([now, now - before, actions.to(self.device).float()], dim=-1))
        return (now + delta) * self.proprio_std + self.proprio_mean

    def denoise(self, noisy: torch.Tensor, context: torch.Tensor, timesteps: torch.Tensor,
                condition: torch.Tensor) -> torch.Tensor:
        """Predicted clean folded frame from a noisy one and folded context ``[B, S, C', h, w]``."""
        inputs = torch.cat([noisy, context.flatten(1, 2)], dim=1)
        return self.unet(inputs, timesteps, class_labels=condition).sample

    # ---- training -----------------------------------------------------------------------------
    def loss(self, context: torch.Tensor, proprio: torch.Tensor, previous_proprio: torch.Tensor,
             actions: torch.Tensor, instructions: Sequence[str], target_frame: torch.Tensor,
             target_proprio: torch.Tensor, generator: torch.Generator | None = None,
             with_proprio: bool = True) -> tuple[torch.Tensor, dict]:
        """Denoising loss of the next frame plus (``with_proprio``) the one-step proprio loss. Frames are
        uint8: context ``[B, S, H, W, C]``, target ``[B, H, W, C]``; proprio ``[B, P]``; actions ``[B, A]``."""
        batch = len(actions)
        clean = self.fold_frames(target_frame)
        folded_context = self.fold_frames(context)
        level = torch.rand(batch, generator=generator) * self.config.context_noise
        level = torch.where(torch.rand(batch, generator=generator) < 0.5, torch.zeros_like(level), level).to(self.device)
        noise = torch.randn(folded_context.shape, generator=generator).to(self.device)
        # clamped: a noisy frame stays an image in [-1, 1], as every context frame is at sampling (uint8)
        folded_context = (folded_context + level[:, None, None, None, None] * noise).clamp(-1, 1)
        if self.config.predict_residual:
            # the change from the *noisy* last frame: sampling adds the prediction to whatever context
            # the model has, so the target must lead from an imperfect frame back to the real one
            clean = (clean - folded_context[:, -1]) / 2
        noise = torch.randn(clean.shape, generator=generator).to(self.device)
        timesteps = torch.randint(0, self.config.train_timesteps, (batch,), generator=generator).to(self.device)
        noisy = self.train_scheduler.add_noise(clean, noise, timesteps)
        condition = self.conditioning(actions, proprio, instructions, level)
        predicted = self.denoise(noisy, folded_context, timesteps, condition)
        frame_loss = F.mse_loss(predicted, clean)
        if not with_proprio:
            return frame_loss, {"frame_loss": frame_loss.item()}
        proprio_pred = self.next_proprio(proprio, previous_proprio, actions)
        proprio_loss = F.mse_loss(self.normalise_proprio(proprio_pred), self.normalise_proprio(target_proprio))
        return frame_loss + proprio_loss, {"frame_loss": frame_loss.item(), "proprio_loss": proprio_loss.item()}

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample_next(self, context: torch.Tensor, proprio: torch.Tensor, previous_proprio: torch.Tensor,
                    actions: torch.Tensor, instructions: Sequence[str], steps: int | None = None,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Next frame ``uint8 [B, H, W, C]`` and proprio ``[B, P]`` in ``steps`` DDIM steps. The starting
        noise of all rows is one draw from ``generator``, so a row's frame depends on the seed *and* on its
        position in the batch and the batch's size: the same rollout imagined in another batch (other
        rows running, another chunk) gets other noise."""
        steps = steps or self.config.sampling_steps
        if not 1 <= steps <= MAX_SAMPLING_STEPS:
            raise ValueError(f"sampling steps must be in [1, {MAX_SAMPLING_STEPS}], got {steps}")
        folded_context = self.fold_frames(context)
        condition = self.conditioning(actions, proprio, instructions)
        x = torch.randn(folded_context[:, 0].shape, generator=generator).to(self.device)
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(steps)
        for index, t in enumerate(scheduler.timesteps):
            timestep = torch.full((len(x),), int(t), device=self.device)
            predicted = self.denoise(x, folded_context, timestep, condition)
            output = scheduler.step(predicted, int(t), x, eta=0.0)
            # the last step returns the predicted clean sample (the model's output, clipped): DDIM's prev_sample
            # there lands on timestep 0, not on the clean sample, when the trailing spacing's stride does not
            # divide the training timesteps (6 or 7 steps), which leaves sqrt(1 - alpha_bar_0) of noise in the frame
            x = output.pred_original_sample if index == len(scheduler.timesteps) - 1 else output.prev_sample
        if self.config.predict_residual:
            x = folded_context[:, -1] + 2 * x
        return self.unfold_frames(x).cpu(), self.next_proprio(proprio, previous_proprio, actions).cpu()

    # ---- the WorldModel contract --------------------------------------------------------------
    def stack_cameras(self, obs: ObsBatch) -> torch.Tensor:
        missing = [c for c in self.config.cameras if c not in obs.images]
        if missing:
            raise ValueError(f"the world model needs cameras {list(self.config.cameras)}; the observation lacks {missing}")
        images = np.concatenate([obs.images[c] for c in self.config.cameras], axis=-1)
        if images.shape[1] != self.config.image_size:
            raise ValueError(f"the world model predicts {self.config.image_size} px frames; got {images.shape[1]} px")
        return torch.from_numpy(np.ascontiguousarray(images))

    def init_state(self, obs: ObsBatch) -> WMState:
        """Start imagination from real observations (the first frame is repeated as the past)."""
        frames = self.stack_cameras(obs)
        context = frames[:, None].repeat(1, self.config.context_frames, 1, 1, 1)
        proprio = torch.from_numpy(np.asarray(obs.proprio, np.float32))
        return WMState(context, proprio, proprio.clone(), list(obs.instructions))

    def to_obs(self, frames: torch.Tensor, proprio: torch.Tensor, instructions: list[str]) -> ObsBatch:
        images = {}
        for i, camera in enumerate(self.config.cameras):
            images[camera] = frames[..., 3 * i:3 * i + 3].numpy().copy()
        return ObsBatch(images=images, proprio=proprio.numpy().astype(np.float32), instructions=list(instructions))

    def predict(self, state: WMState, actions, steps: int | None = None,
                generator: torch.Generator | None = None) -> tuple[WMState, ObsBatch]:
        """One imagined step of every rollout: actions ``[B, A]``."""
        actions = torch.as_tensor(np.asarray(actions, np.float32))
        frame, proprio = self.sample_next(state.context, state.proprio, state.previous_proprio, actions,
                                          state.instructions, steps, generator)
        context = torch.cat([state.context[:, 1:], frame[:, None]], dim=1)
        new_state = WMState(context, proprio, state.proprio, state.instructions)
        return new_state, self.to_obs(frame, proprio, state.instructions)


__all__ = ["MAX_SAMPLING_STEPS", "WorldModelConfig", "WMState", "VideoWorldModel", "instruction_word_ids"]
