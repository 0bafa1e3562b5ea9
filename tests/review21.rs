//! Twenty-first review: commits 7f7cebb and 789afb6 (the first scan after a crash records every
//! done install it did not settle, with no stat), the temp files' write leases and
//! `free_temp_name` (helper session, branch review21). Real daemons on 127.0.0.1. A test
//! asserts the correct behaviour: it fails where it found a defect.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Every file under `dir` (recursively), with content.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match ent.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                _ => {
                    out.insert(path.clone(), read(&dir.join(&path)).unwrap_or_default());
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A local user racing a pull's temp file.

/// While B pulls four 24 MiB files from A (B slowed down: 20 ms run, 60 ms stopped), B's
/// user's program opens each temp file for writing at random moments, up to three times per
/// file, and writes `EVIL` at its start (a block already received and verified) or cuts it to
/// half its length, then closes it. Expected: every open returns within 2 s (the write lease
/// is let go within 100 ms, not after `fs.lease-break-time`); A and B end identical with A's
/// content (nothing unverified installed; a write that lands after the rename is a user edit
/// and would go to A), no conflict copy, no temp file left, B up.
///
/// Passes (6 runs: 12 opens for writing each, the slowest 92-97 ms; no `EVIL` nor a cut file
/// installed): what held up.
#[test]
fn writes_into_a_temp_file_mid_pull_are_never_installed_and_never_hang() {
    let t = TestDir::new("r21-write-temp");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    let throttle = Throttle::new(
        b.pid().unwrap(),
        Duration::from_millis(20),
        Duration::from_millis(60),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (opens, worst) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (stop, opens, worst, bdir) =
            (stop.clone(), opens.clone(), worst.clone(), b.dir.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(2101);
            let mut hits: BTreeMap<String, usize> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                for tmp in temps(&bdir) {
                    let n = hits.entry(tmp.clone()).or_default();
                    if *n >= 3 || !rng.next_u64().is_multiple_of(4) {
                        continue;
                    }
                    let t0 = Instant::now();
                    if let Ok(f) = fs::OpenOptions::new().write(true).open(bdir.join(&tmp)) {
                        let ms = t0.elapsed().as_millis() as u64;
                        worst.fetch_max(ms, Ordering::Relaxed);
                        // Every other time, cut to half its length instead.
                        if n.is_multiple_of(2) {
                            let _ = f.write_at(b"EVIL", 0);
                        } else if let Ok(m) = f.metadata() {
                            let _ = f.set_len(m.len() / 2);
                        }
                        opens.fetch_add(1, Ordering::Relaxed);
                        *n += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    for i in 0..4 {
        write_random(&t.join(&format!("staging/h{i}")), 24 << 20, 2100 + i);
        fs::rename(t.join(&format!("staging/h{i}")), a.path(&format!("h{i}"))).unwrap();
    }
    let ok = wait_until(Duration::from_secs(60), || {
        (0..4).all(|i| {
            same_file(&a.path(&format!("h{i}")), &b.path(&format!("h{i}"))).unwrap_or(false)
        })
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    drop(throttle);
    let same = wait_until(Duration::from_secs(30), || {
        tree_diff(&a.dir, &b.dir).is_none() && temps(&b.dir).is_empty()
    });
    let evil: Vec<usize> = (0..4)
        .filter(|i| read(&b.path(&format!("h{i}"))).is_some_and(|d| d.starts_with(b"EVIL")))
        .collect();
    let (opens, worst) = (opens.load(Ordering::Relaxed), worst.load(Ordering::Relaxed));
    eprintln!("{opens} opens for writing, the slowest took {worst} ms; EVIL on B in {evil:?}");
    assert!(
        ok && same && evil.is_empty() && worst < 2000 && conflicts(&b.dir).is_empty() && b.alive(),
        "A's files on B: {ok}; identical, no temp file: {same} ({:?}, temps {:?}); files \
         starting with the user's EVIL on B: {evil:?}; {opens} opens, slowest {worst} ms; \
         conflict copies {:?}; B alive {}\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        temps(&b.dir),
        conflicts(&b.dir),
        b.alive(),
        tail(&b.log_text(), 15)
    );
}

/// What B's user puts in the way of a pull under way, once its temp file holds 4 MiB.
#[derive(Clone, Copy, Debug)]
enum MidPull {
    /// The temp name: a symlink to a file outside the share (renamed over it).
    SymlinkAtTemp,
    /// The temp name: a hard link of a file outside the share (renamed over it).
    HardLinkAtTemp,
    /// The temp name: a FIFO (renamed over it).
    FifoAtTemp,
    /// The temp name: a folder holding a file (the temp file removed first).
    FolderAtTemp,
    /// The file's folder moved away and a symlink to a folder outside the share put there.
    FolderBySymlink,
}

/// A 32 MiB file `d/big` pulled by B (B slowed down); once its temp file holds 4 MiB, B's user
/// puts `what` in the way. Expected: nothing outside the share is written or read into the
/// share (the outside file keeps its content and mtime, the outside folder stays empty), B
/// stays up, A and B end identical, what B's user put in a folder at the temp name is kept
/// (`.big.left-tmp.kept`) and reaches A, `d/big` on B is a regular file.
///
/// All five pass (4 runs each): nothing written or read outside the share, the symlink, hard
/// link and FIFO at the temp name never installed (`d/big` a regular file with one link, A's
/// bytes), the folder kept and synced, B up.
fn in_the_way_mid_pull(what: MidPull) {
    let t = TestDir::new(&format!("r21-midpull-{what:?}"));
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("d/seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    let outside = t.join("outside");
    let out_file = outside.join("secret");
    write_file(&out_file, "outside, not the share's");
    let out_dir = t.join("outside-dir");
    fs::create_dir_all(&out_dir).unwrap();
    let mtime0 = fs::metadata(&out_file).unwrap().modified().unwrap();
    let throttle = Throttle::new(
        b.pid().unwrap(),
        Duration::from_millis(20),
        Duration::from_millis(80),
    );
    write_random(&t.join("staging/big"), 32 << 20, 2110);
    fs::rename(t.join("staging/big"), a.path("d/big")).unwrap();
    let tmp = b.path("d/.big.left-tmp");
    let grew = wait_until(SOON, || {
        fs::metadata(&tmp).is_ok_and(|m| m.len() >= 4 << 20)
    });
    assert!(
        grew,
        "B's temp file never grew\nB:\n{}",
        tail(&b.log_text(), 10)
    );
    let stage = t.join("staging/thing");
    match what {
        MidPull::SymlinkAtTemp => {
            std::os::unix::fs::symlink(&out_file, &stage).unwrap();
            fs::rename(&stage, &tmp).unwrap();
        }
        MidPull::HardLinkAtTemp => {
            fs::hard_link(&out_file, b.path("d/hl")).unwrap();
            fs::rename(b.path("d/hl"), &tmp).unwrap();
        }
        MidPull::FifoAtTemp => {
            let ok = std::process::Command::new("mkfifo")
                .arg(&stage)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            fs::rename(&stage, &tmp).unwrap();
        }
        MidPull::FolderAtTemp => {
            fs::remove_file(&tmp).unwrap();
            write_file(
                &tmp.join("inner"),
                "B's user's file in a folder at the temp name",
            );
        }
        MidPull::FolderBySymlink => {
            fs::rename(b.path("d"), b.path("d-moved")).unwrap();
            std::os::unix::fs::symlink(&out_dir, b.path("d")).unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    drop(throttle);
    if matches!(what, MidPull::FolderBySymlink) {
        // B's user puts the folder back (the symlink goes): the pull must end there.
        std::thread::sleep(Duration::from_secs(2));
        fs::remove_file(b.path("d")).unwrap();
        fs::rename(b.path("d-moved"), b.path("d")).unwrap();
    }
    let same = wait_until(Duration::from_secs(60), || {
        tree_diff(&a.dir, &b.dir).is_none()
            && same_file(&a.path("d/big"), &b.path("d/big")).unwrap_or(false)
    });
    let out_ok = has_content(&out_file, b"outside, not the share's")
        && fs::metadata(&out_file).unwrap().modified().unwrap() == mtime0;
    let out_dir_files = files_under(&out_dir);
    let big_is_file = fs::symlink_metadata(b.path("d/big")).is_ok_and(|m| m.file_type().is_file());
    let big_links = {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(b.path("d/big")).map_or(0, |m| m.nlink())
    };
    let kept_ok = !matches!(what, MidPull::FolderAtTemp)
        || wait_until(SOON, || {
            has_content(
                &a.path("d/.big.left-tmp.kept/inner"),
                b"B's user's file in a folder at the temp name",
            )
        });
    eprintln!(
        "{what:?}: identical {same}; outside intact {out_ok}; outside folder {:?}; big a file \
         {big_is_file} ({big_links} links); kept {kept_ok}",
        out_dir_files.keys().collect::<Vec<_>>()
    );
    assert!(
        same && out_ok
            && out_dir_files.is_empty()
            && big_is_file
            && big_links == 1
            && kept_ok
            && b.alive(),
        "{what:?}: identical with A's big: {same} ({:?}); outside file intact: {out_ok}; \
         written into the outside folder: {:?}; B's d/big a regular file: {big_is_file} \
         ({big_links} links); the folder at the temp name kept and synced: {kept_ok}; B alive \
         {}\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        out_dir_files.keys().collect::<Vec<_>>(),
        b.alive(),
        tail(&b.log_text(), 15)
    );
}

#[test]
fn a_symlink_renamed_over_a_temp_file_mid_pull_is_not_followed_nor_installed() {
    in_the_way_mid_pull(MidPull::SymlinkAtTemp);
}

#[test]
fn a_hard_link_renamed_over_a_temp_file_mid_pull_is_not_installed() {
    in_the_way_mid_pull(MidPull::HardLinkAtTemp);
}

#[test]
fn a_fifo_renamed_over_a_temp_file_mid_pull_hangs_nothing() {
    in_the_way_mid_pull(MidPull::FifoAtTemp);
}

#[test]
fn a_folder_made_at_a_temp_name_mid_pull_is_kept_and_synced() {
    in_the_way_mid_pull(MidPull::FolderAtTemp);
}

#[test]
fn a_folder_replaced_by_a_symlink_mid_pull_writes_nothing_outside() {
    in_the_way_mid_pull(MidPull::FolderBySymlink);
}

// ---------------------------------------------------------------------------------------------
// Crash recovery: done installs the first scan does not settle (ignored ones) are recorded
// with no stat (src/scan/scanner.rs `record_unsettled`).

/// What B's user does, while B is down, to a file received just before the kill.
fn while_down(i: usize) -> &'static str {
    [
        "edit-old-mtime",
        "edit-new-mtime",
        "delete",
        "to-folder",
        "untouched",
    ][i % 5]
}

/// 60 files `fNNN` from A received by B just before a kill (B's index saves held off: only the
/// install log has them). While B is down B's user edits some (with an mtime of 2001, or now),
/// deletes some, replaces some by a folder holding a file, leaves the rest, and writes
/// `.leftignore` with `f*` (so that B's first scan skips them all and `record_unsettled`
/// records A's versions with no stat). B restarts; with `restart`, B is killed and started
/// again once the `.leftignore` reached A. Then B's user removes `.leftignore`. Expected: on
/// A each file is what B's user made of it (the edit, whatever its mtime; gone; the folder;
/// A's own), no conflict copy, A and B identical within 30 s.
///
/// At the top of the share (`dir` ""), with and without the restart: passes (5 runs each:
/// 0 wrong, 0 conflict copies): `record_unsettled` gives the ignored files A's versions, and
/// the edits with a 2001 mtime win.
///
/// In a subfolder (`dir` "sub/"): failed 4 runs of 4: after the un-ignore nothing of B's
/// user's changes reached A within 30 s (all 48 changed files wrong on A: the edits, the
/// deletions, the folders; the 12 untouched ones right); no conflict copy. Same cause as
/// `files_edited_while_ignored_in_a_subfolder_sync_once_unignored` (no crash needed): the
/// scan after the `.leftignore` change lists only the folders inotify named (the top), and
/// does not descend into a known, watched folder (src/scan/scanner.rs:502-503), so the files
/// `record_unsettled` (src/scan/scanner.rs:764) recorded with no stat are not "hashed by the
/// next scan that reaches them" (its comment, src/scan/scanner.rs:640-646) until the full
/// rescan (`RESCAN_EVERY`, 600 s, src/daemon.rs:27) or a restart.
/// Fixed: a change of the ignore patterns makes the next scan walk every folder, at once.
fn received_then_changed_and_ignored_while_down(restart: bool, dir: &str) {
    let t = TestDir::new(&format!("r21-ignored-while-down-{restart}-{}", dir.len()));
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
    const N: usize = 60;
    let staging = t.join("staging");
    let a_content = |i: usize| format!("A's file {i} ").repeat(30 + i);
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&format!("{dir}f{i:03}")),
            a_content(i).as_bytes(),
        );
    }
    let got = wait_until(SOON, || {
        (0..N).all(|i| has_content(&b.path(&format!("{dir}f{i:03}")), a_content(i).as_bytes()))
    });
    // A moment for the last done records.
    std::thread::sleep(Duration::from_millis(300));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(got, "B did not receive A's files");
    let logged = fs::metadata(b.path(".left/installs")).map_or(0, |m| m.len());
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..N {
        let f = format!("{dir}f{i:03}");
        let p = b.path(&f);
        match while_down(i) {
            "edit-old-mtime" | "edit-new-mtime" => {
                let d = format!("B's edit of {f} while down ").repeat(20);
                fs::write(&p, &d).unwrap();
                if while_down(i) == "edit-old-mtime" {
                    fs::File::options()
                        .write(true)
                        .open(&p)
                        .unwrap()
                        .set_modified(old)
                        .unwrap();
                }
                want.insert(f, d.into_bytes());
            }
            "delete" => fs::remove_file(&p).unwrap(),
            "to-folder" => {
                fs::remove_file(&p).unwrap();
                let d = format!("B's file in folder {f}");
                write_file(&p.join("inner"), &d);
                want.insert(format!("{f}/inner"), d.into_bytes());
            }
            _ => {
                want.insert(f, a_content(i).into_bytes());
            }
        }
    }
    write_file(&b.path(".leftignore"), format!("{dir}f*\n"));
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let ignored = wait_until(SOON, || {
        has_content(&a.path(".leftignore"), format!("{dir}f*\n").as_bytes())
    });
    assert!(ignored, "B's .leftignore did not reach A");
    std::thread::sleep(Duration::from_secs(3));
    if restart {
        b.kill();
        b = Peer::start(&t, "B", pb, &[pa]);
        assert!(b.wait_log(SOON, "connected"));
        std::thread::sleep(Duration::from_secs(3));
    }
    fs::remove_file(b.path(".leftignore")).unwrap();
    assert!(wait_until(SOON, || !a.path(".leftignore").exists()));
    let same = wait_until(Duration::from_secs(30), || {
        tree_diff(&a.dir, &b.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(2));
    let same = same && tree_diff(&a.dir, &b.dir).is_none();
    let on_a: BTreeMap<String, Vec<u8>> = files_under(&a.dir)
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{dir}f")))
        .collect();
    let wrong: Vec<String> = (want.keys().chain(on_a.keys()))
        .filter(|k| want.get(*k) != on_a.get(*k))
        .map(|k| {
            let i: usize = k[dir.len() + 1..dir.len() + 4].parse().unwrap_or(0);
            format!("{k} ({})", while_down(i))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let c = conflicts(&a.dir);
    eprintln!(
        "restart {restart}, in {dir:?}: install log {logged} bytes at the kill; {} wrong on A, \
         {} conflict copies",
        wrong.len(),
        c.len()
    );
    assert!(
        same && wrong.is_empty() && c.is_empty(),
        "restart {restart}, in {dir:?}: B's changes while down to files received just before \
         the kill \
         (install log {logged} bytes), ignored, then un-ignored: A and B identical within 30 \
         s: {same}; not as B's user left them on A: {:?}; conflict copies {:?}\nB:\n{}",
        &wrong[..wrong.len().min(10)],
        &c[..c.len().min(6)],
        tail(&b.log_text(), 15)
    );
}

#[test]
fn received_then_changed_and_ignored_while_down_then_unignored() {
    received_then_changed_and_ignored_while_down(false, "");
}

#[test]
fn received_then_changed_and_ignored_while_down_then_unignored_after_a_restart() {
    received_then_changed_and_ignored_while_down(true, "");
}

#[test]
fn received_then_changed_and_ignored_while_down_in_a_subfolder_then_unignored() {
    received_then_changed_and_ignored_while_down(false, "sub/");
}

/// 60 files from A received by B just before a kill (B's index saves held off: only the
/// install log has them, with their done records). B restarts, its first scan takes them
/// (A's versions, no conflict), and B's user then adds a file `local`, which B records,
/// saves and sends to A. Expected: once B's index is saved with the files in it, the install
/// log is emptied (src/store/intents.rs: "Once the index is saved with those installs in it,
/// the log is emptied"), as it is after any save that follows installs.
///
/// Failed 5 runs of 5: the log kept its 7560 bytes (60 entries and done records) through the
/// restart's index saves (`index journal: a record of 8792 bytes`, then 179 bytes) and 15 s
/// more; it goes only once a new install is appended. So every later start reads the stale
/// records again (and its first scan hashes each of those files, `logged`,
/// src/scan/scanner.rs:435). No wrong content seen from it.
///
/// Suspected cause: the log is opened lazily; until the first append of this run
/// `Log::len` is 0 (`len: 0`, src/store/intents.rs:64; opened and measured only in `write`,
/// :99), so `Model::save` passes 0 (src/sync/model.rs:425) and `clear_if(0)` returns at once
/// (src/store/intents.rs:118).
/// Fixed: the log's length on disk counts from the start (`intents::Log::new`).
#[test]
fn the_install_log_empties_after_a_restart_with_nothing_new_to_install() {
    let t = TestDir::new("r21-log-after-restart");
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
    let staging = t.join("staging");
    for i in 0..60 {
        put_file(
            &staging,
            &a.path(&format!("f{i:03}")),
            format!("A's file {i} ").repeat(30).as_bytes(),
        );
    }
    let got = wait_until(SOON, || {
        (0..60).all(|i| b.path(&format!("f{i:03}")).is_file())
    });
    std::thread::sleep(Duration::from_millis(300));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(got, "B did not receive A's files");
    let log = b.path(".left/installs");
    let len = || fs::metadata(&log).map_or(0, |m| m.len());
    let at_kill = len();
    let b = Peer::start(&t, "B", pb, &[pa]);
    assert!(b.wait_log(SOON, "connected"));
    std::thread::sleep(Duration::from_secs(2));
    write_file(&b.path("local"), "B's new file after the restart");
    assert!(wait_until(SOON, || a.path("local").is_file()));
    wait_identical(&a.dir, &b.dir, SOON);
    let emptied = wait_until(Duration::from_secs(15), || len() == 0);
    let c = conflicts(&a.dir);
    eprintln!(
        "install log: {at_kill} bytes at the kill, {} bytes 15 s after B's index saves",
        len()
    );
    assert!(
        emptied && c.is_empty(),
        "B's install log: {at_kill} bytes at the kill, still {} bytes 15 s after the restart's \
         index saves (emptied: {emptied}); conflict copies {:?}\nB:\n{}",
        len(),
        c,
        tail(&b.log_text(), 10)
    );
}

// ---------------------------------------------------------------------------------------------
// A random schedule: B killed at random moments while it takes A's files; while it is down its
// user edits (old and new mtimes), deletes, renames, turns files into folders and folders into
// files, and changes `.leftignore`, which it changes back during the first scan.

/// Files of a share (conflict copies included), with content; `.left/` and temp files left out.
fn contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    listing(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s.is_some())
        .filter_map(|(p, _)| read(&root.join(&p)).map(|d| (p, d)))
        .collect()
}

fn set_mtime(p: &Path, secs: u64) {
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// A random schedule (seeded), A and B: each of 4 rounds A adds 150 files in `rN/`, 10 at the
/// top (`tN-*`), 4 in `rN/sub/`, an 8 MiB file every other round, and rewrites 20 older
/// files; B (with `hold`: its index saves held off while it takes the round) is killed after
/// 30-730 ms. While B is down, B's user edits (half with a 2001 mtime), deletes, renames
/// and turns into folders B's files of the round, sometimes turns the last round's `sub/`
/// into a file (2001 mtime), and writes or removes `.leftignore` (the round's top files);
/// A's user rewrites or deletes ten other files of the round, and A is sometimes killed and
/// comes back during B's first scan. B restarts (`.leftignore` sometimes removed during its
/// first scan), is sometimes killed again within 0.5 s, and its user edits three more files
/// with an old mtime during the first scan. Expected: A and B identical, every change of both
/// users there, nothing resurrected, no conflict copy, no temp file; after one more file from
/// A, B's install log empty.
///
/// Passes: seeds 1-16 held and 1-13, 21-24 not held, one run each (in their last two forms).
/// An earlier form with the ignored files in `rN/` failed seed 3 once (B's edits of files
/// un-ignored at the end never reached A: the un-ignore defect above), hence the top.
fn random_kills_with_type_and_ignore_changes(seed: u64, hold: bool) {
    let t = TestDir::new(&format!("r21-kills-{seed}-{hold}"));
    let mut rng = Rng::new(seed);
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    let staging = t.join("staging");
    let mut want: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    want.insert("seed".into(), b"seed".to_vec());
    // Paths A's user leaves alone from now on (B's user changed them, or they are in a folder
    // B's user may replace).
    let mut hands_off = std::collections::BTreeSet::new();
    let mut acted_all = Vec::new();
    let mut ignored: Option<usize> = None;
    const ROUNDS: usize = 4;
    const N: usize = 150;
    let (ix, jl) = (b.path(".left/index"), b.path(".left/index.log"));
    for r in 0..ROUNDS {
        // B's index saves held off while it takes the round (as a kill right before a save
        // leaves it): what it installs is only in its install log.
        let held = hold && {
            if !jl.exists() {
                fs::write(&jl, b"").unwrap();
            }
            hold_saves(&ix, &jl)
        };
        for i in 0..N {
            let name = format!("r{r}/f{i:03}");
            let data = format!("A round {r} file {i} ")
                .repeat(10 + i % 40)
                .into_bytes();
            put_file(&staging, &a.path(&name), &data);
            want.insert(name, data);
        }
        // At the top, as files a `.leftignore` change leaves out for a while (in a
        // subfolder, their changes made while ignored are not seen once un-ignored:
        // `files_edited_while_ignored_in_a_subfolder_sync_once_unignored`).
        for i in 0..10 {
            let name = format!("t{r}-{i:02}");
            let data = format!("A round {r} top file {i} ")
                .repeat(10 + i)
                .into_bytes();
            put_file(&staging, &a.path(&name), &data);
            want.insert(name, data);
        }
        for i in 0..4 {
            let name = format!("r{r}/sub/s{i}");
            let data = format!("A round {r} sub {i} ").repeat(50).into_bytes();
            put_file(&staging, &a.path(&name), &data);
            want.insert(name.clone(), data);
            hands_off.insert(name);
        }
        if r % 2 == 0 {
            let name = format!("r{r}/big");
            let data = random_bytes(seed * 1000 + r as u64, 8 << 20);
            put_file(&staging, &a.path(&name), &data);
            want.insert(name, data);
        }
        if r > 0 {
            let old: Vec<String> = (want.keys())
                .filter(|k| k.starts_with('r') || k.starts_with('t'))
                .filter(|k| !k.starts_with(&format!("r{r}/")) && !k.starts_with(&format!("t{r}-")))
                .filter(|k| !hands_off.contains(*k) && !k.ends_with("big"))
                .cloned()
                .collect();
            for _ in 0..20.min(old.len()) {
                let k = &old[(rng.next_u64() % old.len() as u64) as usize];
                if a.path(k).is_file() {
                    let data = format!("A's rewrite in round {r} of {k} ")
                        .repeat(25)
                        .into_bytes();
                    put_file(&staging, &a.path(k), &data);
                    want.insert(k.clone(), data);
                }
            }
        }
        let wait_ms = 30 + rng.next_u64() % 700;
        std::thread::sleep(Duration::from_millis(wait_ms));
        let refused = count(&b, "Operation not permitted");
        b.kill();
        if held {
            assert!(chattr("-i", &ix) && chattr("-i", &jl));
        }
        let mut acted = Vec::new();
        // B's user while B is down, on what B has of this round.
        let have: Vec<String> = (want.keys())
            .filter(|k| k.starts_with(&format!("r{r}/f")) || k.starts_with(&format!("t{r}-")))
            .filter(|k| !hands_off.contains(*k))
            .filter(|k| b.path(k).is_file())
            .cloned()
            .collect();
        for k in &have {
            let p = b.path(k);
            match rng.next_u64() % 10 {
                0 | 1 => {
                    let mut d = read(&p).unwrap();
                    d.extend_from_slice(format!("B's edit while down, round {r}\n").as_bytes());
                    write_file(&p, &d);
                    // Half of them with an old mtime (a restore, `cp -p`).
                    if rng.next_u64().is_multiple_of(2) {
                        set_mtime(&p, 1_000_000_000 + rng.next_u64() % 1000);
                    }
                    want.insert(k.clone(), d);
                    acted.push(format!("edit {k}"));
                }
                2 => {
                    fs::remove_file(&p).unwrap();
                    want.remove(k);
                    acted.push(format!("rm {k}"));
                }
                3 => {
                    let to = format!("{k}.moved");
                    fs::rename(&p, b.path(&to)).unwrap();
                    let d = want.remove(k).unwrap();
                    want.insert(to.clone(), d);
                    hands_off.insert(to.clone());
                    acted.push(format!("mv {k}"));
                }
                4 => {
                    fs::remove_file(&p).unwrap();
                    want.remove(k);
                    let d = format!("B's file in the folder {k}").into_bytes();
                    write_file(&p.join("inner"), &d);
                    want.insert(format!("{k}/inner"), d);
                    acted.push(format!("to-folder {k}"));
                }
                _ => continue,
            }
            hands_off.insert(k.clone());
        }
        // A folder of the round before turned into a file, if B has it whole.
        if r > 0 {
            let sub = format!("r{}/sub", r - 1);
            let inside: Vec<String> = (want.keys())
                .filter(|k| k.starts_with(&format!("{sub}/")))
                .cloned()
                .collect();
            if !inside.is_empty()
                && inside.iter().all(|k| has_content(&b.path(k), &want[k]))
                && rng.next_u64().is_multiple_of(2)
            {
                fs::remove_dir_all(b.path(&sub)).unwrap();
                for k in &inside {
                    want.remove(k);
                }
                let d = format!("B's file in place of the folder {sub}").into_bytes();
                write_file(&b.path(&sub), &d);
                set_mtime(&b.path(&sub), 1_000_000_000);
                want.insert(sub.clone(), d);
                hands_off.insert(sub.clone());
                acted.push(format!("to-file {sub}"));
            }
        }
        // `.leftignore` changed while down (this round's ten files at the top ignored, A's
        // user leaves them alone), and removed again during the first scan, or while B is
        // down the next round.
        let mut unignore_now = false;
        if ignored.take().is_some() {
            fs::remove_file(b.path(".leftignore")).unwrap();
            acted.push("unignore while down".into());
        } else if rng.next_u64().is_multiple_of(2) {
            write_file(&b.path(".leftignore"), format!("t{r}-*\n"));
            for i in 0..10 {
                hands_off.insert(format!("t{r}-{i:02}"));
            }
            unignore_now = rng.next_u64().is_multiple_of(2);
            if !unignore_now {
                ignored = Some(r);
            }
            acted.push(format!("ignore (until the first scan: {unignore_now})"));
        }
        // A's user, while B is down, rewrites (or deletes) ten of this round's files B's user
        // left alone (B has them in its install log; A announces the new versions during B's
        // first scan); A itself is sometimes killed and comes back during B's first scan.
        let untouched: Vec<String> = (want.keys())
            .filter(|k| k.starts_with(&format!("r{r}/f")) && !hands_off.contains(*k))
            .filter(|k| k.matches('/').count() == 1)
            .cloned()
            .collect();
        for _ in 0..10.min(untouched.len()) {
            let k = &untouched[(rng.next_u64() % untouched.len() as u64) as usize];
            if hands_off.contains(k) {
                continue;
            }
            if rng.next_u64().is_multiple_of(3) {
                // Or deletes it.
                fs::remove_file(a.path(k)).unwrap();
                want.remove(k);
            } else {
                let data = format!("A's rewrite while B is down, round {r}, of {k} ")
                    .repeat(20)
                    .into_bytes();
                put_file(&staging, &a.path(k), &data);
                want.insert(k.clone(), data);
            }
            hands_off.insert(k.clone());
        }
        let a_down = rng.next_u64().is_multiple_of(3);
        if a_down {
            std::thread::sleep(Duration::from_millis(400));
            a.kill();
            acted.push("A killed".into());
        }
        b = Peer::start(&t, "B", pb, &[pa]);
        if unignore_now {
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 300));
            fs::remove_file(b.path(".leftignore")).unwrap();
        }
        if a_down {
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 300));
            a = Peer::start(&t, "A", pa, &[pb]);
        }
        // B's user, during B's first scan: three more edits, with an old mtime.
        let more: Vec<String> = (want.keys())
            .filter(|k| k.starts_with(&format!("r{r}/f")) && !hands_off.contains(*k))
            .filter(|k| k.matches('/').count() == 1 && b.path(k).is_file())
            .take(3)
            .cloned()
            .collect();
        for k in &more {
            if let Some(mut d) = read(&b.path(k)) {
                d.extend_from_slice(format!("B's edit at the restart, round {r}\n").as_bytes());
                write_file(&b.path(k), &d);
                set_mtime(&b.path(k), 1_000_000_000);
                want.insert(k.clone(), d);
                hands_off.insert(k.clone());
                acted.push(format!("edit-at-start {k}"));
            }
        }
        if rng.next_u64().is_multiple_of(3) {
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 500));
            b.kill();
            acted.push("killed again".into());
            b = Peer::start(&t, "B", pb, &[pa]);
        }
        eprintln!(
            "seed {seed} round {r}: killed after {wait_ms} ms ({refused} saves refused); {} acts; \
             {:?}",
            acted.len(),
            (acted.iter())
                .filter(|a| a.starts_with("to-file")
                    || a.starts_with("ig")
                    || a.starts_with("un")
                    || a.starts_with("kill")
                    || a.starts_with("A "))
                .collect::<Vec<_>>()
        );
        acted_all.extend(acted);
    }
    if ignored.is_some() {
        fs::remove_file(b.path(".leftignore")).unwrap();
    }
    write_file(&b.path("end"), "end");
    want.insert("end".into(), b"end".to_vec());
    let ok = wait_until(Duration::from_secs(90), || {
        tree_diff(&a.dir, &b.dir).is_none() && a.path("end").is_file()
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = contents(&b.dir);
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let wrong: Vec<&String> = (want.iter())
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .collect();
    let what = |ks: &[&String]| -> Vec<String> {
        ks.iter()
            .take(8)
            .map(|k| {
                let acts: Vec<&String> = (acted_all.iter())
                    .filter(|x| {
                        x.ends_with(k.as_str()) || k.starts_with(x.split(' ').nth(1).unwrap_or("-"))
                    })
                    .collect();
                format!("{k} {acts:?}")
            })
            .collect()
    };
    // One more file from A: its install and the index save after it empty the install log.
    write_file(&a.path("last"), "last");
    let took = wait_until(SOON, || b.path("last").is_file());
    let log = b.path(".left/installs");
    let emptied = wait_until(Duration::from_secs(15), || {
        fs::metadata(&log).map_or(0, |m| m.len()) == 0
    });
    assert!(
        ok && missing.is_empty()
            && extra.is_empty()
            && wrong.is_empty()
            && temps(&b.dir).is_empty()
            && took
            && emptied,
        "seed {seed}: converged {ok} ({:?}); missing on B {:?}; extra on B (resurrected or \
         conflict copies) {:?}; wrong content {:?}; temp files {:?}; last file taken {took}, \
         install log emptied {emptied}\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        what(&missing),
        what(&extra),
        what(&wrong),
        temps(&b.dir),
        tail(&b.log_text(), 20)
    );
}

#[test]
fn random_kills_with_type_and_ignore_changes_seed_1() {
    random_kills_with_type_and_ignore_changes(1, false);
}

#[test]
fn random_kills_with_type_and_ignore_changes_seed_2() {
    random_kills_with_type_and_ignore_changes(2, false);
}

#[test]
fn random_kills_with_type_and_ignore_changes_seed_3() {
    random_kills_with_type_and_ignore_changes(3, false);
}

/// No crash: A and B share `sub/x0`..`sub/x9`; B's user ignores `sub/x*` (`.leftignore`,
/// which reaches A), edits `sub/x0`..`sub/x4` on B, then removes `.leftignore`. Expected: the
/// edits, no longer ignored, reach A soon (within 30 s), as a file edited at the top of the
/// share does.
///
/// Failed 6 runs of 6: the files at the top reached A, those in `sub/` did not within 30 s;
/// a new file made in `sub/` afterwards (a scan lists `sub/`) sent them within 20 s.
///
/// Suspected cause: a `.leftignore` change makes no full scan (`load_ignore`,
/// src/scan/scanner.rs:1012-1035, restarts the connections only); the scan its event causes
/// lists the top, and walks a known, watched folder only if inotify named it
/// (src/scan/scanner.rs:502-503). The changes made in `sub/` while ignored made their events
/// then (skipped as ignored), none since: they wait for the full rescan every 600 s
/// (src/daemon.rs:27) or a restart. Meanwhile `left status` can say "in sync".
/// Fixed: a change of the ignore patterns makes the next scan walk every folder, at once.
#[test]
fn files_edited_while_ignored_in_a_subfolder_sync_once_unignored() {
    let t = TestDir::new("r21-unignore-subfolder");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    for i in 0..10 {
        write_file(&a.path(&format!("sub/x{i}")), format!("A's x{i}"));
        write_file(&a.path(&format!("y{i}")), format!("A's y{i}"));
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    write_file(&b.path(".leftignore"), "sub/x*\ny*\n");
    assert!(wait_until(SOON, || a.path(".leftignore").is_file()));
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..5 {
        write_file(
            &b.path(&format!("sub/x{i}")),
            format!("B's edit of x{i} while ignored"),
        );
        write_file(
            &b.path(&format!("y{i}")),
            format!("B's edit of y{i} while ignored"),
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    fs::remove_file(b.path(".leftignore")).unwrap();
    assert!(wait_until(SOON, || !a.path(".leftignore").exists()));
    let at = |p: &str| {
        (0..5).all(|i| {
            has_content(
                &a.path(&format!("{p}{i}")),
                format!(
                    "B's edit of {}{i} while ignored",
                    p.trim_start_matches("sub/")
                )
                .as_bytes(),
            )
        })
    };
    let ok = wait_until(Duration::from_secs(30), || at("sub/x") && at("y"));
    let (top, sub, diff) = (at("y"), at("sub/x"), tree_diff(&a.dir, &b.dir));
    // Diagnosis: whether a new file in sub/ (an event there: a scan lists sub/) ends it.
    let later = ok || {
        write_file(&b.path("sub/poke"), "a new file in sub/");
        wait_until(Duration::from_secs(20), || at("sub/x"))
    };
    eprintln!("top: {top}, sub: {sub}, after a new file in sub/: {later}");
    assert!(
        ok,
        "30 s after the un-ignore, B's edits made while ignored on A: at the top {top}, in sub/ \
         {sub} ({diff:?}); once a file is made in sub/: {later}\nB:\n{}",
        tail(&b.log_text(), 10)
    );
}

#[test]
fn random_kills_with_saves_held_seed_1() {
    random_kills_with_type_and_ignore_changes(1, true);
}

#[test]
fn random_kills_with_saves_held_seed_2() {
    random_kills_with_type_and_ignore_changes(2, true);
}

/// A 32 MiB pull cut by a kill of B (its temp file holds at least 8 MiB); while B is down,
/// B's user overwrites 4 KiB in the middle of what the temp file holds and puts its mtime
/// back (as a program that edits in place and restores times would). B restarts and resumes.
/// Expected: B's `big` is A's, byte for byte (a resumed temp file is verified block by
/// block, whatever its stat says); no conflict copy.
///
/// Passes (3 runs): what held up.
#[test]
fn a_temp_file_changed_while_b_is_down_is_verified_on_resume() {
    let t = TestDir::new("r21-resume-corrupt");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    let throttle = Throttle::new(
        b.pid().unwrap(),
        Duration::from_millis(20),
        Duration::from_millis(80),
    );
    write_random(&t.join("staging/big"), 32 << 20, 2130);
    fs::rename(t.join("staging/big"), a.path("big")).unwrap();
    let tmp = b.path(".big.left-tmp");
    let cut = wait_until(SOON, || {
        fs::metadata(&tmp).is_ok_and(|m| m.len() >= 8 << 20)
    });
    b.kill();
    drop(throttle);
    assert!(
        cut && tmp.exists(),
        "no temp file of 8 MiB left by the kill"
    );
    let md = fs::metadata(&tmp).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&tmp).unwrap();
    f.write_all_at(&[0xEE; 4096], (md.len() / 2) & !4095)
        .unwrap();
    f.set_modified(md.modified().unwrap()).unwrap();
    drop(f);
    let b = Peer::start(&t, "B", pb, &[pa]);
    let ok = wait_until(SOON, || {
        same_file(&a.path("big"), &b.path("big")).unwrap_or(false)
    });
    std::thread::sleep(Duration::from_secs(1));
    let same = tree_diff(&a.dir, &b.dir).is_none()
        && same_file(&a.path("big"), &b.path("big")).unwrap_or(false);
    assert!(
        ok && same && conflicts(&b.dir).is_empty(),
        "B's big is A's after resuming a temp file changed while B was down: {ok}, then {same} \
         ({:?}); conflict copies {:?}\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        conflicts(&b.dir),
        tail(&b.log_text(), 10)
    );
}

/// A type change A's user makes, B takes (its index saves held off: only the install log has
/// it) and B's user undoes while B is down. `to_file`: A replaces the folder `d` (five files)
/// by a file `d`; B's user removes the file and makes the folder `d` again with a new file
/// `d/y`. Else: A replaces the file `d` by a folder `d` holding `d/x0`..`d/x4`; B's user
/// removes the folder and writes a file `d` again. B restarts. Expected: B's user's change
/// (made after B received A's) replaces A's on A: A and B identical within 30 s with B's
/// content, no conflict copy.
///
/// Folder back into a file (`to_file` false): passes (4 runs).
///
/// File back into a folder (`to_file` true): failed 7 runs of 7. B's restart logs `d:
/// received before the last stop, not settled yet` and `changed locally: d/y`; B's index
/// then holds A's file `d` (no stat) and `d/y` under it, and A logs `d/y: not synced yet:
/// .../A/d/.y.left-tmp: Not a directory` every 5 s. A and B stay different (A: file `d`; B:
/// folder `d/y`) until a scan lists B's top again: a new file made there ended it within
/// 20 s (else the 600 s full rescan). No conflict copy.
///
/// Suspected cause: the first scan finds a folder at `d` whose mode is the index's (the
/// index still has the folder, saved before A's type change): `FolderSeen::Known`
/// (src/scan/scanner.rs:502) takes nothing from the install log, and at its end
/// `record_unsettled` (src/scan/scanner.rs:647, :764) records the done file install at `d`
/// over the folder the walk found there and walked, without looking at what is on disk. The
/// later scans walk `d` as a folder the index does not have as one only once the top is
/// listed again.
/// Fixed: a folder the first scan finds as the index has it, where a done install put
/// something else, is a change of that install (`scanner::done_over`).
fn a_received_type_change_undone_while_down(to_file: bool) {
    let t = TestDir::new(&format!("r21-retype-back-{to_file}"));
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    if to_file {
        for i in 0..5 {
            write_file(&a.path(&format!("d/x{i}")), format!("A's x{i}"));
        }
    } else {
        write_file(&a.path("d"), "A's file d");
    }
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    let (ix, jl) = (b.path(".left/index"), b.path(".left/index.log"));
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    let got = if to_file {
        fs::remove_dir_all(a.path("d")).unwrap();
        write_file(&a.path("d"), "A's file in place of the folder d");
        wait_until(SOON, || {
            has_content(&b.path("d"), b"A's file in place of the folder d")
        })
    } else {
        fs::remove_file(a.path("d")).unwrap();
        for i in 0..5 {
            write_file(
                &a.path(&format!("d/x{i}")),
                format!("A's x{i} in place of the file d"),
            );
        }
        wait_until(SOON, || {
            (0..5).all(|i| b.path(&format!("d/x{i}")).is_file())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(
        got,
        "B did not take A's change\nB:\n{}",
        tail(&b.log_text(), 10)
    );
    let (mine, want): (&str, &[u8]) = if to_file {
        fs::remove_file(b.path("d")).unwrap();
        write_file(&b.path("d/y"), "B's new file in the folder d made again");
        ("d/y", b"B's new file in the folder d made again")
    } else {
        fs::remove_dir_all(b.path("d")).unwrap();
        write_file(&b.path("d"), "B's file d made again");
        ("d", b"B's file d made again")
    };
    let b = Peer::start(&t, "B", pb, &[pa]);
    let ok = wait_until(Duration::from_secs(30), || {
        has_content(&a.path(mine), want) && tree_diff(&a.dir, &b.dir).is_none()
    });
    let c = conflicts(&a.dir);
    let diff = tree_diff(&a.dir, &b.dir);
    // Diagnosis: whether a scan that lists the top of B's share (a new file there) ends it.
    let later = ok || {
        write_file(&b.path("poke"), "a new file at the top of B's share");
        wait_until(Duration::from_secs(20), || {
            has_content(&a.path(mine), want) && tree_diff(&a.dir, &b.dir).is_none()
        })
    };
    assert!(
        ok && c.is_empty(),
        "to a file {to_file}: B's user's undoing while down, over A's type change it had \
         received: on A within 30 s: {ok} ({diff:?}); conflict copies {c:?}; once a file is \
         made at the top of B's share: {later}\nB:\n{}\nA:\n{}",
        tail(&b.log_text(), 12),
        tail(&a.log_text(), 4)
    );
}

#[test]
fn a_received_file_turned_back_into_a_folder_while_down_wins() {
    a_received_type_change_undone_while_down(true);
}

#[test]
fn a_received_folder_turned_back_into_a_file_while_down_wins() {
    a_received_type_change_undone_while_down(false);
}

/// A crash between an install's done record and its rename, made by hand: B takes A's new
/// version of `f` (256 KiB, its index saves held off: the install log has the entry and its
/// done record), is killed, and the rename is undone: the new version goes back to the temp
/// name (complete, its size and mtime the entry's) and the old content is put back at `f`
/// with its old mtime. B restarts (`Logged::done_last`, src/daemon.rs: the done install is
/// dropped, the pull resumes from the temp file). Expected: B's `f` is A's new version, no
/// conflict copy, no temp file left, A unchanged.
///
/// Passes (3 runs each, `twice` or not): what held up.
///
/// With `twice`, B takes two new versions of A's in a row (both logged and done), and the
/// last one's rename is undone: `f` gets the first new version back (with its mtime), which
/// B must take as A's (the install done before), not as an edit of B's user.
fn cut_between_done_and_rename(twice: bool) {
    let t = TestDir::new(&format!("r21-done-not-renamed-{twice}"));
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let old = random_bytes(2140, 256 << 10);
    write_file(&a.path("f"), &old);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    let old_mtime = fs::metadata(b.path("f")).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (ix, jl) = (b.path(".left/index"), b.path(".left/index.log"));
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    let (mut old, mut old_mtime) = (old, old_mtime);
    if twice {
        let first = random_bytes(2142, 256 << 10);
        put_file(&t.join("staging"), &a.path("f"), &first);
        assert!(wait_until(SOON, || has_content(&b.path("f"), &first)));
        std::thread::sleep(Duration::from_millis(300));
        (old, old_mtime) = (
            first,
            fs::metadata(b.path("f")).unwrap().modified().unwrap(),
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let new = random_bytes(2141, 256 << 10);
    put_file(&t.join("staging"), &a.path("f"), &new);
    let got = wait_until(SOON, || has_content(&b.path("f"), &new));
    std::thread::sleep(Duration::from_millis(500));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(got, "B did not take A's new f");
    fs::rename(b.path("f"), b.path(".f.left-tmp")).unwrap();
    write_file(&b.path("f"), &old);
    fs::File::options()
        .write(true)
        .open(b.path("f"))
        .unwrap()
        .set_modified(old_mtime)
        .unwrap();
    let b = Peer::start(&t, "B", pb, &[pa]);
    let ok = wait_until(SOON, || {
        has_content(&b.path("f"), &new) && !b.path(".f.left-tmp").exists()
    });
    std::thread::sleep(Duration::from_secs(2));
    let c = conflicts(&b.dir);
    assert!(
        ok && c.is_empty() && has_content(&a.path("f"), &new) && has_content(&b.path("f"), &new),
        "twice {twice}: B's f A's new version, its temp file gone: {ok}; A's f still A's new \
         version: {}; \
         conflict copies {c:?}\nB:\n{}",
        has_content(&a.path("f"), &new),
        tail(&b.log_text(), 12)
    );
}

#[test]
fn an_install_cut_between_its_done_record_and_its_rename_resumes() {
    cut_between_done_and_rename(false);
}

#[test]
fn the_second_install_cut_between_its_done_record_and_its_rename_resumes() {
    cut_between_done_and_rename(true);
}

/// A's user changes the mode of folder `d` (with `folder`; else of file `d/x`) from 0755 to
/// 0750; B applies it (its index saves held off: only the install log has it) and is killed.
/// While B is down, B's user puts the mode back (0755). B restarts. Expected: B's user's
/// chmod, made after B received A's, wins: 0755 on A and B within 30 s.
///
/// File (`d/x`): passes (3 runs): the logged install makes the scan hash it, and the mode
/// change is a new version over A's.
///
/// Folder (`d`): failed 3 runs of 3: 0750 on A and B; B's restart logs nothing about `d`
/// and silently applies A's 0750 again: B's user's chmod is lost.
///
/// Suspected cause: the folder's mode is the one B's (unsaved-since) index has, so the first
/// scan sees `FolderSeen::Known` (src/scan/scanner.rs:502), which ignores the done mode
/// install in the log (`ModeChanged` would `take_done`, :473-500); at its end the log is
/// dropped (`record_unsettled` skips folders, :765; then :650-651), the index keeps the old
/// version, and A's newer one is pulled again over the user's change.
/// Fixed: a folder the first scan finds as the index has it, where a done install put
/// another mode, is a change of that install (`scanner::done_over`).
fn a_received_mode_changed_back_while_down(folder: bool) {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new(&format!("r21-mode-back-{folder}"));
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("d/x"), "x");
    let it = if folder { "d" } else { "d/x" };
    fs::set_permissions(a.path(it), fs::Permissions::from_mode(0o755)).unwrap();
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(wait_until(SOON, || mode_of(&b.path(it)) == 0o755));
    assert!(b.wait_log(SOON, "index written"));
    let (ix, jl) = (b.path(".left/index"), b.path(".left/index.log"));
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    fs::set_permissions(a.path(it), fs::Permissions::from_mode(0o750)).unwrap();
    let got = wait_until(SOON, || mode_of(&b.path(it)) == 0o750);
    std::thread::sleep(Duration::from_millis(500));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(got, "B did not take A's mode");
    fs::set_permissions(b.path(it), fs::Permissions::from_mode(0o755)).unwrap();
    let b = Peer::start(&t, "B", pb, &[pa]);
    let ok = wait_until(Duration::from_secs(30), || {
        mode_of(&a.path(it)) == 0o755 && mode_of(&b.path(it)) == 0o755
    });
    std::thread::sleep(Duration::from_secs(2));
    let (ma, mb) = (mode_of(&a.path(it)), mode_of(&b.path(it)));
    assert!(
        ok && ma == 0o755 && mb == 0o755,
        "{it}: B's user's chmod back to 0755 while down, over A's 0750 it had received: on A \
         {ma:o}, \
         on B {mb:o}\nB:\n{}",
        tail(&b.log_text(), 10)
    );
}

#[test]
fn a_received_folder_mode_changed_back_while_down_wins() {
    a_received_mode_changed_back_while_down(true);
}

#[test]
fn a_received_file_mode_changed_back_while_down_wins() {
    a_received_mode_changed_back_while_down(false);
}
