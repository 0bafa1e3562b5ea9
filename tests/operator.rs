//! The operator's side (issue 7): the config file, `left status`, progress lines in the log, and
//! SIGTERM in the middle of a transfer. Real `left` processes on 127.0.0.1.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(180);

/// Polls `left status` until it exits with `want`; returns its output.
fn wait_status(dir: &Path, want: i32) -> String {
    let mut last = (None, String::new());
    let ok = wait_until(SOON, || {
        last = status(dir);
        last.0 == Some(want)
    });
    assert!(
        ok,
        "left status --dir {} never exited {want}; last: {:?}\n{}",
        dir.display(),
        last.0,
        last.1
    );
    last.1
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Config file

/// A config file with `dir`, `port` and `peer` lines runs a daemon that syncs like one started
/// with the same options on the command line; `left status --config FILE` finds its folder.
#[test]
fn config_file_syncs_like_the_command_line() {
    let t = TestDir::new("conf-sync");
    let (pa, pb) = two_ports();
    let conf = t.join("a.conf");
    fs::write(
        &conf,
        format!(
            "# left settings for A\n\ndir = {}\nport = {pa}   # the port\npeer = 127.0.0.1:{pb}\nlog = verbose\n",
            t.join("A").display()
        ),
    )
    .unwrap();
    let a = Peer::start_raw(
        &t,
        "A",
        &t.join("A"),
        pa,
        &args(&["--config", &conf.display().to_string()]),
    );
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::write(a.path("from-a.txt"), b"from A, configured by file\n").unwrap();
    fs::write(b.path("from-b.txt"), b"from B\n").unwrap();
    assert!(wait_until(SOON, || has_content(
        &b.path("from-a.txt"),
        b"from A, configured by file\n"
    )));
    assert!(wait_until(SOON, || has_content(
        &a.path("from-b.txt"),
        b"from B\n"
    )));
    wait_identical(&a.dir, &b.dir, SOON);
    // log = verbose took effect: debug lines (scans) are in the log.
    assert!(
        a.wait_log(SOON, "scan: Scan {"),
        "log = verbose from the file was not applied:\n{}",
        tail(&a.log_text(), 10)
    );
    // `left status --config FILE` takes the folder from the file.
    let c = conf.display().to_string();
    let mut last = (None, String::new(), String::new());
    let ok = wait_until(SOON, || {
        last = run_in(&t.path, &["status", "--config", &c]);
        last.0 == Some(0)
    });
    assert!(ok, "left status --config: {last:?}");
    assert!(
        last.1.contains(&format!("share {}", t.join("A").display())),
        "{}",
        last.1
    );
}

/// A bad line in the file: exit 2, one line on stderr naming FILE:LINE, no daemon, no folder.
#[test]
fn config_file_errors_name_file_and_line() {
    let t = TestDir::new("conf-bad");
    for (i, (text, line, mention)) in [
        ("dir = x\nport = 99999\n", 2, "99999"),
        ("# comment\n\nprot = 1\n", 3, "prot"),
        ("port = 1\nport = 2\n", 2, "port"),
        ("dir = a\nthis line has no equals sign\n", 2, "key = value"),
        ("once = maybe\n", 1, "maybe"),
        ("peer = 127.0.0.1:9\nallow = nonsense\n", 2, "nonsense"),
        ("dir = \"unterminated\n", 1, "quote"),
    ]
    .into_iter()
    .enumerate()
    {
        let conf = t.join(&format!("bad{i}.conf"));
        fs::write(&conf, text).unwrap();
        let c = conf.display().to_string();
        // With peers on the command line too: the bad file still stops it.
        for extra in [&[][..], &["127.0.0.1:9"][..]] {
            let mut a = vec!["--config", c.as_str()];
            a.extend_from_slice(extra);
            let (code, out, err) = run_in(&t.path, &a);
            assert_eq!(
                code,
                Some(2),
                "{text:?} {extra:?}: exit code; stderr {err:?}"
            );
            assert!(out.is_empty(), "{text:?}: stdout {out:?}");
            assert_eq!(err.lines().count(), 1, "{text:?}: stderr {err:?}");
            assert!(
                err.contains(&format!("{c}:{line}: ")),
                "{text:?}: stderr {err:?} does not name {c}:{line}"
            );
            assert!(
                err.contains(mention),
                "{text:?}: stderr {err:?} lacks {mention:?}"
            );
        }
    }
    // A bad peer in the file, with no peer on the command line.
    let conf = t.join("badpeer.conf");
    fs::write(&conf, "port = 1\npeer = 10.0.0.256\n").unwrap();
    let c = conf.display().to_string();
    let (code, _, err) = run_in(&t.path, &["--config", &c]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains(&format!("{c}:2: ")) && err.contains("10.0.0.256"),
        "{err:?}"
    );
    let missing = t.join("missing.conf").display().to_string();
    let (code, _, err) = run_in(&t.path, &["--config", &missing, "127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains(&missing), "{err:?}");
    // Nothing was started anywhere: no share folder next to the configs.
    assert!(!t.join("share").exists() && !t.join("x").exists() && !t.join("a").exists());
}

/// A bad value in the file is an error even where the command line gives that option too: a
/// `peer` line that is not an address, next to peers on the command line. (The file is what
/// will be used at the next start without those arguments, e.g. from the init script.)
#[test]
fn config_file_bad_peer_is_an_error_even_with_peers_on_the_command_line() {
    let t = TestDir::new("conf-bad-peer");
    let conf = t.join("a.conf");
    fs::write(&conf, "# settings\npeer = 10.0.0.256\n").unwrap();
    let c = conf.display().to_string();
    let dir = t.join("A").display().to_string();
    let port = free_port().to_string();
    let mut child = Command::new(BIN)
        .args([
            "--config",
            &c,
            "--dir",
            &dir,
            "--port",
            &port,
            "127.0.0.1:9",
        ])
        .current_dir(&t.path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        exited,
        "started a daemon although {c} line 2 names a bad peer; its log:\n{}",
        tail(&err, 5)
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{c}:2: ")), "{err:?}");
}

/// The command line wins over the file: --dir, --port, -v and the peers given on the command
/// line replace the file's; what the command line does not give (the key) comes from the file.
#[test]
fn command_line_wins_over_the_config_file() {
    let t = TestDir::new("conf-wins");
    let (pa, pb, file_port) = (free_port(), free_port(), free_port());
    fs::write(t.join("key"), "a key from the config file\n").unwrap();
    let key = t.join("key").display().to_string();
    let conf = t.join("a.conf");
    fs::write(
        &conf,
        format!(
            "dir = {}\nport = {file_port}\npeer = 127.0.0.1:1\npeer = 127.0.0.1:2\nlog = quiet\nkey-file = {key}\n",
            t.join("wrong").display()
        ),
    )
    .unwrap();
    let a = Peer::start_raw(
        &t,
        "A",
        &t.join("A"),
        pa,
        &args(&[
            "--config",
            &conf.display().to_string(),
            "--dir",
            &t.join("A").display().to_string(),
            "--port",
            &pa.to_string(),
            "-v",
            &format!("127.0.0.1:{pb}"),
        ]),
    );
    // B holds the key given in A's file: they can only sync if A took its key from the file.
    let b = Peer::start_with(&t, "B", pb, &[pa], &["--key-file", &key]);
    fs::write(a.path("a.txt"), b"a").unwrap();
    fs::write(b.path("b.txt"), b"b").unwrap();
    assert!(
        wait_until(SOON, || has_content(&b.path("a.txt"), b"a")),
        "A -> B"
    );
    assert!(
        wait_until(SOON, || has_content(&a.path("b.txt"), b"b")),
        "B -> A"
    );
    let log = a.log_text();
    assert!(
        log.contains(&format!("serving {} on port {pa} ", t.join("A").display())),
        "{log}"
    );
    assert!(!t.join("wrong").exists(), "the file's dir was used");
    assert!(
        TcpListenerProbe::free(file_port),
        "something listens on the file's port {file_port}"
    );
    // -v beat `log = quiet`: info and debug lines are there.
    assert!(log.contains("connected to"), "{log}");
    // The file's peers were replaced, not added to.
    assert!(
        !log.contains("127.0.0.1:1 ") && !log.contains("127.0.0.1:2 "),
        "A dialed the file's peers although the command line named others:\n{log}"
    );
}

struct TcpListenerProbe;

impl TcpListenerProbe {
    fn free(port: u16) -> bool {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2),
        )
        .is_err()
    }
}

// ---------------------------------------------------------------------------------------------
// Status and progress

/// `left status` against a running pair: 2 before any daemon ran, 1 with a 256 MiB file being
/// received (its progress shown), 0 once in sync with the peer listed as connected, 1 when the
/// peer is gone, 2 after the daemon stopped (SIGTERM) or died (kill -9). The log shows progress
/// lines during the transfer, which the sender is slowed down for (stopped and continued with
/// SIGSTOP/SIGCONT) so that it takes several seconds on any machine.
#[test]
fn status_and_progress_during_a_long_transfer() {
    let t = TestDir::new("status");
    fs::create_dir_all(t.join("B")).unwrap();
    let (code, out) = status(&t.join("B"));
    assert_eq!(code, Some(2), "status with no daemon ever: {out}");
    assert!(out.contains("no left daemon"), "{out}");

    let size = 256 * MIB + 5;
    write_random(&t.join("A/big.bin"), size, 7);
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    assert!(
        a.wait_log(LONG, "changed locally: big.bin"),
        "A never scanned big.bin"
    );
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let tmp = b.path(".big.bin.left-tmp");
    assert!(
        wait_until(LONG, || tmp.exists() || b.path("big.bin").exists()),
        "the transfer never started"
    );
    let t0 = Instant::now();
    let throttle = Throttle::new(
        a.pid().unwrap(),
        Duration::from_millis(20),
        Duration::from_millis(250),
    );
    let mut seen_pending = None;
    let mut codes = Vec::new();
    while !b.path("big.bin").exists() && t0.elapsed() < LONG {
        let (code, out) = status(&b.dir);
        codes.push(code);
        if code == Some(1)
            && let Some(l) = out
                .lines()
                .find(|l| l.trim_start().starts_with("receiving big.bin: "))
        {
            let pct: u64 = l
                .trim_start()
                .strip_prefix("receiving big.bin: ")
                .and_then(|r| r.split('%').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unreadable progress line {l:?}"));
            assert!(pct < 100, "{l}");
            assert!(
                l.contains(&format!("of {size} bytes")),
                "progress line without the size: {l}"
            );
            assert!(out.contains("state: pending"), "{out}");
            seen_pending = Some(out);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(throttle);
    let took = t0.elapsed();
    assert!(
        wait_until(LONG, || b.path("big.bin").exists()),
        "big.bin never arrived"
    );
    assert!(
        seen_pending.is_some(),
        "over {took:?} of transfer, `left status` never exited 1 with a `receiving big.bin: N%` \
         line; exit codes seen: {codes:?}"
    );
    eprintln!(
        "transfer took {took:?}; status while pending:\n{}",
        seen_pending.unwrap()
    );
    assert_eq!(md5sum(&b.path("big.bin")), md5sum(&a.path("big.bin")));

    // Progress lines in the log, one every 5 s: at least one for a transfer over 6 s.
    let log = b.log_text();
    let progress: Vec<&str> = lines_starting(&log, "receiving big.bin: ");
    let r = received(&log);
    let r = r
        .iter()
        .find(|r| r.path == "big.bin")
        .expect("no received line");
    let secs: f64 = log
        .lines()
        .find(|l| l.contains("received big.bin ("))
        .and_then(|l| l.split(", ").find(|f| f.ends_with(" s")))
        .and_then(|f| f.trim_end_matches(" s").parse().ok())
        .expect("no duration in the received line");
    eprintln!(
        "received {r:?} in {secs} s; {} progress lines",
        progress.len()
    );
    if secs > 6.0 {
        assert!(
            !progress.is_empty(),
            "a {secs} s transfer logged no progress line:\n{}",
            tail(&log, 20)
        );
        for l in &progress {
            assert!(l.contains(&format!("% of {size} bytes")), "{l}");
        }
    } else {
        eprintln!("transfer took only {secs} s: progress lines not required");
    }

    // In sync: exit 0, the peer listed as connected.
    let out = wait_status(&b.dir, 0);
    assert!(out.contains("state: in sync"), "{out}");
    let peer_line = format!("device {}: connected since", short_id(a.device()));
    assert!(
        out.lines()
            .any(|l| l.starts_with("peer 127.0.0.1:") && l.contains(&peer_line)),
        "status does not list A as connected:\n{out}"
    );
    assert!(!out.contains("receiving"), "{out}");

    // The peer gone: pending again, the peer shown as not connected.
    a.kill();
    let out = wait_status(&b.dir, 1);
    assert!(
        out.contains(&format!("peer 127.0.0.1:{pa}: not connected")),
        "{out}"
    );

    // The daemon stopped: no status.
    let st = b.terminate(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
    let (code, out) = status(&b.dir);
    assert_eq!(code, Some(2), "status after SIGTERM: {out}");
    // ...or killed: the status file it left is recognised as stale.
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    assert!(wait_until(SOON, || b.path(".left/status").exists()));
    b.kill();
    let (code, out) = status(&b.dir);
    assert_eq!(code, Some(2), "status after kill -9: {out}");
    assert!(out.contains("no left daemon"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// SIGTERM

/// SIGTERM to the receiver in the middle of a 256 MiB transfer: it exits 0 at once, keeping its
/// temp file; restarted, it completes the file and only the missing part crosses the wire again.
#[test]
fn sigterm_during_a_transfer_then_restart() {
    let t = TestDir::new("sigterm-mid");
    let size = 256 * MIB + 999;
    write_random(&t.join("A/big.bin"), size, 31);
    let want = md5sum(&t.join("A/big.bin"));
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    assert!(a.wait_log(LONG, "changed locally: big.bin"));
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let tmp = b.path(".big.bin.left-tmp");
    let ok = wait_until(LONG, || {
        fs::metadata(&tmp).is_ok_and(|m| m.len() >= size / 4) || b.path("big.bin").exists()
    });
    assert!(ok, "the transfer never got going");
    // Slow the sender so that the signal surely lands mid-transfer.
    let throttle = Throttle::new(
        a.pid().unwrap(),
        Duration::from_millis(20),
        Duration::from_millis(200),
    );
    assert!(!b.path("big.bin").exists(), "finished before the signal");
    let t0 = Instant::now();
    let st = b.terminate(Duration::from_secs(30));
    let took = t0.elapsed();
    drop(throttle);
    assert!(
        st.is_some_and(|s| s.success()),
        "SIGTERM: exit status {st:?} after {took:?}\n{}",
        tail(&b.log_text(), 10)
    );
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop on SIGTERM (should be a second or two)"
    );
    assert!(
        b.log_text().contains("stopping on signal"),
        "{}",
        b.log_text()
    );
    assert!(!b.path("big.bin").exists(), "installed although cut short");
    let arrived = fs::metadata(&tmp)
        .expect("temp file kept after SIGTERM")
        .len();
    assert!(arrived >= size / 4 && arrived < size, "{arrived}");
    assert!(
        !b.path(".left/status").exists(),
        "status file left after a clean stop"
    );

    let (st, log) = run_once(&t, "B", pb, &[pa], 60);
    assert!(
        st.success(),
        "--once after SIGTERM: {st:?}\n{}",
        tail(&log, 20)
    );
    assert_eq!(md5sum(&t.join("B/big.bin")), want);
    assert!(!tmp.exists(), "temp file left behind");
    let (recv, _, _) = once_totals(&log).unwrap_or_else(|| panic!("no totals:\n{log}"));
    let missing = size - arrived;
    eprintln!("{arrived} of {size} had arrived; {recv} received after the restart");
    assert!(
        recv <= missing + MIB,
        "after the restart {recv} bytes crossed the wire; only {missing} were missing"
    );
    assert!(
        recv >= missing,
        "received {recv}, but {missing} were missing"
    );
    drop(a);
}
