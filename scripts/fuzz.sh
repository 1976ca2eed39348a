#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through `libfuzzer-sys`) of every parser of untrusted input
# and of the core's network and on-device adaptation APIs:
# the targets in fuzz/fuzz_targets/ (see docs/RELIABILITY.md, "Fuzzing").
#
# usage: bash scripts/fuzz.sh [RUNS] [TARGET...]
#   RUNS    executions per target (default 20000: a smoke run), or `ci` for FUZZ_SECONDS
#           (default 5) seconds per target
#   TARGET  any of: blob checkpoint trace state mission config suite network adapt capi
#           (default: all)
#
# Builds fuzz/ (its own workspace, target dir fuzz/target; the C API's target `capi` from the
# workspace fuzz/capi/, into the same target dir) with the flags `cargo fuzz build`
# uses (SanitizerCoverage with inline 8-bit counters, compare tracing, --cfg fuzzing; assertions
# and overflow checks on via fuzz/Cargo.toml), on stable Rust, with nothing to install besides
# the crates (fuzz/ is also a cargo-fuzz project: `cargo fuzz list`). Each target reads its
# committed seeds (fuzz/corpus/<target>, never written) and the corpus it grew in earlier runs
# (fuzz/out/corpus/<target>, ignored by git, where new inputs go; FUZZ_OUT=<dir> moves
# fuzz/out), with the dictionary fuzz/dict/<target>.dict, a per-input timeout of 10 s and an
# RSS and single-allocation limit of 2 GB. Prints per target the executions, wall time, exec/s,
# corpus size, coverage and the result; logs in fuzz/out/logs/, crashing inputs in
# fuzz/artifacts/<target>/. Exits non-zero when any target finds a crash, panic, timeout or
# out-of-memory.
#
# Reproduce a finding: fuzz/target/<host triple>/release/<target> fuzz/artifacts/<target>/<file>
# (the build honours CARGO_TARGET_DIR instead of fuzz/target when it is set).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ALL_TARGETS=(blob checkpoint trace state mission config suite network adapt capi)

runs="${1:-20000}"
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "fuzz.sh: unknown target $t (${ALL_TARGETS[*]})" >&2; exit 2; }
done
cgu=1
if [ "$runs" = ci ]; then
    limit=(-max_total_time="${FUZZ_SECONDS:-5}")
    # A few seconds of fuzzing do not repay the single-unit codegen (slow to build, fast to run).
    cgu=16
elif [[ "$runs" =~ ^[0-9]+$ ]]; then
    limit=(-runs="$runs")
else
    echo "fuzz.sh: RUNS must be a number or 'ci', got '$runs'" >&2
    exit 2
fi

# Longest input per target: the blob target's micro blobs are 1-2 KB, a Tiny checkpoint is
# ~120 KB, the text formats need a few KB (a trace line of a short episode is 2-15 KB).
max_len() {
    case "$1" in
        blob) echo 2048 ;;
        checkpoint) echo 131072 ;;
        trace) echo 16384 ;;
        mission) echo 512 ;;
        *) echo 4096 ;;
    esac
}

triple="$(rustc -vV | sed -n 's/^host: //p')"
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
case "$triple" in *-linux-*) flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth" ;; esac
flags+=" --cfg fuzzing -Ccodegen-units=${FUZZ_CODEGEN_UNITS:-$cgu}"

target_dir="${CARGO_TARGET_DIR:-fuzz/target}"
echo "fuzz.sh: building fuzz/ for $triple"
build_start=$(date +%s)
# `--target` keeps these flags off build scripts and proc macros, as cargo-fuzz does.
# The C API's target has its own workspace (core with `small-grid`, as on the device).
main_targets=0
for t in "${targets[@]}"; do [ "$t" = capi ] || main_targets=1; done
if [ "$main_targets" = 1 ]; then
    RUSTFLAGS="$flags" cargo build --quiet --release --manifest-path fuzz/Cargo.toml \
        --target "$triple" --bins
fi
if [[ " ${targets[*]} " == *" capi "* ]]; then
    RUSTFLAGS="$flags" cargo build --quiet --release --manifest-path fuzz/capi/Cargo.toml \
        --target "$triple" --target-dir "$target_dir" --bins
fi
echo "fuzz.sh: built in $(( $(date +%s) - build_start )) s"

outdir="${FUZZ_OUT:-fuzz/out}"
mkdir -p "$outdir/logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    bin="$target_dir/$triple/release/$t"
    out="$outdir/corpus/$t"
    log="$outdir/logs/$t.log"
    mkdir -p "$out" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    opts=(-rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -max_len="$(max_len "$t")"
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 "${limit[@]}")
    [ -f "fuzz/dict/$t.dict" ] && opts+=(-dict="fuzz/dict/$t.dict")
    # The loader prints a warning on every format-1 checkpoint (the committed seed's format):
    # drop the target's stderr (libFuzzer keeps its own); a finding is re-run below with it.
    [ "$t" = checkpoint ] && opts+=(-close_fd_mask=2)
    start=$(date +%s%N)
    status=0
    "$bin" "${opts[@]}" "$out" "fuzz/corpus/$t" >"$log" 2>&1 || status=$?
    wall=$(awk -v a="$(date +%s%N)" -v b="$start" 'BEGIN { printf "%.1f", (a - b) / 1e9 }')
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    execs=${execs:-0}
    rate=$(awk -v n="$execs" -v s="$wall" 'BEGIN { printf "%d", (s > 0) ? (n / s) : 0 }')
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $status): $(grep -m1 -E '==[0-9]+== ERROR|^thread .* panicked|ERROR: libFuzzer' "$log" || echo 'see log')"
        failed+=("$t")
    fi
    line=$(printf '%-10s %12s execs %8.1f s %9s exec/s  corpus %-12s cov %-5s ft %-6s %s' \
        "$t" "$execs" "$wall" "$rate" "${corp:-?}" "${cov:-?}" "${ft:-?}" "$result")
    echo "$line"
    summary+=("$line")
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" | sed 's/^/    /'
        artifact=$(ls -t "fuzz/artifacts/$t"/* 2>/dev/null | head -1 || true)
        if [ -n "$artifact" ]; then
            echo "    artifact: $artifact; re-run:"
            timeout 60 "$bin" "$artifact" 2>&1 | grep -m3 -E 'panicked|^thread|ERROR' | sed 's/^/    /' || true
        fi
    fi
done

echo
echo "fuzz.sh: summary (logs in $outdir/logs/)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: findings in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
