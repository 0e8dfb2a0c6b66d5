"""Keep freed memory in the process (glibc): a CPU speed fix for torch next to a MuJoCo renderer.

glibc serves large allocations (a conv's 8 MB activation at batch 16, 64x64) with ``mmap`` and
returns them to the OS on ``free``, unless its *dynamic* threshold has learnt to keep them. Once a
process has built MuJoCo scenes with their renderers, that no longer happens: every forward pass of
the policy in a rollout worker page-faulted its activations in afresh (about 15,000 minor faults
and 45 ms of kernel time per localiser call at batch 16, which made the call take 105 ms instead of
60 ms; ``benchmarks/bench_policy_forward.py``). Fixing the thresholds keeps freed blocks in the heap
for the next call: blocks up to 32 MB (glibc's largest threshold) come from the heap, and the heap
is not trimmed below 1 GB of free space.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum on 64-bit
TRIM_THRESHOLD_BYTES = 1 << 30

_applied = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); returns whether they are set.
    A no-op returning False where the C library is not glibc (macOS, musl)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied
