"""Rollout collection, the learner update and the training driver on the real tabletop env."""

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from sim_envs.vector import TabletopVecEnv, VecEnvConfig
from tests.policy.conftest import make_policy
from vla_rl.cli.factories import eval_state_counter, make_pool
from vla_rl.core import TaskSpec
from vla_rl.policy.checkpoint import load_checkpoint, save_checkpoint
from vla_rl.rollout.collector import collect, concat_batches, step_obs
from vla_rl.train.learner import AlgorithmConfig, update
from vla_rl.train.trainer import RolloutConfig, Trainer, TrainConfig, deadline_reached


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    policy = make_policy()
    return save_checkpoint(tmp_path_factory.mktemp("sft") / "step_000001", policy.model, policy.action_tokenizer,
                           extra={"trained_tasks": ["Reach", "PressButton"]})


def test_collect_shapes_masks_and_on_policy_logprobs():
    policy = make_policy(seed=1)
    specs = [TaskSpec("Reach", 3, "train")] * 2 + [TaskSpec("PressButton", 1, "train")]
    with TabletopVecEnv(VecEnvConfig(num_envs=4, num_workers=0, image_size=32)) as env:
        batch, stats = collect(policy, env, specs, policy_version=7)
    episodes, steps, tokens = batch.action_tokens.shape
    assert episodes == 3 and tokens == 7 and batch.policy_version == 7
    assert batch.images["agentview"].shape == (3, steps, 32, 32, 3)
    lengths = batch.mask.sum(1)
    for row, length in zip(batch.mask, lengths):  # real steps first, then padding
        assert row[:length].all() and not row[length:].any()
    assert np.array_equal(batch.rewards.sum(1), batch.success.astype(np.float32))
    assert stats.env_steps == lengths.sum()  # K = 1: one env step per decision
    e, s = np.nonzero(batch.mask)
    with torch.no_grad():
        recomputed = policy.log_prob(step_obs(batch, e, s), torch.from_numpy(batch.action_tokens[e, s])).token_logprob
    assert torch.allclose(recomputed, torch.from_numpy(batch.old_logprobs[e, s]), atol=1e-4)


def test_policy_is_queried_only_for_running_slots():
    from vla_rl.rollout.collector import act_where

    policy = make_policy(seed=1)
    sizes = []
    original = policy.act
    policy.act = lambda obs, explore: sizes.append(obs.batch_size) or original(obs, explore=explore)
    specs = [TaskSpec("Reach", 3, "train")] * 3
    with TabletopVecEnv(VecEnvConfig(num_envs=4, num_workers=0, image_size=32)) as env:
        obs = env.reset(specs + specs[:1])
        collect(policy, env, specs, max_decisions=3)
    assert sizes == [3, 3, 3]  # the spare fourth slot is never decoded
    sizes.clear()
    output = act_where(policy, obs, np.array([True, False, False, True]), explore=True)
    tokens, logprob, actions = output["tokens"], output["logprob"], output["actions"]
    assert sizes == [2] and tokens.shape == (4, 7) and actions.shape == (4, 1, 7)
    assert not tokens[1:3].any() and not logprob[1:3].any() and not actions[1:3].any()
    assert (tokens[[0, 3]] >= policy.config.first_action_token_id).all() and (logprob[[0, 3]] < 0).all()


def test_learner_reads_the_rollouts_located_points_instead_of_locating_again():
    from tests.policy.conftest import tiny_config
    from vla_rl.rollout.collector import step_points

    policy = make_policy(tiny_config(localiser_points=2, image_tokens=False, localiser_channels=8), seed=3)
    specs = [TaskSpec("Reach", 2, "train"), TaskSpec("PressButton", 4, "train")]
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as env:
        batch, _ = collect(policy, env, specs, max_decisions=4)
    assert batch.located_points.shape == (2, batch.mask.shape[1], 2, 2)
    e, s = np.nonzero(batch.mask)
    obs, tokens = step_obs(batch, e, s), torch.from_numpy(batch.action_tokens[e, s])
    with torch.no_grad():
        located_again = policy.log_prob(obs, tokens).token_logprob
        calls = []
        original = policy.model.localise
        policy.model.localise = lambda *args: calls.append(1) or original(*args)
        handed_back = policy.log_prob(obs, tokens, located_points=step_points(batch, e, s)).token_logprob
    assert calls == []  # the localiser did not run
    assert torch.allclose(handed_back, located_again, atol=1e-5)
    assert torch.allclose(handed_back, torch.from_numpy(batch.old_logprobs[e, s]), atol=1e-4)
    joined = concat_batches([batch, _select_first(batch)])
    assert joined.located_points.shape[:2] == joined.mask.shape


def _select_first(batch):
    from vla_rl.train.trainer import _select

    first = _select(batch, np.array([0]))
    assert first.located_points.shape[:2] == first.mask.shape
    return first


def test_training_rollouts_stop_at_max_decisions_and_evaluation_does_not():
    from vla_rl.rollout.worker import RolloutWorker

    specs = [TaskSpec("Reach", 3, "train")] * 2
    env_factory = lambda: TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32))  # noqa: E731
    worker = RolloutWorker(env_factory, lambda: make_policy(seed=1), max_decisions=4)
    try:
        batch, stats = worker.collect(specs)
        assert batch.mask.shape[1] == 4 and stats.decisions == batch.mask.sum() <= 8
        assert not batch.success.any()  # a random policy does not reach in 4 steps: cut episodes are failures
        outcomes = worker.evaluate([TaskSpec("Reach", 0, "eval")])
        assert outcomes[0].steps > 4  # the task's own limit
    finally:
        worker.env.close()
    with pytest.raises(ValueError, match="max_decisions"):
        RolloutConfig(max_decisions=-1)


def test_update_moves_policy_towards_positive_advantage():
    policy = make_policy(seed=2)
    specs = [TaskSpec("Reach", 0, "train")] * 4
    with TabletopVecEnv(VecEnvConfig(num_envs=4, num_workers=0, image_size=32)) as env:
        batch, _ = collect(policy, env, specs)
    batch.rewards[:] = 0.0
    batch.rewards[0, 0] = 1.0  # pretend episode 0 succeeded: its actions get advantage > 0
    e, s = np.nonzero(batch.mask)
    obs, tokens = step_obs(batch, e, s), torch.from_numpy(batch.action_tokens[e, s])
    with torch.no_grad():
        before = policy.log_prob(obs, tokens).token_logprob.sum(1)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-3)
    config = AlgorithmConfig(minibatch_size=1000, microbatch_size=16)
    stats = update(policy, optimizer, batch, np.zeros(4, int), config, torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = policy.log_prob(obs, tokens).token_logprob.sum(1)
    change = (after - before).numpy()
    assert change[e == 0].mean() > 0 > change[e != 0].mean()
    assert stats["clip_fraction"] == 0.0 and stats["grad_norm"] > 0


def test_chunk_actions_after_the_episode_end_get_no_loss():
    """Reach's 50-step limit ends a chunk of 3 after its second action: the third never ran, so its tokens
    must not move the update (the issue's "masked after the episode end")."""
    from tests.policy.conftest import tiny_config

    policy = make_policy(tiny_config(chunk_size=3), seed=4)
    specs = [TaskSpec("Reach", 1, "train"), TaskSpec("Reach", 2, "train")]
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as env:
        batch, stats = collect(policy, env, specs)
    last = batch.mask.sum(1) - 1
    assert (last == 16).all() and stats.env_steps == 2 * 50  # 16 whole chunks, then 2 of the 17th's 3 actions
    assert (batch.actions_executed[:, :16] == 3).all() and (batch.actions_executed[:, 16] == 2).all()
    mask = batch.token_mask(np.array([0, 0]), np.array([0, 16]))
    assert mask[0].all() and mask[1, :14].all() and not mask[1, 14:].any()

    def updated_weights(tokens):
        changed = dataclasses.replace(batch, action_tokens=tokens)
        changed.rewards[:] = 0.0
        changed.rewards[0, 0] = 1.0
        trained = make_policy(tiny_config(chunk_size=3), seed=4)
        optimizer = torch.optim.AdamW(trained.model.parameters(), lr=1e-3)
        update(trained, optimizer, changed, np.zeros(2, int), AlgorithmConfig(minibatch_size=1000, entropy_coef=0.1),
               torch.Generator().manual_seed(0))
        return torch.cat([p.detach().flatten() for p in trained.model.parameters()])

    unexecuted = batch.action_tokens.copy()
    first = policy.config.first_action_token_id
    unexecuted[:, 16, 14:] = first + (unexecuted[:, 16, 14:] - first + 100) % policy.config.n_action_bins
    assert torch.equal(updated_weights(batch.action_tokens), updated_weights(unexecuted))
    executed = batch.action_tokens.copy()
    executed[:, 16, :7] = unexecuted[:, 16, 14:]  # the same change on an action that ran does matter
    assert not torch.equal(updated_weights(batch.action_tokens), updated_weights(executed))


@pytest.mark.parametrize("estimator", ["grpo", "gae"])
@pytest.mark.parametrize("aggregation", ["token-mean", "episode-mean"])
def test_microbatching_gives_the_same_update(aggregation, estimator):
    """Every term of the loss (PPO, entropy bonus, value loss) is the same weighted mean whatever the
    micro-batch size."""
    from vla_rl.train.learner import ValueHead

    results = []
    for micro in (1000, 7):
        policy = make_policy(seed=3)
        with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as env:
            batch, _ = collect(policy, env, [TaskSpec("Reach", 1, "train")] * 2)
        batch.rewards[:] = 0.0
        batch.rewards[1, 0] = 1.0
        batch.mask[0, 5:] = False  # unequal lengths: episode-mean weights differ from token-mean's
        torch.manual_seed(0)
        value_head = ValueHead(policy.model.config.language_model.hidden_size) if estimator == "gae" else None
        parameters = list(policy.model.parameters()) + (list(value_head.parameters()) if value_head else [])
        optimizer = torch.optim.SGD(parameters, lr=0.1)
        config = AlgorithmConfig(minibatch_size=1000, microbatch_size=micro, loss_aggregation=aggregation,
                                 entropy_coef=0.1, estimator=estimator, dynamic_sampling=estimator != "gae")
        update(policy, optimizer, batch, np.zeros(2, int), config, torch.Generator().manual_seed(0),
               value_head=value_head)
        results.append(torch.cat([p.detach().flatten() for p in parameters]))
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_concat_pads_time_and_refuses_mixed_versions():
    policy = make_policy(seed=4)
    with TabletopVecEnv(VecEnvConfig(num_envs=2, num_workers=0, image_size=32)) as env:
        a, _ = collect(policy, env, [TaskSpec("Reach", 0, "train")], policy_version=1)
        b, _ = collect(policy, env, [TaskSpec("PressButton", 0, "train")] * 2, policy_version=1)
        c, _ = collect(policy, env, [TaskSpec("Reach", 0, "train")], policy_version=2)
    joined = concat_batches([a, b])
    assert joined.mask.shape == (3, max(a.mask.shape[1], b.mask.shape[1]))
    assert joined.mask.sum() == a.mask.sum() + b.mask.sum()
    with pytest.raises(ValueError, match="policy versions"):
        concat_batches([a, c])


def _train_config(tmp_path, checkpoint, **overrides):
    base = dict(init_checkpoint=checkpoint, out_dir=tmp_path / "rl", tasks=("Reach",), iterations=2, group_size=2,
                groups_per_iteration=1, max_sampling_rounds=1, eval_every=1, eval_episodes_per_task=2,
                checkpoint_every=1, algorithm=AlgorithmConfig(dynamic_sampling=False, minibatch_size=64),
                rollout=RolloutConfig(backend="local", num_workers=1, envs_per_worker=2))
    base.update(overrides)
    return TrainConfig(**base)


def test_trainer_logs_checkpoints_and_resumes_without_gaps(tmp_path, tiny_checkpoint):
    config = _train_config(tmp_path, tiny_checkpoint)
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed)
    try:
        summary = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False).run()
        assert summary["iterations"] == 2
        assert [row["iteration"] for row in summary["eval_history"]] == [0, 1, 2]
        lines = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
        assert [line["iteration"] for line in lines] == [1, 2]
        for key in ("train_success", "filtered_fraction", "entropy", "clip_fraction", "approx_kl", "grad_norm",
                    "env_steps_per_s"):
            assert key in lines[0], key
        assert set(lines[0]["seconds"]) >= {"rollout", "reward", "update", "sync"}
        # a crash right after iteration 2's checkpoint, before its metrics line was written, with (as after a
        # crash later on) a stray line of iteration 3 and one cut short while being written: resume drops
        # both and writes iteration 2's line from the checkpoint, so the history has no gap
        first_run = lines
        (tmp_path / "rl" / "metrics.jsonl").write_text(json.dumps(lines[0]) + "\n" + json.dumps({"iteration": 3})
                                                       + "\n" + '{"iteration": 3, "lo')
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(tmp_path / "rl" / "tensorboard")) as stray:  # and logged iteration 3 in TensorBoard
            stray.add_scalar("train/loss", 123.0, 3)
        longer = _train_config(tmp_path, tiny_checkpoint, iterations=3)
        resumed = Trainer(longer, pool, eval_state_counter("tabletop"), resume=True, show_progress=False)
        assert resumed.iteration == 2 and resumed.sampler.groups_drawn == 2
        resumed.run()
        # the same three iterations without the interruption (the pool has sampled more in between)
        Trainer(_train_config(tmp_path, tiny_checkpoint, iterations=3, out_dir=tmp_path / "straight"), pool,
                eval_state_counter("tabletop"), show_progress=False).run()
    finally:
        pool.close()
    lines = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3]
    assert lines[1]["loss"] == first_run[1]["loss"] and lines[1]["eval"]["iteration"] == 2
    assert lines[1]["restored_from_checkpoint"] and "restored_from_checkpoint" not in lines[2]
    assert (tmp_path / "rl" / "iter_000003" / "manifest.json").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "rl" / "tensorboard"))
    events.Reload()
    logged = [(event.step, event.value) for event in events.Scalars("train/loss")]
    assert [step for step, _ in logged] == [1, 2, 3] and logged[2][1] == pytest.approx(lines[2]["loss"])  # not twice
    straight = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_success", "env_steps", "decisions", "loss", "entropy", "grad_norm"):
        assert lines[2][key] == straight[2][key], key  # resumed = uninterrupted: sampling and update alike
    resumed_weights = load_checkpoint(tmp_path / "rl" / "iter_000003")[0].state_dict()
    straight_weights = load_checkpoint(tmp_path / "straight" / "iter_000003")[0].state_dict()
    assert all(torch.equal(resumed_weights[k], straight_weights[k]) for k in straight_weights)


def test_time_limit_on_a_checkpoint_iteration_still_evaluates_the_last_one(tmp_path, tiny_checkpoint):
    """The time limit can end a run on an iteration that is checkpointed anyway (a multiple of
    checkpoint_every): the final held-out evaluation must still run, and be in that checkpoint's history."""
    config = _train_config(tmp_path, tiny_checkpoint, iterations=5, eval_every=0, time_limit_minutes=1e-6)
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed)
    try:
        summary = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False).run()
    finally:
        pool.close()
    assert summary["iterations"] == 1
    assert [row["iteration"] for row in summary["eval_history"]] == [0, 1]
    saved = torch.load(tmp_path / "rl" / "iter_000001" / "training_state.pt", weights_only=False)
    assert [row["iteration"] for row in saved["rl"]["eval_history"]] == [0, 1]


def test_deadline_counts_one_more_iteration_and_the_final_evaluation():
    assert not deadline_reached(100.0, None, [5.0], 30.0)
    assert not deadline_reached(100.0, 140.0, [4.0, 9.0, 6.0], 30.0)  # 100 + 9 + 30 = 139 fits
    assert deadline_reached(100.0, 138.0, [4.0, 9.0, 6.0], 30.0)  # the slowest recent iteration does not
    assert deadline_reached(100.0, 99.0, [], 0.0)


def test_a_deadline_stops_the_run_with_its_final_evaluation(tmp_path, tiny_checkpoint):
    """A deadline already past when the run starts: one iteration, then the final held-out evaluation of
    the weight average and the checkpoint, and the summary says the deadline stopped it. The current
    weights' comparison pass is optional: it is skipped when the deadline leaves no time for it, and runs
    when the deadline is far."""
    config = _train_config(tmp_path, tiny_checkpoint, iterations=4, eval_every=0, weights_ema=0.5)
    far = _train_config(tmp_path, tiny_checkpoint, iterations=1, eval_every=0, weights_ema=0.5,
                        out_dir=tmp_path / "far")
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed)
    try:
        summary = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False).run(
            deadline=time.perf_counter())
        far_summary = Trainer(far, pool, eval_state_counter("tabletop"), show_progress=False).run(
            deadline=time.perf_counter() + 3600)
    finally:
        pool.close()
    assert summary["iterations"] == 1 and summary["stopped_for_deadline"]
    history = summary["eval_history"]
    assert [row["iteration"] for row in history] == [0, 1]
    assert history[1]["weights"] == "ema 0.5" and history[1]["per_task"]["Reach"]["episodes"] == 2
    assert "current_weights" not in history[1] and history[1]["current_weights_skipped"] == "deadline"
    assert (tmp_path / "rl" / "iter_000001" / "manifest.json").is_file()
    assert not far_summary["stopped_for_deadline"]
    final = far_summary["eval_history"][-1]
    assert final["current_weights"]["per_task"]["Reach"]["episodes"] == 2 and "current_weights_skipped" not in final


def test_kl_reference_is_the_run_s_own_sft_checkpoint_also_on_resume(tmp_path):
    """With a KL penalty the learner keeps a frozen copy of the SFT policy. A resumed run must find it
    even when ``init_checkpoint`` names the SFT run directory (what the configs do), and keep the one
    it started from when that directory has a newer checkpoint by then."""
    from vla_rl.core.checkpoint_dir import point_latest

    policy = make_policy()
    sft_run = tmp_path / "sft"
    first = save_checkpoint(sft_run / "step_000001", policy.model, policy.action_tokenizer,
                            extra={"trained_tasks": ["Reach"]})
    point_latest(sft_run, first.name, 1)
    kl = AlgorithmConfig(dynamic_sampling=False, minibatch_size=64, kl_coef=0.1)
    config = _train_config(tmp_path, first, iterations=1, eval_episodes_per_task=0, algorithm=kl)
    pool = make_pool(config.rollout, "tabletop", first, config.temperature, config.seed)
    try:
        Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False).run()
        newer = save_checkpoint(sft_run / "step_000002", make_policy().model, policy.action_tokenizer,
                                extra={"trained_tasks": ["Reach"]})
        point_latest(sft_run, newer.name, 2)
        resumed = Trainer(_train_config(tmp_path, sft_run, iterations=2, eval_episodes_per_task=0, algorithm=kl),
                          pool, eval_state_counter("tabletop"), resume=True, show_progress=False)
        assert resumed.iteration == 1 and resumed.config.init_checkpoint == first
        resumed.run()
    finally:
        pool.close()
    lines = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2] and lines[-1]["ref_kl"] >= 0


def test_trainer_evaluates_extra_greedy_decodings(tmp_path, tiny_checkpoint):
    own = load_checkpoint(tiny_checkpoint)[0].config.greedy_decoding
    other = "expected" if own == "argmax" else "argmax"
    config = _train_config(tmp_path, tiny_checkpoint, iterations=1, eval_decodings=(own, other))
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed)
    try:
        summary = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False).run()
        assert pool.workers[0].policy.config.greedy_decoding == own  # the override ends with the evaluation
    finally:
        pool.close()
    for row in summary["eval_history"]:
        assert set(row["by_decoding"]) == {own, other}
        assert row["by_decoding"][own]["per_task"] == row["per_task"]  # greedy and on the same states: identical
        assert row["by_decoding"][other]["per_task"]["Reach"]["episodes"] == 2
    with pytest.raises(ValueError, match="unknown eval_decodings"):
        _train_config(tmp_path, tiny_checkpoint, eval_decodings=("median",))


def test_dynamic_sampling_skips_uniform_groups(tmp_path, tiny_checkpoint):
    # an untrained policy fails every Reach episode: every group is uniform, nothing to learn from
    config = _train_config(tmp_path, tiny_checkpoint, algorithm=AlgorithmConfig(dynamic_sampling=True),
                           max_sampling_rounds=2)
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed)
    try:
        trainer = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False)
        trainer.sync()
        rollout = trainer.rollout()
    finally:
        pool.close()
    assert rollout.sampled_success == 0.0 and rollout.batch is None
    assert rollout.sampled_groups == 2 and rollout.kept_groups == 0 and rollout.rounds == 2
    assert trainer.learn(rollout) == {}


class _ScriptedPool:
    """A stand-in pool (the real ones run in the tests around this one) whose rounds return episodes
    with scripted successes, so the trainer's choice of groups can be checked exactly."""

    node_ids = ["local"]
    slots_per_worker = 8

    def __init__(self, rounds: list[list[bool]]):
        self.rounds = iter(rounds)

    def set_weights(self, state_dict, version):
        self.version = version

    def collect(self, shares, sampling_seed=None):
        from vla_rl.core.types import TrajectoryBatch
        from vla_rl.rollout.collector import RolloutStats

        success = np.array(next(self.rounds))
        count, steps = len(success), 2
        batch = TrajectoryBatch(
            images={"agentview": np.zeros((count, steps, 8, 8, 3), np.uint8)},
            proprio=np.zeros((count, steps, 8), np.float32), instructions=["reach"] * count,
            action_tokens=np.zeros((count, steps, 7), np.int64), actions=np.zeros((count, steps, 1, 7), np.float32),
            old_logprobs=np.zeros((count, steps, 7), np.float32),
            rewards=np.stack([np.zeros(count), success.astype(float)], 1).astype(np.float32),
            mask=np.ones((count, steps), bool), success=success, task_specs=[s for share in shares for s in share],
            policy_version=self.version)
        return [(batch, RolloutStats(env_steps=count * steps))]


@pytest.mark.parametrize("keep_surplus", [False, True])
def test_second_sampling_round_keeps_surplus_informative_groups_when_asked(tmp_path, tiny_checkpoint, keep_surplus):
    mixed, uniform = [True, False], [False, False]
    rounds = [mixed + mixed + uniform + uniform, mixed + uniform + mixed + mixed]  # 4 groups of 2 per round
    config = _train_config(tmp_path, tiny_checkpoint, algorithm=AlgorithmConfig(dynamic_sampling=True),
                           groups_per_iteration=3, max_sampling_rounds=3, keep_surplus_groups=keep_surplus)
    trainer = Trainer(config, _ScriptedPool(rounds), eval_state_counter("tabletop"), show_progress=False)
    trainer.sync()
    rollout = trainer.rollout()
    assert rollout.rounds == 2 and rollout.sampled_groups == 8 and rollout.informative_groups == 5
    assert rollout.kept_groups == (5 if keep_surplus else 3)
    assert len(rollout.batch.success) == 2 * rollout.kept_groups and rollout.batch.success.sum() == rollout.kept_groups


def test_stale_rollouts_are_refused(tmp_path, tiny_checkpoint):
    config = _train_config(tmp_path, tiny_checkpoint)
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed)
    try:
        trainer = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False)
        pool.set_weights(trainer.policy.model.state_dict(), version=5)  # workers ahead of the learner
        with pytest.raises(RuntimeError, match="stale rollout"):
            trainer.rollout()
    finally:
        pool.close()


def test_checkpoint_every_zero_checkpoints_only_the_end_and_bad_values_are_refused(tmp_path, tiny_checkpoint):
    with pytest.raises(ValueError, match="checkpoint_every must be >= 0"):
        _train_config(tmp_path, tiny_checkpoint, checkpoint_every=-1)
    with pytest.raises(ValueError, match="gae needs dynamic_sampling: false"):
        AlgorithmConfig(estimator="gae")
    config = _train_config(tmp_path, tiny_checkpoint, checkpoint_every=0, eval_every=0, eval_episodes_per_task=0)
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed)
    try:
        Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False).run()
        with pytest.raises(FileExistsError, match="holds a previous run .*continue it with --resume"):
            Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False)  # would mix two runs
    finally:
        pool.close()
    assert sorted(p.name for p in (tmp_path / "rl").glob("iter_*")) == ["iter_000002"]


@pytest.mark.parametrize("estimator", ["rloo", "gae"])
def test_alternative_estimators_update(estimator):
    from vla_rl.train.learner import ValueHead

    policy = make_policy(seed=5)
    with TabletopVecEnv(VecEnvConfig(num_envs=4, num_workers=0, image_size=32)) as env:
        batch, _ = collect(policy, env, [TaskSpec("Reach", 2, "train")] * 4)
    batch.rewards[:] = 0.0
    batch.rewards[2, 0] = 1.0
    value_head = ValueHead(policy.model.config.language_model.hidden_size) if estimator == "gae" else None
    parameters = list(policy.model.parameters()) + (list(value_head.parameters()) if value_head else [])
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    algorithm = AlgorithmConfig(estimator=estimator, minibatch_size=64, dynamic_sampling=estimator != "gae")
    stats = update(policy, optimizer, batch, np.zeros(4, int), algorithm, torch.Generator().manual_seed(0),
                   value_head=value_head)
    assert all(np.isfinite(v) for v in stats.values())
    assert stats["advantage_abs_mean"] > 0
    if estimator == "gae":
        assert stats["value_loss"] > 0 and value_head.linear.bias.abs().item() > 0  # the value head learned


@pytest.mark.parametrize("wrist_view", [False, True], ids=["agent-view-critic", "wrist-view-critic"])
def test_trainer_with_the_critic_as_reward_source(tmp_path, tiny_checkpoint, wrist_view):
    from vla_rl.reward.critic import CriticConfig, ProgressCritic, save_critic
    from vla_rl.reward.sources import RewardConfig

    torch.manual_seed(0)
    critic_path = save_critic(tmp_path / "critic", ProgressCritic(CriticConfig(image_size=32, hidden_size=32,
                                                                               layers=1, heads=2, wrist_view=wrist_view)))
    config = _train_config(tmp_path, tiny_checkpoint, iterations=1, eval_episodes_per_task=0,
                           reward=RewardConfig(source="critic", critic_checkpoint=critic_path, done_bonus=1.0))
    # the pool renders the wrist camera for a critic that reads it (the tiny policy does not)
    pool = make_pool(config.rollout, "tabletop", tiny_checkpoint, config.temperature, config.seed,
                     reward=config.reward)
    try:
        trainer = Trainer(config, pool, eval_state_counter("tabletop"), show_progress=False)
        trainer.sync()
        rollout = trainer.rollout()
    finally:
        pool.close()
    batch = rollout.batch
    # dense critic rewards on real steps (an untrained critic is never exactly zero), none on padding
    assert np.all(batch.rewards[~batch.mask] == 0) and np.count_nonzero(batch.rewards[batch.mask]) > 0
    assert batch.final_frames is not None and batch.final_frames.shape[1:] == (32, 32, 3)
    assert ("wrist" in batch.images) == wrist_view and (batch.final_wrist_frames is not None) == wrist_view
    assert trainer.seconds_reward > 0


@pytest.mark.parametrize("bad, fragment", [({"clip_low": 1.0}, "clip_low"), ({"clip_high": 0.0}, "clip_high"),
                                           ({"loss_aggregation": "sum"}, "loss_aggregation"),
                                           ({"warmup_steps": -1}, "warmup_steps"), ({"epochs": 0}, "epochs")])
def test_algorithm_config_refuses_bad_values(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        AlgorithmConfig(**bad)
