//! The puller: brings entries a peer announced into the share, a batch at a time: deletions and
//! folders first, renames as moves, then the files' blocks (`transfer`), then the rest of the
//! deletions. A file is installed only when every block is verified: fsync, mode and mtime, and
//! a rename into place, under the lock, if nothing changed locally meanwhile. Temp files stay for
//! resume when anything fails.

use crate::dirfd::Dir;
use crate::error::{Context, Error, Result};
use crate::index::{Entry, Kind, Stat};
use crate::model::{Decision, Model, Out, State, decide};
use crate::names;
use crate::transfer;
use crate::wire::{Msg, Response};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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
            // Cut short (the connection failed): what the batch had begun keeps its temp file.
            if result.is_err() {
                g.keep_temp(e);
            }
        }
        if let Some(p) = g.peers.get_mut(&link.conn) {
            p.pulling = false;
            p.progress = None;
            // A pull that failed while the peer's next word made it moot (its need dropped
            // while the path was busy) leaves a temp file nothing will resume.
            for e in &batch {
                if p.retry.contains_key(&e.path) && p.needs.get(&e.path).is_none() {
                    p.retry.remove(&e.path);
                    remove_temp(&link.model.root, &e.path);
                }
            }
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
            let local = st.index.get(path);
            // A file that replaces a folder holding files waits, like a folder's deletion,
            // for the deletions of what the folder held, which come after it in the pass.
            if r.is_file()
                && p.pass_open
                && local
                    .as_ref()
                    .is_some_and(|l| l.kind == Kind::Dir && !l.deleted)
            {
                continue;
            }
            match decide(local.as_deref(), r) {
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
        // Not needed any more (ours is newer, or won): a pull of it that failed earlier is not
        // to be resumed.
        for m in moot {
            p.needs.remove(&m);
            p.retry.remove(&m);
            remove_temp(&link.model.root, &m);
            st.kept_temps.remove(&m);
        }
        // A file that replaces a folder of ours waits while needs under the folder stay out of
        // this batch: their deletions (deepest first, in the batch) empty the folder.
        let waits: Vec<String> = batch
            .iter()
            .filter(|r| {
                r.is_file()
                    && st
                        .index
                        .get(&r.path)
                        .is_some_and(|l| l.kind == Kind::Dir && !l.deleted)
            })
            .filter(|r| {
                let inside = format!("{}/", r.path);
                p.needs
                    .mem()
                    .range(inside.clone()..)
                    .take_while(|(k, _)| k.starts_with(&inside))
                    .any(|(k, _)| !batch.iter().any(|b| b.path == *k))
            })
            .map(|r| r.path.clone())
            .collect();
        batch.retain(|r| !waits.contains(&r.path));
        if !batch.is_empty() {
            p.pulling = true;
            for e in &batch {
                st.busy.insert(e.path.clone());
            }
            return Some(batch);
        }
        // Not while changes here wait for a scan: the peer would take itself for in sync.
        if p.remote_done
            && p.needs.is_empty()
            && !st.scan_pending
            && p.sent_in_sync != Some(p.remote_seq)
        {
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
    let root = &model.root;
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
        let Ok((from_dir, from)) = Dir::parent(root, &t.path, false) else {
            continue;
        };
        let unchanged = from_dir
            .stat(from)
            .is_ok_and(|md| md.is_some_and(|md| md.is_file() && Stat::of(&md) == old.stat));
        if !unchanged {
            continue;
        }
        let Ok((to_dir, to)) = Dir::parent(root, &e.path, true) else {
            continue;
        };
        if from_dir.rename(from, &to_dir, &names::temp_for(to)).is_ok() {
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

/// Records how a need ended: done (dropped), or failed (retried later).
pub fn finish_need(link: &Link<'_>, e: &Entry, r: Result<()>) {
    need_done(link.model, link.conn, e, r)
}

/// [`finish_need`] for connection `conn`.
pub fn need_done(model: &Model, conn: u64, e: &Entry, r: Result<()>) {
    let mut g = model.lock();
    if r.is_err() {
        g.keep_temp(e);
    }
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

/// The mode bits a peer's entry may set: permissions only, never set-uid, set-gid or sticky.
pub fn file_mode(e: &Entry) -> u32 {
    e.mode & 0o777
}

/// A folder's mode from a peer's entry: its permissions, and always ours to enter and change.
pub fn dir_mode(e: &Entry) -> u32 {
    e.mode & 0o777 | 0o700
}

/// Sets mode and mtime of a local file or folder to an entry's, through the file itself,
/// opened without following a symlink on the way; returns its stat afterwards.
pub fn set_meta(root: &Path, e: &Entry) -> Result<Stat> {
    let (dir, name) = Dir::parent(root, &e.path, false).at(&e.path)?;
    if e.kind == Kind::Dir {
        let d = dir.sub(name).at(&e.path)?;
        d.chmod(dir_mode(e)).at(&e.path)?;
        return Ok(Stat::of(&d.metadata().at(&e.path)?));
    }
    let f = dir.open_file(name, false).at(&e.path)?;
    f.set_permissions(fs::Permissions::from_mode(file_mode(e)))
        .at(&e.path)?;
    f.set_modified(mtime_of(e)).at(&e.path)?;
    Ok(Stat::of(&f.metadata().at(&e.path)?))
}

/// Removes the temp file of `path` if there is one (a pull that will not be finished).
pub fn remove_temp(root: &Path, path: &str) {
    if let Ok((dir, name)) = Dir::parent(root, path, false) {
        dir.unlink_file(&names::temp_for(name));
    }
}

/// Removes `left`'s temp files directly inside folder `name` of `dir`, so that they do not
/// keep it alive.
fn clear_temps(root: &Path, path: &str, dir: &Dir, name: &str) {
    let Ok(sub) = dir.sub(name) else { return };
    let Ok(rd) = sub.read_dir(&root.join(path)) else {
        return;
    };
    for x in rd.flatten() {
        if let Some(n) = x.file_name().to_str().filter(|n| names::is_temp(n)) {
            sub.unlink_file(n);
        }
    }
}

/// Whether files `a` and `b` of `dir` hold the same bytes (read, not assumed from a stat).
fn same_bytes(dir: &Dir, a: &str, b: &str) -> bool {
    use std::io::Read;
    let (Ok(fa), Ok(fb)) = (dir.open_file(a, false), dir.open_file(b, false)) else {
        return false;
    };
    let (Ok(ma), Ok(mb)) = (fa.metadata(), fb.metadata()) else {
        return false;
    };
    if !ma.is_file() || !mb.is_file() || ma.len() != mb.len() {
        return false;
    }
    let (mut ra, mut rb) = (io::BufReader::new(fa), io::BufReader::new(fb));
    let (mut x, mut y) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = match ra.read(&mut x) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return true;
        }
        if rb.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

/// Moves `from` (a file in `dir`) to a conflict name for `path`, made from `mtime` and
/// `device`, never replacing anything: a name taken by other content gets a number. Where the
/// name already holds this very content (`hash` as the index knows it, and byte for byte),
/// `from` is removed instead: it is kept there. Returns the name used.
fn keep_aside(
    st: &State,
    dir: &Dir,
    from: &str,
    path: &str,
    (mtime, device, hash): (i64, u64, &crate::hash::Hash),
) -> Result<String> {
    for n in 1..=1000 {
        let name = names::conflict_name(path, mtime, device, n);
        let (_, file) = names::split(&name);
        match dir.rename_noreplace(from, file) {
            Ok(()) => return Ok(name),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let same = st
                    .index
                    .get(&name)
                    .is_some_and(|c| c.is_file() && c.file_hash == *hash)
                    && same_bytes(dir, from, file);
                if same {
                    dir.unlink(from).at(&name)?;
                    return Ok(name);
                }
            }
            Err(err) => return Err(Error::from(err).at(&name)),
        }
    }
    Err(Error::msg("no free name for a conflict copy").at(path))
}

/// Applying a peer's entry to disk (a file, a folder, a deletion) starts the same way: under the
/// lock, the decision must still be to take it, and the folder that holds the target is opened
/// without following a symlink on the way. This holds the lock, our entry, whether ours is a
/// losing concurrent edit, that folder (`None` for a deletion whose folder is missing or is
/// not a folder: nothing is there to delete) and the target's name.
struct Apply<'a> {
    g: MutexGuard<'a, State>,
    cur: Option<Entry>,
    conflict: bool,
    dir: Option<Dir>,
    name: String,
}

fn begin<'a>(model: &'a Model, e: &Entry, create: bool) -> Result<Option<Apply<'a>>> {
    let g = model.lock();
    let cur = g.index.get(&e.path).map(std::borrow::Cow::into_owned);
    let Decision::Take { conflict } = decide(cur.as_ref(), e) else {
        return Ok(None);
    };
    let (dir, name) = match Dir::parent(&model.root, &e.path, create) {
        Ok((d, n)) => (Some(d), n),
        Err(_) if e.deleted => (None, names::split(&e.path).1),
        Err(err) => {
            let why = if err.raw_os_error() == Some(names::ELOOP) || err.raw_os_error() == Some(20)
            {
                "a folder on the way is not a folder (a symlink or a file?)".to_string()
            } else {
                err.to_string()
            };
            return Err(Error::msg(why).at(&e.path));
        }
    };
    Ok(Some(Apply {
        g,
        cur,
        conflict,
        dir,
        name: name.to_string(),
    }))
}

impl Apply<'_> {
    /// Whether the file on disk is the one our index knows (not edited since the last scan).
    fn known_file(&self, md: &fs::Metadata) -> bool {
        self.cur
            .as_ref()
            .is_some_and(|c| c.is_file() && c.stat == Stat::of(md))
    }

    /// The folder that holds the target (there for anything but deletions).
    fn dir(&self, e: &Entry) -> Result<&Dir> {
        self.dir
            .as_ref()
            .ok_or_else(|| Error::msg("its folder is missing").at(&e.path))
    }

    /// Keeps our losing file at the target as a conflict copy (named from our version's mtime
    /// and device), so that the peer's entry can take its place.
    fn keep_ours(&self, e: &Entry) -> Result<()> {
        let c = self.cur.as_ref().unwrap_or(e);
        let key = (c.mtime, c.modified_by, &c.file_hash);
        let name = keep_aside(&self.g, self.dir(e)?, &self.name, &e.path, key)?;
        info!("conflict: {} kept as {name}", e.path);
        Ok(())
    }

    /// What is at the target now.
    fn target(&self, e: &Entry) -> Result<Option<fs::Metadata>> {
        match &self.dir {
            Some(d) => d.stat(&self.name).at(&e.path),
            None => Ok(None),
        }
    }

    /// Records the peer's entry as ours, with the target's stat now (`None`: nothing there).
    /// A peer's edit that won over a concurrent deletion of ours takes in what the deletion
    /// knew: otherwise the version our deletion had removed could come back from a third peer
    /// as concurrent with the edit, and win. Likewise a peer's deletion that won over our file
    /// (made knowing the file: [`crate::model::remote_wins`]) takes in what our version knew.
    /// (A losing edit of ours is kept as a conflict copy and the winner taken as it is: merged,
    /// the winner would be concurrent with a later deletion by a peer that had the winner as it
    /// was, and come back over it.)
    fn record(mut self, e: &Entry, md: Option<&fs::Metadata>) {
        let mut ne = e.clone();
        if let Some(c) = &self.cur
            && (c.deleted || e.deleted)
            && e.version.compare(&c.version) == crate::version::Order::Concurrent
        {
            let merged = e.version.merged(&c.version);
            if merged.fits_with(self.g.index.device) {
                ne.version = merged;
            }
        }
        ne.stat = md.map(Stat::of).unwrap_or_default();
        self.g.kept_temps.remove(&e.path);
        self.g.put(ne);
    }
}

/// Under the lock: checks the decision still holds and that nothing changed on disk behind the
/// index's back, keeps a losing local edit as a conflict copy, then renames the temp file into
/// place. A folder holding files where the file goes stays: the file is kept beside it.
pub fn install(model: &Model, e: &Entry, durable: bool) -> Result<()> {
    let Some(mut a) = begin(model, e, false)? else {
        remove_temp(&model.root, &e.path);
        return Ok(());
    };
    let tmp = names::temp_for(&a.name);
    match a.target(e)? {
        Some(md) if md.is_file() => {
            if !a.known_file(&md) {
                return Err(
                    Error::msg("changed locally; will look again after the next scan").at(&e.path),
                );
            }
            if a.conflict {
                a.keep_ours(e)?;
            }
        }
        Some(md) if md.is_dir() => {
            let dir = a.dir(e)?;
            clear_temps(&model.root, &e.path, dir, &a.name);
            if let Err(err) = dir.rmdir(&a.name) {
                if !matches!(err.raw_os_error(), Some(39 | 17)) {
                    return Err(Error::from(err).at(&e.path));
                }
                // ENOTEMPTY: the folder holds files the peer's version does not know of.
                let device = a.g.index.device;
                let merged = a
                    .cur
                    .as_ref()
                    .map_or(e.version.clone(), |c| c.version.merged(&e.version));
                if !merged.fits_with(device) {
                    return Err(Error::msg("a folder holding files is in the way").at(&e.path));
                }
                let name = keep_aside(
                    &a.g,
                    dir,
                    &tmp,
                    &e.path,
                    (e.mtime, e.modified_by, &e.file_hash),
                )?;
                info!(
                    "conflict: {} is a folder holding files here; the file received for it is kept as {name}",
                    e.path
                );
                if durable {
                    dir.sync().at(&e.path)?;
                }
                let md = dir.stat(&a.name).at(&e.path)?;
                let mut d = a
                    .cur
                    .clone()
                    .filter(|c| c.kind == Kind::Dir)
                    .unwrap_or_else(|| Entry {
                        path: e.path.clone(),
                        kind: Kind::Dir,
                        mode: md.as_ref().map_or(0o755, |m| Stat::of(m).mode),
                        ..Entry::default()
                    });
                d.deleted = false;
                // The folder as it is here (our entry may be a tombstone, with no mode).
                d.mode = md.as_ref().map_or(0o755, |m| Stat::of(m).mode);
                d.version = d.version.merged(&e.version).bumped(device);
                d.modified_by = device;
                d.stat = md.as_ref().map(Stat::of).unwrap_or_default();
                a.g.put(d);
                return Ok(());
            }
        }
        Some(_) => return Err(Error::msg("a symlink or special file is in the way").at(&e.path)),
        // Our file is gone since the last scan: deleted here. Installed now, the peer's version
        // would take its place unseen, even one that the deletion, once scanned, wins over
        // (our own edit back with more merged in).
        None if a.cur.as_ref().is_some_and(Entry::is_file) => {
            return Err(
                Error::msg("deleted locally; will look again after the next scan").at(&e.path),
            );
        }
        None => {}
    }
    let dir = a.dir(e)?;
    // The file as it is made (mode and mtime set), before it can be touched under its name.
    let made = dir.stat(&tmp).at(&e.path)?;
    dir.rename(&tmp, dir, &a.name).at(&e.path)?;
    if durable {
        dir.sync().at(&e.path)?;
    }
    let md = dir.stat(&a.name).at(&e.path)?;
    // Changed the moment it got its name (a chmod between the rename and this stat): the
    // index keeps the stat it was made with, so that the next scan sees the change. Recorded
    // as it is now, the change would match the index and never be seen.
    let md = match (made, md) {
        (Some(made), Some(md)) if Stat::of(&made).ino == Stat::of(&md).ino => Some(made),
        (_, md) => md,
    };
    a.record(e, md.as_ref());
    Ok(())
}

fn apply_dir(model: &Model, e: &Entry) -> Result<()> {
    let Some(a) = begin(model, e, true)? else {
        return Ok(());
    };
    // A pull of a file of this name that failed will not be resumed: it is a folder now.
    let tmp = names::temp_for(&a.name);
    if a.dir(e)?
        .stat(&tmp)
        .is_ok_and(|m| m.is_some_and(|m| m.is_file()))
    {
        let _ = a.dir(e)?.unlink(&tmp);
    }
    match a.target(e)? {
        Some(md) if md.is_dir() => {}
        Some(md) if md.is_file() => {
            if !a.known_file(&md) {
                return Err(Error::msg("a file changed locally is in the way").at(&e.path));
            }
            let dir = a.dir(e)?;
            if a.conflict {
                // Our file is a concurrent edit that loses to the folder: kept beside it.
                a.keep_ours(e)?;
            } else {
                dir.unlink(&a.name).at(&e.path)?;
            }
            dir.mkdir(&a.name, 0o700).at(&e.path)?;
        }
        Some(_) => return Err(Error::msg("a symlink or special file is in the way").at(&e.path)),
        None => match a.dir(e)?.mkdir(&a.name, 0o700) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                return Err(Error::from(err).at(&e.path));
            }
            _ => {}
        },
    }
    // Through the folder itself: a chmod by name would follow a symlink swapped in meanwhile.
    let sub = a.dir(e)?.sub(&a.name).at(&e.path)?;
    sub.chmod(dir_mode(e)).at(&e.path)?;
    let md = sub.metadata().at(&e.path)?;
    a.record(e, Some(&md));
    Ok(())
}

fn apply_delete(model: &Model, e: &Entry) -> Result<()> {
    let Some(a) = begin(model, e, false)? else {
        return Ok(());
    };
    if let Some(dir) = &a.dir {
        // A pull of the file that will never be finished now.
        dir.unlink_file(&names::temp_for(&a.name));
        match dir.stat(&a.name).at(&e.path)? {
            Some(md) if md.is_file() => {
                if !a.known_file(&md) {
                    // Changed here since we last looked: the scan makes it a new version, which
                    // wins, or finds the same content (a touch), and then the deletion applies.
                    // Looked at again once the scan is done.
                    return Err(
                        Error::msg("changed locally; will look again after the next scan")
                            .at(&e.path),
                    );
                }
                dir.unlink(&a.name).at(&e.path)?;
                info!("deleted {}", e.path);
            }
            Some(md) if md.is_dir() => {
                // Stale temp files do not keep a deleted folder alive.
                clear_temps(&model.root, &e.path, dir, &a.name);
                if dir.rmdir(&a.name).is_ok() {
                    info!("deleted {}/", e.path);
                }
            }
            _ => {}
        }
    }
    a.record(e, None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local user swaps a folder of the share for a symlink to a folder outside it: setting
    /// a file's mode and mtime, or removing its temp file, must not reach through it.
    #[test]
    fn metadata_is_never_set_through_a_symlinked_folder() {
        let root = std::env::temp_dir().join(format!("left-meta-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let outside = root.with_extension("out");
        let _ = fs::remove_dir_all(&outside);
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"outside").unwrap();
        fs::write(outside.join(names::temp_for("f")), b"outside temp").unwrap();
        fs::set_permissions(outside.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        let before = fs::metadata(outside.join("f")).unwrap().modified().unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
        let e = Entry {
            path: "d/f".into(),
            mode: 0o777,
            mtime: 1_000_000,
            ..Entry::default()
        };
        assert!(set_meta(&root, &e).is_err());
        remove_temp(&root, "d/f");
        let md = fs::metadata(outside.join("f")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(md.modified().unwrap(), before);
        assert!(outside.join(names::temp_for("f")).exists());
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

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
