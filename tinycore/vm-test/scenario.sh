#!/bin/sh
# The vm-test scenario, run in each guest after boot. Busybox ash.
#
# a adds a 10 MiB file and a folder of 50 small files to its share;
# b waits until all of them arrived with the right MD5, restarts left with
# the init script, then changes one of the small files;
# a waits until the change came back and acknowledges it with a new file;
# b waits for that file and answers with one more, which a waits for;
# then a stops left with the init script.
#
# Results go to the serial console as lines the host script reads:
#   LEFTTEST <role> PASS|FAIL <what>      LEFTTEST <role> END
#   LEFTTEST <role> MD5 <md5> <path>      LEFTLOG <role>: <line of left.log>

. /etc/left-test.conf # ROLE, IP, PEER, NETDELAY, WAIT, DISK
SHARE=/mnt/${DISK:-sda1}/left/share
DATA=/test/data
INIT=/usr/local/etc/init.d/left
FAILS=0

say() { echo "LEFTTEST $ROLE: [$(now)s] $*"; }
pass() { echo "LEFTTEST $ROLE PASS $*"; }
fail() {
	echo "LEFTTEST $ROLE FAIL $*"
	FAILS=$((FAILS + 1))
}
now() { cut -d. -f1 /proc/uptime; }

# wait_for SECONDS COMMAND...: runs COMMAND every second until it succeeds.
wait_for() {
	limit=$(($(now) + $1))
	shift
	while ! "$@"; do
		[ "$(now)" -ge "$limit" ] && return 1
		sleep 1
	done
	return 0
}

md5_of() { md5sum "$1" 2>/dev/null | cut -d' ' -f1; }

# True when PATH in the share has the size and MD5 that the manifest says.
# The manifest has lines "md5 size path".
matches() { # path size md5
	[ -f "$SHARE/$1" ] || return 1
	[ "$(stat -c %s "$SHARE/$1" 2>/dev/null)" = "$2" ] || return 1
	[ "$(md5_of "$SHARE/$1")" = "$3" ]
}

# True when every manifest entry whose path matches the pattern has arrived.
all_arrived() { # pattern
	while read -r md5 size path; do
		case "$path" in $1) ;; *) continue ;; esac
		matches "$path" "$size" "$md5" || return 1
	done </test/manifest
	return 0
}

# Lists the manifest entries (matching the pattern) that are missing or wrong.
report_missing() { # pattern
	while read -r md5 size path; do
		case "$path" in $1) ;; *) continue ;; esac
		matches "$path" "$size" "$md5" && continue
		if [ -f "$SHARE/$path" ]; then
			say "  $path: $(stat -c %s "$SHARE/$path") bytes, md5 $(md5_of "$SHARE/$path"); want $size bytes, md5 $md5"
		else
			say "  $path: missing"
		fi
	done </test/manifest
}

finish() {
	if [ "$FAILS" -gt 0 ]; then
		ls -laR "$SHARE" 2>&1 | head -n 100 | sed "s/^/LEFTLS $ROLE: /"
	fi
	sleep 1 # let the log follower catch up
	say "$FAILS failure(s)"
	echo "LEFTTEST $ROLE END"
}

# abort WHAT: a failure that makes the rest pointless.
abort() {
	fail "$*"
	finish
	exit 1
}

net_up() { ifconfig eth0 2>/dev/null | grep -q "inet addr:$IP "; }
left_running() { $INIT status >/dev/null 2>&1; }
share_exists() { [ -d "$SHARE" ]; }
changed_back() { matches small/f07.txt "$(stat -c %s $DATA/change.txt)" "$(md5_of $DATA/change.txt)"; }
has() { [ -f "$SHARE/$1" ]; }
# first_line COMMAND...: the first line of its output (no pipe into head,
# which would cut off the rest of what the command writes).
first_line() {
	"$@" >/tmp/first_line.out 2>&1
	head -n 1 /tmp/first_line.out
}

# --- common: the extension is installed and left started from bootlocal.sh
if [ -L /usr/local/bin/left ] && [ -x /usr/local/bin/left ]; then
	pass "tce-load: /usr/local/bin/left -> $(readlink /usr/local/bin/left)"
else
	fail "tce-load: /usr/local/bin/left is not a symlink into the extension"
fi
if [ "$(stat -L -c '%a %U:%G' /usr/local/tce.installed/left 2>/dev/null)" = "775 root:staff" ] &&
	[ "$(stat -c '%a %U:%G' /var/log/left.log 2>/dev/null)" = "664 root:staff" ]; then
	pass "startup script ran (/usr/local/tce.installed/left root:staff 775 made /var/log/left.log)"
else
	fail "startup script: $(ls -l /usr/local/tce.installed/left /var/log/left.log 2>&1 | tr '\n' ' ')"
fi
# The binary is the expected build (a: the 32-bit i686 one, on this 64-bit
# kernel) and user tc, who runs tce-load on Tiny Core, can run it.
bits=$(od -An -tx1 -j4 -N1 /usr/local/bin/left | tr -d ' \n' | sed 's/^01$/32/;s/^02$/64/')
version=$(first_line su tc -s /bin/sh -c '/usr/local/bin/left --version')
case "$version" in
	left\ *)
		if [ "$bits" = "$ELFBITS" ]; then
			pass "user tc runs the ${bits}-bit build on this $(uname -m) kernel: $version"
		else
			fail "the extension holds a ${bits}-bit build, expected ${ELFBITS}-bit"
		fi
		;;
	*) fail "user tc cannot run left --version: $version" ;;
esac

tc_status() { su tc -s /bin/sh -c "$INIT status" >/dev/null 2>&1; }
if wait_for 20 left_running; then
	if net_up; then
		pass "left started from /opt/bootlocal.sh ($(first_line $INIT status))"
		say "note: the network was already up when left was first seen running"
	else
		pass "left started from /opt/bootlocal.sh before the network was up ($(first_line $INIT status))"
	fi
	if tc_status; then
		pass "user tc sees it running: $(first_line su tc -s /bin/sh -c "$INIT status")"
	else
		fail "as user tc, $INIT status says: $(first_line su tc -s /bin/sh -c "$INIT status")"
	fi
else
	abort "left is not running 20 s after /opt/bootlocal.sh"
fi
wait_for 60 net_up || abort "network did not come up"
# piCore: bootlocal.sh waited for the clock, so nothing in left's log is dated 1970.
if [ "$DISK" = mmcblk0p2 ]; then
	if grep -q '^1970' /var/log/left.log; then
		fail "left started before the clock was set: $(grep -m 1 '^1970' /var/log/left.log)"
	else
		pass "left started only once the clock was set: $(head -n 1 /var/log/left.log | cut -c 1-19)"
	fi
fi

if wait_for 30 share_exists; then
	pass "left created the share $SHARE"
else
	fail "share $SHARE was not created"
	mkdir -p "$SHARE"
fi

if [ "$ROLE" = a ]; then
	# --- a: add the files, wait for b's change, acknowledge it
	sleep 2
	cp $DATA/big.bin "$SHARE/big.bin"
	mkdir -p "$SHARE/small"
	cp $DATA/small/* "$SHARE/small/"
	say "added big.bin (10 MiB) and small/ ($(ls $DATA/small | wc -l) files) to the share at $(now)s"

	if wait_for "$WAIT" changed_back; then
		pass "the change made on b (small/f07.txt) came back to a, md5 $(md5_of "$SHARE/small/f07.txt")"
	else
		report_missing 'small/f07.txt'
		abort "the change made on b did not come back to a within ${WAIT}s"
	fi
	echo "a saw the change at $(now)s" >"$SHARE/ack-a.txt"
	if wait_for "$WAIT" has done-b.txt; then
		pass "done-b.txt, made on b after it saw ack-a.txt, arrived on a"
	else
		fail "done-b.txt did not arrive from b"
	fi
	# Nothing else on a was damaged on the way.
	if all_arrived 'big.bin' && all_arrived 'small/f0[!7]*' && all_arrived 'small/f[!0]*'; then
		pass "a still has big.bin and the other 49 small files intact"
	else
		fail "files on a were damaged"
		report_missing '*'
	fi
else
	# --- b: wait for a's files, change one, wait for the acknowledgement
	t0=$(now)
	if wait_for "$WAIT" all_arrived 'big.bin'; then
		pass "10 MiB file big.bin arrived on b with the right md5 ($(($(now) - t0))s after b's network came up)"
	else
		report_missing 'big.bin'
		abort "big.bin did not arrive on b within ${WAIT}s"
	fi
	if wait_for 60 all_arrived 'small/*'; then
		pass "folder small/ with all $(ls "$SHARE/small" | wc -l) files arrived on b, each with the right md5"
	else
		report_missing 'small/*'
		abort "folder small/ did not fully arrive on b"
	fi
	(cd "$SHARE" && md5sum big.bin small/*) | sed "s/^\([0-9a-f]*\)  /LEFTTEST $ROLE MD5 \1 /"

	# Restart without arguments: the init script reuses those of the start
	# (b has them on its bootlocal.sh line), and left picks up where it was.
	old=$(cat /var/run/left.pid 2>/dev/null)
	$INIT restart >/dev/null 2>&1
	new=$(cat /var/run/left.pid 2>/dev/null)
	if left_running && [ -n "$new" ] && [ "$new" != "$old" ] &&
		tr '\000' ' ' </proc/"$new"/cmdline | grep -q -- "--dir $SHARE"; then
		pass "init script: restart without arguments reused the start's ($(tr '\000' ' ' </proc/"$new"/cmdline))"
	else
		abort "init script: restart failed (pid $old -> ${new:-none}): $(first_line $INIT status)"
	fi

	sleep 2
	cp $DATA/change.txt "$SHARE/small/f07.txt"
	say "changed small/f07.txt at $(now)s"
	if wait_for "$WAIT" has ack-a.txt; then
		pass "ack-a.txt, made on a after it saw the change, arrived on b"
	else
		fail "ack-a.txt did not arrive from a"
	fi
	echo "b saw the ack at $(now)s" >"$SHARE/done-b.txt"
fi

# --- a stops left with the init script. b leaves it running, so that
# done-b.txt can still reach a; the host stops both VMs once a has ended.
if [ "$ROLE" = a ]; then
	$INIT stop
	if left_running; then
		fail "init script: left still running after stop"
	else
		pass "init script: stop worked, status now says '$($INIT status)'"
	fi
fi
finish
[ "$ROLE" = b ] && sleep "$WAIT"
