"""An exponential moving average of the policy's plain weights over GRPO iterations: the policy that
is evaluated, checkpointed and deployed, while the rollouts keep sampling the current weights.

Why: one GRPO update is mostly noise here (the gradients of two independent batches have a cosine of
about 0.02, ``scripts/gradient_snr.py``), so the weights after the last update carry that update's
noise. Averaging the iterates (Polyak-Ruppert) keeps the drift they share and cancels the noise they
do not (docs/training.md, session 32).

The average is taken over the *merged* weights (LoRA adapters folded in, ``PolicyLearner.weights``),
so it is an average of the functions' weights, not of the adapters' two factors (the mean of B A is
not the mean of B times the mean of A). ``torch.lerp`` leaves a weight that never changes bit-exact.
"""

from __future__ import annotations

import torch


class WeightAverage:
    """``average <- average + (1 - decay) * (weights - average)`` once per iteration, from the weights the
    run started with; ``iteration`` is the last iteration folded in (a resumed run does not fold the same
    weights twice)."""

    def __init__(self, initial: dict[str, torch.Tensor], decay: float, iteration: int = 0):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must be in (0, 1), got {decay}")
        self.decay, self.iteration = decay, iteration
        self.weights = {key: value.detach().to("cpu", copy=True) for key, value in initial.items()}

    def update(self, weights: dict[str, torch.Tensor], iteration: int) -> None:
        if iteration <= self.iteration:
            return
        for key, value in weights.items():
            value = value.detach().to("cpu")
            if value.is_floating_point():
                self.weights[key].lerp_(value.to(self.weights[key].dtype), 1.0 - self.decay)
            else:  # counters and integer buffers: the latest
                self.weights[key] = value.clone()
        self.iteration = iteration

    def differing(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entries of ``weights`` that the average does not equal (those training moved): what a
        checkpoint holding the average must keep to resume training from ``weights``."""
        return {key: value.detach().to("cpu", copy=True) for key, value in weights.items()
                if not torch.equal(value.detach().to("cpu"), self.weights[key])}


def restore_training_weights(model: torch.nn.Module, saved: dict) -> dict[str, torch.Tensor]:
    """A checkpoint written with a weight average holds the average as ``model``'s weights and, in
    ``saved["training_weights"]``, the entries training had moved away from it. Puts those back into
    ``model`` (so LoRA adapters can be un-merged from them) and returns the average it held."""
    average = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
    _, unexpected = model.load_state_dict(saved["training_weights"], strict=False)
    if unexpected:
        raise ValueError(f"the checkpoint's training weights do not fit the model: {sorted(unexpected)[:5]}")
    return average


def load_last_update_weights(model: torch.nn.Module, checkpoint) -> None:
    """Put the last update's weights into ``model`` loaded from ``checkpoint``, a GRPO checkpoint written
    with ``weights_ema``, which holds the average as its model weights: to evaluate the two side by side
    (``vla-rl eval --last-update-weights``). A ValueError if the checkpoint holds no average."""
    from vla_rl.policy.checkpoint import read_training_state

    state = read_training_state(checkpoint) or {}
    saved = (state.get("rl") or {}).get("weights_average")
    if saved is None:
        raise ValueError(f"{checkpoint} holds no weight average (a GRPO checkpoint written with train.weights_ema): "
                         "its weights are already the last update's")
    restore_training_weights(model, saved)


__all__ = ["WeightAverage", "restore_training_weights", "load_last_update_weights"]
