import numpy as np
import pytest
import torch

from vla_rl.core import ObsBatch
from vla_rl.policy.model import PROMPT_TEMPLATE, LanguageModelConfig, VLAConfig, VLAModel

from .conftest import make_obs, make_policy, tiny_config


def test_default_tiny_vla_is_a_few_million_parameters():
    model = VLAModel(VLAConfig())
    total = sum(p.numel() for p in model.parameters())
    assert 2e6 < total < 15e6


def test_prompt_is_openvla_format_and_never_uses_action_tokens(policy):
    model = policy.model
    ids = model.prompt_ids(["Pick up the red block."])[0]
    text = model.tokenizer.decode(ids)  # an uncased WordPiece tokenizer: compare lower-case, no spaces
    expected = PROMPT_TEMPLATE.format(instruction="pick up the red block")
    assert text.replace(" ", "") == expected.lower().replace(" ", "").replace("\n", "")
    assert max(ids) < model.config.first_action_token_id


@pytest.mark.parametrize("decoding, chunk, film, attention", [
    ("autoregressive", 1, False, "eager"), ("autoregressive", 2, False, "eager"), ("parallel", 4, False, "eager"),
    ("autoregressive", 1, True, "eager"), ("autoregressive", 2, False, "sdpa")])
def test_act_shapes_and_logprob_matches_teacher_forcing(decoding, chunk, film, attention):
    """Decoding (its own cached layer loop) and teacher forcing (the transformers forward) agree,
    with rows of different prompt lengths, for both attention kernels."""
    # film=True also adds the spatial-softmax keypoint token
    language_model = LanguageModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                         intermediate_size=128, attention=attention)
    policy = make_policy(tiny_config(decoding=decoding, chunk_size=chunk, film=film, keypoints=8 if film else 0,
                                     language_model=language_model), temperature=0.7)
    obs = make_obs(6)
    out = policy.act(obs, explore=True)
    length = 7 * chunk
    assert out.tokens.shape == (6, length) and out.actions.shape == (6, chunk, 7) and out.logprob.shape == (6, length)
    first = policy.config.first_action_token_id
    assert out.tokens.min() >= first and out.tokens.max() < first + 256
    recomputed = policy.log_prob(obs, out.tokens)
    assert torch.allclose(recomputed.token_logprob, out.logprob, atol=1e-4)
    assert recomputed.token_logprob.requires_grad
    assert torch.all(recomputed.entropy > 0) and torch.all(recomputed.entropy <= np.log(256) + 1e-4)


def test_batched_decoding_equals_one_at_a_time():
    """Padding between patches and prompt must not change anything: greedy tokens and log-probs of
    a mixed batch equal those of each sample decoded alone."""
    policy = make_policy()
    obs = make_obs(4)
    batched = policy.act(obs, explore=False)
    for i in range(4):
        single = policy.act(obs.select([i]), explore=False)
        assert torch.equal(single.tokens[0], batched.tokens[i])
        assert torch.allclose(single.logprob[0], batched.logprob[i], atol=1e-4)


def test_film_starts_as_identity_and_conditions_vision_on_the_instruction():
    policy = make_policy(tiny_config(film=True))
    model, obs = policy.model, make_obs(2)
    plain = make_policy(tiny_config())  # same seed: same weights apart from the FiLM layer
    assert torch.equal(model.build_prefix(obs.images, obs.instructions).embeds,
                       plain.model.build_prefix(obs.images, obs.instructions).embeds)
    with torch.no_grad():
        model.film.weight.normal_()
    same_image = {"agentview": obs.images["agentview"][[0, 0]]}
    embeds = model.build_prefix(same_image, ["lift the red block", "lift the blue block"]).embeds
    patches = slice(1, 1 + 16)  # BOS, then 4 x 4 patches
    assert not torch.allclose(embeds[0, patches], embeds[1, patches])  # the instruction changed the patches
    tokens = policy.act(obs, explore=True).tokens
    policy.log_prob(obs, tokens).token_logprob.sum().backward()
    assert model.film.weight.grad.abs().sum() > 0


def test_keypoint_token_is_the_expected_position_of_each_map():
    model = make_policy(tiny_config(keypoints=2)).model
    features = torch.zeros(1, 16, model.vision_backbone.feature_dim)  # a 4 x 4 grid
    features[0, 3, 0] = 1.0  # patch (row 0, col 3): the top-right corner
    with torch.no_grad():
        model.keypoint_logits.weight.zero_()
        model.keypoint_logits.bias.zero_()
        model.keypoint_logits.weight[0, 0] = 100.0  # map 0 attends to feature channel 0
        captured = {}
        model.keypoint_embed[0].register_forward_hook(lambda m, args, out: captured.update(points=args[0]))
        model.keypoint_token(features)
    x0, y0, x1, y1 = captured["points"][0].tolist()
    assert (x0, y0) == pytest.approx((1.0, -1.0), abs=1e-4)  # map 0: the marked corner
    assert (x1, y1) == pytest.approx((0.0, 0.0), abs=1e-6)  # map 1: uniform -> the grid centre


def test_sampling_is_seeded_and_greedy_is_deterministic():
    obs = make_obs(4)
    a = make_policy(seed=1).act(obs, explore=True).tokens
    b = make_policy(seed=1).act(obs, explore=True).tokens
    assert torch.equal(a, b)
    policy = make_policy(seed=2)
    assert torch.equal(policy.act(obs, explore=False).tokens, policy.act(obs, explore=False).tokens)


def test_expected_greedy_decoding_picks_the_bin_of_the_mean():
    """Two equal modes at bins 2 and 12: argmax takes the first, ``expected`` the bin between them;
    the log-prob is that of the chosen bin either way, and sampling ignores the setting."""
    from vla_rl.policy.model import _choose

    logits = torch.full((1, 16), -1e4)
    logits[0, 2] = logits[0, 12] = 0.0
    argmax, argmax_logprob = _choose(logits, 1.0, False, None, first_id=100)
    expected, expected_logprob = _choose(logits, 1.0, False, None, first_id=100, greedy="expected")
    assert argmax.item() == 102 and expected.item() == 107
    assert argmax_logprob.item() == pytest.approx(np.log(0.5)) and expected_logprob.item() < -1e3
    generator = torch.Generator().manual_seed(0)
    sampled, _ = _choose(logits, 1.0, True, generator, first_id=100, greedy="expected")
    assert sampled.item() in (102, 112)
    skewed = torch.full((1, 16), -1e4)
    skewed[0, 0], skewed[0, 15] = np.log(0.8), np.log(0.2)  # mean bin 3; flattened by T=3 it would be 6
    for temperature in (1.0, 3.0):  # greedy evaluation must not depend on the rollout temperature
        assert _choose(skewed, temperature, False, None, first_id=0, greedy="expected")[0].item() == 3
    policy = make_policy(tiny_config(greedy_decoding="expected"))
    assert policy.act(make_obs(2), explore=False).tokens.shape == (2, 7)


def test_greedy_decoding_can_be_switched_for_a_block_and_is_restored():
    policy = make_policy(tiny_config(greedy_decoding="expected"))
    with policy.greedy_decoding_as("argmax"):
        assert policy.config.greedy_decoding == "argmax"
    assert policy.config.greedy_decoding == "expected"
    with pytest.raises(RuntimeError, match="boom"), policy.greedy_decoding_as("argmax"):
        raise RuntimeError("boom")
    assert policy.config.greedy_decoding == "expected"  # restored after an error too
    with policy.greedy_decoding_as(None):
        assert policy.config.greedy_decoding == "expected"
    with pytest.raises(ValueError, match="unknown greedy decoding"), policy.greedy_decoding_as("median"):
        pass


def test_gradients_reach_vision_projector_and_decoder(policy):
    obs = make_obs(2)
    tokens = policy.act(obs, explore=True).tokens
    policy.log_prob(obs, tokens).token_logprob.sum().backward()
    model = policy.model
    for module in (model.vision_backbone, model.projector, model.language_model):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)


def test_fused_dino_siglip_backbone_runs():
    from vla_rl.policy.model import VisionTowerConfig

    towers = (VisionTowerConfig(kind="dinov2", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                patch_size=8, num_register_tokens=4, hidden_act="gelu"),
              VisionTowerConfig(hidden_size=48, num_layers=1, num_heads=2, intermediate_size=64, patch_size=8))
    policy = make_policy(tiny_config(vision_towers=towers, projector="fused-gelu-mlp"))
    assert policy.model.vision_backbone.feature_dim == 80
    out = policy.act(make_obs(2), explore=False)
    assert out.actions.shape == (2, 1, 7)


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="fused projector"):
        tiny_config(projector="fused-gelu-mlp")
    with pytest.raises(ValueError, match="multiple of its patch size"):
        tiny_config(image_size=30)
    with pytest.raises(KeyError, match="camera"):
        make_policy(tiny_config(cameras=("wrist",))).act(make_obs(1), explore=False)
    with pytest.raises(ValueError, match="each once"):
        tiny_config(cameras=("agentview", "agentview"))


def test_bf16_decoding_runs_in_bf16_and_its_logprobs_stay_close_to_fp32():
    obs = make_obs(6)
    policy = make_policy(seed=4, precision="bf16")
    seen = []
    policy.model.language_model.model.layers[0].mlp.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    out = policy.act(obs, explore=True)
    assert seen and set(seen) == {torch.bfloat16}
    assert out.logprob.dtype == torch.float32 and torch.isfinite(out.logprob).all()
    fp32 = make_policy(seed=4).log_prob(obs, out.tokens).token_logprob.detach()
    gap = (fp32 - out.logprob).abs().max()
    assert 0 < gap < 0.1  # bf16 rounding: visible, small against a log-prob of about -5.5 (256 bins)
    with pytest.raises(ValueError, match="precision"):
        make_policy(precision="fp16")


def test_proprio_token_is_standardised_required_and_saved_with_the_weights(tmp_path):
    from vla_rl.policy.checkpoint import load_checkpoint, save_checkpoint

    policy = make_policy(tiny_config(proprio_dim=8, cameras=("agentview", "wrist")))
    model = policy.model
    model.set_proprio_stats(np.arange(8, dtype=np.float32), np.full(8, 0.1, np.float32))
    obs = make_obs(2)
    obs.images["wrist"] = obs.images["agentview"][:, ::-1].copy()
    obs.proprio[:] = np.arange(8, dtype=np.float32)
    prefix = model.build_prefix(obs.images, obs.instructions, obs.proprio)
    patches = 2 * (32 // 8) ** 2
    assert prefix.embeds.shape[1] == 1 + patches + 1 + max(len(ids) for ids in model.prompt_ids(obs.instructions))
    # the proprio token follows the patches; at the mean it is the MLP of a zero vector
    expected = model.proprio_projector(torch.zeros(1, 8))
    torch.testing.assert_close(prefix.embeds[0, 1 + patches], expected[0])
    moved = ObsBatch(obs.images, obs.proprio + np.eye(8, dtype=np.float32)[:2], obs.instructions)
    base = policy.log_prob(obs, policy.act(obs, explore=False).tokens).token_logprob
    assert not torch.allclose(base, policy.log_prob(moved, policy.act(obs, explore=False).tokens).token_logprob)
    with pytest.raises(ValueError, match="proprio"):
        model.build_prefix(obs.images, obs.instructions)
    with pytest.raises(ValueError, match="NaN"):
        model.build_prefix(obs.images, obs.instructions, np.full((2, 8), np.nan, np.float32))
    with pytest.raises(KeyError, match="wrist"):
        model.build_prefix({"agentview": obs.images["agentview"]}, obs.instructions, obs.proprio)
    path = save_checkpoint(tmp_path / "ckpt", model, policy.action_tokenizer)
    loaded, _, _ = load_checkpoint(path)
    torch.testing.assert_close(loaded.proprio_mean, torch.arange(8, dtype=torch.float32))
    torch.testing.assert_close(loaded.proprio_std, torch.full((8,), 0.1))


def test_a_localiser_model_sees_only_its_points_and_the_action_loss_leaves_the_localiser_alone(tmp_path):
    from vla_rl.policy.checkpoint import load_checkpoint, save_checkpoint

    policy = make_policy(tiny_config(localiser_points=2, image_tokens=False, localiser_channels=8))
    model, obs = policy.model, make_obs(3)
    prefix = model.build_prefix(obs.images, obs.instructions)
    assert prefix.located_logits.shape == (3, 2, 32 * 32)
    # BOS, the located token, the prompt: no patch tokens
    assert prefix.embeds.shape[1] == 1 + 1 + max(len(ids) for ids in model.prompt_ids(obs.instructions))
    tokens = policy.act(obs, explore=True).tokens
    step = policy.log_prob(obs, tokens)
    model.zero_grad()
    step.token_logprob.sum().backward()
    assert all(p.grad is None for p in model.localiser.parameters())  # the action loss stops at the points
    assert model.located_embed[0].weight.grad is not None
    # SFT's input noise moves the located token, not the maps; without it the prefix is deterministic
    torch.manual_seed(0)
    noisy = model.build_prefix(obs.images, obs.instructions, located_noise=1.0)
    torch.testing.assert_close(noisy.located_logits, prefix.located_logits)
    assert not torch.allclose(noisy.embeds[:, 1], prefix.embeds[:, 1])
    torch.testing.assert_close(model.build_prefix(obs.images, obs.instructions).embeds, prefix.embeds)
    # the instruction chooses what is located: other words, other maps
    other = model.build_prefix(obs.images, ["open the green drawer"] * 3)
    assert not torch.allclose(prefix.located_logits, other.located_logits)
    loaded, _, _ = load_checkpoint(save_checkpoint(tmp_path / "ckpt", model, policy.action_tokenizer))
    torch.testing.assert_close(loaded.build_prefix(obs.images, obs.instructions).located_logits, prefix.located_logits)
    with pytest.raises(ValueError, match="blind"):
        tiny_config(image_tokens=False)


def test_a_gripper_point_adds_one_map_and_the_named_points_offsets_from_it():
    policy = make_policy(tiny_config(localiser_points=2, localiser_gripper=True, image_tokens=False,
                                     localiser_channels=8))
    model, obs = policy.model, make_obs(3)
    prefix = model.build_prefix(obs.images, obs.instructions)
    assert prefix.located_logits.shape == (3, 3, 32 * 32)  # object, goal, gripper
    assert model.located_embed[0].in_features == 2 * 3 + 2 * 2  # the 3 points and 2 offsets
    assert policy.act(obs, explore=False).tokens.shape == (3, 7)
    with pytest.raises(ValueError, match="localiser_gripper needs"):
        tiny_config(localiser_gripper=True)
