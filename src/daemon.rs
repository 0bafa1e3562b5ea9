//! The daemon: opens the share and its index, then runs the listener, one dialer per peer, the
//! scanner, and a loop that saves the index and, with `--once`, decides when to stop.

use crate::cli::{Allow, Options, PeerAddr};
use crate::error::{Context, Error, Result};
use crate::hash::short_id;
use crate::log::Throttle;
use crate::net::conn;
use crate::store::index::Index;
use crate::store::names::{self, STATE_DIR};
use crate::sync::model::{DialInfo, Model, Out};
use crate::sys::watch::Watcher;
use crate::{scan::scanner, status, sys::signal};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SCAN_EVERY: Duration = Duration::from_millis(300);
/// With inotify: a full rescan this often even without events, as a safety net for what
/// inotify does not report (writes through a shared mmap, changes made over the network on a
/// shared filesystem, a lost event queue). Every change it does report is seen at once.
const RESCAN_EVERY: Duration = Duration::from_secs(600);
/// With inotify: how long to let a burst of changes settle before scanning.
const SETTLE: Duration = Duration::from_millis(30);
/// How often changes to the index are saved (a journal record: a small append and an
/// fdatasync, so a kill -9 leaves the index at most this far behind the files).
const SAVE_EVERY: Duration = Duration::from_millis(250);
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Connections past their handshake, in all.
const MAX_CONNECTIONS: usize = 64;
/// Of them, kept for the listed peers' addresses: others (--allow) never take these.
const RESERVED_FOR_LISTED: usize = 8;
/// Connections in their handshake from one address (each lasts 10 s at most), and from a listed
/// peer's address (some peers may share one, behind a NAT).
const MAX_HANDSHAKES_PER_ADDR: usize = 4;
const MAX_HANDSHAKES_PER_LISTED_ADDR: usize = 16;
/// Connections in their handshake from addresses other than the listed peers', in all.
const MAX_HANDSHAKES: usize = 16;
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const TEMP_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
/// Tombstones live this long: a peer offline for less still learns of the deletion.
const TOMBSTONE_AGE: Duration = Duration::from_secs(30 * 86_400);
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Memory the removals of one purge step may take (see `purge_tombstones`).
const PURGE_BYTES: usize = 1 << 20;

/// Reads the device id from the state directory, making one from /dev/urandom the first time.
fn device_id(state: &Path) -> Result<u64> {
    let p = state.join("device");
    let read = crate::sys::open::open_state(&p).and_then(|f| {
        let mut s = String::new();
        f.take(64).read_to_string(&mut s).map(|_| s)
    });
    match read {
        Ok(s) => u64::from_str_radix(s.trim(), 16)
            .map_err(|_| Error::msg("damaged device id file").at(&p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; 8];
            fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut b))
                .at("/dev/urandom")?;
            let id = u64::from_be_bytes(b).max(1);
            let tmp = state.join("device.tmp");
            crate::sys::open::create_own(&tmp)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, format!("{id:016x}\n").as_bytes())?;
                    f.sync_all()
                })
                .at(&tmp)?;
            fs::rename(&tmp, &p).at(&p)?;
            Ok(id)
        }
        Err(e) => Err(Error::from(e).at(&p)),
    }
}

fn open_index(state: &Path, device: u64) -> Index {
    let p = state.join("index");
    match Index::load(&p) {
        Ok(ix) if ix.device == device => ix,
        Ok(_) => {
            warn!(
                "{}: written by another device; starting a fresh index",
                p.display()
            );
            Index::new(device)
        }
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => Index::new(device),
        Err(e) => {
            // Nothing is lost: every file is hashed again, its version counting from the time
            // (past the ones this device made before), and merges with the peers'.
            warn!("{e}; kept as index.damaged, rebuilding from the files");
            let _ = fs::rename(&p, state.join("index.damaged"));
            Index::new(device)
        }
    }
}

/// Runs until `--once` is satisfied (returns the exit code) or forever.
pub fn run(opts: &Options) -> Result<i32> {
    // First: `left status` may signal us as soon as a status file names our pid.
    signal::install();
    crate::sys::limits::fewer_arenas();
    let files = crate::sys::limits::raise();
    debug!("open files allowed: {files}");
    debug!("MD5s side by side: {}", crate::hash::md5x::describe());
    let (model, state) = open_share(opts)?;
    let listener = TcpListener::bind(("::", opts.port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", opts.port)))
        .map_err(|e| Error::from(e).at(format!("port {}", opts.port)))?;
    let port = listener.local_addr()?.port();
    model.port.store(port, Ordering::Relaxed);
    info!(
        "left {} serving {} on port {port} as device {}",
        env!("CARGO_PKG_VERSION"),
        model.root.display(),
        short_id(model.lock().index.device)
    );
    {
        let (m, o) = (model.clone(), opts.clone());
        std::thread::spawn(move || accept_loop(&m, &o, listener));
    }
    for peer in &opts.peers {
        let (m, p) = (model.clone(), peer.clone());
        std::thread::spawn(move || dial_loop(&m, &p));
    }
    {
        let m = model.clone();
        std::thread::spawn(move || scan_loop(&m));
    }
    tick_loop(&model, opts, &state)
}

/// Opens the share: its folder and state folder (ours alone), the device id, the index and the
/// install log, the key, and a dialer's record for each listed peer.
fn open_share(opts: &Options) -> Result<(Arc<Model>, std::path::PathBuf)> {
    let root = &opts.dir;
    fs::create_dir_all(root).at(root)?;
    let root = fs::canonicalize(root).at(root)?;
    let state = root.join(STATE_DIR);
    fs::create_dir_all(&state).at(&state)?;
    // The state is written only into a real folder of the share, never through a symlink, and
    // always into the one found now: it is held open and reached through its descriptor, so a
    // symlink swapped in for it later (by anyone who can write the share's top) is not followed.
    if !fs::symlink_metadata(&state).at(&state)?.is_dir() {
        return Err(Error::msg("is not a folder (a symlink?); move it away").at(&state));
    }
    let state = crate::sys::open::hold_dir(&state)
        .map_err(|e| Error::msg(format!("cannot be our state folder: {e}")).at(&state))?;
    // Nobody else may plant links among our state files.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).at(&state)?;
    }
    let device = device_id(&state)?;
    let index = open_index(&state, device);
    let mut model = Model::new(root.clone(), state.clone(), index);
    if let Ok(st) = model.state.get_mut() {
        let logged = crate::store::intents::load(&state);
        let done_last = logged.done_last;
        st.installed = (logged.done.into_iter())
            .filter_map(|(p, mut done)| {
                // A file's install is marked done just before its rename: one whose complete
                // temp file is still there was cut before it (its pull resumes), and what the
                // file holds is the install marked done before it, if any. Unless a pull was
                // logged after it (the temp file is that pull's).
                if done_last.contains(&p)
                    && done
                        .last()
                        .is_some_and(|e| e.is_file() && temp_of(&root, e))
                {
                    done.pop();
                }
                Some((p, done.pop()?))
            })
            .collect();
        st.received = logged.entries;
        let now = Instant::now();
        for p in &opts.peers {
            // Literal addresses are known at once (names are resolved by the dialer).
            let addrs = p
                .host
                .parse::<IpAddr>()
                .map(|ip| vec![SocketAddr::new(ip.to_canonical(), p.port)]);
            let d = DialInfo {
                down_since: Some(now),
                addrs: addrs.unwrap_or_default(),
                ..Default::default()
            };
            st.dialers.insert(p.to_string(), d);
        }
    }
    model.max_pending = opts.max_pending;
    if let Some(k) = &opts.key_file {
        let key = crate::proto::auth::load_key(k)?;
        if key.len() < crate::proto::auth::STRONG_KEY {
            warn!("{}: {}", k.display(), crate::proto::auth::WEAK_KEY);
        }
        model.key = Some(key);
    }
    let mut g = model.lock();
    g.found_temps = scanner::clean_temps(&root, TEMP_MAX_AGE, &g.received);
    drop(g);
    Ok((Arc::new(model), state))
}

/// Whether the temp file of `e`'s path is the one made for `e`: complete, its length and
/// mtime `e`'s (a later pull's temp file has neither yet).
fn temp_of(root: &std::path::Path, e: &crate::store::entry::Entry) -> bool {
    let md = crate::sys::dirfd::Dir::parent(root, &names::temp_rel(&e.path))
        .ok()
        .and_then(|(d, name)| d.stat(name).ok().flatten());
    md.is_some_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.is_file()
            && m.len() == e.size
            && m.mtime() == e.mtime
            && m.mtime_nsec() == e.mtime_ns as i64
    })
}

/// When the daemon's periodic work was last done.
struct Clock {
    save: Instant,
    status: Instant,
    purge: Option<Instant>,
    /// The last purge left old deletions for the next.
    purge_more: bool,
}

/// What a tick of the daemon does.
#[derive(Debug, PartialEq, Eq)]
struct Due {
    purge: bool,
    save: bool,
    status: bool,
}

impl Clock {
    fn new(now: Instant) -> Clock {
        Clock {
            save: now,
            status: now,
            purge: None,
            purge_more: false,
        }
    }

    /// What is due at `now`: `fold`, memory holds many changes (saved early: the save writes
    /// them into a new base); `asked`, `left status` asked for a fresh status.
    fn due(&self, now: Instant, fold: bool, asked: bool) -> Due {
        Due {
            purge: self.purge_more || self.purge.is_none_or(|t| now - t >= PURGE_EVERY),
            save: now - self.save >= SAVE_EVERY || fold,
            status: asked || now - self.status >= STATUS_EVERY,
        }
    }
}

/// The daemon's own thread: saves, purges, status, signals, and with `--once` the end.
fn tick_loop(model: &Arc<Model>, opts: &Options, state: &Path) -> Result<i32> {
    let mut clock = Clock::new(Instant::now());
    let mut last_why = Instant::now();
    let mut status = status::Writer::default();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if signal::stop_requested() {
            model.lock().shutdown = true;
            model.save_index_now();
            info!("stopping on signal; index saved");
            let _ = fs::remove_file(state.join("status"));
            return Ok(0);
        }
        let asked = signal::status_requested();
        let now = Instant::now();
        let due = clock.due(now, model.lock().index.wants_fold(), asked);
        if due.purge {
            clock.purge = Some(now);
            clock.purge_more = purge_tombstones(model);
        }
        if due.save {
            model.save_index();
            clock.save = now;
        }
        if due.status {
            status.write(model, opts, asked);
            clock.status = now;
        }
        if !opts.once {
            continue;
        }
        if last_why.elapsed() >= Duration::from_secs(1) {
            last_why = Instant::now();
            if let Some(why) = once_pending(model) {
                debug!("--once waits for {why}");
            }
        }
        if let Some(code) = once_over(model, opts) {
            return Ok(code);
        }
    }
}

/// With `--once`: the exit code once every peer agrees (0) or one stayed unreachable past
/// `--timeout` (1); `None` while neither.
fn once_over(model: &Model, opts: &Options) -> Option<i32> {
    if once_done(model) {
        model.save_index_now();
        flush_all(model);
        info!(
            "in sync with every peer; file data received {} bytes, sent {} bytes, reused locally {} bytes",
            crate::sync::link::RECEIVED.load(Ordering::Relaxed),
            conn::SENT.load(Ordering::Relaxed),
            crate::sync::link::REUSED.load(Ordering::Relaxed)
        );
        return Some(0);
    }
    let down: Vec<String> = {
        let g = model.lock();
        g.dialers
            .iter()
            .filter(|(_, d)| d.down_since.is_some_and(|t| t.elapsed() > opts.timeout))
            .map(|(p, d)| match &d.last_error {
                Some(e) => format!("{p} ({e})"),
                None => p.clone(),
            })
            .collect()
    };
    if down.is_empty() {
        return None;
    }
    model.save_index_now();
    warn!(
        "peer unreachable for {} s: {}",
        opts.timeout.as_secs(),
        down.join(", ")
    );
    Some(1)
}

/// Forgets deletions recorded here more than [`TOMBSTONE_AGE`] ago, a bounded part at a time (each removal is
/// kept in memory until the next whole save); returns whether more are left for the next call.
fn purge_tombstones(model: &Model) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    purge_at(model, now)
}

/// A clock before this (2020-01-01) is not set yet: a board without a real-time clock (a
/// Raspberry Pi) starts at 1970 until the network sets it.
const CLOCK_SET: i64 = 1_577_836_800;

/// [`purge_tombstones`] at time `now`. Not while the clock is not set; a deletion recorded
/// while it was not takes the time now instead (else it would be forgotten the moment the
/// clock is set, and a peer's old copy come back).
fn purge_at(model: &Model, now: i64) -> bool {
    if now < CLOCK_SET {
        return false;
    }
    let cutoff = now - TOMBSTONE_AGE.as_secs() as i64;
    let mut g = model.lock();
    if g.index.wants_fold() {
        return true; // once what memory holds is saved
    }
    let unset: Vec<String> = (g.index.values())
        .filter(|e| e.deleted && recorded(e) < CLOCK_SET)
        .take(PURGE_BYTES / 256)
        .map(|e| e.path.clone())
        .collect();
    for p in &unset {
        let stat = crate::store::entry::Stat {
            mtime: now,
            ..Default::default()
        };
        g.index.set_local(p, stat, Vec::new());
        g.dirty = true;
    }
    let (purged, more) = g.index.purge(
        |e| e.deleted && (CLOCK_SET..cutoff).contains(&recorded(e)),
        PURGE_BYTES,
    );
    if purged > 0 {
        g.dirty = true;
        info!(
            "forgot {purged} deletions older than {} days",
            TOMBSTONE_AGE.as_secs() / 86_400
        );
    }
    more
}

/// When a deletion was recorded here (see `Index::put`); for one recorded before that was kept,
/// the time its maker gave it.
fn recorded(e: &crate::store::entry::Entry) -> i64 {
    if e.stat.mtime != 0 {
        e.stat.mtime
    } else {
        e.mtime
    }
}

/// Makes sure every peer got what we queued for it (our InSync above all) before exiting.
fn flush_all(model: &Model) {
    let (tx, rx) = std::sync::mpsc::channel();
    let n = {
        let g = model.lock();
        g.peers
            .values()
            .filter(|p| p.out.send(Out::Flush(tx.clone())).is_ok())
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
}

/// Our scan is done, nothing is being pulled, every connected peer is in sync both ways, and
/// every configured peer was seen in sync at our current sequence number (it may have left since:
/// two `--once` runs against each other finish one after the other).
fn once_done(model: &Model) -> bool {
    once_pending(model).is_none()
}

/// What `--once` still waits for, in words (None: done).
fn once_pending(model: &Model) -> Option<String> {
    let mut g = model.lock();
    if !g.scanned {
        return Some("our first scan".into());
    }
    if !g.busy.is_empty() {
        return Some(format!("{} pulls", g.busy.len()));
    }
    let seq = g.index.seq;
    let st = &mut *g;
    for p in st.peers.values() {
        if !p.in_sync(seq) || p.sent_in_sync != Some(p.remote_seq) {
            return Some(format!(
                "device {}: index done {}, {} needs, pulling {}, it has our {} of {seq}, we told it {:?} of {}",
                short_id(p.device),
                p.remote_done,
                p.needs.len(),
                p.pulling,
                p.peer_in_sync,
                p.sent_in_sync,
                p.remote_seq
            ));
        }
        st.synced.insert(p.device, seq);
    }
    for (name, d) in &st.dialers {
        if d.device.is_none_or(|dev| st.synced.get(&dev) != Some(&seq)) {
            return Some(format!(
                "{name}: device {:?}, synced at {:?}, our seq {seq}",
                d.device.map(short_id),
                d.device.and_then(|dev| st.synced.get(&dev))
            ));
        }
    }
    None
}

/// Where a connection comes from, as far as admission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// One of the listed peers' addresses (as their dialers last resolved them).
    Listed,
    /// Allowed by --allow only.
    Allowed,
    Refused,
}

/// Whether a connection from `ip` may proceed: one of the listed peers' addresses, or allowed
/// with --allow. Host names are never resolved here (a slow resolver would stall every accept):
/// the dialers resolve them and keep the addresses in the model.
fn source(model: &Model, opts: &Options, ip: IpAddr) -> Source {
    let ip = ip.to_canonical();
    let listed = model
        .lock()
        .dialers
        .values()
        .any(|d| d.addrs.iter().any(|a| a.ip().to_canonical() == ip));
    if listed {
        return Source::Listed;
    }
    let allowed = opts.allow.iter().any(|a| match a {
        Allow::Any => true,
        Allow::Ip(x) => x.to_canonical() == ip,
    });
    if allowed {
        Source::Allowed
    } else {
        Source::Refused
    }
}

/// Accepted connections: those still in their handshake, by source address, and those past it.
#[derive(Default)]
struct Slots {
    handshaking: HashMap<IpAddr, usize>,
    /// Handshakes from addresses that are not listed peers', in all.
    strangers: usize,
    /// Connections past their handshake.
    active: usize,
    /// Of them, from addresses that are not listed peers'.
    active_strangers: usize,
}

/// Takes a handshake slot for a connection from `ip`, if one is free.
fn admit(slots: &Mutex<Slots>, ip: IpAddr, src: Source) -> bool {
    let mut g = slots.lock().unwrap_or_else(|p| p.into_inner());
    let n = g.handshaking.get(&ip).copied().unwrap_or(0);
    let (per_addr, stranger) = match src {
        Source::Listed => (MAX_HANDSHAKES_PER_LISTED_ADDR, false),
        _ => (MAX_HANDSHAKES_PER_ADDR, true),
    };
    if n >= per_addr || (stranger && g.strangers >= MAX_HANDSHAKES) {
        return false;
    }
    *g.handshaking.entry(ip).or_default() += 1;
    if src != Source::Listed {
        g.strangers += 1;
    }
    true
}

/// Gives back a handshake slot; with `done`, takes a connection slot instead, if one is free.
fn handshake_over(slots: &Mutex<Slots>, ip: IpAddr, src: Source, done: bool) -> bool {
    let mut g = slots.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = g.handshaking.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            g.handshaking.remove(&ip);
        }
    }
    let stranger = src != Source::Listed;
    if stranger {
        g.strangers -= 1;
    }
    // Strangers never take the last few slots: a listed peer always finds one.
    let full = g.active >= MAX_CONNECTIONS
        || (stranger && g.active_strangers >= MAX_CONNECTIONS - RESERVED_FOR_LISTED);
    if !done || full {
        return false;
    }
    g.active += 1;
    g.active_strangers += usize::from(stranger);
    true
}

fn accept_loop(model: &Arc<Model>, opts: &Options, listener: TcpListener) {
    // Lines a client can cause as often as it connects: 5 in 10 s of each kind from strangers,
    // 50 from listed peers' addresses (a misconfigured peer's reason stays visible).
    static REFUSED: Throttle = Throttle::new(Duration::from_secs(10), 5);
    static FAILED: Throttle = Throttle::new(Duration::from_secs(10), 5);
    static FAILED_LISTED: Throttle = Throttle::new(Duration::from_secs(10), 50);
    let slots = Arc::new(Mutex::new(Slots::default()));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Ok(from) = stream.peer_addr() else {
            continue;
        };
        let ip = from.ip().to_canonical();
        let src = source(model, opts, ip);
        if src == Source::Refused {
            if let Some(more) = REFUSED.pass() {
                info!("refused a connection from {from}: not a listed peer (see --allow){more}");
            }
            continue;
        }
        if !admit(&slots, ip, src) {
            debug!("refused a connection from {from}: too many handshakes from there");
            continue;
        }
        let (m, slots) = (model.clone(), slots.clone());
        std::thread::spawn(move || {
            let hs = crate::net::handshake::handshake(&mut stream, &m, false);
            if !handshake_over(&slots, ip, src, hs.is_ok()) {
                let throttle = if src == Source::Listed {
                    &FAILED_LISTED
                } else {
                    &FAILED
                };
                if let Some(more) = throttle.pass() {
                    match hs {
                        Err(e) => info!("connection from {from} ended: {e}{more}"),
                        Ok(_) => info!("refused a connection from {from}: too many open{more}"),
                    }
                }
                return;
            }
            if let Err(e) =
                hs.and_then(|hs| conn::run(&m, stream, hs, false, src == Source::Listed))
            {
                let throttle = if src == Source::Listed {
                    &FAILED_LISTED
                } else {
                    &FAILED
                };
                if let Some(more) = throttle.pass() {
                    info!("connection from {from} ended: {e}{more}");
                }
            }
            let mut g = slots.lock().unwrap_or_else(|p| p.into_inner());
            g.active -= 1;
            g.active_strangers -= usize::from(src != Source::Listed);
        });
    }
}

/// Keeps a connection to one peer, retrying quietly with backoff while it is unreachable.
fn dial_loop(model: &Arc<Model>, peer: &PeerAddr) {
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let mut backoff = Duration::from_millis(250);
    let mut known: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        if model.lock().shutdown {
            return;
        }
        let addrs = resolve(model, peer);
        let connected = {
            let g = model.lock();
            connected_to(g.peers.values(), &addrs, known)
        };
        // Already connected to that peer (it dialed us): nothing to do.
        if let Some(dev) = connected {
            set_dial(model, peer, known.or(Some(dev)), None, true);
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        match connect_any(&addrs) {
            Ok(mut s) => match crate::net::handshake::handshake(&mut s, model, true) {
                Ok(hs) => {
                    let dev = hs.device;
                    known = Some(dev);
                    set_dial(model, peer, Some(dev), None, true);
                    // The peer dialed us first (we had not learned its device yet): that
                    // connection stays, and this one only told us who it is, where the rule of
                    // crossing connections keeps it (`conn::register`: the one dialed by the
                    // smaller device id). Else ours goes on and replaces it: the peer keeps
                    // ours by the same rule, and had we dropped it, each side would have
                    // closed one of the two (a `--once` peer that synced on the one the other
                    // side was closing exited, and the other waited for it in vain).
                    let dup = {
                        let g = model.lock();
                        let me = g.index.device;
                        (g.peers.values())
                            .any(|p| p.device == dev && p.listed && conn::dialer(p, me) <= me)
                    };
                    if dup {
                        continue;
                    }
                    failures = 0;
                    backoff = Duration::from_millis(250);
                    if let Err(e) = conn::run(model, s, hs, true, true) {
                        info!("connection to {peer} ended: {e}");
                        set_dial(model, peer, Some(dev), Some(e.to_string()), false);
                    }
                }
                Err(e) => {
                    info!("handshake with {peer} failed: {e}");
                    set_dial(model, peer, None, Some(e.to_string()), false);
                }
            },
            Err(e) => {
                set_dial(model, peer, None, Some(e.to_string()), false);
                failures += 1;
                // Quiet while a peer is still booting: the first failure, then one a minute.
                if failures == 1 || failures.is_multiple_of(60) {
                    info!("{peer} not reachable yet ({e}); retrying");
                }
                QUIET.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The peer's addresses, looked up now; the accept thread admits connections by them (a failed
/// lookup keeps the last ones known).
fn resolve(model: &Model, peer: &PeerAddr) -> Vec<SocketAddr> {
    let addrs: Vec<SocketAddr> = match (peer.host.as_str(), peer.port).to_socket_addrs() {
        Ok(a) => a
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect(),
        Err(e) => {
            set_dial(model, peer, None, Some(e.to_string()), false);
            Vec::new()
        }
    };
    let mut g = model.lock();
    if let Some(d) = g.dialers.get_mut(&peer.to_string())
        && !addrs.is_empty()
    {
        d.addrs = addrs.clone();
    }
    addrs
}

/// The device of a connection that stands for the peer at `addrs`, if one is up: once a
/// connection we dialed told us its device (`known`), one to that device (a hello from the
/// peer's address claiming its port, which any program on that host can send, does not count
/// then); before, one from a listed address whose hello claims the peer's port, while it lasts
/// (dialing too would cut it).
fn connected_to<'a>(
    peers: impl IntoIterator<Item = &'a crate::sync::model::Peer>,
    addrs: &[SocketAddr],
    known: Option<u64>,
) -> Option<u64> {
    peers
        .into_iter()
        .find(|p| {
            p.listed
                && match known {
                    Some(dev) => p.device == dev,
                    None => addrs.contains(&p.listen),
                }
        })
        .map(|p| p.device)
}

/// A connection to the first of `addrs` that answers.
fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream> {
    let mut last = Error::msg("cannot resolve");
    for a in addrs {
        match TcpStream::connect_timeout(a, Duration::from_secs(3)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

/// Records what a dialer learned: the peer's device, the last error, and whether it is up.
fn set_dial(model: &Model, peer: &PeerAddr, device: Option<u64>, err: Option<String>, up: bool) {
    let mut g = model.lock();
    let d = g.dialers.entry(peer.to_string()).or_default();
    if device.is_some() {
        d.device = device;
    }
    d.last_error = err;
    if up {
        d.down_since = None;
    } else if d.down_since.is_none() {
        d.down_since = Some(Instant::now());
    }
}

/// The scanner's thread: scans the share, then waits for changes (or polls), until shutdown.
fn scan_loop(model: &Model) {
    let mut watcher = start_watcher(model);
    // The first scan, the periodic one and any after lost events walk everything; the others
    // only the folders inotify named.
    let mut full = true;
    loop {
        let t = Instant::now();
        let dirs = dirs_to_scan(model, &mut watcher, full);
        // The pause after a scan scales with the cost of walking, not of hashing what changed
        // (a big file hashed once must not slow down noticing the next change), and only that
        // of the partial scans that events cause: the full walk of a big share says nothing
        // of what the next event costs.
        let partial = dirs.is_some();
        let took = scan_once(model, dirs.as_ref(), watcher.as_mut(), t);
        if std::mem::take(&mut model.lock().rescan_all) {
            full = true;
            continue;
        }
        // What the scan saw is recorded: peers may be told we hold nothing more for them.
        model.lock().scan_pending = false;
        model.changed.notify_all();
        full = wait_for_changes(model, &mut watcher, partial, took);
        if model.lock().shutdown {
            return;
        }
    }
}

/// The inotify watcher, its descriptor told to the model; `None` (said once) where inotify is
/// unavailable: the share is polled then.
fn start_watcher(model: &Model) -> Option<Watcher> {
    let watcher = Watcher::new(|n| names::is_temp(n) || n == STATE_DIR);
    if let Some(w) = &watcher {
        model.watch_fd.store(w.fd(), Ordering::Relaxed);
    }
    if watcher.is_none() {
        info!(
            "inotify unavailable: polling the share every {} ms",
            SCAN_EVERY.as_millis()
        );
    }
    watcher
}

/// The folders the next scan reads (relative to the share), or `None` for all of them: with
/// `full`, without a watcher, or when it lost track.
fn dirs_to_scan(
    model: &Model,
    watcher: &mut Option<Watcher>,
    full: bool,
) -> Option<HashSet<String>> {
    let dirs: Option<HashSet<String>> = match watcher.as_mut() {
        Some(w) if !full => w.take_dirty().map(|d| {
            d.iter()
                .filter_map(|p| {
                    let rel = p.strip_prefix(&model.root).ok()?;
                    rel.to_str().map(str::to_string)
                })
                .collect()
        }),
        _ => None,
    };
    if dirs.is_none() {
        // A full scan covers whatever the watcher had gathered.
        if let Some(w) = watcher.as_mut() {
            let _ = w.take_dirty();
        }
    }
    dirs
}

/// Scans `dirs` (or all), started at `t`; returns what its walk took (all it took, if it failed).
fn scan_once(
    model: &Model,
    dirs: Option<&HashSet<String>>,
    watcher: Option<&mut Watcher>,
    t: Instant,
) -> Duration {
    match scanner::scan(model, dirs, watcher) {
        Ok(s) => {
            if s.changed + s.deleted > 0 {
                debug!("scan: {s:?} in {:?}", t.elapsed());
                // Saved now, not at the next tick: only what is saved is announced (a peer
                // that took a version a kill then lost would build on it: review16).
                model.save_changes();
            }
            s.walk
        }
        Err(e) => {
            warn!("scan: {e}");
            t.elapsed()
        }
    }
}

/// Waits until the next scan is due (`took`: the last scan's walk, `partial`: it read only
/// some folders); returns whether that scan must walk everything.
fn wait_for_changes(
    model: &Model,
    watcher: &mut Option<Watcher>,
    partial: bool,
    took: Duration,
) -> bool {
    match watcher.as_mut() {
        // Woken by a change (after a short settle), or a full rescan now and then as a safety
        // net.
        Some(w) if !w.incomplete => {
            let woken = w.wait(RESCAN_EVERY);
            model.lock().scan_pending = true;
            if woken {
                std::thread::sleep(settle(partial, took));
            }
            !woken
        }
        _ => {
            std::thread::sleep(poll_pause(took));
            model.lock().scan_pending = true;
            true
        }
    }
}

/// How long a burst of changes settles before it is scanned: a few times the cost of the last
/// scan if it was a partial one, [`SETTLE`] at least.
fn settle(partial: bool, took: Duration) -> Duration {
    SETTLE.max(if partial { took * 3 } else { SETTLE })
}

/// How long polling waits between scans: never more than about a tenth of a core, however
/// large the share, and [`SCAN_EVERY`] at least.
fn poll_pause(took: Duration) -> Duration {
    SCAN_EVERY.max(took * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deletions recorded while the clock was not set (a Raspberry Pi boots at 1970) are not
    /// forgotten when it is: they count from then. Nothing is forgotten while it is not set.
    /// More deletions recorded while the clock was not set than one purge step moves to the
    /// time now (`PURGE_BYTES / 256`, 4096): the rest are forgotten by that very step (their
    /// recorded time, 1970, is older than the cutoff), and peers' old copies come back.
    #[test]
    fn many_deletions_recorded_before_the_clock_was_set_are_all_kept() {
        use crate::store::entry::{Entry, Stat};
        let root = std::env::temp_dir().join(format!("left-purge-many-{}", std::process::id()));
        let model = crate::sync::model::fresh_model(&root, 7);
        let n = 5000;
        for i in 0..n {
            let p = format!("gone{i:05}");
            let mut g = model.lock();
            g.index.put(Entry {
                path: p.clone(),
                deleted: true,
                ..Entry::default()
            });
            let stat = Stat {
                mtime: 100 + i as i64,
                ..Stat::default()
            };
            g.index.set_local(&p, stat, Vec::new());
            g.dirty = true;
        }
        model.save_index_now();
        let now = 1_800_000_000;
        for _ in 0..20 {
            let more = purge_at(&model, now);
            model.save_index_now();
            if !more {
                break;
            }
        }
        let kept = model.lock().index.values().filter(|e| e.deleted).count();
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            kept, n,
            "deletions recorded before the clock was set, forgotten at once"
        );
    }

    #[test]
    fn deletions_recorded_before_the_clock_was_set_are_kept() {
        use crate::store::entry::{Entry, Stat};
        let root = std::env::temp_dir().join(format!("left-purge-{}", std::process::id()));
        let model = crate::sync::model::fresh_model(&root, 7);
        let now = 1_800_000_000;
        for (p, at) in [("a", 100), ("b", now - 40 * 86_400), ("c", now - 86_400)] {
            let mut g = model.lock();
            g.index.put(Entry {
                path: p.into(),
                deleted: true,
                ..Entry::default()
            });
            let stat = Stat {
                mtime: at,
                ..Stat::default()
            };
            g.index.set_local(p, stat, Vec::new());
        }
        assert!(!purge_at(&model, 5000));
        assert_eq!(
            model.lock().index.values().count(),
            3,
            "purged with the clock unset"
        );
        purge_at(&model, now);
        let g = model.lock();
        let left: Vec<(String, i64)> = (g.index.values())
            .map(|e| (e.path.clone(), e.stat.mtime))
            .collect();
        assert_eq!(
            left,
            [("a".to_string(), now), ("c".to_string(), now - 86_400)]
        );
        drop(g);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_tick_does_what_is_due() {
        let t0 = Instant::now();
        let fresh = Clock::new(t0);
        let purged = Clock {
            purge: Some(t0),
            ..Clock::new(t0)
        };
        let more = Clock {
            purge: Some(t0),
            purge_more: true,
            ..Clock::new(t0)
        };
        let ms = Duration::from_millis;
        let due = |purge, save, status| Due {
            purge,
            save,
            status,
        };
        // (clock, time since t0, fold, asked, what is due)
        let table = [
            // The first tick purges; nothing else is due yet.
            (&fresh, ms(0), false, false, due(true, false, false)),
            (&purged, ms(10), false, false, due(false, false, false)),
            // Saves every SAVE_EVERY, or at once when memory holds many changes.
            (
                &purged,
                SAVE_EVERY - ms(1),
                false,
                false,
                due(false, false, false),
            ),
            (&purged, SAVE_EVERY, false, false, due(false, true, false)),
            (&purged, ms(0), true, false, due(false, true, false)),
            // Status every STATUS_EVERY, or at once when asked.
            (
                &purged,
                STATUS_EVERY - ms(1),
                false,
                false,
                due(false, true, false),
            ),
            (&purged, STATUS_EVERY, false, false, due(false, true, true)),
            (&purged, ms(0), false, true, due(false, false, true)),
            // Purges every PURGE_EVERY, or at the next tick while old deletions are left.
            (
                &purged,
                PURGE_EVERY - ms(1),
                false,
                false,
                due(false, true, true),
            ),
            (&purged, PURGE_EVERY, false, false, due(true, true, true)),
            (&more, ms(0), false, false, due(true, false, false)),
            (&fresh, ms(0), true, true, due(true, true, true)),
        ];
        for (i, (clock, after, fold, asked, want)) in table.into_iter().enumerate() {
            assert_eq!(clock.due(t0 + after, fold, asked), want, "{i}");
        }
    }

    #[test]
    fn the_scanner_pauses_by_what_its_walk_took() {
        let ms = Duration::from_millis;
        // (partial, the walk took, settle)
        let settles = [
            (true, ms(0), SETTLE),
            (true, ms(5), SETTLE),
            (true, ms(100), ms(300)),
            // A full walk's cost says nothing of the next event's.
            (false, ms(100), SETTLE),
            (false, ms(0), SETTLE),
        ];
        for (partial, took, want) in settles {
            assert_eq!(settle(partial, took), want, "{partial} {took:?}");
        }
        // (the walk took, pause)
        let polls = [
            (ms(0), SCAN_EVERY),
            (ms(20), SCAN_EVERY),
            (ms(30), SCAN_EVERY),
            (ms(100), ms(1000)),
        ];
        for (took, want) in polls {
            assert_eq!(poll_pause(took), want, "{took:?}");
        }
    }
}
