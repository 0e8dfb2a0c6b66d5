"""Does a policy find the named block, or has it memorised its training scenes?

For the first ``N`` init states of a split, reset Reach, take the policy's first greedy action, and
check which block its x-y direction points at most closely (3 blocks per scene: chance is 1/3).
Compare ``--split train`` (scenes the demos came from) with ``--split eval`` (held-out scenes).

    python scripts/probe_reach_direction.py CHECKPOINT [--split eval] [--states 50]
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--split", choices=("train", "eval"), default="eval")
    parser.add_argument("--states", type=int, default=50)
    args = parser.parse_args()

    from sim_envs.tabletop_env import TabletopEnv
    from vla_rl.core import ObsBatch
    from vla_rl.policy.checkpoint import load_checkpoint
    from vla_rl.policy.policy import VLAPolicy

    model, tokenizer, _ = load_checkpoint(args.checkpoint)
    policy = VLAPolicy(model, tokenizer, seed=0)
    env = TabletopEnv("Reach", image_size=model.config.image_size, wrist_camera="wrist" in model.config.cameras,
                      antialias=model.config.antialias)
    hits, cosines = 0, []
    for state in range(args.states):
        obs, _ = env.reset(options={"init_state_id": state, "split": args.split})
        batch = ObsBatch.from_env_obs(obs, env.instruction)
        direction = policy.predict_actions(batch)[0, 0, :2]
        direction = direction / (np.linalg.norm(direction) + 1e-9)
        to_blocks = np.asarray(env.layout["positions"]) - env.ee_pose()[0][:2]
        to_blocks /= np.linalg.norm(to_blocks, axis=1, keepdims=True)
        alignment = to_blocks @ direction
        hits += int(np.argmax(alignment) == env.layout["target"])
        cosines.append(alignment[env.layout["target"]])
    env.close()
    print(f"{args.split}: first action points at the named block in {hits}/{args.states} scenes "
          f"(chance {args.states / len(to_blocks):.0f}); mean cosine to it {np.mean(cosines):.2f}")


if __name__ == "__main__":
    main()
