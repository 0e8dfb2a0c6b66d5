"""scripts/diagnose_localiser.py: the point switch and one tiny closed-loop run of a localiser checkpoint."""

import numpy as np
import torch

from tests.policy.conftest import make_policy, tiny_config
from tests.scripts.conftest import load_script
from vla_rl.policy.checkpoint import save_checkpoint


def localiser_policy():
    return make_policy(tiny_config(localiser_points=2, localiser_gripper=True, image_tokens=False,
                                   localiser_channels=8, proprio_dim=8))


def test_the_switch_records_the_localisers_error_and_feeds_the_true_points_on_request():
    diagnose = load_script("diagnose_localiser")
    model = localiser_policy().model
    model.set_proprio_stats(np.zeros(8), np.ones(8))
    switch = diagnose.PointSwitch(model)
    pixels = torch.zeros((1, 32, 32, 3), dtype=torch.uint8)
    switch.truth = np.array([[4.0, 5.0], [40.0, 6.0], [16.0, 16.0]], np.float32)  # the goal is out of view
    images, instructions, proprio = {"agentview": pixels}, ["pick up the red block"], np.zeros((1, 8), np.float32)
    with torch.no_grad():
        own = model.build_prefix(images, instructions, proprio).embeds[:, 1]  # the located token follows BOS
        switch.use_truth = True
        true = model.build_prefix(images, instructions, proprio).embeds[:, 1]
        expected = model.points_token(torch.from_numpy(switch.truth)[None], 32)[:, 0]
    assert len(switch.errors) == 1 and np.isnan(switch.errors[0][1]) and np.all(switch.errors[0][[0, 2]] >= 0)
    torch.testing.assert_close(true, expected)
    assert not torch.allclose(own, true)
    summary = diagnose.error_summary(switch.errors + [np.array([1.0, np.nan, 3.0])], ["object", "goal", "gripper"])
    assert summary["goal"] == {"median": None, "p90": None, "max": None}  # never in view
    assert summary["gripper"]["max"] == max(3.0, float(switch.errors[0][2]))


def test_a_tiny_checkpoint_is_diagnosed_closed_loop(tmp_path):
    policy = localiser_policy()
    policy.model.set_proprio_stats(np.zeros(8), np.ones(8))
    checkpoint = save_checkpoint(tmp_path / "ckpt", policy.model, policy.action_tokenizer, {"step": 0})
    result = load_script("diagnose_localiser").main([str(checkpoint), "--tasks", "Reach", "--episodes", "1"])
    row = result["per_task"]["Reach"]
    assert set(row) == {"own_points", "true_points", "pixel_error"}
    assert set(row["pixel_error"]) == {"object", "goal", "gripper"}
    assert 0.0 <= result["mean_own_points"] <= 1.0 and 0.0 <= result["mean_true_points"] <= 1.0
