#!/usr/bin/env bash
# The GPU verification of issue 5 in one call (docs/GPU.md, "On a GPU machine").
#
#   bash scripts/gpu-check.sh prepare   # here (no GPU): build and strip the binaries into
#                                       # .gpu-check/ (x86-64; the GPU machine has no Rust)
#   bash scripts/gpu-check.sh run       # on the GPU machine, with .gpu-check carried:
#                                       # device info, every GPU parity test, a short training
#                                       # run and `metarim bench train --backend cuda`
#
# `run` prints everything docs/GPU.md needs (device, driver, each parity line, frames/s) and,
# when $OUT is set, also writes it to $OUT/gpu-check.log. NVRTC is looked for in the Python
# packages (nvidia/cu13/lib, as scripts/install-cuda-tools.sh lays it out), then in
# /usr/local/cuda/lib64. Exit status: non-zero when any step fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.gpu-check"
cd "$ROOT"

prepare() {
    mkdir -p "$DIR"
    rm -f "$DIR"/*
    export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_TEST_DEBUG=false
    local json
    json="$(cargo test --release -p metarim-cuda --test parity --no-run --message-format=json)"
    local parity
    parity="$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "parity":
        print(m["executable"])
')"
    [ -n "$parity" ] || { echo "gpu-check: no parity test binary" >&2; exit 1; }
    cargo build --release -p host --bin metarim
    cp "$parity" "$DIR/parity"
    cp target/release/metarim "$DIR/metarim"
    strip "$DIR/parity" "$DIR/metarim" 2>/dev/null || true
    git rev-parse --short HEAD >"$DIR/commit"
    du -ch "$DIR"/* | tail -1
    echo "gpu-check: prepared $DIR (carry it: carry=[\".gpu-check\"])"
}

find_nvrtc() {
    local site
    site="$(python3 -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null || true)"
    if [ -n "$site" ] && [ -e "$site/nvidia/cu13/lib/libnvrtc.so.13" ] &&
        [ -e "$site/nvidia/cu13/lib/libnvrtc-builtins.so.13.0" ]; then
        export METARIM_CUDA_TOOLS="$site"
        echo "nvrtc: $site/nvidia/cu13/lib (Python package)"
        return
    fi
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        if ls "$d"/libnvrtc.so* >/dev/null 2>&1; then
            export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
            echo "nvrtc: $d"
            return
        fi
    done
    echo "nvrtc: not found (the parity tests will report it)"
}

# One step of the check: runs under a time limit (a first run on a new GPU may hang or fail),
# records a failure and goes on, so that one call reports every step.
FAILED=()
step() {
    local name="$1" limit="$2"
    shift 2
    echo "=== $name"
    local start rc=0
    start=$(date +%s)
    timeout "$limit" "$@" || rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - start)) s"
    [ "$rc" -eq 0 ] || FAILED+=("$name (exit $rc)")
}

# `metarim train` without `--backend` (i.e. `auto`) must choose the GPU on a machine with one:
# it says so on stderr ("train: backend cuda on ..."), or "backend cpu (auto: reason)".
auto_picks_cuda() {
    local log="$1.stderr"
    "$DIR/metarim" train --preset Tiny --level BabyAI-GoToObj-v0 --mode meta-rim --frames 10240 --quiet --out "$1" 2>"$log"
    cat "$log"
    grep -q '^train: backend cuda on ' "$log" ||
        { echo "gpu-check: --backend auto did not choose the GPU" >&2; return 1; }
}

run_checks() {
    [ -x "$DIR/parity" ] && [ -x "$DIR/metarim" ] ||
        { echo "gpu-check: $DIR is not prepared (run 'prepare' where cargo works)" >&2; exit 1; }
    echo "=== gpu-check at commit $(cat "$DIR/commit" 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    find_nvrtc
    step "parity tests (cuda/tests/parity.rs)" 200 "$DIR/parity" --test-threads=1 --nocapture
    local tmp
    tmp="$(mktemp -d)"
    step "--backend auto (the default) picks the GPU: Tiny, GoToObj, 10240 frames" 90 \
        bash "$ROOT/scripts/gpu-check.sh" auto-picks-cuda "$tmp/auto"
    step "short training run: Tiny, GoToObj, meta-rim, 10240 frames, --backend cuda" 90 \
        "$DIR/metarim" train --backend cuda --preset Tiny --level BabyAI-GoToObj-v0 --mode meta-rim --set slowness=2 --frames 10240 --quiet --out "$tmp/tiny"
    step "the same run on the CPU (for comparison)" 90 \
        "$DIR/metarim" train --backend cpu --preset Tiny --level BabyAI-GoToObj-v0 --mode meta-rim --set slowness=2 --frames 10240 --quiet --out "$tmp/tiny-cpu"
    step "bench: Paper with the plain CNN encoder (the preset before 2026-12-05), meta-rim, --backend cuda" 90 \
        "$DIR/metarim" bench train --backend cuda --preset Paper --set encoder=conv --set film=false --set feature_norm=false --warmup 1 --updates 3
    step "metarim bench train --backend cuda --preset Paper (meta-rim, GoToLocal)" 90 \
        "$DIR/metarim" bench train --backend cuda --preset Paper --warmup 1 --updates 3
    step "metarim bench train --backend cuda --preset Paper --mode lstm" 90 \
        "$DIR/metarim" bench train --backend cuda --preset Paper --mode lstm --warmup 1 --updates 3
    step "metarim bench train --backend cpu --preset Paper (same machine)" 100 \
        "$DIR/metarim" bench train --backend cpu --preset Paper --warmup 1 --updates 2
    rm -rf "$tmp"
    if [ "${#FAILED[@]}" -eq 0 ]; then
        echo "=== gpu-check: ok"
    else
        printf '=== gpu-check: FAILED: %s\n' "${FAILED[@]}"
        return 1
    fi
}

case "${1:-}" in
    prepare) prepare ;;
    # One step of `run` (`timeout` runs programs, not shell functions).
    auto-picks-cuda) auto_picks_cuda "$2" ;;
    run)
        if [ -n "${OUT:-}" ]; then
            run_checks 2>&1 | tee "$OUT/gpu-check.log"
        else
            run_checks
        fi
        ;;
    *)
        echo "usage: bash scripts/gpu-check.sh prepare|run" >&2
        exit 2
        ;;
esac
