"""Running work again in a new env when its env crashes (``EnvCrashed``: an env worker process died or hung).

One loop for both users: a training rollout worker (``RolloutWorker``) collects a crashed wave again from
its start; ``evaluate_restarting`` (``vla-rl eval``) runs only the episodes that had not finished.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from vla_rl.core.protocols import EnvCrashed

log = logging.getLogger(__name__)
T = TypeVar("T")

# Crashes in a row without progress in between (a wave collected again from its start never counts as
# progress; an evaluation that finished an episode since the last crash does). A crash tied to what is run
# (a renderer that segfaults on one init state) repeats every time; one from outside (the out-of-memory
# killer, a stray kill) rarely twice in a row. So two more tries tell the two apart, and an env that keeps
# crashing is reported as the bug it is instead of being retried forever.
MAX_ENV_RESTARTS = 2


def run_restarting(run: Callable[[], T], rebuild_env: Callable[[int], None],
                   on_crash: Callable[[EnvCrashed, int], None] = lambda error, restart: None,
                   progressed: Callable[[], bool] = lambda: False) -> tuple[T, int]:
    """``(run(), envs rebuilt)``. When ``run`` raises ``EnvCrashed``: ``on_crash(error, restart)`` (restart
    counts from 1), ``rebuild_env(restart)`` (close the crashed env, build its replacement), then ``run``
    again; after ``MAX_ENV_RESTARTS`` crashes in a row for which ``progressed()`` was false, the crash is
    raised. ``progressed`` is asked once per crash: whether work finished since the previous one."""
    restarts = unproductive = 0
    while True:
        try:
            return run(), restarts
        except EnvCrashed as error:
            unproductive = 0 if progressed() else unproductive + 1
            if unproductive > MAX_ENV_RESTARTS:
                raise
            restarts += 1
            on_crash(error, restarts)
            rebuild_env(restarts)


def close_quietly(env) -> None:
    """Close a crashed env, ignoring what its close raises: its replacement is what matters."""
    try:
        env.close()
    except Exception:  # noqa: BLE001 - a crashed env may not close cleanly
        log.debug("closing a crashed env failed", exc_info=True)


__all__ = ["MAX_ENV_RESTARTS", "run_restarting", "close_quietly"]
