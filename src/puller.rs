//! The puller: brings entries a peer announced into the share, as a pipeline per batch:
//! plan each block's source (our temp file, our other files, or the peer), request what only the
//! peer has with several requests in flight, verify every block's MD5 and the whole file's, fsync,
//! set mode and mtime, and rename into place. Temp files stay for resume when anything fails.

use crate::delta::Pipe;
use crate::error::{Context, Error, Result};
use crate::hash::{Hash, md5};
use crate::index::{Entry, Kind, Stat};
use crate::model::{Decision, Model, Out, Progress, State, decide};
use crate::names;
use crate::wire::{Msg, Response, Status};
use md5::{Digest, Md5};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes of block data in flight per connection: keeps a fast link full, memory small.
const WINDOW_BYTES: u64 = 1 << 20;
/// Entries taken per batch.
const BATCH_ENTRIES: usize = 256;
/// Bytes of files taken per batch (one larger file still makes a batch of its own).
const BATCH_BYTES: u64 = 64 << 20;
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// File data received from peers since start (for logs and tests).
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Bytes of file data taken from local copies instead of the wire.
pub static REUSED: AtomicU64 = AtomicU64::new(0);

/// What the puller of one connection works with.
pub struct Link<'a> {
    pub model: &'a Model,
    pub conn: u64,
    pub out: Sender<Out>,
    pub responses: Receiver<Response>,
    /// Requests sent and not answered yet; the reader refuses responses beyond them.
    pub asked: Arc<AtomicUsize>,
}

/// Pulls until the connection closes (the peer entry disappears) or shutdown.
pub fn run(link: &Link<'_>) -> Result<()> {
    let mut next_id = 1u32;
    while let Some(batch) = take_batch(link) {
        let result = pull_batch(link, &batch, &mut next_id);
        let mut g = link.model.lock();
        for e in &batch {
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
fn take_batch(link: &Link<'_>) -> Option<Vec<Entry>> {
    let mut g = link.model.lock();
    loop {
        if g.shutdown {
            return None;
        }
        let now = Instant::now();
        let st = &mut *g;
        let p = st.peers.get_mut(&link.conn)?;
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        let mut moot = Vec::new();
        for (path, r) in &p.needs {
            if st.busy.contains(path) || p.retry.get(path).is_some_and(|t| *t > now) {
                continue;
            }
            // A folder's deletion waits until the deletions of what is inside it are done.
            if r.deleted && r.kind == Kind::Dir {
                let inside = format!("{path}/");
                if p.needs
                    .range(inside.clone()..)
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(&inside))
                {
                    continue;
                }
            }
            match decide(st.index.entries.get(path), r) {
                Decision::Take { .. } => {
                    // Deletions and folders always fit: a renamed big file and the deletion of
                    // its old name stay in one batch, so the file is moved, not copied.
                    let full = batch.len() >= BATCH_ENTRIES
                        || (r.size > 0 && bytes > 0 && bytes + r.size > BATCH_BYTES);
                    if full {
                        break;
                    }
                    bytes += r.size;
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

fn pull_batch(link: &Link<'_>, batch: &[Entry], next_id: &mut u32) -> Result<()> {
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
    for e in &files {
        rename_if_moved(model, e, &late);
    }
    let result = if files.is_empty() {
        Ok(())
    } else {
        transfer(link, files, next_id)
    };
    for e in late.iter().rev() {
        let r = apply_delete(model, e);
        finish_need(link, e, r);
    }
    result
}

/// A renamed or moved file: when a new file has the content of a local file that this batch
/// deletes, the local file is moved to the new file's temp name, where the transfer finds every
/// block already in place. Nothing crosses the wire and nothing is copied.
fn rename_if_moved(model: &Model, e: &Entry, deleted: &[&Entry]) {
    if e.size == 0 {
        return;
    }
    let mut g = model.lock();
    for t in deleted {
        let Some(old) = g.index.entries.get(&t.path) else {
            continue;
        };
        if !(old.is_file() && old.size == e.size && old.md5 == e.md5) {
            continue;
        }
        if !matches!(decide(Some(old), t), Decision::Take { .. }) {
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
            return;
        }
    }
}

/// Records how a need ended: done (dropped), or failed (retried later).
fn finish_need(link: &Link<'_>, e: &Entry, r: Result<()>) {
    let mut g = link.model.lock();
    let Some(p) = g.peers.get_mut(&link.conn) else {
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

/// Where a block comes from.
enum Src {
    /// Already in the temp file (resume).
    Have,
    /// The same data as an earlier block of this file, at this offset of the temp file.
    Same(u64),
    /// A local file holding a block with this hash, at this offset.
    Local(String, u64),
    /// Only the peer has it.
    Remote,
    /// The peer has it and we hold an older version of the same range: delta transfer.
    Delta,
}

struct Pull {
    e: Entry,
    tmp_path: PathBuf,
    tmp: File,
    failed: bool,
    t0: Instant,
    wire: u64,
    reused: u64,
    /// Bytes of the file verified so far.
    done: u64,
    /// Up to where writeback of the temp file has been started.
    flushed: u64,
    /// The local file holding the old version of this one, for delta transfer.
    old: Option<PathBuf>,
    /// Delta transfer pays off so far (turned off when most sub-blocks differ).
    delta_on: bool,
    delta_subs: (usize, usize),
}

/// Files under this size are installed in groups, sharing their filesystem syncs.
const SMALL_FILE: u64 = 1 << 20;
/// How many small files wait for a shared sync at most.
const READY_BATCH: usize = 128;

/// Files at least this large show progress in status and, every few seconds, in the log.
const PROGRESS_MIN: u64 = 8 << 20;
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

fn progress(link: &Link<'_>, p: &Pull, last_log: &mut Instant) {
    let secs = p.t0.elapsed().as_secs_f64().max(1e-3);
    let rate = p.done as f64 / secs;
    if last_log.elapsed() >= PROGRESS_LOG_EVERY {
        *last_log = Instant::now();
        let eta = (p.e.size - p.done.min(p.e.size)) as f64 / rate.max(1.0);
        info!(
            "receiving {}: {}% of {} bytes, {:.1} MB/s, ETA {:.0} s",
            p.e.path,
            p.done * 100 / p.e.size.max(1),
            p.e.size,
            rate / 1e6,
            eta
        );
    }
    let mut g = link.model.lock();
    if let Some(peer) = g.peers.get_mut(&link.conn) {
        peer.progress = Some(Progress {
            path: p.e.path.clone(),
            size: p.e.size,
            done: p.done,
            started: p.t0,
        });
    }
}

struct Job {
    file: usize,
    block: usize,
    src: Src,
}

fn abs(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

fn temp_path(root: &Path, rel: &str) -> PathBuf {
    let (dir, name) = names::split(rel);
    root.join(dir).join(names::temp_for(name))
}

fn transfer(link: &Link<'_>, files: Vec<Entry>, next_id: &mut u32) -> Result<()> {
    let root = &link.model.root;
    // Which blocks our other files already hold, found in one pass over the index.
    let needed: HashSet<Hash> = files
        .iter()
        .flat_map(|e| e.blocks.iter().copied())
        .collect();
    let mut sources: HashMap<Hash, (String, u64)> = HashMap::new();
    {
        let g = link.model.lock();
        for e in g.index.entries.values().filter(|e| e.is_file()) {
            for (i, b) in e.blocks.iter().enumerate() {
                if needed.contains(b) && !sources.contains_key(b) {
                    sources.insert(*b, (e.path.clone(), e.block_range(i).0));
                }
            }
        }
    }
    drop(needed);

    let mut pulls: Vec<Pull> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut buf = Vec::new();
    for e in files {
        let tmp_path = temp_path(root, &e.path);
        let opened = (|| -> Result<File> {
            names::check_ancestors(root, &e.path)?;
            if let Some(dir) = tmp_path.parent() {
                fs::create_dir_all(dir).at(dir)?;
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&tmp_path)
                .at(&tmp_path)?;
            let len = f.metadata().at(&tmp_path)?.len();
            if len > e.size {
                f.set_len(e.size).at(&tmp_path)?;
            }
            Ok(f)
        })();
        let tmp = match opened {
            Ok(f) => f,
            Err(err) => {
                finish_need(link, &e, Err(err));
                continue;
            }
        };
        let tlen = tmp.metadata().map(|m| m.len()).unwrap_or(0);
        let fi = pulls.len();
        // Our current version of this file, if unchanged on disk, is the base for deltas.
        let old_size = {
            let g = link.model.lock();
            g.index
                .entries
                .get(&e.path)
                .filter(|c| c.is_file() && c.size > 0)
                .and_then(|c| {
                    let md = fs::symlink_metadata(abs(root, &e.path)).ok()?;
                    (md.is_file() && Stat::of(&md) == c.stat).then_some(c.size)
                })
        };
        let mut first: HashMap<Hash, u64> = HashMap::new();
        for (i, want) in e.blocks.iter().enumerate() {
            let (off, len) = e.block_range(i);
            let src = if off + len as u64 <= tlen
                && read_at(&tmp, &mut buf, off, len).is_ok()
                && md5(&buf) == *want
            {
                Src::Have
            } else if let Some(o) = first.get(want) {
                Src::Same(*o)
            } else if let Some((p, o)) = sources.get(want) {
                Src::Local(p.clone(), *o)
            } else if old_size.is_some_and(|sz| off < sz) {
                Src::Delta
            } else {
                Src::Remote
            };
            first.entry(*want).or_insert(off);
            jobs.push(Job {
                file: fi,
                block: i,
                src,
            });
        }
        let old = old_size.map(|_| abs(root, &e.path));
        pulls.push(Pull {
            e,
            tmp_path,
            tmp,
            failed: false,
            t0: Instant::now(),
            wire: 0,
            reused: 0,
            done: 0,
            flushed: 0,
            old,
            delta_on: true,
            delta_subs: (0, 0),
        });
    }
    // Small files verified but not installed yet: made durable together (see `flush_ready`).
    let mut ready: Vec<usize> = Vec::new();
    // Empty files have no blocks: finish them now.
    for fi in 0..pulls.len() {
        if pulls[fi].e.blocks.is_empty() {
            finish_file(link, &mut pulls, fi, md5(b""), &mut ready);
        }
    }

    // Requests go out in job order, up to the window; responses are matched by id.
    let remote: Vec<usize> = jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| matches!(j.src, Src::Remote | Src::Delta))
        .map(|(i, _)| i)
        .collect();
    let mut ids: HashMap<usize, (u32, bool)> = HashMap::new();
    let mut pipe = Pipe::new(link, next_id);
    let mut sent = 0usize;
    let mut in_flight = 0u64;
    let mut local_file: Option<(String, File)> = None;
    let mut last_progress = Instant::now();
    let mut last_log = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        // The whole-file MD5 runs on a second core; blocks go to it in order, tagged by file.
        let (to_hasher, hasher_rx) = mpsc::sync_channel::<(usize, Option<Vec<u8>>)>(8);
        let (digest_tx, digests) = mpsc::channel::<Hash>();
        let (spare_tx, spare) = mpsc::channel::<Vec<u8>>();
        scope.spawn(move || {
            let mut cur: Option<(usize, Md5)> = None;
            for (fi, data) in hasher_rx {
                let h = match &mut cur {
                    Some((f, h)) if *f == fi => h,
                    _ => &mut cur.insert((fi, Md5::new())).1,
                };
                match data {
                    Some(d) => {
                        h.update(&d);
                        let _ = spare_tx.send(d);
                    }
                    None => {
                        let h = cur
                            .take()
                            .map_or_else(|| Md5::new().finalize(), |(_, h)| h.finalize());
                        let _ = digest_tx.send(h.into());
                    }
                }
            }
        });
        for ji in 0..jobs.len() {
            if ready.len() >= READY_BATCH {
                flush_ready(link, &mut pulls, &mut ready);
            }
            while sent < remote.len() && in_flight < WINDOW_BYTES {
                let rj = remote[sent];
                let j = &jobs[rj];
                sent += 1;
                let p = &pulls[j.file];
                if p.failed {
                    continue;
                }
                let id = match (&j.src, &p.old) {
                    (Src::Delta, Some(old)) if p.delta_on => {
                        (pipe.request_delta(&p.e, j.block, old.clone())?, true)
                    }
                    _ => (pipe.request(&p.e, j.block)?, false),
                };
                ids.insert(rj, id);
                in_flight += p.e.block_range(j.block).1 as u64;
            }
            let job = &jobs[ji];
            let p = &mut pulls[job.file];
            let issued = ids.remove(&ji);
            if let Some((id, _)) = issued {
                in_flight -= (p.e.block_range(job.block).1 as u64).min(in_flight);
                if p.failed {
                    pipe.forget(id);
                }
            }
            if p.failed {
                continue;
            }
            let want = p.e.blocks[job.block];
            let (off, len) = p.e.block_range(job.block);
            let mut data = None;
            match &job.src {
                Src::Have => {
                    read_at(&p.tmp, &mut buf, off, len).at(&p.tmp_path)?;
                    p.reused += len as u64;
                    data = Some(std::mem::take(&mut buf));
                }
                Src::Same(o) => {
                    if read_at(&p.tmp, &mut buf, *o, len).is_ok() && md5(&buf) == want {
                        p.reused += len as u64;
                        data = Some(std::mem::take(&mut buf));
                    }
                }
                Src::Local(path, o) => {
                    if local_file.as_ref().is_none_or(|(p, _)| p != path)
                        && let Ok(f) = OpenOptions::new()
                            .read(true)
                            .custom_flags(O_NOFOLLOW)
                            .open(abs(root, path))
                    {
                        local_file = Some((path.clone(), f));
                    }
                    if let Some((lp, f)) = &local_file
                        && lp == path
                        && read_at(f, &mut buf, *o, len).is_ok()
                        && md5(&buf) == want
                    {
                        p.reused += len as u64;
                        data = Some(std::mem::take(&mut buf));
                    }
                }
                Src::Remote | Src::Delta => {}
            }
            // A delta block: the old version with the changed sub-blocks patched in.
            if let Some((id, true)) = issued {
                let d = pipe.wait_delta(id)?;
                p.wire += d.wire;
                RECEIVED.fetch_add(d.wire, Ordering::Relaxed);
                p.delta_subs.0 += d.changed;
                p.delta_subs.1 += d.total;
                // Mostly changed blocks cost an extra round trip for nothing: stop for this file.
                if p.delta_subs.1 >= 128 && p.delta_subs.0 * 4 > p.delta_subs.1 * 3 {
                    p.delta_on = false;
                }
                if !d.failed && md5(&d.block) == want {
                    p.reused += (len as u64).saturating_sub(d.wire);
                    data = Some(d.block);
                }
            }
            let data = match data {
                Some(d) => d,
                None => {
                    // From the peer: in flight already, or asked for now (a local copy or a
                    // delta went wrong).
                    let id = match issued {
                        Some((id, false)) => id,
                        _ => pipe.request(&p.e, job.block)?,
                    };
                    let r = pipe.wait(id)?;
                    p.wire += r.data.len() as u64;
                    RECEIVED.fetch_add(r.data.len() as u64, Ordering::Relaxed);
                    match r.status {
                        Status::Ok if r.data.len() == len && md5(&r.data) == want => r.data,
                        Status::Ok => {
                            fail(
                                link,
                                p,
                                format!("block {} from the peer does not match its MD5", job.block),
                            );
                            continue;
                        }
                        _ => {
                            fail(
                                link,
                                p,
                                "changed on the peer while being sent; waiting for its new version"
                                    .into(),
                            );
                            continue;
                        }
                    }
                }
            };
            if !matches!(job.src, Src::Have)
                && let Err(e) = p.tmp.write_all_at(&data, off)
            {
                fail(link, p, format!("writing {}: {e}", p.tmp_path.display()));
                continue;
            }
            p.done += data.len() as u64;
            // Start writing big files out as they arrive, so the fsync before the rename finds
            // little left to do (the disk works while the network does).
            let end = off + len as u64;
            if end - p.flushed >= WRITEBACK_EVERY {
                start_writeback(&p.tmp, p.flushed, end - p.flushed);
                p.flushed = end;
            }
            to_hasher
                .send((job.file, Some(data)))
                .map_err(|_| Error::msg("hash thread ended"))?;
            buf = spare.try_recv().unwrap_or_default();
            if p.e.size >= PROGRESS_MIN && last_progress.elapsed() >= Duration::from_millis(200) {
                last_progress = Instant::now();
                progress(link, p, &mut last_log);
            }
            if job.block + 1 == p.e.blocks.len() {
                to_hasher
                    .send((job.file, None))
                    .map_err(|_| Error::msg("hash thread ended"))?;
                let digest = digests
                    .recv()
                    .map_err(|_| Error::msg("hash thread ended"))?;
                finish_file(link, &mut pulls, job.file, digest, &mut ready);
            }
        }
        Ok(())
    })?;
    flush_ready(link, &mut pulls, &mut ready);
    REUSED.fetch_add(pulls.iter().map(|p| p.reused).sum(), Ordering::Relaxed);
    Ok(())
}

fn fail(link: &Link<'_>, p: &mut Pull, why: String) {
    p.failed = true;
    finish_need(link, &p.e, Err(Error::msg(why)));
}

fn read_at(f: &File, buf: &mut Vec<u8>, off: u64, len: usize) -> io::Result<()> {
    buf.resize(len, 0);
    f.read_exact_at(buf, off)
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub const O_NOFOLLOW: i32 = 0o400000;
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
pub const O_NOFOLLOW: i32 = 0o100000;

/// Verifies the whole file, makes it durable, and installs it under its real name.
fn finish_file(
    link: &Link<'_>,
    pulls: &mut [Pull],
    fi: usize,
    digest: Hash,
    ready: &mut Vec<usize>,
) {
    let p = &mut pulls[fi];
    let big = p.e.size >= SMALL_FILE;
    let r = (|| -> Result<()> {
        if digest != p.e.md5 {
            let _ = fs::remove_file(&p.tmp_path);
            return Err(Error::msg(
                "whole-file MD5 does not match what the peer announced; discarded",
            )
            .at(&p.e.path));
        }
        p.tmp.set_len(p.e.size).at(&p.tmp_path)?;
        p.tmp
            .set_permissions(fs::Permissions::from_mode(p.e.mode & 0o7777))
            .at(&p.tmp_path)?;
        p.tmp.set_modified(mtime_of(&p.e)).at(&p.tmp_path)?;
        if big {
            p.tmp.sync_all().at(&p.tmp_path)?;
            install(link.model, &p.e, &p.tmp_path, true)?;
        }
        Ok(())
    })();
    match r {
        Ok(()) if !big => ready.push(fi),
        Ok(()) => received(link, p, Ok(())),
        Err(e) => received(link, p, Err(e)),
    }
}

/// Installs the small files waiting in `ready` with two filesystem syncs in all instead of two
/// per file: their data is made durable first, then they are renamed into place, then the
/// renames are made durable. A name never shows data that is not on disk.
fn flush_ready(link: &Link<'_>, pulls: &mut [Pull], ready: &mut Vec<usize>) {
    if ready.is_empty() {
        return;
    }
    let root = &link.model.root;
    link.model.lock().hold_save += 1;
    let synced = sync_fs(root);
    let mut results = Vec::with_capacity(ready.len());
    for &fi in ready.iter() {
        let p = &pulls[fi];
        let r = match &synced {
            Ok(()) => install(link.model, &p.e, &p.tmp_path, false),
            Err(e) => Err(Error::msg(e.to_string())),
        };
        results.push(r);
    }
    if let Err(e) = sync_fs(root) {
        warn!("syncing {}: {e}", root.display());
    }
    link.model.lock().hold_save -= 1;
    for (fi, r) in ready.drain(..).zip(results) {
        received(link, &pulls[fi], r);
    }
}

/// Logs an installed file, and records how its need ended.
fn received(link: &Link<'_>, p: &Pull, r: Result<()>) {
    if r.is_ok() {
        let secs = p.t0.elapsed().as_secs_f64();
        info!(
            "received {} ({} bytes, {} on the wire, {} reused locally, {:.2} s, {:.1} MB/s)",
            p.e.path,
            p.e.size,
            p.wire,
            p.reused,
            secs,
            p.e.size as f64 / secs.max(1e-6) / 1e6
        );
    }
    finish_need(link, &p.e, r);
}

unsafe extern "C" {
    fn syncfs(fd: std::ffi::c_int) -> std::ffi::c_int;
    fn sync_file_range(
        fd: std::ffi::c_int,
        offset: i64,
        nbytes: i64,
        flags: std::ffi::c_uint,
    ) -> std::ffi::c_int;
}

/// Starts writeback of every this many bytes received.
const WRITEBACK_EVERY: u64 = 8 << 20;
const SYNC_FILE_RANGE_WRITE: std::ffi::c_uint = 2;

/// Asks the kernel to start writing a range of a file to disk, without waiting. Only a hint:
/// durability still comes from the fsync before the rename.
fn start_writeback(f: &File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; the call only schedules I/O.
    unsafe { sync_file_range(f.as_raw_fd(), off as i64, len as i64, SYNC_FILE_RANGE_WRITE) };
}

/// Flushes everything written to the filesystem holding `root`.
fn sync_fs(root: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let d = File::open(root).at(root)?;
    // SAFETY: a valid descriptor that outlives the call.
    if unsafe { syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::from(io::Error::last_os_error()).at(root));
    }
    Ok(())
}

/// An entry's mtime as a time; one outside what the system can hold (a peer can send any
/// number) becomes the epoch rather than an overflow.
fn mtime_of(e: &Entry) -> SystemTime {
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
        .custom_flags(O_NOFOLLOW)
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
    let cur = g.index.entries.get(&e.path).cloned();
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
fn install(model: &Model, e: &Entry, tmp: &Path, durable: bool) -> Result<()> {
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
    fs::set_permissions(target, fs::Permissions::from_mode(e.mode & 0o7777 | 0o700)).at(target)?;
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
