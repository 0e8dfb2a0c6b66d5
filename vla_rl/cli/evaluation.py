"""``vla-rl eval``: success rate of a checkpoint on the fixed evaluation init states.

Greedy rollouts (or, on request, actions sampled at a temperature), one per evaluation init state, run in
parallel env worker processes; writes ``eval.json`` (per-task success, Wilson 95% intervals, every episode's
outcome, init-state ids, the seeds that generated the init states, the checkpoint's manifest digest, versions
of the code, torch, transformers, MuJoCo, robosuite, LIBERO and the renderer), ``success.png`` (a bar chart
with the intervals) and MP4 videos of the first episodes of each task: the frames the policy saw in that same
evaluation (no second rollout), enlarged to a watchable size, under a caption naming the episode.

An env worker that dies is replaced and only the unfinished episodes run again (``evaluate_restarting``).
Ctrl-C or a fatal error after some episodes ended still writes ``eval.json``, with ``"complete": false``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
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
    last update's weights instead. ``out_dir`` is created before anything loads (a path that cannot be
    written fails at once) and removed again if the evaluation fails before writing into it."""
    import torch
    from tqdm import tqdm

    from sim_envs.suites import get_suite
    from vla_rl.cli.factories import eval_state_counter, load_policy, make_vec_env
    from vla_rl.rollout.evaluate import EvalResult, crash_summary, evaluate_restarting
    from vla_rl.train.trainer import eval_specs

    if sample_temperature is not None and greedy_decoding is not None:
        raise ValueError("choose greedy decoding or a sampling temperature, not both")
    if sample_temperature is not None and sample_temperature <= 0:
        raise ValueError(f"sample_temperature must be > 0, got {sample_temperature}")
    specs = eval_specs(tasks, episodes_per_task, eval_state_counter(suite))
    if not specs:
        raise ValueError("nothing to evaluate: no tasks or episodes_per_task is 0")
    out_dir = Path(out_dir) if out_dir is not None else None
    created = make_output_dir(out_dir) if out_dir is not None else []
    print(f"evaluating {checkpoint}", flush=True)
    result, report = EvalResult(), None
    try:
        policy = load_policy(str(checkpoint), temperature=sample_temperature or 1.0)
        choose_actions = _prepare_policy(policy, checkpoint, greedy_decoding, sample_temperature, sample_seed,
                                         last_update_weights)
        config = policy.config
        envs = min(num_envs, len(specs))
        report = _report_header(checkpoint, policy, suite, episodes_per_task, envs, sample_temperature, sample_seed,
                                last_update_weights, extra)
        filmed = [spec for spec in specs if spec.init_state_id < videos_per_task] if out_dir is not None else []
        with torch.inference_mode(), tqdm(total=len(specs), desc="eval", unit="ep", disable=not show_progress) as bar:
            def announce(error, restart: int, left: int) -> None:
                bar.write(f"env restart {restart}: {crash_summary(error)}; running the {left} unfinished "
                          "episodes again in a new env", file=sys.stderr)

            _, report["env_restarts"] = evaluate_restarting(
                choose_actions, lambda: make_vec_env(suite, envs, config.image_size, "wrist" in config.cameras,
                                                     env_processes, config.antialias),
                specs, progress=bar.update, video_specs=filmed, result=result, on_restart=announce)
    except BaseException as error:  # Ctrl-C included: the episodes that ended are kept, or the empty folder goes
        if out_dir is not None and report is not None and result.episodes:
            report.update(complete=False, **_outcomes(result))
            write_report(report, result, out_dir, video_fps=None)  # no videos: a quick exit matters more
            print(f"{len(result.episodes)}/{len(specs)} episodes done, partial results in {out_dir / 'eval.json'}",
                  file=sys.stderr)
        elif out_dir is not None:
            remove_empty_dirs(created)
            if report is not None or isinstance(error, KeyboardInterrupt):  # not before a load error's own line
                print("no episode had ended: no results written", file=sys.stderr)
        raise
    report.update(complete=True, **_outcomes(result))
    if out_dir is not None:
        write_report(report, result, out_dir, video_fps=get_suite(suite).control_hz if filmed else None)
    return report


def _prepare_policy(policy, checkpoint: Path, greedy_decoding: str | None, sample_temperature: float | None,
                    sample_seed: int, last_update_weights: bool):
    """The function that chooses the evaluated actions (obs -> ``[B, K, A]``), the policy set up for it."""
    import dataclasses

    if last_update_weights:
        from vla_rl.train.weight_average import load_last_update_weights

        load_last_update_weights(policy.model, checkpoint)
    if greedy_decoding is not None:
        policy.model.config = dataclasses.replace(policy.model.config, greedy_decoding=greedy_decoding)
    if sample_temperature is None:
        return policy.predict_actions
    policy.generator.manual_seed(sample_seed)
    return lambda obs: policy.act(obs, explore=True).actions


def _report_header(checkpoint: Path, policy, suite: str, episodes_per_task: int, num_envs: int,
                   sample_temperature: float | None, sample_seed: int, last_update_weights: bool,
                   extra: dict | None) -> dict:
    """What was evaluated, how, and with which code: everything in ``eval.json`` but the outcomes."""
    from sim_envs.suites import get_suite
    from sim_envs.versions import environment_versions, git_changed_files, package_version

    sampled = sample_temperature is not None
    versions = environment_versions()  # the code that evaluates, even if the checkout moves on meanwhile
    manifest = Path(checkpoint) / "manifest.json"
    # which bytes: a checkpoint rewritten in place (a resumed run) keeps its path, not its manifest
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    return {"checkpoint": str(checkpoint), "checkpoint_manifest_sha256": digest,
            "suite": suite, "split": "eval", "episodes_per_task": episodes_per_task, "greedy": not sampled,
            "greedy_decoding": None if sampled else policy.config.greedy_decoding,
            "sample_temperature": sample_temperature, "antialias": policy.config.antialias,
            "weights": describe_weights(checkpoint, last_update_weights),
            "policy_seed": sample_seed if sampled else None,  # None: greedy decoding draws nothing
            # sampled draws depend on how episodes share the batch: the same seed needs the same env count
            "num_envs": num_envs, "policy_device": str(policy.model.device),
            "init_states": get_suite(suite).init_state_provenance,
            **versions, "torch_version": package_version("torch"),
            "transformers_version": package_version("transformers"),
            **({"changed_files": git_changed_files()} if str(versions.get("code_commit")).endswith("-dirty") else {}),
            **(extra or {})}


def _outcomes(result) -> dict:
    """The report's outcome fields: rates per task, and every episode (to compare checkpoints state by state)."""
    return {"mean_success": result.mean_success, "per_task": result.per_task(),
            "episodes": [{"task": e.spec.task, "init_state_id": e.spec.init_state_id, "success": e.success,
                          "steps": e.steps, "instruction": e.instruction, "physics_diverged": e.physics_diverged,
                          "init_state_unsettled": e.init_state_unsettled}
                         for e in result.episodes]}


def describe_weights(checkpoint: Path, last_update_weights: bool) -> str:
    """Which weights were evaluated: ``last update`` (``--last-update-weights``), the weight average a GRPO
    checkpoint written with ``weights_ema`` holds as its weights, or ``as saved`` (no average)."""
    if last_update_weights:
        return "last update"
    path = Path(checkpoint) / "training_state.pt"
    if not path.is_file():
        return "as saved"
    import torch

    try:  # memory-mapped: the optimiser's moments (twice a 7B model's size) are not read
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # noqa: BLE001 - a label; the weights themselves loaded fine
        return f"as saved (whether they are a weight average is unknown: {type(error).__name__})"
    average = ((state or {}).get("rl") or {}).get("weights_average")
    if average is None:
        return "as saved"
    return f"as saved: the weight average (weights_ema {average['decay']:g}, up to iteration {average['iteration']})"


def make_output_dir(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` and write a probe file in it before any work: ``os.access`` says yes to root for
    ``/proc/x``, which then failed only after the whole evaluation. Returns the directories it created
    (deepest first), which ``remove_empty_dirs`` takes back if the evaluation writes nothing."""
    import tempfile

    check_output_dir(out_dir, "evaluation output directory")
    created = [path for path in (out_dir, *out_dir.parents) if not path.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        remove_empty_dirs(created)
        raise ValueError(f"evaluation output directory {out_dir} cannot be written: "
                         f"{error.strerror or error}") from error
    return created


def remove_empty_dirs(directories: Sequence[Path]) -> None:
    """Remove ``directories`` (deepest first) while they are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:  # something was written there, or it is gone: leave the rest
            return


def write_report(report: dict, result, out_dir: Path, video_fps: int | None) -> None:
    """``eval.json``, ``success.png`` and, with ``video_fps``, the filmed episodes' videos; without, any an
    earlier run left are removed (they would stand beside this report without being listed in it)."""
    if video_fps is not None:
        report["videos"] = write_videos(result, out_dir / "videos", fps=video_fps)
    else:
        clear_episode_videos(out_dir / "videos")
    write_text_atomic(out_dir / "eval.json", json.dumps(report, indent=1) + "\n")
    plot_success({"success": report}, out_dir / "success.png", title=chart_title(report))


def chart_title(report: dict) -> str:
    """Two lines: the run and checkpoint; the episodes per task, how actions were chosen, the weights."""
    checkpoint = Path(report["checkpoint"])
    if report["greedy"]:
        decoding = f"greedy ({report['greedy_decoding']})"
    else:
        decoding = f"sampled at T={report['sample_temperature']:g} (seed {report['policy_seed']})"
    details = [f"{report['episodes_per_task']} episodes per task", decoding]
    if report["weights"] != "as saved":
        details.append("weight average" if "weight average" in report["weights"] else report["weights"] + " weights")
    if not report.get("complete", True):
        details.append(f"PARTIAL: {len(report['episodes'])} episodes")
    return f"held-out success: {checkpoint.parent.name}/{checkpoint.name}\n" + ", ".join(details)


# Exactly the names episode_video_path writes: a user's own video in the folder is left alone.
EPISODE_VIDEO_NAME = re.compile(r".+_eval\d+_(success|failure)\.mp4")


def episode_video_path(out_dir: Path, task: str, init_state_id: int, success: bool) -> Path:
    """``<task>_eval<id>_<success|failure>.mp4`` in ``out_dir`` (cleared of earlier runs' videos first)."""
    return out_dir / f"{task}_eval{init_state_id}_{'success' if success else 'failure'}.mp4"


def clear_episode_videos(out_dir: Path) -> None:
    """Remove the episode videos an earlier run left in ``out_dir``: with other tasks or more videos, they
    would stay beside this run's without being listed in its report."""
    for stale in out_dir.glob("*.mp4"):
        if EPISODE_VIDEO_NAME.fullmatch(stale.name):
            stale.unlink()


def write_videos(result, out_dir: Path, fps: int, min_size: int = 256) -> list[dict]:
    """MP4s of the episodes whose frames ``evaluate`` kept, enlarged (nearest pixel) to >= ``min_size``, under
    a caption bar naming the task, init state and outcome (a video shown on its own still says what it is)."""
    import imageio.v3 as iio

    out_dir.mkdir(parents=True, exist_ok=True)
    clear_episode_videos(out_dir)
    outcomes = {episode.spec: episode for episode in result.episodes}
    written = []
    for spec, frames in result.frames.items():
        scale = max(1, -(-min_size // frames[0].shape[0]))
        video = np.stack(frames).repeat(scale, axis=1).repeat(scale, axis=2)
        episode = outcomes[spec]
        outcome = "success" if episode.success else "failure"
        caption = caption_bar(f"{spec.task}  init state {spec.init_state_id}  {outcome} ({episode.steps} steps)",
                              video.shape[2])
        video = np.concatenate([np.broadcast_to(caption, (len(video), *caption.shape)), video], axis=1)
        path = episode_video_path(out_dir, spec.task, spec.init_state_id, episode.success)
        iio.imwrite(path, video, fps=fps, codec="libx264")
        written.append({"task": spec.task, "init_state_id": spec.init_state_id, "success": episode.success,
                        "file": str(path)})
    return written


def caption_bar(text: str, width: int, height: int = 16) -> np.ndarray:
    """``[height, width, 3]`` uint8: ``text`` in white on black (Pillow's built-in font); an even height keeps
    the frame size H.264 needs."""
    from PIL import Image, ImageDraw

    bar = Image.new("RGB", (width, height))
    ImageDraw.Draw(bar).text((3, 2), text, fill=(255, 255, 255))
    return np.asarray(bar)


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
    unsettled = {task: row for task, row in report["per_task"].items() if row.get("unsettled_init_states")}
    if unsettled:  # LIBERO init states that do not settle under MuJoCo >= 3.4 (docs/libero.md)
        print("init states whose objects had not settled (not comparable with published LIBERO numbers): "
              + ", ".join(f"{task} {row['unsettled_init_states']}/{row['episodes']}" +
                          (f" (success on the others {row['success_rate_settled']:.0%})"
                           if row.get("success_rate_settled") is not None else "")
                          for task, row in unsettled.items()))
