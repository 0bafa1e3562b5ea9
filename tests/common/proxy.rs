//! A TCP proxy on 127.0.0.1 that can be cut and healed: network partitions between real peers.
//! A peer is given the proxy's port as its peer's address; the proxy forwards each connection to
//! the peer's real port. Cut: live connections are closed, new ones are closed at once. Healed:
//! new connections are forwarded again. A recording proxy also keeps every byte it forwards,
//! by connection and direction, and can flip one bit on its way (a tampering middleman).

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Proxy {
    /// Where the proxy listens (127.0.0.1).
    pub port: u16,
    /// Where it forwards to (127.0.0.1).
    pub target: u16,
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

struct Shared {
    target: u16,
    /// Whether the bytes forwarded are kept.
    recording: bool,
    state: Mutex<State>,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    cut: bool,
    next: u64,
    /// Live connections: (client side, upstream side).
    live: HashMap<u64, (TcpStream, TcpStream)>,
    /// Connections forwarded since the start.
    forwarded: u64,
    /// With recording: the bytes of each connection, in the order they came, each
    /// [client to target, target to client].
    recorded: Vec<[Vec<u8>; 2]>,
    /// A bit to flip once: (towards the target?, offset in that direction of a connection).
    flip: Option<(bool, usize)>,
}

impl Proxy {
    /// Listens on 127.0.0.1:`port` (0: a port the system picks, no race with other sockets)
    /// and forwards to 127.0.0.1:`target`.
    pub fn start(port: u16, target: u16) -> Proxy {
        Proxy::start_as(port, target, false)
    }

    /// As [`Proxy::start`], keeping every byte forwarded (see [`Proxy::recorded`]).
    pub fn recording(port: u16, target: u16) -> Proxy {
        Proxy::start_as(port, target, true)
    }

    fn start_as(port: u16, target: u16, recording: bool) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("proxy cannot listen on {port}: {e}"));
        let port = listener.local_addr().map_or(port, |a| a.port());
        let shared = Arc::new(Shared {
            target,
            recording,
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let handle = std::thread::spawn(move || {
            for s in listener.incoming() {
                if sh.closed.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                if sh.lock().cut {
                    let _ = s.shutdown(Shutdown::Both);
                    continue;
                }
                let sh2 = sh.clone();
                std::thread::spawn(move || forward(&sh2, s));
            }
        });
        Proxy {
            port,
            target,
            shared,
            handle: Some(handle),
        }
    }

    /// Cuts (closing every live connection) or heals the link.
    pub fn set_cut(&self, cut: bool) {
        let mut g = self.shared.lock();
        g.cut = cut;
        if cut {
            for (_, (a, b)) in g.live.drain() {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn is_cut(&self) -> bool {
        self.shared.lock().cut
    }

    /// Connections open through the proxy right now.
    pub fn live(&self) -> usize {
        self.shared.lock().live.len()
    }

    /// Connections forwarded since the start.
    pub fn forwarded(&self) -> u64 {
        self.shared.lock().forwarded
    }

    /// The bytes of each connection so far (recording proxies): [to the target, back].
    pub fn recorded(&self) -> Vec<[Vec<u8>; 2]> {
        self.shared.lock().recorded.clone()
    }

    /// Flips the lowest bit of the byte at `offset` of the next connection to reach it, in
    /// the direction towards the target (`up`) or back; once.
    pub fn flip_once(&self, up: bool, offset: usize) {
        self.shared.lock().flip = Some((up, offset));
    }

    /// Whether the bit set by [`Proxy::flip_once`] was flipped.
    pub fn flipped(&self) -> bool {
        self.shared.lock().flip.is_none()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn forward(sh: &Shared, client: TcpStream) {
    let to = SocketAddr::from(([127, 0, 0, 1], sh.target));
    let Ok(up) = TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        client.try_clone(),
        up.try_clone(),
        client.try_clone(),
        up.try_clone(),
    ) else {
        return;
    };
    let id = {
        let mut g = sh.lock();
        if g.cut {
            let _ = client.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
            return;
        }
        g.next += 1;
        g.forwarded += 1;
        let id = g.next;
        g.live.insert(id, (c3, u3));
        id
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let conn = if sh.recording {
        let mut g = sh.lock();
        g.recorded.push([Vec::new(), Vec::new()]);
        Some(g.recorded.len() - 1)
    } else {
        None
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = pump(sh, conn, true, &c2, &u2);
            let _ = u2.shutdown(Shutdown::Both);
            let _ = c2.shutdown(Shutdown::Both);
        });
        let _ = pump(sh, conn, false, &up, &client);
        let _ = up.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
    });
    sh.lock().live.remove(&id);
}

/// Copies `from` to `to` until either ends: direction `towards` the target or back; records
/// (as connection `conn`) and flips the bit asked for on the way.
fn pump(
    sh: &Shared,
    conn: Option<usize>,
    towards: bool,
    mut from: &TcpStream,
    mut to: &TcpStream,
) -> io::Result<()> {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0usize;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let chunk = &mut buf[..n];
        {
            let mut g = sh.lock();
            if let Some((dir, off)) = g.flip
                && dir == towards
                && (at..at + n).contains(&off)
            {
                chunk[off - at] ^= 1;
                g.flip = None;
            }
            if let Some(c) = conn {
                g.recorded[c][usize::from(!towards)].extend_from_slice(chunk);
            }
        }
        to.write_all(chunk)?;
        at += n;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.set_cut(true);
        // Wake the accept loop so that it sees `closed`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
