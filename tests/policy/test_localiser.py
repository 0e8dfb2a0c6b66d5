import numpy as np
import torch

from vla_rl.policy.localiser import expected_pixels, localisation_loss
from vla_rl.policy.sft import random_shift


def test_expected_pixels_of_a_peaked_map_is_that_pixel_centre():
    logits = torch.full((1, 2, 16 * 16), -1e4)
    logits[0, 0, 3 * 16 + 5] = 0.0  # row 3, column 5
    logits[0, 1, 15 * 16 + 0] = 0.0
    torch.testing.assert_close(expected_pixels(logits, 16), torch.tensor([[[5.5, 3.5], [0.5, 15.5]]]))


def test_localisation_loss_is_lowest_at_the_label_and_ignores_labels_outside_the_image():
    labels = torch.tensor([[[5.5, 3.5], [40.0, 3.0]]])  # the second point lies outside a 16-pixel image
    right, wrong = torch.full((1, 2, 256), -10.0), torch.full((1, 2, 256), -10.0)
    right[0, 0, 3 * 16 + 5] = 10.0
    wrong[0, 0, 9 * 16 + 9] = 10.0
    loss_right, error_right = localisation_loss(right, labels, 16)
    loss_wrong, error_wrong = localisation_loss(wrong, labels, 16)
    assert loss_right < loss_wrong and error_right < 0.01 and abs(error_wrong - np.hypot(4, 6)) < 0.01
    moved_outside = right.clone()
    moved_outside[0, 1] = torch.randn(256)  # the ignored point's map does not count
    assert torch.isclose(localisation_loss(moved_outside, labels, 16)[0], loss_right)


def test_random_shift_moves_labels_with_their_image():
    images = torch.zeros((6, 16, 16, 3), dtype=torch.uint8)
    images[:, 7, 4] = 255  # one bright pixel at column 4, row 7
    labels = torch.tensor([[4.5, 7.5]]).expand(6, 1, 2)
    shifted, moved = random_shift(images, 3, torch.Generator().manual_seed(0), labels)
    assert moved.shape == labels.shape and not torch.equal(moved, labels)
    for image, (column, row) in zip(shifted, moved[:, 0]):
        assert image[int(row), int(column)].tolist() == [255, 255, 255]


def test_the_gripper_projection_fitted_to_labelled_positions_reproduces_the_camera():
    """Hand-eye calibration from data: fitted to the simulator's own projections of 40 workspace
    points, the pinhole matches the camera on 40 other points, some beyond the fitted range."""
    import numpy as np
    import pytest
    import torch

    from sim_envs.tabletop_env import TabletopEnv, project_to_pixels
    from tests.policy.conftest import tiny_config
    from vla_rl.policy.model import VLAModel

    env = TabletopEnv("Reach", image_size=64, wrist_camera=False)
    env.reset(options={"init_state_id": 0, "split": "eval"})
    rng = np.random.default_rng(0)
    low, high = np.array([-0.2, -0.28, 0.01]), np.array([0.24, 0.2, 0.25])  # the demos' EE positions
    fit_points, test_points = rng.uniform(low, high, (40, 3)), rng.uniform(low - 0.05, high + 0.05, (40, 3))
    fit_pixels = project_to_pixels(env.model, env.data, "agentview", fit_points, 64)
    test_pixels = project_to_pixels(env.model, env.data, "agentview", test_points, 64)
    env.close()
    model = VLAModel(tiny_config(localiser_points=2, localiser_gripper=True, gripper_from_proprio=True,
                                 image_tokens=False, proprio_dim=8, localiser_channels=8))
    with pytest.raises(RuntimeError, match="never fitted"):
        model.project_gripper(torch.zeros(1, 3))
    residual = model.fit_gripper_projection(fit_points, fit_pixels)
    assert residual["max_pixels"] < 0.01, residual
    predicted = model.project_gripper(torch.as_tensor(test_points, dtype=torch.float32)).numpy()
    assert np.abs(predicted - test_pixels).max() < 0.02
    with pytest.raises(ValueError, match="gripper_from_proprio needs"):
        tiny_config(localiser_points=2, gripper_from_proprio=True, proprio_dim=8)  # no gripper point
