"""`vla-rl eval`, `vla-rl train` and `vla-rl quickstart` end to end at toy scale (real envs, real Ray)."""

import dataclasses
import json
from pathlib import Path

import pytest

from tests.train.test_trainer import tiny_checkpoint  # noqa: F401  (module fixture)
from vla_rl.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def test_eval_writes_json_plot_and_videos(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
    out = tmp_path / "eval"
    # a video an earlier evaluation left with the other outcome must not stay beside this one's
    (out / "videos").mkdir(parents=True)
    for task in ("Reach", "PressButton"):
        for outcome in ("success", "failure"):
            (out / "videos" / f"{task}_eval0_{outcome}.mp4").write_bytes(b"stale")
    code = main(["eval", "--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "PressButton",
                 "--episodes-per-task", "3", "--num-envs", "3", "--workers", "0", "--videos", "1", "--out", str(out),
                 "--greedy-decoding", "expected"])
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["greedy_decoding"] == "expected"  # the override, recorded (the checkpoint says argmax)
    assert set(report["per_task"]) == {"Reach", "PressButton"}
    assert report["per_task"]["Reach"]["init_state_ids"] == [0, 1, 2]
    for key in ("mujoco_version", "gl_renderer", "code_commit", "init_states", "robosuite_version", "libero_version"):
        assert key in report
    assert (out / "success.png").stat().st_size > 0
    videos = report["videos"]
    assert len(videos) == 2 and sorted((out / "videos").glob("*.mp4")) == sorted(Path(v["file"]) for v in videos)
    assert all(Path(v["file"]).read_bytes() != b"stale" for v in videos)
    assert report["num_envs"] == 3
    assert "mean" in capsys.readouterr().out


def test_sampled_eval_records_its_temperature_and_repeats_with_its_seed(tmp_path, tiny_checkpoint):  # noqa: F811
    reports = []
    for name in ("first", "second"):
        out = tmp_path / name
        assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "--episodes-per-task", "2",
                     "--num-envs", "2", "--workers", "0", "--videos", "0", "--out", str(out),
                     "--sample-temperature", "0.7", "--sample-seed", "3"]) == 0
        reports.append(json.loads((out / "eval.json").read_text()))
    first, second = reports
    assert first["greedy"] is False and first["sample_temperature"] == 0.7 and first["policy_seed"] == 3
    assert first["greedy_decoding"] is None
    assert first["per_task"] == second["per_task"]  # same seed, same sampled episodes


def test_eval_refuses_greedy_decoding_with_a_sampling_temperature(tiny_checkpoint, capsys):  # noqa: F811
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--tasks", "Reach", "--greedy-decoding", "argmax",
                 "--sample-temperature", "1.0"]) == 2
    assert "not both" in capsys.readouterr().err


def test_eval_rejects_unknown_task_and_missing_checkpoint(tmp_path, tiny_checkpoint, capsys):  # noqa: F811
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--tasks", "Juggle"]) == 2
    assert "unknown tasks" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--checkpoint", str(tmp_path / "empty")]) == 2
    assert "neither a checkpoint directory" in capsys.readouterr().err


def test_train_refuses_a_missing_init_checkpoint_and_a_used_out_dir_before_any_worker_starts(
        tmp_path, tiny_checkpoint, capsys, monkeypatch):  # noqa: F811
    import vla_rl.cli.factories as factories

    def no_pool(*args, **kwargs):
        raise AssertionError("the rollout workers were started")

    monkeypatch.setattr(factories, "make_pool", no_pool)
    assert main(["train", "--set", f"out_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "init_checkpoint is required" in err and "neither a checkpoint" not in err
    from vla_rl.train.trainer import Trainer, TrainConfig

    with pytest.raises(ValueError, match="init_checkpoint is required"):  # a library caller's too
        Trainer(TrainConfig(out_dir=tmp_path / "library"), None, lambda task: 1)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"iteration": 1}\n')
    assert main(["train", "--set", f"out_dir={tmp_path / 'run'}", "--set", f"init_checkpoint={tiny_checkpoint}"]) == 2
    assert "holds a previous run" in capsys.readouterr().err


def test_train_rejects_unknown_config_key(tmp_path, capsys):
    assert main(["train", "--set", "algorithm.clip_hi=0.3"]) == 2
    assert "clip_high" in capsys.readouterr().err  # the message lists the valid keys


@pytest.mark.slow
def test_quickstart_toy_scale_writes_the_report(tmp_path, capsys):
    out = tmp_path / "qs"
    code = main(args := ["quickstart", "--set", f"out_dir={out}", "--set", "tasks=[Reach]", "--set", "sft_tasks=[]",
                 "--set", "demos_per_task=2",
                 "--set", "image_size=32", "--set", "sft.steps=3", "--set", "train.iterations=2",
                 "--set", "time_limit_minutes=0.01",  # the job's budget stops GRPO after the first of its 2 iterations
                 "--set", "train.group_size=2", "--set", "train.groups_per_iteration=1",
                 "--set", "train.eval_episodes_per_task=2",
                 "--set", "train.algorithm.dynamic_sampling=false",
                 "--set", "train.rollout={backend: local, num_workers: 1, envs_per_worker: 2}",
                 "--set", "sft.model={image_size: 32, vision_towers: [{hidden_size: 32, num_layers: 1, num_heads: 2, "
                          "intermediate_size: 64}], language_model: {hidden_size: 64, num_layers: 1, num_heads: 2, "
                          "num_kv_heads: 2, intermediate_size: 128}}"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["before"]["iteration"] == 0 and metrics["after"]["iteration"] == 1
    assert metrics["before"]["per_task"]["Reach"]["episodes"] == 2
    report = (out / "report.md").read_text()
    assert "| Reach |" in report and "before RL" in report
    # "after" is the weight average (the default weights_ema); the budget, already spent, left no time to
    # evaluate the last update's weights beside it (render_report's test covers the report when it did)
    assert metrics["after"]["weights"] == "ema 0.95" and metrics["before"]["weights"] == "current"
    assert metrics["after"]["current_weights_skipped"] == "deadline"
    assert "the weights of the last update alone were not evaluated" in report
    assert metrics["grpo_stopped_for_deadline"]
    assert "GRPO stopped on the job's budget" in report and "after 1 of 2 iterations" in report
    assert "The SFT stopped" not in report  # it ran its 3 steps
    for name in ("success_curve.png", "success_before_after.png"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "videos").rglob("*.mp4"))) == 2  # one before, one after
    # the quickstart renders without multisampling: its demos say so, its checkpoints carry it to every env
    from vla_rl.core.demo_file import rendered_antialiased

    assert not rendered_antialiased(out / "demos" / "Reach_demo.hdf5")
    for checkpoint in (metrics["sft_checkpoint"], metrics["final_checkpoint"]):
        assert json.loads((Path(checkpoint) / "vla_config.json").read_text())["antialias"] is False
    assert "(no multisampling)" in report
    # run again in the same out_dir: demos and SFT are reused, GRPO runs afresh and the previous GRPO run
    # moves aside instead of mixing its history and checkpoints with the new one's
    assert main(args) == 0
    assert "moved to" in capsys.readouterr().out
    assert (out / "grpo_previous" / "iter_000001" / "manifest.json").is_file()
    history = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in history] == [1]
    # reuse=false trains the SFT afresh: the previous SFT run moves aside too (a fresh SFT refuses a used out_dir)
    assert main(args + ["--set", "reuse=false"]) == 0
    assert (out / "sft_previous" / "step_000003" / "manifest.json").is_file()
    assert (out / "sft" / "step_000003" / "manifest.json").is_file()
    assert main(args + ["--set", "train.eval_episodes_per_task=0"]) == 2  # no before/after to report
    assert "eval_episodes_per_task must be >= 1" in capsys.readouterr().err


def test_budget_notes_name_the_limit_that_stopped_each_stage():
    from vla_rl.cli.quickstart import QuickstartConfig, _budget_notes
    from vla_rl.core.config import to_dict

    config = QuickstartConfig()
    metrics = {"sft_checkpoint": "runs/x/sft/step_000727", "config": to_dict(config), "after": {"iteration": 90},
               "grpo_stopped_for_deadline": True}
    notes = " ".join(_budget_notes(metrics, config.train))
    assert "at step 727 of 1500" in notes and "the job's budget (`time_limit_minutes: 20`)" in notes
    assert "after 90 of 300 iterations" in notes and "--set time_limit_minutes=25" in notes  # few updates: advice
    metrics["after"]["iteration"] = 180  # a fast machine's budget: said, no advice
    notes = " ".join(_budget_notes(metrics, config.train))
    assert "after 180 of 300 iterations" in notes and "time_limit_minutes=25" not in notes
    metrics["after"]["iteration"] = 90
    metrics.update(grpo_stopped_for_deadline=False, sft_checkpoint="runs/x/sft/step_001500")
    train = dataclasses.replace(config.train, time_limit_minutes=11)
    notes = " ".join(_budget_notes(metrics, train))
    assert "The SFT stopped" not in notes and "its time limit (`train.time_limit_minutes: 11`)" in notes
    metrics["after"]["iteration"] = 300
    assert _budget_notes(metrics, train) == []


def test_report_gives_the_last_weights_score_beside_the_average_or_says_it_was_skipped():
    from vla_rl.cli.quickstart import QuickstartConfig, render_report
    from vla_rl.core.config import to_dict

    def row(successes: int) -> dict:
        per_task = {"Reach": {"successes": successes, "episodes": 50, "success_rate": successes / 50,
                              "wilson95_low": 0.1, "wilson95_high": 0.9}}
        return {"mean_success": successes / 50, "per_task": per_task}

    config = QuickstartConfig()
    before = {"iteration": 0, "weights": "current", **row(20)}
    after = {"iteration": 150, "weights": "ema 0.95", **row(35), "current_weights": row(31)}
    metrics = {"before": before, "after": after, "gain_points": 30.0, "seconds": {"total": 900.0}, "videos": {},
               "config": to_dict(config), "sft_checkpoint": "runs/x/sft/step_001500",
               "final_checkpoint": "runs/x/grpo/iter_000150"}
    report = render_report(metrics, config.train)
    assert "| Reach | 20/50 (40%" in report and "35/50 (70%" in report and "**+30.0 pts**" in report
    assert "the weights of the last update alone scored 62.0% on the same states (Reach 31/50)" in report
    del after["current_weights"]
    after["current_weights_skipped"] = "deadline"
    assert "the weights of the last update alone were not evaluated" in render_report(metrics, config.train)
    after["weights"] = "current"  # no average: nothing to compare
    assert "last update alone" not in render_report(metrics, config.train)


def test_a_reused_sft_checkpoint_must_be_of_the_requested_model(tmp_path):
    from tests.policy.conftest import make_policy
    from vla_rl.cli.quickstart import _check_reused_sft
    from vla_rl.policy.checkpoint import save_checkpoint

    policy = make_policy()
    checkpoint = save_checkpoint(tmp_path / "step_000003", policy.model, policy.action_tokenizer)
    from vla_rl.cli.quickstart import _default_sft

    sft = dataclasses.replace(_default_sft(), model=policy.model.config)
    _check_reused_sft(checkpoint, sft)  # the same model (and no recorded settings, as in older checkpoints): reused
    other = dataclasses.replace(policy.model.config, prompt_template="{instruction}", n_action_bins=128)
    with pytest.raises(ValueError, match="differ in n_action_bins, prompt_template"):
        _check_reused_sft(checkpoint, dataclasses.replace(sft, model=other))


def test_reused_demos_and_sft_must_have_been_made_with_the_same_settings(tmp_path):
    """A rerun with another demo noise or SFT learning rate must not reuse what the earlier settings made
    (the report would state the new settings); a longer SFT may resume the saved one."""
    import h5py

    from sim_envs.demos import DemoConfig
    from tests.policy.conftest import make_policy
    from vla_rl.cli.quickstart import _check_reused_demos, _check_reused_sft, _default_sft
    from vla_rl.core.config import to_dict
    from vla_rl.policy.checkpoint import save_checkpoint

    demos = DemoConfig(tasks=("Reach",), episodes_per_task=5, noise_std=0.1, out_dir=tmp_path / "demos")
    path = tmp_path / "Reach_demo.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("data").attrs["env_args"] = json.dumps({"config": to_dict(demos)})
    _check_reused_demos([path], dataclasses.replace(demos, tasks=("Reach", "Lift")))  # the task list may grow
    with pytest.raises(ValueError, match=r"noise_std \(0.1 there, 0.2 now\)"):
        _check_reused_demos([path], dataclasses.replace(demos, noise_std=0.2))

    policy = make_policy()
    sft = dataclasses.replace(_default_sft(), model=policy.model.config, demo_dir=tmp_path / "demos")
    checkpoint = save_checkpoint(tmp_path / "step_000003", policy.model, policy.action_tokenizer,
                                 {"sft_config": to_dict(sft)})
    _check_reused_sft(checkpoint, dataclasses.replace(sft, steps=3000, demo_dir=Path("elsewhere/demos")))
    with pytest.raises(ValueError, match="lr"):
        _check_reused_sft(checkpoint, dataclasses.replace(sft, lr=3e-4))
    with pytest.raises(ValueError, match="localiser_frames_dir"):
        _check_reused_sft(checkpoint, dataclasses.replace(sft, localiser_frames_dir=tmp_path / "frames"))


def test_quickstart_refuses_settings_it_would_overwrite_and_repeated_tasks(capsys):
    assert main(["quickstart", "--set", "sft.demos_per_task=50"]) == 2
    assert "sets sft.demos_per_task itself" in capsys.readouterr().err
    assert main(["quickstart", "--set", "tasks=[Reach, Reach]"]) == 2
    assert "more than once" in capsys.readouterr().err


def test_quickstart_rejects_a_negative_budget(capsys):
    assert main(["quickstart", "--set", "time_limit_minutes=-1"]) == 2
    assert "time_limit_minutes must be >= 0" in capsys.readouterr().err


def test_the_embedded_quickstart_default_is_configs_quickstart_yaml():
    """`vla-rl quickstart` without --config must run what `make demo` runs."""
    from vla_rl.cli.quickstart import QuickstartConfig
    from vla_rl.core.config import load_config, to_dict

    assert to_dict(QuickstartConfig()) == to_dict(load_config(QuickstartConfig, REPO / "configs" / "quickstart.yaml"))
