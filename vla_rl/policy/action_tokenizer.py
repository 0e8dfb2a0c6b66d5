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

Dimensions that do not vary follow OpenVLA when the statistics carry the data's ``min`` and ``max``
(OpenVLA's statistics do, and so does ``NormStats.from_actions``): OpenVLA's ``normalize_action_and_proprio``
sets a dimension with ``min == max`` (exactly equal, masked or not) to 0.0 after normalising, so every
value of it encodes to the id of 0.0 (``vocab_size - 128`` with 256 bins). Any other
dimension goes through the formula, however small ``q99 - q01``: with ``q01 == q99 < max`` a value at or
below q01 gets ``vocab_size - 1`` and one above q99 ``vocab_size - n_bins``.

Statistics without ``min``/``max`` (our checkpoints saved before they were kept) keep this project's
earlier rule, so those checkpoints tokenise as they were trained: a normalised dimension whose
``q99 - q01`` is below ``CONSTANT_RANGE_RTOL`` of its magnitude encodes to id ``vocab_size - 1``, the
id of normalised value -1 (our choice; OpenVLA would give ``min == max`` dimensions ``vocab_size - 128``).

Decoding is the same for both: such a tiny-range normalised dimension decodes to q01 (OpenVLA's
formula gives q01 up to a fraction of ``q99 - q01``). Through the formula, float32 rounding of the
decoded value divided by ``q99 - q01 + 1e-8`` could saturate the clip and re-encode it at the other end.

Inputs are checked: ``encode`` and ``decode`` need at least one axis (the action dimension; a 0-d
array is refused rather than guessed at), token ids must be whole numbers (integer arrays, or floats
without a fractional part), and a ``mask`` must be booleans.
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
    """Per-dimension action statistics: ``q01``, ``q99`` and ``mask`` (True = normalise), and the data's
    ``min`` and ``max`` when known (``None`` in statistics saved before they were kept: see the module
    docstring for what each case encodes)."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray
    min: np.ndarray | None = None
    max: np.ndarray | None = None

    @classmethod
    def from_dict(cls, stats: Mapping[str, Any]) -> "NormStats":
        missing = [k for k in ("q01", "q99") if k not in stats]
        if missing:
            raise ValueError(f"action norm stats need q01 and q99; missing {missing}")
        q01 = np.asarray(stats["q01"], dtype=np.float64)
        q99 = np.asarray(stats["q99"], dtype=np.float64)
        mask = _boolean_mask(stats["mask"]) if "mask" in stats else np.ones_like(q01, dtype=bool)
        bounds = [key for key in ("min", "max") if key in stats]
        if len(bounds) == 1:
            raise ValueError(f"action norm stats have {bounds[0]!r} without {({'min', 'max'} - set(bounds)).pop()!r}: "
                             "give both or neither")
        low = np.asarray(stats["min"], dtype=np.float64) if bounds else None
        high = np.asarray(stats["max"], dtype=np.float64) if bounds else None
        shapes = {"q01": q01.shape, "q99": q99.shape, "mask": mask.shape,
                  **({"min": low.shape, "max": high.shape} if bounds else {})}
        if len(set(shapes.values())) != 1 or q01.ndim != 1:
            raise ValueError(f"{', '.join(f'{k} {v}' for k, v in shapes.items())} must be equal 1-D shapes")
        if not all(np.all(np.isfinite(v)) for v in (q01, q99, *((low, high) if bounds else ()))):
            raise ValueError("action norm stats contain NaN or inf")
        if np.any(q99 < q01):
            raise ValueError("action norm stats have q99 < q01 for some dimension")
        if bounds and np.any(high < low):
            raise ValueError("action norm stats have max < min for some dimension")
        return cls(q01, q99, mask, low, high)

    @classmethod
    def from_actions(cls, actions: np.ndarray, unnormalised_dims: tuple[int, ...] | None = None) -> "NormStats":
        """Statistics of a dataset of actions ``[N, A]``; ``unnormalised_dims`` are masked out (by default the
        last, the gripper, as in OpenVLA's 7-D actions). Like OpenVLA's, they include min and max."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] < 1 or actions.shape[0] < 1:
            raise ValueError(f"actions must be [N, A] with N, A >= 1, got shape {actions.shape}")
        mask = np.ones(actions.shape[1], dtype=bool)
        mask[list(unnormalised_dims) if unnormalised_dims is not None else [-1]] = False
        return cls(np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0), mask,
                   actions.min(axis=0), actions.max(axis=0))

    def to_dict(self) -> dict[str, list]:
        stats = {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}
        if self.min is not None:
            stats.update(min=self.min.tolist(), max=self.max.tolist())
        return stats

    @property
    def action_dim(self) -> int:
        return len(self.q01)


def _boolean_mask(value: Any) -> np.ndarray:
    """A mask from JSON or numpy: true/false only. ``np.asarray(["false"], bool)`` is True and 0/1 may
    be a misread index list, so anything but booleans is refused."""
    mask = np.asarray(value)
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must hold booleans (true/false), got {value!r}")
    return mask


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
        # decoded as q01; also encoded as q01's id when the statistics have no min/max (the earlier rule)
        self.constant = stats.mask & (stats.q99 - stats.q01 < CONSTANT_RANGE_RTOL * scale)
        # OpenVLA's unused dimensions, normalised to 0.0; None without min/max
        self.unused = None if stats.min is None else stats.min == stats.max

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
        if self.unused is None:  # statistics saved without min/max keep the ids they were trained on
            scaled = np.where(self.constant, -1.0, scaled)
        normalized = np.where(stats.mask, np.clip(scaled, -1.0, 1.0), actions)
        if self.unused is not None:  # OpenVLA zeroes min == max dimensions after normalising, masked or not
            normalized = np.where(self.unused, 0.0, normalized)
        return normalized

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
        token_ids = _whole_ids(token_ids)
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
        if array.ndim == 0:
            raise ValueError(f"expected an array [..., {self.action_dim}] with the action dimensions in the last axis, "
                             f"got the scalar {array!r}")
        if array.shape[-1] != self.action_dim:
            raise ValueError(f"expected {self.action_dim} action dimensions in the last axis, got {array.shape}")


def _whole_ids(token_ids: Any) -> np.ndarray:
    """Token ids as int64, refusing values a cast would truncate (31999.9 is not id 31999)."""
    ids = np.asarray(token_ids)
    if ids.dtype.kind in "iu":
        return ids.astype(np.int64)
    if ids.dtype.kind == "f" and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids)):
        return ids.astype(np.int64)
    wrong = ids[~np.isfinite(ids) | (ids != np.round(ids))] if ids.dtype.kind == "f" else ids
    raise ValueError(f"token ids must be whole numbers, got dtype {ids.dtype} with values such as "
                     f"{np.ravel(wrong)[:3].tolist()}")
