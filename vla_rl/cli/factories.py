"""Wiring of concrete parts (the composition root's helpers): env suites, policies, rollout pools.

Factories are module-level functions wrapped in ``functools.partial`` so that Ray can pickle them
and build the env and the policy inside each actor.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

# where a rollout worker runs its policy and, in imagination, its world model: the GPU when the worker has one
ROLLOUT_DEVICE = "auto"


def suite_tasks(suite: str) -> list[str]:
    from sim_envs.suites import get_suite

    return get_suite(suite).tasks()


def eval_state_counter(suite: str) -> Callable[[str], int]:
    from sim_envs.suites import get_suite

    return get_suite(suite).num_eval_states


def make_vec_env(suite: str, num_envs: int, image_size: int, wrist_camera: bool, processes: int,
                 antialias: bool = True):
    from sim_envs.vector import SimVecEnv, VecEnvConfig

    return SimVecEnv(VecEnvConfig(suite=suite, num_envs=num_envs, num_workers=processes, image_size=image_size,
                                  wrist_camera=wrist_camera, antialias=antialias))


def make_world_model_env(suite: str, num_envs: int, image_size: int, wrist_camera: bool, processes: int, env_config,
                         device: str = ROLLOUT_DEVICE):
    """A ``WorldModelVecEnv`` whose resets come from the suite's simulator (``env_config``: ``EnvConfig``); its
    world model runs on ``device`` (resolved in the worker that builds it: its GPU, if it has one)."""
    from sim_envs.suites import get_suite
    from vla_rl.core.device import resolve_device
    from vla_rl.reward.critic import cached_critic
    from world_model.env import WorldModelVecEnv
    from world_model.train import load_world_model

    model = load_world_model(Path(env_config.world_model_checkpoint), resolve_device(device))
    if wrist_camera and "wrist" not in model.config.cameras:
        raise ValueError(f"the policy needs the wrist camera; the world model predicts only {list(model.config.cameras)}")
    # imagination starts from real frames of every camera the world model predicts
    reset_env = make_vec_env(suite, num_envs, image_size, "wrist" in model.config.cameras, processes)
    return WorldModelVecEnv(model, cached_critic(str(env_config.critic_checkpoint)), reset_env, get_suite(suite).max_steps,
                            env_config.done_threshold, env_config.sampling_steps or None)


def load_policy(checkpoint: str, temperature: float = 1.0, device: str = "auto", precision: str = "fp32"):
    from vla_rl.policy.checkpoint import load_checkpoint
    from vla_rl.policy.policy import VLAPolicy, resolve_device

    model, action_tokenizer, _ = load_checkpoint(Path(checkpoint), device=resolve_device(device))
    return VLAPolicy(model.eval(), action_tokenizer, temperature=temperature, precision=precision)


def checkpoint_camera_setup(checkpoint: Path) -> tuple[int, bool, bool]:
    """(image size, needs the wrist camera, antialiased frames) of a policy checkpoint, read from its config."""
    from vla_rl.policy.checkpoint import read_vla_config

    config = read_vla_config(Path(checkpoint) / "vla_config.json")  # absent keys take VLAConfig's defaults
    return config.image_size, "wrist" in config.cameras, config.antialias


def make_pool(rollout, suite: str, checkpoint: Path, temperature: float, seed: int, env=None, reward=None):
    """A ``LocalRolloutPool`` or ``RayRolloutPool`` (per ``rollout.backend``) for ``checkpoint``;
    ``env`` (an ``EnvConfig``) may put the rollouts in a world model, evaluation staying in the simulator.
    The simulator renders the wrist camera when the policy or the ``reward`` (a ``RewardConfig``)
    critic reads it."""
    from vla_rl.reward.sources import critic_reads_wrist

    image_size, wrist, antialias = checkpoint_camera_setup(checkpoint)
    critic_wrist = reward is not None and reward.source != "sim_success" and critic_reads_wrist(reward.critic_checkpoint)
    env_factory = functools.partial(make_vec_env, suite, rollout.envs_per_worker, image_size, wrist or critic_wrist,
                                    rollout.env_processes, antialias)
    eval_env_factory = None
    if env is not None and env.kind == "world_model":
        if not antialias:
            raise ValueError(f"{checkpoint} was trained on frames rendered without antialiasing (antialias: false), "
                             "but a world model imagines the antialiased frames it was trained on: train the policy "
                             "with antialias: true to practise in it")
        check_world_model_cameras(env, wrist, critic_wrist)
        eval_env_factory = env_factory
        env_factory = functools.partial(make_world_model_env, suite, rollout.envs_per_worker, image_size, wrist,
                                        rollout.env_processes, env, ROLLOUT_DEVICE)
    policy_factory = functools.partial(load_policy, str(checkpoint), temperature, ROLLOUT_DEVICE,
                                       precision=rollout.precision)
    if rollout.backend == "local":
        from vla_rl.rollout.worker import LocalRolloutPool

        return LocalRolloutPool(env_factory, policy_factory, rollout.num_workers, rollout.torch_threads_per_worker, seed,
                                eval_env_factory, rollout.max_decisions)
    from vla_rl.distributed.ray_pool import RayRolloutPool, check_resources, init_ray

    resources = init_ray(rollout.ray_address, num_cpus=None)
    check_resources(resources, rollout.num_workers, rollout.cpus_per_worker, rollout.gpus_per_worker,
                     "rollout workers", "rollout.num_workers or rollout.cpus_per_worker / gpus_per_worker")
    return RayRolloutPool(env_factory, policy_factory, rollout.num_workers, rollout.torch_threads_per_worker, seed,
                          rollout.cpus_per_worker, rollout.gpus_per_worker, eval_env_factory=eval_env_factory,
                          max_decisions=rollout.max_decisions)


def check_world_model_cameras(env, policy_wrist: bool, reward_critic_wrist: bool) -> None:
    """Refuse a world model (``env``: an ``EnvConfig`` of kind world_model) that does not predict the wrist
    camera when the policy, the reward critic or the env's critic reads it, from the checkpoint's config,
    before any worker starts: the reward critic would otherwise fail only after a whole rollout round."""
    from vla_rl.reward.sources import critic_reads_wrist
    from world_model.train import world_model_checkpoint_config

    cameras = list(world_model_checkpoint_config(Path(env.world_model_checkpoint)).cameras)
    readers = [reader for reader, reads in (("the policy", policy_wrist), ("the reward critic", reward_critic_wrist),
                                            ("the env's critic", critic_reads_wrist(env.critic_checkpoint))) if reads]
    if readers and "wrist" not in cameras:
        raise ValueError(f"the wrist camera is read by {' and '.join(readers)}; the world model "
                         f"{env.world_model_checkpoint} predicts only {cameras} (train one with cameras "
                         "[agentview, wrist])")


def make_learner_factory(config):
    """For ``TrainConfig.learner.num_learners > 1``: a callable ``(checkpoint, state) -> RayLearnerGroup``
    (Ray is started or joined as for the rollout pool); ``None`` keeps the learner in this process."""
    learner = config.learner
    if learner.num_learners == 1:
        return None

    def build(checkpoint: Path, state, reference: Path):
        import ray

        from vla_rl.distributed.learner_group import RayLearnerGroup
        from vla_rl.distributed.ray_pool import check_resources, init_ray

        init_ray(config.rollout.ray_address, num_cpus=None)
        # what is left once the rollout workers hold their share
        free = ray.available_resources()
        check_resources(free, learner.num_learners, learner.cpus_per_learner, learner.gpus_per_learner,
                         "learners", "learner.num_learners or learner.cpus_per_learner / gpus_per_learner")
        return RayLearnerGroup(checkpoint, config.algorithm, learner, config.seed, config.temperature,
                               reference, state)

    return build
