#!/usr/bin/env bash
# Environment throughput: Farama minigrid 3.2.0 (Python) against metarim's `env bench`, both
# single-threaded, random actions, resets on episode end, on one level (default
# BabyAI-GoToLocal-v0). Prints both rates and their ratio.
#
# usage: bash scripts/bench-env-vs-minigrid.sh [LEVEL] [SECONDS]
# The Python side runs in .venv-minigrid (created on first use: gymnasium + minigrid==3.2.0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LEVEL="${1:-BabyAI-GoToLocal-v0}"
SECONDS_RUST="${2:-5}"
VENV="$ROOT/.venv-minigrid"
cd "$ROOT"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import minigrid" 2>/dev/null; then
    echo "bench: creating $VENV (gymnasium + minigrid==3.2.0)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q gymnasium "minigrid==3.2.0"
fi

echo "bench: minigrid $("$VENV/bin/python" -c 'import minigrid; print(minigrid.__version__)') (python, 1 thread, 5 s)" >&2
PY_OUT="$("$VENV/bin/python" "$ROOT/scripts/minigrid_bench.py" "$LEVEL" | tail -n 1)"  # minigrid prints sampling notes
echo "$PY_OUT"
PY_RATE="$(sed -n 's/.*: \([0-9.]*\) steps\/s.*/\1/p' <<<"$PY_OUT")"

echo "bench: metarim (rust, 1 thread, ${SECONDS_RUST} s)" >&2
RS_OUT="$(cargo run --quiet --release -p host -- env bench --level "$LEVEL" --threads 1 --seconds "$SECONDS_RUST")"
echo "$RS_OUT"
RS_RATE="$(sed -n 's/^env-bench: .* steps_per_sec=\([0-9.]*\) .*/\1/p' <<<"$RS_OUT" | tail -1)"

if [ -z "$PY_RATE" ] || [ -z "$RS_RATE" ]; then
    echo "bench: could not read both rates" >&2
    exit 1
fi
awk -v py="$PY_RATE" -v rs="$RS_RATE" -v lvl="$LEVEL" 'BEGIN {
    printf "bench: %s minigrid=%.0f steps/s metarim=%.0f steps/s ratio=%.0fx\n", lvl, py, rs, rs / py }'
