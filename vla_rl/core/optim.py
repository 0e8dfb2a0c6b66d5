"""AdamW with PyTorch's fused kernel wherever the parameters allow it.

The default (single-tensor) AdamW walks every parameter about eight times per step (moments, square
root, division, weight decay, ...). For the tiny VLA that is dominated by the tied 30,522 x 192 word
embedding, which every step updates in full: about 50 ms of an SFT step's 420 ms on a 2-core CPU. The
fused kernel does one pass (about 13 ms; ``benchmarks/bench_sft_step.py``). Same algorithm, same
hyper-parameters; the results differ from the unfused kernel by float rounding only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FUSED_DEVICES = ("cpu", "cuda")


def fused_capable(parameters: list[torch.Tensor]) -> bool:
    """Plain floating-point tensors on a device with a fused AdamW kernel (not sharded DTensors)."""
    return bool(parameters) and all(type(p.data) is torch.Tensor and p.is_floating_point()
                                    and p.device.type in FUSED_DEVICES for p in parameters)


def make_adamw(parameters: Iterable[torch.Tensor], lr: float, weight_decay: float,
               fused: bool | None = None) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``parameters``; ``fused=None`` picks the fused kernel when
    ``fused_capable``; ``fused=False`` leaves the choice to torch (single-tensor on CPU, foreach on CUDA)."""
    parameters = list(parameters)
    if fused is None:
        fused = fused_capable(parameters)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)`` that keeps this optimizer's kernel choice. A state saved by an
    unfused optimizer (an older checkpoint, a sharded learner) would otherwise switch the fused kernel off;
    and torch places the loaded step counters by the *saved* groups' kernel (on the CPU for an unfused one,
    where a fused CUDA kernel cannot read them), so the choice is written into the saved groups first."""
    if len(state["param_groups"]) != len(optimizer.param_groups):
        raise ValueError(f"the saved optimizer state has {len(state['param_groups'])} parameter groups; "
                         f"this optimizer has {len(optimizer.param_groups)}")
    kernels = [{key: group[key] for key in ("fused", "foreach") if key in group} for group in optimizer.param_groups]
    groups = [{**saved, **kernel} for saved, kernel in zip(state["param_groups"], kernels)]
    optimizer.load_state_dict({**state, "param_groups": groups})


__all__ = ["fused_capable", "load_optimizer_state", "make_adamw"]
