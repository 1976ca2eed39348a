#!/usr/bin/env bash
# Build the metarim C API (firmware/capi, a static library for thumbv7em-none-eabihf with the
# rustup toolchain) and the freestanding C example that uses it (firmware/c-example), run it
# under QEMU mps2-an386 with the model blob loaded into its flash region, check its exit status
# and its lines, and check the failure cases: no blob loaded (exit status 4, "no model blob")
# and an erased (0xFF) blob region; then run the Rust firmware (the mps2-an386 board) with the
# same blob and settings and require the same results and the same actions (FNV-1a digests of
# every evaluation action).
#
# usage: bash scripts/run-c-example.sh
#   FW_LEVEL=BabyAI-GoToObj-v0  level id or alias           (compiled into the example; the
#   FW_EPISODES=20              evaluation episodes          same meaning as for the Rust
#   FW_SEED=1                   episode seed                 firmware, scripts/run-firmware.sh)
#   FW_ADAPT_EPISODES=200       adaptation episodes (seed FW_SEED + 1; 0: none)
#   FW_ARGMAX=0                 1: most likely action (FW_ACTIONS=argmax does the same)
#   MODEL=path/to/model.bin     device blob (`metarim export --preset Tiny`); default: reuse the
#                               agent scripts/run-firmware.sh trained (target/firmware/train-*),
#                               else train FW_TRAIN_FRAMES (300000) frames on FW_TRAIN_LEVEL
#                               (GoToObj) on the host, and export it
#   C_EXAMPLE_OUT=target/c-example   output folder (ELF, logs, model, training run)
#   FW_TIMEOUT=300              seconds per QEMU run
#   C_EXAMPLE_TWIN=1            0 skips the host twin (the same run through the C API on the
#                               host, `cargo test ... host_twin_of_the_c_example`), whose
#                               "firmware: " lines must equal the Cortex-M4F run's
# Installs Debian packages (gcc-arm-none-eabi binutils-arm-none-eabi qemu-system-arm make)
# when missing: needs root or sudo and network access.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=thumbv7em-none-eabihf
OUT="${C_EXAMPLE_OUT:-$ROOT/target/c-example}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
TIMEOUT="${FW_TIMEOUT:-300}"
CAPI="$ROOT/firmware/capi"
EXAMPLE="$ROOT/firmware/c-example"
. "$ROOT/scripts/log.sh"

FW_LEVEL="${FW_LEVEL:-BabyAI-GoToObj-v0}"
FW_EPISODES="${FW_EPISODES:-20}"
FW_SEED="${FW_SEED:-1}"
FW_ADAPT_EPISODES="${FW_ADAPT_EPISODES:-200}"
case "${FW_ACTIONS:-}" in
    argmax) FW_ARGMAX=1 ;;
    sample) FW_ARGMAX=0 ;;
    "") FW_ARGMAX="${FW_ARGMAX:-0}" ;;
    *) die "FW_ACTIONS must be argmax or sample" ;;
esac
for v in FW_EPISODES FW_SEED FW_ADAPT_EPISODES FW_ARGMAX; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v=${!v} is not a decimal number"
done
[[ "$FW_LEVEL" =~ ^[A-Za-z0-9._-]+$ ]] || die "FW_LEVEL=$FW_LEVEL: letters, digits, . _ - only"

# --- cross toolchain and QEMU -------------------------------------------------------------------
missing=()
command -v arm-none-eabi-gcc >/dev/null || missing+=(gcc-arm-none-eabi)
{ command -v arm-none-eabi-size >/dev/null && command -v arm-none-eabi-ld >/dev/null; } ||
    missing+=(binutils-arm-none-eabi)
command -v qemu-system-arm >/dev/null || missing+=(qemu-system-arm)
command -v make >/dev/null || missing+=(make)
# shellcheck source=scripts/lib/firmware-cargo.sh
. "$ROOT/scripts/lib/firmware-cargo.sh"
fw_apt_install "${missing[@]}"
command -v cargo >/dev/null || die "no cargo (the rustup toolchain) on PATH"
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
    say "adding the rustup target $TARGET"
    rustup target add "$TARGET" || die "rustup target add $TARGET failed"
fi

# --- the static library and its header ------------------------------------------------------------
# `cargo rustc --crate-type staticlib` builds only the static library, so the release profile's
# fat LTO applies (with the rlib beside it, as plain `cargo build` makes, rustc skips LTO).
# build.rs rewrites include/metarim.h if the API changed.
say "$(rustc --version), building firmware/capi for $TARGET (release, staticlib)"
(cd "$CAPI" && env -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR -u RUSTFLAGS \
    cargo rustc --locked -q --lib --release --target "$TARGET" --crate-type staticlib)
LIB="$CAPI/target/$TARGET/release/libmetarim_capi.a"
test -s "$LIB" || die "$LIB was not produced"
say "static library: $LIB ($(stat -c %s "$LIB") bytes)"

# --- the model blob -------------------------------------------------------------------------------
if [ -n "${MODEL:-}" ]; then
    [ -s "$MODEL" ] || die "MODEL=$MODEL is not a readable file"
    MODEL_FILE="$(realpath "$MODEL")"
else
    TRAIN_LEVEL="${FW_TRAIN_LEVEL:-BabyAI-GoToObj-v0}"
    TRAIN_FRAMES="${FW_TRAIN_FRAMES:-300000}"
    RUN_DIR=""
    # The Rust firmware's training run (scripts/run-firmware.sh), then ours.
    for d in "${FIRMWARE_TARGET_DIR:-$ROOT/target/firmware}/train-$TRAIN_LEVEL-$TRAIN_FRAMES" \
        "$OUT/train-$TRAIN_LEVEL-$TRAIN_FRAMES"; do
        if [ -s "$d/checkpoint.safetensors" ]; then RUN_DIR="$d"; break; fi
    done
    if [ -z "$RUN_DIR" ]; then
        RUN_DIR="$OUT/train-$TRAIN_LEVEL-$TRAIN_FRAMES"
        say "training a Tiny meta-rim agent on $TRAIN_LEVEL for $TRAIN_FRAMES frames (host, release)"
        (cd "$ROOT" && cargo run --release -q -p host -- train --config configs/device-tiny.toml \
            --level "$TRAIN_LEVEL" --frames "$TRAIN_FRAMES" --seed 1 --quiet --out "$RUN_DIR")
    fi
    say "agent: $RUN_DIR"
    MODEL_FILE="$OUT/model.bin"
    (cd "$ROOT" && cargo run --release -q -p host -- export \
        --checkpoint "$RUN_DIR/checkpoint.safetensors" --preset Tiny --out "$MODEL_FILE")
fi
MODEL_BYTES=$(stat -c %s "$MODEL_FILE")
[ "$MODEL_BYTES" -le $((256 * 1024)) ] || die "model blob of $MODEL_BYTES bytes exceeds the 256 KiB BLOB region"
say "model blob: $MODEL_FILE ($MODEL_BYTES bytes)"

# --- the C example ------------------------------------------------------------------------------
BUILD="$OUT/build"
make -s -B -C "$EXAMPLE" OUT="$BUILD" LIB="$LIB" INCLUDE="$CAPI/include" \
    FW_LEVEL="$FW_LEVEL" FW_EPISODES="$FW_EPISODES" FW_SEED="$FW_SEED" \
    FW_ADAPT_EPISODES="$FW_ADAPT_EPISODES" FW_ARGMAX="$FW_ARGMAX"
ELF="$BUILD/c-example.elf"
test -s "$ELF" || die "$ELF was not produced"
arm-none-eabi-size "$ELF"

# --- runs under QEMU ------------------------------------------------------------------------------
# run_qemu LOG [loader args...]: one run; its output is in LOG; sets RC.
run_qemu() {
    local log=$1
    shift
    RC=0
    timeout "$TIMEOUT" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
        -semihosting-config enable=on,target=native -kernel "$ELF" "$@" >"$log" 2>&1 || RC=$?
    [ "$RC" != 124 ] || die "QEMU run timed out after ${TIMEOUT}s (log: $log)"
}

# 1. With the model blob in its region.
run_qemu "$OUT/run.log" -device "loader,file=$MODEL_FILE,addr=0x00100000,force-raw=on"
cat "$OUT/run.log"
[ "$RC" = 0 ] || die "the C example exited with status $RC (log: $OUT/run.log)"
E="$FW_EPISODES"
A="$FW_ADAPT_EPISODES"
for re in "^firmware: before: episodes=$E success=[0-9]+/$E\$" \
    "^firmware: adapted: episodes=$A steps=[0-9]+ windows=[0-9]+ sgd_steps=[0-9]+ success=[0-9]+/$A\$" \
    "^firmware: after: episodes=$E success=[0-9]+/$E\$" \
    "^firmware: actions: before=0x[0-9a-f]{16} after=0x[0-9a-f]{16}\$"; do
    grep -Eq "$re" "$OUT/run.log" || die "no line matching '$re' (log: $OUT/run.log)"
done
[ "$(grep -c '^firmware: ' "$OUT/run.log")" = 4 ] || die "expected exactly 4 'firmware: ' lines"

# 2. No blob loaded: QEMU's flash-like memory is zero there; a clean error, status 4.
run_qemu "$OUT/no-blob.log"
cat "$OUT/no-blob.log"
[ "$RC" = 4 ] || die "no-blob run exited with status $RC, expected 4 (log: $OUT/no-blob.log)"
grep -q '^firmware: error: bad model blob: no model blob in its region (all zero)$' "$OUT/no-blob.log" ||
    die "no-blob run did not name the missing blob (log: $OUT/no-blob.log)"

# 3. An erased region (0xFF, as real flash after a chip erase).
head -c 4096 /dev/zero | tr '\0' '\377' >"$OUT/erased.bin"
run_qemu "$OUT/erased.log" -device "loader,file=$OUT/erased.bin,addr=0x00100000,force-raw=on"
[ "$RC" = 4 ] || die "erased-region run exited with status $RC, expected 4 (log: $OUT/erased.log)"
grep -q '^firmware: error: bad model blob: no model blob in its flash region (erased: 0xFF)$' \
    "$OUT/erased.log" || die "erased-region run did not name the erased region (log: $OUT/erased.log)"
say "no blob: status 4, '$(grep '^firmware: error' "$OUT/no-blob.log")'"
say "erased region: status 4, '$(grep '^firmware: error' "$OUT/erased.log")'"

# --- the host twin ------------------------------------------------------------------------------
if [ "${C_EXAMPLE_TWIN:-1}" != 0 ]; then
    say "host twin: the same run through the C API on the host"
    (cd "$CAPI" && env -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR -u RUSTFLAGS \
        METARIM_TWIN_MODEL="$MODEL_FILE" FW_LEVEL="$FW_LEVEL" FW_EPISODES="$FW_EPISODES" \
        FW_SEED="$FW_SEED" FW_ADAPT_EPISODES="$FW_ADAPT_EPISODES" FW_ARGMAX="$FW_ARGMAX" \
        cargo test --locked -q --lib -- --ignored --nocapture --exact tests::host_twin_of_the_c_example) \
        >"$OUT/twin.log" 2>&1 || { cat "$OUT/twin.log"; die "host twin failed"; }
    diff <(grep '^firmware: ' "$OUT/twin.log") <(grep '^firmware: ' "$OUT/run.log") >&2 ||
        die "the Cortex-M4F run differs from the host twin (logs: $OUT/run.log $OUT/twin.log)"
    say "host twin: identical 'firmware: ' lines"
fi

# --- the Rust firmware, same blob and settings ---------------------------------------------------
# The mps2-an386 board of firmware/ (scripts/run-firmware.sh's build), run by firmware/qemu-run.sh
# with the blob in its region: its before/adapted/after counts and its action digests must equal
# the C example's (the Rust lines carry more fields after the shared ones).
if [ "${C_EXAMPLE_RUST:-1}" != 0 ]; then
    fw_toolchain_init
    FW_TARGET_DIR="${FIRMWARE_TARGET_DIR:-$ROOT/target/firmware}"
    if [ "$FW_ARGMAX" = 1 ]; then actions=argmax; else actions=sample; fi
    say "the Rust firmware (mps2-an386) with the same blob and settings"
    FW_LEVEL="$FW_LEVEL" FW_EPISODES="$FW_EPISODES" FW_SEED="$FW_SEED" \
        FW_ADAPT_EPISODES="$FW_ADAPT_EPISODES" FW_ACTIONS="$actions" \
        fw_cargo "$FW_TARGET_DIR" build --locked --release -q -p metarim-firmware-mps2-an386
    RUST_ELF="$(fw_target_dir "$FW_TARGET_DIR")/$TARGET/release/metarim-firmware-mps2-an386"
    RC=0
    MODEL="$MODEL_FILE" timeout "$TIMEOUT" "$ROOT/firmware/qemu-run.sh" "$RUST_ELF" \
        >"$OUT/rust.log" 2>&1 || RC=$?
    [ "$RC" = 0 ] || die "the Rust firmware exited with status $RC (log: $OUT/rust.log)"
    shared() {
        sed -n -e 's/^\(firmware: \(before\|after\): episodes=[0-9]* success=[0-9]*\/[0-9]*\).*/\1/p' \
            -e 's/^\(firmware: adapted: episodes=[0-9]* steps=[0-9]* windows=[0-9]* sgd_steps=[0-9]* success=[0-9]*\/[0-9]*\).*/\1/p' \
            -e 's/^\(firmware: actions: before=0x[0-9a-f]* after=0x[0-9a-f]*\)$/\1/p' "$1"
    }
    [ "$(shared "$OUT/rust.log" | wc -l)" = 4 ] || die "the Rust firmware's lines are missing (log: $OUT/rust.log)"
    diff <(shared "$OUT/rust.log") <(shared "$OUT/run.log") >&2 ||
        die "the C example and the Rust firmware differ (logs: $OUT/run.log $OUT/rust.log)"
    say "Rust firmware: the same results and the same actions ($(grep '^firmware: actions' "$OUT/run.log"))"
fi

say "ok"
grep '^firmware: ' "$OUT/run.log"
