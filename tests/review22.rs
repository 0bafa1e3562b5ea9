//! Twenty-second review: commit b05011a (a folder the first scan finds as the index has it,
//! where a done install put something else, is a local change of that install; a change of the
//! ignore patterns walks every folder at once; the install log's length on disk counts from
//! the start) (helper session, branch review22). Real daemons on 127.0.0.1. A test asserts the
//! correct behaviour: it fails where it found a defect.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A and B in sync on what `setup` put in A's share, B's index saves then held off: what B
/// takes from now on is in its install log only.
fn held(t: &TestDir, setup: impl FnOnce(&Peer)) -> Option<SavesHeld> {
    let (pa, pb) = two_ports();
    let a = Peer::start(t, "A", pa, &[pb]);
    setup(&a);
    let b = Peer::start(t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    std::thread::sleep(Duration::from_millis(500));
    SavesHeld::hold(a, b, pa, pb)
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Bytes in B's install log.
fn log_len(p: &Peer) -> u64 {
    fs::metadata(p.path(".left/installs")).map_or(0, |m| m.len())
}

fn set_old_mtime(p: &Path) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Change 1: `FolderSeen::Known` with a done install newer than the index's entry.

/// A's user changes the mode of folder `d` from 0755 to 0555; B applies it (a received folder
/// gets the peer's mode with 0700 added: 0755, the mode B's folder already has; B's index
/// saves held off: the install log has it, done) and is killed. B restarts; nobody touched
/// anything. Expected: B's first scan finds `d` as its index has it, with a done install
/// newer: the very folder with that mode, recorded as received (`folder_changed`'s `holds`),
/// no new local version: after 8 s A's `d` is still 0555 (a local version of B's would carry
/// 0755 back to A, A's chmod lost), B's 0755, no "folder changed locally" line in B's log;
/// B's install log empty within 10 s.
///
/// Passes (6 runs): B logs `d/: its mode was received before the last stop`, no new version.
#[test]
fn a_received_folder_mode_that_changes_nothing_here_stays_the_peers_after_a_kill() {
    let t = TestDir::new("r22-mode-same-here");
    let Some(mut h) = held(&t, |a| {
        write_file(&a.path("d/x"), "x");
        chmod(&a.path("d"), 0o755);
    }) else {
        return;
    };
    let before = log_len(&h.b);
    chmod(&h.a.path("d"), 0o555);
    let got = wait_until(SOON, || log_len(&h.b) > before);
    std::thread::sleep(Duration::from_millis(800));
    h.kill_b();
    assert!(got, "B logged nothing of A's mode");
    assert_eq!(mode_of(&h.b.path("d")), 0o755);
    h.restart_b(&t);
    assert!(h.b.wait_log(SOON, "connected"));
    std::thread::sleep(Duration::from_secs(8));
    let (ma, mb) = (mode_of(&h.a.path("d")), mode_of(&h.b.path("d")));
    let local = count(&h.b, "folder changed locally") + count(&h.b, "folder mode changed");
    let c = conflicts(&h.a.dir);
    let emptied = wait_until(Duration::from_secs(10), || log_len(&h.b) == 0);
    assert!(
        ma == 0o555 && mb == 0o755 && local == 0 && c.is_empty() && emptied,
        "A's chmod 0555 of d, applied on B as 0755 before a kill: A's d {ma:o}, B's {mb:o}, B's \
         local folder changes {local}, conflict copies {c:?}, B's install log {} bytes\nB:\n{}",
        log_len(&h.b),
        tail(&h.b.log_text(), 12)
    );
}

/// A's user deletes folder `d` (holding `d/x`); B applies the deletion (its index saves held
/// off: only the install log has it) and is killed. While B is down B's user makes `d` again
/// with mode `mode` (0755: as B's index had it, `FolderSeen::Known`; 0750: another mode,
/// `ModeChanged`), with a new file `d/y` if `with_file`. B restarts. Expected: B's user's
/// folder, made after the deletion it had received, wins: on A within 30 s `d` with `mode`
/// (and `d/y`), `d/x` back nowhere, A and B identical, no conflict copy.
///
/// Empty, 0755 (`FolderSeen::Known`): failed 10 runs of 10. B's restart logs only `deleted
/// locally: d/x`, then `deleted d/`: A's deletion, taken again, removes the folder B's user
/// made; `d` exists nowhere. B's user's change is lost.
///
/// Suspected cause: received deletions are never written to the install log
/// (`install::apply_delete`, src/sync/install.rs:627-690, has no `installs().append`/`done`,
/// unlike `apply_dir`, :554/:623), so `done_since_folder` (src/scan/scanner.rs:1193) finds
/// nothing for `d`, the `Known` arm (:479) does not fire, the index keeps its old live
/// version, and A's tombstone is newer than it. The commit's message claims this case ("a
/// deletion ... the user put it back").
///
/// With a file in it (0755 or 0750), and empty with 0750 (`ModeChanged`, a local version
/// concurrent with A's tombstone): pass (6 runs each) with the check loosened to accept 0700
/// on both: with a file, before loosening, 0755 failed 3 of 3 and 0750 1 of 6: A made `d`
/// 0700 for `d/y` ahead of `d`'s entry, recorded it as its own new folder, and 0700 won on
/// both (README, Limits: "where that name was deleted here before, it may keep 0700 on every
/// peer"); for 0755, B logged `d/ stays: it holds files the deletion did not know of` after
/// the restart, never a change of `d` in its first scan (same cause as above).
/// Fixed: deletions are logged ahead and done like installs (`install::apply_delete`); what the
/// first scan finds at the path is then a change of the deletion.
fn a_received_deletion_undone_while_down(with_file: bool, mode: u32) {
    let t = TestDir::new(&format!("r22-undelete-{with_file}-{mode:o}"));
    let Some(mut h) = held(&t, |a| {
        write_file(&a.path("d/x"), "A's x");
        chmod(&a.path("d"), 0o755);
    }) else {
        return;
    };
    fs::remove_dir_all(h.a.path("d")).unwrap();
    let got = wait_until(SOON, || !h.b.path("d").exists());
    std::thread::sleep(Duration::from_millis(500));
    h.kill_b();
    assert!(got, "B did not take A's deletion");
    fs::create_dir(h.b.path("d")).unwrap();
    chmod(&h.b.path("d"), mode);
    if with_file {
        write_file(&h.b.path("d/y"), "B's y in d made again");
    }
    h.restart_b(&t);
    // With a file in it, A may make `d` for the file before it takes the folder's entry (0700):
    // where the name was deleted before, README says it may keep 0700 on every peer.
    let mode_ok = |m: u32| m == mode || (with_file && m == 0o700);
    let ok = wait_until(Duration::from_secs(30), || {
        h.a.path("d").is_dir()
            && mode_ok(mode_of(&h.a.path("d")))
            && mode_or_zero(&h.b.path("d")) == mode_of(&h.a.path("d"))
            && (!with_file || has_content(&h.a.path("d/y"), b"B's y in d made again"))
            && tree_diff(&h.a.dir, &h.b.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(1));
    let c = conflicts(&h.a.dir);
    let back = h.a.path("d/x").exists() || h.b.path("d/x").exists();
    assert!(
        ok && c.is_empty() && !back,
        "folder d made again ({mode:o}, a file in it: {with_file}) on B while down, after A's \
         deletion it had received: on A within 30 s: {ok} (A's d: {}, mode {:o}; {:?}); d/x \
         back: {back}; conflict copies {c:?}; B's d mode {:o}\nB:\n{}\nA:\n{}",
        h.a.path("d").is_dir(),
        mode_or_zero(&h.a.path("d")),
        tree_diff(&h.a.dir, &h.b.dir),
        mode_or_zero(&h.b.path("d")),
        tail(&h.b.log_text(), 12),
        tail(&h.a.log_text(), 5)
    );
}

#[test]
fn a_received_folder_deletion_undone_while_down_with_a_file_wins() {
    a_received_deletion_undone_while_down(true, 0o755);
}

#[test]
fn a_received_folder_deletion_undone_while_down_empty_wins() {
    a_received_deletion_undone_while_down(false, 0o755);
}

#[test]
fn a_received_folder_deletion_undone_while_down_with_another_mode_wins() {
    a_received_deletion_undone_while_down(true, 0o750);
}

#[test]
fn a_received_folder_deletion_undone_while_down_empty_with_another_mode_wins() {
    a_received_deletion_undone_while_down(false, 0o750);
}

/// A's user replaces folder `d` (five files) by a 48 MiB file `d`; B (slowed down: 20 ms run,
/// 60 ms stopped; its index saves held off) takes the deletions of `d/x*` and is killed while
/// it pulls the file (its temp file holds 4 MiB or more): the empty folder `d` is still there,
/// as B's index has it, and no done install names `d`. B restarts. Expected: nothing of this
/// is a change of B's: B ends with A's file `d`, A's `d` unchanged, no conflict copy, within
/// 60 s.
///
/// Passes (7 runs), but did not reach the state aimed at: at the kill B's `d` was no longer a
/// folder (removed before the file's data came; temp file 10 MiB, install log 0 bytes): a
/// logged-not-done entry where a folder still is was not produced this way.
#[test]
fn a_folder_turned_into_a_file_cut_mid_pull_is_not_a_local_change() {
    let t = TestDir::new("r22-folder-to-file-cut");
    let Some(mut h) = held(&t, |a| {
        for i in 0..5 {
            write_file(&a.path(&format!("d/x{i}")), format!("A's x{i}"));
        }
    }) else {
        return;
    };
    let big = random_bytes(2201, 48 << 20);
    let staging = t.join("staging");
    let throttle = Throttle::new(
        h.b.pid().unwrap(),
        Duration::from_millis(20),
        Duration::from_millis(60),
    );
    fs::remove_dir_all(h.a.path("d")).unwrap();
    put_file(&staging, &h.a.path("d"), &big);
    let tmp = h.b.path(".d.left-tmp");
    let mid = wait_until(SOON, || {
        fs::metadata(&tmp).is_ok_and(|m| m.len() >= 4 << 20) || h.b.path("d").is_file()
    });
    drop(throttle);
    let was_cut = h.b.path("d").is_dir();
    h.kill_b();
    assert!(mid, "B never pulled A's file d");
    eprintln!(
        "at the kill: B's d a folder {was_cut}, temp file {:?} bytes, log {} bytes",
        fs::metadata(&tmp).map(|m| m.len()).ok(),
        log_len(&h.b)
    );
    h.restart_b(&t);
    let ok = wait_until(SOON, || {
        has_content(&h.b.path("d"), &big) && tree_diff(&h.a.dir, &h.b.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(1));
    let c = conflicts(&h.a.dir);
    let cb = conflicts(&h.b.dir);
    assert!(
        ok && c.is_empty() && cb.is_empty() && has_content(&h.a.path("d"), &big),
        "A's folder d turned into a file, B cut mid-pull (d a folder at the kill: {was_cut}): B \
         has A's file: {ok}; A's d still A's: {}; conflict copies A {c:?} B {cb:?}\nB:\n{}",
        has_content(&h.a.path("d"), &big),
        tail(&h.b.log_text(), 12)
    );
}

/// A's user changes folder `d`'s mode from 0755 to 0750; B applies it (its index saves held
/// off) and is killed. While B is down, B's user puts 0755 back, and ignores `d/`
/// (`.leftignore`). B restarts, then (once A has the `.leftignore`) B's user removes the
/// `.leftignore`. Expected: B's user's chmod, made after B received A's, wins once no longer
/// ignored: 0755 on A and B within 30 s of the un-ignore (as
/// review21's `a_received_folder_mode_changed_back_while_down_wins` without the ignore, and
/// as done files are kept for an ignored path by `record_unsettled`).
///
/// Failed 6 runs of 6: 30 s after the un-ignore A's and B's `d` are 0750; B's first scan
/// logged nothing about `d`, the un-ignore rescan neither: B's user's chmod is lost.
///
/// Suspected cause: the first scan skips the ignored `d` (src/scan/scanner.rs:418), so the
/// new `Known` arm (:479) never sees it; `record_unsettled` keeps only files
/// (src/scan/scanner.rs:784-786), and the done mode install is dropped with the rest of the
/// log (:667-671; the log itself emptied at the next save, change 3). After the un-ignore `d`
/// is 0755 as the index has it (`Known`, no done install any more): A's newer 0750 is taken
/// again.
/// Fixed: `record_unsettled` records a folder's done install too, with no stat; once
/// un-ignored, its mode is weighed against the installed one.
#[test]
fn a_received_folder_mode_changed_back_and_ignored_while_down_wins_once_unignored() {
    let t = TestDir::new("r22-mode-back-ignored");
    let Some(mut h) = held(&t, |a| {
        write_file(&a.path("d/x"), "x");
        chmod(&a.path("d"), 0o755);
    }) else {
        return;
    };
    chmod(&h.a.path("d"), 0o750);
    let got = wait_until(SOON, || mode_of(&h.b.path("d")) == 0o750);
    std::thread::sleep(Duration::from_millis(500));
    h.kill_b();
    assert!(got, "B did not take A's mode");
    chmod(&h.b.path("d"), 0o755);
    write_file(&h.b.path(".leftignore"), "d/\n");
    h.restart_b(&t);
    assert!(wait_until(SOON, || h.a.path(".leftignore").is_file()));
    std::thread::sleep(Duration::from_secs(2));
    fs::remove_file(h.b.path(".leftignore")).unwrap();
    assert!(wait_until(SOON, || !h.a.path(".leftignore").exists()));
    let ok = wait_until(Duration::from_secs(30), || {
        mode_of(&h.a.path("d")) == 0o755 && mode_of(&h.b.path("d")) == 0o755
    });
    let (ma, mb) = (mode_of(&h.a.path("d")), mode_of(&h.b.path("d")));
    assert!(
        ok,
        "B's user's chmod back to 0755 while down (d ignored then), over A's 0750 it had \
         received: 30 s after the un-ignore A's d {ma:o}, B's {mb:o}\nB:\n{}",
        tail(&h.b.log_text(), 12)
    );
}

// ---------------------------------------------------------------------------------------------
// Change 3: the install log emptied at the first save after the first scan.

/// 200 files from A received by B just before a kill (saves held: only the install log has
/// them). While B is down its user edits 20 of them (mtime 2001) and adds 1,500 files in 30
/// folders (a longer first scan). B is then started and killed again four times: three times
/// at a random moment 50-1500 ms after its start (B slowed down: 20 ms run, 40 ms stopped),
/// the fourth time as soon as its install log is found emptied. Each time the log must hold
/// what it held at the first kill unless B's log says the index was saved after the scan.
/// B restarts for good. Expected: the 20 edits on A (a lost log would make them concurrent
/// with A's versions, and older: conflict copies, A's content at the names), no conflict
/// copy, A and B identical.
///
/// Passes (6 runs): kills at the first record and at the end of the first scan found the log
/// whole (25,200 bytes) and no index saved, or (the scan already saved) emptied with a save;
/// a kill within 6-25 ms of the log being emptied lost nothing (20 edits on A, 0 conflict
/// copies).
#[test]
fn kills_during_and_right_after_the_first_scan_lose_no_edit() {
    let t = TestDir::new("r22-kill-first-scan");
    let Some(k) = received_before_a_kill(&t, 200, 200, |i| format!("A's f{i} ").repeat(20)) else {
        return;
    };
    let (a, mut b, pa, pb) = (k.a, k.b, k.pa, k.pb);
    let at_kill = log_len(&b);
    let have = k.have;
    let edited: Vec<usize> = have.iter().copied().step_by(7).take(20).collect();
    for &i in &edited {
        let p = b.path(&format!("f{i:03}"));
        write_file(&p, format!("B's edit of f{i} while down"));
        set_old_mtime(&p);
    }
    for d in 0..30 {
        for j in 0..50 {
            write_file(
                &b.path(&format!("new{d:02}/n{j:02}")),
                format!("B's new {d} {j}"),
            );
        }
    }
    // A long first scan: a new 128 MiB file to hash.
    write_random(&b.path("zbig"), 128 << 20, 2203);
    let mut notes = Vec::new();
    let mut during = 0;
    // Killed at B's first record of its first scan, at its end, and once the log is emptied.
    for (round, at) in ["changed locally", "scan: Scan", ""]
        .into_iter()
        .enumerate()
    {
        if log_len(&b) == 0 {
            break;
        }
        b = Peer::start(&t, "B", pb, &[pa]);
        let t0 = Instant::now();
        if at.is_empty() {
            spin_until(SOON, || log_len(&b) == 0);
        } else {
            spin_until(SOON, || b.log_text().contains(at));
        }
        b.kill();
        notes.push(format!("killed after {:?}", t0.elapsed()));
        let saved = b.log_text().contains("index journal") || b.log_text().contains("written");
        let len = log_len(&b);
        if len == at_kill {
            during += 1;
        }
        notes.push(format!(
            "round {round}: log {len} bytes, index saved {saved}"
        ));
        eprintln!("B at round {round}:\n{}", tail(&b.log_text(), 8));
        // Emptied only by an index save made after the first scan.
        assert!(
            len == at_kill || saved,
            "B's install log went from {at_kill} to {len} bytes without an index save\n{}",
            tail(&b.log_text(), 10)
        );
    }
    eprintln!("log at the first kill {at_kill}; kills with the log whole {during}; {notes:?}");
    b = Peer::start(&t, "B", pb, &[pa]);
    let want = |i: usize| format!("B's edit of f{i} while down");
    let ok = wait_until(SOON, || {
        edited
            .iter()
            .all(|&i| has_content(&a.path(&format!("f{i:03}")), want(i).as_bytes()))
            && tree_diff(&a.dir, &b.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(1));
    let c = conflicts(&a.dir);
    let wrong: Vec<usize> = edited
        .iter()
        .copied()
        .filter(|&i| !has_content(&a.path(&format!("f{i:03}")), want(i).as_bytes()))
        .collect();
    assert!(
        ok && c.is_empty(),
        "after kills during and right after B's first scan: edits not on A {wrong:?}, conflict \
         copies {c:?}, {:?}\n{notes:?}\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        tail(&b.log_text(), 12)
    );
}

// ---------------------------------------------------------------------------------------------
// Change 2: a change of the ignore patterns walks every folder.

/// A and B share 1,000 folders `dNNN/` (one file each) and `sub/x`. B's user ignores `sub/`,
/// edits `sub/x`, then rewrites `.leftignore` 30 times, 40 ms apart (each a new comment line,
/// `sub/` still ignored), then removes it. From 300 ms after the removal `left status` on B is
/// polled. Expected: whenever it says in sync (exit 0), A has B's edit of `sub/x` (README:
/// "in sync: no change on disk waits for a scan"); it says in sync within 40 s (the rewrites
/// cause no endless rescans); A and B identical.
///
/// Passes (7 runs): never said in sync without the edit; in sync with it about 0.4 s after the
/// removal; B logged 22 pattern changes for the 31 rewrites.
#[test]
fn ignore_rewrites_during_scans_end_in_sync_and_status_waits_for_the_rescan() {
    let t = TestDir::new("r22-ignore-rewrites");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    for i in 0..1000 {
        write_file(&a.path(&format!("d{i:03}/f")), format!("A's {i}"));
    }
    write_file(&a.path("sub/x"), "A's x");
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    write_file(&b.path(".leftignore"), "sub/\n");
    assert!(wait_until(SOON, || a.path(".leftignore").is_file()));
    std::thread::sleep(Duration::from_secs(1));
    write_file(&b.path("sub/x"), "B's edit of x while ignored");
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..30 {
        write_file(&b.path(".leftignore"), format!("# {i}\nsub/\n"));
        std::thread::sleep(Duration::from_millis(40));
    }
    fs::remove_file(b.path(".leftignore")).unwrap();
    let removed = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let mut said_in_sync_without = Vec::new();
    let mut in_sync_at = None;
    while removed.elapsed() < Duration::from_secs(40) {
        let (code, _) = status(&b.dir);
        let has = has_content(&a.path("sub/x"), b"B's edit of x while ignored");
        if code == Some(0) {
            if !has {
                said_in_sync_without.push(removed.elapsed());
            } else if in_sync_at.is_none() {
                in_sync_at = Some(removed.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok_tree = wait_until(Duration::from_secs(10), || {
        tree_diff(&a.dir, &b.dir).is_none()
    });
    let changes = count(&b, "ignore patterns changed");
    eprintln!("in sync at {in_sync_at:?}; ignore changes logged {changes}");
    assert!(
        said_in_sync_without.is_empty() && in_sync_at.is_some() && ok_tree,
        "after 30 rewrites of .leftignore and its removal: B's status said in sync while A \
         lacked B's edit of sub/x at {said_in_sync_without:?}; in sync (with it) at \
         {in_sync_at:?}; identical {ok_tree}; B logged {changes} ignore changes\nB:\n{}",
        tail(&b.log_text(), 12)
    );
}

/// The ignore patterns changed by a peer: A's user ignores `sub/` (`.leftignore`, which B
/// takes and applies), B's user edits `sub/x` (ignored on B), then A's user removes
/// `.leftignore`; B takes the deletion, and its patterns change with it. Expected: B's edit,
/// no longer ignored, reaches A within 20 s (a change of the patterns walks every folder, as
/// when B's own user changes them).
///
/// Passes (4 runs).
#[test]
fn ignore_patterns_removed_by_a_peer_send_what_was_edited_while_ignored() {
    let t = TestDir::new("r22-unignore-by-peer");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    for i in 0..3 {
        write_file(&a.path(&format!("sub/deep/x{i}")), format!("A's x{i}"));
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    write_file(&a.path(".leftignore"), "sub/\n");
    assert!(wait_until(SOON, || b.path(".leftignore").is_file()));
    assert!(b.wait_log(SOON, "patterns in force"));
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..3 {
        write_file(
            &b.path(&format!("sub/deep/x{i}")),
            format!("B's edit of x{i} while ignored"),
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    fs::remove_file(a.path(".leftignore")).unwrap();
    assert!(wait_until(SOON, || !b.path(".leftignore").exists()));
    let at_a = || {
        (0..3).all(|i| {
            has_content(
                &a.path(&format!("sub/deep/x{i}")),
                format!("B's edit of x{i} while ignored").as_bytes(),
            )
        })
    };
    let ok = wait_until(Duration::from_secs(20), at_a);
    assert!(
        ok && tree_diff(&a.dir, &b.dir).is_none(),
        "20 s after A removed .leftignore (B took it): B's edits made while ignored on A: {ok}; \
         {:?}\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        tail(&b.log_text(), 12)
    );
}

/// The file analog: A's user deletes `f`; B applies the deletion (its index saves held off)
/// and is killed. While B is down B's user puts `f` back (a copy from a backup: the same
/// content, a new mtime). B restarts. Expected: B's user's `f`, made after the deletion it had
/// received, wins: on A and B within 30 s, no conflict copy.
///
/// Failed 5 runs of 5: B's restart logs only `f: stat ... -> ...` (same content: no new
/// version), then `deleted f`: A's tombstone, taken again, removes B's user's file; `f` is on
/// neither side. Without the kill (index saved with the tombstone) the file would be new, a
/// version that wins.
///
/// Suspected cause: as for the folder, received deletions are not in the install log
/// (src/sync/install.rs:627-690); the first scan hashes `f` (new inode), finds the index's
/// live entry's content (src/scan/scanner.rs:1282, "Same content ...: no new version"), and
/// nothing tells it a deletion was done since.
/// Fixed: deletions are logged ahead and done like installs; a file found where a deletion was
/// done is a change of it, even with the index's old content (`scanner::done_over`).
#[test]
fn a_received_file_deletion_undone_while_down_with_the_same_content_wins() {
    let t = TestDir::new("r22-file-undelete");
    let Some(mut h) = held(&t, |a| {
        write_file(&a.path("f"), "the content of f, backed up");
    }) else {
        return;
    };
    fs::remove_file(h.a.path("f")).unwrap();
    let got = wait_until(SOON, || !h.b.path("f").exists());
    std::thread::sleep(Duration::from_millis(500));
    h.kill_b();
    assert!(got, "B did not take A's deletion");
    std::thread::sleep(Duration::from_millis(1100));
    write_file(&h.b.path("f"), "the content of f, backed up");
    h.restart_b(&t);
    let want: &[u8] = b"the content of f, backed up";
    let ok = wait_until(Duration::from_secs(30), || {
        has_content(&h.a.path("f"), want) && has_content(&h.b.path("f"), want)
    });
    let c = conflicts(&h.a.dir);
    assert!(
        ok && c.is_empty(),
        "f put back on B while down, after A's deletion it had received: on A {}, on B {}; \
         conflict copies {c:?}\nB:\n{}",
        h.a.path("f").exists(),
        h.b.path("f").exists(),
        tail(&h.b.log_text(), 12)
    );
}

// ---------------------------------------------------------------------------------------------
// Three peers, random undoing while down.

/// Every folder of a share with its mode, 0700 added (as a received folder gets it; `.left/`
/// left out).
fn folder_modes(root: &Path) -> Vec<(String, u32)> {
    listing(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s.is_none())
        .map(|(p, _)| {
            let m = mode_of(&root.join(&p)) | 0o700;
            (p, m)
        })
        .collect()
}

/// A, B and C in a full mesh, B's index saves held off. A's user chmods `p0`, `p1` (0750) and
/// `p3` (0555: 0755 on B, as it was), turns folder `p2` into a file and file `q0` into a
/// folder, adds `p4/new`; C's user chmods `p7` (0750). Once B has it all, B is killed; while
/// it is down B's user (seeded choice per path) puts `p0`'s mode back, chmods `p1` to 0700,
/// turns `p2` back into a folder with a file, `q0` back into a file, chmods `p5` to 0711,
/// edits `p6/x` (mtime 2001), or leaves each as it is. B restarts. Expected: A, B and C
/// identical (names, contents, folder modes), each of B's user's changes there, A's and C's
/// where B's user did not undo them, no conflict copy; B's install log empty once settled.
///
/// Passes: seeds 1-8, five runs each.
fn three_peers_undo_while_down(seed: u64) {
    let t = TestDir::new(&format!("r22-three-{seed}"));
    let mut rng = Rng::new(seed);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start = |n: usize| {
        let others: Vec<u16> = (0..3).filter(|&j| j != n).map(|j| ports[j]).collect();
        Peer::start(&t, ["A", "B", "C"][n], ports[n], &others)
    };
    let a = start(0);
    for i in 0..8 {
        write_file(&a.path(&format!("p{i}/x")), format!("A's p{i}/x"));
        chmod(&a.path(&format!("p{i}")), 0o755);
    }
    for i in 0..2 {
        write_file(&a.path(&format!("q{i}")), format!("A's q{i}"));
    }
    let mut b = start(1);
    let c = start(2);
    wait_identical(&a.dir, &b.dir, SOON);
    wait_identical(&a.dir, &c.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    std::thread::sleep(Duration::from_millis(500));
    let (ix, jl) = (b.path(".left/index"), b.path(".left/index.log"));
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    chmod(&a.path("p0"), 0o750);
    chmod(&a.path("p1"), 0o750);
    chmod(&a.path("p3"), 0o555);
    fs::remove_dir_all(a.path("p2")).unwrap();
    write_file(&a.path("p2"), "A's file p2");
    fs::remove_file(a.path("q0")).unwrap();
    write_file(&a.path("q0/z"), "A's q0/z");
    write_file(&a.path("p4/new"), "A's p4/new");
    chmod(&c.path("p7"), 0o750);
    let got = wait_until(SOON, || {
        mode_of(&b.path("p0")) == 0o750
            && mode_of(&b.path("p1")) == 0o750
            && b.path("p2").is_file()
            && b.path("q0/z").is_file()
            && b.path("p4/new").is_file()
            && mode_of(&b.path("p7")) == 0o750
    });
    std::thread::sleep(Duration::from_millis(800));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(got, "B did not take A's and C's changes");
    let mut did = Vec::new();
    let mut pick = |what: &str| {
        let yes = !rng.next_u64().is_multiple_of(3);
        if yes {
            did.push(what.to_string());
        }
        yes
    };
    if pick("p0 0755") {
        chmod(&b.path("p0"), 0o755);
    }
    if pick("p1 0700") {
        chmod(&b.path("p1"), 0o700);
    }
    if pick("p2 folder") {
        fs::remove_file(b.path("p2")).unwrap();
        write_file(&b.path("p2/y"), "B's p2/y");
    }
    if pick("q0 file") {
        fs::remove_dir_all(b.path("q0")).unwrap();
        write_file(&b.path("q0"), "B's file q0");
    }
    if pick("p5 0711") {
        chmod(&b.path("p5"), 0o711);
    }
    if pick("p6/x edit") {
        write_file(&b.path("p6/x"), "B's edit of p6/x");
        set_old_mtime(&b.path("p6/x"));
    }
    let b = start(1);
    let same = |x: &Peer, y: &Peer| {
        tree_diff(&x.dir, &y.dir).is_none() && folder_modes(&x.dir) == folder_modes(&y.dir)
    };
    let want_b = || {
        let has = |p: &str, m: u32| mode_or_zero(&a.path(p)) == m;
        (!did.contains(&"p0 0755".to_string()) || has("p0", 0o755))
            && (!did.contains(&"p1 0700".to_string()) || has("p1", 0o700))
            && (!did.contains(&"p2 folder".to_string())
                || has_content(&a.path("p2/y"), b"B's p2/y"))
            && (!did.contains(&"q0 file".to_string()) || has_content(&a.path("q0"), b"B's file q0"))
            && (!did.contains(&"p5 0711".to_string()) || has("p5", 0o711))
            && (!did.contains(&"p6/x edit".to_string())
                || has_content(&a.path("p6/x"), b"B's edit of p6/x"))
            && has("p3", 0o555)
            && has("p7", 0o750)
    };
    let ok = wait_until(Duration::from_secs(30), || {
        same(&a, &b) && same(&a, &c) && want_b()
    });
    let emptied = wait_until(Duration::from_secs(10), || log_len(&b) == 0);
    let cs: Vec<String> = [&a, &b, &c]
        .iter()
        .flat_map(|p| conflicts(&p.dir))
        .collect();
    assert!(
        ok && cs.is_empty() && emptied,
        "seed {seed}, B's user did {did:?}: converged with B's changes {ok} (A-B {:?}, A-C \
         {:?}; B's changes on A {}); modes A {:?} B {:?} C {:?}; conflict copies {cs:?}; B's \
         install log {} bytes\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        tree_diff(&a.dir, &c.dir),
        want_b(),
        folder_modes(&a.dir),
        folder_modes(&b.dir),
        folder_modes(&c.dir),
        log_len(&b),
        tail(&b.log_text(), 14)
    );
}

#[test]
fn three_peers_undo_while_down_seed_1() {
    three_peers_undo_while_down(1);
}

#[test]
fn three_peers_undo_while_down_seed_2() {
    three_peers_undo_while_down(2);
}

#[test]
fn three_peers_undo_while_down_seeds_3_to_8() {
    for seed in 3..=8 {
        three_peers_undo_while_down(seed);
    }
}

// ---------------------------------------------------------------------------------------------
// The install log's tail.

/// A record cut short at the end of B's install log (a power cut while it was appended: made
/// by hand, 7 bytes of a 12-byte header, B down and in sync with A, its index saved). B
/// restarts with its index saves held off (its first scan has nothing to record; the window
/// between installs and the save that follows them). A adds `s0`..`s9`, B takes them (the
/// install log has them) and is killed; while it is down B's user edits `s0`..`s4` (mtime
/// 2001). B restarts. Expected: the edits are changes of what B had received: on A within
/// 30 s, no conflict copy (README: "what you change while `left` is down changes what it had
/// received").
///
/// Failed 5 runs of 5: none of the 5 edits on A, 5 conflict copies
/// (`s0.sync-conflict-20010909-...`), A's content at the names; the log held 1,227 bytes at
/// the kill. Not new in b05011a (`Log::open` measured the file the same way before); the torn
/// tail is made by hand, as a power cut mid-append leaves it.
///
/// Suspected cause: `Log::new`/`Log::open` (src/store/intents.rs:60-74, :114-119) append at
/// the file's length, after the torn record, and `load` stops at the torn record (:166, :197,
/// :208): everything logged after it is never read back. The first save after the first scan
/// would empty the log (change 3), but only if that scan records something (the index is
/// dirty) and the save lands; here the shares were in sync and B's saves held. Truncating the log to its last whole record at
/// start would do.
/// Fixed: the log is cut back to its whole records before the first append (`intents::whole_len`).
#[test]
fn installs_logged_after_a_torn_record_are_read_back() {
    let t = TestDir::new("r22-torn-tail");
    let Some(mut h) = held(&t, |a| {
        write_file(&a.path("seed2"), "seed");
    }) else {
        return;
    };
    h.kill_b();
    let log = h.b.path(".left/installs");
    let mut torn = fs::read(&log).unwrap_or_default();
    torn.extend_from_slice(&[0, 0, 1, 0, 0x12, 0x34, 0x56]);
    fs::write(&log, &torn).unwrap();
    assert!(hold_saves(&h.ix, &h.jl));
    h.restart_b(&t);
    assert!(h.b.wait_log(SOON, "connected"));
    std::thread::sleep(Duration::from_secs(1));
    let staging = t.join("staging");
    for i in 0..10 {
        put_file(
            &staging,
            &h.a.path(&format!("s{i}")),
            format!("A's s{i} ").repeat(40).as_bytes(),
        );
    }
    let got = wait_until(SOON, || {
        (0..10).all(|i| h.b.path(&format!("s{i}")).is_file())
    });
    std::thread::sleep(Duration::from_millis(500));
    let len = log_len(&h.b);
    h.kill_b();
    assert!(got, "B did not take A's files");
    for i in 0..5 {
        let p = h.b.path(&format!("s{i}"));
        write_file(&p, format!("B's edit of s{i} while down"));
        set_old_mtime(&p);
    }
    h.restart_b(&t);
    let on_a = |i: usize| {
        has_content(
            &h.a.path(&format!("s{i}")),
            format!("B's edit of s{i} while down").as_bytes(),
        )
    };
    let ok = wait_until(Duration::from_secs(30), || {
        (0..5).all(on_a) && tree_diff(&h.a.dir, &h.b.dir).is_none()
    });
    let c = conflicts(&h.a.dir);
    let lost: Vec<usize> = (0..5).filter(|&i| !on_a(i)).collect();
    assert!(
        ok && c.is_empty(),
        "installs logged after a torn record ({} bytes torn, log {len} bytes at the kill): B's \
         edits not on A {lost:?}; conflict copies {c:?}\nB:\n{}",
        torn.len(),
        tail(&h.b.log_text(), 12)
    );
}
