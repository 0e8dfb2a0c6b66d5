"""How far has RL moved a policy from what its demos teach? Decode every checkpoint greedily on the
demos' own observations and compare the actions with the demonstrated ones, per action dimension.

A GRPO update is mostly noise (`scripts/gradient_snr.py`); over many updates that noise is a random
walk of the policy. On the demo states the SFT checkpoint's actions sit close to the expert's; a
checkpoint whose held-out success fell while its translation error on those states doubled has
drifted rather than learned. The gripper is reported apart (the mean command where the expert
closes, and how often it is below +0.5 there), since a weakened grip alone can drop every lift.

    python scripts/policy_drift.py --demos runs/demos50 --tasks Lift PickPlace \
        --checkpoints runs/sft23/step_008000 runs/tabletop_grpo23b/iter_000162 [--episodes 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla_rl.cli.factories import load_policy  # noqa: E402
from vla_rl.core.demo_file import read_demo_file  # noqa: E402
from vla_rl.core.types import ObsBatch  # noqa: E402

GRIPPER = 6  # action index: -1 open .. +1 closed


def demo_episodes(demos: Path, task: str, count: int) -> list:
    path = demos / f"{task}_demo.hdf5"
    if not path.is_file():
        raise FileNotFoundError(f"no demos for {task}: {path} is missing")
    episodes = []
    for episode in read_demo_file(path):
        if len(episodes) == count:
            break
        episodes.append(episode)
    return episodes


def drift_of(policy, episodes: list, decoding: str) -> dict:
    """Greedy actions on the demos' observations vs the demonstrated actions."""
    policy.model.config = dataclasses.replace(policy.model.config, greedy_decoding=decoding)
    predicted, demonstrated = [], []
    for episode in episodes:
        obs = ObsBatch(images={camera: episode.camera_images(camera) for camera in policy.config.cameras},
                       proprio=episode.proprio().astype(np.float32), instructions=[episode.instruction] * episode.num_steps)
        predicted.append(policy.predict_actions(obs)[:, 0])
        demonstrated.append(episode.actions)
    predicted, demonstrated = np.concatenate(predicted), np.concatenate(demonstrated)
    closed = demonstrated[:, GRIPPER] > 0
    error = np.abs(predicted - demonstrated)
    return {"translation_error": float(np.linalg.norm(predicted[:, :3] - demonstrated[:, :3], axis=1).mean()),
            "rotation_error": float(np.linalg.norm(predicted[:, 3:6] - demonstrated[:, 3:6], axis=1).mean()),
            "error_by_dimension": [round(float(e), 4) for e in error.mean(0)],
            "grip_where_expert_closes": float(predicted[closed, GRIPPER].mean()) if closed.any() else None,
            "weak_grip_fraction": float(np.mean(predicted[closed, GRIPPER] < 0.5)) if closed.any() else None,
            "steps": int(len(predicted))}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demos", type=Path, required=True, help="directory of <Task>_demo.hdf5 files")
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--checkpoints", nargs="+", required=True, help="policy checkpoints, the SFT one first")
    parser.add_argument("--episodes", type=int, default=8, help="demos per task")
    parser.add_argument("--decodings", nargs="+", default=["expected", "argmax"], choices=("expected", "argmax"))
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny batches: threads cost more than they give, and runs share the cores

    episodes = {task: demo_episodes(args.demos, task, args.episodes) for task in args.tasks}
    results = []
    for checkpoint in args.checkpoints:
        policy = load_policy(checkpoint, device="cpu")
        for task, task_episodes in episodes.items():
            for decoding in args.decodings:
                row = {"checkpoint": checkpoint, "task": task, "decoding": decoding, **drift_of(policy, task_episodes, decoding)}
                results.append(row)
                grip = ("expert never closes" if row["grip_where_expert_closes"] is None else
                        f"grip where expert closes {row['grip_where_expert_closes']:+.2f} (weak {row['weak_grip_fraction']:.2f})")
                print(f"{task:11s} {decoding:8s} translation err {row['translation_error']:.3f}  rotation err "
                      f"{row['rotation_error']:.3f}  {grip}  {checkpoint}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
