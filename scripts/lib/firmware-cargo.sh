# Sourced by scripts/run-firmware.sh and scripts/firmware-boards.sh: choose the Cortex-M
# toolchain once and build firmware/ with it (docs/TOOLCHAINS.md explains both routes).
#
#   fw_toolchain_init            sets FW_TOOLCHAIN to rustup or debian (FW_TOOLCHAIN=auto, the
#                                default: rustup when the thumbv7em-none-eabihf target is or can
#                                be installed, else Debian's rustc-web with -Zbuild-std=core)
#   fw_cargo TARGET_DIR ARGS...  `cargo ARGS` in firmware/ with that toolchain (Debian's builds go
#                                to TARGET_DIR/debian: the two routes' artifacts never mix)
#   fw_target_dir TARGET_DIR     where fw_cargo puts the artifacts
#   fw_apt_install PKG...        install Debian packages (as root or through sudo)
#   fw_program_flash ELF         the program's flash bytes: from the vector table to the end of
#                                the last section loaded into flash (.data's image), alignment
#                                gaps included (what the firmware reports)
# Needs ROOT (the repository) and a `die` function.

FW_TARGET=thumbv7em-none-eabihf

fw_apt_install() {
    [ $# -gt 0 ] || return 0
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo to install: $*"
        sudo=sudo
    fi
    echo "firmware: installing $*" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

fw_program_flash() {
    local start="" end=0 e name size lma
    while read -r _ name size _ lma _; do
        case "$name" in .vector_table | .text | .rodata | .data) ;; *) continue ;; esac
        [ "$name" = .vector_table ] && start=$((0x$lma))
        e=$((0x$lma + 0x$size))
        [ "$e" -gt "$end" ] && end=$e
    done < <(arm-none-eabi-objdump -h "$1" | grep -E '^ +[0-9]+ \.')
    [ -n "$start" ] || die "no .vector_table in $1"
    echo $((end - start))
}

fw_toolchain_init() {
    FW_TOOLCHAIN="${FW_TOOLCHAIN:-auto}"
    if [ "$FW_TOOLCHAIN" = auto ] || [ "$FW_TOOLCHAIN" = rustup ]; then
        if command -v rustup >/dev/null &&
            { rustup target list --installed 2>/dev/null | grep -qx "$FW_TARGET" ||
                rustup target add "$FW_TARGET" >&2; }; then
            FW_TOOLCHAIN=rustup
        elif [ "$FW_TOOLCHAIN" = rustup ]; then
            die "FW_TOOLCHAIN=rustup but rustup cannot provide $FW_TARGET"
        else
            echo "firmware: no rustup target $FW_TARGET: Debian's toolchain with -Zbuild-std" >&2
            FW_TOOLCHAIN=debian
        fi
    fi
    case "$FW_TOOLCHAIN" in
        rustup) ;;
        debian)
            if [ ! -x /usr/bin/rustc ] || [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust ]; then
                fw_apt_install rustc-web cargo-web rust-web-src
            fi
            ;;
        *) die "FW_TOOLCHAIN=$FW_TOOLCHAIN: rustup, debian or auto" ;;
    esac
}

fw_target_dir() {
    if [ "$FW_TOOLCHAIN" = debian ]; then echo "$1/debian"; else echo "$1"; fi
}

fw_toolchain_version() {
    if [ "$FW_TOOLCHAIN" = debian ]; then
        echo "$(/usr/bin/rustc --version) (Debian, -Zbuild-std=core)"
    else
        echo "$(rustc --version) (rustup)"
    fi
}

fw_cargo() {
    local dir remap
    dir="$(fw_target_dir "$1")"
    shift
    # Panic locations put source paths into flash; core sits outside firmware/'s workspace, so
    # rustc gets its absolute path and the image grew with the checkout's path (16 paths: about
    # 160 B more in a CI clone than in /work/main). Remapped to `metarim/`, only the crates'
    # hashes still follow the path (they move function alignment by a few bytes). One argument
    # in CARGO_ENCODED_RUSTFLAGS, so a path with spaces stays whole.
    remap="--remap-path-prefix=$ROOT=metarim"
    if [ "$FW_TOOLCHAIN" = rustup ]; then
        (cd "$ROOT/firmware" && env -u CARGO_BUILD_TARGET -u RUSTFLAGS -u CARGO_TARGET_DIR \
            CARGO_ENCODED_RUSTFLAGS="$remap" cargo "$@" --target-dir "$dir")
    else
        # The rustup proxies must not step in: Debian's cargo and rustc by path; Debian's rustc
        # has no rust-lld, so GNU ld links.
        (cd "$ROOT/firmware" && env -u RUSTUP_TOOLCHAIN -u CARGO_BUILD_TARGET -u RUSTFLAGS -u CARGO_TARGET_DIR \
            CARGO_ENCODED_RUSTFLAGS="$remap" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER=arm-none-eabi-ld \
            /usr/bin/cargo "$@" -Zbuild-std=core --target-dir "$dir")
    fi
}
