//! Twentieth review: commits ecf0e73 and 6f058b3 (the first scan after a crash keeps the
//! install log's entries for the files it left unsettled, and the log is not emptied while it
//! keeps them). Real daemons on 127.0.0.1. A test asserts the correct behaviour: it fails where
//! it found a defect.

mod common;

use common::*;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Files received just before a kill (B's index saves held off), appended to by B's user
/// from B's restart on (every 5 ms, as review19's tests), so that B's first scan leaves them
/// unsettled and keeps their install log entries. Once the first scan is over, B's user
/// writes `.leftignore` with `f*` (the files being written are left out of syncing), and the
/// writes stop. Then A adds files in three rounds of 40; B takes each. Expected: once B has
/// taken a round and saved its index, the install log is emptied (its entries are in the
/// index), as it is without the kill.
///
/// Seen: failed 4 runs of 4 (200 files received, 165-174 found changed while scanned):
/// the install log was never emptied, and grew with each round: 104680, 165570, 226460 bytes
/// (runs 2 and 3 alike). Control: the same test without the `.leftignore` (run once, by a
/// switch since removed) passed, the log emptied after every round (lengths 0, 0, 0). The
/// harm lasts the whole run (the next start's first scan drops what is not unsettled), but a
/// long-running daemon appends every install from then on.
///
/// Suspected cause: an entry kept for a file the first scan left unsettled goes only when a
/// later scan hashes that file (`record`, `take_logged`/`take_done`) or finds it gone
/// (`record_received_gone`, which skips ignored paths: src/scan/scanner.rs:847; the walk skips
/// them at :427); an ignored file is neither, so `st.received`/`st.installed` never empty,
/// and `Model::save` (src/sync/model.rs:427) never clears the log again for the whole run:
/// every install from then on is appended to it for good (until `MAX_HELD`/`MAX_RECORDS`
/// make `load` drop the whole log after the next crash, src/store/intents.rs:191-198, and
/// with it the protection against spurious conflict copies).
#[test]
fn an_unsettled_file_then_ignored_does_not_keep_the_install_log_from_emptying() {
    let t = TestDir::new("r20-unsettled-ignored");
    const N: usize = 200;
    let Some(k) = received_before_a_kill(&t, N, 40, |i| format!("A's file {i} ").repeat(40)) else {
        return;
    };
    let KilledAfterReceiving {
        a,
        b,
        pa,
        pb,
        staging,
        have,
    } = k;
    let have: Vec<String> = have.iter().map(|i| format!("f{i:03}")).collect();
    for d in 0..30 {
        for i in 0..400 {
            write_file(
                &b.path(&format!("0bulk-{d:02}-{i:03}")),
                format!("bulk {d} {i} ").repeat(200),
            );
        }
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, have) = (stop.clone(), have.clone());
        let dir = b.dir.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                for f in &have {
                    use std::io::Write;
                    let mut h = fs::OpenOptions::new()
                        .append(true)
                        .open(dir.join(f))
                        .unwrap();
                    writeln!(h, "B's line {n}").unwrap();
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let scanned = b.wait_log(SOON, "scan: ");
    write_file(&b.path(".leftignore"), "f*\n");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(scanned, "B's first scan did not end");
    let unstable = count(&b, "changed while scanning") + count(&b, "changed during hashing");
    let log = b.path(".left/installs");
    let len = || fs::metadata(&log).map_or(0, |m| m.len());
    let mut lens = Vec::new();
    let mut emptied = Vec::new();
    for round in 0..3 {
        for i in 0..40 {
            put_file(
                &staging,
                &a.path(&format!("g{round}-{i:02}")),
                format!("A's new file {round} {i} ").repeat(30).as_bytes(),
            );
        }
        let all = wait_until(SOON, || {
            (0..40).all(|i| b.path(&format!("g{round}-{i:02}")).is_file())
        });
        assert!(all, "B did not take round {round}");
        // Saved within a few seconds (the daemon saves its index every few seconds).
        emptied.push(wait_until(Duration::from_secs(15), || len() == 0));
        lens.push(len());
    }
    eprintln!(
        "{} files received before the kill, {unstable} found changed while scanned; install log \
         emptied after each round: {emptied:?}, lengths {lens:?}",
        have.len()
    );
    assert!(
        emptied.iter().all(|e| *e),
        "{} files received before the kill, {unstable} found changed while scanned, then \
         ignored: the install log emptied after each round of 40 installs: {emptied:?}; its \
         length then: {lens:?}\nB:\n{}",
        have.len(),
        tail(&b.log_text(), 12)
    );
}

/// Files received just before a kill (B's index saves held off); from B's restart until its
/// first scan ends, B's user's program rewrites each with the very content it has (A's:
/// `fs::write` of the same bytes every 5 ms, as an editor saving without a change, or
/// `touch`), so that the first scan leaves them unsettled and keeps their log entries; the
/// rewrites stop when the first scan ends. Then A adds files in three rounds of 40; B takes
/// each. Expected: after a round, B's install log is emptied by its index save.
///
/// Passes (4 runs of 4: 87-200 files, 68-231 found changed while scanned, the log emptied
/// after every round, no conflict copy): what held up. The next scan came before any pull of
/// them here, and took the kept entries (the race below was not hit).
///
/// What could still go wrong (not seen):
///
/// Suspected cause: after the first scan, B pulls A's version of such a file (B's index does
/// not have it), finds the same bytes there and takes it into its index with the file's stat;
/// the next scan then finds it as the index has it and never hashes it, so its kept entries
/// (`st.received`, `st.installed`, src/scan/scanner.rs:654-656) are never taken; and if it
/// is hashed, `record` returns early on "same content" (src/scan/scanner.rs:1179-1190) without
/// removing them (the installed entry is not newer than the index's). `Model::save`
/// (src/sync/model.rs:427) then never clears the log again in this run.
#[test]
fn files_rewritten_unchanged_during_the_first_scan_do_not_keep_the_install_log_from_emptying() {
    let t = TestDir::new("r20-unsettled-unchanged");
    const N: usize = 200;
    let content = |i: usize| format!("A's file {i} ").repeat(40);
    let Some(k) = received_before_a_kill(&t, N, 40, content) else {
        return;
    };
    let KilledAfterReceiving {
        a,
        b,
        pa,
        pb,
        staging,
        have,
    } = k;
    let have: Vec<usize> = have
        .into_iter()
        .filter(|i| has_content(&b.path(&format!("f{i:03}")), content(*i).as_bytes()))
        .collect();
    for d in 0..30 {
        for i in 0..400 {
            write_file(
                &b.path(&format!("0bulk-{d:02}-{i:03}")),
                format!("bulk {d} {i} ").repeat(200),
            );
        }
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, have) = (stop.clone(), have.clone());
        let dir = b.dir.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for i in &have {
                    fs::write(dir.join(format!("f{i:03}")), content(*i)).unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let scanned = b.wait_log(SOON, "scan: ");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(scanned, "B's first scan did not end");
    wait_identical(&a.dir, &b.dir, SOON);
    let unstable = count(&b, "changed while scanning") + count(&b, "changed during hashing");
    let log = b.path(".left/installs");
    let len = || fs::metadata(&log).map_or(0, |m| m.len());
    let mut lens = Vec::new();
    let mut emptied = Vec::new();
    for round in 0..3 {
        for i in 0..40 {
            put_file(
                &staging,
                &a.path(&format!("g{round}-{i:02}")),
                format!("A's new file {round} {i} ").repeat(30).as_bytes(),
            );
        }
        let all = wait_until(SOON, || {
            (0..40).all(|i| b.path(&format!("g{round}-{i:02}")).is_file())
        });
        assert!(all, "B did not take round {round}");
        emptied.push(wait_until(Duration::from_secs(15), || len() == 0));
        lens.push(len());
    }
    let c = conflicts(&a.dir);
    eprintln!(
        "{} files received before the kill, {unstable} found changed while scanned; install log \
         emptied after each round: {emptied:?}, lengths {lens:?}; {} conflict copies",
        have.len(),
        c.len()
    );
    assert!(
        emptied.iter().all(|e| *e) && c.is_empty(),
        "{} files received before the kill, {unstable} found changed while scanned (rewritten \
         unchanged): the install log emptied after each round of 40 installs: {emptied:?}; its \
         length then: {lens:?}; {} conflict copies {:?}\nB:\n{}",
        have.len(),
        c.len(),
        &c[..c.len().min(5)],
        tail(&b.log_text(), 12)
    );
}

/// As `an_unsettled_file_then_ignored_does_not_keep_the_install_log_from_emptying` up to the
/// `.leftignore` (files received before a kill, appended to by B's user during B's first scan,
/// then `f*` ignored on B and the writes stopped); then B is restarted (a kill), and B's user
/// removes `.leftignore`. Expected: B's edits of A's received files replace A's on A (they are
/// edits of A's version, as the first run's kept entries knew), no conflict copy.
///
/// Seen: failed 4 runs of 4: 150, 146, 155 and 95 conflict copies `fNNN.sync-conflict-...-<A>`
/// (A's own 440-byte version, never edited by A) on A and B, one per file the first scan left
/// unsettled (B's `scan:` line lists 150 unsettled; B-3 logs `changed locally: f000` then
/// `f000: ours wins a conflict: announced again`). B's edits did reach A (0 files not B's).
///
/// Suspected cause: the kept entries live on only in the install log; at the second start the
/// first scan skips the ignored files (src/scan/scanner.rs:427), so they are not `unsettled`
/// and their entries are dropped at its end (src/scan/scanner.rs:654-656); the index never
/// had them. Un-ignored, each is a brand-new file of B's, concurrent with A's version.
#[test]
fn files_unsettled_then_ignored_over_a_restart_make_no_conflict_when_unignored() {
    let t = TestDir::new("r20-unsettled-ignored-restart");
    const N: usize = 200;
    let Some(k) = received_before_a_kill(&t, N, 40, |i| format!("A's file {i} ").repeat(40)) else {
        return;
    };
    let KilledAfterReceiving {
        a, b, pa, pb, have, ..
    } = k;
    let have: Vec<String> = have.iter().map(|i| format!("f{i:03}")).collect();
    for d in 0..30 {
        for i in 0..400 {
            write_file(
                &b.path(&format!("0bulk-{d:02}-{i:03}")),
                format!("bulk {d} {i} ").repeat(200),
            );
        }
    }
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, have) = (stop.clone(), have.clone());
        let dir = b.dir.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                for f in &have {
                    use std::io::Write;
                    let mut h = fs::OpenOptions::new()
                        .append(true)
                        .open(dir.join(f))
                        .unwrap();
                    writeln!(h, "B's line {n}").unwrap();
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    let scanned = b.wait_log(SOON, "scan: ");
    write_file(&b.path(".leftignore"), "f*\n");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let n = writer.join().unwrap();
    assert!(scanned, "B's first scan did not end");
    assert!(wait_until(SOON, || a.path(".leftignore").is_file()));
    std::thread::sleep(Duration::from_secs(3));
    let unstable = count(&b, "changed while scanning") + count(&b, "changed during hashing");
    b.kill();
    let b = Peer::start(&t, "B", pb, &[pa]);
    assert!(b.wait_log(SOON, "connected"));
    // Its first scan (nothing changed, ignored files skipped: no "scan:" line) is over.
    std::thread::sleep(Duration::from_secs(3));
    fs::remove_file(b.path(".leftignore")).unwrap();
    assert!(wait_until(SOON, || !a.path(".leftignore").exists()));
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    wait_identical(&a.dir, &b.dir, SOON);
    let c = conflicts(&a.dir);
    let last = format!("B's line {}\n", n - 1);
    let not_b: Vec<&String> = have
        .iter()
        .filter(|f| !read(&a.path(f)).is_some_and(|d| d.ends_with(last.as_bytes())))
        .collect();
    eprintln!(
        "{} files, {unstable} unstable, {} conflict copies, {} not B's on A",
        have.len(),
        c.len(),
        not_b.len()
    );
    assert!(
        c.is_empty() && not_b.is_empty(),
        "{} files received before the kill, written by B's user during the first scan ({unstable} \
         found changed while scanned), ignored, B restarted, un-ignored: {} conflict copies \
         {:?}; not B's edit on A: {:?}\nB:\n{}",
        have.len(),
        c.len(),
        &c[..c.len().min(5)],
        &not_b[..not_b.len().min(5)],
        tail(&b.log_text(), 12)
    );
}

/// Files received just before a kill (B's index saves held off), appended to by B's user
/// during B's first scan (left unsettled, entries kept); once the first scan is over and the
/// writes stop, B's user renames each to `hNNN`. Expected: on A, the `fNNN` are gone and the
/// `hNNN` hold B's content; no conflict copy, no `fNNN` back on B.
/// Passes (3 runs of 3, 152-199 found changed while scanned): what held up; the kept entries
/// record the old names deleted as descending from A's version (`record_received_gone`).
#[test]
fn files_unsettled_then_renamed_go_on_a_and_do_not_come_back() {
    let t = TestDir::new("r20-unsettled-renamed");
    const N: usize = 200;
    let Some(k) = received_before_a_kill(&t, N, 40, |i| format!("A's file {i} ").repeat(40)) else {
        return;
    };
    let KilledAfterReceiving {
        a, b, pa, pb, have, ..
    } = k;
    for d in 0..30 {
        for i in 0..400 {
            write_file(
                &b.path(&format!("0bulk-{d:02}-{i:03}")),
                format!("bulk {d} {i} ").repeat(200),
            );
        }
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, have) = (stop.clone(), have.clone());
        let dir = b.dir.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                for i in &have {
                    use std::io::Write;
                    let mut h = fs::OpenOptions::new()
                        .append(true)
                        .open(dir.join(format!("f{i:03}")))
                        .unwrap();
                    writeln!(h, "B's line {n}").unwrap();
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let scanned = b.wait_log(SOON, "scan: ");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(scanned, "B's first scan did not end");
    for i in &have {
        fs::rename(b.path(&format!("f{i:03}")), b.path(&format!("h{i:03}"))).unwrap();
    }
    let unstable = count(&b, "changed while scanning") + count(&b, "changed during hashing");
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let c = conflicts(&a.dir);
    let back: Vec<String> = (have.iter())
        .map(|i| format!("f{i:03}"))
        .filter(|f| a.path(f).exists() || b.path(f).exists())
        .collect();
    let not_b: Vec<String> = (have.iter())
        .map(|i| format!("h{i:03}"))
        .filter(|h| read(&a.path(h)) != read(&b.path(h)) || !a.path(h).is_file())
        .collect();
    eprintln!(
        "{} files, {unstable} unstable, {} conflict copies, {} back, {} not B's",
        have.len(),
        c.len(),
        back.len(),
        not_b.len()
    );
    assert!(
        c.is_empty() && back.is_empty() && not_b.is_empty(),
        "{} files received before the kill, written during the first scan ({unstable} found \
         changed while scanned), then renamed: {} conflict copies {:?}; old names back {:?}; \
         new names not B's on A {:?}\nB:\n{}",
        have.len(),
        c.len(),
        &c[..c.len().min(5)],
        &back[..back.len().min(5)],
        &not_b[..not_b.len().min(5)],
        tail(&b.log_text(), 12)
    );
}
