#!/usr/bin/env bash
# Installs what `make static`, `make tcz`, `make vm-test`, `make powercut`, `make test-aarch64` and
# `make interop-test` need on Debian 12.
# Idempotent and non-interactive; run as root (CI runs as root).
#
#   squashfs-tools   mksquashfs / unsquashfs for left.tcz
#   zsync            zsyncmake for left.tcz.zsync
#   qemu-system-x86  the two test VMs (TCG, no KVM needed)
#   qemu-system-arm  the aarch64 (piCore64) VM of make vm-test ARCH=aarch64
#   cpio, xz-utils   the VMs' initramfs, compressed kernel modules
#   file             shows what the static binaries are
#   e2fsprogs        mkfs.ext4, e2fsck, debugfs for make powercut's disk image
#   strace           tests/features.rs watches when an install's announcement is written
#   qemu-user-static runs the aarch64 binaries (unit tests, interop test) on x86_64
#   binutils         readelf checks the aarch64 binary's symbols and segment alignment
#   rustup targets   x86_64-unknown-linux-musl, i686-unknown-linux-musl, aarch64-unknown-linux-musl
#                    (linked by the toolchain's own rust-lld: no cross gcc)
#   rust-src         for make static's std rebuild (smaller binaries)
#
# The VMs' kernel (linux-image-amd64, linux-image-arm64:arm64) and busybox-static
# (amd64 and arm64) are not installed: vm-test fetches them with `apt-get download`
# into target/vm-test/cache, so this script adds the arm64 architecture to dpkg
# (for downloads only; nothing of arm64 is installed) and runs `apt-get update`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

pkgs=(squashfs-tools zsync qemu-system-x86 qemu-system-arm cpio xz-utils file e2fsprogs strace
    qemu-user-static binutils)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "$(id -u)" -eq 0 ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "ci-deps: dpkg --add-architecture arm64 (apt-get download of the aarch64 VM's kernel)"
        dpkg --add-architecture arm64
    fi
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        echo "ci-deps: apt-get install ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
elif [ ${#missing[@]} -gt 0 ]; then
    echo "ci-deps: not root; please install: ${missing[*]}" >&2
    exit 1
fi

for t in x86_64-unknown-linux-musl i686-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! rustup target list --installed | grep -qx "$t"; then
        echo "ci-deps: rustup target add $t"
        rustup target add "$t"
    fi
done
# rust-src: make static rebuilds std without its backtrace symbolizer.
if ! rustup component list --installed | grep -q '^rust-src'; then
    echo "ci-deps: rustup component add rust-src"
    rustup component add rust-src
fi
echo "ci-deps: ok ($(mksquashfs -version | head -n 1); $(qemu-system-x86_64 --version | head -n 1); $(qemu-aarch64-static --version | head -n 1))"
