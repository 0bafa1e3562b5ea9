#!/usr/bin/env bash
# Static, stripped musl builds of `left` for Tiny Core Linux.
#
#   tinycore/build-static.sh [x86_64|x86|aarch64]...   (default: all three)
#
# x86_64  -> x86_64-unknown-linux-musl   (CorePure64, Core64)
# x86     -> i686-unknown-linux-musl     (the 32-bit Core / TinyCore)
# aarch64 -> aarch64-unknown-linux-musl  (piCore64, Raspberry Pi 3/4/5, Zero 2 W)
#
# Missing rustup targets are added. Each binary is copied to
# target/static/<arch>/left, stripped, and must stay under STATIC_MAX_KIB
# (default 736 KiB).
#
# aarch64 is linked by the toolchain's own rust-lld (no cross gcc; musl's
# start files and libc come with the rustup target). The linker strips it
# (strip = true in Cargo.toml): the host's GNU strip cannot read aarch64
# objects, so it is not run on it, and the script checks that no symbol
# table is left. Its LOAD segments must be aligned to a multiple of 16 KiB:
# piCore64 boots the Raspberry Pi 5 with a 16 KiB-page kernel, where a
# binary aligned to 4 KiB can fail to load. rust-lld aligns them to 64 KiB;
# the script checks it.
#
# Size: the prebuilt std carries a backtrace symbolizer (gimli, addr2line,
# miniz_oxide: about 200 KiB) that a stripped binary can never use. So std
# is rebuilt from rust-src with the project's release profile and without
# its default features (-Zbuild-std, allowed on the stable toolchain by
# RUSTC_BOOTSTRAP=1 for this build only). Panics still print their message
# (panic = "abort" as in Cargo.toml), without the symbolized backtrace, which
# RUST_BACKTRACE would ask for, and without their source location
# (-Zlocation-detail=none: the file:line:column strings of every place that
# could panic, about 20 KiB; a panic is a bug, and its message says which
# one). STATIC_BUILD_STD=0
# builds with the prebuilt std instead; if the std rebuild fails, the script
# says so and falls back to it.
#
# Unwind tables (.eh_frame, about 45 KiB) are left out too: with panic =
# "abort" nothing unwinds, and without the symbolizer no backtrace is printed
# from them.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
export RUSTFLAGS="${RUSTFLAGS:-} -C force-unwind-tables=no"
MAX_KIB=${STATIC_MAX_KIB:-736}
[ $# -gt 0 ] || set -- x86_64 x86 aarch64
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:-rust-lld}

triple_of() {
    case "$1" in
        x86_64) echo x86_64-unknown-linux-musl ;;
        x86 | i686) echo i686-unknown-linux-musl ;;
        aarch64 | arm64) echo aarch64-unknown-linux-musl ;;
        *) echo "build-static: unknown arch '$1' (want x86_64, x86 or aarch64)" >&2; exit 2 ;;
    esac
}

status=0
for arch in "$@"; do
    [ "$arch" = i686 ] && arch=x86
    [ "$arch" = arm64 ] && arch=aarch64
    triple=$(triple_of "$arch")
    if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
        echo "build-static: rustup target add $triple"
        rustup target add "$triple"
    fi
    mode="prebuilt std"
    if [ "${STATIC_BUILD_STD:-1}" != 0 ]; then
        if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
            echo "build-static: rustup component add rust-src"
            rustup component add rust-src || true
        fi
        if RUSTFLAGS="$RUSTFLAGS -Zlocation-detail=none" RUSTC_BOOTSTRAP=1 \
            "$CARGO" build --release --target "$triple" \
            -Zbuild-std=std,panic_abort -Zbuild-std-features=; then
            mode="std rebuilt without backtrace symbolizer"
        else
            echo "build-static: WARNING: rebuilding std failed; building with the prebuilt std" >&2
            "$CARGO" build --release --target "$triple"
        fi
    else
        "$CARGO" build --release --target "$triple"
    fi
    out=target/static/$arch
    mkdir -p "$out"
    cp "target/$triple/release/left" "$out/left.tmp"
    if [ "$arch" = aarch64 ]; then
        command -v readelf >/dev/null || {
            echo "build-static: readelf is missing (apt-get install binutils)" >&2
            exit 1
        }
        if readelf -SW "$out/left.tmp" | grep -q '\.symtab'; then
            echo "build-static: $out/left: the linker left a symbol table" >&2
            status=1
        fi
        # Every LOAD segment aligned to a multiple of 16 KiB (the Pi 5's kernel pages).
        for align in $(readelf -lW "$out/left.tmp" | awk '$1 == "LOAD" { print $NF }'); do
            if [ $((align % 16384)) -ne 0 ]; then
                echo "build-static: $out/left: a LOAD segment aligned to $align, not to 16 KiB" >&2
                status=1
            fi
        done
    elif command -v strip >/dev/null 2>&1; then
        strip --strip-all "$out/left.tmp"
    fi
    mv -f "$out/left.tmp" "$out/left"
    bytes=$(stat -c %s "$out/left")
    kib=$(( (bytes + 1023) / 1024 ))
    if [ "$kib" -lt "$MAX_KIB" ]; then
        verdict="ok, budget $MAX_KIB KiB"
    else
        verdict="OVER BUDGET of $MAX_KIB KiB"
        status=1
    fi
    printf '%-25s %-7s %8d bytes %5d KiB  (%s; %s)\n' "$out/left" "$arch" "$bytes" "$kib" "$verdict" "$mode"
    if command -v file >/dev/null 2>&1; then
        echo "    $(file -b "$out/left")"
    fi
done
exit $status
