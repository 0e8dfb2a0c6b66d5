"""Checkpoint directories: written atomically, verified by checksums, found again after a crash.

A checkpoint is a directory of files plus ``manifest.json`` (the SHA-256 of every file). Writers
fill a staging directory and ``commit_checkpoint_dir`` renames it into place, so a reader never
sees half a checkpoint; ``verify_checkpoint`` detects truncated or modified files; a run directory's
``latest.json`` names its newest checkpoint, and ``latest_valid_checkpoint`` falls back to the newest
older one that verifies. Used by the policy, the world model and any other model with checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

from vla_rl.core.atomic_file import write_text_atomic

MANIFEST = "manifest.json"


class CorruptCheckpointError(ValueError):
    """A checkpoint directory is incomplete or its files do not match their recorded checksums."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256_of(f)


def _sha256_of(file) -> str:
    """The SHA-256 of an open binary file's contents from its current position."""
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


# A file whose last change is this recent is never taken from the cache: file times are coarse (a few ms),
# so a file rewritten in place at the same size right after it was hashed could otherwise look unchanged.
_SETTLED_SECONDS = 2.0


def verified_digest_cache() -> Path | None:
    """Where this node records the checksums it has verified (``VLA_RL_VERIFY_CACHE``: an absolute directory;
    empty, ``1``, ``on`` or ``true``: ``~/.cache/vla_rl/verified``; ``0``, ``off``, ``false`` or ``no``: none).
    The driver, every learner and every rollout actor load the same checkpoint; hashing a 15 GB 7B checkpoint
    in each of them costs minutes. A relative directory is ignored (with a warning): Ray's workers run in their
    own working directories, so each would keep a cache of its own."""
    setting = os.environ.get("VLA_RL_VERIFY_CACHE", "").strip()
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    if setting and setting.lower() not in ("1", "on", "true", "yes"):
        directory = Path(setting).expanduser()
        if directory.is_absolute():
            return directory
        warnings.warn(f"VLA_RL_VERIFY_CACHE={setting!r} is not an absolute directory: checksums are not cached")
        return None
    try:
        return Path.home() / ".cache" / "vla_rl" / "verified"
    except RuntimeError:  # no HOME and no passwd entry (a container's arbitrary user): hash every time
        return None


def _cached_sha256(path: Path) -> tuple[str, bool]:
    """``_sha256`` and whether it came from the cache: remembered per node for a file whose identity
    (device, inode, size, change times) is unchanged since this node hashed it. The key holds the host
    name: on a shared filesystem each node verifies what it reads itself, even where the home directory
    (and so the cache) is shared. The identity is read from the opened file: on NFS, opening revalidates
    the attributes a plain stat may take from a cache up to a minute old."""
    cache = verified_digest_cache()
    with open(path, "rb") as file:
        if cache is None:
            return _sha256_of(file), False
        status = os.fstat(file.fileno())
        identity = (socket.gethostname(), str(path.resolve()), status.st_dev, status.st_ino, status.st_size,
                    status.st_mtime_ns, status.st_ctime_ns)
        entry = cache / hashlib.sha256(repr(identity).encode()).hexdigest()
        try:
            cached = entry.read_text().strip()
            if len(cached) == 64 and all(c in "0123456789abcdef" for c in cached):
                return cached, True
        except OSError:
            pass
        digest = _sha256_of(file)
    if time.time() - max(status.st_mtime_ns, status.st_ctime_ns) / 1e9 > _SETTLED_SECONDS:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            write_text_atomic(entry, digest)
        except OSError:  # a read-only or full cache only costs the hashing
            pass
    return digest, False


def staging_dir(directory: Path) -> Path:
    """An empty sibling directory to write ``directory``'s files into before ``commit_checkpoint_dir``."""
    directory = Path(directory)
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _sha256_synced(path: Path) -> str:
    """``_sha256``, with the file flushed to disk first: a checkpoint renamed into place after a power loss
    must not name data that never reached the disk (a node's checksum cache would vouch for it)."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())
        return _sha256_of(file)


def commit_checkpoint_dir(tmp: Path, directory: Path) -> Path:
    """Write ``tmp``'s manifest and rename it to ``directory`` (replacing an older one atomically)."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {str(p.relative_to(tmp)): _sha256_synced(p) for p in files}
    write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1))
    if directory.exists():
        old = directory.with_name(f"{directory.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)  # an earlier process of the same pid left it: it cannot be renamed over
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
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptCheckpointError(f"{manifest_path} is not valid JSON") from error
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise CorruptCheckpointError(f"{manifest_path} is not a mapping of file names to checksums")
    for name, expected in manifest.items():
        path = directory / name
        if not path.is_file():
            raise CorruptCheckpointError(f"{directory}: {name} is missing")
        # a cached digest that disagrees is checked again: a damaged cache must not refuse a good file
        digest, cached = _cached_sha256(path)
        if digest != expected and (not cached or _sha256(path) != expected):
            raise CorruptCheckpointError(f"{directory}: {name} does not match its checksum (corrupt or modified)")


LATEST = "latest.json"


def point_latest(out_dir: Path, name: str, step: int) -> None:
    """Atomically record ``out_dir/name`` as the newest checkpoint of a run."""
    write_text_atomic(Path(out_dir) / LATEST, json.dumps({"checkpoint": name, "step": step}))


def read_latest_pointer(out_dir: Path) -> str | None:
    """The checkpoint name ``latest.json`` gives; None when it is missing or unreadable (cut short, not JSON,
    not text, or without a name)."""
    try:
        name = json.loads((Path(out_dir) / LATEST).read_text())["checkpoint"]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) and name else None


def latest_valid_checkpoint(out_dir: Path, prefix: str) -> Path | None:
    """The newest checkpoint of a run that passes verification: the one ``latest.json`` names, or,
    when that one is missing or corrupt, the newest older ``<prefix>*`` directory (names sort by
    step). A skipped checkpoint is reported with the reason."""
    import warnings

    out_dir = Path(out_dir)
    candidates: list[Path] = []
    pointer = out_dir / LATEST
    if pointer.is_file():
        name = read_latest_pointer(out_dir)
        if name is None:
            warnings.warn(f"{pointer} is unreadable; looking for the newest valid checkpoint instead")
        elif name.startswith(prefix):  # another kind of run's pointer (an SFT run's step_ for RL) names none of ours
            candidates.append(out_dir / name)
    # ".old-" directories exist only while commit_checkpoint_dir replaces a checkpoint: one killed between its
    # two renames leaves the complete previous checkpoint there, and it then stands in for the missing one
    candidates += sorted((p for p in out_dir.glob(f"{prefix}*") if p.is_dir() and ".tmp-" not in p.name),
                         key=lambda p: (p.name.split(".old-")[0], ".old-" not in p.name), reverse=True)
    for candidate in dict.fromkeys(candidates):
        try:
            verify_checkpoint(candidate)
            return candidate
        except (CorruptCheckpointError, FileNotFoundError) as error:
            warnings.warn(f"skipping checkpoint {candidate}: {error}")
    return None


HISTORY_FILE = "metrics.jsonl"


def truncate_history(path: Path, key: str, upto: int, checkpointed_line: dict | None = None) -> None:
    """On resuming from the checkpoint of ``key`` (step, iteration) ``upto``: drop the lines of the metric
    history at ``path`` written after it (the resumed run writes them again) and a last line cut short by the
    crash; with ``checkpointed_line`` (the checkpoint's own line, kept in it), write that line if the crash
    came between the checkpoint and its line. A damaged line before the last is an error."""
    path = Path(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    kept, logged = [], set()
    for number, line in enumerate(lines, 1):
        try:
            value = json.loads(line)[key]
        except (json.JSONDecodeError, KeyError, TypeError):
            if number == len(lines):  # the process died while writing it: that line is written again anyway
                break
            raise ValueError(f"{path} line {number} is not a JSON record with {key!r}: the metric history is "
                             "damaged") from None
        if value <= upto:
            kept.append(line)
            logged.add(value)
    if checkpointed_line is not None and checkpointed_line.get(key) == upto and upto not in logged:
        kept.append(json.dumps(checkpointed_line))
    if path.is_file() or kept:
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def previous_run_files(out_dir: Path, prefix: str) -> list[str]:
    """The names of what a training run (SFT: ``step_``, RL: ``iter_``) leaves in its ``out_dir``: its metric
    history, its checkpoints and their pointer."""
    found = [name for name in (HISTORY_FILE, LATEST) if (Path(out_dir) / name).exists()]
    return found + sorted(p.name for p in Path(out_dir).glob(f"{prefix}*"))


def _no_checkpoint_remedy(out_dir: Path) -> str:
    """What to do with an ``out_dir`` whose run left a history but no checkpoint to continue from (it stopped
    before its first checkpoint, or every checkpoint is corrupt): --resume cannot continue it and a fresh run
    must not mix with it, so neither error may send the user to the other."""
    return f"delete {out_dir} to start afresh, or choose another out_dir"


def _listed(names: list[str]) -> str:
    return f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"


def _refuse_another_kind_of_run(out_dir: Path, prefix: str) -> None:
    """An ``out_dir`` whose ``latest.json`` names a checkpoint of another kind (an SFT run's ``step_`` where RL's
    ``iter_`` belongs) is another command's run: neither a fresh run nor --resume may write into it."""
    name = read_latest_pointer(out_dir) if (Path(out_dir) / LATEST).is_file() else None
    if name is not None and not name.startswith(prefix):
        raise FileExistsError(f"{out_dir} holds another kind of run (its latest checkpoint is {name}, not "
                              f"{prefix}*): choose another out_dir")


def refuse_previous_run(out_dir: Path, prefix: str, remedy: str | None = None) -> None:
    """A fresh run must not write into the ``out_dir`` of an earlier one: its history would continue (or
    replace) the old one's, and the old checkpoints (some maybe of later steps) would stand beside the new
    ones. ``remedy``: what to do instead (a command without --resume says so); by default --resume when the
    earlier run has a valid checkpoint to continue from, else deleting the directory or another out_dir."""
    previous = previous_run_files(out_dir, prefix)
    if not previous:
        return
    _refuse_another_kind_of_run(out_dir, prefix)
    if remedy is None:
        if latest_valid_checkpoint(out_dir, prefix) is None:
            raise FileExistsError(f"{out_dir} holds a previous run ({_listed(previous)}) but no valid checkpoint, "
                                  f"so --resume cannot continue it: {_no_checkpoint_remedy(out_dir)}")
        remedy = "continue it with --resume, or choose another out_dir"
    raise FileExistsError(f"{out_dir} holds a previous run ({_listed(previous)}): {remedy}")


def checkpoint_to_resume(out_dir: Path, prefix: str) -> Path:
    """The checkpoint ``--resume`` continues from: the newest valid one of the run in ``out_dir``. Without one,
    the error says whether there is a run at all (none: start without --resume) or a run that cannot be
    continued (a history but no valid checkpoint: delete it or choose another out_dir)."""
    _refuse_another_kind_of_run(out_dir, prefix)
    found = latest_valid_checkpoint(out_dir, prefix)
    if found is not None:
        return found
    previous = previous_run_files(out_dir, prefix)
    if previous:
        raise FileNotFoundError(f"--resume: {out_dir} holds a previous run ({_listed(previous)}) but no valid "
                                f"checkpoint (it stopped before its first one, or they are corrupt): "
                                f"{_no_checkpoint_remedy(out_dir)}")
    raise FileNotFoundError(f"--resume: no valid checkpoint in {out_dir} (no run there to continue): start the run "
                            "without --resume")


def resolve_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a checkpoint directory, or the newest valid checkpoint of a run
    directory (one with ``latest.json``: an SFT or RL ``out_dir``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if (path / MANIFEST).is_file():
        return path
    # the run's checkpoint prefix (step_, iter_): from latest.json, or, when that is missing or unreadable
    # (a run killed between a save and its pointer), from the checkpoint directories themselves
    name = read_latest_pointer(path) or ""
    prefixes = {name.split("_")[0] + "_"} if "_" in name else \
        {found.parent.name.split("_")[0] + "_" for found in path.glob(f"*_*/{MANIFEST}")}
    if len(prefixes) == 1:
        found = latest_valid_checkpoint(path, prefixes.pop())
        if found is not None:
            return found
    if not prefixes and any(path.glob("*.safetensors")):  # a checkpoint's weights, without their manifest
        verify_checkpoint(path)  # "has no manifest.json: not a complete checkpoint"
    raise FileNotFoundError(f"{path} is neither a checkpoint directory nor a run directory with a valid checkpoint"
                            + (f" (it holds checkpoints of several kinds: {sorted(prefixes)}; name one)"
                               if len(prefixes) > 1 else ""))


__all__ = ["MANIFEST", "LATEST", "CorruptCheckpointError", "staging_dir", "commit_checkpoint_dir", "verify_checkpoint",
           "point_latest", "latest_valid_checkpoint", "resolve_checkpoint", "HISTORY_FILE", "previous_run_files",
           "refuse_previous_run", "checkpoint_to_resume", "read_latest_pointer", "truncate_history"]
