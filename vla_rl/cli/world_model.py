"""``vla-rl wm``: collect rollouts, train the video world model, evaluate its fidelity, benchmark.

- ``wm collect``: labelled sim episodes (frames, executed actions, proprio, progress, success) of
  experts, perturbed experts, random motion and a policy checkpoint, on training and held-out
  init states; the same files as ``vla-rl critic collect``.
- ``wm train --config configs/world_model.yaml``: trains ``world_model.model.VideoWorldModel``.
- ``wm eval --world-model CKPT --critic CKPT``: open-loop PSNR/SSIM at horizons 1/8/16 on held-out
  episodes, the critic's success verdict on imagined vs real outcomes, side-by-side videos.
- ``wm imagine --world-model CKPT --data TRAIN.hdf5 --out FILE``: imagined copies of training episodes
  with their simulator labels, for a critic that judges imagined frames (``extra_train_files``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

QUICKSTART_TASKS = ["Reach", "PressButton"]
DEVICE_HELP = "where the world model runs: auto (cuda when a GPU is visible, else cpu), cpu, cuda, cuda:N"


def trajectories_of(path: Path, cameras: tuple[str, ...] = ("agentview",), role: str | None = None,
                    use: str = ""):
    """The episodes of a collected file as ``world_model.data.Trajectory`` (needs actions and proprio),
    their frames the ``cameras`` stacked along the channels, in order, as the world model predicts them.
    ``role`` (``sim_envs.progress_episodes``' TRAINING or HELD_OUT): every episode's split must be the one that
    role needs ("train", or any other); the error names the file and ``use`` (what the episodes were for)."""
    from sim_envs.progress_episodes import read_episodes, read_split_episodes
    from world_model.data import trajectory_of_episode

    episodes = list(read_episodes(path)) if role is None else read_split_episodes(path, role, use)
    return [trajectory_of_episode(episode, cameras, str(path)) for episode in episodes]


def cmd_wm_train(args: argparse.Namespace) -> int:
    from sim_envs.progress_episodes import HELD_OUT, TRAINING
    from vla_rl.core.config import describe, load_config
    from vla_rl.core.device import resolve_device
    from vla_rl.core.checkpoint_dir import refuse_previous_run
    from world_model.train import (PREFIX, WMTrainConfig, resume_training_state, train_world_model,
                                   trained_model_config)

    config = load_config(WMTrainConfig, args.config, list(args.set or []))
    if args.show_config:
        print(describe(WMTrainConfig, defaults=config))
        return 0
    # what would stop the run is found before the episodes are read: a device this machine lacks, a resume with
    # nothing left to train (all its steps, or its time limit, spent), a fresh run into an earlier one's out_dir
    resolve_device(config.device)
    if args.resume:
        resume_training_state(config)
    else:  # train_world_model refuses it too, but only after the episodes were read
        refuse_previous_run(Path(config.out_dir), PREFIX)
    # the cameras of the model trained: with init_checkpoint or --resume the checkpoint's (a `model` of other
    # cameras or image size is refused before the episodes are read)
    cameras = tuple(trained_model_config(config, args.resume).cameras)
    train = trajectories_of(Path(config.data_dir) / "train.hdf5", cameras, TRAINING, "training the world model")
    held_out = Path(config.data_dir) / "eval.hdf5"
    evaluation = trajectories_of(held_out, cameras, HELD_OUT, "the held-out evaluation during training") \
        if held_out.is_file() else []
    from world_model.proprio import read_proprio_tracks

    proprio_tracks = [track for path in config.proprio_train_files for track in read_proprio_tracks(Path(path))]
    summary = train_world_model(config, train, evaluation, resume=args.resume, proprio_tracks=proprio_tracks)
    print(json.dumps(summary, indent=1))
    print(f"world model: {summary['checkpoint']}")
    return 0


def episodes_the_critic_trained_on(critic_checkpoint: Path, data: Path, indices: list[int]) -> dict:
    """Which of the episodes ``indices`` of ``data`` the critic trained on, as they are or as imagined copies
    (``wm imagine``'s, which keep the real first frame and every label): compared by content
    (``episode_fingerprints``) with the training files its checkpoint records (``critic_training_files``).
    ``{"episodes": how many, "files": those holding them, "unchecked_files": recorded files not found or not
    readable here (or a fine-tuned critic's starting critic that is not),
    "recorded": whether the critic records its training files at all}``."""
    from sim_envs.progress_episodes import episode_fingerprints
    from vla_rl.reward.critic_train import critic_training_files

    files = critic_training_files(critic_checkpoint)
    if files is None:
        return {"episodes": 0, "files": [], "unchecked_files": [], "recorded": False}
    fingerprints = episode_fingerprints(data)
    wanted = {fingerprints[i] for i in indices}
    seen, holding, unchecked = set(), [], []
    for path in files:
        try:
            found = wanted & set(episode_fingerprints(path))
        except (OSError, ValueError):  # missing, a directory, damaged: a warning must not end the evaluation
            unchecked.append(str(path))
            continue
        if found:
            seen |= found
            holding.append(str(path))
    return {"episodes": sum(fingerprints[i] in seen for i in indices), "files": holding,
            "unchecked_files": unchecked, "recorded": True}


def calibrated_threshold(model, critic, args: argparse.Namespace) -> tuple[float, dict]:
    """(threshold, calibration record) from ``--calibrate-on``'s training episodes (a seeded sample of
    ``--calibration-episodes``); printed as it is found."""
    import numpy as np

    from sim_envs.progress_episodes import TRAINING
    from world_model.evaluate import calibrate_done_threshold

    if critic is None:
        raise ValueError("--calibrate-on needs --critic: it calibrates the critic's done threshold")
    if Path(args.calibrate_on).resolve() == Path(args.data).resolve():
        raise ValueError("--calibrate-on must not be the held-out data: calibrate on training episodes")
    episodes = trajectories_of(Path(args.calibrate_on), tuple(model.config.cameras), TRAINING,
                               "--calibrate-on (the held-out episodes measure the calibrated verdicts)")
    chosen = np.random.default_rng(0).permutation(len(episodes))[:args.calibration_episodes]
    calibration = calibrate_done_threshold(model, critic, [episodes[i] for i in sorted(chosen)], args.sampling_steps or None)
    calibration.update(data=str(args.calibrate_on), sample_seed=0, episode_indices=sorted(int(i) for i in chosen))
    print(f"done threshold calibrated on {calibration['episodes']} imagined training episodes of {args.calibrate_on}: "
          f"{calibration['done_threshold']} (agreement there {calibration['agreement']:.1%}; at 0.5: "
          f"{calibration['agreement_by_threshold'][0.5]:.1%}; calling every episode the majority outcome: "
          f"{calibration['majority_outcome_agreement']:.1%})")
    if calibration["at_grid_edge"]:
        print(f"warning: {calibration['done_threshold']} is the edge of the thresholds tried (0.05-0.95): the "
              "critic's done probabilities on imagined frames barely separate successes from failures")
    # a critic that trained on the calibration episodes (or their imagined copies) judges them better than it
    # will judge the policy's new rollouts: the threshold is chosen on its best case
    seen = episodes_the_critic_trained_on(Path(args.critic), Path(args.calibrate_on), calibration["episode_indices"])
    calibration["critic_trained_on_calibration_episodes"] = seen
    if seen["episodes"]:
        print(f"warning: the critic trained on {seen['episodes']} of the {calibration['episodes']} calibration "
              f"episodes (as they are or as imagined copies, in {', '.join(seen['files'])}): the calibrated "
              "threshold and its agreement there are optimistic, since the critic has seen those episodes; "
              "calibrate on training episodes it did not train on (e.g. another `wm collect` run)")
    if seen["unchecked_files"]:
        print(f"note: the critic's training files {', '.join(seen['unchecked_files'])} are not found or not readable "
              "here: whether it trained on the calibration episodes is not checked against them")
    if not seen["recorded"]:
        print("note: the critic's checkpoint does not record its training files: whether it trained on the "
              "calibration episodes is not checked")
    return calibration["done_threshold"], calibration


def check_eval_arguments(args: argparse.Namespace) -> None:
    """Refuse bad ``wm eval`` options before anything is loaded or imagined (calibration alone takes minutes)."""
    from world_model.model import MAX_SAMPLING_STEPS

    # the same range as the env's (WorldModelVecEnv): at 0 every episode would be a success, at 1 hardly any
    if not 0 < args.done_threshold < 1:
        raise ValueError(f"--done-threshold must be in (0, 1), got {args.done_threshold}")
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    too_short = [h for h in args.horizons if h < 1]
    if too_short:  # horizon 0 is the real first frame itself, not a prediction
        raise ValueError(f"--horizons must be >= 1 (actions after the first frame), got {too_short}")
    if not 0 <= args.sampling_steps <= MAX_SAMPLING_STEPS:
        raise ValueError(f"--sampling-steps must be in [0, {MAX_SAMPLING_STEPS}] (0 = the model's), got "
                         f"{args.sampling_steps}")
    if args.calibration_episodes < 1 or args.videos < 0:
        raise ValueError(f"--calibration-episodes must be >= 1 and --videos >= 0, got {args.calibration_episodes} "
                         f"and {args.videos}")


def cmd_wm_eval(args: argparse.Namespace) -> int:
    from sim_envs.progress_episodes import HELD_OUT
    from sim_envs.versions import environment_versions
    from vla_rl.core.device import resolve_device
    from vla_rl.reward.critic import load_critic
    from world_model.evaluate import evaluate_world_model, print_report
    from world_model.train import load_world_model

    from vla_rl.core.checkpoint_dir import resolve_checkpoint

    check_eval_arguments(args)
    checkpoint = resolve_checkpoint(Path(args.world_model))
    model = load_world_model(checkpoint, resolve_device(args.device))
    critic = load_critic(Path(args.critic)) if args.critic else None
    out = Path(args.out) if args.out else checkpoint.parent / f"eval_{checkpoint.name}_{Path(args.data).stem}"
    held_out = trajectories_of(Path(args.data), tuple(model.config.cameras), HELD_OUT,
                               "wm eval --data (the world model and the critic trained on the training episodes)")
    extra = {"world_model": str(checkpoint), "critic": args.critic, "data": str(args.data),
             "versions": environment_versions()}
    done_threshold = args.done_threshold
    if args.calibrate_on:
        done_threshold, extra["calibration"] = calibrated_threshold(model, critic, args)
    report = evaluate_world_model(model, held_out, out, critic=critic, horizons=tuple(args.horizons),
                                  videos=args.videos, sampling_steps=args.sampling_steps,
                                  done_threshold=done_threshold, extra=extra, samples=args.samples)
    print_report(report)
    print(f"\nresults: {out / 'eval.json'}, videos in {out / 'videos'}")
    return 0


def cmd_wm_imagine(args: argparse.Namespace) -> int:
    from sim_envs.progress_episodes import read_episodes, write_episodes
    from vla_rl.core.checkpoint_dir import resolve_checkpoint
    from vla_rl.core.device import resolve_device
    from vla_rl.core.output_paths import check_output_file
    from world_model.imagined_episodes import imagine_labelled_episodes
    from world_model.train import load_world_model

    if Path(args.out).resolve() == Path(args.data).resolve():
        raise ValueError("--out must not be --data: the imagined episodes go to a new file")
    check_output_file(Path(args.out), "--out")  # before the imagining, not after it
    model = load_world_model(resolve_checkpoint(Path(args.world_model)), resolve_device(args.device))
    episodes = list(read_episodes(Path(args.data)))
    imagined = imagine_labelled_episodes(model, episodes, copies=args.copies, seed=args.seed,
                                         sampling_steps=args.sampling_steps or None)
    write_episodes(Path(args.out), imagined)
    successes = sum(e.succeeded for e in imagined)
    print(f"{len(imagined)} imagined episodes ({args.copies} per episode of {args.data}, {successes} labelled "
          f"successes) -> {args.out}")
    return 0


def register(sub) -> None:
    from vla_rl.cli.main import add_collect_arguments, add_config_options

    wm = sub.add_parser("wm", help="the learned action-conditioned video world model (an env for RL)")
    wm_sub = wm.add_subparsers(dest="wm_command", required=True)
    collect = wm_sub.add_parser("collect", help="sim rollouts with actions and proprio (world-model data)")
    add_collect_arguments(collect, Path("runs/wm_data"), QUICKSTART_TASKS,
                          "expert=60,perturbed=60,random=20,policy=60", "expert=10,perturbed=15,random=5,policy=20")

    train = wm_sub.add_parser("train", help="train the world model on collected episodes")
    add_config_options(train, "YAML WMTrainConfig (e.g. configs/world_model.yaml)",
                       "continue from the latest checkpoint in out_dir")
    train.set_defaults(func=cmd_wm_train)

    evaluation = wm_sub.add_parser("eval", help="open-loop PSNR/SSIM, outcome agreement, side-by-side videos")
    evaluation.add_argument("--world-model", required=True, help="world-model checkpoint directory")
    evaluation.add_argument("--critic", help="critic checkpoint: judge imagined outcomes (agreement with the sim)")
    evaluation.add_argument("--data", default="runs/wm_data/eval.hdf5", help="held-out episodes (HDF5)")
    evaluation.add_argument("--horizons", type=int, nargs="+", default=[1, 8, 16],
                            help="open-loop steps at which imagined frames are scored against the real ones")
    evaluation.add_argument("--sampling-steps", type=int, default=0, help="denoising steps (0 = the model's)")
    evaluation.add_argument("--done-threshold", type=float, default=0.5,
                            help="critic done probability = success, in (0, 1) as the env's")
    evaluation.add_argument("--calibrate-on", help="training episodes (HDF5): choose the done threshold at which the "
                            "critic's verdicts on their imagined rollouts agree best with the simulator")
    evaluation.add_argument("--calibration-episodes", type=int, default=100,
                            help="how many of --calibrate-on's episodes to imagine (a seeded sample)")
    evaluation.add_argument("--samples", type=int, default=1,
                            help="imagine the held-out episodes with this many sampling seeds and report the outcome "
                            "agreement of each (its spread is the world model's sampling noise)")
    evaluation.add_argument("--videos", type=int, default=6, help="side-by-side MP4s (real | imagined)")
    evaluation.add_argument("--out", help="output directory (default: next to the checkpoint)")
    evaluation.add_argument("--device", default="auto", help=DEVICE_HELP)
    evaluation.set_defaults(func=cmd_wm_eval)

    imagine = wm_sub.add_parser("imagine", help="imagined copies of training episodes with their simulator labels "
                                "(critic training data for judging imagined frames: extra_train_files)")
    imagine.add_argument("--world-model", required=True, help="world-model checkpoint directory")
    imagine.add_argument("--data", default="runs/wm_data/train.hdf5",
                         help="training episodes (HDF5; held-out ones are refused)")
    imagine.add_argument("--out", required=True, help="HDF5 file of the imagined episodes")
    imagine.add_argument("--copies", type=int, default=1, help="imagined versions of each episode (sampling seeds)")
    imagine.add_argument("--seed", type=int, default=0, help="sampling seed of the first copy")
    imagine.add_argument("--sampling-steps", type=int, default=0, help="denoising steps (0 = the model's)")
    imagine.add_argument("--device", default="auto", help=DEVICE_HELP)
    imagine.set_defaults(func=cmd_wm_imagine)
