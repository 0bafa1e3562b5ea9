//! The puller: brings entries a peer announced into the share, a batch at a time: deletions and
//! folders first, renames as moves, then the files' blocks (`transfer`), then the rest of the
//! deletions. A file is installed only when every block is verified: fsync, mode and mtime, and
//! a rename into place, under the lock, if nothing changed locally meanwhile. Temp files stay for
//! resume when anything fails.

use crate::error::{Context, Error, Result};
use crate::index::{Entry, Kind, Stat};
use crate::model::{Decision, Model, Out, State, decide};
use crate::names;
use crate::transfer::{self, temp_path};
use crate::wire::{Msg, Response};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Entries taken per batch.
const BATCH_ENTRIES: usize = 1024;
/// Bytes of files taken per batch (one larger file still makes a batch of its own).
const BATCH_BYTES: u64 = 64 << 20;
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// File data received from peers since start (for logs and tests).
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Bytes of file data taken from local copies instead of the wire.
pub static REUSED: AtomicU64 = AtomicU64::new(0);

/// A response to one of our requests, with the MD5 of its data if it is a block: the
/// connection's reader computes it as the frame arrives, so blocks are checked on that thread
/// while the puller writes.
pub struct Answer {
    pub r: Response,
    pub md5: Option<crate::hash::Hash>,
}

/// What the puller of one connection works with.
pub struct Link<'a> {
    pub model: &'a Model,
    pub conn: u64,
    pub out: Sender<Out>,
    pub responses: Receiver<Answer>,
    /// Requests sent and not answered yet; the reader refuses responses beyond them.
    pub asked: Arc<AtomicUsize>,
    /// Block buffers shared with the connection's reader.
    pub pool: crate::pool::Pool,
}

/// Pulls until the connection closes (the peer entry disappears) or shutdown. Small files are
/// installed by a second thread (`transfer::installer`) while the next batch comes in.
pub fn run(link: &Link<'_>) -> Result<()> {
    let installs = transfer::Installs::default();
    let (model, conn) = (link.model, link.conn);
    std::thread::scope(|s| {
        s.spawn(|| transfer::installer(model, conn, &installs));
        let r = pull_loop(link, &installs);
        // The installer finishes what it holds, then ends.
        installs.close();
        r
    })
}

fn pull_loop(link: &Link<'_>, install: &transfer::Installs) -> Result<()> {
    let mut next_id = 1u32;
    let limit = crate::limits::limit();
    while let Some(batch) = take_batch(link, limit) {
        let mut handed = HashSet::new();
        let result = pull_batch(link, &batch, install, &mut handed, &mut next_id);
        let mut g = link.model.lock();
        for e in batch.iter().filter(|e| !handed.contains(&e.path)) {
            g.busy.remove(&e.path);
        }
        if let Some(p) = g.peers.get_mut(&link.conn) {
            p.pulling = false;
            p.progress = None;
        }
        link.model.changed.notify_all();
        drop(g);
        result?;
    }
    Ok(())
}

/// Waits for needs of this connection and takes a batch, marking the paths busy. Also tells the
/// peer when we hold everything it announced. `None` when the connection is gone.
fn take_batch(link: &Link<'_>, open_limit: u64) -> Option<Vec<Entry>> {
    let mut g = link.model.lock();
    loop {
        if g.shutdown {
            return None;
        }
        let now = Instant::now();
        let st = &mut *g;
        // Every connection may pull at once: each keeps its batch's files within its share of
        // the open-file limit.
        let max_files = crate::limits::batch_files(open_limit, st.peers.len());
        if let Err(e) = link.model.refill_needs(st, link.conn) {
            // What the peer announced cannot be read back: the connection starts over.
            warn!("{e}");
            let p = st.peers.get(&link.conn)?;
            let _ = p.stream.shutdown(std::net::Shutdown::Both);
            return None;
        }
        let p = st.peers.get_mut(&link.conn)?;
        let mut batch = Vec::new();
        let (mut bytes, mut files) = (0u64, 0usize);
        let mut moot = Vec::new();
        for (path, r) in p.needs.mem() {
            if st.busy.contains(path) || p.retry.get(path).is_some_and(|t| *t > now) {
                continue;
            }
            // A folder's deletion waits until the deletions of what is inside it are done: until
            // the pass that announced it is complete (what it held may come after it), and
            // while entries wait on disk (they may be inside it, unless memory is crowded).
            if r.deleted && r.kind == Kind::Dir {
                if p.pass_open || (p.needs.waiting() && !p.needs.crowded()) {
                    continue;
                }
                let inside = format!("{path}/");
                if p.needs
                    .mem()
                    .range(inside.clone()..)
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(&inside))
                {
                    continue;
                }
            }
            match decide(st.index.get(path).as_deref(), r) {
                Decision::Take { .. } => {
                    // Deletions and folders always fit: a renamed big file and the deletion of
                    // its old name stay in one batch, so the file is moved, not copied.
                    let full = batch.len() >= BATCH_ENTRIES
                        || (r.is_file() && files >= max_files)
                        || (r.size > 0 && bytes > 0 && bytes + r.size > BATCH_BYTES);
                    if full {
                        break;
                    }
                    bytes += r.size;
                    files += usize::from(r.is_file());
                    batch.push(r.clone());
                }
                _ => moot.push(path.clone()),
            }
        }
        for m in moot {
            p.needs.remove(&m);
        }
        if !batch.is_empty() {
            p.pulling = true;
            for e in &batch {
                st.busy.insert(e.path.clone());
            }
            return Some(batch);
        }
        if p.remote_done && p.needs.is_empty() && p.sent_in_sync != Some(p.remote_seq) {
            p.sent_in_sync = Some(p.remote_seq);
            let _ = p.out.send(Out::Frame(crate::wire::encode(&Msg::InSync {
                seq: p.remote_seq,
            })));
        }
        g = link.model.wait(g, Duration::from_millis(500));
    }
}

/// Applies one batch. Small files go to the installer (their paths into `handed`, which then
/// owns them); the rest is done when this returns.
fn pull_batch(
    link: &Link<'_>,
    batch: &[Entry],
    install: &transfer::Installs,
    handed: &mut HashSet<String>,
    next_id: &mut u32,
) -> Result<()> {
    let model = link.model;
    // Deletions that stand in the way of a new file or folder (same path, or an ancestor of it)
    // go first; other deletions go last, so a renamed file's blocks can still be copied locally.
    let under =
        |a: &str, b: &str| a.len() > b.len() && a.starts_with(b) && a.as_bytes()[b.len()] == b'/';
    let in_way = |t: &str| {
        batch
            .iter()
            .any(|n| !n.deleted && (n.path == t || under(&n.path, t) || under(t, &n.path)))
    };
    let (early, late): (Vec<&Entry>, Vec<&Entry>) = batch
        .iter()
        .filter(|e| e.deleted)
        .partition(|e| in_way(&e.path));
    // Deepest first.
    for e in early.iter().rev() {
        let r = apply_delete(model, e);
        finish_need(link, e, r);
    }
    for e in batch.iter().filter(|e| !e.deleted && e.kind == Kind::Dir) {
        let r = apply_dir(model, e);
        finish_need(link, e, r);
    }
    let files: Vec<Entry> = batch.iter().filter(|e| e.is_file()).cloned().collect();
    let mut moved = HashMap::new();
    for e in &files {
        if let Some(old) = rename_if_moved(model, e, &late) {
            moved.insert(e.path.clone(), old);
        }
    }
    let result = if files.is_empty() {
        Ok(())
    } else {
        transfer::transfer(link, files, &moved, install, handed, next_id)
    };
    // The batch's files are installed, their data durable, before the files it deletes are
    // gone: blocks may have been copied from them.
    if !late.is_empty() {
        install.wait_idle();
    }
    for e in late.iter().rev() {
        let r = apply_delete(model, e);
        finish_need(link, e, r);
    }
    result
}

/// A renamed or moved file: when a new file has the content of a local file that this batch
/// deletes, the local file is moved to the new file's temp name, where the transfer finds every
/// block already in place. Nothing crosses the wire, nothing is copied or read again. Returns
/// the moved file's entry.
fn rename_if_moved(model: &Model, e: &Entry, deleted: &[&Entry]) -> Option<Entry> {
    if e.size == 0 {
        return None;
    }
    let mut g = model.lock();
    for t in deleted {
        let Some(old) = g.index.get(&t.path).map(std::borrow::Cow::into_owned) else {
            continue;
        };
        if !(old.is_file() && old.size == e.size && old.file_hash == e.file_hash) {
            continue;
        }
        if !matches!(decide(Some(&old), t), Decision::Take { .. }) {
            continue;
        }
        let from = abs(&model.root, &t.path);
        let unchanged =
            fs::symlink_metadata(&from).is_ok_and(|md| md.is_file() && Stat::of(&md) == old.stat);
        if !unchanged || names::check_ancestors(&model.root, &e.path).is_err() {
            continue;
        }
        let to = temp_path(&model.root, &e.path);
        if let Some(dir) = to.parent() {
            let _ = fs::create_dir_all(dir);
        }
        if fs::rename(&from, &to).is_ok() {
            info!("renamed {} -> {}", t.path, e.path);
            // The old name's deletion is applied now, so no scan mistakes it for a local one.
            let mut gone = (*t).clone();
            gone.stat = Stat::default();
            g.put(gone);
            return Some(old);
        }
    }
    None
}

fn abs(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

/// Records how a need ended: done (dropped), or failed (retried later).
pub fn finish_need(link: &Link<'_>, e: &Entry, r: Result<()>) {
    need_done(link.model, link.conn, e, r)
}

/// [`finish_need`] for connection `conn`.
pub fn need_done(model: &Model, conn: u64, e: &Entry, r: Result<()>) {
    let mut g = model.lock();
    let Some(p) = g.peers.get_mut(&conn) else {
        return;
    };
    match r {
        Ok(()) => {
            if p.needs.get(&e.path).is_some_and(|n| n.version == e.version) {
                p.needs.remove(&e.path);
            }
            p.retry.remove(&e.path);
        }
        Err(err) => {
            warn!("{}: not synced yet: {err}", e.path);
            p.retry.insert(e.path.clone(), Instant::now() + RETRY_AFTER);
            g.last_error = Some((std::time::SystemTime::now(), format!("{}: {err}", e.path)));
        }
    }
}

/// An entry's mtime as a time; one outside what the system can hold (a peer can send any
/// number) becomes the epoch rather than an overflow.
pub fn mtime_of(e: &Entry) -> SystemTime {
    let t = if e.mtime >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(e.mtime as u64, e.mtime_ns))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(e.mtime.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(e.mtime_ns as u64)))
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// Sets mode and mtime of a local file to an entry's; returns its stat afterwards.
pub fn set_meta(root: &Path, e: &Entry) -> Result<Stat> {
    let path = abs(root, &e.path);
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(names::O_NOFOLLOW)
        .open(&path)
        .at(&path)?;
    f.set_permissions(fs::Permissions::from_mode(e.mode & 0o7777))
        .at(&path)?;
    f.set_modified(mtime_of(e)).at(&path)?;
    Ok(Stat::of(&f.metadata().at(&path)?))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Applying a peer's entry to disk (a file, a folder, a deletion) starts the same way: under the
/// lock, the decision must still be to take it, and no folder on the way may be a symlink. This
/// holds the lock, our entry, whether ours is a losing concurrent edit, and the target path.
struct Apply<'a> {
    g: MutexGuard<'a, State>,
    cur: Option<Entry>,
    conflict: bool,
    target: PathBuf,
}

fn begin<'a>(model: &'a Model, e: &Entry) -> Result<Option<Apply<'a>>> {
    let g = model.lock();
    let cur = g.index.get(&e.path).map(std::borrow::Cow::into_owned);
    let Decision::Take { conflict } = decide(cur.as_ref(), e) else {
        return Ok(None);
    };
    names::check_ancestors(&model.root, &e.path)?;
    let target = abs(&model.root, &e.path);
    Ok(Some(Apply {
        g,
        cur,
        conflict,
        target,
    }))
}

impl Apply<'_> {
    /// Whether the file on disk is the one our index knows (not edited since the last scan).
    fn known_file(&self, md: &fs::Metadata) -> bool {
        self.cur
            .as_ref()
            .is_some_and(|c| c.is_file() && c.stat == Stat::of(md))
    }

    /// Records the peer's entry as ours, with the target's stat now.
    fn record(mut self, e: &Entry, exists: bool) -> Result<()> {
        let mut ne = e.clone();
        ne.stat = if exists {
            Stat::of(&fs::symlink_metadata(&self.target).at(&self.target)?)
        } else {
            Stat::default()
        };
        self.g.put(ne);
        Ok(())
    }
}

/// Under the lock: checks the decision still holds and that nothing changed on disk behind the
/// index's back, keeps a losing local edit as a conflict copy, then renames the temp into place.
pub fn install(model: &Model, e: &Entry, tmp: &Path, durable: bool) -> Result<()> {
    let Some(a) = begin(model, e)? else {
        let _ = fs::remove_file(tmp);
        return Ok(());
    };
    let target = &a.target;
    match fs::symlink_metadata(target) {
        Ok(md) if md.is_file() => {
            if !a.known_file(&md) {
                return Err(
                    Error::msg("changed locally; will look again after the next scan").at(&e.path),
                );
            }
            if a.conflict {
                let c = a.cur.as_ref().unwrap_or(e);
                let name = names::conflict_name(&e.path, c.mtime, c.modified_by);
                fs::rename(target, abs(&model.root, &name)).at(target)?;
                info!("conflict: {} kept as {name}", e.path);
            }
        }
        Ok(md) if md.is_dir() => fs::remove_dir(target).at(target)?,
        Ok(_) => return Err(Error::msg("a symlink or special file is in the way").at(&e.path)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(Error::from(err).at(target)),
    }
    fs::rename(tmp, target).at(target)?;
    if durable {
        sync_dir(target.parent().unwrap_or(&model.root))?;
    }
    a.record(e, true)
}

fn apply_dir(model: &Model, e: &Entry) -> Result<()> {
    let Some(a) = begin(model, e)? else {
        return Ok(());
    };
    let target = &a.target;
    match fs::symlink_metadata(target) {
        Ok(md) if md.is_dir() => {}
        Ok(md) if md.is_file() => {
            if !a.known_file(&md) {
                return Err(Error::msg("a file changed locally is in the way").at(&e.path));
            }
            fs::remove_file(target).at(target)?;
            fs::create_dir(target).at(target)?;
        }
        Ok(_) => return Err(Error::msg("a symlink or special file is in the way").at(&e.path)),
        Err(_) => fs::create_dir_all(target).at(target)?,
    }
    // Through the folder itself: a chmod by name would follow a symlink swapped in meanwhile.
    OpenOptions::new()
        .read(true)
        .custom_flags(names::O_NOFOLLOW | names::O_DIRECTORY)
        .open(target)
        .and_then(|d| d.set_permissions(fs::Permissions::from_mode(e.mode & 0o7777 | 0o700)))
        .at(target)?;
    a.record(e, true)
}

fn apply_delete(model: &Model, e: &Entry) -> Result<()> {
    let Some(a) = begin(model, e)? else {
        return Ok(());
    };
    let target = &a.target;
    match fs::symlink_metadata(target) {
        Ok(md) if md.is_file() => {
            if !a.known_file(&md) {
                // Changed here since we last looked: the scan will make it a new version, which wins.
                return Ok(());
            }
            fs::remove_file(target).at(target)?;
            info!("deleted {}", e.path);
        }
        Ok(md) if md.is_dir() => {
            // Stale temp files do not keep a deleted folder alive.
            if let Ok(rd) = fs::read_dir(target) {
                for x in rd.flatten() {
                    if x.file_name().to_str().is_some_and(names::is_temp) {
                        let _ = fs::remove_file(x.path());
                    }
                }
            }
            if fs::remove_dir(target).is_ok() {
                info!("deleted {}/", e.path);
            }
        }
        _ => {}
    }
    a.record(e, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_mtimes_do_not_overflow() {
        for (s, ns) in [
            (i64::MIN, 999_999_999),
            (i64::MAX, 999_999_999),
            (-1, 5),
            (0, 0),
        ] {
            let e = Entry {
                mtime: s,
                mtime_ns: ns,
                ..Entry::default()
            };
            let _ = mtime_of(&e);
        }
        let e = Entry {
            mtime: 1_000,
            mtime_ns: 7,
            ..Entry::default()
        };
        assert_eq!(mtime_of(&e), UNIX_EPOCH + Duration::new(1_000, 7));
    }
}
