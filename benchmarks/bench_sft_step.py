"""One SFT step of the quickstart VLA with PyTorch's fused AdamW kernel (``vla_rl.core.optim.make_adamw``,
what ``train_sft`` uses) against the default single-tensor AdamW, same model, same batches, same run.

A step is what ``train_sft`` does with the quickstart's config: the loss of 32 demo decisions (the head reads
the labelled points) plus the localiser's loss on 8 more frames, backward, gradient clipping, AdamW. Every
step updates the whole tied 30,522 x 192 word embedding, which the unfused kernel walks about eight times.
Random weights and random images (the cost does not depend on them); the torch threads are the machine's.
The two variants alternate in rounds; the figure is each variant's median step time over all rounds.

    python benchmarks/bench_sft_step.py [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emit  # noqa: E402

BATCH, LOCALISER_FRAMES, IMAGE = 32, 8, 64
INSTRUCTIONS = ["reach the red block", "press the blue button", "lift the green cube"]


def synthetic_batch(model, generator):
    """A demo batch and a localiser batch shaped as ``train_sft`` feeds ``sft_loss``."""
    import torch

    points = model.config.localiser_maps + 1  # the named objects and the gripper

    def images(count: int) -> torch.Tensor:
        return torch.randint(0, 256, (count, IMAGE, IMAGE, 3), generator=generator, dtype=torch.uint8)

    def labels(count: int) -> torch.Tensor:
        return torch.rand((count, points, 2), generator=generator) * IMAGE

    first = model.config.first_action_token_id
    tokens = first + torch.randint(0, model.config.n_action_bins, (BATCH, model.config.action_dim), generator=generator)
    instructions = [INSTRUCTIONS[row % len(INSTRUCTIONS)] for row in range(BATCH)]
    proprio = torch.randn((BATCH, model.config.proprio_dim), generator=generator)
    localiser = (images(LOCALISER_FRAMES), instructions[:LOCALISER_FRAMES], labels(LOCALISER_FRAMES))
    return tokens, images(BATCH)[:, None], instructions, proprio, labels(BATCH), localiser


def step_seconds(fused: bool, steps: int, seed: int = 0) -> list[float]:
    """Seconds of each of ``steps`` SFT steps (after one warm-up step) with the chosen AdamW kernel."""
    import torch

    from bench_policy_forward import quickstart_policy
    from vla_rl.cli.quickstart import QuickstartConfig
    from vla_rl.core.optim import make_adamw
    from vla_rl.policy.sft import sft_loss

    torch.manual_seed(seed)
    config = QuickstartConfig().sft
    model = quickstart_policy().model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_adamw(trainable, config.lr, config.weight_decay, fused=fused)
    generator = torch.Generator().manual_seed(seed)
    seconds = []
    for _ in range(steps + 1):
        tokens, images, instructions, proprio, labels, localiser = synthetic_batch(model, generator)
        started = time.perf_counter()
        loss, _ = sft_loss(model, tokens, images, instructions, proprio, labels, config, localiser)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import numpy as np
    import torch

    from vla_rl.core.memory import keep_freed_memory

    keep_freed_memory()  # as every CLI command does
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for fused in (True, False):
            times[fused] += step_seconds(fused, args.steps)
    fused_s, unfused_s = float(np.median(times[True])), float(np.median(times[False]))
    emit("SFT steps/s, quickstart VLA, fused AdamW", 1.0 / fused_s, "steps/s",
         "single-tensor AdamW (torch default on CPU)", 1.0 / unfused_s,
         torch_threads=torch.get_num_threads(), steps_per_variant=len(times[True]))


if __name__ == "__main__":
    main()
