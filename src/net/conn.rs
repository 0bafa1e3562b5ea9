//! One connection to a peer: the hello, then three threads — a reader that decodes frames and
//! routes them, a writer that sends our index, requests and the blocks the peer asks for, and the
//! puller. The reader never writes, so two peers pulling from each other cannot deadlock.

use crate::error::{Context, Error, Result};
use crate::hash::short_id;
use crate::proto::auth::{self, Sealer};
use crate::proto::wire::{self, Hello, MAGIC, Msg, PROTOCOL_VERSION, Request, Status};
use crate::store::codec::{self, Enc};
use crate::store::entry::{Entry, Stat};
use crate::sync::link::Link;
use crate::sync::model::{Model, Out, Peer};
use crate::sync::pool::Pool;
use crate::sync::puller;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer that sends nothing for this long is gone (it pings every `PING_EVERY`).
const READ_TIMEOUT: Duration = Duration::from_secs(90);
const PING_EVERY: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// File data sent to peers since start.
pub static SENT: AtomicU64 = AtomicU64::new(0);
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Largest frame accepted before the peer is authenticated.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// Responses checked together at most (see `read_loop`).
const RESPONSE_BATCH: usize = 16;
/// Bytes of frames being read and decoded by all connections together (a frame decoded takes
/// about twice its size for a moment: its bytes and what they decode into, plus the entries of
/// an index frame, see [`decode_cost`]). A frame larger than [`SMALL_FRAME`] waits for its
/// share, so many peers sending large frames at once cost this much, not that much per
/// connection.
const FRAME_BUDGET: usize = 2 << 20;
/// Frames up to this size are read without waiting (the reader's own buffer is as large).
const SMALL_FRAME: usize = 16 << 10;
/// While another frame waits for the budget, a frame holding a share of it must arrive at
/// least this fast (after [`PACE_GRACE`]), or its connection ends: a peer that sends the start
/// of a large frame and then trickles the rest cannot keep the budget from everyone else.
const MIN_PACE: usize = 128 << 10;
const PACE_GRACE: Duration = Duration::from_secs(2);
/// How often a large frame's reader looks at its pace while it waits for bytes.
const PACE_TICK: Duration = Duration::from_millis(250);

/// The share of [`FRAME_BUDGET`] in use, and how many frames wait for theirs.
struct Budget {
    used: usize,
    waiting: usize,
}

static FRAMES: (std::sync::Mutex<Budget>, std::sync::Condvar) = (
    std::sync::Mutex::new(Budget {
        used: 0,
        waiting: 0,
    }),
    std::sync::Condvar::new(),
);

fn budget() -> std::sync::MutexGuard<'static, Budget> {
    FRAMES.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a frame of `n` bytes may take in memory while it is read and decoded: its bytes, what
/// they decode into (block data, block lists), and the fixed part of each entry an index frame
/// can hold (at most [`wire::MAX_INDEX_ENTRIES`], each at least [`wire::MIN_ENTRY_BYTES`]).
fn decode_cost(n: usize) -> usize {
    let entries = (n / wire::MIN_ENTRY_BYTES).min(wire::MAX_INDEX_ENTRIES);
    2 * n + entries * (std::mem::size_of::<Entry>() + 64)
}

/// A share of [`FRAME_BUDGET`], given back when dropped.
#[derive(Debug)]
struct Permit(usize);

impl Permit {
    /// Waits for the share of a frame of `n` bytes.
    fn take(n: usize) -> Permit {
        if n <= SMALL_FRAME {
            return Permit(0);
        }
        let n = decode_cost(n).min(FRAME_BUDGET);
        let mut b = budget();
        b.waiting += 1;
        while b.used + n > FRAME_BUDGET {
            b = FRAMES.1.wait(b).unwrap_or_else(|p| p.into_inner());
        }
        b.waiting -= 1;
        b.used += n;
        Permit(n)
    }

    /// Whether a frame holding this share may go on arriving at `got` bytes in `took`: yes,
    /// unless another frame waits for the budget and this one is slower than [`MIN_PACE`].
    fn paced(&self, got: usize, took: Duration) -> bool {
        self.0 == 0
            || took < PACE_GRACE
            || got as f64 >= took.as_secs_f64() * MIN_PACE as f64
            || budget().waiting == 0
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.0 > 0 {
            budget().used -= self.0;
            FRAMES.1.notify_all();
        }
    }
}

/// Reads one frame: the length is checked against `max` before the body is allocated; with a
/// session, the frame's MAC is checked and stripped before it is decoded.
pub fn read_frame(r: &mut impl Read, session: Option<&mut Sealer>, max: usize) -> Result<Msg> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h)?;
    let n = wire::frame_len(h)?;
    if n > max {
        return Err(Error::protocol(format!(
            "frame of {n} bytes is over the {max} allowed here"
        )));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)?;
    open_and_decode(body, session)
}

/// Checks and strips a frame's MAC (with a session), then decodes it.
fn open_and_decode(mut body: Vec<u8>, session: Option<&mut Sealer>) -> Result<Msg> {
    if let Some(s) = session {
        let n = s.open(&body)?.len();
        body.truncate(n);
    }
    wire::decode(body)
}

/// Reads frames off a socket. Small frames come out of one buffer; the bulk of a large one (a
/// block) is read straight into its own allocation, so block data is copied once from the
/// kernel and never again.
struct FrameReader<R> {
    inner: R,
    /// The socket `inner` reads, polled while a large frame arrives (none in tests).
    fd: Option<std::os::fd::RawFd>,
    pool: Pool,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl<R: Read> FrameReader<R> {
    fn new(inner: R, pool: Pool) -> Self {
        FrameReader {
            inner,
            fd: None,
            pool,
            buf: vec![0; 16 << 10],
            pos: 0,
            end: 0,
        }
    }

    /// Reads more into the buffer, after what it holds.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether bytes of the next frame are buffered already.
    fn buffered(&self) -> bool {
        self.end > self.pos
    }

    /// Takes `n` bytes that fit in the buffer.
    fn take_into(&mut self, body: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
        while self.end - self.pos < n {
            self.fill()?;
        }
        body.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(())
    }

    /// [`FrameReader::body_vetted`] with nothing to vet (tests).
    #[cfg(test)]
    fn body(&mut self, max: usize) -> Result<(Vec<u8>, Permit)> {
        self.body_vetted(max, |_, _| Ok(()))
    }

    /// The next frame's body; its length is checked against `max` before anything is
    /// allocated, and a large one is shown to `vet` (its length and first bytes), then waits
    /// for its share of [`FRAME_BUDGET`] (kept until the permit is dropped).
    fn body_vetted(
        &mut self,
        max: usize,
        vet: impl FnOnce(usize, &[u8]) -> Result<()>,
    ) -> Result<(Vec<u8>, Permit)> {
        let mut h = Vec::with_capacity(4);
        self.take_into(&mut h, 4)?;
        let n = wire::frame_len([h[0], h[1], h[2], h[3]])?;
        if n > max {
            return Err(Error::protocol(format!(
                "frame of {n} bytes is over the {max} allowed here"
            )));
        }
        if n > SMALL_FRAME {
            while self.end - self.pos < wire::RESPONSE_BODY_HEADER {
                self.fill()?;
            }
            vet(n, &self.buf[self.pos..self.end])?;
        }
        let permit = Permit::take(n);
        let mut body = self.pool.take(n);
        let have = (self.end - self.pos).min(n);
        self.take_into(&mut body, have)?;
        let rest = n - have;
        if rest < self.buf.len() {
            self.take_into(&mut body, rest)?;
        } else {
            self.read_paced(&mut body, n, &permit)?;
        }
        Ok((body, permit))
    }

    /// Reads the rest of a large frame straight into `body`, up to `n` bytes. The frame holds
    /// its share of the budget meanwhile: it must keep its pace ([`Permit::paced`]), and bytes
    /// must keep coming within [`READ_TIMEOUT`].
    fn read_paced(&mut self, body: &mut Vec<u8>, n: usize, permit: &Permit) -> Result<()> {
        let (start, mut last) = (Instant::now(), Instant::now());
        let mut got = body.len();
        body.resize(n, 0);
        while got < n {
            // The pace is looked at whether or not bytes came: a trickle of a byte now and then
            // must not keep the frame from being weighed.
            if self.fd.is_some() && !permit.paced(got, start.elapsed()) {
                return Err(Error::protocol(format!(
                    "a frame of {n} bytes arriving at {} B/s while others wait for memory",
                    (got as f64 / start.elapsed().as_secs_f64()) as u64
                )));
            }
            if let Some(fd) = self.fd
                && !crate::sys::watch::readable(fd, PACE_TICK)
            {
                if last.elapsed() >= READ_TIMEOUT {
                    return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
                }
                continue;
            }
            match self.inner.read(&mut body[got..]) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Ok(k) => {
                    got += k;
                    last = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

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

/// Runs a connection after its handshake until it closes. `dialed`: we initiated it.
/// `dialed`: we made the connection; `listed`: it is with one of the listed peers' addresses
/// (we dialed one, or it came from one).
pub fn run(
    model: &Arc<Model>,
    stream: TcpStream,
    hs: Handshake,
    dialed: bool,
    listed: bool,
) -> Result<()> {
    let device = hs.device;
    let (send, recv) = match hs.session {
        Some(s) => (Some(s.send), Some(s.recv)),
        None => (None, None),
    };
    let addr = stream.peer_addr()?;
    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (out_tx, out_rx) = mpsc::channel::<Out>();
    let (resp_tx, resp_rx) = mpsc::channel::<crate::sync::link::Answer>();
    let asked = Arc::new(AtomicUsize::new(0));
    let lengths = std::sync::Mutex::new(HashMap::new());
    register(
        model,
        id,
        Peer {
            device,
            addr,
            listen: SocketAddr::new(addr.ip(), hs.port),
            dialed,
            listed,
            since: Instant::now(),
            out: out_tx.clone(),
            stream: stream.try_clone()?,
            needs: model.new_needs(),
            retry: BTreeMap::new(),
            remote_done: false,
            remote_seq: 0,
            pass_open: false,
            peer_in_sync: 0,
            sent_in_sync: None,
            pulling: false,
            progress: None,
            last_in_sync: None,
            shown_in_sync: false,
        },
    )?;
    info!(
        "connected to {addr} (device {}, {})",
        short_id(device),
        if dialed { "dialed" } else { "accepted" }
    );
    let pending = Arc::new(AtomicUsize::new(0));
    let pool = Pool::default();
    let result = std::thread::scope(|s| {
        let w_stream = stream.try_clone()?;
        let w_pending = pending.clone();
        let w_lengths = &lengths;
        let writer = s.spawn(move || {
            let w = FrameWriter {
                w: BufWriter::with_capacity(64 << 10, w_stream),
                seal: send,
                lengths: w_lengths,
            };
            let r = write_loop(model, w, out_rx, &w_pending);
            if let Err(e) = &r {
                debug!("writer to {addr}: {e}");
            }
            r
        });
        let p_out = out_tx.clone();
        let p_asked = asked.clone();
        let p_pool = pool.clone();
        let p_stream = stream.try_clone()?;
        let puller = s.spawn(move || {
            let link = Link {
                model,
                conn: id,
                out: p_out,
                responses: resp_rx,
                asked: p_asked,
                pool: p_pool,
            };
            let r = puller::run(&link);
            // A connection that cannot pull is closed, so it is dialed again rather than left
            // half alive.
            if let Err(e) = &r {
                info!("pulling from {addr} stopped: {e}; closing the connection");
            }
            let _ = p_stream.shutdown(Shutdown::Both);
            r
        });
        let routes = Routes {
            out: &out_tx,
            responses: &resp_tx,
            pending: &pending,
            asked: &asked,
            lengths: &lengths,
            pool: &pool,
        };
        let r = read_loop(model, id, &stream, recv, &routes);
        // Whatever ended the connection, end the other threads too.
        unregister(model, id);
        let _ = stream.shutdown(Shutdown::Both);
        drop(resp_tx);
        drop(out_tx);
        let _ = writer.join();
        let p = puller.join();
        match (r, p) {
            (Err(e), _) => Err(e),
            (_, Ok(Err(e))) => Err(e),
            _ => Ok(()),
        }
    });
    result.at(addr.to_string())
}

/// Adds a connection. Of two connections to one device (both sides dialed), the one dialed by
/// the smaller device id stays: both ends pick the same one.
fn register(model: &Model, id: u64, peer: Peer) -> Result<()> {
    let mut g = model.lock();
    let me = g.index.device;
    let dialer = |p: &Peer| if p.dialed { me } else { p.device };
    // Of two connections claiming one device, one with a listed peer's address beats one
    // allowed only by --allow (without a key a device id proves nothing: an allowed client
    // claiming a listed peer's device must not keep that peer out); then the one dialed by
    // the smaller device id stays.
    let rank = |p: &Peer| (!p.listed, dialer(p));
    if let Some((&old_id, old)) = g.peers.iter().find(|(_, p)| p.device == peer.device) {
        let keep_old = rank(old) <= rank(&peer);
        if keep_old {
            return Err(Error::msg(format!(
                "already connected to device {}",
                short_id(peer.device)
            )));
        }
        let _ = old.stream.shutdown(Shutdown::Both);
        g.peers.remove(&old_id);
    }
    // Whichever side dialed, the configured peer at this address is now up. The address and
    // port in a hello prove nothing, so a device learned is never replaced this way: only a
    // connection the dialer made itself tells it which device is there (and only that keeps
    // it from dialing, see `daemon::dial_loop`).
    for d in g
        .dialers
        .values_mut()
        .filter(|d| d.device.is_none_or(|dev| dev == peer.device) && d.addrs.contains(&peer.listen))
    {
        d.device = Some(peer.device);
        d.down_since = None;
        d.last_error = None;
    }
    g.peers.insert(id, peer);
    model.changed.notify_all();
    Ok(())
}

/// Removes a closed connection, remembering whether it ended in sync (a `--once` peer leaves as
/// soon as it is done).
fn unregister(model: &Model, id: u64) {
    let mut g = model.lock();
    let seq = g.index.seq;
    if let Some(p) = g.peers.remove(&id) {
        if p.in_sync(seq) {
            g.synced.insert(p.device, seq);
        }
        let still = g.peers.values().any(|q| q.device == p.device);
        for d in g
            .dialers
            .values_mut()
            .filter(|d| d.device == Some(p.device) && !still)
        {
            d.down_since.get_or_insert_with(Instant::now);
        }
    }
    model.changed.notify_all();
}

/// Where the reader sends what it decodes, with the counts that keep a peer's frames bounded.
struct Routes<'a> {
    out: &'a mpsc::Sender<Out>,
    responses: &'a mpsc::Sender<crate::sync::link::Answer>,
    /// The peer's requests waiting for our writer.
    pending: &'a AtomicUsize,
    /// Our requests waiting for the peer's answer.
    asked: &'a AtomicUsize,
    /// What each of them asked for, by id: an answer may hold no more.
    lengths: &'a std::sync::Mutex<HashMap<u32, usize>>,
    pool: &'a Pool,
}

fn read_loop(
    model: &Model,
    id: u64,
    stream: &TcpStream,
    mut session: Option<Sealer>,
    routes: &Routes<'_>,
) -> Result<()> {
    let Routes {
        out,
        responses,
        pending,
        asked,
        ..
    } = *routes;
    let mut r = FrameReader::new(stream, routes.pool.clone());
    r.fd = Some(stream.as_raw_fd());
    let queue = |job: Out| -> Result<()> {
        if pending.fetch_add(1, Ordering::AcqRel) >= wire::MAX_REQUESTS {
            return Err(Error::protocol("too many outstanding requests"));
        }
        out.send(job).map_err(|_| Error::msg("connection closing"))
    };
    // Responses are checked in batches, their MD5s side by side (md5x): a batch takes what has
    // arrived and is handed on before the reader waits for more.
    let most = crate::hash::md5x::lanes().min(RESPONSE_BATCH);
    let mut batch: Vec<wire::Response> = Vec::with_capacity(most);
    let mut sums = Vec::with_capacity(most);
    let fd = stream.as_raw_fd();
    loop {
        if !batch.is_empty()
            && (batch.len() >= most
                || !(r.buffered() || crate::sys::watch::readable(fd, Duration::ZERO)))
        {
            let block = |r: &wire::Response| r.id & crate::proto::wire::NOT_A_BLOCK == 0;
            let data: Vec<&[u8]> = batch
                .iter()
                .filter(|r| block(r))
                .map(|r| &r.data[..])
                .collect();
            sums.clear();
            crate::hash::md5x::md5_each(&data, &mut sums);
            let mut sums = sums.iter().copied();
            for resp in batch.drain(..) {
                let md5 = if block(&resp) { sums.next() } else { None };
                let _ = responses.send(crate::sync::link::Answer { r: resp, md5 });
            }
        }
        // The frame's share of the budget is held until it has been handled.
        // A large answer is weighed against what its request asked for before it is read.
        let vet = |n: usize, head: &[u8]| match wire::response_id(head) {
            Some(rid) => {
                let asked = routes
                    .lengths
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&rid)
                    .copied();
                match asked {
                    Some(len) if n <= len + wire::RESPONSE_BODY_HEADER + auth::MAC_LEN => Ok(()),
                    _ => Err(Error::protocol(format!(
                        "an answer of {n} bytes to a request for {} at most",
                        asked.unwrap_or(0)
                    ))),
                }
            }
            None => Ok(()),
        };
        let (msg, permit) = match r
            .body_vetted(wire::MAX_FRAME, vet)
            .and_then(|(b, p)| Ok((open_and_decode(b, session.as_mut())?, p)))
        {
            Ok(m) => m,
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::UnexpectedEof) => return Ok(()),
            Err(e) => return Err(e),
        };
        match msg {
            Msg::Hello(_) | Msg::Auth { .. } => {
                return Err(Error::protocol("handshake frame after the handshake"));
            }
            Msg::Index { seq, entries } => {
                let before = model.lock().index.over_bytes();
                model.remote_entries(id, seq, entries)?;
                let grew = model.lock().index.over_bytes().saturating_sub(before);
                // The frame is handled: its share of the budget goes back before any pause.
                drop(permit);
                model.fold_if_due(grew);
            }
            Msg::IndexDone { seq } => {
                let mut g = model.lock();
                if let Some(p) = g.peers.get_mut(&id) {
                    p.remote_done = true;
                    p.remote_seq = p.remote_seq.max(seq);
                }
                model.changed.notify_all();
            }
            Msg::Request(req) => queue(Out::Serve(req))?,
            Msg::SubHashes(req) => queue(Out::ServeSubs(req))?,
            Msg::Ping => {}
            Msg::Response(resp) => {
                // Only as many responses as we asked for, each no larger than what it answers,
                // are queued: memory stays bounded by what we asked for.
                let len = routes
                    .lengths
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&resp.id);
                if len.is_none()
                    || asked
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_err()
                {
                    return Err(Error::protocol("a response nobody asked for"));
                }
                if len.is_some_and(|n| resp.data.len() > n) {
                    return Err(Error::protocol(format!(
                        "a response of {} bytes where {} at most were asked for",
                        resp.data.len(),
                        len.unwrap_or(0)
                    )));
                }
                batch.push(resp);
            }
            Msg::InSync { seq } => {
                let mut g = model.lock();
                if let Some(p) = g.peers.get_mut(&id) {
                    p.peer_in_sync = p.peer_in_sync.max(seq);
                }
                model.changed.notify_all();
            }
            Msg::Unknown(t) => debug!("skipped a frame of unknown type {t}"),
        }
    }
}

/// Writes frames, sealing each with a MAC when the connection is authenticated.
struct FrameWriter<'a> {
    w: BufWriter<TcpStream>,
    seal: Option<Sealer>,
    /// The length each of our requests asks for, by id (see [`Routes`]).
    lengths: &'a std::sync::Mutex<HashMap<u32, usize>>,
}

impl FrameWriter<'_> {
    /// Sends a frame; gives it back, to be reused. A request's length is noted first: its
    /// answer can only come after it is sent.
    fn send(&mut self, frame: Vec<u8>) -> Result<Vec<u8>> {
        if let Some((id, len)) = wire::request_of(&frame) {
            self.lengths
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, len);
        }
        let frame = match &mut self.seal {
            Some(s) => s.seal(frame),
            None => frame,
        };
        self.w.write_all(&frame)?;
        Ok(frame)
    }

    fn flush(&mut self) -> Result<()> {
        Ok(self.w.flush()?)
    }
}

fn write_loop(
    model: &Model,
    mut w: FrameWriter<'_>,
    rx: mpsc::Receiver<Out>,
    pending: &AtomicUsize,
) -> Result<()> {
    let mut sent_seq = 0u64;
    let mut open: Option<(String, Stat, File)> = None;
    // The index's entry of the file last served.
    let mut known: Option<Entry> = None;
    let mut buf = Vec::new();
    // The frame that carries blocks, reused.
    let mut frame = Vec::new();
    // IndexDone waits for our first scan: before it, our index may lack what is on disk.
    let mut done_sent = false;
    sent_seq = announce(model, &mut w, sent_seq)?;
    if model.lock().scanned {
        w.send(wire::encode(&Msg::IndexDone { seq: sent_seq }))?;
        done_sent = true;
    }
    w.flush()?;
    loop {
        let job = match rx.recv_timeout(PING_EVERY) {
            Ok(j) => j,
            Err(mpsc::RecvTimeoutError::Timeout) => Out::Frame(wire::encode(&Msg::Ping)),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let mut next = Some(job);
        while let Some(job) = next {
            let subs = matches!(job, Out::ServeSubs(_));
            match job {
                Out::Frame(f) => {
                    w.send(f)?;
                }
                Out::Announce => {
                    sent_seq = announce(model, &mut w, sent_seq)?;
                    if !done_sent && model.lock().scanned {
                        w.send(wire::encode(&Msg::IndexDone { seq: sent_seq }))?;
                        done_sent = true;
                    }
                }
                Out::Flush(ack) => {
                    w.flush()?;
                    let _ = ack.send(());
                }
                Out::Serve(req) | Out::ServeSubs(req) => {
                    let f = serve(model, &req, subs, (&mut open, &mut known), &mut buf, frame);
                    pending.fetch_sub(1, Ordering::AcqRel);
                    let data = f.len() - wire::RESPONSE_HEADER;
                    SENT.fetch_add(data as u64, Ordering::Relaxed);
                    frame = w.send(f)?;
                }
            }
            next = rx.try_recv().ok();
        }
        w.flush()?;
    }
}

/// Sends every entry changed after `sent`, up to the index's sequence number when called, in
/// frames of bounded size; returns the new mark. Entries are encoded under the lock a batch at
/// a time and written without it.
fn announce(model: &Model, w: &mut FrameWriter<'_>, sent: u64) -> Result<u64> {
    // Walks only what changed: entries in memory by number, then those of the base file by
    // path (the base holds numbers past `sent` only after it was rewritten). An entry changed
    // during the pass gets a new number past `top`, and the change queued another announce: it
    // goes in the next pass, so that block requests queued meanwhile are served between passes,
    // not after a whole first scan of the share.
    let top = model.lock().index.seq;
    let mut at = crate::store::index::Pass::Over(sent);
    loop {
        let (n, body) = {
            let g = model.lock();
            let mut e = Enc::default();
            let mut n = 0u32;
            g.index.changed(sent, top, &mut at, |x| {
                codec::put_entry(&mut e, x);
                n += 1;
                e.0.len() < wire::INDEX_BATCH && (n as usize) < wire::MAX_INDEX_ENTRIES
            });
            (n, e.0)
        };
        let done = at == crate::store::index::Pass::Done;
        if n > 0 || (done && top > sent) {
            // Only the last frame of a pass carries the sequence number it completes.
            w.send(wire::index_frame(if done { top } else { 0 }, n, &body))?;
        }
        if done {
            return Ok(top);
        }
    }
}

/// Answers a request from our files: only live files of the index, never through a symlink,
/// and only while the file's stat is still the one it was hashed with (the receiver verifies
/// every block anyway). A request names a block by its hash, or (with [`wire::ANY_HASH`]) any
/// range of at most one block; with `subs`, the answer is the rolling checksum and XXH64 of each
/// sub-block of the block.
fn serve(
    model: &Model,
    req: &Request,
    subs: bool,
    (open, known): (&mut Option<(String, Stat, File)>, &mut Option<Entry>),
    buf: &mut Vec<u8>,
    frame: Vec<u8>,
) -> Vec<u8> {
    let fail = |frame, status| wire::response_frame(frame, req.id, status, 0);
    let stat = {
        // The entry is read from the index again only when its number or stat changed: a
        // big file's block list is read from the index file otherwise, for every request.
        let g = model.lock();
        let now = g.index.seq_stat(&req.path);
        if known
            .as_ref()
            .is_none_or(|e| e.path != req.path || now != Some((e.seq, e.stat)))
        {
            *known = now
                .and(g.index.get(&req.path))
                .map(std::borrow::Cow::into_owned);
        }
        drop(g);
        let any = req.hash == wire::ANY_HASH && !subs;
        known
            .as_ref()
            .filter(|e| e.holds(req.offset, req.len, &req.hash, any))
            .map(|e| e.stat)
    };
    let Some(stat) = stat else {
        return fail(frame, Status::Changed);
    };
    // The file kept open is reused only for the version the index describes: a file replaced
    // under the same name (saved by rename, deleted and made again) is opened anew.
    if open
        .as_ref()
        .is_none_or(|(p, st, _)| *p != req.path || *st != stat)
    {
        *open = None;
        match crate::sys::open::open_in(&model.root, &req.path, crate::sys::open::Open::Read) {
            Ok(f) => *open = Some((req.path.clone(), stat, f)),
            // A symlink on the way, or in the file's place.
            Err(e) if e.raw_os_error() == Some(crate::sys::open::ELOOP) => {
                return fail(frame, Status::Failed);
            }
            Err(_) => return fail(frame, Status::Changed),
        }
    }
    let Some((_, _, f)) = open.as_ref() else {
        return fail(frame, Status::Failed);
    };
    if !f.metadata().is_ok_and(|m| Stat::of(&m) == stat) {
        *open = None;
        return fail(frame, Status::Changed);
    }
    let (len, h) = (req.len as usize, wire::RESPONSE_HEADER);
    if subs {
        buf.resize(len, 0);
        if f.read_exact_at(buf, req.offset).is_err() {
            *open = None;
            return fail(frame, Status::Changed);
        }
        let n = crate::proto::wire::SUB_HASH_BYTES;
        let mut frame =
            wire::response_frame(frame, req.id, Status::Ok, len.div_ceil(wire::SUB_BLOCK) * n);
        for (k, c) in buf.chunks(wire::SUB_BLOCK).enumerate() {
            let sub = crate::sync::delta::Sub::of(c);
            let at = h + n * k;
            frame[at..at + 4].copy_from_slice(&sub.weak.to_be_bytes());
            frame[at + 4..at + n].copy_from_slice(&sub.strong.to_be_bytes());
        }
        frame
    } else {
        // The block is read straight into the frame that carries it.
        let mut frame = wire::response_frame(frame, req.id, Status::Ok, len);
        if f.read_exact_at(&mut frame[h..], req.offset).is_err() {
            *open = None;
            return fail(frame, Status::Changed);
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_keeps_its_pace_only_while_others_wait() {
        let p = Permit(1 << 20);
        let slow = Duration::from_secs(10);
        // Alone, a slow frame may take its time; under the grace period, any frame may.
        assert!(p.paced(1, slow));
        budget().waiting += 1;
        let paced = (p.paced(1, slow), p.paced(1, PACE_GRACE / 2));
        let fast = p.paced(10 * MIN_PACE, slow);
        budget().waiting -= 1;
        assert_eq!(paced, (false, true));
        assert!(fast);
        // A small frame holds nothing of the budget.
        assert!(Permit(0).paced(0, slow));
        std::mem::forget(p);
    }

    #[test]
    fn a_large_answer_is_weighed_before_it_is_read() {
        let big = wire::encode(&Msg::Response(crate::proto::wire::Response {
            id: 7,
            status: Status::Ok,
            data: vec![3; 100_000],
        }));
        let mut r = FrameReader::new(&big[..], Pool::default());
        let mut seen = None;
        let got = r.body_vetted(wire::MAX_FRAME, |n, head| {
            seen = Some((n, wire::response_id(head)));
            Err(Error::protocol("larger than asked"))
        });
        assert!(got.is_err());
        assert_eq!(seen, Some((big.len() - 4, Some(7))));
        // Small frames are not shown (they are checked once decoded); other frames have no id.
        let ping = wire::encode(&Msg::Ping);
        let mut r = FrameReader::new(&ping[..], Pool::default());
        assert!(
            r.body_vetted(wire::MAX_FRAME, |_, _| unreachable!())
                .is_ok()
        );
        assert_eq!(wire::response_id(&ping[4..]), None);
    }

    #[test]
    fn what_a_frame_may_decode_into_is_bounded() {
        // Tiny entries: more than twice the frame.
        assert!(decode_cost(64 << 10) > 3 * (64 << 10));
        // A frame of the largest size costs about twice: its count of entries is bounded.
        assert!(decode_cost(wire::MAX_FRAME) < 2 * wire::MAX_FRAME + (1 << 20));
    }

    /// Hands out a byte stream a few bytes at a time, in a varying rhythm, like a socket.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.step = self.step % 7919 + 1;
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn frame_reader_splits_any_rhythm_into_frames() {
        let block: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let msgs = vec![
            Msg::Ping,
            Msg::Response(crate::proto::wire::Response {
                id: 1,
                status: Status::Ok,
                data: block.clone(),
            }),
            Msg::InSync { seq: 9 },
            Msg::Response(crate::proto::wire::Response {
                id: 2,
                status: Status::Ok,
                data: block[..20_000].to_vec(),
            }),
            Msg::Response(crate::proto::wire::Response {
                id: 3,
                status: Status::Changed,
                data: Vec::new(),
            }),
        ];
        let data: Vec<u8> = msgs.iter().flat_map(wire::encode).collect();
        for step in [1, 100, 5000, 16 << 10] {
            let trickle = Trickle {
                data: data.clone(),
                pos: 0,
                step,
            };
            let mut r = FrameReader::new(trickle, Pool::default());
            for m in &msgs {
                let (body, _) = r.body(wire::MAX_FRAME).unwrap();
                assert_eq!(&open_and_decode(body, None).unwrap(), m);
            }
            let end = r.body(wire::MAX_FRAME).unwrap_err();
            assert_eq!(end.io_kind(), Some(std::io::ErrorKind::UnexpectedEof));
        }
        // A length over the limit is refused before anything is read or allocated.
        let mut r = FrameReader::new(&[0u8, 0x10, 0, 0, 7][..], Pool::default());
        assert!(r.body(4096).is_err());
        // A frame cut short is an error, not a short frame.
        let cut = wire::encode(&msgs[1]);
        let mut r = FrameReader::new(&cut[..cut.len() - 1], Pool::default());
        assert!(r.body(wire::MAX_FRAME).is_err());
    }
}
