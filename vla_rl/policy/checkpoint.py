"""Policy checkpoints: one directory per save, written atomically, verified on load.

    <dir>/model.safetensors       weights
    <dir>/vla_config.json         the VLAConfig (typed config; reloaded through the config system)
    <dir>/norm_stats.json         action normalisation statistics (q01, q99, mask)
    <dir>/tokenizer*/vocab files  the text tokenizer, so the checkpoint loads with no other files
    <dir>/training_state.pt       optimiser, scheduler, RNG states and step (training checkpoints)
    <dir>/manifest.json           sha256 of every file above; a mismatch means a corrupt checkpoint

A save goes to ``<dir>.tmp-<pid>`` and is renamed into place, so a crash never leaves a half
written checkpoint under the final name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vla_rl.core.config import load_config, to_dict
from vla_rl.policy.action_tokenizer import ActionTokenizer, NormStats
from vla_rl.policy.model import VLAConfig, VLAModel

MANIFEST = "manifest.json"


class CorruptCheckpointError(ValueError):
    """A checkpoint directory is incomplete or its files do not match their recorded checksums."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(directory: Path, model: VLAModel, action_tokenizer: ActionTokenizer,
                    training_state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint; ``weights`` replaces ``model.state_dict()`` (e.g. LoRA-merged weights)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
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
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {str(p.relative_to(tmp)): _sha256(p) for p in files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if directory.exists():
        old = directory.with_name(f"{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
    return directory


def verify_checkpoint(directory: Path) -> None:
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CorruptCheckpointError(f"{directory} has no {MANIFEST}: not a complete checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise CorruptCheckpointError(f"{manifest_path} is not valid JSON") from error
    for name, expected in manifest.items():
        path = directory / name
        if not path.is_file():
            raise CorruptCheckpointError(f"{directory}: {name} is missing")
        if _sha256(path) != expected:
            raise CorruptCheckpointError(f"{directory}: {name} does not match its checksum (corrupt or modified)")


def load_checkpoint(directory: Path, device: str | torch.device = "cpu", verify: bool = True
                    ) -> tuple[VLAModel, ActionTokenizer, dict[str, Any] | None]:
    """Model, action tokenizer and (if present) the training state of a checkpoint directory."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if verify:
        verify_checkpoint(directory)
    config = load_config(VLAConfig, directory / "vla_config.json")
    config = dataclasses.replace(config, tokenizer=str(directory / "tokenizer"))
    model = VLAModel(config, load_pretrained=False)
    state = load_file(str(directory / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {"language_model.lm_head.weight"} if config.language_model.tie_word_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise CorruptCheckpointError(f"{directory}: weights do not fit the config (missing {sorted(missing)[:5]}, "
                                     f"unexpected {sorted(unexpected)[:5]})")
    if not (directory / "norm_stats.json").is_file():
        raise CorruptCheckpointError(f"{directory} has no norm_stats.json: without the action normalisation "
                                     "statistics its tokens cannot be turned into actions")
    stats = json.loads((directory / "norm_stats.json").read_text())
    tokenizer = ActionTokenizer(stats["vocab_size"], NormStats.from_dict(stats["action"]), stats["n_bins"])
    training_state = None
    if (directory / "training_state.pt").is_file():
        training_state = torch.load(directory / "training_state.pt", map_location="cpu", weights_only=False)
    return model.to(device), tokenizer, training_state


LATEST = "latest.json"


def point_latest(out_dir: Path, name: str, step: int) -> None:
    """Atomically record ``out_dir/name`` as the newest checkpoint of a run."""
    tmp = Path(out_dir) / (LATEST + ".tmp")
    tmp.write_text(json.dumps({"checkpoint": name, "step": step}))
    tmp.replace(Path(out_dir) / LATEST)


def latest_valid_checkpoint(out_dir: Path, prefix: str) -> Path | None:
    """The newest checkpoint of a run that passes verification: the one ``latest.json`` names, or,
    when that one is missing or corrupt, the newest older ``<prefix>*`` directory (names sort by
    step). A skipped checkpoint is reported with the reason."""
    import warnings

    out_dir = Path(out_dir)
    candidates: list[Path] = []
    pointer = out_dir / LATEST
    if pointer.is_file():
        try:
            candidates.append(out_dir / json.loads(pointer.read_text())["checkpoint"])
        except (json.JSONDecodeError, KeyError):
            warnings.warn(f"{pointer} is unreadable; looking for the newest valid checkpoint instead")
    candidates += sorted((p for p in out_dir.glob(f"{prefix}*")
                          if p.is_dir() and ".tmp-" not in p.name and ".old-" not in p.name), reverse=True)
    for candidate in dict.fromkeys(candidates):
        try:
            verify_checkpoint(candidate)
            return candidate
        except (CorruptCheckpointError, FileNotFoundError) as error:
            warnings.warn(f"skipping checkpoint {candidate}: {error}")
    return None


def resolve_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a checkpoint directory, or the newest valid checkpoint of a run
    directory (one with ``latest.json``: an SFT or RL ``out_dir``)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    if (path / LATEST).is_file():
        name = json.loads((path / LATEST).read_text()).get("checkpoint", "")
        prefix = name.split("_")[0] + "_" if "_" in name else ""
        found = latest_valid_checkpoint(path, prefix)
        if found is not None:
            return found
    raise FileNotFoundError(f"{path} is neither a checkpoint directory nor a run directory with a valid checkpoint")
