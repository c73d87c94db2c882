#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on the device machine, in one call (benchmarks/README.md has the exact
# `run`). Installs the carried wheels (.whl/, listed in benchmarks/gpu_wheels.txt) into /tmp/site; keeps the
# machine's flax when it runs our model code (`--probe`), else falls back to the carried one (.whl/fallback/);
# then runs every stage under the total budget (extra arguments go to gpu_check.py, e.g. --budget 200
# --stages train). Writes gpu_check.json (after every stage) and gpu_check.log to $OUT (out/benchmark without it).
set -uo pipefail
cd "$(dirname "$0")/.."
dest="${OUT:-out/benchmark}"
mkdir -p "$dest"
log="$dest/gpu_check.log"
py="${PYTHON:-python3}"  # the device machine's python3 holds jax with CUDA and torch
if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check.sh: installing the carried wheels failed" | tee -a "$log"; exit 1; }
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# Each stage runs alone on the GPU in its own process: let JAX's allocator take more than its default 75%.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
if ! JAX_PLATFORMS=cpu timeout 120 "$py" -m benchmarks.gpu_check --probe 2>&1 | tee -a "$log"; then
  if compgen -G ".whl/fallback/flax-*.whl" >/dev/null; then
    echo "gpu_check.sh: the machine's flax failed the probe; using the carried one" | tee -a "$log"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site_flax \
      .whl/fallback/flax-*.whl && export PYTHONPATH="/tmp/site_flax${PYTHONPATH:+:$PYTHONPATH}"
    JAX_PLATFORMS=cpu timeout 120 "$py" -m benchmarks.gpu_check --probe 2>&1 | tee -a "$log" \
      || echo "gpu_check.sh: the probe fails with the carried flax too; running anyway (stages record errors)" \
      | tee -a "$log"
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv 2>&1 | tee -a "$log"
"$py" -m benchmarks.gpu_check --out "$dest/gpu_check.json" "$@" 2>&1 | tee -a "$log"
exit "${PIPESTATUS[0]}"
