"""Which LIBERO task a name stands for (no LIBERO install needed)."""

import pytest

from sim_envs.libero_env import LiberoEnv, parse_task, reset_seed


def test_only_the_canonical_spelling_names_a_task():
    """The name seeds every reset: two spellings of one task would give it two sets of layouts."""
    assert parse_task("libero_spatial_03") == ("libero_spatial", 3)
    assert parse_task("libero_90_42") == ("libero_90", 42)
    for other_spelling in ("libero_spatial_3", "libero_spatial_003"):
        with pytest.raises(KeyError, match="is spelled 'libero_spatial_03'"):
            parse_task(other_spelling)
        with pytest.raises(KeyError, match="is spelled 'libero_spatial_03'"):
            LiberoEnv(other_spelling, image_size=32)  # refused before any scene is built
    for not_a_task in ("libero_spatial_\u0663", "libero_spatial_+3", "libero_spatial_10", "libero_spatial_"):
        with pytest.raises(KeyError, match="unknown LIBERO task"):
            parse_task(not_a_task)
    assert reset_seed("libero_spatial_03", "eval", 0) != reset_seed("libero_spatial_3", "eval", 0)  # why it matters
