import numpy as np
import pytest

from vla_rl.policy import ActionTokenizer, NormStats
from vla_rl.policy.action_tokenizer import gripper_from_env, gripper_to_env

VOCAB = 32000  # OpenVLA's Llama-2 vocabulary size


def openvla_reference_ids(actions, q01, q99, mask, vocab=VOCAB, n_bins=256, low=None, high=None):
    """OpenVLA's pipeline written out step by step from its published formulas, one value at a time:
    BOUNDS_Q99 normalisation (masked dims untouched), then, when the dataset's min and max are given,
    0.0 for every dimension whose min == max (normalize_action_and_proprio's "unused action dimensions",
    masked or not), clip to [-1, 1], np.digitize against linspace(-1, 1, 256), token = vocab_size - bin."""
    edges = np.linspace(-1, 1, n_bins)
    out = np.zeros(actions.shape, dtype=np.int64)
    for index in np.ndindex(actions.shape):
        d = index[-1]
        value = actions[index]
        if mask[d]:
            value = min(max(2 * (value - q01[d]) / (q99[d] - q01[d] + 1e-8) - 1, -1.0), 1.0)
        if low is not None and low[d] == high[d]:
            value = 0.0
        value = min(max(value, -1.0), 1.0)
        out[index] = vocab - int(np.digitize(value, edges))
    return out


@pytest.fixture
def stats():
    rng = np.random.default_rng(0)
    q01 = rng.uniform(-0.5, -0.01, 7)
    q99 = rng.uniform(0.01, 0.5, 7)
    mask = np.array([True] * 6 + [False])
    return NormStats(q01, q99, mask)


def test_token_ids_equal_openvla_reference(stats):
    rng = np.random.default_rng(1)
    actions = rng.uniform(-0.7, 0.7, (64, 7))
    actions[:, 6] = rng.choice([-1.0, 1.0, 0.3], 64)
    actions[0, :6] = stats.q01[:6]  # exact edges
    actions[1, :6] = stats.q99[:6]
    tokenizer = ActionTokenizer(VOCAB, stats)
    np.testing.assert_array_equal(tokenizer.encode(actions), openvla_reference_ids(actions, stats.q01, stats.q99, stats.mask))
    ids = tokenizer.encode(actions)
    assert ids.dtype == np.int64 and ids.min() >= VOCAB - 256 and ids.max() <= VOCAB - 1


def test_extremes_map_to_first_and_last_bins(stats):
    tokenizer = ActionTokenizer(VOCAB, stats)
    low = tokenizer.encode(np.where(stats.mask, stats.q01 - 10, -1.0))
    high = tokenizer.encode(np.where(stats.mask, stats.q99 + 10, 1.0))
    assert np.all(low == VOCAB - 1) and np.all(high == VOCAB - 256)


def test_round_trip_error_is_at_most_half_a_bin(stats):
    tokenizer = ActionTokenizer(VOCAB, stats)
    rng = np.random.default_rng(2)
    actions = rng.uniform(stats.q01, stats.q99, (2000, 7))
    actions[:, 6] = rng.uniform(-1, 1, 2000)
    decoded = tokenizer.decode(tokenizer.encode(actions))
    half_bin = np.where(stats.mask, (stats.q99 - stats.q01) / 255 / 2, 1 / 255)
    assert np.all(np.abs(decoded - actions) <= half_bin * (1 + 1e-5) + 1e-7)
    # decode returns bin centres, which re-encode to the same ids (actions strictly inside [q01, q99]
    # never reach id VOCAB - 256, the one id that is not a fixed point: see the test over all ids)
    np.testing.assert_array_equal(tokenizer.encode(decoded), tokenizer.encode(actions))


def test_decode_matches_openvla_formula(stats):
    tokenizer = ActionTokenizer(VOCAB, stats)
    ids = np.arange(VOCAB - 256, VOCAB).reshape(-1, 1).repeat(7, axis=1)[:, :7]
    centers = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    expected_norm = centers[np.clip(VOCAB - ids - 1, 0, 254)]
    expected = np.where(stats.mask, 0.5 * (expected_norm + 1) * (stats.q99 - stats.q01) + stats.q01, expected_norm)
    np.testing.assert_allclose(tokenizer.decode(ids), expected, rtol=1e-6, atol=1e-7)


def test_bad_input_is_rejected(stats):
    tokenizer = ActionTokenizer(VOCAB, stats)
    with pytest.raises(ValueError, match="NaN"):
        tokenizer.encode(np.full(7, np.nan))
    with pytest.raises(ValueError, match="dimensions"):
        tokenizer.encode(np.zeros(6))
    with pytest.raises(ValueError, match="action tokens"):
        tokenizer.decode(np.full(7, 5))
    with pytest.raises(ValueError, match="q01"):
        NormStats.from_dict({"q99": [1.0]})
    with pytest.raises(ValueError, match="q99 < q01"):
        NormStats.from_dict({"q01": [1.0], "q99": [0.0]})
    restored = NormStats.from_dict(stats.to_dict())
    np.testing.assert_array_equal(restored.q01, stats.q01)
    assert list(restored.mask) == list(stats.mask)


def test_stats_from_data_mask_the_gripper():
    actions = np.random.default_rng(3).normal(size=(1000, 7))
    stats = NormStats.from_actions(actions)
    assert list(stats.mask) == [True] * 6 + [False]
    np.testing.assert_allclose(stats.q01, np.quantile(actions, 0.01, axis=0))
    # another action size: the gripper is still the last dimension (it was index 6 whatever the size)
    assert list(NormStats.from_actions(actions[:, :4]).mask) == [True] * 3 + [False]
    assert list(NormStats.from_actions(np.hstack([actions, actions[:, :1]])).mask) == [True] * 7 + [False]


def test_openvla_gripper_convention_both_directions():
    """OpenVLA's gripper is [0, 1] with 1 = open; our envs take -1 = open, +1 = close."""
    model = np.array([[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0], [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0],
                      [0.0] * 6 + [0.9], [0.0] * 6 + [0.2]])
    env = gripper_to_env(model, "openvla")  # normalize_gripper_action(binarize=True), then invert_gripper_action
    np.testing.assert_array_equal(env[:, 6], [-1.0, 1.0, -1.0, 1.0])
    np.testing.assert_array_equal(env[:, :6], model[:, :6])
    demos = np.array([[0.1] * 6 + [-1.0], [0.1] * 6 + [1.0], [0.1] * 6 + [-0.3]])
    np.testing.assert_allclose(gripper_from_env(demos, "openvla")[:, 6], [1.0, 0.0, 1.0])  # 1 - clip(g, 0, 1)
    # through OpenVLA's tokenizer (gripper not normalised) and back: the env command survives
    stats = NormStats(np.full(7, -0.5), np.full(7, 0.5), np.array([True] * 6 + [False]))
    tokenizer = ActionTokenizer(VOCAB, stats)
    ids = tokenizer.encode(gripper_from_env(demos, "openvla"))
    np.testing.assert_array_equal(gripper_to_env(tokenizer.decode(ids), "openvla")[:, 6], [-1.0, 1.0, -1.0])
    assert gripper_to_env(model, "env") is model and gripper_from_env(demos, "env") is demos
    with pytest.raises(ValueError, match="gripper convention"):
        gripper_to_env(model, "bridge")


def test_every_id_but_the_top_bin_is_a_fixed_point_of_encode_decode(stats):
    """encode(decode(id)) == id for every action id except VOCAB - 256 (bin 256, normalised value exactly
    1), which decodes to the last bin centre like VOCAB - 255 and so re-encodes to VOCAB - 255 (OpenVLA too)."""
    tokenizer = ActionTokenizer(VOCAB, stats)
    ids = np.repeat(np.arange(VOCAB - 256, VOCAB)[:, None], 7, axis=1)  # masked and normalised dimensions
    again = tokenizer.encode(tokenizer.decode(ids))
    np.testing.assert_array_equal(again[1:], ids[1:])
    np.testing.assert_array_equal(again[0], np.full(7, VOCAB - 255))
    np.testing.assert_array_equal(again, openvla_reference_ids(tokenizer.decode(ids), stats.q01, stats.q99, stats.mask))


@pytest.mark.parametrize("value", [0.3, 0.0, -2.5, 1000.0])
def test_a_constant_dimension_has_one_id_and_decodes_to_its_value(value):
    """Statistics without min/max (our checkpoints before they were kept): the earlier rule."""
    stats = NormStats(np.array([-0.5, value]), np.array([0.5, value]), np.array([True, True]))
    tokenizer = ActionTokenizer(VOCAB, stats)
    ids = tokenizer.encode(np.array([[0.1, value], [0.1, value + 1e-3], [0.1, value - 1e-3]]))
    np.testing.assert_array_equal(ids[:, 1], VOCAB - 1)  # the BOUNDS_Q99 formula's id for the value itself (-1)
    assert ids[0, 1] == openvla_reference_ids(np.array([[0.1, value]]), stats.q01, stats.q99, stats.mask)[0, 1]
    decoded = tokenizer.decode(ids)
    np.testing.assert_array_equal(decoded[:, 1], np.float32(value))
    np.testing.assert_array_equal(tokenizer.encode(decoded), ids)  # the float32 constant re-encodes the same
    # a dimension that is constant up to float rounding counts as constant
    near = ActionTokenizer(VOCAB, NormStats(np.array([value]), np.array([value + 1e-12]), np.array([True])))
    assert near.encode(near.decode(np.array([VOCAB - 1])))[0] == VOCAB - 1


# The reviewer's three cases for dimensions that (almost) do not vary, with OpenVLA-layout statistics
# (min and max given); value is the dimension's typical value. Each: (q01, q99, min, max, inputs).
NEARLY_CONSTANT = {
    "min == max": lambda v: (v, v, v, v, [v, v + 1e-3]),
    "q01 == q99 < max": lambda v: (v, v, v, v + 1.0, [v + 1e-3, v, v - 1e-3]),
    "range 5e-7": lambda v: (v, v + 5e-7, v - 1.0, v + 1.0, [v, v + 2.5e-7, v + 5e-7]),
}


@pytest.mark.parametrize("value", [0.0, 0.3, -2.5])
@pytest.mark.parametrize("case", sorted(NEARLY_CONSTANT))
def test_openvla_statistics_give_openvlas_ids_to_dimensions_that_do_not_vary(case, value):
    q01, q99, low, high, inputs = NEARLY_CONSTANT[case](value)
    # dimension 0 varies (q01 -0.5, q99 0.5, input 0.1); dimension 1 is the case's
    low, high = np.array([-0.6, low]), np.array([0.6, high])
    stats = NormStats.from_dict({"q01": [-0.5, q01], "q99": [0.5, q99], "min": low.tolist(), "max": high.tolist(),
                                 "mask": [True, True]})
    actions = np.array([[0.1, x] for x in inputs])
    expected = openvla_reference_ids(actions, stats.q01, stats.q99, stats.mask, low=low, high=high)
    tokenizer = ActionTokenizer(VOCAB, stats)
    np.testing.assert_array_equal(tokenizer.encode(actions), expected)
    if value == 0.0:  # the ids the reviewer derived from OpenVLA's code, as a check on the reference above
        if case == "min == max":  # both dimensions of the first input
            assert expected[0].tolist() == [31847, 31872]
        else:
            assert expected[:, 1].tolist() == {"q01 == q99 < max": [31744, 31999, 31999],
                                               "range 5e-7": [31999, 31874, 31749]}[case]
    # decoding is unchanged: the dimension decodes to q01 (OpenVLA's formula: q01 + a fraction of 5e-7)
    np.testing.assert_array_equal(tokenizer.decode(expected)[:, 1], np.float32(q01))


def test_a_masked_dimension_with_min_equal_max_is_zeroed_as_in_openvla():
    """normalize_action_and_proprio zeroes min == max dimensions whatever the mask (a gripper that never moved)."""
    low, high = [-0.6, 1.0], [0.6, 1.0]
    stats = NormStats.from_dict({"q01": [-0.5, 1.0], "q99": [0.5, 1.0], "min": low, "max": high,
                                 "mask": [True, False]})
    actions = np.array([[0.1, 1.0], [0.1, -1.0]])
    ids = ActionTokenizer(VOCAB, stats).encode(actions)
    np.testing.assert_array_equal(ids, openvla_reference_ids(actions, stats.q01, stats.q99, stats.mask,
                                                             low=low, high=high))
    assert ids[:, 1].tolist() == [VOCAB - 128, VOCAB - 128]


def test_min_and_max_are_kept_computed_and_saved():
    openvla_layout = {"q01": [-0.5, 0.0], "q99": [0.5, 0.0], "min": [-0.6, 0.0], "max": [0.6, 0.0],
                      "mask": [True, False], "mean": [0.0, 0.0], "std": [1.0, 0.0]}
    stats = NormStats.from_dict(openvla_layout)
    np.testing.assert_array_equal(stats.min, [-0.6, 0.0])
    np.testing.assert_array_equal(stats.max, [0.6, 0.0])
    assert NormStats.from_dict(stats.to_dict()).to_dict() == stats.to_dict()
    assert {"min", "max"} <= set(stats.to_dict())
    actions = np.random.default_rng(4).normal(size=(500, 3))
    actions[:, 1] = 0.25  # a dimension the data never moves
    computed = NormStats.from_actions(actions)
    np.testing.assert_array_equal(computed.min, actions.min(0))
    np.testing.assert_array_equal(computed.max, actions.max(0))
    assert ActionTokenizer(VOCAB, computed).encode(actions[:2])[:, 1].tolist() == [VOCAB - 128] * 2
    with pytest.raises(ValueError, match="'min' without 'max'"):
        NormStats.from_dict({"q01": [0.0], "q99": [1.0], "min": [0.0]})
    with pytest.raises(ValueError, match="max < min"):
        NormStats.from_dict({"q01": [0.0], "q99": [1.0], "min": [1.0], "max": [0.0]})
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        NormStats.from_dict({"q01": [0.0], "q99": [1.0], "min": [0.0, 0.0], "max": [1.0, 1.0]})


def test_statistics_saved_without_min_and_max_tokenise_as_before():
    """Our checkpoints' norm_stats.json before min/max were kept: a constant dimension keeps id VOCAB - 1."""
    saved = {"q01": [-0.5, 0.3], "q99": [0.5, 0.3], "mask": [True, True]}
    stats = NormStats.from_dict(saved)
    assert NormStats.from_dict(stats.to_dict()).to_dict() == saved  # nothing added on saving again
    ids = ActionTokenizer(VOCAB, stats).encode(np.array([[0.1, 0.3], [0.1, 0.4]]))
    assert ids[:, 1].tolist() == [VOCAB - 1, VOCAB - 1]


def test_token_ids_must_be_whole_numbers(stats):
    tokenizer = ActionTokenizer(VOCAB, stats)
    with pytest.raises(ValueError, match="whole numbers"):
        tokenizer.decode(np.full(7, 31999.9))  # was truncated to 31999
    with pytest.raises(ValueError, match="whole numbers"):
        tokenizer.decode(np.full(7, np.nan))
    with pytest.raises(ValueError, match="whole numbers"):
        tokenizer.decode(np.full(7, True))
    np.testing.assert_array_equal(tokenizer.decode(np.full(7, 31999.0)), tokenizer.decode(np.full(7, 31999)))


def test_a_scalar_is_not_an_action(stats):
    """A 0-d array has no action axis: refused with a ValueError (it was an IndexError)."""
    tokenizer = ActionTokenizer(VOCAB, stats)
    one_dim = ActionTokenizer(VOCAB, NormStats.from_dict({"q01": [-1.0], "q99": [1.0]}))
    for call, value in ((tokenizer.encode, 0.1), (one_dim.encode, 0.1), (tokenizer.decode, 31999),
                        (one_dim.decode, 31999)):
        with pytest.raises(ValueError, match="got the scalar"):
            call(np.array(value))
    assert one_dim.encode(np.array([0.1])).shape == (1,)


@pytest.mark.parametrize("mask", [["false"], [0], [1.0], ["true"]])
def test_a_mask_must_be_booleans(mask):
    with pytest.raises(ValueError, match="mask must hold booleans"):
        NormStats.from_dict({"q01": [0.0], "q99": [1.0], "mask": mask})
    assert NormStats.from_dict({"q01": [0.0], "q99": [1.0], "mask": [False]}).mask.tolist() == [False]
