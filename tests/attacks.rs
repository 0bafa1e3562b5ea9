//! Hardening (issue 18), the network side: each test is an attack on a running daemon — slow
//! handshakes holding its door, a slow resolver, a relayed proof of the key, a poisoned version
//! vector, many peers announcing large entries, trickled and inflated frames, floods of
//! deletions with long names or versions, a client claiming a listed peer's port or device, a
//! peer filling the log — and checks that the daemon stays up, bounded, and in sync with its
//! good peer.

mod common;

use common::wire::{self, Entry as WEntry};
use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether the other side closed `s` (reading what it sent meanwhile, without waiting).
fn is_closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// 64 clients from another address each send one byte of a hello every 2 s (a slowloris).
/// Before, every byte renewed a 10 s read timeout, so they held every one of the daemon's 64
/// connection slots for as long as they liked, and a listed peer dialing in was turned away.
/// Now the handshake has one deadline, and clients in their handshake have their own small pool,
/// limited per address: the listed address gets in at once, and every trickler is gone in 10 s.
#[test]
fn slow_handshakes_never_hold_the_door() {
    let t = TestDir::new("slowloris");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start_with(&t, "B", pb, &[pa], &["--allow", "127.0.0.2"]);
    syncs(&a, &b, "before");
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let hello = wire::hello(0xBAD0_0000_0000_0001, 0, [3; 16], 1);
    let t0 = Instant::now();
    let mut conns: Vec<(TcpStream, Option<Duration>)> = (0..64)
        .map(|_| {
            (
                connect_from(attacker, pb).expect("connect from 127.0.0.2"),
                None,
            )
        })
        .collect();
    let mut listed: Option<Result<Duration, String>> = None;
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(16) {
        for (s, closed) in conns.iter_mut().filter(|c| c.1.is_none()) {
            let _ = s.write_all(&hello[i % hello.len()..][..1]);
            if is_closed(s) {
                *closed = Some(t0.elapsed());
            }
        }
        i += 1;
        if listed.is_none() && t0.elapsed() > Duration::from_secs(3) {
            // A client from the listed peer's address, while the tricklers are at it.
            let t1 = Instant::now();
            let mut s = connect(pb);
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            listed = Some(match wire::read_frame(&mut s) {
                Ok((wire::T_HELLO, _)) => Ok(t1.elapsed()),
                Ok((t, _)) => Err(format!("a frame of type {t}")),
                Err(e) => Err(e.to_string()),
            });
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let still: Vec<usize> = (0..conns.len()).filter(|&i| conns[i].1.is_none()).collect();
    let at_once = conns
        .iter()
        .filter(|c| c.1.is_some_and(|d| d < Duration::from_secs(3)))
        .count();
    let latest = conns.iter().filter_map(|c| c.1).max();
    eprintln!(
        "of 64 trickling clients: {at_once} closed at once, the last one after {latest:?}, {} \
         still open after 16 s; the listed address got a hello: {listed:?}",
        still.len()
    );
    match listed {
        Some(Ok(d)) => assert!(d < Duration::from_secs(2), "hello after {d:?}"),
        other => panic!("a client from the listed address got no hello: {other:?}"),
    }
    assert!(
        still.is_empty(),
        "{} of 64 clients trickling a hello are still connected after 16 s",
        still.len()
    );
    assert!(
        latest.is_some_and(|d| d < Duration::from_secs(14)),
        "a trickling client was kept {latest:?}"
    );
    drop(conns);
    syncs(&a, &b, "after the slowloris");
}

/// The daemon lists a peer by a host name whose lookups never get an answer (a resolver that
/// is down: a UDP socket of the test that reads and never replies, seen by the daemon alone
/// through a bind mount in its own mount namespace). Before, the accept thread resolved the
/// listed names on every incoming connection, so each one waited for the resolver's timeout,
/// and so did every connection behind it. Now the dialers resolve names and the accept thread
/// only reads the addresses they found.
#[test]
fn a_slow_resolver_never_stalls_accepting() {
    if !is_root() {
        eprintln!("SKIPPED: not root (needs a mount namespace and port 53)");
        return;
    }
    let Ok(dns) = std::net::UdpSocket::bind("127.0.0.77:53") else {
        eprintln!("SKIPPED: cannot bind 127.0.0.77:53");
        return;
    };
    let t = TestDir::new("slow-dns");
    let resolv = t.join("resolv.conf");
    fs::write(
        &resolv,
        "nameserver 127.0.0.77\noptions timeout:4 attempts:1\n",
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
        resolv.display()
    );
    let (pa, pb) = two_ports();
    let dir = t.join("B");
    let args: Vec<String> = [
        "-v",
        "--dir",
        &dir.display().to_string(),
        "--port",
        &pb.to_string(),
        // First: a name that takes the resolver's timeout; then the good peer.
        "never-answered.example:1",
        &format!("127.0.0.1:{pa}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let prefix = ["unshare", "-m", "sh", "-c", script.as_str()];
    let b = Peer::start_via(&t, "B", &dir, pb, &prefix, &args);
    let a = Peer::start(&t, "A", pa, &[pb]);
    // The fake resolver really is asked, and never answers.
    dns.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut q = [0u8; 512];
    assert!(
        dns.recv_from(&mut q).is_ok(),
        "the daemon never asked the fake resolver: the test would prove nothing"
    );
    let mut waits = Vec::new();
    for _ in 0..4 {
        let t1 = Instant::now();
        let mut s = connect(pb);
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let got = wire::read_frame(&mut s);
        waits.push(t1.elapsed());
        assert!(matches!(got, Ok((wire::T_HELLO, _))), "no hello: {got:?}");
    }
    eprintln!("hello from B after {waits:?} with a resolver that never answers");
    assert!(
        waits.iter().all(|d| *d < Duration::from_secs(2)),
        "the accept thread waits for the resolver: hellos after {waits:?}"
    );
    syncs(&a, &b, "with a dead resolver");
    drop(dns);
}

/// Two real daemons hold the key, V and W (strangers to each other); the attacker has no key.
/// It connects to V and takes V's nonce, offers that nonce to W in its own hello, and hands W's
/// proof to V in a hello claiming to be W. Before, the proof bound only the verifier's nonce,
/// the prover's nonce and device, so V accepted it and sent its whole index to the attacker.
/// Now proofs bind both hellos as they crossed the connection and which side dialed: the
/// relayed proof does not verify, and V sends nothing but its hello and its own proof.
#[test]
fn a_relayed_proof_gets_nothing() {
    let t = TestDir::new("relay");
    fs::write(t.join("key"), "the shared key, long enough\n").unwrap();
    let key = t.join("key").display().to_string();
    let (pv, pw) = two_ports();
    // Each lists a port where nothing listens, on 127.0.0.1: the attacker's address is listed.
    let v = Peer::start_with(&t, "V", pv, &[free_port()], &["--key-file", &key]);
    let w = Peer::start_with(&t, "W", pw, &[free_port()], &["--key-file", &key]);
    fs::write(v.path("secret-plans.txt"), b"only for key holders\n").unwrap();
    fs::write(w.path("w-file.txt"), b"W's file\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));

    let nonce = |p: &[u8]| -> [u8; 16] { p[18..34].try_into().unwrap() };
    let port = |p: &[u8]| u16::from_be_bytes(p[34..36].try_into().unwrap());
    // V's challenge.
    let mut to_v = connect(pv);
    let (tv, hv) = wire::read_frame(&mut to_v).unwrap();
    assert_eq!(tv, wire::T_HELLO);
    // W answers V's nonce, believing it the attacker's.
    let mut to_w = connect(pw);
    to_w.write_all(&wire::hello(0xA77A_C4E2, wire::FLAG_AUTH, nonce(&hv), 1))
        .unwrap();
    let (tw, hw) = wire::read_frame(&mut to_w).unwrap();
    assert_eq!(tw, wire::T_HELLO);
    let (ta, proof_w) = wire::read_frame(&mut to_w).expect("W sent no proof");
    assert_eq!(ta, wire::T_AUTH);
    // Relayed to V as W's own.
    to_v.write_all(&wire::hello(
        wire::hello_device(&hw),
        wire::FLAG_AUTH,
        nonce(&hw),
        port(&hw),
    ))
    .unwrap();
    to_v.write_all(&wire::frame(wire::T_AUTH, &proof_w))
        .unwrap();
    let got = wait_closed(&mut to_v, Duration::from_secs(15))
        .expect("V kept the connection open after a relayed proof: it accepted it");
    let mut r = &got[..];
    let mut types = Vec::new();
    while let Ok((t, _)) = wire::read_frame(&mut r) {
        types.push(t);
    }
    assert!(
        types.iter().all(|t| *t == wire::T_AUTH),
        "V sent frames of types {types:?} after a relayed proof (2 is its index)"
    );
    let log = v.log_text();
    assert!(
        !log.contains("connected to"),
        "V took the relay for a peer:\n{}",
        tail(&log, 10)
    );
    assert!(
        wait_until(SOON, || v.log_text().contains("wrong shared key")),
        "V's log does not say the proof failed:\n{}",
        tail(&v.log_text(), 10)
    );
    drop(to_w);

    // Two daemons with the key that are peers still authenticate each other and sync.
    let t2 = TestDir::new("relay-then-peers");
    let (pa, pb) = two_ports();
    let a = Peer::start_with(&t2, "A", pa, &[pb], &["--key-file", &key]);
    let b = Peer::start_with(&t2, "B", pb, &[pa], &["--key-file", &key]);
    syncs(&a, &b, "with the key");
    drop((v, w));
}

/// A peer announces back a file B holds, same content, with a version naming 1024 devices of
/// its own: before, B merged it into a 1025-device vector, which its good peer A refused ("version
/// vector too long", dropping the connection again at every try) and which B's own index could
/// not read back. The same with a new file of 1024 devices that B then edits (its change adds B:
/// 1025). Now a version that leaves no room for the device taking it is not taken nor merged;
/// one that does (1023 devices) syncs as usual.
#[test]
fn a_poisoned_version_vector_is_not_taken() {
    let t = TestDir::new("poison");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    fs::write(a.path("seed.txt"), b"seed\n").unwrap();
    assert!(wait_until(SOON, || has_content(
        &b.path("seed.txt"),
        b"seed\n"
    )));
    let f = FakePeer::connect(pb, 0xF00D_0000_0000_0000, free_port());
    let devices =
        |n: u64| -> Vec<(u64, u64)> { (0..n).map(|i| (0xF00D_0000_0000_0001 + i, 5)).collect() };
    let with = |mut e: WEntry, n: u64| {
        e.version = devices(n);
        e
    };
    let new = b"a new file of 1024 devices\n".to_vec();
    let fits = b"a new file of 1023 devices\n".to_vec();
    f.offer("poison-new.txt", new.clone());
    f.offer("fits.txt", fits.clone());
    assert!(f.send(&wire::index(
        1,
        &[
            with(WEntry::file("seed.txt", b"seed\n", f.device, 1), 1024),
            with(WEntry::file("poison-new.txt", &new, f.device, 1), 1024),
            with(WEntry::file("fits.txt", &fits, f.device, 1), 1023),
        ]
    )));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    assert!(
        wait_until(SOON, || has_content(&a.path("fits.txt"), &fits)),
        "a version of 1023 devices did not reach A through B\n{}",
        tail(&b.log_text(), 20)
    );
    // Where B took the file of 1024 devices, a change on B makes it 1025.
    std::thread::sleep(Duration::from_millis(500));
    if b.path("poison-new.txt").exists() {
        fs::write(b.path("poison-new.txt"), b"edited on B\n").unwrap();
    }
    syncs(&a, &b, "after the poisoned vectors");
    drop(f);
    for (who, log) in [("A", a.log_text()), ("B", b.log_text())] {
        assert!(
            !log.contains("version vector too long"),
            "{who} refused a vector B sent:\n{}",
            tail(&log, 20)
        );
    }
    assert!(
        b.log_text()
            .contains("not taken: its version would name more than 1024 devices"),
        "B's log does not say what it refused:\n{}",
        tail(&b.log_text(), 20)
    );
    // B's index reads back whole after a restart.
    assert!(
        b.terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "after B restarted");
    let log = b.log_text();
    assert!(
        !log.contains("damaged") && !log.contains("rebuilding"),
        "B's index did not read back after the poisoned vectors:\n{}",
        tail(&log, 20)
    );
}

/// Fake peers connected to B at once.
const FAKES: u64 = 64;
/// Entries each of them announces.
const ENTRIES: usize = 128;
/// B's peak resident memory may not pass this, whatever the number of connections.
const BUDGET_KIB: u64 = 32 << 10;

/// 64 fake peers connect to B, each announces 128 files whose entries carry the longest
/// version a daemon takes (1023 devices: 16 KiB each) and a long name, and none ever serves a
/// block. Before, an entry's vector was not counted at all and the bound was per connection:
/// 2048 such entries are 34 MiB per connection, 2 GiB for 64. Now everything an entry holds is
/// counted and the bound covers all connections together (the rest waits on disk, also bounded
/// in all): B's peak RSS stays under 32 MiB, and its good peer A still syncs meanwhile.
#[test]
fn many_peers_announcing_large_entries_stay_within_a_memory_budget() {
    let t = TestDir::new("budget");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the crowd");
    let pid = b.pid().unwrap();
    let before = memory_kib(pid);
    let long = "n".repeat(200);
    let mut fakes = Vec::new();
    for i in 0..FAKES {
        let dev = 0xC0DE_0000_0000_0000 + (i << 16);
        let f = FakePeer::connect(pb, dev, free_port());
        f.mute();
        fakes.push(f);
    }
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for (i, f) in fakes.iter().enumerate() {
            let long = &long;
            s.spawn(move || {
                let version: Vec<(u64, u64)> =
                    (1..=1023u64).map(|d| (f.device + d, 1_000 + d)).collect();
                let entries: Vec<WEntry> = (0..ENTRIES)
                    .map(|k| {
                        let data = format!("fake {i} file {k}\n").into_bytes();
                        let mut e = WEntry::file(&format!("f{i}/{k}-{long}"), &data, f.device, 1);
                        e.version = version.clone();
                        e
                    })
                    .collect();
                for (n, chunk) in entries.chunks(16).enumerate() {
                    if !f.send(&wire::index(0, chunk)) {
                        return;
                    }
                    let _ = n;
                }
                let _ = f.send(&wire::index(1, &[]));
                let _ = f.send(&wire::seq_frame(wire::T_INDEX_DONE, 1));
            });
        }
    });
    let connected = fakes.iter().filter(|f| !f.is_closed()).count();
    // B takes them in and asks for blocks the fakes never send.
    let asking = || {
        fakes
            .iter()
            .filter(|f| !f.requests.lock().unwrap().is_empty())
            .count()
    };
    wait_until(Duration::from_secs(30), || asking() >= connected);
    eprintln!(
        "{connected} of {FAKES} fake peers connected; announced in {:?}; {} asked for blocks",
        t0.elapsed(),
        asking()
    );
    syncs(&a, &b, "with 64 fake peers holding entries");
    let after = memory_kib(pid);
    eprintln!(
        "B's memory: peak {} KiB, now {} KiB (before the crowd: peak {} KiB, {} KiB)",
        after.0, after.1, before.0, before.1
    );
    assert!(connected >= 56, "only {connected} fake peers got in");
    assert!(
        after.0 < BUDGET_KIB,
        "B's peak RSS reached {} KiB with {connected} peers announcing large entries",
        after.0
    );
    drop(fakes);
    syncs(&a, &b, "after the crowd left");
}

/// A peer answers each of B's 64 KiB block requests with 8 MiB of data (the largest frame).
/// Before, the reader only counted answers, not their size: the answers to the requests in
/// flight were held in full until the puller found them wrong, and asked for again. Now an
/// answer may hold no more than its request asked for, weighed from its header before the rest
/// is read: the connection is dropped at the first, and B's memory does not follow the
/// attacker's frames.
#[test]
fn answers_larger_than_asked_are_refused() {
    let t = TestDir::new("inflated");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the inflated answers");
    let pid = b.pid().unwrap();
    let before = memory_kib(pid);
    let data = random_bytes(21, 4 << 20);
    let f = FakePeer::connect(pb, 0x1F1A_7ED0_0000_0001, free_port());
    f.mute();
    assert!(f.send(&wire::index(
        1,
        &[WEntry::file("inflated.bin", &data, f.device, 1)]
    )));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    let big = random_bytes(22, 8 << 20);
    let mut answered = 0;
    let t0 = Instant::now();
    while !f.is_closed() && t0.elapsed() < Duration::from_secs(20) {
        let reqs: Vec<u32> = f.requests.lock().unwrap().iter().map(|r| r.id).collect();
        for id in reqs.into_iter().skip(answered) {
            // Counted when sent or cut short: B may close the connection once it has read the
            // answer's header, before the rest is written.
            answered += 1;
            if !f.send(&wire::response(id, 0, &big)) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = memory_kib(pid);
    eprintln!(
        "{answered} answers of 8 MiB sent; connection closed: {}; B's peak RSS {} -> {} KiB",
        f.is_closed(),
        before.0,
        after.0
    );
    assert!(
        answered > 0,
        "B never asked for a block: the test proves nothing"
    );
    assert!(
        f.is_closed(),
        "B kept a peer answering 64 KiB requests with 8 MiB"
    );
    assert!(
        after.0 < before.0 + (24 << 10),
        "B's peak RSS went from {} to {} KiB",
        before.0,
        after.0
    );
    drop(f);
    syncs(&a, &b, "after the inflated answers");
    assert!(!b.path("inflated.bin").exists());
}

/// A peer sends the header of a 1 MiB frame, then one byte every 5 s (under the 90 s read
/// timeout). Before, the frame's share of the reading budget (2 MiB) was taken when its header
/// came and held until its last byte: every other connection's frame over 16 KiB (block answers,
/// index batches) waited for it, and B never received a 1 MiB file from its good peer. Now
/// answers to B's own requests have a budget of their own (the 1 MiB file's blocks go through
/// at once), and a frame that holds a share must keep a minimum pace while another waits for the
/// same budget: the good peer's index batch of 600 new files (a frame over 16 KiB) waits 5 s at
/// most, and the trickler is dropped.
#[test]
fn a_trickled_large_frame_does_not_hold_the_reading_budget() {
    let t = TestDir::new("trickle");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the trickle");
    let f = FakePeer::connect(pb, 0x7B1C_0000_0000_0001, free_port());
    let mut hdr = ((1u32 << 20) + 1).to_be_bytes().to_vec();
    hdr.push(wire::T_INDEX);
    assert!(f.send(&hdr));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (f, stop) = (&f, &stop);
        s.spawn(move || {
            let mut ticks = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(250));
                ticks += 1;
                if ticks % 20 == 0 && !f.send(&[0u8]) {
                    return;
                }
            }
        });
        let data = random_bytes(77, 1 << 20);
        write_file(&a.path("big.bin"), &data);
        let ok = wait_until(SOON, || has_content(&b.path("big.bin"), &data));
        assert!(
            ok,
            "B never received a 1 MiB file while a fake peer trickled a large frame\n{}",
            tail(&b.log_text(), 10)
        );
        // Many new files at once: A announces them in a frame over 16 KiB.
        let staging = t.join("staging");
        fs::create_dir_all(&staging).unwrap();
        for i in 0..600 {
            fs::write(staging.join(format!("many-file-number-{i:04}")), b"x").unwrap();
        }
        fs::rename(&staging, a.path("many")).unwrap();
        let ok = wait_until(SOON, || {
            fs::read_dir(b.path("many")).is_ok_and(|d| d.count() == 600)
        });
        assert!(
            ok,
            "B never received 600 files while a fake peer trickled a large frame\n{}",
            tail(&b.log_text(), 10)
        );
        // A's frames may all have been small (read without the budget: a busy machine splits
        // the announcement as the scan records the files), and nobody waited for the budget
        // the trickle holds. A frame that needs more of it than is left is certain to wait:
        // then the trickle is cut (after its grace), and the waiting frame read.
        let g = FakePeer::connect(pb, 0x7B1C_0000_0000_0002, free_port());
        let n = (1u32 << 20) + (1 << 19);
        let mut big = n.to_be_bytes().to_vec();
        big.push(wire::T_INDEX);
        big.resize(5 + n as usize, 0);
        s.spawn(move || g.send(&big));
        let cut = f.wait_closed(SOON);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(cut, "the trickling peer is still connected");
    });
    syncs(&a, &b, "after the trickle");
}

/// Index entries of a stranger's, one frame each of the largest size (8 MiB), filled with
/// the smallest entries there are (tiny names, no blocks): some 130,000 of them decode to more
/// than four times the frame. Before, the frame's share of the budget assumed twice its size
/// and every entry was decided under the model's lock in one go: B's memory grew by 36 MiB
/// per such frame. Now an index frame holds at most 1,024 entries: the frame is refused
/// whole, the connection dropped, and B stays small.
#[test]
fn an_index_frame_of_countless_tiny_entries_is_refused() {
    let t = TestDir::new("tiny-entries");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the tiny entries");
    let pid = b.pid().unwrap();
    let f = FakePeer::connect(pb, 0x7171_0000_0000_0001, free_port());
    f.mute();
    let mut entries = Vec::new();
    let mut len = 12usize;
    while len < (8 << 20) - 200 {
        // With a version: one with none is refused for that alone.
        let e = WEntry::file(&format!("{:x}", entries.len()), b"", f.device, 1);
        len += 79 + e.path.len() - 1;
        entries.push(e);
    }
    let _ = f.send(&wire::index(1, &entries));
    assert!(
        wait_until(SOON, || f.is_closed()),
        "a frame of {} entries was taken",
        entries.len()
    );
    syncs(&a, &b, "after the tiny entries");
    let peak = memory_kib(pid).0;
    eprintln!(
        "{} entries in one frame; B's peak RSS {peak} KiB",
        entries.len()
    );
    assert!(peak < BUDGET_KIB, "B's peak RSS reached {peak} KiB");
}

/// A peer announces 4,000 deletions of paths B never had, each with a 200-byte name and the
/// longest version a daemon takes (1023 devices, 16 KiB). Deletions need no block: they land
/// in B's index at once, and its in-memory part was bounded by a count of entries (2,048), not
/// by their size: B's memory grew by 75 MiB. Now memory also bounds it by bytes and the reader
/// writes the index out before it reads more, so B's peak stays under the budget (the
/// deletions are kept: a third peer may still hold those files) and its good peer syncs.
#[test]
fn deletions_with_long_versions_stay_within_the_memory_budget() {
    let t = TestDir::new("long-tombstones");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the deletions");
    let pid = b.pid().unwrap();
    let f = FakePeer::connect(pb, 0x70B5_0000_0000_0001, free_port());
    f.mute();
    let version: Vec<(u64, u64)> = (1..=1023u64).map(|d| (f.device + d, 1_000 + d)).collect();
    let long = "t".repeat(200);
    for round in 0..40u64 {
        let entries: Vec<WEntry> = (0..100u64)
            .map(|k| {
                let mut e = WEntry::deleted(&format!("g{round}/{k}-{long}"), f.device, 1);
                e.version = version.clone();
                e
            })
            .collect();
        assert!(
            f.send(&wire::index(0, &entries)),
            "dropped at round {round}"
        );
    }
    assert!(f.send(&wire::index(1, &[])));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    syncs(&a, &b, "after the deletions");
    let peak = memory_kib(pid).0;
    eprintln!("B's peak RSS {peak} KiB; fake closed: {}", f.is_closed());
    assert!(peak < BUDGET_KIB, "B's peak RSS reached {peak} KiB");
}

/// Fresh deletions from a peer, 1,024 to a frame, frame after frame (200,000 in all): each
/// frame is decided under the model's lock and folds the index now and then. B's good peer
/// still syncs both ways while the flood goes on, and B's memory stays within the budget.
#[test]
fn a_flood_of_deletions_does_not_stall_a_good_peer() {
    let t = TestDir::new("tombstone-flood");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the flood");
    let pid = b.pid().unwrap();
    let f = FakePeer::connect(pb, 0x5747_0000_0000_0001, free_port());
    f.mute();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (f, stop) = (&f, &stop);
        let flood = s.spawn(move || {
            let mut sent = 0;
            for round in 0..200u64 {
                let entries: Vec<WEntry> = (0..1024u64)
                    .map(|k| WEntry::deleted(&format!("d{round:x}/{k:x}"), f.device, 1))
                    .collect();
                if stop.load(std::sync::atomic::Ordering::SeqCst)
                    || !f.send(&wire::index(0, &entries))
                {
                    break;
                }
                sent += 1;
            }
            sent
        });
        for i in 0..4 {
            syncs(&a, &b, &format!("during the flood {i}"));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("frames sent: {}", flood.join().unwrap());
    });
    let peak = memory_kib(pid).0;
    eprintln!("B's peak RSS {peak} KiB");
    assert!(peak < BUDGET_KIB, "B's peak RSS reached {peak} KiB");
    assert!(!f.is_closed(), "an honest (if odd) peer was dropped");
}

/// B lists A; A only accepts. A program on A's host (here the same address) connects to B with
/// a hello that claims A's port under another device id. Before, B's dialer took any
/// connection from A's address and port as A and stopped dialing: once A restarted, B never
/// reached it again while the impostor stayed. Now the dialer trusts only the device its own
/// connection to A answered with.
#[test]
fn a_hello_claiming_a_listed_peers_port_does_not_park_the_dialer() {
    let t = TestDir::new("port-claim");
    let (pa, pb) = two_ports();
    let dead = free_port();
    let a = Peer::start_with(&t, "A", pa, &[dead], &["--allow", "127.0.0.1"]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    let f = FakePeer::connect(pb, 0x9047_0000_0000_0001, pa);
    let mut a = a;
    a.terminate(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let a = Peer::start_with(&t, "A", pa, &[dead], &["--allow", "127.0.0.1"]);
    let data = b"from B to A\n";
    fs::write(b.path("b-to-a"), data).unwrap();
    assert!(
        wait_until(SOON, || has_content(&a.path("b-to-a"), data)),
        "A never got B's file while a connection from A's address claimed A's port\n{}",
        tail(&b.log_text(), 12)
    );
    drop(f);
}

// ---- Attacks from a third review session (hostile peers against the reading budget, the
// index, the dialer and the log). ----

/// A path of `len` bytes (at most 4096), components of at most 255 bytes, unique by `i`.
fn long_path(i: usize, len: usize) -> String {
    let mut p = format!("r3-{i:07}-");
    while p.len() < len {
        let comp_left = 255 - (p.len() - p.rfind('/').map_or(0, |k| k + 1));
        if comp_left == 0 {
            p.push('/');
            continue;
        }
        let n = comp_left.min(len - p.len());
        p.extend(std::iter::repeat_n('p', n));
    }
    if p.ends_with('/') {
        p.pop();
        p.push('q');
    }
    p
}

// ---------------------------------------------------------------------------------------------
// 1. The index's page table holds one path per 4 KiB page of the base file: with entries of
//    about 4 KiB (a name of 4,095 bytes), that is one whole name per entry, in memory, for
//    ever. Tombstones need no block and are kept (a third peer may hold the file): a peer
//    announcing 12,000 deletions of such names makes B hold ~48 MB of names.
// ---------------------------------------------------------------------------------------------

#[test]
fn tombstones_with_long_names_stay_within_the_memory_budget() {
    let t = TestDir::new("r3-long-tombstones");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the long names");
    let pid = b.pid().unwrap();
    let before = memory_kib(pid);
    let f = FakePeer::connect(pb, 0x10A6_0000_0000_0001, free_port());
    f.mute();
    const N: usize = 12_000;
    let t0 = Instant::now();
    let mut sent = 0;
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let entries: Vec<WEntry> = chunk
            .iter()
            .map(|&i| WEntry::deleted(&long_path(i, 4095), f.device, 1))
            .collect();
        if !f.send(&wire::index(0, &entries)) {
            break;
        }
        sent += entries.len();
    }
    assert!(f.send(&wire::index(1, &[])));
    assert!(f.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)));
    // B folds them into its base file; wait until the base holds them.
    let idx = b.path(".left/index");
    wait_until(Duration::from_secs(90), || {
        fs::metadata(&idx).is_ok_and(|m| m.len() > (N as u64) * 4000)
    });
    let base = fs::metadata(&idx).map(|m| m.len()).unwrap_or(0);
    syncs(&a, &b, "after the long names");
    let after = memory_kib(pid);
    eprintln!(
        "{sent} tombstones with 4,095-byte names sent in {:?}; B's index base {} bytes; \
         B's memory: peak {} KiB, now {} KiB (before: peak {} KiB, now {} KiB); fake closed: {}",
        t0.elapsed(),
        base,
        after.0,
        after.1,
        before.0,
        before.1,
        f.is_closed()
    );
    // The names stay: a restarted B reads them all back into its page table.
    let mut b = b;
    b.terminate(Duration::from_secs(10));
    let b2 = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b2, "after B restarted");
    let restarted = memory_kib(b2.pid().unwrap());
    let of_a = memory_kib(a.pid().unwrap());
    eprintln!(
        "B restarted with that index: peak {} KiB, now {} KiB; A (the good peer, which took \
         the tombstones from B): peak {} KiB, now {} KiB",
        restarted.0, restarted.1, of_a.0, of_a.1
    );
    assert!(
        after.0 < BUDGET_KIB,
        "B's peak RSS reached {} KiB ({} KiB resident after) with {sent} long-named tombstones",
        after.0,
        after.1
    );
    assert!(
        restarted.0 < BUDGET_KIB,
        "restarted, B's peak RSS reached {} KiB",
        restarted.0
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The pace of a frame that holds a share of the reading budget is looked at only when no
//    byte came for PACE_TICK (250 ms) (src/conn.rs read_paced): a peer that sends one byte
//    every 100 ms is never measured, and its 8 MiB frame holds the whole 2 MiB budget for
//    days. Every other connection's frame over 16 KiB (block answers) waits meanwhile.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_frame_trickled_faster_than_the_pace_tick_does_not_hold_the_budget() {
    let t = TestDir::new("r3-fast-trickle");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the trickle");
    let f = FakePeer::connect(pb, 0x7B1C_0000_0000_0002, free_port());
    // The header of the largest index frame, and the start of its payload.
    let mut hdr = (8u32 << 20).to_be_bytes().to_vec();
    hdr.push(wire::T_INDEX);
    hdr.extend_from_slice(&[0u8; 12]);
    assert!(f.send(&hdr));
    let stop = AtomicBool::new(false);
    let (ok, took, bytes) = std::thread::scope(|s| {
        let (f, stop) = (&f, &stop);
        let trickler = s.spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if !f.send(&[0u8]) {
                    break;
                }
                n += 1;
            }
            n
        });
        std::thread::sleep(Duration::from_secs(1));
        let data = random_bytes(78, 1 << 20);
        let t0 = Instant::now();
        write_file(&a.path("big.bin"), &data);
        let ok = wait_until(Duration::from_secs(40), || {
            has_content(&b.path("big.bin"), &data)
        });
        let took = t0.elapsed();
        stop.store(true, Ordering::SeqCst);
        (ok, took, trickler.join().unwrap())
    });
    eprintln!(
        "1 MiB file from A: received {ok} after {took:?}, while a fake peer trickled {bytes} \
         bytes of an 8 MiB frame at 10 B/s; trickler dropped: {}",
        f.is_closed()
    );
    assert!(
        ok,
        "B never received a 1 MiB file from its good peer in {took:?} while a fake peer \
         trickled a large frame one byte every 100 ms\n{}",
        tail(&b.log_text(), 10)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The device id in a hello is taken as it is (without a key): an allowed client (here
//    127.0.0.2, --allow) claims the device id of the listed peer A, which anyone learns from
//    the version vectors in B's index. While A is away (a reboot), the impostor registers as
//    A; once A is back, B refuses A's connections ("already connected to device") and B's
//    dialer, which trusts a connection with A's device, never dials A.
// ---------------------------------------------------------------------------------------------

/// A client from `from` that completes a hello as `device` and then only reads (and pings).
struct Impostor {
    stream: TcpStream,
    stop: std::sync::Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    closed: std::sync::Arc<AtomicBool>,
}

impl Impostor {
    fn connect(from: Ipv4Addr, port: u16, device: u64, listen: u16) -> Impostor {
        let mut s = connect_from(from, port).expect("connect from 127.0.0.2");
        s.write_all(&wire::hello(device, 0, [9; 16], listen))
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (t, _) = wire::read_frame(&mut s).expect("no hello");
        assert_eq!(t, wire::T_HELLO);
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let closed = std::sync::Arc::new(AtomicBool::new(false));
        let (mut r, st, cl) = (s.try_clone().unwrap(), stop.clone(), closed.clone());
        let handle = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            let mut last_ping = Instant::now();
            while !st.load(Ordering::SeqCst) {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
                if last_ping.elapsed() > Duration::from_secs(10) {
                    last_ping = Instant::now();
                    if (&r).write_all(&wire::frame(wire::T_PING, &[])).is_err() {
                        break;
                    }
                }
            }
            cl.store(true, Ordering::SeqCst);
        });
        Impostor {
            stream: s,
            stop,
            handle: Some(handle),
            closed,
        }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn an_allowed_client_claiming_a_listed_peers_device_does_not_lock_it_out() {
    let t = TestDir::new("r3-device-claim");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start_with(&t, "B", pb, &[pa], &["--allow", "127.0.0.2"]);
    syncs(&a, &b, "before the impostor");
    let dev_a = a.device();
    // A reboots; meanwhile the impostor says it is A.
    a.terminate(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let imp = Impostor::connect(Ipv4Addr::new(127, 0, 0, 2), pb, dev_a, pa);
    std::thread::sleep(Duration::from_millis(500));
    let a = Peer::start(&t, "A", pa, &[pb]);
    let r = syncs_within(&a, &b, "after A came back", Duration::from_secs(40));
    let refused = b.log_text().matches("already connected to device").count();
    eprintln!(
        "A back with an impostor holding its device id: {r:?}; B refused A {refused} times; \
         impostor still connected: {}",
        !imp.closed.load(Ordering::SeqCst)
    );
    drop(imp);
    r.unwrap();
}

// ---------------------------------------------------------------------------------------------
// 4. Log lines a peer causes per entry are not throttled: an entry whose version names 1,024
//    other devices is "not taken" with one line naming its path (up to 4 KiB), every time it
//    is announced. The same frame sent again and again grows the log (kept in RAM on Tiny
//    Core, /var/log) without bound.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_peer_cannot_flood_the_log_with_untaken_entries() {
    let t = TestDir::new("r3-log-flood");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    // B at the normal log level (no -v), as a daemon runs.
    let dir = t.join("B");
    let args: Vec<String> = vec![
        "--dir".into(),
        dir.display().to_string(),
        "--port".into(),
        pb.to_string(),
        format!("127.0.0.1:{pa}"),
    ];
    let b = Peer::start_raw(&t, "B", &dir, pb, &args);
    syncs(&a, &b, "before the log flood");
    let log_before = fs::metadata(&b.log).map(|m| m.len()).unwrap_or(0);
    let f = FakePeer::connect(pb, 0x106F_0000_0000_0001, free_port());
    f.mute();
    let version: Vec<(u64, u64)> = (1..=1024u64).map(|d| (f.device + d, 1_000 + d)).collect();
    let entries: Vec<WEntry> = (0..300)
        .map(|i| {
            let mut e = WEntry::file(&long_path(i, 4095), b"x", f.device, 1);
            e.version = version.clone();
            e
        })
        .collect();
    let frame = wire::index(0, &entries);
    let t0 = Instant::now();
    let mut wire_bytes = 0u64;
    let log_len = || fs::metadata(&b.log).map(|m| m.len()).unwrap_or(0);
    while t0.elapsed() < Duration::from_secs(10)
        && log_len() < log_before + (64 << 20)
        && f.send(&frame)
    {
        wire_bytes += frame.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let grew = fs::metadata(&b.log).map(|m| m.len()).unwrap_or(0) - log_before;
    let lines = b.log_text().matches("not taken").count();
    eprintln!(
        "{} MB of index frames in {secs:.1} s: B's log grew by {} bytes ({lines} 'not taken' \
         lines); fake closed: {}",
        wire_bytes >> 20,
        grew,
        f.is_closed()
    );
    syncs(&a, &b, "after the log flood");
    assert!(
        grew < 1 << 20,
        "a peer grew B's log by {grew} bytes in {secs:.1} s ({lines} lines)"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Tombstones from a peer are kept without any bound on their number or bytes, and each time
//    memory holds 2 MiB of them (about 128 entries with the longest versions) the base file is
//    written anew, whole, under the model's lock (src/model.rs save_index -> index.save). The
//    base grows by 2 MiB a fold: the cost of a fold grows with it, and the lock is held for
//    all of it. A good peer's files wait meanwhile.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_growing_pile_of_tombstones_does_not_stall_a_good_peer() {
    let t = TestDir::new("r3-fold-stall");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    syncs(&a, &b, "before the pile");
    let f = FakePeer::connect(pb, 0x9117_0000_0000_0001, free_port());
    f.mute();
    let idx = b.path(".left/index");
    let base_len = || fs::metadata(&idx).map(|m| m.len()).unwrap_or(0);
    const TARGET: u64 = 120 << 20;
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (sent, lat) = std::thread::scope(|s| {
        let (f, stop) = (&f, &stop);
        let pile = s.spawn(move || {
            let version: Vec<(u64, u64)> =
                (1..=1023u64).map(|d| (f.device + d, 1_000 + d)).collect();
            let mut sent = 0u64;
            for round in 0.. {
                if stop.load(Ordering::SeqCst) || base_len() > TARGET {
                    break;
                }
                let entries: Vec<WEntry> = (0..128u64)
                    .map(|k| {
                        let mut e = WEntry::deleted(&format!("h{round:05}/{k}"), f.device, 1);
                        e.version = version.clone();
                        e
                    })
                    .collect();
                if !f.send(&wire::index(0, &entries)) {
                    break;
                }
                sent += 128;
            }
            sent
        });
        // Meanwhile A writes a small file every second; how long until B has it.
        let mut lat: Vec<Duration> = Vec::new();
        let mut i = 0;
        while !pile.is_finished() && t0.elapsed() < Duration::from_secs(120) {
            let data = format!("probe {i}\n");
            let p = format!("probe-{i}");
            let t1 = Instant::now();
            fs::write(a.path(&p), &data).unwrap();
            if !wait_until(Duration::from_secs(60), || {
                has_content(&b.path(&p), data.as_bytes())
            }) {
                lat.push(Duration::from_secs(60));
                break;
            }
            lat.push(t1.elapsed());
            i += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, Ordering::SeqCst);
        (pile.join().unwrap(), lat)
    });
    let log = b.log_text();
    let folds: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("index written whole: ").nth(1))
        .filter_map(|r| r.split(" entries in ").nth(1))
        .filter_map(|r| r.trim_end_matches(" ms").parse().ok())
        .collect();
    let worst = lat.iter().max().copied().unwrap_or_default();
    let mut sorted = lat.clone();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "{sent} tombstones of ~16 KiB in {:?}: B's base {} MB after {} whole writes (the last \
         {:?} ms, the longest {:?} ms, {} ms in all, all under the model's lock); A's files \
         reached B in at most {worst:?}, median {median:?} ({} probes)",
        t0.elapsed(),
        base_len() >> 20,
        folds.len(),
        folds.last(),
        folds.iter().max(),
        folds.iter().sum::<u64>(),
        lat.len()
    );
    // Bounds on liveness, not a speed test: before the fix, the worst probe took 10-25 s in
    // release, and files waited behind every whole write. With it the median is under a
    // second here and the worst 5-11 s (the tail varies with the disk), so the tail is only
    // bounded against a stall; the median says whether the good peer still gets its turn.
    let (limit, typical) = if cfg!(debug_assertions) {
        (60, 10)
    } else {
        (30, 3)
    };
    assert!(
        median < Duration::from_secs(typical),
        "files from A took {median:?} (median) to reach B while a peer piled up tombstones"
    );
    assert!(
        worst < Duration::from_secs(limit),
        "a file from A took {worst:?} to reach B while a peer piled up tombstones"
    );
}
