# Sourced by the scripts (`. "$ROOT/scripts/log.sh"`): progress and failure messages on stderr,
# prefixed with the calling script's name (`run-firmware: ...`, `run-firmware: FAILED: ...`).
say() { echo "$(basename "$0" .sh): $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
