"""``keep_freed_memory``: the measured effect (page faults and time of a policy forward next to MuJoCo
renderers) is in benchmarks/bench_policy_forward.py; here, that the setting takes and is idempotent."""

import sys

import pytest

from vla_rl.core import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_sets_the_thresholds_once(monkeypatch):
    calls = []
    real = memory.ctypes.CDLL

    class RecordingMallopt:  # records the calls, then makes them for real
        def __init__(self, function):
            self.function, self.argtypes, self.restype = function, None, None

        def __call__(self, parameter, value):
            calls.append((parameter, value))
            self.function.argtypes, self.function.restype = self.argtypes, self.restype
            return self.function(parameter, value)

    class Recording:
        def __init__(self, name):
            self.mallopt = RecordingMallopt(real(name).mallopt)

    monkeypatch.setattr(memory, "_applied", False)
    monkeypatch.setattr(memory.ctypes, "CDLL", Recording)
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory() is True  # the second call does nothing
    assert calls == [(memory.M_MMAP_THRESHOLD, 32 << 20), (memory.M_TRIM_THRESHOLD, 1 << 30)]
