"""benchmarks/bench_grpo.py: the 1- and 2-worker runs sample the same number of groups, so --envs must split
into whole groups of 8 on each of 2 workers."""

import pytest

from tests.scripts.conftest import BENCHMARKS, load_script


def test_envs_must_give_both_settings_the_same_groups():
    bench = load_script("bench_grpo", BENCHMARKS)
    for envs in (16, 32, 64):
        bench.check_envs(envs)
    for envs in (0, 8, 24, 40):  # 24: 3 groups with 1 worker of 24 slots, 2 with 2 workers of 12
        with pytest.raises(ValueError, match="multiple of 16"):
            bench.check_envs(envs)
