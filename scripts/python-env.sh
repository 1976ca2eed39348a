#!/usr/bin/env bash
# The Python environment of metarim's Python package: a venv (default .venv-python at the
# repository root) with the package built from ./python (maturin, through pip) and what its
# tests compare against: numpy, gymnasium, minigrid==3.2.0, pytest, tensorboard (its reader
# checks the event files `metarim train` writes), and torch (PyPI's wheel; skipped with
# NO_TORCH=1). Re-running reuses the venv and rebuilds the package only. pip keeps no cache
# (--no-cache-dir): torch's wheels with their CUDA libraries are several GB, and a second copy in
# ~/.cache/pip once filled a CI machine's disk.
#
# usage: bash scripts/python-env.sh [VENV]      then: VENV/bin/pytest -q python/tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-python}"
cd "$ROOT"

if ! command -v python3 >/dev/null; then
    echo "python-env: python3 (>= 3.9) is needed" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "python-env: creating $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --no-cache-dir --upgrade pip
fi
want=(numpy "gymnasium>=1.0" "minigrid==3.2.0" pytest tensorboard)
if [ "${NO_TORCH:-0}" != 1 ]; then
    want+=(torch)
fi
if ! "$VENV/bin/python" -c "import numpy, gymnasium, minigrid, pytest, tensorboard$([ "${NO_TORCH:-0}" != 1 ] && echo ', torch')" 2>/dev/null; then
    echo "python-env: installing ${want[*]} (torch is a large download the first time)" >&2
    echo "python-env: free disk before the install: $(df -h --output=avail "$VENV" | tail -1 | tr -d ' ')" >&2
    "$VENV/bin/python" -m pip install -q --no-cache-dir "${want[@]}"
fi
echo "python-env: building and installing ./python (maturin)" >&2
"$VENV/bin/python" -m pip install -q --no-cache-dir ./python
"$VENV/bin/python" -c "import metarim; print(f'python-env: metarim {metarim.__version__}, {len(metarim.level_ids())} levels, in $VENV')"
