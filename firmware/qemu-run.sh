#!/usr/bin/env bash
# Cargo runner for the QEMU builds (firmware/.cargo/config.toml): runs ELF under QEMU with the
# model blob loaded into the ELF's own blob region, so the program and the model stay apart as
# on a flashed board. The machine follows the ELF's flash address: 0x08000000 (an STM32 map:
# the netduinoplus2 board, or the nucleo-l432kc board's `qemu` build) runs on netduinoplus2,
# 0x00000000 (mps2-an386, or the nrf52840-dk board's `qemu` build) on mps2-an386. A build
# whose output is defmt over RTT is for a probe, not QEMU, and is refused.
#
# usage: MODEL=model.bin ./qemu-run.sh ELF [semihosting args...]
#   MODEL       device blob (`metarim export --preset Tiny`); unset: the region is left empty
#               and the firmware reports that no model is flashed
#   QEMU_EXTRA  more QEMU arguments (e.g. the insn-count plugin)
set -euo pipefail
elf="${1:?usage: MODEL=model.bin ./qemu-run.sh ELF [args...]}"
shift
nm="$(command -v arm-none-eabi-nm || true)"
[ -n "$nm" ] || { echo "qemu-run: arm-none-eabi-nm not found (Debian: binutils-arm-none-eabi)" >&2; exit 1; }
syms="$("$nm" "$elf")"
if grep -q '_SEGGER_RTT' <<<"$syms"; then
    echo "qemu-run: $elf prints by defmt over RTT (a board build): flash it with probe-rs, or build the board with --no-default-features --features qemu" >&2
    exit 1
fi
sym() { awk -v s="$1" '$3 == s {print "0x" $1}' <<<"$syms"; }
flash="$(sym __vector_table)"
blob="$(sym __metarim_blob_start)"
[ -n "$flash" ] && [ -n "$blob" ] || { echo "qemu-run: $elf has no __vector_table or __metarim_blob_start" >&2; exit 1; }
case "$((flash))" in
    $((0x08000000))) machine=netduinoplus2 ;;
    0) machine=mps2-an386 ;;
    *) echo "qemu-run: no QEMU machine for flash at $flash" >&2; exit 1 ;;
esac
loader=()
if [ -n "${MODEL:-}" ]; then
    [ -s "$MODEL" ] || { echo "qemu-run: MODEL=$MODEL is not a readable file" >&2; exit 1; }
    loader=(-device "loader,file=$MODEL,addr=$blob,force-raw=on")
fi
semi="enable=on,target=native,arg=$(basename "$elf")"
for a in "$@"; do semi="$semi,arg=$a"; done
# shellcheck disable=SC2086 # QEMU_EXTRA is a list of arguments
exec qemu-system-arm -cpu cortex-m4 -machine "$machine" -nographic -icount shift=0 \
    -semihosting-config "$semi" "${loader[@]}" ${QEMU_EXTRA:-} -kernel "$elf"
