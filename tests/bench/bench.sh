#!/usr/bin/env bash
# `make bench`: the test plan of the LEFT paper, run against `left`, rsync and (where installed)
# syncthing, on two network namespaces joined by a veth pair. See tests/bench/README.md.
#
# Settings (environment, all optional):
#   SIZE_MB=500        size of the big file (TC_2A, TC_2B, the kill test, the markers' file)
#   RATE=100mbit       shape the link (tbf on both veth ends); default: unshaped
#   SCALE_FILES=100000 files in the scale run (0: skip it)
#   IDLE_SECS=60       how long idle CPU is measured in the scale run
#   SCALE_TIMEOUT=600  how long the scale run's initial sync may take
#   SCALE_FS=fresh     fresh: each tool's scale run on an ext4 made for it (loop file in
#                      BENCH_DIR); here: in BENCH_DIR as it is
#   SYNCTHING=auto     auto (run it where installed), 0 (skip), 1 (require it)
#   STEPS=...          comma-separated subset of: tc1b,xfer,tc2a,kill40,tc2b,zeros,scale
#   BENCH_DIR=target/bench   where data, shares, logs and results go (must not be tmpfs)
#   LEFT_BIN=target/release/left   (make bench: target/static/x86_64/left, the Tiny Core build)
#   KEEP=1             keep the data and shares afterwards (default: only results and logs)
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  echo "bench: run as root (it creates network namespaces)" >&2
  exit 1
fi

export SIZE_MB=${SIZE_MB:-500} RATE=${RATE:-} SCALE_FILES=${SCALE_FILES:-100000}
export IDLE_SECS=${IDLE_SECS:-60} SYNCTHING=${SYNCTHING:-auto} STEPS=${STEPS:-}
export WORK=${BENCH_DIR:-target/bench}
SRC_BIN=${LEFT_BIN:-target/release/left}

# rsync is part of the comparison; GNU time measures its CPU and peak RSS.
need=()
command -v rsync >/dev/null || need+=(rsync)
[ -x /usr/bin/time ] || need+=(time)
command -v file >/dev/null || need+=(file)
if [ "${SCALE_FS:-fresh}" = fresh ] && [ "$SCALE_FILES" != 0 ]; then
  command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v python3 >/dev/null || { echo "bench: python3 is needed" >&2; exit 1; }
[ -x "$SRC_BIN" ] || { echo "bench: no $SRC_BIN (run cargo build --release)" >&2; exit 1; }

mkdir -p "$WORK"
if [ "$(stat -f -c %T "$WORK")" = tmpfs ]; then
  echo "bench: $WORK is on tmpfs; set BENCH_DIR to a folder on disk" >&2
  exit 1
fi
# A private copy, so that a rebuild by someone else during the run changes nothing.
mkdir -p "$WORK/bin"
cp "$SRC_BIN" "$WORK/bin/left.new" && mv "$WORK/bin/left.new" "$WORK/bin/left"
export LEFT_BIN=$WORK/bin/left
# Which source the binary was built from (uncommitted changes to src/ are counted).
LEFT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain src Cargo.toml 2>/dev/null | wc -l)
[ "$dirty" != 0 ] && LEFT_REV="$LEFT_REV+$dirty-uncommitted"
export LEFT_REV
# Which build: the static musl binary Tiny Core gets, or a dynamically linked one.
if file "$SRC_BIN" 2>/dev/null | grep -Eq 'static(ally|-pie) linked'; then
  export LEFT_BUILD=static
else
  export LEFT_BUILD=dynamic
fi

export NS_A=leftbench-a NS_B=leftbench-b IF_A=lbveth-a IF_B=lbveth-b
export IP_A=10.99.0.1 IP_B=10.99.0.2

# Everything the run starts lives in these two namespaces: killing what is in them ends it all.
cleanup() {
  local ns pids
  for ns in "$NS_A" "$NS_B"; do
    if ip netns list | grep -qw "$ns"; then
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    fi
  done
  sleep 0.2
  for ns in "$NS_A" "$NS_B"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  if mountpoint -q "$WORK/scalefs" 2>/dev/null; then
    umount "$WORK/scalefs" || true
  fi
  rm -f "$WORK/scalefs.img"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cleanup # left over from an interrupted run
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$IF_A" netns "$NS_A" type veth peer name "$IF_B" netns "$NS_B"
ip -n "$NS_A" addr add "$IP_A/24" dev "$IF_A"
ip -n "$NS_B" addr add "$IP_B/24" dev "$IF_B"
for s in A B; do
  ns_var=NS_$s if_var=IF_$s
  ip -n "${!ns_var}" link set lo up
  ip -n "${!ns_var}" link set "${!if_var}" up
done
if [ -n "$RATE" ]; then
  # tbf on both ends (netem is not available in this kernel). Burst: 10 ms of traffic, at least
  # 32 KiB; queue: 50 ms.
  bps=$(python3 -c "
import re,sys
m=re.fullmatch(r'(\d+(?:\.\d+)?)([kmg]?)(bit|bps)', sys.argv[1].lower())
if not m: sys.exit('bench: RATE must look like 100mbit, 1gbit or 12mbps')
v=float(m[1])*{'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]]*(8 if m[3]=='bps' else 1)
print(int(v))" "$RATE")
  burst=$(( bps / 8 / 100 )); [ "$burst" -lt 32768 ] && burst=32768
  for s in A B; do
    ns_var=NS_$s if_var=IF_$s
    ip netns exec "${!ns_var}" tc qdisc add dev "${!if_var}" root tbf rate "$RATE" burst "$burst" latency 50ms
  done
  export RATE_BPS=$bps
fi
# No route out: only the /24 on the veth exists in either namespace.
ip -n "$NS_A" route | grep -q default && { echo "bench: unexpected default route" >&2; exit 1; }

python3 tests/bench/bench.py
# The shares and data take several GB; results and logs stay (KEEP=1 keeps everything).
if [ "${KEEP:-0}" != 1 ]; then
  rm -rf "$WORK"/{data,left,left-key,rsync,syncthing,scale-left,tc2b-ref.bin}
fi
