//! The handshake: hellos (magic, version, device, nonce, port), then with a shared key a proof
//! of it from each side bound to both hellos, all within one deadline however the peer paces
//! its bytes.

use crate::error::{Error, Result};
use crate::net::frame::read_frame;
use crate::proto::auth::{self, Sealer};
use crate::proto::wire::{self, Hello, MAGIC, Msg, PROTOCOL_VERSION};
use crate::sync::model::Model;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame accepted before the peer is authenticated.
const MAX_HANDSHAKE_FRAME: usize = 256;

/// MAC state of an authenticated connection: one sealer per direction.
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

fn handshake_by(io: &mut Deadline<'_>, model: &Model, dialed: bool) -> Result<Handshake> {
    let device = model.lock().index.device;
    let key = model.key.as_deref();
    let nonce = auth::random16()?;
    let flags = if key.is_some() { wire::FLAG_AUTH } else { 0 };
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        device,
        flags,
        nonce,
        port: model.port.load(Ordering::Relaxed),
    };
    let ours = wire::encode(&Msg::Hello(hello));
    io.write_all(&ours)?;
    let h = match read_frame(io, None, MAX_HANDSHAKE_FRAME)? {
        Msg::Hello(h) => h,
        _ => return Err(Error::protocol("expected a hello")),
    };
    if h.magic != MAGIC {
        return Err(Error::protocol("not a left peer (bad magic)"));
    }
    if h.version != PROTOCOL_VERSION {
        return Err(Error::protocol(format!(
            "peer speaks protocol version {}, we speak {PROTOCOL_VERSION}",
            h.version
        )));
    }
    if h.device == device {
        return Err(Error::msg("connected to ourselves"));
    }
    let Some(key) = key else {
        if h.flags & wire::FLAG_AUTH != 0 {
            return Err(Error::msg(
                "the peer requires a shared key (--key-file) and we have none",
            ));
        }
        return Ok(Handshake {
            device: h.device,
            port: h.port,
            session: None,
        });
    };
    if h.flags & wire::FLAG_AUTH == 0 {
        return Err(Error::msg(
            "the peer has no shared key configured; refusing an unauthenticated peer",
        ));
    }
    if h.nonce == nonce {
        return Err(Error::protocol("peer echoed our nonce"));
    }
    // Proofs and session keys bind both hellos as they crossed this connection (both devices,
    // nonces, ports and flags) and which side dialed: a proof made on another connection (a
    // relay between two key holders) or by the other role (a reflection) does not verify here.
    let theirs_bytes = wire::encode(&Msg::Hello(h.clone()));
    let t = if dialed {
        auth::Transcript::new(&ours, &theirs_bytes)
    } else {
        auth::Transcript::new(&theirs_bytes, &ours)
    };
    io.write_all(&wire::encode(&Msg::Auth {
        proof: t.proof(key, dialed),
    }))?;
    let theirs = match read_frame(io, None, MAX_HANDSHAKE_FRAME)? {
        Msg::Auth { proof } => proof,
        _ => return Err(Error::protocol("expected proof of the shared key")),
    };
    if !auth::same(&theirs, &t.proof(key, !dialed)) {
        return Err(Error::msg(
            "wrong shared key: the peer's proof does not verify",
        ));
    }
    let session = Session {
        send: t.sealer(key, dialed),
        recv: t.sealer(key, !dialed),
    };
    Ok(Handshake {
        device: h.device,
        port: h.port,
        session: Some(session),
    })
}
