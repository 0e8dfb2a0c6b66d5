"""A rollout worker's policy forward (``VLAPolicy.act`` on a batch of 16 observations) in a process
that also holds a tabletop vector env with its MuJoCo renderers, with glibc's allocator thresholds fixed
(``vla_rl.core.memory.keep_freed_memory``, what every worker does now) against glibc's defaults
(the baseline). Each variant runs in its own fresh process, because the setting is process-wide and
glibc reads it once. The model is the quickstart's architecture (localiser, image_tokens false) with
random weights, on one torch thread as in a rollout worker.

    python benchmarks/bench_policy_forward.py [--calls 20] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emit  # noqa: E402


def measure(batch: int, calls: int, keep_memory: bool) -> dict:
    """Runs in the child process: ms per ``act`` call and minor page faults per call."""
    import resource
    import time

    import sim_envs  # noqa: F401  (headless GL default before mujoco loads)
    import torch

    from vla_rl.core.memory import keep_freed_memory
    from vla_rl.core.types import TaskSpec
    from sim_envs.vector import SimVecEnv, VecEnvConfig

    if keep_memory:
        keep_freed_memory()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = quickstart_policy()
    specs = [TaskSpec("Reach" if i % 2 else "PressButton", i, "train") for i in range(batch)]
    with SimVecEnv(VecEnvConfig(num_envs=batch, num_workers=0, image_size=64)) as env:
        obs = env.reset(specs)
        policy.act(obs, explore=True)  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for _ in range(calls):
            policy.act(obs, explore=True)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    return {"ms_per_call": 1000 * seconds / calls, "minor_faults_per_call": (after.ru_minflt - before.ru_minflt) / calls,
            "kernel_ms_per_call": 1000 * (after.ru_stime - before.ru_stime) / calls}


def quickstart_policy():
    """The quickstart's VLA (``vla-rl quickstart --show-config``) with random weights."""
    import dataclasses

    import numpy as np
    import torch

    from vla_rl.cli.quickstart import QuickstartConfig
    from vla_rl.policy import ActionTokenizer, NormStats
    from vla_rl.policy.model import VLAModel
    from vla_rl.policy.policy import VLAPolicy

    config = QuickstartConfig().sft.model
    towers = tuple(dataclasses.replace(tower, pretrained="") for tower in config.vision_towers)  # unused: no image tokens
    model = VLAModel(dataclasses.replace(config, vision_towers=towers))
    with torch.no_grad():  # a pinhole looking down at the table, in place of the SFT's fitted one
        model.gripper_projection.copy_(torch.tensor([[80.0, 0, 0, 32], [0, -80.0, 0, 32], [0, 0, 0, 1]]))
    stats = NormStats(np.full(7, -1.0), np.full(7, 1.0), np.array([True] * 6 + [False]))
    return VLAPolicy(model.eval(), ActionTokenizer(config.action_vocab_size, stats, config.n_action_bins))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--child", choices=["fixed", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.batch, args.calls, args.child == "fixed")))
        return
    results = {}
    for variant in ("default", "fixed", "default", "fixed"):  # interleaved: the machine's load drifts
        done = subprocess.run([sys.executable, __file__, "--child", variant, "--calls", str(args.calls),
                               "--batch", str(args.batch)], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        results.setdefault(variant, []).append(row)
    best = {variant: min(rows, key=lambda r: r["ms_per_call"]) for variant, rows in results.items()}
    emit("policy_act_calls_per_s_kept_memory", 1000 / best["fixed"]["ms_per_call"], "calls/s",
         "policy_act_calls_per_s_glibc_default", 1000 / best["default"]["ms_per_call"], batch=args.batch,
         minor_faults_per_call={v: round(r["minor_faults_per_call"]) for v, r in best.items()},
         kernel_ms_per_call={v: round(r["kernel_ms_per_call"], 1) for v, r in best.items()}, torch_threads=1)


if __name__ == "__main__":
    main()
