"""scripts/eval_modes.py: every mode runs the same held-out states, and "within N" never exceeds the total."""

from tests.policy.conftest import make_policy
from tests.scripts.conftest import load_script
from vla_rl.policy.checkpoint import save_checkpoint


def test_a_tiny_checkpoint_is_evaluated_under_each_mode(tmp_path):
    policy = make_policy()
    checkpoint = save_checkpoint(tmp_path / "ckpt", policy.model, policy.action_tokenizer, {"step": 0})
    rows = load_script("eval_modes").main([str(checkpoint), "--tasks", "Reach", "--episodes", "2", "--num-envs", "2",
                                           "--within", "3", "--out", str(tmp_path / "modes.json")])
    assert [row["mode"] for row in rows] == ["expected", "argmax", "sample"]
    for row in rows:
        assert 0.0 <= row["Reach_within_3"] <= row["Reach"] <= 1.0 and row["mean"] == row["Reach"]
    assert (tmp_path / "modes.json").is_file()
