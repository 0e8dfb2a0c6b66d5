"""The progress critic: model contract, checkpoints, training pairs, metrics, and rewards from it."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from vla_rl.core.types import EpisodeFrames, TaskSpec, TrajectoryBatch
from vla_rl.reward.critic import CriticConfig, ProgressCritic, load_critic, save_critic
from vla_rl.reward.critic_train import (CriticTrainConfig, PairSampler, auroc, done_errors, evaluate_critic,
                                       spearman, train_critic)
from vla_rl.reward.sources import RewardConfig, critic_reads_wrist, critic_rewards, make_reward_fn

SMALL = CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2)
LOCATING = CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2, localiser_points=2, localiser_gripper=True,
                        localiser_channels=8)
GLIMPSING = CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2, localiser_points=2, localiser_channels=8,
                         glimpse_pixels=8)
WRISTED = CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2, localiser_points=2, localiser_channels=8,
                       glimpse_pixels=8, wrist_view=True)


@pytest.fixture(scope="module")
def critic():
    torch.manual_seed(0)
    return ProgressCritic(SMALL).eval()


class Episode:
    def __init__(self, task, instruction, progress, behaviour="expert", seed=0):
        self.task, self.instruction, self.behaviour = task, instruction, behaviour
        self.progress = np.asarray(progress, np.float32)
        self.success = self.progress >= 1.0
        rng = np.random.default_rng(seed)
        self.frames = rng.integers(0, 255, (len(progress), 32, 32, 3), dtype=np.uint8)
        self.named_pixels = self.gripper_pixels = None
        self.wrist_frames = rng.integers(0, 255, (len(progress), 32, 32, 3), dtype=np.uint8)


class DotEpisode(Episode):
    """Black frames with a bright dot that moves; its pixel is every point's label."""

    def __init__(self, instruction, steps, seed, size=64):
        super().__init__("Reach", instruction, np.linspace(0, 1, steps), seed=seed)
        rng = np.random.default_rng(seed)
        self.frames = np.zeros((steps, size, size, 3), np.uint8)
        dots = rng.integers(4, size - 4, (steps, 2))
        for t, (column, row) in enumerate(dots):
            self.frames[t, row - 1:row + 2, column - 1:column + 2] = 255
        self.wrist_frames = 255 - self.frames  # tells a wrist frame from its agent-view frame
        self.named_pixels = np.repeat(dots[:, None] + 0.5, 2, axis=1).astype(np.float32)  # [T, 2, 2]
        self.gripper_pixels = (dots + 0.5).astype(np.float32)
        # one other objective of the scene, never reached
        self.other_instructions = (instruction.replace("red", "green").replace("blue", "green"),)
        self.other_progress = np.zeros((steps, 1), np.float32)
        self.other_named_pixels = self.named_pixels[:, None] + 5.0


@pytest.mark.parametrize("config", [SMALL, LOCATING, GLIMPSING], ids=["patches", "located-points", "glimpses"])
def test_forward_and_score_shapes_and_masking(config):
    torch.manual_seed(0)
    critic = ProgressCritic(config).eval()
    frames = torch.randint(0, 255, (3, 48, 48, 3), dtype=torch.uint8)  # resized to 32 inside
    delta, logit = critic(frames, frames.flip(0), ["open the drawer", "push the red block", "open the drawer"])
    assert delta.shape == (3,) and logit.shape == (3,) and bool((delta.abs() <= 1).all())
    mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
    out = critic.score(EpisodeFrames(np.random.randint(0, 255, (2, 5, 32, 32, 3), dtype=np.uint8),
                                     ["a", "b"], mask))
    assert out.progress.shape == (2, 5) and out.done_prob.shape == (2, 5)
    assert out.progress[0, 0] == 0.0 and np.all(out.progress[~mask] == 0) and np.all(out.done_prob[~mask] == 0)
    assert np.all((out.done_prob[mask] > 0) & (out.done_prob[mask] < 1))


@pytest.mark.parametrize("config", [SMALL, LOCATING, GLIMPSING], ids=["patches", "located-points", "glimpses"])
def test_checkpoint_round_trip_and_clear_errors(tmp_path, config):
    critic = ProgressCritic(config).eval()
    path = save_critic(tmp_path / "critic", critic, {"step": 3})
    again = load_critic(path)
    frames = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(critic(frames, frames, ["x", "y"])[0], again(frames, frames, ["x", "y"])[0])
    assert json.loads((path / "critic.json").read_text())["step"] == 3
    (path / "critic.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="corrupt"):
        load_critic(path)
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        load_critic(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a critic checkpoint"):
        load_critic(tmp_path / "empty")


def test_critic_checkpoints_are_committed_atomically_with_checksums_and_name_a_corrupt_file(tmp_path, monkeypatch):
    """save_critic writes a staging directory and renames it into place (a crash mid-save leaves the
    previous checkpoint), with a manifest: a modified file is refused by name, a truncated critic.json is
    a clear error naming it, and a checkpoint from before manifests still loads."""
    import safetensors.torch

    from vla_rl.core.checkpoint_dir import MANIFEST, CorruptCheckpointError
    from vla_rl.reward.sources import critic_reads_wrist

    critic = ProgressCritic(SMALL).eval()
    path = save_critic(tmp_path / "critic", critic, {"step": 1})
    assert (path / MANIFEST).is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["critic"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_critic(path, critic, {"step": 2})
    monkeypatch.undo()
    assert json.loads((path / "critic.json").read_text())["step"] == 1 and load_critic(path) is not None

    legacy = tmp_path / "legacy"  # as save_critic wrote checkpoints before they had a manifest
    legacy.mkdir()
    for name in ("critic.json", "critic.safetensors"):
        (legacy / name).write_bytes((path / name).read_bytes())
    assert load_critic(legacy).config == SMALL

    meta = (path / "critic.json").read_text()
    (path / "critic.json").write_text(meta.replace('"step": 1', '"step": 7'))
    with pytest.raises(CorruptCheckpointError, match="critic.json does not match its checksum"):
        load_critic(path)
    for checkpoint in (path, legacy):
        (checkpoint / "critic.json").write_text(meta[:len(meta) // 2])  # truncated
        for read in (load_critic, critic_reads_wrist):
            with pytest.raises(CorruptCheckpointError, match=f"{checkpoint / 'critic.json'} is not valid JSON"):
                read(checkpoint)


def test_a_glimpse_is_the_crop_centred_on_its_point_and_follows_it():
    from vla_rl.reward.critic import GlimpseEncoder

    glimpses = GlimpseEncoder(side=8, image_size=32, width=16)
    pixels = torch.zeros(2, 3, 32, 32)
    pixels[0, :, 20:22, 6:8] = 1.0  # a 2x2 block centred on (column 7, row 21)
    pixels[1, :, 4:6, 26:28] = 1.0  # ... on (column 27, row 5)
    points = torch.tensor([[[7.0, 21.0]], [[27.0, 5.0]]]) / 32 * 2 - 1
    crops = glimpses.crops(pixels, points)
    assert crops.shape == (2, 3, 8, 8)
    for crop in crops:  # the block sits at the centre of each crop: rows and columns 3-4
        bright = torch.nonzero(crop[0] > 0.5).float()
        assert torch.allclose(bright.mean(0), torch.tensor([3.5, 3.5])), bright
    moved = glimpses.crops(pixels[:1], points[:1] + 8 / 32 * 2)  # 8 px away: the block is out of the crop
    assert moved.abs().max() < 0.5
    assert glimpses(pixels, points).shape == (2, 1, 16)
    with pytest.raises(ValueError, match="glimpse_pixels"):
        CriticConfig(glimpse_pixels=16)  # needs the localiser's points


def test_pairs_carry_progress_differences_mismatches_and_done():
    episodes = [Episode("Reach", "move to the red cube", [0.0, 0.3, 0.6, 1.0]),
                Episode("Reach", "move to the blue cube", [0.0, 0.1, 0.2], seed=1),
                Episode("Lift", "pick up the red block", [0.0, 0.5, 0.5], seed=2)]
    config = CriticTrainConfig(mismatch_fraction=0.0, done_fraction=0.0)
    frames_a, frames_b, texts, deltas, dones, labels, *_ = PairSampler(episodes, config, seed=0).sample(200)
    assert labels is None  # no localiser
    by_frame = {e.frames[i].tobytes(): (e, i) for e in episodes for i in range(len(e.progress))}
    for a, b, text, delta, done in zip(frames_a, frames_b, texts, deltas, dones):
        (ea, ia), (eb, ib) = by_frame[a.numpy().tobytes()], by_frame[b.numpy().tobytes()]
        assert ea is eb and text == ea.instruction
        assert delta == pytest.approx(ea.progress[ib] - ea.progress[ia]) and done == float(ea.success[ib])
    assert (deltas < 0).any() and (deltas == 0).any() and (deltas > 0).any()  # reversed, stalls, forward
    mismatched = PairSampler(episodes, CriticTrainConfig(mismatch_fraction=1.0, done_fraction=0.0), seed=0)
    _, _, texts, deltas, dones, _, *_ = mismatched.sample(50)
    assert not deltas.any() and not dones.any()
    done_pairs = PairSampler(episodes, CriticTrainConfig(mismatch_fraction=0.0, done_fraction=1.0), seed=0)
    assert bool(done_pairs.sample(20)[4].all())


def test_hard_negatives_name_a_distractor_of_the_scene_and_keep_its_labels():
    """A same-scene instruction for another object is labelled with the progress towards that object
    (here 0 -> 0.5: the distractor was half reached), not with "no progress"."""
    reach = DotEpisode("reach the red cube", 4, seed=0)
    reach.other_instructions = ("reach the blue cube",)
    reach.other_progress = np.array([[0.0], [0.25], [0.5], [0.5]], np.float32)
    reach.other_named_pixels = reach.named_pixels[:, None][:, :, ::-1].copy() + 7.0  # elsewhere than the real points
    lift = DotEpisode("lift the green block", 3, seed=1)
    lift.task = "Lift"
    lift.other_instructions, lift.other_progress, lift.other_named_pixels = (), None, None  # recorded without
    index = {e.frames[i].tobytes(): i for e in (reach,) for i in range(4)}
    config = CriticTrainConfig(critic=LOCATING, mismatch_fraction=1.0, hard_negative_fraction=1.0, done_fraction=0.0)
    frames_a, frames_b, texts, deltas, dones, labels, *_ = PairSampler([reach], config, seed=0).sample(40)
    assert set(texts) == {"reach the blue cube"} and not dones.any() and (deltas > 0).any()
    for k, (a, b) in enumerate(zip(frames_a, frames_b)):
        ia, ib = index[a.numpy().tobytes()], index[b.numpy().tobytes()]
        assert deltas[k] == pytest.approx(reach.other_progress[ib, 0] - reach.other_progress[ia, 0])
        scale = LOCATING.image_size / 64
        np.testing.assert_allclose(labels[k, :2].numpy(), reach.other_named_pixels[ia, 0] * scale)
        np.testing.assert_allclose(labels[40 + k, :2].numpy(), reach.other_named_pixels[ib, 0] * scale)
    # the rest of the mismatches take another task's instruction (one of the same task could name an
    # object of this scene), labelled "no progress, not done", with no localiser labels
    easy = CriticTrainConfig(critic=LOCATING, mismatch_fraction=1.0, hard_negative_fraction=0.0, done_fraction=0.0)
    _, _, texts, deltas, dones, labels, *_ = PairSampler([reach, lift], easy, seed=0).sample(40)
    assert all(t in ("lift the green block", "reach the red cube") for t in texts)
    assert not deltas.any() and not dones.any() and bool((labels == -1).all())


def test_metrics_on_known_values():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(np.array([1.0, 2.0]), np.array([0, 1])) == 1.0
    assert spearman(np.arange(5), np.arange(5) ** 2) == pytest.approx(1.0)
    assert spearman(np.arange(5), -np.arange(5)) == pytest.approx(-1.0)


def test_training_lowers_the_loss(tmp_path):
    episodes = [Episode("Reach", f"move to the {c} cube", np.linspace(0, 1, 6), seed=i)
                for i, c in enumerate(["red", "blue", "green"])]
    config = CriticTrainConfig(critic=SMALL, out_dir=tmp_path / "critic", steps=40, batch_size=16, lr=1e-3,
                               warmup_steps=5, checkpoint_every=20)
    summary = train_critic(config, episodes, show_progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "critic" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    assert (tmp_path / "critic" / "step_000020" / "critic.safetensors").is_file()
    assert load_critic(summary["checkpoint"]) is not None


def test_checkpoint_every_zero_writes_only_the_final_checkpoint_and_negative_is_refused(tmp_path):
    episodes = [Episode("Reach", "move to the red cube", np.linspace(0, 1, 6))]
    config = CriticTrainConfig(critic=SMALL, out_dir=tmp_path / "critic", steps=2, batch_size=4, warmup_steps=1,
                               checkpoint_every=0)
    summary = train_critic(config, episodes, show_progress=False)
    assert summary["checkpoint"] == str(tmp_path / "critic" / "final")
    assert not list((tmp_path / "critic").glob("step_*"))
    with pytest.raises(ValueError, match="checkpoint_every must be >= 0"):
        dataclasses.replace(config, checkpoint_every=-1)
    for field, value, message in (("lr", float("nan"), "lr must be a finite number > 0"),
                                  ("lr", -1.0, "lr must be a finite number > 0"),
                                  ("warmup_steps", -10, "warmup_steps must be >= 0"),
                                  ("done_weight", float("inf"), "done_weight must be a finite number >= 0")):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(config, **{field: value})


def test_a_second_run_refuses_the_out_dir_of_an_earlier_one(tmp_path):
    """It would overwrite the old metrics.jsonl and leave the old checkpoints (some maybe of later steps)
    beside its own; critic training cannot resume, so the error says how to go on from the old critic."""
    episodes = [Episode("Reach", f"move to the {c} cube", np.linspace(0, 1, 6), seed=i)
                for i, c in enumerate(["red", "blue"])]
    config = CriticTrainConfig(critic=SMALL, out_dir=tmp_path / "critic", steps=2, batch_size=4, warmup_steps=1,
                               checkpoint_every=2)
    train_critic(config, episodes, show_progress=False)
    history = (tmp_path / "critic" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match=f"holds a previous run .*init_from={tmp_path / 'critic' / 'final'}"):
        train_critic(dataclasses.replace(config, steps=1, checkpoint_every=1), episodes, show_progress=False)
    assert (tmp_path / "critic" / "metrics.jsonl").read_text() == history
    assert sorted(p.name for p in (tmp_path / "critic").glob("step_*")) == ["step_000002"]
    shutil.rmtree(tmp_path / "critic" / "final")  # a run killed after its step_ checkpoint: start from that one
    with pytest.raises(FileExistsError, match=f"init_from={tmp_path / 'critic' / 'step_000002'}"):
        train_critic(config, episodes, show_progress=False)
    shutil.rmtree(tmp_path / "critic" / "step_000002")  # killed before its first checkpoint: nothing to start from
    with pytest.raises(FileExistsError, match="holds no critic checkpoint .*remove it") as error:
        train_critic(config, episodes, show_progress=False)
    assert "init_from" not in str(error.value)


def test_training_can_start_from_a_checkpoint_of_the_same_critic_and_refuses_another(tmp_path):
    episodes = [Episode("Reach", f"move to the {c} cube", np.linspace(0, 1, 6), seed=i)
                for i, c in enumerate(["red", "blue"])]
    torch.manual_seed(3)
    start = save_critic(tmp_path / "start", ProgressCritic(SMALL).eval())
    config = CriticTrainConfig(critic=SMALL, out_dir=tmp_path / "tuned", init_from=start, steps=1, batch_size=4,
                               lr=1e-9, warmup_steps=1)
    tuned = load_critic(train_critic(config, episodes, show_progress=False)["checkpoint"])
    started = load_critic(start)
    fresh = ProgressCritic(SMALL)  # what training without init_from would have begun from (seed 0)
    name = next(k for k, v in started.state_dict().items() if v.is_floating_point() and v.numel() > 100)
    # lr 1e-9: one step leaves the starting weights, which are not a fresh critic's
    assert torch.allclose(tuned.state_dict()[name], started.state_dict()[name], atol=1e-6)
    assert not torch.allclose(fresh.state_dict()[name], started.state_dict()[name])
    other = dataclasses.replace(config, critic=dataclasses.replace(SMALL, hidden_size=64), out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="hidden_size 32 there, 64 configured"):
        train_critic(other, episodes, show_progress=False)


def test_located_point_labels_follow_the_frames_and_are_ignored_for_a_wrong_instruction():
    episodes = [DotEpisode("reach the red cube", 5, seed=0), DotEpisode("reach the blue cube", 4, seed=1)]
    config = CriticTrainConfig(critic=LOCATING, mismatch_fraction=0.0)
    frames_a, frames_b, _, _, _, labels, *_ = PairSampler(episodes, config, seed=0).sample(30)
    assert labels.shape == (60, 3, 2)
    for frames, rows in ((frames_a, labels[:30]), (frames_b, labels[30:])):
        for frame, points in zip(frames, rows):
            column, row = (points[0].numpy() * 64 / 32).astype(int)  # labels are at the critic's 32 px
            assert frame[row, column].max() == 255 and torch.equal(points[0], points[2])
    for episode in episodes:  # recorded without other objectives: the mismatch is another episode's instruction
        episode.other_progress = None
    wrong = PairSampler(episodes, CriticTrainConfig(critic=LOCATING, mismatch_fraction=1.0), seed=0).sample(10)[5]
    assert bool((wrong == -1).all())
    with pytest.raises(ValueError, match="pixel labels"):
        PairSampler([Episode("Reach", "x", [0.0, 1.0])], config, seed=0)


def test_the_critics_localiser_learns_to_find_the_labelled_pixel(tmp_path):
    episodes = [DotEpisode(f"reach the {c} cube", 12, seed=i) for i, c in enumerate(["red", "blue", "green"])]
    config = CriticTrainConfig(critic=LOCATING, out_dir=tmp_path / "critic", steps=60, batch_size=16, lr=3e-3,
                               warmup_steps=5, checkpoint_every=60, localiser_weight=1.0, mismatch_fraction=0.0)
    train_critic(config, episodes, show_progress=False)
    errors = [json.loads(line)["located_px"] for line in (tmp_path / "critic" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(errors[-10:]) < 0.5 * np.mean(errors[:10])


def test_evaluation_reports_every_behaviour_and_task_and_plots_value_curves(tmp_path):
    episodes = [DotEpisode("reach the red cube", 6, seed=0), DotEpisode("reach the blue cube", 5, seed=1)]
    episodes[1].behaviour = "random"
    lift = DotEpisode("pick up the red block", 4, seed=2)
    lift.task = "Lift"
    critic = ProgressCritic(WRISTED).eval()  # the localiser, glimpses and the wrist camera's frames
    report = evaluate_critic(critic, episodes + [lift], tmp_path)
    assert set(report) == {"all", "expert", "random", "task:Reach", "task:Lift"}
    assert report["task:Reach"]["episodes"] == 2 and report["all"]["successful_episodes"] == 3
    for row in report.values():
        assert 0.0 <= row["success_auroc"] <= 1.0 and -1.0 <= row["value_spearman"] <= 1.0
        assert 0.0 <= row["distractor_lower"] <= 1.0
        assert set(row["false_done"]) == {"0-0.5", "0.5-0.8", "0.8-1"}
    assert json.loads((tmp_path / "eval.json").read_text()) == report
    assert (tmp_path / "value_curves.png").stat().st_size > 0


def test_done_errors_split_false_successes_by_how_close_the_frame_was():
    probs = np.array([0.9, 0.2, 0.6, 0.7, 0.1, 0.4, 0.8])
    success = np.array([True, True, False, False, False, False, False])
    progress = np.array([1.0, 1.0, 0.9, 0.85, 0.6, 0.1, 0.3])
    errors = done_errors(probs, success, progress)
    assert errors["done_recall"] == pytest.approx(0.5)
    assert errors["false_done"]["0.8-1"] == {"frames": 2, "rate": 1.0}  # both near misses called done
    assert errors["false_done"]["0.5-0.8"] == {"frames": 1, "rate": 0.0}
    assert errors["false_done"]["0-0.5"] == {"frames": 2, "rate": 0.5}
    assert done_errors(probs[2:], success[2:], progress[2:])["done_recall"] is None


def _batch(lengths, steps=4):
    count = len(lengths)
    mask = np.arange(steps)[None] < np.array(lengths)[:, None]
    rewards = np.zeros((count, steps), np.float32)
    rewards[0, lengths[0] - 1] = 1.0  # episode 0 succeeded in the simulator
    return TrajectoryBatch(
        images={"agentview": np.random.randint(0, 255, (count, steps, 32, 32, 3), dtype=np.uint8)},
        proprio=np.zeros((count, steps, 8), np.float32), instructions=["reach the red cube"] * count,
        action_tokens=np.zeros((count, steps, 7), np.int64), actions=np.zeros((count, steps, 1, 7), np.float32),
        old_logprobs=np.zeros((count, steps, 7), np.float32), rewards=rewards, mask=mask,
        success=np.array([True] + [False] * (count - 1)), task_specs=[TaskSpec("Reach", 0)] * count,
        final_frames=np.random.randint(0, 255, (count, 32, 32, 3), dtype=np.uint8))


def test_a_wrist_view_critic_reads_the_wrist_frames_and_refuses_to_go_without_them():
    torch.manual_seed(0)
    critic = ProgressCritic(WRISTED).eval()
    frames = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    wrist = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        delta, logit = critic(frames, frames, ["x", "y"], wrist, wrist)
        other_delta, other_logit = critic(frames, frames, ["x", "y"], wrist, wrist.flip(0))
    assert delta.shape == (2,) and not torch.allclose(logit, other_logit)  # the wrist frame changes the verdict
    with pytest.raises(ValueError, match="reads the wrist camera"):
        critic(frames, frames, ["x", "y"])
    episodes = np.random.randint(0, 255, (2, 3, 32, 32, 3), dtype=np.uint8)
    mask = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match="no wrist_frames"):
        critic.score(EpisodeFrames(episodes, ["a", "b"], mask))
    out = critic.score(EpisodeFrames(episodes, ["a", "b"], mask, wrist_frames=episodes[:, :, ::-1].copy()))
    assert out.done_prob.shape == (2, 3)


def test_wrist_pairs_are_the_wrist_frames_of_the_same_moments():
    episodes = [DotEpisode("reach the red cube", 5, seed=0), DotEpisode("reach the blue cube", 4, seed=1)]
    pairs = PairSampler(episodes, CriticTrainConfig(critic=WRISTED), seed=0).sample(20)
    assert torch.equal(pairs.wrist_a, 255 - pairs.frames_a) and torch.equal(pairs.wrist_b, 255 - pairs.frames_b)
    assert PairSampler(episodes, CriticTrainConfig(critic=LOCATING), seed=0).sample(4).wrist_a is None
    episodes[1].wrist_frames = None
    with pytest.raises(ValueError, match="wrist camera's frames"):
        PairSampler(episodes, CriticTrainConfig(critic=WRISTED), seed=0)


def test_critic_rewards_hand_the_wrist_frames_to_a_wrist_critic(tmp_path):
    torch.manual_seed(0)
    critic = ProgressCritic(WRISTED).eval()
    plain = _batch([4, 2])
    with pytest.raises(ValueError, match="no wrist_frames"):
        critic_rewards(critic, plain, done_bonus=1.0)
    wrist = np.random.randint(0, 255, plain.images["agentview"].shape, dtype=np.uint8)
    final_wrist = np.random.randint(0, 255, plain.final_frames.shape, dtype=np.uint8)
    batch = dataclasses.replace(plain, images={**plain.images, "wrist": wrist}, final_wrist_frames=final_wrist)
    rewards = critic_rewards(critic, batch, done_bonus=1.0)
    frames = np.concatenate([batch.images["agentview"][1, :2], batch.final_frames[1:2]])[None]
    wrist_frames = np.concatenate([wrist[1, :2], final_wrist[1:2]])[None]
    scored = critic.score(EpisodeFrames(frames, batch.instructions[:1], np.ones((1, 3), bool), wrist_frames))
    assert rewards[1].sum() == pytest.approx(scored.progress[0].sum() + scored.done_prob[0, 2], abs=1e-5)
    path = save_critic(tmp_path / "wrist", critic)
    assert critic_reads_wrist(path) and load_critic(path).config.wrist_view
    assert not critic_reads_wrist(save_critic(tmp_path / "plain", ProgressCritic(SMALL)))


def test_critic_rewards_sum_to_final_value_plus_done_bonus(critic):
    batch = _batch([4, 2])
    rewards = critic_rewards(critic, batch, done_bonus=2.0)
    assert rewards.shape == (2, 4) and np.all(rewards[~batch.mask] == 0)
    frames = np.concatenate([batch.images["agentview"][1, :2], batch.final_frames[1:2]])[None]
    scored = critic.score(EpisodeFrames(frames, batch.instructions[:1], np.ones((1, 3), bool)))
    value_final = scored.progress[0].sum()
    assert rewards[1].sum() == pytest.approx(value_final + 2.0 * scored.done_prob[0, 2], abs=1e-5)


def test_reward_sources(tmp_path, critic):
    assert make_reward_fn(RewardConfig()) is None
    path = save_critic(tmp_path / "critic", critic)
    batch = _batch([4, 2])
    dense = make_reward_fn(RewardConfig(source="critic", critic_checkpoint=path))(batch)
    mixed = make_reward_fn(RewardConfig(source="composite", critic_checkpoint=path, critic_weight=0.5))(batch)
    np.testing.assert_allclose(mixed, batch.rewards + 0.5 * dense, atol=1e-5)
    with pytest.raises(ValueError, match="needs reward.critic_checkpoint"):
        RewardConfig(source="critic")
    with pytest.raises(ValueError, match="valid: sim_success, critic, composite"):
        RewardConfig(source="vibes")
