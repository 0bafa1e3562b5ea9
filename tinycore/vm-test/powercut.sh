#!/usr/bin/env bash
# make powercut: the receiving peer's VM loses power, again and again, mid-sync
# (issue 17).
#
#   tinycore/vm-test/powercut.sh [TCZ]      (default target/tcz/x86_64/left.tcz)
#   CUTS=20 tinycore/vm-test/powercut.sh
#
# The receiver: a 512 MB qemu VM (TCG; Debian's kernel and busybox-static as
# in vm-test) that installs TCZ with tce-load and starts left from
# /opt/bootlocal.sh. Its share, /mnt/sda1/left/share, lives on an ext4 disk:
# a raw image file made here with mkfs.ext4, attached as virtio-blk.
#
# The sender: left (the binary from the same TCZ) on this machine, with its
# share in $WORK/host/share, and a writer that keeps adding and rewriting
# files there: many small files (200 paths, so that a file received just
# before a cut is often rewritten soon after), a few multi-MB ones rewritten or partly
# modified or appended to. Every version is written outside the share, its
# MD5 recorded in $WORK/versions.log ("path md5", one line per version, in
# order), then renamed into place, so every version the receiver may ever
# see is on record.
#
# The network: qemu's user networking. In the guest 10.0.2.2 is this host's
# 127.0.0.1: the guest dials left on 127.0.0.1:$SPORT, the host dials the
# guest through hostfwd on 127.0.0.1:$FWD. The guest has no default route,
# so it cannot reach any address outside 10.0.2.0/24, and qemu forwards
# nothing but 10.0.2.2 -> 127.0.0.1. All traffic stays on this machine.
#
# One cycle, CUTS times:
#   1. the receiver is in sync (the sender's `left status` exits 0, twice):
#      the host's share is the baseline, everything in it "fully received";
#   2. the writer runs a burst of 3-10 s; at a random moment in [1 s, burst
#      + 4 s] the receiver's qemu gets SIGKILL: the power cut, in the middle
#      of transfers or just after files were received;
#   3. e2fsck -fp on the image, as a boot-time fsck (it replays the journal);
#      debugfs copies the share out of the image, and the checks run on it;
#   4. the VM boots again on the same image, left starts from bootlocal.sh,
#      and the cycle goes on once it is in sync again.
# At the end the writer stops, both sides must be in sync and stay quiet,
# then one last cut and the full comparison.
#
# What a cut simulates. SIGKILL of qemu loses what the guest had not yet
# handed to its virtual disk: the guest's page cache (dirty data, the ext4
# journal not yet committed), left's buffers. What qemu had written to the
# image survives, since this host does not crash. The disk's cache mode
# (PC_CACHE) says where those writes sit on the host:
#   none (default)  O_DIRECT: qemu writes go to the host's disk, bypassing
#                   its page cache; the guest sees a disk with a volatile
#                   write cache and must flush (fsync -> FLUSH -> fdatasync
#                   on the image), as on a real disk.
#   writeback       the same for the guest; qemu's writes sit in the host's
#                   page cache, which survives qemu's death as well.
#   directsync      O_DIRECT|O_DSYNC: a disk without volatile cache, every
#                   write is durable when it completes.
# With only qemu killed, the three keep the same bytes; they would differ if
# the host lost power too (then `none` and `writeback` would also lose the
# writes the guest had not flushed). Losing the guest's unflushed page cache
# is what this test exercises: left must fsync what it claims to hold.
# cache=unsafe would be wrong: it ignores the guest's flushes, so it cannot
# tell a program that syncs from one that doesn't, and it is refused here.
#
# Checks, FAIL lines and a non-zero exit on any violation:
#   after each cut (on the image, after fsck):
#     - the filesystem is consistent (e2fsck exit < 4);
#     - every file in the share is byte-identical to some version the
#       writer wrote of that path (WRONG otherwise);
#     - every file of the last baseline is there (VANISHED otherwise), in
#       its baseline version or a later one (OLDER otherwise);
#     - no sync-conflict copy (only the sender edits: any conflict copy is
#       spurious); temp files (.NAME.left-tmp) are allowed here (resume);
#   after each boot, once in sync: the same on the host's share, which must
#   also hold the latest version of every path; left's daemon running in the
#   guest;
#   at the end, quiet: no temp file on either side, both trees identical and
#   equal to the writer's latest versions, the daemon alive, no panic.
# Counts per cut in $WORK/cuts.tsv and at the end: files written, cut time,
# wrong/vanished/older files, conflict copies, files the receiver took for
# local changes after boot ("changed locally": hashed again and given a new
# version), files it received, files the sender received back.
#
# Environment: CUTS (default 5), VM_TIMEOUT (seconds for a boot to get in
# sync, default 240), PC_WORK (default target/powercut), VM_CACHE (kernel and
# busybox downloads, default target/vm-test/cache, shared with vm-test),
# PC_CACHE (none|writeback|directsync), PC_SEED (the writer's random seed),
# PC_DISK_MB (default 512), QEMU, VM_KERNEL_PKG.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tinycore/vm-test

TCZ=${1:-target/tcz/x86_64/left.tcz}
CUTS=${CUTS:-5}
WORK=${PC_WORK:-target/powercut}
CACHE=${VM_CACHE:-target/vm-test/cache}
TIMEOUT=${VM_TIMEOUT:-240}
CACHE_MODE=${PC_CACHE:-none}
SEED=${PC_SEED:-$((RANDOM * 32768 + RANDOM))}
DISK_MB=${PC_DISK_MB:-512}
QEMU=${QEMU:-qemu-system-x86_64}
T0=$(date +%s)

log() { echo "powercut: [$(elapsed)s] $*"; }
FAILS=0
fail() {
    echo "powercut: [$(elapsed)s] FAIL $*"
    FAILS=$((FAILS + 1))
}
die() {
    echo "powercut: FAIL $*"
    exit 1
}
elapsed() { echo $(($(date +%s) - T0)); }

case "$CACHE_MODE" in
    none | writeback | directsync) ;;
    unsafe) die "PC_CACHE=unsafe ignores the guest's flushes: it cannot test durability" ;;
    *) die "PC_CACHE must be none, writeback or directsync" ;;
esac
[ "$CUTS" -ge 1 ] 2>/dev/null || die "CUTS must be a number >= 1"
[ -f "$TCZ" ] || die "$TCZ not found (make tcz ARCH=x86_64 first)"
for tool in "$QEMU" cpio apt-get dpkg-deb md5sum unsquashfs mkfs.ext4 e2fsck debugfs; do
    command -v "$tool" >/dev/null || die "$tool is missing (run tinycore/ci-deps.sh)"
done

mkdir -p "$WORK" "$CACHE"
WORK=$(cd "$WORK" && pwd)
CACHE=$(cd "$CACHE" && pwd)
rm -rf "$WORK"/host "$WORK"/dump "$WORK"/*.log "$WORK"/*.tsv "$WORK"/lists "$WORK"/root
mkdir -p "$WORK/lists"
RANDOM=$SEED

# --- Debian's kernel with the modules for virtio-blk, ext4 and e1000, and busybox-static
# The amd64 ones: the cache shared with vm-test may also hold arm64 packages.
fetch_deb() { # package -> prints the path of the downloaded .deb
    local pkg=$1 deb
    deb=$(ls "$CACHE"/"${pkg}"_*_amd64.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        (cd "$CACHE" && apt-get download "$pkg:amd64" >/dev/null 2>"$CACHE/apt-$pkg.err") || {
            cat "$CACHE/apt-$pkg.err" >&2
            die "apt-get download $pkg:amd64 failed (run apt-get update, or tinycore/ci-deps.sh)"
        }
        deb=$(ls "$CACHE"/"${pkg}"_*_amd64.deb | head -n 1)
    fi
    echo "$deb"
}
MODS="virtio_pci virtio_blk crc32c_generic ext4 e1000 loop squashfs"
kpkg=${VM_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }')}
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 (run apt-get update, or tinycore/ci-deps.sh)"
KDIR=$CACHE/$kpkg-blk
if ! ls "$KDIR"/boot/vmlinuz-* >/dev/null 2>&1; then
    log "fetching $kpkg"
    deb=$(fetch_deb "$kpkg")
    rm -rf "$KDIR.tmp" && mkdir -p "$KDIR.tmp"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$KDIR.tmp" --wildcards '*/vmlinuz-*' \
        '*/kernel/drivers/virtio/*' '*/kernel/drivers/block/virtio_blk.ko*' '*/kernel/fs/ext4/*' \
        '*/kernel/fs/jbd2/*' '*/kernel/fs/mbcache.ko*' '*/kernel/lib/crc*' '*/kernel/crypto/crc32c*' \
        '*/kernel/drivers/net/ethernet/intel/e1000/*' '*/kernel/drivers/block/loop.ko*' '*/kernel/fs/squashfs/*'
    rm -rf "$KDIR" && mv "$KDIR.tmp" "$KDIR"
    rm -f "$deb"
fi
KERNEL=$(ls "$KDIR"/boot/vmlinuz-* | head -n 1)
BBDIR=$CACHE/busybox-static
if [ ! -x "$BBDIR/bin/busybox" ]; then
    log "fetching busybox-static"
    deb=$(fetch_deb busybox-static)
    rm -rf "$BBDIR" && mkdir -p "$BBDIR"
    dpkg-deb -x "$deb" "$BBDIR"
fi

# --- the initramfs: busybox, the modules in dependency order, the extension, the settings
SPORT=$((10000 + RANDOM % 22000)) # left on the host; below the ephemeral range (32768 and up)
FWD=$((SPORT + 1))                # hostfwd 127.0.0.1:FWD -> guest's 24680
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/left.key"
root=$WORK/root
mkdir -p "$root"/{bin,sbin,etc,lib/modules,opt,proc,sys,dev,tmp,usr/bin,var/log,var/run,mnt/sda1,tcz}
cp "$BBDIR/bin/busybox" "$root/bin/busybox"
modfile() { find "$KDIR" -name "$1.ko*" | head -n 1; }
modinfo_deps() { # module -> its depends= list, from the .modinfo strings
    local f
    f=$(modfile "$1")
    [ -n "$f" ] || die "module $1 not in $kpkg"
    case "$f" in
        *.ko.xz) xz -dc "$f" ;;
        *.ko.zst) zstd -qdc "$f" ;;
        *) cat "$f" ;;
    esac | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '
}
ORDER=()
add_mod() { # module: its dependencies first
    local m=$1 d
    for d in "${ORDER[@]}"; do [ "$d" = "$m" ] && return 0; done
    for d in $(modinfo_deps "$m"); do add_mod "$d"; done
    ORDER+=("$m")
}
for m in $MODS; do add_mod "$m"; done
for m in "${ORDER[@]}"; do
    f=$(modfile "$m")
    case "$f" in
        *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
        *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
    echo "$m" >>"$root/lib/modules/order"
done
install -m 755 "$HERE/powercut-init" "$root/init"
install -m 755 "$HERE/tce-load" "$root/usr/bin/tce-load"
cp "$TCZ" "$root/tcz/left.tcz"
printf 'root:x:0:0:root:/root:/bin/sh\ntc:x:1001:50:Linux User,,,:/home/tc:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nstaff:x:50:tc\n' >"$root/etc/group"
printf 'IP=10.0.2.15\nGW=10.0.2.2\nPEERPORT=%s\n' "$SPORT" >"$root/etc/powercut.conf"
cp "$WORK/left.key" "$root/opt/left.key"
chmod 600 "$root/opt/left.key"
printf 'peer = 10.0.2.2:%s\ndir = /mnt/sda1/left/share\nkey-file = /opt/left.key\n' "$SPORT" >"$root/opt/left.conf"
printf '#!/bin/sh\n/usr/local/etc/init.d/left start\n' >"$root/opt/bootlocal.sh"
chmod 775 "$root/opt/bootlocal.sh"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$WORK/initramfs.cpio"
rm -rf "$root"

# --- the disk: a sparse raw image with ext4, made here
DISK=$WORK/disk.img
rm -f "$DISK"
truncate -s "${DISK_MB}M" "$DISK"
mkfs.ext4 -q -F -L left -E lazy_itable_init=0,lazy_journal_init=0 "$DISK"
log "kernel $(basename "$KERNEL") ($kpkg), modules ${ORDER[*]}; ext4 disk ${DISK_MB} MB, cache=$CACHE_MODE; seed $SEED"

# --- the sender: left on the host, from the same extension
HBIN=$WORK/left-host
unsquashfs -cat "$TCZ" usr/local/bin/left >"$HBIN"
chmod 755 "$HBIN"
HSHARE=$WORK/host/share
STAGE=$WORK/host/stage
mkdir -p "$HSHARE" "$STAGE"
VERSIONS=$WORK/versions.log
: >"$VERSIONS"

# put PATH: the staged file becomes a version of PATH: recorded, then renamed into place.
put() {
    local p=$1 md5
    md5=$(md5sum <"$STAGE/new" | cut -c1-32)
    echo "$p $md5" >>"$VERSIONS"
    mkdir -p "$(dirname "$HSHARE/$p")"
    mv -f "$STAGE/new" "$HSHARE/$p"
}
small() { # a text or binary file of 1 B to 16 KB, one of 200 paths (rewritten often)
    local p=d$((RANDOM % 8))/s$((RANDOM % 25)).txt
    if [ $((RANDOM % 2)) -eq 0 ]; then
        head -c $((RANDOM % 16000 + 1)) /dev/urandom >"$STAGE/new"
    else
        for _ in $(seq $((RANDOM % 30 + 1))); do echo "$p line $RANDOM $RANDOM $RANDOM"; done >"$STAGE/new"
    fi
    put "$p"
}
big() { # one of 4 files of 1-6 MB: new content, a few blocks changed, or appended to
    local p=big$((RANDOM % 4)).bin op=$((RANDOM % 3))
    if [ ! -f "$HSHARE/$p" ] || [ "$op" -eq 0 ]; then
        head -c $(((RANDOM % 6 + 1) * 1048576 - RANDOM)) /dev/urandom >"$STAGE/new"
    else
        cp "$HSHARE/$p" "$STAGE/new"
        if [ "$op" -eq 1 ]; then
            size=$(stat -c %s "$STAGE/new")
            for _ in 1 2 3; do
                dd if=/dev/urandom of="$STAGE/new" bs=4096 seek=$((RANDOM % (size / 4096))) \
                    count=$((RANDOM % 8 + 1)) conv=notrunc status=none
            done
        else
            head -c $((RANDOM * 8)) /dev/urandom >>"$STAGE/new"
        fi
    fi
    put "$p"
}
burst() { # seconds seed: small files and now and then a big one, ~10 per second
    local end=$(($(date +%s%N) / 1000000 + $1 * 1000))
    RANDOM=$2
    while [ $(($(date +%s%N) / 1000000)) -lt "$end" ]; do
        if [ $((RANDOM % 25)) -eq 0 ]; then big; else small; fi
        sleep 0.0$((RANDOM % 9 + 1))
    done
}

# The initial content: 150 small files and 3 big ones.
for _ in $(seq 150); do small; done
for _ in 1 2 3; do big; done
log "initial content: $(find "$HSHARE" -type f | wc -l) files, $(du -sm "$HSHARE" | cut -f1) MB"

HPID=
QPID=
WPID=
cleanup() {
    [ -n "$WPID" ] && kill "$WPID" 2>/dev/null
    [ -n "$QPID" ] && kill -9 "$QPID" 2>/dev/null
    [ -n "$HPID" ] && kill "$HPID" 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$HBIN" --dir "$HSHARE" --port "$SPORT" --key-file "$WORK/left.key" "127.0.0.1:$FWD" \
    >>"$WORK/host-left.log" 2>&1 &
HPID=$!
sleep 0.5
kill -0 "$HPID" 2>/dev/null || die "left did not start on the host: $(tail -n 3 "$WORK/host-left.log")"

BOOT=0
SERIAL=
boot() {
    BOOT=$((BOOT + 1))
    SERIAL=$WORK/boot-$BOOT.serial.log
    : >"$SERIAL"
    BOOT_T=$(date +%s)
    nice "$QEMU" -accel tcg -m 512 -smp 1 -nodefaults -no-user-config -display none \
        -kernel "$KERNEL" -initrd "$WORK/initramfs.cpio" \
        -append "console=ttyS0 quiet panic=-1 pcboot=$BOOT" -no-reboot \
        -serial "file:$SERIAL" \
        -drive "file=$DISK,format=raw,if=virtio,cache=$CACHE_MODE" \
        -netdev "user,id=n0,ipv6=off,net=10.0.2.0/24,host=10.0.2.2,hostfwd=tcp:127.0.0.1:$FWD-10.0.2.15:24680" \
        -device "e1000,netdev=n0,romfile=" \
        >>"$WORK/qemu.log" 2>&1 &
    QPID=$!
    sleep 1
    kill -0 "$QPID" 2>/dev/null || {
        cat "$WORK/qemu.log"
        die "qemu did not start"
    }
}
cut_power() {
    kill -9 "$QPID" 2>/dev/null || fail "boot $BOOT: qemu had died before the cut"
    wait "$QPID" 2>/dev/null || true
    QPID=
}
serial() { tr -d '\r' <"$SERIAL"; }
guest_alive() { serial | grep -a '^PCUT .* mon ' | tail -n 1 | grep -q ' mon running'; }

# in_sync: the sender's status says in sync, twice a second apart (the
# status file is rewritten every second).
in_sync() {
    "$HBIN" status --dir "$HSHARE" >/dev/null 2>&1 || return 1
    sleep 1
    "$HBIN" status --dir "$HSHARE" >/dev/null 2>&1
}
wait_sync() { # -> 0 when in sync within TIMEOUT of the boot
    local deadline=$((BOOT_T + TIMEOUT))
    sleep 2 # the sender's scanner has seen the writer's last files
    while ! in_sync; do
        if serial | grep -aq '^PCUT .* FAIL'; then
            fail "boot $BOOT: $(serial | grep -a '^PCUT .* FAIL' | head -n 3 | tr '\n' ' ')"
            return 1
        fi
        if ! kill -0 "$QPID" 2>/dev/null; then
            fail "boot $BOOT: the VM died"
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            fail "boot $BOOT: not in sync ${TIMEOUT}s after boot (VM_TIMEOUT)"
            "$HBIN" status --dir "$HSHARE" | sed 's/^/    /' || true
            return 1
        fi
        sleep 1
    done
    SYNC_T=$(($(date +%s) - BOOT_T))
}

# list DIR OUT: "path md5" of every file below DIR but .left/, sorted.
list() {
    if [ -d "$1" ]; then
        (cd "$1" && find . -path ./.left -prune -o -type f -print0 | xargs -0 -r md5sum) |
            awk '{ p = $2; sub(/^\.\//, "", p); print p, $1 }' | LC_ALL=C sort >"$2"
    else
        : >"$2"
    fi
}
# regular: the lines of a list that are neither temp files nor conflict copies.
regular() {
    awk '{ n = split($1, a, "/"); if (a[n] ~ /^\..*\.left-tmp$/ || $1 ~ /\.sync-conflict-/) next; print }'
}
# temps LIST: how many temp files it holds.
temps() { awk '{ n = split($1, a, "/"); if (a[n] ~ /^\..*\.left-tmp$/) c++ } END { print c + 0 }' "$1"; }
# latest OUT: the writer's latest version of each path.
latest() { awk '{ v[$1] = $2 } END { for (p in v) print p, v[p] }' "$VERSIONS" | LC_ALL=C sort >"$1"; }

# check LABEL LIST [BASELINE]: prints FAIL lines and one line of counts
# "files N wrong N vanished N older N conflicts N temps N" to $WORK/lists/counts.
check() {
    local label=$1 lst=$2 base=${3:-/dev/null}
    awk -v label="$label" -v out="$WORK/lists/counts" '
        FILENAME == ARGV[1] { seq[$1 SUBSEP $2] = FNR; next }
        FILENAME == ARGV[2] { bmd5[$1] = $2; next }
        FILENAME == ARGV[3] { seen[$1]; next }
        {
            path = $1; md5 = $2; have[path] = md5
            n = split(path, parts, "/"); name = parts[n]
            if (name ~ /^\..*\.left-tmp$/) { temps++; print "powercut:     temp file " path; next }
            if (path ~ /\.sync-conflict-/) {
                conflicts++
                if (!(path in seen)) {
                    newconf++
                    base = path; sub(/\.sync-conflict-[0-9]+-[0-9]+-[0-9A-Fa-f]+/, "", base)
                    what = ((base SUBSEP md5) in seq) ? "version " seq[base SUBSEP md5] " of the log, written by the sender" : "no version the sender wrote"
                    print "powercut: FAIL " label ": conflict copy " path " (holds " base ", " what ")"
                }
                next
            }
            files++
            if (!((path SUBSEP md5) in seq)) { wrong++; print "powercut: FAIL " label ": " path " (md5 " md5 ") is no version the sender wrote" }
        }
        END {
            for (p in bmd5) {
                if (p ~ /\.sync-conflict-/ || p ~ /(^|\/)\.[^\/]*\.left-tmp$/) continue
                if (!(p in have)) { vanished++; print "powercut: FAIL " label ": " p " vanished (it was in sync before, md5 " bmd5[p] ")"; continue }
                if (((p SUBSEP have[p]) in seq) && seq[p SUBSEP have[p]] < seq[p SUBSEP bmd5[p]]) { older++; print "powercut: FAIL " label ": " p " went back to an older version (md5 " have[p] ", version " seq[p SUBSEP have[p]] " of the log; in sync before: " bmd5[p] ", version " seq[p SUBSEP bmd5[p]] ")" }
            }
            printf "%d %d %d %d %d %d %d\n", files, wrong, vanished, older, conflicts, temps, newconf > out
        }' "$VERSIONS" "$base" "$CONFLICT_NAMES" "$lst"
    read -r C_FILES C_WRONG C_VANISHED C_OLDER C_CONFLICTS C_TEMPS C_NEWCONF <"$WORK/lists/counts"
    FAILS=$((FAILS + C_WRONG + C_VANISHED + C_OLDER + C_NEWCONF))
}

# All conflict copies ever seen, on either side.
CONFLICT_NAMES=$WORK/lists/conflicts
: >"$CONFLICT_NAMES"
note_conflicts() { grep -a '\.sync-conflict-' "$1" | cut -d' ' -f1 >>"$CONFLICT_NAMES" || true; }

# after_boot: in sync; the host's share against the writer's record; the daemon alive.
BASE=$WORK/lists/baseline
after_boot() {
    wait_sync || return 1
    list "$HSHARE" "$BASE"
    check "boot $BOOT, host share in sync" "$BASE"
    note_conflicts "$BASE"
    latest "$WORK/lists/latest"
    local stale
    stale=$(regular <"$BASE" | LC_ALL=C comm -23 - "$WORK/lists/latest" | cut -d' ' -f1 || true)
    if [ -n "$stale" ]; then
        for p in $stale; do fail "boot $BOOT: host share: $p is not the latest version the writer wrote"; done
    fi
    sleep 2
    guest_alive || fail "boot $BOOT: left's daemon is not running in the VM: $(serial | grep -a '^PCUT' | tail -n 1)"
}

# after_cut: fsck and the checks on the share in the image.
FSCK_FIXED=0
after_cut() {
    local rc=0
    e2fsck -fp "$DISK" >"$WORK/fsck-$BOOT.log" 2>&1 || rc=$?
    # Exit 1 with only "recovering journal", "Clearing orphaned inode" (files
    # still open but already unlinked, e.g. replaced ones) and the summary
    # line: what the kernel does at mount after a crash. Anything else is a repair.
    local other
    other=$(grep -v -e 'recovering journal' -e 'Clearing orphaned inode' -e 'files (.* non-contiguous)' -e '^e2fsck [0-9]' \
        "$WORK/fsck-$BOOT.log" || true)
    if [ "$rc" -ge 4 ]; then
        fail "cut $BOOT: e2fsck exit $rc: $(tr '\n' ' ' <"$WORK/fsck-$BOOT.log")"
    elif [ "$rc" -ne 0 ] && [ -n "$other" ]; then
        FSCK_FIXED=$((FSCK_FIXED + 1))
        log "cut $BOOT: e2fsck exit $rc, repaired: $(tr '\n' ' ' <<<"$other" | cut -c1-300)"
    fi
    FSCK_RC=$rc
    rm -rf "$WORK/dump" && mkdir -p "$WORK/dump"
    debugfs -R "rdump /left/share $WORK/dump" "$DISK" >"$WORK/debugfs.log" 2>&1 || true
    list "$WORK/dump/share" "$WORK/lists/cut-$BOOT"
    check "cut $BOOT, VM share on the disk image" "$WORK/lists/cut-$BOOT" "$BASE"
    note_conflicts "$WORK/lists/cut-$BOOT"
}

echo -e "cut\tcut_at_s\tburst_s\tfsck\tfiles\twrong\tvanished\tolder\tconflict_copies\ttemps\tchanged_locally\tconflict_log\treceived\tsent_back\tboot_to_sync_s\tcut_total_s" >"$WORK/cuts.tsv"

boot
log "boot 1: VM with left.tcz on a fresh ext4 disk; left on the host 127.0.0.1:$SPORT, hostfwd 127.0.0.1:$FWD"
after_boot || die "the first sync did not complete"
log "boot 1 in sync after $(($(date +%s) - BOOT_T))s: $(wc -l <"$BASE") files"

for cut in $(seq "$CUTS"); do
    t_cycle=$(date +%s)
    W=$((RANDOM % 8 + 3))
    C=$((RANDOM % ((W + 4) * 10) + 10)) # tenths of a second after the burst starts
    hlines=$(wc -l <"$WORK/host-left.log")
    burst "$W" "$((SEED + cut))" &
    WPID=$!
    sleep "$((C / 10)).$((C % 10))"
    cut_power
    wait "$WPID" || true
    WPID=
    after_cut
    c_files=$C_FILES c_wrong=$C_WRONG c_vanished=$C_VANISHED c_older=$C_OLDER c_conflicts=$C_CONFLICTS c_temps=$C_TEMPS
    log "cut $cut at $((C / 10)).$((C % 10))s of a ${W}s burst ($(wc -l <"$VERSIONS") versions written so far): fsck $FSCK_RC; $c_files files, $c_wrong wrong, $c_vanished vanished, $c_older older, $c_conflicts conflict copies, $c_temps temp files on the image"
    boot
    after_boot || break
    t_sync=$SYNC_T
    sent_back=$(tail -n +$((hlines + 1)) "$WORK/host-left.log" | grep -ac 'received ' || true)
    # The previous boot's log lines came from the serial log of boot cut (BOOT-1).
    prev=$WORK/boot-$((BOOT - 1)).serial.log
    # (A conflict copy the receiver makes shows up as "changed locally" too: not counted.)
    changed=$(tr -d '\r' <"$SERIAL" | grep -a '^LEFTLOG: .*changed locally: ' | grep -avc '\.sync-conflict-' || true)
    conflog=$(tr -d '\r' <"$SERIAL" | grep -ac '^LEFTLOG: .*conflict: ' || true)
    received=$(tr -d '\r' <"$prev" | grep -ac '^LEFTLOG: .*received ' || true)
    log "boot $BOOT in sync after ${t_sync}s: $changed files taken for local changes, $conflog conflicts logged; $received files received before the cut; the sender received $sent_back files back"
    echo -e "$cut\t$((C / 10)).$((C % 10))\t$W\t$FSCK_RC\t$c_files\t$c_wrong\t$c_vanished\t$c_older\t$c_conflicts\t$c_temps\t$changed\t$conflog\t$received\t$sent_back\t$t_sync\t$(($(date +%s) - t_cycle))" >>"$WORK/cuts.tsv"
done

# --- quiet: nothing written any more; both sides in sync and staying so
log "quiet: waiting 5 s, then the last checks"
sleep 5
if in_sync; then
    guest_alive || fail "left's daemon is not running in the VM at the end"
    list "$HSHARE" "$WORK/lists/host-final"
    cut_power
    after_cut
    final=$WORK/lists/cut-$BOOT
    latest "$WORK/lists/latest"
    if ! cmp -s "$final" "$WORK/lists/host-final"; then
        fail "at the end the two shares differ (< VM, > host):"
        diff "$final" "$WORK/lists/host-final" | head -n 20 | sed 's/^/    /'
    fi
    if ! regular <"$WORK/lists/host-final" | cmp -s - "$WORK/lists/latest"; then
        fail "at the end the host's share is not the writer's latest versions (< host, > writer):"
        regular <"$WORK/lists/host-final" | diff - "$WORK/lists/latest" | head -n 20 | sed 's/^/    /'
    fi
    [ "$(temps "$final")" -eq 0 ] || fail "at the end $(temps "$final") temp files remain in the VM's share"
    [ "$(temps "$WORK/lists/host-final")" -eq 0 ] ||
        fail "at the end $(temps "$WORK/lists/host-final") temp files remain in the host's share"
    log "end: $(wc -l <"$final") files on each side"
else
    fail "not in sync at the end"
fi
crash=$(cat "$WORK"/boot-*.serial.log "$WORK/host-left.log" | tr -d '\r' |
    grep -aE 'panicked at|Aborted|Segmentation fault|Kernel panic|Out of memory|EXT4-fs error' | head -n 5 || true)
[ -z "$crash" ] || fail "crash messages: $crash"
cleanup
trap - EXIT

# --- report (counting only: a grep that finds nothing must not end the script)
set +e +o pipefail
nconf=$(sort -u "$CONFLICT_NAMES" | wc -l)
ncuts=$(($(wc -l <"$WORK/cuts.tsv") - 1))
echo "powercut: per cut ($WORK/cuts.tsv):"
column -t -s $'\t' "$WORK/cuts.tsv" 2>/dev/null | sed 's/^/    /' || sed 's/^/    /' "$WORK/cuts.tsv"
awk -F'\t' -v cuts="$ncuts" -v conf="$nconf" -v versions="$(wc -l <"$VERSIONS")" -v fixed="$FSCK_FIXED" 'NR > 1 {
        w += $6; v += $7; o += $8; ch += $11; cl += $12; r += $13; sb += $14; s += $16
    } END {
        printf "powercut: %d cuts, %d versions written; wrong files %d, vanished %d, older %d; spurious conflict copies %d (distinct, either side); e2fsck repaired more than the journal after %d cuts\n", cuts, versions, w, v, o, conf, fixed
        printf "powercut: after the boots: %d files taken for local changes (hashed again), %d conflicts logged, %d files the sender received back; %.0f s per cut on average\n", ch, cl, sb, cuts ? s / cuts : 0
    }' "$WORK/cuts.tsv"
if [ "$nconf" -gt 0 ]; then
    echo "powercut: conflict copies:"
    sort -u "$CONFLICT_NAMES" | head -n 10 | sed 's/^/    /'
fi
if [ "$nconf" -gt 0 ] || [ "$(awk -F'\t' 'NR > 1 { c += $11 } END { print c + 0 }' "$WORK/cuts.tsv")" -gt 0 ]; then
    echo "powercut: log lines (VM, then host):"
    for i in $(seq "$BOOT"); do tr -d '\r' <"$WORK/boot-$i.serial.log" | grep -a 'LEFTLOG: .*conflict: ' | sed "s|^|    boot-$i.serial.log: |"; done | head -n 5
    for i in $(seq "$BOOT"); do tr -d '\r' <"$WORK/boot-$i.serial.log" | grep -a 'LEFTLOG: .*changed locally: ' | grep -av '\.sync-conflict-' | sed "s|^|    boot-$i.serial.log: |"; done | head -n 5
    grep -a 'received \|conflict: ' "$WORK/host-left.log" | head -n 5 | sed 's/^/    host-left.log: /'
fi
log "wall time $(elapsed)s; logs in $WORK (boot-N.serial.log, host-left.log, cuts.tsv, versions.log)"
if [ "$FAILS" -gt 0 ]; then
    echo "powercut: FAIL ($FAILS failed checks)"
    exit 1
fi
echo "powercut: PASS"
