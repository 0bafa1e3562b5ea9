#!/usr/bin/env bash
# make test-large-i686: the 32-bit static binary syncs a file larger than
# 4 GiB, so sizes and offsets must be 64-bit on i686 too.
#
#   tinycore/large-file-test.sh [BIN]      (default target/static/x86/left)
#
# Two `left --once` processes on 127.0.0.1 (this machine runs i686 binaries
# natively; qemu-i386 is used if it can't), folders under
# target/large-test/. The file is sparse with random MiB chunks at 0,
# past 2 GiB, past 4 GiB and at the very end, so any offset truncated to
# 32 bits lands on the wrong data. Needs about LARGE_MIB of free disk for the
# copy (the source is sparse); skipped (exit 0, with a note) when there is
# not enough. LARGE_MIB (default 4400) sets the size.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/static/x86/left}
MIB=${LARGE_MIB:-4400}
WORK=target/large-test
TIMEOUT=${LARGE_TIMEOUT:-900}

[ -x "$BIN" ] || {
    echo "large-file-test: $BIN missing (make static)"
    exit 1
}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
run=("$BIN")
if ! "$BIN" --version >/dev/null 2>&1; then
    if command -v qemu-i386-static >/dev/null 2>&1; then
        run=(qemu-i386-static "$BIN")
    else
        echo "large-file-test: FAIL $BIN does not run here, and qemu-i386-static is missing"
        exit 1
    fi
fi
echo "large-file-test: $(file -b "$BIN" | cut -d, -f1-2); $("${run[@]}" --version)"

rm -rf "$WORK"
mkdir -p "$WORK/a/share" "$WORK/b/share"
free_mib=$(df -Pm "$WORK" | awk 'NR == 2 { print $4 }')
if [ "$free_mib" -lt $((MIB + 512)) ]; then
    echo "large-file-test: SKIP only $free_mib MiB free in $WORK, $((MIB + 512)) needed"
    rm -rf "$WORK"
    exit 0
fi

f=$WORK/a/share/large.bin
truncate -s "${MIB}M" "$f"
for at in 0 2100 4200 $((MIB - 1)); do
    [ "$at" -lt "$MIB" ] || continue
    head -c 1048576 /dev/urandom | dd of="$f" bs=1M seek="$at" conv=notrunc status=none
done
want=$(md5sum <"$f" | cut -d' ' -f1)
echo "large-file-test: $f: $(stat -c %s "$f") bytes, md5 $want"

port=$((20000 + RANDOM % 30000))
t0=$(date +%s)
(cd "$WORK/a" && exec timeout "$TIMEOUT" "${run[@]}" --once --timeout 60 --port "$port" "127.0.0.1:$((port + 1))" 2>a.log) &
pa=$!
(cd "$WORK/b" && exec timeout "$TIMEOUT" "${run[@]}" --once --timeout 60 --port $((port + 1)) "127.0.0.1:$port" 2>b.log) &
pb=$!
ra=0 rb=0
wait "$pa" || ra=$?
wait "$pb" || rb=$?
secs=$(($(date +%s) - t0))
echo "large-file-test: --once exited with $ra (a) and $rb (b) after ${secs}s"

got=$(md5sum <"$WORK/b/share/large.bin" 2>/dev/null | cut -d' ' -f1 || true)
size=$(stat -c %s "$WORK/b/share/large.bin" 2>/dev/null || echo missing)
status=0
if [ "$ra" -eq 0 ] && [ "$rb" -eq 0 ] && [ "$got" = "$want" ]; then
    echo "large-file-test: PASS $MIB MiB file synced by the i686 binary, md5 $got, $size bytes"
else
    echo "large-file-test: FAIL received $size bytes, md5 ${got:-none}, want $want"
    echo "---- a.log"
    tail -n 20 "$WORK/a/a.log"
    echo "---- b.log"
    tail -n 20 "$WORK/b/b.log"
    status=1
fi
[ -n "${LARGE_KEEP:-}" ] || rm -rf "$WORK"
exit $status
