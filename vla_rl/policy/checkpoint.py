"""Policy checkpoints: one directory per save, written atomically, verified on load.

    <dir>/model.safetensors       weights
    <dir>/vla_config.json         the VLAConfig (typed config; reloaded through the config system)
    <dir>/norm_stats.json         action normalisation statistics (q01, q99, mask; min and max since 2026-12-07)
    <dir>/tokenizer*/vocab files  the text tokenizer, so the checkpoint loads with no other files
    <dir>/training_state.pt       optimiser, scheduler, RNG states and step (training checkpoints)
    <dir>/manifest.json           sha256 of every file above; a mismatch means a corrupt checkpoint

A save goes to ``<dir>.tmp-<pid>`` and is renamed into place, so a crash never leaves a half
written checkpoint under the final name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from vla_rl.core.checkpoint_dir import (LATEST, MANIFEST, CorruptCheckpointError, commit_checkpoint_dir,
                                        latest_valid_checkpoint, point_latest, resolve_checkpoint, staging_dir,
                                        verify_checkpoint)
from vla_rl.core.config import from_dict, to_dict
from vla_rl.policy.action_tokenizer import ActionTokenizer, NormStats
from vla_rl.policy.model import VLAConfig, VLAModel

def save_checkpoint(directory: Path, model: VLAModel, action_tokenizer: ActionTokenizer,
                    training_state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint; ``weights`` replaces ``model.state_dict()`` (e.g. LoRA-merged weights)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = staging_dir(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in (weights or model.state_dict()).items()}
    if model.config.language_model.tie_word_embeddings:
        state.pop("language_model.lm_head.weight", None)  # shared with the embeddings
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "vla_config.json").write_text(json.dumps(to_dict(model.config), indent=1))
    (tmp / "norm_stats.json").write_text(json.dumps(
        {"action": action_tokenizer.norm_stats.to_dict(), "n_bins": action_tokenizer.n_bins,
         "vocab_size": action_tokenizer.vocab_size, **(extra or {})}, indent=1))
    model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    if training_state is not None:
        torch.save(training_state, tmp / "training_state.pt")
    return commit_checkpoint_dir(tmp, directory)


# Fields added to the model config after checkpoints were written with it: their value in those
# older checkpoints (a later default must not change what an old checkpoint means).
LEGACY_TOWER_DEFAULTS = {"position_channels": 0}


def read_checkpoint_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file (``vla_config.json``, ``norm_stats.json``) as a mapping; a file that does not
    parse is a ``CorruptCheckpointError`` naming it (its manifest may match: written corrupt, or rewritten)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(f"{path} is not valid JSON ({error}): the checkpoint is corrupt") from None
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path} does not hold a JSON mapping: the checkpoint is corrupt")
    return data


def read_vla_config(path: Path) -> VLAConfig:
    raw = read_checkpoint_json(path)
    for tower in raw.get("vision_towers", []):
        for key, value in LEGACY_TOWER_DEFAULTS.items():
            tower.setdefault(key, value)
    return from_dict(VLAConfig, raw)


def model_config_differences(directory: Path, wanted: VLAConfig) -> list[str]:
    """The top-level keys in which a checkpoint's model config differs from ``wanted`` (empty: the
    same model): a run that resumes or reuses a checkpoint must not silently ignore a changed model.
    ``tokenizer`` is where the tokenizer was read from, which a checkpoint loaded and saved again moves
    to its own copy, so it is not compared."""
    saved, asked = to_dict(read_vla_config(Path(directory) / "vla_config.json")), to_dict(wanted)
    return sorted(key for key in (saved.keys() | asked.keys()) - {"tokenizer"} if saved.get(key) != asked.get(key))


def read_training_state(directory: Path) -> dict[str, Any] | None:
    """The optimiser, scheduler, RNG and run state a training checkpoint holds (None if it holds none)."""
    path = Path(directory) / "training_state.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else None


def read_weights(directory: Path, names: set[str]) -> dict[str, torch.Tensor]:
    """The weights ``names`` of a checkpoint (those it holds; the file verified against its manifest), read
    one by one: a resumed LoRA run needs its decoder's frozen base, not a second copy of the whole model."""
    from safetensors import SafetensorError, safe_open

    directory = Path(directory)
    verify_checkpoint(directory)
    try:
        with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
            return {name: weights.get_tensor(name) for name in names & set(weights.keys())}
    except (SafetensorError, OSError) as error:
        raise CorruptCheckpointError(f"{directory / 'model.safetensors'} is unreadable ({error})") from None


def load_checkpoint(directory: Path, device: str | torch.device = "cpu", verify: bool = True,
                    with_training_state: bool = False) -> tuple[VLAModel, ActionTokenizer, dict[str, Any] | None]:
    """Model, action tokenizer and, with ``with_training_state`` (to resume a run), the training state of
    a checkpoint directory (None otherwise, or if it holds none). The training state is read only when
    asked: it holds the optimiser's moments, twice the weights' size, which a 7B policy loaded to act
    or to evaluate should not pay for."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if verify:
        verify_checkpoint(directory)
    config = read_vla_config(directory / "vla_config.json")
    config = dataclasses.replace(config, tokenizer=str(directory / "tokenizer"))
    model = VLAModel(config, load_pretrained=False)
    try:
        state = load_file(str(directory / "model.safetensors"))
    except (SafetensorError, OSError) as error:
        raise CorruptCheckpointError(f"{directory / 'model.safetensors'} is unreadable ({error}): the checkpoint "
                                     "is corrupt") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {"language_model.lm_head.weight"} if config.language_model.tie_word_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise CorruptCheckpointError(f"{directory}: weights do not fit the config (missing {sorted(missing)[:5]}, "
                                     f"unexpected {sorted(unexpected)[:5]})")
    if not (directory / "norm_stats.json").is_file():
        raise CorruptCheckpointError(f"{directory} has no norm_stats.json: without the action normalisation "
                                     "statistics its tokens cannot be turned into actions")
    stats = read_checkpoint_json(directory / "norm_stats.json")
    try:
        tokenizer = ActionTokenizer(stats["vocab_size"], NormStats.from_dict(stats["action"]), stats["n_bins"])
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptCheckpointError(f"{directory / 'norm_stats.json'} does not hold action normalisation "
                                     f"statistics ({type(error).__name__}: {error})") from None
    training_state = read_training_state(directory) if with_training_state else None
    return model.to(device), tokenizer, training_state


__all__ = ["CorruptCheckpointError", "save_checkpoint", "load_checkpoint", "read_training_state", "read_weights", "verify_checkpoint",
           "read_checkpoint_json",
           "latest_valid_checkpoint", "point_latest", "resolve_checkpoint", "read_vla_config",
           "model_config_differences", "LATEST", "MANIFEST"]
