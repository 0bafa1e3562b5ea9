//! Attacks on the share's files (issue 18): a hard link planted at a temp file's name, a
//! set-uid mode announced by a peer. The peer is played by the test (`FakePeer`, speaking the
//! wire protocol by hand); the local user's moves are made between the daemon's steps.

mod common;

use common::wire::{self, Entry as WEntry};
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// `outside/f` hard-linked at the temp name of `x`, then a peer announces `x` with mode 4755:
/// the outside file keeps its bytes and its mode, and `x` arrives, 0755.
#[test]
fn a_hard_link_at_a_temp_name_is_not_written_through() {
    let t = TestDir::new("hardlink-temp");
    let (mut b, listed) = victim(&t);
    let outside = t.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let victim_data = b"outside the share: must never change\n".to_vec();
    fs::write(outside.join("f"), &victim_data).unwrap();
    fs::set_permissions(outside.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(wait_until(SOON, || b.path(".left").is_dir()));
    fs::hard_link(outside.join("f"), b.path(".x.left-tmp")).unwrap();

    let data = random_bytes(5, 100_000);
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_1001, listed);
    f.offer("x", data.clone());
    let mut e = WEntry::file("x", &data, f.device, 1);
    e.mode = 0o4755;
    assert!(f.send(&wire::index(1, &[e])));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    assert!(
        wait_until(SOON, || has_content(&b.path("x"), &data)),
        "x never arrived:\n{}",
        tail(&b.log_text(), 20)
    );
    assert_eq!(fs::read(outside.join("f")).unwrap(), victim_data);
    assert_eq!(mode_of(&outside.join("f")), 0o600);
    assert_eq!(mode_of(&b.path("x")), 0o755, "set-uid taken from a peer");
    assert!(b.alive());
}

/// A peer announces set-uid and set-gid files and a sticky folder: none of those bits is set.
#[test]
fn special_mode_bits_from_a_peer_are_never_set() {
    let t = TestDir::new("setuid");
    let (mut b, listed) = victim(&t);
    assert!(wait_until(SOON, || b.path(".left").is_dir()));
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_1002, listed);
    let data = b"#!/bin/sh\necho owned\n".to_vec();
    f.offer("d/run", data.clone());
    let mut e = WEntry::file("d/run", &data, f.device, 1);
    e.mode = 0o6755;
    let mut d = WEntry::dir("d", f.device, 1);
    d.mode = 0o1777;
    assert!(f.send(&wire::index(1, &[d, e])));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    assert!(wait_until(SOON, || has_content(&b.path("d/run"), &data)));
    assert_eq!(mode_of(&b.path("d/run")), 0o755);
    assert_eq!(mode_of(&b.path("d")) & 0o7000, 0);
    assert!(b.alive());
}
