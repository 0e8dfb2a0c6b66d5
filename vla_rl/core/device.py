"""The torch device a model runs on, chosen by name (``auto``: the GPU when one is visible)."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N`` as they are.
    Any other name, or a CUDA device that is not there, is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    index = device.removeprefix("cuda:") if device.startswith("cuda:") else None
    if device not in ("cpu", "cuda") and not (index and index.isdigit()):
        raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if index is not None and int(index) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) are "
                         "visible")
    return device


__all__ = ["resolve_device"]
