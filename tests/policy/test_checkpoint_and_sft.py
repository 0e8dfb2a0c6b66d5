import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_rl.core.demo_file import Episode, read_demo_file, write_demo_file
from vla_rl.policy.checkpoint import CorruptCheckpointError, latest_valid_checkpoint, load_checkpoint, save_checkpoint
from vla_rl.policy import ActionTokenizer, NormStats
from vla_rl.policy.model import VLAModel
from vla_rl.policy.sft import SFTConfig, demo_action_tokens, load_demos, random_shift, train_sft

from .conftest import make_obs, make_policy, tiny_config


def test_checkpoint_round_trip_gives_identical_actions(tmp_path):
    policy = make_policy()
    path = save_checkpoint(tmp_path / "ckpt", policy.model, policy.action_tokenizer, {"step": 3})
    assert not list(tmp_path.glob("*.tmp-*"))
    model, tokenizer, state = load_checkpoint(path, with_training_state=True)
    assert load_checkpoint(path)[2] is None  # read only when asked
    obs = make_obs(3)
    from vla_rl.policy.policy import VLAPolicy

    again = VLAPolicy(model, tokenizer)
    assert torch.equal(again.act(obs, explore=False).tokens, policy.act(obs, explore=False).tokens)
    assert state["step"] == 3
    np.testing.assert_array_equal(tokenizer.norm_stats.q99, policy.action_tokenizer.norm_stats.q99)


def test_corrupt_or_partial_checkpoints_are_detected(tmp_path):
    policy = make_policy()
    path = save_checkpoint(tmp_path / "ckpt", policy.model, policy.action_tokenizer)
    weights = path / "model.safetensors"
    original = weights.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="checksum"):
        load_checkpoint(path)
    weights.write_bytes(original)
    load_checkpoint(path)  # intact again
    (path / "norm_stats.json").unlink()
    with pytest.raises(CorruptCheckpointError, match="missing"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none")


def test_a_corrupt_file_whose_manifest_matches_is_named(tmp_path):
    """A file written corrupt (or rewritten with its manifest) passes the checksums: reading it names it."""
    import hashlib

    policy = make_policy()
    for name, content in (("norm_stats.json", b'{"action": '), ("vla_config.json", b"[1, 2]"),
                          ("model.safetensors", b"not a tensor file"), ("norm_stats.json", b'{"n_bins": 256}')):
        path = save_checkpoint(tmp_path / name, policy.model, policy.action_tokenizer)
        (path / name).write_bytes(content)
        manifest = json.loads((path / "manifest.json").read_text())
        manifest[name] = hashlib.sha256(content).hexdigest()
        (path / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(CorruptCheckpointError, match=str(path / name)):
            load_checkpoint(path)


def synthetic_demos(directory, episodes=3, steps=6):
    """Tiny demo files whose action depends on the instruction: learnable, so loss must fall."""
    rng = np.random.default_rng(0)
    for task, direction in (("Reach", 0.8), ("Lift", -0.8)):
        eps = []
        for _ in range(episodes):
            actions = np.zeros((steps, 7), np.float32)
            actions[:, 0] = direction
            actions[:, 6] = np.sign(direction)
            eps.append(Episode(f"{task.lower()} the red block", task, actions, np.zeros(steps, np.float32),
                               {"agentview_rgb": rng.integers(0, 255, (steps, 32, 32, 3), dtype=np.uint8)},
                               np.zeros((steps, 2)), True))
        write_demo_file(directory / f"{task}_demo.hdf5", eps, {"env_name": task})


def wrist_and_proprio_samples(rng, steps):
    """Actions that only the proprio (dimension 0) and the wrist image (dimension 1) determine."""
    proprio = rng.normal(0.0, 0.01, (steps, 8)).astype(np.float32)
    proprio[:, 0] += rng.choice([-0.1, 0.1], steps)  # two clusters: a plain signal, not a fine threshold
    bright = rng.random(steps) < 0.5
    wrist = np.where(bright[:, None, None, None], 230, 20).astype(np.uint8) * np.ones((steps, 32, 32, 3), np.uint8)
    actions = np.zeros((steps, 7), np.float32)
    actions[:, 0] = np.where(proprio[:, 0] > 0, 0.9, -0.9)
    actions[:, 1] = np.where(bright, 0.9, -0.9)
    obs = {"agentview_rgb": np.full((steps, 32, 32, 3), 128, np.uint8), "eye_in_hand_rgb": wrist,
           "ee_pos": proprio[:, :3], "ee_ori": proprio[:, 3:6], "gripper_states": proprio[:, 6:]}
    return Episode("reach the red block", "Reach", actions, np.zeros(steps, np.float32), obs, np.zeros((steps, 2)),
                   True)


def test_sft_reads_the_wrist_camera_and_proprio(tmp_path):
    """On fresh samples, a wrist + proprio model gets the signs right; an agent-view-only model,
    whose image is always the same, can only guess."""
    from vla_rl.core import ObsBatch
    from vla_rl.policy.policy import VLAPolicy

    rng = np.random.default_rng(0)
    (tmp_path / "demos").mkdir()
    write_demo_file(tmp_path / "demos" / "Reach_demo.hdf5", [wrist_and_proprio_samples(rng, 6) for _ in range(8)],
                    {"env_name": "Reach"})
    data = load_demos(tmp_path / "demos", 1, cameras=("agentview", "wrist"), proprio=True)
    assert set(data.images) == {"agentview", "wrist"} and data.proprio.shape == (48, 8)
    fresh = wrist_and_proprio_samples(np.random.default_rng(1), 64)
    batch = ObsBatch({"agentview": fresh.obs["agentview_rgb"], "wrist": fresh.obs["eye_in_hand_rgb"]},
                     fresh.proprio(), [fresh.instruction] * 64)

    def sign_accuracy(model_config, out):
        summary = train_sft(sft_config(tmp_path, model=model_config, out_dir=tmp_path / out, steps=150,
                                       shift_pixels=0), show_progress=False)
        model, tokenizer, _ = load_checkpoint(Path(summary["checkpoint"]))
        predicted = VLAPolicy(model, tokenizer).predict_actions(batch)[:, 0, :2]
        return (np.sign(predicted) == np.sign(fresh.actions[:, :2])).mean(0), model

    with_inputs, model = sign_accuracy(tiny_config(cameras=("agentview", "wrist"), proprio_dim=8), "full")
    assert with_inputs.min() > 0.9, with_inputs
    np.testing.assert_allclose(model.proprio_mean.numpy(), data.proprio.mean(0), atol=1e-6)
    without, _ = sign_accuracy(tiny_config(), "agentview_only")
    assert without.max() < 0.8, without


def sft_config(tmp_path, **overrides):
    base = dict(model=tiny_config(), demo_dir=tmp_path / "demos", out_dir=tmp_path / "run", steps=12, batch_size=8,
                warmup_steps=2, lr=3e-3, checkpoint_every=6, log_every=3, eval_episodes_per_task=0)
    base.update(overrides)
    return SFTConfig(**base)


@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("lr", -1.0), ("warmup_steps", -10), ("log_every", 0),
                                          ("checkpoint_every", -1), ("demos_per_task", -2), ("eval_num_envs", 0),
                                          ("grad_clip", float("inf")), ("weight_decay", -0.1)])
def test_sft_config_refuses_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        SFTConfig(**{field: value})


def test_sft_checkpoint_every_zero_checkpoints_only_the_end(tmp_path):
    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    summary = train_sft(sft_config(tmp_path, steps=5, checkpoint_every=0), show_progress=False)
    assert Path(summary["checkpoint"]).name == "step_000005"
    assert sorted(p.name for p in (tmp_path / "run").glob("step_*")) == ["step_000005"]


def test_sft_learns_instruction_dependent_actions(tmp_path):
    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    summary = train_sft(sft_config(tmp_path, steps=100), show_progress=False)
    assert summary["token_accuracy"] > 0.9, summary
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["loss"] < history[0]["loss"] / 3
    assert (tmp_path / "run" / "tensorboard").is_dir()


def test_resume_matches_an_uninterrupted_run(tmp_path):
    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    straight = train_sft(sft_config(tmp_path, out_dir=tmp_path / "a"), show_progress=False)
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "b"), show_progress=False, stop_at_step=6)
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:  # a crash after step 9 was logged, before its checkpoint
        f.write(json.dumps({"step": 9, "loss": 1.0}) + "\n")
    resumed = train_sft(sft_config(tmp_path, out_dir=tmp_path / "b"), resume=True, show_progress=False)
    assert resumed["steps"] == straight["steps"] == 12
    a, _, _ = load_checkpoint(latest_valid_checkpoint(tmp_path / "a", "step_"))
    b, _, _ = load_checkpoint(latest_valid_checkpoint(tmp_path / "b", "step_"))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name

    def logged_steps(run):
        return [json.loads(line)["step"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert logged_steps("b") == logged_steps("a") == [3, 6, 9, 12]  # resumed: no gap, no repeat
    with pytest.raises(FileExistsError, match="holds a previous run"):  # it would mix with (or lose) the old one
        train_sft(sft_config(tmp_path, out_dir=tmp_path / "a"), show_progress=False)
    assert logged_steps("a") == [3, 6, 9, 12], "the refused fresh run touched the old run's history"
    with pytest.raises(FileNotFoundError, match="resume"):
        train_sft(sft_config(tmp_path, out_dir=tmp_path / "empty"), resume=True, show_progress=False)


def test_resume_refuses_a_checkpoint_of_another_model_than_the_run_started(tmp_path):
    """A resume continues the model the run started: config.model, or init_checkpoint's model when set
    (config.model then does not count). A changed model is an error, not silently the checkpoint's."""
    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "a"), show_progress=False, stop_at_step=6)
    changed = dataclasses.replace(tiny_config(), n_action_bins=128)
    with pytest.raises(ValueError, match="differ in n_action_bins"):
        train_sft(sft_config(tmp_path, out_dir=tmp_path / "a", model=changed), resume=True, show_progress=False)
    init = latest_valid_checkpoint(tmp_path / "a", "step_")
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", init_checkpoint=init, model=changed),
              show_progress=False, stop_at_step=9)
    resumed = train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", init_checkpoint=init, model=changed),
                        resume=True, show_progress=False)
    assert resumed["steps"] == 12


def test_sft_refuses_demos_rendered_otherwise_than_the_model_expects(tmp_path):
    """A policy sees in rollouts what the simulator renders: demos rendered without antialiasing must not
    train a model that will be rolled out with it, and the reverse."""
    synthetic_demos(tmp_path / "demos")  # no collection config: counts as antialiased (the default)
    aliased = dataclasses.replace(tiny_config(), antialias=False)
    with pytest.raises(ValueError, match="antialias=True but model.antialias is False"):
        train_sft(sft_config(tmp_path, model=aliased), show_progress=False)
    assert not (tmp_path / "run" / "latest.json").exists()
    episodes = list(read_demo_file(tmp_path / "demos" / "Reach_demo.hdf5"))
    write_demo_file(tmp_path / "aliased" / "Reach_demo.hdf5", episodes, {"config": {"antialias": False}})
    with pytest.raises(ValueError, match="Reach_demo.hdf5 was rendered with antialias=False"):
        train_sft(sft_config(tmp_path, demo_dir=tmp_path / "aliased", tasks=("Reach",)), show_progress=False)
    assert train_sft(sft_config(tmp_path, model=aliased, demo_dir=tmp_path / "aliased", tasks=("Reach",), steps=2,
                               out_dir=tmp_path / "ok"), show_progress=False)["steps"] == 2


def test_sft_refuses_demos_recorded_on_evaluation_init_states(tmp_path):
    """Demos (or localiser frames) of the held-out eval states would make held-out success rates dishonest;
    every other split (train, a robot's, a converted dataset's, none recorded) is fine."""
    import h5py

    from sim_envs.demos import run_expert_episode
    from sim_envs.tabletop_env import TabletopEnv

    env = TabletopEnv("Reach", image_size=32)
    train, held_out = (run_expert_episode(env, 0, split)[0] for split in ("train", "eval"))
    env.close()
    write_demo_file(tmp_path / "demos" / "Reach_demo.hdf5", [train, held_out], {"env_name": "Reach"})
    with pytest.raises(ValueError, match=r"Reach_demo.hdf5 episode 1 was recorded on evaluation init state 0"):
        train_sft(sft_config(tmp_path, tasks=("Reach",)), show_progress=False)
    assert not (tmp_path / "run" / "latest.json").exists()
    with pytest.raises(ValueError, match="split 'eval'"):
        load_demos(tmp_path / "demos", 1, tasks=("Reach",))
    assert load_demos(tmp_path / "demos", 1, demos_per_task=1).episodes == 1  # the eval episode is not used
    older = tmp_path / "others" / "Reach_demo.hdf5"
    write_demo_file(older, [train, dataclasses.replace(train, split="robot"), train], {"env_name": "Reach"})
    with h5py.File(older, "r+") as f:
        del f["data/demo_2"].attrs["split"]  # written before the split was recorded
    assert load_demos(tmp_path / "others", 1).episodes == 3


def test_demo_loading_builds_chunks_and_filters(tmp_path):
    synthetic_demos(tmp_path)
    data = load_demos(tmp_path, chunk_size=3, tasks=("Lift",), demos_per_task=2)
    assert data.tasks == ["Lift"] and data.episodes == 2 and data.chunks.shape == (12, 3, 7)
    with pytest.raises(FileNotFoundError, match="Push"):
        load_demos(tmp_path, 1, tasks=("Push",))


def test_random_shift_keeps_content_and_shape():
    images = torch.zeros((4, 16, 16, 3), dtype=torch.uint8)
    images[:, 6:10, 6:10] = 200
    shifted = random_shift(images, 3, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert all(int((s == 200).all(-1).sum()) == 16 for s in shifted)  # the square moves, never shrinks


def test_lora_trains_adapters_only_and_saves_merged_weights(tmp_path):
    from vla_rl.policy.lora import LoRAConfig, apply_lora, merged_state_dict
    from vla_rl.policy.policy import VLAPolicy

    policy = make_policy()
    obs = make_obs(2)
    before = policy.act(obs, explore=False).tokens
    trainable = apply_lora(policy.model, LoRAConfig(rank=4))
    names = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert any(".lora_A." in n for n in names) and not any(n.startswith("language_model.") and ".lora_" not in n
                                                          for n in names)
    assert torch.equal(policy.act(obs, explore=False).tokens, before)  # B = 0 at start: same function
    for p in trainable:
        p.data += 0.05 * torch.randn_like(p)
    after = policy.act(obs, explore=True).logprob
    merged = merged_state_dict(policy.model)
    assert not any(".lora_" in k or ".base_layer." in k for k in merged)
    path = save_checkpoint(tmp_path / "lora", policy.model, policy.action_tokenizer, weights=merged)
    model, tokenizer, _ = load_checkpoint(path)
    plain = VLAPolicy(model, tokenizer, seed=0)
    policy.generator.manual_seed(0)
    tokens = policy.act(obs, explore=False).tokens
    assert torch.equal(plain.act(obs, explore=False).tokens, tokens)
    assert after.shape == (2, 7)


def test_lora_sft_resume_matches_an_uninterrupted_run(tmp_path):
    from vla_rl.policy.lora import LoRAConfig

    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    lora = LoRAConfig(rank=4)
    straight = train_sft(sft_config(tmp_path, out_dir=tmp_path / "a", lora=lora), show_progress=False)
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", lora=lora), show_progress=False, stop_at_step=6)
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", lora=lora), resume=True, show_progress=False)
    a, _, _ = load_checkpoint(latest_valid_checkpoint(tmp_path / "a", "step_"))
    b, _, _ = load_checkpoint(latest_valid_checkpoint(tmp_path / "b", "step_"))
    # Merging and un-merging adapters is exact only up to float rounding, and parameters whose
    # true gradient is zero (attention key biases) let Adam amplify that rounding; so compare what
    # the two models compute, not every raw parameter.
    obs = make_obs(4)
    with torch.no_grad():
        tokens = torch.randint(a.config.first_action_token_id, a.config.action_vocab_size, (4, 7))
        logits_a = a.teacher_forced_logits(a.build_prefix(obs.images, obs.instructions), tokens)
        logits_b = b.teacher_forced_logits(b.build_prefix(obs.images, obs.instructions), tokens)
    torch.testing.assert_close(logits_a, logits_b, atol=1e-3, rtol=1e-3)
    assert straight["steps"] == 12


def test_a_checkpoint_written_before_a_config_field_existed_keeps_its_meaning(tmp_path):
    """A config field added later (position_channels, default 16) must not change an old checkpoint:
    a config without it reads the value the old code used (0)."""
    from vla_rl.policy.checkpoint import read_vla_config
    from vla_rl.policy.model import VisionTowerConfig

    from vla_rl.core.config import to_dict

    config = to_dict(tiny_config())
    config["vision_towers"] = [{"kind": "mobilenetv2", "feature_stage": 6}]
    (tmp_path / "vla_config.json").write_text(json.dumps(config))
    assert read_vla_config(tmp_path / "vla_config.json").vision_towers[0].position_channels == 0
    assert VisionTowerConfig(kind="mobilenetv2").position_channels == 16  # new configs get the new default


def two_squares_samples(rng, steps, named_only: int | None = None):
    """A red and a blue 3-pixel square anywhere in a grey image; the instruction names one (or always
    ``named_only``: 0 red, 1 blue); the action's sign says whether the named one is left or right of
    centre. Labels: its centre."""
    images = np.full((steps, 32, 32, 3), 110, np.uint8)
    labels, actions, texts = np.zeros((steps, 2, 2), np.float32), np.zeros((steps, 7), np.float32), []
    for i in range(steps):
        corners = rng.integers(1, 28, (2, 2))
        while np.abs(corners[0] - corners[1]).max() < 4:
            corners = rng.integers(1, 28, (2, 2))
        for (column, row), colour in zip(corners, ([220, 30, 30], [30, 60, 220])):
            images[i, row:row + 3, column:column + 3] = colour
        named = int(rng.integers(2)) if named_only is None else named_only
        texts.append(f"reach the {('red', 'blue')[named]} block")
        labels[i] = corners[named] + 1.5
        actions[i, 0] = 0.9 if labels[i, 0, 0] > 16 else -0.9
    return images, labels, actions, texts


def write_two_squares_episodes(directory: Path, scenes: int, seed: int, named_only: int | None = None) -> None:
    from vla_rl.core.demo_file import NAMED_PIXELS_OBS_KEY

    directory.mkdir()
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(scenes):
        images, labels, actions, texts = two_squares_samples(rng, 1, named_only)
        episodes.append(Episode(texts[0], "Reach", actions, np.zeros(1, np.float32),
                                {"agentview_rgb": images, NAMED_PIXELS_OBS_KEY: labels}, np.zeros((1, 2)), True))
    write_demo_file(directory / "Reach_demo.hdf5", episodes, {"env_name": "Reach"})


@pytest.mark.parametrize("head_points, localiser_batch_size", [("localiser", 0), ("labels", 8)])
def test_sft_trains_a_localiser_that_finds_the_named_object_in_unseen_scenes(tmp_path, head_points,
                                                                              localiser_batch_size):
    """The localiser learns from its labels, the action head from its points (or, with
    ``head_points: labels``, from the labels while the localiser trains on half of each batch); on
    fresh scenes both generalise and the head works on the localiser's points (a model of the same
    size reading patch tokens would have to memorise)."""
    from vla_rl.core import ObsBatch
    from vla_rl.policy.localiser import expected_pixels
    from vla_rl.policy.policy import VLAPolicy

    write_two_squares_episodes(tmp_path / "demos", scenes=16, seed=0)
    config = sft_config(tmp_path, model=tiny_config(localiser_points=2, image_tokens=False, localiser_channels=16),
                        steps=300, batch_size=16, shift_pixels=2, head_points=head_points,
                        localiser_batch_size=localiser_batch_size, located_noise_pixels=0.3)
    summary = train_sft(config, show_progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "localiser_pixel_error" in history[-1]
    model, tokenizer, _ = load_checkpoint(Path(summary["checkpoint"]))
    images, labels, actions, texts = two_squares_samples(np.random.default_rng(1), 64)
    with torch.no_grad():
        located = expected_pixels(model.build_prefix({"agentview": images}, texts).located_logits, 32)
    error = (located - torch.from_numpy(labels)).norm(dim=-1)
    assert error.median() < 1.0, error
    fresh = ObsBatch({"agentview": images}, np.zeros((64, 8), np.float32), texts)
    predicted = VLAPolicy(model, tokenizer).predict_actions(fresh)[:, 0, 0]
    assert (np.sign(predicted) == np.sign(actions[:, 0])).mean() > 0.85
    (tmp_path / "unlabelled").mkdir()
    synthetic_demos(tmp_path / "unlabelled")
    with pytest.raises(KeyError, match="named_pixels"):
        load_demos(tmp_path / "unlabelled", 1, named_pixels=True)
    with pytest.raises(KeyError, match="gripper_pixels"):  # these demos label the named points only
        load_demos(tmp_path / "demos", 1, named_pixels=True, gripper_pixels=True)


def test_localiser_frames_teach_the_localiser_what_the_demos_lack(tmp_path):
    """The demos only ever name the red square: a localiser trained on their frames has never been
    asked for the blue one and misses it in fresh scenes; trained on labelled frames that name both
    (localiser_frames_dir) it finds it, while the action head still learns from the demos only."""
    from vla_rl.policy.localiser import expected_pixels

    write_two_squares_episodes(tmp_path / "demos", scenes=16, seed=0, named_only=0)
    write_two_squares_episodes(tmp_path / "frames", scenes=64, seed=1)
    images, labels, _, texts = two_squares_samples(np.random.default_rng(2), 64, named_only=1)
    errors = {}
    for name, frames in (("demos only", None), ("with frames", tmp_path / "frames")):
        config = sft_config(tmp_path, out_dir=tmp_path / name.replace(" ", "_"), steps=300, batch_size=16,
                            model=tiny_config(localiser_points=2, image_tokens=False, localiser_channels=16),
                            head_points="labels", localiser_batch_size=8, located_noise_pixels=0.3,
                            localiser_frames_dir=frames)
        model, _, _ = load_checkpoint(Path(train_sft(config, show_progress=False)["checkpoint"]))
        with torch.no_grad():
            located = expected_pixels(model.build_prefix({"agentview": images}, texts).located_logits, 32)
        errors[name] = float((located - torch.from_numpy(labels)).norm(dim=-1).median())
    assert errors["with frames"] < 1.0 and errors["demos only"] > 3 * errors["with frames"], errors
    with pytest.raises(ValueError, match="localiser_frames_dir needs localiser_batch_size"):
        sft_config(tmp_path, head_points="labels", localiser_frames_dir=tmp_path / "frames")


def test_head_points_options_are_checked_and_labels_bypass_the_localiser():
    with pytest.raises(ValueError, match="head_points"):
        sft_config(Path("."), head_points="oracle")
    with pytest.raises(ValueError, match="localiser_batch_size"):
        sft_config(Path("."), localiser_batch_size=8)  # the head reads the localiser: it needs every image
    model = VLAModel(tiny_config(localiser_points=2, image_tokens=False, localiser_channels=8))
    images = {"agentview": np.zeros((2, 32, 32, 3), np.uint8)}
    points = torch.tensor([[[3.0, 4.0], [20.0, 30.0]], [[10.0, 10.0], [1.0, 2.0]]])
    with torch.no_grad():
        prefix = model.build_prefix(images, ["pick the red block", "push the blue block"], points=points)
        expected = model.points_token(points, 32)
    assert prefix.located_logits is None
    torch.testing.assert_close(prefix.embeds[:, 1:2], expected)  # right after BOS


def test_sft_trains_an_openvla_convention_model_on_openvla_gripper_targets(tmp_path):
    """Demos hold the env's gripper command (-1 open, +1 close); an OpenVLA-convention model is
    trained on OpenVLA's 1 = open, 0 = closed, and acts in the env's command again."""
    stats = NormStats(np.full(7, -1.0), np.full(7, 1.0), np.array([True] * 6 + [False]))
    tokenizer = ActionTokenizer(1000, stats)
    chunks = np.zeros((2, 1, 7), np.float32)
    chunks[:, 0, 6] = [-1.0, 1.0]  # open, close
    ids = demo_action_tokens(chunks, tokenizer, "openvla")
    np.testing.assert_array_equal(ids[:, 6], tokenizer.encode(np.array([[0.0] * 6 + [1.0], [0.0] * 7]))[:, 6])
    np.testing.assert_array_equal(demo_action_tokens(chunks, tokenizer, "env"), tokenizer.encode(chunks).reshape(2, -1))
    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")  # gripper +1 for Reach, -1 for Lift
    train_sft(sft_config(tmp_path, model=tiny_config(gripper_convention="openvla"), steps=2, checkpoint_every=2),
              show_progress=False)
    model, action_tokenizer, _ = load_checkpoint(latest_valid_checkpoint(tmp_path / "run", "step_"))
    assert model.config.gripper_convention == "openvla"
    assert action_tokenizer.norm_stats.q01[6] == 0.0 and action_tokenizer.norm_stats.q99[6] == 1.0


def test_sft_from_a_checkpoint_trains_that_checkpoints_model_on_demos_loaded_for_it(tmp_path, monkeypatch):
    """With init_checkpoint, config.model does not count: a checkpoint that acts in chunks of two is trained on
    chunks of two, whatever chunk size the config's (default) model says (it trained on chunks of one, and the
    second action of every chunk was never trained)."""
    from vla_rl.policy import sft as sft_module

    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    chunked = dataclasses.replace(tiny_config(), chunk_size=2)
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "a", model=chunked, steps=3), show_progress=False)
    init = latest_valid_checkpoint(tmp_path / "a", "step_")
    loaded_chunks = []
    real_load_demos = sft_module.load_demos
    monkeypatch.setattr(sft_module, "load_demos", lambda *args, **kwargs: loaded_chunks.append(
        real_load_demos(*args, **kwargs).chunks.shape[1]) or real_load_demos(*args, **kwargs))
    summary = train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", init_checkpoint=str(init), steps=3),
                        show_progress=False)
    model, _, _ = load_checkpoint(Path(summary["checkpoint"]))
    assert model.config.chunk_size == 2 and loaded_chunks == [2]
    assert np.isfinite(json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[-1])["loss"])
    # a run directory stands for its newest checkpoint, as in train, eval and deploy
    summary = train_sft(sft_config(tmp_path, out_dir=tmp_path / "c", init_checkpoint=str(tmp_path / "a"), steps=3),
                        show_progress=False)
    _, _, state = load_checkpoint(Path(summary["checkpoint"]), with_training_state=True)
    assert state["sft_config"]["init_checkpoint"] == str(init)


def test_a_resumed_time_limited_sft_gets_what_is_left_of_its_budget(tmp_path):
    """The time limit (and the schedule that decays over it) counts the time before the resume: a resumed run
    whose budget is already spent stops at once, instead of getting the whole budget again."""
    from vla_rl.policy.checkpoint import read_training_state

    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "a"), show_progress=False, stop_at_step=6)
    spent = read_training_state(latest_valid_checkpoint(tmp_path / "a", "step_"))["elapsed_seconds"]
    assert spent > 0
    half_of_it = spent / 2 / 60  # minutes: less than the interrupted run had already used
    resumed = train_sft(sft_config(tmp_path, out_dir=tmp_path / "a", time_limit_minutes=half_of_it), resume=True,
                        show_progress=False)
    assert resumed["steps"] == 6


def test_a_resumed_run_says_when_nothing_is_left_to_do(tmp_path, capsys):
    """A resume whose run had already spent its budget (or all its steps) says so, instead of ending silently."""
    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "a", steps=6), show_progress=False)
    capsys.readouterr()
    resumed = train_sft(sft_config(tmp_path, out_dir=tmp_path / "a", steps=6), resume=True, show_progress=False)
    assert resumed["steps"] == 6
    assert "nothing left to do" in capsys.readouterr().out


def test_a_resumed_run_keeps_the_init_checkpoint_it_started_from(tmp_path, capsys):
    """init_checkpoint may name a run directory (its newest checkpoint). A resume keeps the checkpoint the run
    started from, though that run directory has since grown a newer checkpoint, or moved away."""
    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "init", steps=12), show_progress=False, stop_at_step=6)
    started_from = latest_valid_checkpoint(tmp_path / "init", "step_")
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", init_checkpoint=str(tmp_path / "init")),
              show_progress=False, stop_at_step=6)
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "init", steps=12), resume=True, show_progress=False)  # grows
    assert latest_valid_checkpoint(tmp_path / "init", "step_") != started_from
    resumed = train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", init_checkpoint=str(tmp_path / "init")),
                        resume=True, show_progress=False, stop_at_step=9)
    _, _, state = load_checkpoint(Path(resumed["checkpoint"]), with_training_state=True)
    assert state["sft_config"]["init_checkpoint"] == str(started_from)
    (tmp_path / "init").rename(tmp_path / "moved")
    resumed = train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", init_checkpoint=str(tmp_path / "init")),
                        resume=True, show_progress=False)
    assert resumed["steps"] == 12
    assert "is not used" not in capsys.readouterr().out
    other = tmp_path / "moved"  # a resume that names another checkpoint is told which one the run goes on from
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "b", steps=14, init_checkpoint=str(other)), resume=True,
              show_progress=False)
    assert "is not used" in capsys.readouterr().out
    train_sft(sft_config(tmp_path, out_dir=tmp_path / "scratch"), show_progress=False, stop_at_step=6)
    resumed = train_sft(sft_config(tmp_path, out_dir=tmp_path / "scratch", init_checkpoint=str(other)), resume=True,
                        show_progress=False)  # a run from random weights stays one
    assert "started from random weights" in capsys.readouterr().out
    _, _, state = load_checkpoint(Path(resumed["checkpoint"]), with_training_state=True)
    assert state["sft_config"]["init_checkpoint"] == ""
