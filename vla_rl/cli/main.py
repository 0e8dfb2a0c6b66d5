"""``vla-rl``: the command-line entry point (the composition root wiring concrete parts together).

Subcommands:
  envs list   the environment suites, their tasks, step limits and init-state counts
  demos       collect scripted-expert demonstrations as robomimic/LIBERO-layout HDF5 (+ MP4)
  convert-demos  turn downloaded LIBERO / robomimic HDF5 datasets into SFT input
  sft         supervised fine-tuning of the VLA on demonstrations, then held-out evaluation
  train       GRPO (or RLOO / PPO) post-training of a checkpoint with Ray rollout workers
  eval        success rate of a checkpoint on the fixed evaluation init states (JSON, PNG, MP4)
  quickstart  the main job: few-demo SFT, eval, GRPO, eval, and a report (what `make demo` runs)
  critic      the vision-language progress critic: collect labelled episodes, train, evaluate
  wm          the action-conditioned video world model: collect episodes, train, evaluate, imagine episodes
  deploy      run a checkpoint on an arm over ROS 2 through the safety layer (sim-bridge: a MuJoCo arm
              behind the same topics; bag-to-demos: recorded episodes -> SFT data)
  baseline    reference learners: `baseline rllib-ppo`, RLlib PPO on privileged simulator state
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from vla_rl.core.config import ConfigError, describe, load_config
from vla_rl.core.memory import keep_freed_memory


def _headless_rendering_default() -> None:
    # MuJoCo picks its GL backend at import; without a display, EGL (Mesa) is the one that works.
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")


def cmd_envs_list(args: argparse.Namespace) -> int:
    from sim_envs.suites import get_suite, suite_names

    names = args.suite or suite_names()
    suites, rows = [], []
    for name in names:
        suite = get_suite(name)
        try:
            suite_rows = suite.describe()
        except (ImportError, RuntimeError) as error:  # an optional simulator that is not installed
            suites.append({"suite": name, "summary": suite.summary, "error": str(error)})
            continue
        suites.append({"suite": name, "summary": suite.summary, "tasks": len(suite_rows),
                       "eval_init_states": sum(row["eval_init_states"] for row in suite_rows),
                       "control_hz": suite.control_hz})
        rows += [{"suite": name, **row, "control_hz": suite.control_hz} for row in suite_rows]
    if args.json:
        print(json.dumps({"suites": suites, "tasks": rows}, indent=1))
        return 0
    for info in suites:
        if "error" in info:
            print(f"suite {info['suite']!r}: unavailable ({info['error']})\n")
            continue
        print(f"suite {info['suite']!r}: {info['tasks']} tasks, {info['eval_init_states']} evaluation init states, "
              f"{info['control_hz']} Hz; {info['summary']}")
        suite_rows = [row for row in rows if row["suite"] == info["suite"]]
        width = max(len(row["task"]) for row in suite_rows)
        for row in suite_rows:
            print(f"  {row['task']:<{width}} {row['max_steps']:>4} steps {row['eval_init_states']:>3} eval states  "
                  f"\"{row['instruction']}\"")
        print()
    return 0


def cmd_demos(args: argparse.Namespace) -> int:
    from sim_envs.demos import DemoConfig, collect_demos

    if args.label:
        return 0 if label_demo_dir(args.label) else 1
    overrides = list(args.set or [])
    if args.task:
        overrides.append(f"tasks=[{', '.join(args.task)}]")
    for flag, key in (("episodes", "episodes_per_task"), ("out", "out_dir"), ("videos", "videos_per_task"),
                      ("noise", "noise_std"), ("image_size", "image_size"), ("workers", "num_workers")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(DemoConfig, args.config, overrides)
    if args.show_config:
        print(describe(DemoConfig, defaults=config))
        return 0
    summaries = collect_demos(config)
    print(f"\n{'task':<12} {'demos':>5} {'tries':>5} {'expert success':>15} {'mean len':>8}  file")
    for s in summaries:
        print(f"{s['task']:<12} {s['demos']:>5} {s['attempts']:>5} {s['expert_success_rate']:>14.0%} "
              f"{s['mean_length']:>8.1f}  {s['file']}")
    videos = [v for s in summaries for v in s["videos"]]
    if videos:
        print(f"\nvideos: {len(videos)} in {config.out_dir / 'videos'}; first frames: {config.out_dir / 'overview.png'}")
    print(f"summary: {config.out_dir / 'summary.json'}")
    short = [s["task"] for s in summaries if s["demos"] < config.episodes_per_task]
    if short:
        print(f"error: fewer demos than requested for {', '.join(short)}", file=sys.stderr)
        return 1
    return 0


def cmd_convert_demos(args: argparse.Namespace) -> int:
    from sim_envs.dataset_convert import conversion_plan, convert_hdf5
    from vla_rl.core.output_paths import check_output_dir

    options = {"instruction": args.instruction, "image_size": args.image_size, "flip": args.flip,
               "max_demos": args.max_demos, "mask": args.mask}
    check_output_dir(args.out, "--out")  # before any reading: a file there would fail only at the first write
    # every source's output name, before converting any: two of one name (across arguments too) would overwrite
    plan = conversion_plan(args.sources, args.out, args.task)
    summaries = [convert_hdf5(path, args.out, task=task, **options) for task, path in plan]
    width = max(len(s["task"]) for s in summaries)
    print(f"\n{'task':<{width}} {'demos':>5} {'samples':>7} {'layout':>9} {'image':>7}  instruction")
    for s in summaries:
        print(f"{s['task']:<{width}} {s['demos']:>5} {s['samples']:>7} {s['layout']:>9} {s['image_size'][0]:>4} px  "
              f"{s['instruction']}")
    print(f"\nSFT input in {args.out}: vla-rl sft --set demo_dir={args.out} ...")
    return 0


def _behaviour_counts(text: str, option: str = "episode counts") -> dict[str, int]:
    """``expert=30,random=10`` -> {"expert": 30, "random": 10}; refuses unknown or repeated behaviours
    and counts that make no episode at all (``option`` names the flag in the error)."""
    from sim_envs.progress_episodes import BEHAVIOURS

    counts = {}
    for part in text.split(","):
        name, _, count = part.partition("=")
        name = name.strip()
        if not count.strip().isdigit():
            raise ValueError(f"{option} look like expert=30,random=10 (or 'none'); got {text!r}")
        if name not in BEHAVIOURS:
            raise ValueError(f"{option}: unknown behaviour {name!r}; valid: {', '.join(BEHAVIOURS)}")
        if name in counts:
            raise ValueError(f"{option}: behaviour {name!r} is given twice in {text!r}")
        counts[name] = int(count)
    if not any(counts.values()):
        raise ValueError(f"{option} {text!r} make no episodes: give a count above 0, or 'none' to skip the split")
    return counts


def cmd_critic_collect(args: argparse.Namespace) -> int:
    """Labelled sim episodes (``vla-rl critic collect`` and ``vla-rl wm collect``)."""
    import functools

    from sim_envs.progress_episodes import collect_progress_episodes, require_antialiased_policy, write_episodes
    from sim_envs.tasks import TASKS
    from vla_rl.cli.factories import checkpoint_camera_setup, load_policy
    from vla_rl.core.output_paths import check_output_dir
    from vla_rl.policy.checkpoint import resolve_checkpoint

    tasks = args.tasks or list(TASKS)
    unknown, repeated = sorted(set(tasks) - set(TASKS)), sorted({t for t in tasks if tasks.count(t) > 1})
    if unknown or repeated:
        raise ValueError(f"--tasks: unknown {unknown}; valid: {', '.join(TASKS)}" if unknown else
                         f"--tasks: {repeated} given more than once")
    policies = {"train": args.policy, "eval": args.eval_policy or args.policy}
    # every check before the first split is collected: a bad --eval-episodes must not cost the training split
    plans = {}  # split -> (behaviour counts or None for 'none', policy factory)
    for split, option, counts in (("train", "--train-episodes", args.train_episodes),
                                  ("eval", "--eval-episodes", args.eval_episodes)):
        if counts.strip().lower() == "none":  # an empty value stays an error (_behaviour_counts)
            plans[split] = (None, None)
            continue
        behaviours = _behaviour_counts(counts, option)
        if behaviours.get("policy") and not policies[split]:
            raise ValueError(f"{option} {counts!r} has policy episodes: give the policy with --policy CHECKPOINT"
                             + (" (or --eval-policy)" if split == "eval" else ""))
        policy_factory = None
        if policies[split]:
            checkpoint = resolve_checkpoint(Path(policies[split]))
            # the workers refuse such a policy too, but only once they have started and built it
            require_antialiased_policy(checkpoint_camera_setup(checkpoint)[2], str(checkpoint))
            policy_factory = functools.partial(load_policy, str(checkpoint), args.policy_temperature, "cpu")
        plans[split] = (behaviours, policy_factory)
    check_output_dir(args.out, "--out")
    earlier = [args.out / f"{split}.hdf5" for split in plans if (args.out / f"{split}.hdf5").exists()]
    if earlier and not args.overwrite:  # a new train.hdf5 beside an old eval.hdf5 would mix two collections
        raise FileExistsError(f"--out {args.out} already holds episode files ({', '.join(p.name for p in earlier)}): "
                              "pass --overwrite to replace them, or choose another --out")
    for path in earlier:
        if plans[path.stem][0] is not None:
            path.unlink()
        else:  # its split is not collected: removing it would lose data nothing replaces
            print(f"keeping {path} from an earlier collection ({path.stem} episodes: 'none')")
    for split, (behaviours, policy_factory) in plans.items():
        if behaviours is None:
            print(f"{split}: none collected ({split} episodes: 'none')")
            continue
        hold = args.hold_after_success if split == "train" else 0  # held-out episodes end as RL episodes do
        episodes = collect_progress_episodes(tasks, behaviours, split, args.image_size,
                                             workers=args.workers, seed=args.seed, policy_factory=policy_factory,
                                             hold_after_success=hold, wrist_camera=args.wrist_camera)
        path = write_episodes(args.out / f"{split}.hdf5", episodes)
        frames = sum(len(e.progress) for e in episodes)
        success = {b: np.mean([e.succeeded for e in episodes if e.behaviour == b]) for b, n in behaviours.items() if n}
        print(f"{split}: {len(episodes)} episodes, {frames} frames -> {path}; success by behaviour: "
              + ", ".join(f"{b} {rate:.0%}" for b, rate in success.items()))
    return 0


def _print_critic_report(report: dict) -> None:
    bands = list(next(iter(report.values())).get("false_done", {}))
    print(f"\n{'episodes':<17} {'n':>4} {'success AUROC':>14} {'value Spearman':>15} {'mismatch lower':>15} "
          f"{'distractor lower':>17} {'done recall':>12}  false done by sim progress ({', '.join(bands)})")
    for name, row in report.items():
        false_done = "  ".join(_percent(band["rate"], 6) for band in row.get("false_done", {}).values())
        print(f"{name:<17} {row['episodes']:>4} {row['success_auroc']:>14.3f} {row['value_spearman']:>15.3f} "
              f"{row['mismatch_lower']:>15.1%} {row.get('distractor_lower', float('nan')):>17.1%} "
              f"{_percent(row.get('done_recall'), 12)}  {false_done}")


def _percent(value: float | None, width: int) -> str:
    return f"{value:>{width}.1%}" if value is not None else f"{'-':>{width}}"


def cmd_critic_train(args: argparse.Namespace) -> int:
    from sim_envs.progress_episodes import HELD_OUT, TRAINING, read_split_episodes
    from vla_rl.reward.critic_train import CriticTrainConfig, check_init_from, refuse_previous_critic_run, train_critic

    config = load_config(CriticTrainConfig, args.config, list(args.set or []))
    if args.show_config:
        print(describe(CriticTrainConfig, defaults=config))
        return 0
    train_files = [Path(config.data_dir) / "train.hdf5", *config.extra_train_files]
    missing = [str(path) for path in train_files if not path.is_file()]
    if missing:  # before reading hundreds of MB of the others
        raise FileNotFoundError(f"training episode files not found: {', '.join(missing)} "
                                "(make them with `vla-rl critic collect`)")
    check_init_from(config)  # a wrong starting critic, or an earlier run's out_dir, fails before the episodes are read
    refuse_previous_critic_run(config)
    # `wm imagine`'s files keep their episodes' split, "train": they are training files too
    train = [episode for path in train_files for episode in read_split_episodes(path, TRAINING, "training the critic")]
    held_out = Path(config.data_dir) / "eval.hdf5"
    evaluation = read_split_episodes(held_out, HELD_OUT, "the held-out evaluation after training") \
        if held_out.is_file() else []
    summary = train_critic(config, train, eval_episodes=evaluation)
    print(f"trained {summary['steps']} steps in {summary['seconds'] / 60:.1f} min on {summary['train_episodes']} "
          f"episodes ({summary['train_frames']} frames): loss {summary['loss']:.3f}")
    print(f"critic: {summary['checkpoint']}")
    if "eval" in summary:
        _print_critic_report(summary["eval"])
        print(f"\nheld-out evaluation: {Path(config.out_dir) / 'eval.json'}, {Path(config.out_dir) / 'value_curves.png'}")
    return 0


def cmd_critic_eval(args: argparse.Namespace) -> int:
    from sim_envs.progress_episodes import HELD_OUT, read_split_episodes
    from vla_rl.reward.critic import load_critic
    from vla_rl.core.output_paths import check_output_dir
    from vla_rl.reward.critic_train import evaluate_critic

    out = check_output_dir(Path(args.out) if args.out else Path(args.critic).parent / f"eval_{Path(args.data).stem}",
                           "--out")
    critic = load_critic(Path(args.critic))
    episodes = read_split_episodes(Path(args.data), HELD_OUT, "critic eval --data (the critic trained on the "
                                   "training episodes)")
    report = evaluate_critic(critic, episodes, out)
    _print_critic_report(report)
    print(f"\nresults: {out / 'eval.json'}, {out / 'value_curves.png'}")
    return 0


def label_demo_dir(demo_dir: Path) -> list[Path]:
    """Add localiser labels to the tabletop demo files in ``demo_dir`` that lack them; returns the files."""
    from sim_envs.demos import label_demo_file

    files = sorted(Path(demo_dir).glob("*_demo.hdf5"))
    if not files:
        print(f"error: no *_demo.hdf5 files in {demo_dir}", file=sys.stderr)
    for path in files:
        if label_demo_file(path):
            print(f"added localiser labels (obs/agentview_named_pixels, agentview_gripper_pixels) to {path}")
    return files


def cmd_sft(args: argparse.Namespace) -> int:
    from sim_envs.suites import get_suite
    from vla_rl.cli.evaluation import evaluate_checkpoint, print_success_table
    from vla_rl.policy.sft import SFTConfig, train_sft

    config = load_config(SFTConfig, args.config, list(args.set or []))
    if args.show_config:
        print(describe(SFTConfig, defaults=config))
        return 0
    get_suite(config.eval_suite)  # an unknown suite fails now, not once training is done
    if config.model.localiser_points and config.eval_suite == "tabletop":
        label_demo_dir(config.demo_dir)  # demos recorded before the labels existed
    summary = train_sft(config, resume=args.resume)
    print(f"trained {summary['steps']} steps in {summary['seconds'] / 60:.1f} min on {summary['episodes']} demos "
          f"({summary['samples']} samples): loss {summary['loss']:.3f}, token accuracy {summary['token_accuracy']:.2f}")
    print(f"checkpoint: {summary['checkpoint']}")
    if config.eval_episodes_per_task > 0:
        report = evaluate_checkpoint(Path(summary["checkpoint"]), summary["tasks"], config.eval_episodes_per_task,
                                     config.eval_num_envs, Path(config.out_dir), extra={"training": summary},
                                     suite=config.eval_suite)
        print_success_table(report)
        print(f"evaluation: {Path(config.out_dir) / 'eval.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vla_rl.cli.evaluation import evaluate_checkpoint, print_success_table
    from vla_rl.cli.factories import suite_tasks
    from vla_rl.policy.checkpoint import resolve_checkpoint

    for flag, value, least in (("--episodes-per-task", args.episodes_per_task, 1), ("--num-envs", args.num_envs, 1),
                               ("--videos", args.videos, 0)):
        if value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    # a checkpoint, or a run directory's newest valid one
    checkpoint, fallback = _saying_what_was_skipped(lambda: resolve_checkpoint(Path(args.checkpoint)))
    valid = suite_tasks(args.suite)
    trained = [task for task in _trained_tasks(checkpoint) if task in valid]  # a tabletop policy on LIBERO: all
    tasks = args.tasks or trained or valid
    unknown = sorted(set(tasks) - set(valid))
    if unknown:
        raise KeyError(f"unknown tasks {unknown} for suite {args.suite}; valid: {', '.join(valid)}")
    out_dir = Path(args.out) if args.out else checkpoint.parent / f"eval_{checkpoint.name}"
    report = evaluate_checkpoint(checkpoint, tasks, args.episodes_per_task, args.num_envs, out_dir,
                                 videos_per_task=args.videos, suite=args.suite, env_processes=args.workers,
                                 greedy_decoding=args.greedy_decoding, sample_temperature=args.sample_temperature,
                                 sample_seed=args.sample_seed, last_update_weights=args.last_update_weights,
                                 extra={"requested": args.checkpoint, "fallback": fallback})
    print_success_table(report)
    print(f"results: {out_dir / 'eval.json'}, {out_dir / 'success.png'}")
    return 0


def _saying_what_was_skipped(find: Callable[[], Path]) -> tuple[Path, list[str]]:
    """The checkpoint ``find`` picks and the reasons it skipped newer ones (corrupt, unreadable pointer), each
    also printed as one line on stderr instead of a UserWarning naming a source file and line; printed too when
    none was valid, as they explain that error."""
    import warnings

    with warnings.catch_warnings(record=True) as skipped:
        warnings.simplefilter("always")
        try:
            return find(), [str(warning.message) for warning in skipped]
        finally:
            for warning in skipped:
                print(warning.message, file=sys.stderr)


def _trained_tasks(checkpoint: Path) -> list[str]:
    from vla_rl.policy.checkpoint import read_checkpoint_json

    stats = checkpoint / "norm_stats.json"
    if not stats.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a policy checkpoint (no norm_stats.json)")
    return list(read_checkpoint_json(stats).get("trained_tasks", []))


def cmd_train(args: argparse.Namespace) -> int:
    from vla_rl.cli.factories import eval_state_counter, make_learner_factory, make_pool, suite_tasks
    from vla_rl.core.checkpoint_dir import checkpoint_to_resume, refuse_previous_run
    from vla_rl.train.trainer import CHECKPOINT_PREFIX, Trainer, TrainConfig
    from vla_rl.policy.checkpoint import resolve_checkpoint

    overrides = list(args.set or [])
    if args.ray_address:
        overrides.append(f"rollout.ray_address={args.ray_address}")
    config = load_config(TrainConfig, args.config, overrides)
    if args.show_config:
        print(describe(TrainConfig, defaults=config))
        return 0
    unknown = sorted(set(config.tasks) - set(suite_tasks(config.suite)))
    if unknown:  # before any worker starts
        raise KeyError(f"unknown tasks {unknown} for suite {config.suite}; valid: {', '.join(suite_tasks(config.suite))}")
    if args.resume:
        source, _ = _saying_what_was_skipped(lambda: checkpoint_to_resume(config.out_dir, CHECKPOINT_PREFIX))
        print(f"resuming from {source}")
    else:
        if Path(config.init_checkpoint) == Path(""):
            raise ValueError("init_checkpoint is required: the SFT policy RL starts from (a checkpoint or an SFT "
                             "run directory: --set init_checkpoint=runs/sft)")
        refuse_previous_run(config.out_dir, CHECKPOINT_PREFIX)  # before Ray and the workers start (as the Trainer)
        source = resolve_checkpoint(config.init_checkpoint)
        config = dataclasses.replace(config, init_checkpoint=source)
    pool = make_pool(config.rollout, config.suite, Path(source), config.temperature, config.seed,
                     config.env, config.reward)
    trainer = None
    try:
        print(f"rollout workers on nodes: {pool.node_ids}")
        trainer = Trainer(config, pool, eval_state_counter(config.suite), resume=source if args.resume else False,
                          learner_factory=make_learner_factory(config))
        for line in getattr(trainer.learner, "descriptions", []):
            print(f"learner {line}")
        first_iteration = trainer.iteration  # > 0 when resumed
        summary = trainer.run()
    except KeyboardInterrupt:  # what is kept, and how to go on
        from vla_rl.core.checkpoint_dir import latest_valid_checkpoint

        kept = latest_valid_checkpoint(config.out_dir, CHECKPOINT_PREFIX)
        print(f"last checkpoint: {kept}; continue with --resume" if kept else
              "no checkpoint was written yet: nothing to resume", file=sys.stderr)
        raise
    finally:
        if trainer is not None:
            trainer.close()
        pool.close()
    history = summary["eval_history"]
    done = summary["iterations"] - first_iteration  # this run's, not the resumed run's whole history
    resumed = f" (iterations {first_iteration + 1}-{summary['iterations']}, resumed)" if first_iteration else ""
    print(f"{done} iterations{resumed} in {summary['seconds'] / 60:.1f} min", end="")
    if history:  # empty when eval_episodes_per_task is 0
        print(f"; held-out success {history[0]['mean_success']:.1%} (iteration {history[0]['iteration']}) -> "
              f"{history[-1]['mean_success']:.1%} (iteration {history[-1]['iteration']})", end="")
        if "current_weights" in history[-1]:  # the evaluated policy is the weight average
            print(f" with the weight average; the current weights {history[-1]['current_weights']['mean_success']:.1%}",
                  end="")
        for decoding in history[-1].get("by_decoding", {}):
            first = history[0].get("by_decoding", {}).get(decoding)
            print(f"; {decoding} decoding {first['mean_success']:.1%} -> " if first else f"; {decoding} decoding ",
                  f"{history[-1]['by_decoding'][decoding]['mean_success']:.1%}", sep="", end="")
    print()
    print(f"checkpoint: {summary['checkpoint']}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from vla_rl.cli.quickstart import QuickstartConfig, run_quickstart

    config = load_config(QuickstartConfig, args.config, list(args.set or []))
    if args.show_config:
        print(describe(QuickstartConfig, defaults=config))
        return 0
    report = run_quickstart(config)
    print(report.read_text())
    return 0


def add_config_options(parser: argparse.ArgumentParser, config_help: str, resume_help: str | None = None) -> None:
    """``--config``, ``--set``, ``--show-config`` (and ``--resume``) of a command run from a typed config."""
    parser.add_argument("--config", type=Path, help=config_help)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field")
    if resume_help:
        parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--show-config", action="store_true",
                        help="print every config field with its value (after --config and --set) and doc, then exit")


def add_collect_arguments(parser: argparse.ArgumentParser, out: Path, tasks: list[str] | None, train: str,
                          evaluation: str, hold_after_success: int = 0) -> None:
    """The options of an episode-collection command (the critic's and the world model's)."""
    parser.add_argument("--out", type=Path, default=out, help="writes train.hdf5 and eval.hdf5")
    parser.add_argument("--tasks", nargs="+", default=tasks,
                        help=f"tabletop tasks (default: {' '.join(tasks) if tasks else 'all'})")
    parser.add_argument("--train-episodes", default=train, help="episodes per task and behaviour on training init "
                        "states (behaviours: expert, perturbed, random, sluggish, policy; 'none': skip the split)")
    parser.add_argument("--eval-episodes", default=evaluation,
                        help="episodes per task and behaviour on held-out evaluation init states "
                             "(sluggish: a behaviour the critic never trains on; 'none': skip the split)")
    parser.add_argument("--policy", help="policy checkpoint for the 'policy' behaviour (e.g. an SFT checkpoint)")
    parser.add_argument("--eval-policy", help="another checkpoint for the eval split's 'policy' episodes (default: "
                        "--policy), e.g. a GRPO checkpoint: a policy the critic never trained on")
    parser.add_argument("--policy-temperature", type=float, default=1.0, help="sampling temperature of the policy")
    parser.add_argument("--hold-after-success", type=int, default=hold_after_success,
                        help="training episodes go on for up to this many steps after their first success frame "
                             "(more success frames to learn 'done' from); held-out ones end at the first success, as "
                             "RL episodes do")
    parser.add_argument("--image-size", type=int, default=64, help="square size of the recorded camera frames")
    parser.add_argument("--no-wrist", dest="wrist_camera", action="store_false",
                        help="skip the wrist camera's frames (recorded by default: a critic with wrist_view or a "
                             "world model that predicts the wrist camera needs them)")
    parser.add_argument("--workers", type=int, default=-1, help="processes (-1 = one per core)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the behaviours' noise and the policy's sampling (the same seed repeats a "
                             "collection)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the episode files of an earlier collection in --out (those of the splits "
                             "collected; a split given as 'none' keeps its file); without it such an --out is refused")
    parser.set_defaults(func=cmd_critic_collect)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; an option's default after its help, unless it has none worth showing (None,
    an empty string, a flag without a value) or the help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default in (None, "", argparse.SUPPRESS) or action.nargs == 0 or "default" in text.lower():
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """Every (sub)command parser: defaults in the help, and subcommands named by their choices, so a missing
    one reads "required: {list}" (not the internal dest, e.g. "envs_command")."""

    def __init__(self, *args, formatter_class=_HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
        self._commands = None

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("title", "commands")
        self._commands = super().add_subparsers(**kwargs)  # its parsers are of this class too
        return self._commands

    def parse_known_args(self, args=None, namespace=None):
        if self._commands is not None and self._commands.metavar is None:  # every command is added by now
            self._commands.metavar = "{" + ",".join(self._commands.choices) + "}"
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vla-rl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    envs = sub.add_parser("envs", help="environment suites and tasks")
    envs_sub = envs.add_subparsers(dest="envs_command", required=True)
    envs_list = envs_sub.add_parser("list", help="list suites, tasks and init-state counts")
    envs_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    envs_list.add_argument("--suite", action="append", help="only this suite (repeatable; default: all)")
    envs_list.set_defaults(func=cmd_envs_list)

    demos = sub.add_parser("demos", help="collect scripted-expert demonstrations (HDF5 + MP4)")
    demos.add_argument("--config", type=Path, help="YAML DemoConfig (e.g. configs/demo.yaml)")
    demos.add_argument("--task", action="append", help="task to collect (repeatable; default: all)")
    demos.add_argument("--episodes", type=int, help="successful demos per task")
    demos.add_argument("--out", type=Path, help="output directory")
    demos.add_argument("--videos", type=int, help="MP4 videos per task")
    demos.add_argument("--noise", type=float, help="perturbed expert: action noise std")
    demos.add_argument("--image-size", type=int, help="observation image size")
    demos.add_argument("--workers", type=int, help="parallel processes (-1 = one per core)")
    demos.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field")
    demos.add_argument("--label", type=Path, metavar="DIR", help="instead of collecting: add localiser labels "
                       "(obs/agentview_named_pixels, agentview_gripper_pixels) to the tabletop demo files in DIR "
                       "recorded without them")
    demos.add_argument("--show-config", action="store_true",
                       help="print every config field with its value (after --config, --set and the options above) "
                            "and doc, then exit")
    demos.set_defaults(func=cmd_demos)

    convert = sub.add_parser("convert-demos", help="convert LIBERO / robomimic HDF5 datasets into SFT input")
    convert.add_argument("sources", nargs="+", type=Path, help="HDF5 files or directories of them (a LIBERO suite)")
    convert.add_argument("--out", type=Path, required=True, help="output directory of <task>_demo.hdf5 files")
    convert.add_argument("--task", help="task name of a single file (default: the LIBERO task, else the file name)")
    convert.add_argument("--instruction", help="language instruction (required for robomimic files)")
    convert.add_argument("--image-size", type=int, help="resize images to this square size (default: keep)")
    convert.add_argument("--flip", default="auto", choices=["auto", "libero", "robosuite", "none"],
                         help="image orientation fix (auto: by layout, matching our envs)")
    convert.add_argument("--max-demos", type=int, default=0, help="first N demos per file (0 = all)")
    convert.add_argument("--mask", help="only the demos of robomimic's mask/<name> (e.g. train)")
    convert.set_defaults(func=cmd_convert_demos)

    sft = sub.add_parser("sft", help="supervised fine-tuning on HDF5 demos, then held-out evaluation")
    add_config_options(sft, "YAML SFTConfig (e.g. configs/sft_tabletop.yaml)",
                       "continue from the latest checkpoint in out_dir")
    sft.set_defaults(func=cmd_sft)

    train = sub.add_parser("train", help="RL post-training (GRPO by default) with Ray rollout workers")
    add_config_options(train, "YAML TrainConfig (e.g. configs/tabletop_grpo.yaml)",
                       "continue from the newest valid checkpoint in out_dir")
    train.add_argument("--ray-address", help="join this Ray cluster ('auto' = the running one)")
    train.set_defaults(func=cmd_train)

    evaluation = sub.add_parser("eval", help="held-out success rate of a checkpoint (JSON + bar chart + videos)")
    evaluation.add_argument("--checkpoint", required=True,
                            help="policy checkpoint directory, or a run directory (an SFT or RL out_dir: its newest "
                                 "valid checkpoint; a corrupt newer one is skipped with a note)")
    evaluation.add_argument("--suite", default="tabletop", help="environment suite (default tabletop)")
    evaluation.add_argument("--tasks", nargs="+", help="tasks (default: those the checkpoint was trained on)")
    evaluation.add_argument("--episodes-per-task", type=int, default=50, help="evaluation init states per task")
    evaluation.add_argument("--num-envs", type=int, default=16, help="parallel env slots")
    evaluation.add_argument("--workers", type=int, default=-1,
                            help="env worker processes (-1 = one per core; 0 = step the envs in this process: no "
                                 "crash isolation, so a crashed env cannot be restarted)")
    evaluation.add_argument("--videos", type=int, default=1, help="MP4 videos per task")
    evaluation.add_argument("--greedy-decoding", choices=("argmax", "expected"),
                            help="override the checkpoint's greedy decoding: the most likely bin or the bin of the "
                                 "mean (VLAConfig.greedy_decoding)")
    evaluation.add_argument("--sample-temperature", type=float,
                            help="sample the actions at this temperature instead of decoding greedily (the policy "
                                 "as GRPO rollouts see it; compare with the greedy figure)")
    evaluation.add_argument("--sample-seed", type=int, default=0, help="seed of the sampling (--sample-temperature)")
    evaluation.add_argument("--last-update-weights", action="store_true",
                            help="a GRPO checkpoint written with train.weights_ema holds the weight average: evaluate "
                                 "its last update's weights instead (the comparison the trainer makes)")
    evaluation.add_argument("--out", help="output directory (default: eval_<checkpoint name> beside the checkpoint; "
                                          "for a run directory, <run>/eval_<its newest valid checkpoint>)")
    evaluation.set_defaults(func=cmd_eval)

    critic = sub.add_parser("critic", help="the vision-language progress critic (a reward source)")
    critic_sub = critic.add_subparsers(dest="critic_command", required=True)
    collect = critic_sub.add_parser("collect", help="tabletop episodes with simulator progress labels")
    add_collect_arguments(collect, Path("runs/critic_data"), None, "expert=30,perturbed=30,random=15",
                          "expert=10,perturbed=10,random=5,sluggish=10", hold_after_success=4)
    critic_train = critic_sub.add_parser("train", help="train the critic, then evaluate it on eval.hdf5")
    add_config_options(critic_train, "YAML CriticTrainConfig (e.g. configs/critic.yaml)")
    critic_train.set_defaults(func=cmd_critic_train)
    critic_eval = critic_sub.add_parser("eval", help="success AUROC, value Spearman, mismatch test, value plots")
    critic_eval.add_argument("--critic", required=True, help="critic checkpoint directory")
    critic_eval.add_argument("--data", default="runs/critic_data/eval.hdf5",
                             help="held-out labelled episodes (HDF5; training ones are refused)")
    critic_eval.add_argument("--out", help="output directory (default: next to the checkpoint)")
    critic_eval.set_defaults(func=cmd_critic_eval)

    quickstart = sub.add_parser("quickstart", help="few-demo SFT, eval, GRPO, eval, report (CPU, local Ray)")
    add_config_options(quickstart, "YAML QuickstartConfig (default: the embedded one)")
    quickstart.set_defaults(func=cmd_quickstart)

    from vla_rl.cli import baseline, deploy, world_model

    world_model.register(sub)
    deploy.register(sub)
    baseline.register(sub)
    return parser


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has exited (``vla-rl envs list | head``): poll flags it."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is not a real file
        return False


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; expected failures are one ``error:`` line (exit 2; an env that kept crashing, 1),
    Ctrl-C is ``interrupted`` (exit 130).

    SIGPIPE keeps Python's default (ignored): a write to a pipe whose reader is gone raises BrokenPipeError
    where it happens. Env worker pipes need that (``SimVecEnv`` turns it into ``EnvWorkerDied``; with SIGPIPE's
    default action the process died silently with exit 141 instead), and stdout gets a quiet exit below."""
    from vla_rl.core.protocols import EnvCrashed

    _headless_rendering_default()
    keep_freed_memory()  # torch next to MuJoCo renderers page-faulted every activation (vla_rl.core.memory)
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a pipe's reader that left shows here, not in the flush at exit
        return code
    except KeyboardInterrupt:  # Ctrl-C: the command's own cleanup has run (finally blocks); no traceback
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_reader_gone():  # some other pipe: a bug to see in full
            raise
        # `vla-rl envs list | head`: the reader has what it wanted. Stdout now points at /dev/null so that the
        # flush at exit does not fail again; 141 (128 + SIGPIPE) is what a shell reports for such a stop.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except EnvCrashed as error:  # an env that crashed again after the restarts the command allows
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError, IndexError, ValueError,
            ConnectionError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
