#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, on a machine with an NVIDIA GPU (one JSON line each):
# EGL rendering, bf16 batched decoding, a GRPO iteration with the tiny and the ~110M VLA.
#   bash benchmarks/gpu_figures.sh [out.jsonl]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/gpu.jsonl}"
mkdir -p "$(dirname "$out")"
py=.venv/bin/python
export MUJOCO_GL=egl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
{
  $py benchmarks/bench_envs.py
  $py benchmarks/bench_decode.py --device cuda --precision bf16
  $py benchmarks/bench_decode.py --device cuda --precision fp32
  $py benchmarks/bench_grpo.py --model tiny --gpus-per-worker 0.25
  $py benchmarks/bench_grpo.py --model mid --gpus-per-worker 0.25
} | grep '^{' | tee "$out"
