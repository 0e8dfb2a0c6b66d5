"""RolloutWorker's env restarts: counted per call, and replacement envs seeded from the round's seed.

The collector and evaluation are stubs that raise EnvCrashed when told to; the real crash path (a
SIGKILLed env worker) is covered by tests/distributed/test_faults.py."""

import contextlib

import torch

from vla_rl.core.protocols import EnvCrashed
from vla_rl.core.types import EnvSpec
from vla_rl.rollout import worker as worker_module
from vla_rl.rollout.collector import RolloutStats
from vla_rl.rollout.worker import RolloutWorker


class StubEnv:
    """Two slots and a noise generator of its own (as a world-model env has)."""

    def __init__(self):
        self.spec = EnvSpec(num_envs=2, cameras=("agentview",), image_size=32, proprio_dim=8, action_dim=7,
                            control_hz=10, max_episode_steps=10)
        self.generator = torch.Generator().manual_seed(12345)

    def close(self):
        pass


class StubPolicy:
    def __init__(self):
        self.generator = torch.Generator()

    @contextlib.contextmanager
    def greedy_decoding_as(self, decoding):
        yield

    def predict_actions(self, obs):
        raise AssertionError("not called: evaluation is stubbed")


def stub_worker(monkeypatch, crashes):
    """A worker whose successive collect/evaluate runs crash as ``crashes`` says (True = crash; runs
    past its end succeed); returns it and the list of envs each run got."""
    crashes, envs = list(crashes), []

    def run(env):
        envs.append(env)
        if crashes and crashes.pop(0):
            raise EnvCrashed("stub env crashed")

    def fake_collect(policy, env, wave, **kwargs):
        run(env)
        return list(wave), RolloutStats(env_steps=len(wave))

    def fake_evaluate(predict, env, specs):
        run(env)
        return type("Result", (), {"episodes": list(specs)})()

    monkeypatch.setattr(worker_module, "collect", fake_collect)
    monkeypatch.setattr(worker_module, "evaluate", fake_evaluate)
    monkeypatch.setattr(worker_module, "concat_batches", lambda batches: [x for b in batches for x in b])
    return RolloutWorker(StubEnv, StubPolicy, seed=4), envs


def test_restarts_during_evaluation_do_not_leak_into_training_stats(monkeypatch):
    worker, _ = stub_worker(monkeypatch, [True])  # the evaluation's first run crashes
    assert worker.evaluate(["e0", "e1"]) == ["e0", "e1"]
    _, stats = worker.collect(["a", "b", "c"], sampling_seed=1)
    assert stats.env_restarts == 0


def test_restarts_are_counted_per_collect_call(monkeypatch):
    worker, _ = stub_worker(monkeypatch, [False, True, True])  # waves of 2: the second crashes twice
    batch, stats = worker.collect(["a", "b", "c"], sampling_seed=1)
    assert batch == ["a", "b", "c"] and stats.env_restarts == 2
    _, stats = worker.collect(["a", "b"], sampling_seed=2)
    assert stats.env_restarts == 0


def replacement_draw(monkeypatch, sampling_seed, evaluation_crash=False):
    """What the env built after a crash in a round with ``sampling_seed`` samples first."""
    # evaluation: (crash, then run again) or run; collect: crash, then run again
    worker, envs = stub_worker(monkeypatch, ([True, False] if evaluation_crash else [False]) + [True])
    worker.evaluate(["e0"])
    worker.collect(["a"], sampling_seed=sampling_seed)
    assert envs[-1] is not envs[-2]  # the crash built a replacement
    return torch.rand(3, generator=envs[-1].generator)


def test_replacement_envs_are_seeded_from_the_rounds_sampling_seed(monkeypatch):
    first = replacement_draw(monkeypatch, sampling_seed=7)
    assert torch.equal(first, replacement_draw(monkeypatch, sampling_seed=7))
    assert not torch.equal(first, replacement_draw(monkeypatch, sampling_seed=8))
    # an earlier crash (in an evaluation) does not change what the round's replacement samples
    assert torch.equal(first, replacement_draw(monkeypatch, sampling_seed=7, evaluation_crash=True))


def test_calls_without_a_sampling_seed_give_replacements_different_seeds(monkeypatch):
    worker, envs = stub_worker(monkeypatch, [True, False, True, False])  # each call crashes once
    worker.collect(["a"])
    first = torch.rand(3, generator=envs[-1].generator)
    worker.collect(["a"])
    assert envs[-1] is not envs[1]  # a second replacement
    assert not torch.equal(first, torch.rand(3, generator=envs[-1].generator))
