"""One daemon thread that runs submitted calls in order and hands back ``Future``s.

Why not ``concurrent.futures.ThreadPoolExecutor``: Python joins that pool's threads when the
interpreter exits, even after ``shutdown(wait=False)``. A policy call that never returns (the case
the node's ``inference_timeout_s`` exists for) then keeps a stopped node's process alive forever,
after SIGTERM, with nothing left to do. A daemon thread is simply abandoned at exit.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


class DaemonWorker:
    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # submit vs shutdown: nothing is queued after the stop marker
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker is shut down")
            self._jobs.put((future, function, args))
        return future

    def shutdown(self) -> None:
        """Cancel what has not started and stop after the running call; never waits for it."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                job[0].cancel()
            self._jobs.put(None)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, function, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever holds the future
                future.set_exception(exc)
            else:
                future.set_result(result)
