"""HDF5 files opened for reading with an error that names the file.

``h5py.File`` on a damaged or foreign file raises a bare ``OSError`` ("Unable to synchronously open
file (file signature not found)") that names no file; every reader of demonstrations and labelled
episodes opens its files here instead, so the CLI prints one line saying which file is unreadable.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py


def open_hdf5(path: Path, mode: str = "r") -> h5py.File:
    """``h5py.File(path, mode)``; a missing ``path`` is a FileNotFoundError, a directory, a file that is
    not HDF5 or a damaged (e.g. truncated) one a ValueError "<path> is not a readable HDF5 file: <reason>"."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is not a readable HDF5 file: it is a directory")
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file: {_reason(error)}") from None


def _reason(error: OSError) -> str:
    """h5py's "Unable to ... open file (<reason>)" as a reason a reader can act on."""
    text = str(error)
    inner = re.search(r"\((.*)\)\s*$", text, re.S)
    reason = inner.group(1).strip() if inner else text
    truncated = re.search(r"eof = (\d+).*stored_eof = (\d+)", reason, re.S)
    if "truncated" in reason and truncated:
        return (f"truncated ({truncated.group(1)} of its {truncated.group(2)} bytes; an interrupted write, copy "
                "or download?)")
    if "signature not found" in reason:
        return "no HDF5 signature (not an HDF5 file)"
    return reason


__all__ = ["open_hdf5"]
