//! Twenty-third review: protocol 3 (issue 19) attacked from the network (helper session, branch
//! review23): the keyed handshake (downgrades, other versions, reflections, proofs for the
//! other role or another transcript, odd Auth frames) and the sealed frames after it (altered
//! lengths and tags, frames replayed, reordered, dropped, sent back the other way or spliced
//! from another session, huge lengths before the tag is checked). The test plays a key holder
//! with its own ChaCha20-Poly1305 and HKDF-MD5 written from the RFCs and the README, so it can
//! also check the key schedule from outside. Real daemons on 127.0.0.1. A test asserts the
//! correct behaviour: it fails where it found a defect.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEY: &str = "a shared key of more than thirty-two bytes, review 23";

fn key_file(t: &TestDir) -> String {
    fs::write(t.join("key"), format!("{KEY}\n")).unwrap();
    t.join("key").display().to_string()
}

/// ChaCha20, Poly1305, the AEAD, HMAC-MD5 and HKDF as RFC 8439, 2104 and 5869 describe them,
/// written here so that the test is a key holder of its own.
mod crypto {
    use super::common::md5;

    fn le(b: &[u8]) -> u32 {
        u32::from_le_bytes(b[..4].try_into().unwrap())
    }

    pub fn chacha_block(key: &[u8; 32], counter: u32, nonce: &[u8; 12]) -> [u8; 64] {
        let mut s = [0u32; 16];
        s[..4].copy_from_slice(&[0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
        for i in 0..8 {
            s[4 + i] = le(&key[4 * i..]);
        }
        s[12] = counter;
        for i in 0..3 {
            s[13 + i] = le(&nonce[4 * i..]);
        }
        let mut x = s;
        fn qr(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
            x[a] = x[a].wrapping_add(x[b]);
            x[d] = (x[d] ^ x[a]).rotate_left(16);
            x[c] = x[c].wrapping_add(x[d]);
            x[b] = (x[b] ^ x[c]).rotate_left(12);
            x[a] = x[a].wrapping_add(x[b]);
            x[d] = (x[d] ^ x[a]).rotate_left(8);
            x[c] = x[c].wrapping_add(x[d]);
            x[b] = (x[b] ^ x[c]).rotate_left(7);
        }
        for _ in 0..10 {
            qr(&mut x, 0, 4, 8, 12);
            qr(&mut x, 1, 5, 9, 13);
            qr(&mut x, 2, 6, 10, 14);
            qr(&mut x, 3, 7, 11, 15);
            qr(&mut x, 0, 5, 10, 15);
            qr(&mut x, 1, 6, 11, 12);
            qr(&mut x, 2, 7, 8, 13);
            qr(&mut x, 3, 4, 9, 14);
        }
        let mut out = [0u8; 64];
        for i in 0..16 {
            out[4 * i..4 * i + 4].copy_from_slice(&x[i].wrapping_add(s[i]).to_le_bytes());
        }
        out
    }

    pub fn chacha_xor(key: &[u8; 32], nonce: &[u8; 12], first: u32, data: &mut [u8]) {
        for (i, chunk) in data.chunks_mut(64).enumerate() {
            let ks = chacha_block(key, first + i as u32, nonce);
            for (d, k) in chunk.iter_mut().zip(ks) {
                *d ^= k;
            }
        }
    }

    pub fn poly1305(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
        const M: u32 = 0x3ffffff;
        let r = [
            le(&key[0..]) & 0x3ffffff,
            (le(&key[3..]) >> 2) & 0x3ffff03,
            (le(&key[6..]) >> 4) & 0x3ffc0ff,
            (le(&key[9..]) >> 6) & 0x3f03fff,
            (le(&key[12..]) >> 8) & 0x00fffff,
        ]
        .map(u64::from);
        let s = [r[1] * 5, r[2] * 5, r[3] * 5, r[4] * 5];
        let mut h = [0u64; 5];
        for chunk in msg.chunks(16) {
            let mut b = [0u8; 17];
            b[..chunk.len()].copy_from_slice(chunk);
            b[chunk.len()] = 1;
            h[0] += u64::from(le(&b[0..]) & M);
            h[1] += u64::from((le(&b[3..]) >> 2) & M);
            h[2] += u64::from((le(&b[6..]) >> 4) & M);
            h[3] += u64::from((le(&b[9..]) >> 6) & M);
            h[4] += u64::from((le(&b[12..]) >> 8) | (u32::from(b[16]) << 24));
            let d = [
                h[0] * r[0] + h[1] * s[3] + h[2] * s[2] + h[3] * s[1] + h[4] * s[0],
                h[0] * r[1] + h[1] * r[0] + h[2] * s[3] + h[3] * s[2] + h[4] * s[1],
                h[0] * r[2] + h[1] * r[1] + h[2] * r[0] + h[3] * s[3] + h[4] * s[2],
                h[0] * r[3] + h[1] * r[2] + h[2] * r[1] + h[3] * r[0] + h[4] * s[3],
                h[0] * r[4] + h[1] * r[3] + h[2] * r[2] + h[3] * r[1] + h[4] * r[0],
            ];
            let mut c = 0u64;
            for i in 0..5 {
                let v = d[i] + c;
                h[i] = v & u64::from(M);
                c = v >> 26;
            }
            h[0] += c * 5;
            h[1] += h[0] >> 26;
            h[0] &= u64::from(M);
        }
        // Full carry, then subtract p if h >= p.
        let mut c = 0u64;
        for _ in 0..2 {
            for v in h.iter_mut() {
                *v += c;
                c = *v >> 26;
                *v &= u64::from(M);
            }
            h[0] += c * 5;
            c = 0;
        }
        let mut g = h;
        g[0] += 5;
        let mut c = 0u64;
        for v in g.iter_mut() {
            *v += c;
            c = *v >> 26;
            *v &= u64::from(M);
        }
        if c > 0 {
            h = g;
        }
        let n: u128 = h
            .iter()
            .enumerate()
            .fold(0u128, |acc, (i, &v)| acc | (u128::from(v) << (26 * i)));
        let s = u128::from_le_bytes(key[16..].try_into().unwrap());
        n.wrapping_add(s).to_le_bytes()
    }

    fn pad16(v: &mut Vec<u8>) {
        while !v.len().is_multiple_of(16) {
            v.push(0);
        }
    }

    pub fn aead_tag(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ct: &[u8]) -> [u8; 16] {
        let otk: [u8; 32] = chacha_block(key, 0, nonce)[..32].try_into().unwrap();
        let mut m = aad.to_vec();
        pad16(&mut m);
        m.extend_from_slice(ct);
        pad16(&mut m);
        m.extend_from_slice(&(aad.len() as u64).to_le_bytes());
        m.extend_from_slice(&(ct.len() as u64).to_le_bytes());
        poly1305(&otk, &m)
    }

    pub fn nonce(n: u64) -> [u8; 12] {
        let mut x = [0u8; 12];
        x[4..].copy_from_slice(&n.to_le_bytes());
        x
    }

    /// Seals a plain frame (`u32 length | type | payload`) as frame `n` of a direction.
    pub fn seal(key: &[u8; 32], n: u64, plain: &[u8]) -> Vec<u8> {
        let mut body = plain[4..].to_vec();
        let len = ((body.len() + 16) as u32).to_be_bytes();
        chacha_xor(key, &nonce(n), 1, &mut body);
        let tag = aead_tag(key, &nonce(n), &len, &body);
        let mut f = len.to_vec();
        f.extend_from_slice(&body);
        f.extend_from_slice(&tag);
        f
    }

    /// Opens a sealed frame's body as frame `n`: its plain `type | payload`, if the tag holds.
    pub fn open(key: &[u8; 32], n: u64, body: &[u8]) -> Option<Vec<u8>> {
        if body.len() < 17 {
            return None;
        }
        let len = (body.len() as u32).to_be_bytes();
        let (ct, tag) = body.split_at(body.len() - 16);
        if aead_tag(key, &nonce(n), &len, ct) != tag {
            return None;
        }
        let mut p = ct.to_vec();
        chacha_xor(key, &nonce(n), 1, &mut p);
        Some(p)
    }

    pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..16].copy_from_slice(&md5(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        for p in parts {
            inner.extend_from_slice(p);
        }
        let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        outer.extend_from_slice(&md5(&inner));
        md5(&outer)
    }

    /// `u32 n1 | dialer's hello | u32 n2 | acceptor's hello`, each hello the whole frame.
    pub fn transcript(dialer: &[u8], acceptor: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for h in [dialer, acceptor] {
            t.extend_from_slice(&(h.len() as u32).to_be_bytes());
            t.extend_from_slice(h);
        }
        t
    }

    /// `HKDF-Expand(HKDF-Extract("left protocol 3", key), label | R | transcript, len)`.
    pub fn derive(
        key: &[u8],
        label: &[u8],
        dialer: bool,
        transcript: &[u8],
        len: usize,
    ) -> Vec<u8> {
        let prk = hmac(b"left protocol 3", &[key]);
        let mut out = Vec::new();
        let mut t: Vec<u8> = Vec::new();
        let mut i = 1u8;
        while out.len() < len {
            t = hmac(&prk, &[&t, label, &[u8::from(dialer)], transcript, &[i]]).to_vec();
            out.extend_from_slice(&t);
            i += 1;
        }
        out.truncate(len);
        out
    }

    pub fn proof(key: &[u8], dialer: bool, transcript: &[u8]) -> [u8; 16] {
        derive(key, b"left-3 proof", dialer, transcript, 16)
            .try_into()
            .unwrap()
    }

    pub fn session_key(key: &[u8], dialer: bool, transcript: &[u8]) -> [u8; 32] {
        derive(key, b"left-3 key", dialer, transcript, 32)
            .try_into()
            .unwrap()
    }
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The test's own ciphers agree with RFC 8439's vectors (§2.4.2, §2.5.2, §2.8.2): what the
/// other tests conclude from them rests on this.
#[test]
fn the_tests_own_ciphers_match_rfc_8439() {
    let key: [u8; 32] = (0u8..32).collect::<Vec<_>>().try_into().unwrap();
    let nonce: [u8; 12] = unhex("000000000000004a00000000").try_into().unwrap();
    let mut text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
for the future, sunscreen would be it."
        .to_vec();
    crypto::chacha_xor(&key, &nonce, 1, &mut text);
    assert_eq!(hex(&text[..16]), "6e2e359a2568f98041ba0728dd0d6981");
    let pk: [u8; 32] = unhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
        .try_into()
        .unwrap();
    assert_eq!(
        hex(&crypto::poly1305(
            &pk,
            b"Cryptographic Forum Research Group"
        )),
        "a8061dc1305136c6c22b8baf0c0127a9"
    );
    let key: [u8; 32] = (0x80u8..0xa0).collect::<Vec<_>>().try_into().unwrap();
    let nonce: [u8; 12] = unhex("070000004041424344454647").try_into().unwrap();
    let aad = unhex("50515253c0c1c2c3c4c5c6c7");
    let mut text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
for the future, sunscreen would be it."
        .to_vec();
    crypto::chacha_xor(&key, &nonce, 1, &mut text);
    assert_eq!(
        hex(&crypto::aead_tag(&key, &nonce, &aad, &text)),
        "1ae10b594f09e26a7e902ecbd0600691"
    );
}

/// A connection the test made to a keyed daemon, as the dialer, past the handshake.
struct Keyed {
    s: TcpStream,
    ours: Vec<u8>,
    theirs: Vec<u8>,
    send: [u8; 32],
    recv: [u8; 32],
    sent: u64,
    got: u64,
}

/// Dials `port` as `device` (listening on `listen`) and completes the handshake with `key`.
fn keyed(port: u16, device: u64, listen: u16, key: &str) -> Keyed {
    let mut s = connect(port);
    let nonce: [u8; 16] = random_bytes(device ^ now_nanos(), 16).try_into().unwrap();
    let ours = wire::hello(device, wire::FLAG_AUTH, nonce, listen);
    s.write_all(&ours).unwrap();
    let (t, p) = wire::read_frame(&mut s).expect("no hello from the daemon");
    assert_eq!(t, wire::T_HELLO);
    let theirs = wire::frame(wire::T_HELLO, &p);
    let tr = crypto::transcript(&ours, &theirs);
    s.write_all(&wire::frame(
        wire::T_AUTH,
        &crypto::proof(key.as_bytes(), true, &tr),
    ))
    .unwrap();
    let (t, p) = wire::read_frame(&mut s).expect("no proof from the daemon");
    assert_eq!(t, wire::T_AUTH);
    assert_eq!(
        p,
        crypto::proof(key.as_bytes(), false, &tr),
        "the daemon's proof is not the acceptor's over the transcript as the README gives it"
    );
    Keyed {
        s,
        ours,
        theirs,
        send: crypto::session_key(key.as_bytes(), true, &tr),
        recv: crypto::session_key(key.as_bytes(), false, &tr),
        sent: 0,
        got: 0,
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

impl Keyed {
    /// Seals and sends a plain frame as the next one.
    fn send(&mut self, plain: &[u8]) -> std::io::Result<()> {
        let f = crypto::seal(&self.send, self.sent, plain);
        self.sent += 1;
        self.s.write_all(&f)
    }

    /// The next frame of the daemon's, opened: (type, payload); None when the tag fails or the
    /// connection ends.
    fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h).ok()?;
        let n = u32::from_be_bytes(h) as usize;
        let mut body = vec![0u8; n];
        self.s.read_exact(&mut body).ok()?;
        let mut p = crypto::open(&self.recv, self.got, &body)?;
        self.got += 1;
        let t = p.remove(0);
        Some((t, p))
    }
}

/// A keyed daemon D listing the port `listed` (where nothing listens), with `name` in its
/// share; its port.
fn keyed_daemon(t: &TestDir, key: &str, name: &str) -> (Peer, u16) {
    let (port, listed) = two_ports();
    let d = Peer::start_with(t, "D", port, &[listed], &["--key-file", key]);
    fs::write(d.path(name), b"the daemon's own file").unwrap();
    (d, port)
}

/// Control for the tests below: the test's key holder is accepted, the daemon's frames open
/// with the frame counter as nonce (0, 1, 2... each way), its index names its file, and
/// frames the test seals are taken (the daemon answers our IndexDone's seq with InSync).
#[test]
fn the_tests_key_holder_is_accepted_and_reads_the_daemons_index() {
    let t = TestDir::new("r23-holder");
    let key = key_file(&t);
    let (d, port) = keyed_daemon(&t, &key, "secret-name.txt");
    assert!(wait_until(SOON, || d.log_text().contains("listening")
        || d.log_text().contains("scan")));
    std::thread::sleep(Duration::from_millis(500));
    let mut k = keyed(port, 0xABCD_0001, 1, KEY);
    k.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut names = false;
    let mut types = Vec::new();
    while let Some((ty, p)) = k.recv() {
        types.push(ty);
        names |= p.windows(15).any(|w| w == b"secret-name.txt");
        if ty == wire::T_INDEX_DONE {
            break;
        }
    }
    assert!(names, "no index naming the file; frames {types:?}");
    k.send(&wire::index(1, &[])).unwrap();
    k.send(&wire::seq_frame(wire::T_INDEX_DONE, 0)).unwrap();
    k.send(&wire::frame(wire::T_PING, b"")).unwrap();
    // The connection stays up (a ping every 30 s at most: wait a little, then see it open).
    std::thread::sleep(Duration::from_secs(1));
    k.s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let open = !matches!(k.s.read(&mut b), Ok(0));
    assert!(
        open,
        "the daemon closed a good keyed connection:\n{}",
        tail(&d.log_text(), 10)
    );
}

/// What happened to one attempt: whether the daemon closed the connection, and the frames
/// (types) it sent in clear before (its Hello and maybe its Auth: nothing more).
fn closed_after(mut s: TcpStream, within: Duration) -> Option<Vec<u8>> {
    let got = wait_closed(&mut s, within)?;
    let mut r = &got[..];
    let mut types = Vec::new();
    while let Ok((t, _)) = wire::read_frame(&mut r) {
        types.push(t);
    }
    if !r.is_empty() {
        types.push(0xFF); // bytes that are no whole plain frame
    }
    Some(types)
}

/// Whether `d`'s log (after byte `before`) gets, within 5 s, the line that ends the
/// connection from our port `port` with `needle` in it (the log may lag the close).
fn ended_with(d: &Peer, before: usize, port: u16, needle: &str) -> bool {
    wait_until(Duration::from_secs(5), || {
        d.log_text()[before..]
            .lines()
            .any(|l| l.contains(&format!(":{port} ended")) && l.contains(needle))
    })
}

/// The handshake's attacks, each on its own connection to a keyed daemon: a Hello claiming
/// no key (downgrade), protocol 2 and 4, the daemon's own Hello sent back (reflection), its
/// nonce echoed, its own proof sent back, the proof a holder of the key gives as the wrong
/// role or over the hellos swapped (as if the daemon had dialed), Auth frames of 15 and 17
/// bytes, a Ping in place of the Auth, a plain frame before the Hello, nothing after the Hello.
/// Each ends with the connection closed, nothing but the daemon's Hello and Auth sent, and a
/// line in its log; the daemon stays up and a real key holder still syncs with it.
#[test]
fn handshake_attacks_get_nothing_and_the_daemon_lives() {
    let t = TestDir::new("r23-handshake");
    let key = key_file(&t);
    let (pd, pb) = two_ports();
    let mut d = Peer::start_with(&t, "D", pd, &[pb], &["--key-file", &key]);
    fs::write(d.path("kept-secret.txt"), b"the daemon's own file").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    type Step = fn(&mut TcpStream, &[u8], &[u8]) -> std::io::Result<()>;
    // (what, flags, version, step after both hellos (ours, the daemon's), needle in D's log)
    let cases: Vec<(&str, u32, u16, Step, &str)> = vec![
        ("downgrade", 0, 3, |_, _, _| Ok(()), "no shared key"),
        (
            "protocol 2",
            wire::FLAG_AUTH,
            2,
            |_, _, _| Ok(()),
            "version 2, we speak 3",
        ),
        (
            "protocol 4",
            wire::FLAG_AUTH,
            4,
            |_, _, _| Ok(()),
            "version 4, we speak 3",
        ),
        (
            "random proof",
            wire::FLAG_AUTH,
            3,
            |s, _, _| s.write_all(&wire::frame(wire::T_AUTH, &[7; 16])),
            "wrong shared key",
        ),
        (
            "auth of 15 bytes",
            wire::FLAG_AUTH,
            3,
            |s, o, h| {
                let p = crypto::proof(KEY.as_bytes(), true, &crypto::transcript(o, h));
                s.write_all(&wire::frame(wire::T_AUTH, &p[..15]))
            },
            "ended",
        ),
        (
            "auth of 17 bytes",
            wire::FLAG_AUTH,
            3,
            |s, o, h| {
                let mut p = crypto::proof(KEY.as_bytes(), true, &crypto::transcript(o, h)).to_vec();
                p.push(0);
                s.write_all(&wire::frame(wire::T_AUTH, &p))
            },
            "ended",
        ),
        (
            "acceptor's proof (other role)",
            wire::FLAG_AUTH,
            3,
            |s, o, h| {
                let p = crypto::proof(KEY.as_bytes(), false, &crypto::transcript(o, h));
                s.write_all(&wire::frame(wire::T_AUTH, &p))
            },
            "wrong shared key",
        ),
        (
            "hellos swapped (as if it dialed)",
            wire::FLAG_AUTH,
            3,
            |s, o, h| {
                let p = crypto::proof(KEY.as_bytes(), false, &crypto::transcript(h, o));
                s.write_all(&wire::frame(wire::T_AUTH, &p))
            },
            "wrong shared key",
        ),
        (
            "its own proof sent back",
            wire::FLAG_AUTH,
            3,
            |s, _, _| {
                let (t, p) = wire::read_frame(s)?;
                assert_eq!(t, wire::T_AUTH);
                s.write_all(&wire::frame(wire::T_AUTH, &p))
            },
            "wrong shared key",
        ),
        (
            "ping for a proof",
            wire::FLAG_AUTH,
            3,
            |s, _, _| s.write_all(&wire::frame(wire::T_PING, b"")),
            "expected proof",
        ),
        (
            "a sealed-looking frame for a proof",
            wire::FLAG_AUTH,
            3,
            |s, _, _| {
                s.write_all(
                    &[0, 0, 0, 40]
                        .iter()
                        .copied()
                        .chain([9; 40])
                        .collect::<Vec<_>>(),
                )
            },
            "ended",
        ),
    ];
    let mut fails = Vec::new();
    for (i, (what, flags, version, step, needle)) in cases.into_iter().enumerate() {
        let before = d.log_text().len();
        let mut s = connect(pd);
        let nonce: [u8; 16] = random_bytes(i as u64 + 77, 16).try_into().unwrap();
        let ours = wire::frame(
            wire::T_HELLO,
            &wire::hello_payload(
                wire::MAGIC,
                version,
                0x5EED_0000 + i as u64,
                flags,
                nonce,
                9,
            ),
        );
        s.write_all(&ours).unwrap();
        let (ty, p) = wire::read_frame(&mut s).unwrap();
        assert_eq!(ty, wire::T_HELLO);
        let theirs = wire::frame(wire::T_HELLO, &p);
        let _ = step(&mut s, &ours, &theirs);
        let port = s.local_addr().unwrap().port();
        let sent = closed_after(s, Duration::from_secs(15));
        let logged = ended_with(&d, before, port, needle);
        let log = d.log_text()[before..].to_string();
        let ok = sent
            .as_ref()
            .is_some_and(|ty| ty.iter().all(|&t| t == wire::T_AUTH))
            && logged;
        if !ok {
            fails.push(format!(
                "{what}: after its hello the daemon sent {sent:?}; log:\n{log}"
            ));
        }
    }
    // Reflection of the whole Hello: the daemon's own Hello back (its device, its nonce), and
    // its nonce echoed under another device.
    for (what, needle) in [
        ("its own hello", "ourselves"),
        ("its nonce echoed", "echoed"),
    ] {
        let before = d.log_text().len();
        let mut s = connect(pd);
        let (ty, p) = wire::read_frame(&mut s).unwrap();
        assert_eq!(ty, wire::T_HELLO);
        let mut p = p;
        if what == "its nonce echoed" {
            p[6..14].copy_from_slice(&0x0EC0_0000u64.to_be_bytes());
        }
        s.write_all(&wire::frame(wire::T_HELLO, &p)).unwrap();
        let port = s.local_addr().unwrap().port();
        let sent = closed_after(s, Duration::from_secs(15));
        let logged = ended_with(&d, before, port, needle);
        let log = d.log_text()[before..].to_string();
        if !(sent.as_ref().is_some_and(|ty| ty.is_empty()) && logged) {
            fails.push(format!("{what}: the daemon sent {sent:?}; log:\n{log}"));
        }
    }
    // A hello and nothing more: the handshake's deadline (10 s) closes it.
    let mut s = connect(pd);
    s.write_all(&wire::hello(0x51_0000, wire::FLAG_AUTH, [3; 16], 9))
        .unwrap();
    let start = Instant::now();
    let sent = closed_after(s, Duration::from_secs(20));
    if sent.is_none() || start.elapsed() > Duration::from_secs(14) {
        fails.push(format!(
            "silent after its hello: {sent:?} after {:?}",
            start.elapsed()
        ));
    }
    assert!(d.alive(), "the daemon died:\n{}", tail(&d.log_text(), 20));
    assert!(
        !d.log_text().contains("connected to 127"),
        "an attacker got a session:\n{}",
        d.log_text()
    );
    // A real key holder still syncs.
    let b = Peer::start_with(&t, "B", pb, &[pd], &["--key-file", &key]);
    wait_content(&b, "kept-secret.txt", b"the daemon's own file", SOON);
    assert!(fails.is_empty(), "{}", fails.join("\n\n"));
}

/// A sealed Index frame announcing `name` (the bait: a tampered frame must not get it fetched).
fn bait(name: &str) -> Vec<u8> {
    let e = wire::Entry::file(name, b"planted by a middleman", 0xBAD, 1);
    wire::index(1, &[e])
}

/// Attacks on the sealed frames, each on its own session of the test's key holder with a
/// keyed daemon: the tag or the ciphertext altered, the length made larger, smaller, 0, 16 (a
/// tag alone) or over the limit, a frame dropped, replayed or two swapped, a frame sealed for
/// the other direction, one from another session, the daemon's own frame sent back, a plain
/// frame, a sealed Hello or Auth, a frame cut short. Each ends the session with a line in the
/// daemon's log; the daemon lives, never fetches the bait, and a key holder still syncs.
#[test]
fn altered_sealed_frames_end_the_session_and_nothing_else() {
    let t = TestDir::new("r23-frames");
    let key = key_file(&t);
    let (pd, pb) = two_ports();
    let mut d = Peer::start_with(&t, "D", pd, &[pb], &["--key-file", &key]);
    fs::write(d.path("kept-secret.txt"), b"the daemon's own file").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let other = keyed(pd, 0x0DD0_0000, 9, KEY);
    let other_send = other.send;
    let mut daemon_frame = None;
    drop(other);
    type Attack = Box<dyn Fn(&mut Keyed, &[u8], &[u8; 32], &[u8]) -> Vec<u8>>;
    // (what, bytes to send after the handshake (given the session, the bait, another
    // session's key, a frame of the daemon's as received), needle)
    let auth_fail = "does not authenticate";
    let cases: Vec<(&str, Attack, &str)> = vec![
        (
            "tag flipped",
            Box::new(|k, b, _, _| {
                let mut f = crypto::seal(&k.send, 0, b);
                *f.last_mut().unwrap() ^= 1;
                f
            }),
            auth_fail,
        ),
        (
            "ciphertext flipped",
            Box::new(|k, b, _, _| {
                let mut f = crypto::seal(&k.send, 0, b);
                f[6] ^= 0x20;
                f
            }),
            auth_fail,
        ),
        (
            "length + 1",
            Box::new(|k, b, _, _| {
                let mut f = crypto::seal(&k.send, 0, b);
                let n = u32::from_be_bytes(f[..4].try_into().unwrap()) + 1;
                f[..4].copy_from_slice(&n.to_be_bytes());
                f.push(0);
                f
            }),
            auth_fail,
        ),
        (
            "length - 1",
            Box::new(|k, b, _, _| {
                let mut f = crypto::seal(&k.send, 0, b);
                let n = u32::from_be_bytes(f[..4].try_into().unwrap()) - 1;
                f[..4].copy_from_slice(&n.to_be_bytes());
                f
            }),
            auth_fail,
        ),
        ("length 0", Box::new(|_, _, _, _| vec![0; 8]), "empty frame"),
        (
            "a tag alone",
            Box::new(|_, _, _, _| [0, 0, 0, 16].into_iter().chain([5; 16]).collect()),
            "too short",
        ),
        (
            "over the limit",
            Box::new(|_, _, _, _| ((8 << 20) + (64 << 10) + 1u32).to_be_bytes().to_vec()),
            "limit",
        ),
        (
            "frame 0 dropped",
            Box::new(|k, b, _, _| crypto::seal(&k.send, 1, b)),
            auth_fail,
        ),
        (
            "frame 0 replayed",
            Box::new(|k, b, _, _| {
                let mut f = crypto::seal(&k.send, 0, &wire::frame(wire::T_PING, b""));
                f.extend(f.clone());
                f.extend(crypto::seal(&k.send, 1, b));
                f
            }),
            auth_fail,
        ),
        (
            "frame 1 replayed after frame 3",
            Box::new(|k, _, _, _| {
                let ping = wire::frame(wire::T_PING, b"");
                let f: Vec<Vec<u8>> = (0..4).map(|n| crypto::seal(&k.send, n, &ping)).collect();
                let mut all = f.concat();
                all.extend_from_slice(&f[1]);
                all
            }),
            auth_fail,
        ),
        (
            "frames 0 and 1 swapped",
            Box::new(|k, b, _, _| {
                let mut f = crypto::seal(&k.send, 1, b);
                f.extend(crypto::seal(&k.send, 0, &wire::frame(wire::T_PING, b"")));
                f
            }),
            auth_fail,
        ),
        (
            "sealed for the other direction",
            Box::new(|k, b, _, _| crypto::seal(&k.recv, 0, b)),
            auth_fail,
        ),
        (
            "from another session",
            Box::new(|_, b, o, _| crypto::seal(o, 0, b)),
            auth_fail,
        ),
        (
            "the daemon's own frame back",
            Box::new(|_, _, _, own| own.to_vec()),
            auth_fail,
        ),
        ("a plain frame", Box::new(|_, b, _, _| b.to_vec()), ""),
        (
            "a sealed hello",
            Box::new(|k, _, _, _| {
                crypto::seal(
                    &k.send,
                    0,
                    &wire::hello(0x0EE0, wire::FLAG_AUTH, [1; 16], 9),
                )
            }),
            "handshake frame after the handshake",
        ),
        (
            "a sealed auth",
            Box::new(|k, _, _, _| crypto::seal(&k.send, 0, &wire::frame(wire::T_AUTH, &[0; 16]))),
            "handshake frame after the handshake",
        ),
    ];
    let mut fails = Vec::new();
    for (i, (what, attack, needle)) in cases.into_iter().enumerate() {
        let before = d.log_text().len();
        let mut k = keyed(pd, 0xA77A_0000 + i as u64, 9, KEY);
        // The daemon's first sealed frame, as it came (for the reflection).
        let own = {
            let mut h = [0u8; 4];
            k.s.read_exact(&mut h).unwrap();
            let mut f = h.to_vec();
            f.resize(4 + u32::from_be_bytes(h) as usize, 0);
            k.s.read_exact(&mut f[4..]).unwrap();
            f
        };
        daemon_frame.get_or_insert(own.clone());
        let bytes = attack(&mut k, &bait(&format!("bait-{i}.txt")), &other_send, &own);
        let port = k.s.local_addr().unwrap().port();
        let _ = k.s.write_all(&bytes);
        let closed = wait_closed(&mut k.s, Duration::from_secs(10)).is_some();
        let line = ended_with(&d, before, port, needle);
        let log = d.log_text()[before..].to_string();
        if !closed || !line {
            fails.push(format!("{what}: closed {closed}; log:\n{log}"));
        }
    }
    // A frame cut short, then the connection closed: nothing happens but its end.
    let mut k = keyed(pd, 0xC0_7000, 9, KEY);
    let f = crypto::seal(&k.send, 0, &bait("bait-cut.txt"));
    k.s.write_all(&f[..f.len() - 3]).unwrap();
    drop(k);
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.alive(), "the daemon died:\n{}", tail(&d.log_text(), 20));
    let b = Peer::start_with(&t, "B", pb, &[pd], &["--key-file", &key]);
    wait_content(&b, "kept-secret.txt", b"the daemon's own file", SOON);
    let planted: Vec<String> = names(&d.dir)
        .into_iter()
        .filter(|n| n.contains("bait"))
        .collect();
    assert!(planted.is_empty(), "planted in the share: {planted:?}");
    assert!(fails.is_empty(), "{}", fails.join("\n\n"));
}

/// Keyed sessions as the README gives them: the daemon's frames open with the counter as
/// nonce, each direction has its own key, and two sessions with the same shared key get
/// other keys (no nonce is ever used twice under one key).
#[test]
fn session_keys_differ_by_direction_and_by_session() {
    let t = TestDir::new("r23-keys");
    let key = key_file(&t);
    let (d, port) = keyed_daemon(&t, &key, "file.txt");
    std::thread::sleep(Duration::from_millis(800));
    let mut keys = Vec::new();
    let mut firsts = Vec::new();
    for i in 0..2u64 {
        let mut k = keyed(port, 0x4E75_0000 + i, 9, KEY);
        k.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut h = [0u8; 4];
        k.s.read_exact(&mut h).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(h) as usize];
        k.s.read_exact(&mut body).unwrap();
        // Frame 0 opens under the daemon's (acceptor's) key, not ours, not as frame 1.
        assert!(crypto::open(&k.recv, 0, &body).is_some());
        assert!(crypto::open(&k.send, 0, &body).is_none());
        assert!(crypto::open(&k.recv, 1, &body).is_none());
        k.got = 1;
        let mut n = 1;
        while let Some((ty, _)) = k.recv() {
            n += 1;
            if ty == wire::T_INDEX_DONE {
                break;
            }
        }
        assert!(n >= 2, "{}", tail(&d.log_text(), 10));
        keys.push(k.send);
        keys.push(k.recv);
        firsts.push(body);
        assert_ne!(k.ours, k.theirs);
    }
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            assert_ne!(keys[i], keys[j], "keys {i} and {j} are one");
        }
    }
    // The same index sent twice at nonce 0: the ciphertexts differ (other keys).
    assert_ne!(firsts[0], firsts[1]);
}

/// What a frame-aware middleman does to the first sealed frames (frame 0 and the ones after
/// it) that one direction of a connection carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Meddle {
    /// Frame 0 is not forwarded.
    Drop,
    /// Frame 0 is forwarded twice.
    Replay,
    /// Frames 0 and 1 are forwarded in the other order.
    Swap,
    /// Frame 0's length is made one larger (a byte of the next frame is taken into it).
    Longer,
    /// Frame 0's length is made one smaller.
    Shorter,
    /// Frame 0 is sent back to its sender as if the other side had sent it (and forwarded).
    Reflect,
    /// Frame 0 is replaced by frame 0 of the previous connection in the same direction.
    Splice,
    /// Frame 0's length becomes the largest allowed; only its first bytes are forwarded, then
    /// nothing (the frame is weighed and waits).
    Stall,
    /// Both Hellos lose their key flag (a downgrade of both sides at once).
    Strip,
}

/// A Hello frame with its key flag cleared.
fn stripped(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() > 22 && f[4] == wire::T_HELLO {
        f[22] &= !1;
    }
    f
}

/// Reads one whole frame (length and body) off `r`.
fn whole_frame(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut f = vec![0u8; 4];
    r.read_exact(&mut f)?;
    let n = u32::from_be_bytes(f[..4].try_into().unwrap()) as usize;
    if n > 16 << 20 {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    f.resize(4 + n, 0);
    r.read_exact(&mut f[4..])?;
    Ok(f)
}

/// A middleman on 127.0.0.1 forwarding to `target` frame by frame; connection `i` (0, 1...)
/// has `modes[i]` applied to the frames from the dialer (towards the target) after the
/// handshake (two plain frames each way); later connections pass untouched. Returns its port.
fn meddler(target: u16, modes: Vec<Meddle>) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let previous: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>> = Default::default();
        for (i, c) in l.incoming().enumerate() {
            let Ok(c) = c else { continue };
            let Ok(u) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let mode = modes.get(i).copied();
            let prev = previous.clone();
            std::thread::spawn(move || {
                let (c2, u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
                let back_to_client = c.try_clone().unwrap();
                // Back: untouched, but sharing the client socket with reflections.
                let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
                let lk = lock.clone();
                std::thread::spawn(move || {
                    let (mut from, mut to) = (u2, c2);
                    while let Ok(mut f) = whole_frame(&mut from) {
                        if mode == Some(Meddle::Strip) {
                            f = stripped(f);
                        }
                        let _g = lk.lock().unwrap();
                        if to.write_all(&f).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
                let (mut from, mut to) = (c, u);
                let mut n = 0usize;
                let mut held: Option<Vec<u8>> = None;
                while let Ok(mut f) = whole_frame(&mut from) {
                    if mode == Some(Meddle::Strip) {
                        f = stripped(f);
                    }
                    n += 1;
                    let sealed = n - 3; // wraps for the handshake's frames: never 0 or 1
                    if sealed == 0 && mode != Some(Meddle::Splice) {
                        *prev.lock().unwrap() = Some(f.clone());
                    }
                    let out: Vec<Vec<u8>> = match (mode, sealed) {
                        (_, s) if s > 1_000_000 => vec![f],
                        (Some(Meddle::Drop), 0) => vec![],
                        (Some(Meddle::Replay), 0) => vec![f.clone(), f],
                        (Some(Meddle::Swap), 0) => {
                            held = Some(f);
                            vec![]
                        }
                        (Some(Meddle::Swap), 1) => vec![f, held.take().unwrap()],
                        (Some(Meddle::Longer), 0) => {
                            let mut f = f;
                            let len = u32::from_be_bytes(f[..4].try_into().unwrap()) + 1;
                            f[..4].copy_from_slice(&len.to_be_bytes());
                            vec![f]
                        }
                        (Some(Meddle::Shorter), 0) => {
                            let mut f = f;
                            let len = u32::from_be_bytes(f[..4].try_into().unwrap()) - 1;
                            f[..4].copy_from_slice(&len.to_be_bytes());
                            vec![f]
                        }
                        (Some(Meddle::Reflect), 0) => {
                            let _g = lock.lock().unwrap();
                            let _ = (&back_to_client).write_all(&f);
                            vec![f]
                        }
                        (Some(Meddle::Splice), 0) => {
                            let old = prev.lock().unwrap().take();
                            vec![old.expect("a frame 0 of an earlier connection")]
                        }
                        (Some(Meddle::Stall), 0) => {
                            let mut g = ((8 << 20) + (64 << 10) as u32).to_be_bytes().to_vec();
                            g.extend_from_slice(&f[4..14]);
                            let _ = to.write_all(&g);
                            // Hold the connection until the test ends or the target closes.
                            std::thread::sleep(Duration::from_secs(120));
                            break;
                        }
                        _ => vec![f],
                    };
                    for f in out {
                        if to.write_all(&f).is_err() {
                            break;
                        }
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Both);
                let _ = from.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// A middleman between two key holders, A dialing B through it, meddles with the first
/// sealed frames from A on one connection after another: drops, replays, swaps, lengthens
/// and shortens frame 0, sends it back to A, splices in frame 0 of the previous session. Each
/// connection ends (B logs that a frame does not authenticate, or A that one came back); then
/// the middleman passes frames untouched and A and B sync, nothing else in their shares.
#[test]
fn a_middleman_meddling_with_sealed_frames_only_delays_the_sync() {
    let t = TestDir::new("r23-meddler");
    let key = key_file(&t);
    let (pa, pb) = two_ports();
    use Meddle::*;
    let modes = vec![Replay, Splice, Drop, Swap, Longer, Shorter, Reflect];
    let m = meddler(pb, modes.clone());
    let mut b = Peer::start_with(&t, "B", pb, &[free_port()], &["--key-file", &key]);
    fs::write(b.path("from-b.txt"), b"b's content").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut a = Peer::start_with(&t, "A", pa, &[m], &["--key-file", &key]);
    fs::write(a.path("from-a.txt"), b"a's content").unwrap();
    wait_content(&b, "from-a.txt", b"a's content", Duration::from_secs(90));
    wait_content(&a, "from-b.txt", b"b's content", Duration::from_secs(30));
    let (la, lb) = (a.log_text(), b.log_text());
    let refused =
        lb.matches("does not authenticate").count() + la.matches("does not authenticate").count();
    assert!(
        refused >= modes.len() - 1,
        "{refused} frames refused for {} meddled connections:\nA: {}\nB: {}",
        modes.len(),
        tail(&la, 30),
        tail(&lb, 30)
    );
    assert!(a.alive() && b.alive());
    for p in [&a, &b] {
        let mut n = names(&p.dir);
        n.retain(|x| !x.starts_with(".left"));
        n.sort();
        assert_eq!(n, ["from-a.txt", "from-b.txt"], "{}", p.name);
    }
}

/// A middleman turns frame 0 from A to B into the largest frame allowed and forwards only its
/// first bytes (weighed before its tag can be checked): B holds its budget for large frames
/// meanwhile. Another key holder C, whose index frames are large, still gets its share to B
/// (the stalled frame is cut once another waits), and B's memory stays bounded.
#[test]
fn a_huge_length_forged_by_a_middleman_holds_nothing_for_long() {
    let t = TestDir::new("r23-stall");
    let key = key_file(&t);
    let (pa, pb) = two_ports();
    let pc = free_port();
    let m = meddler(pb, vec![Meddle::Stall]);
    let b = Peer::start_with(&t, "B", pb, &[free_port()], &["--key-file", &key]);
    std::thread::sleep(Duration::from_millis(500));
    let a = Peer::start_with(&t, "A", pa, &[m], &["--key-file", &key]);
    fs::write(a.path("from-a.txt"), b"a's content").unwrap();
    assert!(
        b.wait_log(SOON, "connected to"),
        "{}",
        tail(&b.log_text(), 10)
    );
    std::thread::sleep(Duration::from_secs(1));
    // C: 400 files, so that its index frames are larger than the reader's own buffer.
    let c_dir = t.join("C");
    fs::create_dir_all(&c_dir).unwrap();
    for i in 0..400 {
        fs::write(
            c_dir.join(format!("c-file-number-{i:04}.txt")),
            format!("c {i}"),
        )
        .unwrap();
    }
    let start = Instant::now();
    let c = Peer::start_with(&t, "C", pc, &[pb], &["--key-file", &key]);
    let all = wait_until(Duration::from_secs(60), || {
        names(&b.dir)
            .iter()
            .filter(|n| n.starts_with("c-file"))
            .count()
            == 400
    });
    let took = start.elapsed();
    let (hwm, _) = memory_kib(b.pid().unwrap());
    assert!(
        all,
        "C's files did not reach B past the stalled frame:\nB: {}\nC: {}",
        tail(&b.log_text(), 20),
        tail(&c.log_text(), 10)
    );
    eprintln!("C's 400 files on B after {took:?}; B's peak RSS {hwm} KiB");
    assert!(hwm < 200 << 10, "B's peak RSS {hwm} KiB");
    wait_content(&b, "from-a.txt", b"a's content", Duration::from_secs(120));
    // The scene was as described: the forged frame was weighed, held, and cut.
    assert!(
        b.log_text().contains("while others wait for memory"),
        "{}",
        tail(&b.log_text(), 20)
    );
}

/// The daemon's ChaCha20-Poly1305 (eight blocks at a time in AVX2 registers where the CPU has
/// them) against the test's own, one block at a time from the RFC, at many lengths both ways:
/// answers of the daemon's to ranges of 1 byte to a whole block open here and hold the file's
/// bytes, and a file the test pushes in sealed blocks of 64 KiB arrives whole. A keystream
/// repeated or shifted in the wide path would fail here even where two daemons agree.
#[test]
fn the_daemons_cipher_is_rfc_8439_at_every_length() {
    let t = TestDir::new("r23-lengths");
    let key = key_file(&t);
    let (port, listed) = two_ports();
    let d = Peer::start_with(&t, "D", port, &[listed], &["--key-file", &key]);
    let data = random_bytes(23, 200_000);
    fs::write(d.path("big.bin"), &data).unwrap();
    assert!(wait_until(SOON, || d
        .log_text()
        .contains("changed locally: big.bin")));
    std::thread::sleep(Duration::from_millis(500));
    let mut k = keyed(port, 0x1E_0000, 9, KEY);
    k.s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    while let Some((ty, _)) = k.recv() {
        if ty == wire::T_INDEX_DONE {
            break;
        }
    }
    let lens: [u32; 14] = [
        1, 15, 16, 17, 63, 64, 65, 447, 448, 511, 513, 4097, 65_535, 65_536,
    ];
    for (i, &len) in lens.iter().enumerate() {
        let off = 7 + 1000 * i as u64;
        k.send(&wire::request(i as u32 + 1, "big.bin", off, len, [0; 16]))
            .unwrap();
    }
    let mut answered = 0;
    while answered < lens.len() {
        let Some((ty, p)) = k.recv() else {
            panic!(
                "a frame of the daemon's did not open here after {answered} answers:\n{}",
                tail(&d.log_text(), 10)
            );
        };
        if ty != wire::T_RESPONSE {
            continue;
        }
        let id = u32::from_be_bytes(p[..4].try_into().unwrap()) as usize;
        let (off, len) = (7 + 1000 * (id - 1), lens[id - 1] as usize);
        assert_eq!(p[4], 0, "answer {id}: status {}", p[4]);
        assert_eq!(&p[9..], &data[off..off + len], "answer {id} ({len} bytes)");
        answered += 1;
    }
    // The other way: a file of several blocks of 64 KiB, pushed in sealed answers.
    let pushed = random_bytes(24, 3 * 65_536 + 4_321);
    k.send(&wire::index(
        1,
        &[wire::Entry::file("pushed.bin", &pushed, 0x1E_0000, 1)],
    ))
    .unwrap();
    k.send(&wire::seq_frame(wire::T_INDEX_DONE, 1)).unwrap();
    let start = Instant::now();
    while !has_content(&d.path("pushed.bin"), &pushed) && start.elapsed() < SOON {
        let Some((ty, p)) = k.recv() else { break };
        if ty == wire::T_REQUEST {
            let r = wire::parse_request(&p).unwrap();
            let end = (r.offset + u64::from(r.len)) as usize;
            let ans = wire::response(r.id, 0, &pushed[r.offset as usize..end.min(pushed.len())]);
            k.send(&ans).unwrap();
        }
    }
    wait_content(&d, "pushed.bin", &pushed, Duration::from_secs(10));
}

/// A middleman clears the key flag in both Hellos: neither side falls back to a session
/// without the key; both refuse, each saying why, and no index crosses.
#[test]
fn a_downgrade_of_both_hellos_is_refused_on_both_sides() {
    let t = TestDir::new("r23-strip");
    let key = key_file(&t);
    let (pa, pb) = two_ports();
    let m = meddler(pb, vec![Meddle::Strip; 1000]);
    let b = Peer::start_with(&t, "B", pb, &[free_port()], &["--key-file", &key]);
    fs::write(b.path("from-b.txt"), b"b's content").unwrap();
    let a = Peer::start_with(&t, "A", pa, &[m], &["--key-file", &key]);
    fs::write(a.path("from-a.txt"), b"a's content").unwrap();
    let refused = |p: &Peer| p.log_text().contains("has no shared key configured");
    assert!(
        wait_until(SOON, || refused(&a) && refused(&b)),
        "A: {}\nB: {}",
        tail(&a.log_text(), 10),
        tail(&b.log_text(), 10)
    );
    std::thread::sleep(Duration::from_secs(2));
    for p in [&a, &b] {
        assert!(
            !p.log_text().contains("connected to"),
            "{}",
            tail(&p.log_text(), 10)
        );
    }
    assert!(!a.path("from-b.txt").exists() && !b.path("from-a.txt").exists());
}

/// A key holder dials twice at once as one device: the second session is refused, the first
/// goes on; a key holder that trickles a small sealed frame a byte a second after the
/// handshake holds its own connection only: a real key holder still syncs meanwhile.
#[test]
fn one_device_twice_and_a_trickling_holder_keep_no_one_out() {
    let t = TestDir::new("r23-twice");
    let key = key_file(&t);
    let (pd, pb) = two_ports();
    let mut d = Peer::start_with(&t, "D", pd, &[pb], &["--key-file", &key]);
    fs::write(d.path("kept.txt"), b"the daemon's own file").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let mut first = keyed(pd, 0x7717_0001, 9, KEY);
    let mut second = keyed(pd, 0x7717_0001, 9, KEY);
    assert!(
        wait_closed(&mut second.s, Duration::from_secs(10)).is_some(),
        "a second session of one device stayed"
    );
    assert!(d.wait_log(Duration::from_secs(5), "already connected"));
    // The first is still served: it gets the daemon's index.
    first
        .s
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got_index = false;
    while let Some((ty, _)) = first.recv() {
        got_index |= ty == wire::T_INDEX;
        if ty == wire::T_INDEX_DONE {
            break;
        }
    }
    assert!(got_index);
    // The trickle: a sealed Ping a byte a second, on another session.
    let mut slow = keyed(pd, 0x7717_0002, 9, KEY);
    let f = crypto::seal(&slow.send, 0, &wire::frame(wire::T_PING, b""));
    let trickle = std::thread::spawn(move || {
        for b in f {
            if slow.s.write_all(&[b]).is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        slow.sent = 1;
        slow.send(&wire::frame(wire::T_PING, b"")).is_ok()
    });
    let b = Peer::start_with(&t, "B", pb, &[pd], &["--key-file", &key]);
    wait_content(
        &b,
        "kept.txt",
        b"the daemon's own file",
        Duration::from_secs(20),
    );
    fs::write(b.path("back.txt"), b"from b").unwrap();
    wait_content(&d, "back.txt", b"from b", Duration::from_secs(20));
    assert!(d.alive());
    drop(first);
    let _ = trickle.join();
}

/// How many log lines a middleman makes each side write by spoiling every session (frame 0
/// replayed) for 10 s: bounded (the README: lines a peer can cause over and over are limited).
#[test]
fn a_middleman_spoiling_every_session_fills_no_log() {
    let t = TestDir::new("r23-logs");
    let key = key_file(&t);
    let (pa, pb) = two_ports();
    let m = meddler(pb, vec![Meddle::Replay; 100_000]);
    let b = Peer::start_with(&t, "B", pb, &[free_port()], &["--key-file", &key]);
    let a = Peer::start_with(&t, "A", pa, &[m], &["--key-file", &key]);
    std::thread::sleep(Duration::from_secs(3));
    let (la, lb) = (a.log_text().lines().count(), b.log_text().lines().count());
    std::thread::sleep(Duration::from_secs(10));
    let (na, nb) = (
        a.log_text().lines().count() - la,
        b.log_text().lines().count() - lb,
    );
    let sessions = b.log_text().matches("does not authenticate").count();
    eprintln!("in 10 s: A wrote {na} lines, B {nb}; {sessions} sessions spoiled so far");
    assert!(sessions > 5, "{}", tail(&b.log_text(), 10));
    assert!(
        na <= 200 && nb <= 200,
        "A: {na} lines, B: {nb} lines in 10 s"
    );
}

/// Someone without the key at a listed peer's address (behind the same NAT, here 127.0.0.1)
/// keeps every handshake slot of that address busy, opening connections that say nothing
/// (each lasts the handshake's 10 s). A key holder at that address that only dials (the
/// daemon cannot dial it back) would have to get in for the key to help it. It does not
/// (runs 2 of 2: kept out for 25 s): the README's threat model leaves port floods unprotected
/// and promises only that a flood from elsewhere keeps no listed peer out, so this is a note,
/// not a defect; ignored, run on demand (`-- --ignored`).
#[test]
#[ignore]
fn silent_handshakes_from_a_shared_address_keep_no_key_holder_out() {
    let t = TestDir::new("r23-slots");
    let key = key_file(&t);
    let (pd, pb) = two_ports();
    // D lists an address of 127.0.0.1 where nothing listens: it cannot dial B.
    let d = Peer::start_with(&t, "D", pd, &[free_port()], &["--key-file", &key]);
    fs::write(d.path("kept.txt"), b"the daemon's own file").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let flood = std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        while !st.load(std::sync::atomic::Ordering::SeqCst) {
            held.retain(|s| {
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 256];
                !matches!((&*s).read(&mut b), Ok(0))
                    && !matches!((&*s).read(&mut b), Err(ref e) if e.kind() != std::io::ErrorKind::WouldBlock)
            });
            while held.len() < 32 {
                match TcpStream::connect(("127.0.0.1", pd)) {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let b = Peer::start_with(&t, "B", pb, &[pd], &["--key-file", &key]);
    let got = wait_until(Duration::from_secs(25), || {
        has_content(&b.path("kept.txt"), b"the daemon's own file")
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = flood.join();
    assert!(
        got,
        "the key holder was kept out for 25 s by silent handshakes from its address:\nB: {}\nD: {}",
        tail(&b.log_text(), 8),
        tail(&d.log_text(), 8)
    );
}

/// The daemon's Poly1305 (44-bit limbs) against the test's (26-bit limbs, from the RFC) on
/// ciphertexts the test chooses as a key holder, where carries are largest: all 0xFF, all
/// 0x00, 0xFE, at every length up to 300 bytes and at the reader's boundaries (16 KiB, 64 KiB,
/// 1 MiB). Each frame's first byte decrypts to a type nobody knows (skipped), so the
/// connection goes on exactly while the daemon's tags agree with the test's.
#[test]
fn the_daemons_poly1305_agrees_on_extreme_ciphertexts() {
    let t = TestDir::new("r23-poly");
    let key = key_file(&t);
    let (d, port) = keyed_daemon(&t, &key, "file.txt");
    std::thread::sleep(Duration::from_millis(800));
    let mut k = keyed(port, 0x9017_0000, 9, KEY);
    let reader = k.s.try_clone().unwrap();
    // Drain what the daemon sends, so that it never blocks writing.
    std::thread::spawn(move || {
        let mut r = reader;
        let mut b = vec![0u8; 1 << 16];
        while matches!(r.read(&mut b), Ok(1..)) {}
    });
    let mut lens: Vec<usize> = (1..=300).collect();
    lens.extend([16_383, 16_384, 16_385, 65_536, 65_537, 1 << 20]);
    let mut frames = 0u64;
    for fill in [0xFFu8, 0x00, 0xFE] {
        for &len in &lens {
            let n = k.sent;
            let nonce = crypto::nonce(n);
            let mut ct = vec![fill; len];
            ct[0] = crypto::chacha_block(&k.send, 1, &nonce)[0] ^ 200;
            let l = ((len + 16) as u32).to_be_bytes();
            let tag = crypto::aead_tag(&k.send, &nonce, &l, &ct);
            let mut f = l.to_vec();
            f.extend_from_slice(&ct);
            f.extend_from_slice(&tag);
            k.s.write_all(&f).unwrap();
            k.sent += 1;
            frames += 1;
        }
    }
    k.send(&wire::frame(wire::T_PING, b"")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let log = d.log_text();
    assert!(
        !log.contains("does not authenticate") && !log.contains("ended"),
        "the daemon refused one of {frames} frames:\n{}",
        tail(&log, 10)
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            d.log_text().matches("unknown type 200").count() as u64 == frames
        }),
        "{} of {frames} frames skipped:\n{}",
        d.log_text().matches("unknown type 200").count(),
        tail(&d.log_text(), 5)
    );
}
