//! Tenth review: failing tests for the newest fixes (9103b71 moves read before they are taken,
//! 03c0c79 own temp names, 82d9411 the wait for a parent folder while the pass is open,
//! 8b246ca/dae21b7/425ec5f). All three defects are one hole left by 82d9411: a folder that
//! `transfer::open_temp` makes (0755) for a pulled file is scanned as a new folder of ours,
//! and its mode wins on every peer, wherever the wait does not apply. Runs real daemons on
//! 127.0.0.1.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// 82d9411 makes a file whose folder we do not hold wait for the folder's entry, so that the
/// folder is not made here (0755) and scanned as a new folder of ours. It trusts the index:
/// a folder the index still has live, but that a user removed here and no scan has seen yet,
/// does not hold the file back. Sequence: A and B hold `d` (mode 0700) with `d/a`. B is
/// stopped; `rm -rf d` on B; A adds `d/f`. B starts with a large new file to hash, so its first
/// scan (which would record `d` gone) is still running when A's `d/f` comes: B's index has `d`
/// live, the pull goes, `transfer::open_temp` makes `d` with mode 0755. The scan then finds `d`
/// there ("created since the folder was read"), and the next one records `d`'s mode 0755 as a
/// chmod made on B, newer than A's `d`: A's private folder is made 0755 on every peer, a mode
/// no user set anywhere (the review9 defect, through another door).
#[test]
fn a_folder_removed_here_unscanned_is_not_remade_with_a_mode_of_its_own() {
    let t = TestDir::new("r10-parent-removed");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir(a.path("d")).unwrap();
    fs::write(a.path("d/a"), b"a").unwrap();
    fs::set_permissions(a.path("d"), fs::Permissions::from_mode(0o700)).unwrap();
    assert!(wait_until(SOON, || b.path("d/a").exists()
        && mode_or_zero(&b.path("d")) == 0o700));
    std::thread::sleep(Duration::from_millis(1500));
    b.terminate(Duration::from_secs(10));
    fs::remove_dir_all(b.path("d")).unwrap();
    // A new file for B's first scan to hash: that scan records `d` gone only at its end.
    let big = fs::File::create(b.path("big")).unwrap();
    big.set_len(3 << 30).unwrap();
    drop(big);
    fs::write(a.path("d/f"), b"new in d").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let b = Peer::start(&t, "B", pb, &[pa]);
    assert!(wait_until(SOON, || b.path("d/f").exists()));
    std::thread::sleep(Duration::from_secs(8));
    let (ma, mb) = (mode_or_zero(&a.path("d")), mode_or_zero(&b.path("d")));
    assert!(
        ma == 0o700 && mb == 0o700,
        "d's mode: A {ma:o}, B {mb:o} (0700 everywhere, no user chmodded it)\nB:\n{}",
        tail(&b.log_text(), 30)
    );
}

/// 82d9411's wait lasts only while the pass is open. A folder's entry that waits on disk
/// (`--max-pending`) when the pass closes is neither held nor in the batch, and the files
/// in it go: `transfer::open_temp` makes the folder 0755, B's scan records it as a new folder
/// of its own ("new folder d/"), concurrent with A's and newer, and its mode wins on every
/// peer. Sequence: A holds `d` (0700) with 12 files; its index is written whole; the 12 files
/// are then changed (so they are announced first, from memory, and `d` after them, from the
/// base by path). B, new, runs with `--max-pending 2`: `d/f00`, `d/f01` are kept in memory,
/// the rest, `d` among them, wait on disk; the pass is complete with that one frame, so
/// `d/f00` is pulled before `d`'s entry is back in memory. A's private folder ends up 0755 on
/// both peers, a mode no user set.
#[test]
fn a_folder_entry_waiting_on_disk_does_not_lose_its_mode() {
    let t = TestDir::new("r10-parent-on-disk");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    fs::create_dir(a.path("d")).unwrap();
    for i in 0..12 {
        fs::write(a.path(&format!("d/f{i:02}")), b"first").unwrap();
    }
    fs::set_permissions(a.path("d"), fs::Permissions::from_mode(0o700)).unwrap();
    assert!(a.wait_log(SOON, "index written whole"));
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..12 {
        fs::write(a.path(&format!("d/f{i:02}")), b"second").unwrap();
    }
    assert!(wait_until(SOON, || a
        .log_text()
        .matches("changed locally: d/f")
        .count()
        >= 24));
    std::thread::sleep(Duration::from_millis(1000));
    let b = Peer::start_with(&t, "B", pb, &[pa], &["--max-pending", "2"]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(4));
    let (ma, mb) = (mode_or_zero(&a.path("d")), mode_or_zero(&b.path("d")));
    assert!(
        ma == 0o700 && mb == 0o700,
        "d's mode: A {ma:o}, B {mb:o} (0700 everywhere, no user chmodded it)\nB:\n{}",
        tail(&b.log_text(), 30)
    );
}

/// The wait of 82d9411 covers a folder whose entry is on its way; where our deletion of the
/// folder is newer than the peer's folder entry, none is, and the file goes once the pass is
/// complete: `transfer::open_temp` makes the folder 0755 and B's scan records it as a new
/// folder of B's, newer than everything. Sequence: A and B hold `d` (0700) with `d/a`. A is
/// stopped; on B `rm -rf d` (scanned: `d/a`, `d` deleted); A, stopped, gets `d/f`. A starts:
/// it takes B's deletions, keeps `d` for the file the deletion did not know of ("d/ stays"),
/// with its mode 0700 and a version newer than both; B meanwhile pulled `d/f` (its pass
/// complete, `d` deleted here), made `d` 0755, refuses A's `d` ("a folder made locally is in
/// the way"), and its scan logs "new folder d/" (0755), which wins on A too. The folder kept
/// on A, whose mode no one changed, is made 0755 on every peer.
#[test]
fn a_folder_kept_for_a_new_file_keeps_its_mode() {
    let t = TestDir::new("r10-kept-folder");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir(a.path("d")).unwrap();
    fs::write(a.path("d/a"), b"a").unwrap();
    fs::set_permissions(a.path("d"), fs::Permissions::from_mode(0o700)).unwrap();
    assert!(wait_until(SOON, || b.path("d/a").exists()
        && mode_or_zero(&b.path("d")) == 0o700));
    std::thread::sleep(Duration::from_millis(1500));
    a.terminate(Duration::from_secs(10));
    fs::remove_dir_all(b.path("d")).unwrap();
    assert!(b.wait_log(SOON, "deleted locally: d"));
    fs::write(a.path("d/f"), b"new in d").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let a = Peer::start(&t, "A", pa, &[pb]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(4));
    let (ma, mb) = (mode_or_zero(&a.path("d")), mode_or_zero(&b.path("d")));
    assert!(
        ma == 0o700 && mb == 0o700,
        "d's mode: A {ma:o}, B {mb:o} (0700 everywhere, no user chmodded it)\nB:\n{}",
        tail(&b.log_text(), 30)
    );
}
