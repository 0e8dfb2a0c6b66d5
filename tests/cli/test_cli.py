import json

import h5py
import numpy as np

from vla_rl.cli.main import main
from sim_envs.tasks import TASKS


def test_envs_list_shows_every_task(capsys):
    assert main(["envs", "list", "--suite", "tabletop"]) == 0
    out = capsys.readouterr().out
    assert "suite 'tabletop': 7 tasks, 350 evaluation init states" in out
    for task in TASKS:
        assert task in out
    assert main(["envs", "list", "--suite", "tabletop", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = listing["tasks"]
    assert {r["task"] for r in rows} == set(TASKS) and all(r["eval_init_states"] == 50 for r in rows)
    assert {r["gym_id"] for r in rows} == {f"vla_rl/{task}-v0" for task in TASKS}
    assert main(["envs", "list", "--suite", "mars"]) == 2
    assert "valid suites" in capsys.readouterr().err


def test_demos_writes_hdf5_and_video(tmp_path, capsys):
    out = tmp_path / "demos"
    code = main(["demos", "--task", "Lift", "--task", "PressButton", "--episodes", "2", "--out", str(out),
                 "--videos", "1", "--image-size", "32", "--workers", "2", "--set", "video_size=64"])
    assert code == 0
    with h5py.File(out / "Lift_demo.hdf5") as f:
        demo = f["data/demo_1"]
        steps = demo.attrs["num_samples"]
        assert demo["actions"].shape == (steps, 7) and demo["obs/agentview_rgb"].shape == (steps, 32, 32, 3)
        assert demo["obs/eye_in_hand_rgb"].shape == (steps, 32, 32, 3)
        assert "block" in demo.attrs["instruction"] and demo.attrs["split"] == "train" and demo.attrs["success"]
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["mujoco_version"] and env_args["gl_renderer"]
    assert (out / "videos" / "Lift_init0.mp4").stat().st_size > 1000
    assert (out / "overview.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert [s["demos"] for s in summary] == [2, 2]
    assert "expert success" in capsys.readouterr().out


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("episodes_per_tsk: 3\n")
    assert main(["demos", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "episodes_per_tsk" in err and "episodes_per_task" in err
    assert main(["demos", "--task", "Fly"]) == 2
    assert "valid tasks" in capsys.readouterr().err


def test_sft_cli_documents_and_validates_its_config(tmp_path, capsys):
    assert main(["sft", "--show-config"]) == 0
    out = capsys.readouterr().out
    assert "demos_per_task" in out and "lora" in out and "chunk_size" in out
    assert main(["sft", "--set", "model.decodng=parallel"]) == 2
    assert "model.decodng" in capsys.readouterr().err
    assert main(["sft", "--set", f"demo_dir={tmp_path}", "--set", f"out_dir={tmp_path / 'o'}"]) == 2
    assert "no *_demo.hdf5 files" in capsys.readouterr().err


def test_show_config_shows_the_loaded_values_and_reports_bad_input(tmp_path, capsys):
    config = tmp_path / "sft.yaml"
    config.write_text("steps: 7\n")
    assert main(["sft", "--show-config", "--config", str(config), "--set", "lr=0.002"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7  #" in out and "lr: 0.002  #" in out and "out_dir: runs/sft  #" in out
    assert main(["train", "--show-config"]) == 0
    out = capsys.readouterr().out
    assert 'init_checkpoint: ""  #' in out and "PosixPath" not in out
    assert main(["demos", "--show-config", "--episodes", "3"]) == 0
    assert "episodes_per_task: 3  #" in capsys.readouterr().out
    assert main(["quickstart", "--show-config", "--set", "sft.steps=3"]) == 0
    assert "\n  steps: 3  #" in capsys.readouterr().out
    for command in (["sft", "--set", "lr=-1"], ["train", "--set", "iterations=0"], ["demos", "--episodes", "0"],
                    ["critic", "train", "--set", "stepz=3"], ["quickstart", "--config", str(tmp_path / "no.yaml")]):
        assert main(command + ["--show-config"]) == 2, command
        assert "error:" in capsys.readouterr().err


def test_errors_name_what_is_wrong(tmp_path, capsys):
    """A missing path is said to be missing, a missing manifest missing, a corrupt file named, a field by
    the name the command's own config gives it."""
    import hashlib
    import shutil

    from tests.policy.conftest import make_policy
    from vla_rl.policy.checkpoint import save_checkpoint

    policy = make_policy()
    complete = save_checkpoint(tmp_path / "complete", policy.model, policy.action_tokenizer)
    no_manifest = shutil.copytree(complete, tmp_path / "no_manifest")
    (no_manifest / "manifest.json").unlink()
    bad_stats = shutil.copytree(complete, tmp_path / "bad_stats")
    (bad_stats / "norm_stats.json").write_text("{")
    manifest = json.loads((bad_stats / "manifest.json").read_text())
    manifest["norm_stats.json"] = hashlib.sha256(b"{").hexdigest()
    (bad_stats / "manifest.json").write_text(json.dumps(manifest))
    for command, message in ((["eval", "--checkpoint", str(tmp_path / "nope")], "nope does not exist"),
                             (["critic", "eval", "--critic", str(tmp_path / "nope")], "nope does not exist"),
                             (["eval", "--checkpoint", str(no_manifest)], "no_manifest has no manifest.json"),
                             (["eval", "--checkpoint", str(bad_stats)],
                              f"{bad_stats / 'norm_stats.json'} is not valid JSON"),
                             (["quickstart", "--set", "demos_per_task=0"], "demos_per_task must be >= 1"),
                             (["sft", "--set", "demos_per_task=-2"], "demos_per_task must be >= 0")):
        assert main(command) == 2, command
        assert message in capsys.readouterr().err, command


def test_negative_counts_and_durations_are_refused(tmp_path, capsys):
    import pytest

    assert main(["eval", "--checkpoint", str(tmp_path), "--episodes-per-task", "-3"]) == 2
    assert "--episodes-per-task must be >= 1, got -3" in capsys.readouterr().err
    assert main(["demos", "--noise", "-1", "--out", str(tmp_path / "demos")]) == 2
    assert "noise_std must be a finite number >= 0" in capsys.readouterr().err
    for command in (["deploy", "--checkpoint", str(tmp_path), "--robot", "configs/robot/tabletop_sim.yaml"],
                    ["sim-bridge"]):
        with pytest.raises(SystemExit) as exit:  # argparse's refusal: exit code 2 and the usage
            main(command + ["--duration", "-5"])
        assert exit.value.code == 2
        assert "must be >= 0 seconds" in capsys.readouterr().err


def test_ctrl_c_and_an_unknown_device_end_with_a_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    import pytest

    import vla_rl.cli.main as cli
    from tests.policy.conftest import make_policy
    from vla_rl.policy.checkpoint import save_checkpoint
    from vla_rl.policy.policy import resolve_device

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_envs_list", interrupted)
    try:
        code = main(["envs", "list"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left main as a KeyboardInterrupt (a traceback)")
    assert code == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert resolve_device("cpu") == "cpu"
    for device in ("tpu", "cuda:x", "cuda:"):
        with pytest.raises(ValueError, match=f"unknown device '{device}'; valid: auto, cpu, cuda, cuda:N"):
            resolve_device(device)
    policy = make_policy()
    checkpoint = save_checkpoint(tmp_path / "policy", policy.model, policy.action_tokenizer)
    assert main(["deploy", "--checkpoint", str(checkpoint), "--robot", "configs/robot/tabletop_sim.yaml",
                 "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_bag_to_demos_names_a_bag_it_cannot_read(tmp_path, capsys):
    import pytest

    pytest.importorskip("rosbags")
    bag = tmp_path / "bags" / "episode_0"
    bag.mkdir(parents=True)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: [\n")
    assert main(["bag-to-demos", "--bags", str(tmp_path / "bags"), "--out", str(tmp_path / "demos"),
                 "--task", "Reach"]) == 2
    assert f"{bag} is not a readable ROS 2 bag" in capsys.readouterr().err


def test_sft_refuses_a_bad_evaluation_setting_before_training(tmp_path, capsys):
    from tests.policy.test_checkpoint_and_sft import synthetic_demos

    (tmp_path / "demos").mkdir()
    synthetic_demos(tmp_path / "demos")
    common = ["sft", "--set", f"demo_dir={tmp_path / 'demos'}", "--set", f"out_dir={tmp_path / 'run'}",
              "--set", "steps=1", "--set", "batch_size=2", "--set", "model.image_size=32"]
    for override, message in (("eval_suite=mars", "unknown suite 'mars'"),
                              ("eval_num_envs=0", "eval_num_envs must be >= 1"),
                              ("log_every=0", "log_every must be >= 1"), ("lr=.nan", "lr must be a finite number")):
        assert main(common + ["--set", override]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_critic_collect_can_skip_a_split_and_train_reads_extra_episode_files(tmp_path, capsys):
    """More episodes of some tasks go in a second file; `critic train` reads it after data_dir's."""
    for out, seed in (("base", 0), ("extra", 7)):
        assert main(["critic", "collect", "--out", str(tmp_path / out), "--tasks", "Reach", "--train-episodes",
                     "expert=1,random=1", "--eval-episodes", "none", "--workers", "1", "--no-wrist",
                     "--image-size", "32", "--seed", str(seed)]) == 0
        assert "eval: none collected" in capsys.readouterr().out
        assert (tmp_path / out / "train.hdf5").is_file() and not (tmp_path / out / "eval.hdf5").exists()
    common = ["critic", "train", "--set", f"data_dir={tmp_path / 'base'}",
              "--set", "steps=2", "--set", "batch_size=4", "--set", "warmup_steps=1", "--set", "critic.image_size=32",
              "--set", "critic.hidden_size=32", "--set", "critic.layers=1", "--set", "critic.heads=2"]
    assert main(common + ["--set", f"out_dir={tmp_path / 'critic'}"]) == 0
    assert "on 2 episodes" in capsys.readouterr().out
    extra = ["--set", f"extra_train_files=[{tmp_path / 'extra' / 'train.hdf5'}]"]
    assert main(common + ["--set", f"out_dir={tmp_path / 'critic_extra'}"] + extra) == 0
    assert "on 4 episodes" in capsys.readouterr().out
    assert main(common + ["--set", f"out_dir={tmp_path / 'critic_missing'}",
                          "--set", f"extra_train_files=[{tmp_path / 'missing.hdf5'}]"]) != 0
    # a second run into the first one's out_dir is refused before the episodes are read
    assert main(common + ["--set", f"out_dir={tmp_path / 'critic'}"]) == 2
    assert "holds a previous run" in capsys.readouterr().err


def test_critic_collect_refuses_a_policy_trained_on_unantialiased_frames_before_collecting(tmp_path, capsys):
    """Collected episodes are rendered antialiased; a policy that learned from frames without multisampling
    would act on frames unlike its own: refused in the driver, before any worker starts."""
    import dataclasses

    from tests.policy.conftest import make_policy, tiny_config
    from vla_rl.policy.checkpoint import save_checkpoint

    policy = make_policy(dataclasses.replace(tiny_config(), antialias=False))
    checkpoint = save_checkpoint(tmp_path / "policy", policy.model, policy.action_tokenizer)
    assert main(["critic", "collect", "--out", str(tmp_path / "episodes"), "--tasks", "Reach", "--train-episodes",
                 "policy=1", "--eval-episodes", "none", "--workers", "1", "--image-size", "32",
                 "--policy", str(checkpoint)]) == 2
    assert "antialias: false" in capsys.readouterr().err
    assert not (tmp_path / "episodes").exists()


def _labelled_episode_file(path, split, behaviour="expert", seed=0):
    """Two tiny labelled Reach episodes of ``split`` with random frames (what `critic collect` writes)."""
    import numpy as np

    from sim_envs.progress_episodes import ProgressEpisode, write_episodes

    rng = np.random.default_rng(seed)
    progress = np.linspace(0, 1, 4).astype(np.float32)
    return write_episodes(path, [ProgressEpisode("Reach", f"reach the {colour} cube", behaviour, split, i,
                                                 rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), progress,
                                                 progress >= 1.0)
                                 for i, colour in enumerate(("red", "blue"))])


def test_critic_train_and_eval_check_each_episodes_split(tmp_path, capsys):
    """Held-out episodes never train the critic (data_dir's train.hdf5 or an extra file), nor do training ones
    measure it (data_dir's eval.hdf5, `critic eval --data`); `wm imagine`'s copies of training episodes keep
    split "train" and train it."""
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic

    train = _labelled_episode_file(tmp_path / "train.hdf5", "train")
    held_out = _labelled_episode_file(tmp_path / "eval.hdf5", "eval", seed=1)
    imagined = _labelled_episode_file(tmp_path / "imagined.hdf5", "train", "imagined-expert", seed=2)

    def data_dir(name, train_file, eval_file=None):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "train.hdf5").write_bytes(train_file.read_bytes())
        if eval_file is not None:
            (folder / "eval.hdf5").write_bytes(eval_file.read_bytes())
        return folder

    def critic_train(folder, out, *more):
        return main(["critic", "train", "--set", f"data_dir={folder}", "--set", f"out_dir={tmp_path / out}",
                     "--set", "steps=1", "--set", "batch_size=2", "--set", "warmup_steps=1",
                     "--set", "critic.image_size=32", "--set", "critic.hidden_size=32", "--set", "critic.layers=1",
                     "--set", "critic.heads=2", "--set", "critic.pretrained_vision=false", *more])

    refused = [(data_dir("held_out_as_train", held_out), (), "split ['eval']: training the critic"),
               (data_dir("train_only", train), ("--set", f"extra_train_files=[{held_out}]"),
                "split ['eval']: training the critic"),
               (data_dir("train_as_held_out", train, train), (), "split ['train']: the held-out evaluation")]
    for folder, more, message in refused:
        assert critic_train(folder, f"no_{folder.name}", *more) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"no_{folder.name}").exists()
    assert critic_train(tmp_path / "train_only", "critic", "--set", f"extra_train_files=[{imagined}]") == 0
    assert "on 4 episodes" in capsys.readouterr().out
    critic = save_critic(tmp_path / "critic_checkpoint", ProgressCritic(CriticConfig(
        image_size=32, hidden_size=32, layers=1, heads=2, pretrained_vision=False)))
    assert main(["critic", "eval", "--critic", str(critic), "--data", str(train), "--out", str(tmp_path / "no")]) == 2
    assert "split ['train']: critic eval --data" in capsys.readouterr().err
    assert main(["critic", "eval", "--critic", str(critic), "--data", str(held_out),
                 "--out", str(tmp_path / "ok")]) == 0


def test_damaged_or_foreign_data_files_are_one_line_errors_naming_the_file(tmp_path, capsys):
    """A truncated demo file (sft), a file that is not HDF5 (critic train, critic eval, convert-demos): each
    is an error naming the file, not h5py's traceback."""
    from tests.core.test_demo_file import episode
    from vla_rl.core.demo_file import write_demo_file
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic

    demo = write_demo_file(tmp_path / "whole" / "Lift_demo.hdf5", [episode(4, 0), episode(6, 1)], {"env_name": "Lift"})
    (tmp_path / "demos").mkdir()
    truncated = tmp_path / "demos" / "Lift_demo.hdf5"
    truncated.write_bytes(demo.read_bytes()[:demo.stat().st_size // 2])
    assert main(["sft", "--set", f"demo_dir={tmp_path / 'demos'}", "--set", f"out_dir={tmp_path / 'sft'}"]) == 2
    assert f"{truncated} is not a readable HDF5 file: truncated" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    garbage = tmp_path / "data" / "train.hdf5"
    garbage.write_text("not hdf5\n")
    assert main(["critic", "train", "--set", f"data_dir={tmp_path / 'data'}",
                 "--set", f"out_dir={tmp_path / 'critic'}"]) == 2
    assert f"{garbage} is not a readable HDF5 file" in capsys.readouterr().err
    critic = save_critic(tmp_path / "critic_checkpoint", ProgressCritic(CriticConfig(
        image_size=32, hidden_size=32, layers=1, heads=2, pretrained_vision=False)))
    assert main(["critic", "eval", "--critic", str(critic), "--data", str(garbage),
                 "--out", str(tmp_path / "critic_eval")]) == 2
    assert f"{garbage} is not a readable HDF5 file" in capsys.readouterr().err
    # a demonstration file where labelled episodes belong, and a missing one (either collector makes it)
    assert main(["critic", "eval", "--critic", str(critic), "--data", str(demo),
                 "--out", str(tmp_path / "critic_eval")]) == 2
    assert f"{demo} is not a labelled-episode file but a demonstration file" in capsys.readouterr().err
    assert main(["critic", "eval", "--critic", str(critic), "--data", str(tmp_path / "missing.hdf5"),
                 "--out", str(tmp_path / "critic_eval")]) == 2
    assert "`vla-rl critic collect` or `vla-rl wm collect`" in capsys.readouterr().err
    assert main(["convert-demos", str(garbage), "--out", str(tmp_path / "converted")]) == 2
    assert f"{garbage} is not a readable HDF5 file" in capsys.readouterr().err


def test_eval_and_critic_eval_refuse_an_output_path_that_is_a_file_before_evaluating(tmp_path, capsys, monkeypatch):
    from tests.policy.conftest import make_policy, tiny_config
    from vla_rl.cli import factories
    from vla_rl.policy.checkpoint import save_checkpoint
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic

    policy = make_policy(tiny_config())
    checkpoint = save_checkpoint(tmp_path / "policy", policy.model, policy.action_tokenizer)

    def no_policy(*args, **kwargs):
        raise AssertionError("the policy loaded before the output path was checked")

    monkeypatch.setattr(factories, "load_policy", no_policy)
    (tmp_path / "taken").write_text("a file\n")
    assert main(["eval", "--checkpoint", str(checkpoint), "--tasks", "Reach", "--out", str(tmp_path / "taken")]) == 2
    assert f"{tmp_path / 'taken'} is an existing file, not a directory" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(checkpoint), "--tasks", "Reach",
                 "--out", str(tmp_path / "taken" / "eval")]) == 2
    assert f"cannot be created: {tmp_path / 'taken'} is a file" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "a file\n"
    critic = save_critic(tmp_path / "critic_checkpoint", ProgressCritic(CriticConfig(
        image_size=32, hidden_size=32, layers=1, heads=2, pretrained_vision=False)))
    held_out = _labelled_episode_file(tmp_path / "eval.hdf5", "eval")
    assert main(["critic", "eval", "--critic", str(critic), "--data", str(held_out),
                 "--out", str(tmp_path / "taken")]) == 2
    assert f"--out {tmp_path / 'taken'} is an existing file" in capsys.readouterr().err


def test_critic_collect_checks_both_splits_and_its_out_before_collecting(tmp_path, capsys):
    """A wrong --eval-episodes (or policy episodes without --policy) failed only after the training split was
    collected; counts of 0 wrote an empty file with 'nan%' success; an --out of an earlier collection kept its
    eval.hdf5 beside a new train.hdf5."""
    out = tmp_path / "episodes"
    collect = ["critic", "collect", "--out", str(out), "--tasks", "Reach", "--workers", "1", "--no-wrist",
               "--image-size", "32"]
    refused = [(["--train-episodes", "expert=1", "--eval-episodes", "expret=1"], "unknown behaviour 'expret'"),
               (["--train-episodes", "expert=1", "--eval-episodes", "policy=1"], "give the policy with --policy"),
               (["--train-episodes", "expert=0,random=0", "--eval-episodes", "none"], "make no episodes"),
               (["--train-episodes", "expert=1,expert=2", "--eval-episodes", "none"], "given twice"),
               (["--train-episodes", "expert=1", "--eval-episodes", "none", "--tasks", "Reach", "Reach"],
                "given more than once")]
    for flags, message in refused:
        assert main(collect + flags) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()
    (tmp_path / "a_file").write_text("")
    assert main(collect[:2] + ["--out", str(tmp_path / "a_file")] + collect[4:] + ["--train-episodes", "expert=1"]) == 2
    assert f"--out {tmp_path / 'a_file'} is an existing file, not a directory" in capsys.readouterr().err
    stale_train = _labelled_episode_file(out / "train.hdf5", "train")
    stale_eval = _labelled_episode_file(out / "eval.hdf5", "eval")
    stale = stale_train.read_bytes()
    assert main(collect + ["--train-episodes", "expert=0,random=1", "--eval-episodes", "none"]) == 2
    assert "already holds episode files (train.hdf5, eval.hdf5): pass --overwrite" in capsys.readouterr().err
    assert stale_train.read_bytes() == stale and stale_eval.is_file()
    assert main(collect + ["--train-episodes", "expert=0,random=1", "--eval-episodes", "none", "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "train: 1 episodes" in printed and "random" in printed and "nan" not in printed
    assert "expert" not in printed.split("success by behaviour:")[1]
    assert f"keeping {stale_eval} from an earlier collection" in printed  # --overwrite replaces what it collects
    assert stale_train.read_bytes() != stale and stale_eval.is_file()


def test_demos_refuses_a_task_given_twice(tmp_path, capsys):
    assert main(["demos", "--task", "Reach", "--task", "Reach", "--episodes", "1", "--out", str(tmp_path / "d")]) == 2
    assert "['Reach'] are given more than once" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_sim_bridge_refuses_an_unknown_task_listing_the_valid_ones(capsys):
    for split in ("eval", "train"):
        assert main(["sim-bridge", "--task", "Nope", "--split", split]) == 2
        err = capsys.readouterr().err
        assert "unknown tabletop task 'Nope'; valid tasks: " + ", ".join(TASKS) in err and "missing" not in err


COMMANDS = [["envs", "list"], ["demos"], ["convert-demos"], ["sft"], ["train"], ["eval"], ["critic", "collect"],
            ["critic", "train"], ["critic", "eval"], ["quickstart"], ["wm", "collect"], ["wm", "train"], ["wm", "eval"],
            ["wm", "imagine"], ["deploy"], ["sim-bridge"], ["bag-to-demos"], ["baseline", "rllib-ppo"]]


def _help(argv, capsys) -> str:
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # unwrapped


def test_help_lists_every_command_and_shows_the_defaults(capsys):
    top = _help([], capsys)
    for command in {argv[0] for argv in COMMANDS}:
        assert f" {command} " in top
    assert " wm the action-conditioned video world model" in top  # the description's list, not only the choices
    for argv in COMMANDS:
        text = _help(argv, capsys)
        for unhelpful in ("(default: None)", "(default: False)", "(default: True)", "(default: )", "(default: [",
                          "(default: ==SUPPRESS==)"):
            assert unhelpful not in text, (argv, unhelpful)
    text = _help(["eval"], capsys)
    assert "evaluation init states per task (default: 50)" in text and "parallel env slots (default: 16)" in text
    assert "MP4 videos per task (default: 1)" in text
    text = _help(["critic", "collect"], capsys)
    assert "(default: expert=30,perturbed=30,random=15)" in text and "(default: expert=10,perturbed=10,random=5," in text
    assert "--image-size IMAGE_SIZE square size of the recorded camera frames (default: 64)" in text
    assert "--seed SEED seed of" in text
    assert "tabletop tasks (default: Reach PressButton)" in _help(["wm", "collect"], capsys)
    assert "(default: runs/critic_data/eval.hdf5)" in _help(["critic", "eval"], capsys)
    assert "tabletop task (default: Reach)" in _help(["sim-bridge"], capsys)


def test_a_missing_subcommand_names_the_choices_not_an_internal_name(capsys):
    import pytest

    for argv, choices in ((["envs"], "{list}"), (["baseline"], "{rllib-ppo}"), (["critic"], "{collect,train,eval}"),
                          (["wm"], "{collect,train,eval,imagine}")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"the following arguments are required: {choices}" in err and "_command" not in err


def test_wm_eval_names_an_unreadable_data_file_and_wm_imagine_refuses_a_directory_out_first(tmp_path, capsys,
                                                                                              monkeypatch):
    """`wm eval --data garbage.hdf5` (h5py's traceback before); `wm imagine --out DIR` (an IsADirectoryError
    after all the imagining, that left DIR.tmp): refused before anything is imagined."""
    import pytest

    import world_model.imagined_episodes as imagined_episodes
    from tests.world_model.test_world_model import TINY
    from world_model.model import VideoWorldModel
    from world_model.train import save_world_model

    world_model = str(save_world_model(tmp_path / "wm" / "step_000001", VideoWorldModel(TINY), 1))
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_text("not hdf5\n")
    assert main(["wm", "eval", "--world-model", world_model, "--data", str(garbage),
                 "--out", str(tmp_path / "wm_eval")]) == 2
    assert f"{garbage} is not a readable HDF5 file" in capsys.readouterr().err
    data = _labelled_episode_file(tmp_path / "train.hdf5", "train")
    with h5py.File(data, "a") as f:  # what the world model needs beyond the critic's labels
        for name in f:
            f[name]["actions"] = np.zeros((3, 7), np.float32)
            f[name]["proprio"] = np.zeros((4, 8), np.float32)
    (tmp_path / "folder").mkdir()
    monkeypatch.setattr(imagined_episodes, "imagine_labelled_episodes",
                        lambda *args, **kwargs: pytest.fail("imagined before --out was checked"))
    assert main(["wm", "imagine", "--world-model", world_model, "--data", str(data),
                 "--out", str(tmp_path / "folder")]) == 2
    assert f"{tmp_path / 'folder'} is a directory; name a file in it instead" in capsys.readouterr().err
    assert not (tmp_path / "folder.tmp").exists()


def test_wm_train_refuses_an_earlier_runs_out_dir_before_reading_episodes(tmp_path, capsys):
    """The episodes are read for minutes before train_world_model itself would refuse the out_dir."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 20}\n')
    assert main(["wm", "train", "--set", f"data_dir={tmp_path / 'no_data'}", "--set", f"out_dir={tmp_path / 'run'}"]) == 2
    assert "holds a previous run" in capsys.readouterr().err  # not the missing episode file


def test_train_refuses_an_sft_run_directory_as_its_out_dir_with_or_without_resume(tmp_path, capsys):
    """An SFT run's directory (step_ checkpoints, its latest.json, its metrics.jsonl) is not a GRPO run: --resume
    used to take its step_ checkpoint as one to continue and wrote a GRPO run over it."""
    from tests.policy.conftest import make_policy
    from vla_rl.core.checkpoint_dir import point_latest
    from vla_rl.policy.checkpoint import save_checkpoint

    policy = make_policy()
    sft = tmp_path / "sft"
    save_checkpoint(sft / "step_000010", policy.model, policy.action_tokenizer, extra={"trained_tasks": ["Reach"]})
    point_latest(sft, "step_000010", 10)
    (sft / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    before = sorted(p.name for p in sft.iterdir())
    for resume in ([], ["--resume"]):
        assert main(["train", "--set", f"out_dir={sft}", "--set", f"init_checkpoint={sft}", *resume]) == 2
        assert f"{sft} holds another kind of run (its latest checkpoint is step_000010, not iter_*)" in \
            capsys.readouterr().err
    assert sorted(p.name for p in sft.iterdir()) == before
