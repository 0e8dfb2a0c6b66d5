"""RLlib PPO on the privileged simulator state: a sample-efficiency reference point for the VLA pipeline.

``run_ppo_baseline(config)`` trains RLlib's PPO (new API stack: RLModule + Learner, EnvRunners with
ConnectorV2) on ``vla_rl/<suite>/<Task>`` with ``observation=state`` (see
``vla_rl.distributed.rllib_envs``), resets drawn from the *training* init states, until
``timesteps`` env steps have been sampled. It then evaluates the final policy deterministically
(the mean of its Gaussian, clipped to [-1, 1]) once on each of the task's held-out evaluation init
states, and writes to ``out_dir``:

- ``baseline.json``: env steps, wall time, per-iteration curve (env steps, training-episode return
  mean and success rate as RLlib's EnvRunner metrics report them each iteration: means over recent
  training episodes, at most ``SMOOTHING_EPISODES``), held-out success with its Wilson 95% interval and the init-state ids, the seeds,
  the PPO settings, the state layout and the versions of the code and simulators;
- ``learning_curve.png``: training return and success against env steps, with the held-out
  success (and any intermediate held-out evaluations, ``eval_interval``) marked.

Success on the training curve comes from training init states; the reported success rate comes only
from the held-out evaluation states.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vla_rl.core.atomic_file import write_text_atomic
from vla_rl.core.config import option, to_dict

SMOOTHING_EPISODES = 100  # RLlib's default window for episode_return_mean; the success rate uses the same
CPUS_PER_ENV_RUNNER = 1  # Ray CPUs each EnvRunner actor reserves; the learner runs in the driver (num_learners=0)


@dataclass(frozen=True)
class PPOBaselineConfig:
    """``vla-rl baseline rllib-ppo``: RLlib PPO on privileged state, then held-out evaluation."""

    task: str = option("Reach", "task of the suite")
    suite: str = option("tabletop", "environment suite (see `vla-rl envs list`)")
    timesteps: int = option(100_000, "train until this many env steps have been sampled")
    out_dir: Path = option(Path("runs/baseline_ppo"), "writes baseline.json and learning_curve.png here")
    seed: int = option(0, "seed of RLlib (network init, sampling) and of the training env resets")
    num_env_runners: int = option(1, "EnvRunner actors sampling in parallel (0 = sample in the driver)")
    num_envs_per_env_runner: int = option(1, "envs stepped together by each EnvRunner")
    num_cpus: int = option(0, "CPUs of a local Ray started here (0 = all; ignored when Ray is already running)")
    reward: Literal["success", "progress"] = option(
        "success", "success: the suite's sparse reward (what GRPO gets); progress: plus the dense progress change")
    max_episode_steps: int = option(0, "episode step limit (0 = the task's own)")
    train_batch_size: int = option(4000, "env steps per PPO iteration")
    minibatch_size: int = option(256, "SGD minibatch size")
    num_epochs: int = option(10, "SGD passes over each iteration's batch")
    lr: float = option(3e-4, "Adam learning rate")
    gamma: float = option(0.99, "discount")
    lambda_: float = option(0.95, "GAE lambda")
    clip_param: float = option(0.2, "PPO ratio clip")
    entropy_coeff: float = option(0.0, "entropy bonus coefficient")
    hidden_sizes: tuple[int, ...] = option((64, 64), "MLP layers of the policy and value networks (shared trunk)")
    eval_episodes: int = option(0, "held-out evaluation init states, ids 0..N-1 (0 = all of the task's)")
    eval_interval: int = option(0, "also evaluate on the held-out states every N iterations (0 = only at the end)")
    progress_bar: bool = option(True, "tqdm progress bar over env steps")

    def __post_init__(self):
        positive = {"timesteps": self.timesteps, "train_batch_size": self.train_batch_size,
                    "minibatch_size": self.minibatch_size, "num_epochs": self.num_epochs,
                    "num_envs_per_env_runner": self.num_envs_per_env_runner}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("num_env_runners", "num_cpus", "max_episode_steps", "eval_episodes", "eval_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be positive layer widths, got {self.hidden_sizes}")


def _success_callback_class():
    """An RLlibCallback logging each training episode's final ``info["success"]`` (defined lazily: ray)."""
    from ray.rllib.callbacks.callbacks import RLlibCallback

    class SuccessMetrics(RLlibCallback):
        def on_episode_end(self, *, episode, metrics_logger=None, **kwargs) -> None:
            info = episode.get_infos(-1)
            if metrics_logger is not None and isinstance(info, dict) and "success" in info:
                metrics_logger.log_value("train_success_rate", float(bool(info["success"])), window=SMOOTHING_EPISODES)

    return SuccessMetrics


def build_ppo(config: PPOBaselineConfig, env_name: str):
    """The RLlib PPO algorithm of ``config`` on the registered env ``env_name``."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    env_config = {"observation": "state", "init_split": "train", "seed": config.seed, "reward": config.reward,
                  "max_episode_steps": config.max_episode_steps}
    ppo = (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(env=env_name, env_config=env_config)
        .env_runners(num_env_runners=config.num_env_runners, num_envs_per_env_runner=config.num_envs_per_env_runner,
                     num_cpus_per_env_runner=CPUS_PER_ENV_RUNNER)
        .learners(num_learners=0)
        .training(train_batch_size_per_learner=config.train_batch_size, minibatch_size=config.minibatch_size,
                  num_epochs=config.num_epochs, lr=config.lr, gamma=config.gamma, lambda_=config.lambda_,
                  clip_param=config.clip_param, entropy_coeff=config.entropy_coeff)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(config.hidden_sizes)))
        .callbacks(_success_callback_class())
        .reporting(metrics_num_episodes_for_smoothing=SMOOTHING_EPISODES)
        .debugging(seed=config.seed, log_level="ERROR")
    )
    return ppo.build_algo()


def check_env_runner_resources(config: PPOBaselineConfig, resources: dict) -> None:
    """Refuse EnvRunners that the Ray cluster (``resources``) cannot place: RLlib would wait for them forever.
    The learner runs in the driver process (``num_learners=0``) and reserves nothing."""
    from vla_rl.distributed.ray_pool import check_resources

    check_resources(resources, config.num_env_runners, CPUS_PER_ENV_RUNNER, 0.0,
                    f"RLlib EnvRunners ({CPUS_PER_ENV_RUNNER} CPU each)",
                    "num_env_runners (--num-env-runners; 0 samples in the driver) or start Ray with more CPUs "
                    "(num_cpus)")


def current_module(algo):
    """The algorithm's RLModule with the learner's latest weights (EnvRunners lag one update)."""
    if algo.env_runner_group is not None:
        algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    return algo.get_module()


def evaluate_held_out(module, suite: str, task: str, episodes: int, reward: str = "success",
                      max_episode_steps: int = 0) -> dict[str, Any]:
    """Deterministic rollouts of ``module`` once on each held-out init state ``0..episodes-1``."""
    import torch
    from ray.rllib.core.columns import Columns

    from vla_rl.distributed.rllib_envs import make_rllib_env
    from vla_rl.core.stats import wilson_interval

    env = make_rllib_env(suite, task, {"observation": "state", "init_split": "eval", "reward": reward,
                                       "max_episode_steps": max_episode_steps})
    dist_cls = module.get_inference_action_dist_cls()
    outcomes, returns, lengths = [], [], []
    try:
        for init_state_id in range(episodes):
            obs, _ = env.reset(options={"split": "eval", "init_state_id": init_state_id})
            done, total, steps, success = False, 0.0, 0, False
            while not done:
                with torch.no_grad():
                    out = module.forward_inference({Columns.OBS: torch.as_tensor(obs[None], dtype=torch.float32)})
                    action = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS]).to_deterministic().sample()
                action = np.clip(action[0].numpy(), -1.0, 1.0)
                obs, reward_t, terminated, truncated, info = env.step(action)
                total, steps, done = total + float(reward_t), steps + 1, terminated or truncated
                success = bool(info.get("success", False))
            outcomes.append(success)
            returns.append(total)
            lengths.append(steps)
    finally:
        env.close()
    successes = int(sum(outcomes))
    low, high = wilson_interval(successes, len(outcomes))
    return {"split": "eval", "deterministic": True, "episodes": len(outcomes), "successes": successes,
            "success_rate": successes / len(outcomes), "wilson95_low": low, "wilson95_high": high,
            "init_state_ids": list(range(episodes)), "per_episode_success": outcomes,
            "return_mean": float(np.mean(returns)), "mean_steps": float(np.mean(lengths))}


def _metric(results: dict, key: str) -> float | None:
    value = results.get("env_runners", {}).get(key)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def run_ppo_baseline(config: PPOBaselineConfig) -> dict[str, Any]:
    """Train, evaluate on the held-out init states, write ``baseline.json`` and ``learning_curve.png``."""
    import ray
    from tqdm import tqdm

    from sim_envs.suites import get_suite
    from sim_envs.versions import environment_versions
    from vla_rl.distributed.rllib_envs import SEED_FORMULA, check_suite_task, register_rllib_envs, rllib_env_name

    check_suite_task(config.suite, config.task)  # before Ray starts: a clear error listing the valid names
    suite = get_suite(config.suite)
    eval_episodes = config.eval_episodes or suite.num_eval_states(config.task)
    if eval_episodes > suite.num_eval_states(config.task):
        raise ValueError(f"eval_episodes={eval_episodes} but {config.task} has {suite.num_eval_states(config.task)} "
                         "evaluation init states")
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started_ray = not ray.is_initialized()
    if started_ray:
        # "local": a new Ray, never a running cluster that RAY_ADDRESS or /tmp/ray/ray_current_cluster names
        ray.init(address="local", num_cpus=config.num_cpus or None, include_dashboard=False, log_to_driver=False)
    try:
        check_env_runner_resources(config, ray.cluster_resources())
    except ValueError:
        if started_ray:
            ray.shutdown()
        raise
    register_rllib_envs([config.suite])
    env_name = rllib_env_name(config.suite, config.task)
    start = time.perf_counter()
    algo = build_ppo(config, env_name)
    curve, held_out_curve, env_steps = [], [], 0
    try:
        with tqdm(total=config.timesteps, desc=f"PPO {env_name}", unit="step", disable=not config.progress_bar) as bar:
            while env_steps < config.timesteps:
                results = algo.train()
                steps_now = int(results.get("num_env_steps_sampled_lifetime")
                                or results["env_runners"]["num_env_steps_sampled_lifetime"])
                bar.update(min(steps_now, config.timesteps) - min(env_steps, config.timesteps))
                env_steps = steps_now
                row = {"iteration": len(curve) + 1, "env_steps": env_steps,
                       "seconds": round(time.perf_counter() - start, 2),
                       "episode_return_mean": _metric(results, "episode_return_mean"),
                       "episode_len_mean": _metric(results, "episode_len_mean"),
                       "train_success_rate": _metric(results, "train_success_rate"),
                       "episodes_lifetime": int(results["env_runners"].get("num_episodes_lifetime", 0))}
                curve.append(row)
                bar.set_postfix(ret=row["episode_return_mean"], success=row["train_success_rate"])
                if config.eval_interval and row["iteration"] % config.eval_interval == 0 \
                        and env_steps < config.timesteps:
                    point = evaluate_held_out(current_module(algo), config.suite, config.task, eval_episodes,
                                              config.reward, config.max_episode_steps)
                    held_out_curve.append({"iteration": row["iteration"], "env_steps": env_steps,
                                           "success_rate": point["success_rate"]})
        train_seconds = time.perf_counter() - start
        held_out = evaluate_held_out(current_module(algo), config.suite, config.task, eval_episodes, config.reward,
                                     config.max_episode_steps)
        held_out_curve.append({"iteration": len(curve), "env_steps": env_steps, "success_rate": held_out["success_rate"]})
        state_env = _state_layout_names(config)
    finally:
        algo.stop()
        if started_ray:
            ray.shutdown()
    report = {
        "algorithm": "RLlib PPO (new API stack), privileged-state observation", "env": env_name,
        "suite": config.suite, "task": config.task, "env_steps": env_steps, "iterations": len(curve),
        "train_seconds": round(train_seconds, 2), "wall_seconds": round(time.perf_counter() - start, 2),
        "held_out": held_out, "held_out_curve": held_out_curve, "curve": curve,
        "curve_note": "training episodes on training init states; per iteration, RLlib's EnvRunner means over recent "
                      f"episodes (at most {SMOOTHING_EPISODES})",
        "seeds": {"rllib_seed": config.seed, "train_env_init_state_streams": SEED_FORMULA,
                  "train_init_states": "split=train, ids drawn from each sub-env's init-state stream",
                  "eval_init_states": f"split=eval, ids 0..{eval_episodes - 1}"},
        "init_states": suite.init_state_provenance, "observation": state_env, "config": to_dict(config),
        **_versions(environment_versions()),
    }
    write_text_atomic(out_dir / "baseline.json", json.dumps(report, indent=1) + "\n")
    plot_learning_curve(report, out_dir / "learning_curve.png")
    return report


def _state_layout_names(config: PPOBaselineConfig) -> dict[str, Any]:
    from vla_rl.distributed.rllib_envs import make_rllib_env

    env = make_rllib_env(config.suite, config.task, {"observation": "state"})
    try:
        names = env.get_wrapper_attr("state_layout").names
    finally:
        env.close()
    return {"kind": "privileged state (sim_envs.state_obs)", "dim": len(names), "entries": names}


def _versions(versions: dict[str, Any]) -> dict[str, Any]:
    from importlib import metadata

    return {**versions, "ray_version": metadata.version("ray"), "torch_version": metadata.version("torch")}


def plot_learning_curve(report: dict[str, Any], path: Path) -> Path:
    """Training return and success rate against env steps, the held-out success marked with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    steps = [row["env_steps"] for row in curve]
    figure, (ax_return, ax_success) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_return.plot(steps, [np.nan if r["episode_return_mean"] is None else r["episode_return_mean"] for r in curve],
                   marker=".")
    ax_return.set_xlabel("env steps")
    ax_return.set_ylabel("episode return (training)")
    ax_success.plot(steps, [np.nan if r["train_success_rate"] is None else 100 * r["train_success_rate"]
                            for r in curve], marker=".", label="training init states")
    held = report["held_out_curve"]
    ax_success.plot([p["env_steps"] for p in held], [100 * p["success_rate"] for p in held], "s--", color="C3",
                    label="held-out eval init states")
    final = report["held_out"]
    ax_success.errorbar([report["env_steps"]], [100 * final["success_rate"]], capsize=4, color="C3",
                        yerr=[[100 * (final["success_rate"] - final["wilson95_low"])],
                              [100 * (final["wilson95_high"] - final["success_rate"])]])
    ax_success.set_xlabel("env steps")
    ax_success.set_ylabel("success (%)")
    ax_success.set_ylim(-2, 102)
    ax_success.legend(fontsize=8)
    figure.suptitle(f"RLlib PPO on privileged state: {report['env']} (held-out {100 * final['success_rate']:.0f}%, "
                    f"{final['episodes']} episodes)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


__all__ = ["PPOBaselineConfig", "build_ppo", "check_env_runner_resources", "evaluate_held_out", "run_ppo_baseline", "plot_learning_curve",
           "current_module"]
