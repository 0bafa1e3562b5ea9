#!/usr/bin/env bash
# `make demo`: two peers on this machine, each with its own share under target/demo; files put
# into one appear in the other. Shows the logs as it goes and stops both peers at the end.
set -euo pipefail
BIN=${1:-target/release/left}
D=target/demo
rm -rf "$D"; mkdir -p "$D/a" "$D/b"
PA=24681 PB=24682
"$BIN" --dir "$D/a/share" --port $PA 127.0.0.1:$PB 2> "$D/a.log" & A=$!
"$BIN" --dir "$D/b/share" --port $PB 127.0.0.1:$PA 2> "$D/b.log" & B=$!
trap 'kill $A $B 2>/dev/null; wait 2>/dev/null' EXIT
say() { printf '\n== %s\n' "$*"; }
wait_for() { # wait_for FILE: until it exists, at most 20 s
  for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1"; return 1; }

say "peer A serves $D/a/share on port $PA, peer B serves $D/b/share on port $PB"
sleep 0.5
say "A: echo 'hello from A' > $D/a/share/hello.txt"
echo 'hello from A' > "$D/a/share/hello.txt"
wait_for "$D/b/share/hello.txt"; sleep 0.2
echo "B now has: $(cat "$D/b/share/hello.txt")"

say "B: a folder with an empty subfolder and a 20 MB file"
mkdir -p "$D/b/share/photos/empty"
head -c 20000000 /dev/urandom > "$D/b/share/photos/.big.tmp" && mv "$D/b/share/photos/.big.tmp" "$D/b/share/photos/big.bin"
wait_for "$D/a/share/photos/big.bin"; wait_for "$D/a/share/photos/empty"
md5sum "$D/b/share/photos/big.bin" "$D/a/share/photos/big.bin"

say "A: rename it (no data crosses the wire: blocks are reused)"
mv "$D/a/share/photos/big.bin" "$D/a/share/photos/renamed.bin"
wait_for "$D/b/share/photos/renamed.bin"; sleep 0.5
ls -la "$D/b/share/photos"

say "logs"
echo "--- A"; cat "$D/a.log"; echo "--- B"; cat "$D/b.log"
