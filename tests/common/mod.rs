//! Helpers for the integration tests: real `left` processes on 127.0.0.1, each with its own port
//! and folder under a per-test temp directory. Standard library only.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::TcpListener;
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
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        // `left` listens on [::] (dual stack): make sure that is free too.
        if TcpListener::bind(("::", port)).is_err() && TcpListener::bind(("0.0.0.0", port)).is_err()
        {
            continue;
        }
        let mut g = USED.lock().unwrap_or_else(|p| p.into_inner());
        if g.get_or_insert_with(HashSet::new).insert(port) {
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
    let f = File::create(log).unwrap();
    Command::new(BIN)
        .args(args)
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
        let log = new_log(t, name);
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(peer_args(&dir, port, peers));
        let child = spawn(&args, &log);
        let mut p = Peer {
            name: name.to_string(),
            dir,
            port,
            log,
            child: Some(child),
        };
        let ready = wait_until(SOON, || {
            p.log_text().contains(&format!("on port {port} as device")) || !p.alive()
        });
        assert!(
            ready && p.alive(),
            "{name} did not start serving on port {port}:\n{}",
            p.log_text()
        );
        p
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
