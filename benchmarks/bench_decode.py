"""Actions/s of batched VLA decoding (batch 32, KV cache, sampling restricted to the 256 action
tokens) against OpenVLA's reference path (one image at a time through HF ``generate`` over the full
vocabulary), same model, same run. Target on the 2-core CPU: ratio >= 10.

    python benchmarks/bench_decode.py [--batch 32] [--repeats 3] [--device cpu|cuda] [--precision fp32|bf16]
                                      [--model tiny|mid]

``--device cuda --precision bf16``: the GPU figure (batched decoding under bf16 autocast against the
same per-sample reference path in fp32). ``--model mid``: the ~110M-parameter VLA of bench_learner.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import emit  # noqa: E402


def build_policy(seed: int = 0, device: str = "cpu", precision: str = "fp32", model_size: str = "tiny"):
    from bench_learner import model_config
    from vla_rl.policy import ActionTokenizer, NormStats
    from vla_rl.policy.model import VLAModel
    from vla_rl.policy.policy import VLAPolicy

    torch.manual_seed(seed)
    model = VLAModel(model_config(model_size)).eval().to(device)
    stats = NormStats(np.full(7, -1.0), np.full(7, 1.0), np.array([True] * 6 + [False]))
    return VLAPolicy(model, ActionTokenizer(model.config.action_vocab_size, stats), seed=seed, precision=precision)


def observations(batch: int):
    from vla_rl.core import ObsBatch

    rng = np.random.default_rng(0)
    texts = ["pick up the red block", "open the drawer that has a purple handle", "press the blue button",
             "put the yellow cube on top of the green cube"]
    return ObsBatch({"agentview": rng.integers(0, 255, (batch, 64, 64, 3), dtype=np.uint8)},
                    np.zeros((batch, 8), np.float32), [texts[i % len(texts)] for i in range(batch)])


@torch.no_grad()
def reference_generate(policy, obs) -> np.ndarray:
    """OpenVLA's predict_action: per image, build the multimodal prompt and call HF generate for
    action_dim new tokens (greedy, full vocabulary, HF's own KV cache), then detokenise."""
    model = policy.model
    actions = []
    for i in range(obs.batch_size):
        prefix = model.build_prefix({k: v[i:i + 1] for k, v in obs.images.items()}, obs.instructions[i:i + 1],
                                    obs.proprio[i:i + 1])
        generated = model.language_model.generate(
            inputs_embeds=prefix.embeds, attention_mask=prefix.mask, max_new_tokens=model.config.action_dim,
            min_new_tokens=model.config.action_dim, do_sample=False, pad_token_id=model.pad_token_id)
        ids = generated[0, -model.config.action_dim:].cpu().numpy()
        ids = np.clip(ids, policy.action_tokenizer.first_token_id, policy.action_tokenizer.vocab_size - 1)
        actions.append(policy.action_tokenizer.decode(ids))
    return np.stack(actions)


def rate(fn, obs, repeats: int) -> float:
    fn(obs)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _synchronise()
        start = time.perf_counter()
        fn(obs)
        _synchronise()
        best = min(best, time.perf_counter() - start)
    return obs.batch_size / best


def _synchronise() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per path; the best is kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="of the batched path")
    parser.add_argument("--model", default="tiny", choices=["tiny", "mid"])
    args = parser.parse_args()
    policy = build_policy(device=args.device, precision=args.precision, model_size=args.model)
    obs = observations(args.batch)
    batched = rate(lambda o: policy.act(o, explore=True), obs, args.repeats)
    policy.precision = "fp32"  # the reference is OpenVLA's per-sample path as published
    reference = rate(lambda o: reference_generate(policy, o), obs, args.repeats)
    params = sum(p.numel() for p in policy.model.parameters())
    emit("batched_decode_actions_per_s", batched, "actions/s", "openvla_per_sample_hf_generate_actions_per_s",
         reference, target_ratio=10.0, batch=args.batch, model_params=params, torch_threads=torch.get_num_threads(),
         device=args.device, precision=args.precision, model=args.model)


if __name__ == "__main__":
    main()
