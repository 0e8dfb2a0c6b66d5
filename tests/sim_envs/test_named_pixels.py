"""Localiser labels: where the instruction's named objects are in the agent-view image."""

import numpy as np
import pytest

from vla_rl.core.demo_file import GRIPPER_PIXELS_OBS_KEY, NAMED_PIXELS_OBS_KEY, read_demo_file, write_demo_file

from sim_envs.demos import label_demo_file, run_expert_episode
from sim_envs.scene import COLORS
from sim_envs.tabletop_env import TabletopEnv
from sim_envs.tasks import TASKS


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette colour whose direction in RGB is closest (shading scales brightness only)."""
    unit = rgb / (np.linalg.norm(rgb) + 1e-9)
    return max(COLORS, key=lambda name: float(unit @ (np.asarray(COLORS[name]) / np.linalg.norm(COLORS[name]))))


def named_colours(task: str, layout: dict) -> tuple[str, str]:
    """The colours the instruction names for the object and its goal, from the layout."""
    if task in ("Reach", "Lift"):
        return layout["colors"][layout["target"]], layout["colors"][layout["target"]]
    if task == "Stack":
        return layout["colors"][layout["target"]], layout["colors"][layout["base"]]
    if task in ("Push", "PickPlace"):
        return layout["colors"][0], layout["colors"][2]
    if task == "OpenDrawer":
        colour = layout["handle_colors"][layout["target"]]
        return colour, colour
    return layout["colors"][layout["target"]], layout["colors"][layout["target"]]


@pytest.mark.parametrize("task", list(TASKS))
def test_labels_land_on_the_named_objects(task):
    """At each label the rendered pixel has the named object's colour, in 5 held-out scenes."""
    env = TabletopEnv(task, image_size=128, wrist_camera=False)
    for state in range(5):
        obs, _ = env.reset(options={"init_state_id": state, "split": "eval"})
        pixels = env.named_pixels()
        assert pixels.shape == (2, 2) and ((pixels >= 0) & (pixels < 128)).all(), pixels
        for (column, row), colour in zip(pixels, named_colours(task, env.layout)):
            seen = obs["agentview_image"][int(row), int(column)].astype(float)
            assert nearest_colour(seen) == colour, (task, state, colour, seen)
    env.close()


def test_labels_follow_a_lifted_block():
    """Labels are of the current state: the expert's Lift raises the block, so its label moves up."""
    env = TabletopEnv("Lift", image_size=64, wrist_camera=False)
    episode, _ = run_expert_episode(env, 0, "train")
    labels = episode.named_pixels(gripper=True)
    assert episode.success and labels.shape == (episode.num_steps, 3, 2)
    np.testing.assert_array_equal(labels[:, :2], episode.named_pixels())
    assert labels[-1, 0, 1] < labels[0, 0, 1] - 2  # rows grow downwards: lifted = a smaller row
    # the gripper point: at the block while grasping (a few pixels: the grip site is at the block's
    # centre, the block's label too), and both rise together when lifting
    closest = np.linalg.norm(labels[:, 2] - labels[:, 0], axis=1).min()
    assert closest < 1.5, closest
    assert labels[-1, 2, 1] < labels[0, 0, 1] - 2
    env.close()


def test_the_gripper_label_follows_the_grip_site():
    """Moving the grip site down towards the table moves its label down the image."""
    env = TabletopEnv("Reach", image_size=64, wrist_camera=False)
    env.reset(options={"init_state_id": 0, "split": "eval"})
    before = env.gripper_pixels()
    for _ in range(3):
        env.step(np.array([0, 0, -1, 0, 0, 0, -1], np.float32))  # down, towards the table
    after = env.gripper_pixels()
    assert after.shape == (2,) and np.linalg.norm(after - before) > 2
    assert after[1] > before[1]  # lower in the world: lower in the image (the camera looks down at the table)
    env.close()


def test_files_recorded_without_labels_get_the_same_labels_from_their_states(tmp_path):
    env = TabletopEnv("Push", image_size=64, wrist_camera=False)
    episodes = [run_expert_episode(env, i, "train")[0] for i in range(2)]
    env.close()
    recorded = [episode.obs.pop(NAMED_PIXELS_OBS_KEY) for episode in episodes]
    gripper = [episode.obs.pop(GRIPPER_PIXELS_OBS_KEY) for episode in episodes]
    path = write_demo_file(tmp_path / "Push_demo.hdf5", episodes, {"env_name": "Push", "suite": "tabletop"})
    with pytest.raises(KeyError, match="--label"):
        next(read_demo_file(path)).named_pixels()
    assert label_demo_file(path) and not label_demo_file(path)
    # mj_step leaves body positions one substep behind qpos (as the rendered image is); the replay's
    # mj_forward does not, so moving objects differ by a few hundredths of a pixel
    for episode, labels, grip in zip(read_demo_file(path), recorded, gripper):
        np.testing.assert_allclose(episode.named_pixels(), labels, atol=0.1)
        np.testing.assert_allclose(episode.obs[GRIPPER_PIXELS_OBS_KEY], grip, atol=0.1)
    write_demo_file(tmp_path / "other.hdf5", episodes, {"env_name": "lift", "suite": "libero_spatial"})
    with pytest.raises(ValueError, match="tabletop"):
        label_demo_file(tmp_path / "other.hdf5")
