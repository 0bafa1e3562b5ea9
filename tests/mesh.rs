//! Deletions, conflicts, renames and more than two peers (issue 4), with real `left` processes on
//! 127.0.0.1. What tests/sync.rs already covers (deletions each way, edit against delete, a
//! conflict copy, type changes, three peers in a line creating files, copy/rename reuse) is not
//! repeated; these go further.

mod common;

use common::*;
use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MIB: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(180);

fn wait_gone(p: &Peer, rel: &str) {
    let ok = wait_until(SOON, || fs::symlink_metadata(p.path(rel)).is_err());
    assert!(
        ok,
        "{}/{rel} still exists: {:?}\n{}",
        p.name,
        listing(&p.dir),
        tail(&p.log_text(), 15)
    );
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// Deletions

/// A folder tree (nested folders, hidden files, an empty folder) deleted on B disappears from A,
/// contents and all, and stays gone after both restart.
#[test]
fn folder_deleted_on_b_disappears_from_a() {
    let t = TestDir::new("rmdir");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir_all(a.path("proj/src/deep/er")).unwrap();
    fs::create_dir_all(a.path("proj/empty")).unwrap();
    fs::create_dir_all(a.path("proj/.git/objects")).unwrap();
    for i in 0..20 {
        fs::write(
            a.path(&format!("proj/src/f{i}.rs")),
            random_bytes(i, 3000 + i as usize),
        )
        .unwrap();
    }
    fs::write(a.path("proj/src/deep/er/x.bin"), random_bytes(50, 200_000)).unwrap();
    fs::write(a.path("proj/.git/objects/ab12"), b"object").unwrap();
    fs::write(a.path("proj/.hidden"), b"hidden").unwrap();
    fs::write(a.path("keep.txt"), b"stays").unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.path("proj/empty").is_dir());

    fs::remove_dir_all(b.path("proj")).unwrap();
    wait_gone(&a, "proj");
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(names(&a.dir), vec!["keep.txt"]);
    let la = a.log_text();
    for p in ["proj/src/f7.rs", "proj/src/deep/er/x.bin", "proj/.hidden"] {
        assert!(
            la.contains(&format!("deleted {p}")),
            "A's log: no `deleted {p}`"
        );
    }
    assert!(la.contains("deleted proj/"), "A's log: no `deleted proj/`");

    // Nothing comes back, not after a few scans, not after a restart of both.
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(names(&a.dir), vec!["keep.txt"]);
    assert_eq!(names(&b.dir), vec!["keep.txt"]);
    for p in [&mut a, &mut b] {
        let st = p.terminate(Duration::from_secs(20));
        assert!(st.is_some_and(|s| s.success()), "{}: {st:?}", p.name);
    }
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::write(a.path("marker"), b"m").unwrap();
    wait_content(&b, "marker", b"m", SOON);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(names(&a.dir), vec!["keep.txt", "marker"]);
    assert_eq!(names(&b.dir), vec!["keep.txt", "marker"]);
}

/// A folder of 600 files deleted at once (moved out of the share in one rename): the deletion is
/// more entries than one pull batch, and still the folder itself disappears on the other side
/// and does not come back.
#[test]
fn folder_of_many_files_deleted_at_once() {
    let t = TestDir::new("rmdir-many");
    let (a, b) = pair(&t);
    let staging = t.join("staging/many");
    fs::create_dir_all(staging.join("sub")).unwrap();
    for i in 0..600 {
        fs::write(staging.join(format!("sub/f{i:04}")), format!("{i}\n")).unwrap();
    }
    fs::rename(&staging, a.path("many")).unwrap();
    fs::write(a.path("keep.txt"), b"stays").unwrap();
    wait_identical(&a.dir, &b.dir, LONG);
    assert_eq!(listing(&b.dir).unwrap().len(), 600 + 3);

    fs::rename(a.path("many"), t.join("staging/gone")).unwrap();
    let files_gone = wait_until(SOON, || {
        (0..600).all(|i| !b.path(&format!("many/sub/f{i:04}")).exists())
    });
    assert!(files_gone, "the files of the deleted folder are still on B");
    // The folders go with them; give any resurrection time to show itself (scans run within a
    // second of a change).
    std::thread::sleep(Duration::from_millis(3000));
    assert!(
        !b.path("many").exists() && !a.path("many").exists(),
        "the deleted folder is back or never left: A {:?}, B {:?}\nB's log:\n{}\nA's log:\n{}",
        listing(&a.dir).map(|l| l.into_iter().take(5).collect::<Vec<_>>()),
        listing(&b.dir).map(|l| l.into_iter().take(5).collect::<Vec<_>>()),
        lines_filtered(
            &b.log_text(),
            &["many/ ", "many/\n", "folder many", "deleted many/"]
        ),
        lines_filtered(&a.log_text(), &["folder many", "many/"])
            .lines()
            .filter(|l| !l.contains("many/sub/"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(names(&a.dir), vec!["keep.txt"]);
}

/// Log lines containing any of `needles`, or ending with `many/`.
fn lines_filtered(log: &str, needles: &[&str]) -> String {
    log.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)) || l.ends_with("many/"))
        .filter(|l| !l.contains("many/sub/"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// B is down while A deletes a file and a folder; B comes back with its old copies: they are
/// deleted on B, not resurrected on A. Then the same with both down in between.
#[test]
fn peer_offline_during_a_delete_does_not_resurrect() {
    let t = TestDir::new("offline-delete");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir_all(a.path("old-dir/sub")).unwrap();
    fs::write(a.path("old-dir/sub/f"), b"in a folder").unwrap();
    fs::write(a.path("doomed.txt"), b"doomed").unwrap();
    fs::write(a.path("doomed2.txt"), b"doomed too").unwrap();
    fs::write(a.path("kept.txt"), b"kept").unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_millis(1500)); // B's index saved

    // B down (kill -9: no goodbye); A deletes.
    b.kill();
    fs::remove_file(a.path("doomed.txt")).unwrap();
    fs::remove_dir_all(a.path("old-dir")).unwrap();
    assert!(
        a.wait_log(SOON, "deleted locally: doomed.txt")
            && a.wait_log(SOON, "deleted locally: old-dir"),
        "A did not notice its own deletions"
    );
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_gone(&b, "doomed.txt");
    wait_gone(&b, "old-dir");
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(names(&a.dir), vec!["doomed2.txt", "kept.txt"]);
    assert_eq!(names(&b.dir), vec!["doomed2.txt", "kept.txt"]);
    assert!(
        !received(&a.log_text())
            .iter()
            .any(|r| r.path.starts_with("doomed") || r.path.starts_with("old-dir")),
        "A took B's old copies back:\n{}",
        a.log_text()
    );

    // Both down: B first, then A deletes and stops; B starts alone, then A.
    let mut b = b;
    b.kill();
    fs::remove_file(a.path("doomed2.txt")).unwrap();
    assert!(a.wait_log(SOON, "deleted locally: doomed2.txt"));
    let st = a.terminate(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
    let b = Peer::start(&t, "B", pb, &[pa]);
    std::thread::sleep(Duration::from_millis(1000)); // B scans its old copy alone
    assert!(b.path("doomed2.txt").exists());
    let a = Peer::start(&t, "A", pa, &[pb]);
    wait_gone(&b, "doomed2.txt");
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(names(&a.dir), vec!["kept.txt"]);
    assert_eq!(names(&b.dir), vec!["kept.txt"]);
}

// ---------------------------------------------------------------------------------------------
// Conflicts

/// Both daemons stopped, the same files edited on each side, both restarted: both versions end
/// up on both sides, the loser as `NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT` (the loser's
/// mtime in UTC and its device's short id), and both sides agree on the winner: the newer mtime,
/// or on a tie the larger device id.
#[test]
fn concurrent_offline_edits_keep_both_versions_everywhere() {
    let t = TestDir::new("offline-conflict");
    let (pa, pb) = two_ports();
    let (dev_a, dev_b);
    {
        let (a, b) = pair_on(&t, pa, pb);
        fs::create_dir_all(a.path("dir")).unwrap();
        fs::write(a.path("notes.txt"), b"base notes\n").unwrap();
        fs::write(a.path("dir/Makefile"), b"all:\n").unwrap();
        fs::write(a.path("tie.txt"), b"base tie\n").unwrap();
        fs::write(a.path(".profile"), b"base profile\n").unwrap();
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_millis(1500));
        dev_a = a.device();
        dev_b = b.device();
    } // both killed

    let now = now_secs();
    let edit = |side: &str, rel: &str, data: &[u8], mtime: u64| {
        let p = t.join(&format!("{side}/{rel}"));
        fs::write(&p, data).unwrap();
        set_mtime(&p, UNIX_EPOCH + Duration::from_secs(mtime));
    };
    // notes.txt: B's edit is newer and wins.
    edit("A", "notes.txt", b"A's notes\n", now - 600);
    edit("B", "notes.txt", b"B's notes, newer\n", now - 300);
    // dir/Makefile: A's edit is newer and wins.
    edit("A", "dir/Makefile", b"all: a\n", now - 100);
    edit("B", "dir/Makefile", b"all: b (older)\n", now - 7200);
    // tie.txt: same mtime; the larger device id wins.
    edit("A", "tie.txt", b"A's tie\n", now - 50);
    edit("B", "tie.txt", b"B's tie\n", now - 50);
    // .profile: a dot file; B newer.
    edit("A", ".profile", b"A's profile\n", now - 40);
    edit("B", ".profile", b"B's profile\n", now - 20);

    let copy = |rel: &str, loser_mtime: u64, loser: u64| -> String {
        let (dir, name) = match rel.rfind('/') {
            Some(i) => (&rel[..=i], &rel[i + 1..]),
            None => ("", rel),
        };
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        format!(
            "{dir}{stem}.sync-conflict-{}-{}{ext}",
            utc_stamp(loser_mtime as i64),
            short_id(loser)
        )
    };
    let (tie_win, tie_lose, tie_lose_data, tie_win_data): (u64, u64, &[u8], &[u8]) =
        if dev_a > dev_b {
            (dev_a, dev_b, b"B's tie\n", b"A's tie\n")
        } else {
            (dev_b, dev_a, b"A's tie\n", b"B's tie\n")
        };
    let _ = tie_win;
    let want: Vec<(String, &[u8])> = vec![
        ("notes.txt".into(), b"B's notes, newer\n"),
        (copy("notes.txt", now - 600, dev_a), b"A's notes\n"),
        ("dir/Makefile".into(), b"all: a\n"),
        (copy("dir/Makefile", now - 7200, dev_b), b"all: b (older)\n"),
        ("tie.txt".into(), tie_win_data),
        (copy("tie.txt", now - 50, tie_lose), tie_lose_data),
        (".profile".into(), b"B's profile\n"),
        (copy(".profile", now - 40, dev_a), b"A's profile\n"),
    ];
    let mut want_names: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
    want_names.push("dir".into());
    want_names.sort();

    let (a, b) = pair_on(&t, pa, pb);
    let ok = wait_until(SOON, || {
        names(&a.dir) == want_names && names(&b.dir) == want_names
    });
    assert!(
        ok,
        "expected {want_names:?} on both sides;\nA has {:?}\nB has {:?}\nA's log:\n{}\nB's log:\n{}",
        names(&a.dir),
        names(&b.dir),
        tail(&a.log_text(), 15),
        tail(&b.log_text(), 15)
    );
    wait_identical(&a.dir, &b.dir, SOON);
    for p in [&a, &b] {
        for (rel, data) in &want {
            assert_eq!(
                fs::read(p.path(rel)).unwrap(),
                *data,
                "{}/{rel} holds the wrong version",
                p.name
            );
        }
    }
    // The side that lost logs keeping its version.
    assert!(
        a.log_text()
            .contains(&format!("conflict: notes.txt kept as {}", want[1].0)),
        "{}",
        a.log_text()
    );
    assert!(
        b.log_text()
            .contains(&format!("conflict: dir/Makefile kept as {}", want[3].0)),
        "{}",
        b.log_text()
    );
    // And nothing is re-versioned afterwards: a second look finds the same files.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(names(&a.dir), want_names);
    assert_eq!(names(&b.dir), want_names);
}

fn pair_on(t: &TestDir, pa: u16, pb: u16) -> (Peer, Peer) {
    (
        Peer::start(t, "A", pa, &[pb]),
        Peer::start(t, "B", pb, &[pa]),
    )
}

// ---------------------------------------------------------------------------------------------
// Three peers

/// A full mesh: A knows B and C, B knows A and C, C knows A and B. Files made on each reach all;
/// an edit on C reaches A and B; a deletion on A reaches B and C. Each file crosses to each other
/// peer once.
#[test]
fn three_peers_in_a_full_mesh() {
    let t = TestDir::new("mesh");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = Peer::start(&t, "A", pa, &[pb, pc]);
    let b = Peer::start(&t, "B", pb, &[pa, pc]);
    let c = Peer::start(&t, "C", pc, &[pa, pb]);
    let peers = [&a, &b, &c];
    for (i, p) in peers.iter().enumerate() {
        fs::create_dir_all(p.path(&format!("from-{}", p.name))).unwrap();
        fs::write(
            p.path(&format!("from-{}/data.bin", p.name)),
            random_bytes(60 + i as u64, 300_000 + i),
        )
        .unwrap();
        fs::write(p.path(&format!("{}.txt", p.name)), p.name.as_bytes()).unwrap();
    }
    for p in peers {
        for (i, q) in peers.iter().enumerate() {
            wait_content(
                p,
                &format!("from-{}/data.bin", q.name),
                &random_bytes(60 + i as u64, 300_000 + i),
                SOON,
            );
        }
    }
    wait_identical(&a.dir, &b.dir, SOON);
    wait_identical(&b.dir, &c.dir, SOON);
    assert_eq!(listing(&a.dir).unwrap().len(), 9);

    // An edit on C.
    let edited = random_bytes(70, 123_457);
    put_file(&t.join("staging"), &c.path("from-A/data.bin"), &edited);
    wait_content(&a, "from-A/data.bin", &edited, SOON);
    wait_content(&b, "from-A/data.bin", &edited, SOON);
    // A deletion on A.
    fs::remove_file(a.path("B.txt")).unwrap();
    wait_gone(&b, "B.txt");
    wait_gone(&c, "B.txt");
    wait_identical(&a.dir, &b.dir, SOON);
    wait_identical(&b.dir, &c.dir, SOON);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!a.path("B.txt").exists(), "B.txt came back");

    // Each version of each file arrived once at each peer that did not make it.
    for p in peers {
        let r = received(&p.log_text());
        for q in peers.iter().filter(|q| q.name != p.name) {
            for f in [
                format!("{}.txt", q.name),
                format!("from-{}/data.bin", q.name),
            ] {
                let n = r
                    .iter()
                    .filter(|x| x.path == f && x.size != 123_457)
                    .count();
                assert_eq!(n, 1, "{} received {f} {n} times: {r:?}", p.name);
            }
        }
    }
    for p in [&a, &b] {
        let n = received(&p.log_text())
            .iter()
            .filter(|x| x.path == "from-A/data.bin" && x.size == 123_457)
            .count();
        assert_eq!(n, 1, "{} received C's edit {n} times", p.name);
    }
    // No conflict copies: nothing here was concurrent.
    for p in peers {
        assert!(
            !names(&p.dir).iter().any(|n| n.contains("sync-conflict")),
            "{}: {:?}",
            p.name,
            names(&p.dir)
        );
    }
}

/// A chain, A – B – C (A knows only B, C knows only B): a file made on A reaches C through B; an
/// edit and a deletion made on C reach A; a folder deleted on A disappears on C.
#[test]
fn three_peers_in_a_chain_edit_and_delete() {
    let t = TestDir::new("chain");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa, pc]);
    let c = Peer::start(&t, "C", pc, &[pb]);
    let d1 = random_bytes(80, 500_000);
    fs::create_dir_all(a.path("docs/old")).unwrap();
    fs::write(a.path("docs/report.bin"), &d1).unwrap();
    fs::write(a.path("docs/old/x"), b"old x").unwrap();
    fs::write(a.path("shared.txt"), b"version 1\n").unwrap();
    wait_content(&c, "docs/report.bin", &d1, SOON);
    wait_content(&c, "shared.txt", b"version 1\n", SOON);
    // A and C never talk to each other directly.
    assert!(!a.log_text().contains(&format!("127.0.0.1:{pc}")));
    assert!(!c.log_text().contains(&format!("127.0.0.1:{pa}")));

    put_file(
        &t.join("staging"),
        &c.path("shared.txt"),
        b"version 2, from C\n",
    );
    wait_content(&a, "shared.txt", b"version 2, from C\n", SOON);
    fs::remove_file(c.path("docs/report.bin")).unwrap();
    wait_gone(&a, "docs/report.bin");
    fs::remove_dir_all(a.path("docs/old")).unwrap();
    wait_gone(&c, "docs/old");
    wait_identical(&a.dir, &b.dir, SOON);
    wait_identical(&b.dir, &c.dir, SOON);
    std::thread::sleep(Duration::from_millis(1500));
    for p in [&a, &b, &c] {
        assert_eq!(
            names(&p.dir),
            vec!["docs", "shared.txt"],
            "{} after the deletions",
            p.name
        );
        assert_eq!(
            fs::read(p.path("shared.txt")).unwrap(),
            b"version 2, from C\n"
        );
    }
}

/// In a chain A – B – C, C is down while A deletes a file; C comes back (knowing only B) with
/// its old copy: the deletion reaches C, and the file comes back nowhere.
#[test]
fn chain_peer_offline_during_a_delete() {
    let t = TestDir::new("chain-offline");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa, pc]);
    let mut c = Peer::start(&t, "C", pc, &[pb]);
    fs::write(a.path("gone.bin"), random_bytes(90, 100_000)).unwrap();
    fs::write(a.path("kept.txt"), b"kept").unwrap();
    wait_identical(&a.dir, &c.dir, SOON);
    std::thread::sleep(Duration::from_millis(1500));
    c.kill();
    fs::remove_file(a.path("gone.bin")).unwrap();
    wait_gone(&b, "gone.bin");
    let c = Peer::start(&t, "C", pc, &[pb]);
    wait_gone(&c, "gone.bin");
    std::thread::sleep(Duration::from_millis(2000));
    for p in [&a, &b, &c] {
        assert_eq!(names(&p.dir), vec!["kept.txt"], "{}", p.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Renames

/// A 100 MB file renamed: the receiver copies its own copy (read and checked block by block; the
/// old file is not moved, it may be open) and under 1% of the size crosses the wire. Renamed three times: to a name sorting before the old
/// one, to one sorting after it, and into folders that do not exist yet on the other side (from
/// B back to A). Every rename is checked; the failures are reported together.
#[test]
fn renaming_a_100_mb_file_sends_almost_nothing() {
    let t = TestDir::new("rename-100");
    let (a, b) = pair(&t);
    let size = 100_000_000u64;
    let staged = t.join("staging/video.bin");
    write_random(&staged, size, 1234);
    let want = md5sum(&staged);
    fs::rename(&staged, a.path("video.bin")).unwrap();
    assert!(
        wait_until(LONG, || fs::metadata(b.path("video.bin"))
            .is_ok_and(|m| m.len() == size)),
        "video.bin did not arrive"
    );
    wait_identical(&a.dir, &b.dir, SOON);

    let mut failures = Vec::new();
    for (from_a, old, new) in [
        (true, "video.bin", "holiday.bin"),
        (true, "holiday.bin", "trip.bin"),
        (false, "trip.bin", "archive/2026/trip.bin"),
    ] {
        let (src, dst) = if from_a { (&a, &b) } else { (&b, &a) };
        let before = received(&dst.log_text()).len();
        if let Some(d) = src.path(new).parent() {
            fs::create_dir_all(d).unwrap();
        }
        fs::rename(src.path(old), src.path(new)).unwrap();
        let arrived = wait_until(LONG, || {
            !dst.path(old).exists() && fs::metadata(dst.path(new)).is_ok_and(|m| m.len() == size)
        });
        assert!(arrived, "{old} -> {new} not applied on {}", dst.name);
        wait_identical(&a.dir, &b.dir, SOON);
        assert_eq!(md5sum(&dst.path(new)), want, "{new} on {}", dst.name);
        // The file is logged just after it appears.
        wait_until(Duration::from_secs(10), || {
            received(&dst.log_text())
                .iter()
                .skip(before)
                .any(|x| x.path == new)
        });
        let log = dst.log_text();
        let r: Vec<Received> = received(&log).into_iter().skip(before).collect();
        let wire: u64 = r.iter().map(|x| x.wire).sum();
        if r.iter().filter(|x| x.path == new).count() != 1 {
            failures.push(format!("{old} -> {new}: {} logged {r:?}", dst.name));
        }
        if wire * 100 >= size {
            failures.push(format!(
                "{old} -> {new}: {wire} of {size} bytes crossed the wire to {} ({r:?})",
                dst.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "renames of a 100 MB file:\n{}",
        failures.join("\n")
    );
    let _ = MIB;
}
