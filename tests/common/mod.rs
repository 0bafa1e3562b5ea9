//! Helpers for the integration tests: real `left` processes on 127.0.0.1, each with its own port
//! and folder under a per-test temp directory. Standard library only.

#![allow(dead_code)]

pub mod proxy;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_left");

/// Generous upper bound for anything that should take about a second.
pub const SOON: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Temp folders and ports

/// A unique folder for one test; removed on drop unless the test failed (then it is kept and
/// its path printed, with the logs inside).
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("left-test-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(path.join("logs")).unwrap();
        TestDir { path }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep logs and small files; big test data would fill /tmp over repeated failures.
            let removed = remove_big_files(&self.path, 8 << 20);
            eprintln!(
                "test folder kept for inspection: {} ({removed} files over 8 MiB removed)",
                self.path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes files larger than `limit` under `dir`; returns how many.
fn remove_big_files(dir: &Path, limit: u64) -> usize {
    let mut n = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for ent in rd.flatten() {
        let Ok(md) = fs::symlink_metadata(ent.path()) else {
            continue;
        };
        if md.is_dir() {
            n += remove_big_files(&ent.path(), limit);
        } else if md.len() > limit && fs::remove_file(ent.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// A TCP port free right now on 127.0.0.1, never handed out twice in this process.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999 here): a port picked there and released
    // could be taken by any outgoing connection (a daemon's dial) before the peer binds it
    // ("Address already in use": once in make test). Each process starts at its own offset.
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: Mutex<Option<u32>> = Mutex::new(None);
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    let n = next.get_or_insert_with(|| std::process::id().wrapping_mul(7919) % SPAN);
    loop {
        *n = (*n + 1) % SPAN;
        let port = (LOW + *n) as u16;
        // `left` listens on [::] (dual stack): the port must be free there and on 127.0.0.1.
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && (TcpListener::bind(("::", port)).is_ok()
                || TcpListener::bind(("0.0.0.0", port)).is_ok());
        if free {
            return port;
        }
    }
}

/// Two distinct free ports.
pub fn two_ports() -> (u16, u16) {
    (free_port(), free_port())
}

/// Polls `cond` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

fn peer_args(dir: &Path, port: u16, peers: &[u16]) -> Vec<String> {
    let mut a = vec![
        "-v".to_string(),
        "--dir".to_string(),
        dir.display().to_string(),
        "--port".to_string(),
        port.to_string(),
    ];
    a.extend(peers.iter().map(|p| format!("127.0.0.1:{p}")));
    a
}

fn new_log(t: &TestDir, name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    t.join(&format!("logs/{}-{n}.log", name.replace('/', "_")))
}

fn spawn(args: &[String], log: &Path) -> Child {
    spawn_via(&[], args, log, false)
}

/// Runs `PREFIX... BIN ARGS...` (`PREFIX` empty: `BIN` itself), in a process group of its own
/// with `own_group`.
fn spawn_via(prefix: &[&str], args: &[String], log: &Path, own_group: bool) -> Child {
    let f = File::create(log).unwrap();
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    if own_group {
        cmd.process_group(0);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(f))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"))
}

/// The last `n` lines of a log, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `left` daemon (no `--once`); killed with SIGKILL when dropped.
pub struct Peer {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Peer {
    /// Starts `left --dir T/NAME --port PORT 127.0.0.1:P...`, stderr to a log under T/logs.
    pub fn start(t: &TestDir, name: &str, port: u16, peers: &[u16]) -> Peer {
        Peer::start_with(t, name, port, peers, &[])
    }

    /// As [`Peer::start`], with extra options before the peers.
    pub fn start_with(t: &TestDir, name: &str, port: u16, peers: &[u16], extra: &[&str]) -> Peer {
        let dir = t.join(name);
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(peer_args(&dir, port, peers));
        Peer::start_raw(t, name, &dir, port, &args)
    }

    /// A path inside this peer's folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`.
    pub fn wait_log(&self, timeout: Duration, needle: &str) -> bool {
        wait_until(timeout, || self.log_text().contains(needle))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How the process ended, if it did.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id (for sending signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns its status (None: still
    /// running, killed with -9 afterwards).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM failed");
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(st) = c.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// kill -9, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log_text(), 40)
            );
        }
    }
}

/// Runs `left --once --timeout SECS --dir T/NAME --port PORT 127.0.0.1:P...` to completion
/// (killed after `timeout_secs + 90` s, which fails the test) and returns its status and log.
pub fn run_once(
    t: &TestDir,
    name: &str,
    port: u16,
    peers: &[u16],
    timeout_secs: u64,
) -> (ExitStatus, String) {
    run_once_limit(
        t,
        name,
        port,
        peers,
        timeout_secs,
        Duration::from_secs(timeout_secs + 90),
    )
}

/// As [`run_once`], failing the test if it runs longer than `limit`.
pub fn run_once_limit(
    t: &TestDir,
    name: &str,
    port: u16,
    peers: &[u16],
    timeout_secs: u64,
    limit: Duration,
) -> (ExitStatus, String) {
    let mut args = vec![
        "--once".to_string(),
        "--timeout".to_string(),
        timeout_secs.to_string(),
    ];
    args.extend(peer_args(&t.join(name), port, peers));
    run_logged(t, name, &args, limit)
}

/// Runs `left ARGS` with stderr to a log, waiting at most `limit`.
pub fn run_logged(
    t: &TestDir,
    name: &str,
    args: &[String],
    limit: Duration,
) -> (ExitStatus, String) {
    let log = new_log(t, name);
    let mut child = spawn(args, &log);
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st, fs::read_to_string(&log).unwrap_or_default());
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "left {} did not exit within {:?}; log:\n{}",
                args.join(" "),
                limit,
                tail(&fs::read_to_string(&log).unwrap_or_default(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Reading logs

/// The message of a log line: what follows the timestamp.
fn message(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, m)| m)
}

/// One `received PATH (N bytes, W on the wire, R reused locally, ...)` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub path: String,
    pub size: u64,
    pub wire: u64,
    pub reused: u64,
}

/// Every installed file a log reports, in order.
pub fn received(log: &str) -> Vec<Received> {
    let mut out = Vec::new();
    for line in log.lines() {
        let Some(rest) = message(line).strip_prefix("received ") else {
            continue;
        };
        let Some(i) = rest.rfind(" (") else { continue };
        let path = rest[..i].to_string();
        let nums: Vec<u64> = rest[i + 2..]
            .split(", ")
            .take(3)
            .map(|f| {
                f.split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected log line: {line}"))
            })
            .collect();
        assert_eq!(nums.len(), 3, "unexpected log line: {line}");
        out.push(Received {
            path,
            size: nums[0],
            wire: nums[1],
            reused: nums[2],
        });
    }
    out
}

/// The files a peer's log reports as received, once it reports `n` that `pick` accepts: a
/// file is logged just after it appears (a small one once its group's renames are durable),
/// so a test that saw it arrive waits for its line.
pub fn received_when(p: &Peer, n: usize, pick: impl Fn(&Received) -> bool) -> Vec<Received> {
    let count = || received(&p.log_text()).iter().filter(|r| pick(r)).count();
    wait_until(Duration::from_secs(10), || count() >= n);
    received(&p.log_text())
}

/// The totals of the `--once` exit line: (received, sent, reused locally).
pub fn once_totals(log: &str) -> Option<(u64, u64, u64)> {
    let line = log
        .lines()
        .find(|l| message(l).starts_with("in sync with every peer"))?;
    let num_before = |key: &str| -> Option<u64> {
        let i = line.find(key)?;
        line[..i].trim_end().rsplit(' ').next()?.parse().ok()
    };
    Some((
        num_before(" bytes, sent")?,
        num_before(" bytes, reused")?,
        line.trim_end()
            .strip_suffix(" bytes")?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?,
    ))
}

/// Log lines whose message starts with `prefix`.
pub fn lines_starting<'a>(log: &'a str, prefix: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| message(l).starts_with(prefix))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Data

/// xorshift64*: deterministic pseudo-random bytes, fast enough for hundreds of MiB.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// `size` pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, size: usize) -> Vec<u8> {
    Rng::new(seed).bytes(size)
}

/// Writes `size` pseudo-random bytes to `path` in 1 MiB pieces (creating parent folders).
pub fn write_random(path: &Path, size: u64, seed: u64) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    let mut f = File::create(path).unwrap();
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

/// Writes a file, creating the folders on its way.
pub fn write_file(path: &Path, data: impl AsRef<[u8]>) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(path, data).unwrap();
}

/// Writes a file outside the share, then renames it in, so no scan sees it half-written.
pub fn put_file(staging: &Path, dest: &Path, data: &[u8]) {
    fs::create_dir_all(staging).unwrap();
    let tmp = staging.join(format!(
        "stage-{}",
        dest.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&tmp, data).unwrap();
    if let Some(d) = dest.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::rename(&tmp, dest).unwrap();
}

/// MD5 of a file by `md5sum`, as hex.
pub fn md5sum(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    assert!(out.status.success(), "md5sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The file's content, or None if it cannot be read.
pub fn read(path: &Path) -> Option<Vec<u8>> {
    fs::read(path).ok()
}

/// Whether the file at `path` holds exactly `want`.
pub fn has_content(path: &Path, want: &[u8]) -> bool {
    read(path).is_some_and(|d| d == want)
}

/// Whether two files have the same bytes (read in pieces; large files are fine).
pub fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Trees

/// Whether a file name is one of `left`'s temp files (`.NAME.left-tmp`).
pub fn is_temp(name: &str) -> bool {
    name.len() > ".left-tmp".len() + 1 && name.starts_with('.') && name.ends_with(".left-tmp")
}

/// Everything in a share except `.left/` and temp files: relative path -> Some(size) for a
/// file, None for a folder. Sorted.
pub fn listing(root: &Path) -> io::Result<Vec<(String, Option<u64>)>> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for ent in fs::read_dir(root.join(&rel))? {
            let ent = ent?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if (rel.is_empty() && name == ".left") || is_temp(&name) {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let md = fs::symlink_metadata(ent.path())?;
            if md.is_dir() {
                out.push((path.clone(), None));
                stack.push(path);
            } else {
                out.push((path, Some(md.len())));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The first difference between two shares (names, types, sizes, then contents), or None.
pub fn tree_diff(a: &Path, b: &Path) -> Option<String> {
    let la = match listing(a) {
        Ok(l) => l,
        Err(e) => return Some(format!("listing {}: {e}", a.display())),
    };
    let lb = match listing(b) {
        Ok(l) => l,
        Err(e) => return Some(format!("listing {}: {e}", b.display())),
    };
    if la != lb {
        let sa: HashSet<_> = la.iter().collect();
        let sb: HashSet<_> = lb.iter().collect();
        let only_a: Vec<_> = la.iter().filter(|x| !sb.contains(x)).take(5).collect();
        let only_b: Vec<_> = lb.iter().filter(|x| !sa.contains(x)).take(5).collect();
        return Some(format!(
            "listings differ: only in {}: {only_a:?}; only in {}: {only_b:?}",
            a.display(),
            b.display()
        ));
    }
    for (path, size) in &la {
        if size.is_some() {
            match same_file(&a.join(path), &b.join(path)) {
                Ok(true) => {}
                Ok(false) => return Some(format!("{path}: contents differ")),
                Err(e) => return Some(format!("{path}: {e}")),
            }
        }
    }
    None
}

/// Waits until two shares are identical; panics with the last difference if they are not
/// within `timeout`.
pub fn wait_identical(a: &Path, b: &Path, timeout: Duration) {
    let mut last = None;
    let ok = wait_until(timeout, || {
        last = tree_diff(a, b);
        last.is_none()
    });
    assert!(ok, "shares did not converge within {timeout:?}: {last:?}");
}

// ---------------------------------------------------------------------------------------------
// Raw processes, signals, and a fake peer speaking the wire protocol by hand (trust, mesh and
// operator tests). See src/proto/wire.rs for the layout: u32 BE length | u8 type | payload.

impl Peer {
    /// Starts `left ARGS` exactly as given (no --dir/--port added), stderr to a log, and waits
    /// until it serves on `port`. `dir` is where the test expects its folder.
    pub fn start_raw(t: &TestDir, name: &str, dir: &Path, port: u16, args: &[String]) -> Peer {
        Peer::start_via(t, name, dir, port, &[], args)
    }

    /// As [`Peer::start`], under a limit of `files` open files (soft and hard, so `left` cannot
    /// raise it).
    pub fn start_limited(t: &TestDir, name: &str, port: u16, peers: &[u16], files: u32) -> Peer {
        let dir = t.join(name);
        let script = format!("ulimit -n {files} && exec \"$0\" \"$@\"");
        let prefix = ["sh", "-c", script.as_str()];
        Peer::start_via(t, name, &dir, port, &prefix, &peer_args(&dir, port, peers))
    }

    pub fn start_via(
        t: &TestDir,
        name: &str,
        dir: &Path,
        port: u16,
        prefix: &[&str],
        args: &[String],
    ) -> Peer {
        Peer::start_in(t, name, dir, port, prefix, args, false)
    }

    /// As [`Peer::start`], in a process group of its own. For tests that stop peers with
    /// SIGSTOP: when the test's process group is orphaned (a run detached from its shell, a CI
    /// runner that made its own session), the kernel sends SIGHUP to the whole group as soon as
    /// one of its processes exits while another is stopped, and the stopped daemon dies of it.
    /// A daemon alone in its group, whose parent (the test) is in another group of the same
    /// session, is never hung up that way. (It does not get the terminal's Ctrl-C either; it is
    /// killed when its `Peer` is dropped.)
    pub fn start_own_group(t: &TestDir, name: &str, port: u16, peers: &[u16]) -> Peer {
        let dir = t.join(name);
        let args = peer_args(&dir, port, peers);
        Peer::start_in(t, name, &dir, port, &[], &args, true)
    }

    fn start_in(
        t: &TestDir,
        name: &str,
        dir: &Path,
        port: u16,
        prefix: &[&str],
        args: &[String],
        own_group: bool,
    ) -> Peer {
        let log = new_log(t, name);
        let child = spawn_via(prefix, args, &log, own_group);
        let mut p = Peer {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            port,
            log,
            child: Some(child),
        };
        let ready = wait_until(SOON, || {
            p.log_text().contains(&format!("on port {port} as device")) || !p.alive()
        });
        assert!(
            ready && p.alive(),
            "{name} (left {}) did not start serving on port {port}:\n{}",
            args.join(" "),
            p.log_text()
        );
        p
    }

    /// This peer's device id, from `.left/device`.
    pub fn device(&self) -> u64 {
        device_of(&self.dir)
    }
}

/// The device id of the share at `dir` (from `.left/device`).
pub fn device_of(dir: &Path) -> u64 {
    let s = fs::read_to_string(dir.join(".left/device")).expect("no .left/device");
    u64::from_str_radix(s.trim(), 16).expect("bad .left/device")
}

/// The short printable device id used in logs and conflict names (`{:07X}` of the top 28 bits).
pub fn short_id(device: u64) -> String {
    format!("{:07X}", device >> 36)
}

/// UTC `YYYYMMDD-HHMMSS` of seconds since the epoch (as in conflict names).
pub fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Sends a signal (`"STOP"`, `"CONT"`, `"TERM"`...) to a process with kill(1).
pub fn signal(pid: u32, sig: &str) {
    // kill(1) in a group of its own: its exit must not count in the test's group (see
    // `Peer::start_own_group`).
    let ok = Command::new("kill")
        .process_group(0)
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Slows a process down by stopping it for `stop` out of every `run + stop`, until dropped (it
/// is left running). Real transfers between real peers then take seconds instead of a blink.
pub struct Throttle {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Throttle {
    pub fn new(pid: u32, run: Duration, stop: Duration) -> Throttle {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        let handle = std::thread::spawn(move || {
            while !f.load(Ordering::Relaxed) {
                std::thread::sleep(run);
                let _ = Command::new("kill")
                    .args(["-STOP", &pid.to_string()])
                    .status();
                std::thread::sleep(stop);
                let _ = Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
        });
        Throttle {
            stop: flag,
            handle: Some(handle),
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// MD5 (RFC 1321), so tests can build valid index entries without a crate.
pub fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    ];
    let mut st: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut m = [0u32; 16];
        for (i, w) in m.iter_mut().enumerate() {
            *w = u32::from_le_bytes(chunk[i * 4..i * 4 + 4].try_into().unwrap());
        }
        let [mut a, mut b, mut c, mut d] = st;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(K[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        st[0] = st[0].wrapping_add(a);
        st[1] = st[1].wrapping_add(b);
        st[2] = st[2].wrapping_add(c);
        st[3] = st[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, w) in st.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// rsync's weak checksum of a window: the byte sum and the sum weighted by distance from the
/// end, 16 bits each (the first half of a sub-block hash in delta transfer).
pub fn weak_sum(data: &[u8]) -> u32 {
    let n = data.len() as u32;
    let a: u32 = data.iter().map(|&x| x as u32).fold(0, u32::wrapping_add);
    let b: u32 = data
        .iter()
        .enumerate()
        .map(|(i, &x)| (n - i as u32).wrapping_mul(x as u32))
        .fold(0, u32::wrapping_add);
    (a & 0xffff) | (b << 16)
}

/// XXH64 with seed 0, from its specification (sub-block hashes of delta transfer).
pub fn xxh64(data: &[u8]) -> u64 {
    const P: [u64; 5] = [
        0x9E3779B185EBCA87,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0x85EBCA77C2B2AE63,
        0x27D4EB2F165667C5,
    ];
    let round = |acc: u64, x: u64| {
        acc.wrapping_add(x.wrapping_mul(P[1]))
            .rotate_left(31)
            .wrapping_mul(P[0])
    };
    let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
    let mut i = 0;
    let mut h;
    if data.len() >= 32 {
        let mut v = [P[0].wrapping_add(P[1]), P[1], 0, 0u64.wrapping_sub(P[0])];
        while i + 32 <= data.len() {
            for (k, lane) in v.iter_mut().enumerate() {
                *lane = round(*lane, word(i + 8 * k));
            }
            i += 32;
        }
        h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for lane in v {
            h = (h ^ round(0, lane)).wrapping_mul(P[0]).wrapping_add(P[3]);
        }
    } else {
        h = P[4];
    }
    h = h.wrapping_add(data.len() as u64);
    while i + 8 <= data.len() {
        h = (h ^ round(0, word(i)))
            .rotate_left(27)
            .wrapping_mul(P[0])
            .wrapping_add(P[3]);
        i += 8;
    }
    if i + 4 <= data.len() {
        let w = u32::from_le_bytes(data[i..i + 4].try_into().unwrap()) as u64;
        h = (h ^ w.wrapping_mul(P[0]))
            .rotate_left(23)
            .wrapping_mul(P[1])
            .wrapping_add(P[2]);
        i += 4;
    }
    for &b in &data[i..] {
        h = (h ^ (b as u64).wrapping_mul(P[4]))
            .rotate_left(11)
            .wrapping_mul(P[0]);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P[1]);
    h ^= h >> 29;
    h = h.wrapping_mul(P[2]);
    h ^ (h >> 32)
}

pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

pub mod wire {
    //! Frames built and read by hand.

    use std::io::{self, Read};

    pub const MAGIC: [u8; 4] = *b"LEFT";
    pub const T_HELLO: u8 = 1;
    pub const T_INDEX: u8 = 2;
    pub const T_INDEX_DONE: u8 = 3;
    pub const T_REQUEST: u8 = 4;
    pub const T_RESPONSE: u8 = 5;
    pub const T_IN_SYNC: u8 = 6;
    pub const T_PING: u8 = 7;
    pub const T_AUTH: u8 = 8;
    pub const T_SUB_HASHES: u8 = 9;
    pub const SUB_BLOCK: usize = 4096;
    pub const FLAG_AUTH: u32 = 1;
    pub const BLOCK: usize = 64 << 10;

    /// `u32 length | type | payload`.
    pub fn frame(t: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(payload.len() + 5);
        f.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
        f.push(t);
        f.extend_from_slice(payload);
        f
    }

    pub fn hello_payload(
        magic: [u8; 4],
        version: u16,
        device: u64,
        flags: u32,
        nonce: [u8; 16],
        port: u16,
    ) -> Vec<u8> {
        let mut p = magic.to_vec();
        p.extend_from_slice(&version.to_be_bytes());
        p.extend_from_slice(&device.to_be_bytes());
        p.extend_from_slice(&flags.to_be_bytes());
        p.extend_from_slice(&nonce);
        p.extend_from_slice(&port.to_be_bytes());
        p
    }

    /// The protocol version `left` speaks.
    pub const VERSION: u16 = 3;

    /// A correct hello.
    pub fn hello(device: u64, flags: u32, nonce: [u8; 16], port: u16) -> Vec<u8> {
        frame(
            T_HELLO,
            &hello_payload(MAGIC, VERSION, device, flags, nonce, port),
        )
    }

    /// One index entry as it travels.
    #[derive(Debug, Clone)]
    pub struct Entry {
        pub path: String,
        /// 0 file, 1 folder.
        pub kind: u8,
        pub deleted: bool,
        pub size: u64,
        pub mtime: i64,
        pub mtime_ns: u32,
        pub mode: u32,
        pub modified_by: u64,
        pub version: Vec<(u64, u64)>,
        pub block_size: u32,
        pub blocks: Vec<[u8; 16]>,
        /// The MD5 of the block MD5s.
        pub file_hash: [u8; 16],
    }

    impl Entry {
        /// A file holding `data`, version `{device: counter}`.
        pub fn file(path: &str, data: &[u8], device: u64, counter: u64) -> Entry {
            Entry {
                path: path.to_string(),
                kind: 0,
                deleted: false,
                size: data.len() as u64,
                mtime: 1_700_000_000,
                mtime_ns: 0,
                mode: 0o644,
                modified_by: device,
                version: vec![(device, counter)],
                block_size: BLOCK as u32,
                blocks: data.chunks(BLOCK).map(super::md5).collect(),
                file_hash: super::md5(
                    &data.chunks(BLOCK).flat_map(super::md5).collect::<Vec<u8>>(),
                ),
            }
        }

        pub fn dir(path: &str, device: u64, counter: u64) -> Entry {
            Entry {
                kind: 1,
                mode: 0o755,
                ..Entry::file(path, b"", device, counter)
            }
        }

        pub fn deleted(path: &str, device: u64, counter: u64) -> Entry {
            Entry {
                deleted: true,
                ..Entry::file(path, b"", device, counter)
            }
        }

        pub fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&(self.path.len() as u16).to_be_bytes());
            out.extend_from_slice(self.path.as_bytes());
            out.push(self.kind);
            out.push(u8::from(self.deleted));
            out.extend_from_slice(&self.size.to_be_bytes());
            out.extend_from_slice(&self.mtime.to_be_bytes());
            out.extend_from_slice(&self.mtime_ns.to_be_bytes());
            out.extend_from_slice(&self.mode.to_be_bytes());
            out.extend_from_slice(&self.modified_by.to_be_bytes());
            out.extend_from_slice(&(self.version.len() as u16).to_be_bytes());
            for (d, c) in &self.version {
                out.extend_from_slice(&d.to_be_bytes());
                out.extend_from_slice(&c.to_be_bytes());
            }
            out.extend_from_slice(&self.block_size.to_be_bytes());
            out.extend_from_slice(&(self.blocks.len() as u32).to_be_bytes());
            for b in &self.blocks {
                out.extend_from_slice(b);
            }
            out.extend_from_slice(&self.file_hash);
        }
    }

    /// An Index frame: u64 seq, u32 count, entries.
    pub fn index(seq: u64, entries: &[Entry]) -> Vec<u8> {
        let mut p = seq.to_be_bytes().to_vec();
        p.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for e in entries {
            e.encode(&mut p);
        }
        frame(T_INDEX, &p)
    }

    pub fn seq_frame(t: u8, seq: u64) -> Vec<u8> {
        frame(t, &seq.to_be_bytes())
    }

    pub fn response(id: u32, status: u8, data: &[u8]) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.push(status);
        p.extend_from_slice(&(data.len() as u32).to_be_bytes());
        p.extend_from_slice(data);
        frame(T_RESPONSE, &p)
    }

    pub fn request(id: u32, path: &str, offset: u64, len: u32, hash: [u8; 16]) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&(path.len() as u16).to_be_bytes());
        p.extend_from_slice(path.as_bytes());
        p.extend_from_slice(&offset.to_be_bytes());
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&hash);
        frame(T_REQUEST, &p)
    }

    /// A block request from the daemon.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Request {
        pub id: u32,
        pub path: String,
        pub offset: u64,
        pub len: u32,
        pub hash: [u8; 16],
    }

    pub fn parse_request(p: &[u8]) -> Option<Request> {
        let id = u32::from_be_bytes(p.get(0..4)?.try_into().ok()?);
        let n = u16::from_be_bytes(p.get(4..6)?.try_into().ok()?) as usize;
        let path = String::from_utf8(p.get(6..6 + n)?.to_vec()).ok()?;
        let r = &p[6 + n..];
        Some(Request {
            id,
            path,
            offset: u64::from_be_bytes(r.get(0..8)?.try_into().ok()?),
            len: u32::from_be_bytes(r.get(8..12)?.try_into().ok()?),
            hash: r.get(12..28)?.try_into().ok()?,
        })
    }

    /// Reads one frame: (type, payload). Frames over 16 MiB are an error.
    pub fn read_frame(r: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
        let mut h = [0u8; 4];
        r.read_exact(&mut h)?;
        let n = u32::from_be_bytes(h) as usize;
        if n == 0 || n > 16 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad frame length",
            ));
        }
        let mut body = vec![0u8; n];
        r.read_exact(&mut body)?;
        let t = body.remove(0);
        Ok((t, body))
    }

    /// The device id in a hello payload.
    pub fn hello_device(p: &[u8]) -> u64 {
        u64::from_be_bytes(p[6..14].try_into().unwrap())
    }
}

/// Connects to a daemon on 127.0.0.1:`port`.
pub fn connect(port: u16) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Connects to 127.0.0.1:`port` from the local address `from` (any of 127.0.0.0/8 on Linux):
/// std cannot bind before connecting, so the socket calls are declared here by hand.
pub fn connect_from(from: std::net::Ipv4Addr, port: u16) -> io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    #[repr(C)]
    struct SockaddrIn {
        family: u16,
        port: [u8; 2],
        addr: [u8; 4],
        zero: [u8; 8],
    }
    unsafe extern "C" {
        fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
        fn bind(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
        fn connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
        fn close(fd: i32) -> i32;
    }
    let sa = |ip: std::net::Ipv4Addr, port: u16| SockaddrIn {
        family: 2, // AF_INET
        port: port.to_be_bytes(),
        addr: ip.octets(),
        zero: [0; 8],
    };
    let len = std::mem::size_of::<SockaddrIn>() as u32;
    // SAFETY: plain socket calls on a descriptor owned here; addresses live across the calls.
    unsafe {
        let fd = socket(2, 1 | 0o2000000, 0); // SOCK_STREAM | SOCK_CLOEXEC
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let src = sa(from, 0);
        let dst = sa(std::net::Ipv4Addr::LOCALHOST, port);
        if bind(fd, &src, len) != 0 || connect(fd, &dst, len) != 0 {
            let e = io::Error::last_os_error();
            close(fd);
            return Err(e);
        }
        Ok(std::net::TcpStream::from_raw_fd(fd))
    }
}

/// Reads until the other side closes (or resets) the connection, for at most `timeout`.
/// Returns the bytes read before the close, or None if it stayed open.
pub fn wait_closed(s: &mut std::net::TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let end = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(got),
        }
    }
}

/// A peer played by the test: it completes a hello (no key), then a thread reads what the daemon
/// sends, answers block requests from `files` (optionally at a limited rate) and acknowledges
/// the daemon's index with InSync. Every request and frame type seen is recorded.
pub struct FakePeer {
    pub device: u64,
    /// The daemon's device id, from its hello.
    pub daemon: u64,
    stream: std::net::TcpStream,
    pub requests: std::sync::Arc<Mutex<Vec<wire::Request>>>,
    pub frames: std::sync::Arc<Mutex<Vec<u8>>>,
    pub closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    mute: std::sync::Arc<std::sync::atomic::AtomicBool>,
    files: std::sync::Arc<Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    /// Held while a frame is written: the test's frames and the thread's answers never mix.
    writing: std::sync::Arc<Mutex<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl FakePeer {
    /// Connects to the daemon on `port`, claiming device `device` listening on `listen_port`.
    pub fn connect(port: u16, device: u64, listen_port: u16) -> FakePeer {
        FakePeer::connect_rate(port, device, listen_port, None)
    }

    /// As [`FakePeer::connect`]; block data is served at most `rate` bytes per second.
    pub fn connect_rate(port: u16, device: u64, listen_port: u16, rate: Option<u64>) -> FakePeer {
        let mut s = connect(port);
        s.set_nodelay(true).unwrap();
        let nonce: [u8; 16] = random_bytes(device, 16).try_into().unwrap();
        s.write_all(&wire::hello(device, 0, nonce, listen_port))
            .unwrap();
        let (t, p) = wire::read_frame(&mut s).expect("no hello from the daemon");
        assert_eq!(t, wire::T_HELLO, "the daemon's first frame is not a hello");
        let daemon = wire::hello_device(&p);
        s.set_read_timeout(None).unwrap();
        let requests = std::sync::Arc::new(Mutex::new(Vec::new()));
        let frames = std::sync::Arc::new(Mutex::new(Vec::new()));
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let files: std::sync::Arc<Mutex<std::collections::HashMap<String, Vec<u8>>>> =
            std::sync::Arc::new(Mutex::new(std::collections::HashMap::new()));
        let mute = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writing = std::sync::Arc::new(Mutex::new(()));
        let wr = writing.clone();
        let (rq, fr, cl, fl, mu) = (
            requests.clone(),
            frames.clone(),
            closed.clone(),
            files.clone(),
            mute.clone(),
        );
        let mut r = io::BufReader::new(s.try_clone().unwrap());
        let mut w = s.try_clone().unwrap();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut served = 0u64;
            while let Ok((t, p)) = wire::read_frame(&mut r) {
                fr.lock().unwrap().push(t);
                let reply = match t {
                    wire::T_REQUEST | wire::T_SUB_HASHES => {
                        let Some(req) = wire::parse_request(&p) else {
                            break;
                        };
                        rq.lock().unwrap().push(req.clone());
                        if mu.load(Ordering::SeqCst) {
                            continue;
                        }
                        let data = fl.lock().unwrap().get(&req.path).and_then(|d| {
                            let end = req.offset.checked_add(req.len as u64)?;
                            d.get(req.offset as usize..end as usize).map(|b| b.to_vec())
                        });
                        served += req.len as u64;
                        if let Some(rate) = rate {
                            let due = Duration::from_secs_f64(served as f64 / rate as f64);
                            if let Some(wait) = due.checked_sub(start.elapsed()) {
                                std::thread::sleep(wait);
                            }
                        }
                        match data {
                            Some(d) if t == wire::T_SUB_HASHES => {
                                let subs: Vec<u8> = d
                                    .chunks(wire::SUB_BLOCK)
                                    .flat_map(|c| {
                                        let mut v = weak_sum(c).to_be_bytes().to_vec();
                                        v.extend_from_slice(&xxh64(c).to_be_bytes());
                                        v
                                    })
                                    .collect();
                                wire::response(req.id, 0, &subs)
                            }
                            Some(d) if md5(&d) == req.hash || req.hash == [0; 16] => {
                                wire::response(req.id, 0, &d)
                            }
                            _ => wire::response(req.id, 1, b""),
                        }
                    }
                    wire::T_INDEX if p.len() >= 8 => {
                        let seq = u64::from_be_bytes(p[..8].try_into().unwrap());
                        if seq == 0 {
                            continue;
                        }
                        wire::seq_frame(wire::T_IN_SYNC, seq)
                    }
                    wire::T_INDEX_DONE if p.len() == 8 => {
                        let seq = u64::from_be_bytes(p[..8].try_into().unwrap());
                        wire::seq_frame(wire::T_IN_SYNC, seq)
                    }
                    _ => continue,
                };
                let _one = wr.lock().unwrap_or_else(|p| p.into_inner());
                if w.write_all(&reply).is_err() {
                    break;
                }
            }
            cl.store(true, Ordering::SeqCst);
        });
        FakePeer {
            device,
            daemon,
            stream: s,
            requests,
            frames,
            closed,
            mute,
            files,
            writing,
            handle: Some(handle),
        }
    }

    /// Makes `data` available under `path` for the daemon's requests.
    pub fn offer(&self, path: &str, data: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), data);
    }

    /// From now on, block requests are recorded but never answered.
    pub fn mute(&self) {
        self.mute.store(true, Ordering::SeqCst);
    }

    /// Sends raw bytes; false if the connection is gone.
    pub fn send(&self, bytes: &[u8]) -> bool {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        (&self.stream).write_all(bytes).is_ok()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until the daemon closes the connection.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.is_closed())
    }

    /// Paths the daemon asked blocks of.
    pub fn requested_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.path.clone())
            .collect();
        v.dedup();
        v
    }

    /// Bytes of block data the daemon asked for.
    pub fn requested_bytes(&self) -> u64 {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.len as u64)
            .sum()
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Peak and current resident memory of a process, in KiB (VmHWM, VmRSS).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A file written on each side arrives on the other within `within`; how long both took.
pub fn syncs_within(a: &Peer, b: &Peer, what: &str, within: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    let da = format!("from A, {what}\n");
    let db = format!("from B, {what}\n");
    let name = what.replace(' ', "-");
    fs::write(a.path(&format!("a-{name}")), &da).unwrap();
    fs::write(b.path(&format!("b-{name}")), &db).unwrap();
    if !wait_until(within, || {
        has_content(&b.path(&format!("a-{name}")), da.as_bytes())
    }) {
        return Err(format!(
            "{what}: B no longer receives from A\n{}",
            tail(&b.log_text(), 20)
        ));
    }
    if !wait_until(within.saturating_sub(t0.elapsed()), || {
        has_content(&a.path(&format!("b-{name}")), db.as_bytes())
    }) {
        return Err(format!(
            "{what}: A no longer receives from B\n{}",
            tail(&a.log_text(), 20)
        ));
    }
    Ok(t0.elapsed())
}

/// A file written on one side arrives on the other, both ways (panics if not, [`SOON`]).
pub fn syncs(a: &Peer, b: &Peer, what: &str) {
    if let Err(e) = syncs_within(a, b, what, SOON) {
        panic!("{e}");
    }
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Polls every millisecond ([`wait_until`] polls every 50 ms: too slow to beat a 0.25 s save).
pub fn spin_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The mode bits of `p`, 0 if it is not there.
pub fn mode_or_zero(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).map_or(0, |m| m.mode() & 0o7777)
}

/// Permission bits of a path (not followed if a symlink).
pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Two daemons, A and B, each dialing the other.
pub fn pair(t: &TestDir) -> (Peer, Peer) {
    let (pa, pb) = two_ports();
    let a = Peer::start(t, "A", pa, &[pb]);
    let b = Peer::start(t, "B", pb, &[pa]);
    (a, b)
}

/// A daemon B listening on a port of its own and listing the other port: the peer a fake peer
/// claims to be. Returns it and that listed port.
pub fn victim(t: &TestDir) -> (Peer, u16) {
    let (port, peer) = two_ports();
    (Peer::start(t, "B", port, &[peer]), peer)
}

/// Waits for `rel` on `p` to hold `want`, failing with the peer's log otherwise.
pub fn wait_content(p: &Peer, rel: &str, want: &[u8], timeout: Duration) {
    let ok = wait_until(timeout, || has_content(&p.path(rel), want));
    assert!(
        ok,
        "{}/{rel} does not hold the expected {} bytes (it has {:?} bytes)\n{}",
        p.name,
        want.len(),
        read(&p.path(rel)).map(|d| d.len()),
        tail(&p.log_text(), 15)
    );
}

/// Sets the mtime of a file or folder.
pub fn set_mtime(path: &Path, t: std::time::SystemTime) {
    File::open(path).unwrap().set_modified(t).unwrap();
}

/// Runs `chattr FLAG PATH`; whether it worked.
pub fn chattr(flag: &str, p: &Path) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(p)
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes B's index files immutable (no save can land); false, with a line, where the
/// filesystem (tmpfs, say) or the user cannot: the test is then skipped.
pub fn hold_saves(ix: &Path, jl: &Path) -> bool {
    if chattr("+i", ix) && chattr("+i", jl) {
        return true;
    }
    chattr("-i", ix);
    eprintln!("skipped: chattr +i is not supported here (needs root and ext4)");
    false
}

/// How many times `needle` occurs in a peer's log.
pub fn count(p: &Peer, needle: &str) -> usize {
    p.log_text().matches(needle).count()
}

/// Every `*.sync-conflict-*` name in a share (recursively).
pub fn conflicts(root: &Path) -> Vec<String> {
    names(root)
        .into_iter()
        .filter(|n| n.contains(".sync-conflict-"))
        .collect()
}

/// Every path of a share (files and folders, conflict copies included, temp files excluded).
pub fn names(root: &Path) -> Vec<String> {
    listing(root)
        .unwrap_or_default()
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// A's index written whole by an edit loop of a big sparse file `zbig` (the journal outgrows
/// 1 MiB), so that the next pass is sent by path.
pub fn write_index_whole(a: &Peer) {
    use std::os::unix::fs::FileExt;
    let wholes = |a: &Peer| a.log_text().matches("index written whole").count();
    let before = wholes(a);
    let big = fs::File::create(a.path("zbig")).unwrap();
    big.set_len(512 << 20).unwrap();
    drop(big);
    for i in 0..12u64 {
        if wholes(a) > before {
            break;
        }
        let f = fs::File::options()
            .write(true)
            .open(a.path("zbig"))
            .unwrap();
        f.write_all_at(&[i as u8 + 1], i * (40 << 20) + 7).unwrap();
        drop(f);
        let n = i as usize + 1;
        assert!(wait_until(SOON, || a
            .log_text()
            .matches("changed locally: zbig")
            .count()
            >= n));
        std::thread::sleep(Duration::from_millis(600));
    }
    assert!(
        wait_until(SOON, || wholes(a) > before),
        "A never wrote its index whole"
    );
}

/// Runs the binary with `args` in `cwd` (so a wrongly started daemon cannot litter the repo),
/// killed after 20 s; returns (exit code, stdout, stderr).
pub fn run_in(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("left {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `left status --dir DIR`: (exit code, stdout).
pub fn status(dir: &Path) -> (Option<i32>, String) {
    let d = dir.display().to_string();
    let (code, out, _) = run_in(dir.parent().unwrap(), &["status", "--dir", &d]);
    (code, out)
}

/// A and B in sync on one file, B's index saves held off ([`hold_saves`]): whatever B
/// installs from now on is in its install log only, as a kill or a power cut right after the
/// installs leaves it.
pub struct SavesHeld {
    pub a: Peer,
    pub b: Peer,
    pub pa: u16,
    pub pb: u16,
    /// B's index files, immutable while saves are held.
    pub ix: PathBuf,
    pub jl: PathBuf,
}

impl SavesHeld {
    /// Starts A and B and holds B's saves once they are in sync; `None` (the test is skipped)
    /// where saves cannot be held off.
    pub fn start(t: &TestDir) -> Option<SavesHeld> {
        let (pa, pb) = two_ports();
        let a = Peer::start(t, "A", pa, &[pb]);
        write_file(&a.path("seed"), "seed");
        let b = Peer::start(t, "B", pb, &[pa]);
        wait_identical(&a.dir, &b.dir, SOON);
        assert!(b.wait_log(SOON, "index written"));
        SavesHeld::hold(a, b, pa, pb)
    }

    /// Holds the saves of B, running beside A (ports `pa`, `pb`); `None` (the test is skipped)
    /// where saves cannot be held off.
    pub fn hold(a: Peer, b: Peer, pa: u16, pb: u16) -> Option<SavesHeld> {
        let (ix, jl) = (b.path(".left/index"), b.path(".left/index.log"));
        if !jl.exists() {
            fs::write(&jl, b"").unwrap();
        }
        if !hold_saves(&ix, &jl) {
            return None;
        }
        Some(SavesHeld {
            a,
            b,
            pa,
            pb,
            ix,
            jl,
        })
    }

    /// Kills B and lets its saves go again (for its next start).
    pub fn kill_b(&mut self) {
        self.b.kill();
        assert!(chattr("-i", &self.ix) && chattr("-i", &self.jl));
    }

    /// Starts B again after [`SavesHeld::kill_b`].
    pub fn restart_b(&mut self, t: &TestDir) {
        self.b = Peer::start(t, "B", self.pb, &[self.pa]);
    }
}

/// Two peers after [`received_before_a_kill`]: A running, B killed, and which of A's files B
/// holds.
pub struct KilledAfterReceiving {
    pub a: Peer,
    pub b: Peer,
    pub pa: u16,
    pub pb: u16,
    /// Where A's files were put together before being moved into its share.
    pub staging: PathBuf,
    /// Which of A's files `fNNN` are in B's share.
    pub have: Vec<usize>,
}

/// [`SavesHeld`]; then A gets `n` files `f000`.. (`content(i)`), and B is killed once it has
/// received `at_least` of them: they are installed in B's share and recorded in its install
/// log, not in its index. `None` (the test is skipped) where saves cannot be held off.
pub fn received_before_a_kill(
    t: &TestDir,
    n: usize,
    at_least: usize,
    content: impl Fn(usize) -> String,
) -> Option<KilledAfterReceiving> {
    let mut h = SavesHeld::start(t)?;
    let staging = t.join("staging");
    for i in 0..n {
        put_file(
            &staging,
            &h.a.path(&format!("f{i:03}")),
            content(i).as_bytes(),
        );
    }
    let got = spin_until(SOON, || count(&h.b, "received f") >= at_least);
    h.kill_b();
    assert!(got, "B received nothing");
    let have = (0..n)
        .filter(|i| h.b.path(&format!("f{i:03}")).is_file())
        .collect();
    let SavesHeld { a, b, pa, pb, .. } = h;
    Some(KilledAfterReceiving {
        a,
        b,
        pa,
        pb,
        staging,
        have,
    })
}

/// Every temp file (`.NAME.left-tmp`) under a share, `.left/` excluded.
pub fn temps(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && name == ".left" {
                continue;
            }
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if ent.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if is_temp(&name) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
