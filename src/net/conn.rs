//! One connection to a peer after its handshake: three threads — a reader that decodes frames
//! and routes them, a writer that sends our index, requests and the blocks the peer asks for,
//! and the puller. The reader never writes, so two peers pulling from each other cannot
//! deadlock. Registration decides which of two connections to one device stays.

use crate::error::{Context, Error, Result};
use crate::hash::short_id;
use crate::net::announce::announce;
use crate::net::frame::{FrameReader, FrameWriter, Permit, READ_TIMEOUT, open_and_decode};
use crate::net::handshake::Handshake;
use crate::net::serve::serve;
use crate::proto::aead;
use crate::proto::seal::Sealer;
use crate::proto::wire::{self, Msg};
use crate::store::entry::{Entry, Stat};
use crate::sync::link::Link;
use crate::sync::model::{Model, Out, Peer};
use crate::sync::pool::Pool;
use crate::sync::puller;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PING_EVERY: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// File data sent to peers since start.
pub static SENT: AtomicU64 = AtomicU64::new(0);
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Responses checked together at most (see `read_loop`).
const RESPONSE_BATCH: usize = 16;

/// Runs a connection after its handshake until it closes: registers it, then runs its threads.
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
    let addr = set_up(&stream)?;
    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (out_tx, out_rx) = mpsc::channel::<Out>();
    let peer = Peer {
        listen: SocketAddr::new(addr.ip(), hs.port),
        dialed,
        listed,
        ..new_peer(model, device, addr, out_tx.clone(), stream.try_clone()?)
    };
    register(model, id, peer)?;
    log_connected(addr, device, dialed);
    run_threads(model, id, &stream, addr, (send, recv), (out_tx, out_rx)).at(addr.to_string())
}

/// Sets the socket's options; returns the peer's address (an IPv4 one as such, not mapped).
fn set_up(stream: &TcpStream) -> Result<SocketAddr> {
    let addr = stream.peer_addr()?;
    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    Ok(addr)
}

/// Logs a new connection, within limits.
fn log_connected(addr: SocketAddr, device: u64, dialed: bool) {
    // A client that connects again and again must not fill the log: 50 lines in 10 s.
    static CONNECTED: crate::log::Throttle = crate::log::Throttle::new(Duration::from_secs(10), 50);
    if let Some(more) = CONNECTED.pass() {
        info!(
            "connected to {addr} (device {}, {}){more}",
            short_id(device),
            if dialed { "dialed" } else { "accepted" }
        );
    }
}

/// Runs the writer and the puller beside the reader (this thread) until the reader ends, then
/// unregisters the connection and ends the other two. `(send, recv)`: the MAC states of both
/// directions; `(out_tx, out_rx)`: the writer's queue.
fn run_threads(
    model: &Arc<Model>,
    id: u64,
    stream: &TcpStream,
    addr: SocketAddr,
    (send, recv): (Option<Sealer>, Option<Sealer>),
    (out_tx, out_rx): (mpsc::Sender<Out>, mpsc::Receiver<Out>),
) -> Result<()> {
    let (resp_tx, resp_rx) = mpsc::channel::<crate::sync::link::Answer>();
    let asked = Arc::new(AtomicUsize::new(0));
    let lengths = std::sync::Mutex::new(HashMap::new());
    let pending = Arc::new(AtomicUsize::new(0));
    let pool = Pool::default();
    // Both handles made before any thread starts: one failing (out of descriptors) after the
    // writer started would leave it waiting on a queue no one closes, and the peer registered
    // for good (counted as connected, never dialed again).
    let clones = stream
        .try_clone()
        .and_then(|w| Ok((w, stream.try_clone()?)));
    let (w_stream, p_stream) = match clones {
        Ok(c) => c,
        Err(e) => {
            unregister(model, id);
            let _ = stream.shutdown(Shutdown::Both);
            return Err(e.into());
        }
    };
    std::thread::scope(|s| {
        let w_pending = pending.clone();
        let w_lengths = &lengths;
        let writer = s.spawn(move || {
            let w = FrameWriter::new(w_stream, send, w_lengths);
            let r = write_loop(model, w, out_rx, &w_pending);
            if let Err(e) = &r {
                debug!("writer to {addr}: {e}");
            }
            r
        });
        let link = Link {
            model,
            conn: id,
            out: out_tx.clone(),
            responses: resp_rx,
            asked: asked.clone(),
            pool: pool.clone(),
        };
        let puller = s.spawn(move || pull(&link, addr, &p_stream));
        let routes = Routes {
            out: &out_tx,
            responses: &resp_tx,
            pending: &pending,
            asked: &asked,
            lengths: &lengths,
            pool: &pool,
        };
        let r = read_loop(model, id, stream, recv, &routes);
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
    })
}

/// A connection's state in the model, as it starts.
fn new_peer(
    model: &Model,
    device: u64,
    addr: SocketAddr,
    out: mpsc::Sender<Out>,
    stream: TcpStream,
) -> Peer {
    Peer {
        device,
        addr,
        listen: addr,
        dialed: false,
        listed: false,
        since: Instant::now(),
        out,
        stream,
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
    }
}

/// The connection's puller. A connection that cannot pull is closed, so it is dialed again
/// rather than left half alive.
fn pull(link: &Link<'_>, addr: SocketAddr, stream: &TcpStream) -> Result<()> {
    let r = puller::run(link);
    if let Err(e) = &r {
        info!("pulling from {addr} stopped: {e}; closing the connection");
    }
    let _ = stream.shutdown(Shutdown::Both);
    r
}

/// The device that dialed connection `p` (`me`: this one).
pub fn dialer(p: &Peer, me: u64) -> u64 {
    if p.dialed { me } else { p.device }
}

/// Adds a connection. Of two connections to one device (both sides dialed), the one dialed by
/// the smaller device id stays: both ends pick the same one.
fn register(model: &Model, id: u64, peer: Peer) -> Result<()> {
    let mut g = model.lock();
    let me = g.index.device;
    let dialer = |p: &Peer| dialer(p, me);
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

/// Reads the peer's frames until the connection ends and routes each (see `route`); answers
/// are handed to the puller in batches.
fn read_loop(
    model: &Model,
    id: u64,
    stream: &TcpStream,
    mut session: Option<Sealer>,
    routes: &Routes<'_>,
) -> Result<()> {
    let mut r = FrameReader::on_socket(stream, routes.pool.clone());
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
            hand_on(&mut batch, &mut sums, routes.responses);
        }
        let Some((msg, permit)) = next_frame(&mut r, session.as_mut(), routes)? else {
            return Ok(());
        };
        route(model, id, msg, permit, routes, &mut batch)?;
    }
}

/// The peer's next frame, opened and decoded, with its share of the reading budget; `None` once
/// the peer closed the connection. A large answer is weighed against what its request asked for
/// before it is read.
fn next_frame(
    r: &mut FrameReader<&TcpStream>,
    session: Option<&mut Sealer>,
    routes: &Routes<'_>,
) -> Result<Option<(Msg, Permit)>> {
    let vet = |n: usize, head: &[u8]| {
        let lengths = routes.lengths.lock().unwrap_or_else(|p| p.into_inner());
        weigh_answer(&lengths, n, head)
    };
    match r
        .body_vetted(wire::MAX_FRAME, session.as_deref(), vet)
        .and_then(|(b, p)| Ok((open_and_decode(b, session)?, p)))
    {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::UnexpectedEof) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Handles one frame of the peer's: index entries go to the model, requests to our writer,
/// answers into `batch`. The frame's share of the budget (`permit`) is held until it has been
/// handled.
fn route(
    model: &Model,
    id: u64,
    msg: Msg,
    permit: Permit,
    routes: &Routes<'_>,
    batch: &mut Vec<wire::Response>,
) -> Result<()> {
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
        Msg::IndexDone { seq } => model.remote_done(id, seq),
        Msg::Request(req) => queue(routes, Out::Serve(req))?,
        Msg::SubHashes(req) => queue(routes, Out::ServeSubs(req))?,
        Msg::Ping => {}
        Msg::Response(resp) => {
            admit_answer(routes, &resp)?;
            batch.push(resp);
        }
        Msg::InSync { seq } => update_peer(model, id, |p| p.peer_in_sync = p.peer_in_sync.max(seq)),
        Msg::Unknown(t) => debug!("skipped a frame of unknown type {t}"),
    }
    Ok(())
}

/// Changes what the model holds of this connection's peer, and tells those who wait on it.
fn update_peer(model: &Model, id: u64, change: impl FnOnce(&mut Peer)) {
    let mut g = model.lock();
    if let Some(p) = g.peers.get_mut(&id) {
        change(p);
    }
    model.changed.notify_all();
}

/// Queues a peer's request for our writer, if it does not have too many waiting already.
fn queue(routes: &Routes<'_>, job: Out) -> Result<()> {
    if routes.pending.fetch_add(1, Ordering::AcqRel) >= wire::MAX_REQUESTS {
        return Err(Error::protocol("too many outstanding requests"));
    }
    routes
        .out
        .send(job)
        .map_err(|_| Error::msg("connection closing"))
}

/// Checks the MD5s of a batch of answers side by side (md5x) and hands them to the puller.
fn hand_on(
    batch: &mut Vec<wire::Response>,
    sums: &mut Vec<crate::hash::Hash>,
    responses: &mpsc::Sender<crate::sync::link::Answer>,
) {
    let block = |r: &wire::Response| r.id & wire::NOT_A_BLOCK == 0;
    let data: Vec<&[u8]> = batch
        .iter()
        .filter(|r| block(r))
        .map(|r| &r.data[..])
        .collect();
    sums.clear();
    crate::hash::md5x::md5_each(&data, sums);
    let mut sums = sums.iter().copied();
    for resp in batch.drain(..) {
        let md5 = if block(&resp) { sums.next() } else { None };
        let _ = responses.send(crate::sync::link::Answer { r: resp, md5 });
    }
}

/// Whether a frame of `n` bytes starting with `head` may be read: an answer (a Response) no
/// larger than what its request asked for (`lengths`, by request id) plus its header and tag.
fn weigh_answer(lengths: &HashMap<u32, usize>, n: usize, head: &[u8]) -> Result<()> {
    let Some(rid) = wire::response_id(head) else {
        return Ok(());
    };
    match lengths.get(&rid) {
        Some(&len) if n <= len + wire::RESPONSE_BODY_HEADER + aead::TAG_LEN => Ok(()),
        asked => Err(Error::protocol(format!(
            "an answer of {n} bytes to a request for {} at most",
            asked.copied().unwrap_or(0)
        ))),
    }
}

/// Takes an answer in if we asked for it, and it holds no more than asked: only as many answers
/// as requests, each bounded by its request, are queued, so memory stays bounded by what we
/// asked for.
fn admit_answer(routes: &Routes<'_>, resp: &wire::Response) -> Result<()> {
    let len = routes
        .lengths
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&resp.id);
    let Some(len) = len else {
        return Err(Error::protocol("a response nobody asked for"));
    };
    if routes
        .asked
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_err()
    {
        return Err(Error::protocol("a response nobody asked for"));
    }
    if resp.data.len() > len {
        return Err(Error::protocol(format!(
            "a response of {} bytes where {len} at most were asked for",
            resp.data.len()
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_weighed_against_its_request() {
        let lengths = HashMap::from([(7u32, 65_536usize)]);
        let head = |id: u32| {
            let f = wire::encode(&Msg::Response(wire::Response {
                id,
                status: wire::Status::Ok,
                data: vec![0; 4],
            }));
            f[4..].to_vec()
        };
        let most = 65_536 + wire::RESPONSE_BODY_HEADER + aead::TAG_LEN;
        assert!(weigh_answer(&lengths, most, &head(7)).is_ok());
        assert!(weigh_answer(&lengths, most + 1, &head(7)).is_err());
        // An answer to nothing we asked, whatever its size.
        assert!(weigh_answer(&lengths, 20_000, &head(8)).is_err());
        // Other frames are not answers.
        let ping = wire::encode(&Msg::Ping);
        assert!(weigh_answer(&lengths, 1 << 20, &ping[4..]).is_ok());
    }
}
