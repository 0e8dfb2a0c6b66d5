import numpy as np
import pytest
import torch

from vla_rl.core import ObsBatch
from vla_rl.policy import ActionTokenizer, NormStats
from vla_rl.policy.model import LanguageModelConfig, VisionTowerConfig, VLAConfig, VLAModel
from vla_rl.policy.policy import VLAPolicy

INSTRUCTIONS = ["pick up the red block", "open the drawer that has a purple handle", "press the blue button",
                "put the yellow cube on top of the green cube"]


def tiny_config(**overrides) -> VLAConfig:
    """Smaller than the default tiny VLA so tests stay fast; same architecture."""
    base = dict(
        image_size=32,
        vision_towers=(VisionTowerConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, patch_size=8),),
        language_model=LanguageModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                           intermediate_size=128),
    )
    base.update(overrides)
    return VLAConfig(**base)


def make_policy(config: VLAConfig | None = None, seed: int = 0, temperature: float = 1.0,
                precision: str = "fp32") -> VLAPolicy:
    torch.manual_seed(seed)
    config = config or tiny_config()
    model = VLAModel(config)
    stats = NormStats(np.full(7, -0.5), np.full(7, 0.5), np.array([True] * 6 + [False]))
    return VLAPolicy(model, ActionTokenizer(config.action_vocab_size, stats, config.n_action_bins),
                     temperature=temperature, seed=seed, precision=precision)


def make_obs(batch: int, size: int = 32, seed: int = 0) -> ObsBatch:
    rng = np.random.default_rng(seed)
    return ObsBatch({"agentview": rng.integers(0, 255, (batch, size, size, 3), dtype=np.uint8)},
                    np.zeros((batch, 8), np.float32), [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)])


@pytest.fixture
def policy():
    return make_policy()
