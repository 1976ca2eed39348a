#!/usr/bin/env bash
# Every board of firmware/boards: build it, check that it fits its chip (RAM: static + the
# stack's measured high-water mark, adaptation state included; flash: the program and the blob
# region), and check under QEMU, on every board's memory map, that the model blob flashed apart
# from the program is found and run, and that an absent, corrupt, cut or foreign blob gives a
# clear message and a clean halt (exit status 4) before any action.
#
# usage: bash scripts/firmware-boards.sh        (run from anywhere; ends with `firmware-boards: ok`)
#   MODEL=path/to/model.bin   the blob (`metarim export --preset Tiny`); default: a barely
#                             trained one (2,560 frames on GoToObj), made here with the host
#                             binary: it fails the adaptation guard's probe, so the runs go on to
#                             adaptation windows and their stack is in the high-water mark
#   FW_LEVEL, FW_EPISODES (4), FW_ADAPT_EPISODES (60: the guard's 50-episode probe, then
#   adaptation windows; a run without windows fails the check)
#
# Boards: mps2-an386 and netduinoplus2 run under QEMU as built. nucleo-l432kc and nrf52840-dk
# are built twice: as for the board (defmt over RTT: size checks only, nothing here runs them)
# and with their `qemu` feature (the same memory map and code with semihosting output and no
# clock set-up), which runs on QEMU's netduinoplus2 / mps2-an386, whose memories contain the
# chip's. A board's RAM figure is its own ELF's static RAM plus the stack high-water mark its
# memory map's QEMU run measured (the code is the same but for the output path).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=thumbv7em-none-eabihf
TARGET_DIR="${FIRMWARE_TARGET_DIR:-$ROOT/target/firmware}"
OUT="$TARGET_DIR/boards"
. "$ROOT/scripts/log.sh"
export FW_EPISODES="${FW_EPISODES:-4}" FW_ADAPT_EPISODES="${FW_ADAPT_EPISODES:-60}"

# shellcheck source=scripts/lib/firmware-cargo.sh
. "$ROOT/scripts/lib/firmware-cargo.sh"
fw_toolchain_init
say "$(fw_toolchain_version)"
for tool in qemu-system-arm arm-none-eabi-size arm-none-eabi-objdump; do
    command -v "$tool" >/dev/null || die "$tool missing (Debian: qemu-system-arm binutils-arm-none-eabi; scripts/run-firmware.sh installs them)"
done
if [ -z "${MODEL:-}" ]; then
    MODEL="$TARGET_DIR/weak-model.bin"
    if [ ! -s "$MODEL" ]; then
        say "training a barely trained Tiny agent (2,560 frames on GoToObj) for the blob"
        (cd "$ROOT" && cargo run --release -q -p host -- train --config configs/device-tiny.toml \
            --level BabyAI-GoToObj-v0 --frames 2560 --seed 1 --quiet --out "$TARGET_DIR/train-weak" &&
            cargo run --release -q -p host -- export --preset Tiny \
                --checkpoint "$TARGET_DIR/train-weak/checkpoint.safetensors" --out "$MODEL") >&2
    fi
fi
MODEL="$(realpath "$MODEL")"
blob_size=$(stat -c %s "$MODEL")
mkdir -p "$OUT"
rm -f "$OUT"/*.log

# build BOARD [cargo args...]: prints the ELF path.
build() {
    local board=$1
    shift
    fw_cargo "$TARGET_DIR" build --locked --release -q -p "metarim-firmware-$board" "$@" >&2
    local elf
    elf="$(fw_target_dir "$TARGET_DIR")/$TARGET/release/metarim-firmware-$board"
    test -s "$elf" || die "$elf was not produced"
    # Keep each variant: the qemu build of a board overwrites its ELF.
    cp "$elf" "$OUT/$board$([ $# -gt 0 ] && echo -qemu).elf"
    echo "$OUT/$board$([ $# -gt 0 ] && echo -qemu).elf"
}

# sym ELF NAME: a symbol's address, decimal.
sym() { echo $((0x$(arm-none-eabi-nm "$1" | awk -v s="$2" '$3 == s {print $1}'))); }

# qemu ELF LOG [MODEL]: run under QEMU (firmware/qemu-run.sh), print the exit status.
qemu() {
    local rc=0
    MODEL="${3:-}" timeout 600 "$ROOT/firmware/qemu-run.sh" "$1" >"$2" 2>&1 || rc=$?
    [ "$rc" = 124 ] && die "QEMU timed out ($2)"
    echo "$rc"
}

# The blobs a run must refuse: corrupt (one bit of the payload), cut (the first half), foreign
# (an ELF file), and none at all.
python3 - "$MODEL" "$OUT" <<'PY'
import sys
blob = bytearray(open(sys.argv[1], "rb").read())
out = sys.argv[2]
bad = bytearray(blob)
bad[len(bad) // 2] ^= 0x04
open(f"{out}/corrupt.bin", "wb").write(bad)
open(f"{out}/cut.bin", "wb").write(blob[: len(blob) // 2])
PY
cp "$ROOT/firmware/qemu-run.sh" "$OUT/foreign.bin"

# run_expecting ELF RUN BLOB STATUS [PATTERN WHAT]...: run ELF on BLOB (log $OUT/RUN.log); fail
# unless it exits STATUS and its log has a line matching each PATTERN (WHAT names it).
run_expecting() {
    local elf=$1 run=$2 blob=$3 want_rc=$4 rc
    shift 4
    rc=$(qemu "$elf" "$OUT/$run.log" "$blob")
    [ "$rc" = "$want_rc" ] || die "$run: exited $rc, not $want_rc ($OUT/$run.log)"
    while [ $# -ge 2 ]; do
        grep -q "$1" "$OUT/$run.log" || die "$run: no $2 ($OUT/$run.log)"
        shift 2
    done
}

# check_blobs ELF NAME: the good blob runs to the end; every bad one halts with status 4 and
# names the problem. Prints the run's stack high-water mark (bytes).
check_blobs() {
    local elf=$1 name=$2
    run_expecting "$elf" "$name-good" "$MODEL" 0 \
        '^firmware: before=[0-9.]* after=[0-9.]* ram_bytes=' "the summary line" \
        '^firmware: adapted: .* windows=[1-9]' "an adaptation window (its stack is measured there)"
    for case in none:"all zero" corrupt:"CRC32 mismatch" cut:"CRC32 mismatch" foreign:"wrong magic"; do
        local what=${case%%:*} want=${case#*:} file=""
        [ "$what" = none ] || file="$OUT/$what.bin"
        run_expecting "$elf" "$name-$what" "$file" 4 \
            "^firmware: error: bad model blob: .*$want" "'$want'" \
            "halting without acting" "the halt message"
        ! grep -q '^firmware: before:' "$OUT/$name-$what.log" ||
            die "$name: blob '$what' ran episodes"
    done
    sed -n 's/^firmware: ram: .* + stack high-water \([0-9]*\) B = .*/\1/p' "$OUT/$name-good.log"
}

# fits BOARD ELF STACK CHIP_RAM CHIP_FLASH: the size line of one board build; fails when over.
rows=()
fits() {
    local board=$1 elf=$2 stack=$3 chip_ram=$4 chip_flash=$5
    local data bss prog region_start region_end flash_start ram
    read -r _ data bss _ < <(arm-none-eabi-size "$elf" | awk 'NR == 2')
    prog=$(fw_program_flash "$elf")
    flash_start=$(sym "$elf" __vector_table)
    region_start=$(sym "$elf" __metarim_blob_start)
    region_end=$(sym "$elf" __metarim_blob_end)
    ram=$((data + bss + stack))
    local region=$((region_end - region_start)) used_flash=$((region_end - flash_start))
    [ "$blob_size" -le "$region" ] || die "$board: the blob ($blob_size B) does not fit its region ($region B)"
    [ $((flash_start + prog)) -le "$region_start" ] || die "$board: the program overlaps the blob region"
    [ "$used_flash" -le "$chip_flash" ] || die "$board: program + blob region end at $used_flash B, over the chip's $chip_flash B"
    [ "$ram" -le "$chip_ram" ] || die "$board: RAM $ram B over the chip's $chip_ram B"
    rows+=("| $board | $((data + bss)) + $stack = $ram | $chip_ram | $prog | $blob_size of $region | $((prog + blob_size)) | $chip_flash |")
}

say "building and checking every board (model: $MODEL, $blob_size B)"
stack_mps2=$(check_blobs "$(build mps2-an386)" mps2-an386)
fits mps2-an386 "$OUT/mps2-an386.elf" "$stack_mps2" $((4 << 20)) $((4 << 20))
stack_f405=$(check_blobs "$(build netduinoplus2)" netduinoplus2)
fits netduinoplus2 "$OUT/netduinoplus2.elf" "$stack_f405" $((128 << 10)) $((1 << 20))
# The hardware boards: their memory map's qemu build runs (and measures the stack), the board
# build itself is only sized.
for hw in "nucleo-l432kc $((64 << 10)) $((256 << 10))" "nrf52840-dk $((256 << 10)) $((1 << 20))"; do
    read -r board chip_ram chip_flash <<<"$hw"
    stack=$(check_blobs "$(build "$board" --no-default-features --features qemu)" "$board-qemu")
    fits "$board (qemu build)" "$OUT/$board-qemu.elf" "$stack" "$chip_ram" "$chip_flash"
    build "$board" >/dev/null
    fits "$board" "$OUT/$board.elf" "$stack" "$chip_ram" "$chip_flash"
done

{
    echo "| board build | RAM: static + stack high-water = B | chip RAM | program flash | blob (B) of region | program + blob | chip flash |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$OUT/sizes.md"
say "blob tests (good, none, corrupt, cut, foreign) passed on the memory maps of mps2-an386, netduinoplus2, nucleo-l432kc and nrf52840-dk (logs: $OUT)"
say "ok"
