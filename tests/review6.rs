//! Sixth review: failing tests for today's changes (91c0028's metadata-only apply, 62e4bcd,
//! 2f68d3b). Each runs real daemons on 127.0.0.1.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// A peer's chmod applied as metadata only (91c0028) is not in the install log: B killed
/// before its index is saved comes back with a file whose mode is not its index's, takes it
/// for a local edit (a new version of B's own, concurrent with everything A made after the
/// chmod), and A's deletion of the file made meanwhile loses to that "edit": the deleted file
/// comes back. A pull of the same version would have been logged ahead and adopted ("received
/// before the last stop"), as `a_kill_right_after_a_file_arrives_makes_no_conflict` checks.
#[test]
fn a_kill_right_after_a_metadata_only_apply_brings_back_no_deletion() {
    let t = TestDir::new("r6-meta-kill");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let mut back = Vec::new();
    for round in 0..4u64 {
        let name = format!("f{round}");
        fs::write(a.path(&name), random_bytes(round + 100, 3000)).unwrap();
        fs::set_permissions(a.path(&name), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(wait_until(SOON, || b.path(&name).exists()
            && fs::read(b.path(&name)).ok() == fs::read(a.path(&name)).ok()
            && mode_or_zero(&b.path(&name)) == 0o644));
        // Let B's index be saved with the file as it is now.
        std::thread::sleep(Duration::from_millis(800));
        fs::set_permissions(a.path(&name), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(spin_until(SOON, || mode_or_zero(&b.path(&name)) == 0o600));
        b.kill();
        fs::remove_file(a.path(&name)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        b = Peer::start(&t, "B", pb, &[pa]);
        std::thread::sleep(Duration::from_millis(300));
        wait_identical(&a.dir, &b.dir, SOON);
        if a.path(&name).exists() {
            back.push(name);
        }
    }
    assert!(
        back.is_empty(),
        "deleted on A, back after B's kill: {back:?}\n{}",
        tail(&b.log_text(), 20)
    );
}

/// A file of the share that is also linked outside it (a hard link made by a user: a file kept
/// in both places, or one planted by whoever can write the share) gets a peer's chmod through
/// the shared inode since 91c0028: `disk::set_meta` changes the mode (and mtime) of the file
/// outside the share, where a pull (a new file renamed into place) left it alone, as it
/// leaves its content alone. A peer (or a hostile one: a Newer version with our blocks is
/// all it takes) can so make a file outside the share world-writable.
#[test]
fn a_peers_chmod_never_reaches_a_file_outside_the_share() {
    let t = TestDir::new("r6-meta-link");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::write(a.path("f"), b"a file kept in two places").unwrap();
    fs::set_permissions(a.path("f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(wait_until(SOON, || mode_or_zero(&b.path("f")) == 0o600));
    std::thread::sleep(Duration::from_millis(500));
    let outside = t.join("outside-the-share");
    fs::hard_link(b.path("f"), &outside).unwrap();
    fs::set_permissions(a.path("f"), fs::Permissions::from_mode(0o666)).unwrap();
    assert!(wait_until(SOON, || mode_or_zero(&b.path("f")) == 0o666));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        mode_or_zero(&outside),
        0o600,
        "the file outside the share took the peer's mode"
    );
}

/// A file a peer renamed is moved here to the new name's temp file and installed as it is
/// (its blocks taken as the index knows them). 2f68d3b checks, when it is complete, that it
/// still has the moved file's stat; a write through a descriptor a user opened before the move,
/// landing after that check (while the install's filesystem sync runs, here made slow by other
/// dirty data), is installed: B's `g` holds the user's bytes, its index A's content with the
/// stat after the write, and the write's event named the temp file, which the scanner ignores.
/// B never sees the change: the two copies differ for good (while the writer keeps its file
/// open, or until something else touches `g`), and C, which knows only B, never gets `g`
/// (every block B serves fails its MD5, retried every 5 s for ever).
#[test]
fn a_write_through_an_open_descriptor_to_a_moved_file_is_never_installed_unseen() {
    use std::io::{Seek, SeekFrom, Write};
    let t = TestDir::new("r6-moved-write");
    let (pa, pb) = two_ports();
    let pc = free_port();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa, pc]);
    // C knows only B (a chain): it can get `g` from B alone.
    let c = Peer::start(&t, "C", pc, &[pb]);
    let mut differ = Vec::new();
    let mut writers = Vec::new();
    for round in 0..4u64 {
        let (f, g) = (format!("f{round}"), format!("g{round}"));
        write_random(&a.path(&f), 2 << 20, 500 + round);
        assert!(wait_until(SOON, || read(&b.path(&f)).is_some()
            && read(&b.path(&f)) == read(&a.path(&f))));
        std::thread::sleep(Duration::from_millis(800));
        // A user's program on B holds the file open for writing.
        let mut w = fs::OpenOptions::new().write(true).open(b.path(&f)).unwrap();
        // Other dirty data written meanwhile on the same filesystem: the install's syncfs
        // takes a while.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let junk = {
            let (stop, path) = (stop.clone(), t.join(&format!("junk{round}")));
            std::thread::spawn(move || {
                let mut j = fs::File::create(&path).unwrap();
                let chunk = random_bytes(900, 1 << 20);
                for _ in 0..256 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    j.write_all(&chunk).unwrap();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        fs::rename(a.path(&f), a.path(&g)).unwrap();
        let tmp = b.path(&format!(".{g}.left-tmp"));
        assert!(spin_until(SOON, || tmp.exists() || b.path(&g).exists()));
        std::thread::sleep(Duration::from_millis(3));
        w.seek(SeekFrom::Start(0)).unwrap();
        w.write_all(&random_bytes(700 + round, 4096)).unwrap();
        writers.push(w);
        assert!(wait_until(SOON, || b.path(&g).exists()));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        junk.join().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let _ = fs::remove_file(t.join(&format!("junk{round}")));
        if read(&a.path(&g)) != read(&b.path(&g)) {
            differ.push(g);
        }
    }
    // C asks B for blocks B's index has and its file does not hold: every answer fails its
    // MD5 check, and C never gets the file.
    let stuck: Vec<String> = differ
        .iter()
        .filter(|g| !wait_until(Duration::from_secs(15), || c.path(g).exists()))
        .cloned()
        .collect();
    assert!(
        differ.is_empty(),
        "A's and B's copies differ for good: {differ:?}; C never got {stuck:?}\n{}",
        tail(&c.log_text(), 10)
    );
}

/// A write through a descriptor opened before a peer's rename, landing after the file was
/// moved to the new name's temp file and before 2f68d3b's check: the check sends the file
/// back to be pulled again, and the blocks the user wrote are replaced by the peer's. The
/// user's write is then nowhere: not at the old name (deleted, as the peer renamed it), not
/// at the new one, not in a conflict copy. (A write before the move keeps the old file as a
/// local edit, which wins over the peer's deletion.)
#[test]
fn a_write_to_a_file_while_it_is_moved_for_a_peers_rename_is_kept_somewhere() {
    use std::io::{Seek, SeekFrom, Write};
    let t = TestDir::new("r6-moved-lost");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    let mut lost = Vec::new();
    let mut writers = Vec::new();
    for round in 0..8u64 {
        let (f, g) = (format!("f{round}"), format!("g{round}"));
        write_random(&a.path(&f), 2 << 20, 500 + round);
        assert!(wait_until(SOON, || read(&b.path(&f)).is_some()
            && read(&b.path(&f)) == read(&a.path(&f))));
        std::thread::sleep(Duration::from_millis(600));
        let mut w = fs::OpenOptions::new().write(true).open(b.path(&f)).unwrap();
        fs::rename(a.path(&f), a.path(&g)).unwrap();
        let tmp = b.path(&format!(".{g}.left-tmp"));
        let end = Instant::now() + SOON;
        while !tmp.exists() && !b.path(&g).exists() && Instant::now() < end {}
        let mine = random_bytes(700 + round, 4096);
        w.seek(SeekFrom::Start(0)).unwrap();
        w.write_all(&mine).unwrap();
        writers.push(w);
        assert!(wait_until(SOON, || b.path(&g).exists() && !tmp.exists()));
        std::thread::sleep(Duration::from_millis(1500));
        let somewhere = [&a.dir, &b.dir].iter().any(|d| {
            listing(d)
                .unwrap_or_default()
                .iter()
                .any(|(p, _)| read(&d.join(p)).is_some_and(|x| x.starts_with(&mine)))
        });
        if !somewhere {
            lost.push(g);
        }
    }
    assert!(
        lost.is_empty(),
        "the user's write is in no file of either share: {lost:?}\n{}",
        tail(&b.log_text(), 30)
    );
}
