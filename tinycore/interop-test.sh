#!/usr/bin/env bash
# make interop-test: an aarch64 `left` (piCore64's binary, under qemu-user) and an x86_64
# `left` sync with each other on 127.0.0.1, both ways.
#
#   tinycore/interop-test.sh [X86_64_BIN] [AARCH64_BIN]
#       (default target/static/x86_64/left and target/static/aarch64/left)
#
# Each round runs the two as `left -v --once` with a shared key, one folder each under
# target/interop-test/, and then compares both folders with a model: a third folder that the
# script changes the same way it changes the shares, never touched by `left`. Every file's path,
# MD5 and mode and every folder must match the model on both sides, so a file that did not
# arrive, arrived wrong, came back after a deletion, or was lost on both sides fails the test.
#
#   round 1: x86_64 holds an 8 MiB file, 30 small files, an empty folder, a hidden file and a
#            file of mode 600; aarch64 a 3 MiB file and 20 small files; each must get the other's
#   round 2: aarch64 rewrites 1 MiB in the middle of the 8 MiB file and appends to a small file
#            (sent as a delta to x86_64), x86_64 deletes the 3 MiB file and a folder and adds a
#            file; each must see the other's changes
#
# The aarch64 binary runs under QEMU_AARCH64 (default qemu-aarch64-static, else qemu-aarch64)
# with the CPU model QEMU_CPU (default cortex-a53: the Pi 3's and Zero 2 W's core, ARMv8.0), or
# directly where it runs natively. Both binaries are checked to be what they claim (the ELF
# machine), both `--once` must exit 0 within INTEROP_TIMEOUT seconds (default 300), the aarch64
# one must name the NEON kernels in its log, and neither log may show a panic. Prints PASS/FAIL lines and "N passed, N failed"; exits non-zero on any
# failure.
set -uo pipefail
cd "$(dirname "$0")/.."
X86=${1:-target/static/x86_64/left}
ARM=${2:-target/static/aarch64/left}
WORK=target/interop-test
TIMEOUT=${INTEROP_TIMEOUT:-300}
T0=$(date +%s)

passes=0 fails=0
pass() {
    echo "interop-test: PASS $*"
    passes=$((passes + 1))
}
fail() {
    echo "interop-test: FAIL $*"
    fails=$((fails + 1))
}
finish() {
    echo "interop-test: wall time $(($(date +%s) - T0)) s; logs in $WORK"
    echo "interop-test: $passes passed, $fails failed"
    [ "$fails" -eq 0 ]
    exit
}

# The ELF machine (bytes 18-19, little-endian) of a binary.
machine() { od -An -tx1 -j18 -N2 "$1" 2>/dev/null | tr -d ' \n'; }
for b in "$X86" "$ARM"; do
    [ -x "$b" ] || {
        fail "$b missing (make static ARCH=x86_64 and ARCH=aarch64)"
        finish
    }
done
[ "$(machine "$X86")" = 3e00 ] || fail "$X86 is not an x86_64 binary"
[ "$(machine "$ARM")" = b700 ] || fail "$ARM is not an aarch64 binary"
[ "$fails" -eq 0 ] || finish
X86=$(cd "$(dirname "$X86")" && pwd)/$(basename "$X86")
ARM=$(cd "$(dirname "$ARM")" && pwd)/$(basename "$ARM")

run_arm=("$ARM")
how="natively"
if ! "$ARM" --version >/dev/null 2>&1; then
    qemu=${QEMU_AARCH64:-$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)}
    [ -n "$qemu" ] || {
        fail "$ARM does not run here and qemu-aarch64(-static) is missing (apt-get install qemu-user-static)"
        finish
    }
    export QEMU_CPU=${QEMU_CPU:-cortex-a53}
    run_arm=("$qemu" "$ARM")
    how="under $(basename "$qemu") $("$qemu" --version | head -n 1 | sed 's/.*version \([^ ]*\).*/\1/'), CPU $QEMU_CPU"
fi
echo "interop-test: x86_64 $("$X86" --version), aarch64 $("${run_arm[@]}" --version) $how"

rm -rf "$WORK"
mkdir -p "$WORK/x86/share" "$WORK/arm/share" "$WORK/model"
WORK=$(cd "$WORK" && pwd)
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/key"
chmod 600 "$WORK/key"

# Writes the same bytes into a share and into the model: put SIDE PATH < data.
put() {
    local side=$1 rel=$2
    mkdir -p "$(dirname "$WORK/$side/share/$rel")" "$(dirname "$WORK/model/$rel")"
    cat >"$WORK/model/$rel"
    cp -p "$WORK/model/$rel" "$WORK/$side/share/$rel"
}
# One line per folder and file under $1 (not .left): "d PATH" or "f PATH MODE MD5".
listing() {
    (cd "$1" && find . -mindepth 1 -path ./.left -prune -o -printf '%y %P %m\n' | LC_ALL=C sort |
        while read -r type path mode; do
            case "$type" in
                d) echo "d $path" ;;
                f) echo "f $path $mode $(md5sum <"$path" | cut -d' ' -f1)" ;;
                *) echo "$type $path (not a file or folder)" ;;
            esac
        done)
}

# Runs both sides with --once; checks their exit codes and logs, then each side against the model.
round() {
    local name=$1 port rx=0 ra=0 t
    # Below the ephemeral range (32768 and up): a port there can be taken by any outgoing
    # connection meanwhile ("Address in use" failed a round once in CI).
    port=$((10000 + RANDOM % 22000))
    t=$(date +%s)
    (cd "$WORK/x86" && exec timeout "$TIMEOUT" "$X86" -v --once --timeout 60 --key-file "$WORK/key" \
        --port "$port" "127.0.0.1:$((port + 1))" 2>>x86.log) &
    local px=$!
    (cd "$WORK/arm" && exec timeout "$TIMEOUT" "${run_arm[@]}" -v --once --timeout 60 --key-file "$WORK/key" \
        --port $((port + 1)) "127.0.0.1:$port" 2>>arm.log) &
    local pa=$!
    wait "$px" || rx=$?
    wait "$pa" || ra=$?
    t=$(($(date +%s) - t))
    if [ "$rx" -eq 0 ] && [ "$ra" -eq 0 ]; then
        pass "$name: both --once exited 0 (${t}s)"
    else
        fail "$name: --once exited $rx (x86_64) and $ra (aarch64) after ${t}s"
    fi
    local want side
    want=$(listing "$WORK/model")
    for side in x86 arm; do
        local got label=x86_64
        [ "$side" = arm ] && label=aarch64
        got=$(listing "$WORK/$side/share")
        if [ "$got" = "$want" ]; then
            pass "$name: $label's share = the model ($(grep -c '^f' <<<"$want") files, $(grep -c '^d' <<<"$want") folders, paths, modes and MD5s)"
        else
            fail "$name: $label's share differs from the model (< model, > $label):"
            diff <(echo "$want") <(echo "$got") | head -n 20
        fi
    done
}

# Round 1: different files on each side.
head -c $((8 << 20)) /dev/urandom | put x86 big-x86.bin
for i in $(seq -w 1 30); do
    head -c $((RANDOM % 9000 + 1)) /dev/urandom | put x86 "small-x86/f$i.bin"
done
mkdir -p "$WORK/x86/share/empty" "$WORK/model/empty"
echo "hidden $RANDOM" | put x86 .hidden
echo "private $RANDOM" | put x86 private.txt
chmod 600 "$WORK/x86/share/private.txt" "$WORK/model/private.txt"
head -c $((3 << 20)) /dev/urandom | put arm big-arm.bin
for i in $(seq -w 1 20); do
    for _ in $(seq $((RANDOM % 50 + 1))); do echo "arm file $i line $RANDOM"; done | put arm "small-arm/deeper/f$i.txt"
done
round "round 1 (new files both ways)"

# Round 2: a delta and an append from aarch64; a deletion and a new file from x86_64.
{
    head -c $((3 << 20)) "$WORK/model/big-x86.bin"
    head -c $((1 << 20)) /dev/urandom
    tail -c +$(((4 << 20) + 1)) "$WORK/model/big-x86.bin"
} >"$WORK/big.new"
put arm big-x86.bin <"$WORK/big.new"
rm -f "$WORK/big.new"
{
    cat "$WORK/model/small-arm/deeper/f07.txt"
    echo "appended on aarch64"
} >"$WORK/small.new"
put arm small-arm/deeper/f07.txt <"$WORK/small.new"
rm -f "$WORK/small.new"
rm -f "$WORK/x86/share/big-arm.bin" "$WORK/model/big-arm.bin"
rm -rf "$WORK/x86/share/small-x86" "$WORK/model/small-x86"
echo "new on x86_64 $RANDOM" | put x86 new-x86.txt
round "round 2 (a delta, an append, deletions, a new file)"

if grep -q 'big-x86.bin' "$WORK/x86/x86.log"; then
    echo "interop-test: x86_64 received: $(grep 'big-x86.bin' "$WORK/x86/x86.log" | tail -n 1 | cut -d' ' -f2-)"
fi
# The aarch64 side checked what it received with the NEON kernels (left -v names them).
lanes=$(grep -h 'MD5s side by side' "$WORK/arm/arm.log" | head -n 1 | sed 's/.*side by side: //')
case "$lanes" in
    *Neon*) pass "aarch64 hashed with the NEON kernels: $lanes" ;;
    *) fail "aarch64 did not use the NEON kernels: ${lanes:-no line in its log}" ;;
esac
crash=$(grep -hE 'panicked at|Aborted|Segmentation fault|Illegal instruction|qemu: uncaught' \
    "$WORK/x86/x86.log" "$WORK/arm/arm.log" | head -n 5 || true)
if [ -z "$crash" ]; then
    pass "no panic or crash in either log"
else
    fail "crash messages:"
    echo "$crash"
fi
if [ "$fails" -gt 0 ]; then
    for side in x86 arm; do
        echo "---- last 30 lines of $WORK/$side/$side.log"
        tail -n 30 "$WORK/$side/$side.log"
    done
fi
finish
