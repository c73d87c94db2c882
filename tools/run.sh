#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv with the pinned stack on first use, then runs a job.
#   bash tools/run.sh demo  [extra flags]   the main job: image -> 4D with the bundled tiny model on the bundled
#                                           held-out example (video, pointmaps, cameras, PLY/GLB, novel-view video)
#   bash tools/run.sh smoke [extra flags]   DiT smoke run on the embedded default (configs/tiny.py, random weights)
#   bash tools/run.sh test  [pytest args]   the test suite (what .ci/run calls)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FOURDNEX_VENV:-.venv}
PY="$VENV/bin/python"
STAMP="$VENV/.requirements.sha256"
want=$(cat requirements.txt requirements-test.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -x "$PY" || "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
  echo "setting up $VENV (pinned requirements; torch is the CPU build, test-only)..." >&2
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r requirements.txt -r requirements-test.txt -c constraints.txt
  "$PY" -m pip install -q --no-deps -e .
  echo "$want" > "$STAMP"
fi
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
job=${1:-}; shift || true
case "$job" in
  demo)  exec "$PY" tools/generate.py --image examples/synth_heldout_000000.png --out out/demo "$@" ;;
  smoke) exec "$PY" tools/smoke.py --config configs/tiny.py --out out/smoke "$@" ;;
  test)  exec "$PY" -m pytest "$@" ;;
  *) echo "usage: bash tools/run.sh {demo|smoke|test} [args]" >&2; exit 2 ;;
esac
