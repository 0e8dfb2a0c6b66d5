"""scripts/gradient_snr.py: the cosine arithmetic, and one tiny end-to-end run on a random checkpoint."""

import pytest
import torch

from tests.policy.conftest import make_policy
from tests.scripts.conftest import load_script
from vla_rl.policy.checkpoint import save_checkpoint


def test_pairwise_cosines_whole_and_per_module():
    snr = load_script("gradient_snr")
    first = {"located_embed.0.weight": torch.tensor([1.0, 0.0]), "language_model.model.layers.0.mlp.w": torch.tensor([1.0])}
    same_direction = {"located_embed.0.weight": torch.tensor([2.0, 0.0]), "language_model.model.layers.0.mlp.w": torch.tensor([-1.0])}
    cosines = snr.pairwise_cosines([first, same_direction])
    assert cosines["located_embed"] == pytest.approx(1.0)
    assert cosines["language_model.model.layers.0"] == pytest.approx(-1.0)
    assert cosines["all"] == pytest.approx((2.0 - 1.0) / (2 ** 0.5 * 5 ** 0.5))
    assert snr.module_of("language_model.model.embed_tokens.weight") == "language_model.model"
    assert snr.module_of("proprio_projector.0.bias") == "proprio_projector"


def test_a_tiny_checkpoint_runs_end_to_end(tmp_path):
    policy = make_policy(seed=4)
    checkpoint = save_checkpoint(tmp_path / "ckpt", policy.model, policy.action_tokenizer, {"step": 0})
    result = load_script("gradient_snr").main([str(checkpoint), "--batches", "2", "--groups", "2", "--group-size", "2",
                                               "--max-decisions", "3"])
    assert set(result["cosine"]) == {"token-mean", "episode-mean"}
    assert all(-1.0 <= value <= 1.0 for row in result["cosine"].values() for value in row.values())
    assert len(result["batch_stats"]) == 2 and result["episodes_per_batch"] == 4
