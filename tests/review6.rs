//! Sixth review: failing tests for today's changes (91c0028's metadata-only apply, 62e4bcd,
//! 2f68d3b). Each runs real daemons on 127.0.0.1.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).map_or(0, |m| m.mode() & 0o7777)
}

/// Polls every millisecond (`wait_until` polls every 50 ms: too slow to beat a 0.25 s save).
fn spin_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

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
            && mode_of(&b.path(&name)) == 0o644));
        // Let B's index be saved with the file as it is now.
        std::thread::sleep(Duration::from_millis(800));
        fs::set_permissions(a.path(&name), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(spin_until(SOON, || mode_of(&b.path(&name)) == 0o600));
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
    assert!(wait_until(SOON, || mode_of(&b.path("f")) == 0o600));
    std::thread::sleep(Duration::from_millis(500));
    let outside = t.join("outside-the-share");
    fs::hard_link(b.path("f"), &outside).unwrap();
    fs::set_permissions(a.path("f"), fs::Permissions::from_mode(0o666)).unwrap();
    assert!(wait_until(SOON, || mode_of(&b.path("f")) == 0o666));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        mode_of(&outside),
        0o600,
        "the file outside the share took the peer's mode"
    );
}
