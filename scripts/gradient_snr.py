"""How much of one GRPO update is signal? Collect several independent batches of groups from a policy
checkpoint (fresh training init states each), compute each batch's on-policy policy gradient, and
report the cosine between the gradients of every two batches, whole and per module, for each loss
aggregation.

Two independent estimates ``g_i = mu + noise_i`` have an expected cosine of about
``|mu|^2 / (|mu|^2 + E|noise|^2)``: near 1 when a batch pins the direction down, near 0 when an update
is mostly noise. Adam moves every weight by about ``lr`` per step whatever that ratio, so a low one
calls for a small learning rate, bigger batches or more of them (docs/training.md, quickstart session 13).

    python scripts/gradient_snr.py runs/quickstart/sft/step_001500 [--tasks Reach PressButton]
        [--batches 3] [--groups 8] [--group-size 8] [--max-decisions 0]

Single process; about 2 minutes for the defaults on 2 CPU cores. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "osmesa")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim_envs.vector import TabletopVecEnv, VecEnvConfig  # noqa: E402
from vla_rl.algos.advantages import episode_step_weights, informative_groups, ppo_clip_loss  # noqa: E402
from vla_rl.core import TaskSpec  # noqa: E402
from vla_rl.policy.checkpoint import load_checkpoint  # noqa: E402
from vla_rl.policy.policy import VLAPolicy  # noqa: E402
from vla_rl.rollout.collector import collect, step_obs, step_points  # noqa: E402
from vla_rl.train.learner import AlgorithmConfig, compute_advantages  # noqa: E402

AGGREGATIONS = ("token-mean", "episode-mean")


def module_of(name: str) -> str:
    """Parameter name -> the module the report groups it under (decoder layers one by one)."""
    parts = name.split(".")
    if parts[0] != "language_model":
        return parts[0]
    if parts[2:3] == ["layers"]:  # language_model.model.layers.<i>
        return ".".join(parts[:4])
    return ".".join(parts[:2])


def policy_gradient(policy, batch, group_ids: np.ndarray, aggregation: str) -> dict[str, torch.Tensor]:
    """The on-policy GRPO gradient (ratio 1, no clipping) of every parameter that gets one."""
    advantages = compute_advantages(batch, group_ids, AlgorithmConfig())
    episodes, steps = np.nonzero(batch.mask)
    weights = episode_step_weights(batch.mask)[episodes, steps] if aggregation == "episode-mean" else None
    policy.model.zero_grad(set_to_none=True)
    logprob = policy.log_prob(step_obs(batch, episodes, steps), torch.from_numpy(batch.action_tokens[episodes, steps]),
                              located_points=step_points(batch, episodes, steps)).token_logprob
    token_mask = torch.from_numpy(batch.token_mask(episodes, steps))  # as the learner: unexecuted chunk actions out
    loss = ppo_clip_loss(logprob, logprob.detach(), advantages[episodes, steps], token_mask,
                         step_weights=None if weights is None else torch.from_numpy(weights)).loss
    loss.backward()
    return {name: p.grad.detach().flatten().clone() for name, p in policy.model.named_parameters() if p.grad is not None}


def pairwise_cosines(gradients: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean cosine over batch pairs: ``all`` parameters, then each module."""
    modules: dict[str, list[str]] = {"all": sorted(gradients[0])}
    for name in sorted(gradients[0]):
        modules.setdefault(module_of(name), []).append(name)
    result = {}
    for module, names in modules.items():
        flat = [torch.cat([g[n] for n in names]) for g in gradients]
        result[module] = float(np.mean([torch.nn.functional.cosine_similarity(a, b, dim=0).item()
                                        for a, b in combinations(flat, 2)]))
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--tasks", nargs="+", default=["Reach", "PressButton"])
    parser.add_argument("--batches", type=int, default=3, help="independent batches (at least 2)")
    parser.add_argument("--groups", type=int, default=8, help="groups per batch, spread over the tasks")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-decisions", type=int, default=0, help="cut episodes as rollout.max_decisions does")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batches < 2:
        raise SystemExit("--batches must be at least 2: a cosine needs two independent gradients")
    model, action_tokenizer, _ = load_checkpoint(args.checkpoint)
    policy = VLAPolicy(model.eval(), action_tokenizer, temperature=args.temperature)
    policy.generator.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    episodes_per_batch = args.groups * args.group_size
    batches, described = [], []
    with TabletopVecEnv(VecEnvConfig(num_envs=episodes_per_batch, num_workers=0,
                                     image_size=model.config.image_size)) as env:
        for _ in range(args.batches):
            specs = [TaskSpec(args.tasks[g % len(args.tasks)], int(state), "train")
                     for g, state in enumerate(rng.integers(0, 10_000, args.groups)) for _ in range(args.group_size)]
            batch, _ = collect(policy, env, specs, max_decisions=args.max_decisions)
            group_ids = np.arange(len(specs)) // args.group_size
            lengths = batch.mask.sum(1)
            informative = informative_groups(batch.rewards.sum(1), group_ids)
            described.append({"success": float(batch.success.mean()),
                              "informative_groups": int(len(np.unique(group_ids[informative]))),
                              "mean_decisions_success": float(lengths[batch.success].mean()) if batch.success.any() else None,
                              "mean_decisions_failure": float(lengths[~batch.success].mean()) if (~batch.success).any()
                              else None})
            batches.append((batch, group_ids))
    cosines = {aggregation: pairwise_cosines([policy_gradient(policy, b, g, aggregation) for b, g in batches])
               for aggregation in AGGREGATIONS}
    for index, row in enumerate(described):
        print(f"batch {index}: success {row['success']:.2f}, informative groups {row['informative_groups']}/"
              f"{args.groups}, decisions per success {row['mean_decisions_success']}, per failure "
              f"{row['mean_decisions_failure']}")
    print(f"{'module':40s} " + " ".join(f"{a:>13s}" for a in AGGREGATIONS))
    for module in cosines[AGGREGATIONS[0]]:
        print(f"{module:40s} " + " ".join(f"{cosines[a][module]:+13.3f}" for a in AGGREGATIONS))
    result = {"figure": "gradient_cosine_between_batches", "checkpoint": str(args.checkpoint), "tasks": args.tasks,
              "batches": args.batches, "episodes_per_batch": episodes_per_batch, "max_decisions": args.max_decisions,
              "seed": args.seed, "batch_stats": described, "cosine": cosines}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
