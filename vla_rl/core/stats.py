"""Confidence intervals shared by every evaluation (policy success rates, world-model outcome agreement)."""

from __future__ import annotations

import math


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion (``(0, 1)`` for no trials)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # The interval always contains p; rounding can put an exact bound (1.0 at p = 1) an ulp on the
    # wrong side, which matplotlib then rejects as a negative error bar.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


__all__ = ["wilson_interval"]
