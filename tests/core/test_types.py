import numpy as np
import pytest

from vla_rl.core.types import ObsBatch, StepResult, TaskSpec, TrajectoryBatch


def obs(batch=2, size=8):
    return ObsBatch({"agentview": np.zeros((batch, size, size, 3), np.uint8)}, np.zeros((batch, 8), np.float32),
                    ["a"] * batch)


def test_obs_batch_validates_shapes():
    assert obs().batch_size == 2
    with pytest.raises(ValueError, match="proprio"):
        ObsBatch({"agentview": np.zeros((2, 8, 8, 3), np.uint8)}, np.zeros((3, 8), np.float32), ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        ObsBatch({"agentview": np.zeros((2, 8, 8, 3), np.float32)}, np.zeros((2, 8), np.float32), ["a", "b"])
    assert obs(4).select([1, 3]).batch_size == 2


def test_step_result_rejects_terminated_and_truncated_together():
    flags = np.array([True, False])
    with pytest.raises(ValueError, match="both"):
        StepResult(obs(), np.zeros(2, np.float32), flags, flags.copy(), flags.copy())
    result = StepResult(obs(), np.zeros(2, np.float32), flags, ~flags, flags.copy())
    assert result.done.all()


def test_task_spec_validation():
    with pytest.raises(ValueError):
        TaskSpec("Lift", 0, "test")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TaskSpec("Lift", -1)


def test_trajectory_batch_shapes():
    b, t, l = 2, 5, 7
    kwargs = dict(
        images={"agentview": np.zeros((b, t, 8, 8, 3), np.uint8)}, proprio=np.zeros((b, t, 8), np.float32),
        instructions=["x", "y"], action_tokens=np.zeros((b, t, l), np.int64), actions=np.zeros((b, t, 1, 7)),
        old_logprobs=np.zeros((b, t, l), np.float32), rewards=np.zeros((b, t), np.float32),
        mask=np.ones((b, t), bool), success=np.zeros(b, bool), task_specs=[TaskSpec("Lift", 0)] * b,
    )
    assert list(TrajectoryBatch(**kwargs).lengths) == [t, t]
    with pytest.raises(ValueError, match="old_logprobs"):
        TrajectoryBatch(**{**kwargs, "old_logprobs": np.zeros((b, t, l + 1), np.float32)})
