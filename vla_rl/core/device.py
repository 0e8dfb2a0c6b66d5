"""The torch device a model runs on, chosen by name (``auto``: the GPU when one is visible)."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; an unavailable CUDA device is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


__all__ = ["resolve_device"]
