//! Histories that once broke `left` (issue 17): a block request for what became a folder, type
//! changes concurrent with edits, a tombstone under a file, conflict copies with one name, temp
//! files left behind, folder modes, kills right after files arrive, and a status that said "in
//! sync" too early. Each test replays its history with real daemons and checks the end state.

mod common;

use common::wire;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// The contents of every file of a share, conflict copies included.
fn contents(root: &Path) -> Vec<Vec<u8>> {
    listing(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s.is_some())
        .filter_map(|(p, _)| fs::read(root.join(p)).ok())
        .collect()
}

/// Temp files anywhere in a share.
fn temp_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_dir() && name != ".left" {
                stack.push(e.path());
            } else if is_temp(&name) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Waits until every share is identical to the first and holds no temp files.
fn converge(peers: &[&Peer]) {
    let first = peers[0];
    for p in &peers[1..] {
        wait_identical(&first.dir, &p.dir, SOON);
    }
    let ok = wait_until(SOON, || {
        peers.iter().all(|p| temp_files(&p.dir).is_empty())
            && peers[1..]
                .iter()
                .all(|p| tree_diff(&first.dir, &p.dir).is_none())
    });
    assert!(
        ok,
        "temp files left or shares differ: {:?}",
        peers.iter().map(|p| temp_files(&p.dir)).collect::<Vec<_>>()
    );
    for p in peers {
        assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
    }
}

fn alive(peers: &mut [&mut Peer]) {
    for p in peers.iter_mut() {
        assert!(p.alive(), "{} died:\n{}", p.name, tail(&p.log_text(), 30));
    }
}

// ---------------------------------------------------------------------------------------------

/// A request naming a path that is now a folder, or deleted, is answered "changed": the index
/// entry of a folder or a tombstone has no blocks (and a block size of 0).
#[test]
fn a_block_request_for_a_folder_or_a_deleted_file_is_answered() {
    let t = TestDir::new("req-folder");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    fs::create_dir_all(a.path("dir")).unwrap();
    fs::write(a.path("gone"), b"soon deleted").unwrap();
    assert!(a.wait_log(SOON, "changed locally: gone"));
    fs::remove_file(a.path("gone")).unwrap();
    assert!(a.wait_log(SOON, "deleted locally: gone"));
    assert!(a.wait_log(SOON, "new folder dir/"));

    let mut s = connect(pa);
    s.write_all(&wire::hello(0x5EED_0000_0000_0001, 0, [3; 16], pb))
        .unwrap();
    let (ty, _) = wire::read_frame(&mut s).unwrap();
    assert_eq!(ty, wire::T_HELLO);
    let mut n = 0;
    for path in ["dir", "gone"] {
        for (off, hash) in [
            (0, [1u8; 16]),
            (65_536, [1; 16]),
            (0, [0; 16]),
            (7, [0; 16]),
        ] {
            n += 1;
            s.write_all(&wire::request(n, path, off, 100, hash))
                .unwrap();
            let mut sub = wire::request(n + 100, path, off, 100, hash);
            sub[4] = wire::T_SUB_HASHES;
            s.write_all(&sub).unwrap();
        }
    }
    let mut answered = 0;
    s.set_read_timeout(Some(SOON)).unwrap();
    while answered < 2 * n {
        let (ty, p) = wire::read_frame(&mut s).expect("A stopped answering");
        if ty == wire::T_RESPONSE {
            assert_eq!(
                p[4], 1,
                "a request for a folder or tombstone answered {}",
                p[4]
            );
            answered += 1;
        }
    }
    alive(&mut [&mut a]);
}

/// A (offline) replaces file `b.bin` by a folder with a file in it while B edits `b.bin`. Both
/// ways round (the folder newer, then the file newer) every share ends the same, with A's file
/// inside the folder and B's edit kept, as the winner or as a conflict copy.
#[test]
fn a_type_change_concurrent_with_an_edit_keeps_both() {
    for folder_wins in [true, false] {
        let t = TestDir::new(if folder_wins { "type-dir" } else { "type-file" });
        let (pa, pb) = two_ports();
        {
            let a = Peer::start(&t, "A", pa, &[pb]);
            let b = Peer::start(&t, "B", pb, &[pa]);
            fs::write(a.path("b.bin"), random_bytes(1, 200_000)).unwrap();
            wait_identical(&a.dir, &b.dir, SOON);
            std::thread::sleep(Duration::from_millis(1500));
        }
        let now = SystemTime::now();
        let (dir_t, file_t) = if folder_wins {
            (now, now - Duration::from_secs(60))
        } else {
            (now - Duration::from_secs(60), now)
        };
        fs::remove_file(t.join("A/b.bin")).unwrap();
        fs::create_dir(t.join("A/b.bin")).unwrap();
        fs::write(t.join("A/b.bin/inner"), b"made on A inside the folder").unwrap();
        set_mtime(&t.join("A/b.bin"), dir_t);
        let edit = random_bytes(2, 150_000);
        fs::write(t.join("B/b.bin"), &edit).unwrap();
        set_mtime(&t.join("B/b.bin"), file_t);

        let mut a = Peer::start(&t, "A", pa, &[pb]);
        let mut b = Peer::start(&t, "B", pb, &[pa]);
        converge(&[&a, &b]);
        alive(&mut [&mut a, &mut b]);
        for p in [&a, &b] {
            let all = contents(&p.dir);
            assert!(
                all.contains(&edit),
                "{} lost B's edit (folder wins: {folder_wins}): {:?}",
                p.name,
                names(&p.dir)
            );
            assert!(
                all.iter().any(|c| c == b"made on A inside the folder"),
                "{} lost A's file (folder wins: {folder_wins}): {:?}",
                p.name,
                names(&p.dir)
            );
        }
    }
}

/// B creates `t`; A, cut off, turns it into a folder holding a file, then removes it all. Once
/// A is back, the three peers agree (nothing left of `t`) and go on syncing.
#[test]
fn a_tombstone_under_a_file_does_not_block() {
    let t = TestDir::new("tomb-under");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = Peer::start(&t, "A", pa, &[pb, pc]);
    let b = Peer::start(&t, "B", pb, &[pa, pc]);
    let c = Peer::start(&t, "C", pc, &[pa, pb]);
    fs::write(b.path("t"), b"a file on B").unwrap();
    converge(&[&a, &b, &c]);
    std::thread::sleep(Duration::from_millis(1000));
    drop(a);
    // A alone, on a port nobody dials, listing a peer that is not there.
    let (lone, nobody) = two_ports();
    let a = Peer::start(&t, "A", lone, &[nobody]);
    fs::remove_file(a.path("t")).unwrap();
    fs::create_dir(a.path("t")).unwrap();
    fs::write(a.path("t/x"), b"inside").unwrap();
    assert!(a.wait_log(SOON, "changed locally: t/x"));
    fs::remove_dir_all(a.path("t")).unwrap();
    assert!(a.wait_log(SOON, "deleted locally: t"));
    std::thread::sleep(Duration::from_millis(1000));
    drop(a);
    let mut a = Peer::start(&t, "A", pa, &[pb, pc]);
    converge(&[&a, &b, &c]);
    assert!(!b.path("t").exists(), "t came back: {:?}", names(&b.dir));
    fs::write(c.path("after"), b"still syncing").unwrap();
    converge(&[&a, &b, &c]);
    assert!(a.path("after").exists());
    alive(&mut [&mut a]);
}

/// Two rounds of concurrent edits in which B's losing versions carry the same mtime: each
/// round's losing edit is kept, neither conflict copy replaces the other.
#[test]
fn conflict_copies_never_replace_each_other() {
    let t = TestDir::new("conflict-names");
    let (pa, pb) = two_ports();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    let mut lost = Vec::new();
    fs::create_dir_all(t.join("A")).unwrap();
    fs::write(t.join("A/a.txt"), b"base\n").unwrap();
    for round in 0..2 {
        {
            let a = Peer::start(&t, "A", pa, &[pb]);
            let b = Peer::start(&t, "B", pb, &[pa]);
            converge(&[&a, &b]);
            std::thread::sleep(Duration::from_millis(1500));
        }
        let la = format!("round {round}: A's edit, newer\n");
        let lb = format!("round {round}: B's edit, with an old mtime\n");
        fs::write(t.join("A/a.txt"), &la).unwrap();
        fs::write(t.join("B/a.txt"), &lb).unwrap();
        set_mtime(&t.join("B/a.txt"), old);
        lost.push(lb.into_bytes());
    }
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    converge(&[&a, &b]);
    for p in [&a, &b] {
        let all = contents(&p.dir);
        for l in &lost {
            assert!(
                all.contains(l),
                "{} lost {:?}: {:?}",
                p.name,
                String::from_utf8_lossy(l),
                names(&p.dir)
            );
        }
    }
}

/// B pulls A's new version of a big file slowly; meanwhile B edits the file, and B's edit wins
/// (newer). The pull gives up, and its temp file does not stay behind.
#[test]
fn a_losing_pull_leaves_no_temp_file() {
    let t = TestDir::new("losing-pull");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    // Large enough that the slowed pull lasts (8 MiB once went through in 0.08 s, before the
    // test looked).
    write_random(&a.path("f.bin"), 48 << 20, 1);
    converge(&[&a, &b]);
    let slow = Throttle::new(
        a.pid().unwrap(),
        Duration::from_millis(5),
        Duration::from_millis(60),
    );
    write_random(&a.path("f.bin"), 48 << 20, 2);
    let tmp = b.path(".f.bin.left-tmp");
    assert!(
        spin_until(SOON, || fs::metadata(&tmp).is_ok_and(|m| m.len() > 0)),
        "B never started pulling"
    );
    let mine = random_bytes(3, 100_000);
    fs::write(b.path("f.bin"), &mine).unwrap();
    set_mtime(
        &b.path("f.bin"),
        SystemTime::now() + Duration::from_secs(3600),
    );
    drop(slow);
    converge(&[&a, &b]);
    assert_eq!(fs::read(a.path("f.bin")).unwrap(), mine);
}

/// A folder's mode changes after it synced: the change syncs, both ways.
#[test]
fn folder_modes_sync() {
    let t = TestDir::new("dir-mode");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir_all(a.path("d/e")).unwrap();
    fs::write(a.path("d/e/f"), b"x").unwrap();
    converge(&[&a, &b]);
    fs::set_permissions(a.path("d"), fs::Permissions::from_mode(0o750)).unwrap();
    assert!(
        wait_until(SOON, || mode_of(&b.path("d")) == 0o750),
        "B's d is {:o}",
        mode_of(&b.path("d"))
    );
    fs::set_permissions(b.path("d/e"), fs::Permissions::from_mode(0o711)).unwrap();
    assert!(
        wait_until(SOON, || mode_of(&a.path("d/e")) == 0o711),
        "A's d/e is {:o}",
        mode_of(&a.path("d/e"))
    );
    // Set-uid, set-gid and sticky bits are not taken from a peer.
    fs::set_permissions(a.path("d/e/f"), fs::Permissions::from_mode(0o6755)).unwrap();
    fs::write(a.path("d/e/g"), b"y").unwrap();
    fs::set_permissions(a.path("d/e/g"), fs::Permissions::from_mode(0o4711)).unwrap();
    assert!(wait_until(SOON, || b.path("d/e/g").exists()));
    assert!(wait_until(SOON, || mode_of(&b.path("d/e/g")) == 0o711));
    assert_eq!(mode_of(&b.path("d/e/f")) & 0o7000, 0);
}

/// The receiver is killed the moment a file arrives (its index not saved yet), the sender
/// changes the file meanwhile, and the receiver comes back: it takes the new version, and no
/// conflict copy appears, since nobody edited the file on the receiver.
#[test]
fn a_kill_right_after_a_file_arrives_makes_no_conflict() {
    let t = TestDir::new("kill-after-install");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let mut adopted = 0;
    for round in 0..6u64 {
        let name = format!("f{round}");
        let v1 = random_bytes(round * 2 + 10, 5_000 + round as usize * 70_000);
        fs::write(a.path(&name), &v1).unwrap();
        assert!(
            wait_until(SOON, || has_content(&b.path(&name), &v1)),
            "round {round}: B never got {name}"
        );
        b.kill();
        adopted += b
            .log_text()
            .matches("received before the last stop")
            .count();
        let v2 = random_bytes(round * 2 + 11, 4_000);
        fs::write(a.path(&name), &v2).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        b = Peer::start(&t, "B", pb, &[pa]);
        assert!(
            wait_until(SOON, || has_content(&b.path(&name), &v2)),
            "round {round}: B never got the second version of {name}"
        );
        converge(&[&a, &b]);
        let conflicts: Vec<String> = names(&b.dir)
            .into_iter()
            .filter(|n| n.contains("sync-conflict"))
            .collect();
        assert!(
            conflicts.is_empty(),
            "round {round}: spurious conflict copies {conflicts:?}\n{}",
            tail(&b.log_text(), 30)
        );
    }
    eprintln!("files taken from the install log after a kill: {adopted}");
}

/// `left status` exit code, from the daemon's status file.
fn status_code(dir: &Path) -> Option<i32> {
    Command::new(BIN)
        .args(["status", "--dir", &dir.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .and_then(|s| s.code())
}

/// Many files moved into A's share at once: while they are being scanned and sent, neither
/// side's status says "in sync"; once both do, B has them all.
#[test]
fn status_is_pending_until_a_large_move_has_arrived() {
    let t = TestDir::new("status-move");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::write(a.path("seed"), b"seed").unwrap();
    converge(&[&a, &b]);
    assert!(wait_until(SOON, || status_code(&a.dir) == Some(0)
        && status_code(&b.dir) == Some(0)));
    let staging = t.join("staging/big");
    let n = 20_000;
    for i in 0..n {
        write_file(
            &staging.join(format!("d{}/f{i}", i % 200)),
            format!("{i}\n"),
        );
    }
    fs::rename(&staging, a.path("big")).unwrap();
    let count = |p: &Peer| {
        listing(&p.path("big"))
            .map(|l| l.iter().filter(|(_, s)| s.is_some()).count())
            .unwrap_or(0)
    };
    let end = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        assert!(std::time::Instant::now() < end, "never in sync");
        let (sa, sb) = (status_code(&a.dir), status_code(&b.dir));
        if sa == Some(0) && sb == Some(0) {
            let got = count(&b);
            assert_eq!(
                got, n,
                "status said in sync on both with {got} of {n} files on B"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file's mode changes after it synced (or a peer that won a conflict sends the winner back
/// with the loser's version merged in): a newer version with the same content. Its
/// metadata is put on the peer's copy, not a whole new copy pulled and written (a chmod of a
/// 500 MiB file rewrote 500 MiB on every peer): the peer's file keeps its inode.
#[test]
fn a_newer_version_with_the_same_content_changes_metadata_only() {
    use std::os::unix::fs::MetadataExt;
    let t = TestDir::new("meta-only");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    write_random(&a.path("big.bin"), 8 << 20, 77);
    converge(&[&a, &b]);
    let ino = fs::metadata(b.path("big.bin")).unwrap().ino();
    fs::set_permissions(a.path("big.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        wait_until(SOON, || mode_of(&b.path("big.bin")) == 0o600),
        "B's big.bin is {:o}",
        mode_of(&b.path("big.bin"))
    );
    converge(&[&a, &b]);
    assert_eq!(
        fs::metadata(b.path("big.bin")).unwrap().ino(),
        ino,
        "B wrote a whole new copy for a change of metadata"
    );
    assert_eq!(md5sum(&a.path("big.bin")), md5sum(&b.path("big.bin")));
}
