import h5py
import numpy as np
import pytest

from vla_rl.core.demo_file import Episode, read_demo_file, write_demo_file


def episode(steps=4, seed=0):
    rng = np.random.default_rng(seed)
    return Episode(
        instruction="lift the red block", task="Lift", actions=rng.uniform(-1, 1, (steps, 7)).astype(np.float32),
        rewards=np.zeros(steps, np.float32), obs={"agentview_rgb": rng.integers(0, 255, (steps, 8, 8, 3), np.uint8),
                                                  "ee_pos": rng.normal(size=(steps, 3)).astype(np.float32)},
        states=rng.normal(size=(steps, 5)), success=True, init_state_id=seed,
    )


def test_roundtrip_in_robomimic_layout(tmp_path):
    path = write_demo_file(tmp_path / "Lift_demo.hdf5", [episode(4, 0), episode(6, 1)], {"env_name": "Lift"})
    assert not list(tmp_path.glob("*.tmp"))
    with h5py.File(path) as f:
        assert f["data"].attrs["total"] == 10
        assert f["data/demo_1/obs/agentview_rgb"].shape == (6, 8, 8, 3)
        assert f["data/demo_0/dones"][()].tolist() == [0, 0, 0, 1]
    back = list(read_demo_file(path))
    assert [e.num_steps for e in back] == [4, 6]
    np.testing.assert_array_equal(back[1].actions, episode(6, 1).actions)
    assert back[0].instruction == "lift the red block" and back[1].init_state_id == 1


def test_episode_lengths_must_agree_and_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        Episode("x", "Lift", np.zeros((3, 7)), np.zeros(2), {}, np.zeros((3, 1)), True)
    with pytest.raises(FileNotFoundError):
        list(read_demo_file(tmp_path / "none.hdf5"))
    with h5py.File(tmp_path / "other.hdf5", "w") as f:
        f.create_group("something")
    with pytest.raises(ValueError, match="'data'"):
        list(read_demo_file(tmp_path / "other.hdf5"))


def test_files_with_another_orientation_convention_are_refused(tmp_path):
    """Demo files whose ee_ori is not the live proprio's orientation (rotation from pointing down):
    converted before convert-demos converted orientations, or LIBERO's own files, are named."""
    from vla_rl.core.demo_file import check_orientation_convention

    ours = write_demo_file(tmp_path / "Lift_demo.hdf5", [episode()], {"env_name": "Lift"})
    check_orientation_convention(ours)  # collected by us: fine
    cases = {"old": {"converter": "sim_envs.dataset_convert"},
             "libero": {"bddl_file_name": "libero_goal/open_the_drawer.bddl"},
             "new": {"converter": "sim_envs.dataset_convert", "ee_ori_convention": "rotation from down"}}
    for name, attrs in cases.items():
        path = write_demo_file(tmp_path / f"{name}_demo.hdf5", [episode()], {"env_name": "Lift"})
        with h5py.File(path, "a") as f:
            f["data"].attrs.update(attrs)
        if name == "new":
            check_orientation_convention(path)
            continue
        with pytest.raises(ValueError, match="convert-demos") as error:
            check_orientation_convention(path)
        assert str(path) in str(error.value)


def test_damaged_or_foreign_files_are_named_in_one_line_errors(tmp_path):
    """A truncated demo file, a file that is not HDF5 and a directory are ValueErrors naming the file, not
    h5py's bare OSError."""
    from vla_rl.core.hdf5_file import open_hdf5

    path = write_demo_file(tmp_path / "Lift_demo.hdf5", [episode(4, 0), episode(6, 1)], {"env_name": "Lift"})
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{truncated} is not a readable HDF5 file: truncated"):
        list(read_demo_file(truncated))
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_text("not hdf5\n")
    with pytest.raises(ValueError, match=f"{garbage} is not a readable HDF5 file: no HDF5 signature"):
        list(read_demo_file(garbage))
    with pytest.raises(ValueError, match="it is a directory"):
        open_hdf5(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.hdf5 does not exist"):
        open_hdf5(tmp_path / "missing.hdf5")
