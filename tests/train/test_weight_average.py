"""The weight average (``weights_ema``): its arithmetic, and a GRPO run that evaluates and saves it,
keeps training the current weights and resumes both."""

import json

import pytest
import torch

from tests.train.test_trainer import _train_config, tiny_checkpoint  # noqa: F401 (a fixture)
from vla_rl.cli.factories import eval_state_counter, make_pool
from vla_rl.cli.main import main
from vla_rl.policy.checkpoint import load_checkpoint
from vla_rl.policy.lora import LoRAConfig
from vla_rl.train.learner import AlgorithmConfig, LearnerConfig
from vla_rl.train.trainer import Trainer
from vla_rl.train.weight_average import WeightAverage, load_last_update_weights


def test_average_moves_by_one_minus_decay_and_leaves_unchanged_weights_exact():
    frozen = torch.randn(5)
    average = WeightAverage({"w": torch.zeros(3), "frozen": frozen, "count": torch.tensor(1)}, decay=0.75)
    average.update({"w": torch.ones(3), "frozen": frozen.clone(), "count": torch.tensor(2)}, iteration=1)
    assert torch.allclose(average.weights["w"], torch.full((3,), 0.25))  # 0 + 0.25 * (1 - 0)
    average.update({"w": torch.ones(3), "frozen": frozen.clone(), "count": torch.tensor(3)}, iteration=2)
    assert torch.allclose(average.weights["w"], torch.full((3,), 0.4375))  # 0.25 + 0.25 * 0.75
    assert torch.equal(average.weights["frozen"], frozen) and average.weights["count"].item() == 3
    average.update({"w": torch.full((3,), 9.0), "frozen": frozen, "count": torch.tensor(4)}, iteration=2)
    assert torch.allclose(average.weights["w"], torch.full((3,), 0.4375))  # an iteration already folded in
    assert set(average.differing({"w": torch.ones(3), "frozen": frozen, "count": torch.tensor(3)})) == {"w"}
    with pytest.raises(ValueError, match="decay"):
        WeightAverage({}, decay=1.0)


def test_trainer_evaluates_and_saves_the_average_and_resumes_the_current_weights(tmp_path, tiny_checkpoint):  # noqa: F811
    decay = 0.5
    lora = LearnerConfig(lora=LoRAConfig(rank=4))  # resuming un-merges the adapters from the training weights
    # the untrained policy fails every episode (zero advantages): the entropy bonus makes the updates move it
    moving = AlgorithmConfig(dynamic_sampling=False, minibatch_size=64, entropy_coef=0.1, lr=1e-3)
    config = _train_config(tmp_path, tiny_checkpoint, iterations=2, weights_ema=decay, learner=lora, algorithm=moving)
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed)
    try:
        summary = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False).run()
        resumed = Trainer(_train_config(tmp_path, tiny_checkpoint, iterations=3, weights_ema=decay, learner=lora,
                                        algorithm=moving),
                          pool, eval_state_counter("tabletop"), resume=True, show_progress=False)
        resumed_weights = resumed.learner.weights()
    finally:
        pool.close()
    history = summary["eval_history"]
    assert [row["weights"] for row in history] == ["current", f"ema {decay}", f"ema {decay}"]
    assert "current_weights" not in history[0] and history[2]["current_weights"]["per_task"]["Reach"]["episodes"] == 2

    initial = load_checkpoint(tiny_checkpoint)[0].state_dict()
    first_model, _, first_state = load_checkpoint(tmp_path / "rl" / "iter_000001", with_training_state=True)
    saved = first_state["rl"]["weights_average"]
    trained = saved["training_weights"]
    assert saved["iteration"] == 1 and trained  # the update moved the decoder (adapters merged) and more
    first = first_model.state_dict()
    for key, value in trained.items():  # after one update the average is halfway from the start
        assert torch.allclose(first[key], initial[key].lerp(value, 1 - decay), atol=1e-6), key
        assert not torch.equal(first[key], value)
    for key in set(first) - set(trained):  # what training did not move is saved as it was
        assert torch.equal(first[key], initial[key]), key

    last_model, _, last_state = load_checkpoint(tmp_path / "rl" / "iter_000002", with_training_state=True)
    for key, value in last_state["rl"]["weights_average"]["training_weights"].items():  # training resumes
        assert torch.allclose(resumed_weights[key], value, atol=1e-5), key          # from these, not the average
    assert resumed.average.iteration == 2
    for key, value in last_model.state_dict().items():
        assert torch.equal(resumed.average.weights[key], value), key

    # `vla-rl eval --last-update-weights` evaluates those training weights, not the average the checkpoint holds
    load_last_update_weights(last_model, tmp_path / "rl" / "iter_000002")
    restored = last_model.state_dict()
    for key, value in last_state["rl"]["weights_average"]["training_weights"].items():
        assert torch.equal(restored[key], value), key
    with pytest.raises(ValueError, match="holds no weight average"):
        load_last_update_weights(load_checkpoint(tiny_checkpoint)[0], tiny_checkpoint)
    out = tmp_path / "eval_last"
    assert main(["eval", "--checkpoint", str(tmp_path / "rl" / "iter_000002"), "--last-update-weights",
                 "--tasks", "Reach", "--episodes-per-task", "1", "--num-envs", "1", "--workers", "0", "--videos", "0",
                 "--out", str(out)]) == 0
    assert json.loads((out / "eval.json").read_text())["weights"] == "last update"


def test_weights_ema_refuses_bad_decays(tmp_path, tiny_checkpoint):  # noqa: F811
    with pytest.raises(ValueError, match="weights_ema"):
        _train_config(tmp_path, tiny_checkpoint, weights_ema=1.0)
    with pytest.raises(ValueError, match="num_learners"):
        _train_config(tmp_path, tiny_checkpoint, weights_ema=0.9, learner=LearnerConfig(num_learners=2))
