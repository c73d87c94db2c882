#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv with the pinned stack on first use, then runs a job.
#   bash tools/run.sh demo  [extra flags]   the main job: image -> 4D with the bundled tiny model on the bundled
#                                           held-out example (video, pointmaps, cameras, PLY/GLB, novel-view video);
#                                           installs the runtime set only (requirements.txt)
#   bash tools/run.sh test  [pytest args]   the test suite (what .ci/run calls); adds the PyTorch oracle
#                                           (requirements-test.txt, torch on its CPU build: constraints.txt)
#   bash tools/run.sh lint  [ruff args]     `ruff check .` (pyproject.toml's rules) in the same environment
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FOURDNEX_VENV:-.venv}
PY="$VENV/bin/python"
job=${1:-}; shift || true
case "$job" in
  demo) sets=(requirements.txt) ;;
  test|lint) sets=(requirements.txt requirements-test.txt) ;;
  *) echo "usage: bash tools/run.sh {demo|test|lint} [args]" >&2; exit 2 ;;
esac
# one stamp per requirement set, so `demo` never pulls the oracle and `test` adds it to the same venv
stamp="$VENV/.stamp-$job.sha256"
want=$(cat "${sets[@]}" constraints.txt pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [[ ! -x "$PY" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setting up $VENV for '$job' (pinned: ${sets[*]})..." >&2
  [[ -x "$PY" ]] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "${sets[@]/#/-r}" -c constraints.txt
  "$PY" -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
case "$job" in
  # --overwrite: the job always writes out/demo, so a second run replaces the previous demo result (only a folder
  # holding a result of ours is replaced; see README)
  demo) exec "$PY" -m fourdnex_jax generate --image examples/synth_heldout_000000.png --out out/demo --overwrite "$@" ;;
  test) exec "$PY" -m pytest "$@" ;;
  lint) exec "$VENV/bin/ruff" check "$@" . ;;
esac
