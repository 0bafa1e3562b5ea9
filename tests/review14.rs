//! Fourteenth review: failing tests (helper session, branch review14). Real daemons on
//! 127.0.0.1.

mod common;

use common::*;
use std::fs;
use std::time::{Duration, SystemTime};

/// A crash (kill or power cut) after an install is logged and before its rename is durable
/// leaves the complete temp file, which carries the PEER's mtime (`transfer::finish` sets it
/// before the install). At the restart `scanner::clean_temps` removes temp files whose mtime
/// is older than 7 days, before the first scan; `record_received_gone` (30f9be1) then finds
/// the logged file gone with no temp file and records a deletion, which the peer takes: a
/// file nobody deleted is deleted everywhere. Sequence: A holds 300 small files last
/// modified 30 days ago; B pulls them and is killed right after some are received; while
/// B is down, each file of B is put back at its temp name (the state a crash between the
/// log and the rename leaves, "done" records dropped from the log); B restarts.
#[test]
fn a_crash_before_the_rename_of_an_old_file_deletes_it_on_the_peer() {
    let t = TestDir::new("r14-old-temp-after-kill");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    // B in sync with A (one file) and its index saved; then its saves are held off (chattr
    // +i), so that its install log still holds the installs at the kill, as after a crash.
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    let (ix, jl) = (b.dir.join(".left/index"), b.dir.join(".left/index.log"));
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    const N: usize = 300;
    let old = SystemTime::now() - Duration::from_secs(30 * 86_400);
    for i in 0..N {
        let p = a.path(&format!("f{i:03}"));
        write_file(&p, format!("file {i} ").repeat(100));
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    assert!(wait_until(SOON, || count(&a, "changed locally: f") >= N));
    assert!(spin_until(SOON, || count(&b, "received f") >= 30));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    let got: Vec<String> = names(&b.dir)
        .into_iter()
        .filter(|n| n.starts_with('f'))
        .collect();
    assert!(!got.is_empty());
    for n in &got {
        fs::rename(b.path(n), b.path(&format!(".{n}.left-tmp"))).unwrap();
    }
    // Nor were the installs done: the log's "done" records (a length with its top bit set)
    // go, as a crash before the renames leaves it.
    let log_path = b.dir.join(".left/installs");
    let log = fs::read(&log_path).unwrap();
    let (mut kept, mut at, mut dropped) = (Vec::new(), 0, 0);
    while at + 12 <= log.len() {
        let n = u32::from_be_bytes(log[at..at + 4].try_into().unwrap());
        let end = at + 12 + (n & !(1 << 31)) as usize;
        if n & (1 << 31) == 0 {
            kept.extend_from_slice(&log[at..end]);
        } else {
            dropped += 1;
        }
        at = end;
    }
    assert!(dropped > 0, "no done records in B's install log");
    fs::write(&log_path, kept).unwrap();
    let b = Peer::start(&t, "B", pb, &[pa]);
    std::thread::sleep(Duration::from_secs(6));
    let log = b.log_text();
    let spurious: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("(received before the last stop)"))
        .collect();
    let lost_on_a = got.iter().filter(|n| !a.path(n).exists()).count();
    assert!(
        spurious.is_empty(),
        "{} files whose rename a crash cut were recorded as deleted by B; {} of them gone \
         from A too: {:?}",
        spurious.len(),
        lost_on_a,
        &spurious[..spurious.len().min(5)]
    );
}
