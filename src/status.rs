//! Status for the operator: the daemon keeps `.left/status` current (a few lines of text), and
//! `left status` prints it, with an exit code saying whether everything is in sync.

use crate::cli::Options;
use crate::error::{Context, Result};
use crate::hash::short_id;
use crate::log::timestamp;
use crate::store::index::Index;
use crate::store::names::STATE_DIR;
use crate::sync::model::{Model, Peer, Progress, State};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A status file older than this means the daemon is gone.
const STALE: Duration = Duration::from_secs(10);
/// The daemon rewrites an unchanged status file this often.
const REFRESH: Duration = Duration::from_secs(4);

fn when(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    timestamp(d.as_secs() as i64, d.subsec_millis())
}

/// Renders the status text, laid out top to bottom as it prints; also records when each peer
/// was last seen in sync. Returns whether everything is in sync.
pub fn render(model: &Model, opts: &Options) -> (String, bool) {
    let mut g = model.lock();
    let st = &mut *g;
    let seq = st.index.seq;
    let now = SystemTime::now();
    // Changes on disk that no scan has recorded yet are pending whatever the peers say.
    let mut all_in_sync = st.scanned && st.busy.is_empty() && !model.unscanned(st);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "left {} pid {} device {} share {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        short_id(st.index.device),
        crate::log::escape_controls(&model.root.display().to_string())
    );
    let t = st.index.totals();
    let (files, bytes) = (t.files, t.bytes);
    let mut body = String::new();
    for p in st.peers.values_mut() {
        all_in_sync &= peer_lines(&mut body, p, &st.index, seq, now);
    }
    all_in_sync &= dialer_lines(&mut body, st);
    if st.peers.len() < opts.peers.len() {
        all_in_sync = false;
    }
    let _ = writeln!(
        s,
        "state: {}",
        if all_in_sync { "in sync" } else { "pending" }
    );
    let _ = writeln!(s, "share: {files} files, {bytes} bytes");
    s.push_str(&body);
    if let Some((t, e)) = &st.last_error {
        let _ = writeln!(
            s,
            "last error: {} {}",
            when(*t),
            crate::log::escape_controls(e)
        );
    }
    (s, all_in_sync)
}

/// Writes a connected peer's line (and the file being received from it) into `body`, records
/// when it became in sync (`seq`: our index's number), and returns whether it is.
fn peer_lines(body: &mut String, p: &mut Peer, index: &Index, seq: u64, now: SystemTime) -> bool {
    let in_sync = p.in_sync(seq);
    // Recorded when it becomes in sync, so an idle daemon's status stays the same.
    if in_sync && !p.shown_in_sync {
        p.last_in_sync = Some(now);
    }
    p.shown_in_sync = in_sync;
    let recv_files = p.needs.len();
    let recv_bytes = p.needs.bytes();
    let send = index.count_since(p.peer_in_sync);
    let since = now.checked_sub(p.since.elapsed()).unwrap_or(now);
    let _ = writeln!(
        body,
        "peer {} device {}: connected since {}, last in sync {}, to receive {recv_files} files / {recv_bytes} bytes, to send {send} entries",
        p.addr,
        short_id(p.device),
        when(since),
        p.last_in_sync.map_or("never".into(), when),
    );
    if let Some(pr) = &p.progress {
        progress_line(body, pr);
    }
    in_sync
}

/// Writes the line of a file being received into `body`: how far, how fast, how long left.
fn progress_line(body: &mut String, pr: &Progress) {
    let secs = pr.started.elapsed().as_secs_f64().max(1e-3);
    let rate = pr.done as f64 / secs;
    let eta = (pr.size.saturating_sub(pr.done)) as f64 / rate.max(1.0);
    let _ = writeln!(
        body,
        "  receiving {}: {}% of {} bytes, {:.1} MB/s, ETA {:.0} s",
        crate::log::escape_controls(&pr.path),
        pr.done * 100 / pr.size.max(1),
        pr.size,
        rate / 1e6,
        eta
    );
}

/// Writes a line into `body` for each listed peer not connected; returns whether all are.
fn dialer_lines(body: &mut String, st: &State) -> bool {
    let mut all = true;
    let connected: Vec<u64> = st.peers.values().map(|p| p.device).collect();
    for (peer, d) in &st.dialers {
        if d.device.is_some_and(|dev| connected.contains(&dev)) {
            continue;
        }
        all = false;
        let _ = writeln!(
            body,
            "peer {peer}: not connected{}",
            d.last_error.as_ref().map_or(String::new(), |e| format!(
                " ({})",
                crate::log::escape_controls(e)
            ))
        );
    }
    all
}

/// Keeps the status file current: rewritten when its text changes, and every few seconds
/// anyway so that `left status` can tell a live daemon from a dead one.
#[derive(Default)]
pub struct Writer {
    last: String,
    at: Option<std::time::Instant>,
}

impl Writer {
    /// `now`: written even if unchanged (`left status` waits for a new file).
    pub fn write(&mut self, model: &Model, opts: &Options, now: bool) {
        let (text, _) = render(model, opts);
        if !now && text == self.last && self.at.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        let dir = &model.state_dir;
        let tmp = dir.join("status.tmp");
        let written = crate::sys::open::create_own(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if written.is_ok() && fs::rename(&tmp, dir.join("status")).is_ok() {
            self.last = text;
            self.at = Some(std::time::Instant::now());
        }
    }
}

/// Asks the daemon that wrote the status file `p` for a fresh one and waits for it (at most a
/// second): the file is then the daemon's state now, not up to a second ago. Where the daemon
/// cannot be signalled (another user's), the file is read as it is.
fn fresh(p: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(text) = fs::read_to_string(p) else {
        return;
    };
    let pid = text
        .split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(0);
    // Only a live `left` of this very binary is signalled (a pid in a stale file may be any
    // process's now, and SIGUSR1 would end it).
    let md = fs::metadata(p).ok();
    let recent = md
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|a| a < STALE);
    let exe = |pid: &str| fs::read_link(Path::new("/proc").join(pid).join("exe")).ok();
    let same = exe("self").is_some() && exe(&pid.to_string()) == exe("self");
    if !recent || !same {
        return;
    }
    let before = md.map(|m| m.ino());
    if !crate::sys::signal::send(pid, crate::sys::signal::SIGUSR1) {
        return;
    }
    let end = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < end {
        if fs::metadata(p).map(|m| m.ino()).ok() != before {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `left status`: prints the daemon's status; exit 0 in sync, 1 work pending, 2 no daemon.
pub fn show(dir: &Path) -> Result<u8> {
    let p = dir.join(STATE_DIR).join("status");
    fresh(&p);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::log::out(&format!(
                "no left daemon for {} (no status file)\n",
                dir.display()
            ));
            return Ok(2);
        }
        Err(e) => return Err(e).at(&p),
    };
    let age = fs::metadata(&p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    // Read where the daemon writes them, the first and second lines: no name elsewhere in
    // the text can pass for them (names are written with their control characters escaped,
    // and a share's path may hold any word).
    let mut lines = text.lines();
    let pid = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .skip_while(|w| *w != "pid")
        .nth(1)
        .unwrap_or("");
    let in_sync = lines.next() == Some("state: in sync");
    let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
    if !alive || age.is_none_or(|a| a > STALE) {
        crate::log::out(&format!(
            "no left daemon for {} (status is stale)\n",
            dir.display()
        ));
        return Ok(2);
    }
    crate::log::out(&text);
    Ok(if in_sync { 0 } else { 1 })
}
