"""Wiring of concrete parts (the composition root's helpers): env suites, policies, rollout pools.

Factories are module-level functions wrapped in ``functools.partial`` so that Ray can pickle them
and build the env and the policy inside each actor.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

def suite_tasks(suite: str) -> list[str]:
    from sim_envs.suites import get_suite

    return get_suite(suite).tasks()


def eval_state_counter(suite: str) -> Callable[[str], int]:
    from sim_envs.suites import get_suite

    return get_suite(suite).num_eval_states


def make_vec_env(suite: str, num_envs: int, image_size: int, wrist_camera: bool, processes: int):
    from sim_envs.vector import SimVecEnv, VecEnvConfig

    return SimVecEnv(VecEnvConfig(suite=suite, num_envs=num_envs, num_workers=processes, image_size=image_size,
                                  wrist_camera=wrist_camera))


def load_policy(checkpoint: str, temperature: float = 1.0, device: str = "auto"):
    from vla_rl.policy.checkpoint import load_checkpoint
    from vla_rl.policy.policy import VLAPolicy, resolve_device

    model, action_tokenizer, _ = load_checkpoint(Path(checkpoint), device=resolve_device(device))
    return VLAPolicy(model.eval(), action_tokenizer, temperature=temperature)


def checkpoint_camera_setup(checkpoint: Path) -> tuple[int, bool]:
    """(image size, needs the wrist camera) of a policy checkpoint, read from its config."""
    import json

    config = json.loads((Path(checkpoint) / "vla_config.json").read_text())
    return int(config.get("image_size", 64)), "wrist" in config.get("cameras", ["agentview"])


def make_pool(rollout, suite: str, checkpoint: Path, temperature: float, seed: int):
    """A ``LocalRolloutPool`` or ``RayRolloutPool`` (per ``rollout.backend``) for ``checkpoint``."""
    image_size, wrist = checkpoint_camera_setup(checkpoint)
    env_factory = functools.partial(make_vec_env, suite, rollout.envs_per_worker, image_size, wrist,
                                    rollout.env_processes)
    policy_factory = functools.partial(load_policy, str(checkpoint), temperature)
    if rollout.backend == "local":
        from vla_rl.rollout.worker import LocalRolloutPool

        return LocalRolloutPool(env_factory, policy_factory, rollout.num_workers, rollout.torch_threads_per_worker, seed)
    from vla_rl.distributed.ray_pool import RayRolloutPool, init_ray

    resources = init_ray(rollout.ray_address, num_cpus=None)
    needed = {"CPU": rollout.num_workers * rollout.cpus_per_worker, "GPU": rollout.num_workers * rollout.gpus_per_worker}
    short = {k: (v, resources.get(k, 0.0)) for k, v in needed.items() if v > resources.get(k, 0.0)}
    if short:
        # Ray would otherwise wait forever for actors it cannot place
        raise ValueError(f"the Ray cluster cannot host {rollout.num_workers} rollout workers: "
                         + ", ".join(f"{k} needed {n:g}, available {a:g}" for k, (n, a) in short.items())
                         + "; lower rollout.num_workers or rollout.cpus_per_worker / gpus_per_worker")
    return RayRolloutPool(env_factory, policy_factory, rollout.num_workers, rollout.torch_threads_per_worker, seed,
                          rollout.cpus_per_worker, rollout.gpus_per_worker)
