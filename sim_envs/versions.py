"""Versions that shift simulation results, recorded in every demo file and evaluation report."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def package_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _git_state() -> tuple[str, list[str]] | None:
    """(HEAD commit, ``git status --porcelain`` lines) of the code's checkout, or None outside one or without git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        # untracked files count (a new source file not yet committed); ignored ones (runs/, .venv) do not
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=normal"],
                                capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, [line for line in status.splitlines() if line.strip()]


def git_commit() -> str | None:
    """The code's git commit (with '-dirty' for uncommitted changes), or None outside a checkout."""
    state = _git_state()
    if state is None:
        return None
    commit, changed = state
    return commit + ("-dirty" if changed else "")


def git_changed_files(limit: int = 50) -> list[str]:
    """What makes the commit '-dirty': ``git status --porcelain`` lines (status, path), the first ``limit``
    and then a line counting the rest (a checkout full of generated files must not bloat a report)."""
    changed = (_git_state() or ("", []))[1]
    return changed[:limit] + ([f"... and {len(changed) - limit} more"] if len(changed) > limit else [])


@functools.lru_cache(maxsize=1)
def gl_renderer() -> str:
    """The OpenGL renderer MuJoCo draws with, e.g. 'llvmpipe (LLVM 15.0.6, 256 bits)'."""
    try:
        import mujoco
        from OpenGL import GL

        context = mujoco.GLContext(16, 16)
        context.make_current()
        try:
            return GL.glGetString(GL.GL_RENDERER).decode() + " / " + GL.glGetString(GL.GL_VERSION).decode()
        finally:
            context.free()
    except Exception as error:  # noqa: BLE001 - a record of what failed is the useful output here
        return f"unavailable ({type(error).__name__}: {error})"


def environment_versions() -> dict[str, str | None]:
    import vla_rl

    return {
        "vla_rl_version": vla_rl.__version__,
        "code_commit": git_commit(),
        "mujoco_version": package_version("mujoco"),
        "robosuite_version": package_version("robosuite"),
        # LIBERO as ported to robosuite 1.5 (results shift with the robosuite/MuJoCo versions)
        "libero_version": package_version("rpent-libero") or package_version("libero"),
        "gymnasium_version": package_version("gymnasium"),
        "numpy_version": package_version("numpy"),
        "mujoco_gl": os.environ.get("MUJOCO_GL", "default"),
        "gl_renderer": gl_renderer(),
        "python_version": platform.python_version(),
    }
