import pytest
import torch

from vla_rl.core.optim import fused_capable, load_optimizer_state, make_adamw


def _train(optimizer_factory, steps: int = 25):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3))
    optimizer = optimizer_factory(net.parameters())
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = net(torch.randint(0, 50, (6,), generator=generator)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net, optimizer


def test_fused_adamw_is_chosen_on_cpu_and_follows_the_default_kernel():
    fused_net, fused = _train(lambda p: make_adamw(p, 1e-2, 0.01))
    plain_net, plain = _train(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01))
    assert fused.param_groups[0]["fused"] and not plain.param_groups[0]["fused"]
    for a, b in zip(fused_net.parameters(), plain_net.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
        assert not torch.equal(a, torch.zeros_like(a))


def test_fused_only_for_plain_float_tensors_on_a_fused_device():
    assert fused_capable([torch.nn.Parameter(torch.zeros(3))])
    assert not fused_capable([torch.nn.Parameter(torch.zeros(3, device="meta"))])
    assert not fused_capable([])
    assert not make_adamw([torch.nn.Parameter(torch.zeros(3))], 1e-3, 0.0, fused=False).param_groups[0]["fused"]


def test_a_state_saved_by_the_unfused_kernel_keeps_the_fused_one_on_resume():
    _, plain = _train(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01), steps=3)
    net, fused = _train(lambda p: make_adamw(p, 1e-2, 0.01), steps=1)
    load_optimizer_state(fused, plain.state_dict())
    assert fused.param_groups[0]["fused"]
    assert fused.state_dict()["state"][0]["step"].item() == pytest.approx(3)
    fused.step()  # the loaded moments work with the fused kernel
