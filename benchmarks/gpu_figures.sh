#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, on a machine with an NVIDIA GPU (one JSON line each):
# EGL rendering, bf16 vs fp32 batched decoding, a GRPO iteration with the tiny and the ~110M VLA
# (fp32 and bf16), the world-model env, and MJX at 1024 envs (float64, the default, and float32).
#   bash benchmarks/gpu_figures.sh [out.jsonl]
# PYTHON picks the interpreter (default .venv/bin/python). Each script has a time limit (seconds, first
# argument of `step`, scaled by LIMIT_SCALE), so one that hangs or fails costs only its own line.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/gpu.jsonl}"
mkdir -p "$(dirname "$out")"
: >"$out"
py="${PYTHON:-.venv/bin/python}"
scale="${LIMIT_SCALE:-1}"
export MUJOCO_GL=egl PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

step() {
  local limit=$(( $1 * scale )) started=$SECONDS
  shift
  echo "== $* (limit ${limit}s)" >&2
  timeout "$limit" "$py" "$@" | grep --line-buffered '^{' | tee -a "$out"
  local status=${PIPESTATUS[0]}
  echo "== exit $status after $((SECONDS - started)) s: $*" >&2
  if [ "$status" != 0 ]; then  # a killed Ray driver leaves its raylet and workers behind
    pkill -f 'ray/core/src/ray' 2>/dev/null; pkill -f 'ray/_private/workers' 2>/dev/null; sleep 1
  fi
  return 0
}

# Most wanted first: a session's device time may run out before the end.
step 60 benchmarks/bench_envs.py --rounds 1
step 50 benchmarks/bench_decode.py --device cuda --precision bf16
step 60 benchmarks/bench_decode.py --device cuda --precision bf16 --model mid
step 110 benchmarks/bench_grpo.py --model tiny --gpus-per-worker 0.25
step 130 benchmarks/bench_grpo.py --model mid --gpus-per-worker 0.25 --precision bf16
step 45 benchmarks/bench_decode.py --device cuda --precision fp32
step 60 benchmarks/bench_world_model.py --device cuda
step 90 benchmarks/bench_mjx.py --envs 1024 --steps 20
step 90 benchmarks/bench_mjx.py --envs 1024 --steps 20 --precision float32
