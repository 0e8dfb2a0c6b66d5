"""The video world model: its diffusers model, training, checkpoints, and the env built on it,
on real tabletop trajectories and the real MuJoCo env (tiny sizes so it runs on a CPU)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sim_envs.progress_episodes import collect_progress_episodes
from sim_envs.suites import get_suite
from sim_envs.vector import TabletopVecEnv, VecEnvConfig
from vla_rl.core import TaskSpec
from vla_rl.core.checkpoint_dir import CorruptCheckpointError
from vla_rl.core.types import CriticOutput
from world_model.data import Trajectory, TransitionSampler, trajectory_of_episode
from world_model.env import WorldModelVecEnv
from world_model.evaluate import calibrate_done_threshold, evaluate_world_model, ssim
from world_model.model import VideoWorldModel, WorldModelConfig, instruction_word_ids
from world_model.train import (WMTrainConfig, load_world_model, psnr, save_world_model, self_rollout_batch,
                               train_world_model)

TINY = WorldModelConfig(image_size=32, channels=(32, 32), attention_last=False, sampling_steps=2)


@pytest.fixture(scope="module")
def trajectories():
    """Real tabletop episodes at 32 px: experts and random motion on Reach."""
    episodes = collect_progress_episodes(["Reach"], {"expert": 3, "random": 1}, "train", image_size=32, workers=0,
                                         show_progress=False)
    return [trajectory_of_episode(e) for e in episodes]


def test_config_rejects_sizes_the_unet_cannot_fold():
    with pytest.raises(ValueError, match="multiple of"):
        WorldModelConfig(image_size=36)
    with pytest.raises(ValueError, match="sampling_steps"):
        WorldModelConfig(sampling_steps=9)


@pytest.mark.parametrize("attention_last", [False, True])
def test_the_narrowest_widths_the_config_accepts_build_a_working_unet(attention_last):
    """Widths need only be multiples of 16; a last width of 16 (under the usual 32-wide attention head)
    gets one narrower head in the always-attending mid block instead of zero heads."""
    config = WorldModelConfig(image_size=16, channels=(16, 16), attention_last=attention_last, sampling_steps=1)
    model = VideoWorldModel(config)
    context = torch.zeros(2, 2, 16, 16, 3, dtype=torch.uint8)
    loss, _ = model.loss(context, torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 7), ["reach"] * 2,
                         context[:, -1], torch.zeros(2, 8))
    assert torch.isfinite(loss)
    frames, _ = model.sample_next(context, torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 7), ["reach"] * 2)
    assert frames.shape == (2, 16, 16, 3)


def test_instruction_hash_is_stable_and_word_based():
    assert instruction_word_ids("Reach the red block.", 512) == instruction_word_ids("reach the red block", 512)
    assert instruction_word_ids("reach the red block", 512) != instruction_word_ids("reach the blue block", 512)


def test_episodes_record_executed_actions_and_proprio(trajectories):
    for t in trajectories:
        assert t.actions.shape == (len(t.frames) - 1, 7) and t.proprio.shape == (len(t.frames), 8)
    expert = trajectories[0]
    # the arm moves as commanded: the end effector's displacement follows the action's direction
    moved = expert.proprio[1:, :3] - expert.proprio[:-1, :3]
    commanded = expert.actions[:, :3]
    cosine = (moved * commanded).sum(1) / (np.linalg.norm(moved, axis=1) * np.linalg.norm(commanded, axis=1) + 1e-9)
    assert np.median(cosine) > 0.8


def test_sampler_context_repeats_the_first_frame_at_episode_start(trajectories):
    sampler = TransitionSampler(trajectories, context_frames=3)
    batch = sampler.batch(np.array([0, 1, len(trajectories[0].actions)]))  # steps 0 and 1 of ep 0, step 0 of ep 1
    first = torch.from_numpy(trajectories[0].frames)
    assert torch.equal(batch.context[0, 0], first[0]) and torch.equal(batch.context[0, 2], first[0])
    assert torch.equal(batch.context[1, 1], first[0]) and torch.equal(batch.context[1, 2], first[1])
    assert torch.equal(batch.target[1], first[2])
    assert torch.equal(batch.context[2, 0], torch.from_numpy(trajectories[1].frames[0]))


def test_self_rollout_windows_stay_in_one_episode_and_keep_the_real_target(trajectories):
    """Training on its own rollouts: the window's k imagined steps stay inside one episode, the
    context is the model's (not the recorded frames) and the target is the real frame k steps on."""
    sampler = TransitionSampler(trajectories, context_frames=2)
    rng = np.random.default_rng(0)
    longest = max(len(t.actions) for t in trajectories)
    for steps in (1, 3, longest - 1):
        starts = sampler.sample_windows(64, steps, rng)
        assert np.array_equal(sampler.first[starts], sampler.first[starts + steps])
    with pytest.raises(ValueError, match="no episode has more than"):
        sampler.sample_windows(4, longest, rng)
    model = VideoWorldModel(TINY)
    with torch.no_grad():  # a model that predicts something: its frames must differ from the recorded ones
        model.unet.conv_out.bias.fill_(0.3)
    batch = self_rollout_batch(model, sampler, 8, 3, np.random.default_rng(1), torch.Generator().manual_seed(0))
    same_draws = np.random.default_rng(1)  # the window the batch drew: its length, then its starts
    steps = int(same_draws.integers(1, 4))
    recorded = sampler.batch(sampler.sample_windows(8, steps, same_draws) + steps)
    assert torch.equal(batch.target, recorded.target) and torch.equal(batch.actions, recorded.actions)
    assert not torch.equal(batch.context[:, -1], recorded.context[:, -1])  # the context is imagined
    assert model.training  # the rollout left the model in training mode


def test_self_rollout_training_shortens_its_windows_to_short_episodes(tmp_path, trajectories):
    """Episodes shorter than the windows asked for shorten them (and the logged open-loop horizon)
    instead of failing mid-run; a single action per episode leaves no window: a clear error first."""
    first = trajectories[0]
    short = Trajectory(frames=first.frames[:4], proprio=first.proprio[:4], actions=first.actions[:3],
                       instruction=first.instruction)
    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, steps=3, batch_size=4, eval_transitions=4,
                           self_rollout_fraction=1.0, self_rollout_steps=8, log_every=1)
    summary = train_world_model(config, [short], [short], show_progress=False)
    assert summary["steps"] == 3 and np.isfinite(summary["eval"]["held_out_psnr_2step_open_loop"])
    single = Trajectory(frames=first.frames[:2], proprio=first.proprio[:2], actions=first.actions[:1],
                        instruction=first.instruction)
    with pytest.raises(ValueError, match="at least 2 actions"):
        train_world_model(WMTrainConfig(**{**config.__dict__, "out_dir": tmp_path / "single"}), [single],
                          show_progress=False)


def test_metrics_behave():
    rng = np.random.default_rng(0)
    image = rng.integers(100, 160, (2, 32, 32, 3), dtype=np.uint8)
    noisy = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    assert np.allclose(ssim(image, image), 1.0) and np.all(ssim(noisy, image) < 0.9)
    assert np.all(psnr(image, image) > 90) and np.all(psnr(noisy, image) < 30)


def test_contract_shapes_and_sampling_steps():
    model = VideoWorldModel(TINY).eval()
    from vla_rl.core.types import ObsBatch

    obs = ObsBatch({"agentview": np.zeros((3, 32, 32, 3), np.uint8)}, np.zeros((3, 8), np.float32), ["reach"] * 3)
    state = model.init_state(obs)
    assert state.context.shape == (3, 2, 32, 32, 3)
    state, predicted = model.predict(state, np.zeros((3, 7), np.float32), generator=torch.Generator().manual_seed(0))
    assert predicted.images["agentview"].shape == (3, 32, 32, 3) and predicted.proprio.shape == (3, 8)
    assert torch.equal(state.context[:, -1], torch.from_numpy(predicted.images["agentview"]))
    with pytest.raises(ValueError, match="sampling steps"):
        model.predict(state, np.zeros((3, 7), np.float32), steps=9)
    with pytest.raises(ValueError, match="px"):
        model.init_state(ObsBatch({"agentview": np.zeros((1, 64, 64, 3), np.uint8)}, np.zeros((1, 8), np.float32), ["x"]))


@pytest.mark.parametrize("steps", range(1, 9))
def test_every_sampling_step_count_ends_on_the_predicted_clean_sample(monkeypatch, steps):
    """With trailing spacing, 6 and 7 DDIM steps have a stride that does not divide the 1000 training
    timesteps, so the last step's "previous" timestep is 0, not the clean sample: a model that always
    predicts the same clean frame must get exactly that frame back, whatever the number of steps."""
    import dataclasses

    model = VideoWorldModel(dataclasses.replace(TINY, predict_residual=False)).eval()
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    clean = model.fold_frames(target)
    monkeypatch.setattr(model, "denoise", lambda noisy, context, timesteps, condition: clean.clone())
    context = torch.from_numpy(rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8))
    frames, _ = model.sample_next(context, torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 7), ["reach"] * 2,
                                  steps, torch.Generator().manual_seed(0))
    assert torch.equal(frames, target)


def test_residual_target_is_the_change_from_the_noisy_last_context_frame(monkeypatch):
    """Sampling adds the prediction to the context it has, imperfect or not, so the training target of a
    sample with noisy context is (target - noisy last frame) / 2: the way back to the real frame. The
    noisy context stays in [-1, 1], so the halved target does too (the schedulers clip at +-1)."""
    model = VideoWorldModel(TINY)
    seen = {}
    add_noise = model.train_scheduler.add_noise

    def record_clean(clean, noise, timesteps):
        seen["clean"] = clean
        return add_noise(clean, noise, timesteps)

    def record_context(noisy, context, timesteps, condition):
        seen["context"] = context
        return torch.zeros_like(noisy)

    monkeypatch.setattr(model.train_scheduler, "add_noise", record_clean)
    monkeypatch.setattr(model, "denoise", record_context)
    rng = np.random.default_rng(0)
    context = torch.from_numpy(rng.integers(0, 256, (16, 2, 32, 32, 3), dtype=np.uint8))
    target = torch.from_numpy(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    model.loss(context, torch.zeros(16, 8), torch.zeros(16, 8), torch.zeros(16, 7), ["reach"] * 16, target,
               torch.zeros(16, 8), generator=torch.Generator().manual_seed(0))
    clean_last = model.fold_frames(context)[:, -1]
    noisy_last = seen["context"][:, -1]
    noised = (noisy_last != clean_last).flatten(1).any(1)
    assert 0 < noised.sum() < 16  # about half the samples get context noise
    expected = (model.fold_frames(target) - noisy_last) / 2
    torch.testing.assert_close(seen["clean"], expected)
    assert not torch.allclose(seen["clean"][noised], ((model.fold_frames(target) - clean_last) / 2)[noised])
    assert seen["context"].abs().max() <= 1 and seen["clean"].abs().max() <= 1


def test_training_beats_copying_the_last_frame_and_resumes(tmp_path, trajectories):
    """A short run on real episodes learns the arm's motion: its one-step predictions on the
    training transitions beat the "nothing moves" baseline (which a model ignoring the action
    would score at best); resume continues from the checkpoint."""
    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, steps=300, batch_size=16, lr=1e-3, warmup_steps=20,
                           checkpoint_every=150, eval_every=0, eval_transitions=64, log_every=50, seed=0)
    summary = train_world_model(config, trajectories, trajectories, show_progress=False)
    assert summary["steps"] == 300
    assert summary["eval"]["held_out_psnr_1step"] > summary["eval"]["copy_last_frame_psnr"] + 1.0
    model = load_world_model(tmp_path / "wm")
    assert model.config == TINY
    resumed = train_world_model(WMTrainConfig(**{**config.__dict__, "steps": 310, "self_rollout_fraction": 1.0,
                                                 "self_rollout_steps": 4}), trajectories, trajectories, resume=True,
                                show_progress=False)
    assert resumed["steps"] == 310
    assert 5.0 < resumed["eval"]["held_out_psnr_8step_open_loop"] < resumed["eval"]["held_out_psnr_1step"]


def test_a_fresh_run_refuses_the_out_dir_of_an_earlier_one(tmp_path, trajectories):
    """Without --resume a run would append to the old metrics.jsonl and leave the old checkpoints (some
    maybe of later steps, which resolve_checkpoint would then pick) beside its own."""
    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, steps=2, batch_size=2, checkpoint_every=2,
                           eval_every=0, log_every=1)
    train_world_model(config, trajectories[:1], show_progress=False)
    history = (tmp_path / "wm" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="holds a previous run.*--resume"):
        train_world_model(WMTrainConfig(**{**config.__dict__, "steps": 1}), trajectories[:1], show_progress=False)
    assert (tmp_path / "wm" / "metrics.jsonl").read_text() == history
    assert sorted(p.name for p in (tmp_path / "wm").glob("step_*")) == ["step_000002"]


def test_a_resume_with_nothing_left_to_train_is_refused_with_what_to_raise(tmp_path, trajectories):
    """The time limit counts the time before a resume (as SFT's), and configs/world_model.yaml stops most
    runs on it: resuming such a run must not save the same checkpoint again and report a normal run, but say
    to raise time_limit_minutes; with a higher limit (or none) it trains on. All steps trained: raise steps."""
    import dataclasses

    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, steps=4, time_limit_minutes=1e-6, batch_size=2,
                           checkpoint_every=2, eval_every=0, log_every=1)
    stopped = train_world_model(config, trajectories[:1], show_progress=False)
    assert stopped["steps"] < 4
    checkpoints = sorted(p.name for p in (tmp_path / "wm").glob("step_*"))
    with pytest.raises(ValueError, match=r"stopped on its time limit.*counts the time before a resume.*"
                                         r"--set time_limit_minutes=\d+"):
        train_world_model(config, trajectories[:1], resume=True, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "wm").glob("step_*")) == checkpoints
    resumed = train_world_model(dataclasses.replace(config, time_limit_minutes=0.0), trajectories[:1], resume=True,
                                show_progress=False)
    assert resumed["steps"] == 4
    with pytest.raises(ValueError, match=r"trained all its 4 steps.*raise steps"):
        train_world_model(dataclasses.replace(config, time_limit_minutes=0.0), trajectories[:1], resume=True,
                          show_progress=False)


def test_a_run_stopped_before_its_first_checkpoint_is_to_be_deleted_not_resumed(tmp_path, trajectories):
    (tmp_path / "wm").mkdir()
    (tmp_path / "wm" / "metrics.jsonl").write_text('{"step": 20, "frame_loss": 0.1}\n')
    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, steps=2, batch_size=2, eval_every=0, log_every=1)
    with pytest.raises(FileExistsError, match="no valid checkpoint, so --resume cannot continue it: delete"):
        train_world_model(config, trajectories[:1], show_progress=False)
    with pytest.raises(FileNotFoundError, match="--resume: .* but no valid checkpoint .*: delete"):
        train_world_model(config, trajectories[:1], resume=True, show_progress=False)


def test_held_out_evaluations_go_to_the_history_and_a_resume_keeps_each_once(tmp_path, trajectories):
    import json

    from vla_rl.core.checkpoint_dir import point_latest

    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, steps=4, batch_size=2, checkpoint_every=2,
                           eval_every=2, eval_transitions=8, log_every=1)
    train_world_model(config, trajectories[:1], trajectories[1:2], show_progress=False)

    def history():
        return [json.loads(line) for line in (tmp_path / "wm" / "metrics.jsonl").read_text().splitlines()]

    evaluations = [row for row in history() if "held_out_psnr_1step" in row]
    assert [row["step"] for row in evaluations] == [2, 4]
    assert {"held_out_ee_error_open_loop_m", "copy_last_frame_psnr"} <= set(evaluations[0])
    import shutil

    shutil.rmtree(tmp_path / "wm" / "step_000004")  # as if killed after step 3: the resume redoes steps 3 and 4
    point_latest(tmp_path / "wm", "step_000002", 2)
    train_world_model(config, trajectories[:1], trajectories[1:2], resume=True, show_progress=False)
    assert [row["step"] for row in history() if "held_out_psnr_1step" in row] == [2, 4]
    assert [row["step"] for row in history() if "frame_loss" in row] == [1, 2, 3, 4]


def test_a_resume_does_not_read_the_init_checkpoint_it_started_from(tmp_path, trajectories):
    """The resumed checkpoint holds the model; the init checkpoint may have been moved or deleted since."""
    import dataclasses
    import shutil

    init = save_world_model(tmp_path / "init", VideoWorldModel(TINY), 1)
    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, init_checkpoint=init, steps=2, batch_size=2,
                           checkpoint_every=2, eval_every=0, log_every=1)
    train_world_model(config, trajectories[:1], show_progress=False)
    shutil.rmtree(init)
    resumed = train_world_model(dataclasses.replace(config, steps=3), trajectories[:1], resume=True,
                                show_progress=False)
    assert resumed["steps"] == 3


def test_a_run_from_a_checkpoint_refuses_a_model_config_of_other_cameras_or_size(tmp_path, trajectories, capsys):
    """With init_checkpoint or --resume the checkpoint's model is trained and the episodes are read for its
    cameras: a `model` listing the same cameras in another order (swapped channels) or another image size is
    refused, naming the fields, before the episodes are read."""
    import dataclasses

    from vla_rl.cli.main import main

    two = dataclasses.replace(TINY, cameras=("agentview", "wrist"))
    both = [Trajectory(np.concatenate([t.frames, 255 - t.frames], axis=-1), t.proprio, t.actions, t.instruction)
            for t in trajectories[:1]]
    start = save_world_model(tmp_path / "start", VideoWorldModel(two), 1)
    swapped = dataclasses.replace(two, cameras=("wrist", "agentview"))
    config = WMTrainConfig(out_dir=tmp_path / "tuned", model=swapped, init_checkpoint=start, steps=2, batch_size=2,
                           checkpoint_every=2, eval_every=0, log_every=1)
    with pytest.raises(ValueError,
                       match=r"cameras \('agentview', 'wrist'\) there, \('wrist', 'agentview'\) configured"):
        train_world_model(config, both, show_progress=False)
    assert not (tmp_path / "tuned").exists()
    assert main(["wm", "train", "--set", f"init_checkpoint={start}", "--set", f"out_dir={tmp_path / 'cli'}",
                 "--set", f"data_dir={tmp_path / 'no_episodes'}", "--set", "model.cameras=[agentview, wrist]",
                 "--set", "model.image_size=64"]) == 2
    assert "image_size 32 there, 64 configured" in capsys.readouterr().err
    train_world_model(dataclasses.replace(config, model=two), both, show_progress=False)
    assert load_world_model(tmp_path / "tuned").config.cameras == ("agentview", "wrist")
    with pytest.raises(ValueError, match=r"cameras .* there, .* configured"):  # resuming checks the run's own model
        train_world_model(dataclasses.replace(config, steps=3), both, resume=True, show_progress=False)


def test_proprio_windows_end_with_their_episode_and_one_step_is_the_one_step_loss(trajectories):
    from world_model.proprio import ProprioTrack, ProprioWindows, open_loop_proprio_loss

    tracks = [ProprioTrack(t.proprio, t.actions) for t in trajectories]
    windows = ProprioWindows(tracks)
    assert len(windows) == sum(len(t.actions) for t in trajectories)
    window = windows.sample(64, 500, np.random.default_rng(0))  # longer than any episode
    assert window["actions"].shape == (64, 500, 7) and window["targets"].shape == (64, 500, 8)
    assert window["mask"][:, 0].all() and not window["mask"][:, -1].any()
    assert (window["mask"][:, :-1] >= window["mask"][:, 1:]).all()  # once an episode ends, the window stays ended
    model = VideoWorldModel(TINY)
    one = windows.sample(16, 1, np.random.default_rng(1))
    predicted = model.next_proprio(one["now"], one["previous"], one["actions"][:, 0])
    expected = torch.nn.functional.mse_loss(model.normalise_proprio(predicted), model.normalise_proprio(one["targets"][:, 0]))
    assert open_loop_proprio_loss(model, one).item() == pytest.approx(expected.item(), rel=1e-5)


def test_proprio_only_training_fits_the_head_open_loop_and_leaves_the_frames(tmp_path, trajectories):
    from sim_envs.progress_episodes import write_episodes
    from world_model.proprio import ProprioTrack, open_loop_ee_error, read_proprio_tracks

    model = VideoWorldModel(TINY)
    mean, std = TransitionSampler(trajectories, TINY.context_frames).proprio_stats()
    model.proprio_mean.copy_(mean)
    model.proprio_std.copy_(std)
    save_world_model(tmp_path / "init", model, 0)
    tracks = [ProprioTrack(t.proprio, t.actions) for t in trajectories]
    before = open_loop_ee_error(model, tracks)  # the untrained head predicts "nothing moves"
    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, init_checkpoint=tmp_path / "init", proprio_only=True,
                           proprio_rollout_steps=6, proprio_batch_size=64, steps=150, lr=3e-3, warmup_steps=10,
                           eval_every=0, log_every=50, seed=0)
    summary = train_world_model(config, trajectories, trajectories, show_progress=False, proprio_tracks=tracks)
    assert summary["eval"]["held_out_ee_error_open_loop_m"] < 0.5 * before
    fitted = load_world_model(tmp_path / "wm")
    for name, value in fitted.state_dict().items():
        if not name.startswith("proprio_head"):
            assert torch.equal(value, model.state_dict()[name]), name
    held_out = collect_progress_episodes(["Reach"], {"expert": 1}, "eval", image_size=32, workers=0,
                                         show_progress=False)
    write_episodes(tmp_path / "eval.hdf5", held_out)
    with pytest.raises(ValueError, match="only training episodes"):
        read_proprio_tracks(tmp_path / "eval.hdf5")
    with pytest.raises(ValueError, match="set init_checkpoint"):
        WMTrainConfig(proprio_only=True)
    with pytest.raises(ValueError, match="proprio_rollout_steps > 1"):
        train_world_model(WMTrainConfig(out_dir=tmp_path / "x", model=TINY, steps=1), trajectories,
                          show_progress=False, proprio_tracks=tracks)


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    torch.manual_seed(0)
    model = VideoWorldModel(TINY).eval()
    path = save_world_model(tmp_path / "step_000001", model, 1)
    loaded = load_world_model(path)
    context = torch.randint(0, 255, (2, 2, 32, 32, 3), dtype=torch.uint8)
    args = (context, torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 7), ["reach"] * 2)
    a = model.sample_next(*args, generator=torch.Generator().manual_seed(1))
    b = loaded.sample_next(*args, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1])
    with open(path / "world_model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        load_world_model(path)


class ScriptedCritic:
    """Says "done" from the ``done_at``-th frame on (a unit-test stand-in; the env test below uses a real critic)."""

    def __init__(self, done_at: int):
        self.done_at, self.calls = done_at, 0

    def score(self, episodes):
        self.calls += 1
        count = len(episodes.instructions)
        done = np.zeros((count, episodes.frames.shape[1]), np.float32)
        done[:, 1] = 1.0 if self.calls >= self.done_at else 0.0
        return CriticOutput(progress=np.zeros_like(done), done_prob=done)


def _wm_env(critic, num_envs=2, done_threshold=0.5):
    torch.manual_seed(0)
    reset_env = TabletopVecEnv(VecEnvConfig(num_envs=num_envs, num_workers=0, image_size=32))
    return WorldModelVecEnv(VideoWorldModel(TINY), critic, reset_env, get_suite("tabletop").max_steps,
                            done_threshold=done_threshold)


def test_env_resets_from_real_observations_and_terminates_on_the_critic():
    env = _wm_env(ScriptedCritic(done_at=3))
    specs = [TaskSpec("Reach", 5, "train"), TaskSpec("PressButton", 2, "train")]
    try:
        obs = env.reset(specs)
        with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as real:
            real_obs = real.reset(specs)
        assert np.array_equal(obs.images["agentview"], real_obs.images["agentview"])
        assert np.allclose(obs.proprio, real_obs.proprio) and obs.instructions == real_obs.instructions
        for step in range(1, 4):
            result = env.step(np.zeros((2, 7), np.float32))
            assert result.terminated.all() == (step == 3)
        assert result.success.all() and np.all(result.reward == 1.0)
        frozen = env.step(np.zeros((2, 7), np.float32))  # autoreset off: frozen, no reward, flags kept
        assert np.all(frozen.reward == 0) and frozen.terminated.all()
        assert np.array_equal(frozen.obs.images["agentview"], result.obs.images["agentview"])
        with pytest.raises(ValueError, match="NaN"):
            env.step(np.full((2, 7), np.nan, np.float32))
    finally:
        env.close()


def test_env_clips_the_actions_as_the_simulator_does():
    """The simulator's arm clips every action to [-1, 1]: a policy emitting larger ones must move the imagined
    arm exactly as far as the clipped action, as in training (the proprio head learns from clipped actions)."""
    torch.manual_seed(0)
    model = VideoWorldModel(TINY)
    torch.nn.init.normal_(model.proprio_head[-1].weight, std=0.1)  # a head whose prediction depends on the action
    actions = np.tile(np.array([[3.0, -2.5, 1.5, 0.2, -0.4, 2.0, -3.0]], np.float32), (2, 1))
    specs = [TaskSpec("Reach", 5, "train"), TaskSpec("Reach", 6, "train")]
    steps = {}
    for name, taken in (("large", actions), ("clipped", np.clip(actions, -1, 1))):
        env = WorldModelVecEnv(model, ScriptedCritic(done_at=99),
                               TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)),
                               get_suite("tabletop").max_steps)
        try:
            start = env.reset(specs)
            steps[name] = env.step(taken).obs
        finally:
            env.close()
    assert not np.allclose(steps["clipped"].proprio, start.proprio)
    np.testing.assert_array_equal(steps["large"].proprio, steps["clipped"].proprio)
    np.testing.assert_array_equal(steps["large"].images["agentview"], steps["clipped"].images["agentview"])


def test_env_with_a_real_critic_truncates_at_the_task_limit_and_feeds_the_collector():
    from tests.policy.conftest import make_policy
    from vla_rl.reward.critic import CriticConfig, ProgressCritic
    from vla_rl.rollout.collector import collect

    torch.manual_seed(0)
    critic = ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2)).eval()
    env = _wm_env(critic, done_threshold=0.999)  # an untrained critic never reaches it
    try:
        batch, stats = collect(make_policy(), env, [TaskSpec("Reach", 0, "train"), TaskSpec("Reach", 1, "train")])
    finally:
        env.close()
    limit = get_suite("tabletop").max_steps("Reach")
    assert np.all(batch.lengths == limit) and not batch.success.any()
    assert batch.images["agentview"].shape[:2] == (2, limit) and stats.env_steps == 2 * limit
    assert len(np.unique(batch.images["agentview"][:, -1].reshape(2, -1), axis=0)) == 2  # imagined, per env


def test_a_wrist_critic_judges_imagined_wrist_frames_and_needs_a_model_that_predicts_them():
    import dataclasses

    from vla_rl.reward.critic import CriticConfig, ProgressCritic

    torch.manual_seed(0)
    critic = ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2, wrist_view=True)).eval()
    reset_env = TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32, wrist_camera=True))
    limits = get_suite("tabletop").max_steps
    try:
        with pytest.raises(ValueError, match="reads the wrist camera"):
            WorldModelVecEnv(VideoWorldModel(TINY), critic, reset_env, limits)
        model = VideoWorldModel(dataclasses.replace(TINY, cameras=("agentview", "wrist")))
        env = WorldModelVecEnv(model, critic, reset_env, limits, done_threshold=0.999)
        env.reset([TaskSpec("Reach", 0, "train"), TaskSpec("PressButton", 1, "train")])
        result = env.step(np.zeros((2, 7), np.float32))
        assert result.obs.images["wrist"].shape == (2, 32, 32, 3)
        assert all(0 < info["critic_done_prob"] < 1 for info in result.info)
    finally:
        reset_env.close()


def test_evaluation_report_and_videos(tmp_path, trajectories):
    from vla_rl.reward.critic import CriticConfig, ProgressCritic

    torch.manual_seed(0)
    critic = ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2)).eval()
    report = evaluate_world_model(VideoWorldModel(TINY).eval(), trajectories, tmp_path, critic=critic,
                                  horizons=(1, 8), videos=2, show_progress=False, samples=2)
    assert set(report["fidelity"]) == {"1", "8"}
    assert report["fidelity"]["1"]["episodes"] == len(trajectories)
    agreement = report["outcome_agreement"]
    assert agreement["episodes"] == len(trajectories) and 0 <= agreement["agreement"] <= 1
    low, high = agreement["agreement_interval"]  # Wilson 95% over the episodes, around the figure
    assert 0 <= low <= agreement["agreement"] <= high <= 1 and high - low > 0.1  # a handful of episodes: wide
    counts = {b: sum(t.behaviour == b for t in trajectories) for b in ("expert", "random")}
    by_behaviour = agreement["agreement_by_behaviour"]
    assert set(by_behaviour) == set(counts)  # the per-behaviour rates add up to the overall one
    assert sum(by_behaviour[b] * n for b, n in counts.items()) / len(trajectories) == pytest.approx(agreement["agreement"])
    assert set(agreement["mean_peak_done_prob_by_behaviour"]) == set(counts)
    over = report["outcome_agreement_over_samples"]  # the first seed's figure is the headline one
    assert over["seeds"] == [0, 1] and over["agreement"][0] == agreement["agreement"]
    assert over["min"] <= over["mean"] <= over["max"]
    drift = report["proprio_drift"]
    assert drift["ee_position_error_last_step"]["episodes"] == len(trajectories)
    assert set(drift["ee_position_error_last_step_median_m_by_behaviour"]) == set(counts)
    assert len(report["videos"]) == 2 and (tmp_path / "eval.json").is_file() and (tmp_path / "horizons.png").is_file()


def test_evaluation_of_episodes_shorter_than_the_horizons_saves_its_report(tmp_path, trajectories, monkeypatch):
    """No episode reaches the largest horizon: the strip shows the horizons some episode reaches, or
    none at all, instead of failing after all the imagination; eval.json is saved before the videos."""
    import json

    import world_model.evaluate as evaluate

    first = trajectories[0]
    short = [Trajectory(frames=first.frames[:4], proprio=first.proprio[:4], actions=first.actions[:3],
                        instruction=first.instruction, success=first.success[:4], behaviour="expert")]
    model = VideoWorldModel(TINY).eval()
    report = evaluate_world_model(model, short, tmp_path / "some", horizons=(1, 16), videos=0, show_progress=False)
    assert set(report["fidelity"]) == {"1"} and (tmp_path / "some" / "horizons.png").is_file()
    report = evaluate_world_model(model, short, tmp_path / "some", horizons=(8, 16), videos=0, show_progress=False)
    assert report["fidelity"] == {} and report["horizon_strip"] is None
    assert json.loads((tmp_path / "some" / "eval.json").read_text())["horizon_strip"] is None
    assert not (tmp_path / "some" / "horizons.png").exists()  # the earlier evaluation's strip is not this one's

    def broken_videos(*args, **kwargs):
        raise OSError("no video encoder")

    monkeypatch.setattr(evaluate, "write_videos", broken_videos)
    with pytest.raises(OSError, match="no video encoder"):
        evaluate_world_model(model, short, tmp_path / "videos", horizons=(1,), videos=1, show_progress=False)
    assert json.loads((tmp_path / "videos" / "eval.json").read_text())["fidelity"]["1"]["episodes"] == 1


def test_a_second_evaluation_into_the_same_out_leaves_only_its_own_videos(tmp_path, trajectories):
    model = VideoWorldModel(TINY).eval()
    first = evaluate_world_model(model, trajectories, tmp_path, horizons=(1,), videos=3, show_progress=False)
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 3
    (tmp_path / "videos" / "notes.txt").write_text("kept: not a video of the evaluation")
    second = evaluate_world_model(model, trajectories[:1], tmp_path, horizons=(1,), videos=1, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == sorted(
        [Path(path).name for path in second["videos"]] + ["notes.txt"])
    assert len(second["videos"]) == 1 and len(first["videos"]) == 3
    evaluate_world_model(model, trajectories[:1], tmp_path, horizons=(1,), videos=0, show_progress=False)
    assert [p.name for p in (tmp_path / "videos").iterdir()] == ["notes.txt"]


def test_proprio_drift_measures_the_imagined_end_effector_against_the_real_one(trajectories):
    from world_model.evaluate import imagine_open_loop_with_proprio, proprio_drift

    frames, proprio = imagine_open_loop_with_proprio(VideoWorldModel(TINY).eval(), trajectories[:3], show_progress=False)
    assert [len(p) for p in proprio] == [len(t.proprio) for t in trajectories[:3]] == [len(f) for f in frames]
    assert all(np.array_equal(p[0], t.proprio[0]) for p, t in zip(proprio, trajectories))  # starts from the real state
    shifted = [t.proprio + np.array([0.03, 0.0, 0.04] + [0.0] * (t.proprio.shape[1] - 3), np.float32)
               for t in trajectories]
    for t, p in zip(trajectories, shifted):
        p[0] = t.proprio[0]
    drift = proprio_drift(trajectories, shifted, horizons=(1, 1000))
    assert drift["ee_position_error_by_horizon"][1]["median_m"] == pytest.approx(0.05, abs=1e-6)
    assert 1000 not in drift["ee_position_error_by_horizon"]  # no episode is that long
    assert drift["ee_position_error_last_step"]["p90_m"] == pytest.approx(0.05, abs=1e-6)
    assert drift["ee_position_error_last_step"]["episodes"] == len(trajectories)


class PeakCritic:
    """Gives episode ``i`` of a scored batch the done probability ``peaks[i]`` on its second frame (a
    unit-test stand-in whose verdicts are known; a real critic is calibrated below too)."""

    def __init__(self, peaks):
        self.peaks = np.asarray(peaks, np.float32)

    def score(self, episodes):
        done = np.zeros(episodes.frames.shape[:2], np.float32)
        done[:, 1] = self.peaks
        return CriticOutput(progress=np.zeros_like(done), done_prob=done)


def test_done_threshold_calibration_picks_the_best_agreeing_threshold(trajectories):
    from vla_rl.reward.critic import CriticConfig, ProgressCritic

    truth = np.array([t.succeeded for t in trajectories])
    assert truth.any() and not truth.all()  # experts succeed, random motion does not
    model = VideoWorldModel(TINY).eval()
    # successes peak at 0.3, failures at 0.1: every threshold in (0.1, 0.3] agrees fully; 0.3 is nearest 0.5
    calibration = calibrate_done_threshold(model, PeakCritic(np.where(truth, 0.3, 0.1)), trajectories,
                                           show_progress=False)
    assert calibration["done_threshold"] == 0.3 and calibration["agreement"] == 1.0
    assert calibration["agreement_by_threshold"][0.5] == pytest.approx((~truth).mean())
    assert calibration["agreement_by_threshold"][0.05] == pytest.approx(truth.mean())
    assert not calibration["at_grid_edge"]
    assert calibration["majority_outcome_agreement"] == pytest.approx(max(truth.mean(), 1 - truth.mean()))
    # successes peak at 0.06 and failures at 0.01: only the lowest threshold separates them
    edge = calibrate_done_threshold(model, PeakCritic(np.where(truth, 0.06, 0.01)), trajectories, show_progress=False)
    assert edge["done_threshold"] == 0.05 and edge["at_grid_edge"] and edge["agreement"] == 1.0
    torch.manual_seed(0)
    real = calibrate_done_threshold(model, ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1,
                                                                       heads=2)).eval(), trajectories,
                                    show_progress=False)
    assert 0.05 <= real["done_threshold"] <= 0.95 and real["agreement"] == max(real["agreement_by_threshold"].values())
    with pytest.raises(ValueError, match="no trajectories"):
        calibrate_done_threshold(model, PeakCritic([]), [], show_progress=False)


def test_wm_eval_calibrates_on_training_episodes_and_refuses_the_held_out_ones(tmp_path, capsys):
    import json

    from sim_envs.progress_episodes import write_episodes
    from vla_rl.cli.main import main
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic

    files = {}
    for split in ("train", "eval"):
        episodes = collect_progress_episodes(["Reach"], {"expert": 1, "random": 1}, split, image_size=32, workers=0,
                                             show_progress=False)
        files[split] = str(write_episodes(tmp_path / f"{split}.hdf5", episodes))
    torch.manual_seed(0)
    world_model = str(save_world_model(tmp_path / "wm" / "step_000001", VideoWorldModel(TINY), 1))
    critic = str(save_critic(tmp_path / "critic", ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1,
                                                                              heads=2))))
    common = ["wm", "eval", "--world-model", world_model, "--critic", critic, "--data", files["eval"],
              "--horizons", "1", "--videos", "0", "--calibration-episodes", "2"]
    assert main(common + ["--calibrate-on", files["train"], "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    calibration = report["calibration"]
    assert calibration["data"] == files["train"] and calibration["episode_indices"] == [0, 1]
    assert report["outcome_agreement"]["done_threshold"] == calibration["done_threshold"]
    assert calibration["majority_outcome_agreement"] == 0.5  # one expert success, one random failure
    assert "majority outcome" in capsys.readouterr().out
    assert main(common + ["--calibrate-on", files["eval"]]) == 2
    assert "must not be the held-out data" in capsys.readouterr().err
    # the split each file's episodes carry, not only their path, says what they may be used for
    import shutil

    other_held_out = shutil.copy(files["eval"], tmp_path / "more_eval.hdf5")
    assert main(common + ["--calibrate-on", str(other_held_out)]) == 2
    assert "split ['eval']: --calibrate-on" in capsys.readouterr().err
    training_as_held_out = ["wm", "eval", "--world-model", world_model, "--data", files["train"], "--horizons", "1",
                            "--videos", "0", "--out", str(tmp_path / "no")]
    assert main(training_as_held_out) == 2
    assert "split ['train']: wm eval --data" in capsys.readouterr().err
    for threshold in ("0", "1"):
        assert main(common + ["--done-threshold", threshold, "--out", str(tmp_path / "no")]) == 2
        assert "--done-threshold must be in (0, 1)" in capsys.readouterr().err
    for train_file, eval_file, named in ((files["eval"], files["eval"], "training the world model"),
                                         (files["train"], files["train"], "the held-out evaluation")):
        data_dir = tmp_path / f"data_{len(named)}"
        data_dir.mkdir()
        shutil.copy(train_file, data_dir / "train.hdf5")
        shutil.copy(eval_file, data_dir / "eval.hdf5")
        assert main(["wm", "train", "--set", f"data_dir={data_dir}", "--set", f"out_dir={tmp_path / 'wm_run'}"]) == 2
        assert named in capsys.readouterr().err
    assert not (tmp_path / "wm_run").exists()


def test_wm_eval_warns_when_the_critic_trained_on_the_calibration_episodes(tmp_path, capsys):
    """A critic that saw the calibration episodes, as they are or as `wm imagine`'s copies (or through the critic
    it was fine-tuned from), judges them better than new rollouts: the calibrated threshold is optimistic. A
    warning, not a refusal; the episodes are recognised by content, wherever the files lie."""
    import json

    import h5py

    from sim_envs.progress_episodes import read_episodes, write_episodes
    from vla_rl.cli.main import main
    from vla_rl.cli.world_model import episodes_the_critic_trained_on
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic
    from world_model.imagined_episodes import imagine_labelled_episodes

    train = write_episodes(tmp_path / "data" / "train.hdf5",
                           collect_progress_episodes(["Reach"], {"expert": 2}, "train", image_size=32, workers=0,
                                                     show_progress=False))
    held_out = write_episodes(tmp_path / "other" / "train.hdf5",  # other episodes, whatever the file's name
                              collect_progress_episodes(["Reach"], {"expert": 1}, "eval", image_size=32, workers=0,
                                                        show_progress=False))
    torch.manual_seed(0)
    model = VideoWorldModel(TINY)
    world_model = str(save_world_model(tmp_path / "wm" / "step_000001", model, 1))
    imagined = write_episodes(tmp_path / "imagined.hdf5",
                              imagine_labelled_episodes(model.eval(), list(read_episodes(train)), show_progress=False))
    critic = ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2))

    def saved(name, data_dir, extra_files=(), init_from=None, recorded=True):
        train_config = {"data_dir": str(data_dir), "extra_train_files": [str(f) for f in extra_files],
                        "init_from": None if init_from is None else str(init_from)}
        return save_critic(tmp_path / name, critic, {"train_config": train_config} if recorded else {})

    seen = saved("seen", tmp_path / "data")
    critics = {"seen": seen, "imagined": saved("imagined_copies", tmp_path / "other", [imagined]),
               "fine_tuned": saved("fine_tuned", tmp_path / "other", init_from=seen),
               "unseen": saved("unseen", tmp_path / "other"),
               "missing_file": saved("missing_file", tmp_path / "other", [tmp_path / "gone.hdf5"]),
               "unrecorded": saved("unrecorded", tmp_path / "data", recorded=False),
               "gone_start": saved("gone_start", tmp_path / "other", [held_out.parent / "not_episodes.hdf5"],
                                   init_from=tmp_path / "deleted_critic")}
    with h5py.File(held_out.parent / "not_episodes.hdf5", "w") as demo_like:  # a demo file, say
        demo_like.create_group("data")
    found = {name: episodes_the_critic_trained_on(path, train, [0, 1]) for name, path in critics.items()}
    assert {name: row["episodes"] for name, row in found.items()} == {
        "seen": 2, "imagined": 2, "fine_tuned": 2, "unseen": 0, "missing_file": 0, "unrecorded": 0, "gone_start": 0}
    # files that cannot be read, and a starting critic that is gone, are reported, not an error
    assert found["gone_start"]["unchecked_files"] == [str(held_out.parent / "not_episodes.hdf5"),
                                                      str(tmp_path / "deleted_critic")]
    assert found["imagined"]["files"] == [str(imagined)] and found["fine_tuned"]["files"] == [str(train)]
    assert found["missing_file"]["unchecked_files"] == [str(tmp_path / "gone.hdf5")]
    assert not found["unrecorded"]["recorded"]
    common = ["wm", "eval", "--world-model", world_model, "--data", str(held_out), "--horizons", "1", "--videos", "0",
              "--calibration-episodes", "2", "--calibrate-on", str(train)]
    assert main(common + ["--critic", str(critics["imagined"]), "--out", str(tmp_path / "warned")]) == 0
    assert "warning: the critic trained on 2 of the 2 calibration episodes" in capsys.readouterr().out
    calibration = json.loads((tmp_path / "warned" / "eval.json").read_text())["calibration"]
    assert calibration["critic_trained_on_calibration_episodes"]["episodes"] == 2
    assert main(common + ["--critic", str(critics["unseen"]), "--out", str(tmp_path / "clean")]) == 0
    assert "the critic trained on" not in capsys.readouterr().out


def test_two_camera_trajectories_and_their_evaluation_with_a_wrist_critic(tmp_path):
    """Collected episodes stack the agent view and the wrist camera for a world model predicting both;
    the wrist critic judges the imagined wrist frames; the videos show both cameras."""
    import dataclasses

    import imageio.v3 as iio

    from sim_envs.progress_episodes import write_episodes
    from vla_rl.cli.world_model import trajectories_of
    from vla_rl.reward.critic import CriticConfig, ProgressCritic

    episodes = collect_progress_episodes(["Reach"], {"expert": 1, "random": 1}, "eval", image_size=32, workers=0,
                                         show_progress=False)
    path = write_episodes(tmp_path / "eval.hdf5", episodes)
    both = trajectories_of(path, ("agentview", "wrist"))
    assert both[0].frames.shape[-1] == 6
    assert np.array_equal(both[0].frames[..., 3:], episodes[0].wrist_frames)
    assert np.array_equal(both[1].frames[..., :3], episodes[1].frames)
    torch.manual_seed(0)
    critic = ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2, wrist_view=True)).eval()
    with pytest.raises(ValueError, match="predicts only"):
        evaluate_world_model(VideoWorldModel(TINY).eval(), trajectories_of(path), tmp_path / "one", critic=critic,
                             horizons=(1,), videos=0, show_progress=False)
    # a model of the wrist camera alone: its frames are not the agent view the critic reads (as the env refuses it)
    wrist_only = VideoWorldModel(dataclasses.replace(TINY, cameras=("wrist",))).eval()
    plain_critic = ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2)).eval()
    with pytest.raises(ValueError, match=r"reads the agent view; the world model predicts only \['wrist'\]"):
        evaluate_world_model(wrist_only, trajectories_of(path, ("wrist",)), tmp_path / "wrist", critic=plain_critic,
                             horizons=(1,), videos=0, show_progress=False)
    assert not (tmp_path / "wrist" / "eval.json").exists()
    model = VideoWorldModel(dataclasses.replace(TINY, cameras=("agentview", "wrist"))).eval()
    report = evaluate_world_model(model, both, tmp_path / "two", critic=critic, horizons=(1,), videos=1,
                                  show_progress=False)
    assert report["outcome_agreement"]["episodes"] == 2
    assert iio.imread(report["videos"][0]).shape[1:3] == (2 * 32 * 4, (2 * 32 + 4) * 4)  # cameras stacked
    write_episodes(tmp_path / "plain.hdf5", [dataclasses.replace(episodes[0], wrist_frames=None)])
    with pytest.raises(ValueError, match="without the wrist camera"):
        trajectories_of(tmp_path / "plain.hdf5", ("agentview", "wrist"))


def test_grpo_trains_in_the_world_model_and_evaluates_in_the_simulator(tmp_path):
    """The same trainer, the env switched by config: rollouts are imagined, evaluation is real."""
    from sim_envs.vector import SimVecEnv
    from tests.policy.conftest import make_policy
    from vla_rl.cli.factories import eval_state_counter, make_pool
    from vla_rl.policy.checkpoint import save_checkpoint
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic
    from vla_rl.train.learner import AlgorithmConfig
    from vla_rl.train.trainer import EnvConfig, RolloutConfig, Trainer, TrainConfig

    torch.manual_seed(0)
    policy = make_policy()
    sft = save_checkpoint(tmp_path / "sft" / "step_000001", policy.model, policy.action_tokenizer,
                          extra={"trained_tasks": ["Reach"]})
    critic = save_critic(tmp_path / "critic", ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1,
                                                                          heads=2)))
    world_model = save_world_model(tmp_path / "wm" / "step_000001", VideoWorldModel(TINY), 1)
    config = TrainConfig(
        init_checkpoint=sft, out_dir=tmp_path / "rl", tasks=("Reach",), iterations=1, group_size=2,
        groups_per_iteration=1, max_sampling_rounds=1, eval_every=1, eval_episodes_per_task=2, checkpoint_every=1,
        algorithm=AlgorithmConfig(dynamic_sampling=False, minibatch_size=64),
        rollout=RolloutConfig(backend="local", num_workers=1, envs_per_worker=2),
        env=EnvConfig(kind="world_model", world_model_checkpoint=world_model, critic_checkpoint=critic))
    pool = make_pool(config.rollout, "tabletop", sft, config.temperature, config.seed, config.env)
    try:
        worker = pool.workers[0]
        assert isinstance(worker.env, WorldModelVecEnv)
        summary = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False).run()
        assert isinstance(worker.eval_env, SimVecEnv)
    finally:
        pool.close()
    assert summary["iterations"] == 1 and [row["iteration"] for row in summary["eval_history"]] == [0, 1]
    assert summary["eval_history"][-1]["per_task"]["Reach"]["episodes"] == 2


def test_a_wrist_reward_critic_needs_a_world_model_that_predicts_the_wrist_camera(tmp_path):
    """Refused when the pool is built, from the world model's config, not after a rollout round whose
    episodes carry no wrist frames for the reward critic."""
    import dataclasses

    from tests.policy.conftest import make_policy
    from vla_rl.cli.factories import check_world_model_cameras, make_pool
    from vla_rl.policy.checkpoint import save_checkpoint
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic
    from vla_rl.reward.sources import RewardConfig
    from vla_rl.train.trainer import EnvConfig, RolloutConfig

    torch.manual_seed(0)
    policy = make_policy()
    sft = save_checkpoint(tmp_path / "sft", policy.model, policy.action_tokenizer)
    small = CriticConfig(image_size=32, hidden_size=32, layers=1, heads=2, pretrained_vision=False)
    env_critic = save_critic(tmp_path / "critic", ProgressCritic(small))
    wrist_critic = save_critic(tmp_path / "wrist_critic", ProgressCritic(dataclasses.replace(small, wrist_view=True)))
    agent_only = save_world_model(tmp_path / "wm" / "step_000001", VideoWorldModel(TINY), 1)
    env = EnvConfig(kind="world_model", world_model_checkpoint=tmp_path / "wm", critic_checkpoint=env_critic)
    reward = RewardConfig(source="critic", critic_checkpoint=wrist_critic)
    with pytest.raises(ValueError,
                       match=r"read by the reward critic; the world model .* predicts only \['agentview'\]"):
        make_pool(RolloutConfig(backend="local", num_workers=1, envs_per_worker=2), "tabletop", sft, 1.0, 0, env,
                  reward)
    assert agent_only.is_dir()
    two_cameras = VideoWorldModel(dataclasses.replace(TINY, cameras=("agentview", "wrist")))
    both = save_world_model(tmp_path / "wm2", two_cameras, 1)
    check_world_model_cameras(dataclasses.replace(env, world_model_checkpoint=both), False, True)


def test_the_world_model_runs_on_the_device_named_and_in_rollouts_on_the_policys(tmp_path, trajectories,
                                                                                 monkeypatch, capsys):
    """`auto` (the default of training, `wm eval` and `wm imagine`) is the GPU when one is visible; a rollout
    worker's world-model env resolves the device as its policy does, in the worker, instead of the CPU always."""
    import world_model.train as wm_train
    from vla_rl.cli.factories import make_world_model_env
    from vla_rl.cli.main import main
    from vla_rl.core.device import resolve_device
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic
    from vla_rl.train.trainer import EnvConfig

    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert WMTrainConfig().device == "auto" and resolve_device("auto") == here
    config = WMTrainConfig(out_dir=tmp_path / "wm", model=TINY, steps=1, batch_size=2, eval_every=0, log_every=1)
    train_world_model(config, trajectories[:1], show_progress=False)
    assert {p.device.type for p in load_world_model(tmp_path / "wm", resolve_device("auto")).parameters()} == {here}
    if not torch.cuda.is_available():  # a device this machine lacks fails before any work
        with pytest.raises(ValueError, match="CUDA is not available"):
            train_world_model(WMTrainConfig(out_dir=tmp_path / "gpu", device="cuda"), trajectories[:1],
                              show_progress=False)
        assert not (tmp_path / "gpu").exists()
        assert main(["wm", "eval", "--world-model", str(tmp_path / "wm"), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    loaded = {}
    real_load = wm_train.load_world_model

    def load_where_asked(path, device="cpu"):
        loaded["device"] = device
        return real_load(path)  # on the CPU: the GPU is only pretended below

    monkeypatch.setattr(wm_train, "load_world_model", load_where_asked)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a worker with a GPU, as its policy sees it
    critic = save_critic(tmp_path / "critic", ProgressCritic(CriticConfig(image_size=32, hidden_size=32, layers=1,
                                                                          heads=2)))
    env = make_world_model_env("tabletop", 1, 32, False, 0, EnvConfig(kind="world_model",
                                                                      world_model_checkpoint=tmp_path / "wm",
                                                                      critic_checkpoint=critic))
    env.close()
    assert loaded["device"] == "cuda"


def test_bad_settings_are_refused_before_any_work(tmp_path, capsys):
    """Each of these failed late (after the episodes were read, or after calibration ran) or not at all."""
    from vla_rl.cli.main import main
    from vla_rl.train.trainer import WORLD_MODEL_MAX_SAMPLING_STEPS, EnvConfig
    from world_model.model import MAX_SAMPLING_STEPS

    for name, value in (("log_every", 0), ("eval_transitions", 0), ("eval_every", -1), ("time_limit_minutes", -1.0)):
        with pytest.raises(ValueError, match=f"{name} must be >= "):
            WMTrainConfig(**{name: value})
    more = tmp_path / "more.hdf5"
    with pytest.raises(ValueError, match="proprio_train_files .* set proprio_rollout_steps > 1 or proprio_only"):
        WMTrainConfig(proprio_train_files=[more])
    WMTrainConfig(proprio_train_files=[more], proprio_rollout_steps=4)
    # refused from the config, before any episode file is read (none of them exists here)
    assert main(["wm", "train", "--set", f"data_dir={tmp_path / 'none'}", "--set", f"out_dir={tmp_path / 'wm'}",
                 "--set", f"proprio_train_files=[{more}]"]) == 2
    assert "set proprio_rollout_steps > 1 or proprio_only" in capsys.readouterr().err
    assert WORLD_MODEL_MAX_SAMPLING_STEPS == MAX_SAMPLING_STEPS
    EnvConfig(sampling_steps=MAX_SAMPLING_STEPS)
    for steps in (-1, MAX_SAMPLING_STEPS + 1):
        with pytest.raises(ValueError, match=rf"env.sampling_steps must be in \[0, {MAX_SAMPLING_STEPS}\]"):
            EnvConfig(sampling_steps=steps)
    # before the world model is loaded (the one named here does not exist) or calibration runs
    common = ["wm", "eval", "--world-model", str(tmp_path / "no_model"), "--data", str(tmp_path / "no.hdf5")]
    for options, message in ((["--samples", "0"], "--samples must be >= 1"),
                             (["--horizons", "1", "0"], "--horizons must be >= 1"),
                             (["--horizons", "-3"], "--horizons must be >= 1"),
                             (["--sampling-steps", "9"], "--sampling-steps must be in [0, 8]")):
        assert main(common + options) == 2
        assert message in capsys.readouterr().err


def test_world_model_env_config_is_checked():
    from vla_rl.train.trainer import EnvConfig

    with pytest.raises(ValueError, match="world_model_checkpoint"):
        EnvConfig(kind="world_model")
    with pytest.raises(ValueError, match="unknown env kind"):
        EnvConfig(kind="dream")


def test_imagined_training_episodes_keep_their_labels_and_the_cli_refuses_held_out_ones(tmp_path, capsys):
    """`wm imagine`: imagined frames (both cameras) replace the real ones, the simulator labels stay;
    held-out episodes are refused, since they measure the imagined verdicts' agreement."""
    import dataclasses

    from sim_envs.progress_episodes import read_episodes, write_episodes
    from vla_rl.cli.main import main

    train = collect_progress_episodes(["Reach"], {"expert": 1, "random": 1}, "train", image_size=32, workers=0,
                                      show_progress=False)
    data = write_episodes(tmp_path / "train.hdf5", train)
    torch.manual_seed(0)
    model = VideoWorldModel(dataclasses.replace(TINY, cameras=("agentview", "wrist")))
    world_model = str(save_world_model(tmp_path / "wm" / "step_000001", model, 1))
    out = tmp_path / "imagined.hdf5"
    assert main(["wm", "imagine", "--world-model", world_model, "--data", str(data), "--out", str(out),
                 "--copies", "2"]) == 0
    assert "4 imagined episodes" in capsys.readouterr().out
    imagined = list(read_episodes(out))
    assert [e.behaviour for e in imagined] == ["imagined-expert", "imagined-random"] * 2
    assert {e.split for e in imagined} == {"train"}  # so `critic train` takes the file as extra_train_files
    for real, fake in zip(train * 2, imagined):
        assert np.array_equal(fake.frames[0], real.frames[0]) and np.array_equal(fake.wrist_frames[0], real.wrist_frames[0])
        assert fake.frames.shape == real.frames.shape and not np.array_equal(fake.frames[1:], real.frames[1:])
        assert not np.array_equal(fake.wrist_frames[1:], real.wrist_frames[1:])
        assert np.array_equal(fake.progress, real.progress) and np.array_equal(fake.success, real.success)
        assert np.array_equal(fake.named_pixels, real.named_pixels) and fake.instruction == real.instruction
    held_out = write_episodes(tmp_path / "eval.hdf5", [dataclasses.replace(train[0], split="eval")])
    assert main(["wm", "imagine", "--world-model", world_model, "--data", str(held_out),
                 "--out", str(tmp_path / "no.hdf5")]) == 2
    assert "only training episodes" in capsys.readouterr().err
