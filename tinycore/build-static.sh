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
# (default 600 KiB).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
MAX_KIB=${STATIC_MAX_KIB:-600}
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
    "$CARGO" build --release --target "$triple"
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
    printf '%-24s %-9s %8d bytes %5d KiB  (%s)\n' "$out/left" "$arch" "$bytes" "$kib" "$verdict"
    if command -v file >/dev/null 2>&1; then
        echo "    $(file -b "$out/left")"
    fi
done
exit $status
