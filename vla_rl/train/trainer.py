"""The RL training driver: plain Python, one named and timed function per stage.

Each iteration: **rollout** (groups of ``group_size`` episodes sharing a training init state, spread
over the rollout workers; dynamic sampling keeps only groups whose rewards differ and samples again
until ``groups_per_iteration`` are kept or ``max_sampling_rounds`` is reached), **reward** (the
trajectory rewards of the configured source), **update** (the learner, ``vla_rl.train.learner``),
**sync** (new weights to every worker, with a version number; a batch collected by another
version is refused), then periodic **eval** (greedy, on the held-out evaluation init states) and
**checkpoint** (atomic, with optimiser, RNG and sampler state: ``resume`` continues the run exactly
where the checkpoint left it and the metric history continues without a gap or a duplicate; the rollout
workers' sampling is seeded per iteration and round, so the resumed run samples what the uninterrupted
one would have).

The driver gets its rollout pool (local or Ray) from the caller; it never imports an env or Ray.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from vla_rl.algos.advantages import informative_groups
from vla_rl.core.checkpoint_dir import HISTORY_FILE, checkpoint_to_resume, refuse_previous_run, truncate_history
from vla_rl.core.config import option, refuse_repeats, to_dict
from vla_rl.core.rng import global_rng_state, restore_global_rng_state
from vla_rl.core.types import TaskSpec, TrajectoryBatch
from vla_rl.policy.checkpoint import load_checkpoint, point_latest, resolve_checkpoint, save_checkpoint
from vla_rl.policy.policy import GREEDY_DECODINGS, VLAPolicy, resolve_device
from vla_rl.reward.sources import RewardConfig, make_reward_fn
from vla_rl.rollout.collector import concat_batches
from vla_rl.rollout.evaluate import EvalResult
from vla_rl.rollout.sampler import TaskSampler
from vla_rl.train.learner import AlgorithmConfig, LearnerConfig, PolicyLearner
from vla_rl.train.weight_average import WeightAverage, restore_training_weights

CHECKPOINT_PREFIX = "iter_"
METRICS_FILE = HISTORY_FILE


@dataclass(frozen=True)
class RolloutConfig:
    backend: Literal["ray", "local"] = option("ray", "ray: rollout workers are Ray actors; local: in this process")
    ray_address: str = option("", "join this Ray cluster ('auto' = the running one); empty = start a new local Ray "
                              "(never a running cluster)")
    num_workers: int = option(2, "rollout workers (Ray actors), each with its own vector env and policy copy")
    envs_per_worker: int = option(16, "env slots per worker")
    max_decisions: int = option(0, "training episodes stop after this many decisions, a failure if not yet "
                                   "successful (0 = the task's step limit); evaluation always runs to the task's "
                                   "limit. Failures run to the limit while successes end early, so a cut well above "
                                   "the successes' length buys more episodes per minute")
    env_processes: int = option(0, "processes per worker's vector env (0 = step in the worker itself)")
    torch_threads_per_worker: int = option(1, "torch threads of each worker's policy")
    cpus_per_worker: float = option(1.0, "Ray CPUs reserved per worker")
    gpus_per_worker: float = option(0.0, "Ray GPUs per worker (fractional is fine)")
    precision: Literal["fp32", "bf16"] = option("fp32", "bf16: decode under bf16 autocast (GPUs; log-probs then "
                                                         "carry bf16 rounding)")

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.envs_per_worker < 1:
            raise ValueError("num_workers and envs_per_worker must be >= 1")
        if self.max_decisions < 0:
            raise ValueError(f"rollout.max_decisions must be >= 0 (0 = the task's limit), got {self.max_decisions}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"rollout.precision must be fp32 or bf16, got {self.precision!r}")


# world_model.model.MAX_SAMPLING_STEPS, repeated here because the trainer does not import the world model (the
# composition root builds it): a bad value fails when the config is read, not in every rollout worker
WORLD_MODEL_MAX_SAMPLING_STEPS = 8


@dataclass(frozen=True)
class EnvConfig:
    kind: Literal["sim", "world_model"] = option(
        "sim", "where rollouts happen: sim (the suite's simulator) or world_model (imagination in a learned "
               "video model, reset from real init observations, rewarded by the critic); evaluation is always in sim")
    world_model_checkpoint: Path = option(Path(""), "world_model: the world-model checkpoint or run directory")
    critic_checkpoint: Path = option(Path(""), "world_model: the critic that decides success (done probability)")
    done_threshold: float = option(0.5, "world_model: critic done probability at which an episode succeeds")
    sampling_steps: int = option(0, "world_model: denoising steps per frame (0 = the model's own)")

    def __post_init__(self) -> None:
        if self.kind not in ("sim", "world_model"):
            raise ValueError(f"unknown env kind {self.kind!r}; valid: sim, world_model")
        if self.kind == "world_model" and (Path(self.world_model_checkpoint) == Path("")
                                           or Path(self.critic_checkpoint) == Path("")):
            raise ValueError("env.kind world_model needs env.world_model_checkpoint and env.critic_checkpoint")
        if not 0 < self.done_threshold < 1:
            raise ValueError(f"env.done_threshold must be in (0, 1), got {self.done_threshold}")
        if not 0 <= self.sampling_steps <= WORLD_MODEL_MAX_SAMPLING_STEPS:
            raise ValueError(f"env.sampling_steps must be in [0, {WORLD_MODEL_MAX_SAMPLING_STEPS}] (0 = the model's "
                             f"own), got {self.sampling_steps}")


@dataclass(frozen=True)
class TrainConfig:
    init_checkpoint: Path = option(Path(""), "the SFT policy checkpoint RL starts from (required)")
    suite: str = option("tabletop", "environment suite")
    tasks: tuple[str, ...] = option((), "tasks to train on; empty = the tasks the checkpoint was trained on")
    out_dir: Path = option(Path("runs/grpo"), "checkpoints, TensorBoard logs, metrics.jsonl")
    iterations: int = option(50, "training iterations (one update each)")
    time_limit_minutes: float = option(0.0, "stop after the iteration that crosses this wall time (0 = none)")
    group_size: int = option(8, "G: rollouts per (task, init state) group")
    groups_per_iteration: int = option(4, "kept groups per update (after dynamic sampling)")
    max_sampling_rounds: int = option(3, "rollout rounds per iteration at most, when filtering drops groups")
    keep_surplus_groups: bool = option(False, "keep every informative group the iteration's rounds sampled, not "
                                              "only the first groups_per_iteration: a second round samples as many "
                                              "groups as the first to fill a shortfall of one or two, and the rest "
                                              "of its episodes were simulated anyway")
    train_states: int = option(10_000, "training init states are drawn from ids [0, train_states)")
    temperature: float = option(1.0, "sampling temperature of rollouts (log-probs use the same)")
    env: EnvConfig = option(factory=EnvConfig, doc="the rollout environment: the simulator or a world model")
    reward: RewardConfig = option(factory=RewardConfig, doc="reward source: sim success, the critic or both")
    algorithm: AlgorithmConfig = option(factory=AlgorithmConfig, doc="estimator, loss and optimiser")
    rollout: RolloutConfig = option(factory=RolloutConfig, doc="rollout workers")
    eval_every: int = option(10, "iterations between held-out evaluations (0 = only at the end)")
    eval_episodes_per_task: int = option(10, "held-out eval init states per task (0 = no evaluation)")
    eval_decodings: tuple[str, ...] = option((), "greedy decodings (argmax, expected) to evaluate besides the "
                                                 "checkpoint's own, reported under by_decoding: GRPO trains the "
                                                 "sampled policy, whose likeliest bin and mean can move apart")
    checkpoint_every: int = option(10, "iterations between checkpoints (and one at the end; 0 = only at the end)")
    weights_ema: float = option(0.0, "decay per iteration of an exponential moving average of the policy's "
                                     "weights, which the evaluations, the checkpoints' model weights and so "
                                     "deployment use (the rollouts keep sampling the current weights; each "
                                     "evaluation also reports the current weights' success under "
                                     "current_weights, unless a run's deadline leaves no time for that "
                                     "pass). One update is mostly noise; the average keeps the drift "
                                     "the updates share. 0 = off (evaluate and save the current weights)")
    learner: LearnerConfig = option(factory=LearnerConfig, doc="the learner: device, data-parallel replicas, "
                                                                "precision, LoRA")
    seed: int = option(0, "seed of sampling, shuffling and exploration")

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.groups_per_iteration < 1 or self.max_sampling_rounds < 1:
            raise ValueError("iterations, groups_per_iteration and max_sampling_rounds must be >= 1")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError(f"eval_every and checkpoint_every must be >= 0 (0: only at the end), got "
                             f"{self.eval_every} and {self.checkpoint_every}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        unknown = sorted(set(self.eval_decodings) - set(GREEDY_DECODINGS))
        if unknown:
            raise ValueError(f"unknown eval_decodings {unknown}; choose from {', '.join(GREEDY_DECODINGS)}")
        refuse_repeats(self.tasks, "tasks")
        if not 0.0 <= self.weights_ema < 1.0:
            raise ValueError(f"weights_ema must be in [0, 1), got {self.weights_ema}")
        if self.weights_ema and self.learner.num_learners > 1:
            raise ValueError("weights_ema is not supported with learner.num_learners > 1 yet (the learner group "
                             "loads its replicas from the checkpoint, which then holds the average)")


@dataclass
class IterationBatch:
    batch: TrajectoryBatch | None   # kept (informative) groups only; None if every group was filtered
    group_ids: np.ndarray
    sampled_success: float          # success over every sampled episode (kept or not)
    sampled_groups: int
    kept_groups: int
    env_steps: int
    seconds_policy: float
    seconds_env: float
    rounds: int
    env_restarts: int = 0           # envs rebuilt after a crash (their waves collected again)
    informative_groups: int = 0     # groups with mixed rewards, before the cut to groups_per_iteration
    success_by_task: dict[str, float] = field(default_factory=dict)  # over every sampled episode, per task
    physics_divergences: int = 0    # sampled episodes the simulator cut because their physics blew up


@dataclass
class Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def time(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        return {stage: round(seconds, 3) for stage, seconds in self.seconds.items()}


# How much longer than a measured pass over the evaluation states a later pass over them may take: its policy
# can fail more often, and a failure runs to the step limit (session 37: a final pass took 1.10x the first).
PASS_TIME_MARGIN = 1.25


def deadline_reached(now: float, deadline: float | None, iteration_seconds: Sequence[float],
                     reserve_seconds: float) -> bool:
    """Whether one more iteration (as long as the slowest of ``iteration_seconds``, recent ones) and the
    work that must still follow or precede it (``reserve_seconds``: the final evaluation and checkpoint)
    would end past ``deadline``; never with no deadline."""
    return deadline is not None and now + max(iteration_seconds, default=0.0) + reserve_seconds > deadline


def eval_specs(tasks: Sequence[str], episodes_per_task: int, available: Callable[[str], int]) -> list[TaskSpec]:
    """The first ``episodes_per_task`` evaluation init states of each task; more than a task has is an
    error (silently evaluating fewer would report a figure on another number of episodes than asked)."""
    refuse_repeats(tasks, "the evaluated tasks")
    counts = {task: available(task) for task in tasks}  # LIBERO reads a file per call
    short = {task: count for task, count in counts.items() if count < episodes_per_task}
    if short:
        raise ValueError(f"{episodes_per_task} evaluation episodes per task asked for, but these tasks have fewer "
                         f"fixed evaluation init states: {short}")
    return [TaskSpec(task, i, "eval") for task in tasks for i in range(episodes_per_task)]


class Trainer:
    """``pool`` is a ``LocalRolloutPool`` or ``RayRolloutPool`` built for ``config`` (see the CLI);
    ``eval_states(task)`` says how many evaluation init states a task has; ``learner_factory(
    checkpoint, state, reference)`` builds a data-parallel learner group (``config.learner.num_learners > 1``,
    see ``vla_rl.distributed.learner_group``), else the learner is a ``PolicyLearner`` in this process."""

    def __init__(self, config: TrainConfig, pool, eval_states: Callable[[str], int], resume: bool | Path = False,
                 show_progress: bool = True, learner_factory: Callable | None = None):
        """``resume``: True continues from the run's newest valid checkpoint in ``out_dir``; a checkpoint path
        continues from that one (the command line has already picked it and said what it skipped)."""
        self.config = config
        self.pool = pool
        self.eval_states = eval_states
        self.show_progress = show_progress
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if config.learner.threads:
            torch.set_num_threads(config.learner.threads)
        source = Path(config.init_checkpoint)
        if resume:
            source = resume if isinstance(resume, Path) else checkpoint_to_resume(self.out_dir, CHECKPOINT_PREFIX)
            resume = True
        elif Path(config.init_checkpoint) == Path(""):  # the default, Path(""), is "."
            raise ValueError("init_checkpoint is required: the SFT policy RL starts from")
        else:
            refuse_previous_run(self.out_dir, CHECKPOINT_PREFIX)
        distributed = config.learner.num_learners > 1
        device = "cpu" if distributed else resolve_device(config.learner.device)
        model, action_tokenizer, state = load_checkpoint(source, device=device, with_training_state=resume)
        rl = state["rl"] if resume and state is not None and "rl" in state else None
        if resume and rl is None:  # e.g. an SFT checkpoint: resuming it as RL would start a new run over it
            raise ValueError(f"--resume: {source} is not a GRPO checkpoint (it holds no RL training state)")
        self.average = self._restore_training_weights(model, rl)
        extra = json.loads((source / "norm_stats.json").read_text())
        self.tasks = list(config.tasks) or list(extra.get("trained_tasks", []))
        if not self.tasks:
            raise ValueError("no tasks: set `tasks` (the checkpoint does not record the tasks it was trained on)")
        # the driver's policy: the learner itself when it runs here, else a copy for checkpoints
        self.policy = VLAPolicy(model, action_tokenizer, temperature=config.temperature)
        learner_state = _learner_state(rl) if rl is not None else None
        reference = self._reference_checkpoint(rl)
        if distributed:
            if learner_factory is None:
                raise ValueError("learner.num_learners > 1 needs a learner group (run through `vla-rl train`)")
            self.learner = learner_factory(source, learner_state, reference)
        else:
            self.learner = PolicyLearner(self.policy, config.algorithm, config.learner, config.seed,
                                         reference_checkpoint=reference, state=learner_state)
        try:  # a failure from here on must not leave a learner group's actors running
            self.sampler = TaskSampler(self.tasks, config.group_size, config.train_states, config.seed)
            self.reward_fn = make_reward_fn(config.reward)
            self.seconds_reward = 0.0
            self.iteration = 0
            self.eval_history: list[dict] = []
            if rl is not None:
                self.iteration = int(rl["iteration"])
                self.sampler.load_state_dict(rl["sampler"])
                restore_global_rng_state(rl)
                self.eval_history = rl["eval_history"]
                # the lines after the checkpoint are redone; its own is restored if the driver died before it
                truncate_history(self.out_dir / METRICS_FILE, "iteration", self.iteration, rl.get("metrics"))
        except BaseException:
            self.close()
            raise
        self.resumed_from = str(source) if resume else None

    # ---- stages ----------------------------------------------------------------------------------
    def rollout(self) -> IterationBatch:
        """Sample groups until ``groups_per_iteration`` informative ones are kept (dynamic sampling)."""
        config = self.config
        self.seconds_reward = 0.0
        workers = len(self.pool.node_ids)
        groups_per_worker = max(1, self.pool.slots_per_worker // config.group_size)
        kept: list[TrajectoryBatch] = []
        kept_ids: list[np.ndarray] = []
        sampled = successes = sampled_groups = env_steps = rounds = env_restarts = divergences = 0
        outcomes: dict[str, list[bool]] = {}
        seconds_policy = seconds_env = 0.0
        next_group = 0
        while rounds < config.max_sampling_rounds and sum(len(b.success) for b in kept) < \
                config.groups_per_iteration * config.group_size:
            rounds += 1
            groups = self.sampler.next_groups(workers * groups_per_worker)
            shares = [[spec for group in groups[w * groups_per_worker:(w + 1) * groups_per_worker] for spec in group]
                      for w in range(workers)]
            # seeded by iteration and round (and each worker's own seed), not by what the workers sampled
            # before: a resumed run samples exactly what the uninterrupted one would have
            sampling_seed = self.iteration * config.max_sampling_rounds + rounds - 1
            for batch, stats in self.pool.collect(shares, sampling_seed=sampling_seed):
                if batch.policy_version != self.iteration:
                    raise RuntimeError(f"stale rollout: collected by policy version {batch.policy_version}, "
                                       f"the learner is at {self.iteration}")
                env_steps += stats.env_steps
                env_restarts += stats.env_restarts
                divergences += stats.physics_divergences
                seconds_policy += stats.seconds_policy
                seconds_env += stats.seconds_env
                batch = self.reward(batch)  # before dynamic sampling, which filters on the returns
                returns = batch.rewards.sum(axis=1)
                group_ids = next_group + np.arange(len(returns)) // config.group_size
                next_group = int(group_ids.max()) + 1
                sampled += len(returns)
                successes += int(batch.success.sum())
                for spec, success in zip(batch.task_specs, batch.success):
                    outcomes.setdefault(spec.task, []).append(bool(success))
                sampled_groups += len(np.unique(group_ids))
                keep = informative_groups(returns, group_ids) if config.algorithm.dynamic_sampling else \
                    np.ones(len(returns), bool)
                if keep.any():
                    index = np.nonzero(keep)[0]
                    kept.append(_select(batch, index))
                    kept_ids.append(group_ids[index])
        batch = None
        group_ids = np.zeros(0, int)
        informative = sum(len(np.unique(ids)) for ids in kept_ids)
        if kept:
            batch = concat_batches(kept)
            group_ids = np.concatenate(kept_ids)
            limit = config.groups_per_iteration * config.group_size
            if len(group_ids) > limit and not config.keep_surplus_groups:
                batch, group_ids = _select(batch, np.arange(limit)), group_ids[:limit]
        return IterationBatch(batch, group_ids, successes / max(sampled, 1), sampled_groups,
                              len(np.unique(group_ids)), env_steps, seconds_policy, seconds_env, rounds,
                              env_restarts, informative,
                              {task: float(np.mean(runs)) for task, runs in outcomes.items()}, divergences)

    def reward(self, batch: TrajectoryBatch) -> TrajectoryBatch:
        """The configured reward source's rewards (``vla_rl.reward.sources``); timed as "reward"."""
        if self.reward_fn is None:  # sim success: the env already put 1.0 on the success step
            return batch
        started = time.perf_counter()
        batch = dataclasses.replace(batch, rewards=self.reward_fn(batch))
        self.seconds_reward += time.perf_counter() - started
        return batch

    def learn(self, rollout: IterationBatch) -> dict[str, float]:
        if rollout.batch is None:
            return {}
        return self.learner.update(rollout.batch, rollout.group_ids)

    def _reference_checkpoint(self, rl: dict | None) -> Path:
        """The SFT checkpoint this run started from, resolved to a checkpoint directory: the frozen
        reference of the KL penalty. A resumed run keeps the one it started with (its checkpoints
        record it), even if ``init_checkpoint`` names a run directory that has grown since."""
        started = (rl or {}).get("train_config", {}).get("init_checkpoint")
        reference = Path(started or self.config.init_checkpoint)
        if self.config.algorithm.kl_coef > 0:  # only the KL penalty reads it
            reference = resolve_checkpoint(reference)
            self.config = dataclasses.replace(self.config, init_checkpoint=reference)  # recorded in checkpoints
        return reference

    def _restore_training_weights(self, model, rl: dict | None) -> WeightAverage | None:
        """A checkpoint written with ``weights_ema`` holds the average as its model weights and the
        entries where training had moved away from it in its RL state: put those back (LoRA adapters are
        un-merged from them) and, if this run averages too, continue from the saved average."""
        saved = (rl or {}).get("weights_average")
        if saved is None:
            return None
        if self.config.learner.num_learners > 1:
            raise ValueError("this checkpoint holds a weight average (weights_ema): resume it with one learner")
        average = restore_training_weights(model, saved)
        if not self.config.weights_ema:
            return None
        return WeightAverage(average, self.config.weights_ema, iteration=int(saved["iteration"]))

    def sync(self) -> None:
        """The current weights to every worker; folded into the weight average (``weights_ema``)."""
        weights = self.learner.weights()
        self.pool.set_weights(weights, self.iteration)
        self.current_weights = weights
        if self.config.weights_ema:
            if self.average is None:  # the run's first weights: the average starts here
                self.average = WeightAverage(weights, self.config.weights_ema, iteration=self.iteration)
            self.average.update(weights, self.iteration)

    def _averaging(self) -> bool:
        """Whether the average differs from the current weights yet (not before the first update)."""
        return self.average is not None and self.iteration > 0

    def evaluate(self, comparison_deadline: float | None = None) -> dict:
        """Greedy held-out success, one task at a time so that a progress bar can follow it (each
        task's episodes still fill every worker's env slots, refilled as episodes end).

        With the weight average, the current weights are evaluated beside it on the same states: a
        comparison, not the result, so with a ``comparison_deadline`` (a ``time.perf_counter()`` value)
        it runs only if a pass ``PASS_TIME_MARGIN`` times as long as the average's still ends by then
        (``current_weights_skipped`` says so otherwise)."""
        from tqdm import tqdm

        specs = eval_specs(self.tasks, self.config.eval_episodes_per_task, self.eval_states)
        pass_seconds: list[float] = []

        def run(decoding: str | None) -> EvalResult:
            started = time.perf_counter()
            outcomes = []
            label = f"eval @ {self.iteration}" + (f" ({decoding})" if decoding else "")
            with tqdm(total=len(specs), desc=label, unit="ep", leave=False, disable=not self.show_progress) as bar:
                for task in dict.fromkeys(spec.task for spec in specs):
                    task_specs = [spec for spec in specs if spec.task == task]
                    done = self.pool.evaluate(task_specs, decoding) if decoding else self.pool.evaluate(task_specs)
                    outcomes += done
                    bar.update(len(done))
                    bar.set_postfix({task: f"{np.mean([o.success for o in done]):.2f}"})
            pass_seconds.append(time.perf_counter() - started)
            return EvalResult(outcomes)

        averaging = self._averaging()
        if averaging:
            self.pool.set_weights(self.average.weights, self.iteration)
        try:
            result = run(None)
            row = {"iteration": self.iteration, "mean_success": result.mean_success, "per_task": result.per_task(),
                   "weights": f"ema {self.config.weights_ema}" if averaging else "current"}
            if self.config.eval_decodings:
                row["by_decoding"] = {}
                for decoding in self.config.eval_decodings:
                    other = run(decoding)
                    row["by_decoding"][decoding] = {"mean_success": other.mean_success, "per_task": other.per_task()}
        finally:
            if averaging:  # the rollouts go on with the current weights
                self.pool.set_weights(self.current_weights, self.iteration)
        if averaging:  # what the average bought, on the same states
            needed = PASS_TIME_MARGIN * pass_seconds[0]
            if comparison_deadline is None or time.perf_counter() + needed <= comparison_deadline:
                current = run(None)
                row["current_weights"] = {"mean_success": current.mean_success, "per_task": current.per_task()}
            else:
                row["current_weights_skipped"] = "deadline"
        row["seconds_per_pass"] = round(max(pass_seconds), 3)
        self.eval_history.append(row)
        return row

    def _evaluation_passes(self) -> int:
        """Passes over the evaluation states that an evaluation must make: greedy and each extra decoding
        (the current weights' pass beside their average is optional, see ``evaluate``)."""
        return 1 + len(self.config.eval_decodings)

    def _final_evaluation_seconds(self) -> float:
        """How long an evaluation after an update may take: its required passes, each ``PASS_TIME_MARGIN``
        times the slowest pass so far (0 before any)."""
        per_pass = max((row.get("seconds_per_pass", 0.0) for row in self.eval_history), default=0.0)
        return PASS_TIME_MARGIN * per_pass * self._evaluation_passes()

    def checkpoint(self, metrics: dict | None = None) -> Path:
        """Save this iteration; ``metrics``, its line of the metric history (written after the checkpoint), is
        kept in it so that a resume from it can write that line if the driver died before it did."""
        name = f"{CHECKPOINT_PREFIX}{self.iteration:06d}"
        rl_state = {"iteration": self.iteration, "learner": self.learner.state_dict(),
                    "sampler": self.sampler.state_dict(), **global_rng_state(),
                    "eval_history": self.eval_history, "train_config": to_dict(self.config), "metrics": metrics}
        weights = self.current_weights  # this iteration's, merged (and gathered) once by sync()
        if self.average is not None:  # the model weights are the average, the one to deploy
            rl_state["weights_average"] = {"iteration": self.average.iteration, "decay": self.average.decay,
                                           "training_weights": self.average.differing(weights)}
            weights = self.average.weights
        path = save_checkpoint(self.out_dir / name, self.policy.model, self.policy.action_tokenizer,
                               training_state={"rl": rl_state}, extra={"trained_tasks": self.tasks},
                               weights=weights)
        point_latest(self.out_dir, name, self.iteration)
        return path

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self, on_iteration: Callable[[dict], None] | None = None, deadline: float | None = None) -> dict:
        """Train to ``iterations`` or the time limit. ``deadline`` (a ``time.perf_counter()`` value) is when
        the run must be over, its final evaluation and checkpoint included: it stops after the iteration
        past which one more iteration (as long as the slowest of the last five), this iteration's periodic
        evaluation, the final one (its required passes, each ``PASS_TIME_MARGIN`` times the slowest pass so
        far, also of a resumed run's history) and the checkpoints would not fit; the current weights'
        comparison pass beside their average runs only in time left over. The quickstart fits its whole job
        into a budget this way."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        config = self.config
        # a resumed run redoes the iterations after its checkpoint: TensorBoard hides what the interrupted run
        # logged for them, which would otherwise show twice
        writer = SummaryWriter(str(self.out_dir / "tensorboard"),
                               purge_step=self.iteration + 1 if self.iteration else None)
        started = time.perf_counter()
        self.sync()
        evaluating = config.eval_episodes_per_task > 0
        if evaluating and not self.eval_history:
            self._log_eval(self.evaluate(), writer)
        recent_iterations, checkpoint_seconds = collections.deque(maxlen=5), 0.0
        bar = tqdm(total=config.iterations, initial=self.iteration, desc="grpo", unit="it",
                   disable=not self.show_progress)
        checkpoint, out_of_time, past_deadline = None, False, False
        while self.iteration < config.iterations:
            timer = Timer()
            actor_restarts_before = getattr(self.pool, "restarts", 0)
            with timer.time("rollout"):
                rollout = self.rollout()
            # rewards are scored inside the rollout stage (dynamic sampling needs them); report apart
            timer.seconds["reward"] = self.seconds_reward
            timer.seconds["rollout"] -= self.seconds_reward
            with timer.time("update"):
                stats = self.learn(rollout)
            self.iteration += 1
            with timer.time("sync"):
                self.sync()
            metrics = self._metrics(rollout, stats, timer)
            # rollout actors replaced after dying (their shares collected again), also those the weight
            # broadcast found dead between calls (while the learner updated)
            metrics["actor_restarts"] = getattr(self.pool, "restarts", 0) - actor_restarts_before
            now = time.perf_counter()
            recent_iterations.append(sum(timer.seconds.values()))
            out_of_time = bool(config.time_limit_minutes) and now - started > 60 * config.time_limit_minutes
            periodic_eval = evaluating and bool(config.eval_every) and self.iteration % config.eval_every == 0
            evaluation = self._final_evaluation_seconds() if evaluating else 0.0
            past_deadline = deadline_reached(now, deadline, recent_iterations,
                                             evaluation * (1 + periodic_eval) + 2 * checkpoint_seconds)
            last = self.iteration == config.iterations or out_of_time or past_deadline
            # the last iteration is evaluated, then checkpointed (with that evaluation in its history),
            # whether the iteration count, the time limit or the deadline ends the run
            if periodic_eval or evaluating and last:
                # the optional comparison pass may use only time that the rest of the run does not need
                comparison_deadline = None if deadline is None else deadline - 2 * checkpoint_seconds - (
                    0.0 if last else max(recent_iterations) + evaluation)
                with timer.time("eval"):
                    metrics["eval"] = self._log_eval(self.evaluate(comparison_deadline), writer)
            if last or config.checkpoint_every and self.iteration % config.checkpoint_every == 0:
                with timer.time("checkpoint"):
                    # the line as written below, less the checkpoint's own seconds (not known yet)
                    checkpoint = self.checkpoint({**metrics, "seconds": timer.rounded(),
                                                  "restored_from_checkpoint": True})
                checkpoint_seconds = max(checkpoint_seconds, timer.seconds["checkpoint"])
            metrics["seconds"] = timer.rounded()
            self._write_metrics(metrics, writer)
            bar.update(1)
            bar.set_postfix(success=f"{metrics['train_success']:.2f}", kept=f"{metrics['kept_groups']}",
                            kl=f"{metrics.get('approx_kl', 0):.4f}", sps=f"{metrics['env_steps_per_s']:.0f}")
            if on_iteration is not None:
                on_iteration(metrics)
            if last:
                break
        bar.close()
        if checkpoint is None:  # no iteration ran: a resumed run that had already reached `iterations`
            if evaluating and (not self.eval_history or self.eval_history[-1]["iteration"] != self.iteration):
                self._log_eval(self.evaluate(), writer)
            checkpoint = self.checkpoint()
        writer.close()
        stopped_for_deadline = past_deadline and not out_of_time and self.iteration < config.iterations
        return {"iterations": self.iteration, "checkpoint": str(checkpoint), "eval_history": self.eval_history,
                "seconds": time.perf_counter() - started, "stopped_for_deadline": bool(stopped_for_deadline)}

    def close(self) -> None:
        """Release the learner group's actors (a learner in this process has nothing to release)."""
        close = getattr(self.learner, "close", None)
        if close is not None:
            close()

    # ---- logging --------------------------------------------------------------------------------------
    def _metrics(self, rollout: IterationBatch, stats: dict[str, float], timer: Timer) -> dict:
        rollout_seconds = timer.seconds.get("rollout", 0.0)
        metrics = {"iteration": self.iteration, "train_success": rollout.sampled_success,
                   "train_success_by_task": rollout.success_by_task,
                   "sampled_groups": rollout.sampled_groups, "kept_groups": rollout.kept_groups,
                   "informative_groups": rollout.informative_groups,
                   "filtered_fraction": 1.0 - rollout.informative_groups / max(rollout.sampled_groups, 1),
                   "sampling_rounds": rollout.rounds, "env_steps": rollout.env_steps,
                   "env_restarts": rollout.env_restarts, "physics_divergences": rollout.physics_divergences,
                   "env_steps_per_s": rollout.env_steps / max(rollout_seconds, 1e-9),
                   # summed over the workers, which run in parallel: where a worker's time goes
                   "worker_seconds_policy": rollout.seconds_policy, "worker_seconds_env": rollout.seconds_env,
                   "skipped_update": not stats}
        metrics.update({k: v for k, v in stats.items()})
        return metrics

    def _log_eval(self, row: dict, writer) -> dict:
        for prefix, result in [("eval", row), *((f"eval_{decoding}", other)
                                                for decoding, other in row.get("by_decoding", {}).items())]:
            writer.add_scalar(f"{prefix}/mean_success", result["mean_success"], row["iteration"])
            for task, task_row in result["per_task"].items():
                writer.add_scalar(f"{prefix}/success/{task}", task_row["success_rate"], row["iteration"])
        return row

    def _write_metrics(self, metrics: dict, writer) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"train/{key}", value, self.iteration)
        for task, success in metrics.get("train_success_by_task", {}).items():
            writer.add_scalar(f"train/success/{task}", success, self.iteration)
        for stage, seconds in metrics["seconds"].items():
            writer.add_scalar(f"time/{stage}", seconds, self.iteration)
        with open(self.out_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(metrics) + "\n")


def _select(batch: TrajectoryBatch, index: np.ndarray) -> TrajectoryBatch:
    """The episodes ``index`` of a batch (time axis trimmed to the longest of them)."""
    steps = int(batch.mask[index].sum(axis=1).max())
    return TrajectoryBatch(
        images={name: image[index, :steps] for name, image in batch.images.items()},
        proprio=batch.proprio[index, :steps], instructions=[batch.instructions[i] for i in index],
        action_tokens=batch.action_tokens[index, :steps], actions=batch.actions[index, :steps],
        old_logprobs=batch.old_logprobs[index, :steps], rewards=batch.rewards[index, :steps],
        mask=batch.mask[index, :steps], success=batch.success[index],
        task_specs=[batch.task_specs[i] for i in index], policy_version=batch.policy_version,
        final_frames=batch.final_frames[index] if batch.final_frames is not None else None,
        located_points=batch.located_points[index, :steps] if batch.located_points is not None else None,
        final_wrist_frames=batch.final_wrist_frames[index] if batch.final_wrist_frames is not None else None,
        actions_executed=batch.actions_executed[index, :steps] if batch.actions_executed is not None else None,
    )


def _learner_state(rl: dict) -> dict:
    """The learner part of a checkpoint's RL state (checkpoints before ``learner`` kept it flat)."""
    if "learner" in rl:
        return rl["learner"]
    return {key: rl[key] for key in ("optimizer", "generator", "value_head") if key in rl}
