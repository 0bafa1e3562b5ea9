//! Nineteenth review: commit ecf0e73 (the first scan after a crash keeps the install log's
//! entries for the files it left unsettled; a folder at a temp name is moved aside to
//! `.NAME.left-tmp.kept`). Real daemons on 127.0.0.1. A test asserts the correct behaviour: it
//! fails where it found a defect.

mod common;

use common::*;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A folder of B's user at the temp name of a file whose name is 241 to 245 bytes long
/// (`.NAME.left-tmp` fits in 255 bytes, `.NAME.left-tmp.kept` does not). A then adds that
/// file. Expected (as review18's `a_folder_at_a_temp_name_does_not_block_the_pull_for_good`
/// for a short name): B takes A's file within a minute, and the user's folder is kept.
///
/// Seen: failed 3 runs of 3; B logs `NAME: not synced yet: .../B/.NAME.left-tmp: File name too
/// long (os error 36)` every 5 s for good, the folder stays at the temp name.
///
/// Suspected cause: `free_temp_name` (src/sync/disk.rs:139-149) moves the folder to
/// `{name}.kept` / `{name}.kept-N`, 5+ bytes longer than the temp name: over 255 bytes for a
/// name of 241-245 bytes, `rename_noreplace` fails with ENAMETOOLONG, which is returned at
/// once (line 149: only AlreadyExists tries the next name); `open_temp`'s `fresh`
/// (src/sync/transfer.rs:585) fails and the pull is retried the same way forever (and
/// `install.rs`:559/634 ignore the error). A name that always fits (e.g. `own_temp`-like, from
/// a hash) would not.
#[test]
fn a_folder_at_the_temp_name_of_a_long_name_does_not_block_the_pull_for_good() {
    let t = TestDir::new("r19-long-name-temp-folder");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    let name = "n".repeat(245);
    let tmp = format!(".{name}.left-tmp");
    assert_eq!(tmp.len(), 255);
    write_file(&b.path(&format!("{tmp}/inner")), "inner");
    write_random(&t.join("staging/long"), 1 << 20, 77);
    fs::rename(t.join("staging/long"), a.path(&name)).unwrap();
    let ok = wait_until(SOON, || {
        same_file(&a.path(&name), &b.path(&name)).unwrap_or(false)
    });
    // Whatever the folder became, the user's file in it is somewhere on B.
    let kept = names(&b.dir)
        .into_iter()
        .any(|p| p.ends_with("/inner") && has_content(&b.path(&p), b"inner"));
    assert!(
        ok && kept,
        "B took A's file {}...: {ok}; the user's file kept: {kept}\nB:\n{}",
        &name[..8],
        tail(&b.log_text(), 8)
    );
}

/// Files received just before a kill (B's index saves held off, as a kill right after the
/// installs leaves it), appended to by B's user continuously from B's restart on (a program
/// writing to them every 5 ms), so that B's first scan leaves them unsettled ("changed while
/// scanning") and keeps their install log entries (ecf0e73). B's index is then saved (the
/// install log emptied on disk: `.left/installs` of length 0 seen), and B is killed again
/// while the files are still being written. The writes stop; B restarts. Every edit is still
/// made on A's received version: expected, B's content replaces A's on A, no conflict copy.
///
/// Seen: failed 4 runs of 4: 185-202 files received, 190-367 "changed while scanning", the
/// install log emptied before the second kill every time, and 182-201 conflict copies
/// (`fNNN.sync-conflict-...-<A>`: A's never-edited version) on A and B, about one per file
/// received (B's edits do reach A: the user's content wins by mtime).
///
/// Suspected cause: the kept entries live in memory only (`st.received`, `st.installed`,
/// src/scan/scanner.rs:650-653), but the next index save empties the log on disk
/// (`Model::save`, src/sync/model.rs:425 and 442/472: `clear_if(logged)` once `scanned`)
/// although the index saved does not hold those installs. After the second kill the restart
/// finds neither an index entry nor a logged install for the files (`record`,
/// src/scan/scanner.rs:1214 `take_done` finds nothing), and gives them brand-new versions,
/// concurrent with A's: conflict copies. (The log should be kept while entries are kept.)
#[test]
fn files_still_unsettled_when_b_is_killed_again_make_no_conflict_copy() {
    let t = TestDir::new("r19-unsettled-second-kill");
    const N: usize = 300;
    let Some(k) = received_before_a_kill(&t, N, 60, |i| format!("A's file {i} ").repeat(40)) else {
        return;
    };
    let KilledAfterReceiving {
        a, b, pa, pb, have, ..
    } = k;
    let have: Vec<String> = have.iter().map(|i| format!("f{i:03}")).collect();
    for d in 0..40 {
        for i in 0..400 {
            write_file(
                &b.path(&format!("0bulk-{d:02}-{i:03}")),
                format!("bulk {d} {i} ").repeat(200),
            );
        }
    }
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, rounds, have) = (stop.clone(), rounds.clone(), have.clone());
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
                rounds.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    let scanned = b.wait_log(SOON, "scan: ");
    // The install log emptied by an index save after the first scan.
    let log = b.path(".left/installs");
    let cleared = spin_until(Duration::from_secs(20), || {
        fs::metadata(&log).is_ok_and(|m| m.len() == 0)
    });
    b.kill();
    stop.store(true, Ordering::SeqCst);
    let n = writer.join().unwrap();
    assert!(scanned, "B's first scan did not end");
    let unstable = b.log_text().matches("changed while scanning").count()
        + b.log_text().matches("changed during hashing").count();
    eprintln!(
        "{} files, {unstable} unstable, log emptied: {cleared}, {n} rounds",
        have.len()
    );
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    wait_identical(&a.dir, &b.dir, SOON);
    let c = conflicts(&a.dir);
    let last = format!("B's line {}\n", n - 1);
    let not_b: Vec<&String> = have
        .iter()
        .filter(|f| !read(&a.path(f)).is_some_and(|d| d.ends_with(last.as_bytes())))
        .collect();
    assert!(
        c.is_empty() && not_b.is_empty(),
        "{} files received before the first kill, written by B's user from the restart to the \
         second kill ({unstable} found changed while scanned; install log emptied before the \
         second kill: {cleared}): {} conflict copies {:?}; not B's edit on A: {:?}\nB:\n{}",
        have.len(),
        c.len(),
        &c[..c.len().min(5)],
        &not_b[..not_b.len().min(5)],
        tail(&b.log_text(), 12)
    );
}

/// A file received just before a kill (B's index saves held off), replaced by B's user with a
/// folder of the same name while B is down (`rm f; mkdir f; echo > f/x`); B restarts.
/// The user's folder replaces what was received: expected, A gets the folder `f/` with `x`,
/// and no conflict copy anywhere. Unlike review15's
/// `a_file_received_before_a_kill_and_replaced_by_a_folder_while_down_goes` (which kills
/// without holding saves, so the index mostly has the received files), here B's index saves
/// are held off, so the received files are in the install log only.
///
/// Seen: failed 4 runs of 4: every file (20 of 20) ends with a conflict copy
/// `fNN.sync-conflict-...-<A>` of A's file on A and B; B logs `new folder f00/` then `f00: ours
/// wins a conflict: announced again`.
///
/// Suspected cause: `Walk::folder`, FolderSeen::New (src/scan/scanner.rs:537-547):
/// `take_logged` removes the path's entries from `st.received` and `st.installed` whether
/// or not one `holds` (a folder); the `take_done` just after it, meant to make the new folder
/// "a change of" the file received before the stop, then always finds nothing, so the folder
/// gets a brand-new version, concurrent with A's file. The same path is taken by a file left
/// unsettled by the first scan (entries kept by ecf0e73) that the user turns into a folder.
#[test]
fn a_file_received_before_a_kill_and_replaced_by_a_folder_makes_no_conflict() {
    let t = TestDir::new("r19-received-then-folder");
    let Some(h) = SavesHeld::start(&t) else {
        return;
    };
    let SavesHeld {
        a,
        mut b,
        pa,
        pb,
        ix,
        jl,
    } = h;
    const N: usize = 20;
    let staging = t.join("staging");
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&format!("f{i:02}")),
            format!("A's file {i} ").repeat(40).as_bytes(),
        );
    }
    let got = wait_until(SOON, || {
        (0..N).all(|i| b.path(&format!("f{i:02}")).is_file())
    });
    std::thread::sleep(Duration::from_millis(300));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(got, "B did not receive A's files");
    let log_len = fs::metadata(b.path(".left/installs")).map_or(0, |m| m.len());
    for i in 0..N {
        let f = format!("f{i:02}");
        fs::remove_file(b.path(&f)).unwrap();
        write_file(&b.path(&format!("{f}/x")), format!("B's folder {i}"));
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    let ok = wait_until(SOON, || {
        (0..N).all(|i| {
            has_content(
                &a.path(&format!("f{i:02}/x")),
                format!("B's folder {i}").as_bytes(),
            )
        })
    });
    std::thread::sleep(Duration::from_secs(3));
    let ca = conflicts(&a.dir);
    let cb = conflicts(&b.dir);
    assert!(
        ok && ca.is_empty() && cb.is_empty(),
        "install log at the kill: {log_len} bytes; A got B's folders: {ok}; conflict copies \
         on A {:?}, on B {:?}\nB:\n{}",
        &ca[..ca.len().min(5)],
        &cb[..cb.len().min(5)],
        tail(&b.log_text(), 12)
    );
}

/// Files received just before a kill (B's index saves held off), appended to by B's user
/// for 10 s from B's restart on (every 50 ms), so that several scans in a row find them
/// changing; then every other one deleted 1 s after the writes end. Expected: B's last
/// content on A for the others, the deleted ones gone from A and B, no conflict copy.
/// Passes (3 runs of 3): what held up; the kept entries carry over several unsettled scans.
#[test]
fn files_written_for_ten_seconds_after_a_restart_make_no_conflict_and_stay_deleted() {
    let t = TestDir::new("r19-unsettled-ten-seconds");
    const N: usize = 200;
    let Some(k) = received_before_a_kill(&t, N, 40, |i| format!("A's file {i} ").repeat(40)) else {
        return;
    };
    let KilledAfterReceiving {
        a, b, pa, pb, have, ..
    } = k;
    let have: Vec<String> = have.iter().map(|i| format!("f{i:03}")).collect();
    for d in 0..20 {
        for i in 0..400 {
            write_file(
                &b.path(&format!("0bulk-{d:02}-{i:03}")),
                format!("bulk {d} {i} ").repeat(200),
            );
        }
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while std::time::Instant::now() < end {
        for f in &have {
            use std::io::Write;
            let mut h = fs::OpenOptions::new().append(true).open(b.path(f)).unwrap();
            writeln!(h, "B's line {n}").unwrap();
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let deleted: Vec<String> = have.iter().step_by(2).cloned().collect();
    for f in &deleted {
        fs::remove_file(b.path(f)).unwrap();
    }
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    wait_identical(&a.dir, &b.dir, SOON);
    let back: Vec<&String> = deleted.iter().filter(|f| a.path(f).exists()).collect();
    let c = conflicts(&a.dir);
    let last = format!("B's line {}\n", n - 1);
    let not_b: Vec<&String> = have
        .iter()
        .filter(|f| !deleted.contains(f))
        .filter(|f| !read(&a.path(f)).is_some_and(|d| d.ends_with(last.as_bytes())))
        .collect();
    let unstable = b.log_text().matches("changed while scanning").count()
        + b.log_text().matches("changed during hashing").count();
    assert!(
        c.is_empty() && not_b.is_empty() && back.is_empty(),
        "{} files received before the kill, written for 10 s after the restart ({unstable} \
         found changed while scanned): {} deleted and back {:?}; {} conflict copies {:?}; not \
         B's edit on A: {:?}\nB:\n{}",
        have.len(),
        back.len(),
        &back[..back.len().min(5)],
        c.len(),
        &c[..c.len().min(5)],
        &not_b[..not_b.len().min(5)],
        tail(&b.log_text(), 12)
    );
}

/// Files received just before a kill (B's index saves held off), saved by B's user from B's
/// restart on by a program that removes them and writes them anew (`rm f; echo ... > f`:
/// every 10 ms all removed, 10 ms later all written again, for 1.5 s), while B's first scan
/// runs. Every save is made on A's received version: expected, B's last content on A, no
/// conflict copy.
///
/// Seen: failed 1 run of 3 (113 files received: 2 conflict copies, `f001` and `f002`; neither
/// in the first scan's `unsettled` list nor recorded deleted by it; the next scan logs
/// `changed locally: f001` and A's version comes back as `f001.sync-conflict-...-<A>`).
///
/// Suspected cause: a file missing from the first scan's walk, or listed by it and not found
/// when hashed
/// (`hash_each`, src/scan/scanner.rs:101: NotFound is neither changed nor unsettled) is not in
/// `Scan::unsettled`, so its install log entries are dropped at the first scan's end
/// (src/scan/scanner.rs:650-653) unless `record_received_gone` happened to find it gone at
/// that moment (it is back by then); the next scan finds it with no index entry and nothing logged and gives it a
/// brand-new version, concurrent with A's (a conflict copy).
#[test]
fn files_received_before_a_kill_and_rewritten_during_the_first_scan_make_no_conflict_copy() {
    let t = TestDir::new("r19-rewrite-during-first-scan");
    const N: usize = 300;
    let Some(k) = received_before_a_kill(&t, N, 60, |i| format!("A's file {i} ").repeat(40)) else {
        return;
    };
    let KilledAfterReceiving {
        a, b, pa, pb, have, ..
    } = k;
    let have: Vec<String> = have.iter().map(|i| format!("f{i:03}")).collect();
    for d in 0..40 {
        for i in 0..400 {
            write_file(
                &b.path(&format!("0bulk-{d:02}-{i:03}")),
                format!("bulk {d} {i} ").repeat(200),
            );
        }
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    let end = std::time::Instant::now() + Duration::from_millis(1500);
    let mut n = 0;
    let content = |f: &str, n: usize| format!("B's save {n} of {f}\n").repeat(20);
    while std::time::Instant::now() < end {
        for f in &have {
            fs::remove_file(b.path(f)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        for f in &have {
            fs::write(b.path(f), content(f, n)).unwrap();
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    wait_identical(&a.dir, &b.dir, SOON);
    let c = conflicts(&a.dir);
    let not_b: Vec<&String> = have
        .iter()
        .filter(|f| !has_content(&a.path(f), content(f, n - 1).as_bytes()))
        .collect();
    assert!(
        c.is_empty() && not_b.is_empty(),
        "{} files received before the kill, removed and written anew by B's user during B's \
         first scan: {} conflict copies {:?}; not B's last save on A: {:?}\nB:\n{}",
        have.len(),
        c.len(),
        &c[..c.len().min(5)],
        &not_b[..not_b.len().min(5)],
        tail(&b.log_text(), 12)
    );
}

/// B's user has a folder at the temp name of a synced file `g0` (`.g0.left-tmp/inner`) and a
/// file of their own at `.g0.left-tmp.kept`; A's user deletes `g0`. Expected: `g0` gone from
/// B within a minute, and both of the user's files kept on B (`inner` somewhere, the `.kept`
/// file as it was). Passes (3 runs of 3).
#[test]
fn a_deletion_with_a_folder_at_the_temp_name_and_the_kept_name_taken_keeps_both() {
    let t = TestDir::new("r19-delete-temp-folder-kept-taken");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("g0"), "A's g0");
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    write_file(&b.path(".g0.left-tmp.kept"), "mine");
    write_file(&b.path(".g0.left-tmp/inner"), "inner");
    assert!(wait_until(SOON, || a.path(".g0.left-tmp.kept").is_file()));
    fs::remove_file(a.path("g0")).unwrap();
    let gone = wait_until(SOON, || !b.path("g0").exists());
    std::thread::sleep(Duration::from_secs(2));
    let inner = names(&b.dir)
        .into_iter()
        .any(|p| p.ends_with("/inner") && has_content(&b.path(&p), b"inner"));
    let mine = has_content(&b.path(".g0.left-tmp.kept"), b"mine");
    assert!(
        gone && inner && mine,
        "g0 gone from B: {gone}; the folder's file kept: {inner}; the .kept file kept: \
         {mine}\nB names: {:?}\nB:\n{}",
        names(&b.dir),
        tail(&b.log_text(), 8)
    );
}
