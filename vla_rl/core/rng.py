"""torch's global random states for training checkpoints: the CPU generator and, on a GPU machine, every
CUDA device's. Noise drawn on a device (SFT's located-point and proprio noise with ``torch.randn_like``)
comes from that device's generator, so a resume that restored only the CPU one would draw other noise."""

from __future__ import annotations

from typing import Any

import torch


def global_rng_state() -> dict[str, Any]:
    """``{"torch_rng": CPU state, "cuda_rng": [one state per device] or None}``, to keep in a checkpoint."""
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_global_rng_state(state: dict[str, Any]) -> None:
    """Set what ``global_rng_state`` saved (``state`` may hold other keys too). The CUDA states are restored
    when this machine has the same number of devices; a checkpoint from a CPU run (or from before CUDA states
    were kept) leaves the CUDA generators as they are, since nothing in that run drew from them."""
    torch.set_rng_state(state["torch_rng"])
    cuda = state.get("cuda_rng")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
