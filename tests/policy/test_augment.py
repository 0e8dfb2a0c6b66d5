import numpy as np
import pytest
import torch

from vla_rl.policy.augment import TABLETOP_PALETTE, ColourSwap, ColourSwapConfig

NAMES = list(TABLETOP_PALETTE)


def scene() -> torch.Tensor:
    """A brown table, a grey robot stripe and one shaded square of every palette colour."""
    image = np.zeros((20, 60, 3), np.uint8)
    image[:] = (160, 128, 100)       # table (saturation 0.375: must stay)
    image[:4] = (90, 90, 95)         # robot
    for i, name in enumerate(NAMES):
        shade = 0.6 + 0.08 * i       # lit differently, as rendered blocks are
        image[8:14, 12 * i + 3:12 * i + 9] = np.round(np.array(TABLETOP_PALETTE[name]) * 255 * shade)
    return torch.from_numpy(image)


def test_pixels_are_classified_by_colour_and_background_is_left_alone():
    swap = ColourSwap(ColourSwapConfig(probability=1.0))
    index = swap.colour_index(scene())
    for i in range(len(NAMES)):
        assert (index[8:14, 12 * i + 3:12 * i + 9] == i).all()
    assert (index[:8] == -1).all() and (index[14:] == -1).all()


def test_permutation_moves_colours_keeps_shading_and_renames_words():
    swap = ColourSwap(ColourSwapConfig(probability=1.0))
    image = scene()
    permutation = [1, 2, 3, 4, 0]  # red -> green -> blue -> yellow -> purple -> red
    out = swap.apply(image, permutation)
    assert torch.equal(out[:8], image[:8]) and torch.equal(out[14:], image[14:])
    recoloured = swap.colour_index(out)
    for i in range(len(NAMES)):
        assert (recoloured[8:14, 12 * i + 3:12 * i + 9] == permutation[i]).all()
    # brightness relative to the colour is kept
    red_before = float(image[10, 3].float().max()) / (255 * max(TABLETOP_PALETTE["red"]))
    green_after = float(out[10, 3].float().max()) / (255 * max(TABLETOP_PALETTE["green"]))
    assert green_after == pytest.approx(red_before, abs=0.01)
    assert swap.rename("put the red block on the purple one, not reddish", permutation) == \
        "put the green block on the red one, not reddish"


def test_probability_zero_is_identity_and_batch_call_is_consistent():
    images = torch.stack([scene(), scene()])
    off = ColourSwap(ColourSwapConfig(probability=0.0))
    same, texts = off(images, ["lift the red block"] * 2, torch.Generator().manual_seed(0))
    assert same is images and texts == ["lift the red block"] * 2
    on = ColourSwap(ColourSwapConfig(probability=1.0))
    out, texts = on(images, ["lift the red block"] * 2, torch.Generator().manual_seed(0))
    for row in range(2):  # the word and the pixels of the red square moved together
        new_colour = texts[row].split()[2]
        assert (on.colour_index(out[row])[8:14, 3:9] == NAMES.index(new_colour)).all()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="probability"):
        ColourSwapConfig(probability=1.5)
