#!/usr/bin/env bash
# The GPU benchmark run: Lovász-Softmax loss table, GPU memory, DeepLab-v3+ training step.
#
#   OUT=/path/to/results bash benchmarks/run_gpu.sh                       # on the GPU machine
#   OUT=/tmp/out JAX_PLATFORMS=cpu SMOKE=1 bash benchmarks/run_gpu.sh    # CPU smoke test, ~2 min
#
# Needs python with jax (CUDA), flax, optax, numpy, torch; no TensorFlow, no network. Runs from
# the repository root with PYTHONPATH=. (whatever the current directory). The whole run stays
# under BUDGET seconds (default 340, i.e. under 6 minutes): each step gets a `timeout` of what it
# needs at most or what is left, whichever is smaller, and the benchmarks append every row to
# $OUT/gpu_bench.md as soon as it is measured, so a step killed by its timeout keeps its rows.
#
# Files in $OUT (at most 8): env.txt (nvidia-smi -L, driver, versions), gpu_bench.md (the
# tables), gpu_bench.json (loss and memory rows), lovasz.log and train.log (each step's output).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:?set OUT to the directory for the results}
mkdir -p "$OUT"
BUDGET=${BUDGET:-340}
START=$SECONDS
TRAIN_RESERVE=${TRAIN_RESERVE:-140}   # seconds kept for the training step

if [ "${SMOKE:-0}" = 1 ]; then
  # Same steps and flags, CPU-sized: H, W / 10, two cases, the small DeepLab-v3+.
  BACKEND=cpu
  LOSS_ARGS=(--tiny --memory --cases voc_batch,cityscapes_batch --memory-cases voc_batch)
  TRAIN_ARGS=(--tiny)
else
  BACKEND=gpu
  LOSS_ARGS=(--quick)
  TRAIN_ARGS=(--quick)
fi

left() { echo $((BUDGET - (SECONDS - START))); }
cap() {  # cap WANT [RESERVE]: min(WANT, time left - RESERVE), at least 1
  local t=$(( $(left) - ${2:-0} ))
  [ "$t" -gt "$1" ] && t=$1
  [ "$t" -lt 1 ] && t=1
  echo "$t"
}

{
  echo "# run_gpu.sh $(date '+%Y-%m-%d %H:%M:%S'), backend $BACKEND, budget ${BUDGET}s"
  if command -v nvidia-smi >/dev/null; then
    timeout 15 nvidia-smi -L
    timeout 15 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  timeout "$(cap 40)" python - <<'PY'
import platform, sys
print("python", platform.python_version())
for name in ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "torch"):
  try:
    module = __import__(name)
    print(name, getattr(module, "__version__", "?"))
  except Exception as exc:  # noqa: BLE001
    print(name, "not importable:", exc)
try:
  import jax
  print("jax devices:", jax.devices(), jax.devices()[0].device_kind)
except Exception as exc:  # noqa: BLE001
  print("jax devices failed:", exc)
try:
  import torch
  print("torch cuda:", torch.version.cuda, torch.cuda.is_available(),
        torch.cuda.get_device_name() if torch.cuda.is_available() else "")
except Exception as exc:  # noqa: BLE001
  print("torch cuda failed:", exc)
print("tensorflow imported:", any(m == "tensorflow" or m.startswith("tensorflow.") for m in sys.modules))
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

T=$(cap 220 "$TRAIN_RESERVE")
echo "== bench_lovasz.py (timeout ${T}s)"
timeout -k 10 "$T" python benchmarks/bench_lovasz.py --backend "$BACKEND" "${LOSS_ARGS[@]}" \
  --no-train-step --out "$OUT/gpu_bench.md" --json "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/lovasz.log"
echo "== bench_lovasz.py exit status ${PIPESTATUS[0]} after $((SECONDS - START)) s"

T=$(cap 300 5)
echo "== bench_train_step.py (timeout ${T}s)"
timeout -k 5 "$T" python benchmarks/bench_train_step.py --backend "$BACKEND" "${TRAIN_ARGS[@]}" \
  --out "$OUT/gpu_bench.md" 2>&1 | tee "$OUT/train.log"
echo "== bench_train_step.py exit status ${PIPESTATUS[0]} after $((SECONDS - START)) s"
echo "(run_gpu.sh: $((SECONDS - START)) s in all)" >> "$OUT/gpu_bench.md"
