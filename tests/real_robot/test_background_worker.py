"""The node's inference thread: calls run in order, errors reach the future, shutdown cancels what
has not started and never waits for the running call."""

import threading

import pytest

from real_robot.background_worker import DaemonWorker


def test_results_errors_and_a_shutdown_that_does_not_wait():
    worker = DaemonWorker("test-worker")
    assert worker.submit(lambda a, b: a + b, 2, 3).result(timeout=5) == 5
    with pytest.raises(ZeroDivisionError):
        worker.submit(lambda: 1 / 0).result(timeout=5)

    running, release = threading.Event(), threading.Event()
    hung = worker.submit(lambda: (running.set(), release.wait(30)))
    waiting = worker.submit(lambda: "never runs")
    assert running.wait(5)
    worker.shutdown()  # returns at once with the first call still running
    assert waiting.cancelled() and hung.running()
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(lambda: None)
    release.set()
    assert hung.result(timeout=5)[1] is True
    worker._thread.join(timeout=5)
    assert not worker.is_alive()
