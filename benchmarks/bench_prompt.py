"""The quickstart VLA's cost per decision with a short prompt (the instruction alone, ``prompt_template:
"{instruction}"``) against OpenVLA's template ("In: What action should the robot take to {instruction}?\\nOut:",
the default), same model, same run.

The tiny decoder reads [BOS, located points, proprio, prompt, 7 action tokens]; OpenVLA's template adds 12
tokens of fixed words to every decision, so the sequence is 26 tokens long instead of 14. Two figures:
- the policy update: forward and backward of the GRPO log-probs of 64 decisions (LoRA rank 8 on the decoder,
  as the quickstart's learner; 2 torch threads), in decisions/s;
- a rollout worker's ``act`` on 16 observations (localiser, prefix and 7 sampled tokens; 1 torch thread), in
  calls/s.
The model has random weights (the timing does not depend on them), the images are blank 64x64 frames (the
localiser's convolutions cost the same on any image) and the located points are given to the update, as
rollouts hand them to the learner.

    python benchmarks/bench_prompt.py [--repeats 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emit  # noqa: E402

INSTRUCTIONS = ["reach the red block", "press the blue button"]
SHORT_TEMPLATE = "{instruction}"


def measure(template: str, repeats: int) -> dict[str, float]:
    """Median seconds of one update of 64 decisions and of one ``act`` on 16 observations."""
    import numpy as np
    import torch

    from bench_policy_forward import quickstart_policy
    from vla_rl.core.types import ObsBatch
    from vla_rl.policy.lora import LoRAConfig, apply_lora

    torch.manual_seed(0)
    policy = quickstart_policy()
    policy.model.config = dataclasses.replace(policy.model.config, prompt_template=template)
    apply_lora(policy.model, LoRAConfig(rank=8))

    def observations(batch: int) -> ObsBatch:
        return ObsBatch(images={"agentview": np.zeros((batch, 64, 64, 3), np.uint8)},
                        instructions=[INSTRUCTIONS[row % 2] for row in range(batch)],
                        proprio=np.zeros((batch, 8), np.float32))

    batch = observations(64)
    points = np.full((64, 3, 2), 32.0, np.float32)
    tokens = torch.full((64, policy.config.num_action_tokens), policy.config.first_action_token_id + 128)
    torch.set_num_threads(2)
    policy.model.train()
    update = []
    for _ in range(repeats + 1):  # the first call warms the allocator up
        started = time.perf_counter()
        policy.log_prob(batch, tokens, located_points=points).token_logprob.sum().backward()
        update.append(time.perf_counter() - started)
    torch.set_num_threads(1)
    rollout = observations(16)
    act = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        policy.act(rollout, explore=True)
        act.append(time.perf_counter() - started)
    one = observations(1)
    with torch.no_grad():
        prefix = policy.model.build_prefix(one.images, one.instructions, one.proprio, points=points[:1])
    length = prefix.embeds.shape[1] + policy.config.num_action_tokens
    return {"update_s": float(np.median(update[1:])), "act_s": float(np.median(act[1:])), "tokens": length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    from vla_rl.policy.model import PROMPT_TEMPLATE

    short = measure(SHORT_TEMPLATE, args.repeats)
    openvla = measure(PROMPT_TEMPLATE, args.repeats)
    emit("quickstart_update_decisions_per_s_short_prompt", 64 / short["update_s"], "decisions/s",
         "OpenVLA's prompt template", 64 / openvla["update_s"], tokens=short["tokens"],
         baseline_tokens=openvla["tokens"])
    emit("quickstart_act_calls_per_s_short_prompt", 1 / short["act_s"], "calls/s (batch 16)",
         "OpenVLA's prompt template", 1 / openvla["act_s"], tokens=short["tokens"], baseline_tokens=openvla["tokens"])


if __name__ == "__main__":
    main()
