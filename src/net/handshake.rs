//! The handshake: hellos (magic, version, device, nonce, port, flags), then with a shared key a
//! proof of it from each side bound to the whole transcript, all within one deadline however
//! the peer paces its bytes.
//!
//! # Sequence
//!
//! Each side, dialer and acceptor alike, at once and in this order:
//!
//! 1. sends its Hello: magic, protocol version (3), device id, flags (bit 0: a key is
//!    required), a fresh 16-byte nonce, its listening port. Sent in clear.
//! 2. reads the peer's Hello and checks it ([`check_hello`]): magic, then version (another
//!    version is refused, naming both, with no fallback), not our own device, the same mind
//!    on a key (a keyed side refuses a Hello without the key flag: a downgrade is refused
//!    here, and would fail the proofs anyway, since they bind the flags), and with a key a
//!    nonce that is not ours echoed. Without a key, the handshake ends here.
//! 3. sends its Auth: its proof of the key, derived over the transcript — both Hellos as
//!    sent, the dialer's first — and its role (see `proto::auth::Transcript`). It is sent
//!    only now because it must bind the peer's Hello: a proof made before seeing the peer's
//!    fresh nonce could be recorded and replayed to anyone, and one that did not bind both
//!    Hellos and the role could be relayed between two key holders by a man in the middle
//!    (forwarding a Hello from another session, or swapping which side dialed).
//! 4. reads the peer's Auth and checks it against the proof the peer's role must give over
//!    the same transcript (compared in constant time). A wrong one ends the connection with
//!    "wrong shared key"; nothing else has been sent.
//!
//! Then each direction has its own key from the same transcript (`proto::seal`): every frame
//! after the handshake is encrypted and authenticated, so the index, requests and data cross
//! only in ciphertext. Anyone may still dial us and get our Hello and our proof: a proof over
//! a known transcript lets them test guesses of a weak key offline, hence random keys of 256
//! bits (`left keygen`) and a warning for short ones.

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::net::frame::read_frame;
use crate::proto::auth;
use crate::proto::seal::Sealer;
use crate::proto::wire::{self, Hello, MAGIC, Msg, PROTOCOL_VERSION};
use crate::sync::model::Model;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame accepted before the peer is authenticated.
const MAX_HANDSHAKE_FRAME: usize = 256;

/// The keys of an authenticated connection: one sealer per direction.
pub struct Session {
    pub send: Sealer,
    pub recv: Sealer,
}

/// What the handshake learned of the peer.
pub struct Handshake {
    pub device: u64,
    /// The port the peer says it listens on.
    pub port: u16,
    pub session: Option<Session>,
}

/// A socket used under one deadline for a whole exchange: before each read or write the time
/// left becomes the socket's timeout, so a peer that trickles bytes cannot stretch it.
struct Deadline<'a> {
    s: &'a TcpStream,
    until: Instant,
}

impl Deadline<'_> {
    fn left(&self) -> std::io::Result<Duration> {
        let d = self.until.saturating_duration_since(Instant::now());
        if d.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        Ok(d)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.s.set_read_timeout(Some(self.left()?))?;
        (&mut &*self.s).read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.s.set_write_timeout(Some(self.left()?))?;
        (&mut &*self.s).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Exchanges hellos (and, with a shared key, proofs of it), all within [`HELLO_TIMEOUT`] however
/// the peer paces its bytes. Both sides must agree on whether a key is used. `dialed`: we
/// initiated the connection.
pub fn handshake(stream: &mut TcpStream, model: &Model, dialed: bool) -> Result<Handshake> {
    let mut io = Deadline {
        s: &*stream,
        until: Instant::now() + HELLO_TIMEOUT,
    };
    handshake_by(&mut io, model, dialed).map_err(|e| match e.io_kind() {
        Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Error::msg(format!(
            "no complete handshake within {} s",
            HELLO_TIMEOUT.as_secs()
        )),
        _ => e,
    })
}

/// The handshake's steps over the socket: our hello, the peer's checked; without a key that is
/// all, with one our proof, the peer's checked. The checks are pure functions (below).
fn handshake_by(io: &mut Deadline<'_>, model: &Model, dialed: bool) -> Result<Handshake> {
    let key = model.key.as_deref();
    let hello = our_hello(model, key.is_some())?;
    let ours = wire::encode(&Msg::Hello(hello.clone()));
    io.write_all(&ours)?;
    let h = hello_of(read_frame(io, None, MAX_HANDSHAKE_FRAME)?)?;
    check_hello(&h, &hello)?;
    let Some(key) = key else {
        return Ok(Handshake {
            device: h.device,
            port: h.port,
            session: None,
        });
    };
    let t = transcript(&ours, &h, dialed);
    io.write_all(&wire::encode(&Msg::Auth {
        proof: t.proof(key, dialed),
    }))?;
    let theirs = proof_of(read_frame(io, None, MAX_HANDSHAKE_FRAME)?)?;
    let session = check_proof(&t, key, dialed, &theirs)?;
    Ok(Handshake {
        device: h.device,
        port: h.port,
        session: Some(session),
    })
}

/// Our hello: our device, a fresh nonce, our port, and whether we hold a key (`keyed`).
fn our_hello(model: &Model, keyed: bool) -> Result<Hello> {
    let device = model.lock().index.device;
    let nonce = auth::random16()?;
    Ok(Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        device,
        flags: if keyed { wire::FLAG_AUTH } else { 0 },
        nonce,
        port: model.port.load(Ordering::Relaxed),
    })
}

/// The hello a frame holds, or why the handshake ends.
fn hello_of(msg: Msg) -> Result<Hello> {
    match msg {
        Msg::Hello(h) => Ok(h),
        _ => Err(Error::protocol("expected a hello")),
    }
}

/// The proof of the key a frame holds, or why the handshake ends.
fn proof_of(msg: Msg) -> Result<Hash> {
    match msg {
        Msg::Auth { proof } => Ok(proof),
        _ => Err(Error::protocol("expected proof of the shared key")),
    }
}

/// Whether the peer's hello `h` lets the handshake go on after ours: a left peer speaking our
/// protocol version, another device, of one mind with us on a shared key, and (with one) a
/// nonce of its own.
fn check_hello(h: &Hello, ours: &Hello) -> Result<()> {
    if h.magic != MAGIC {
        return Err(Error::protocol("not a left peer (bad magic)"));
    }
    if h.version != PROTOCOL_VERSION {
        return Err(Error::protocol(format!(
            "peer speaks protocol version {}, we speak {PROTOCOL_VERSION}: refused, there is no \
             fallback (run the same version of left on both sides)",
            h.version
        )));
    }
    if h.device == ours.device {
        return Err(Error::msg("connected to ourselves"));
    }
    let peer_keyed = h.flags & wire::FLAG_AUTH != 0;
    if ours.flags & wire::FLAG_AUTH == 0 {
        if peer_keyed {
            return Err(Error::msg(
                "the peer requires a shared key (--key-file) and we have none",
            ));
        }
        return Ok(());
    }
    if !peer_keyed {
        return Err(Error::msg(
            "the peer has no shared key configured; refusing an unauthenticated peer",
        ));
    }
    if h.nonce == ours.nonce {
        return Err(Error::protocol("peer echoed our nonce"));
    }
    Ok(())
}

/// Both hellos as they crossed this connection (`ours` as sent, the peer's `h`), the dialer's
/// first. Proofs and session keys bind both hellos (both devices, nonces, ports and flags) and
/// which side dialed: a proof made on another connection (a relay between two key holders) or
/// by the other role (a reflection) does not verify here.
fn transcript(ours: &[u8], h: &Hello, dialed: bool) -> auth::Transcript {
    let theirs = wire::encode(&Msg::Hello(h.clone()));
    if dialed {
        auth::Transcript::new(ours, &theirs)
    } else {
        auth::Transcript::new(&theirs, ours)
    }
}

/// The session's MAC states if the peer's proof `theirs` is the other side's proof of `key` over
/// transcript `t`; otherwise why the handshake ends.
fn check_proof(t: &auth::Transcript, key: &[u8], dialed: bool, theirs: &[u8]) -> Result<Session> {
    if !crate::proto::hmac::same(theirs, &t.proof(key, !dialed)) {
        return Err(Error::msg(
            "wrong shared key: the peer's proof does not verify",
        ));
    }
    Ok(Session {
        send: t.sealer(key, dialed),
        recv: t.sealer(key, !dialed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(device: u64, keyed: bool, nonce: u8) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            device,
            flags: if keyed { wire::FLAG_AUTH } else { 0 },
            nonce: [nonce; 16],
            port: 7000 + device as u16,
        }
    }

    /// What `check_hello` says: `None` to go on, else a part of why not.
    fn verdict(h: &Hello, ours: &Hello) -> Option<String> {
        check_hello(h, ours).err().map(|e| e.to_string())
    }

    #[test]
    fn the_peers_hello_is_checked_in_order() {
        let bad_magic = Hello {
            magic: *b"HTTP",
            version: 1,
            ..hello(2, true, 9)
        };
        let old = Hello {
            version: 1,
            ..hello(2, true, 9)
        };
        // (peer's hello, ours, the refusal expected)
        let table: &[(Hello, Hello, Option<&str>)] = &[
            (hello(2, false, 9), hello(1, false, 8), None),
            (hello(2, true, 9), hello(1, true, 8), None),
            // Without a key the nonces do not matter.
            (hello(2, false, 8), hello(1, false, 8), None),
            // The magic is looked at before anything else, the version next.
            (bad_magic, hello(1, true, 8), Some("bad magic")),
            (
                old,
                hello(1, true, 8),
                Some("protocol version 1, we speak 3: refused, there is no fallback"),
            ),
            (
                hello(1, true, 9),
                hello(1, true, 8),
                Some("connected to ourselves"),
            ),
            (
                hello(1, false, 9),
                hello(1, true, 8),
                Some("connected to ourselves"),
            ),
            (
                hello(2, true, 9),
                hello(1, false, 8),
                Some("requires a shared key"),
            ),
            (
                hello(2, false, 9),
                hello(1, true, 8),
                Some("has no shared key"),
            ),
            (
                hello(2, true, 8),
                hello(1, true, 8),
                Some("echoed our nonce"),
            ),
        ];
        for (i, (h, ours, want)) in table.iter().enumerate() {
            match (verdict(h, ours), want) {
                (None, None) => {}
                (Some(got), Some(want)) => assert!(got.contains(want), "{i}: {got}"),
                (got, want) => panic!("{i}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn only_the_expected_frame_goes_on() {
        let h = hello(2, true, 9);
        assert_eq!(hello_of(Msg::Hello(h.clone())).ok(), Some(h));
        assert_eq!(proof_of(Msg::Auth { proof: [5; 16] }).ok(), Some([5; 16]));
        let table: &[(Msg, bool, &str)] = &[
            (Msg::Auth { proof: [5; 16] }, true, "expected a hello"),
            (Msg::Ping, true, "expected a hello"),
            (Msg::Hello(hello(2, true, 9)), false, "expected proof"),
            (Msg::IndexDone { seq: 1 }, false, "expected proof"),
        ];
        for (msg, want_hello, why) in table {
            let got = if *want_hello {
                hello_of(msg.clone()).err()
            } else {
                proof_of(msg.clone()).err()
            };
            assert!(got.is_some_and(|e| e.to_string().contains(why)), "{msg:?}");
        }
    }

    /// Both sides' transcripts of one connection: the dialer's hello `d`, the acceptor's `a`.
    fn both_sides(d: &Hello, a: &Hello) -> (auth::Transcript, auth::Transcript) {
        let dialer = transcript(&wire::encode(&Msg::Hello(d.clone())), a, true);
        let acceptor = transcript(&wire::encode(&Msg::Hello(a.clone())), d, false);
        (dialer, acceptor)
    }

    #[test]
    fn only_the_other_sides_proof_on_this_connection_verifies() {
        let key = b"shared key".as_slice();
        let (d, a) = (hello(1, true, 8), hello(2, true, 9));
        let (td, ta) = both_sides(&d, &a);
        // Another connection between other hellos (a relay: another nonce).
        let (relayed, _) = both_sides(&hello(1, true, 7), &a);
        let to_acceptor = td.proof(key, true);
        let to_dialer = ta.proof(key, false);
        // (checked by the dialer?, the proof it gets, verifies?)
        let table: &[(bool, Vec<u8>, bool)] = &[
            (true, to_dialer.to_vec(), true),
            (false, to_acceptor.to_vec(), true),
            // Reflected: a side's own proof sent back to it.
            (true, to_acceptor.to_vec(), false),
            (false, to_dialer.to_vec(), false),
            // Made with another key, on another connection, cut short, or none.
            (false, td.proof(b"other key", true).to_vec(), false),
            (false, relayed.proof(key, true).to_vec(), false),
            (false, to_acceptor[..15].to_vec(), false),
            (false, Vec::new(), false),
        ];
        for (i, (by_dialer, proof, ok)) in table.iter().enumerate() {
            let t = if *by_dialer { &td } else { &ta };
            let got = check_proof(t, key, *by_dialer, proof);
            assert_eq!(got.is_ok(), *ok, "{i}");
            if let Err(e) = got {
                assert!(e.to_string().contains("wrong shared key"), "{i}: {e}");
            }
        }
    }

    #[test]
    fn both_sides_agree_on_the_session() {
        let key = b"shared key".as_slice();
        let (d, a) = (hello(1, true, 8), hello(2, true, 9));
        let (td, ta) = both_sides(&d, &a);
        let mut dialer = check_proof(&td, key, true, &ta.proof(key, false)).unwrap();
        let mut acceptor = check_proof(&ta, key, false, &td.proof(key, true)).unwrap();
        let f = dialer.send.seal(vec![0, 0, 0, 1, 7]).unwrap();
        let mut b = f[4..].to_vec();
        assert_eq!(acceptor.recv.open(&mut b).unwrap(), 1);
        assert_eq!(b[0], 7);
        let f = acceptor.send.seal(vec![0, 0, 0, 1, 8]).unwrap();
        let mut b = f[4..].to_vec();
        assert_eq!(dialer.recv.open(&mut b).unwrap(), 1);
        assert_eq!(b[0], 8);
        // A frame is not good in the direction it came from.
        let f = dialer.send.seal(vec![0, 0, 0, 1, 9]).unwrap();
        assert!(dialer.recv.open(&mut f[4..].to_vec()).is_err());
    }
}
