#!/usr/bin/env bash
# Static, stripped musl builds of `left` for Tiny Core Linux.
#
#   tinycore/build-static.sh [x86_64|x86]...   (default: both)
#
# x86_64 -> x86_64-unknown-linux-musl  (CorePure64, Core64)
# x86    -> i686-unknown-linux-musl    (the 32-bit Core / TinyCore)
#
# Missing rustup targets are added. Each binary is copied to
# target/static/<arch>/left, stripped, and must stay under STATIC_MAX_KIB
# (default 672 KiB).
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
MAX_KIB=${STATIC_MAX_KIB:-672}
[ $# -gt 0 ] || set -- x86_64 x86

triple_of() {
    case "$1" in
        x86_64) echo x86_64-unknown-linux-musl ;;
        x86 | i686) echo i686-unknown-linux-musl ;;
        *) echo "build-static: unknown arch '$1' (want x86_64 or x86)" >&2; exit 2 ;;
    esac
}

status=0
for arch in "$@"; do
    [ "$arch" = i686 ] && arch=x86
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
    if command -v strip >/dev/null 2>&1; then
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
    printf '%-24s %-6s %8d bytes %5d KiB  (%s; %s)\n' "$out/left" "$arch" "$bytes" "$kib" "$verdict" "$mode"
    if command -v file >/dev/null 2>&1; then
        echo "    $(file -b "$out/left")"
    fi
done
exit $status
