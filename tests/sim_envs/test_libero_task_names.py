"""Which LIBERO task a name or a downloaded dataset stands for.

The task-name tests need no LIBERO install; the dataset tests (marked ``libero``) read LIBERO's task
list and BDDL files but build no scene, so they take a few seconds."""

import json

import h5py
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


# ---- downloaded datasets ----------------------------------------------------------------------
def write_libero_dataset(directory, task, file_stem=None, bddl_task=None, steps=(4,)):
    """A tiny dataset of our LIBERO ``task`` as LIBERO's create_dataset.py writes one: named
    ``<LIBERO task name>_demo.hdf5`` (or ``<file_stem>_demo.hdf5``), ``problem_info`` from LIBERO's
    ``get_problem_info`` of the BDDL file (its ``(:language ...)`` text), ``bddl_file_name`` the BDDL
    path on the recording machine (of ``bddl_task`` when given). Returns (path, the dataset's text)."""
    from libero.libero.envs.bddl_utils import get_problem_info

    from sim_envs.libero_env import task_info
    from tests.sim_envs.test_dataset_convert import write_libero

    info = task_info(task)
    recorded = task_info(bddl_task or task)
    problem_info = get_problem_info(info["bddl_file"])
    path = write_libero(directory / f"{file_stem or info['libero_name']}_demo.hdf5", steps=steps)
    suite = recorded["task"].rsplit("_", 1)[0]
    with h5py.File(path, "a") as f:
        f["data"].attrs["problem_info"] = json.dumps(problem_info)
        f["data"].attrs["bddl_file_name"] = f"chiliocosm/bddl_files/{suite}/{recorded['libero_name']}.bddl"
    return path, " ".join(problem_info["language_instruction"].split())


@pytest.mark.libero
def test_libero_90_scenes_that_share_an_instruction_convert_to_their_own_tasks(tmp_path):
    """libero_90_00 (KITCHEN_SCENE10) and libero_90_28 (KITCHEN_SCENE5) are both "close the top drawer
    of the cabinet": by instruction both became libero_90_00 and the second file replaced the first."""
    from sim_envs.dataset_convert import convert_directory
    from sim_envs.libero_env import task_info

    assert task_info("libero_90_00")["instruction"] == task_info("libero_90_28")["instruction"]
    suite_dir = tmp_path / "libero_90"
    suite_dir.mkdir()
    write_libero_dataset(suite_dir, "libero_90_00", steps=(3,))
    write_libero_dataset(suite_dir, "libero_90_28", steps=(5,))
    summaries = convert_directory(suite_dir, tmp_path / "out", show_progress=False)
    assert sorted((s["task"], s["samples"]) for s in summaries) == [("libero_90_00", 3), ("libero_90_28", 5)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["libero_90_00_demo.hdf5", "libero_90_28_demo.hdf5"]


@pytest.mark.libero
def test_the_bddl_file_name_names_the_task_whatever_the_file_is_called(tmp_path):
    from sim_envs.dataset_convert import convert_hdf5
    from sim_envs.libero_env import task_info

    source, dataset_text = write_libero_dataset(tmp_path, "libero_goal_04", file_stem="renamed")
    summary = convert_hdf5(source, tmp_path / "out", show_progress=False)
    assert summary["task"] == "libero_goal_04" and summary["instruction"] == task_info("libero_goal_04")["instruction"]
    with h5py.File(summary["file"]) as f:
        assert f["data"].attrs["source_instruction"] == dataset_text
        assert f["data"].attrs["source_bddl_file_name"].endswith(f"{task_info('libero_goal_04')['libero_name']}.bddl")


@pytest.mark.libero
def test_two_sources_of_one_task_are_refused_naming_both(tmp_path):
    from sim_envs.dataset_convert import convert_directory

    suite_dir = tmp_path / "libero_object"
    suite_dir.mkdir()
    original, _ = write_libero_dataset(suite_dir, "libero_object_02")
    copy, _ = write_libero_dataset(suite_dir, "libero_object_02", file_stem="a_copy")
    with pytest.raises(ValueError, match=f"{copy}.*{original}.*both become task 'libero_object_02'"):
        convert_directory(suite_dir, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()  # refused before converting either


@pytest.mark.libero
def test_a_file_name_and_bddl_file_name_of_different_tasks_are_refused(tmp_path):
    from sim_envs.dataset_convert import convert_hdf5

    source, _ = write_libero_dataset(tmp_path, "libero_spatial_01", bddl_task="libero_spatial_02")
    with pytest.raises(ValueError, match=r"names LIBERO task .*\(libero_spatial_02\) but its file name .*\(libero_spatial_01\)"):
        convert_hdf5(source, tmp_path / "out", show_progress=False)
    # an explicit task settles it
    assert convert_hdf5(source, tmp_path / "out", task="libero_spatial_01", show_progress=False)["demos"] == 1


@pytest.mark.libero
def test_files_of_one_task_given_as_separate_arguments_are_refused_before_converting(tmp_path, capsys):
    """convert-demos a/x_demo.hdf5 b/x_demo.hdf5: both would be written as one task's file, the second replacing
    the first; the clash is checked across arguments, before any file is written."""
    from vla_rl.cli.main import main

    for directory in ("a", "b"):
        (tmp_path / directory).mkdir()
        write_libero_dataset(tmp_path / directory, "libero_spatial_07")
    sources = [str(next((tmp_path / directory).glob("*.hdf5"))) for directory in ("a", "b")]
    assert main(["convert-demos", *sources, "--out", str(tmp_path / "out")]) == 2
    assert "would both become task 'libero_spatial_07'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert main(["convert-demos", sources[0], "--out", str(tmp_path / "out")]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["libero_spatial_07_demo.hdf5"]
