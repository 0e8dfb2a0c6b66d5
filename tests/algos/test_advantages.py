"""The RL maths against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from vla_rl.algos.advantages import (
    AdvantageInputs,
    episode_step_weights,
    gae_advantages,
    get_estimator,
    grpo_advantages,
    informative_groups,
    ppo_clip_loss,
    rloo_advantages,
)


def _inputs(returns, lengths, groups, steps=4):
    rewards = torch.zeros(len(returns), steps, dtype=torch.float64)
    mask = torch.zeros(len(returns), steps, dtype=torch.bool)
    for b, (r, n) in enumerate(zip(returns, lengths)):
        mask[b, :n] = True
        rewards[b, n - 1] = r  # sim success: reward on the last step
    return AdvantageInputs(rewards=rewards, mask=mask, group_ids=torch.tensor(groups))


def test_grpo_group_normalised_and_broadcast_to_episode_end():
    # group 0: returns 1, 0, 0, 1 -> mean 0.5, population std 0.5 -> +-1
    # group 1: returns 1, 0 -> mean 0.5, std 0.5 -> +-1 ; group 2: all equal -> 0
    inputs = _inputs([1, 0, 0, 1, 1, 0, 1, 1], [2, 4, 4, 3, 1, 4, 2, 2], [0, 0, 0, 0, 1, 1, 2, 2])
    adv = grpo_advantages(inputs, eps=0.0)
    expected_per_episode = [1, -1, -1, 1, 1, -1, 0, 0]
    for b, (value, length) in enumerate(zip(expected_per_episode, [2, 4, 4, 3, 1, 4, 2, 2])):
        assert torch.allclose(adv[b, :length], torch.full((length,), float(value), dtype=adv.dtype))
        assert torch.all(adv[b, length:] == 0)  # masked after the episode end


def test_grpo_uneven_group_and_eps():
    # returns 1, 0, 0: mean 1/3, std sqrt(2)/3
    inputs = _inputs([1, 0, 0], [1, 1, 1], [5, 5, 5])
    adv = grpo_advantages(inputs, eps=0.1)[:, 0]
    std = math.sqrt(2) / 3
    assert adv.tolist() == pytest.approx([(2 / 3) / (std + 0.1), (-1 / 3) / (std + 0.1), (-1 / 3) / (std + 0.1)])
    unscaled = grpo_advantages(inputs, scale_by_std=False)[:, 0]
    assert unscaled.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3])


def test_grpo_uniform_group_of_inexact_returns_is_exactly_zero():
    """0.1 three times has a float mean that differs from 0.1 by a rounding error, and a std of the same
    size: without care (eps = 0) that error divided by that std is +-1, a signal from a group that has none."""
    for returns in ([0.1] * 3, [0.7] * 3, [0.1] * 7):
        inputs = _inputs(returns, [1] * len(returns), [0] * len(returns))
        assert grpo_advantages(inputs, eps=0.0)[:, 0].tolist() == [0.0] * len(returns)
    mixed = grpo_advantages(_inputs([0.1, 0.1, 0.7], [1, 1, 1], [0, 0, 0]), eps=0.0)[:, 0]
    assert mixed[2] > 0 > mixed[0]


def test_non_finite_rewards_are_refused():
    rewards = torch.tensor([[float("nan"), 0.0], [1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, False], [True, True]])
    with pytest.raises(ValueError, match="non-finite rewards"):
        AdvantageInputs(rewards=rewards, mask=mask, group_ids=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="non-finite rewards"):
        informative_groups(np.array([1.0, np.inf]), np.array([0, 0]))
    padded = torch.tensor([[1.0, float("nan")], [0.0, 0.0]], dtype=torch.float64)  # NaN only on padding
    inputs = AdvantageInputs(rewards=padded, mask=torch.tensor([[True, False], [True, True]]),
                             group_ids=torch.tensor([0, 0]))
    assert grpo_advantages(inputs)[:, 0].tolist() == pytest.approx([1.0, -1.0], abs=1e-5)


def test_rloo_leave_one_out_baseline():
    inputs = _inputs([1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0])
    # episode 0: 1 - mean(0, 0, 1) = 2/3 ; episode 1: 0 - mean(1, 0, 1) = -2/3
    assert rloo_advantages(inputs)[:, 0].tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(_inputs([1], [1], [0]))


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    values = torch.tensor([[0.5, 0.6, 0.7, 9.0]], dtype=torch.float64)  # padding value must be ignored
    gamma, lam = 0.9, 0.8
    adv = gae_advantages(AdvantageInputs(rewards, mask, torch.zeros(1), values), gamma=gamma, lam=lam)[0]
    d2 = 1.0 - 0.7
    d1 = 0.0 + gamma * 0.7 - 0.6
    d0 = 0.0 + gamma * 0.6 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    assert adv.tolist() == pytest.approx([a0, a1, a2, 0.0])


def test_estimator_registry_lists_valid_names():
    assert get_estimator("grpo") is grpo_advantages
    with pytest.raises(KeyError, match="grpo, rloo, gae"):
        get_estimator("reinforce++")


def test_dynamic_sampling_drops_uniform_groups():
    keep = informative_groups(np.array([1, 1, 0, 0, 1, 0]), np.array([0, 0, 1, 1, 2, 2]))
    assert keep.tolist() == [False, False, False, False, True, True]


def test_ppo_clip_asymmetric_and_token_mean():
    old = torch.zeros(2, 2)
    # ratios: e^0.5 = 1.65 (above 1.28), e^-0.5 = 0.61 (below 0.8), 1.1, 0.9
    new = torch.tensor([[0.5, -0.5], [math.log(1.1), math.log(0.9)]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])  # per step, shared by its tokens
    mask = torch.tensor([[True, True], [True, False]])
    out = ppo_clip_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.28)
    # token terms -min(r A, clip(r) A):
    # (0,0): A=+1, r=1.65 -> min(1.65, 1.28) = 1.28 -> -1.28
    # (0,1): A=+1, r=0.61 -> min(0.61, 0.8) = 0.61 -> -0.61
    # (1,0): A=-1, r=1.1 -> min(-1.1, -1.1) -> +1.1 ; (1,1) masked out
    expected = (-1.28 - math.exp(-0.5) + 1.1) / 3
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert out.clip_fraction == pytest.approx(2 / 3)
    out.loss.backward()
    # the clipped token (0,0) gets no gradient; the masked token none either
    assert new.grad[0, 0] == 0 and new.grad[1, 1] == 0
    assert new.grad[0, 1] != 0 and new.grad[1, 0] != 0


def test_ppo_on_policy_ratio_one_gives_policy_gradient():
    logprob = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    out = ppo_clip_loss(logprob, logprob.detach(), torch.tensor([2.0]), torch.ones(1, 2, dtype=torch.bool))
    out.loss.backward()
    assert out.approx_kl == pytest.approx(0.0) and out.clip_fraction == 0.0
    assert logprob.grad[0].tolist() == pytest.approx([-1.0, -1.0])  # -A / tokens


def test_step_weights_average_within_then_across_episodes():
    # episode 0: one step (a quick success, A = +1); episode 1: three steps (a failure, A = -1); one token each
    mask = np.array([[True, False, False], [True, True, True]])
    weights = episode_step_weights(mask)
    np.testing.assert_allclose(weights, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    e, s = np.nonzero(mask)
    logprob = torch.zeros(4, 1, requires_grad=True)
    adv = torch.tensor([1.0, -1.0, -1.0, -1.0])
    token_mask = torch.ones(4, 1, dtype=torch.bool)
    token_mean = ppo_clip_loss(logprob, logprob.detach(), adv, token_mask)
    episode_mean = ppo_clip_loss(logprob, logprob.detach(), adv, token_mask,
                                 step_weights=torch.from_numpy(weights[e, s]))
    # on-policy the per-token loss is -A: token-mean (-1 + 3) / 4 = 0.5; per episode (-1 + 1) / 2 = 0
    assert float(token_mean.loss.detach()) == pytest.approx(0.5)
    assert float(episode_mean.loss.detach()) == pytest.approx(0.0, abs=1e-6)
    episode_mean.loss.backward()
    assert logprob.grad[:, 0].tolist() == pytest.approx([-0.5, 1 / 6, 1 / 6, 1 / 6])
    assert episode_mean.clip_fraction == token_mean.clip_fraction == 0.0


def test_kl_penalty_k3():
    logprob = torch.tensor([[-1.0]])
    ref = torch.tensor([[-1.5]])
    out = ppo_clip_loss(logprob, logprob, torch.tensor([0.0]), torch.ones(1, 1, dtype=torch.bool),
                        ref_logprob=ref, kl_coef=0.1)
    k3 = math.exp(-0.5) + 0.5 - 1.0
    assert out.ref_kl == pytest.approx(k3)
    assert float(out.loss) == pytest.approx(0.1 * k3)
