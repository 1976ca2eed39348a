#!/usr/bin/env bash
# Level-statistics comparison of metarim with Farama minigrid 3.2.0 (see scripts/level-stats.py).
# Creates .venv-minigrid (Python 3.11 if present) with minigrid==3.2.0 on first use, then runs
# the comparison; arguments are passed on (e.g. --count 200 --levels MiniGrid-DoorKey-8x8-v0,
# --self-test, --out -).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-minigrid"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import minigrid, gymnasium' 2>/dev/null; then
    PY="$(command -v python3.11 || command -v python3)"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "minigrid==3.2.0"
fi
cd "$ROOT"
exec "$VENV/bin/python" "$ROOT/scripts/level-stats.py" "$@"
