//! Protocol 3 with a shared key (issue 19): what crosses the wire between two key holders is
//! ciphertext (no file content, no file name), and a wrong key, a replayed or relayed
//! handshake, a flipped bit or a peer of protocol 2 gets nothing of the share.

mod common;

use common::proxy::Proxy;
use common::*;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const MARKER: &[u8] = b"MARKER-of-issue-19-plaintext";
const NAME: &str = "name-that-must-not-leak.txt";

/// A file whose content is the marker over and over: several blocks, so that large frames
/// (peeked before they are read whole) carry it.
fn marked() -> Vec<u8> {
    MARKER.iter().copied().cycle().take(300_000).collect()
}

fn key_file(t: &TestDir, name: &str, text: &str) -> String {
    fs::write(t.join(name), text).unwrap();
    t.join(name).display().to_string()
}

/// A and B with `extra` options; A dials B through `proxy` (made for B's port), and B lists
/// only a port where nothing listens: every byte between them crosses the proxy.
fn pair_via(t: &TestDir, extra: &[&str], proxy: impl FnOnce(u16) -> Proxy) -> (Peer, Peer, Proxy) {
    let (pa, pb) = two_ports();
    let proxy = proxy(pb);
    let b = Peer::start_with(t, "B", pb, &[free_port()], extra);
    let a = Peer::start_with(t, "A", pa, &[proxy.port], extra);
    (a, b, proxy)
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The types of the plain frames `bytes` holds, and whether they fill it exactly.
fn plain_frames(bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut r = bytes;
    let mut types = Vec::new();
    while !r.is_empty() {
        match wire::read_frame(&mut r) {
            Ok((t, _)) => types.push(t),
            Err(_) => return (types, false),
        }
    }
    (types, true)
}

/// Every connection recorded holds, each way, nothing but hellos and proofs in clear.
fn only_handshakes(recorded: &[[Vec<u8>; 2]], what: &str) {
    for (i, conn) in recorded.iter().enumerate() {
        for (dir, bytes) in conn.iter().enumerate() {
            let (types, whole) = plain_frames(bytes);
            assert!(
                whole
                    && types
                        .iter()
                        .all(|t| [wire::T_HELLO, wire::T_AUTH].contains(t)),
                "{what}: connection {i}, direction {dir}: frames {types:?} (whole: {whole}) \
                 beyond the handshake"
            );
        }
    }
}

#[test]
fn content_and_names_cross_only_as_ciphertext() {
    let t = TestDir::new("crypt-wire");
    let key = key_file(&t, "key", "a shared key of more than thirty-two bytes\n");
    let (a, b, proxy) = pair_via(&t, &["--key-file", &key], |pb| Proxy::recording(0, pb));
    let data = marked();
    fs::write(a.path(NAME), &data).unwrap();
    assert!(
        wait_until(SOON, || has_content(&b.path(NAME), &data)),
        "the keyed pair did not sync:\n{}",
        tail(&b.log_text(), 20)
    );
    // B's own file goes the other way.
    fs::write(b.path("from-b.txt"), MARKER).unwrap();
    assert!(wait_until(SOON, || has_content(
        &a.path("from-b.txt"),
        MARKER
    )));
    let rec = proxy.recorded();
    let sent: usize = rec.iter().map(|c| c[0].len() + c[1].len()).sum();
    assert!(sent > data.len(), "only {sent} bytes crossed the proxy");
    for (i, conn) in rec.iter().enumerate() {
        for (dir, bytes) in conn.iter().enumerate() {
            assert!(
                !find(bytes, MARKER),
                "connection {i}, direction {dir}: the content"
            );
            assert!(
                !find(bytes, NAME.as_bytes()),
                "connection {i}, direction {dir}: a name"
            );
            assert!(
                !find(bytes, b"from-b"),
                "connection {i}, direction {dir}: a name"
            );
        }
    }
    drop((a, b, proxy));

    // Without a key the same recording shows both: the check above can fail.
    let t = TestDir::new("crypt-wire-clear");
    let (a, b, proxy) = pair_via(&t, &[], |pb| Proxy::recording(0, pb));
    fs::write(a.path(NAME), &data).unwrap();
    assert!(wait_until(SOON, || has_content(&b.path(NAME), &data)));
    let all: Vec<u8> = proxy.recorded().into_iter().flatten().flatten().collect();
    assert!(find(&all, MARKER) && find(&all, NAME.as_bytes()));
}

#[test]
fn a_wrong_key_gets_nothing() {
    let t = TestDir::new("crypt-wrong-key");
    let (pa, pb) = two_ports();
    let proxy = Proxy::recording(0, pb);
    let good = key_file(&t, "good", "the right key, 32 bytes or more....\n");
    let bad = key_file(&t, "bad", "the wrong key, 32 bytes or more....\n");
    let b = Peer::start_with(&t, "B", pb, &[free_port()], &["--key-file", &good]);
    let a = Peer::start_with(&t, "A", pa, &[proxy.port], &["--key-file", &bad]);
    fs::write(b.path(NAME), marked()).unwrap();
    fs::write(a.path("from-a.txt"), MARKER).unwrap();
    assert!(
        a.wait_log(SOON, "wrong shared key") && b.wait_log(SOON, "wrong shared key"),
        "both sides should name the wrong key:\nA: {}\nB: {}",
        tail(&a.log_text(), 10),
        tail(&b.log_text(), 10)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!a.path(NAME).exists() && !b.path("from-a.txt").exists());
    for p in [&a, &b] {
        assert!(
            !p.log_text().contains("connected to"),
            "{}",
            tail(&p.log_text(), 10)
        );
    }
    let rec = proxy.recorded();
    assert!(!rec.is_empty());
    only_handshakes(&rec, "wrong key");
}

#[test]
fn a_replayed_handshake_gets_nothing() {
    let t = TestDir::new("crypt-replay");
    let key = key_file(&t, "key", "a shared key of more than thirty-two bytes\n");
    let (mut a, b, proxy) = pair_via(&t, &["--key-file", &key], |pb| Proxy::recording(0, pb));
    let data = marked();
    fs::write(a.path(NAME), &data).unwrap();
    assert!(wait_until(SOON, || has_content(&b.path(NAME), &data)));
    a.kill();
    let rec = proxy.recorded();
    let [from_a, from_b] = rec[0].clone();

    // A's side of the session, replayed to B: B's new nonce makes A's old proof worthless.
    let mut s = connect(b.port);
    let sport = s.local_addr().unwrap().port();
    let _ = s.write_all(&from_a);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let got = wait_closed(&mut s, Duration::from_secs(20)).expect("B kept a replay open");
    let (types, _) = plain_frames(&got);
    assert!(
        types
            .iter()
            .all(|t| [wire::T_HELLO, wire::T_AUTH].contains(t)),
        "B answered a replay with frames {types:?}"
    );
    assert!(
        wait_until(SOON, || b.log_text().lines().any(|l| {
            l.contains(&format!(":{sport}")) && l.contains("wrong shared key")
        })),
        "B's log does not name the replay:\n{}",
        tail(&b.log_text(), 10)
    );

    // B's side, replayed to a new holder of the key that dials: it refuses it, gets nothing.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let fport = fake.local_addr().unwrap().port();
    let replayer = std::thread::spawn(move || {
        let (mut c, _) = fake.accept().unwrap();
        let _ = c.write_all(&from_b);
        wait_closed(&mut c, Duration::from_secs(20))
    });
    let c = Peer::start_with(&t, "C", free_port(), &[fport], &["--key-file", &key]);
    assert!(
        c.wait_log(SOON, "wrong shared key"),
        "C took a replayed session:\n{}",
        tail(&c.log_text(), 10)
    );
    let _ = replayer.join();
    assert!(!c.path(NAME).exists());
    assert!(!c.log_text().contains("connected to"));
}

/// A man in the middle between two key holders that both dial it, pairing their connections:
/// each side believes it dialed, so each expects the other's proof as the acceptor's. Before
/// the proofs bound the role (or with proofs over the nonces alone), the relay went through.
#[test]
fn a_relay_swapping_who_dialed_fails() {
    let t = TestDir::new("crypt-relay");
    let key = key_file(&t, "key", "a shared key of more than thirty-two bytes\n");
    let mitm = TcpListener::bind("127.0.0.1:0").unwrap();
    let mport = mitm.local_addr().unwrap().port();
    let record = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = record.clone();
    std::thread::spawn(move || {
        loop {
            let (Ok((one, _)), Ok((two, _))) = (mitm.accept(), mitm.accept()) else {
                return;
            };
            let rec = rec.clone();
            std::thread::spawn(move || {
                let pipe = |from: TcpStream, mut to: TcpStream| {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = std::io::Read::read(&mut &from, &mut buf) {
                        got.extend_from_slice(&buf[..n]);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    got
                };
                let (o2, t2) = (one.try_clone().unwrap(), two.try_clone().unwrap());
                let back = std::thread::spawn(move || pipe(t2, o2));
                let forth = pipe(one, two);
                let back = back.join().unwrap();
                rec.lock().unwrap().push([forth, back]);
            });
        }
    });
    let (pa, pb) = two_ports();
    let a = Peer::start_with(&t, "A", pa, &[mport], &["--key-file", &key]);
    let b = Peer::start_with(&t, "B", pb, &[mport], &["--key-file", &key]);
    fs::write(a.path(NAME), marked()).unwrap();
    assert!(
        wait_until(SOON, || a.log_text().contains("wrong shared key")
            && b.log_text().contains("wrong shared key")),
        "both sides should refuse the relayed proofs:\nA: {}\nB: {}",
        tail(&a.log_text(), 10),
        tail(&b.log_text(), 10)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(!b.path(NAME).exists());
    for p in [&a, &b] {
        assert!(
            !p.log_text().contains("connected to"),
            "{}",
            tail(&p.log_text(), 10)
        );
    }
    only_handshakes(&record.lock().unwrap(), "relay");
}

#[test]
fn a_flipped_bit_ends_the_connection_and_the_peers_reconnect() {
    let t = TestDir::new("crypt-flip");
    let key = key_file(&t, "key", "a shared key of more than thirty-two bytes\n");
    let (a, b, proxy) = pair_via(&t, &["--key-file", &key], |pb| {
        let p = Proxy::start(0, pb);
        // A's hello (41 bytes) and proof (21), then inside its first sealed frame.
        p.flip_once(true, 41 + 21 + 6);
        p
    });
    assert!(
        b.wait_log(SOON, "does not authenticate"),
        "B did not refuse the altered frame:\n{}",
        tail(&b.log_text(), 10)
    );
    assert!(proxy.flipped());
    fs::write(a.path(NAME), marked()).unwrap();
    assert!(
        wait_until(SOON, || has_content(&b.path(NAME), &marked())),
        "the peers did not reconnect and sync:\n{}",
        tail(&b.log_text(), 10)
    );
    assert!(proxy.forwarded() >= 2);
}

#[test]
fn a_peer_of_protocol_2_is_refused_naming_both_versions() {
    let t = TestDir::new("crypt-v2");
    let key = key_file(&t, "key", "a shared key of more than thirty-two bytes\n");
    for (name, extra, flags) in [
        ("K", vec!["--key-file", key.as_str()], wire::FLAG_AUTH),
        ("N", vec![], 0),
    ] {
        let p = Peer::start_with(&t, name, free_port(), &[free_port()], &extra);
        std::thread::sleep(Duration::from_millis(500));
        let mut s = connect(p.port);
        let sport = s.local_addr().unwrap().port();
        let hello = wire::frame(
            wire::T_HELLO,
            &wire::hello_payload(wire::MAGIC, 2, 0x0002_0002, flags, [9; 16], 1),
        );
        s.write_all(&hello).unwrap();
        let (ty, theirs) = wire::read_frame(&mut s).unwrap();
        // What a peer of protocol 2 reads: our hello, version 3 (it names both in its own log).
        assert_eq!(
            (ty, &theirs[4..6]),
            (wire::T_HELLO, &3u16.to_be_bytes()[..])
        );
        let got = wait_closed(&mut s, Duration::from_secs(20)).expect("kept open");
        assert!(plain_frames(&got).0.is_empty(), "{name}: more than a hello");
        assert!(
            wait_until(SOON, || p
                .log_text()
                .lines()
                .any(|l| l.contains(&format!(":{sport}"))
                    && l.contains("protocol version 2, we speak 3"))),
            "{name}: no line naming both versions:\n{}",
            tail(&p.log_text(), 10)
        );
    }
}

#[test]
fn keygen_writes_a_private_key_once_and_a_short_key_is_warned() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new("crypt-keygen");
    let file = t.join("new.key");
    let run = |f: &std::path::Path| {
        std::process::Command::new(BIN)
            .arg("keygen")
            .arg(f)
            .output()
            .unwrap()
    };
    let out = run(&file);
    assert!(out.status.success(), "{out:?}");
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text.len(), 65, "{text:?}");
    assert!(text.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never over an existing file: one line saying so, the key untouched.
    let again = run(&file);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
    // Two fresh keys differ.
    let other = t.join("other.key");
    assert!(run(&other).status.success());
    assert_ne!(fs::read_to_string(&other).unwrap(), text);
    // A generated key gets no warning; a short one does, and still works.
    let good = Peer::start_with(
        &t,
        "G",
        free_port(),
        &[free_port()],
        &["--key-file", &file.display().to_string()],
    );
    let short = key_file(&t, "short", "only 12 byte\n");
    let weak = Peer::start_with(
        &t,
        "W",
        free_port(),
        &[free_port()],
        &["--key-file", &short],
    );
    assert!(
        weak.wait_log(SOON, "shorter than 32 bytes"),
        "{}",
        tail(&weak.log_text(), 5)
    );
    assert!(
        good.wait_log(SOON, "serving"),
        "{}",
        tail(&good.log_text(), 5)
    );
    assert!(!good.log_text().contains("shorter than 32 bytes"));
}
