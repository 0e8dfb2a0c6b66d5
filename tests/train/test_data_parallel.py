"""Data-parallel learners over torch.distributed (gloo, two real processes), bf16 autocast, LoRA.

Two replicas that each take half of every mini-batch must make exactly the update one process makes
on the whole batch: the same weights afterwards (up to float summation order) and the same
statistics, for ``ddp``, for ``fsdp`` (sharded decoder layers) and for fsdp with LoRA adapters,
including a resumed optimiser.
"""


import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sim_envs.vector import TabletopVecEnv, VecEnvConfig
from tests.policy.conftest import make_policy
from vla_rl.core import TaskSpec
from vla_rl.rollout.collector import collect
from vla_rl.train.learner import AlgorithmConfig, LearnerConfig, PolicyLearner

ALGORITHM = AlgorithmConfig(minibatch_size=24, microbatch_size=5, epochs=2, lr=1e-3)


@pytest.fixture(scope="module")
def rollout_batch():
    policy = make_policy(seed=5)
    specs = [TaskSpec("Reach", 0, "train")] * 2 + [TaskSpec("PressButton", 2, "train")] * 2
    with TabletopVecEnv(VecEnvConfig(num_envs=4, num_workers=0, image_size=32)) as env:
        batch, _ = collect(policy, env, specs)
    batch.rewards[:] = 0.0
    batch.rewards[0, 0] = batch.rewards[3, 0] = 1.0  # one success per group: non-zero advantages
    return batch, np.array([0, 0, 1, 1])


def _update_then_resume(config: LearnerConfig, batch, group_ids, rank: int = 0, world_size: int = 1):
    """Update; then, as a resume does, build a new learner from the exported weights and state
    (another seed: the generator must come from the state) and update again."""
    learner = PolicyLearner(make_policy(seed=7), ALGORITHM, config, seed=0, rank=rank, world_size=world_size)
    stats = learner.update(batch, group_ids)
    state, weights = learner.state_dict(), learner.weights()
    policy = make_policy(seed=7)
    policy.model.load_state_dict(weights)
    resumed = PolicyLearner(policy, ALGORITHM, config, seed=1, state=state, rank=rank, world_size=world_size)
    resumed.update(batch, group_ids)
    return stats, resumed.weights()


def _replica(rank: int, world_size: int, port: int, config: LearnerConfig, batch, group_ids, results) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, is_master=False)  # the test process keeps the store's port
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size)
    try:
        stats, weights = _update_then_resume(config, batch, group_ids, rank, world_size)
        if rank == 0:
            results.put((stats, {k: v.numpy().copy() for k, v in weights.items()}))  # by value, not shared memory
    finally:
        dist.destroy_process_group()


def _first_result(results, processes, timeout_s: float = 300):
    """Rank 0's answer; a replica that dies (its error is on stderr) fails the test at once, not at the timeout."""
    import queue
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=2)
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise AssertionError(f"a replica failed with exit code {dead[0]}")
    raise AssertionError("no result from the replicas in time")


def _rendezvous_store():
    """A key-value store on a port the OS picks, held open by the test process: a probed-then-closed port
    could be taken by another process before a replica bound it again."""
    import torch.distributed as dist

    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


@pytest.mark.parametrize("strategy, lora_rank", [("ddp", 0), ("fsdp", 0), ("fsdp", 4)])
def test_two_replicas_make_the_single_process_update(rollout_batch, strategy, lora_rank):
    from vla_rl.policy.lora import LoRAConfig

    batch, group_ids = rollout_batch
    config = LearnerConfig(strategy=strategy, lora=LoRAConfig(rank=lora_rank))
    single_stats, single_weights = _update_then_resume(config, batch, group_ids)  # world size 1: plain
    context = mp.get_context("spawn")
    results = context.Queue()
    store = _rendezvous_store()
    port = store.port
    processes = [context.Process(target=_replica, args=(rank, 2, port, config, batch, group_ids, results))
                 for rank in range(2)]
    for process in processes:
        process.start()
    stats, weights = _first_result(results, processes)
    weights = {k: torch.from_numpy(v) for k, v in weights.items()}
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert set(weights) == set(single_weights)
    start = make_policy(seed=7).model.state_dict()
    keys = sorted(weights)
    moved = torch.cat([(single_weights[k] - start[k]).flatten() for k in keys]).norm()
    gap = torch.cat([(weights[k] - single_weights[k]).flatten() for k in keys]).norm()
    # Adam moves a weight by ~lr whatever the size of its gradient, so float summation order shows up
    # in weights whose gradient is at noise level; relative to the whole move the gap stays tiny,
    # while a replica that skipped the other's half of the data moves elsewhere entirely
    print(f"moved {float(moved):.4g}, data-parallel gap {float(gap):.3g}")
    assert moved > 1e-2 and gap / moved < 1e-3, (float(moved), float(gap))
    for key in ("loss", "clip_fraction", "approx_kl", "entropy", "grad_norm"):
        assert stats[key] == pytest.approx(single_stats[key], rel=1e-4, abs=1e-6), key
    assert stats["optimizer_steps"] == single_stats["optimizer_steps"] == 2 * np.ceil(
        batch.mask.sum() / ALGORITHM.minibatch_size)


def test_bf16_autocast_runs_the_decoder_in_bf16_and_stays_close_to_fp32(rollout_batch):
    batch, group_ids = rollout_batch
    seen = []
    policy = make_policy(seed=5)
    policy.model.language_model.model.layers[0].mlp.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    one_pass = AlgorithmConfig(minibatch_size=10_000, microbatch_size=64, epochs=1, lr=1e-3)
    stats = PolicyLearner(policy, one_pass, LearnerConfig(precision="bf16"), seed=0).update(batch, group_ids)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in policy.model.parameters())
    # the policy is the one that collected the batch (seed 5) and there is one pass of one step: the
    # ratio is measured before the step, so approx_kl is the bf16-vs-fp32 log-prob gap; fp32 has none
    fp32 = PolicyLearner(make_policy(seed=5), one_pass, LearnerConfig(), seed=0).update(batch, group_ids)
    assert fp32["approx_kl"] < 1e-9
    assert 0 < stats["approx_kl"] < 1e-2
    assert stats["grad_norm"] == pytest.approx(fp32["grad_norm"], rel=0.1)


def test_lora_learner_trains_adapters_and_exports_merged_weights(rollout_batch):
    from vla_rl.policy.lora import LoRAConfig

    batch, group_ids = rollout_batch
    before = make_policy(seed=7).model.state_dict()
    config = LearnerConfig(lora=LoRAConfig(rank=4))
    learner = PolicyLearner(make_policy(seed=7), ALGORITHM, config, seed=0)
    learner.update(batch, group_ids)
    weights = learner.weights()
    assert set(weights) == set(before)  # plain names: a LoRA run's checkpoint loads like any other
    changed = {k for k in weights if not torch.equal(weights[k], before[k])}
    assert any(k.startswith("language_model.") and k.endswith("q_proj.weight") for k in changed)
    assert not any("embed_tokens" in k or "norm" in k for k in changed if k.startswith("language_model."))
    state = learner.state_dict()
    assert any(".lora_B." in k for k in state["lora"])
    from_checkpoint = make_policy(seed=7)
    from_checkpoint.model.load_state_dict(weights)  # a checkpoint holds the merged weights
    restored = PolicyLearner(from_checkpoint, ALGORITHM, config, seed=0, state=state)  # un-merges the adapters
    assert all(torch.allclose(restored.weights()[k], weights[k], atol=1e-6) for k in weights)


def test_adapters_only_keeps_every_weight_outside_the_adapters(rollout_batch):
    from vla_rl.policy.lora import LoRAConfig

    batch, group_ids = rollout_batch
    before = make_policy(seed=7).model.state_dict()

    def changed_outside_decoder(lora: LoRAConfig) -> set[str]:
        learner = PolicyLearner(make_policy(seed=7), ALGORITHM, LearnerConfig(lora=lora), seed=0)
        learner.update(batch, group_ids)
        merged = learner.weights()
        assert any(k.endswith("q_proj.weight") and not torch.equal(merged[k], before[k]) for k in merged)
        return {k for k in merged if not k.startswith("language_model.") and not torch.equal(merged[k], before[k])}

    assert changed_outside_decoder(LoRAConfig(rank=4))  # by default the projector and input MLPs train too
    assert changed_outside_decoder(LoRAConfig(rank=4, adapters_only=True)) == set()


def test_learning_rate_warms_up_over_optimiser_steps_and_resumes_on_its_clock(rollout_batch):
    warm = AlgorithmConfig(lr=1e-3, warmup_steps=4)
    assert [warm.learning_rate(step) for step in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert AlgorithmConfig(lr=1e-3).learning_rate(0) == 1e-3
    with pytest.raises(ValueError, match="warmup_steps"):
        AlgorithmConfig(warmup_steps=-1)
    batch, group_ids = rollout_batch
    one_step = AlgorithmConfig(minibatch_size=10_000, microbatch_size=64, lr=1e-3, warmup_steps=4)
    learner = PolicyLearner(make_policy(seed=7), one_step, LearnerConfig(), seed=0)
    stats = learner.update(batch, group_ids)
    assert stats["optimizer_steps"] == 1 and stats["lr"] == pytest.approx(2.5e-4)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    resumed = PolicyLearner(make_policy(seed=7), one_step, LearnerConfig(), seed=0, state=learner.state_dict())
    assert resumed.update(batch, group_ids)["lr"] == pytest.approx(5e-4)  # step 2 of the run, not step 1 again


def test_rl_refuses_lora_dropout():
    """The rollout samples in eval mode: dropout in the learner's pass would make the PPO ratio noise."""
    from vla_rl.policy.lora import LoRAConfig
    from vla_rl.train.learner import LearnerConfig

    with pytest.raises(ValueError, match="dropout must be 0"):
        LearnerConfig(lora=LoRAConfig(rank=4, dropout=0.1))
    LearnerConfig(lora=LoRAConfig(rank=4))  # no dropout: fine
