#!/usr/bin/env bash
# Benchmark (not a test): environment steps/s from Python of metarim.make_vec(LEVEL, 64)
# against minigrid 3.2.0 in gymnasium's SyncVectorEnv and AsyncVectorEnv (64 envs), same
# machine, same run, random actions, observations included. Builds the venv first
# (scripts/python-env.sh, without torch). Figures: docs/BENCHMARKS.md, "metarim from Python".
#
# usage: bash scripts/bench-python.sh [LEVEL] [SECONDS] [ROUNDS] [NUM_ENVS]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-python}"
NO_TORCH=1 bash "$ROOT/scripts/python-env.sh" "$VENV"
cd "$ROOT"
"$VENV/bin/python" scripts/bench-python.py "$@"
