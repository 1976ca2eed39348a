#!/usr/bin/env bash
# Reference checkpoints for refactors that must not change behaviour: the device agent's run
# (configs/device-tiny.toml, the defaults of `train` before the main job moved to GoToLocal)
# a Paper meta-rim run of 20 updates (configs/paper-gotolocal.toml, 20 x 2560 frames) and
# the first 20 updates of the main job (`train` with no config: Small meta-rim on GoToLocal),
# all on the CPU backend, printing the SHA-256 of each checkpoint. Run it before and after a
# change and compare; the CPU backend is bit-for-bit deterministic on any thread count.
#
# usage: bash scripts/ref-checkpoints.sh [OUT_DIR]   (default: target/ref-checkpoints)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-target/ref-checkpoints}"
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p host --quiet
bin=target/release/metarim
"$bin" train --backend cpu --quiet --config configs/device-tiny.toml --out "$out/default" >/dev/null
"$bin" train --backend cpu --quiet --config configs/paper-gotolocal.toml --frames 51200 \
    --out "$out/paper-meta-rim-20" >/dev/null
"$bin" train --backend cpu --quiet --frames 51200 --out "$out/main-job-20" >/dev/null
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo '+changes')"
# Two hashes per run: the whole file, and the tensors alone (parameters, Adam moments and
# counters: everything after the safetensors header). The header's metadata holds the config,
# so adding a config field changes the first and not the second.
for run in default paper-meta-rim-20 main-job-20; do
    ck="$out/$run/checkpoint.safetensors"
    header_len="$(od -An -t u8 -N8 "$ck" | tr -d ' ')"
    printf '%s  %s  (commit %s)\n' "$(sha256sum "$ck" | cut -d' ' -f1)" "$run" "$commit"
    printf '%s  %s tensors\n' "$(tail -c +$((9 + header_len)) "$ck" | sha256sum | cut -d' ' -f1)" "$run"
done
