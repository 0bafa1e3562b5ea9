//! Fifteenth review: adversarial tests of the install log and the first scan after a kill
//! (helper session, branch review15). Real daemons on 127.0.0.1. A test asserts the correct
//! behaviour: it fails where it found a defect.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Bytes held by B's install log (what a kill left unsaved).
fn log_len(p: &Peer) -> u64 {
    fs::metadata(p.path(".left/installs")).map_or(0, |m| m.len())
}

/// How B's first run ends.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// B starts with A's files there, and is killed (SIGKILL) right after its log shows
    /// `at_least` received (often before B's first index save).
    KillFirstRun,
    /// B runs in sync with A (its index saved), then A's user adds the files, and B is killed
    /// right after its log shows `at_least` of them received.
    KillRunning,
    /// The control: B is stopped with SIGTERM once A and B agree.
    Clean,
}

/// A holds `n` small files (named and filled by `file`), B pulls them and stops as `stop`
/// says. Returns (A, B stopped, A's port, B's port).
fn received_then_stopped(
    t: &TestDir,
    n: usize,
    at_least: usize,
    file: impl Fn(usize) -> (String, Vec<u8>),
    stop: Stop,
) -> (Peer, Peer, u16, u16) {
    let (pa, pb) = two_ports();
    let a = Peer::start(t, "A", pa, &[pb]);
    let mut b = None;
    if let Stop::KillRunning = stop {
        write_file(&a.path("seed"), "seed");
        let bb = Peer::start(t, "B", pb, &[pa]);
        wait_identical(&a.dir, &bb.dir, SOON);
        assert!(bb.wait_log(SOON, "index written"));
        b = Some(bb);
    }
    for i in 0..n {
        // Renamed in whole: A never has a version of it half-written (which B could take,
        // and A's next version then rightly beat B's deletion).
        let (name, data) = file(i);
        put_file(&t.join("staging"), &a.path(&name), &data);
    }
    let mut b = b.unwrap_or_else(|| {
        assert!(wait_until(SOON, || count(&a, "changed locally: ") >= n));
        Peer::start(t, "B", pb, &[pa])
    });
    assert!(spin_until(SOON, || count(&b, "received ") >= at_least));
    if let Stop::Clean = stop {
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            b.terminate(Duration::from_secs(20))
                .is_some_and(|s| s.success())
        );
    } else {
        b.kill();
    }
    (a, b, pa, pb)
}

/// Folders received just before a kill and deleted here while down. The install log names the
/// files (their deletions are recorded by the first scan, be1f6d9), but a folder a peer's entry
/// made (`install::apply_dir`) is recorded in the index only, not logged: killed within the
/// 250 ms before the next save, the restart has no trace of it. Sequence: A holds 200 folders
/// `dNNN` of one file each; B pulls and is killed soon after its first receipts; B's user
/// removes every `dNNN` B has (`rm -r`); B restarts. No removed folder may come back, on B or
/// A.
fn folders_received_before_a_kill_and_deleted_while_down_stay_deleted_(stop: Stop) {
    let t = TestDir::new(&format!("r15-folders-deleted-after-kill-{stop:?}"));
    let (a, b, pa, pb) = received_then_stopped(
        &t,
        200,
        20,
        |i| {
            (
                format!("d{i:03}/x"),
                format!("file {i} ").repeat(2000).into_bytes(),
            )
        },
        stop,
    );
    let logged = log_len(&b);
    let gone: Vec<String> = fs::read_dir(&b.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // Only folders B had received whole, with their file: a folder B had made for a
        // pull not done yet rightly comes back with A's file, which B's user never saw.
        .filter(|n| n.starts_with('d') && b.path(&format!("{n}/x")).is_file())
        .collect();
    assert!(!gone.is_empty());
    for n in &gone {
        fs::remove_dir_all(b.path(n)).unwrap();
    }
    drop(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let back: Vec<&String> = gone
        .iter()
        .filter(|n| b.path(n).exists() || a.path(n).exists())
        .collect();
    assert!(
        back.is_empty(),
        "B's user removed {} folders B had received before the kill (install log: {logged} \
         bytes); {} came back (on B: {}, on A: {}, with files in them: {}): {:?}",
        gone.len(),
        back.len(),
        back.iter().filter(|n| b.path(n).exists()).count(),
        back.iter().filter(|n| a.path(n).exists()).count(),
        back.iter()
            .filter(|n| a.path(&format!("{n}/x")).exists())
            .count(),
        &back[..back.len().min(8)],
    );
}

/// A file received before a kill, in a folder that B's user replaces by a FILE of the same
/// name while B is down. `record_received_gone` asks whether `dNNN/x` is gone with
/// `symlink_metadata` and counts only NotFound as gone: under a file it gets ENOTDIR, and the
/// logged file's deletion is not recorded. Sequence: A holds 200 `dNNN/x`; B pulls, is
/// killed; B's user does `rm -r dNNN; echo mine > dNNN` for each folder B has; B restarts.
/// Expected: A's `dNNN` becomes B's file, `dNNN/x` is gone from both, no conflict copy.
fn a_folder_replaced_by_a_file_while_down_after_a_kill_is_replaced_everywhere_(stop: Stop) {
    let t = TestDir::new(&format!("r15-folder-to-file-after-kill-{stop:?}"));
    let (a, b, pa, pb) = received_then_stopped(
        &t,
        200,
        20,
        |i| {
            (
                format!("d{i:03}/x"),
                format!("file {i} ").repeat(2000).into_bytes(),
            )
        },
        stop,
    );
    let logged = log_len(&b);
    let changed: Vec<String> = fs::read_dir(&b.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // Only folders B had received whole, with their file: a folder B had made for a
        // pull not done yet rightly comes back with A's file, which B's user never saw.
        .filter(|n| n.starts_with('d') && b.path(&format!("{n}/x")).is_file())
        .collect();
    assert!(!changed.is_empty());
    for n in &changed {
        fs::remove_dir_all(b.path(n)).unwrap();
        write_file(&b.path(n), format!("B's user's file {n}\n"));
    }
    drop(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let wrong: Vec<&String> = changed
        .iter()
        .filter(|n| !has_content(&a.path(n), format!("B's user's file {n}\n").as_bytes()))
        .collect();
    let c = conflicts(&a.dir);
    assert!(
        wrong.is_empty() && c.is_empty(),
        "B's user replaced {} folders by files while B was down (install log: {logged} bytes): \
         {} of them are not B's file on A ({:?}); conflict copies on A: {} ({:?})\nB:\n{}",
        changed.len(),
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        c.len(),
        &c[..c.len().min(5)],
        tail(&b.log_text(), 15)
    );
}

/// A file received before a kill and edited here while down: the edit was made on the
/// received version, so it must replace it on A without a conflict copy. `scanner::record`
/// drops the install log's record when the content differs, and gives the edit a version
/// made from the index's entry (none: the install was not saved), concurrent with A's.
/// Sequence: A holds 300 small files; B pulls, is killed; B's user appends a line to every
/// file B has; B restarts.
fn a_file_received_before_a_kill_and_edited_while_down_makes_no_conflict_copy_(stop: Stop) {
    let t = TestDir::new(&format!("r15-edited-after-kill-{stop:?}"));
    let (a, b, pa, pb) = received_then_stopped(
        &t,
        300,
        30,
        |i| {
            (
                format!("f{i:03}"),
                format!("file {i} ").repeat(100).into_bytes(),
            )
        },
        stop,
    );
    let logged = log_len(&b);
    let edited: Vec<String> = names(&b.dir)
        .into_iter()
        .filter(|n| n.starts_with('f'))
        .collect();
    assert!(!edited.is_empty());
    // Edited a second later than the received mtime, as a user would.
    std::thread::sleep(Duration::from_millis(1100));
    for n in &edited {
        let mut data = fs::read(b.path(n)).unwrap();
        data.extend_from_slice(b"B's user's line\n");
        write_file(&b.path(n), data);
    }
    drop(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let lost: Vec<&String> = edited
        .iter()
        .filter(|n| !read(&a.path(n)).is_some_and(|d| d.ends_with(b"B's user's line\n")))
        .collect();
    let c = conflicts(&a.dir);
    assert!(
        lost.is_empty() && c.is_empty(),
        "B's user edited {} files received before the kill (install log: {logged} bytes): \
         {} edits not on A; {} conflict copies: {:?}",
        edited.len(),
        lost.len(),
        c.len(),
        &c[..c.len().min(5)]
    );
}

/// A file received before a kill and replaced by a folder here while down: the user saw the
/// file and replaced it, so A's file goes and the folder comes, with no conflict copy (as
/// without the kill). Sequence: A holds 300 small files; B pulls, is killed; B's user does
/// `rm f; mkdir f; echo mine > f/inner` for every file B has; B restarts.
fn a_file_received_before_a_kill_and_replaced_by_a_folder_while_down_goes_(stop: Stop) {
    let t = TestDir::new(&format!("r15-file-to-folder-after-kill-{stop:?}"));
    let (a, b, pa, pb) = received_then_stopped(
        &t,
        300,
        30,
        |i| {
            (
                format!("f{i:03}"),
                format!("file {i} ").repeat(100).into_bytes(),
            )
        },
        stop,
    );
    let logged = log_len(&b);
    let changed: Vec<String> = names(&b.dir)
        .into_iter()
        .filter(|n| n.starts_with('f'))
        .collect();
    assert!(!changed.is_empty());
    for n in &changed {
        fs::remove_file(b.path(n)).unwrap();
        write_file(&b.path(&format!("{n}/inner")), format!("mine {n}\n"));
    }
    drop(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let wrong: Vec<&String> = changed
        .iter()
        .filter(|n| !a.path(&format!("{n}/inner")).is_file())
        .collect();
    let c = conflicts(&a.dir);
    assert!(
        wrong.is_empty() && c.is_empty(),
        "B's user replaced {} received files by folders while B was down (install log: \
         {logged} bytes): {} not folders on A; {} conflict copies (the deleted file back): {:?}",
        changed.len(),
        wrong.len(),
        c.len(),
        &c[..c.len().min(5)]
    );
}

#[test]
fn folders_received_before_a_kill_and_deleted_while_down_stay_deleted() {
    folders_received_before_a_kill_and_deleted_while_down_stay_deleted_(Stop::KillFirstRun);
}

#[test]
fn folders_received_before_a_kill_and_deleted_while_down_stay_deleted_while_running() {
    folders_received_before_a_kill_and_deleted_while_down_stay_deleted_(Stop::KillRunning);
}

/// Control: the same steps after a clean stop pass.
#[test]
fn folders_received_before_a_kill_and_deleted_while_down_stay_deleted_control_clean_stop() {
    folders_received_before_a_kill_and_deleted_while_down_stay_deleted_(Stop::Clean);
}

#[test]
fn a_folder_replaced_by_a_file_while_down_after_a_kill_is_replaced_everywhere() {
    a_folder_replaced_by_a_file_while_down_after_a_kill_is_replaced_everywhere_(Stop::KillFirstRun);
}

#[test]
fn a_folder_replaced_by_a_file_while_down_after_a_kill_is_replaced_everywhere_while_running() {
    a_folder_replaced_by_a_file_while_down_after_a_kill_is_replaced_everywhere_(Stop::KillRunning);
}

/// Control: the same steps after a clean stop pass.
#[test]
fn a_folder_replaced_by_a_file_while_down_after_a_kill_is_replaced_everywhere_control_clean_stop() {
    a_folder_replaced_by_a_file_while_down_after_a_kill_is_replaced_everywhere_(Stop::Clean);
}

#[test]
fn a_file_received_before_a_kill_and_edited_while_down_makes_no_conflict_copy() {
    a_file_received_before_a_kill_and_edited_while_down_makes_no_conflict_copy_(Stop::KillFirstRun);
}

#[test]
fn a_file_received_before_a_kill_and_edited_while_down_makes_no_conflict_copy_while_running() {
    a_file_received_before_a_kill_and_edited_while_down_makes_no_conflict_copy_(Stop::KillRunning);
}

/// Control: the same steps after a clean stop pass.
#[test]
fn a_file_received_before_a_kill_and_edited_while_down_makes_no_conflict_copy_control_clean_stop() {
    a_file_received_before_a_kill_and_edited_while_down_makes_no_conflict_copy_(Stop::Clean);
}

#[test]
fn a_file_received_before_a_kill_and_replaced_by_a_folder_while_down_goes() {
    a_file_received_before_a_kill_and_replaced_by_a_folder_while_down_goes_(Stop::KillFirstRun);
}

#[test]
fn a_file_received_before_a_kill_and_replaced_by_a_folder_while_down_goes_while_running() {
    a_file_received_before_a_kill_and_replaced_by_a_folder_while_down_goes_(Stop::KillRunning);
}

/// Control: the same steps after a clean stop pass.
#[test]
fn a_file_received_before_a_kill_and_replaced_by_a_folder_while_down_goes_control_clean_stop() {
    a_file_received_before_a_kill_and_replaced_by_a_folder_while_down_goes_(Stop::Clean);
}

/// A and B in sync; A's user adds `n` items (by `make`), B takes them and is killed (SIGKILL)
/// as soon as `at_least` are on B's disk; while B is down A's user deletes them all (A's scan
/// records the deletions); B restarts. Returns (A, B restarted, the names B had).
fn taken_then_deleted_while_down(
    t: &TestDir,
    n: usize,
    at_least: usize,
    make: impl Fn(&Path, usize) -> String,
) -> (Peer, Peer, Vec<String>) {
    let (pa, pb) = two_ports();
    let a = Peer::start(t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    let all: Vec<String> = (0..n).map(|i| make(&a.dir, i)).collect();
    assert!(spin_until(SOON, || all
        .iter()
        .filter(|p| b.path(p).exists())
        .count()
        >= at_least));
    b.kill();
    let had: Vec<String> = all.iter().filter(|p| b.path(p).exists()).cloned().collect();
    // A has recorded them all (else a deletion is of something A never knew).
    assert!(wait_until(SOON, || {
        let log = a.log_text();
        all.iter().all(|p| log.contains(p.as_str()))
    }));
    let deleted_before = count(&a, "deleted locally: ");
    for p in &all {
        let path = a.path(p);
        if path.is_dir() {
            fs::remove_dir_all(&path).unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
    }
    assert!(wait_until(SOON, || count(&a, "deleted locally: ")
        >= deleted_before + n));
    let b = Peer::start(t, "B", pb, &[pa]);
    (a, b, had)
}

/// A peer's new folders made here (`install::apply_dir`: recorded in the index, not in the
/// install log) just before a kill, then deleted on the peer while we are down. At the restart
/// the scan finds folders the index does not have and records them as new folders of ours,
/// concurrent with the peer's deletions: "an edit beats a deletion made without seeing it",
/// and the peer's deleted folders come back on the peer. Sequence: A and B in sync; A's user
/// makes 200 empty folders; B is killed as soon as 20 are on its disk; A's user removes all
/// 200; B restarts. Expected: none of them on A or B.
#[test]
fn folders_taken_before_a_kill_and_deleted_on_the_peer_while_down_stay_deleted() {
    let t = TestDir::new("r15-peer-deleted-folders");
    let (a, b, had) = taken_then_deleted_while_down(&t, 200, 20, |root, i| {
        let p = format!("e{i:03}");
        fs::create_dir(root.join(&p)).unwrap();
        p
    });
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let back: Vec<String> = names(&a.dir)
        .into_iter()
        .filter(|n| n.starts_with('e'))
        .collect();
    assert!(
        back.is_empty(),
        "A's user removed 200 folders while B (killed just after taking {} of them) was down; \
         {} came back on A and B: {:?}\nB:\n{}",
        had.len(),
        back.len(),
        &back[..back.len().min(8)],
        tail(&b.log_text(), 12)
    );
}

/// The same for files (logged: the scan takes them with the peer's version, which the
/// peer's deletion then replaces). Expected: none of them on A or B.
#[test]
fn files_taken_before_a_kill_and_deleted_on_the_peer_while_down_stay_deleted() {
    let t = TestDir::new("r15-peer-deleted-files");
    let staging = t.join("staging");
    let (a, b, had) = taken_then_deleted_while_down(&t, 300, 30, |root, i| {
        let p = format!("g{i:03}");
        put_file(
            &staging,
            &root.join(&p),
            format!("file {i} ").repeat(100).as_bytes(),
        );
        p
    });
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let back: Vec<String> = names(&a.dir)
        .into_iter()
        .filter(|n| n.starts_with('g'))
        .collect();
    assert!(
        back.is_empty() && conflicts(&a.dir).is_empty(),
        "A's user deleted 300 files while B (killed just after taking {} of them) was down; \
         {} came back: {:?}; conflict copies: {:?}",
        had.len(),
        back.len(),
        &back[..back.len().min(8)],
        conflicts(&a.dir)
    );
}

/// As the edit test, but the user's content comes with an older mtime than A's (restored from
/// a backup with `cp -p`, `tar x`, `rsync -t`): the edit, made on the received version, must
/// still replace it. Made concurrent with A's by the kill (see the edit test), it loses on
/// mtime: B's file goes back to A's content and the user's restore is only a conflict copy.
#[test]
fn a_file_received_before_a_kill_and_restored_from_a_backup_while_down_stays_restored() {
    let t = TestDir::new("r15-restored-after-kill");
    let (a, b, pa, pb) = received_then_stopped(
        &t,
        300,
        30,
        |i| {
            (
                format!("f{i:03}"),
                format!("file {i} ").repeat(100).into_bytes(),
            )
        },
        Stop::KillRunning,
    );
    let restored: Vec<String> = names(&b.dir)
        .into_iter()
        .filter(|n| n.starts_with('f'))
        .collect();
    assert!(!restored.is_empty());
    let old = std::time::SystemTime::now() - Duration::from_secs(86_400);
    for n in &restored {
        write_file(&b.path(n), format!("backup of {n}\n"));
        fs::File::options()
            .write(true)
            .open(b.path(n))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    drop(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let undone: Vec<&String> = restored
        .iter()
        .filter(|n| !has_content(&b.path(n), format!("backup of {n}\n").as_bytes()))
        .collect();
    assert!(
        undone.is_empty(),
        "B's user restored {} received files from a backup while B was down; {} are back to \
         A's content on both (the restore only a conflict copy: {} copies): {:?}",
        restored.len(),
        undone.len(),
        conflicts(&a.dir).len(),
        &undone[..undone.len().min(5)]
    );
}

/// A file received before a kill and renamed here while down: A ends with the new name only,
/// no conflict copy. Timing-dependent: fails when the pulls of A's files (the old names, which
/// B's index lacks) begin before the first scan (hashing the moved files) ends, as in the
/// slow-first-scan test below (seen failing in 4 of 6 runs here): the old names come back.
#[test]
fn a_file_received_before_a_kill_and_renamed_while_down_is_moved() {
    let t = TestDir::new("r15-renamed-after-kill");
    let (a, b, pa, pb) = received_then_stopped(
        &t,
        300,
        30,
        |i| {
            (
                format!("f{i:03}"),
                format!("file {i} ").repeat(100).into_bytes(),
            )
        },
        Stop::KillRunning,
    );
    let moved: Vec<String> = names(&b.dir)
        .into_iter()
        .filter(|n| n.starts_with('f'))
        .collect();
    assert!(!moved.is_empty());
    fs::create_dir(b.path("moved")).unwrap();
    for n in &moved {
        fs::rename(b.path(n), b.path(&format!("moved/{n}"))).unwrap();
    }
    drop(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let wrong: Vec<&String> = moved
        .iter()
        .filter(|n| a.path(n).exists() || !a.path(&format!("moved/{n}")).is_file())
        .collect();
    let c = conflicts(&a.dir);
    assert!(
        wrong.is_empty() && c.is_empty(),
        "{} of {} moved wrong on A: {:?}; conflict copies {:?}",
        wrong.len(),
        moved.len(),
        &wrong[..wrong.len().min(5)],
        &c[..c.len().min(5)]
    );
}

/// A chmod of A's applied here (`Model::put_meta`, logged) just before a kill, then the files
/// deleted on A while we are down: nothing comes back.
#[test]
fn files_chmodded_by_the_peer_before_a_kill_and_deleted_there_while_down_stay_deleted() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new("r15-chmod-then-deleted");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let staging = t.join("staging");
    const N: usize = 200;
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&format!("h{i:03}")),
            format!("h {i}").as_bytes(),
        );
    }
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..N {
        fs::set_permissions(
            a.path(&format!("h{i:03}")),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let chmodded = |b: &Peer| {
        (0..N)
            .filter(|i| mode_or_zero(&b.path(&format!("h{i:03}"))) & 0o777 == 0o600)
            .count()
    };
    assert!(spin_until(SOON, || chmodded(&b) >= 20));
    b.kill();
    let had = chmodded(&b);
    let before = count(&a, "deleted locally: ");
    for i in 0..N {
        fs::remove_file(a.path(&format!("h{i:03}"))).unwrap();
    }
    assert!(wait_until(SOON, || count(&a, "deleted locally: ") >= before + N));
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let back: Vec<String> = names(&a.dir)
        .into_iter()
        .filter(|n| n.starts_with('h'))
        .collect();
    assert!(
        back.is_empty(),
        "A's user deleted {N} files while B (killed with {had} of A's chmods applied) was down; \
         {} came back: {:?}",
        back.len(),
        &back[..back.len().min(8)]
    );
}

/// review13's sequence (files received just before a kill, deleted here while down), with one
/// more thing done while down: B's user also adds a file to hash (128 MiB), so that the first
/// scan after the restart takes a moment. Meanwhile A's connection is up and B already pulls
/// the files A announces that B's index lacks, the deleted ones included (B installed them
/// before the kill; the index never saved them). Each such pull makes the file's temp file,
/// and when the scan ends `record_received_gone` takes that temp file for one of a pull cut by
/// the kill ("one whose temp file is still there was not installed: its pull resumes"): no
/// deletion is recorded, and the files come back. (The rename test above fails the same way:
/// hashing the moved files slows its first scan.)
#[test]
fn files_deleted_while_down_after_a_kill_stay_deleted_when_the_first_scan_is_slow() {
    let t = TestDir::new("r15-deleted-slow-first-scan");
    let (a, b, pa, pb) = received_then_stopped(
        &t,
        300,
        30,
        |i| {
            (
                format!("f{i:03}"),
                format!("file {i} ").repeat(100).into_bytes(),
            )
        },
        Stop::KillRunning,
    );
    let gone: Vec<String> = names(&b.dir)
        .into_iter()
        .filter(|n| n.starts_with('f'))
        .collect();
    assert!(!gone.is_empty());
    for n in &gone {
        fs::remove_file(b.path(n)).unwrap();
    }
    write_random(&b.path("zbig"), 128 << 20, 15);
    drop(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let back: Vec<&String> = gone
        .iter()
        .filter(|n| b.path(n).exists() || a.path(n).exists())
        .collect();
    let recorded = count(&b, "(received before the last stop)");
    assert!(
        back.is_empty(),
        "B's user deleted {} files B had received before the kill, and added a file; {} came \
         back (deletions recorded by the first scan: {recorded}): {:?}",
        gone.len(),
        back.len(),
        &back[..back.len().min(8)],
    );
}

/// A big file (installed alone, after an fsync) received just before a kill and deleted here
/// while down stays deleted. Sequence: A and B in sync; A's user adds a 48 MiB file; B is
/// killed as soon as its log says it is received; B's user deletes it; B restarts.
#[test]
fn a_big_file_received_before_a_kill_and_deleted_while_down_stays_deleted() {
    let t = TestDir::new("r15-big-deleted-after-kill");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    write_random(&t.join("staging/big"), 48 << 20, 7);
    fs::rename(t.join("staging/big"), a.path("big")).unwrap();
    assert!(spin_until(SOON, || b.log_text().contains("received big ")));
    b.kill();
    let logged = log_len(&b);
    assert!(b.path("big").is_file());
    fs::remove_file(b.path("big")).unwrap();
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(
        !a.path("big").exists() && !b.path("big").exists(),
        "B's user deleted big, received just before the kill (install log: {logged} bytes); \
         it came back\nB:\n{}",
        tail(&b.log_text(), 10)
    );
}

/// Killed in the middle of receiving groups of small files, restarted with nothing changed:
/// every file is A's, no conflict copy, nothing deleted anywhere (repeated 3 times).
#[test]
fn killed_while_receiving_and_restarted_makes_no_conflict_and_loses_nothing() {
    for round in 0..3 {
        let t = TestDir::new(&format!("r15-kill-nothing-changed-{round}"));
        let (a, b, pa, pb) = received_then_stopped(
            &t,
            300,
            30 + 40 * round,
            |i| {
                (
                    format!("f{i:03}"),
                    format!("file {i} ").repeat(100).into_bytes(),
                )
            },
            Stop::KillRunning,
        );
        drop(b);
        let b = Peer::start(&t, "B", pb, &[pa]);
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_secs(2));
        wait_identical(&a.dir, &b.dir, SOON);
        let files = names(&a.dir).iter().filter(|n| n.starts_with('f')).count();
        assert!(
            files == 300 && conflicts(&a.dir).is_empty() && count(&b, "deleted locally") == 0,
            "round {round}: {files} files on A; conflict copies {:?}; B: {}",
            conflicts(&a.dir),
            tail(&b.log_text(), 8)
        );
    }
}

/// A peer's new folders made here just before a kill (not logged, not saved), then chmodded on
/// the peer while we are down: the restart's scan records them as new folders of ours with the
/// old mode, concurrent with the peer's chmod, which they may beat. Sequence: A and B in sync;
/// A's user makes 200 folders (0755); B is killed as soon as 20 are on its disk; A's user
/// chmods all 200 to 0700; B restarts. Expected: 0700 on both.
#[test]
fn folders_taken_before_a_kill_and_chmodded_on_the_peer_while_down_keep_the_peers_mode() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new("r15-peer-chmodded-folders");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    const N: usize = 200;
    let all: Vec<String> = (0..N).map(|i| format!("m{i:03}")).collect();
    for p in &all {
        fs::create_dir(a.path(p)).unwrap();
        fs::set_permissions(a.path(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(spin_until(SOON, || all
        .iter()
        .filter(|p| mode_or_zero(&b.path(p)) & 0o777 == 0o755)
        .count()
        >= 20));
    b.kill();
    assert!(wait_until(SOON, || count(&a, "new folder m") >= N));
    let before = count(&a, "folder mode changed locally: m");
    for p in &all {
        fs::set_permissions(a.path(p), fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert!(wait_until(SOON, || count(
        &a,
        "folder mode changed locally: m"
    ) >= before + N));
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    let settled = |p: &Peer| {
        all.iter()
            .filter(|n| mode_or_zero(&p.path(n)) & 0o777 != 0o700)
            .cloned()
            .collect::<Vec<String>>()
    };
    let _ = wait_until(Duration::from_secs(10), || {
        settled(&a).is_empty() && settled(&b).is_empty()
    });
    let (wa, wb) = (settled(&a), settled(&b));
    assert!(
        wa.is_empty() && wb.is_empty(),
        "A's user chmodded {N} folders to 0700 while B was down; not 0700 on A: {} ({:?}), \
         on B: {}",
        wa.len(),
        &wa[..wa.len().min(6)],
        wb.len()
    );
}
