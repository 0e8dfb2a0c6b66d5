"""Soft action-bin targets of SFT (``action_label_sigma_bins``), checked against hand-computed values."""

import math

import pytest
import torch

from vla_rl.policy.sft import SFTConfig, soft_bin_targets


def test_zero_sigma_is_one_hot():
    targets = torch.tensor([[0, 5], [255, 128]])
    soft = soft_bin_targets(targets, 256, 0.0)
    assert soft.shape == (2, 2, 256)
    assert torch.equal(soft, torch.nn.functional.one_hot(targets, 256).float())


def test_gaussian_weights_by_hand():
    soft = soft_bin_targets(torch.tensor([3]), 8, 1.0)[0]
    raw = [math.exp(-0.5 * (j - 3) ** 2) for j in range(8)]
    expected = torch.tensor([w / sum(raw) for w in raw])
    torch.testing.assert_close(soft, expected)
    assert soft.argmax() == 3 and soft[2] == soft[4]


def test_edge_bins_are_cut_and_renormalised():
    """A saturated action (the last bin) keeps its mode there: the mass has nowhere to go past it."""
    soft = soft_bin_targets(torch.tensor([7]), 8, 2.0)[0]
    assert soft.sum().item() == pytest.approx(1.0)
    assert soft.argmax() == 7 and torch.all(soft[1:] >= soft[:-1])


def test_negative_sigma_is_rejected():
    with pytest.raises(ValueError, match="action_label_sigma_bins"):
        SFTConfig(action_label_sigma_bins=-1.0)
