#!/usr/bin/env bash
# Checks a built left.tcz the way Tiny Core's extension checker looks at it.
#
#   tinycore/check-tcz.sh target/tcz/x86_64
#
# Prints one PASS/FAIL line per rule and exits non-zero if any rule fails.
set -uo pipefail
dir=${1:?usage: check-tcz.sh DIR-WITH-left.tcz}
tcz=$dir/left.tcz
fails=0
pass() { echo "check-tcz: PASS $*"; }
fail() {
    echo "check-tcz: FAIL $*"
    fails=$((fails + 1))
}
check() { # check "description" command...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

for f in left.tcz left.tcz.info left.tcz.list left.tcz.md5.txt; do
    check "$f exists" test -s "$dir/$f"
done
[ -s "$tcz" ] || exit 1
if command -v zsyncmake >/dev/null 2>&1; then
    check "left.tcz.zsync exists (zsyncmake is installed)" test -s "$dir/left.tcz.zsync"
fi

# The squashfs itself.
super=$(unsquashfs -s "$tcz" 2>&1)
check "squashfs 4.0" grep -q 'SQUASHFS 4:0' <<<"$super"
check "gzip compression" grep -qx 'Compression gzip' <<<"$super"
check "block size 4096" grep -qx 'Block size 4096' <<<"$super"
check "no xattrs" grep -qx 'Xattrs are not stored' <<<"$super"

# Owners and modes: unsquashfs -lln prints "mode uid/gid size date time path".
listing=$(unsquashfs -lln "$tcz" | awk '$NF ~ /^squashfs-root/ { sub(/^squashfs-root/, "", $NF); print $1, $2, $NF }')
bad=$(
    while read -r mode owner path; do
        [ -z "$path" ] && continue # the root directory
        case "$path" in
            /usr/local/tce.installed | /usr/local/tce.installed/*)
                case "$mode" in d*) want=drwxrwxr-x ;; *) want=-rwxrwxr-x ;; esac
                wantown=0/50
                ;;
            *)
                case "$mode" in
                    d*) want=drwxr-xr-x ;;
                    l*) want=$mode ;;
                    -??x*) want=-rwxr-xr-x ;;
                    *) want=-rw-r--r-- ;;
                esac
                wantown=0/0
                ;;
        esac
        case "$path" in /usr | /usr/local | /usr/local/*) ;; *) echo "$path: outside /usr/local" ;; esac
        [ "$mode" = "$want" ] || echo "$path: mode $mode, want $want"
        [ "$owner" = "$wantown" ] || echo "$path: owner $owner, want $wantown"
    done <<<"$listing"
)
if [ -z "$bad" ]; then
    pass "owners root:root (tce.installed root:staff), modes 755/644 (tce.installed 775), all under /usr/local"
else
    fail "owners and modes:"
    sed 's/^/    /' <<<"$bad"
fi
check "executable /usr/local/bin/left" grep -q '^-rwxr-xr-x 0/0 /usr/local/bin/left$' <<<"$listing"
check "init script /usr/local/etc/init.d/left" grep -q '^-rwxr-xr-x 0/0 /usr/local/etc/init.d/left$' <<<"$listing"
check "licence under /usr/local/share/doc/left/" grep -Eq '^-rw-r--r-- 0/0 /usr/local/share/doc/left/(LICEN[CS]E|COPYING)' <<<"$listing"
if grep -q ' /usr/local/tce.installed/left$' <<<"$listing"; then
    check "startup script /usr/local/tce.installed/left root:staff 775" \
        grep -q '^-rwxrwxr-x 0/50 /usr/local/tce.installed/left$' <<<"$listing"
fi

# left.tcz.list: the files (not directories) of the squashfs, sorted.
files=$(unsquashfs -lln "$tcz" | awk '$1 !~ /^d/ && $NF ~ /^squashfs-root\// { sub(/^squashfs-root/, "", $NF); print $NF }' | LC_ALL=C sort)
check "left.tcz.list = the files in left.tcz" diff <(printf '%s\n' "$files") "$dir/left.tcz.list"
check "left.tcz.list sorted" bash -c 'LC_ALL=C sort -c "$1"' _ "$dir/left.tcz.list"
check "left.tcz.list: one /usr/local/ path per line" bash -c '! grep -qv "^/usr/local/[^[:space:]]*$" "$1"' _ "$dir/left.tcz.list"

# left.tcz.md5.txt
check "left.tcz.md5.txt matches" bash -c 'cd "$1" && md5sum -c --status left.tcz.md5.txt' _ "$dir"

# left.tcz.info: 12 fields in order, "Field:<TAB>value", LF endings.
info=$dir/left.tcz.info
fields="Title Description Version Author Original-site Copying-policy Size Extension_by Tags Comments Change-log Current"
check "left.tcz.info: LF line endings, no CR" bash -c '! grep -q $'"'"'\r'"'"' "$1" && [ -z "$(tail -c 1 "$1")" ]' _ "$info"
check "left.tcz.info: 12 fields in order" \
    diff <(printf '%s:\n' $fields) <(cut -f 1 "$info")
check "left.tcz.info: each line Field:<TAB>value" bash -c '! grep -Eqv "^[A-Za-z_-]+:	[^	]+$" "$1"' _ "$info"
check "left.tcz.info: Title left.tcz" grep -qx $'Title:\tleft.tcz' "$info"
# The binary is built for the architecture the .info names (x86_64, x86 or aarch64): its ELF
# class (byte 4) and machine (bytes 18-19, little-endian).
named=$(sed -n 's/^Current:.*(\(.*\))$/\1/p' "$info")
elf=$(unsquashfs -cat "$tcz" usr/local/bin/left 2>/dev/null | od -An -tx1 -N20 | tr -d ' \n')
case "${elf:8:2}:${elf:36:4}" in
    02:3e00) machine=x86_64 ;;
    01:0300) machine=x86 ;;
    02:b700) machine=aarch64 ;;
    *) machine="unknown (ELF class ${elf:8:2}, machine ${elf:36:4})" ;;
esac
check "binary for $machine, as left.tcz.info names it (${named:-none})" test "$machine" = "$named"
size=$(cd "$dir" && du -h left.tcz | cut -f 1)
check "left.tcz.info: Size $size as du -h prints it" grep -qx "Size:	$size" "$info"

echo "check-tcz: $(unsquashfs -lln "$tcz" | grep -c squashfs-root/) entries, $(du -h "$tcz" | cut -f 1) $tcz"
[ "$fails" -eq 0 ] || {
    echo "check-tcz: $fails check(s) failed"
    exit 1
}
