#!/usr/bin/env bash
# Build metarim-core for a bare-metal Cortex-M4F target (thumbv7em-none-eabihf), proving it is
# no_std and allocation-free. The rustup toolchain has no rust-src for that target, so this uses
# Debian's second toolchain (rustc-web / cargo-web / rust-web-src: rustc at /usr/bin/rustc with
# std sources) and -Zbuild-std=core; see docs/TOOLCHAINS.md.
#
# usage: bash scripts/check-no-std.sh      (installs the Debian packages when /usr/bin/rustc is
#                                           missing; needs root or sudo, and network access)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=thumbv7em-none-eabihf

if [ ! -x /usr/bin/rustc ] || [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then SUDO=sudo; else
            echo "check-no-std: /usr/bin/rustc missing and not root (install rustc-web cargo-web rust-web-src)" >&2
            exit 1
        fi
    fi
    echo "check-no-std: installing Debian's rustc-web cargo-web rust-web-src" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rustc-web cargo-web rust-web-src >/dev/null
fi

echo "check-no-std: $(/usr/bin/rustc --version) building metarim-core for $TARGET" >&2
cd "$ROOT"
# The rustup proxies must not step in: call Debian's cargo and rustc by path.
env -u RUSTUP_TOOLCHAIN -u CARGO_BUILD_TARGET -u RUSTFLAGS \
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
    /usr/bin/cargo build --locked --release -p metarim-core \
    --target "$TARGET" -Zbuild-std=core \
    --target-dir "$ROOT/target/no-std"

LIB="$ROOT/target/no-std/$TARGET/release/libmetarim_core.rlib"
test -s "$LIB" || { echo "check-no-std: $LIB was not produced" >&2; exit 1; }
echo "check-no-std: ok ($TARGET, $(du -h "$LIB" | cut -f1) rlib)"
