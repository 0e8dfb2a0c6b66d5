"""The MobileNetV2 vision tower: ImageNet weights mapped onto transformers modules, frozen BatchNorm
statistics, checkpoints that load without the weights package."""

import numpy as np
import pytest
import torch

from tests.policy.conftest import INSTRUCTIONS, make_obs
from vla_rl.policy import ActionTokenizer, NormStats
from vla_rl.policy.checkpoint import load_checkpoint, save_checkpoint
from vla_rl.policy.mobilenet import MobileNetTower, builtin_weights_path, stage_channels
from vla_rl.policy.model import LanguageModelConfig, VisionTowerConfig, VLAConfig, VLAModel
from vla_rl.policy.policy import VLAPolicy


def _config(pretrained="builtin:imagenet", stage=6):
    return VLAConfig(image_size=32, vision_towers=(VisionTowerConfig(kind="mobilenetv2", pretrained=pretrained,
                                                                     feature_stage=stage),),
                     language_model=LanguageModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                                        intermediate_size=128))


def test_imagenet_weights_map_onto_every_tensor_of_the_tower():
    tower = MobileNetTower(feature_stage=13)
    tower.load_torchvision_weights("builtin:imagenet")
    source = torch.load(builtin_weights_path(), map_location="cpu", weights_only=True)
    # first conv and the last kept block's projection are the same tensors as torchvision's
    assert torch.equal(tower.conv_stem.first_conv.convolution.weight, source["features.0.0.weight"])
    assert torch.equal(tower.layer[-1].reduce_1x1.convolution.weight, source["features.13.conv.2.weight"])
    assert torch.equal(tower.layer[-1].reduce_1x1.normalization.running_var, source["features.13.conv.3.running_var"])


def test_bad_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "not_mobilenet.pth"
    torch.save({"features.0.0.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a torchvision MobileNetV2"):
        MobileNetTower(6).load_torchvision_weights(path)
    with pytest.raises(FileNotFoundError):
        MobileNetTower(6).load_torchvision_weights(tmp_path / "missing.pth")


def test_patch_grid_and_channels():
    model = VLAModel(_config(stage=6))  # stride 8 on 32 px -> 4 x 4 patches of 32 channels + 16 position codes
    features = model.vision_backbone(torch.from_numpy(make_obs(2).images["agentview"]))
    assert features.shape == (2, 16, stage_channels(6) + 16)
    # the position codes tell patches apart by row and column, whatever the image shows
    codes = features[0, :, stage_channels(6):]
    assert torch.equal(codes, features[1, :, stage_channels(6):]) and len(torch.unique(codes, dim=0)) == 16
    with pytest.raises(ValueError, match="feature_stage"):
        VisionTowerConfig(kind="mobilenetv2", feature_stage=99).output_dim


def test_batchnorm_uses_stored_statistics_in_training_mode():
    policy = VLAPolicy(VLAModel(_config()), ActionTokenizer(30522, NormStats(np.full(7, -1.0), np.full(7, 1.0), np.array([True] * 6 + [False]))))
    obs = make_obs(4)
    output = policy.act(obs, explore=True)
    policy.model.train()  # log_prob runs in training mode: BatchNorm must not switch to batch statistics
    recomputed = policy.log_prob(obs, output.tokens).token_logprob
    assert torch.allclose(recomputed, output.logprob, atol=1e-4)
    assert all(not m.training for m in policy.model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_checkpoint_keeps_trained_tower_weights(tmp_path):
    model = VLAModel(_config())
    with torch.no_grad():
        model.vision_backbone.towers[0].conv_stem.first_conv.convolution.weight.add_(1.0)  # "trained"
    tokenizer = ActionTokenizer(30522, NormStats(np.full(7, -1.0), np.full(7, 1.0), np.array([True] * 6 + [False])))
    path = save_checkpoint(tmp_path / "ckpt", model, tokenizer)
    loaded, _, _ = load_checkpoint(path)
    assert torch.equal(loaded.vision_backbone.towers[0].conv_stem.first_conv.convolution.weight,
                       model.vision_backbone.towers[0].conv_stem.first_conv.convolution.weight)
    images = torch.from_numpy(make_obs(2).images["agentview"])
    model.eval(), loaded.eval()
    with torch.no_grad():
        a = model.build_prefix({"agentview": images}, INSTRUCTIONS[:2]).embeds
        b = loaded.build_prefix({"agentview": images}, INSTRUCTIONS[:2]).embeds
    assert torch.allclose(a, b)
