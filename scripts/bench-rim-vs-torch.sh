#!/usr/bin/env bash
# RIM training-step throughput: PyTorch (CPU, torch_rim_ref.py) against metarim's
# `bench rim` (the batched cell in host::batch::rim), Paper dimensions (6 modules x 64, k=4,
# input 192, d_k 64, d_v 256, 4 comm heads x 32), steps 20, at batch 64 (THREADS64 threads,
# default nproc) and batch 1 (THREADS1 threads, default 1). One iteration on both sides:
# forward T steps + backward of sum_t mean(h_t^2) + one Adam step. Runs each side RUNS times
# (default 3), interleaved, and prints every run, the medians and the ratios; batch 64 is also
# run with 1 thread on both sides when THREADS64 is not 1.
#
# usage: bash scripts/bench-rim-vs-torch.sh
#   env: RUNS=3 THREADS64=$(nproc) THREADS1=1
#
# The Python side runs in .venv-torch (created on first use with torch from PyPI; if the full
# install fails, torch --no-deps plus its pure-Python dependencies). The reference script is
# scripts/torch_rim_ref.py.
# Note: torch_rim_ref.py picks its top-k from scores[:, :, 0], the null row's score, which is
# identically 0, so its selection is arbitrary: it is a speed anchor, not a semantic reference.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
THREADS64="${THREADS64:-$(nproc)}"
THREADS1="${THREADS1:-1}"
VENV="$ROOT/.venv-torch"
cd "$ROOT"

torch_ok() { "$VENV/bin/python" -c "import torch" 2>/dev/null; }
if [ ! -x "$VENV/bin/python" ] || ! torch_ok; then
    echo "bench: creating $VENV (torch from PyPI)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    if ! "$VENV/bin/python" -m pip install -q torch numpy || ! torch_ok; then
        echo "bench: full torch install failed; trying torch --no-deps + minimal deps" >&2
        "$VENV/bin/python" -m pip install -q --no-deps torch
        "$VENV/bin/python" -m pip install -q filelock typing-extensions sympy networkx jinja2 fsspec numpy
    fi
    torch_ok || { echo "bench: cannot import torch in $VENV" >&2; exit 1; }
fi

REF="$ROOT/scripts/torch_rim_ref.py"
echo "bench: reference $REF" >&2
echo "bench: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"

cargo build --quiet --release -p host
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/metarim"

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# batch threads torch_iters our_iters
run_case() {
    local batch="$1" threads="$2" titers="$3" oiters="$4" torch_rates="" our_rates="" out
    for _ in $(seq "$RUNS"); do
        out="$("$VENV/bin/python" "$REF" --batch "$batch" --steps 20 --iters "$titers" --threads "$threads")"
        echo "  $out"
        torch_rates+="$(sed -n 's/.*: \([0-9.]*\) frames\/s.*/\1/p' <<<"$out")"$'\n'
        out="$("$BIN" bench rim --preset Paper --batch "$batch" --steps 20 --iters "$oiters" --threads "$threads" | tail -n 1)"
        echo "  $out"
        our_rates+="$(sed -n 's/.*frames_per_sec=\([0-9.]*\).*/\1/p' <<<"$out")"$'\n'
    done
    local t o
    t="$(grep . <<<"$torch_rates" | median)"
    o="$(grep . <<<"$our_rates" | median)"
    awk -v b="$batch" -v th="$threads" -v t="$t" -v o="$o" -v n="$RUNS" 'BEGIN {
        printf "bench: batch=%d threads=%d (median of %d) torch=%.0f frames/s metarim=%.0f frames/s ratio=%.2fx\n", b, th, n, t, o, o / t }'
}

echo "bench: batch 64, $THREADS64 threads"
run_case 64 "$THREADS64" 20 20
if [ "$THREADS64" != 1 ]; then
    echo "bench: batch 64, 1 thread (same single core on both sides)"
    run_case 64 1 20 20
fi
echo "bench: batch 1, $THREADS1 thread(s)"
run_case 1 "$THREADS1" 100 200
echo "bench: load after $(cut -d' ' -f1-3 /proc/loadavg)"
