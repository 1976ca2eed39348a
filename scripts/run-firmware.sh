#!/usr/bin/env bash
# Build the Cortex-M4F firmware (firmware/, its own workspace) for one board and run it under
# QEMU with the model blob loaded into the board's own flash region (not linked in: the
# firmware finds and checks it at start-up); check its exit status and its counters; end with
#   firmware: before=X after=Y ram_bytes=R flash_bytes=F insns_per_step=I
# and, when the checkpoint is known, compare every result with the host twin (`metarim adapt`).
# See docs/EMBEDDED.md for the boards and firmware/app/src/lib.rs for what it prints.
#
# usage: bash scripts/run-firmware.sh
#   FW_BOARD=mps2-an386         board: mps2-an386 or netduinoplus2 (QEMU machines), or
#                               nucleo-l432kc / nrf52840-dk: their memory map built with the
#                               `qemu` feature and run on netduinoplus2 / mps2-an386
#   FW_LEVEL=BabyAI-GoToObj-v0  level id or alias          (build-time settings of the firmware,
#   FW_EPISODES=20              evaluation episodes         changing one rebuilds it)
#   FW_SEED=1                   episode seed (host evaluator's scheme; adaptation uses seed + 1)
#   FW_ADAPT_EPISODES=200       on-device adaptation episodes (0: none)
#   FW_ACTIONS=argmax|sample    action choice
#   MODEL=path/to/model.bin     device blob to load (`metarim export --preset Tiny`); default:
#                               train FW_TRAIN_FRAMES (300000) frames on FW_TRAIN_LEVEL (GoToObj)
#                               on the host and export that
#   CHECKPOINT=path             the checkpoint MODEL was exported from, for the twin comparison
#                               (known without it when the script trains the model itself)
#   FW_TWIN=1                   0 skips the host twin comparison
#   FW_TIMEOUT=300              seconds per QEMU run
#   FW_INSNS=1                  0 skips the instruction count (then insns_per_step=0)
#   FW_PROFILE=0                1: also print where the instructions of a policy step and of a
#                               level reset go, function by function (the plugin's block
#                               profiles of the same runs, scripts/lib/insn-profile.py)
#   FW_TOOLCHAIN=auto           rustup (rustup's cargo with the thumbv7em-none-eabihf target,
#                               added when missing), debian (Debian's rustc-web with
#                               -Zbuild-std=core, the fallback without rustup targets), or auto
#                               (rustup when the target is or can be installed)
#   FIRMWARE_TARGET_DIR         cargo target dir (default target/firmware)
#
# insns_per_step: guest instructions of one policy step (TinyActor::step), from the insn-count
# plugin (firmware/tools/insncount.c, a QEMU TCG plugin described in docs/TOOLCHAINS.md, built
# here with gcc): the difference between a run that computes every policy step twice
# (semihosting arg policy-repeat=2) and the plain run, divided by the policy steps; the two runs
# must print the same results. A third run (reset-repeat=2: every evaluation level generated
# twice) gives the instructions of one level reset the same way (printed as `run-firmware:
# insns: per level reset`). 0 when gcc or the plugin source is missing, or FW_INSNS=0. Installs
# Debian packages (qemu-system-arm binutils-arm-none-eabi, and for the debian toolchain
# rustc-web cargo-web rust-web-src) when missing: needs root or sudo and network access.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=thumbv7em-none-eabihf
TARGET_DIR="${FIRMWARE_TARGET_DIR:-$ROOT/target/firmware}"
TIMEOUT="${FW_TIMEOUT:-300}"
PLUGIN_SRC="${INSNCOUNT_SRC:-$ROOT/firmware/tools/insncount.c}"
. "$ROOT/scripts/log.sh"

# --- toolchain and QEMU ---------------------------------------------------------------------
BOARD="${FW_BOARD:-mps2-an386}"
case "$BOARD" in
    mps2-an386 | netduinoplus2) BOARD_FEATURES=() ;;
    nucleo-l432kc | nrf52840-dk) BOARD_FEATURES=(--no-default-features --features qemu) ;;
    *) die "FW_BOARD=$BOARD: not one of mps2-an386 netduinoplus2 nucleo-l432kc nrf52840-dk" ;;
esac
PROFILE="${FW_PROFILE:-0}"
case "$PROFILE" in
    0 | 1) ;;
    *) die "FW_PROFILE=$PROFILE: not 0 or 1" ;;
esac
if [ "$PROFILE" = 1 ] && [ "${FW_INSNS:-1}" = 0 ]; then
    die "FW_PROFILE=1 needs the instruction count (FW_INSNS=0 given)"
fi
# shellcheck source=scripts/lib/firmware-cargo.sh
. "$ROOT/scripts/lib/firmware-cargo.sh"
fw_toolchain_init
missing=()
command -v qemu-system-arm >/dev/null || missing+=(qemu-system-arm)
{ command -v arm-none-eabi-ld >/dev/null && command -v arm-none-eabi-size >/dev/null; } ||
    missing+=(binutils-arm-none-eabi)
fw_apt_install "${missing[@]}"

# --- the model blob ----------------------------------------------------------------------------
# MODEL=path/to/model.bin (from `metarim export --preset Tiny`), or train a small Tiny agent on
# FW_TRAIN_LEVEL for FW_TRAIN_FRAMES frames on the host and export it (reused when present).
if [ -n "${MODEL:-}" ]; then
    [ -s "$MODEL" ] || die "MODEL=$MODEL is not a readable file"
    MODEL_FILE="$MODEL"
    CHECKPOINT_FILE="${CHECKPOINT:-}"
else
    TRAIN_LEVEL="${FW_TRAIN_LEVEL:-BabyAI-GoToObj-v0}"
    TRAIN_FRAMES="${FW_TRAIN_FRAMES:-300000}"
    RUN_DIR="$TARGET_DIR/train-$TRAIN_LEVEL-$TRAIN_FRAMES"
    if [ ! -s "$RUN_DIR/checkpoint.safetensors" ]; then
        say "training a Tiny meta-rim agent on $TRAIN_LEVEL for $TRAIN_FRAMES frames (host, release)"
        (cd "$ROOT" && cargo run --release -q -p host -- train --config configs/device-tiny.toml --level "$TRAIN_LEVEL" \
            --frames "$TRAIN_FRAMES" --seed 1 --quiet --out "$RUN_DIR")
    fi
    MODEL_FILE="$TARGET_DIR/model.bin"
    CHECKPOINT_FILE="$RUN_DIR/checkpoint.safetensors"
    (cd "$ROOT" && cargo run --release -q -p host -- export \
        --checkpoint "$RUN_DIR/checkpoint.safetensors" --preset Tiny --out "$MODEL_FILE")
fi
FW_MODEL="$(realpath "$MODEL_FILE")"
export FW_MODEL
say "model blob: $FW_MODEL ($(stat -c %s "$FW_MODEL") bytes)"

# --- build ------------------------------------------------------------------------------------
say "$(fw_toolchain_version), building firmware/ board $BOARD for $TARGET (release)"
fw_cargo "$TARGET_DIR" build --locked --release -p "metarim-firmware-$BOARD" "${BOARD_FEATURES[@]}"
TARGET_DIR="$(fw_target_dir "$TARGET_DIR")"
ELF="$TARGET_DIR/$TARGET/release/metarim-firmware-$BOARD"
test -s "$ELF" || die "$ELF was not produced"
arm-none-eabi-size "$ELF"
# Program flash as the linker laid it out (what the firmware reports).
program_flash=$(fw_program_flash "$ELF")
blob_size=$(stat -c %s "$FW_MODEL")

# --- insn-count plugin (optional) -----------------------------------------------------------
PLUGIN=""
if [ "${FW_INSNS:-1}" != 0 ]; then
    if [ -f "$PLUGIN_SRC" ] && command -v gcc >/dev/null; then
        PLUGIN="$TARGET_DIR/libinsncount.so"
        if [ ! -s "$PLUGIN" ] || [ "$PLUGIN_SRC" -nt "$PLUGIN" ]; then
            gcc -O2 -shared -fPIC -o "$PLUGIN" "$PLUGIN_SRC" || PLUGIN=""
        fi
    else
        say "no insn-count plugin (needs gcc and $PLUGIN_SRC): insns_per_step=0"
    fi
fi
if [ "$PROFILE" = 1 ] && [ -z "$PLUGIN" ]; then
    die "FW_PROFILE=1: no insn-count plugin (needs gcc and $PLUGIN_SRC)"
fi

# --- run under QEMU ---------------------------------------------------------------------------
# run_qemu REPEAT LOG INSNS_LOG [RESET_REPEAT]: one run; prints the firmware's output, fails on
# a bad status.
run_qemu() {
    local repeat=$1 log=$2 insns=$3 reset_repeat=${4:-1} plugin_args="" rc=0
    if [ -n "$PLUGIN" ]; then
        local spec="$PLUGIN"
        # FW_PROFILE=1: the block profile beside the count (insns1.log -> insns1.profile).
        if [ "$PROFILE" = 1 ]; then spec="$PLUGIN,profile=${insns%.log}.profile"; fi
        plugin_args="-plugin $spec -d plugin -D $insns"
    fi
    # firmware/qemu-run.sh: the board's QEMU machine, the blob loaded into its region.
    MODEL="$FW_MODEL" QEMU_EXTRA="$plugin_args" timeout "$TIMEOUT" \
        "$ROOT/firmware/qemu-run.sh" "$ELF" "policy-repeat=$repeat" "reset-repeat=$reset_repeat" \
        >"$log" 2>&1 || rc=$?
    cat "$log"
    [ "$rc" = 124 ] && die "QEMU run timed out after ${TIMEOUT}s (log: $log)"
    [ "$rc" = 0 ] || die "firmware exited with status $rc (log: $log)"
}

WORK="$TARGET_DIR/run"
mkdir -p "$WORK"
rm -f "$WORK"/*.log "$WORK"/*.profile
run_qemu 1 "$WORK/run1.log" "$WORK/insns1.log"

# --- check the counters -----------------------------------------------------------------------
result() { grep '^firmware: before=' "$1" | tail -n 1; }
line="$(result "$WORK/run1.log")"
[ -n "$line" ] || die "no 'firmware: before=...' line"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
before=$(field before) after=$(field after) ram=$(field ram_bytes) flash=$(field flash_bytes)
steps=$(sed -n 's/^firmware: policy_steps=\([0-9]*\)$/\1/p' "$WORK/run1.log" | tail -n 1)
awk -v b="$before" -v a="$after" -v r="$ram" -v f="$flash" -v s="${steps:-0}" \
    -v pf="$program_flash" -v bs="$blob_size" 'BEGIN {
    bad = ""
    if (!(b ~ /^[0-9.]+$/ && b >= 0 && b <= 1)) bad = bad " before=" b " not in [0,1];"
    if (!(a ~ /^[0-9.]+$/ && a >= 0 && a <= 1)) bad = bad " after=" a " not in [0,1];"
    if (!(r ~ /^[0-9]+$/ && r > 0)) bad = bad " ram_bytes=" r " not > 0;"
    if (!(f ~ /^[0-9]+$/ && f > 0)) bad = bad " flash_bytes=" f " not > 0;"
    if (f != pf + bs) bad = bad " flash_bytes=" f " != the ELF'"'"'s program flash + blob " pf + bs ";"
    if (!(s > 0)) bad = bad " policy_steps=" s " not > 0;"
    if (bad != "") { print "run-firmware: FAILED: counters:" bad > "/dev/stderr"; exit 1 }
}' || exit 1

# --- instructions per policy step -------------------------------------------------------------
insns_per_step=0
if [ -n "$PLUGIN" ]; then
    run_qemu 2 "$WORK/run2.log" "$WORK/insns2.log" >/dev/null
    line2="$(result "$WORK/run2.log")"
    [ "$line2" = "$line" ] || die "policy-repeat=2 changed the results: '$line2' vs '$line'"
    i1=$(sed -n 's/^insns: \([0-9]*\)$/\1/p' "$WORK/insns1.log")
    i2=$(sed -n 's/^insns: \([0-9]*\)$/\1/p' "$WORK/insns2.log")
    [ -n "$i1" ] && [ -n "$i2" ] && [ "$i2" -gt "$i1" ] ||
        die "insn counts missing or not increasing: '$i1' '$i2'"
    insns_per_step=$(((i2 - i1) / steps))
    say "insns: whole run $i1 (policy steps x2: $i2), policy steps $steps," \
        "all-in per env step $((i1 / steps)), per policy step $insns_per_step"
    # The same with every evaluation level generated twice: instructions per level reset.
    run_qemu 1 "$WORK/run3.log" "$WORK/insns3.log" 2 >/dev/null
    line3="$(result "$WORK/run3.log")"
    [ "$line3" = "$line" ] || die "reset-repeat=2 changed the results: '$line3' vs '$line'"
    i3=$(sed -n 's/^insns: \([0-9]*\)$/\1/p' "$WORK/insns3.log")
    resets=$(sed -n 's/^firmware: eval_resets=\([0-9]*\)$/\1/p' "$WORK/run1.log" | tail -n 1)
    [ -n "$i3" ] && [ "$i3" -gt "$i1" ] && [ "${resets:-0}" -gt 0 ] ||
        die "reset insn count missing or not increasing: '$i3' vs '$i1' ($resets resets)"
    say "insns: per level reset (${FW_LEVEL:-BabyAI-GoToObj-v0}, $resets resets): $(((i3 - i1) / resets))"
    if [ "$PROFILE" = 1 ]; then
        profile() {
            python3 "$ROOT/scripts/lib/insn-profile.py" --nm arm-none-eabi-nm --elf "$ELF" \
                --plain "$WORK/insns1.profile" --repeated "$WORK/$1.profile" --units "$2" \
                --expect "$3" --what "$4" || die "the $4 profile failed"
        }
        profile insns2 "$steps" "$((i2 - i1))" "policy step"
        profile insns3 "$resets" "$((i3 - i1))" "level reset"
    fi
fi

# --- the host twin ------------------------------------------------------------------------------
# `metarim adapt` runs the same core code on the host: the same evaluation episodes before and
# after, the same adaptation episodes. Every count and mean return must agree (bit for bit
# arithmetic; the four printed decimals of the returns are compared).
if [ "${FW_TWIN:-1}" != 0 ] && [ -n "${CHECKPOINT_FILE:-}" ]; then
    [ -s "$CHECKPOINT_FILE" ] || die "CHECKPOINT=$CHECKPOINT_FILE is not a readable file"
    twin_args=(--checkpoint "$CHECKPOINT_FILE" --level "${FW_LEVEL:-BabyAI-GoToObj-v0}"
        --episodes "${FW_ADAPT_EPISODES:-200}" --eval-episodes "${FW_EPISODES:-20}"
        --seed "${FW_SEED:-1}")
    [ "${FW_ACTIONS:-sample}" = argmax ] && twin_args+=(--argmax)
    (cd "$ROOT" && cargo run --release -q -p host -- adapt "${twin_args[@]}") >"$WORK/twin.log" 2>&1 ||
        die "host twin failed: $(tail -n 3 "$WORK/twin.log")"
    # Normalise both reports to: phase successes episodes mean_return.
    fw_norm() {
        sed -n 's/^firmware: \(before\|after\): episodes=\([0-9]*\) success=\([0-9]*\)\/[0-9]* ([0-9.]*) mean_return=\([-0-9.]*\).*/\1 \3 \2 \4/p' "$1"
        sed -n 's/^firmware: adapted: episodes=\([0-9]*\) steps=\([0-9]*\) windows=\([0-9]*\) sgd_steps=\([0-9]*\) success=\([0-9]*\)\/.*/adapted \1 \2 \3 \4 \5/p' "$1"
    }
    twin_norm() {
        sed -n 's/^\(before\|after\): success \([0-9]*\)\/\([0-9]*\) .* mean return \([-0-9.]*\).*/\1 \2 \3 \4/p' "$1"
        sed -n 's/^adapting: \([0-9]*\) episodes, \([0-9]*\) steps, \([0-9]*\) windows, \([0-9]*\) fast updates.*success \([0-9.]*\);.*/adapted \1 \2 \3 \4 \5/p' "$1"
    }
    fw="$(fw_norm "$WORK/run1.log")"
    tw="$(twin_norm "$WORK/twin.log")"
    # The twin prints the adaptation's success as a rate: compare it as successes/episodes.
    tw="$(awk '$1 == "adapted" { printf "adapted %s %s %s %s %d\n", $2, $3, $4, $5, $6 * $2 + 0.5; next } { print }' <<<"$tw")"
    [ "$(wc -l <<<"$fw")" = 3 ] && [ "$(wc -l <<<"$tw")" = 3 ] ||
        die "could not read both reports (firmware: '$fw'; twin: '$tw'; logs in $WORK)"
    if [ "$(sort <<<"$fw")" != "$(sort <<<"$tw")" ]; then
        say "firmware: $fw"
        say "twin:     $tw"
        die "the firmware and the host twin disagree (logs: $WORK/run1.log, $WORK/twin.log)"
    fi
    say "host twin: the same results (before, adaptation, after) as the firmware on $BOARD"
fi

echo "firmware: before=$before after=$after ram_bytes=$ram flash_bytes=$flash insns_per_step=$insns_per_step"
