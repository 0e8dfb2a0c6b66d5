"""Task progress: a dense label in [0, 1] that rises along expert demonstrations, is 1.0 exactly on
success, and is about the instruction's target (distractors and random flailing score low)."""

import numpy as np
import pytest

from sim_envs.arm import MAX_POS_DELTA
from sim_envs.experts import make_expert
from sim_envs.tabletop_env import TabletopEnv
from sim_envs.tasks import PROGRESS_CAP, TASKS, body_position

EVAL_STATES = (0, 17, 34)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``values``; tied values share their mean rank."""
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    _, group = np.unique(values, return_inverse=True)
    return (np.bincount(group, weights=ranks) / np.bincount(group))[group]


def spearman_with_time(values) -> float:
    """Spearman rank correlation between ``values`` and their time index."""
    ranks = average_ranks(np.asarray(values, dtype=np.float64))
    if ranks.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks, np.arange(len(ranks)))[0, 1])


def test_spearman_helper():
    assert spearman_with_time([0.0, 0.1, 0.1, 0.5, 1.0]) == pytest.approx(0.9746794)  # scipy.stats.spearmanr
    assert spearman_with_time([3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def run_expert(env: TabletopEnv, init_state_id: int) -> tuple[list[float], bool]:
    """One expert episode; progress of every state (reset included) and whether it succeeded."""
    _, info = env.reset(options={"init_state_id": init_state_id, "split": "eval"})
    assert info["progress"] == env.progress()
    expert = make_expert(env)
    progress, success = [info["progress"]], False
    for _ in range(env.max_episode_steps):
        *_, terminated, truncated, info = env.step(expert.act())
        assert info["progress"] == env.progress()
        progress.append(info["progress"])
        if terminated or truncated:
            success = bool(info["success"])
            break
    return progress, success


@pytest.mark.parametrize("task", list(TASKS))
def test_progress_rises_along_expert_demonstrations(task):
    env = TabletopEnv(task, image_size=32)
    correlations = []
    for init_state_id in EVAL_STATES:
        progress, success = run_expert(env, init_state_id)
        assert success, f"{task} expert failed on eval state {init_state_id}"
        assert all(0.0 <= p <= 1.0 for p in progress)
        assert progress[0] < 0.35, f"{task} starts at progress {progress[0]:.2f}"
        assert progress[-1] == 1.0
        assert max(progress[:-1]) <= PROGRESS_CAP, "only a successful state may score 1.0"
        correlations.append(spearman_with_time(progress))
    env.close()
    assert np.mean(correlations) >= 0.8, f"{task}: Spearman(progress, t) = {np.round(correlations, 3)}"


def servo_to(env: TabletopEnv, goal: np.ndarray, steps: int) -> list[float]:
    """Move the open gripper straight towards ``goal``; progress after every step."""
    progress = []
    for _ in range(steps):
        action = np.zeros(7, np.float32)
        action[:3] = np.clip((goal - env.arm.ee_position()) / MAX_POS_DELTA, -1.0, 1.0)
        action[6] = -1.0
        *_, terminated, _, info = env.step(action)
        progress.append(info["progress"])
        if terminated:
            break
    return progress


def test_reaching_a_distractor_is_not_progress():
    env = TabletopEnv("Reach", image_size=32)
    for init_state_id in (0, 1):
        env.reset(options={"init_state_id": init_state_id, "split": "eval"})
        blocks = range(len(env.layout["colors"]))
        hover = {i: body_position(env.data, f"block{i}") + [0.0, 0.0, 0.03] for i in blocks}
        for block, goal in hover.items():
            env.reset(options={"init_state_id": init_state_id, "split": "eval"})
            progress = servo_to(env, goal, steps=20)
            if block == env.layout["target"]:
                assert progress[-1] == 1.0 and env.is_success()
            else:
                assert max(progress) < 0.5, f"hovering over distractor {block}: progress {max(progress):.2f}"
    env.close()


def test_lifting_a_distractor_is_not_progress():
    """The Lift expert's pick routine aimed at a distractor lifts it, yet progress stays in the reach stage."""
    env = TabletopEnv("Lift", image_size=32)
    env.reset(options={"init_state_id": 1, "split": "eval"})
    expert = make_expert(env)
    progress = [env.step(expert.lift("block1"))[-1]["progress"] for _ in range(40)]
    assert env.data.body("block1").xpos[2] > 0.08, "the distractor should have been lifted"
    assert max(progress) < 0.35
    env.close()


def test_random_actions_make_little_progress():
    rng = np.random.default_rng(0)
    finals = []
    for task in TASKS:
        env = TabletopEnv(task, image_size=32)
        for init_state_id in (0, 1):
            env.reset(options={"init_state_id": init_state_id, "split": "eval"})
            for _ in range(env.max_episode_steps):
                *_, terminated, truncated, info = env.step(rng.uniform(-1.0, 1.0, 7).astype(np.float32))
                assert 0.0 <= info["progress"] <= 1.0
                if terminated or truncated:
                    break
            finals.append(info["progress"])
        env.close()
    assert np.mean(finals) < 0.4, dict(zip(np.repeat(list(TASKS), 2), np.round(finals, 2)))


def test_episodes_record_pixel_labels_of_every_frame_and_keep_them_on_disk(tmp_path):
    from sim_envs.progress_episodes import read_episodes, run_episode, write_episodes

    env = TabletopEnv("Lift", image_size=32)
    try:
        episode = run_episode(env, "Lift", "expert", "train", 0, seed=0)
        last_frame = (env.named_pixels(), env.gripper_pixels())
    finally:
        env.close()
    frames = len(episode.progress)
    assert episode.named_pixels.shape == (frames, 2, 2) and episode.gripper_pixels.shape == (frames, 2)
    np.testing.assert_allclose(episode.named_pixels[-1], last_frame[0])
    np.testing.assert_allclose(episode.gripper_pixels[-1], last_frame[1])
    # the block is lifted: its image row moves up (smaller) while the labels follow it
    assert episode.named_pixels[-1, 0, 1] < episode.named_pixels[0, 0, 1]
    again = next(read_episodes(write_episodes(tmp_path / "episodes.hdf5", [episode])))
    np.testing.assert_array_equal(again.named_pixels, episode.named_pixels)
    np.testing.assert_array_equal(again.gripper_pixels, episode.gripper_pixels)
    assert again.other_instructions == episode.other_instructions and len(again.other_instructions) == 2
    np.testing.assert_array_equal(again.other_progress, episode.other_progress)
    np.testing.assert_array_equal(again.other_named_pixels, episode.other_named_pixels)


def test_the_episode_writer_refuses_a_directory_and_leaves_no_tmp_file_when_writing_fails(tmp_path):
    """`wm imagine --out DIR` ended in IsADirectoryError from the rename, leaving DIR.tmp behind."""
    from sim_envs.progress_episodes import ProgressEpisode, write_episodes

    progress = np.linspace(0, 1, 3).astype(np.float32)
    episode = ProgressEpisode("Reach", "reach the red cube", "expert", "train", 0,
                              np.zeros((3, 8, 8, 3), np.uint8), progress, progress >= 1)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="folder is a directory"):
        write_episodes(tmp_path / "folder", [episode])
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="is a file"):
        write_episodes(tmp_path / "file" / "episodes.hdf5", [episode])
    broken = ProgressEpisode("Reach", "reach the red cube", "expert", "train", 1, None, progress, progress >= 1)
    with pytest.raises(TypeError):
        write_episodes(tmp_path / "episodes.hdf5", [episode, broken])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]


OTHER_OBJECTIVES = {"Reach": 2, "Lift": 2, "Push": 3, "PickPlace": 3, "Stack": 5, "OpenDrawer": 1, "PressButton": 2}


@pytest.mark.parametrize("task", list(TASKS))
def test_other_objectives_name_the_scenes_other_objects_and_are_labelled_along_the_episode(task):
    """The critic's hard negatives: the same scene with another object named. An expert doing the real
    task never completes another one, and each other objective names objects the real one does not."""
    from sim_envs.progress_episodes import run_episode

    env = TabletopEnv(task, image_size=32)
    try:
        episode = run_episode(env, task, "expert", "eval", 5, seed=0)
        others = env.task.other_objectives(env.layout)
    finally:
        env.close()
    assert len(others) == OTHER_OBJECTIVES[task] == len(episode.other_instructions)
    texts = [o["instruction"] for o in others]
    assert len(set(texts)) == len(texts) and episode.instruction not in texts
    for other in others:  # renaming is symmetric: the real objective is one of each other's others
        assert episode.instruction in [o["instruction"] for o in env.task.other_objectives(other)]
    frames = len(episode.progress)
    assert episode.other_progress.shape == (frames, len(others))
    assert episode.other_named_pixels.shape == (frames, len(others), 2, 2)
    assert episode.progress[-1] == 1.0 and (episode.other_progress < 1.0).all()
    # every other objective names at least one other object: its first frame's points differ somewhere
    moved = np.abs(episode.other_named_pixels[0] - episode.named_pixels[0][None]).max(axis=(1, 2))
    assert (moved > 1.0).all(), moved


def test_an_other_objective_is_a_task_the_expert_can_complete():
    """OpenDrawer's expert reads the layout's target: given the other objective, it opens the other
    drawer, which the other objective's labels call success and the real one's do not."""
    env = TabletopEnv("OpenDrawer", image_size=32)
    try:
        env.reset(options={"init_state_id": 2, "split": "eval"})
        real = env.layout
        env.layout = other = env.task.other_objectives(real)[0]
        expert = make_expert(env)
        for _ in range(env.max_episode_steps):
            env.step(expert.act())
            if env.progress(other) == 1.0:
                break
        assert env.progress(other) == 1.0 and env.progress(real) < 0.5
    finally:
        env.close()


def test_an_episode_held_after_success_goes_on_with_its_labels_and_a_plain_one_ends_at_the_first():
    """The critic's training episodes go on a few steps after success, so 'done' has more than one
    frame per episode to learn from; a plain episode ends at its first success frame, as in RL."""
    from sim_envs.progress_episodes import run_episode

    env = TabletopEnv("Reach", image_size=32)
    try:
        plain = run_episode(env, "Reach", "expert", "train", 3, seed=0)
        held = run_episode(env, "Reach", "expert", "train", 3, seed=0, hold_after_success=3)
    finally:
        env.close()
    first = int(np.argmax(plain.success))
    assert plain.success[-1] and first == len(plain.success) - 1
    assert int(np.argmax(held.success)) == first and len(held.success) == first + 4
    np.testing.assert_array_equal(held.frames[: first + 1], plain.frames)  # the same episode up to success
    assert held.success[first:].sum() >= 2  # the reactive expert stays on the target
    assert len(held.actions) == len(held.success) - 1 and held.other_progress.shape[0] == len(held.success)
