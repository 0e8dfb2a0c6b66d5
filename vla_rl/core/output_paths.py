"""Output paths checked before any work: a command that would write where it cannot (a file where a
directory belongs, a directory where a file belongs, a parent that cannot be made or written) says
so at once, not after minutes of evaluation, collection or imagining."""

from __future__ import annotations

import os
from pathlib import Path


def check_output_dir(path: Path, what: str = "output directory") -> Path:
    """``path`` as a directory to write into (created later by the writer): refuses an existing file, a
    file among its parents and a nearest existing parent that is not writable. ``what`` names it in the
    error (e.g. ``--out``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{what} {path} is an existing file, not a directory")
    _check_creatable(path, path, what)
    return path


def check_output_file(path: Path, what: str = "output file") -> Path:
    """``path`` as a file to write (or replace): refuses a directory, and a parent ``check_output_dir``
    would refuse."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; name a file in it instead")
    _check_creatable(path.parent, path, what)
    return path


def _check_creatable(directory: Path, path: Path, what: str) -> None:
    """``directory`` (``path`` or its parent) exists or can be made, and can be written into."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FileExistsError(f"{what} {path} cannot be created: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path} cannot be written: no write permission on {existing}")


__all__ = ["check_output_dir", "check_output_file"]
