//! The block pipeline of a pull: plans where each block of a batch's files comes from (our old
//! version, zeros, the temp file of an earlier try, other local files, a renamed file's old
//! name, or the peer), fetches what only the peer has with requests in flight, checks every block's
//! MD5 on helper threads while the next ones arrive, writes the temp files, and hands each file
//! to the puller to install once all its blocks are in and verified.

use crate::error::{Context, Error, Result};
use crate::hash::{Hash, md5, xxh64};
use crate::proto::wire::{self, Status};
use crate::store::entry::{Entry, FAST_MIN_BLOCKS, Stat};
use crate::store::names;
use crate::sync::delta::Pipe;
use crate::sync::link::{Link, RECEIVED, REUSED};
use crate::sync::model::{Model, Progress};
use crate::sys::dirfd::Dir;
use crate::sys::file::{Lease, copy_range, lease, lease_held, start_writeback, sync_fs, unlease};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes of block data in flight per connection: keeps a fast link full, memory small.
const WINDOW_BYTES: u64 = 1 << 20;
/// Requests for blocks and sub-block hashes in flight at most: half of what the peer accepts,
/// the other half being room for the runs that delta blocks ask for on their own (at most 8
/// per 64 KiB block, 16 such blocks in the window).
const WINDOW_REQUESTS: usize = wire::MAX_REQUESTS / 2;
/// Unchanged data is copied from the old version this much at a time.
const COPY_PIECE: u64 = 8 << 20;
/// Writeback of a temp file is started every this many bytes completed.
const WRITEBACK_EVERY: u64 = 8 << 20;
/// Blocks a helper thread checks together at most.
const HELPER_BATCH: usize = 8;
/// Files under this size are installed in groups, sharing their filesystem syncs.
const SMALL_FILE: u64 = 1 << 20;
/// How many small files wait for a shared sync at most.
const READY_BATCH: usize = 1024;
/// Files at least this large show progress in status and, every few seconds, in the log.
const PROGRESS_MIN: u64 = 8 << 20;
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the leases of a batch's temp files are looked at: about the longest a program
/// opening one waits.
const LEASE_LOOK: Duration = Duration::from_millis(100);
/// Why a pull whose temp file another program opened fails (see `Run::opened_elsewhere`).
const OPENED: &str =
    "its temp file was opened by another program while it was pulled; will fetch it again";

/// Where a block comes from.
#[derive(Debug, PartialEq, Eq)]
enum Src {
    /// The same as in our current version of the file, at the same offset: copied in the kernel.
    Keep,
    /// All zeros: a hole where the temp file is new, written elsewhere.
    Zero,
    /// Perhaps already in the temp file (an earlier try): checked, fetched if it is not.
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

struct Job {
    file: usize,
    block: usize,
    src: Src,
}

/// One file being received.
pub struct Pull {
    pub e: Entry,
    pub tmp_path: PathBuf,
    tmp: Arc<File>,
    /// The temp file as it was once complete (see `install::install`).
    ino: crate::sync::install::Written,
    /// Whether a write lease on the temp file is held ([`crate::sys::file::lease`]): no other
    /// program has opened it since before its resumed content was verified.
    leased: bool,
    pub failed: bool,
    pub t0: Instant,
    /// File data received for it (block data, sub-block hashes and runs).
    pub wire: u64,
    /// Bytes of it taken from local data instead of the wire.
    pub reused: u64,
    /// Bytes of the file complete (verified and written) so far.
    done: u64,
    /// Our current version of the file, opened while its stat matched the index: the source of
    /// unchanged blocks and the base for delta transfer.
    old: Option<Arc<File>>,
    /// XXH64s of our current version's blocks (empty if unknown).
    old_fast: Vec<u64>,
    /// The temp file's length when this pull began: past it, zero blocks are left as holes.
    fresh_from: u64,
    /// Blocks not complete yet.
    left: usize,
    /// Work of this file handed to the helpers and not back yet.
    busy: usize,
    complete: Vec<bool>,
    /// XXH64 of every block, recorded as blocks complete, for the index.
    fast: Vec<u64>,
    fast_known: bool,
    /// Blocks before this one are all complete; writeback has been started up to `flushed`.
    frontier: usize,
    flushed: u64,
    /// Delta transfer pays off so far (turned off when most sub-blocks differ).
    delta_on: bool,
    delta_subs: (usize, usize),
}

impl Pull {
    /// Lets go of the temp file's lease, if held: a program opening the file goes on at once.
    fn let_go(&mut self) {
        if self.leased {
            unlease(&self.tmp);
            self.leased = false;
        }
    }

    /// Whether the temp file's lease was held and is broken (or let go by [`watch_leases`]):
    /// another program opened the file since. Then the lease is let go here too.
    fn opened_elsewhere(&mut self) -> bool {
        if !self.leased || lease_held(&self.tmp) {
            return false;
        }
        self.let_go();
        true
    }
}

/// What a helper thread does with a block or a run of blocks, and what it reports back.
struct Tag {
    file: usize,
    first: usize,
    n: usize,
    bytes: u64,
    /// Bytes that count as reused locally once this is done.
    reused: u64,
    /// If the data turns out wrong: fetch the block again, by delta (true) or whole (false);
    /// `None`: the peer sent it, and the file fails.
    retry: Option<bool>,
}

enum Work {
    /// Check `data` against `want` and, with `write`, write it at `off` of the temp file.
    Check {
        tag: Tag,
        tmp: Arc<File>,
        off: u64,
        data: Vec<u8>,
        want: Hash,
        write: bool,
    },
    /// Copy `len` bytes from `from` at `from_off` to the temp file at `off`.
    Copy {
        tag: Tag,
        tmp: Arc<File>,
        from: Arc<File>,
        from_off: u64,
        off: u64,
    },
}

enum Outcome {
    /// Done; a checked block's XXH64.
    Ok(Option<u64>),
    Mismatch,
    Io(io::Error),
}

struct Done {
    tag: Tag,
    outcome: Outcome,
    /// A checked block's buffer, for reuse.
    buf: Vec<u8>,
}

/// Does a batch of work: the MD5s of its checks side by side ([`crate::hash::md5x`]), then each
/// piece's writing or copying.
fn work(batch: Vec<Work>, out: &mut Vec<Done>) {
    let data: Vec<&[u8]> = batch
        .iter()
        .filter_map(|w| match w {
            Work::Check { data, .. } => Some(&data[..]),
            Work::Copy { .. } => None,
        })
        .collect();
    let mut sums = Vec::with_capacity(data.len());
    crate::hash::md5x::md5_each(&data, &mut sums);
    drop(data);
    let mut sums = sums.into_iter();
    for w in batch {
        out.push(match w {
            Work::Check {
                tag,
                tmp,
                off,
                data,
                want,
                write,
            } => {
                let outcome = if sums.next() != Some(want) {
                    Outcome::Mismatch
                } else if !write {
                    Outcome::Ok(Some(xxh64(&data)))
                } else {
                    match tmp.write_all_at(&data, off) {
                        Ok(()) => Outcome::Ok(Some(xxh64(&data))),
                        Err(e) => Outcome::Io(e),
                    }
                };
                Done {
                    tag,
                    outcome,
                    buf: data,
                }
            }
            Work::Copy {
                tag,
                tmp,
                from,
                from_off,
                off,
            } => {
                let outcome = match copy_range(&from, from_off, &tmp, off, tag.bytes) {
                    Ok(()) => {
                        start_writeback(&tmp, off, tag.bytes);
                        Outcome::Ok(None)
                    }
                    Err(e) => Outcome::Io(e),
                };
                Done {
                    tag,
                    outcome,
                    buf: Vec::new(),
                }
            }
        });
    }
}

/// MD5 and XXH64 of an all-zero block, by length.
#[derive(Default)]
struct Zeros(HashMap<usize, (Hash, u64)>);

impl Zeros {
    fn get(&mut self, len: usize) -> (Hash, u64) {
        *self.0.entry(len).or_insert_with(|| {
            let z = vec![0u8; len];
            (md5(&z), xxh64(&z))
        })
    }
}

pub fn temp_path(root: &Path, rel: &str) -> PathBuf {
    let (dir, name) = names::split(rel);
    root.join(dir).join(names::temp_for(name))
}

/// Receives `files` (a batch's files, in order). `gone`: the files the batch deletes once
/// these are in, whose blocks are read (and checked) where a file has them: a renamed file's
/// content comes from its old name, never over the wire. (It is copied, not moved: the old
/// file may be open and written to; a write that lands in it is kept, as the deletion then
/// finds the file changed.)
pub fn transfer(
    link: &Link<'_>,
    files: Vec<Entry>,
    gone: &[&Entry],
    install: &Installs,
    handed: &mut HashSet<String>,
    next_id: &mut u32,
) -> Result<()> {
    // Which blocks our other files already hold, found in one pass over the index.
    let sources = local_sources(link, &files, gone);
    let mut zeros = Zeros::default();
    let (pulls, jobs) = plan_all(link, files, &sources, &mut zeros);
    drop(sources);
    let helpers = crate::sys::limits::cpus().clamp(1, 4);
    // Room for a batch of checks per helper (their MD5s are computed side by side).
    let batch = crate::hash::md5x::lanes().clamp(2, HELPER_BATCH);
    let (work_tx, work_rx) = mpsc::sync_channel::<Work>(batch);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let leased: Vec<Arc<File>> = pulls
        .iter()
        .filter(|p| p.leased)
        .map(|p| p.tmp.clone())
        .collect();
    let (stop_watch, stopped) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        for _ in 0..helpers {
            let (rx, tx) = (work_rx.clone(), done_tx.clone());
            s.spawn(move || helper(rx, tx, batch));
        }
        if !leased.is_empty() {
            s.spawn(move || watch_leases(&leased, &stopped));
        }
        drop(done_tx);
        let remote = remote_jobs(&jobs);
        let mut run = Run {
            link,
            pipe: Pipe::new(link, next_id),
            pulls,
            jobs,
            remote,
            sent: 0,
            ids: HashMap::new(),
            in_flight: 0,
            ready: Vec::new(),
            install,
            handed,
            work: Some(work_tx),
            done: done_rx,
            busy: 0,
            local_file: None,
            zeros,
            last_progress: Instant::now(),
            last_log: Instant::now(),
            leases_seen: Instant::now(),
        };
        let r = run.run();
        drop(stop_watch);
        // The helpers end once the queue closes; what they still report is dropped.
        run.work = None;
        // Verified files are installed even if the connection failed meanwhile.
        run.hand_off();
        REUSED.fetch_add(run.pulls.iter().map(|p| p.reused).sum(), Ordering::Relaxed);
        r
    })
}

/// Lets go of each broken lease among the batch's temp files as soon as it breaks (looked at
/// every [`LEASE_LOOK`], until `stop` ends): the program opening the file goes on at once,
/// even while the batch waits long for the peer. The pull sees the lease gone
/// ([`Run::opened_elsewhere`]) and fails.
fn watch_leases(files: &[Arc<File>], stop: &Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(LEASE_LOOK) {
        for f in files {
            if !lease_held(f) {
                unlease(f);
            }
        }
    }
}

/// Plans each file of the batch, in order: its pull and the jobs of its blocks. A file whose
/// plan fails (its temp file cannot be opened) ends its need here.
fn plan_all(
    link: &Link<'_>,
    files: Vec<Entry>,
    sources: &HashMap<Hash, (String, u64)>,
    zeros: &mut Zeros,
) -> (Vec<Pull>, Vec<Job>) {
    let mut pulls: Vec<Pull> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for e in files {
        match plan(link, e, sources, zeros) {
            Ok((p, srcs)) => {
                let file = pulls.len();
                jobs.extend(srcs.into_iter().enumerate().map(|(block, src)| Job {
                    file,
                    block,
                    src,
                }));
                pulls.push(p);
            }
            Err((e, err)) => crate::sync::install::finish_need(link, &e, Err(err)),
        }
    }
    (pulls, jobs)
}

/// A helper thread: takes work from `rx` (one piece, waited for, and whatever else is queued
/// already, up to `batch`), does it and reports to `tx`, until either channel closes.
fn helper(rx: Arc<Mutex<Receiver<Work>>>, tx: mpsc::Sender<Done>, batch: usize) {
    let mut done = Vec::new();
    loop {
        let taken = match rx.lock() {
            Ok(g) => g.recv().map(|w| {
                let mut ws = vec![w];
                ws.extend(std::iter::from_fn(|| g.try_recv().ok()).take(batch - 1));
                ws
            }),
            Err(_) => return,
        };
        let Ok(ws) = taken else { return };
        work(ws, &mut done);
        for d in done.drain(..) {
            if tx.send(d).is_err() {
                return;
            }
        }
    }
}

/// The jobs whose data comes from the peer (whole or by delta), in order: the order their
/// requests go out.
fn remote_jobs(jobs: &[Job]) -> Vec<usize> {
    jobs.iter()
        .enumerate()
        .filter(|(_, j)| matches!(j.src, Src::Remote | Src::Delta))
        .map(|(i, _)| i)
        .collect()
}

/// How many jobs from `ji` (a block copied unchanged from our current version, `len` bytes)
/// one copy takes, and their bytes: the unchanged blocks right after it in the same file
/// (`block_len` gives a block's length), added while the copy is under `piece` bytes.
fn keep_run(
    jobs: &[Job],
    ji: usize,
    len: u64,
    piece: u64,
    block_len: impl Fn(usize) -> u64,
) -> (usize, u64) {
    let (fi, block) = (jobs[ji].file, jobs[ji].block);
    let mut n = 1;
    let mut bytes = len;
    while let Some(j) = jobs.get(ji + n)
        && j.file == fi
        && j.block == block + n
        && matches!(j.src, Src::Keep)
        && bytes < piece
    {
        bytes += block_len(block + n);
        n += 1;
    }
    (n, bytes)
}

/// Our files' blocks that the batch needs, by hash: where each can be read locally. Those of
/// the files the batch deletes (`gone`: renamed there) always; those of all the others only for
/// batches with a file of 1 MiB or more: finding them is a walk over the whole index, which for
/// a batch of small files would cost more than the few KiB it could save.
fn local_sources(
    link: &Link<'_>,
    files: &[Entry],
    gone: &[&Entry],
) -> HashMap<Hash, (String, u64)> {
    let needed: std::collections::HashSet<Hash> = files
        .iter()
        .flat_map(|e| e.blocks.iter().copied())
        .collect();
    let mut sources = HashMap::new();
    let mut add = |e: &Entry| {
        for (i, b) in e.blocks.iter().enumerate() {
            if needed.contains(b) && !sources.contains_key(b) {
                sources.insert(*b, (e.path.clone(), e.block_range(i).0));
            }
        }
    };
    let g = link.model.lock();
    // The batch's deletions, and those the connection's needs hold back until these files are
    // in (renamed here: see `puller::choose`).
    let pending = g.peers.get(&link.conn).into_iter().flat_map(|p| {
        p.needs
            .mem()
            .values()
            .filter(|n| n.deleted && n.kind == crate::store::entry::Kind::File)
    });
    for t in gone.iter().copied().chain(pending) {
        if let Some(old) = g.index.get(&t.path).filter(|e| e.is_file()) {
            add(&old);
        }
    }
    if files.iter().any(|e| e.size >= SMALL_FILE) {
        for e in g.index.values().filter(|e| e.is_file()) {
            add(&e);
        }
    }
    drop(g);
    sources
}

/// Opens a file's temp file and decides where each of its blocks comes from.
#[allow(clippy::result_large_err)]
fn plan(
    link: &Link<'_>,
    e: Entry,
    sources: &HashMap<Hash, (String, u64)>,
    zeros: &mut Zeros,
) -> std::result::Result<(Pull, Vec<Src>), (Entry, Error)> {
    let root = &link.model.root;
    let tmp_path = temp_path(root, &e.path);
    let (tmp, tlen, leased) = match open_temp(link.model, &e, &tmp_path) {
        Ok(x) => x,
        Err(err) => return Err((e, err)),
    };
    // Our current version of this file, if it is still the one the index knows.
    let cur = {
        let g = link.model.lock();
        g.index
            .get(&e.path)
            .filter(|c| c.is_file() && c.size > 0)
            .map(std::borrow::Cow::into_owned)
    };
    let old = cur.as_ref().and_then(|c| {
        let f = crate::sys::open::open_in(root, &e.path, crate::sys::open::Open::Read).ok()?;
        let md = f.metadata().ok()?;
        (md.is_file() && Stat::of(&md) == c.stat).then(|| Arc::new(f))
    });
    let cur = cur.filter(|_| old.is_some());
    let keep = cur.as_ref().filter(|c| c.block_size == e.block_size);
    let had = Had {
        keep,
        resumed: tlen,
        zero: zeros.get(e.block_size as usize).0,
        local: sources,
        old_size: cur.as_ref().map_or(0, |c| c.size),
    };
    let srcs = sources_of(&e, &had);
    let n = e.blocks.len();
    let p = Pull {
        tmp_path,
        tmp: Arc::new(tmp),
        ino: Default::default(),
        leased,
        failed: false,
        t0: Instant::now(),
        wire: 0,
        reused: 0,
        done: 0,
        old,
        old_fast: keep.map(|c| c.fast.to_vec()).unwrap_or_default(),
        fresh_from: tlen,
        left: n,
        busy: 0,
        complete: vec![false; n],
        fast: vec![0; n],
        fast_known: true,
        frontier: 0,
        flushed: 0,
        delta_on: true,
        delta_subs: (0, 0),
        e,
    };
    Ok((p, srcs))
}

/// What a file's blocks may come from, besides the peer.
struct Had<'a> {
    /// Our current version, with the same block size.
    keep: Option<&'a Entry>,
    /// Bytes of the temp file kept from an earlier try.
    resumed: u64,
    /// The MD5 of a whole block of zeros.
    zero: Hash,
    /// Blocks of local files the batch holds, by MD5.
    local: &'a HashMap<Hash, (String, u64)>,
    /// The size of our current version (0: none), for delta transfer.
    old_size: u64,
}

/// Where each block of `e` comes from, first choice first: our current
/// version's block at the same offset; zeros; the temp file of an earlier try; an earlier block
/// of the same file; a local file with that block; our old version by delta; the peer.
fn sources_of(e: &Entry, had: &Had<'_>) -> Vec<Src> {
    let mut first: HashMap<Hash, u64> = HashMap::new();
    let mut srcs = Vec::with_capacity(e.blocks.len());
    for (i, want) in e.blocks.iter().enumerate() {
        let (off, len) = e.block_range(i);
        let src = if had
            .keep
            .is_some_and(|c| c.blocks.get(i) == Some(want) && c.block_range(i).1 == len)
        {
            Src::Keep
        } else if len == e.block_size as usize && *want == had.zero {
            Src::Zero
        } else if off + len as u64 <= had.resumed {
            Src::Have
        } else if let Some(o) = first.get(want) {
            Src::Same(*o)
        } else if let Some((p, o)) = had.local.get(want) {
            Src::Local(p.clone(), *o)
        } else if off < had.old_size {
            Src::Delta
        } else {
            Src::Remote
        };
        first.entry(*want).or_insert(off);
        srcs.push(src);
    }
    srcs
}

/// Opens (or makes) the temp file of `e` for writing, with what an earlier try left in it (cut
/// to the file's size): never through a symlink, only one we made, and under a write lease
/// (whether one is held: see [`Pull::leased`]).
fn open_temp(model: &Model, e: &Entry, tmp_path: &Path) -> Result<(File, u64, bool)> {
    let root = &model.root;
    // Never through a symlink, on the way or in the temp file's place (the name is ours:
    // one there is removed).
    let rel = names::temp_rel(&e.path);
    let open = || crate::sys::open::open_in(root, &rel, crate::sys::open::Open::Create);
    let fresh = || -> io::Result<File> {
        let (dir, name) = Dir::parent(root, &rel)?;
        crate::sync::disk::free_temp_name(&dir, name, &e.path)?;
        dir.create_new(name)
    };
    // The folder usually exists: it is made only when the open says it is missing.
    let mut f = match open() {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            model.make_parents(&mut model.lock(), &e.path).at(&e.path)?;
            open()
        }
        r => r,
    };
    // A temp file kept for resume must be one we made: a regular file of ours with no
    // other name. Anything else in its place (a symlink, a hard link to a file outside
    // the share, a file of another user) is removed and the temp file made anew.
    let ours = match &f {
        Ok(f) => f.metadata().is_ok_and(|m| crate::sys::open::own_file(&m)),
        Err(_) => false,
    };
    if !ours {
        f = fresh();
    }
    let mut f = f.at(tmp_path)?;
    // Taken before anything of it is read: a program that opens it from here on breaks the
    // lease, and the pull fails before installing what it may have written. One that has it
    // open already could write at any time: the file is made anew.
    let leased = match lease(&f) {
        Lease::Held => true,
        Lease::Unsupported => {
            no_leases(tmp_path);
            false
        }
        Lease::Busy => {
            f = fresh().at(tmp_path)?;
            match lease(&f) {
                Lease::Held => true,
                Lease::Unsupported => false,
                Lease::Busy => {
                    return Err(Error::msg("its temp file is open in another program").at(tmp_path));
                }
            }
        }
    };
    let mut len = f.metadata().at(tmp_path)?.len();
    if len > e.size {
        f.set_len(e.size).at(tmp_path)?;
        len = e.size;
    }
    Ok((f, len, leased))
}

/// Says once that temp files go without leases: a program writing into one while it is pulled
/// is then seen only after it is complete (its mtime).
fn no_leases(at: &Path) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        debug!(
            "{}: no write lease here; temp files go without",
            at.display()
        );
    }
}

/// The state of one batch's transfer.
struct Run<'l, 'b, 'p> {
    link: &'l Link<'b>,
    pipe: Pipe<'p, 'b>,
    pulls: Vec<Pull>,
    jobs: Vec<Job>,
    /// Jobs whose data comes from the peer, in the order their requests go out.
    remote: Vec<usize>,
    /// How many of `remote` have been asked for.
    sent: usize,
    /// Job → (request id, whether it is a delta request).
    ids: HashMap<usize, (u32, bool)>,
    in_flight: u64,
    /// Small files verified but not installed yet: handed to the installer together.
    ready: Vec<usize>,
    install: &'l Installs,
    /// Paths handed to the installer, which clears their busy marks.
    handed: &'l mut HashSet<String>,
    work: Option<SyncSender<Work>>,
    done: Receiver<Done>,
    /// Work handed to the helpers and not back yet.
    busy: usize,
    local_file: Option<(String, File)>,
    zeros: Zeros,
    last_progress: Instant,
    last_log: Instant,
    /// When the leases of the batch's temp files were last looked at.
    leases_seen: Instant,
}

impl Run<'_, '_, '_> {
    fn run(&mut self) -> Result<()> {
        // Files without blocks (empty) are complete already.
        for fi in 0..self.pulls.len() {
            if self.pulls[fi].left == 0 {
                self.finish(fi);
            }
        }
        // Two cursors: jobs whose data comes from the peer (`remote`, in the order they are
        // asked for) and the rest, done locally. Local work fills the time spent waiting for
        // the peer, so copying unchanged data never leaves the link idle.
        let local: Vec<usize> = (0..self.jobs.len())
            .filter(|&j| !matches!(self.jobs[j].src, Src::Remote | Src::Delta))
            .collect();
        let (mut ni, mut li) = (0, 0);
        loop {
            while let Ok(d) = self.done.try_recv() {
                self.on_done(d);
            }
            self.look_at_leases();
            if self.ready.len() >= READY_BATCH {
                self.hand_off();
            }
            self.fill_window()?;
            let net_next = self.remote.get(ni).copied();
            let take_net = match (net_next, local.get(li)) {
                (Some(j), Some(_)) => self.answer_in(j)?,
                (Some(_), None) => true,
                _ => false,
            };
            if take_net {
                if let Some(j) = net_next {
                    self.step(j)?;
                    ni += 1;
                }
            } else if let Some(&j) = local.get(li) {
                li += self.step(j)?;
            } else if self.busy > 0 {
                self.wait_done()?;
            } else {
                return Ok(());
            }
        }
    }

    /// Whether the peer's answer for job `j` has arrived (or nothing is waited for).
    fn answer_in(&mut self, j: usize) -> Result<bool> {
        match self.ids.get(&j) {
            Some(&(id, delta)) => self.pipe.ready(id, delta),
            None => Ok(true),
        }
    }

    fn wait_done(&mut self) -> Result<()> {
        let d = self
            .done
            .recv()
            .map_err(|_| Error::msg("helper threads ended"))?;
        self.on_done(d);
        Ok(())
    }

    /// Asks the peer for the next blocks, up to the window.
    fn fill_window(&mut self) -> Result<()> {
        while self.sent < self.remote.len()
            && self.in_flight < WINDOW_BYTES
            && self.pipe.outstanding() < WINDOW_REQUESTS
        {
            let rj = self.remote[self.sent];
            self.sent += 1;
            let j = &self.jobs[rj];
            let p = &self.pulls[j.file];
            if p.failed {
                continue;
            }
            let id = match (&j.src, &p.old) {
                (Src::Delta, Some(old)) if p.delta_on => {
                    (self.pipe.request_delta(&p.e, j.block, old.clone())?, true)
                }
                _ => (self.pipe.request(&p.e, j.block)?, false),
            };
            self.ids.insert(rj, id);
            self.in_flight += p.e.block_range(j.block).1 as u64;
        }
        Ok(())
    }

    /// Hands work to the helpers.
    fn dispatch(&mut self, w: Work) -> Result<()> {
        let fi = match &w {
            Work::Check { tag, .. } | Work::Copy { tag, .. } => tag.file,
        };
        let tx = self
            .work
            .as_ref()
            .ok_or_else(|| Error::msg("helper threads ended"))?;
        tx.send(w).map_err(|_| Error::msg("helper threads ended"))?;
        self.busy += 1;
        self.pulls[fi].busy += 1;
        Ok(())
    }

    /// Checks and writes one block's data.
    fn check(
        &mut self,
        fi: usize,
        block: usize,
        data: Vec<u8>,
        write: bool,
        tag: Tag,
    ) -> Result<()> {
        let p = &self.pulls[fi];
        let w = Work::Check {
            tmp: p.tmp.clone(),
            off: p.e.block_range(block).0,
            want: p.e.blocks[block],
            data,
            write,
            tag,
        };
        self.dispatch(w)
    }

    fn tag(&self, fi: usize, block: usize, reused: u64, retry: Option<bool>) -> Tag {
        Tag {
            file: fi,
            first: block,
            n: 1,
            bytes: self.pulls[fi].e.block_range(block).1 as u64,
            reused,
            retry,
        }
    }

    fn buffer(&mut self, len: usize) -> Vec<u8> {
        self.link.pool.take(len)
    }

    /// Fetches a block from the peer again (its local source or delta went wrong).
    fn retry(&mut self, fi: usize, block: usize, delta: bool) {
        let src = if delta && self.pulls[fi].old.is_some() {
            Src::Delta
        } else {
            Src::Remote
        };
        self.remote.push(self.jobs.len());
        self.jobs.push(Job {
            file: fi,
            block,
            src,
        });
    }

    /// Works on job `ji` (and the unchanged blocks right after it); returns how many jobs it took.
    fn step(&mut self, ji: usize) -> Result<usize> {
        let (fi, block) = (self.jobs[ji].file, self.jobs[ji].block);
        let issued = self.ids.remove(&ji);
        let (off, len) = self.pulls[fi].e.block_range(block);
        if let Some((id, _)) = issued {
            self.in_flight -= (len as u64).min(self.in_flight);
            if self.pulls[fi].failed {
                self.pipe.forget(id);
            }
        }
        if self.pulls[fi].failed {
            return Ok(1);
        }
        let src = std::mem::replace(&mut self.jobs[ji].src, Src::Remote);
        match src {
            Src::Keep => return self.keep(ji, fi, block, off, len),
            Src::Zero => self.zero(fi, block, off, len)?,
            Src::Have => self.have(fi, block, off, len)?,
            Src::Same(o) => self.same(fi, block, o)?,
            Src::Local(path, o) => self.local(fi, block, path, o, len)?,
            Src::Remote | Src::Delta => self.fetch(fi, block, issued)?,
        }
        self.show_progress(fi);
        Ok(1)
    }

    /// A block unchanged in our current version, at `off`: copied with the unchanged ones after
    /// it, in one copy on a helper. Returns how many jobs that took.
    fn keep(&mut self, ji: usize, fi: usize, block: usize, off: u64, len: usize) -> Result<usize> {
        let e = &self.pulls[fi].e;
        let (n, bytes) = keep_run(&self.jobs, ji, len as u64, COPY_PIECE, |k| {
            e.block_range(k).1 as u64
        });
        let p = &mut self.pulls[fi];
        for k in block..block + n {
            match p.old_fast.get(k) {
                Some(f) => p.fast[k] = *f,
                None => p.fast_known = false,
            }
        }
        let w = Work::Copy {
            tag: Tag {
                file: fi,
                first: block,
                n,
                bytes,
                reused: bytes,
                retry: None,
            },
            tmp: p.tmp.clone(),
            from: p.old.clone().ok_or_else(|| Error::msg("no old version"))?,
            from_off: off,
            off,
        };
        self.dispatch(w)?;
        Ok(n)
    }

    /// A block of zeros at `off`: left as a hole past what the temp file held, else written.
    fn zero(&mut self, fi: usize, block: usize, off: u64, len: usize) -> Result<()> {
        let (_, fast) = self.zeros.get(len);
        self.pulls[fi].fast[block] = fast;
        if off >= self.pulls[fi].fresh_from {
            // Never written: it reads as zeros once the file gets its length.
            self.pulls[fi].reused += len as u64;
            self.completed(fi, block, 1, len as u64);
            Ok(())
        } else {
            let tag = self.tag(fi, block, len as u64, None);
            self.check(fi, block, vec![0u8; len], true, tag)
        }
    }

    /// A block perhaps in the temp file from an earlier try, at `off`: read back and checked;
    /// fetched (by delta if it can be) if it cannot be read.
    fn have(&mut self, fi: usize, block: usize, off: u64, len: usize) -> Result<()> {
        let mut buf = self.buffer(len);
        let p = &self.pulls[fi];
        if read_at(&p.tmp, &mut buf, off, len).is_ok() {
            let tag = self.tag(fi, block, len as u64, Some(true));
            self.check(fi, block, buf, false, tag)
        } else {
            self.retry(fi, block, true);
            Ok(())
        }
    }

    /// A block another local file holds at `o` of `path`: read (the file kept open for the
    /// next block), checked and written; fetched (by delta if it can be) if it cannot be read.
    fn local(&mut self, fi: usize, block: usize, path: String, o: u64, len: usize) -> Result<()> {
        let root = &self.link.model.root;
        if self.local_file.as_ref().is_none_or(|(p, _)| *p != path)
            && let Ok(f) = crate::sys::open::open_in(root, &path, crate::sys::open::Open::Read)
        {
            self.local_file = Some((path.clone(), f));
        }
        let mut buf = self.buffer(len);
        let read = match &self.local_file {
            Some((lp, f)) if *lp == path => read_at(f, &mut buf, o, len).is_ok(),
            _ => false,
        };
        if read {
            let tag = self.tag(fi, block, len as u64, Some(true));
            self.check(fi, block, buf, true, tag)
        } else {
            self.retry(fi, block, true);
            Ok(())
        }
    }

    /// A block with the same data as an earlier block of the file: copied within the temp file
    /// once that one is complete.
    fn same(&mut self, fi: usize, block: usize, o: u64) -> Result<()> {
        let src = (o / self.pulls[fi].e.block_size as u64) as usize;
        while !self.pulls[fi].complete.get(src).copied().unwrap_or(true) && self.pulls[fi].busy > 0
        {
            self.wait_done()?;
        }
        let p = &mut self.pulls[fi];
        if p.failed {
            return Ok(());
        }
        if !p.complete.get(src).copied().unwrap_or(false) {
            self.retry(fi, block, false);
            return Ok(());
        }
        p.fast[block] = p.fast[src];
        let (off, len) = p.e.block_range(block);
        let w = Work::Copy {
            tag: Tag {
                file: fi,
                first: block,
                n: 1,
                bytes: len as u64,
                reused: len as u64,
                retry: Some(false),
            },
            tmp: p.tmp.clone(),
            from: p.tmp.clone(),
            from_off: o,
            off,
        };
        self.dispatch(w)
    }

    /// A block only the peer has: its whole data, or (delta) the old version with the changed
    /// sub-blocks patched in.
    fn fetch(&mut self, fi: usize, block: usize, issued: Option<(u32, bool)>) -> Result<()> {
        let len = self.pulls[fi].e.block_range(block).1;
        if let Some((id, true)) = issued {
            let d = self.pipe.wait_delta(id)?;
            let p = &mut self.pulls[fi];
            p.wire += d.wire;
            RECEIVED.fetch_add(d.wire, Ordering::Relaxed);
            p.delta_subs.0 += d.changed;
            p.delta_subs.1 += d.total;
            // Mostly changed blocks cost an extra round trip for nothing: stop for this file.
            if p.delta_subs.1 >= 128 && p.delta_subs.0 * 4 > p.delta_subs.1 * 3 {
                p.delta_on = false;
            }
            if d.failed {
                self.retry(fi, block, false);
                return Ok(());
            }
            let reused = (len as u64).saturating_sub(d.wire);
            let tag = self.tag(fi, block, reused, Some(false));
            return self.check(fi, block, d.block, true, tag);
        }
        let id = match issued {
            Some((id, _)) => id,
            None => self.pipe.request(&self.pulls[fi].e, block)?,
        };
        let a = self.pipe.wait(id)?;
        let (r, p) = (a.r, &mut self.pulls[fi]);
        p.wire += r.data.len() as u64;
        RECEIVED.fetch_add(r.data.len() as u64, Ordering::Relaxed);
        let why = match r.status {
            // Checked by the reader as it arrived: written here, without another handoff.
            Status::Ok if r.data.len() == len && a.md5 == Some(p.e.blocks[block]) => {
                let off = p.e.block_range(block).0;
                match p.tmp.write_all_at(&r.data, off) {
                    Ok(()) => {
                        p.fast[block] = xxh64(&r.data);
                        self.link.pool.give(r.data);
                        self.completed(fi, block, 1, len as u64);
                        return Ok(());
                    }
                    Err(e) => format!("writing {}: {e}", p.tmp_path.display()),
                }
            }
            Status::Ok if r.data.len() == len => {
                format!("block {block} from the peer does not match its MD5")
            }
            Status::Ok => format!("block {block} from the peer has the wrong length"),
            _ => "changed on the peer while being sent; waiting for its new version".into(),
        };
        self.fail(fi, why);
        Ok(())
    }

    fn on_done(&mut self, d: Done) {
        self.busy -= 1;
        let t = d.tag;
        self.pulls[t.file].busy -= 1;
        self.link.pool.give(d.buf);
        if self.pulls[t.file].failed {
            return;
        }
        if self.opened_elsewhere(t.file) {
            return;
        }
        match d.outcome {
            Outcome::Ok(fast) => {
                let p = &mut self.pulls[t.file];
                if let Some(f) = fast {
                    p.fast[t.first] = f;
                }
                p.reused += t.reused;
                self.completed(t.file, t.first, t.n, t.bytes);
            }
            Outcome::Mismatch => match t.retry {
                Some(delta) => self.retry(t.file, t.first, delta),
                None => self.fail(
                    t.file,
                    format!("block {} from the peer does not match its MD5", t.first),
                ),
            },
            Outcome::Io(e) => {
                let p = &self.pulls[t.file];
                let why = format!("writing {}: {e}", p.tmp_path.display());
                self.fail(t.file, why);
            }
        }
    }

    /// Marks blocks complete; starts writeback as the complete part grows, and finishes the file
    /// with its last block.
    fn completed(&mut self, fi: usize, first: usize, n: usize, bytes: u64) {
        let p = &mut self.pulls[fi];
        for c in &mut p.complete[first..first + n] {
            *c = true;
        }
        p.left -= n;
        p.done += bytes;
        while p.complete.get(p.frontier) == Some(&true) {
            p.frontier += 1;
        }
        let upto = (p.frontier as u64 * p.e.block_size as u64).min(p.e.size);
        if upto >= p.flushed + WRITEBACK_EVERY {
            start_writeback(&p.tmp, p.flushed, upto - p.flushed);
            p.flushed = upto;
        }
        if p.left == 0 {
            self.finish(fi);
        }
    }

    /// Whether another program opened pull `fi`'s temp file since its lease was taken: then
    /// what the file holds is no longer ours to vouch for. The lease goes at once (that
    /// program's open waits for it) and the pull fails; the next try verifies every block the
    /// file holds under a new lease, or makes the file anew if it is still open elsewhere.
    fn opened_elsewhere(&mut self, fi: usize) -> bool {
        let p = &mut self.pulls[fi];
        if !p.opened_elsewhere() {
            return false;
        }
        if !p.failed {
            self.fail(fi, OPENED.to_string());
        }
        true
    }

    /// Fails, now and then, the pulls whose temp file another program opened (the watcher
    /// has let their leases go: [`watch_leases`]): no more of their blocks are asked for.
    fn look_at_leases(&mut self) {
        if self.leases_seen.elapsed() < LEASE_LOOK {
            return;
        }
        self.leases_seen = Instant::now();
        for fi in 0..self.pulls.len() {
            let p = &self.pulls[fi];
            if p.leased && !p.failed && p.left > 0 {
                self.opened_elsewhere(fi);
            }
        }
    }

    fn fail(&mut self, fi: usize, why: String) {
        let p = &mut self.pulls[fi];
        p.failed = true;
        // Its file is not looked at any more: a program opening it must not wait.
        p.let_go();
        crate::sync::install::finish_need(self.link, &p.e, Err(Error::msg(why)));
    }

    fn show_progress(&mut self, fi: usize) {
        let p = &self.pulls[fi];
        if p.e.size < PROGRESS_MIN || self.last_progress.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last_progress = Instant::now();
        let secs = p.t0.elapsed().as_secs_f64().max(1e-3);
        let rate = p.done as f64 / secs;
        if self.last_log.elapsed() >= PROGRESS_LOG_EVERY {
            self.last_log = Instant::now();
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
        let mut g = self.link.model.lock();
        if let Some(peer) = g.peers.get_mut(&self.link.conn) {
            peer.progress = Some(Progress {
                path: p.e.path.clone(),
                size: p.e.size,
                done: p.done,
                started: p.t0,
            });
        }
    }

    /// Gives a complete file its length, mode and mtime and installs it: big files now, after
    /// an fsync; small ones in groups, by the installer (`hand_off`).
    fn finish(&mut self, fi: usize) {
        let p = &mut self.pulls[fi];
        if p.fast_known && p.e.blocks.len() >= FAST_MIN_BLOCKS {
            p.e.fast = std::mem::take(&mut p.fast).into();
        }
        let big = p.e.size >= SMALL_FILE;
        let r = (|| -> Result<()> {
            let untouched = |p: &mut Pull| match p.opened_elsewhere() {
                false => Ok(()),
                true => Err(Error::msg(OPENED).at(&p.tmp_path)),
            };
            untouched(p)?;
            // Written to its end unless it ends in zeros never written: then it gets its length.
            if p.tmp.metadata().at(&p.tmp_path)?.len() != p.e.size {
                p.tmp.set_len(p.e.size).at(&p.tmp_path)?;
            }
            p.tmp
                .set_permissions(fs::Permissions::from_mode(p.e.file_mode()))
                .at(&p.tmp_path)?;
            p.tmp
                .set_modified(crate::sync::disk::mtime_of(&p.e))
                .at(&p.tmp_path)?;
            p.ino = crate::sync::install::Written::of(&p.tmp.metadata().at(&p.tmp_path)?);
            // Untouched by others up to its stat; from here on a write changes its mtime, which
            // the install looks at ([`crate::sync::install::Written`]). Let go, so that a
            // program opening it does not wait.
            untouched(p)?;
            p.let_go();
            if big {
                let t = Instant::now();
                // Logged ahead of the rename, made durable with the file by one filesystem sync;
                // no index save in between (it would empty the log without this install).
                let model = self.link.model;
                let _hold = HoldSave::new(model);
                if let Err(e) = model.installs().append([&p.e]) {
                    warn!("{e}");
                    p.tmp.sync_all().at(&p.tmp_path)?;
                } else {
                    sync_fs(&model.root)?;
                }
                let synced = t.elapsed();
                crate::sync::install::install(self.link.model, &p.e, true, Some(p.ino))?;
                debug!(
                    "{}: blocks in {:.2} s, fsync {:.2} s, installed {:.2} s later",
                    p.e.path,
                    (t - p.t0).as_secs_f64(),
                    synced.as_secs_f64(),
                    (t.elapsed() - synced).as_secs_f64()
                );
            }
            Ok(())
        })();
        match r {
            Ok(()) if !big => self.ready.push(fi),
            r => received(self.link.model, self.link.conn, &Ready::of(p), r),
        }
    }

    /// Hands the small files waiting in `ready` to the installer, which makes them durable and
    /// renames them into place while this connection goes on with the next files.
    fn hand_off(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let group: Vec<Ready> = self
            .ready
            .drain(..)
            .map(|fi| Ready::of(&self.pulls[fi]))
            .collect();
        self.handed.extend(group.iter().map(|r| r.e.path.clone()));
        self.install.push(group);
    }
}

/// Holds index saves while it lives: an install under way is in the install log but not yet
/// in the index.
struct HoldSave<'a>(&'a Model);

impl<'a> HoldSave<'a> {
    fn new(model: &'a Model) -> HoldSave<'a> {
        model.hold_saves();
        HoldSave(model)
    }
}

impl Drop for HoldSave<'_> {
    fn drop(&mut self) {
        self.0.release_saves();
    }
}

/// A small file complete and verified, waiting to be installed.
pub struct Ready {
    e: Entry,
    /// The temp file as written (only it is installed).
    ino: crate::sync::install::Written,
    wire: u64,
    reused: u64,
    t0: Instant,
}

impl Ready {
    fn of(p: &Pull) -> Ready {
        Ready {
            e: p.e.clone(),
            ino: p.ino,
            wire: p.wire,
            reused: p.reused,
            t0: p.t0,
        }
    }
}

/// The queue between a connection's puller and its installer: at most one group waits while
/// another is being installed.
#[derive(Default)]
pub struct Installs {
    q: Mutex<Queue>,
    cv: Condvar,
}

#[derive(Default)]
struct Queue {
    waiting: Option<Vec<Ready>>,
    installing: bool,
    closed: bool,
}

impl Installs {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic aborts the process, so the lock is never poisoned in practice.
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a group, first waiting while one is already queued.
    fn push(&self, group: Vec<Ready>) {
        let mut g = self.lock();
        while g.waiting.is_some() {
            g = self.wait(g);
        }
        g.waiting = Some(group);
        self.cv.notify_all();
    }

    /// Waits until everything queued is installed.
    pub fn wait_idle(&self) {
        let mut g = self.lock();
        while g.waiting.is_some() || g.installing {
            g = self.wait(g);
        }
    }

    /// No more groups: the installer ends once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Waits for the next group; `None` once the queue is closed and empty.
    fn next(&self) -> Option<Vec<Ready>> {
        let mut g = self.lock();
        loop {
            if let Some(group) = g.waiting.take() {
                g.installing = true;
                self.cv.notify_all();
                return Some(group);
            }
            if g.closed {
                return None;
            }
            g = self.wait(g);
        }
    }

    /// The group `next` gave is installed.
    fn done(&self) {
        self.lock().installing = false;
        self.cv.notify_all();
    }
}

/// The installer of connection `conn`: installs each group of small files with two filesystem
/// syncs in all instead of two per file, until the puller closes the queue.
pub fn installer(model: &Model, conn: u64, q: &Installs) {
    while let Some(files) = q.next() {
        install_group(model, conn, files);
        q.done();
    }
}

/// The files' data is made durable first, then they are renamed into place, then the renames
/// are made durable. A name never shows data that is not on disk. Their paths stop being busy.
fn install_group(model: &Model, conn: u64, files: Vec<Ready>) {
    let root = &model.root;
    let hold = HoldSave::new(model);
    // Logged ahead of the renames; the sync that makes the files' data durable makes the log
    // durable too.
    if let Err(e) = model.installs().append(files.iter().map(|r| &r.e)) {
        warn!("{e}");
    }
    let synced = sync_fs(root);
    let mut results = Vec::with_capacity(files.len());
    for r in &files {
        results.push(match &synced {
            Ok(()) => crate::sync::install::install(model, &r.e, false, Some(r.ino)),
            Err(e) => Err(Error::msg(e.to_string())),
        });
    }
    if let Err(e) = sync_fs(root) {
        warn!("syncing {}: {e}", root.display());
    }
    // Saves are held while installs are not durable: memory would fill with changed entries
    // if the daemon's next try came in another group's hold, and what they hold is announced
    // only once saved. The first moment is now (the last hold saves).
    drop(hold);
    for (r, res) in files.iter().zip(results) {
        received(model, conn, r, res);
    }
    let mut g = model.lock();
    for r in &files {
        g.busy.remove(&r.e.path);
    }
    drop(g);
    model.changed.notify_all();
}

/// Logs an installed file, and records how its need ended.
fn received(model: &Model, conn: u64, p: &Ready, r: Result<()>) {
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
    crate::sync::install::need_done(model, conn, &p.e, r);
}

fn read_at(f: &File, buf: &mut Vec<u8>, off: u64, len: usize) -> io::Result<()> {
    buf.resize(len, 0);
    f.read_exact_at(buf, off)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs from a compact form: (file, block, 'K' keep / 'R' remote / 'D' delta / 'Z' zero).
    fn jobs(list: &[(usize, usize, char)]) -> Vec<Job> {
        let src = |c| match c {
            'K' => Src::Keep,
            'R' => Src::Remote,
            'D' => Src::Delta,
            _ => Src::Zero,
        };
        (list.iter())
            .map(|&(file, block, c)| Job {
                file,
                block,
                src: src(c),
            })
            .collect()
    }

    /// One copy of unchanged data takes the unchanged blocks right after the first, in the
    /// same file, while it is under the piece size.
    #[test]
    fn keep_run_table() {
        // (jobs, first job, block length, piece) -> (jobs taken, bytes)
        type Case = (
            &'static [(usize, usize, char)],
            usize,
            u64,
            u64,
            (usize, u64),
        );
        let cases: &[Case] = &[
            (&[(0, 0, 'K')], 0, 10, 100, (1, 10)),
            (
                &[(0, 0, 'K'), (0, 1, 'K'), (0, 2, 'K')],
                0,
                10,
                100,
                (3, 30),
            ),
            // Stops at another source, a gap, another file.
            (
                &[(0, 0, 'K'), (0, 1, 'R'), (0, 2, 'K')],
                0,
                10,
                100,
                (1, 10),
            ),
            (&[(0, 0, 'K'), (0, 2, 'K')], 0, 10, 100, (1, 10)),
            (&[(0, 0, 'K'), (1, 1, 'K')], 0, 10, 100, (1, 10)),
            // From a later job.
            (
                &[(0, 0, 'R'), (0, 1, 'K'), (0, 2, 'K')],
                1,
                10,
                100,
                (2, 20),
            ),
            // A block is added while the copy is under the piece: it may end past it.
            (&[(0, 0, 'K'), (0, 1, 'K'), (0, 2, 'K')], 0, 10, 20, (2, 20)),
            (&[(0, 0, 'K'), (0, 1, 'K'), (0, 2, 'K')], 0, 10, 15, (2, 20)),
            (&[(0, 0, 'K'), (0, 1, 'K'), (0, 2, 'K')], 0, 10, 10, (1, 10)),
        ];
        for (i, &(list, ji, len, piece, want)) in cases.iter().enumerate() {
            assert_eq!(
                keep_run(&jobs(list), ji, len, piece, |_| len),
                want,
                "case {i}"
            );
        }
    }

    /// The peer's jobs, whole or by delta, in job order.
    #[test]
    fn remote_jobs_table() {
        type Case = (&'static [(usize, usize, char)], &'static [usize]);
        let cases: &[Case] = &[
            (&[], &[]),
            (&[(0, 0, 'K'), (0, 1, 'Z')], &[]),
            (
                &[(0, 0, 'R'), (0, 1, 'K'), (0, 2, 'D'), (1, 0, 'R')],
                &[0, 2, 3],
            ),
        ];
        for &(list, want) in cases {
            assert_eq!(remote_jobs(&jobs(list)), want);
        }
    }

    /// Which source each block comes from, first choice first.
    #[test]
    fn each_block_comes_from_the_first_source_that_has_it() {
        use crate::store::entry::MIN_BLOCK;
        let bs = MIN_BLOCK as u64;
        let file = |blocks: Vec<Hash>, size: u64| Entry {
            path: "f".into(),
            size,
            block_size: MIN_BLOCK,
            file_hash: crate::hash::list_hash(&blocks),
            blocks: blocks.into(),
            ..Entry::default()
        };
        let zero = crate::hash::md5(&vec![0u8; MIN_BLOCK as usize]);
        let (a, b, c, d, x) = ([1; 16], [2; 16], [3; 16], [4; 16], [9; 16]);
        // The new version: a (as ours), zeros, b (resumed), b again, c (in a local file),
        // d (ours had something else there: delta), x past our old size (the peer).
        let e = file(vec![a, zero, b, b, c, d, x], 7 * bs);
        let ours = file(vec![a, [7; 16], [7; 16], [7; 16], [7; 16], [8; 16]], 6 * bs);
        let local = HashMap::from([(c, ("other".to_string(), 5 * bs))]);
        let had = Had {
            keep: Some(&ours),
            resumed: 3 * bs,
            zero,
            local: &local,
            old_size: ours.size,
        };
        assert_eq!(
            sources_of(&e, &had),
            [
                Src::Keep,
                Src::Zero,
                Src::Have,
                Src::Same(2 * bs),
                Src::Local("other".into(), 5 * bs),
                Src::Delta,
                Src::Remote
            ]
        );
        // Without a current version: the peer for what is not zeros, resumed or repeated.
        let none = HashMap::new();
        let bare = Had {
            keep: None,
            resumed: 0,
            zero,
            local: &none,
            old_size: 0,
        };
        let got = sources_of(&e, &bare);
        assert_eq!(got[0], Src::Remote);
        assert_eq!(got[1], Src::Zero);
        assert_eq!(got[3], Src::Same(2 * bs));
    }
}
