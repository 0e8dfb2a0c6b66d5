"""Pool several runs of ``compare_reward_sources.py`` (other GRPO seeds, same design) into mean gains.

One run's ratio is noisy: each gain carries several points of evaluation noise and the sim-success
gain itself varies by seed, so the issue's ">= 80% of the truth's gain" is judged on the mean gains.
The runs must share the SFT checkpoint, tasks, iterations and evaluation size, and each must hold its
own sim_success row (a run that borrowed it with ``--reference`` pairs with that run's seed).

    python benchmarks/pool_reward_comparisons.py runs/compare26w runs/compare26w_s1 runs/compare26w_s2 \\
        [--source critic]

Prints one JSON line: the compared source's mean gain, the sim-success mean gain as its baseline, their
ratio, and every run's own gains, seed and ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import emit  # noqa: E402

DESIGN_KEYS = ("init_checkpoint", "tasks", "iterations", "eval_episodes_per_task")


def load_pairs(directories: list[Path], source: str) -> list[dict]:
    """Each run's ``{"seed", "sim_gain", "gain"}``; raises if a run lacks a row or the designs differ."""
    pairs, design = [], None
    for directory in directories:
        path = directory / "comparison.json" if directory.is_dir() else directory
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no comparison.json (run benchmarks/compare_reward_sources.py)")
        rows = {row["source"]: row for row in json.loads(path.read_text())}
        missing = [name for name in ("sim_success", source) if name not in rows]
        if missing:
            raise ValueError(f"{path}: no {' or '.join(missing)} row (sources there: {', '.join(rows)})")
        config = rows[source]["config"]
        this_design = {key: config[key] for key in DESIGN_KEYS}
        if design is not None and this_design != design:
            raise ValueError(f"{path}: another design than the first run's: {this_design} vs {design}")
        design = this_design
        pairs.append({"run": str(directory), "seed": config["seed"], "sim_gain": rows["sim_success"]["gain_points"],
                      "gain": rows[source]["gain_points"]})
    seeds = [pair["seed"] for pair in pairs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs repeat a seed ({seeds}): pool runs of different seeds")
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="output directories (or comparison.json files)")
    parser.add_argument("--source", default="critic", choices=["critic", "world_model"])
    args = parser.parse_args()
    try:
        pairs = load_pairs(args.runs, args.source)
    except (OSError, ValueError) as error:  # a wrong or missing run: its message, not a traceback
        parser.error(str(error))
    mean_gain = sum(pair["gain"] for pair in pairs) / len(pairs)
    mean_sim_gain = sum(pair["sim_gain"] for pair in pairs) / len(pairs)
    per_run = [{**pair, "gain": round(pair["gain"], 1), "sim_gain": round(pair["sim_gain"], 1),
                "ratio": round(pair["gain"] / pair["sim_gain"], 3) if pair["sim_gain"] else None} for pair in pairs]
    emit(f"{args.source}_reward_success_gain_points_mean", mean_gain, "points",
         "sim_reward_success_gain_points_mean", mean_sim_gain, runs=len(pairs),
         runs_at_or_above_0_8=sum(1 for row in per_run if row["ratio"] is not None and row["ratio"] >= 0.8),
         per_run=per_run)


if __name__ == "__main__":
    main()
