//! Trust (issue 5): whatever a misbehaving client sends — garbage, broken or out-of-order
//! frames, names that try to leave the share, a wrong key, an unlisted address — and whatever the
//! disk does (full, read-only), `left` keeps running, keeps syncing with the good peer, and
//! writes nothing outside its folder.
//!
//! The misbehaving client is the test itself, speaking the wire protocol by hand over a
//! `std::net::TcpStream` from 127.0.0.1 (the daemon accepts that address because its listed good
//! peer is on 127.0.0.1).

mod common;

use common::wire::{self, Entry as WEntry};
use common::*;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the daemon may take to drop a connection it should drop at once (generous).
const DROP: Duration = Duration::from_secs(15);

/// A good pair, A and B, plus a folder `outside/` beside the shares holding one file that must
/// never change; B is the daemon the tests attack.
struct World {
    t: TestDir,
    a: Peer,
    b: Peer,
    outside: PathBuf,
    round: u32,
}

const VICTIM: &[u8] = b"outside the share: must never change\n";

impl World {
    fn new(name: &str, extra: &[&str]) -> World {
        let t = TestDir::new(name);
        let outside = t.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim.txt"), VICTIM).unwrap();
        let (pa, pb) = two_ports();
        let a = Peer::start_with(&t, "A", pa, &[pb], extra);
        let b = Peer::start_with(&t, "B", pb, &[pa], extra);
        fs::write(a.path("seed.txt"), b"seed\n").unwrap();
        assert!(
            wait_until(SOON, || has_content(&b.path("seed.txt"), b"seed\n")),
            "the good pair did not sync to begin with"
        );
        World {
            t,
            a,
            b,
            outside,
            round: 0,
        }
    }

    /// After `what`: B is alive, a new file on A reaches B and one on B reaches A, and nothing
    /// appeared outside the shares.
    fn healthy(&mut self, what: &str) {
        self.round += 1;
        let n = self.round;
        assert!(self.b.alive(), "B died after {what}");
        assert!(self.a.alive(), "A died after {what}");
        let da = format!("from A, round {n}, after {what}\n");
        fs::write(self.a.path(&format!("probe-a-{n}")), &da).unwrap();
        assert!(
            wait_until(SOON, || has_content(
                &self.b.path(&format!("probe-a-{n}")),
                da.as_bytes()
            )),
            "after {what}: B no longer receives from the good peer"
        );
        let db = format!("from B, round {n}, after {what}\n");
        fs::write(self.b.path(&format!("probe-b-{n}")), &db).unwrap();
        assert!(
            wait_until(SOON, || has_content(
                &self.a.path(&format!("probe-b-{n}")),
                db.as_bytes()
            )),
            "after {what}: the good peer no longer receives from B"
        );
        assert!(self.b.alive(), "B died after {what}");
        self.nothing_outside(what);
    }

    /// The test folder holds only what the test made, and `outside/` is untouched.
    fn nothing_outside(&self, what: &str) {
        let mut top: Vec<String> = fs::read_dir(&self.t.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        for n in &top {
            assert!(
                ["A", "B", "logs", "outside", "staging"].contains(&n.as_str()),
                "after {what}: {n:?} appeared beside the shares: {top:?}"
            );
        }
        assert_eq!(
            listing(&self.outside).unwrap(),
            vec![("victim.txt".to_string(), Some(VICTIM.len() as u64))],
            "after {what}: the folder outside the share changed"
        );
        assert_eq!(fs::read(self.outside.join("victim.txt")).unwrap(), VICTIM);
    }

    /// Log lines of B about the connection from local port `sport`.
    fn lines_about(&self, sport: u16) -> Vec<String> {
        self.b
            .log_text()
            .lines()
            .filter(|l| {
                mentions_port(l, sport)
                    && (l.contains("ended") || l.contains("refused") || l.contains("failed"))
            })
            .map(str::to_string)
            .collect()
    }

    /// Connects a raw client to B, sends `bytes`, and checks B drops it (its log saying why,
    /// with every word of `why` in the line).
    fn dropped(&mut self, what: &str, bytes: &[u8], why: &[&str]) {
        let mut s = connect(self.b.port);
        let sport = s.local_addr().unwrap().port();
        let _ = s.write_all(bytes);
        // Half-close: B sees the end of what we send, as from a client that went away.
        let _ = s.shutdown(std::net::Shutdown::Write);
        let got = wait_closed(&mut s, DROP);
        assert!(got.is_some(), "{what}: B kept the connection open");
        let ok = wait_until(SOON, || {
            self.lines_about(sport)
                .iter()
                .any(|l| why.iter().all(|w| l.contains(w)))
        });
        assert!(
            ok,
            "{what}: B's log has no line about the connection from port {sport} mentioning \
             {why:?}; lines about it: {:?}\n{}",
            self.lines_about(sport),
            tail(&self.b.log_text(), 20)
        );
        self.healthy(what);
    }
}

/// Whether a log line names port `port` (as `:PORT` not followed by another digit).
fn mentions_port(line: &str, port: u16) -> bool {
    let needle = format!(":{port}");
    line.match_indices(&needle).any(|(i, _)| {
        !line[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// A device id for a fake peer, never the same twice in this process.
fn next_dev() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    0x5EED_0000_0000_0000 + N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn hello_for(device: u64, port: u16) -> Vec<u8> {
    wire::hello(device, 0, [7; 16], port)
}

#[test]
fn garbage_and_malformed_frames_are_dropped() {
    let mut w = World::new("garbage", &[]);
    w.healthy("start");

    w.dropped("garbage bytes", &random_bytes(1, 64 << 10), &[]);
    w.dropped("a truncated hello", &hello_for(0x1111, 1)[..12], &[]);
    w.dropped("an empty frame", &[0, 0, 0, 0, 1, 2, 3], &[]);
    w.dropped(
        "a length prefix of 0xFFFFFFFF",
        &[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0],
        &["4294967295"],
    );
    w.dropped(
        "a 9 MiB frame during the hello",
        &[0x00, 0x90, 0x00, 0x00, 1],
        &["9437184"],
    );
    let bad_magic = wire::frame(
        wire::T_HELLO,
        &wire::hello_payload(*b"RGHT", 1, 0x2222, 0, [1; 16], 1),
    );
    w.dropped("a hello with a bad magic", &bad_magic, &["magic"]);
    let bad_version = wire::frame(
        wire::T_HELLO,
        &wire::hello_payload(wire::MAGIC, wire::VERSION - 1, 0x3333, 0, [1; 16], 1),
    );
    w.dropped(
        "a hello of an older protocol version",
        &bad_version,
        &["version"],
    );
    let short_hello = wire::frame(wire::T_HELLO, &wire::MAGIC);
    w.dropped("a hello frame too short", &short_hello, &[]);
    // The daemon's own device id: it must notice it is talking to itself (or something
    // pretending to be it).
    let me = w.b.device();
    w.dropped(
        "a hello with B's own device id",
        &hello_for(me, 1),
        &["ourselves"],
    );

    // Frames before the hello.
    let index_first = wire::index(
        0,
        &[WEntry::file("early.txt", b"before the hello", 0x4444, 1)],
    );
    w.dropped("an Index before the Hello", &index_first, &[]);
    assert!(!w.b.path("early.txt").exists());
    w.dropped(
        "a Response before the Hello",
        &wire::response(1, 0, b"data nobody asked for"),
        &[],
    );
    w.dropped(
        "a Ping before the Hello",
        &wire::frame(wire::T_PING, &[]),
        &[],
    );
}

#[test]
fn out_of_order_frames_after_the_hello() {
    let mut w = World::new("out-of-order", &[]);
    let listed = free_port(); // what the fake peers claim to listen on (nothing does)

    // An InSync and IndexDone claiming huge sequence numbers, a frame of an unknown type:
    // harmless, the connection stays.
    let f = FakePeer::connect(w.b.port, next_dev(), listed);
    assert!(f.send(&wire::seq_frame(wire::T_IN_SYNC, u64::MAX)));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, u64::MAX)));
    assert!(f.send(&wire::frame(99, b"from a future version")));
    assert!(f.send(&wire::frame(wire::T_PING, &[])));
    w.healthy("InSync and IndexDone with huge numbers, and an unknown frame type");
    assert!(!f.is_closed(), "B dropped a peer for harmless frames");
    // A Response nobody asked for breaks the protocol: that connection is dropped, and only it
    // (the harmless peer above stays, and the good pair goes on syncing).
    for (what, frame) in [
        (
            "an unsolicited Response",
            wire::response(4242, 0, &random_bytes(2, 70_000)),
        ),
        (
            "a Response guessing the first request id",
            wire::response(1, 0, b"a guess at the first request id"),
        ),
    ] {
        let g = FakePeer::connect(w.b.port, next_dev(), listed);
        assert!(g.send(&frame), "{what}: could not send");
        assert!(g.wait_closed(DROP), "{what}: B kept the connection open");
        w.healthy(what);
        assert!(!f.is_closed(), "{what}: B dropped another peer too");
    }
    drop(f);

    // A second Hello, and an Auth frame, after the handshake: dropped.
    for (what, frame) in [
        ("a second Hello", hello_for(next_dev(), listed)),
        (
            "an Auth after an unauthenticated hello",
            wire::frame(wire::T_AUTH, &[9; 16]),
        ),
        (
            "a Response with an unknown status",
            wire::response(1, 9, b"x"),
        ),
        ("a Response whose length runs past the frame", {
            let mut p = 1u32.to_be_bytes().to_vec();
            p.push(0);
            p.extend_from_slice(&1_000_000u32.to_be_bytes());
            p.extend_from_slice(b"short");
            wire::frame(wire::T_RESPONSE, &p)
        }),
        ("an Index claiming a million entries", {
            let mut p = 0u64.to_be_bytes().to_vec();
            p.extend_from_slice(&1_000_000u32.to_be_bytes());
            p.extend_from_slice(&[0; 100]);
            wire::frame(wire::T_INDEX, &p)
        }),
        ("an Index entry whose blocks do not fit its size", {
            let mut e = WEntry::file("geometry.bin", &random_bytes(3, 200_000), 0x5555, 1);
            e.size = 10 << 30;
            wire::index(1, &[e])
        }),
        (
            "a length prefix of 0xFFFFFFFF after the hello",
            vec![0xff, 0xff, 0xff, 0xff, 2, 0, 0],
        ),
    ] {
        let f = FakePeer::connect(w.b.port, next_dev(), listed);
        assert!(f.send(&frame), "{what}: could not send");
        assert!(f.wait_closed(DROP), "{what}: B kept the connection open");
        drop(f);
        w.healthy(what);
    }
    assert!(!w.b.path("geometry.bin").exists());

    // Requests: for names outside the share (dropped), and for a real file with a wrong hash or
    // length (answered "changed", with no data).
    for (what, path) in [
        ("a Request for ../../etc/passwd", "../../etc/passwd"),
        ("a Request for /etc/passwd", "/etc/passwd"),
        ("a Request for .left/index", ".left/index"),
        ("a Request for .left/device", ".left/device"),
    ] {
        let f = FakePeer::connect(w.b.port, next_dev(), listed);
        assert!(f.send(&wire::request(1, path, 0, 100, [0; 16])));
        assert!(f.wait_closed(DROP), "{what}: B kept the connection open");
        drop(f);
        w.healthy(what);
    }
    let mut s = connect(w.b.port);
    s.write_all(&hello_for(next_dev(), listed)).unwrap();
    let (t, _) = wire::read_frame(&mut s).unwrap();
    assert_eq!(t, wire::T_HELLO);
    let seed_md5 = md5(b"seed\n");
    s.write_all(&wire::request(11, "seed.txt", 0, 5, [1; 16]))
        .unwrap();
    s.write_all(&wire::request(12, "seed.txt", 0, 100 << 20, seed_md5))
        .unwrap();
    s.write_all(&wire::request(13, "seed.txt", 3, 2, md5(b"d\n")))
        .unwrap();
    s.write_all(&wire::request(14, "no-such-file", 0, 5, seed_md5))
        .unwrap();
    s.write_all(&wire::request(15, "seed.txt", 0, 5, seed_md5))
        .unwrap();
    // All-zero hash: any range of at most one block of a file in the index (delta runs).
    s.write_all(&wire::request(16, "seed.txt", 1, 3, [0; 16]))
        .unwrap();
    s.write_all(&wire::request(17, "seed.txt", 3, 3, [0; 16]))
        .unwrap();
    s.write_all(&wire::request(18, "seed.txt", 0, 1 << 20, [0; 16]))
        .unwrap();
    s.write_all(&wire::request(19, ".leftignore", 0, 1, [0; 16]))
        .unwrap();
    let mut answers = Vec::new();
    while answers.len() < 9 {
        let (t, p) = wire::read_frame(&mut s).expect("B stopped answering requests");
        if t == wire::T_RESPONSE {
            let id = u32::from_be_bytes(p[..4].try_into().unwrap());
            answers.push((id, p[4], p[9..].to_vec()));
        }
    }
    answers.sort();
    assert_eq!(
        answers,
        vec![
            (11, 1, vec![]),
            (12, 1, vec![]),
            (13, 1, vec![]),
            (14, 1, vec![]),
            (15, 0, b"seed\n".to_vec()),
            (16, 0, b"eed".to_vec()),
            (17, 1, vec![]),
            (18, 1, vec![]),
            (19, 1, vec![]),
        ],
        "B answered requests for wrong hashes, lengths or offsets with data"
    );
    drop(s);
    w.healthy("requests with wrong hashes, lengths and offsets");
}

#[test]
fn a_peer_that_stops_mid_frame() {
    let mut w = World::new("stall", &[]);
    let listed = free_port();

    // Half a hello, then silence with the socket held open: B gives up on it after its hello
    // timeout, and meanwhile keeps syncing.
    let mut held = Vec::new();
    for i in 0..3 {
        let mut s = connect(w.b.port);
        s.write_all(&hello_for(next_dev() + i, listed)[..10])
            .unwrap();
        held.push(s);
    }
    let t0 = Instant::now();
    w.healthy("three clients holding half a hello");
    for s in &mut held {
        let closed = wait_closed(s, Duration::from_secs(60));
        assert!(
            closed.is_some(),
            "B still holds a connection that sent half a hello {:?} ago",
            t0.elapsed()
        );
    }
    drop(held);

    // A good hello, then half of an Index frame (its length says 100 KiB), held open.
    let f = FakePeer::connect(w.b.port, next_dev(), listed);
    let mut half = wire::index(
        1,
        &[WEntry::file(
            "half.bin",
            &random_bytes(4, 6 << 20),
            0x6666,
            1,
        )],
    );
    half.truncate(half.len() / 2);
    assert!(f.send(&half));
    w.healthy("a peer stopped in the middle of an Index frame");
    assert!(!w.b.path("half.bin").exists());
    // A peer that announces a file and then never answers B's block requests: B's pull from it
    // waits, but the good peer's files still come through.
    let data = random_bytes(5, 3 << 20);
    let g = FakePeer::connect(w.b.port, next_dev(), listed);
    g.mute();
    g.offer("never-served.bin", data.clone());
    assert!(g.send(&wire::index(
        1,
        &[WEntry::file("never-served.bin", &data, g.device, 1)]
    )));
    assert!(g.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    assert!(
        wait_until(SOON, || !g.requested_paths().is_empty()),
        "B never asked the silent peer for never-served.bin"
    );
    w.healthy("a peer that never answers block requests");
    assert!(!w.b.path("never-served.bin").exists());
    drop(f);
    drop(g);
    w.healthy("the stalled peers left");
}

#[test]
fn names_that_escape_the_share_are_refused() {
    let mut w = World::new("escape", &[]);
    let listed = free_port();
    let abs_target = std::env::temp_dir().join(format!("left-escape-{}-abs", std::process::id()));
    let _ = fs::remove_file(&abs_target);
    let escape1 = w.t.join("escape1");
    let long = "x".repeat(300);
    let bad_names: Vec<String> = vec![
        "../escape1".into(),
        "../outside/victim.txt".into(),
        "a/../../escape1".into(),
        abs_target.display().to_string(),
        w.outside.join("victim.txt").display().to_string(),
        "/etc/left-escape-test".into(),
        ".left/index".into(),
        ".left/device".into(),
        "a\0b".into(),
        String::new(),
        "./a".into(),
        "a/./b".into(),
        "a//b".into(),
        "a/".into(),
        ".".into(),
        "..".into(),
        ".evil.left-tmp".into(),
        "sub/.evil.left-tmp".into(),
        format!("sub/{long}"),
    ];
    for (i, name) in bad_names.iter().enumerate() {
        let what = format!("an Index entry named {name:?}");
        let _ = i;
        let f = FakePeer::connect(w.b.port, next_dev(), listed);
        let dev = f.device;
        let evil = format!("written through {name:?}\n").into_bytes();
        f.offer(name, evil.clone());
        assert!(f.send(&wire::index(1, &[WEntry::file(name, &evil, dev, 1)])));
        // B may already have closed on the name: this send is allowed to fail.
        let _ = f.send(&wire::seq_frame(wire::T_INDEX_DONE, 1));
        assert!(
            f.wait_closed(DROP),
            "{what}: B kept the connection open (the name should be refused where it arrives)"
        );
        assert_eq!(f.requested_paths(), Vec::<String>::new(), "{what}");
        // As a folder and as a deletion too.
        for e in [WEntry::dir(name, dev, 2), WEntry::deleted(name, dev, 3)] {
            let f = FakePeer::connect(w.b.port, next_dev(), listed);
            assert!(f.send(&wire::index(1, &[e])));
            assert!(
                f.wait_closed(DROP),
                "{what} (folder/deletion): connection kept"
            );
        }
        assert!(!escape1.exists(), "{what}: wrote {}", escape1.display());
        assert!(
            !abs_target.exists(),
            "{what}: wrote {}",
            abs_target.display()
        );
        assert!(
            !w.b.path("a").exists() && !w.b.path("sub").exists(),
            "{what}"
        );
        w.nothing_outside(&what);
    }
    w.healthy("names with dot components, absolute names, NUL, state and temp names");
    assert!(!Path::new("/etc/left-escape-test").exists());

    // Valid names that lead outside through a symlink inside B's share, or through a file.
    std::os::unix::fs::symlink(&w.outside, w.b.path("link")).unwrap();
    fs::write(w.b.path("plain"), b"a file, not a folder\n").unwrap();
    let f = FakePeer::connect(w.b.port, next_dev(), listed);
    let dev = f.device;
    let good = random_bytes(6, 200_000);
    let evil = b"evil\n".to_vec();
    let evil2 = random_bytes(7, 100_000);
    f.offer("fake-good.bin", good.clone());
    f.offer("link/evil", evil.clone());
    f.offer("link/evil2", evil2.clone());
    f.offer("link/victim.txt", evil.clone());
    f.offer("plain/x", evil.clone());
    f.offer("link/deeper/x", evil.clone());
    let entries = vec![
        WEntry::file("fake-good.bin", &good, dev, 1),
        WEntry::file("link/empty", b"", dev, 1),
        WEntry::file("link/evil", &evil, dev, 1),
        WEntry::file("link/evil2", &evil2, dev, 1),
        WEntry::file("link/victim.txt", &evil, dev, 1),
        WEntry::dir("link/newdir", dev, 1),
        WEntry::file("link/deeper/x", &evil, dev, 1),
        WEntry::file("plain/x", &evil, dev, 1),
    ];
    assert!(f.send(&wire::index(1, &entries)));
    // A deletion of the file outside, in a later frame (the name already known as a file).
    assert!(f.send(&wire::index(
        2,
        &[WEntry::deleted("link/victim.txt", dev, 2)]
    )));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, 2)));
    // The good file arrives, which shows the fake peer's index was taken in...
    assert!(
        wait_until(SOON, || has_content(&w.b.path("fake-good.bin"), &good)),
        "B did not take the fake peer's ordinary file: the test would prove nothing\n{}",
        tail(&w.b.log_text(), 20)
    );
    // ...and the others were looked at and refused.
    let refused = |p: &str| {
        w.b.log_text()
            .lines()
            .any(|l| l.contains(&format!("{p}: not synced yet")))
    };
    for p in [
        "link/evil",
        "link/evil2",
        "link/empty",
        "link/deeper/x",
        "plain/x",
    ] {
        assert!(
            wait_until(SOON, || refused(p)),
            "B's log does not say it refused {p}:\n{}",
            tail(&w.b.log_text(), 30)
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    let asked: Vec<String> = f
        .requested_paths()
        .into_iter()
        .filter(|p| p != "fake-good.bin")
        .collect();
    assert!(
        asked.is_empty(),
        "B requested blocks of names through a symlink or a file: {asked:?}"
    );
    w.nothing_outside("names through a symlink inside the share");
    assert!(
        fs::symlink_metadata(w.b.path("link"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink itself was replaced"
    );
    assert_eq!(
        fs::read(w.b.path("plain")).unwrap(),
        b"a file, not a folder\n"
    );
    assert!(!w.outside.join("newdir").exists() && !w.outside.join("deeper").exists());
    drop(f);
    w.healthy("names through a symlink inside the share");
    assert!(wait_until(SOON, || has_content(
        &w.a.path("fake-good.bin"),
        &good
    )));
    fs::remove_file(w.b.path("link")).unwrap();
}

#[test]
fn wrong_key_hammering_does_not_disturb_the_good_peer() {
    let t0 = TestDir::new("hammer-keys");
    fs::write(t0.join("key"), "the right key, long enough\n").unwrap();
    let key = t0.join("key").display().to_string();
    let mut w = World::new("hammer", &["--key-file", &key]);
    let port = w.b.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t_start = Instant::now();
    let (attempts, leaks) = std::thread::scope(|s| {
        let mut hs = Vec::new();
        for th in 0..2u64 {
            let stop = stop.clone();
            hs.push(s.spawn(move || {
                let mut n = 0u64;
                let mut leaks = Vec::new();
                let mut rng = Rng::new(100 + th);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    std::thread::sleep(Duration::from_millis(1));
                    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let nonce: [u8; 16] = rng.bytes(16).try_into().unwrap();
                    // Mostly a wrong proof; every third time no key at all.
                    let flags = if n.is_multiple_of(3) {
                        0
                    } else {
                        wire::FLAG_AUTH
                    };
                    let _ = c.write_all(&wire::hello(rng.next_u64(), flags, nonce, 1));
                    if flags != 0 {
                        let _ = c.write_all(&wire::frame(wire::T_AUTH, &rng.bytes(16)));
                    }
                    let got = wait_closed(&mut c, Duration::from_secs(20));
                    match got {
                        None => leaks.push(format!("attempt {n}: connection kept open")),
                        Some(bytes) => {
                            // Only B's hello and, at most, B's own proof may come back.
                            let mut r = &bytes[..];
                            while let Ok((t, _)) = wire::read_frame(&mut r) {
                                if t != wire::T_HELLO && t != wire::T_AUTH {
                                    leaks.push(format!("attempt {n}: got a frame of type {t}"));
                                }
                            }
                        }
                    }
                }
                (n, leaks)
            }));
        }
        // Meanwhile the good peer keeps syncing, and can reconnect after a restart.
        for i in 0..3 {
            w.healthy(&format!("wrong-key hammering, round {i}"));
        }
        let pa = w.a.port;
        let pb = w.b.port;
        w.a.kill();
        fs::write(w.b.path("while-a-was-down"), b"queued\n").unwrap();
        w.a = Peer::start_with(&w.t, "A", pa, &[pb], &["--key-file", &key]);
        assert!(
            wait_until(SOON, || has_content(
                &w.a.path("while-a-was-down"),
                b"queued\n"
            )),
            "the good peer could not get back in while a wrong key was hammering"
        );
        w.healthy("the good peer restarted during wrong-key hammering");
        // Keep it up for a few seconds in all.
        while t_start.elapsed() < Duration::from_secs(4) {
            w.healthy("more wrong-key hammering");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = 0;
        let mut leaks = Vec::new();
        for h in hs {
            let (n, l) = h.join().unwrap();
            total += n;
            leaks.extend(l);
        }
        (total, leaks)
    });
    eprintln!("wrong-key attempts: {attempts}");
    assert!(leaks.is_empty(), "{leaks:?}");
    assert!(attempts >= 20, "the hammer hardly ran: {attempts} attempts");
    let log = w.b.log_text();
    assert!(
        log.contains("wrong shared key"),
        "B's log never names the wrong key:\n{}",
        tail(&log, 20)
    );
    assert!(
        log.contains("no shared key"),
        "B's log never says a client had no key:\n{}",
        tail(&log, 20)
    );
    // Only the good peer was ever connected: no wrong-key client got past the handshake.
    let good = format!("(device {},", short_id(w.a.device()));
    let others: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connected to ") && !l.contains(&good))
        .collect();
    assert!(
        others.is_empty(),
        "B connected to others than A: {others:?}"
    );
    w.healthy("the hammer stopped");
}

#[test]
fn unlisted_addresses_are_refused_unless_allowed() {
    let t = TestDir::new("unlisted");
    let (pa, pb, nobody) = (free_port(), free_port(), free_port());
    let a = Peer::start(&t, "A", pa, &[pb]);
    fs::write(a.path("from-a.txt"), b"from A\n").unwrap();
    let start_b = |extra: &[&str]| -> Peer {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend([
            "-v".into(),
            "--dir".into(),
            t.join("B").display().to_string(),
            "--port".into(),
            pb.to_string(),
            // B's only peer is on 127.0.0.2, where nothing listens on that port.
            format!("127.0.0.2:{nobody}"),
        ]);
        Peer::start_raw(&t, "B", &t.join("B"), pb, &args)
    };

    // Listed peer 127.0.0.2 only: a connection from 127.0.0.1 is closed before any hello.
    let mut b = start_b(&[]);
    for _ in 0..3 {
        let mut s = connect(pb);
        let sport = s.local_addr().unwrap().port();
        let t0 = Instant::now();
        let got = wait_closed(&mut s, DROP).expect("an unlisted client's connection was kept");
        assert!(
            got.is_empty(),
            "B sent {} bytes to an unlisted client",
            got.len()
        );
        eprintln!("unlisted connection closed after {:?}", t0.elapsed());
        let line_ok = wait_until(SOON, || {
            b.log_text()
                .lines()
                .any(|l| mentions_port(l, sport) && l.contains("refused") && l.contains("listed"))
        });
        assert!(
            line_ok,
            "B's log does not say the connection from port {sport} was refused as unlisted:\n{}",
            tail(&b.log_text(), 10)
        );
    }
    // The real peer A, dialing from 127.0.0.1, gets nothing either way.
    fs::write(b.path("from-b.txt"), b"from B\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !b.path("from-a.txt").exists(),
        "an unlisted peer's file got in"
    );
    assert!(
        !a.path("from-b.txt").exists(),
        "an unlisted peer got B's file"
    );
    assert!(received(&b.log_text()).is_empty());
    assert!(b.alive());
    assert!(
        a.log_text()
            .contains(&format!("handshake with 127.0.0.1:{pb} failed")),
        "A's log does not show its dial being turned away:\n{}",
        tail(&a.log_text(), 10)
    );
    b.kill();

    // --allow with another address does not let 127.0.0.1 in either.
    let mut b = start_b(&["--allow", "10.9.8.7"]);
    let mut s = connect(pb);
    let got = wait_closed(&mut s, DROP).expect("connection kept");
    assert!(got.is_empty(), "--allow 10.9.8.7 let 127.0.0.1 in");
    b.kill();

    drop(a);

    // --allow 127.0.0.1 (or any): the raw client gets a hello, and A gets in and syncs.
    for (i, allow) in ["127.0.0.1", "any"].into_iter().enumerate() {
        let b = start_b(&["--allow", allow]);
        let mut s = connect(pb);
        let (ft, fp) = wire::read_frame(&mut s)
            .unwrap_or_else(|e| panic!("--allow {allow}: no hello for 127.0.0.1: {e}"));
        assert_eq!(ft, wire::T_HELLO);
        assert_eq!(wire::hello_device(&fp), b.device());
        drop(s);
        fs::write(b.path(&format!("b-{i}.txt")), allow).unwrap();
        // A fresh A dials at once (a refused A backs off).
        fs::write(t.join(&format!("A/a-{i}.txt")), allow).unwrap();
        let a = Peer::start(&t, "A", pa, &[pb]);
        assert!(
            wait_until(SOON, || has_content(&b.path("from-a.txt"), b"from A\n")
                && has_content(&b.path(&format!("a-{i}.txt")), allow.as_bytes())),
            "--allow {allow}: A's files did not reach B"
        );
        assert!(
            wait_until(SOON, || has_content(
                &a.path(&format!("b-{i}.txt")),
                allow.as_bytes()
            ) && has_content(
                &a.path("from-b.txt"),
                b"from B\n"
            )),
            "--allow {allow}: B's files did not reach A"
        );
        drop(a);
        drop(b);
    }
}

/// Mounts a filesystem for the test and unmounts it (lazily) when dropped.
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str]) -> Result<(), String> {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
        let d = dir.display().to_string();
        Mount::run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &d,
        ])?;
        Ok(Mount(dir.to_path_buf()))
    }

    /// The folder bound onto itself, then made read-only.
    fn read_only(dir: &Path) -> Result<Mount, String> {
        let d = dir.display().to_string();
        Mount::run(&["mount", "--bind", &d, &d])?;
        let m = Mount(dir.to_path_buf());
        Mount::run(&["mount", "-o", "remount,bind,ro", &d])?;
        Ok(m)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Mount::run(&["umount", "-l", &self.0.display().to_string()]);
    }
}

/// A full disk and a read-only folder on the receiving side. As root, permissions do not stop
/// writes, so a small tmpfs plays the full disk and a read-only bind mount the read-only folder
/// (both under the test folder, unmounted at the end). Without root, or where mounting is not
/// permitted (some containers), the test says so and checks nothing.
#[test]
fn full_disk_and_read_only_folder_on_the_receiver() {
    let t = TestDir::new("diskfull");
    fs::create_dir_all(t.join("B/full")).unwrap();
    fs::create_dir_all(t.join("B/ro")).unwrap();
    if !is_root() {
        eprintln!(
            "SKIPPED: not root; chmod cannot make a folder read-only for root, mount needs root"
        );
        return;
    }
    let full = match Mount::tmpfs(&t.join("B/full"), "1m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here: {e}");
            return;
        }
    };
    fs::create_dir_all(t.join("A/full")).unwrap();
    fs::create_dir_all(t.join("A/ro")).unwrap();
    let existing_full = random_bytes(8, 100_000);
    let existing_ro = b"read-only folder, existing file\n".to_vec();
    fs::write(t.join("A/full/existing.bin"), &existing_full).unwrap();
    fs::write(t.join("A/ro/existing.txt"), &existing_ro).unwrap();
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_millis(1500));
    let ro = Mount::read_only(&b.path("ro")).expect("read-only bind mount");
    assert!(
        fs::write(b.path("ro/probe"), b"x").is_err(),
        "the read-only mount is writable"
    );

    // Too big for the 1 MiB disk; an edit and a new file in the read-only folder.
    let big = random_bytes(9, 3 << 20);
    put_file(&t.join("staging"), &a.path("full/big.bin"), &big);
    put_file(
        &t.join("staging"),
        &a.path("ro/existing.txt"),
        b"edited on A\n",
    );
    put_file(&t.join("staging"), &a.path("ro/new.txt"), b"new on A\n");
    let says = |p: &str, why: &str| {
        b.log_text()
            .lines()
            .any(|l| l.contains(&format!("{p}: not synced yet")) && l.contains(why))
    };
    assert!(
        wait_until(SOON, || says("full/big.bin", "No space left on device")),
        "no clear log line about the full disk:\n{}",
        tail(&b.log_text(), 20)
    );
    assert!(
        wait_until(SOON, || says("ro/new.txt", "Read-only file system")
            && says("ro/existing.txt", "Read-only file system")),
        "no clear log line about the read-only folder:\n{}",
        tail(&b.log_text(), 20)
    );
    // Existing files untouched, nothing half-written under a real name.
    assert_eq!(
        fs::read(b.path("full/existing.bin")).unwrap(),
        existing_full
    );
    assert_eq!(fs::read(b.path("ro/existing.txt")).unwrap(), existing_ro);
    assert!(!b.path("full/big.bin").exists());
    assert!(!b.path("ro/new.txt").exists());

    // The other direction, and other folders in this direction, keep working.
    fs::write(b.path("from-b.txt"), b"B can still send\n").unwrap();
    assert!(wait_until(SOON, || has_content(
        &a.path("from-b.txt"),
        b"B can still send\n"
    )));
    fs::write(a.path("from-a.txt"), b"A can still send elsewhere\n").unwrap();
    assert!(wait_until(SOON, || has_content(
        &b.path("from-a.txt"),
        b"A can still send elsewhere\n"
    )));
    assert!(b.alive());
    // A's copies are untouched by B's trouble (no deletion or revert came back).
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(fs::read(a.path("full/big.bin")).unwrap(), big);
    assert_eq!(
        fs::read(a.path("ro/existing.txt")).unwrap(),
        b"edited on A\n"
    );
    assert_eq!(
        fs::read(a.path("full/existing.bin")).unwrap(),
        existing_full
    );

    // Room again (the tmpfs grown, the folder writable): the pending files arrive.
    let d = b.path("full").display().to_string();
    Mount::run(&["mount", "-o", "remount,size=16m", &d]).expect("growing the tmpfs");
    let d = b.path("ro").display().to_string();
    Mount::run(&["mount", "-o", "remount,bind,rw", &d]).expect("remounting read-write");
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(fs::read(b.path("full/big.bin")).unwrap(), big);
    assert_eq!(
        fs::read(b.path("ro/existing.txt")).unwrap(),
        b"edited on A\n"
    );
    assert!(b.alive());
    b.kill();
    drop(ro);
    drop(full);
    drop(a);
}

/// Resident memory of a process, in bytes (from /proc).
fn rss(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Big frames nobody asked for (8 MiB Responses, Pings in between) from a peer past its hello:
/// the daemon must not keep them. It runs on 512 MB machines; 400 MiB of unsolicited data must
/// not become 400 MiB of memory.
#[test]
fn unsolicited_big_responses_are_not_hoarded() {
    let mut w = World::new("hoard", &[]);
    let pid = w.b.pid().unwrap();
    let before = rss(pid);
    let f = FakePeer::connect(w.b.port, next_dev(), free_port());
    let junk = random_bytes(11, 8 << 20);
    let mut sent = 0u64;
    for i in 0..50u32 {
        if !f.send(&wire::response(1_000_000 + i, 0, &junk)) {
            break;
        }
        sent += junk.len() as u64;
    }
    // The daemon may drop the frames or close the connection on the first one (it closes:
    // a response nobody asked for breaks the protocol); either way it must not keep them.
    let _ = f.send(&wire::frame(wire::T_PING, &[]));
    std::thread::sleep(Duration::from_millis(1000));
    let after = rss(pid);
    eprintln!(
        "sent {} MiB of unsolicited responses; B's RSS {} -> {} MiB",
        sent >> 20,
        before >> 20,
        after >> 20
    );
    assert!(w.b.alive(), "B died");
    assert!(
        after < before + (64 << 20),
        "B's memory grew from {} to {} MiB after {} MiB of responses nobody asked for",
        before >> 20,
        after >> 20,
        sent >> 20
    );
    drop(f);
    w.healthy("unsolicited 8 MiB responses");
}

/// The index file changed under a running daemon (a bad disk, another program): the next read
/// of the damaged bytes stops the daemon with one line, before it can take a file for new or deleted; the
/// restart finds the file damaged, sets it aside and rebuilds the index from the files, and
/// nothing is lost on either side.
#[test]
fn an_index_file_damaged_while_running_stops_the_daemon_and_a_restart_rebuilds_it() {
    let t = TestDir::new("index-damaged");
    let (pa, pb) = two_ports();
    // Enough entries for an index several times the daemon's read window (64 KiB): a read
    // after the damage cannot be served from bytes read before it.
    const N: usize = 3000;
    for i in 0..N {
        write_file(&t.join(&format!("A/f{i:04}")), format!("file {i}\n"));
    }
    let mut a = Peer::start_with(&t, "A", pa, &[pb], &["-v"]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(
        a.wait_log(SOON, "index written whole"),
        "no index file written"
    );
    // Garbage over the first entries' lengths, in place: the daemon's open file sees it.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(a.path(".left/index"))
            .unwrap();
        let len = f.metadata().unwrap().len();
        let mut at = 32;
        while at + 64 < len {
            f.write_all_at(&[0xff; 64], at).unwrap();
            at += 8 << 10;
        }
    }
    fs::write(a.path("f0005"), b"changed after the damage\n").unwrap();
    assert!(
        wait_until(SOON, || a.exit_status().is_some()),
        "still running with a damaged index file:\n{}",
        tail(&a.log_text(), 10)
    );
    assert_eq!(a.exit_status().unwrap().code(), Some(70));
    let log = a.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("the index file cannot be read back"))
        .unwrap_or_else(|| panic!("no line says why:\n{}", tail(&log, 10)));
    assert!(line.contains("stopping"), "{line}");
    // Nothing was recorded from the damaged file: no file was taken for deleted.
    assert!(!log.contains("deleted locally"), "{}", tail(&log, 20));

    // Versions count from the time in seconds: the rebuilt ones are past those made before.
    std::thread::sleep(Duration::from_millis(1100));
    let a = Peer::start(&t, "A", pa, &[pb]);
    assert!(
        a.wait_log(SOON, "kept as index.damaged, rebuilding from the files"),
        "{}",
        tail(&a.log_text(), 10)
    );
    wait_identical(&a.dir, &b.dir, SOON);
    assert_eq!(
        fs::read(b.path("f0005")).unwrap(),
        b"changed after the damage\n"
    );
    assert_eq!(listing(&b.dir).unwrap().len(), N);
}
