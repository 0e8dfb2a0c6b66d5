"""VLA policies: OpenVLA-compatible action tokenizer, the OpenVLA-shaped model, decoding, SFT."""

from vla_rl.policy.action_tokenizer import ActionTokenizer, NormStats

__all__ = ["ActionTokenizer", "NormStats"]
