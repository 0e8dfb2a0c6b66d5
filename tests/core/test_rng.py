import torch

from vla_rl.core import rng


def test_restoring_the_saved_state_repeats_the_cpu_draws():
    state = rng.global_rng_state()
    first = torch.randn(5)
    torch.randn(3)
    rng.restore_global_rng_state(state)
    assert torch.equal(torch.randn(5), first)


def test_cuda_states_are_saved_and_restored_when_the_device_count_matches(monkeypatch):
    """Runs without a GPU: torch.cuda's calls are replaced, so what is checked is which of them the module makes."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["device 0", "device 1"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    state = rng.global_rng_state()
    assert state["cuda_rng"] == ["device 0", "device 1"]
    rng.restore_global_rng_state(state)
    assert restored == [["device 0", "device 1"]]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # another machine: its generators are left alone
    rng.restore_global_rng_state(state)
    rng.restore_global_rng_state({"torch_rng": state["torch_rng"]})  # a checkpoint from before CUDA states were kept
    assert len(restored) == 1
