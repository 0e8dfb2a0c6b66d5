"""``VLAPolicy``: the ``Policy`` contract over a ``VLAModel`` and its ``ActionTokenizer``.

``act`` decodes the whole batch at once (KV cache, sampling restricted to the action bins at the
configured temperature) and returns token ids, per-token log-probs and decoded actions ``[B, K, A]``
in the environments' convention (``VLAConfig.gripper_convention``: an OpenVLA model's gripper is mapped).
``log_prob`` recomputes the per-token log-probs (with gradients) and entropies of given tokens under
the same temperature, so PPO/GRPO ratios start at exactly 1 for on-policy data.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from vla_rl.core.types import LogProbOutput, ObsBatch, PolicyOutput
from vla_rl.policy.action_tokenizer import ActionTokenizer, gripper_to_env
from vla_rl.policy.model import VLAModel

GREEDY_DECODINGS = ("argmax", "expected")  # VLAConfig.greedy_decoding


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
        raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


class VLAPolicy:
    """``precision="bf16"``: decoding runs under bf16 autocast (weights stay as they are; the
    sampling arithmetic is fp32). Faster on GPUs; its log-probs differ from an fp32 learner's by the
    bf16 rounding, which the PPO ratio then sees as a small policy change."""

    def __init__(self, model: VLAModel, action_tokenizer: ActionTokenizer, temperature: float = 1.0,
                 seed: int | None = None, precision: str = "fp32"):
        config = model.config
        if action_tokenizer.vocab_size != config.action_vocab_size or action_tokenizer.n_bins != config.n_action_bins:
            raise ValueError(
                f"action tokenizer (vocab {action_tokenizer.vocab_size}, {action_tokenizer.n_bins} bins) does not "
                f"match the model (vocab {config.action_vocab_size}, {config.n_action_bins} bins)"
            )
        if action_tokenizer.action_dim != config.action_dim:
            raise ValueError(f"norm stats have {action_tokenizer.action_dim} dims, the model {config.action_dim}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.precision = precision
        self.model = model
        self.action_tokenizer = action_tokenizer
        self.temperature = temperature
        self.generator = torch.Generator(device=model.device)
        if seed is not None:
            self.generator.manual_seed(seed)

    @property
    def config(self):
        return self.model.config

    def act(self, obs: ObsBatch, *, explore: bool) -> PolicyOutput:
        """Tokens ``int64 [B, L]``, actions ``float32 [B, K, A]``, per-token logprob ``[B, L]``."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), torch.autocast(self.model.device.type, dtype=torch.bfloat16,
                                                        enabled=self.precision == "bf16"):
                # rollouts never need gradients; log_prob recomputes them
                prefix = self.model.build_prefix(obs.images, obs.instructions, obs.proprio)
                tokens, logprob = self.model.decode(prefix, self.temperature, sample=explore,
                                                    generator=self.generator)
        finally:
            self.model.train(was_training)
        # Inference tensors cannot enter autograd later (log_prob on these tokens): hand out copies.
        tokens, logprob = tokens.clone(), logprob.clone()
        ids = tokens.cpu().numpy()
        decoded = self.action_tokenizer.decode(ids.reshape(len(ids), self.config.chunk_size, self.config.action_dim))
        actions = gripper_to_env(decoded, self.config.gripper_convention)  # the env's gripper command
        points = None if prefix.points is None else prefix.points.float().cpu().numpy()
        return PolicyOutput(tokens=tokens, actions=actions, logprob=logprob, located_points=points)

    def log_prob(self, obs: ObsBatch, tokens: torch.Tensor, return_prefix_hidden: bool = False,
                 located_points=None):
        """Per-token log-probs and entropies ``[B, L]`` of ``tokens`` (with gradients); with
        ``return_prefix_hidden`` also the hidden state ``[B, D]`` at the last prefix token.
        ``located_points`` ``[B, P, 2]``: the points ``act`` found on these observations
        (``PolicyOutput.located_points``); the localiser then does not run again. That changes nothing:
        the points are detached, so no loss reaches the localiser and its weights are those of the rollout."""
        tokens = torch.as_tensor(tokens, device=self.model.device)
        prefix = self.model.build_prefix(obs.images, obs.instructions, obs.proprio, points=located_points)
        logits, hidden = self.model.teacher_forced_logits(prefix, tokens, return_prefix_hidden=True)
        logits = logits.float() / self.temperature
        log_probs = torch.log_softmax(logits, dim=-1)
        index = tokens - self.config.first_action_token_id
        if torch.any((index < 0) | (index >= self.config.n_action_bins)):
            raise ValueError("log_prob was given tokens outside the action-token range")
        chosen = log_probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        output = LogProbOutput(token_logprob=chosen, entropy=entropy)
        return (output, hidden) if return_prefix_hidden else output

    @contextlib.contextmanager
    def greedy_decoding_as(self, decoding: str | None):
        """Within the block greedy decoding picks bins by ``decoding`` (``argmax`` or ``expected``);
        ``None`` keeps the model's own ``VLAConfig.greedy_decoding``. Sampling is unaffected."""
        if decoding is None:
            yield self
            return
        if decoding not in GREEDY_DECODINGS:
            raise ValueError(f"unknown greedy decoding {decoding!r}; choose from {', '.join(GREEDY_DECODINGS)}")
        own = self.model.config
        self.model.config = dataclasses.replace(own, greedy_decoding=decoding)
        try:
            yield self
        finally:
            self.model.config = own

    def predict_actions(self, obs: ObsBatch) -> np.ndarray:
        """Greedy actions ``[B, K, A]`` (evaluation and deployment)."""
        with torch.no_grad():
            return self.act(obs, explore=False).actions
