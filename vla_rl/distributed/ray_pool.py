"""Rollout workers as Ray actors (the only Ray code of the pipeline lives in this package).

``RayRolloutPool`` has the interface of ``LocalRolloutPool``: ``set_weights`` puts the state dict in
the object store once and every actor loads it (the version travels with it), ``collect`` runs one
share of task specs per actor in parallel, ``evaluate`` spreads evaluation init states over the
actors. An actor that dies mid-call (or between calls: it is found at the next weight broadcast) is
replaced by a fresh one with the same seed (another, if it dies again in the same call: the episodes
themselves may kill it) that gets the current weights, and its share is collected again from scratch,
so no episode is lost or counted twice.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch

from vla_rl.core.types import TaskSpec, TrajectoryBatch
from vla_rl.rollout.collector import RolloutStats
from vla_rl.rollout.evaluate import EpisodeOutcome
from vla_rl.rollout.worker import RolloutWorker, split_evenly

log = logging.getLogger(__name__)


def init_ray(address: str = "", num_cpus: int | None = None) -> dict:
    """Join ``address`` (a cluster; ``auto`` = the running one) or, when it is empty, start a new local Ray in
    this process; returns cluster resources. A local start passes ``address="local"``: without an address,
    ``ray.init`` would join whatever cluster ``RAY_ADDRESS`` or ``/tmp/ray/ray_current_cluster`` names (a
    ``scripts/ray_local_cluster.sh`` cluster, say)."""
    import ray

    if not ray.is_initialized():
        if address:
            check_cluster_reachable(address)
            try:
                ray.init(address=address, log_to_driver=True)
            except ConnectionError as error:  # Ray's own message names its --address flag, not ours
                raise ConnectionError(f"could not join the Ray cluster at --ray-address {address!r}: {error}; start "
                                      "one first (ray start --head, or scripts/ray_local_cluster.sh start), or leave "
                                      "--ray-address out to start a local Ray") from error
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    return ray.cluster_resources()


def check_cluster_reachable(address: str, timeout_s: float = 5.0) -> None:
    """An explicit ``host:port`` that nothing answers on is an error within ``timeout_s``: ``ray.init`` would
    retry it for a minute or more before failing. ``auto`` and other forms are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"no Ray cluster answers at --ray-address {address!r} ({error}): start one first "
                              "(ray start --head, or scripts/ray_local_cluster.sh start) or check the address") \
            from error


def check_resources(resources: dict, count: int, cpus: float, gpus: float, what: str, knobs: str) -> None:
    """Refuse ``count`` actors of ``cpus`` CPUs and ``gpus`` GPUs each that ``resources`` (Ray's resource dict)
    cannot hold: Ray would otherwise wait forever for actors it cannot place. ``knobs`` names what to lower."""
    needed = {"CPU": count * cpus, "GPU": count * gpus}
    short = {k: (v, resources.get(k, 0.0)) for k, v in needed.items() if v > resources.get(k, 0.0)}
    if short:
        raise ValueError(f"the Ray cluster cannot host {count} {what}: "
                         + ", ".join(f"{k} needed {n:g}, available {a:g}" for k, (n, a) in short.items())
                         + f"; lower {knobs}")


def egl_device_for(gpu_ids: Sequence, environ: dict[str, str]) -> str | None:
    """The ``MUJOCO_EGL_DEVICE_ID`` an actor should render on: its first Ray-assigned GPU, when MuJoCo
    renders with EGL and the user has not chosen a device. MuJoCo enumerates EGL devices itself and
    ignores ``CUDA_VISIBLE_DEVICES``, so without this every actor would render on GPU 0."""
    if environ.get("MUJOCO_GL") != "egl" or "MUJOCO_EGL_DEVICE_ID" in environ or not gpu_ids:
        return None
    return str(int(gpu_ids[0]))


class _ActorWorker(RolloutWorker):
    def __init__(self, *args, **kwargs):
        import os

        import ray

        device = egl_device_for(ray.get_gpu_ids(), dict(os.environ))
        if device is not None:  # before the env (and its worker processes, which inherit it) exists
            os.environ["MUJOCO_EGL_DEVICE_ID"] = device
        super().__init__(*args, **kwargs)

    def egl_device(self) -> str | None:
        import os

        return os.environ.get("MUJOCO_EGL_DEVICE_ID")

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


class RayRolloutPool:
    def __init__(self, env_factory: Callable[[], Any], policy_factory: Callable[[], Any], num_workers: int = 2,
                 torch_threads: int = 1, seed: int = 0, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                 max_retries: int = 2, eval_env_factory: Callable[[], Any] | None = None, max_decisions: int = 0):
        import ray

        self._ray = ray
        self._remote = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)(_ActorWorker)
        self._args = (env_factory, policy_factory, torch_threads)
        self._eval_env_factory = eval_env_factory
        self._max_decisions = max_decisions
        self.seed = seed
        self.max_retries = max_retries
        self.restarts = 0
        self._weights_ref = None
        self._version = 0
        self.actors = [self._spawn(i) for i in range(num_workers)]
        self.node_ids = ray.get([actor.node_id.remote() for actor in self.actors])
        self.slots_per_worker = ray.get(self.actors[0].slots.remote())

    def _spawn(self, index: int, death_in_call: int = 1):
        # The first replacement in a call gets the dead actor's seed: every round reseeds the sampling from it and
        # the trainer's round, the dead attempt's episodes are discarded, and a run resumed later (fresh actors,
        # seed + index) then samples what this one did. A second death in the same call may be the episodes
        # themselves (a renderer crash, memory): its replacement samples others.
        return self._remote.remote(*self._args, seed=self.seed + index + 1000 * (death_in_call - 1),
                                   eval_env_factory=self._eval_env_factory, max_decisions=self._max_decisions)

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        self._weights_ref = self._ray.put({k: v.detach().cpu() for k, v in state_dict.items()})
        self._version = version
        # an actor that died since the last call (while the learner updated, say) is replaced, and its
        # replacement loads these weights
        self._call(lambda index: self.actors[index].set_weights.remote(self._weights_ref, version),
                   range(len(self.actors)), retry_loads_weights=True)

    def _replace(self, index: int, death_in_call: int = 1, load_weights: bool = True):
        """A fresh actor in place of actor ``index``, loading the current weights (unless ``load_weights`` is
        false: the retried call loads them itself); returns the weight load's ref (None when there is none).
        Nothing here waits for it: a replacement that cannot start fails the call queued after its weights,
        which counts as its death."""
        self.restarts += 1
        log.warning("rollout actor %d died; starting a replacement (restart %d)", index, self.restarts)
        try:
            self._ray.kill(self.actors[index])
        except Exception:  # already gone
            pass
        self.actors[index] = self._spawn(index, death_in_call)
        if self._weights_ref is None or not load_weights:
            return None
        # actor calls run in order: the weights are loaded before the retried call runs
        return self.actors[index].set_weights.remote(self._weights_ref, self._version)

    def _call(self, submit: Callable[[int], Any], indices: Sequence[int],
              retry_loads_weights: bool = False) -> dict[int, Any]:
        """``submit(i)`` (a remote call on actor i) for every index, awaited as they finish; an actor that died
        is replaced and its call submitted again (at most ``max_retries`` times per actor). ``retry_loads_weights``:
        the call is the weight broadcast itself, so a replacement needs no weight load of its own before it."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        results: dict[int, Any] = {}
        pending = {submit(i): i for i in indices}
        attempts = dict.fromkeys(indices, 0)
        weight_loads: dict[int, Any] = {}  # a replacement's weight load, checked before its result counts
        while pending:
            # whichever finishes first: a dead actor is noticed while the others still work
            (ref,), _ = self._ray.wait(list(pending), num_returns=1)
            index = pending.pop(ref)
            try:
                if index in weight_loads:  # an error loading them must not pass as a result of other weights
                    self._ray.get(weight_loads.pop(index))
                results[index] = self._ray.get(ref)
            except (RayActorError, ActorDiedError, ActorUnavailableError) as error:
                attempts[index] += 1
                if attempts[index] > self.max_retries:
                    raise RuntimeError(f"rollout actor {index} died {attempts[index]} times; giving up") from error
                weight_load = self._replace(index, attempts[index], load_weights=not retry_loads_weights)
                if weight_load is not None:
                    weight_loads[index] = weight_load
                pending[submit(index)] = index
        replaced = [index for index, died in attempts.items() if died]
        for index in replaced:  # the replacements answered: where they run is known now
            self.node_ids[index] = self._ray.get(self.actors[index].node_id.remote())
        return results

    def _run(self, method: str, shares: Sequence[Sequence], *args) -> list:
        """Call ``method(share, *args)`` on actor i for every non-empty share; replace dead actors and retry."""
        results = self._call(lambda i: getattr(self.actors[i], method).remote(shares[i], *args),
                             [i for i, share in enumerate(shares) if share])
        return [results[i] for i in sorted(results)]

    def collect(self, specs_per_worker: Sequence[Sequence[TaskSpec]], sampling_seed: int | None = None
                ) -> list[tuple[TrajectoryBatch, RolloutStats]]:
        return self._run("collect", specs_per_worker, sampling_seed)

    def evaluate(self, specs: Sequence[TaskSpec], decoding: str | None = None) -> list[EpisodeOutcome]:
        shares = split_evenly(specs, len(self.actors))
        return [outcome for part in self._run("evaluate", shares, decoding) for outcome in part]

    def kill_actor(self, index: int) -> None:
        """Fault injection for tests: kill actor ``index`` without telling the pool."""
        self._ray.kill(self.actors[index], no_restart=True)

    def close(self) -> None:
        for actor in self.actors:
            try:
                self._ray.get(actor.close.remote(), timeout=30)
            except Exception:
                pass
            self._ray.kill(actor)
        self.actors = []
