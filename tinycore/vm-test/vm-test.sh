#!/usr/bin/env bash
# make vm-test: two Tiny Core-like VMs under qemu (TCG) sync through left.tcz.
#
#   tinycore/vm-test/vm-test.sh [TCZ_A] [TCZ_B]
#       (default target/tcz/x86/left.tcz and target/tcz/x86_64/left.tcz)
#
# Each VM: 512 MB, Debian's kernel and busybox-static (fetched with
# `apt-get download` into the cache), an initramfs built here with the
# extension, /opt/bootlocal.sh and the test data. The VMs are connected only
# to each other (qemu UDP socket netdev on 127.0.0.1, a private 10.0.2.0/24
# inside), no host networking. VM a (10.0.2.1) gets TCZ_A, VM b (10.0.2.2)
# TCZ_B; by default the 32-bit build runs on a and the 64-bit one on b.
#
# Each VM is of the architecture of the binary in its extension: x86 and
# x86_64 on qemu-system-x86_64 with Debian's amd64 kernel; aarch64 (piCore64)
# on qemu-system-aarch64, machine virt with a Cortex-A53 (the Raspberry Pi 3's
# and Zero 2 W's core, ARMv8.0: nothing newer may be in the binary), Debian's
# arm64 kernel and busybox-static:arm64 (which needs `dpkg --add-architecture
# arm64` and `apt-get update`; tinycore/ci-deps.sh does it). An aarch64 VM
# keeps its tce directory and share on /mnt/mmcblk0p2, as piCore does on the
# SD card's second partition; an x86 one on /mnt/sda1.
#
# The guests print "LEFTTEST <vm> PASS|FAIL ..." lines on their serial
# consoles (saved in target/vm-test/{a,b}.serial.log); this script repeats
# them, checks the MD5s b reports against the host's, and exits non-zero on
# any failure or when VM_TIMEOUT (default 300 s) runs out.
#
# Environment: VM_TIMEOUT, VM_WAIT (per-step wait in the guests, default
# 120 s), VM_WORK (default target/vm-test), VM_CACHE (default
# $VM_WORK/cache), VM_KERNEL_PKG and VM_KERNEL_PKG_ARM64 (default: what
# linux-image-amd64 and linux-image-arm64:arm64 depend on), QEMU (default
# qemu-system-x86_64), QEMU_ARM (default qemu-system-aarch64), VM_KEEP=1 keeps the initramfs
# images, VM_A_STYLE / VM_B_STYLE (conf or inline: settings in
# /opt/left.conf or on the bootlocal.sh line; default conf for a, inline
# for b).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tinycore/vm-test

TCZ_A=${1:-target/tcz/x86/left.tcz}
TCZ_B=${2:-target/tcz/x86_64/left.tcz}
WORK=${VM_WORK:-target/vm-test}
CACHE=${VM_CACHE:-$WORK/cache}
TIMEOUT=${VM_TIMEOUT:-300}
WAIT=${VM_WAIT:-120}
QEMU=${QEMU:-qemu-system-x86_64}
QEMU_ARM=${QEMU_ARM:-qemu-system-aarch64}
T0=$(date +%s)

log() { echo "vm-test: $*"; }
die() {
    echo "vm-test: FAIL $*"
    exit 1
}
elapsed() { echo $(($(date +%s) - T0)); }

for f in "$TCZ_A" "$TCZ_B"; do
    [ -f "$f" ] || die "$f not found (make tcz ARCH=x86, x86_64 or aarch64 first)"
done
for tool in cpio apt-get dpkg-deb md5sum unsquashfs; do
    command -v "$tool" >/dev/null || die "$tool is missing (run tinycore/ci-deps.sh)"
done

# The architecture of the binary in an extension (its ELF machine), and the Debian
# architecture whose kernel and busybox boot it.
tcz_arch() {
    case "$(unsquashfs -cat "$1" usr/local/bin/left 2>/dev/null | od -An -tx1 -j18 -N2 | tr -d ' \n')" in
        3e00) echo x86_64 ;;
        0300) echo x86 ;;
        b700) echo aarch64 ;;
        *)
            echo "vm-test: FAIL $1: usr/local/bin/left is not an x86, x86_64 or aarch64 binary" >&2
            exit 1
            ;;
    esac
}
debian_arch() { if [ "$1" = aarch64 ]; then echo arm64; else echo amd64; fi; }
ARCH_A=$(tcz_arch "$TCZ_A")
ARCH_B=$(tcz_arch "$TCZ_B")
for arch in "$ARCH_A" "$ARCH_B"; do
    q=$QEMU
    [ "$arch" = aarch64 ] && q=$QEMU_ARM
    command -v "$q" >/dev/null || die "$q is missing for the $arch VM (run tinycore/ci-deps.sh)"
done

mkdir -p "$WORK" "$CACHE"
WORK=$(cd "$WORK" && pwd)
CACHE=$(cd "$CACHE" && pwd)

# --- Debian's kernel, its loop/squashfs/e1000 modules, and busybox-static, per architecture
fetch_deb() { # package debian-arch -> prints the path of the downloaded .deb
    local pkg=$1 darch=$2 deb
    deb=$(ls "$CACHE"/"${pkg}"_*_"$darch".deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        (cd "$CACHE" && apt-get download "$pkg:$darch" >/dev/null 2>"$CACHE/apt-$pkg.err") || {
            cat "$CACHE/apt-$pkg.err" >&2
            die "apt-get download $pkg:$darch failed (run apt-get update, or tinycore/ci-deps.sh)"
        }
        deb=$(ls "$CACHE"/"${pkg}"_*_"$darch".deb | head -n 1)
    fi
    echo "$deb"
}

declare -A KDIR KERNEL BBDIR
prepare() { # debian-arch: fills KDIR, KERNEL and BBDIR for it
    local darch=$1 kpkg deb over=VM_KERNEL_PKG
    [ "$darch" = arm64 ] && over=VM_KERNEL_PKG_ARM64
    kpkg=${!over:-$(apt-cache depends "linux-image-$darch:$darch" 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { sub(/:.*/, "", $2); print $2; exit }')}
    [ -n "$kpkg" ] || die "cannot resolve linux-image-$darch:$darch (run$([ "$darch" = arm64 ] &&
        echo " dpkg --add-architecture arm64 and") apt-get update, or tinycore/ci-deps.sh)"
    KDIR[$darch]=$CACHE/$kpkg
    if ! ls "${KDIR[$darch]}"/boot/vmlinuz-* >/dev/null 2>&1; then
        log "fetching $kpkg"
        deb=$(fetch_deb "$kpkg" "$darch")
        rm -rf "${KDIR[$darch]}.tmp" && mkdir -p "${KDIR[$darch]}.tmp"
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "${KDIR[$darch]}.tmp" --wildcards \
            '*/vmlinuz-*' '*/loop.ko*' '*/squashfs.ko*' '*/e1000.ko*'
        rm -rf "${KDIR[$darch]}" && mv "${KDIR[$darch]}.tmp" "${KDIR[$darch]}"
        rm -f "$deb"
    fi
    KERNEL[$darch]=$(ls "${KDIR[$darch]}"/boot/vmlinuz-* | head -n 1)
    BBDIR[$darch]=$CACHE/busybox-static
    [ "$darch" = amd64 ] || BBDIR[$darch]=$CACHE/busybox-static-$darch
    if [ ! -e "${BBDIR[$darch]}/bin/busybox" ]; then
        log "fetching busybox-static:$darch"
        deb=$(fetch_deb busybox-static "$darch")
        rm -rf "${BBDIR[$darch]}" && mkdir -p "${BBDIR[$darch]}"
        dpkg-deb -x "$deb" "${BBDIR[$darch]}"
    fi
    log "$darch: kernel $(basename "${KERNEL[$darch]}") ($kpkg), busybox-static:$darch"
}
for darch in $(printf '%s\n' "$(debian_arch "$ARCH_A")" "$(debian_arch "$ARCH_B")" | sort -u); do
    prepare "$darch"
done

# --- test data, shared by both VMs: 10 MiB file, 50 small files, a change
DATA=$WORK/data
rm -rf "$DATA" && mkdir -p "$DATA/small"
head -c 10485760 /dev/urandom >"$DATA/big.bin"
for i in $(seq -w 1 50); do
    if [ $((10#$i % 2)) -eq 0 ]; then
        head -c $((RANDOM % 6000 + 1)) /dev/urandom >"$DATA/small/f$i.txt"
    else
        for _ in $(seq $((RANDOM % 40 + 1))); do echo "file $i line $RANDOM $RANDOM"; done >"$DATA/small/f$i.txt"
    fi
done
echo "changed on b: $RANDOM $(date)" >"$DATA/change.txt"
(cd "$DATA" && for f in big.bin small/*; do
    echo "$(md5sum "$f" | cut -d' ' -f1) $(stat -c %s "$f") $f"
done) >"$WORK/manifest"

# --- one initramfs per VM
build_initramfs() { # vm ip peer netdelay tcz bootlocal-style arch
    local vm=$1 ip=$2 peer=$3 delay=$4 tcz=$5 style=$6 root=$WORK/root-$1 darch disk=sda1 line
    darch=$(debian_arch "$7")
    [ "$7" = aarch64 ] && disk=mmcblk0p2 # piCore: the SD card's second partition
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,etc,lib/modules,opt,proc,sys,dev,tmp,usr/bin,var/log,var/run,mnt/$disk,tcz,test}
    cp "${BBDIR[$darch]}/bin/busybox" "$root/bin/busybox"
    find "${KDIR[$darch]}" -name '*.ko*' | while read -r m; do
        case "$m" in
            *.ko.xz) xz -dc "$m" >"$root/lib/modules/$(basename "$m" .xz)" ;;
            *.ko.zst) zstd -qdc "$m" >"$root/lib/modules/$(basename "$m" .zst)" ;;
            *.ko) cp "$m" "$root/lib/modules/" ;;
        esac
    done
    install -m 755 "$HERE/init" "$root/init"
    install -m 755 "$HERE/tce-load" "$root/usr/bin/tce-load"
    install -m 755 "$HERE/scenario.sh" "$root/test/scenario.sh"
    cp "$WORK/manifest" "$root/test/manifest"
    if [ "$vm" = a ]; then
        cp -R "$DATA" "$root/test/data"
    else
        mkdir -p "$root/test/data" && cp "$DATA/change.txt" "$root/test/data/"
    fi
    cp "$tcz" "$root/tcz/left.tcz"
    (cd "$root/tcz" && md5sum left.tcz >left.tcz.md5.txt)
    printf 'root:x:0:0:root:/root:/bin/sh\ntc:x:1001:50:Linux User,,,:/home/tc:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nstaff:x:50:tc\n' >"$root/etc/group"
    # 32 or 64: the ELF class of the binary in the extension.
    unsquashfs -cat "$tcz" usr/local/bin/left >"$WORK/left-$vm.bin"
    bits=$(od -An -tx1 -j4 -N1 "$WORK/left-$vm.bin" | tr -d ' \n' | sed 's/^01$/32/;s/^02$/64/')
    rm -f "$WORK/left-$vm.bin"
    printf 'ROLE=%s\nIP=%s\nPEER=%s\nNETDELAY=%s\nWAIT=%s\nELFBITS=%s\nDISK=%s\n' "$vm" "$ip" "$peer" "$delay" "$WAIT" "$bits" "$disk" >"$root/etc/left-test.conf"
    # /opt/bootlocal.sh as the README says, with the settings either in
    # /opt/left.conf (style conf) or on the line itself (style inline), and
    # the same shared key in /opt/left.key on both.
    cp "$WORK/left.key" "$root/opt/left.key"
    chmod 600 "$root/opt/left.key"
    if [ "$style" = conf ]; then
        printf '# left settings (see /usr/local/share/doc/left/README.md)\npeer = %s\ndir = /mnt/%s/left/share\nkey-file = /opt/left.key\n' "$peer" "$disk" >"$root/opt/left.conf"
        line='/usr/local/etc/init.d/left start'
    else
        line="/usr/local/etc/init.d/left start $peer --dir /mnt/$disk/left/share --key-file /opt/left.key"
    fi
    # piCore: wait for the clock (tinycore/README.md's line for piCore).
    [ "$disk" = mmcblk0p2 ] && line="(i=0; while [ \"\$(date +%Y)\" -lt 2020 ] && [ \$i -lt 120 ]; do sleep 1; i=\$((i+1)); done; $line) &"
    printf '#!/bin/sh\n# put other system startup commands here\n%s\n' "$line" >"$root/opt/bootlocal.sh"
    chmod 775 "$root/opt/bootlocal.sh"
    (cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$WORK/initramfs-$vm.cpio"
    rm -rf "$root"
}
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/left.key"
build_initramfs a 10.0.2.1 10.0.2.2 8 "$TCZ_A" "${VM_A_STYLE:-conf}" "$ARCH_A"
build_initramfs b 10.0.2.2 10.0.2.1 4 "$TCZ_B" "${VM_B_STYLE:-inline}" "$ARCH_B"
log "initramfs: a $(du -h "$WORK/initramfs-a.cpio" | cut -f1) ($TCZ_A, $ARCH_A), b $(du -h "$WORK/initramfs-b.cpio" | cut -f1) ($TCZ_B, $ARCH_B)"

# --- boot both
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -z "${VM_KEEP:-}" ]; then rm -f "$WORK"/initramfs-*.cpio; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_vm() { # vm mac local-port remote-port arch
    local vm=$1 qemu=("$QEMU") console=ttyS0 kernel=${KERNEL[amd64]:-}
    if [ "$5" = aarch64 ]; then
        qemu=("$QEMU_ARM" -machine virt -cpu cortex-a53) console=ttyAMA0 kernel=${KERNEL[arm64]}
    fi
    : >"$WORK/$vm.serial.log"
    "${qemu[@]}" -accel tcg -m 512 -smp 1 -nodefaults -no-user-config -display none \
        -kernel "$kernel" -initrd "$WORK/initramfs-$vm.cpio" \
        -append "console=$console quiet panic=-1" -no-reboot \
        -serial "file:$WORK/$vm.serial.log" \
        -netdev "socket,id=n0,udp=127.0.0.1:$4,localaddr=127.0.0.1:$3" \
        -device "e1000,netdev=n0,mac=$2,romfile=" \
        >"$WORK/$vm.qemu.log" 2>&1 &
    PIDS+=($!)
}

booted=
for _ in 1 2 3; do
    port=$((20000 + RANDOM % 30000))
    start_vm a 52:54:00:12:34:01 "$port" $((port + 1)) "$ARCH_A"
    start_vm b 52:54:00:12:34:02 $((port + 1)) "$port" "$ARCH_B"
    sleep 2
    if kill -0 "${PIDS[0]}" 2>/dev/null && kill -0 "${PIDS[1]}" 2>/dev/null; then
        booted=1
        break
    fi
    cat "$WORK"/a.qemu.log "$WORK"/b.qemu.log >&2
    cleanup
    PIDS=()
done
[ -n "$booted" ] || die "qemu did not start"
log "booted VM a (10.0.2.1, $ARCH_A) and VM b (10.0.2.2, $ARCH_B) on udp 127.0.0.1:$port/$((port + 1)), 512 MB each, TCG"

# --- follow the serial logs until a and b have ended (or a VM died)
shown_a=0 shown_b=0
show_new() { # vm: prints the new LEFTTEST lines of that VM's serial log
    local vm=$1 var=shown_$1 lines
    lines=$(tr -d '\r' <"$WORK/$vm.serial.log" | grep -a '^LEFTTEST' || true)
    local n
    n=$(printf '%s' "$lines" | grep -c '' || true)
    if [ "$n" -gt "${!var}" ]; then
        # grep -v selects nothing when all the new lines are MD5 lines: not a failure.
        printf '%s\n' "$lines" | tail -n +$((${!var} + 1)) | { grep -v ' MD5 ' || true; } | sed "s/^/[$(elapsed)s] /"
        printf -v "$var" '%s' "$n"
    fi
}
ended() { tr -d '\r' <"$WORK/$1.serial.log" | grep -aqx "LEFTTEST $1 END"; }
failed() { tr -d '\r' <"$WORK/$1.serial.log" | grep -aq "^LEFTTEST $1 FAIL"; }
deadline=$((T0 + TIMEOUT))
timed_out=
while :; do
    show_new a
    show_new b
    if ended a && ended b; then break; fi
    # A VM that ended with a failure makes waiting for the other pointless.
    if { ended a && failed a; } || { ended b && failed b; }; then break; fi
    if ! kill -0 "${PIDS[0]}" 2>/dev/null && ! ended a; then break; fi
    if ! kill -0 "${PIDS[1]}" 2>/dev/null && ! ended b; then break; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        timed_out=1
        break
    fi
    sleep 1
done
sleep 1
show_new a
show_new b
cleanup
trap - EXIT

# --- verdict
fails=0 host_pass=0 host_fail=0
result() { # PASS|FAIL text [host]: "host" counts it as a check of its own
    echo "vm-test: $1 $2"
    [ "$1" = PASS ] || fails=$((fails + 1))
    if [ "${3:-}" = host ]; then
        if [ "$1" = PASS ]; then host_pass=$((host_pass + 1)); else host_fail=$((host_fail + 1)); fi
    fi
}
for vm in a b; do
    s=$(tr -d '\r' <"$WORK/$vm.serial.log")
    npass=$(grep -ac "^LEFTTEST $vm PASS" <<<"$s" || true)
    nfail=$(grep -ac "^LEFTTEST $vm FAIL" <<<"$s" || true)
    if grep -aqx "LEFTTEST $vm END" <<<"$s"; then
        if [ "$nfail" -eq 0 ] && [ "$npass" -gt 0 ]; then
            result PASS "VM $vm: $npass checks passed"
        else
            result FAIL "VM $vm: $nfail of $((npass + nfail)) checks failed"
        fi
    else
        result FAIL "VM $vm did not finish$([ -n "$timed_out" ] && echo " within ${TIMEOUT}s")" host
    fi
done
# No crash anywhere on the consoles (left's log is followed there too).
for vm in a b; do
    crash=$(tr -d '\r' <"$WORK/$vm.serial.log" | grep -aE 'panicked at|Aborted|Segmentation fault|Illegal instruction|Kernel panic|Out of memory' | head -n 5 || true)
    if [ -z "$crash" ]; then
        result PASS "VM $vm: no panic, abort or crash message on the console" host
    else
        result FAIL "VM $vm: crash messages on the console:" host
        sed 's/^/    /' <<<"$crash"
    fi
done
# The MD5s that b computed on what it received, against the host's.
got=$(tr -d '\r' <"$WORK/b.serial.log" | awk '$1 == "LEFTTEST" && $2 == "b" && $3 == "MD5" { print $4, $5 }' | sort -k2)
want=$(awk '{ print $1, $3 }' "$WORK/manifest" | sort -k2)
if [ -n "$got" ] && [ "$got" = "$want" ]; then
    result PASS "md5 of the 10 MiB file and the 50 small files received on b = md5 on the host" host
elif [ -z "$got" ]; then
    result FAIL "b reported no md5s of received files" host
else
    result FAIL "md5s reported by b differ from the host's (< host, > b)" host
    diff <(echo "$want") <(echo "$got") | head -n 20 || true
fi
grep -aq 'before the network was up' "$WORK/a.serial.log" "$WORK/b.serial.log" &&
    log "left was started from bootlocal.sh before the network was up, and kept retrying"

if [ "$fails" -gt 0 ]; then
    for vm in a b; do
        echo "---- last 60 lines of $WORK/$vm.serial.log"
        tr -d '\r' <"$WORK/$vm.serial.log" | tail -n 60
        [ -s "$WORK/$vm.qemu.log" ] && { echo "---- $vm.qemu.log"; cat "$WORK/$vm.qemu.log"; }
    done
fi
log "wall time $(elapsed)s; serial logs in $WORK/a.serial.log and $WORK/b.serial.log"
npass_all=$(cat "$WORK/a.serial.log" "$WORK/b.serial.log" | tr -d '\r' | grep -ac '^LEFTTEST [ab] PASS' || true)
nfail_all=$(cat "$WORK/a.serial.log" "$WORK/b.serial.log" | tr -d '\r' | grep -ac '^LEFTTEST [ab] FAIL' || true)
nfailed=$((nfail_all + host_fail))
[ "$fails" -gt 0 ] && [ "$nfailed" -eq 0 ] && nfailed=$fails
echo "vm-test: $((npass_all + host_pass)) passed, $nfailed failed"
[ "$fails" -eq 0 ]
