//! The command line of the real binary: usage errors, --help, --version, and --once against a
//! peer that never answers.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let t = TestDir::new("cli-run");
    // Run inside a temp folder so a mistakenly accepted command cannot litter the repo with a
    // `share/` folder; a 10 s timeout makes a wrongly started daemon fail instead of hanging.
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(&t.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("left {args:?} did not exit (it should not start a daemon)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !t.join("share").exists(),
        "left {args:?} created the default share folder although it should not run"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_usage_error(args: &[&str], mention: &str) {
    let (code, out, err) = run(args);
    assert_eq!(code, Some(2), "left {args:?}: exit code; stderr: {err}");
    assert!(
        out.is_empty(),
        "left {args:?}: stdout should be empty: {out:?}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "left {args:?}: expected exactly one line on stderr, got {err:?}"
    );
    assert!(
        err.ends_with('\n'),
        "left {args:?}: stderr line unterminated"
    );
    assert!(
        err.to_lowercase().contains(&mention.to_lowercase()),
        "left {args:?}: stderr {err:?} should mention {mention:?}"
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    assert_usage_error(&[], "no peer");
    assert_usage_error(&["--dir", "x"], "no peer");
    assert_usage_error(&["--bogus", "127.0.0.1"], "--bogus");
    assert_usage_error(&["-x", "127.0.0.1"], "-x");
    assert_usage_error(&["--port", "70000", "127.0.0.1"], "70000");
    assert_usage_error(&["--port", "http", "127.0.0.1"], "http");
    assert_usage_error(&["--port"], "--port");
    assert_usage_error(&["--timeout", "soon", "--once", "127.0.0.1"], "--timeout");
    assert_usage_error(&["10.0.0.256"], "10.0.0.256");
    assert_usage_error(&["127.0.0.1:99999"], "99999");
    assert_usage_error(&["1.2.3"], "1.2.3");
    assert_usage_error(&["[::1"], "[::1");
    assert_usage_error(&["bad_host!"], "bad_host!");
    assert_usage_error(&["127.0.0.1", "a..b"], "a..b");
}

#[test]
fn help_and_version_exit_0() {
    for h in ["--help", "-h"] {
        let (code, out, err) = run(&[h]);
        assert_eq!(code, Some(0), "{h}: {err}");
        assert!(out.contains("usage: left"), "{h}: {out}");
        for opt in ["--dir", "--port", "--once", "--timeout"] {
            assert!(out.contains(opt), "{h} does not document {opt}: {out}");
        }
        assert!(err.is_empty(), "{h}: stderr {err:?}");
    }
    for v in ["--version", "-V"] {
        let (code, out, err) = run(&[v]);
        assert_eq!(code, Some(0), "{v}: {err}");
        assert_eq!(out.trim(), format!("left {}", env!("CARGO_PKG_VERSION")));
        assert!(err.is_empty(), "{v}: stderr {err:?}");
    }
    // Help wins over a usage error later on the line, as in most tools.
    let (code, out, _) = run(&["--help", "--bogus"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("usage: left"));
}

#[test]
fn once_with_unreachable_peer_exits_nonzero_after_timeout() {
    let t = TestDir::new("unreachable");
    let (me, nobody) = two_ports(); // nothing listens on `nobody`
    let started = Instant::now();
    let (st, log) = run_once(&t, "A", me, &[nobody], 2);
    let took = started.elapsed();
    assert_eq!(st.code(), Some(1), "exit status {st:?}; log:\n{log}");
    assert!(
        took >= Duration::from_secs(2),
        "gave up after {took:?}, before --timeout 2"
    );
    // Not a speed test: only that --timeout 2 was honoured rather than the 30 s default.
    assert!(
        took < Duration::from_secs(25),
        "took {took:?} with --timeout 2"
    );
    assert!(
        log.contains(&format!("127.0.0.1:{nobody}")),
        "the log should name the unreachable peer:\n{log}"
    );
    assert!(
        !log.contains("in sync with every peer"),
        "claimed to be in sync with nobody:\n{log}"
    );
    // The folder was still created, with its state directory.
    assert!(t.join("A/.left").is_dir());
}

#[test]
fn dir_is_created_if_missing() {
    let t = TestDir::new("mkdir");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "deep/er/A", pa, &[pb]);
    assert!(
        wait_until(SOON, || a.path(".left").is_dir()),
        "--dir deep/er/A was not created"
    );
}

#[test]
fn a_state_folder_that_is_a_symlink_is_refused() {
    let t = TestDir::new("state-link");
    let (pa, pb) = two_ports();
    let elsewhere = t.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(t.join("A")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, t.join("A/.left")).unwrap();
    let (st, log) = run_once(&t, "A", pa, &[pb], 2);
    assert_eq!(st.code(), Some(1), "exit status {st:?}; log:\n{log}");
    assert!(log.contains(".left: is not a folder"), "{log}");
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "state written through the symlink"
    );
}
