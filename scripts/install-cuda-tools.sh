#!/usr/bin/env bash
# Install NVRTC and ptxas (pinned PyPI wheels, CUDA 13.0) into a cache directory, so the kernel
# compile + ptxas check (cuda/tests/ptx.rs) runs on a machine with no GPU and no CUDA toolkit.
# About 124 MB to download, 336 MB on disk; skipped when the pinned versions are already there.
#
# usage: env_line="$(bash scripts/install-cuda-tools.sh [DIR])" && eval "$env_line"
#   DIR defaults to $METARIM_CUDA_TOOLS, else target/cuda-tools in the repository.
#   Progress goes to stderr; stdout is only the `export` line to evaluate.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-${METARIM_CUDA_TOOLS:-$ROOT/target/cuda-tools}}"
PINS="nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvcc==13.0.88"
STAMP="$DIR/.metarim-pins"

need=(nvidia/cu13/lib/libnvrtc.so.13 nvidia/cu13/lib/libnvrtc-builtins.so.13.0 nvidia/cu13/bin/ptxas)
present() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$PINS" ] || return 1
    for f in "${need[@]}"; do [ -e "$DIR/$f" ] || return 1; done
}

if present; then
    echo "install-cuda-tools: $DIR already has $PINS" >&2
else
    command -v python3 >/dev/null || { echo "install-cuda-tools: python3 is required" >&2; exit 1; }
    echo "install-cuda-tools: installing $PINS into $DIR" >&2
    tmp="$DIR.tmp.$$"
    rm -rf "$tmp"
    # shellcheck disable=SC2086 # PINS is a list of requirement specifiers
    python3 -m pip install -q --no-deps --target "$tmp" $PINS >&2
    for f in "${need[@]}"; do
        [ -e "$tmp/$f" ] || { echo "install-cuda-tools: $f missing after install" >&2; exit 1; }
    done
    echo "$PINS" >"$tmp/.metarim-pins"
    rm -rf "$DIR"
    mv "$tmp" "$DIR"
fi
echo "export METARIM_CUDA_TOOLS=$(printf %q "$DIR")"
