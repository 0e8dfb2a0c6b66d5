"""``vla-rl quickstart`` (what ``make demo`` runs): the whole pipeline on a laptop CPU.

1. expert demos (a few per task, training init states),
2. few-demo SFT of the tiny VLA,
3. GRPO with Ray rollout workers; the trainer evaluates greedily on the held-out evaluation init
   states before the first update and at the end (and every ``eval_every`` iterations between),
4. a report: ``report.md`` (before/after table per task with Wilson intervals, timings),
   ``success_curve.png``, ``success_before_after.png``, ``metrics.json`` and MP4 videos of the
   policy before and after RL.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sim_envs.tasks import TASKS
from vla_rl.core.atomic_file import write_text_atomic
from vla_rl.core.config import option, refuse_repeats, to_dict
from vla_rl.policy.model import VisionTowerConfig, VLAConfig
from vla_rl.policy.lora import LoRAConfig
from vla_rl.policy.sft import CHECKPOINT_PREFIX as SFT_CHECKPOINT_PREFIX, SFTConfig
from vla_rl.train.learner import AlgorithmConfig, LearnerConfig
from vla_rl.train.trainer import CHECKPOINT_PREFIX as TRAINER_CHECKPOINT_PREFIX, RolloutConfig, TrainConfig


# The localiser's frames come from training init states far from the demos' (ids 0, 1, ...), so the
# action head's 5 demos per task are not among them.
LOCALISER_FIRST_INIT_STATE = 1000


def _default_sft() -> SFTConfig:
    """configs/quickstart.yaml's SFT: the localiser model (docs/policy.md), whose head reads where the named
    objects and the gripper are, so a 5-demo clone generalises to unseen layouts and RL shapes a head
    whose input already does."""
    model = VLAConfig(vision_towers=(VisionTowerConfig(kind="mobilenetv2", pretrained="builtin:imagenet",
                                                       feature_stage=6),),
                      greedy_decoding="expected", proprio_dim=8, localiser_points=2, localiser_gripper=True,
                      gripper_from_proprio=True, image_tokens=False)
    return SFTConfig(model=model, steps=1500, time_limit_minutes=5, batch_size=32, lr=1e-3, warmup_steps=50,
                     shift_pixels=0, located_noise_pixels=0.3, proprio_noise=0.15, action_label_sigma_bins=2,
                     head_points="labels", localiser_batch_size=8)


# Fewer GRPO updates than this and the report suggests a longer budget: the fast machines' 150-186 gained
# +25 to +38 points on average, the slow kind's 34-97 about +15 (docs/training.md).
FEW_UPDATES = 120


def _default_train() -> TrainConfig:
    return TrainConfig(iterations=300, time_limit_minutes=0, temperature=1.0, group_size=8, groups_per_iteration=4,
                       max_sampling_rounds=2, keep_surplus_groups=True,
                       algorithm=AlgorithmConfig(lr=1e-3, minibatch_size=128, microbatch_size=64,
                                                 loss_aggregation="episode-mean"),
                       learner=LearnerConfig(lora=LoRAConfig(rank=8)),
                       rollout=RolloutConfig(num_workers=2, envs_per_worker=16, max_decisions=12), eval_every=0,
                       eval_episodes_per_task=50, checkpoint_every=20, weights_ema=0.95)


@dataclass(frozen=True)
class QuickstartConfig:
    out_dir: Path = option(Path("runs/quickstart"), "everything goes here (demos/, sft/, grpo/, report.md)")
    tasks: tuple[str, ...] = option(("Reach", "PressButton"), "tabletop tasks GRPO trains and the report evaluates")
    sft_tasks: tuple[str, ...] = option(tuple(TASKS), "tasks whose few demos the SFT learns from (empty = tasks): "
                                                      "the localiser is shared, and learns to find objects from "
                                                      "every task's frames (5-demo Reach: 14% from 2 tasks' demos, "
                                                      "48% from all 7)")
    demos_per_task: int = option(5, "expert demos per task for the few-demo SFT")
    demo_noise_std: float = option(0.1, "DART noise on the experts' motion (labels stay clean): the demos then show "
                                        "how to recover from small errors, which a 5-demo clone needs")
    demo_rotation_noise: bool = option(False, "the demo noise also perturbs rotation (off: translation only)")
    localiser_episodes_per_task: int = option(
        100, "expert episodes per task (on other init states than the demos) whose frames and simulator pixel labels "
           "train the SFT's localiser; their actions are never used (sft.localiser_frames_dir; 0 = the localiser "
           "learns from the demos' frames)")
    image_size: int = option(64, "camera image size of demos and rollouts (sft.model.image_size is set from this)")
    antialias: bool = option(False, "render demos, rollouts and evaluations with 4x multisampling (MuJoCo's default "
                                    "elsewhere); false: 1.67x the env steps/s on a CPU (llvmpipe), recorded in the "
                                    "checkpoints (sft.model.antialias is set from this)")
    sft: SFTConfig = option(factory=_default_sft, doc="few-demo SFT (demo_dir, out_dir, tasks, demos_per_task, "
                                                           "eval_episodes_per_task, localiser_frames_dir, "
                                                           "model.image_size and model.antialias are set here)")
    train: TrainConfig = option(factory=_default_train,
                                doc="GRPO (init_checkpoint, out_dir and tasks are set here); its eval is the report's")
    videos_per_task: int = option(1, "MP4 videos per task, before and after RL")
    time_limit_minutes: float = option(
        20.0, "the whole job's budget: GRPO stops after the iteration past which one more, its final evaluation, "
              "the videos and the report would not fit (0 = none; train.time_limit_minutes, if set, also applies)")
    reuse: bool = option(True, "skip stages whose outputs already exist in out_dir (demos, SFT checkpoint)")

    def __post_init__(self) -> None:
        if self.time_limit_minutes < 0:
            raise ValueError(f"time_limit_minutes must be >= 0 (0 = no budget), got {self.time_limit_minutes}")
        if self.demos_per_task < 1:
            raise ValueError(f"demos_per_task must be >= 1, got {self.demos_per_task}")
        if self.localiser_episodes_per_task < 0 or self.videos_per_task < 0:
            raise ValueError(f"localiser_episodes_per_task and videos_per_task must be >= 0, got "
                             f"{self.localiser_episodes_per_task} and {self.videos_per_task}")
        if self.train.eval_episodes_per_task < 1:
            raise ValueError("train.eval_episodes_per_task must be >= 1: the report compares held-out success "
                             "before and after GRPO")
        refuse_repeats(self.tasks, "tasks")
        refuse_repeats(self.sft_tasks, "sft_tasks")
        overridden = _set_by_the_quickstart(self)
        if overridden:
            raise ValueError(f"the quickstart sets {', '.join(overridden)} itself (from out_dir, tasks, demos_per_task, "
                             f"image_size, antialias and localiser_episodes_per_task): set those instead")


def run_quickstart(config: QuickstartConfig, show_progress: bool = True) -> Path:
    from sim_envs.demos import DemoConfig, collect_demos
    from sim_envs.versions import environment_versions
    from vla_rl.cli.evaluation import plot_success, record_videos
    from vla_rl.cli.factories import eval_state_counter, load_policy, make_pool
    from vla_rl.policy.checkpoint import latest_valid_checkpoint
    from vla_rl.policy.sft import train_sft
    from vla_rl.train.trainer import Trainer

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    versions = environment_versions()  # the code this job runs, even if the checkout moves on meanwhile

    demo_dir = out / "demos"
    sft_tasks = _sft_tasks(config)
    stage = time.perf_counter()

    def collect_expert_episodes(directory: Path, episodes_per_task: int, first_init_state: int) -> None:
        """Expert episodes of every SFT task into ``directory`` (kept when ``reuse`` finds them all, made
        with these settings)."""
        demo_config = DemoConfig(tasks=sft_tasks, episodes_per_task=episodes_per_task, out_dir=directory,
                                 image_size=config.image_size, wrist_camera=False, antialias=config.antialias,
                                 split="train", first_init_state=first_init_state, noise_std=config.demo_noise_std,
                                 rotation_noise=config.demo_rotation_noise, videos_per_task=0)
        files = [directory / f"{t}_demo.hdf5" for t in sft_tasks]
        if config.reuse and all(path.is_file() for path in files):
            _check_reused_demos(files, demo_config)
            return
        collect_demos(demo_config, show_progress=show_progress)

    collect_expert_episodes(demo_dir, config.demos_per_task, 0)
    frames_dir = _localiser_frames_dir(config)
    if frames_dir is not None:
        collect_expert_episodes(frames_dir, config.localiser_episodes_per_task, LOCALISER_FIRST_INIT_STATE)
    seconds["demos"] = time.perf_counter() - stage

    stage = time.perf_counter()
    sft_config = dataclasses.replace(config.sft, demo_dir=demo_dir, out_dir=out / "sft", tasks=sft_tasks,
                                     demos_per_task=config.demos_per_task, eval_episodes_per_task=0,
                                     localiser_frames_dir=frames_dir,
                                     model=dataclasses.replace(config.sft.model, image_size=config.image_size,
                                                               antialias=config.antialias))
    sft_checkpoint = latest_valid_checkpoint(sft_config.out_dir, "step_") if config.reuse else None
    if sft_checkpoint is not None:
        _check_reused_sft(sft_checkpoint, sft_config)
    if sft_checkpoint is None:
        _set_aside_previous_run(sft_config.out_dir, SFT_CHECKPOINT_PREFIX)
    if sft_checkpoint is None or _steps_of(sft_checkpoint) < sft_config.steps:
        sft_checkpoint = Path(train_sft(sft_config, resume=sft_checkpoint is not None,
                                        show_progress=show_progress)["checkpoint"])
    seconds["sft"] = time.perf_counter() - stage

    stage = time.perf_counter()
    train_config = dataclasses.replace(config.train, init_checkpoint=sft_checkpoint, out_dir=out / "grpo",
                                       tasks=config.tasks)
    _set_aside_previous_run(out / "grpo", TRAINER_CHECKPOINT_PREFIX)
    pool = make_pool(train_config.rollout, train_config.suite, sft_checkpoint, train_config.temperature,
                     train_config.seed, reward=train_config.reward)
    try:
        trainer = Trainer(train_config, pool, eval_state_counter(train_config.suite), show_progress=show_progress)
        summary = trainer.run(deadline=_grpo_deadline(config, started))
    finally:
        pool.close()
    seconds["grpo (incl. evals)"] = time.perf_counter() - stage

    stage = time.perf_counter()
    videos = {}
    for label, checkpoint in (("before", sft_checkpoint), ("after", Path(summary["checkpoint"]))):
        videos[label] = record_videos(load_policy(str(checkpoint)), config.tasks, config.videos_per_task,
                                      out / "videos" / label)
    seconds["videos"] = time.perf_counter() - stage
    seconds["total"] = time.perf_counter() - started

    history = summary["eval_history"]
    before, after = history[0], history[-1]
    plot_success({f"before RL (SFT, it {before['iteration']})": before, f"after RL (it {after['iteration']})": after},
                 out / "success_before_after.png", title="held-out success before and after GRPO")
    training = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    plot_curve(history, out / "success_curve.png", training)
    metrics = {"before": before, "after": after, "gain_points": 100 * (after["mean_success"] - before["mean_success"]),
               "eval_history": history, "seconds": seconds, "sft_checkpoint": str(sft_checkpoint),
               "final_checkpoint": summary["checkpoint"], "videos": videos, "config": to_dict(config),
               "effective_configs": {"sft": to_dict(sft_config), "train": to_dict(train_config)},
               "grpo_stopped_for_deadline": summary["stopped_for_deadline"],
               **versions}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1, default=str) + "\n")
    return write_text_atomic(out / "report.md", render_report(metrics, train_config))


# What the job needs after GRPO's final evaluation: each video is an episode rendered and encoded, then the
# plots, the report, the Ray shutdown and the interpreter's start before the clock. On the slowest 2-core machine
# so far (sessions 36-37) four videos took 7-12 s, and 22 s when three of them were failures (which run to the
# step limit); the rest took 6-8 s.
SECONDS_PER_VIDEO, SECONDS_AFTER_VIDEOS = 7.0, 12.0


def _grpo_deadline(config: QuickstartConfig, started: float) -> float | None:
    """The ``time.perf_counter()`` by which GRPO must be done for the job to end within its budget."""
    if not config.time_limit_minutes:
        return None
    videos = 2 * len(config.tasks) * config.videos_per_task
    return started + 60 * config.time_limit_minutes - SECONDS_PER_VIDEO * videos - SECONDS_AFTER_VIDEOS


def _set_aside_previous_run(run_dir: Path, prefix: str) -> None:
    """A stage that runs afresh (GRPO always; the SFT when nothing is reused) moves a previous run's output
    (from an earlier quickstart in the same out_dir) to ``<name>_previous`` (replacing an older one there), so
    its history and checkpoints do not mix with this run's and the last run is not lost."""
    import shutil

    from vla_rl.core.checkpoint_dir import previous_run_files

    if not previous_run_files(run_dir, prefix):
        return
    kept = run_dir.with_name(run_dir.name + "_previous")
    shutil.rmtree(kept, ignore_errors=True)
    run_dir.rename(kept)
    print(f"a previous run in {run_dir} moved to {kept}")


def _sft_tasks(config: QuickstartConfig) -> tuple[str, ...]:
    """The tasks whose demos the SFT learns from: ``sft_tasks`` and the RL ``tasks`` (``tasks`` alone if empty)."""
    return tuple(dict.fromkeys(config.sft_tasks + config.tasks)) if config.sft_tasks else config.tasks


def _localiser_frames_dir(config: QuickstartConfig) -> Path | None:
    return Path(config.out_dir) / "localiser_frames" if config.localiser_episodes_per_task else None


def _set_by_the_quickstart(config: QuickstartConfig) -> list[str]:
    """The fields of the sft and train sections that the user changed and that the quickstart fills in from its
    own settings (they would be silently ignored); the value it would set anyway is not a change."""
    out, default_sft, default_train = Path(config.out_dir), _default_sft(), _default_train()
    frames_dir, sft_tasks = _localiser_frames_dir(config), _sft_tasks(config)
    filled_in = {  # (section, field): (the user's value, the default, what the quickstart sets)
        ("sft", "demo_dir"): (config.sft.demo_dir, default_sft.demo_dir, out / "demos"),
        ("sft", "out_dir"): (config.sft.out_dir, default_sft.out_dir, out / "sft"),
        ("sft", "tasks"): (config.sft.tasks, default_sft.tasks, sft_tasks),
        ("sft", "demos_per_task"): (config.sft.demos_per_task, default_sft.demos_per_task, config.demos_per_task),
        ("sft", "eval_episodes_per_task"): (config.sft.eval_episodes_per_task, default_sft.eval_episodes_per_task, 0),
        ("sft", "localiser_frames_dir"): (config.sft.localiser_frames_dir, default_sft.localiser_frames_dir,
                                          frames_dir),
        ("sft.model", "image_size"): (config.sft.model.image_size, default_sft.model.image_size, config.image_size),
        ("sft.model", "antialias"): (config.sft.model.antialias, default_sft.model.antialias, config.antialias),
        ("train", "init_checkpoint"): (config.train.init_checkpoint, default_train.init_checkpoint, None),
        ("train", "out_dir"): (config.train.out_dir, default_train.out_dir, out / "grpo"),
        ("train", "tasks"): (config.train.tasks, default_train.tasks, config.tasks),
    }
    return [f"{section}.{name}" for (section, name), (value, default, set_here) in filled_in.items()
            if value not in (default, set_here)]


# What a reused stage may differ in: how long it runs and how it logs (a longer SFT resumes the saved one).
DEMO_SETTINGS_NOT_COMPARED = ("tasks", "out_dir", "videos_per_task", "video_size", "num_workers")
SFT_SETTINGS_NOT_COMPARED = ("model", "steps", "time_limit_minutes", "checkpoint_every", "log_every",
                             "eval_episodes_per_task", "eval_num_envs", "eval_suite")
SFT_PATHS = ("demo_dir", "out_dir", "localiser_frames_dir", "init_checkpoint")  # compared as set or not


def _setting_differences(recorded: dict, wanted: dict, not_compared: Sequence[str], paths: Sequence[str] = ()
                         ) -> list[str]:
    def shown(key: str, value):
        if key in paths:
            return value not in (None, "", ".")
        return json.loads(json.dumps(value, default=str))  # tuples as lists, as a JSON or YAML record has them

    return sorted(f"{key} ({shown(key, recorded.get(key))!r} there, {shown(key, value)!r} now)"
                  for key, value in wanted.items()
                  if key not in not_compared and key in recorded and shown(key, recorded[key]) != shown(key, value))


def _refuse_reuse(what: str, where: Path, differing: list[str]) -> None:
    if differing:
        raise ValueError(f"{where} holds {what} made with other settings (they differ in {'; '.join(differing)}): "
                         f"choose another out_dir, or --set reuse=false to make them again there")


def _check_reused_demos(files: Sequence[Path], wanted) -> None:
    """Demo files found in out_dir are reused only if they were collected as ``wanted`` (a DemoConfig) says:
    otherwise a changed demos_per_task or demo noise would be silently ignored."""
    from vla_rl.core.demo_file import read_env_args

    for path in files:
        recorded = read_env_args(path).get("config", {})
        _refuse_reuse("demos", path, _setting_differences(recorded, to_dict(wanted), DEMO_SETTINGS_NOT_COMPARED))


def _check_reused_sft(checkpoint: Path, wanted: SFTConfig) -> None:
    """An SFT checkpoint found in out_dir is reused (or resumed) only if it is of the model ``sft.model`` asks
    for and was trained with the same settings (its training state records them): otherwise a changed config
    would be silently ignored."""
    from vla_rl.policy.checkpoint import model_config_differences, read_training_state

    differing = model_config_differences(checkpoint, wanted.model)
    if differing:
        raise ValueError(f"{checkpoint} holds an SFT of another model than sft.model (they differ in "
                         f"{', '.join(differing)}): choose another out_dir, or --set reuse=false to train the SFT "
                         f"again there")
    recorded = (read_training_state(checkpoint) or {}).get("sft_config", {})
    _refuse_reuse("an SFT", checkpoint, _setting_differences(recorded, to_dict(wanted), SFT_SETTINGS_NOT_COMPARED,
                                                             SFT_PATHS))


def _steps_of(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("step_"))


def plot_curve(history: list[dict], path: Path, training: list[dict] = (), window: int = 5) -> Path:
    """Held-out success (greedy, on the evaluation init states: markers) at every evaluation and, from
    ``training`` (the lines of ``metrics.jsonl``), each iteration's training success (sampled episodes
    on training init states: the rolling mean over ``window`` iterations), per task and their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, ax = plt.subplots(figsize=(7, 4))
    tasks = list(history[0]["per_task"])
    colours = {task: f"C{i}" for i, task in enumerate(tasks)}
    colours["mean"] = "k"
    iterations = [row["iteration"] for row in history]
    held_out = {task: [100 * row["per_task"][task]["success_rate"] for row in history] for task in tasks}
    held_out["mean"] = [100 * row["mean_success"] for row in history]
    for name, values in held_out.items():
        ax.plot(iterations, values, color=colours[name], marker="s" if name == "mean" else "o", markersize=7,
                linestyle="--", linewidth=1, label=f"{name}: held-out (greedy)")
    steps = [line["iteration"] for line in training]
    if len(steps) >= window:
        def rolling(values):
            return np.convolve(values, np.ones(window) / window, mode="valid")

        sampled = {task: [100 * line.get("train_success_by_task", {}).get(task, np.nan) for line in training]
                   for task in tasks}
        sampled["mean"] = [100 * line["train_success"] for line in training]
        for name, values in sampled.items():
            if not np.isnan(values).any():
                ax.plot(steps[window - 1:], rolling(values), color=colours[name], alpha=0.45, linewidth=1.5,
                        label=f"{name}: training rollouts (mean of {window} its)")
    ax.set_xlabel("GRPO iteration")
    ax.set_ylabel("success (%)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _budget_notes(metrics: dict, train_config: TrainConfig) -> list[str]:
    """Report lines saying which stage its time limit stopped early: on a slow machine the quickstart's
    budget buys fewer SFT steps and GRPO updates, and the gain was still climbing where it stopped."""
    notes = []
    sft_steps, sft_target = _steps_of(Path(metrics["sft_checkpoint"])), metrics["config"]["sft"]["steps"]
    if sft_steps < sft_target:
        notes.append(f"The SFT stopped on its time limit (`sft.time_limit_minutes`) at step {sft_steps} of "
                     f"{sft_target}.")
    iterations = metrics["after"]["iteration"]
    if iterations < train_config.iterations:
        key, minutes = (("time_limit_minutes", metrics["config"]["time_limit_minutes"])
                        if metrics.get("grpo_stopped_for_deadline") else
                        ("train.time_limit_minutes", train_config.time_limit_minutes))
        limit = "the job's budget" if key == "time_limit_minutes" else "its time limit"
        notes.append(f"GRPO stopped on {limit} (`{key}: {minutes:g}`) after {iterations} of "
                     f"{train_config.iterations} iterations.")
        if iterations < FEW_UPDATES:
            notes.append(f"On a machine where 20 minutes hold about 80 iterations the gain was still climbing there "
                         f"(docs/training.md, session 35): raising `{key}` (e.g. `--set {key}={minutes + 5:g}`) "
                         f"gives GRPO more updates, at the cost of a longer run.")
    return [" ".join(notes), ""] if notes else []


def render_report(metrics: dict, train_config: TrainConfig) -> str:
    before, after = metrics["before"], metrics["after"]
    lines = ["# Quickstart report", "",
             f"Few-demo SFT, then {after['iteration']} GRPO iterations (group size {train_config.group_size}, "
             f"{train_config.groups_per_iteration} groups per update, {train_config.rollout.num_workers} Ray rollout "
             f"workers). Success is greedy, on the fixed held-out evaluation init states (never trained on).", "",
             "| task | before RL | after RL | change |", "|---|---|---|---|"]
    for task, row in before["per_task"].items():
        late = after["per_task"][task]
        lines.append(f"| {task} | {row['successes']}/{row['episodes']} ({100 * row['success_rate']:.0f}%, "
                     f"95% CI {100 * row['wilson95_low']:.0f}-{100 * row['wilson95_high']:.0f}) | "
                     f"{late['successes']}/{late['episodes']} ({100 * late['success_rate']:.0f}%, "
                     f"95% CI {100 * late['wilson95_low']:.0f}-{100 * late['wilson95_high']:.0f}) | "
                     f"{100 * (late['success_rate'] - row['success_rate']):+.0f} pts |")
    lines += [f"| **mean** | {100 * before['mean_success']:.1f}% | {100 * after['mean_success']:.1f}% | "
              f"**{metrics['gain_points']:+.1f} pts** |", ""]
    if after.get("weights", "current") != "current":
        average = (f"After RL the policy is the moving average of its weights ({after['weights']} per iteration, "
                   f"`weights_ema`), as saved in the final checkpoint")
        current = after.get("current_weights")
        if current is None:  # the job's budget had no time left for that pass
            lines += [f"{average}; the weights of the last update alone were not evaluated: the job's budget left "
                      f"no time for that comparison.", ""]
        else:
            scores = ", ".join(f"{task} {row['successes']}/{row['episodes']}"
                               for task, row in current["per_task"].items())
            lines += [f"{average}; the weights of the last update alone scored {100 * current['mean_success']:.1f}% "
                      f"on the same states ({scores}).", ""]
    lines += _budget_notes(metrics, train_config)
    lines += ["![success before and after](success_before_after.png)", "",
              "![success during GRPO: held-out evaluations and training rollouts](success_curve.png)", "", "## Time", "",
              "| stage | minutes |", "|---|---|"]
    lines += [f"| {stage} | {s / 60:.1f} |" for stage, s in metrics["seconds"].items()]
    lines += ["", "## Videos", ""]
    for label, videos in metrics["videos"].items():
        for video in videos:
            lines.append(f"- {label}: [{video['task']} eval state {video['init_state_id']} "
                         f"({'success' if video['success'] else 'failure'})]({Path(video['file']).relative_to(Path(metrics['config']['out_dir']))})")
    sampling = "4x multisampling" if metrics["config"].get("antialias", True) else "no multisampling"
    lines += ["", "## Provenance", "",
              f"code {metrics.get('code_commit')}, MuJoCo {metrics.get('mujoco_version')}, "
              f"renderer {metrics.get('gl_renderer')} ({sampling}); SFT checkpoint `{metrics['sft_checkpoint']}`, "
              f"final checkpoint `{metrics['final_checkpoint']}`. Per-iteration training metrics: "
              f"`grpo/metrics.jsonl` and TensorBoard in `grpo/tensorboard`.", ""]
    return "\n".join(lines)
