"""A resumed LoRA run gets back exactly the frozen base it trained on.

Checkpoints hold the adapters merged into the base (plain weights any loader reads). Rebuilding the base as
merged - B A * scale is exact only up to rounding, so a resumed run drifted from the uninterrupted one in the last
bits; the base is taken from the checkpoint the run started from instead."""

import torch

from tests.policy.conftest import make_policy
from vla_rl.policy.checkpoint import load_checkpoint, save_checkpoint
from vla_rl.policy.lora import LoRAConfig, apply_lora, lora_base_weights, lora_tensors, merged_state_dict, restore_lora

LORA = LoRAConfig(rank=4)


def trained_adapters(model) -> None:
    """Adapters as after some training: B is no longer zero (a fresh B would make the merge a no-op)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def base_of(model) -> dict[str, torch.Tensor]:
    return {name.replace(".base_layer.", "."): tensor.clone() for name, tensor in model.state_dict().items()
            if ".base_layer.weight" in name}


def test_restore_lora_takes_the_base_from_the_starting_checkpoint_bit_for_bit(tmp_path, capsys):
    policy = make_policy()
    start = save_checkpoint(tmp_path / "start", policy.model, policy.action_tokenizer)
    apply_lora(policy.model, LORA)
    trained_adapters(policy.model)
    base, adapters = base_of(policy.model), lora_tensors(policy.model)
    resumed_from = save_checkpoint(tmp_path / "iter", policy.model, policy.action_tokenizer,
                                   weights=merged_state_dict(policy.model))

    def restored(base_weights):
        model, _, _ = load_checkpoint(resumed_from)
        weights = base_weights(model) if callable(base_weights) else base_weights
        restore_lora(model, LORA, adapters, weights)
        return base_of(model)

    assert set(restored(None)) == set(base)
    subtracted = restored(None)  # what resumes did before: a few weights off by an ulp or so
    assert not all(torch.equal(subtracted[name], base[name]) for name in base)
    exact = restored(lambda model: lora_base_weights(start, model, LORA))
    assert all(torch.equal(exact[name], base[name]) for name in base)
    assert "not this run's LoRA base" not in capsys.readouterr().out
    # another starting checkpoint (a run directory that has moved on, say) is not silently used as the base
    other = make_policy(seed=7)
    other_start = save_checkpoint(tmp_path / "other", other.model, other.action_tokenizer)
    fallback = restored(lambda model: lora_base_weights(other_start, model, LORA))
    assert "not this run's LoRA base" in capsys.readouterr().out
    assert all(torch.equal(fallback[name], subtracted[name]) for name in base)
    gone = restored(lambda model: lora_base_weights(tmp_path / "deleted", model, LORA))
    assert "is not readable" in capsys.readouterr().out
    assert all(torch.equal(gone[name], subtracted[name]) for name in base)


def test_a_resumed_rl_learner_has_the_uninterrupted_learners_weights(tmp_path):
    """The learner of a resumed GRPO run (its adapters from the training state, its base from the run's starting
    checkpoint, which it also keeps as the KL reference) holds exactly the weights of the learner it replaces."""
    from vla_rl.policy.policy import VLAPolicy
    from vla_rl.train.learner import AlgorithmConfig, LearnerConfig, PolicyLearner

    policy = make_policy()
    start = save_checkpoint(tmp_path / "sft", policy.model, policy.action_tokenizer)
    config = LearnerConfig(lora=LORA)
    running = PolicyLearner(policy, AlgorithmConfig(), config, seed=0, reference_checkpoint=start)
    trained_adapters(policy.model)
    checkpoint = save_checkpoint(tmp_path / "iter", policy.model, policy.action_tokenizer, weights=running.weights())
    model, tokenizer, _ = load_checkpoint(checkpoint)
    resumed = PolicyLearner(VLAPolicy(model, tokenizer), AlgorithmConfig(), config, seed=0,
                            reference_checkpoint=start, state=running.state_dict())
    assert all(torch.equal(base_of(model)[name], tensor) for name, tensor in base_of(policy.model).items())
    before, after = running.weights(), resumed.weights()
    assert all(torch.equal(before[name], after[name]) for name in before)
