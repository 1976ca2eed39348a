#!/usr/bin/env bash
# Build the Cortex-M4F firmware (firmware/, its own workspace) with Debian's toolchain and run it
# under QEMU (mps2-an386, -icount shift=0); check its exit status and its counters; end with
#   firmware: before=X after=Y ram_bytes=R flash_bytes=F insns_per_step=I
# See docs/TOOLCHAINS.md for the recipe and firmware/src/main.rs for what it prints.
#
# usage: bash scripts/run-firmware.sh
#   FW_LEVEL=BabyAI-GoToObj-v0  level id or alias          (build-time settings of the firmware,
#   FW_EPISODES=20              evaluation episodes         changing one rebuilds it)
#   FW_SEED=1                   episode seed (host evaluator's scheme; adaptation uses seed + 1)
#   FW_ADAPT_EPISODES=200       on-device adaptation episodes (0: none)
#   FW_ACTIONS=argmax|sample    action choice
#   MODEL=path/to/model.bin     device blob to embed (`metarim export --preset Tiny`); default:
#                               train FW_TRAIN_FRAMES (300000) frames on FW_TRAIN_LEVEL (GoToObj)
#                               on the host and export that
#   FW_TIMEOUT=300              seconds per QEMU run
#   FW_INSNS=1                  0 skips the instruction count (then insns_per_step=0)
#   FIRMWARE_TARGET_DIR         cargo target dir (default target/firmware)
#
# insns_per_step: guest instructions of one policy step (TinyActor::step), from the insn-count
# plugin (firmware/tools/insncount.c, a QEMU TCG plugin described in docs/TOOLCHAINS.md, built
# here with gcc): the difference between a run that computes every policy step twice
# (semihosting arg policy-repeat=2) and the plain run, divided by the policy steps; the two runs must print the
# same results. A third run (reset-repeat=2: every evaluation level generated twice) gives the
# instructions of one level reset the same way (printed as `run-firmware: insns: per level
# reset`). 0 when gcc or the plugin source is missing, or FW_INSNS=0. Installs Debian packages (rustc-web cargo-web rust-web-src
# qemu-system-arm binutils-arm-none-eabi) when missing: needs root or sudo and network access.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=thumbv7em-none-eabihf
TARGET_DIR="${FIRMWARE_TARGET_DIR:-$ROOT/target/firmware}"
TIMEOUT="${FW_TIMEOUT:-300}"
PLUGIN_SRC="${INSNCOUNT_SRC:-$ROOT/firmware/tools/insncount.c}"
say() { echo "run-firmware: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# --- toolchain and QEMU ---------------------------------------------------------------------
missing=()
{ [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ]; } || missing+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust ] || missing+=(rust-web-src)
command -v qemu-system-arm >/dev/null || missing+=(qemu-system-arm)
{ command -v arm-none-eabi-ld >/dev/null && command -v arm-none-eabi-size >/dev/null; } ||
    missing+=(binutils-arm-none-eabi)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo to install: ${missing[*]}"
        SUDO=sudo
    fi
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- the model blob ----------------------------------------------------------------------------
# MODEL=path/to/model.bin (from `metarim export --preset Tiny`), or train a small Tiny agent on
# FW_TRAIN_LEVEL for FW_TRAIN_FRAMES frames on the host and export it (reused when present).
if [ -n "${MODEL:-}" ]; then
    [ -s "$MODEL" ] || die "MODEL=$MODEL is not a readable file"
    MODEL_FILE="$MODEL"
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
    (cd "$ROOT" && cargo run --release -q -p host -- export \
        --checkpoint "$RUN_DIR/checkpoint.safetensors" --preset Tiny --out "$MODEL_FILE")
fi
FW_MODEL="$(realpath "$MODEL_FILE")"
export FW_MODEL
say "model blob: $FW_MODEL ($(stat -c %s "$FW_MODEL") bytes)"

# --- build ------------------------------------------------------------------------------------
say "$(/usr/bin/rustc --version), building firmware/ for $TARGET (release)"
cd "$ROOT/firmware"
# The rustup proxies must not step in: Debian's cargo and rustc by path (see check-no-std.sh).
env -u RUSTUP_TOOLCHAIN -u CARGO_BUILD_TARGET -u RUSTFLAGS -u CARGO_TARGET_DIR \
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    /usr/bin/cargo build --locked --release --target-dir "$TARGET_DIR"
ELF="$TARGET_DIR/$TARGET/release/metarim-firmware"
test -s "$ELF" || die "$ELF was not produced"
arm-none-eabi-size "$ELF"
read -r size_text size_data _ < <(arm-none-eabi-size "$ELF" | awk 'NR == 2 {print $1, $2}')

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

# --- run under QEMU ---------------------------------------------------------------------------
# run_qemu REPEAT LOG INSNS_LOG [RESET_REPEAT]: one run; prints the firmware's output, fails on
# a bad status.
run_qemu() {
    local repeat=$1 log=$2 insns=$3 reset_repeat=${4:-1} plugin_args=() rc=0
    if [ -n "$PLUGIN" ]; then plugin_args=(-plugin "$PLUGIN" -d plugin -D "$insns"); fi
    timeout "$TIMEOUT" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
        -icount shift=0 \
        -semihosting-config "enable=on,target=native,arg=metarim-firmware,arg=policy-repeat=$repeat,arg=reset-repeat=$reset_repeat" \
        "${plugin_args[@]}" -kernel "$ELF" >"$log" 2>&1 || rc=$?
    cat "$log"
    [ "$rc" = 124 ] && die "QEMU run timed out after ${TIMEOUT}s (log: $log)"
    [ "$rc" = 0 ] || die "firmware exited with status $rc (log: $log)"
}

WORK="$TARGET_DIR/run"
mkdir -p "$WORK"
rm -f "$WORK"/*.log
run_qemu 1 "$WORK/run1.log" "$WORK/insns1.log"

# --- check the counters -----------------------------------------------------------------------
result() { grep '^firmware: before=' "$1" | tail -n 1; }
line="$(result "$WORK/run1.log")"
[ -n "$line" ] || die "no 'firmware: before=...' line"
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
before=$(field before) after=$(field after) ram=$(field ram_bytes) flash=$(field flash_bytes)
steps=$(sed -n 's/^firmware: policy_steps=\([0-9]*\)$/\1/p' "$WORK/run1.log" | tail -n 1)
awk -v b="$before" -v a="$after" -v r="$ram" -v f="$flash" -v s="${steps:-0}" \
    -v st="$size_text" -v sd="$size_data" 'BEGIN {
    bad = ""
    if (!(b ~ /^[0-9.]+$/ && b >= 0 && b <= 1)) bad = bad " before=" b " not in [0,1];"
    if (!(a ~ /^[0-9.]+$/ && a >= 0 && a <= 1)) bad = bad " after=" a " not in [0,1];"
    if (!(r ~ /^[0-9]+$/ && r > 0)) bad = bad " ram_bytes=" r " not > 0;"
    if (!(f ~ /^[0-9]+$/ && f > 0)) bad = bad " flash_bytes=" f " not > 0;"
    if (f != st + sd) bad = bad " flash_bytes=" f " != arm-none-eabi-size text+data " st + sd ";"
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
fi

echo "firmware: before=$before after=$after ram_bytes=$ram flash_bytes=$flash insns_per_step=$insns_per_step"
