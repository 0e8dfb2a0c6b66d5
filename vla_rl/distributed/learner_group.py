"""Data-parallel learners: ``num_learners`` Ray actors joined into one torch.distributed group.

Each actor loads the same checkpoint (and, on resume, the same learner state) and wraps it in a
``PolicyLearner`` with its rank, so the maths stays in ``vla_rl.train.learner``: every replica gets
the whole batch through the object store, works on its share of each mini-batch, and gradients are
summed over the group (``ddp``) or reduce-scattered by FSDP2 (``fsdp``). The group is placed with a
Ray placement group (``PACK``: learners on as few nodes as possible, so gradients travel over the
fastest links). Backend: ``nccl`` when the learners have GPUs, ``gloo`` on CPUs (the tests).

A learner that dies breaks the collective for everyone: the group raises, and the run continues
with ``vla-rl train --resume`` from its last checkpoint (which holds the optimiser state).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_rl.core.memory import keep_freed_memory
from vla_rl.core.types import TrajectoryBatch
from vla_rl.train.learner import AlgorithmConfig, LearnerConfig, PolicyLearner

COLLECTIVE_TIMEOUT_S = 600  # a rank that never answers turns into an error, not a hang


class _LearnerActor:
    def __init__(self, checkpoint: str, algorithm: AlgorithmConfig, config: LearnerConfig, seed: int,
                 temperature: float, reference_checkpoint: str):
        if config.threads:
            torch.set_num_threads(config.threads)
        keep_freed_memory()
        self.args = (checkpoint, algorithm, config, seed, temperature, reference_checkpoint)
        self.learner: PolicyLearner | None = None
        self.store = None  # rank 0: the group's rendezvous store (open_rendezvous)

    def open_rendezvous(self) -> tuple[str, int]:
        """Rank 0 only: start the group's key-value store on a port the OS picks, and keep it listening
        (a probed-then-closed port could be taken by another process before rank 0 bound it again).
        Returns this node's IP and the port."""
        import datetime

        import ray
        import torch.distributed as dist

        self.store = dist.TCPStore("0.0.0.0", 0, is_master=True, wait_for_workers=False,
                                   timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
        return ray.util.get_node_ip_address(), self.store.port

    def join(self, address: str, port: int, rank: int, world_size: int, backend: str,
             state: dict[str, Any] | None) -> str:
        import datetime

        import torch.distributed as dist

        from vla_rl.policy.checkpoint import load_checkpoint
        from vla_rl.policy.policy import VLAPolicy, resolve_device

        checkpoint, algorithm, config, seed, temperature, reference = self.args
        device = resolve_device(config.device)
        if device.startswith("cuda"):
            torch.cuda.set_device(0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
        timeout = datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S)
        store = self.store if rank == 0 else dist.TCPStore(address, port, is_master=False, timeout=timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
        model, tokenizer, _ = load_checkpoint(Path(checkpoint), device=device)
        policy = VLAPolicy(model, tokenizer, temperature=temperature)
        self.learner = PolicyLearner(policy, algorithm, config, seed, Path(reference), state, rank, world_size)
        return f"rank {rank}/{world_size} on {socket.gethostname()} ({device}, {backend})"

    def update(self, batch: TrajectoryBatch, group_ids: np.ndarray) -> dict[str, float]:
        return self.learner.update(batch, group_ids)

    def weights(self) -> dict[str, torch.Tensor] | None:
        weights = self.learner.weights()  # every rank joins the gather; rank 0 answers
        return {k: v.detach().cpu() for k, v in weights.items()} if self.learner.rank == 0 else None

    def state_dict(self) -> dict[str, Any] | None:
        state = self.learner.state_dict()
        return state if self.learner.rank == 0 else None

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class RayLearnerGroup:
    """The learner interface of ``PolicyLearner`` (update, weights, state_dict) over Ray actors."""

    def __init__(self, checkpoint: Path, algorithm: AlgorithmConfig, config: LearnerConfig, seed: int,
                 temperature: float, reference_checkpoint: Path, state: dict[str, Any] | None = None):
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self._ray = ray
        size = config.num_learners
        bundle = {"CPU": config.cpus_per_learner, **({"GPU": config.gpus_per_learner} if config.gpus_per_learner else {})}
        self.placement = placement_group([bundle] * size, strategy="PACK")
        ray.get(self.placement.ready(), timeout=300)
        backend = config.backend if config.backend != "auto" else ("nccl" if config.gpus_per_learner else "gloo")
        remote = ray.remote(_LearnerActor)
        self.actors = [remote.options(
            num_cpus=config.cpus_per_learner, num_gpus=config.gpus_per_learner,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=rank),
        ).remote(str(checkpoint), algorithm, config, seed, temperature, str(reference_checkpoint))
            for rank in range(size)]
        address, port = ray.get(self.actors[0].open_rendezvous.remote())
        state_ref = ray.put(state)
        self.descriptions = ray.get([actor.join.remote(address, port, rank, size, backend, state_ref)
                                     for rank, actor in enumerate(self.actors)])

    def _all(self, method: str, *args) -> list:
        return self._ray.get([getattr(actor, method).remote(*args) for actor in self.actors])

    def update(self, batch: TrajectoryBatch, group_ids: np.ndarray) -> dict[str, float]:
        batch_ref = self._ray.put(batch)
        return self._all("update", batch_ref, group_ids)[0]  # identical on every rank

    def weights(self) -> dict[str, torch.Tensor]:
        return self._all("weights")[0]

    def state_dict(self) -> dict[str, Any]:
        return self._all("state_dict")[0]

    def close(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for actor in self.actors:
            try:
                self._ray.get(actor.close.remote(), timeout=30)
            except Exception:  # already gone
                pass
            self._ray.kill(actor)
        self.actors = []
        remove_placement_group(self.placement)
