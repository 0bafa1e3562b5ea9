//! Features beyond plain syncing: a shared key, a clean stop on SIGTERM, `.leftignore`.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

#[test]
fn shared_key_lets_in_only_holders() {
    let t = TestDir::new("key");
    fs::write(t.join("key1"), "correct horse battery staple\n").unwrap();
    fs::write(t.join("key2"), "a different key entirely\n").unwrap();
    let k1 = t.join("key1").display().to_string();
    let k2 = t.join("key2").display().to_string();

    // Same key: syncs.
    let (pa, pb) = two_ports();
    let a = Peer::start_with(&t, "A", pa, &[pb], &["--key-file", &k1]);
    let b = Peer::start_with(&t, "B", pb, &[pa], &["--key-file", &k1]);
    fs::write(a.path("secret.txt"), b"for key holders\n").unwrap();
    assert!(
        wait_until(SOON, || has_content(
            &b.path("secret.txt"),
            b"for key holders\n"
        )),
        "peers with the same key did not sync"
    );

    // A third peer with another key, listed by A and listing A: gets nothing.
    let pc = free_port();
    let a2 = Peer::start_with(&t, "A2", free_port(), &[pc], &["--key-file", &k1]);
    fs::write(a2.path("secret.txt"), b"for key holders\n").unwrap();
    let (st, log) = run_logged(
        &t,
        "C",
        &[
            "--once".into(),
            "--timeout".into(),
            "3".into(),
            "--key-file".into(),
            k2.clone(),
            "--dir".into(),
            t.join("C").display().to_string(),
            "--port".into(),
            pc.to_string(),
            format!("127.0.0.1:{}", a2.port),
        ],
        Duration::from_secs(60),
    );
    assert!(
        !st.success(),
        "--once with the wrong key claims success:\n{log}"
    );
    assert!(
        !t.join("C/secret.txt").exists(),
        "a peer with the wrong key got the file"
    );
    assert!(received(&log).is_empty(), "{log}");
    assert!(
        log.contains("key"),
        "the refusal should say it is about the key:\n{log}"
    );

    // And one with no key at all.
    let (st, log) = run_once(&t, "D", free_port(), &[a2.port], 3);
    assert!(!st.success(), "--once without a key claims success:\n{log}");
    assert!(
        !t.join("D/secret.txt").exists(),
        "a peer without the key got the file"
    );
    assert!(
        log.contains("key"),
        "the refusal should say it is about the key:\n{log}"
    );
    drop(a);
    drop(b);
}

#[test]
fn sigterm_stops_cleanly_and_restart_is_free() {
    let t = TestDir::new("sigterm");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    write_random(&a.path("data.bin"), 5 << 20, 3);
    fs::create_dir_all(b.path("d")).unwrap();
    fs::write(b.path("d/small"), b"small").unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    // Stop right away: the clean stop must save what the periodic save has not yet.
    for p in [&mut a, &mut b] {
        let st = p.terminate(Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "{} did not exit 0 on SIGTERM: {st:?}\n{}",
            p.name,
            tail(&p.log_text(), 10)
        );
    }
    let a = Peer::start(&t, "A", pa, &[pb]);
    let (st, log) = run_once(&t, "B", pb, &[pa], 30);
    assert!(st.success(), "{log}");
    let totals = once_totals(&log).unwrap_or_else(|| panic!("no totals:\n{log}"));
    assert_eq!((totals.0, totals.1), (0, 0), "{log}");
    assert!(
        lines_starting(&log, "changed locally").is_empty(),
        "B re-versioned files:\n{log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lines_starting(&a.log_text(), "changed locally").is_empty(),
        "A re-versioned files:\n{}",
        a.log_text()
    );
    wait_identical(&a.dir, &t.join("B"), SOON);
}

#[test]
fn leftignore_keeps_matching_paths_local() {
    let t = TestDir::new("ignore");
    let rules = "# build output\nbuild/\n*.tmp\n!keep.tmp\n";
    for side in ["A", "B"] {
        fs::create_dir_all(t.join(side)).unwrap();
        fs::write(t.join(&format!("{side}/.leftignore")), rules).unwrap();
    }
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir_all(a.path("build/obj")).unwrap();
    fs::write(a.path("build/obj/x.o"), b"obj").unwrap();
    fs::write(a.path("scratch.tmp"), b"scratch").unwrap();
    fs::create_dir_all(a.path("src")).unwrap();
    fs::write(a.path("src/deep.tmp"), b"deep").unwrap();
    fs::write(a.path("keep.tmp"), b"kept").unwrap();
    fs::write(a.path("src/main.c"), b"int main;").unwrap();
    assert!(wait_until(SOON, || has_content(
        &b.path("src/main.c"),
        b"int main;"
    )));
    assert!(wait_until(SOON, || has_content(
        &b.path("keep.tmp"),
        b"kept"
    )));
    std::thread::sleep(Duration::from_millis(1500));
    for p in ["build", "scratch.tmp", "src/deep.tmp"] {
        assert!(!b.path(p).exists(), "ignored {p} reached B");
        assert!(a.path(p).exists(), "ignored {p} vanished from A");
    }
    // B's own file under an ignored name stays B's; A's stays A's.
    fs::write(b.path("scratch.tmp"), b"B's own scratch").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fs::read(a.path("scratch.tmp")).unwrap(), b"scratch");
    assert_eq!(fs::read(b.path("scratch.tmp")).unwrap(), b"B's own scratch");
}

/// Review of dbc1809: A has an ignored folder `build/` (`.leftignore`: `build/`, folders only);
/// B makes a file `build`, which A's rules do not ignore (a file). A's install refuses the
/// folder in the way because its index does not have it, to wait for the scan; but the scan
/// never records an ignored folder, so the install fails every 5 s for ever and A never
/// settles (before dbc1809 the file was kept beside the folder as a conflict copy).
#[test]
fn regression_review17b_file_over_an_ignored_folder_retried_for_ever() {
    let t = TestDir::new("ignore-folder");
    for side in ["A", "B"] {
        fs::create_dir_all(t.join(side)).unwrap();
        fs::write(t.join(&format!("{side}/.leftignore")), "build/\n").unwrap();
    }
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir_all(a.path("build")).unwrap();
    fs::write(a.path("build/x.o"), b"obj").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    fs::write(b.path("build"), b"B's file named build").unwrap();
    std::thread::sleep(Duration::from_secs(13));
    let log = a.log_text();
    let refusals = log
        .lines()
        .filter(|l| l.contains("build") && l.contains("a folder made locally is in the way"))
        .count();
    assert!(
        refusals < 2,
        "A refused the file {refusals} times in 13 s, waiting for a scan that never records an \
         ignored folder:\n{log}"
    );
}

/// Review 17c: "Ignored paths are neither sent nor taken nor deleted" (README). A's ignored
/// folder `build/` (empty) is removed by a file of that name from B: 7667c67 counts an ignored
/// folder as known, so the install rmdirs it and puts B's file in its place.
#[test]
fn regression_review17c_empty_ignored_folder_replaced_by_a_peers_file() {
    let t = TestDir::new("ignore-empty-folder");
    for side in ["A", "B"] {
        fs::create_dir_all(t.join(side)).unwrap();
        fs::write(t.join(&format!("{side}/.leftignore")), "build/\n").unwrap();
    }
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir_all(a.path("build")).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    fs::write(b.path("build"), b"B's file named build").unwrap();
    fs::write(b.path("marker"), b"m").unwrap();
    assert!(wait_until(SOON, || a.path("marker").exists()));
    std::thread::sleep(Duration::from_secs(3));
    let md = fs::symlink_metadata(a.path("build")).unwrap();
    assert!(
        md.is_dir(),
        "A's ignored folder build/ was removed and replaced by B's file:\n{}",
        a.log_text()
    );
}

/// Review 17c: a non-empty ignored folder `build/` at A, a file `build` at B (not ignored: the
/// pattern is for folders). A keeps B's file as a conflict copy and records its ignored folder
/// in the index, newer, and announces it; B ignores it, so nothing converges, and every edit of
/// B's file makes one more conflict copy on both sides.
#[test]
fn regression_review17c_ignored_folder_copies_every_edit_of_a_peers_file() {
    let t = TestDir::new("ignore-folder-copies");
    for side in ["A", "B"] {
        fs::create_dir_all(t.join(side)).unwrap();
        fs::write(t.join(&format!("{side}/.leftignore")), "build/\n").unwrap();
    }
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir_all(a.path("build")).unwrap();
    fs::write(a.path("build/x.o"), b"obj").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    for i in 0..3 {
        fs::write(b.path("build"), format!("B's file named build, edit {i}")).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    }
    let copies = |p: &Peer| {
        fs::read_dir(p.path(""))
            .unwrap()
            .flatten()
            .filter(|x| x.file_name().to_string_lossy().contains("sync-conflict"))
            .count()
    };
    let (ca, cb) = (copies(&a), copies(&b));
    assert!(
        ca <= 1 && cb <= 1,
        "conflict copies: A {ca}, B {cb} after 3 edits of B's file\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
}

/// Review 17c, the gap 7667c67 left in its own rule ("a losing edit renamed aside is made
/// durable before the winner is recorded with its version merged in and announced"): a file
/// received where a folder holding files stays is renamed aside as a conflict copy and the
/// folder recorded with the file's version merged in (`keep_beside`), but in a group of small
/// files (`install_group`, `durable` false) nothing syncs that rename before the folder is
/// announced. The sender takes the folder as newer and unlinks its file, with no copy: a power
/// cut here before the group's filesystem sync loses the rename, the temp file is an orphan,
/// and the file is gone on both sides. Seen with strace: A writes the folder's announcement
/// to the socket after renaming B's file aside and before any sync completes.
#[test]
fn regression_review17c_file_kept_beside_a_folder_announced_before_durable() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("no strace: skipped");
        return;
    }
    let t = TestDir::new("keep-beside-durable");
    let (pa, pb) = two_ports();
    fs::create_dir_all(t.join("A/keepme")).unwrap();
    fs::write(t.join("A/keepme/x"), b"A's file in the folder").unwrap();
    let a = Peer::start(&t, "A", pa, &[pb]);
    std::thread::sleep(Duration::from_millis(1500));
    let trace = t.join("a.strace");
    let mut st = std::process::Command::new("strace")
        .args(["-f", "-yy", "-s", "256", "-tt", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=renameat2,renameat,rename,syncfs,fsync,fdatasync,write,sendto,writev,sendmsg",
        ])
        .args(["-p", &a.pid().unwrap().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    fs::create_dir_all(t.join("B")).unwrap();
    fs::write(t.join("B/keepme"), b"B's only copy").unwrap();
    let b = Peer::start(&t, "B", pb, &[pa]);
    let copy = || {
        fs::read_dir(a.path("")).unwrap().flatten().any(|x| {
            x.file_name()
                .to_string_lossy()
                .starts_with("keepme.sync-conflict")
        })
    };
    assert!(wait_until(SOON, || copy() && b.path("keepme").is_dir()));
    std::thread::sleep(Duration::from_millis(500));
    signal(st.id(), "INT");
    let _ = st.wait();
    let text = fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains("keepme.sync-conflict"))
        .unwrap_or_else(|| panic!("no rename aside in the trace:\n{text}"));
    let mut announced = None;
    for l in &lines[at + 1..] {
        if (l.contains("syncfs(")
            || l.contains("fsync(")
            || l.contains("syncfs resumed")
            || l.contains("fsync resumed"))
            && !l.contains("unfinished")
        {
            break;
        }
        if l.contains("<TCP") && l.contains("keepme") && !l.contains("sync-conflict") {
            announced = Some(*l);
            break;
        }
    }
    assert!(
        announced.is_none(),
        "A announced its folder (B's file's version merged in) before the rename of B's file \
         aside was made durable:\n{}\n{}\nB:\n{}",
        lines[at],
        announced.unwrap_or_default(),
        b.log_text()
    );
}

/// A pull cut by a crash leaves its temp file; by the time the daemon starts again the version
/// it was for is replaced everywhere (here: deleted, and the deletion taken in before the
/// crash), so no pull will ever finish or remove it. Once the peer has announced all it holds,
/// such a temp file goes, and so does one for a path nobody announces (chaos seed 732, 3 peers:
/// `d/.x.left-tmp` stayed for good). A temp file a pull still wants stays and is resumed
/// (`kill_9_mid_transfer_then_resume` in tests/sync.rs).
#[test]
fn temp_files_from_before_a_crash_that_no_pull_wants_go() {
    let t = TestDir::new("found-temps");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    write_file(&a.path("d/x"), b"one");
    assert!(wait_until(SOON, || has_content(&b.path("d/x"), b"one")));
    fs::remove_file(a.path("d/x")).unwrap();
    assert!(wait_until(SOON, || !b.path("d/x").exists()));
    b.kill();
    fs::write(b.path("d/.x.left-tmp"), b"half of a version nobody holds").unwrap();
    fs::write(b.path(".y.left-tmp"), b"of a path nobody announces").unwrap();
    let b = Peer::start(&t, "B", pb, &[pa]);
    write_file(&a.path("z"), b"after");
    assert!(wait_until(SOON, || has_content(&b.path("z"), b"after")));
    assert!(
        wait_until(SOON, || !b.path("d/.x.left-tmp").exists()
            && !b.path(".y.left-tmp").exists()),
        "temp files no pull wants stayed\nB:\n{}",
        tail(&b.log_text(), 30)
    );
    wait_identical(&a.dir, &b.dir, SOON);
}

/// Fifth review: a conflict on a file whose name is over 217 bytes. The conflict copy's name
/// (`NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT`) is longer than a name may be
/// (ENAMETOOLONG): `keep_aside` fails, the winner is never installed on the losing side and is
/// retried every 5 s for ever; the peers never converge (temp names hash such names, conflict
/// names do not).
#[test]
fn review5_conflict_on_a_long_name_converges() {
    let t = TestDir::new("rv5-longname");
    let name = format!("{}.txt", "n".repeat(230));
    let (pa, pb) = two_ports();
    write_file(&t.join("A").join(&name), b"made on A");
    write_file(&t.join("B").join(&name), b"made on B, longer");
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    let same = wait_until(Duration::from_secs(20), || {
        read(&a.path(&name)).is_some() && read(&a.path(&name)) == read(&b.path(&name))
    });
    assert!(
        same,
        "a conflict on a long name never resolved\nA:\n{}\nB:\n{}",
        tail(&a.log_text(), 8),
        tail(&b.log_text(), 8)
    );
}

/// Fifth review of deb6cdd: the temp files found at start go once *a* peer's pass completes,
/// whatever the other connected peers have yet to announce. B restarts with half of `big` in
/// its temp file; peer 1 (which holds `big`) is connected and mid-pass (a long index), peer 2
/// (a small or empty index) completes its pass first: the temp file is removed and `big` is
/// fetched whole from peer 1 although B held half of it.
#[test]
fn review5_a_found_temp_file_a_peer_mid_pass_wants_is_resumed() {
    use common::wire::{self, Entry as WEntry};
    let t = TestDir::new("rv5-found-temp-mid-pass");
    let data = random_bytes(55, 4 << 20);
    let half = data.len() / 2;
    write_file(&t.join("B/.big.left-tmp"), &data[..half]);
    let (pb, p1) = two_ports();
    let p2 = free_port();
    let b = Peer::start(&t, "B", pb, &[p1, p2]);
    let f1 = FakePeer::connect(b.port, 0x5EED_0000_0000_5001, p1);
    f1.offer("big", data.clone());
    f1.offer("a", b"a".to_vec());
    // Peer 1's pass is open: its first frame (no number) announced something else.
    assert!(f1.send(&wire::index(0, &[WEntry::file("a", b"a", f1.device, 1)])));
    assert!(b.wait_log(SOON, "received a"));
    // Peer 2 announces all it holds: nothing.
    let f2 = FakePeer::connect(b.port, 0x5EED_0000_0000_5002, p2);
    assert!(f2.send(&wire::index(1, &[])));
    assert!(f2.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    std::thread::sleep(Duration::from_secs(1));
    // Peer 1's pass goes on with big.
    assert!(f1.send(&wire::index(1, &[WEntry::file("big", &data, f1.device, 1)])));
    assert!(f1.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    assert!(wait_until(SOON, || has_content(&b.path("big"), &data)));
    let asked: u64 = (f1.requests.lock().unwrap().iter())
        .filter(|r| r.path == "big")
        .map(|r| r.len as u64)
        .sum();
    assert!(
        asked <= (data.len() - half) as u64,
        "{asked} bytes asked of {} although the temp file held {half}",
        data.len()
    );
}
