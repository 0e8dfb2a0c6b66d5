"""Text files replaced atomically: a reader, a crash or a power loss never leaves half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` beside ``path`` and rename it over ``path`` (the rename is atomic on one filesystem)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")  # per process: two writers never share one
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename: after a power loss, the old file or the new one
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
