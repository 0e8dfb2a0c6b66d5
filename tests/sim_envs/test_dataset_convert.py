"""sim_envs.dataset_convert on tiny hand-written files in the published LIBERO and robomimic layouts.

Raw images are black with a bright marker near the top-left (the raw, upside-down render), so where the
marker lands after conversion shows which flip was applied."""

import json

import h5py
import numpy as np
import pytest

from scipy.spatial.transform import Rotation

from sim_envs.dataset_convert import EE_ORI_CONVENTION, convert_directory, convert_hdf5, resize_images
from vla_rl.core.demo_file import read_demo_file
from vla_rl.policy.sft import load_demos

INSTRUCTION = "pick up the black bowl and place it on the plate"
STEPS = (5, 7, 6)
MARK = (1, 2)  # (row, column) of the marker in the raw agent-view image
# quaternion (x, y, z, w) of 90 degrees about x, stored with w < 0 in demo_1 (same rotation)
EE_ORI = np.array([np.pi + 0.2, 0.1, -0.05])  # LIBERO's ee_ori: axis-angle, angle in [0, 2 pi]
QUAT_X90 = np.array([np.sin(np.pi / 4), 0.0, 0.0, np.cos(np.pi / 4)])


def raw_images(steps, size, mark=MARK):
    images = np.zeros((steps, size, size, 3), np.uint8)
    images[:, mark[0], mark[1]] = 255
    images[:, :, :, 2] = np.arange(steps, dtype=np.uint8)[:, None, None]  # blue channel = step
    return images


def actions_for(demo, steps):
    # float32-representable values stored as float64 (as LIBERO does), so "unchanged" is exact equality
    return np.random.default_rng(demo).uniform(-1, 1, (steps, 7)).astype(np.float32).astype(np.float64)


def write_libero(path, size=16, steps=STEPS, nan_demo=None, problem_info=True):
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if problem_info:
            data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop",
                                                     "language_instruction": INSTRUCTION})
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Tabletop_Manipulation"})
        data.attrs["bddl_file_name"] = "pick_up_the_black_bowl.bddl"
        data.attrs["num_demos"] = len(steps)
        for demo, length in enumerate(steps):
            group = data.create_group(f"demo_{demo}")
            actions = actions_for(demo, length)
            if demo == nan_demo:
                actions[2, 3] = np.nan
            group["actions"] = actions
            group["states"] = np.arange(length * 4, dtype=np.float64).reshape(length, 4)
            group["rewards"] = np.eye(length)[-1]
            group["dones"] = np.eye(length, dtype=np.uint8)[-1]
            obs = group.create_group("obs")
            obs["agentview_rgb"] = raw_images(length, size)
            obs["eye_in_hand_rgb"] = raw_images(length, size, mark=(0, 0))
            obs["ee_pos"] = np.tile([0.1, -0.2, 0.9], (length, 1))
            # robosuite's quat2axisangle of a gripper near "down" (half a turn about x): angle above pi
            obs["ee_ori"] = np.tile(EE_ORI, (length, 1))
            obs["ee_states"] = np.concatenate([obs["ee_pos"][()], obs["ee_ori"][()]], axis=1)
            obs["gripper_states"] = np.tile([0.04, -0.04], (length, 1))
            obs["joint_states"] = np.tile(np.arange(7) / 10, (length, 1))
    return path


def write_robomimic(path, size=32, steps=STEPS, drop_obs=None):
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {"camera_heights": size}})
        data.attrs["total"] = sum(steps)
        for demo, length in enumerate(steps):
            group = data.create_group(f"demo_{demo}")
            group["actions"] = actions_for(10 + demo, length)
            group["states"] = np.zeros((length, 9))
            group["rewards"] = np.eye(length)[-1]
            group["dones"] = np.eye(length, dtype=np.int64)[-1]
            obs = group.create_group("obs")
            images = raw_images(length, size)
            images[:, 4:6, 6:8, 0] = 200  # a 2x2 block: averages exactly when halving the size
            obs["agentview_image"] = images
            obs["robot0_eye_in_hand_image"] = raw_images(length, size, mark=(0, 0))
            obs["robot0_eef_pos"] = np.tile([0.0, 0.1, 1.0], (length, 1))
            obs["robot0_eef_quat"] = np.tile(QUAT_X90 * (-1 if demo == 1 else 1), (length, 1))
            obs["robot0_gripper_qpos"] = np.tile([0.02, -0.02], (length, 1))
            obs["robot0_joint_pos"] = np.zeros((length, 7))
            if drop_obs:
                del obs[drop_obs]
        mask = f.create_group("mask")
        mask["train"] = np.array([b"demo_0", b"demo_2"])
        mask["valid"] = np.array([b"demo_1"])
    return path


def from_down(rotvec):
    """The rotation vector from the Panda pointing down (half a turn about x) to ``rotvec``, by scipy."""
    return (Rotation.from_rotvec(rotvec) * Rotation.from_rotvec([np.pi, 0, 0]).inv()).as_rotvec()


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith("_demo.hdf5"))


def test_libero_file_converts_with_180_degree_rotation_and_loads_for_sft(tmp_path):
    source = write_libero(tmp_path / "pick_up_the_black_bowl_demo.hdf5")
    out = tmp_path / "out"
    summary = convert_hdf5(source, out, show_progress=False)
    assert summary == {"task": "pick_up_the_black_bowl", "instruction": INSTRUCTION, "demos": 3,
                       "samples": sum(STEPS), "file": str(out / "pick_up_the_black_bowl_demo.hdf5"),
                       "layout": "libero", "flip": "libero", "source_image_size": [16, 16], "image_size": [16, 16]}
    episodes = list(read_demo_file(out / "pick_up_the_black_bowl_demo.hdf5"))
    assert [e.num_steps for e in episodes] == list(STEPS)
    for demo, episode in enumerate(episodes):
        assert episode.instruction == INSTRUCTION and episode.task == "pick_up_the_black_bowl" and episode.success
        np.testing.assert_array_equal(episode.actions, actions_for(demo, STEPS[demo]).astype(np.float32))
        assert episode.actions.dtype == np.float32
        image = episode.obs["agentview_rgb"]
        assert image.shape == (STEPS[demo], 16, 16, 3) and image.dtype == np.uint8
        # rotated by 180 degrees: raw (1, 2) -> (16-1-1, 16-1-2)
        assert image[0, 14, 13, 0] == 255 and image[0, :, :, 0].sum() == 255
        assert episode.obs["eye_in_hand_rgb"][0, 15, 15, 0] == 255
        np.testing.assert_array_equal(image[:, 0, 0, 2], np.arange(STEPS[demo]))  # frames keep their order
        # as the rotation from the Panda's "pointing down" (half a turn about x): small
        np.testing.assert_allclose(episode.obs["ee_ori"], np.tile(from_down(EE_ORI), (STEPS[demo], 1)), atol=1e-6)
        assert np.abs(episode.obs["ee_ori"]).max() < 0.3
        np.testing.assert_allclose(episode.obs["ee_pos"][0], [0.1, -0.2, 0.9], atol=1e-7)
        assert episode.obs["gripper_states"].shape == (STEPS[demo], 2)
        assert episode.obs["joint_states"].shape == (STEPS[demo], 7)
        assert episode.states.shape == (STEPS[demo], 4)
    with h5py.File(out / "pick_up_the_black_bowl_demo.hdf5", "r") as f:
        data = f["data"]
        assert data.attrs["source_layout"] == "libero" and data.attrs["flip"] == "libero"
        assert data.attrs["source_path"] == str(source.resolve())
        assert data.attrs["ee_ori_convention"] == EE_ORI_CONVENTION
        assert list(data.attrs["source_image_size"]) == [16, 16] and data.attrs["total"] == sum(STEPS)
        assert json.loads(data.attrs["env_args"])["source_env_args"]["env_name"] == "Libero_Tabletop_Manipulation"
        assert [data[f"demo_{i}"].attrs["source_demo"] for i in range(3)] == ["demo_0", "demo_1", "demo_2"]
        np.testing.assert_array_equal(data["demo_1/dones"][()], np.eye(STEPS[1])[-1])
    demos = load_demos(out, chunk_size=4)
    assert len(demos) == sum(STEPS) and demos.episodes == 3
    assert demos.instructions == [INSTRUCTION] and demos.tasks == ["pick_up_the_black_bowl"]
    agentview = demos.images["agentview"]
    assert agentview.shape == (sum(STEPS), 16, 16, 3) and np.all(agentview[:, 14, 13, 0] == 255)
    np.testing.assert_array_equal(demos.chunks[0, 0], actions_for(0, STEPS[0])[0].astype(np.float32))
    assert leftovers(out) == []  # no scratch or partial files


def test_robomimic_file_flips_vertically_resizes_and_converts_the_quaternion(tmp_path):
    source = write_robomimic(tmp_path / "image.hdf5")
    summary = convert_hdf5(source, tmp_path / "out", task="lift", instruction="  lift the  red cube ",
                           image_size=16, show_progress=False)
    assert summary["layout"] == "robomimic" and summary["flip"] == "robosuite"
    assert summary["instruction"] == "lift the red cube"
    assert summary["source_image_size"] == [32, 32] and summary["image_size"] == [16, 16]
    episodes = list(read_demo_file(tmp_path / "out" / "lift_demo.hdf5"))
    assert len(episodes) == 3
    for demo, episode in enumerate(episodes):
        image = episode.obs["agentview_rgb"]
        assert image.shape == (STEPS[demo], 16, 16, 3)
        # vertical flip: raw rows 4:6 -> 26:28, halved -> row 13; columns 6:8 -> 3
        assert image[0, 13, 3, 0] == 200
        # single 255 marker at raw (1, 2) -> flipped (30, 2) -> box of 4 pixels -> (15, 1), 255/4 rounded
        assert image[0, 15, 1, 0] == 64
        assert episode.obs["eye_in_hand_rgb"].shape == (STEPS[demo], 16, 16, 3)
        np.testing.assert_array_equal(episode.actions, actions_for(10 + demo, STEPS[demo]).astype(np.float32))
        # 90 degrees about x is -90 degrees about x from "pointing down", whichever sign the quaternion has
        np.testing.assert_allclose(episode.obs["ee_ori"], np.tile([-np.pi / 2, 0, 0], (STEPS[demo], 1)), atol=1e-6)
        np.testing.assert_allclose(episode.obs["gripper_states"][0], [0.02, -0.02], atol=1e-7)
    demos = load_demos(tmp_path / "out", chunk_size=2, tasks=("lift",))
    assert demos.instructions == ["lift the red cube"] and len(demos) == sum(STEPS)


def test_flip_override_and_resize_helpers():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    # shrinking: exact block means (8x12 -> 4x4 is 2x3 blocks)
    expected = images.reshape(3, 4, 2, 4, 3, 3).astype(np.float64).mean(axis=(2, 4))
    np.testing.assert_array_equal(resize_images(images, 4), np.round(expected).astype(np.uint8))
    assert resize_images(images, 20).shape == (3, 20, 20, 3)  # enlarging works too


def test_flip_none_keeps_the_raw_orientation(tmp_path):
    source = write_libero(tmp_path / "task_demo.hdf5", steps=(5,))
    convert_hdf5(source, tmp_path / "out", flip="none", show_progress=False)
    (episode,) = read_demo_file(tmp_path / "out" / "task_demo.hdf5")
    np.testing.assert_array_equal(episode.obs["agentview_rgb"], raw_images(5, 16))
    with pytest.raises(ValueError, match="valid: auto, libero, robosuite, none"):
        convert_hdf5(source, tmp_path / "out", flip="upside_down")


def test_mask_and_max_demos_select_demos(tmp_path):
    source = write_robomimic(tmp_path / "image.hdf5", size=16)
    summary = convert_hdf5(source, tmp_path / "train", instruction="lift", mask="train", show_progress=False)
    assert summary["demos"] == 2 and summary["samples"] == STEPS[0] + STEPS[2]
    with h5py.File(summary["file"], "r") as f:
        assert [f[f"data/demo_{i}"].attrs["source_demo"] for i in range(2)] == ["demo_0", "demo_2"]
        assert f["data"].attrs["source_mask"] == "train"
    assert convert_hdf5(source, tmp_path / "valid", instruction="lift", mask="valid", show_progress=False)["demos"] == 1
    first = convert_hdf5(source, tmp_path / "first", instruction="lift", max_demos=1, show_progress=False)
    assert first["demos"] == 1 and first["samples"] == STEPS[0]
    with pytest.raises(ValueError, match=r"no demo filter mask/test; filters present: \['train', 'valid'\]"):
        convert_hdf5(source, tmp_path / "x", instruction="lift", mask="test", show_progress=False)


def test_convert_directory_converts_every_file_of_a_suite(tmp_path):
    suite = tmp_path / "libero_spatial"
    suite.mkdir()
    write_libero(suite / "pick_up_the_bowl_demo.hdf5", steps=(5, 6))
    write_libero(suite / "open_the_drawer_demo.hdf5", steps=(7,))
    summaries = convert_directory(suite, tmp_path / "out", image_size=8, show_progress=False)
    assert [s["task"] for s in summaries] == ["open_the_drawer", "pick_up_the_bowl"]
    demos = load_demos(tmp_path / "out", chunk_size=3)
    assert demos.tasks == ["open_the_drawer", "pick_up_the_bowl"] and len(demos) == 18
    assert demos.images["agentview"].shape[1:] == (8, 8, 3)
    with pytest.raises(ValueError, match="overwrite the source"):
        convert_hdf5(suite / "open_the_drawer_demo.hdf5", suite, show_progress=False)


def test_unknown_layout_and_our_own_format_are_rejected(tmp_path):
    path = tmp_path / "mystery.hdf5"
    with h5py.File(path, "w") as f:
        f["data/demo_0/actions"] = np.zeros((3, 7))
        f["data/demo_0/obs/camera"] = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"neither the LIBERO nor the robomimic layout.*\['camera'\]"):
        convert_hdf5(path, tmp_path / "out", instruction="x", show_progress=False)
    with h5py.File(tmp_path / "empty.hdf5", "w") as f:
        f["observations"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"no 'data' group \(top-level keys: \['observations'\]\)"):
        convert_hdf5(tmp_path / "empty.hdf5", tmp_path / "out", show_progress=False)
    convert_hdf5(write_libero(tmp_path / "t_demo.hdf5", steps=(5,)), tmp_path / "ours", show_progress=False)
    with pytest.raises(ValueError, match="already in our demo format"):
        convert_hdf5(tmp_path / "ours" / "t_demo.hdf5", tmp_path / "again", show_progress=False)


def test_robomimic_needs_an_instruction(tmp_path):
    source = write_robomimic(tmp_path / "image.hdf5", size=16)
    with pytest.raises(ValueError, match="pass --instruction"):
        convert_hdf5(source, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists() or leftovers(tmp_path / "out") == []


def test_nan_action_names_the_demo_and_writes_nothing(tmp_path):
    source = write_libero(tmp_path / "task_demo.hdf5", nan_demo=1)
    with pytest.raises(ValueError, match=r"demo_1: actions must be finite floats; non-finite at steps \[2\]"):
        convert_hdf5(source, tmp_path / "out", show_progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_image_key_lists_the_keys_present(tmp_path):
    source = write_robomimic(tmp_path / "image.hdf5", size=16, drop_obs="agentview_image")
    expected = r"missing image obs \['agentview_image'\]; obs keys present: .*robot0_eef_pos"
    with pytest.raises(ValueError, match=expected):
        convert_hdf5(source, tmp_path / "out", instruction="lift", show_progress=False)


def test_convert_demos_refuses_an_out_that_is_a_file_in_one_line(tmp_path, capsys):
    from vla_rl.cli.main import main

    write_libero(tmp_path / "libero_demo.hdf5")
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    assert main(["convert-demos", str(tmp_path / "libero_demo.hdf5"), "--out", str(taken)]) == 2
    assert f"--out {taken} is an existing file, not a directory" in capsys.readouterr().err
    assert taken.read_text() == "a file\n"
    assert main(["convert-demos", str(tmp_path / "libero_demo.hdf5"), "--out", str(tmp_path / "out")]) == 0
