#!/usr/bin/env python3
"""The benchmark driver behind `make bench` (tests/bench/bench.sh sets up the two network
namespaces, removes them afterwards, and passes the settings in the environment).

Each step acts (renames a file into a share, writes into a file), then polls the destination
every 50 ms until its MD5 matches, and records: wall seconds from the act, bytes that crossed
the veth (both directions), peak RSS (VmHWM) and CPU seconds of each process. `left` and
syncthing run as daemons, one per namespace, the way they run on two machines; rsync runs as a
daemon in the destination namespace and `rsync -a` / `rsync -a --whole-file` from the source."""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import datetime
import xml.etree.ElementTree as ET
from pathlib import Path

MiB = 1 << 20
TCK = os.sysconf("SC_CLK_TCK")
E = os.environ
WORK = Path(E["WORK"]).resolve()
BIN = Path(E["LEFT_BIN"]).resolve()
SIZE_MB = int(E.get("SIZE_MB", "500"))
SIZE = SIZE_MB * MiB
SMALL = min(10, SIZE_MB) * MiB  # TC_1B
RATE = E.get("RATE", "")
RATE_BPS = int(E["RATE_BPS"]) if E.get("RATE_BPS") else 0
NS = {"A": E["NS_A"], "B": E["NS_B"]}
IF = {"A": E["IF_A"], "B": E["IF_B"]}
IP = {"A": E["IP_A"], "B": E["IP_B"]}
SCALE_FILES = int(E.get("SCALE_FILES", "100000"))
IDLE_SECS = int(E.get("IDLE_SECS", "60"))
SCALE_TIMEOUT = int(E.get("SCALE_TIMEOUT", "600"))
# fresh: each tool's scale run on an ext4 made for it (a loop file under BENCH_DIR); here: in
# BENCH_DIR as it is, whose state (inodes deleted by earlier runs) can cost either tool 10x.
SCALE_FS = E.get("SCALE_FS", "fresh")
if SCALE_FS not in ("fresh", "here"):
    raise SystemExit(f"bench: SCALE_FS must be fresh or here, not {SCALE_FS!r}")
STEPS = [s for s in E.get("STEPS", "").split(",") if s] or [
    "tc1b", "xfer", "tc2a", "kill40", "tc2b", "zeros", "scale"]
POLL = 0.05
# Generous: the slowest honest run of a step is a few times the link time.
LINK_BPS = RATE_BPS / 8 if RATE_BPS else 100e6
TIMEOUT = 60 + 6 * SIZE / LINK_BPS
OTHER = {"A": "B", "B": "A"}

CHILDREN = []  # every process started, killed at exit
ROWS = []
NOTES = []
MISBEHAVIOUR = []


def say(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def nsexec(side, argv):
    return ["ip", "netns", "exec", NS[side]] + [str(a) for a in argv]


def spawn(side, argv, **kw):
    p = subprocess.Popen(nsexec(side, argv), **kw)  # ip netns exec execs: same pid
    CHILDREN.append(p)
    return p


class Timed:
    """A command run under GNU time, in a namespace: its CPU and ru_maxrss are its own (a child
    forked from this Python process would count Python's memory in its ru_maxrss) and include
    the children it waited for (an rsync daemon's per-connection processes)."""
    n = 0

    def __init__(self, side, argv, **kw):
        Timed.n += 1
        self.out = WORK / "logs" / f"time-{Timed.n:03d}.txt"
        self.p = spawn(side, ["/usr/bin/time", "-o", self.out, "-f", "%e %U %S %M", *argv], **kw)

    def child(self):
        """The command's pid (GNU time's only child)."""
        for _ in range(500):
            with open(f"/proc/{self.p.pid}/task/{self.p.pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
            if self.p.poll() is not None:
                return None
            time.sleep(0.002)
        return None

    def signal(self, sig):
        c = self.child()
        if c:
            try:
                os.kill(c, sig)
            except ProcessLookupError:
                pass

    def wait(self):
        """(cpu seconds, max RSS KiB) once it has exited."""
        self.p.wait()
        last = self.out.read_text().strip().splitlines()[-1].split()
        return float(last[1]) + float(last[2]), int(last[3])


def veth_bytes():
    """Bytes that crossed the veth, both directions: rx + tx of A's end (sysfs, inside A)."""
    d = f"/sys/class/net/{IF['A']}/statistics"
    out = subprocess.run(nsexec("A", ["cat", f"{d}/rx_bytes", f"{d}/tx_bytes"]),
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]) + int(out[1])


ANCHOR = {}


def rx_fast(side):
    """Bytes received on a side's veth end, cheaply (same counter, via /proc/PID/net/dev of a
    process in that namespace): for the 'kill at 40%' trigger, polled every few ms."""
    with open(f"/proc/{ANCHOR[side].pid}/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == IF[side]:
                return int(rest.split()[0])
    raise RuntimeError("veth not found")


def md5_file(p):
    h = hashlib.md5()
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    with open(p, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def md5_tree(root):
    out = {}
    for d, _, files in os.walk(root):
        for n in files:
            p = Path(d, n)
            out[str(p.relative_to(root))] = md5_file(p)
    return out


def make_random(path, size, seed):
    r = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(r.randbytes(n))
            left -= n


def fresh(path):
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# ---- processes -------------------------------------------------------------------------------

def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def hwm_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class Daemon:
    """A long-running peer (left or syncthing) in one namespace. Per step: CPU seconds summed
    over its incarnations (read just before a kill), peak RSS = max VmHWM (reset at the start of
    the step through /proc/PID/clear_refs)."""

    def __init__(self, name, side, argv, cwd, logpath, env=None):
        self.name, self.side, self.argv, self.cwd = name, side, argv, cwd
        self.logpath, self.env = logpath, env
        self.proc = None
        self.acc = self.base = 0.0
        self.peak = 0

    def start(self):
        self.log_offset = self.logpath.stat().st_size if self.logpath.exists() else 0
        logf = open(self.logpath, "ab")
        self.proc = spawn(self.side, self.argv, cwd=self.cwd, stdout=logf, stderr=subprocess.STDOUT,
                          env=self.env)
        logf.close()
        self.base = 0.0
        self.started = time.monotonic()

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu(self):
        return cpu_of(self.proc.pid)

    def begin(self):
        self.acc, self.peak = 0.0, 0
        if self.alive:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
            self.base = self.cpu()

    def collect(self):
        if self.alive:
            c = self.cpu()
            self.acc += c - self.base
            self.base = c
            self.peak = max(self.peak, hwm_of(self.proc.pid))

    def kill(self, sig=signal.SIGKILL):
        if not self.alive:
            return
        self.collect()
        self.proc.send_signal(sig)
        self.proc.wait()

    def log_since(self, offset=None):
        with open(self.logpath, "rb") as f:
            f.seek(self.log_offset if offset is None else offset)
            return f.read().decode("utf-8", "replace")

    def wait_log(self, pattern, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if re.search(pattern, self.log_since()):
                return True
            if not self.alive:
                raise RuntimeError(f"{self.name} exited (code {self.proc.returncode}); see {self.logpath}")
            time.sleep(0.05)
        return False


def wait_idle(daemons, quiet_cpu=0.03, window=0.5, timeout=30):
    """Until the daemons use next to no CPU and the link is quiet for a window."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        c0 = sum(d.cpu() for d in daemons if d.alive)
        n0 = rx_fast("A") + rx_fast("B")
        time.sleep(window)
        c1 = sum(d.cpu() for d in daemons if d.alive)
        n1 = rx_fast("A") + rx_fast("B")
        if c1 - c0 <= quiet_cpu and n1 - n0 < 20_000:
            return True
    return False


# ---- waiting for content ---------------------------------------------------------------------

def _sig(path, expected):
    try:
        if isinstance(expected, dict):
            return tuple(
                (lambda s: (s.st_ino, s.st_size, s.st_mtime_ns))(os.stat(path / rel))
                for rel in sorted(expected))
        s = os.stat(path)
        return (s.st_ino, s.st_size, s.st_mtime_ns)
    except FileNotFoundError:
        return None


def _matches(path, expected):
    try:
        if isinstance(expected, dict):
            return all(md5_file(path / rel) == m for rel, m in expected.items())
        return md5_file(path) == expected
    except FileNotFoundError:
        return False


class Waiter(threading.Thread):
    """Polls every 50 ms until each target holds its expected content (an MD5, or for a folder a
    dict of relative path -> MD5), and records the seconds since t0 of the poll that first saw
    the final state. A target is hashed only when its stat (inode, size, mtime) differs from the
    last one hashed, so a 500 MiB file is not hashed twenty times a second; every tool measured
    installs files by rename, so a stat change is what completion looks like."""

    def __init__(self, targets, timeout=TIMEOUT):
        super().__init__(daemon=True)
        self.targets = {k: (Path(p), e) for k, (p, e) in targets.items()}
        self.timeout = timeout
        self.done = {}
        # The state before the act is known not to match (checked here, untimed).
        self.last = {}
        for k, (p, e) in self.targets.items():
            s = _sig(p, e)
            if s is not None and _matches(p, e):
                raise RuntimeError(f"{p} already has the expected content before the act")
            self.last[k] = s

    def go(self, t0):
        self.t0 = t0
        self.start()
        return self

    def run(self):
        pending = dict(self.targets)
        tick = self.t0
        while pending and time.monotonic() - self.t0 < self.timeout:
            t = time.monotonic()
            for k, (p, e) in list(pending.items()):
                s = _sig(p, e)
                if s is not None and s != self.last.get(k):
                    self.last[k] = s
                    if _matches(p, e):
                        self.done[k] = t - self.t0
                        del pending[k]
            tick += POLL
            time.sleep(max(0.0, tick - time.monotonic()))

    def result(self):
        self.join()
        return self.done


# ---- data --------------------------------------------------------------------------------------

DATA = WORK / "data"
MD5 = {}


def make_data():
    fresh(DATA)
    say(f"making data: {SIZE_MB} MiB files in {DATA}")
    make_random(DATA / "tc1b.bin", SMALL, 1)
    for i, name in enumerate(["xfer.bin", "tc2a.bin", "kill.bin"]):
        if any(s in STEPS for s in {"xfer.bin": ["xfer"], "tc2a.bin": ["tc2a", "tc2b"],
                                    "kill.bin": ["kill40"]}[name]):
            make_random(DATA / name, SIZE, 10 + i)
    fa = DATA / "tc_fa"
    fa.mkdir()
    r = random.Random(20)
    for i in range(50):
        (fa / f"f{i:02d}.txt").write_bytes(r.randbytes(1024))
    # The coursework markers' file: 1 KiB of random data, then zeros (sparse on disk here).
    with open(DATA / "zeros.bin", "wb") as f:
        f.write(random.Random(30).randbytes(1024))
        f.truncate(SIZE)
    for p in DATA.iterdir():
        MD5[p.name] = md5_tree(p) if p.is_dir() else md5_file(p)


def edits(path, kind, seed):
    """The TC_2B edits, as (offset, bytes) writes to make in place: (a) SIZE/10 contiguous in
    the middle, (b) 10% of the file as random 4 KiB writes, (c) 9 bytes at offset 0; and (i,
    TC_INS) 1 KiB inserted at the middle, which moves the second half by 1 KiB. Computed before
    the clock starts (making 50 MiB of random bytes takes Python 0.3 s): the act is the writes."""
    r = random.Random(seed)
    if kind == "a":
        n = SIZE // 10
        return [((SIZE - n) // 2 // 4096 * 4096, r.randbytes(n))]
    if kind == "b":
        blocks = SIZE // 4096
        return [(b * 4096, r.randbytes(4096)) for b in r.sample(range(blocks), blocks // 10)]
    if kind == "i":
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            tail = os.pread(f.fileno(), size - size // 2, size // 2)
        return [(size // 2, r.randbytes(1024)), (size // 2 + 1024, tail)]
    return [(0, r.randbytes(9))]


def apply(path, writes):
    fd = os.open(path, os.O_RDWR)
    try:
        for off, data in writes:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def update(path, kind, seed):
    apply(path, edits(path, kind, seed))


def matching_bytes(partial, source, block=64 * 1024):
    """Bytes of `partial` that already hold the source's data, counted in 64 KiB blocks."""
    n = 0
    try:
        with open(partial, "rb") as a, open(source, "rb") as b:
            while True:
                x, y = a.read(block), b.read(block)
                if not y:
                    break
                if x == y:
                    n += len(y)
    except FileNotFoundError:
        pass
    return n


# ---- results ------------------------------------------------------------------------------------

def row(step, tool, wall, wire, cpu, rss, **extra):
    r = {"step": step, "tool": tool, "wall_s": None if wall is None else round(wall, 3),
         "wire_bytes": wire, "cpu_s": round(cpu, 2), "peak_rss_kib": rss}
    r.update(extra)
    ROWS.append(r)
    w = "n/a" if step == "SCALE_IDLE" else "TIMEOUT" if wall is None else f"{wall:.3f} s"
    if wall is None and step not in ("SCALE_IDLE", "SCALE_INIT"):
        MISBEHAVIOUR.append(f"{tool}: {step} did not complete (waited {TIMEOUT:.0f} s)")
    say(f"  {step:10} {tool:12} {w:>10}  {wire / 1e6:9.2f} MB  cpu {cpu:.2f} s  rss {rss}")
    return r


# ---- daemon tools: left and syncthing --------------------------------------------------------

class Left:
    name = "left"
    up_pattern = r"serving "
    connected_pattern = r"connected to "

    def __init__(self, keyed=False):
        """keyed: both peers with a fresh shared key (`left keygen`): every frame sealed."""
        tag = "left-key" if keyed else "left"
        self.name = "left+key" if keyed else "left"
        self.root = fresh(WORK / tag)
        opts = []
        if keyed:
            subprocess.run([BIN, "keygen", str(self.root / "key")], check=True,
                           capture_output=True)
            opts = ["--key-file", str(self.root / "key")]
        self.d = {}
        for s in "AB":
            (self.root / s / "share").mkdir(parents=True)
            (self.root / s / "stage").mkdir()
            self.d[s] = Daemon(f"{tag}-{s}", s, [BIN, *opts, IP[OTHER[s]]], self.root / s,
                               WORK / "logs" / f"{tag}-{s}.log")

    def share(self, s):
        return self.root / s / "share"

    def stage(self, s):
        return self.root / s / "stage"

    def temp(self, s, name):
        return self.share(s) / f".{name}.left-tmp"

    def wire_payload(self, s, name, offset=None):
        """File data the receiver says it took from the wire for NAME (last 'received' line)."""
        m = re.findall(rf"received {re.escape(name)} \((\d+) bytes, (\d+) on the wire, (\d+) reused",
                       self.d[s].log_since(offset))
        return int(m[-1][1]) if m else None

    def breakdown(self, sender, receiver, name, act_wall, offsets=None):
        """From the logs: seconds from the act until the sender had hashed the new version
        ('changed locally'), and the receiver's own duration of the pull ('received ... T s')."""
        def ts(line):
            return datetime.datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        out = {}
        for line in self.d[sender].log_since((offsets or {}).get(sender)).splitlines():
            if f"changed locally: {name} (" in line and ts(line) >= act_wall - 0.01:
                out["hashed_after_s"] = round(ts(line) - act_wall, 3)
        m = re.findall(rf"received {re.escape(name)} \(.*?, ([\d.]+) s, ",
                       self.d[receiver].log_since((offsets or {}).get(receiver)))
        if m:
            out["pull_s"] = float(m[-1])
        return out


class Syncthing:
    name = "syncthing"
    up_pattern = r"Ready to synchronize|My ID"
    connected_pattern = r"Established secure connection"

    def __init__(self):
        self.root = fresh(WORK / "syncthing")
        ids = {}
        for s in "AB":
            home = self.root / s / "home"
            subprocess.run(["syncthing", "generate", f"--home={home}", "--no-default-folder"],
                           check=True, capture_output=True)
            ids[s] = subprocess.run(["syncthing", "serve", f"--home={home}", "--device-id"],
                                    check=True, capture_output=True, text=True).stdout.strip()
        self.d = {}
        env = dict(os.environ, STNORESTART="1", STNOUPGRADE="1", STNODEFAULTFOLDER="1", STMONITORED="1",
                   HOME=str(self.root))
        for s in "AB":
            home = self.root / s / "home"
            share = self.root / s / "share"
            (share / ".stfolder").mkdir(parents=True)
            (self.root / s / "stage").mkdir()
            self._configure(home / "config.xml", s, ids, share)
            self.d[s] = Daemon(f"syncthing-{s}", s,
                               ["syncthing", "serve", f"--home={home}", "--no-browser",
                                "--no-restart", "--no-upgrade", "--logflags=3"],
                               self.root / s, WORK / "logs" / f"syncthing-{s}.log", env=env)

    @staticmethod
    def _configure(path, s, ids, share):
        tree = ET.parse(path)
        cfg = tree.getroot()
        for dev in cfg.findall("device"):
            cfg.remove(dev)
        for x in "AB":
            dev = ET.SubElement(cfg, "device", id=ids[x], name=x, compression="never",
                                introducer="false")
            ET.SubElement(dev, "address").text = f"tcp://{IP[x]}:22000"
        folder = ET.SubElement(cfg, "folder", id="bench", label="bench", path=str(share),
                               type="sendreceive", rescanIntervalS="3600",
                               fsWatcherEnabled="true", fsWatcherDelayS="1")
        ET.SubElement(folder, "filesystemType").text = "basic"
        for x in "AB":
            ET.SubElement(folder, "device", id=ids[x])
        ET.SubElement(folder, "minDiskFree", unit="%").text = "0"
        gui = cfg.find("gui")
        gui.set("enabled", "false")
        opts = cfg.find("options")
        for k, v in {"listenAddress": f"tcp://{IP[s]}:22000", "globalAnnounceEnabled": "false",
                     "localAnnounceEnabled": "false", "relaysEnabled": "false",
                     "natEnabled": "false", "urAccepted": "-1", "autoUpgradeIntervalH": "0",
                     "startBrowser": "false", "crashReportingEnabled": "false",
                     "setLowPriority": "false"}.items():
            opts.find(k).text = v
        opts.find("minHomeDiskFree").text = "0"
        tree.write(path)

    def share(self, s):
        return self.root / s / "share"

    def stage(self, s):
        return self.root / s / "stage"

    def temp(self, s, name):
        return self.share(s) / f".syncthing.{name}.tmp"

    def wire_payload(self, s, name, offset=None):
        return None

    def breakdown(self, *a, **k):
        return {}


def stage_into(tool, s, names):
    for n in names:
        src = DATA / n
        dst = tool.stage(s) / n
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=os.link)
        else:
            os.link(src, dst)


def act_rename(tool, s, names):
    for n in names:
        os.rename(tool.stage(s) / n, tool.share(s) / n)


def log_sizes(tool):
    return {s: d.logpath.stat().st_size if d.logpath.exists() else 0 for s, d in tool.d.items()}


class Meter:
    """Bytes on the veth, CPU and peak RSS of some daemons over a step."""

    def __init__(self, daemons):
        self.daemons = daemons
        for d in daemons:
            d.begin()
        self.net0 = veth_bytes()

    def end(self):
        for d in self.daemons:
            d.collect()
        return (veth_bytes() - self.net0, sum(d.acc for d in self.daemons),
                {d.side: d.peak for d in self.daemons})


def flush_disk():
    """Writes out what earlier steps left dirty (untimed), so that no tool's fsync pays for
    another tool's data (rsync does not fsync; on ext4 an fsync can wait for other files)."""
    os.sync()


def settle(tool):
    for s in "AB":
        d = tool.d[s]
        if d.proc is not None and not d.alive:
            MISBEHAVIOUR.append(f"{d.name} exited by itself (code {d.proc.returncode}); "
                                f"see {d.logpath}; restarted")
            d.start()
        if d.alive and not d.wait_log(tool.connected_pattern, 60):
            MISBEHAVIOUR.append(f"{tool.name}: {d.name} did not reconnect within 60 s")
    if not wait_idle(list(tool.d.values())):
        say(f"  ({tool.name} not idle after 30 s; going on)")
    flush_disk()


def kill_restart_at(tool, s, t0, kill_after=0.5, down=1.0):
    """SIGKILL the peer kill_after s after t0, start it again `down` s later."""
    time.sleep(max(0.0, t0 + kill_after - time.monotonic()))
    tool.d[s].kill()
    time.sleep(max(0.0, t0 + kill_after + down - time.monotonic()))
    tool.d[s].start()


def run_daemon_tool(tool, rs=None):
    """The paper's steps for a daemon tool; rsync (rs) runs right after each step, same files."""
    A, B = tool.d["A"], tool.d["B"]
    T = tool.name
    if "tc1b" in STEPS:
        A.start()
        A.wait_log(tool.up_pattern)
        time.sleep(1.0)
        stage_into(tool, "A", ["tc1b.bin"])
        flush_disk()
        m = Meter([A, B])
        w = Waiter({"f": (tool.share("B") / "tc1b.bin", MD5["tc1b.bin"])})
        t0, aw, off = time.monotonic(), time.time(), log_sizes(tool)
        act_rename(tool, "A", ["tc1b.bin"])
        w.go(t0)
        time.sleep(max(0.0, t0 + 0.1 - time.monotonic()))
        B.start()
        wall = w.result().get("f")
        row("TC_1B", T, wall, *m.end(), from_b_start_s=None if wall is None else round(wall - 0.1, 3),
            act_utc=aw, **tool.breakdown("A", "B", "tc1b.bin", aw, off))
        if rs:
            for v in rs.variants:
                rs.run("TC_1B", v, "A", ["tc1b.bin"])
    else:
        A.start()
        B.start()
    settle(tool)

    if "xfer" in STEPS:
        stage_into(tool, "B", ["xfer.bin"])
        flush_disk()
        m = Meter([A, B])
        w = Waiter({"f": (tool.share("A") / "xfer.bin", MD5["xfer.bin"])})
        t0, aw, off = time.monotonic(), time.time(), log_sizes(tool)
        act_rename(tool, "B", ["xfer.bin"])
        wall = w.go(t0).result().get("f")
        row("XFER", T, wall, *m.end(), payload=tool.wire_payload("A", "xfer.bin", off["A"]),
            act_utc=aw, **tool.breakdown("B", "A", "xfer.bin", aw, off))
        settle(tool)
        if rs:
            for v in rs.variants:
                rs.run("XFER", v, "B", ["xfer.bin"])

    if "tc2a" in STEPS or "tc2b" in STEPS:
        stage_into(tool, "B", ["tc2a.bin", "tc_fa"])
        flush_disk()
        m = Meter([A, B])
        w = Waiter({"f": (tool.share("A") / "tc2a.bin", MD5["tc2a.bin"]),
                    "fa": (tool.share("A") / "tc_fa", MD5["tc_fa"])})
        t0, aw, off = time.monotonic(), time.time(), log_sizes(tool)
        act_rename(tool, "B", ["tc2a.bin", "tc_fa"])
        w.go(t0)
        kill_restart_at(tool, "A", t0)
        done = w.result()
        net, cpu, rss = m.end()
        row("TC_2A", T, done.get("f"), net, cpu, rss, act_utc=aw,
            payload=tool.wire_payload("A", "tc2a.bin", off["A"]),
            **tool.breakdown("B", "A", "tc2a.bin", aw, off))
        row("TC_FA", T, done.get("fa"), net, cpu, rss, same_run_as="TC_2A")
        settle(tool)
        if rs and "tc2a" in STEPS:
            for v in rs.variants:
                rs.run("TC_2A", v, "B", ["tc2a.bin", "tc_fa"], kill_at=0.5,
                       fa_label="TC_FA")

    if "kill40" in STEPS:
        stage_into(tool, "B", ["kill.bin"])
        flush_disk()
        m = Meter([A, B])
        w = Waiter({"f": (tool.share("A") / "kill.bin", MD5["kill.bin"])})
        rx0 = rx_fast("A")
        t0, aw, off = time.monotonic(), time.time(), log_sizes(tool)
        act_rename(tool, "B", ["kill.bin"])
        w.go(t0)
        while rx_fast("A") - rx0 < 0.4 * SIZE and time.monotonic() - t0 < TIMEOUT:
            time.sleep(0.002)
        A.kill()
        t_kill = time.monotonic() - t0
        have = matching_bytes(tool.temp("A", "kill.bin"), DATA / "kill.bin")
        missing = SIZE - have
        time.sleep(max(0.0, t0 + t_kill + 1.0 - time.monotonic()))
        net_r = veth_bytes()
        A.start()
        wall = w.result().get("f")
        after = veth_bytes() - net_r
        payload = tool.wire_payload("A", "kill.bin")
        net, cpu, rss = m.end()
        row("KILL40", T, wall, net, cpu, rss, killed_at_s=round(t_kill, 3), act_utc=aw,
            **tool.breakdown("B", "A", "kill.bin", aw, off),
            arrived_before_kill=have, missing_bytes=missing, wire_after_restart=after,
            payload_after_restart=payload)
        settle(tool)
        if rs:
            rs.run_kill40()

    if "tc2b" in STEPS:
        if rs:
            rs.prepare_tc2b()
        for i, kind in enumerate("abci"):
            label = "TC_INS" if kind == "i" else f"TC_2B_{kind}"
            # The expected content: the same edit applied to a copy first (untimed).
            ref = WORK / "tc2b-ref.bin"
            if i == 0:
                shutil.copyfile(DATA / "tc2a.bin", ref)
            update(ref, kind, 100 + i)
            want = md5_file(ref)
            MD5[label] = want
            flush_disk()
            m = Meter([A, B])
            w = Waiter({"f": (tool.share("B") / "tc2a.bin", want)})
            writes = edits(tool.share("A") / "tc2a.bin", kind, 100 + i)
            t0, aw, off = time.monotonic(), time.time(), log_sizes(tool)
            apply(tool.share("A") / "tc2a.bin", writes)
            del writes
            wall = w.go(t0).result().get("f")
            row(label, T, wall, *m.end(), payload=tool.wire_payload("B", "tc2a.bin", off["B"]),
                act_utc=aw, **tool.breakdown("A", "B", "tc2a.bin", aw, off))
            settle(tool)
            if rs:
                rs.run_tc2b(label, kind, 100 + i, want)
            time.sleep(2.0)  # "a few seconds apart"

    if "zeros" in STEPS:
        # Earlier big files go first, so that the restart's full index exchange is that of a
        # share holding this file only (each 500 MiB file adds 128 KiB of block hashes to the
        # index, sent both ways on every reconnect).
        for n in ("xfer.bin", "tc2a.bin", "kill.bin"):
            if (tool.share("B") / n).exists():
                os.unlink(tool.share("B") / n)
        for _ in range(600):
            if not any((tool.share("A") / n).exists() for n in ("xfer.bin", "tc2a.bin", "kill.bin")):
                break
            time.sleep(0.1)
        settle(tool)
        stage_into(tool, "B", ["zeros.bin"])
        flush_disk()
        m = Meter([A, B])
        w = Waiter({"f": (tool.share("A") / "zeros.bin", MD5["zeros.bin"])})
        t0, aw, off = time.monotonic(), time.time(), log_sizes(tool)
        act_rename(tool, "B", ["zeros.bin"])
        w.go(t0)
        kill_restart_at(tool, "A", t0)
        wall = w.result().get("f")
        row("TC_2A_Z", T, wall, *m.end(), payload=tool.wire_payload("A", "zeros.bin", off["A"]),
            act_utc=aw, **tool.breakdown("B", "A", "zeros.bin", aw, off))
        settle(tool)
        if rs:
            for v in rs.variants:
                rs.run("TC_2A_Z", v, "B", ["zeros.bin"], kill_at=0.5)

    for d in (A, B):
        d.kill(signal.SIGTERM)


def run_xfer(tool):
    """The XFER step alone (a new SIZE_MB file from B to A), for a variant of left."""
    A, B = tool.d["A"], tool.d["B"]
    A.start()
    B.start()
    settle(tool)
    stage_into(tool, "B", ["xfer.bin"])
    flush_disk()
    m = Meter([A, B])
    w = Waiter({"f": (tool.share("A") / "xfer.bin", MD5["xfer.bin"])})
    t0, aw, off = time.monotonic(), time.time(), log_sizes(tool)
    act_rename(tool, "B", ["xfer.bin"])
    wall = w.go(t0).result().get("f")
    row("XFER", tool.name, wall, *m.end(), payload=tool.wire_payload("A", "xfer.bin", off["A"]),
        act_utc=aw, **tool.breakdown("B", "A", "xfer.bin", aw, off))
    for d in (A, B):
        d.kill(signal.SIGTERM)


# ---- rsync -------------------------------------------------------------------------------------

class Rsync:
    # The --fsync modes (rsync 3.2.4 and later) are the fair anchor for a tool that fsyncs every
    # file as left does; the plain modes are rsync as most people run it.
    variants = ["rsync -a", "rsync -W", "rsync -a --fsync", "rsync -W --fsync"]
    flags = {"rsync -a": [], "rsync -W": ["--whole-file"], "rsync -a --partial": ["--partial"],
             "rsync -a --fsync": ["--fsync"], "rsync -W --fsync": ["--whole-file", "--fsync"]}

    def __init__(self, base=WORK):
        self.root = fresh(base / "rsync")
        self.conf = {}
        for s in "AB":
            (self.root / "dst" / s).mkdir(parents=True)
            (self.root / "src" / s).mkdir(parents=True)
            c = self.root / f"rsyncd-{s}.conf"
            c.write_text(f"uid = root\ngid = root\nuse chroot = no\n"
                         f"log file = {WORK / 'logs' / f'rsyncd-{s}.log'}\n"
                         f"[bench]\n  path = {self.root / 'dst' / s}\n  read only = no\n")
            self.conf[s] = c
        self.n = 0

    def _daemon(self, s):
        p = Timed(s, ["rsync", "--daemon", "--no-detach", f"--config={self.conf[s]}",
                      f"--address={IP[s]}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if subprocess.run(nsexec(OTHER[s], ["rsync", f"rsync://{IP[s]}/"]),
                              capture_output=True).returncode == 0:
                return p
            time.sleep(0.02)
        raise RuntimeError("rsync daemon did not start")

    def _client(self, s, variant, src, dst, sub, extra=()):
        argv = ["rsync", "-a", *self.flags[variant], *extra, "--stats", f"{src}/",
                f"rsync://{IP[dst]}/bench/{sub}/"]
        return Timed(s, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def _finish(self, daemon, clients):
        time.sleep(0.3)  # let the daemon reap its children
        daemon.signal(signal.SIGTERM)
        dcpu, drss = daemon.wait()
        cpu = sum(c[0] for c in clients) + dcpu
        return cpu, max((c[1] for c in clients), default=0), drss

    def run(self, step, variant, src_side, names, kill_at=None, fa_label=None):
        """`rsync -a [--whole-file] SRC/ rsync://DST/...` from the source namespace into a fresh
        folder; with kill_at, the client is SIGKILLed then and run again 1 s later (like left's
        peer). Wall = from the first start to the last exit of the command."""
        dst_side = OTHER[src_side]
        self.n += 1
        sub = f"{self.n:02d}-{step}-{variant.split()[-1].strip('-')}"
        src = fresh(self.root / "src" / src_side / sub)
        for n in names:
            if (DATA / n).is_dir():
                shutil.copytree(DATA / n, src / n, copy_function=os.link)
            else:
                os.link(DATA / n, src / n)
        dst = self.root / "dst" / dst_side / sub
        targets = {n: (dst / n, MD5[n]) for n in names}
        flush_disk()
        daemon = self._daemon(dst_side)
        net0 = veth_bytes()
        w = Waiter(targets)
        t0 = time.monotonic()
        w.go(t0)
        rus = []
        c = self._client(src_side, variant, src, dst_side, sub)
        if kill_at is not None:
            try:
                c.p.wait(timeout=max(0.0, t0 + kill_at - time.monotonic()))
            except subprocess.TimeoutExpired:  # still running: kill it, run it again 1 s later
                c.signal(signal.SIGKILL)
                c.p.stdout.read()
                rus.append(c.wait())
                time.sleep(max(0.0, t0 + kill_at + 1.0 - time.monotonic()))
                c = self._client(src_side, variant, src, dst_side, sub)
        c.p.wait()
        wall = time.monotonic() - t0
        c.p.stdout.read()
        rus.append(c.wait())
        done = w.result()
        net = veth_bytes() - net0
        cpu, rss_c, rss_d = self._finish(daemon, rus)
        if c.p.returncode != 0:
            MISBEHAVIOUR.append(f"{variant} exited {c.p.returncode} in {step}")
        rss = {src_side: rss_c, dst_side: rss_d}
        for n in names:
            if n not in done:
                MISBEHAVIOUR.append(f"{variant}: {n} not complete in {step}")
        row(step, variant, wall, net, cpu, rss, polled_s=done.get(names[0]))
        if fa_label:
            row(fa_label, variant, done.get("tc_fa"), net, cpu, rss, same_run_as=step,
                note="time the folder was complete (polled) within the same command")

    def run_kill40(self):
        """rsync's closest equivalent of resuming after kill -9: --partial, rerun."""
        variant = "rsync -a --partial"
        self.n += 1
        sub = f"{self.n:02d}-KILL40-partial"
        src = fresh(self.root / "src" / "B" / sub)
        os.link(DATA / "kill.bin", src / "kill.bin")
        dst = self.root / "dst" / "A" / sub
        flush_disk()
        daemon = self._daemon("A")
        net0 = veth_bytes()
        w = Waiter({"f": (dst / "kill.bin", MD5["kill.bin"])})
        rx0 = rx_fast("A")
        t0 = time.monotonic()
        w.go(t0)
        c = self._client("B", variant, src, "A", sub)
        while rx_fast("A") - rx0 < 0.4 * SIZE and c.p.poll() is None:
            time.sleep(0.002)
        c.signal(signal.SIGKILL)
        c.p.stdout.read()
        rus = [c.wait()]
        t_kill = time.monotonic() - t0
        time.sleep(0.5)  # the receiver keeps the partial file when it sees the connection drop
        partial = dst / "kill.bin"
        have = matching_bytes(partial, DATA / "kill.bin")
        time.sleep(max(0.0, t0 + t_kill + 1.0 - time.monotonic()))
        net_r = veth_bytes()
        c = self._client("B", variant, src, "A", sub)
        out = c.p.stdout.read().decode()
        rus.append(c.wait())
        wall = time.monotonic() - t0
        after = veth_bytes() - net_r
        done = w.result()
        net = veth_bytes() - net0
        cpu, rss_c, rss_d = self._finish(daemon, rus)
        lit = re.search(r"Literal data: ([\d,]+)", out)
        row("KILL40", variant, wall if "f" in done else None, net, cpu, {"B": rss_c, "A": rss_d},
            killed_at_s=round(t_kill, 3), arrived_before_kill=have, missing_bytes=SIZE - have,
            wire_after_restart=after,
            payload_after_restart=int(lit[1].replace(",", "")) if lit else None)

    def prepare_tc2b(self):
        """Source on A: a copy of the file, edited in place like left's; destinations on B: the
        previous version (hard links: rsync replaces files by rename, never in place)."""
        self.src2b = fresh(self.root / "src" / "A" / "tc2b")
        shutil.copy2(DATA / "tc2a.bin", self.src2b / "tc2a.bin")
        for v in self.variants:
            d = fresh(self.root / "dst" / "B" / f"tc2b-{v.split()[-1].strip('-')}")
            os.link(DATA / "tc2a.bin", d / "tc2a.bin")

    def run_tc2b(self, label, kind, seed, want):
        update(self.src2b / "tc2a.bin", kind, seed)
        for v in self.variants:
            sub = f"tc2b-{v.split()[-1].strip('-')}"
            dst = self.root / "dst" / "B" / sub
            flush_disk()
            daemon = self._daemon("B")
            net0 = veth_bytes()
            w = Waiter({"f": (dst / "tc2a.bin", want)})
            t0 = time.monotonic()
            w.go(t0)
            c = self._client("A", v, self.src2b, "B", sub)
            out = c.p.stdout.read().decode()
            rus = [c.wait()]
            wall = time.monotonic() - t0
            done = w.result()
            net = veth_bytes() - net0
            cpu, rss_c, rss_d = self._finish(daemon, rus)
            lit = re.search(r"Literal data: ([\d,]+)", out)
            row(label, v, wall if "f" in done else None, net, cpu, {"A": rss_c, "B": rss_d},
                payload=int(lit[1].replace(",", "")) if lit else None)


# ---- scale run ---------------------------------------------------------------------------------

def make_tree(root, n):
    """n small files (1 B to 4 KiB) in nested folders: 100 per folder, 10 folders per parent."""
    r = random.Random(40)
    want = {}
    for i in range(n):
        leaf = i // 100
        rel = f"d{leaf // 10:03d}/e{leaf % 10}/f{i % 100:02d}.txt"
        if i % 100 == 0:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data = r.randbytes(r.randint(1, 4096))
        (root / rel).write_bytes(data)
        want[rel] = hashlib.md5(data).hexdigest()
    return want


def tree_matches(root, want):
    seen = 0
    for d, dirs, files in os.walk(root):
        if d == str(root):
            dirs[:] = [x for x in dirs if x not in (".left", ".stfolder")]
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), root)
            if rel not in want or md5_file(os.path.join(d, f)) != want[rel]:
                return False
            seen += 1
    return seen == len(want)


class FreshFs:
    """An ext4 filesystem made anew for each tool's scale run (sparse loop file, journal, inode
    tables written by mkfs rather than in the background during the run), mounted in WORK."""

    def __init__(self):
        self.img, self.mnt = WORK / "scalefs.img", WORK / "scalefs"

    def make(self):
        self.drop()
        with open(self.img, "wb") as f:
            f.truncate(max(4 << 30, SCALE_FILES * (40 << 10)))
        # Inodes for both shares (left's run) with room to spare.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-N", str(SCALE_FILES * 3 + 10000),
                        "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.img)], check=True)
        self.mnt.mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(self.img), str(self.mnt)], check=True)
        return self.mnt

    def drop(self):
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", str(self.mnt)], check=True)
        if self.img.exists():
            self.img.unlink()


def scale_run():
    n = SCALE_FILES
    tree = fresh(DATA / "scale")
    say(f"scale run: making {n} files")
    want = make_tree(tree, n)
    fs = FreshFs() if SCALE_FS == "fresh" else None
    try:
        scale_steps(tree, want, fs)
    finally:
        if fs:
            fs.drop()


def scale_steps(tree, want, fs):
    n = SCALE_FILES
    base = fs.make() if fs else WORK
    root = fresh(base / "scale-left")
    for s in "AB":
        (root / s).mkdir()
    subprocess.run(["cp", "-a", f"{tree}/.", str(root / "A" / "share")], check=True)
    (root / "B" / "share").mkdir()
    d = {s: Daemon(f"left-{s}", s, [BIN, IP[OTHER[s]]], root / s,
                   WORK / "logs" / f"scale-left-{s}.log") for s in "AB"}
    net0 = veth_bytes()
    t0 = time.monotonic()
    d["A"].start()
    d["B"].start()
    # Completion: B's log has a 'received' line per file, then every file's MD5 is checked
    # (polling 100,000 MD5s every 50 ms is not possible; the count is polled every 0.25 s).
    count, off, wall = 0, d["B"].log_offset, None
    while time.monotonic() - t0 < SCALE_TIMEOUT:
        t = time.monotonic()
        with open(d["B"].logpath, "rb") as f:
            f.seek(off)
            chunk = f.read()
        nl = chunk.rfind(b"\n") + 1
        count += chunk[:nl].count(b" received ")
        off += nl
        if count >= n and tree_matches(root / "B" / "share", want):
            wall = t - t0
            break
        if not (d["A"].alive and d["B"].alive):
            MISBEHAVIOUR.append("scale run: a left process exited; see the scale-left logs")
            break
        time.sleep(0.25 if count < n else 2.0)
    if wall is None:
        st = root / "B" / "share" / ".left" / "status"
        MISBEHAVIOUR.append(
            f"left: SCALE_INIT not complete after {SCALE_TIMEOUT} s: B logged {count} of {n} files "
            f"received; B's status file said: "
            + (" | ".join(st.read_text().splitlines()[1:]) if st.exists() else "-"))
    for x in d.values():
        x.collect()
    net = veth_bytes() - net0
    row("SCALE_INIT", "left", wall, net, sum(x.acc for x in d.values()),
        {s: x.peak for s, x in d.items()}, files=n)
    wait_idle(list(d.values()), timeout=60)

    rel = sorted(want)[-1]
    new = random.Random(41).randbytes(1000)
    for x in d.values():
        x.begin()
    net0 = veth_bytes()
    w = Waiter({"f": (root / "B" / "share" / rel, hashlib.md5(new).hexdigest())})
    t0 = time.monotonic()
    (root / "A" / "share" / rel).write_bytes(new)
    wall = w.go(t0).result().get("f")
    for x in d.values():
        x.collect()
    row("SCALE_ONE", "left", wall, veth_bytes() - net0, sum(x.acc for x in d.values()),
        {s: x.peak for s, x in d.items()}, files=n)

    wait_idle(list(d.values()), timeout=60)
    time.sleep(2)
    say(f"  idle for {IDLE_SECS} s")
    for x in d.values():
        x.begin()
    net0 = veth_bytes()
    time.sleep(IDLE_SECS)
    for x in d.values():
        x.collect()
    per_min = {s: round(x.acc * 60 / IDLE_SECS, 3) for s, x in d.items()}
    row("SCALE_IDLE", "left", None, veth_bytes() - net0, sum(x.acc for x in d.values()),
        {s: x.peak for s, x in d.items()}, files=n, idle_s=IDLE_SECS,
        cpu_s_per_min=per_min,
        core_pct={s: round(v / 60 * 100, 3) for s, v in per_min.items()})
    for x in d.values():
        x.kill(signal.SIGTERM)

    # rsync, plain and durable: the whole tree, then again after the same one-file change.
    rs = Rsync(fs.make() if fs else WORK)
    old = (tree / rel).read_bytes()
    for variant, sub in (("rsync -a", "scale"), ("rsync -a --fsync", "scale-fsync")):
        (tree / rel).write_bytes(old)
        for label, edit in (("SCALE_INIT", False), ("SCALE_ONE", True)):
            if edit:
                (tree / rel).write_bytes(new)
            flush_disk()
            daemon = rs._daemon("B")
            net0 = veth_bytes()
            t0 = time.monotonic()
            c = rs._client("A", variant, tree, "B", sub)
            c.p.stdout.read()
            ru = [c.wait()]
            wall = time.monotonic() - t0
            net = veth_bytes() - net0
            cpu, rss_c, rss_d = rs._finish(daemon, ru)
            dst = rs.root / "dst" / "B" / sub
            ok = (md5_file(dst / rel) == hashlib.md5(new).hexdigest()) if edit \
                else tree_matches(dst, want)
            if not ok:
                MISBEHAVIOUR.append(f"{variant}: {label} content does not match")
            row(label, variant, wall if ok else None, net, cpu, {"A": rss_c, "B": rss_d},
                files=n, note="command time (verified afterwards)")


# ---- limits of this machine --------------------------------------------------------------------

def measure_limits():
    say("measuring the machine: MD5 rate, link rate, disk write rate")
    lim = {"load_start": open("/proc/loadavg").read().split()[0]}
    n = min(SIZE, 256 * MiB)
    r = random.Random(5)
    buf = b"".join(r.randbytes(4 * MiB) for _ in range(n // (4 * MiB)))
    t = time.monotonic()
    hashlib.md5(buf).digest()
    lim["md5_MBps_one_core"] = round(n / (time.monotonic() - t) / 1e6)
    # One TCP stream B -> A, memory to memory (python, 1 MiB writes).
    recv = spawn("A", ["python3", "-c", f"""
import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('{IP['A']}',5999)); s.listen(1); c,_=s.accept(); b=bytearray(1<<20); n=0; t=time.monotonic()
while (k:=c.recv_into(b)): n+=k
print(n, time.monotonic()-t)"""], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    subprocess.run(nsexec("B", ["python3", "-c", f"""
import socket
s=socket.create_connection(('{IP['A']}',5999)); b=bytes(1<<20)
for _ in range({n >> 20}): s.sendall(b)
s.close()"""]), check=True)
    got, secs = recv.communicate()[0].split()
    lim["tcp_MBps_one_stream"] = round(int(got) / float(secs) / 1e6)
    # Disk: write and fsync.
    p = WORK / "disk-test.bin"
    t = time.monotonic()
    with open(p, "wb") as f:
        for i in range(0, n, 4 * MiB):
            f.write(buf[i:i + 4 * MiB])
        f.flush()
        os.fsync(f.fileno())
    lim["disk_write_fsync_MBps"] = round(n / (time.monotonic() - t) / 1e6)
    p.unlink()
    say(f"  {lim}")
    return lim


# ---- report ------------------------------------------------------------------------------------

TOOLS = ["left", "left+key", "syncthing", "rsync -a", "rsync -W", "rsync -a --fsync", "rsync -W --fsync",
         "rsync -a --partial"]
ORDER = ["TC_1B", "XFER", "TC_2A", "TC_FA", "KILL40", "TC_2B_a", "TC_2B_b", "TC_2B_c", "TC_INS",
         "TC_2A_Z",
         "SCALE_INIT", "SCALE_ONE", "SCALE_IDLE"]
DESC = {
    "TC_1B": f"{SMALL // MiB} MiB renamed into A; B started 0.1 s later",
    "XFER": f"{SIZE_MB} MiB renamed into B, no kill (reference)",
    "TC_2A": f"{SIZE_MB} MiB renamed into B; A killed at 0.5 s, restarted 1 s later",
    "TC_FA": "50 x 1 KiB folder, same run as TC_2A",
    "KILL40": f"{SIZE_MB} MiB into B; A killed at ~40%, restarted 1 s later",
    "TC_2B_a": f"{SIZE // 10 // MiB} MiB contiguous rewritten in the middle, on A",
    "TC_2B_b": "10% of the file as random 4 KiB writes, on A",
    "TC_2B_c": "9 bytes at offset 0, on A",
    "TC_INS": "1 KiB inserted at the middle (the second half moves by 1 KiB), on A",
    "TC_2A_Z": f"1 KiB random + zeros to {SIZE_MB} MiB, as TC_2A",
    "SCALE_INIT": f"{SCALE_FILES} small files, both peers started",
    "SCALE_ONE": "one changed file among them",
    "SCALE_IDLE": f"idle for {IDLE_SECS} s",
}


def block_size(size):
    bs = 64 * 1024
    while bs < 8 * MiB and -(-size // bs) > 8192:
        bs *= 2
    return bs


def fmt_rss(rss):
    return "/".join(f"{rss.get(s, 0) / 1024:.1f}" if rss.get(s) else "-" for s in "AB")


def notes_for(r):
    n = []
    if r["step"] == "TC_1B" and r.get("from_b_start_s") is not None:
        n.append(f"{r['from_b_start_s']:.3f} s from B's start")
    if r["step"] == "KILL40":
        n.append(f"killed at {r['killed_at_s']:.2f} s with {r['arrived_before_kill'] / 1e6:.1f} MB "
                 f"there; missing {r['missing_bytes'] / 1e6:.1f} MB, after restart "
                 f"{r['wire_after_restart'] / 1e6:.1f} MB on the veth")
        if r.get("payload_after_restart") is not None:
            n.append(f"{r['payload_after_restart'] / 1e6:.1f} MB file data")
    elif r.get("payload") is not None:
        n.append(f"file data {r['payload'] / 1e6:.2f} MB")
    if r.get("hashed_after_s") is not None:
        n.append(f"sender hashed it at {r['hashed_after_s']:.2f} s")
    if r.get("pull_s") is not None:
        n.append(f"pull {r['pull_s']:.2f} s")
    if r["step"] == "SCALE_IDLE":
        n.append("CPU s/min A {A}, B {B}".format(**r["cpu_s_per_min"]))
    if r.get("polled_s") is not None and r["step"] not in ("TC_FA",):
        n.append(f"content complete at {r['polled_s']:.2f} s")
    return "; ".join(n)


def report(limits, elapsed):
    limits["load_end"] = open("/proc/loadavg").read().split()[0]
    rows = sorted(ROWS, key=lambda r: (ORDER.index(r["step"]), TOOLS.index(r["tool"])))
    left_wall = {r["step"]: r["wall_s"] for r in rows if r["tool"] == "left"}
    for r in rows:
        lw = left_wall.get(r["step"])
        r["left_ratio"] = (round(lw / r["wall_s"], 3) if r["tool"] != "left" and lw and r["wall_s"]
                           else None)
    lines = []
    rate = RATE or "unshaped"
    lines.append(f"left benchmark: SIZE_MB={SIZE_MB}, link {rate} (veth, MTU 1500), "
                 f"{os.cpu_count()} cores; left {E.get('LEFT_REV', '?')} "
                 f"({E.get('LEFT_BUILD', '?')} build); "
                 f"{time.strftime('%Y-%m-%d %H:%M')}; run took {elapsed / 60:.1f} min")
    lines.append("machine: MD5 {md5_MBps_one_core} MB/s on one core, one TCP stream "
                 "{tcp_MBps_one_stream} MB/s over the veth, disk write+fsync "
                 "{disk_write_fsync_MBps} MB/s; load average {load_start} at the start, "
                 "{load_end} at the end".format(**limits))
    lines.append("")
    hdr = f"{'step':10} {'tool':18} {'wall s':>8} {'left/x':>7} {'veth MB':>9} {'CPU s':>7} " \
          f"{'RSS MiB A/B':>12}  notes"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    last = None
    for r in rows:
        if r["step"] != last:
            lines.append(f"{r['step']:10} -- {DESC[r['step']]}")
            last = r["step"]
        wall = "n/a" if r["step"] == "SCALE_IDLE" else ("TIMEOUT" if r["wall_s"] is None
                                                         else f"{r['wall_s']:.3f}")
        ratio = f"{r['left_ratio']:.2f}" if r["left_ratio"] else ""
        lines.append(f"{'':10} {r['tool']:18} {wall:>8} {ratio:>7} {r['wire_bytes'] / 1e6:9.2f} "
                     f"{r['cpu_s']:7.2f} {fmt_rss(r['peak_rss_kib']):>12}  {notes_for(r)}")
    targets = evaluate_targets(rows)
    lines.append("")
    lines.append("targets for left:")
    for t in targets:
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"  {mark:12} {t['target']}: {t['measured']}")
    lines.append("")
    lines.append("notes:")
    for n in NOTES:
        lines.append(f"  - {n}")
    if MISBEHAVIOUR:
        lines.append("")
        lines.append("problems seen:")
        for m in MISBEHAVIOUR:
            lines.append(f"  ! {m}")
    text = "\n".join(x.rstrip() for x in lines) + "\n"
    (WORK / "results.txt").write_text(text)
    (WORK / "results.json").write_text(json.dumps({
        "config": {"size_mb": SIZE_MB, "rate": RATE or None, "scale_files": SCALE_FILES,
                   "idle_s": IDLE_SECS, "steps": STEPS, "cores": os.cpu_count(),
                   "poll_s": POLL, "left": str(BIN), "left_rev": E.get("LEFT_REV"),
                   "left_build": E.get("LEFT_BUILD"),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   "elapsed_s": round(elapsed)},
        "limits": limits, "rows": rows, "targets": targets, "notes": NOTES,
        "problems": MISBEHAVIOUR}, indent=1) + "\n")
    print(text, end="")
    say(f"written: {WORK / 'results.txt'} and {WORK / 'results.json'}")


def evaluate_targets(rows):
    def get(step, tool="left"):
        return next((r for r in rows if r["step"] == step and r["tool"] == tool), None)

    out = []

    def t(target, met, measured):
        out.append({"target": target, "met": met, "measured": measured})

    r = get("TC_1B")
    t("TC_1B under 0.1 s (counted from B's start: B starts 0.1 s after the act)",
      None if not r or r["wall_s"] is None else r["from_b_start_s"] < 0.1,
      f"{r['from_b_start_s']} s from B's start, {r['wall_s']} s from the rename" if r else "-")
    r, w = get("TC_2A"), get("TC_2A", "rsync -W")
    ok = None if not (r and w and r["wall_s"] and w["wall_s"]) else r["wall_s"] <= 0.8 * w["wall_s"]
    t("TC_2A at most 0.8 x rsync --whole-file (same kill schedule)", ok,
      f"left {r and r['wall_s']} s, rsync -W {w and w['wall_s']} s, ratio "
      f"{r and w and r['wall_s'] and w['wall_s'] and round(r['wall_s'] / w['wall_s'], 2)}")
    for k, lim in (("b", 1.0), ("a", 0.8)):
        r = get(f"TC_2B_{k}")
        t(f"TC_2B ({k}) under {lim} s", None if not r or r["wall_s"] is None else r["wall_s"] < lim,
          f"{r and r['wall_s']} s")
    r = get("KILL40")
    if r:
        bs = block_size(SIZE)
        p = r.get("payload_after_restart")
        ok = None if p is None else p <= r["missing_bytes"] + bs
        t(f"after a mid-transfer kill, re-sent at most missing + one block ({bs // 1024} KiB)", ok,
          f"file data after restart {p} B, missing {r['missing_bytes']} B "
          f"(veth after restart {r['wire_after_restart']} B, with headers and index)")
    else:
        t("after a mid-transfer kill, re-sent at most missing + one block", None, "-")
    r = get("TC_2A_Z")
    t("markers' sparse file under 1 MB on the wire", None if not r else r["wire_bytes"] < 1e6,
      f"{r and r['wire_bytes']} B on the veth")
    for what, scale in ((f"{SIZE_MB} MiB steps", False), (f"scale run ({SCALE_FILES} files)", True)):
        peaks = [v for r in rows if r["tool"] == "left" and r["step"].startswith("SCALE") == scale
                 for v in r["peak_rss_kib"].values() if v]
        t(f"peak RSS under 8 MiB per process, {what}", None if not peaks else max(peaks) < 8 * 1024,
          f"max VmHWM {max(peaks) / 1024:.1f} MiB" if peaks else "-")
    r = get("SCALE_IDLE")
    t(f"idle CPU with {SCALE_FILES} files under 1% of a core",
      None if not r else max(r["core_pct"].values()) < 1.0,
      f"{r['core_pct']} % of a core" if r else "-")
    return out


def main():
    t_start = time.monotonic()
    fresh(WORK / "logs")
    for s in "AB":
        ANCHOR[s] = spawn(s, ["sleep", "1000000"])
    make_data()
    limits = measure_limits()
    NOTES.extend([
        "wall s: from the act (rename or write) to the first 50 ms poll at which the destination "
        "has its final stat and the right MD5; for rsync, from starting the command to its exit "
        "(its polled completion is in the JSON).",
        "left/x: left's wall time divided by that tool's, same step, same files, same run.",
        "veth MB: bytes that crossed the veth both ways (rx+tx of A's end), headers included.",
        "CPU s: user+system of both left processes (all incarnations); for rsync, the client and "
        "the daemon with its children (wait4 rusage). RSS: VmHWM per left process, reset at the "
        "start of each step; for rsync, ru_maxrss of the client and of the daemon's largest child.",
        "rsync -a is rsync's delta transfer (the default between two hosts); rsync -W is "
        "rsync -a --whole-file; neither fsyncs. The --fsync rows fsync every file written (rsync "
        "3.2.4 and later), as left (and syncthing) do: the durable anchor. "
        "Before each timed act the bench runs sync(), untimed, so that no fsync waits for data "
        "an earlier step left dirty.",
        "TC_1B: rsync has no peer to start late; it is run as soon as the file is there.",
        "TC_2A, TC_2A_Z: for rsync the client is SIGKILLed at 0.5 s and run again 1 s later, like "
        "left's peer; without --partial rsync starts the file over. XFER is the same transfer "
        "without a kill.",
        "KILL40: rsync has no kill -9-and-resume; the closest is --partial and running it again, "
        "which uses the partial file as the basis of a delta transfer. 'file data' is left's own "
        "'on the wire' count from its log, and rsync's 'Literal data'.",
        "TC_2B: edits in place on A's copy; rsync gets the same edits on its source copy, "
        "the destination holding the previous version.",
        "SCALE: rsync times are of the whole command (one tree walk on each side). Polling "
        "100,000 MD5s every 50 ms is not possible: SCALE_INIT counts left's 'received' lines "
        "every 0.25 s, then checks every file's MD5.",
    ])
    try:
        run_all()
    except BaseException as e:  # still write what was measured
        NOTES.append(f"the run was cut short: {type(e).__name__}: {e}")
        report(limits, time.monotonic() - t_start)
        raise
    report(limits, time.monotonic() - t_start)


def run_all():
    use_st = E.get("SYNCTHING", "auto")
    have_st = shutil.which("syncthing") is not None
    if use_st == "1" and not have_st:
        raise SystemExit("bench: SYNCTHING=1 but syncthing is not installed")
    main_steps = [x for x in STEPS if x != "scale"]
    if main_steps:
        say("left, with rsync side by side")
        run_daemon_tool(Left(), Rsync())
    if "xfer" in STEPS:
        say("left with a shared key: XFER again, every frame sealed (ChaCha20-Poly1305)")
        NOTES.append("left+key: the XFER step again with a shared key (protocol 3: every frame "
                     "encrypted and authenticated), in the same run; left/x is left's time "
                     "without a key over this one.")
        run_xfer(Left(keyed=True))
    if main_steps and have_st and use_st != "0":
        say("syncthing")
        NOTES.append("syncthing: headless, discovery, relays, NAT and usage reporting off, "
                     "watcher delay 1 s, low priority off, compression off; not in the scale run.")
        run_daemon_tool(Syncthing())
    elif main_steps:
        NOTES.append("syncthing: not run (" + ("SYNCTHING=0" if have_st else "not installed") + ").")
    if "scale" in STEPS and SCALE_FILES > 0:
        scale_run()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    finally:
        for p in CHILDREN:
            if p.poll() is None:
                try:
                    p.kill()
                    p.wait(timeout=5)
                except Exception:
                    pass
