"""OpenVLA's action tokenisation, reproduced exactly so that OpenVLA checkpoints drop in.

Encoding one action dimension ``a``:
1. normalise with the dataset's 1st/99th percentiles (OpenVLA's "BOUNDS_Q99"), unless the
   dimension is masked out (``mask[d] = False``, e.g. the gripper, which is already in [-1, 1]):
   ``a_n = clip(2 * (a - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)``;
2. discretise with ``np.digitize`` against ``n_bins`` uniformly spaced edges on [-1, 1]
   (``linspace(-1, 1, n_bins)``), giving a bin index in ``1..n_bins``;
3. token id = ``vocab_size - bin index``: actions occupy the *last* ``n_bins`` ids of the vocabulary.

Decoding inverts this: ``bin = vocab_size - id``, ``clip(bin - 1, 0, n_bins - 2)`` indexes the
``n_bins - 1`` bin centres, then un-normalise with ``0.5 * (a_n + 1) * (q99 - q01) + q01`` (masked
dimensions are passed through). The round-trip error is at most half a bin width in normalised
units, i.e. ``(q99 - q01) / (n_bins - 1) / 2`` in action units (inside [q01, q99]).

Decoded actions re-encode to the same ids, with one exception (as in OpenVLA): id ``vocab_size - n_bins``
(bin ``n_bins``, reached only by a normalised value of exactly 1) decodes to the last bin centre, which
re-encodes to ``vocab_size - n_bins + 1``. Every other id is a fixed point of ``encode(decode(ids))``.

A normalised dimension whose ``q99 - q01`` is below ``CONSTANT_RANGE_RTOL`` of its magnitude is
constant: it always encodes to id ``vocab_size - 1`` (the bin OpenVLA's formula gives its value q01) and
decodes to q01. Through the formula, float32 rounding of the decoded value divided by ``q99 - q01 + 1e-8``
saturated the clip, and the decoded constant re-encoded to the other end (``vocab_size - n_bins``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

NORMALISATION_EPS = 1e-8  # OpenVLA's guard against q99 == q01
CONSTANT_RANGE_RTOL = 1e-6  # q99 - q01 below this times max(1, |q01|, |q99|): a constant dimension
# What the last action dimension (the gripper) means to the model (VLAConfig.gripper_convention):
# env: the environments' command, -1 open / +1 close (our checkpoints); openvla: OpenVLA's RLDS convention,
# [0, 1] with 1 = open (its LIBERO data is clipped to [0, 1] and flipped, transforms.py)
GRIPPER_CONVENTIONS = ("env", "openvla")


def gripper_to_env(actions: np.ndarray, convention: str) -> np.ndarray:
    """Model actions ``[..., A]`` -> env actions: with ``openvla`` the gripper becomes
    ``-sign(2 g - 1)``, OpenVLA's LIBERO evaluation (``normalize_gripper_action(binarize=True)`` then
    ``invert_gripper_action``): 1 (open) -> -1, 0 (closed) -> +1."""
    _check_convention(convention)
    if convention == "env":
        return actions
    out = _float_copy(actions)
    out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
    return out


def gripper_from_env(actions: np.ndarray, convention: str) -> np.ndarray:
    """Env actions ``[..., A]`` (demos) -> what the model is trained to output: with ``openvla`` the
    gripper becomes ``1 - clip(g, 0, 1)`` as OpenVLA's LIBERO data transform: -1 (open) -> 1, +1 (close) -> 0."""
    _check_convention(convention)
    if convention == "env":
        return actions
    out = _float_copy(actions)
    out[..., -1] = 1.0 - np.clip(out[..., -1], 0.0, 1.0)
    return out


def _float_copy(actions: np.ndarray) -> np.ndarray:
    actions = np.asarray(actions)
    return np.array(actions, dtype=np.result_type(actions.dtype, np.float32), copy=True)  # float32 stays float32


def _check_convention(convention: str) -> None:
    if convention not in GRIPPER_CONVENTIONS:
        raise ValueError(f"unknown gripper convention {convention!r}; choose from {', '.join(GRIPPER_CONVENTIONS)}")


@dataclass(frozen=True)
class NormStats:
    """Per-dimension action statistics: ``q01``, ``q99`` and ``mask`` (True = normalise)."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    @classmethod
    def from_dict(cls, stats: Mapping[str, Any]) -> "NormStats":
        missing = [k for k in ("q01", "q99") if k not in stats]
        if missing:
            raise ValueError(f"action norm stats need q01 and q99; missing {missing}")
        q01 = np.asarray(stats["q01"], dtype=np.float64)
        q99 = np.asarray(stats["q99"], dtype=np.float64)
        mask = np.asarray(stats.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
        if not (q01.shape == q99.shape == mask.shape) or q01.ndim != 1:
            raise ValueError(f"q01 {q01.shape}, q99 {q99.shape} and mask {mask.shape} must be equal 1-D shapes")
        if not (np.all(np.isfinite(q01)) and np.all(np.isfinite(q99))):
            raise ValueError("action norm stats contain NaN or inf")
        if np.any(q99 < q01):
            raise ValueError("action norm stats have q99 < q01 for some dimension")
        return cls(q01, q99, mask)

    @classmethod
    def from_actions(cls, actions: np.ndarray, unnormalised_dims: tuple[int, ...] | None = None) -> "NormStats":
        """Statistics of a dataset of actions ``[N, A]``; ``unnormalised_dims`` are masked out (by default the
        last, the gripper, as in OpenVLA's 7-D actions)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] < 1:
            raise ValueError(f"actions must be [N, A], got shape {actions.shape}")
        mask = np.ones(actions.shape[1], dtype=bool)
        mask[list(unnormalised_dims) if unnormalised_dims is not None else [-1]] = False
        return cls(np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0), mask)

    def to_dict(self) -> dict[str, list]:
        return {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}

    @property
    def action_dim(self) -> int:
        return len(self.q01)


class ActionTokenizer:
    """Continuous actions <-> the last ``n_bins`` token ids of a ``vocab_size`` vocabulary."""

    def __init__(self, vocab_size: int, norm_stats: NormStats | Mapping[str, Any], n_bins: int = 256):
        if n_bins < 2 or n_bins > vocab_size:
            raise ValueError(f"need 2 <= n_bins <= vocab_size, got n_bins={n_bins}, vocab_size={vocab_size}")
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.norm_stats = norm_stats if isinstance(norm_stats, NormStats) else NormStats.from_dict(norm_stats)
        self.bins = np.linspace(-1.0, 1.0, self.n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        stats = self.norm_stats
        scale = np.maximum(1.0, np.maximum(np.abs(stats.q01), np.abs(stats.q99)))
        self.constant = stats.mask & (stats.q99 - stats.q01 < CONSTANT_RANGE_RTOL * scale)

    @property
    def action_dim(self) -> int:
        return self.norm_stats.action_dim

    @property
    def first_token_id(self) -> int:
        """Smallest action token id (bin index n_bins); ids ``first_token_id..vocab_size-1``."""
        return self.vocab_size - self.n_bins

    @property
    def token_ids(self) -> np.ndarray:
        return np.arange(self.first_token_id, self.vocab_size)

    @property
    def bin_width(self) -> float:
        return 2.0 / (self.n_bins - 1)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        stats = self.norm_stats
        scaled = 2.0 * (actions - stats.q01) / (stats.q99 - stats.q01 + NORMALISATION_EPS) - 1.0
        scaled = np.where(self.constant, -1.0, scaled)  # a constant dimension's one value: q01's bin
        return np.where(stats.mask, np.clip(scaled, -1.0, 1.0), actions)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        stats = self.norm_stats
        values = np.where(self.constant, stats.q01, 0.5 * (normalized + 1.0) * (stats.q99 - stats.q01) + stats.q01)
        return np.where(stats.mask, values, normalized)

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """``[..., A]`` float actions -> ``[..., A]`` int64 token ids."""
        actions = np.asarray(actions, dtype=np.float64)
        self._check_dim(actions)
        if not np.all(np.isfinite(actions)):
            raise ValueError("cannot tokenise NaN or inf actions")
        normalized = np.clip(self.normalize(actions), -1.0, 1.0)  # masked dims are clipped too (OpenVLA)
        return (self.vocab_size - np.digitize(normalized, self.bins)).astype(np.int64)

    def decode_normalized(self, token_ids: np.ndarray) -> np.ndarray:
        token_ids = np.asarray(token_ids, dtype=np.int64)
        if np.any((token_ids < self.first_token_id) | (token_ids >= self.vocab_size)):
            raise ValueError(f"token ids must be action tokens in [{self.first_token_id}, {self.vocab_size})")
        bins = np.clip(self.vocab_size - token_ids - 1, 0, self.n_bins - 2)
        return self.bin_centers[bins]

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """``[..., A]`` token ids -> ``[..., A]`` float32 actions (bin centres, un-normalised)."""
        token_ids = np.asarray(token_ids)
        self._check_dim(token_ids)
        return self.unnormalize(self.decode_normalized(token_ids)).astype(np.float32)

    def _check_dim(self, array: np.ndarray) -> None:
        if array.shape[-1] != self.action_dim:
            raise ValueError(f"expected {self.action_dim} action dimensions in the last axis, got {array.shape}")
