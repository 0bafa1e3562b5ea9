//! Attacks on the issue 17/18 changes (dirfd, install log, conflict copies, type changes),
//! written by a review session: a hostile peer (FakePeer), a hostile local user racing the daemon,
//! kills.

mod common;

use common::wire::{self, Entry as WEntry};
use common::*;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every file (path, content) of a tree, symlinks not followed.
fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let md = fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if md.is_dir() {
                out.push((rel + "/", Vec::new()));
                stack.push(e.path());
            } else if md.is_file() {
                out.push((rel, fs::read(e.path()).unwrap_or_default()));
            } else {
                out.push((rel + "@", Vec::new()));
            }
        }
    }
    out.sort();
    out
}

fn all_names(root: &Path) -> Vec<String> {
    snapshot(root).into_iter().map(|(p, _)| p).collect()
}

fn conflicts(root: &Path) -> Vec<String> {
    all_names(root)
        .into_iter()
        .filter(|n| n.contains("sync-conflict"))
        .collect()
}

fn temps(root: &Path) -> Vec<String> {
    all_names(root)
        .into_iter()
        .filter(|n| n.rsplit('/').next().is_some_and(is_temp))
        .collect()
}

fn no_panic(p: &mut Peer) {
    assert!(p.alive(), "{} died:\n{}", p.name, tail(&p.log_text(), 30));
    assert!(!p.log_text().contains("panicked"), "{} panicked", p.name);
}

fn announce(f: &FakePeer, seq: u64, entries: &[WEntry]) {
    assert!(f.send(&wire::index(seq, entries)));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, seq)));
}

// ---------------------------------------------------------------------------------------------
// 1. A hostile peer

/// A peer announces a file where B has a folder holding files: B's files stay, and the peer's
/// file is kept beside the folder as a conflict copy.
#[test]
fn peer_file_over_a_nonempty_folder_keeps_local_files() {
    let t = TestDir::new("rv-file-over-folder");
    let (mut b, listed) = victim(&t);
    fs::create_dir_all(b.path("d/sub")).unwrap();
    fs::write(b.path("d/keep"), b"local keep").unwrap();
    fs::write(b.path("d/sub/deep"), b"local deep").unwrap();
    assert!(b.wait_log(SOON, "changed locally: d/sub/deep"));
    assert!(b.wait_log(SOON, "changed locally: d/keep"));
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_2001, listed);
    let data = random_bytes(7, 3000);
    f.offer("d", data.clone());
    let mut e = WEntry::file("d", &data, f.device, 1);
    e.mtime = now_secs() + 3600;
    announce(&f, 1, &[e]);
    let ok = wait_until(SOON, || {
        snapshot(&b.dir)
            .iter()
            .any(|(p, c)| p.contains("sync-conflict") && *c == data)
    });
    assert!(
        ok,
        "no conflict copy: {:?}\n{}",
        all_names(&b.dir),
        tail(&b.log_text(), 20)
    );
    assert_eq!(fs::read(b.path("d/keep")).unwrap(), b"local keep");
    assert_eq!(fs::read(b.path("d/sub/deep")).unwrap(), b"local deep");
    no_panic(&mut b);
}

/// A peer announces a file `d` and the deletion of `d/keep` (superseding B's version), while
/// a local user adds `d/late` that no scan has seen: `d/late` must survive.
#[test]
fn peer_file_over_folder_spares_an_unscanned_local_file() {
    let t = TestDir::new("rv-file-over-folder-late");
    let (mut b, listed) = victim(&t);
    fs::create_dir_all(b.path("d")).unwrap();
    fs::write(b.path("d/keep"), b"local keep").unwrap();
    assert!(b.wait_log(SOON, "changed locally: d/keep"));
    std::thread::sleep(Duration::from_millis(500));
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_2002, listed);
    let dev = f.daemon;
    let data = random_bytes(8, 3000);
    f.offer("d", data.clone());
    let mut e = WEntry::file("d", &data, f.device, 1);
    e.version = vec![(dev, 1000), (f.device, 1)];
    let mut gone = WEntry::deleted("d/keep", f.device, 1);
    gone.version = vec![(dev, 1000), (f.device, 1)];
    let mut dd = WEntry::deleted("d", f.device, 1);
    dd.kind = 1;
    dd.version = vec![(dev, 1000), (f.device, 1)];
    fs::write(b.path("d/late"), b"late local file").unwrap();
    announce(&f, 1, &[gone, e]);
    std::thread::sleep(Duration::from_secs(5));
    let snap = snapshot(&b.dir);
    assert!(
        snap.iter().any(|(_, c)| c == b"late local file"),
        "d/late lost: {:?}\n{}",
        all_names(&b.dir),
        tail(&b.log_text(), 30)
    );
    no_panic(&mut b);
}

/// Entries through a file, through symlinks to outside, at a symlink: nothing outside the share
/// changes, the local file stays, no death.
#[test]
fn peer_entries_through_files_and_symlinks_stay_inside() {
    let t = TestDir::new("rv-through-links");
    let (mut b, listed) = victim(&t);
    let out = t.join("outside");
    fs::create_dir_all(out.join("dir")).unwrap();
    fs::write(out.join("dir/x"), b"outside x").unwrap();
    fs::write(out.join("file2"), b"outside file2").unwrap();
    fs::set_permissions(out.join("dir"), fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&out);
    fs::write(b.path("f"), b"local f").unwrap();
    std::os::unix::fs::symlink(out.join("dir"), b.path("l")).unwrap();
    std::os::unix::fs::symlink(out.join("file2"), b.path("s")).unwrap();
    assert!(b.wait_log(SOON, "changed locally: f"));
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_2003, listed);
    let dev = f.daemon;
    let data = random_bytes(9, 2000);
    for p in ["l/y", "s", "f/z", "l", "l/x"] {
        f.offer(p, data.clone());
    }
    let over = |mut e: WEntry| {
        e.version = vec![(dev, 1000), (f.device, 1)];
        e.mtime = now_secs() + 3600;
        e
    };
    let mut mode = WEntry::dir("l", f.device, 1);
    mode.mode = 0o777;
    let entries = vec![
        over(WEntry::deleted("f/x", f.device, 1)),
        over(WEntry::deleted("l/x", f.device, 1)),
        over(WEntry::dir("l/sub", f.device, 1)),
        over(WEntry::file("l/y", &data, f.device, 1)),
        over(WEntry::file("f/z", &data, f.device, 1)),
        over(WEntry::file("s", &data, f.device, 1)),
        over(mode),
        over(WEntry::deleted("l", f.device, 1)),
        over(WEntry::deleted("s", f.device, 1)),
    ];
    announce(&f, 1, &entries);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(snapshot(&out), before, "outside changed");
    assert_eq!(mode_of(&out.join("dir")), 0o755);
    assert_eq!(fs::read(b.path("f")).unwrap(), b"local f");
    no_panic(&mut b);
}

/// Hard links to a file outside the share planted at the first conflict names of `x`: the
/// losing local edit goes to a free name, the outside file keeps bytes and mode.
#[test]
fn conflict_names_taken_by_hard_links_are_never_written() {
    let t = TestDir::new("rv-conflict-links");
    let (mut b, listed) = victim(&t);
    let out = t.join("outside");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("v"), b"outside victim").unwrap();
    fs::set_permissions(out.join("v"), fs::Permissions::from_mode(0o600)).unwrap();
    let mine = b"B's own edit of x".to_vec();
    fs::write(b.path("x"), &mine).unwrap();
    let m = 1_600_000_000i64;
    File::open(b.path("x"))
        .unwrap()
        .set_modified(UNIX_EPOCH + Duration::from_secs(m as u64))
        .unwrap();
    assert!(b.wait_log(SOON, "changed locally: x"));
    let dev = short_id(b.device());
    let stamp = utc_stamp(m);
    for n in 1..=2 {
        let suffix = if n == 1 {
            dev.clone()
        } else {
            format!("{dev}-{n}")
        };
        let name = format!("x.sync-conflict-{stamp}-{suffix}");
        fs::hard_link(out.join("v"), b.path(&name)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(800));
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_2004, listed);
    let data = random_bytes(10, 4000);
    f.offer("x", data.clone());
    let mut e = WEntry::file("x", &data, f.device, 1);
    e.mtime = now_secs() + 3600;
    announce(&f, 1, &[e]);
    assert!(
        wait_until(SOON, || has_content(&b.path("x"), &data)),
        "x never arrived:\n{}",
        tail(&b.log_text(), 20)
    );
    assert!(
        snapshot(&b.dir).iter().any(|(_, c)| *c == mine),
        "B's edit lost: {:?}",
        all_names(&b.dir)
    );
    assert_eq!(fs::read(out.join("v")).unwrap(), b"outside victim");
    assert_eq!(mode_of(&out.join("v")), 0o600);
    no_panic(&mut b);
}

/// keep_aside removes the losing file when the conflict name "already holds this content" as
/// far as the index and a stat tell. A same-size in-place rewrite of the conflict copy with its
/// mtime restored is invisible to that check: B's losing edit is then removed and its content
/// is nowhere.
#[test]
fn keep_aside_trusts_a_stat_to_remove_a_losing_edit() {
    let t = TestDir::new("rv-keep-aside-belief");
    let (mut b, listed) = victim(&t);
    let mine = b"B's own edit of x, 32 bytes long".to_vec();
    let m = 1_600_000_000i64;
    let mt = UNIX_EPOCH + Duration::from_secs(m as u64);
    fs::write(b.path("x"), &mine).unwrap();
    File::open(b.path("x")).unwrap().set_modified(mt).unwrap();
    let name = format!("x.sync-conflict-{}-{}", utc_stamp(m), short_id(b.device()));
    fs::write(b.path(&name), &mine).unwrap();
    let cmt = UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    File::open(b.path(&name))
        .unwrap()
        .set_modified(cmt)
        .unwrap();
    assert!(b.wait_log(SOON, "changed locally: x"));
    assert!(b.wait_log(SOON, &format!("changed locally: {name}")));
    std::thread::sleep(Duration::from_millis(1500));
    // Rewritten in place, same size, mtime put back, while B is stopped (no inotify event).
    let port = b.port;
    assert!(b.terminate(SOON).is_some());
    let other = b"something else, also 32 bytes!!!".to_vec();
    assert_eq!(other.len(), mine.len());
    fs::OpenOptions::new()
        .write(true)
        .open(b.path(&name))
        .and_then(|mut fh| std::io::Write::write_all(&mut fh, &other))
        .unwrap();
    File::open(b.path(&name))
        .unwrap()
        .set_modified(cmt)
        .unwrap();
    let mut b = Peer::start(&t, "B", port, &[listed]);
    std::thread::sleep(Duration::from_millis(1500));
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_2005, listed);
    let data = random_bytes(11, 4000);
    f.offer("x", data.clone());
    let mut e = WEntry::file("x", &data, f.device, 1);
    e.mtime = now_secs() + 3600;
    announce(&f, 1, &[e]);
    assert!(wait_until(SOON, || has_content(&b.path("x"), &data)));
    assert!(
        snapshot(&b.dir).iter().any(|(_, c)| *c == mine),
        "B's edit is nowhere: {:?}\n{}",
        all_names(&b.dir),
        tail(&b.log_text(), 20)
    );
    no_panic(&mut b);
}

// ---------------------------------------------------------------------------------------------
// 2. A hostile local user

/// While B slowly pulls `d/big`, a local user moves `d` away and puts a symlink to a folder
/// outside in its place: nothing is written outside, and B lives.
#[test]
fn a_folder_swapped_for_a_symlink_mid_pull_is_not_followed() {
    let t = TestDir::new("rv-swap-mid-pull");
    let (mut b, listed) = victim(&t);
    let out = t.join("outside");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("keep"), b"outside keep").unwrap();
    fs::write(out.join("big"), b"outside big: must stay").unwrap();
    let before = snapshot(&out);
    let f = FakePeer::connect_rate(b.port, 0x5EED_0000_0000_2006, listed, Some(400_000));
    let data = random_bytes(12, 2 << 20);
    f.offer("d/big", data.clone());
    let small = b"small".to_vec();
    f.offer("d/small", small.clone());
    announce(
        &f,
        1,
        &[
            WEntry::dir("d", f.device, 1),
            WEntry::file("d/big", &data, f.device, 1),
        ],
    );
    assert!(
        wait_until(SOON, || fs::metadata(b.path("d/.big.left-tmp"))
            .is_ok_and(|m| m.len() > 0)),
        "never started pulling"
    );
    fs::rename(b.path("d"), t.join("moved")).unwrap();
    std::os::unix::fs::symlink(&out, b.path("d")).unwrap();
    announce(&f, 2, &[WEntry::file("d/small", &small, f.device, 1)]);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(snapshot(&out), before, "outside changed");
    no_panic(&mut b);
}

/// A local user swaps folder `d` for a symlink to outside (which holds a file of the same name)
/// just before a peer deletes `d/victim`: the outside file stays.
#[test]
fn a_deletion_through_a_swapped_folder_stays_inside() {
    let t = TestDir::new("rv-swap-delete");
    let (mut b, listed) = victim(&t);
    let out = t.join("outside");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("victim"), b"outside victim").unwrap();
    fs::create_dir_all(b.path("d")).unwrap();
    fs::write(b.path("d/victim"), b"inside victim").unwrap();
    assert!(b.wait_log(SOON, "changed locally: d/victim"));
    std::thread::sleep(Duration::from_millis(500));
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_2007, listed);
    let dev = f.daemon;
    let mut gone = WEntry::deleted("d/victim", f.device, 1);
    gone.version = vec![(dev, 1000), (f.device, 1)];
    let mut gd = WEntry::deleted("d", f.device, 1);
    gd.kind = 1;
    gd.version = vec![(dev, 1000), (f.device, 1)];
    fs::rename(b.path("d"), t.join("moved")).unwrap();
    std::os::unix::fs::symlink(&out, b.path("d")).unwrap();
    announce(&f, 1, &[gone, gd]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(fs::read(out.join("victim")).unwrap(), b"outside victim");
    no_panic(&mut b);
}

/// A hard link to a file outside the share at `.left/installs` before the first install: the
/// install log must not truncate or write the outside file.
#[test]
fn a_hard_link_at_the_install_log_is_not_written_through() {
    let t = TestDir::new("rv-installs-link");
    let (mut b, listed) = victim(&t);
    let out = t.join("outside");
    fs::create_dir_all(&out).unwrap();
    let precious = b"outside: the install log must never write here\n".to_vec();
    fs::write(out.join("p"), &precious).unwrap();
    let _ = fs::remove_file(b.path(".left/installs"));
    fs::hard_link(out.join("p"), b.path(".left/installs")).unwrap();
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_2008, listed);
    let data = random_bytes(13, 5000);
    f.offer("x", data.clone());
    announce(&f, 1, &[WEntry::file("x", &data, f.device, 1)]);
    assert!(wait_until(SOON, || has_content(&b.path("x"), &data)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fs::read(out.join("p")).unwrap(),
        precious,
        "the file outside was written through .left/installs"
    );
    no_panic(&mut b);
}

// ---------------------------------------------------------------------------------------------
// 3. Kills

/// A edits and creates files continuously; B is killed with -9 at random moments (40 times)
/// and restarted. Only A edits: once quiet, no conflict copy, no temp file, both identical.
#[test]
fn random_kills_of_the_receiver_make_no_conflicts() {
    let t = TestDir::new("rv-kill-loop");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let mut rng = Rng::new(0xC0FFEE);
    let kills: usize = std::env::var("RV_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for round in 0..kills {
        for _ in 0..(1 + rng.next_u64() % 4) {
            let i = rng.next_u64() % 12;
            let size = match rng.next_u64() % 4 {
                0 => 100,
                1 => 20_000,
                2 => 300_000,
                _ => 1_500_000,
            } as usize;
            let data = random_bytes(rng.next_u64(), size);
            fs::write(a.path(&format!("f{i}")), &data).unwrap();
        }
        let wait = Duration::from_millis(rng.next_u64() % 1500);
        std::thread::sleep(wait);
        b.kill();
        if rng.next_u64().is_multiple_of(3) {
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 500));
        }
        b = Peer::start(&t, "B", pb, &[pa]);
        let _ = round;
    }
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(wait_until(SOON, || temps(&a.dir).is_empty()
        && temps(&b.dir).is_empty()));
    let (ca, cb) = (conflicts(&a.dir), conflicts(&b.dir));
    assert!(
        ca.is_empty() && cb.is_empty(),
        "spurious conflict copies: A {ca:?} B {cb:?}\n{}",
        tail(&b.log_text(), 30)
    );
    no_panic(&mut a);
    no_panic(&mut b);
}

/// B receives `f` and is killed before saving (f in the install log only). B restarts; its
/// first scan adopts f's version from the log, then g arrives (the log is appended to) and B
/// is killed again at once. A then changes f: no conflict copy may appear on B.
#[test]
fn an_install_log_survives_two_kills_in_a_row() {
    let t = TestDir::new("rv-two-kills");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let mut bad = Vec::new();
    for round in 0..6u64 {
        let f = format!("f{round}");
        let g = format!("g{round}");
        let v1 = random_bytes(round * 3 + 100, 50_000);
        fs::write(a.path(&f), &v1).unwrap();
        assert!(wait_until(SOON, || has_content(&b.path(&f), &v1)));
        b.kill();
        let gv = random_bytes(round * 3 + 101, 3_000);
        fs::write(a.path(&g), &gv).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        b = Peer::start(&t, "B", pb, &[pa]);
        assert!(wait_until(SOON, || has_content(&b.path(&g), &gv)));
        b.kill();
        let v2 = random_bytes(round * 3 + 102, 4_000);
        fs::write(a.path(&f), &v2).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        b = Peer::start(&t, "B", pb, &[pa]);
        assert!(wait_until(SOON, || has_content(&b.path(&f), &v2)));
        wait_identical(&a.dir, &b.dir, SOON);
        let c = conflicts(&b.dir);
        if !c.is_empty() {
            bad.push((round, c));
        }
    }
    assert!(bad.is_empty(), "spurious conflict copies: {bad:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. No /proc

/// B runs where /proc is not mounted (a mount namespace with an empty tmpfs on /proc): a file
/// made in B's share must still reach A, and nothing of B's must be taken for deleted.
#[test]
fn a_share_is_scanned_without_proc() {
    let ok = Command::new("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs none /proc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: no unprivileged mount namespace");
        return;
    }
    let t = TestDir::new("rv-no-proc");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    fs::create_dir_all(t.join("B/sub")).unwrap();
    fs::write(t.join("B/before"), b"made before").unwrap();
    fs::write(t.join("B/sub/inner"), b"inner").unwrap();
    let log = t.join("logs/B-noproc.log");
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut child = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs none /proc && exec \"$0\" \"$@\"",
            BIN,
            "-v",
            "--dir",
            &t.join("B").display().to_string(),
            "--port",
            &pb.to_string(),
            &format!("127.0.0.1:{pa}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let got = wait_until(Duration::from_secs(20), || {
        has_content(&a.path("before"), b"made before")
    });
    fs::write(t.join("B/after"), b"made after").unwrap();
    let got2 = got
        && wait_until(Duration::from_secs(20), || {
            has_content(&a.path("after"), b"made after")
        });
    let text = fs::read_to_string(&log).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        got && got2,
        "B's files never reached A without /proc:\n{}",
        tail(&text, 15)
    );
}

/// A local user replaces indexed file `a` by a FIFO just before a peer announces `b` whose
/// blocks `a` holds: the puller opens `a` to copy them (blocking, no O_NONBLOCK) and must not
/// hang; `b` must still arrive, and later files too.
#[test]
fn a_fifo_swapped_in_for_a_local_source_does_not_hang_the_puller() {
    let t = TestDir::new("rv-fifo-source");
    let (mut b, listed) = victim(&t);
    let data = random_bytes(21, 3 << 20);
    fs::write(b.path("a"), &data).unwrap();
    assert!(b.wait_log(SOON, "changed locally: a"));
    std::thread::sleep(Duration::from_millis(800));
    let f = FakePeer::connect(b.port, 0x5EED_0000_0000_2009, listed);
    f.offer("b", data.clone());
    let later = b"later".to_vec();
    f.offer("later", later.clone());
    fs::remove_file(b.path("a")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(b.path("a"))
            .status()
            .unwrap()
            .success()
    );
    announce(&f, 1, &[WEntry::file("b", &data, f.device, 1)]);
    std::thread::sleep(Duration::from_millis(500));
    announce(&f, 2, &[WEntry::file("later", &later, f.device, 1)]);
    let ok = wait_until(Duration::from_secs(20), || {
        has_content(&b.path("b"), &data) && has_content(&b.path("later"), &later)
    });
    // Unblock whatever opened the FIFO, so the daemon can be stopped.
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags_nonblock(b.path("a"));
    assert!(
        ok,
        "the puller hung on a FIFO:\n{}",
        tail(&b.log_text(), 20)
    );
    no_panic(&mut b);
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self, p: std::path::PathBuf) -> std::io::Result<File>;
}
impl NonBlock for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self, p: std::path::PathBuf) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(0o4000).open(p)
    }
}
