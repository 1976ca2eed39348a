#!/usr/bin/env bash
# The main job end to end, as a user on a fresh clone runs it: `cargo run -p host --release --
# train` with no arguments (the release build included in the time), then `eval` on 1000
# episodes with the grounding check, and the verdict against the main job's targets (issue 15,
# "The main job reads its mission"): wall time <= 15 minutes, success with the episode's own
# mission >= 0.9, success with another episode's mission <= 0.6. Exits 1 when a target is
# missed, after printing every figure. Takes 10-15 minutes on 2 cores: not part of CI.
#
# usage: bash scripts/check-main-job.sh [--seed S]   (extra arguments go to `train`)
# env:   MAIN_JOB_OUT (default: runs/check-main-job), MAIN_JOB_MAX_SECONDS (default: 900)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${MAIN_JOB_OUT:-runs/check-main-job}"
max_seconds="${MAIN_JOB_MAX_SECONDS:-900}"
if [ -e "$out" ]; then
    echo "check-main-job: $out exists; remove it or set MAIN_JOB_OUT" >&2
    exit 2
fi
start=$(date +%s)
cargo run -p host --release -- train --quiet --out "$out" "$@"
end=$(date +%s)
seconds=$((end - start))
echo "check-main-job: train took ${seconds} s (build included)"
line="$(cargo run -p host --release -q -- eval --checkpoint "$out/checkpoint.safetensors" \
    --episodes 1000 | tee /dev/stderr | grep '^eval: ')"
own="$(sed -n 's/.* success=\([0-9.]*\).*/\1/p' <<<"$line")"
swapped="$(sed -n 's/.* swapped_success=\([0-9.]*\).*/\1/p' <<<"$line")"
if [ -z "$own" ] || [ -z "$swapped" ]; then
    echo "check-main-job: could not read the eval line: $line" >&2
    exit 2
fi
verdict=0
check() { # name value op target
    if awk -v v="$2" -v t="$4" "BEGIN { exit !(v $3 t) }"; then
        echo "check-main-job: $1 $2 $3 $4: met"
    else
        echo "check-main-job: $1 $2 $3 $4: MISSED"
        verdict=1
    fi
}
check "wall seconds" "$seconds" "<=" "$max_seconds"
check "own-mission success" "$own" ">=" 0.9
check "swapped-mission success" "$swapped" "<=" 0.6
exit "$verdict"
