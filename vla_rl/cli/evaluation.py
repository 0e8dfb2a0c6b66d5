"""``vla-rl eval``: success rate of a checkpoint on the fixed evaluation init states.

Greedy rollouts (or, on request, actions sampled at a temperature), one per evaluation init state, run in parallel env worker processes; writes
``eval.json`` (per-task success, Wilson 95% intervals, init-state ids, the seeds that generated the
init states, versions of the code, MuJoCo, robosuite, LIBERO and the renderer), ``success.png`` (a
bar chart with the intervals) and MP4 videos of the first episodes of each task: the frames the
policy saw in that same evaluation (no second rollout), enlarged to a watchable size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from vla_rl.core.atomic_file import write_text_atomic
from vla_rl.core.output_paths import check_output_dir


def evaluate_checkpoint(checkpoint: Path, tasks: Sequence[str], episodes_per_task: int, num_envs: int = 16,
                        out_dir: Path | None = None, videos_per_task: int = 0, extra: dict | None = None,
                        suite: str = "tabletop", env_processes: int = -1, show_progress: bool = True,
                        greedy_decoding: str | None = None, sample_temperature: float | None = None,
                        sample_seed: int = 0, last_update_weights: bool = False) -> dict:
    """Greedy held-out success of a checkpoint; ``greedy_decoding`` overrides the checkpoint's
    ``VLAConfig.greedy_decoding`` (argmax or expected) for this evaluation. With ``sample_temperature``
    the actions are sampled at that temperature instead (the policy as GRPO trains it; a seeded
    generator, ``sample_seed``), which shows how far the trained and the deployed policies differ.
    ``last_update_weights``: a checkpoint holding a weight average (``weights_ema``) is evaluated with its
    last update's weights instead."""
    import dataclasses

    import torch
    from tqdm import tqdm

    from sim_envs.suites import get_suite
    from sim_envs.versions import environment_versions
    from vla_rl.cli.factories import eval_state_counter, load_policy, make_vec_env
    from vla_rl.rollout.evaluate import evaluate
    from vla_rl.train.trainer import eval_specs

    if out_dir is not None:  # before the policy loads and the episodes run
        check_output_dir(out_dir, "evaluation output directory")
    if sample_temperature is not None and greedy_decoding is not None:
        raise ValueError("choose greedy decoding or a sampling temperature, not both")
    if sample_temperature is not None and sample_temperature <= 0:
        raise ValueError(f"sample_temperature must be > 0, got {sample_temperature}")
    policy = load_policy(str(checkpoint), temperature=sample_temperature or 1.0)
    if last_update_weights:
        from vla_rl.train.weight_average import load_last_update_weights

        load_last_update_weights(policy.model, checkpoint)
    if sample_temperature is not None:
        policy.generator.manual_seed(sample_seed)
        choose_actions = lambda obs: policy.act(obs, explore=True).actions  # noqa: E731
    else:
        choose_actions = policy.predict_actions
    if greedy_decoding is not None:
        policy.model.config = dataclasses.replace(policy.model.config, greedy_decoding=greedy_decoding)
    specs = eval_specs(tasks, episodes_per_task, eval_state_counter(suite))
    if not specs:
        raise ValueError("nothing to evaluate: no tasks or episodes_per_task is 0")
    config = policy.config
    versions = environment_versions()  # the code that evaluates, even if the checkout moves on meanwhile
    filmed = [spec for spec in specs if spec.init_state_id < videos_per_task] if out_dir is not None else []
    with make_vec_env(suite, min(num_envs, len(specs)), config.image_size, "wrist" in config.cameras,
                      env_processes, config.antialias) as env, torch.inference_mode(), \
            tqdm(total=len(specs), desc="eval", unit="ep", disable=not show_progress) as bar:
        result = evaluate(choose_actions, env, specs, progress=bar.update, video_specs=filmed)
    sampled = sample_temperature is not None
    report = {"checkpoint": str(checkpoint), "suite": suite, "split": "eval", "greedy": not sampled,
              "greedy_decoding": None if sampled else config.greedy_decoding,
              "sample_temperature": sample_temperature, "antialias": config.antialias,
              "weights": "last update" if last_update_weights else "as saved",
              "mean_success": result.mean_success, "per_task": result.per_task(),
              "init_states": get_suite(suite).init_state_provenance,
              "policy_seed": sample_seed if sampled else "greedy decoding (no sampling)",
              # sampled draws depend on how episodes share the batch: the same seed needs the same env count
              "num_envs": min(num_envs, len(specs)),
              **versions, **(extra or {})}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if filmed:  # write_videos clears the folder first
            control_hz = get_suite(suite).control_hz
            report["videos"] = write_videos(result, out_dir / "videos", fps=control_hz)
        else:  # with --videos 0 too, none may stand beside this report
            clear_episode_videos(out_dir / "videos")
        write_text_atomic(out_dir / "eval.json", json.dumps(report, indent=1) + "\n")
        plot_success({"success": report}, out_dir / "success.png", title=f"held-out success: {Path(checkpoint).name}")
    return report


def episode_video_path(out_dir: Path, task: str, init_state_id: int, success: bool) -> Path:
    """``<task>_eval<id>_<success|failure>.mp4`` in ``out_dir`` (cleared of earlier runs' videos first)."""
    return out_dir / f"{task}_eval{init_state_id}_{'success' if success else 'failure'}.mp4"


def clear_episode_videos(out_dir: Path) -> None:
    """Remove the episode videos an earlier run left in ``out_dir``: with other tasks or more videos, they
    would stay beside this run's without being listed in its report."""
    for stale in out_dir.glob("*_eval*_*.mp4"):
        stale.unlink()


def write_videos(result, out_dir: Path, fps: int, min_size: int = 256) -> list[dict]:
    """MP4s of the episodes whose frames ``evaluate`` kept, enlarged (nearest pixel) to >= ``min_size``."""
    import imageio.v3 as iio

    out_dir.mkdir(parents=True, exist_ok=True)
    clear_episode_videos(out_dir)
    outcomes = {episode.spec: episode for episode in result.episodes}
    written = []
    for spec, frames in result.frames.items():
        scale = max(1, -(-min_size // frames[0].shape[0]))
        video = np.stack(frames).repeat(scale, axis=1).repeat(scale, axis=2)
        success = outcomes[spec].success
        path = episode_video_path(out_dir, spec.task, spec.init_state_id, success)
        iio.imwrite(path, video, fps=fps, codec="libx264")
        written.append({"task": spec.task, "init_state_id": spec.init_state_id, "success": success, "file": str(path)})
    return written


def record_videos(policy, tasks: Sequence[str], per_task: int, out_dir: Path, size: int = 256) -> list[dict]:
    """Greedy tabletop episodes on the first evaluation init states, re-rendered at ``size`` px, as MP4
    (the quickstart's before/after videos)."""
    import imageio.v3 as iio
    import torch

    from sim_envs.tabletop_env import TabletopEnv
    from vla_rl.core.types import ObsBatch

    out_dir.mkdir(parents=True, exist_ok=True)
    clear_episode_videos(out_dir)
    written = []
    config = policy.config
    for task in tasks:
        env = TabletopEnv(task, image_size=config.image_size, wrist_camera="wrist" in config.cameras,
                          antialias=config.antialias)
        try:
            for init_state_id in range(per_task):
                obs, info = env.reset(options={"init_state_id": init_state_id, "split": "eval"})
                frames, success, done = [env.render_camera("agentview", size)], False, False
                while not done:
                    batch = ObsBatch.from_env_obs(obs, info["instruction"])
                    with torch.inference_mode():
                        chunk = policy.predict_actions(batch)[0]
                    for action in chunk:
                        obs, _, terminated, truncated, info = env.step(action)
                        frames.append(env.render_camera("agentview", size))
                        success, done = bool(info["success"]), terminated or truncated
                        if done:
                            break
                path = episode_video_path(out_dir, task, init_state_id, success)
                iio.imwrite(path, np.stack(frames), fps=env.metadata["render_fps"], codec="libx264")
                written.append({"task": task, "init_state_id": init_state_id, "success": success, "file": str(path)})
        finally:
            env.close()
    return written


def plot_success(reports: dict[str, dict], path: Path, title: str = "held-out success") -> Path:
    """Grouped bar chart of per-task success with Wilson 95% intervals, one bar colour per report
    (e.g. ``{"before RL": ..., "after RL": ...}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(next(iter(reports.values()))["per_task"])
    width = 0.8 / len(reports)
    figure, ax = plt.subplots(figsize=(1.4 * len(tasks) + 2.5, 3.6))
    for index, (label, report) in enumerate(reports.items()):
        rows = [report["per_task"][t] for t in tasks]
        rates = np.array([r["success_rate"] for r in rows])
        errors = np.array([[r["success_rate"] - r["wilson95_low"] for r in rows],
                           [r["wilson95_high"] - r["success_rate"] for r in rows]])
        positions = np.arange(len(tasks)) + (index - (len(reports) - 1) / 2) * width
        ax.bar(positions, 100 * rates, width, yerr=100 * errors, capsize=3,
               label=f"{label} (mean {100 * report['mean_success']:.0f}%)")
    ax.set_xticks(np.arange(len(tasks)), tasks, rotation=20)
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def print_success_table(report: dict) -> None:
    width = max([12] + [len(task) for task in report["per_task"]])
    print(f"\n{'task':<{width}} {'success':>8} {'wilson 95%':>14}")
    for task, row in report["per_task"].items():
        print(f"{task:<{width}} {row['successes']:>3}/{row['episodes']:<4} "
              f"[{row['wilson95_low']:.2f}, {row['wilson95_high']:.2f}]")
    print(f"{'mean':<{width}} {report['mean_success']:>8.1%}")
    diverged = {task: row["physics_divergences"] for task, row in report["per_task"].items()
                if row.get("physics_divergences")}  # reports written before the count lack it
    if diverged:
        print("physics diverged (episodes cut as failures): "
              + ", ".join(f"{task} {count}" for task, count in diverged.items()))
