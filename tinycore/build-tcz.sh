#!/usr/bin/env bash
# Builds left.tcz and its companion files for Tiny Core Linux.
#
#   tinycore/build-tcz.sh x86_64|x86|aarch64
#
# Output in target/tcz/<arch>/: left.tcz, left.tcz.info, left.tcz.list,
# left.tcz.md5.txt, and left.tcz.zsync when zsyncmake is installed.
#
# The package tree is tinycore/pkg/ plus the static binary from
# tinycore/build-static.sh. Ownership and modes are set through a mksquashfs
# pseudo file, so no root or fakeroot is needed: everything root:root, dirs
# and executables 755, other files 644, usr/local/tce.installed and its
# script root:staff 775. Timestamps come from SOURCE_DATE_EPOCH (default:
# the last commit), so the same commit gives the same left.tcz.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=${1:-${ARCH:-x86_64}}
# The example share in .info's comment: on piCore the tce directory (and the
# room for a share) is the SD card's second partition.
case "$arch" in
    x86_64) example=/mnt/sda1 ;;
    x86 | i686) arch=x86 example=/mnt/sda1 ;;
    aarch64 | arm64) arch=aarch64 example=/mnt/mmcblk0p2 ;;
    *) echo "build-tcz: ARCH must be x86_64, x86 or aarch64, not '$arch'" >&2; exit 2 ;;
esac
for tool in mksquashfs md5sum du; do
    command -v "$tool" >/dev/null || {
        echo "build-tcz: $tool is missing (apt-get install squashfs-tools; or run tinycore/ci-deps.sh)" >&2
        exit 1
    }
done

STAFF_GID=50 # group staff on Tiny Core
bin=target/static/$arch/left
if [ -z "${TCZ_SKIP_BUILD:-}" ] || [ ! -x "$bin" ]; then
    bash tinycore/build-static.sh "$arch"
fi

out=target/tcz/$arch
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage"
rm -f "$out"/left.tcz "$out"/left.tcz.*

# The tree: packaging sources, the binary, the licence and the README.
cp -R tinycore/pkg/. "$stage/"
install -D -m 755 "$bin" "$stage/usr/local/bin/left"
doc=$stage/usr/local/share/doc/left
for f in LICENSE LICENSE.md LICENSE-MIT COPYING; do
    [ -f "$f" ] && cp "$f" "$doc/LICENSE"
done
cp tinycore/README.md "$doc/README.md"

# Ownership and modes, as a pseudo file (path m mode uid gid).
pseudo=$out/pseudo
(
    cd "$stage"
    find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
        p=${p#./}
        case "$p" in
            usr/local/tce.installed | usr/local/tce.installed/*) echo "$p m 775 0 $STAFF_GID" ;;
            *)
                if [ -d "$p" ] || [ -x "$p" ]; then
                    echo "$p m 755 0 0"
                else
                    echo "$p m 644 0 0"
                fi
                ;;
        esac
    done
) >"$pseudo"
# Same modes on the staged tree, for the .list and for anyone looking at it.
while read -r p _ mode _; do chmod "$mode" "$stage/$p"; done <"$pseudo"

epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
mksquashfs "$stage" "$out/left.tcz" -b 4096 -comp gzip -no-xattrs -noappend \
    -root-mode 755 -root-uid 0 -root-gid 0 -pf "$pseudo" \
    -all-time "$epoch" -mkfs-time "$epoch" -quiet -no-progress >/dev/null
touch -d "@$epoch" "$out/left.tcz"

# left.tcz.list: every file (not directory), sorted, as installed.
(cd "$stage" && find usr -not -type d | sed 's|^|/|' | LC_ALL=C sort) >"$out/left.tcz.list"

# left.tcz.info from the template.
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
license=$(sed -n 's/^license *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
site=${LEFT_SITE:-$(sed -n 's/^\(repository\|homepage\) *= *"\(.*\)"/\2/p' Cargo.toml | head -n 1)}
size=$(cd "$out" && du -h left.tcz | cut -f 1)
date=$(date -u -d "@$epoch" +%Y/%m/%d)
sed -e "s|@VERSION@|$version|g" -e "s|@LICENSE@|${license:-see /usr/local/share/doc/left/LICENSE}|g" \
    -e "s|@SITE@|${site:--}|g" -e "s|@SIZE@|$size|g" -e "s|@DATE@|$date|g" -e "s|@ARCH@|$arch|g" \
    -e "s|@DISK@|$example|g" \
    tinycore/left.tcz.info.in | tr -d '\r' >"$out/left.tcz.info"

(cd "$out" && md5sum left.tcz >left.tcz.md5.txt)
if command -v zsyncmake >/dev/null 2>&1; then
    (cd "$out" && zsyncmake -u left.tcz -o left.tcz.zsync left.tcz >/dev/null 2>&1)
fi

bash tinycore/check-tcz.sh "$out"
echo "build-tcz: $out: $(cd "$out" && ls left.tcz*)"
