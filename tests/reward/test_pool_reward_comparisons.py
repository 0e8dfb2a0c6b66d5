"""benchmarks/pool_reward_comparisons.py: mean gains over runs of compare_reward_sources.py, on hand-made
comparison files with hand-computed figures, and its refusals."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pool_reward_comparisons.py"


def write_run(directory: Path, seed: int, sim_gain: float, critic_gain: float, iterations: int = 100) -> Path:
    config = {"init_checkpoint": "runs/sft/step_001500", "tasks": ["Reach", "PressButton"],
              "iterations": iterations, "eval_episodes_per_task": 50, "seed": seed}
    rows = [{"source": "sim_success", "gain_points": sim_gain, "config": config},
            {"source": "critic", "gain_points": critic_gain, "config": config}]
    directory.mkdir()
    (directory / "comparison.json").write_text(json.dumps(rows))
    return directory


def pool(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True)


def test_mean_gains_ratio_and_per_run_figures(tmp_path):
    runs = [write_run(tmp_path / "a", 0, 23.0, 29.0), write_run(tmp_path / "b", 1, 12.0, 14.0),
            write_run(tmp_path / "c", 2, 29.0, 17.0)]
    result = pool(*runs)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["value"] == 20.0 and record["baseline_value"] == round(64 / 3, 3)
    assert record["ratio"] == round(20.0 / (64 / 3), 3)  # 0.938
    assert [row["ratio"] for row in record["per_run"]] == [round(29 / 23, 3), round(14 / 12, 3), round(17 / 29, 3)]
    assert record["runs_at_or_above_0_8"] == 2


def test_refuses_runs_of_another_design_a_repeated_seed_or_a_missing_row(tmp_path):
    first = write_run(tmp_path / "a", 0, 23.0, 29.0)
    longer = write_run(tmp_path / "b", 1, 12.0, 14.0, iterations=50)
    assert "another design" in pool(first, longer).stderr
    same_seed = write_run(tmp_path / "c", 0, 12.0, 14.0)
    assert "repeat a seed" in pool(first, same_seed).stderr
    sim_only = tmp_path / "d"
    sim_only.mkdir()
    (sim_only / "comparison.json").write_text(json.dumps([json.loads((first / "comparison.json").read_text())[0]]))
    assert "no critic row" in pool(first, sim_only).stderr
    assert "no comparison.json" in pool(tmp_path / "missing").stderr
