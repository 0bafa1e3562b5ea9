//! Two real `left` processes on 127.0.0.1 keep two folders identical.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

const MIB: u64 = 1 << 20;
/// For transfers of large files on a busy two-core machine: generous, never a speed test.
const LONG: Duration = Duration::from_secs(180);

fn received_of<'a>(r: &'a [Received], path: &str) -> Vec<&'a Received> {
    r.iter().filter(|x| x.path == path).collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn new_file_each_way() {
    let t = TestDir::new("each-way");
    let (a, b) = pair(&t);

    let da = random_bytes(1, 1000);
    fs::write(a.path("from-a.txt"), &da).unwrap();
    wait_content(&b, "from-a.txt", &da, SOON);

    let db = b"written on B\n".to_vec();
    fs::write(b.path("from-b.txt"), &db).unwrap();
    wait_content(&a, "from-b.txt", &db, SOON);

    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(md5sum(&a.path("from-a.txt")), md5sum(&b.path("from-a.txt")));

    // Each side logged the file it installed, with its size.
    let rb = received_when(&b, 1, |r| r.path == "from-a.txt");
    let ra = received_when(&a, 1, |r| r.path == "from-b.txt");
    assert_eq!(
        received_of(&rb, "from-a.txt")
            .iter()
            .map(|r| r.size)
            .collect::<Vec<_>>(),
        vec![1000],
        "B's log: {rb:?}"
    );
    assert_eq!(
        received_of(&ra, "from-b.txt")
            .iter()
            .map(|r| r.size)
            .collect::<Vec<_>>(),
        vec![db.len() as u64],
        "A's log: {ra:?}"
    );
    // Nothing came back to where it was made.
    assert!(received_of(&ra, "from-a.txt").is_empty(), "{ra:?}");
    assert!(received_of(&rb, "from-b.txt").is_empty(), "{rb:?}");
}

#[test]
fn nested_empty_and_hidden() {
    let t = TestDir::new("nested");
    let (a, b) = pair(&t);

    // Made in place while both run: the scanner may see any intermediate state.
    let deep = a.path("top/mid/leaf");
    fs::create_dir_all(&deep).unwrap();
    fs::create_dir_all(a.path("top/empty/also-empty")).unwrap();
    for i in 0..50 {
        fs::write(
            deep.join(format!("f{i:02}.bin")),
            random_bytes(100 + i, 1024),
        )
        .unwrap();
    }
    fs::write(a.path(".hidden"), b"dot file\n").unwrap();
    fs::create_dir_all(a.path("top/.dotdir")).unwrap();
    fs::write(a.path("top/.dotdir/.inner"), b"hidden in hidden\n").unwrap();
    fs::write(a.path("top/zero-bytes"), b"").unwrap();
    fs::write(a.path("top/name with spaces.txt"), b"spaces\n").unwrap();
    // And some from the other side.
    fs::create_dir_all(b.path(".config/app")).unwrap();
    fs::write(b.path(".config/app/settings"), b"x=1\n").unwrap();
    fs::create_dir_all(b.path("b-empty")).unwrap();

    wait_identical(&a.dir, &b.dir, SOON);

    assert!(b.path("top/empty/also-empty").is_dir());
    assert!(a.path("b-empty").is_dir());
    assert_eq!(
        fs::read_dir(b.path("top/empty/also-empty"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(fs::read(b.path("top/zero-bytes")).unwrap().len(), 0);
    assert_eq!(fs::read(b.path(".hidden")).unwrap(), b"dot file\n");
    assert_eq!(fs::read(a.path(".config/app/settings")).unwrap(), b"x=1\n");
    for i in 0..50 {
        let p = format!("top/mid/leaf/f{i:02}.bin");
        assert_eq!(
            fs::read(b.path(&p)).unwrap(),
            random_bytes(100 + i, 1024),
            "{p}"
        );
    }
    let listing_b = listing(&b.dir).unwrap();
    assert_eq!(
        listing_b.iter().filter(|(_, s)| s.is_some()).count(),
        50 + 5,
        "{listing_b:?}"
    );
    // Every leaf file was logged as received on B, once each.
    let rb = received_when(&b, 50, |r| r.path.starts_with("top/mid/leaf/"));
    for i in 0..50 {
        let p = format!("top/mid/leaf/f{i:02}.bin");
        assert!(!received_of(&rb, &p).is_empty(), "{p} not in B's log");
    }
}

#[test]
fn overwrite_in_place_converges() {
    let t = TestDir::new("overwrite");
    let (a, b) = pair(&t);

    let v1 = random_bytes(7, 300_000);
    fs::write(a.path("doc.bin"), &v1).unwrap();
    wait_content(&b, "doc.bin", &v1, SOON);

    // Same size, different content (middle and end), written in place: same inode.
    let mut v2 = v1.clone();
    v2[150_000..150_100].copy_from_slice(&random_bytes(8, 100));
    *v2.last_mut().unwrap() ^= 0xff;
    let f = OpenOptions::new()
        .write(true)
        .open(a.path("doc.bin"))
        .unwrap();
    f.write_all_at(&v2[150_000..150_100], 150_000).unwrap();
    f.write_all_at(&v2[v2.len() - 1..], v2.len() as u64 - 1)
        .unwrap();
    drop(f);
    assert_eq!(fs::read(a.path("doc.bin")).unwrap(), v2);
    wait_content(&b, "doc.bin", &v2, SOON);

    // Shorter.
    let v3 = random_bytes(9, 1234);
    fs::write(a.path("doc.bin"), &v3).unwrap();
    wait_content(&b, "doc.bin", &v3, SOON);

    // Longer, this time from B.
    let v4 = random_bytes(10, 700_001);
    fs::write(b.path("doc.bin"), &v4).unwrap();
    wait_content(&a, "doc.bin", &v4, SOON);

    // Emptied.
    fs::write(a.path("doc.bin"), b"").unwrap();
    wait_content(&b, "doc.bin", b"", SOON);

    wait_identical(&a.dir, &b.dir, SOON);
    // No conflict copies: these were sequential edits, not concurrent ones.
    let names: Vec<_> = listing(&a.dir).unwrap();
    assert_eq!(names, vec![("doc.bin".to_string(), Some(0))]);

    // The same-size rewrite changed 2 of 5 blocks: only those crossed the wire.
    let rb = received_when(&b, 1, |r| r.path == "doc.bin" && r.size == 0);
    let v2_pull = rb
        .iter()
        .filter(|r| r.path == "doc.bin" && r.size == 300_000)
        .nth(1)
        .unwrap_or_else(|| panic!("second version of doc.bin not in B's log: {rb:?}"));
    assert!(
        v2_pull.wire <= 2 * 65536,
        "a 101-byte in-place edit re-sent {} bytes: {v2_pull:?}",
        v2_pull.wire
    );
}

#[test]
fn a_file_made_again_is_served_from_the_new_file() {
    // A file deleted and made again, or saved by writing a new file and renaming it over the old
    // one, is a new inode under the same name: the sender must read the new file, not a
    // descriptor still open on the old one.
    let t = TestDir::new("made-again");
    let (a, b) = pair(&t);
    let staging = t.join("staging");
    let mut want = Vec::new();
    for seed in 0..3 {
        want = random_bytes(40 + seed, 3 << 20);
        put_file(&staging, &a.path("doc.bin"), &want);
        wait_content(&b, "doc.bin", &want, SOON);
        fs::remove_file(a.path("doc.bin")).unwrap();
        assert!(
            wait_until(SOON, || !b.path("doc.bin").exists()),
            "the deletion did not reach B"
        );
    }
    put_file(&staging, &a.path("doc.bin"), &want);
    wait_content(&b, "doc.bin", &want, SOON);
    // The "received" line follows the rename that wait_content saw.
    wait_until(SOON, || {
        received_of(&received(&b.log_text()), "doc.bin").len() >= 4
    });
    let log = b.log_text();
    assert!(
        !log.contains("changed on the peer"),
        "B was told the new file had changed while being sent:\n{}",
        tail(&log, 20)
    );
    assert_eq!(received_of(&received(&log), "doc.bin").len(), 4, "{log}");
}

#[test]
fn an_edit_that_keeps_size_and_mtime_still_syncs() {
    // A write whose stat looks unchanged afterwards: what a scan that hashed a file in the
    // middle of one long write sees (the mtime is set as the write begins). Only the write's
    // event tells; it must be enough.
    let t = TestDir::new("same-stat");
    let (a, b) = pair(&t);
    let v1 = random_bytes(50, 2 << 20);
    put_file(&t.join("staging"), &a.path("doc.bin"), &v1);
    wait_content(&b, "doc.bin", &v1, SOON);
    let mtime = fs::metadata(a.path("doc.bin")).unwrap().modified().unwrap();
    let mut v2 = v1.clone();
    v2[1_000_000..1_000_100].copy_from_slice(&random_bytes(51, 100));
    let f = OpenOptions::new()
        .write(true)
        .open(a.path("doc.bin"))
        .unwrap();
    f.write_all_at(&v2[1_000_000..1_000_100], 1_000_000)
        .unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert_eq!(
        fs::metadata(a.path("doc.bin")).unwrap().modified().unwrap(),
        mtime
    );
    wait_content(&b, "doc.bin", &v2, SOON);
}

#[test]
fn a_received_file_is_not_hashed_again() {
    // The receiver knows what it installed: its own writes (to the temp file, before the
    // rename) must not make its scanner read the file again.
    let t = TestDir::new("no-rehash");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start_with(&t, "B", pb, &[pa], &["-v"]);
    let data = random_bytes(60, 24 << 20);
    put_file(&t.join("staging"), &a.path("big.bin"), &data);
    wait_content(&b, "big.bin", &data, LONG);
    // An edit in place, received through the unchanged-block path.
    let f = OpenOptions::new()
        .write(true)
        .open(a.path("big.bin"))
        .unwrap();
    f.write_all_at(b"changed", 5 << 20).unwrap();
    drop(f);
    let mut want = data.clone();
    want[5 << 20..(5 << 20) + 7].copy_from_slice(b"changed");
    wait_content(&b, "big.bin", &want, LONG);
    std::thread::sleep(Duration::from_secs(2));
    let log = b.log_text();
    assert_eq!(received_of(&received(&log), "big.bin").len(), 2, "{log}");
    assert!(
        !log.contains("big.bin: written since the last scan")
            && !log.contains("big.bin: stat ")
            && !log.contains("blocks changed"),
        "B looked at the file it had just installed:\n{}",
        tail(&log, 20)
    );
}

#[test]
fn large_file_arrives_intact() {
    let t = TestDir::new("large");
    let (a, b) = pair(&t);
    let size = 128 * MIB + 12345; // not a multiple of the block size
    let staged = t.join("staging/big.bin");
    write_random(&staged, size, 42);
    let want = md5sum(&staged);
    fs::rename(&staged, a.path("big.bin")).unwrap();

    // Never visible on B under its real name until complete.
    let mut partial_seen = None;
    let ok = wait_until(LONG, || match fs::metadata(b.path("big.bin")) {
        Ok(m) if m.len() != size => {
            partial_seen = Some(m.len());
            true
        }
        Ok(_) => true,
        Err(_) => false,
    });
    assert!(ok, "big.bin did not arrive on B");
    assert_eq!(partial_seen, None, "big.bin visible half-written on B");
    assert_eq!(md5sum(&b.path("big.bin")), want);
    assert!(
        wait_until(SOON, || !b.path(".big.bin.left-tmp").exists()),
        "temp file left behind after the install"
    );
    wait_identical(&a.dir, &b.dir, SOON);

    let rb = received_when(&b, 1, |r| r.path == "big.bin");
    let r = received_of(&rb, "big.bin");
    assert_eq!(r.len(), 1, "{rb:?}");
    assert_eq!(r[0].size, size);
    assert_eq!(r[0].wire + r[0].reused, size, "{:?}", r[0]);
}

#[test]
fn kill_9_mid_transfer_then_resume() {
    let t = TestDir::new("resume");
    let size = 256 * MIB + 777;
    let src = t.join("A/big.bin");
    write_random(&src, size, 4242);
    let want = md5sum(&src);

    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let tmp = b.path(".big.bin.left-tmp");

    // Kill B once a quarter has arrived.
    let mut early_real = false;
    let mut seen = 0;
    let end = std::time::Instant::now() + LONG;
    while std::time::Instant::now() < end {
        if b.path("big.bin").exists() {
            early_real = true;
            break;
        }
        seen = fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
        if seen >= size / 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    b.kill();
    assert!(
        !early_real,
        "big.bin appeared on B before the kill (transfer too fast to interrupt?)"
    );
    assert!(
        seen >= size / 4,
        "the temp file never reached a quarter: {seen} bytes"
    );
    assert!(
        !b.path("big.bin").exists(),
        "visible under its real name while incomplete"
    );
    let arrived = fs::metadata(&tmp)
        .expect("temp file kept after kill -9")
        .len();
    assert!(
        arrived < size,
        "everything had arrived before the kill ({arrived} bytes)"
    );
    drop(b);

    // Restart B with --once against the still-running A.
    let (st, log) = run_once(&t, "B", pb, &[pa], 60);
    assert!(st.success(), "--once failed: {st:?}\n{}", tail(&log, 30));
    assert_eq!(md5sum(&t.join("B/big.bin")), want);
    assert!(!tmp.exists(), "temp file left behind");

    let (recv, _, _) = once_totals(&log).unwrap_or_else(|| panic!("no totals line:\n{log}"));
    let missing = size - arrived;
    // What had arrived is reused from the temp file: only the rest (plus at most a few blocks)
    // crosses the wire again.
    let slack = MIB;
    assert!(
        recv <= missing + slack,
        "after restart received {recv} bytes; only {missing} were missing ({arrived} had arrived)"
    );
    assert!(
        recv >= missing,
        "received {recv} bytes but {missing} were missing: where did the rest come from?"
    );
    let resent = recv - missing;
    assert!(
        resent * 20 < arrived,
        "re-sent {resent} of the {arrived} bytes that had arrived"
    );
    let r = received(&log);
    let r = received_of(&r, "big.bin");
    assert_eq!(r.len(), 1, "{log}");
    assert_eq!(r[0].wire, recv, "{:?}", r[0]);
    eprintln!("resume: {arrived} of {size} bytes had arrived; {recv} received after restart");
    drop(a);
}

/// The sender is killed mid-transfer and restarted: the receiver (a daemon throughout) resumes
/// from its temp file.
#[test]
fn kill_9_of_sender_mid_transfer_then_restart() {
    let t = TestDir::new("resume-sender");
    let size = 200 * MIB + 1;
    write_random(&t.join("A/big.bin"), size, 999);
    let want = md5sum(&t.join("A/big.bin"));
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    let tmp = b.path(".big.bin.left-tmp");
    let ok = wait_until(LONG, || {
        fs::metadata(&tmp).is_ok_and(|m| m.len() >= size / 4) || b.path("big.bin").exists()
    });
    a.kill();
    assert!(ok, "the transfer never got going");
    assert!(!b.path("big.bin").exists(), "finished before the kill");
    // B notices the connection is gone; its temp file stays.
    std::thread::sleep(Duration::from_millis(500));
    let arrived = fs::metadata(&tmp).expect("temp file kept").len();
    assert!(arrived < size);
    drop(a);

    let a = Peer::start(&t, "A", pa, &[pb]);
    assert!(
        wait_until(LONG, || fs::metadata(b.path("big.bin"))
            .is_ok_and(|m| m.len() == size)),
        "big.bin not completed after the sender restarted"
    );
    assert_eq!(md5sum(&b.path("big.bin")), want);
    let rb = received_when(&b, 1, |r| r.path == "big.bin");
    let r = received_of(&rb, "big.bin");
    assert_eq!(r.len(), 1, "{rb:?}");
    assert!(
        r[0].wire <= size - arrived + MIB,
        "after the sender's restart {} bytes crossed the wire; only {} were missing",
        r[0].wire,
        size - arrived
    );
    eprintln!(
        "sender resume: {arrived} of {size} had arrived; then {:?}",
        r[0]
    );
    wait_identical(&a.dir, &b.dir, SOON);
}

/// `--once` whose peer goes away for good in the middle of a sync must give up after
/// `--timeout` with a non-zero status, keeping the partial temp file, never installing it.
/// Engine bug (open): --once waits forever for a peer that was reached once and then vanished;
/// its --timeout only applies to peers never reached.
#[test]
fn once_gives_up_when_peer_vanishes_mid_sync() {
    let t = TestDir::new("vanish");
    let size = 256 * MIB;
    write_random(&t.join("A/big.bin"), size, 5);
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    // (Wait for A's first scan: see `once_waits_for_the_peers_first_scan`.)
    assert!(
        a.wait_log(LONG, "changed locally: big.bin"),
        "A never scanned big.bin"
    );
    let tmp = t.join("B/.big.bin.left-tmp");
    let (st, log) = std::thread::scope(|s| {
        let tt = &t;
        let h = s.spawn(move || run_once_limit(tt, "B", pb, &[pa], 3, Duration::from_secs(25)));
        let started = wait_until(LONG, || {
            fs::metadata(&tmp).is_ok_and(|m| m.len() >= size / 8) || h.is_finished()
        });
        a.kill();
        assert!(started, "the transfer never started");
        h.join().unwrap()
    });
    assert!(
        !t.join("B/big.bin").exists(),
        "B finished before A was killed:\n{log}"
    );
    assert_eq!(st.code(), Some(1), "{st:?}\n{log}");
    assert!(
        tmp.exists(),
        "the partial temp file was not kept for resume"
    );
}

#[test]
fn appended_while_syncing_ends_identical() {
    let t = TestDir::new("append");
    let (a, b) = pair(&t);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.path("growing.log"))
        .unwrap();
    let mut rng = Rng::new(99);
    let mut written: Vec<u8> = Vec::new();
    let mut snapshots = 0;
    let start = std::time::Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_millis(2000) {
        let n = 1000 + (rng.next_u64() % 60_000) as usize;
        let chunk = rng.bytes(n);
        f.write_all(&chunk).unwrap();
        written.extend_from_slice(&chunk);
        i += 1;
        // Whatever B shows under the real name is a version A had: a prefix of what was written.
        if i.is_multiple_of(5)
            && let Some(got) = read(&b.path("growing.log"))
        {
            snapshots += 1;
            assert!(
                written.starts_with(&got),
                "B shows {} bytes that are not a prefix of what A wrote",
                got.len()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(f);
    wait_content(&b, "growing.log", &written, SOON);
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(
        md5sum(&a.path("growing.log")),
        md5sum(&b.path("growing.log"))
    );
    eprintln!(
        "appended {} bytes in {i} writes; B showed {snapshots} intermediate versions",
        written.len()
    );
}

/// Syncs a few files, lets the index be saved, and kills both.
fn synced_and_stopped(t: &TestDir) -> (u16, u16) {
    let (pa, pb) = two_ports();
    let a = Peer::start(t, "A", pa, &[pb]);
    let b = Peer::start(t, "B", pb, &[pa]);
    write_random(&a.path("one.bin"), 3 * MIB + 5, 1);
    write_random(&a.path("dir/two.bin"), 70_000, 2);
    write_random(&b.path("three.bin"), 1, 3);
    fs::create_dir_all(b.path("empty")).unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    // Let both settle and save their index.
    std::thread::sleep(Duration::from_millis(2000));
    wait_identical(&a.dir, &b.dir, SOON);
    (pa, pb)
}

#[test]
fn restart_without_changes_sends_no_file_data() {
    let t = TestDir::new("restart");
    let (pa, pb) = synced_and_stopped(&t);

    let a = Peer::start(&t, "A", pa, &[pb]);
    let (st, log) = run_once(&t, "B", pb, &[pa], 30);
    assert!(st.success(), "--once failed: {st:?}\n{}", tail(&log, 30));
    let totals = once_totals(&log).unwrap_or_else(|| panic!("no totals line:\n{log}"));
    assert_eq!(
        (totals.0, totals.1),
        (0, 0),
        "file data crossed the wire after a restart without changes:\n{log}"
    );
    assert!(received(&log).is_empty(), "{log}");
    assert!(
        lines_starting(&log, "changed locally").is_empty(),
        "a restart re-versioned unchanged files:\n{log}"
    );
    // Let A see the end of the connection, then check it took nothing either.
    std::thread::sleep(Duration::from_millis(500));
    assert!(received(&a.log_text()).is_empty(), "{}", a.log_text());
    wait_identical(&a.dir, &t.join("B"), SOON);
}

/// Changes saved after the first save go to the index's journal; they survive a kill -9: a
/// restart finds every file as its index says, re-hashes nothing new and takes nothing.
#[test]
fn index_journal_survives_kill_9() {
    let t = TestDir::new("journal");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    write_random(&a.path("one.bin"), 200_000, 1);
    // Enough entries that a few changes are saved as a journal record, not a whole index.
    for i in 0..20 {
        write_random(&a.path(&format!("many/f{i}")), 100 + i, 10 + i);
    }
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_millis(1500));
    let log = b.path(".left/index.log");
    let after_base = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    // Later changes: a new file, a new folder, an edit, a deletion.
    write_random(&a.path("d/two.bin"), 70_000, 2);
    fs::create_dir_all(a.path("empty")).unwrap();
    write_random(&a.path("one.bin"), 200_000, 3);
    write_random(&a.path("gone.bin"), 10, 4);
    wait_identical(&a.dir, &b.dir, SOON);
    fs::remove_file(a.path("gone.bin")).unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_millis(1500));
    let grown = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(
        grown > after_base && grown > 24,
        "B saved no journal record ({after_base} -> {grown} bytes)\n{}",
        tail(&b.log_text(), 30)
    );
    b.kill();
    a.kill();

    let _a = Peer::start(&t, "A", pa, &[pb]);
    let (st, log) = run_once(&t, "B", pb, &[pa], 30);
    assert!(st.success(), "--once failed: {st:?}\n{}", tail(&log, 30));
    let totals = once_totals(&log).unwrap_or_else(|| panic!("no totals line:\n{log}"));
    assert_eq!((totals.0, totals.1), (0, 0), "file data crossed:\n{log}");
    assert!(received(&log).is_empty(), "{log}");
    assert!(
        lines_starting(&log, "changed locally").is_empty(),
        "the restart re-versioned files the journal held:\n{log}"
    );
    wait_identical(&t.join("A"), &t.join("B"), SOON);
}

/// Both sides run `--once` against each other: both agree, so both should exit 0. They dial
/// each other at once: each side must keep the same one of the two crossing connections (a
/// dialer that dropped its own where the peer kept it made A sync on the connection B was
/// closing, exit, and leave B waiting for it: failed once in make test before the fix).
#[test]
fn both_once_without_changes_exit_0() {
    let t = TestDir::new("both-once");
    let (pa, pb) = synced_and_stopped(&t);
    let tt = &t;
    let limit = Duration::from_secs(25);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(move || run_once_limit(tt, "A", pa, &[pb], 5, limit));
        let hb = s.spawn(move || run_once_limit(tt, "B", pb, &[pa], 5, limit));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    for (name, (st, log)) in [("A", &ra), ("B", &rb)] {
        assert!(st.success(), "{name} --once: {st:?}\n{}", tail(log, 30));
        let totals = once_totals(log).unwrap_or_else(|| panic!("{name}: no totals:\n{log}"));
        assert_eq!((totals.0, totals.1), (0, 0), "{name}:\n{log}");
        assert!(received(log).is_empty(), "{name}:\n{log}");
    }
    wait_identical(&t.join("A"), &t.join("B"), SOON);
}

#[test]
fn deletions_propagate() {
    let t = TestDir::new("delete");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    fs::create_dir_all(a.path("d/e")).unwrap();
    fs::create_dir_all(a.path("d/empty")).unwrap();
    fs::write(a.path("d/e/x"), b"x").unwrap();
    fs::write(a.path("d/y"), b"y").unwrap();
    fs::write(a.path("gone-from-a"), b"1").unwrap();
    fs::write(a.path("gone-from-b"), b"2").unwrap();
    fs::write(a.path("stays"), b"3").unwrap();
    wait_identical(&a.dir, &b.dir, SOON);

    fs::remove_file(a.path("gone-from-a")).unwrap();
    assert!(
        wait_until(SOON, || !b.path("gone-from-a").exists()),
        "a file deleted on A is still on B"
    );
    fs::remove_file(b.path("gone-from-b")).unwrap();
    assert!(
        wait_until(SOON, || !a.path("gone-from-b").exists()),
        "a file deleted on B is still on A"
    );
    fs::remove_dir_all(a.path("d")).unwrap();
    assert!(
        wait_until(SOON, || !b.path("d").exists()),
        "a folder tree deleted on A is still on B: {:?}",
        listing(&b.dir)
    );
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(
        listing(&b.dir).unwrap(),
        vec![("stays".to_string(), Some(1))]
    );
    assert!(
        b.log_text().contains("deleted gone-from-a"),
        "{}",
        b.log_text()
    );
    assert!(
        a.log_text().contains("deleted gone-from-b"),
        "{}",
        a.log_text()
    );

    // After a restart nothing comes back.
    std::thread::sleep(Duration::from_millis(1500));
    b.kill();
    let (st, log) = run_once(&t, "B", pb, &[pa], 30);
    assert!(st.success(), "{log}");
    assert_eq!(
        listing(&t.join("B")).unwrap(),
        vec![("stays".to_string(), Some(1))]
    );
    assert_eq!(
        listing(&a.dir).unwrap(),
        vec![("stays".to_string(), Some(1))]
    );
}

#[test]
fn concurrent_edits_keep_a_conflict_copy() {
    let t = TestDir::new("conflict");
    let (pa, pb) = two_ports();
    {
        let a = Peer::start(&t, "A", pa, &[pb]);
        let b = Peer::start(&t, "B", pb, &[pa]);
        fs::write(a.path("notes.txt"), b"base\n").unwrap();
        wait_content(&b, "notes.txt", b"base\n", SOON);
        std::thread::sleep(Duration::from_millis(1500));
    } // both killed

    // Edited on both sides while apart; B's edit is newer, so it wins and A's is kept aside.
    let now = SystemTime::now();
    let ea = b"edited on A\n".to_vec();
    let eb = b"edited on B, later\n".to_vec();
    fs::write(t.join("A/notes.txt"), &ea).unwrap();
    set_mtime(&t.join("A/notes.txt"), now - Duration::from_secs(60));
    fs::write(t.join("B/notes.txt"), &eb).unwrap();
    set_mtime(&t.join("B/notes.txt"), now - Duration::from_secs(30));

    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    let two_files = |p: &Peer| listing(&p.dir).is_ok_and(|l| l.len() == 2);
    let ok = wait_until(SOON, || two_files(&a) && two_files(&b));
    assert!(
        ok,
        "expected notes.txt and a conflict copy on both: A {:?}, B {:?}",
        listing(&a.dir),
        listing(&b.dir)
    );
    wait_identical(&a.dir, &b.dir, SOON);
    let l = listing(&a.dir).unwrap();
    let copy = l
        .iter()
        .map(|(p, _)| p.clone())
        .find(|p| p != "notes.txt")
        .unwrap();
    assert!(
        copy.starts_with("notes.sync-conflict-") && copy.ends_with(".txt"),
        "conflict copy named {copy:?}"
    );
    for p in [&a, &b] {
        assert_eq!(fs::read(p.path("notes.txt")).unwrap(), eb, "{}", p.name);
        assert_eq!(fs::read(p.path(&copy)).unwrap(), ea, "{}", p.name);
    }
    assert!(
        a.log_text()
            .contains(&format!("conflict: notes.txt kept as {copy}")),
        "{}",
        a.log_text()
    );
}

#[test]
fn copy_and_rename_of_big_file_reuse_local_data() {
    let t = TestDir::new("rename");
    let (a, b) = pair(&t);
    let size = 32 * MIB + 3;
    let staged = t.join("staging/movie.bin");
    write_random(&staged, size, 77);
    let want = md5sum(&staged);
    fs::rename(&staged, a.path("movie.bin")).unwrap();
    assert!(
        wait_until(LONG, || fs::metadata(b.path("movie.bin"))
            .is_ok_and(|m| m.len() == size)),
        "movie.bin did not arrive"
    );
    wait_identical(&a.dir, &b.dir, SOON);

    // A copy: B builds it from its own movie.bin.
    fs::copy(a.path("movie.bin"), t.join("staging/copy.bin")).unwrap();
    fs::rename(t.join("staging/copy.bin"), a.path("copy.bin")).unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(md5sum(&b.path("copy.bin")), want);
    let rb = received_when(&b, 1, |r| r.path == "copy.bin");
    let r = received_of(&rb, "copy.bin");
    assert_eq!(r.len(), 1, "{rb:?}");
    eprintln!("copy: {:?}", r[0]);
    assert!(
        r[0].wire <= size / 20 && r[0].reused >= size - size / 20,
        "a copy sent {} of {size} bytes over the wire ({} reused locally)",
        r[0].wire,
        r[0].reused
    );

    // A rename into a new folder.
    fs::create_dir_all(a.path("archive")).unwrap();
    fs::rename(a.path("movie.bin"), a.path("archive/movie-renamed.bin")).unwrap();
    assert!(
        wait_until(SOON, || !b.path("movie.bin").exists()
            && b.path("archive/movie-renamed.bin").exists()),
        "rename not applied on B: {:?}",
        listing(&b.dir)
    );
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(md5sum(&b.path("archive/movie-renamed.bin")), want);

    let rb = received_when(&b, 1, |r| r.path == "archive/movie-renamed.bin");
    let r = received_of(&rb, "archive/movie-renamed.bin");
    assert_eq!(r.len(), 1, "{rb:?}");
    eprintln!("rename: {:?}", r[0]);
    // Only the wire is checked: a rename done by moving the local file reports no "reuse".
    assert!(
        r[0].wire <= size / 20,
        "a rename sent {} of {size} bytes over the wire ({} reused locally)",
        r[0].wire,
        r[0].reused
    );
}

/// `--once` against a daemon that has just started and is still hashing its folder: the daemon
/// has not announced its files yet, so "in sync" must wait for them.
#[test]
fn once_waits_for_the_peers_first_scan() {
    let t = TestDir::new("first-scan");
    write_random(&t.join("A/big.bin"), 128 * MIB, 11);
    for i in 0..100 {
        write_random(&t.join(&format!("A/small/s{i:03}")), 2000 + i, 100 + i);
    }
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let (st, log) = run_once(&t, "B", pb, &[pa], 30);
    assert!(st.success(), "{st:?}\n{log}");
    let diff = tree_diff(&a.dir, &t.join("B"));
    assert!(
        diff.is_none(),
        "--once exited 0 but B differs from A: {diff:?}\nB's log:\n{}\nA's log:\n{}",
        tail(&log, 10),
        tail(&a.log_text(), 10)
    );
    let (recv, _, _) = once_totals(&log).unwrap();
    assert!(recv >= 128 * MIB, "received only {recv} bytes");
}

/// Temp-file names and the top `.left` folder stay local; a `.left` deeper down is ordinary.
#[test]
fn temp_files_and_state_stay_local() {
    let t = TestDir::new("local-only");
    let (a, b) = pair(&t);
    fs::write(a.path(".notes.txt.left-tmp"), b"half a file").unwrap();
    fs::create_dir_all(a.path("sub")).unwrap();
    fs::write(a.path("sub/.x.left-tmp"), b"half").unwrap();
    fs::write(a.path(".left/mine"), b"private").unwrap();
    fs::create_dir_all(a.path("sub/.left")).unwrap();
    fs::write(a.path("sub/.left/ordinary"), b"synced").unwrap();
    fs::write(a.path("marker"), b"m").unwrap();
    wait_content(&b, "marker", b"m", SOON);
    wait_content(&b, "sub/.left/ordinary", b"synced", SOON);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!b.path(".notes.txt.left-tmp").exists());
    assert!(!b.path("sub/.x.left-tmp").exists());
    assert!(!b.path(".left/mine").exists());
    assert_eq!(
        fs::read(a.path(".notes.txt.left-tmp")).unwrap(),
        b"half a file"
    );
    wait_identical(&a.dir, &b.dir, SOON);
}

/// Three peers in a line, A - B - C: changes travel across B both ways.
#[test]
fn three_peers_in_a_line() {
    let t = TestDir::new("three");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa, pc]);
    let c = Peer::start(&t, "C", pc, &[pb]);
    let da = random_bytes(31, 200_000);
    fs::write(a.path("from-a"), &da).unwrap();
    let dc = random_bytes(32, 3);
    fs::create_dir_all(c.path("cdir")).unwrap();
    fs::write(c.path("cdir/from-c"), &dc).unwrap();
    wait_content(&c, "from-a", &da, SOON);
    wait_content(&a, "cdir/from-c", &dc, SOON);
    wait_identical(&a.dir, &b.dir, SOON);
    wait_identical(&b.dir, &c.dir, SOON);
}

/// A file replaced by a folder of the same name, and a folder by a file.
#[test]
fn type_changes_converge() {
    let t = TestDir::new("types");
    let (a, b) = pair(&t);
    fs::write(a.path("x"), b"x was a file").unwrap();
    fs::create_dir_all(a.path("y/inner")).unwrap();
    fs::write(a.path("y/inner/f"), b"in y").unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.path("y/inner/f").is_file());

    fs::remove_file(a.path("x")).unwrap();
    fs::create_dir_all(a.path("x")).unwrap();
    fs::write(a.path("x/now-inside"), b"x is a folder").unwrap();
    fs::remove_dir_all(a.path("y")).unwrap();
    fs::write(a.path("y"), b"y is a file now").unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(fs::read(b.path("x/now-inside")).unwrap(), b"x is a folder");
    assert_eq!(fs::read(b.path("y")).unwrap(), b"y is a file now");
}

/// Thousands of small files in many folders (the index crosses several frames).
#[test]
fn many_small_files() {
    let t = TestDir::new("many");
    let (a, b) = pair(&t);
    let staging = t.join("staging/tree");
    for d in 0..40 {
        let dir = staging.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..75 {
            let name = format!("file-{f:03}-with-a-longish-name-to-fill-index-frames.txt");
            fs::write(dir.join(name), format!("{d}/{f}\n").repeat(1 + f % 7)).unwrap();
        }
    }
    // Moved in at once.
    fs::rename(&staging, a.path("tree")).unwrap();
    wait_identical(&a.dir, &b.dir, LONG);
    assert_eq!(
        listing(&b.dir)
            .unwrap()
            .iter()
            .filter(|x| x.1.is_some())
            .count(),
        40 * 75
    );
    // Thousands of tiny files fit many requests in the byte window: the puller must still
    // stay under what the sender accepts, and the connection must never have dropped.
    for (name, log) in [("A", a.log_text()), ("B", b.log_text())] {
        assert!(
            !log.contains("outstanding") && !log.contains("ended"),
            "{name}'s connection broke:\n{}",
            tail(&log, 20)
        );
    }
}

/// Kernel defaults (1024 open files, Tiny Core's as started from bootlocal.sh) once made a batch
/// of 1024 small files fail with "Too many open files", over and over. Under a hard limit of 200
/// descriptors, batches must shrink to fit and every file still arrive.
#[test]
fn many_small_files_under_a_low_open_file_limit() {
    let t = TestDir::new("nofile");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start_limited(&t, "B", pb, &[pa], 200);
    let staging = t.join("staging/tree");
    for d in 0..6 {
        let dir = staging.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..250 {
            fs::write(
                dir.join(format!("f{f:03}")),
                format!("{d}/{f}\n").repeat(1 + f % 5),
            )
            .unwrap();
        }
    }
    fs::rename(&staging, a.path("tree")).unwrap();
    wait_identical(&a.dir, &b.dir, LONG);
    // The last group's "received" lines follow its renames.
    wait_until(SOON, || received(&b.log_text()).len() >= 6 * 250);
    let log = b.log_text();
    assert!(
        !log.contains("Too many open files") && !log.contains("not synced yet"),
        "B ran out of descriptors or failed files:\n{}",
        tail(&log, 20)
    );
    assert_eq!(received(&log).len(), 6 * 250);
}

/// Repeated data (a file of zeros, a block repeated) is copied locally, not sent again.
#[test]
fn repeated_blocks_cross_the_wire_once() {
    let t = TestDir::new("zeros");
    let (a, b) = pair(&t);
    let size = 16 * MIB as usize;
    put_file(&t.join("staging"), &a.path("zeros.img"), &vec![0u8; size]);
    let ok = wait_until(SOON, || {
        fs::metadata(b.path("zeros.img")).is_ok_and(|m| m.len() == size as u64)
    });
    assert!(ok, "zeros.img did not arrive");
    assert!(
        fs::read(b.path("zeros.img"))
            .unwrap()
            .iter()
            .all(|&x| x == 0)
    );
    let rb = received_when(&b, 1, |r| r.path == "zeros.img");
    let r = received_of(&rb, "zeros.img");
    assert_eq!(r.len(), 1, "{rb:?}");
    assert!(
        r[0].wire <= 2 * 65536 && r[0].wire + r[0].reused == size as u64,
        "16 MiB of zeros: {r:?}"
    );
}

/// Names that are unusual but valid: non-ASCII, spaces, shell characters, a name of 250
/// bytes (whose temp name would pass 255 bytes), a leading dash.
#[test]
fn unusual_names() {
    let t = TestDir::new("names");
    let (a, b) = pair(&t);
    let long = "L".repeat(250);
    let names = [
        "ünïcødé/日本語 ファイル.txt".to_string(),
        "spaces in/a name with  two spaces ".to_string(),
        "shell $chars & (parens) [brackets] 'quotes' \"dq\" #hash;semi".to_string(),
        "-leading-dash".to_string(),
        format!("deep/{long}"),
        "dots.../...x".to_string(),
    ];
    for (i, n) in names.iter().enumerate() {
        write_file(&a.path(n), random_bytes(500 + i as u64, 70_000 + i));
    }
    wait_identical(&a.dir, &b.dir, SOON);
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            fs::read(b.path(n)).unwrap(),
            random_bytes(500 + i as u64, 70_000 + i),
            "{n}"
        );
    }
}

/// Symlinks are neither synced nor followed.
#[test]
fn symlinks_are_not_synced() {
    let t = TestDir::new("symlinks");
    let (a, b) = pair(&t);
    let outside = t.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("private"), b"outside the share").unwrap();
    std::os::unix::fs::symlink(&outside, a.path("link-to-dir")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", a.path("link-to-file")).unwrap();
    fs::write(a.path("marker"), b"m").unwrap();
    wait_content(&b, "marker", b"m", SOON);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(fs::symlink_metadata(b.path("link-to-dir")).is_err());
    assert!(fs::symlink_metadata(b.path("link-to-file")).is_err());
    assert!(!b.path("private").exists());
    assert_eq!(
        listing(&b.dir).unwrap(),
        vec![("marker".to_string(), Some(1))]
    );
}

/// A symlink put where the receiver's temp file goes is not written through: the file arrives,
/// the symlink's target outside the share is untouched.
#[test]
fn symlink_in_a_temp_files_place_is_not_followed() {
    let t = TestDir::new("temp-symlink");
    let (a, b) = pair(&t);
    let outside = t.join("outside.txt");
    fs::write(&outside, b"outside the share").unwrap();
    fs::create_dir_all(b.path("d")).unwrap();
    std::os::unix::fs::symlink(&outside, b.path("d/.victim.bin.left-tmp")).unwrap();
    let data = random_bytes(41, 300_000);
    fs::create_dir_all(a.path("d")).unwrap();
    fs::write(a.path("d/victim.bin"), &data).unwrap();
    wait_content(&b, "d/victim.bin", &data, SOON);
    assert!(
        fs::read(&outside).unwrap() == b"outside the share",
        "the file outside the share was written through the symlink"
    );
    wait_identical(&a.dir, &b.dir, SOON);
}

/// Deleted on one side and edited on the other while apart: the edit wins on both.
#[test]
fn edit_beats_concurrent_delete() {
    let t = TestDir::new("edit-delete");
    let (pa, pb) = two_ports();
    {
        let a = Peer::start(&t, "A", pa, &[pb]);
        let b = Peer::start(&t, "B", pb, &[pa]);
        fs::write(a.path("f.txt"), b"base").unwrap();
        fs::create_dir_all(a.path("d")).unwrap();
        fs::write(a.path("d/g.txt"), b"base g").unwrap();
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_millis(1500));
    }
    fs::remove_file(t.join("A/f.txt")).unwrap();
    fs::write(t.join("B/f.txt"), b"edited while A deleted it").unwrap();
    fs::remove_dir_all(t.join("B/d")).unwrap();
    fs::write(t.join("A/d/g.txt"), b"g edited while B deleted d").unwrap();

    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_content(&a, "f.txt", b"edited while A deleted it", SOON);
    wait_content(&b, "d/g.txt", b"g edited while B deleted d", SOON);
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(
        fs::read(b.path("f.txt")).unwrap(),
        b"edited while A deleted it"
    );
}

#[test]
fn entries_beyond_max_pending_wait_on_disk_and_all_arrive() {
    let t = TestDir::new("max-pending");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    // Nested folders, empty ones, and a folder whose content is deleted later.
    for d in 0..6 {
        for f in 0..40 {
            write_file(
                &a.path(&format!("d{d}/e{}/f{f}.txt", f % 3)),
                format!("file {d}/{f}\n"),
            );
        }
        fs::create_dir_all(a.path(&format!("d{d}/empty"))).unwrap();
    }
    let b = Peer::start_with(&t, "B", pb, &[pa], &["-v", "--max-pending", "4"]);
    wait_identical(&a.dir, &b.dir, LONG);
    assert!(
        b.log_text().contains("more than 4 entries to receive"),
        "B never had entries wait on disk:\n{}",
        tail(&b.log_text(), 20)
    );
    // A folder's deletion is taken after the deletions of what it holds, and new files that
    // came after them in the peer's order arrive too.
    fs::remove_dir_all(a.path("d2")).unwrap();
    for f in 0..30 {
        fs::write(a.path(&format!("d5/new{f}")), format!("new {f}\n")).unwrap();
    }
    wait_identical(&a.dir, &b.dir, LONG);
    assert!(!b.path("d2").exists());
    // The waiting file was unlinked when it was made: nothing is left in the state folder.
    let left: Vec<String> = fs::read_dir(b.path(".left"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("needs-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_receiver_killed_while_entries_wait_on_disk_takes_them_all_after_a_restart() {
    let t = TestDir::new("max-pending-kill");
    let (pa, pb) = two_ports();
    for d in 0..12 {
        for f in 0..100 {
            write_file(&t.join(&format!("A/d{d}/f{f}")), format!("{d} {f}\n"));
        }
    }
    let a = Peer::start(&t, "A", pa, &[pb]);
    let args = ["-v", "--max-pending", "4"];
    let mut b = Peer::start_with(&t, "B", pb, &[pa], &args);
    assert!(
        wait_until(LONG, || received(&b.log_text()).len() >= 50),
        "B received nothing:\n{}",
        tail(&b.log_text(), 20)
    );
    b.kill();
    let arrived = received(&b.log_text()).len();
    assert!(
        b.log_text().contains("more than 4 entries to receive"),
        "nothing waited on disk"
    );
    assert!(arrived < 1200, "everything had arrived before the kill");
    // What waited on disk went with the process; the peer announces it again.
    let b = Peer::start_with(&t, "B", pb, &[pa], &args);
    wait_identical(&a.dir, &b.dir, LONG);
}

/// A folder tree deleted while a peer was away, its deletions written into the index file (too
/// many to keep in memory): the file's entries are announced in path order, a folder before
/// what it held, so the peer's deletion of the folder must wait for the rest of the pass.
#[test]
fn a_tree_deleted_while_a_peer_was_away_is_deleted_there_for_good() {
    let t = TestDir::new("away-delete");
    let (pa, pb) = two_ports();
    for s in 0..30 {
        for f in 0..100 {
            write_file(
                &t.join(&format!("A/d/s{s:02}/f{f:03}")),
                format!("{s} {f}\n"),
            );
        }
    }
    fs::write(t.join("A/stays"), b"x").unwrap();
    let a = Peer::start_with(&t, "A", pa, &[pb], &["-v"]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, LONG);
    std::thread::sleep(Duration::from_millis(1000));
    b.kill();
    // A whole rewrite, or (after a scan's changes) a journal record, after the scan that saw
    // the deletion: either puts it on disk.
    let saved_after = |log: &str| {
        log.find("deleted locally: d\n").is_some_and(|at| {
            let rest = &log[at..];
            rest.contains("index written whole") || rest.contains("index journal:")
        })
    };
    fs::remove_dir_all(a.path("d")).unwrap();
    assert!(
        wait_until(LONG, || saved_after(&a.log_text())),
        "the deletions were not written into the index file:\n{}",
        tail(&a.log_text(), 20)
    );
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, LONG);
    // Nothing comes back: no folder was left behind to be found again by a scan.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!a.path("d").exists() && !b.path("d").exists());
    assert!(!b.log_text().contains("new folder"), "{}", b.log_text());
    assert_eq!(
        listing(&b.dir).unwrap(),
        vec![("stays".to_string(), Some(1))]
    );
}
