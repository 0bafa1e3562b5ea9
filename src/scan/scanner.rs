//! The scanner: notices what changed in the share by comparing metadata with the index, hashes
//! only files whose size, mtime, inode or mode changed, and records new versions and deletions.
//! A full scan walks the whole share; a scan woken by inotify walks only the folders that had
//! events (and new folders inside them).

use crate::error::{Context, Error, Result};
use crate::hash;
use crate::store::entry::{Entry, FAST_MIN_BLOCKS, Kind, Stat, block_size_for};
use crate::store::ignore::{self, Ignore};
use crate::store::names;
use crate::store::version::Order;
use crate::sync::model::{Model, State};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What one scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub changed: usize,
    pub deleted: usize,
    /// Files seen changing while hashed: looked at again next time.
    pub unstable: usize,
    /// Time spent walking the tree (metadata only, no hashing).
    pub walk: std::time::Duration,
    /// Time spent hashing.
    pub hashing: std::time::Duration,
}

/// Files to hash found before they are hashed: past this many, the walk stops for them.
const CANDIDATES_AT_ONCE: usize = 1024;

/// Hashes files found changed or new; those found moved go into `moves` once their content is
/// seen to be their old name's.
fn hash_candidates(
    model: &Model,
    candidates: &mut Vec<Candidate>,
    (gone, emptied): (&[String], &[String]),
    moves: &mut Vec<(Candidate, Entry)>,
    out: &mut Scan,
) {
    let t = std::time::Instant::now();
    let candidates = std::mem::take(candidates);
    let mut moved = find_moved(model, &candidates, gone, emptied);
    let (mut small, mut big) = (Vec::new(), Vec::new());
    let (mut small_moved, mut big_moved) = (Vec::new(), Vec::new());
    for c in candidates {
        let is_small = c.stat.size < SIDE_BY_SIDE_BELOW;
        match moved.remove(&c.path) {
            Some(old) if is_small => small_moved.push((c, old)),
            Some(old) => big_moved.push((c, old)),
            None if is_small => small.push(c),
            None => big.push(c),
        }
    }
    // Large files are hashed one at a time, each on every core (`hash::file_blocks`).
    let confirmed = std::sync::Mutex::new(Vec::new());
    let hash_moved = |(c, old): &(Candidate, Entry)| hash_moved(model, c, old, &confirmed);
    for (cs, threads) in [(small_moved, SIDE_BY_SIDE), (big_moved, 1)] {
        let (changed, unstable) = hash_each(&cs, threads, &hash_moved);
        out.changed += changed;
        out.unstable += unstable;
    }
    moves.extend(confirmed.into_inner().unwrap_or_default());
    for (cs, threads) in [(small, SIDE_BY_SIDE), (big, 1)] {
        let (changed, unstable) = hash_each(&cs, threads, &|c| hash_one(model, c));
        out.changed += changed;
        out.unstable += unstable;
    }
    out.hashing += t.elapsed();
}

/// Files under this size are hashed `SIDE_BY_SIDE` at a time: reading them is most of the work
/// (a cold disk serves several reads at once), and each needs a buffer of its size at most.
const SIDE_BY_SIDE_BELOW: u64 = 1 << 20;
const SIDE_BY_SIDE: usize = 2;

/// Hashes and records files (`one` each) on `threads` threads; returns how many changed and how
/// many were seen changing while hashed.
fn hash_each<T: Sync>(
    cs: &[T],
    threads: usize,
    one: &(dyn Fn(&T) -> Result<bool> + Sync),
) -> (usize, usize) {
    let next = AtomicUsize::new(0);
    let work = || {
        let (mut changed, mut unstable) = (0, 0);
        while let Some(c) = cs.get(next.fetch_add(1, Ordering::Relaxed)) {
            match one(c) {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {}
                Err(e) => {
                    debug!("{e}");
                    unstable += 1;
                }
            }
        }
        (changed, unstable)
    };
    if threads <= 1 || cs.len() < 2 {
        return work();
    }
    std::thread::scope(|s| {
        let others: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mine = work();
        others.into_iter().fold(mine, |(a, b), h| {
            let (c, d) = h.join().unwrap_or_default();
            (a + c, b + d)
        })
    })
}

/// A file to hash: its path, what it looked like, and the index entry's seq and version when
/// seen.
#[derive(Clone)]
struct Candidate {
    path: String,
    stat: Stat,
    seq: Option<u64>,
    version: Option<crate::store::version::Version>,
}

/// Scans the share once: all of it, or (`dirs`) only those folders, relative to the share, and
/// new folders found in them.
pub fn scan(
    model: &Model,
    dirs: Option<&HashSet<String>>,
    mut watcher: Option<&mut crate::sys::watch::Watcher>,
) -> Result<Scan> {
    let root = &model.root;
    // A missing state directory means the folder is not the one the index describes (an
    // unmounted disk, say): never infer deletions from it.
    fs::metadata(root.join(names::STATE_DIR)).at(root.join(names::STATE_DIR))?;
    let ignore = load_ignore(model);
    // Files written since the last scan are hashed again even if their stat looks unchanged.
    let written: HashSet<String> = watcher
        .as_deref_mut()
        .map(|w| w.take_written())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.strip_prefix(root).ok()?.to_str().map(str::to_string))
        .collect();
    let mut walk = Walk {
        model,
        dirs,
        watcher,
        ignore,
        written,
        out: Scan::default(),
        candidates: Vec::new(),
        stack: match dirs {
            Some(d) => d.iter().cloned().collect(),
            None => vec![String::new()],
        },
        gone: Vec::new(),
        emptied: Vec::new(),
        visited: HashSet::new(),
        warned_names: HashSet::new(),
        moves: Vec::new(),
        retyped: Vec::new(),
        fresh: HashSet::new(),
    };
    let started = std::time::Instant::now();
    loop {
        // Files to hash are taken a bounded number at a time, so a large new tree is never
        // all in memory; the rest once the walk is done.
        if walk.candidates.len() >= CANDIDATES_AT_ONCE || walk.stack.is_empty() {
            walk.hash_candidates();
        }
        let Some(dir) = walk.stack.pop() else {
            break;
        };
        if walk.visited.insert(dir.clone())
            && let Some(listing) = walk.list(dir)
        {
            walk.compare(listing);
        }
    }
    walk.out.walk = started.elapsed().saturating_sub(walk.out.hashing);
    walk.finish()
}

/// One scan under way: what it was asked to look at, and what it found so far.
struct Walk<'a> {
    model: &'a Model,
    /// The folders to walk (and new folders inside them); `None`: the whole share.
    dirs: Option<&'a HashSet<String>>,
    watcher: Option<&'a mut crate::sys::watch::Watcher>,
    ignore: Ignore,
    /// Files written since the last scan (inotify): hashed even if their stat looks unchanged.
    written: HashSet<String>,
    out: Scan,
    /// Files to hash, found changed or new.
    candidates: Vec<Candidate>,
    /// Folders still to list.
    stack: Vec<String>,
    /// What the index has that is gone from the folders walked.
    gone: Vec<String>,
    /// The folders (of the index, or implied by its names) whose content is gone with them.
    emptied: Vec<String>,
    visited: HashSet<String>,
    warned_names: HashSet<std::path::PathBuf>,
    /// Files found to have moved, recorded at the end with the deletions of their old names.
    moves: Vec<(Candidate, Entry)>,
    /// Files where the index has a folder: hashed and recorded after the deletions of what the
    /// folder held, so peers learn of those first and can remove the folder for the file.
    retyped: Vec<Candidate>,
    /// Folders this scan found new: a temp file in one is not a pull's to resume unless its
    /// target is being pulled or wanted (a pull's temp file taken along by a folder renamed
    /// here would stay for good).
    fresh: HashSet<String>,
}

/// What one folder holds, read without the lock.
struct Listing {
    dir: String,
    /// The folder, opened without following a symlink on the way.
    opened: crate::sys::dirfd::Dir,
    children: Vec<(String, fs::Metadata)>,
    /// Names whose type could not be read: they are there, but not looked at.
    unlisted: Vec<String>,
    /// A listing cut short by an error says nothing of what is missing.
    complete: bool,
    /// Temp files found in a folder new in this scan.
    temps: Vec<String>,
}

/// What the scan makes of a folder it found, against the index's entry `cur`.
#[derive(Debug, PartialEq, Eq)]
enum FolderSeen {
    /// A folder the index has, with another mode: a new version, if a second look agrees.
    ModeChanged,
    /// A folder the index has as it is.
    Known,
    /// New here, or where the index has a file or a deletion: a new folder, if a second look
    /// agrees.
    New,
}

/// Decides what a folder with `stat` is, given the index's entry for its path.
fn folder_seen(cur: Option<&Entry>, stat: &Stat) -> FolderSeen {
    match cur {
        Some(e) if e.kind == Kind::Dir && !e.deleted && e.stat.mode != stat.mode => {
            FolderSeen::ModeChanged
        }
        Some(e) if e.kind == Kind::Dir && !e.deleted => FolderSeen::Known,
        _ => FolderSeen::New,
    }
}

/// What the scan makes of a file it found, against the index's entry `cur`.
#[derive(Debug, PartialEq, Eq)]
enum FileSeen {
    /// As the index has it: nothing to do.
    Same,
    /// To hash: new or changed.
    Changed,
    /// To hash after the deletions of what the index's folder there held.
    Retyped,
}

/// Decides what a file with `stat` is; `written`: inotify saw it written since the last scan.
fn file_seen(cur: Option<&Entry>, stat: &Stat, written: bool) -> FileSeen {
    match cur {
        Some(e) if e.is_file() && e.stat == *stat && !written => FileSeen::Same,
        Some(e) if e.kind == Kind::Dir && !e.deleted => FileSeen::Retyped,
        _ => FileSeen::Changed,
    }
}

/// Which names the index knows in a folder are gone (`gone`), and which of them held names
/// that are gone with them (`emptied`: a folder missing, or something else now), given per
/// known name whether the listing has it and as a folder (`None`: not there). Nothing is gone
/// from a listing that is not `complete`.
fn missing(
    known: &[Known],
    on_disk: &[Option<bool>],
    complete: bool,
) -> (Vec<String>, Vec<String>) {
    let (mut gone, mut emptied) = (Vec::new(), Vec::new());
    for (k, seen) in known.iter().zip(on_disk).filter(|_| complete) {
        let holds = k.entry.as_ref().is_none_or(|e| e.kind == Kind::Dir);
        match seen {
            None => {
                if k.entry.as_ref().is_some_and(|e| !e.deleted) {
                    gone.push(k.path.clone());
                }
                if holds {
                    emptied.push(k.path.clone());
                }
            }
            Some(false) if holds => emptied.push(k.path.clone()),
            Some(_) => {}
        }
    }
    (gone, emptied)
}

impl Walk<'_> {
    /// Hashes the candidates found so far (except those found moved).
    fn hash_candidates(&mut self) {
        hash_candidates(
            self.model,
            &mut self.candidates,
            (&self.gone, &self.emptied),
            &mut self.moves,
            &mut self.out,
        );
    }

    /// Whether inotify watches the folder at `path` with inode `ino`.
    fn watched(&self, path: &str, ino: u64) -> bool {
        self.watcher
            .as_deref()
            .is_some_and(|w| w.watches(&self.model.root.join(path), ino))
    }

    /// Lists folder `dir`, without the lock; `None` when it cannot be listed.
    fn list(&mut self, dir: String) -> Option<Listing> {
        let abs = self.model.root.join(&dir);
        // Listed through the folder opened without following a symlink on the way: one
        // swapped in since it was found would have us list a folder outside the share. The
        // folder stays open while it is listed: the entries' stats may go through its
        // `/proc/self/fd` name (musl's std stats an entry by its path).
        let listed = crate::sys::dirfd::Dir::open(&self.model.root, &dir)
            .and_then(|d| d.read_dir(&abs).map(|rd| (d, rd)));
        let (opened, rd) = match listed {
            Ok(x) => x,
            // Gone, or not a folder any more: the scan of the folder that held it says so.
            Err(e)
                if self.dirs.is_some()
                    && (e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20)) =>
            {
                return None;
            }
            Err(e) => {
                // Nothing inside it is taken for deleted: it is not compared with the index.
                warn!("{}: cannot read folder: {e}", abs.display());
                return None;
            }
        };
        if let Some(w) = self.watcher.as_deref_mut() {
            w.add(&abs);
        }
        let mut l = Listing {
            dir,
            opened,
            children: Vec::new(),
            unlisted: Vec::new(),
            complete: true,
            temps: Vec::new(),
        };
        for ent in rd {
            let Ok(ent) = ent else {
                l.complete = false;
                continue;
            };
            let name = ent.file_name();
            let Some(name) = name.to_str() else {
                if self.warned_names.insert(abs.join(&name)) {
                    debug!("{}: skipped: name is not UTF-8", abs.join(&name).display());
                }
                continue;
            };
            if l.dir.is_empty() && name == names::STATE_DIR {
                continue;
            }
            if names::is_temp(name) {
                if self.fresh.contains(&l.dir) {
                    l.temps.push(name.to_string());
                }
                continue;
            }
            let path = if l.dir.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", l.dir)
            };
            // A name no peer would take (a path past 4,096 bytes, deep down): never recorded,
            // or every connection would end on it, for good (review16).
            if let Err(e) = names::check(&path) {
                if self.warned_names.insert(abs.join(name)) {
                    warn!("{}: skipped: {e}", abs.join(name).display());
                }
                continue;
            }
            match ent.metadata() {
                Ok(md) => l.children.push((path, md)),
                Err(_) => l.unlisted.push(path),
            }
        }
        Some(l)
    }

    /// Compares a folder's listing with the index, under the lock: records new folders and
    /// folder modes, queues files to hash and folders to walk, and notes what is gone.
    fn compare(&mut self, l: Listing) {
        let model = self.model;
        let mut g = model.lock();
        let st = &mut *g;
        if !l.temps.is_empty() {
            remove_orphan_temps(st, &l.opened, &l.dir, &l.temps);
        }
        // What the index holds directly in this folder, by path.
        let known = known_children(&st.index, &l.dir);
        let find = |p: &str| {
            known
                .binary_search_by(|k| k.path.as_str().cmp(p))
                .ok()
                .and_then(|i| known[i].entry.as_ref())
        };
        for (path, md) in &l.children {
            if !self.ignore.is_empty() && self.ignore.is_ignored(path, md.is_dir()) {
                // Ignored: neither sent nor deleted; what the index had stays as it was.
                continue;
            }
            let stat = Stat::of(md);
            if md.is_dir() {
                if self.folder(st, path, &stat, find(path)) {
                    self.stack.push(path.clone());
                }
            } else if md.is_file() {
                // In place of a folder received before a crash (logged, done, the index not
                // saved): hashed after what the folder held is recorded deleted, as a file
                // replacing a folder the index knows is (review15).
                let was_folder = !st.scanned
                    && (st.installed.get(path)).is_some_and(|r| r.kind == Kind::Dir && !r.deleted);
                // One an install since the index's entry was done for is looked at even if
                // its stat is the entry's: the user may have put the entry's state back.
                let logged = !st.scanned && st.installed.contains_key(path);
                self.file(path, stat, find(path), was_folder, logged);
            }
            // Symlinks and special files are not synced (see the README).
        }
        // What the index has here and the folder does not is gone; so is what was inside a
        // folder that is gone or is something else now. Per name the index knows: whether
        // the folder holds it, and as a folder.
        let mut on_disk: Vec<Option<bool>> = vec![None; known.len()];
        // Symlinks and special files are not synced: a file replaced by one is gone
        // (review12: the name counted, the file stayed live in the index for good).
        let listed = (l.children.iter())
            .filter(|(_, md)| md.is_dir() || md.is_file())
            .map(|(p, md)| (p, md.is_dir()));
        for (p, is_dir) in listed.chain(l.unlisted.iter().map(|p| (p, true))) {
            if let Ok(i) = known.binary_search_by(|k| k.path.as_str().cmp(p)) {
                on_disk[i] = Some(is_dir);
            }
        }
        let (gone, emptied) = missing(&known, &on_disk, l.complete);
        self.gone.extend(gone);
        self.emptied.extend(emptied);
    }

    /// Takes in a folder found at `path` (under the lock); returns whether to walk it.
    fn folder(&mut self, st: &mut State, path: &str, stat: &Stat, cur: Option<&Entry>) -> bool {
        // Looked at again under the lock: the listing may have caught a folder a pull was
        // making (made 0700, then given its mode), or one a pull has deleted since, and
        // recorded: it must not come back.
        let again = || folder_now(&self.model.root, path);
        match (folder_seen(cur, stat), cur) {
            (FolderSeen::ModeChanged, Some(e))
                if again().is_some_and(|m| Stat::of(&m).mode == stat.mode) =>
            {
                self.folder_changed(st, path, stat, e);
                // A partial scan walks a folder it knew only if it had events, or if it is
                // not watched yet (made by a pull: what came into it since made no event).
                !(self.dirs.is_some() && self.watched(path, stat.ino))
            }
            // As the index has it, where an install done before the last stop put something
            // else (a file, a deletion, another mode): the user put it back while we were
            // down, a change of what was installed. Left alone, the install was recorded over
            // it, a file over the folder or the peer's mode, and the change was lost
            // (review21).
            (FolderSeen::Known, Some(e))
                if done_over(st, path, Some(e))
                    && again().is_some_and(|m| Stat::of(&m).mode == stat.mode) =>
            {
                self.folder_changed(st, path, stat, e);
                !(self.dirs.is_some() && self.watched(path, stat.ino))
            }
            (FolderSeen::ModeChanged | FolderSeen::Known, _) => {
                !(self.dirs.is_some() && self.watched(path, stat.ino))
            }
            (FolderSeen::New, _) => {
                if again().is_none() {
                    return false;
                }
                self.new_folder(st, path, stat, cur);
                true
            }
        }
    }

    /// Takes in our folder `e` at `path` found with `stat`: a change since the last scan, or
    /// since an install done before the last stop.
    fn folder_changed(&mut self, st: &mut State, path: &str, stat: &Stat, e: &Entry) {
        // A peer's mode put on it just before the last stop (logged ahead, the index not
        // saved): the peer's version, not a change here.
        let holds =
            |r: &Entry| r.kind == Kind::Dir && !r.deleted && r.dir_mode() & 0o777 == stat.mode;
        if let Some(rec) = take_logged(&mut st.received, &mut st.installed, path, holds) {
            info!("{path}/: its mode was received before the last stop");
            let mut ne = rec;
            ne.stat = *stat;
            st.put(ne);
            return;
        }
        // Recorded, unsettled, at the end of a first scan (`record_unsettled`), and found as it
        // was installed: that version.
        if e.stat == Stat::default() && !e.deleted && e.dir_mode() & 0o777 == stat.mode {
            let mut ne = e.clone();
            ne.stat = *stat;
            st.put(ne);
            return;
        }
        // Changed here since we last looked: a new version of the folder.
        let device = st.index.device;
        let done = take_done(&mut st.received, &mut st.installed, path);
        let mut ne = e.clone();
        ne.mode = stat.mode;
        ne.modified_by = device;
        ne.version = local_version(Some(&e.version), done.as_ref(), device);
        ne.stat = *stat;
        if e.stat.mode != stat.mode {
            info!("folder mode changed locally: {path}/ ({:o})", stat.mode);
        } else {
            info!("folder changed locally: {path}/ (back from what was received)");
        }
        st.put(ne);
        self.out.changed += 1;
    }

    /// Takes in a folder at `path` the index does not have live (`cur`: what it has).
    fn new_folder(&mut self, st: &mut State, path: &str, stat: &Stat, cur: Option<&Entry>) {
        // Made for a pull, or a peer's folder made, just before the last stop (logged
        // ahead, the index not saved): the entry logged, not a new folder of ours,
        // which would be newer than the peer's and win with the mode it was made
        // with (review11).
        let mut stat = *stat;
        if let Some(made) = finish_folder(st, &self.model.root, path, &stat) {
            stat = made;
        }
        let stat = &stat;
        let holds = |r: &Entry| {
            r.kind == Kind::Dir
                && !r.deleted
                && r.dir_mode() & 0o777 == stat.mode
                && cur.is_none_or(|c| {
                    // A placeholder is made only where the index has nothing.
                    !r.version.pairs().is_empty()
                        && matches!(
                            r.version.compare(&c.version),
                            Order::Newer | Order::Concurrent
                        )
                })
        };
        if let Some(mut rec) = take_logged(&mut st.received, &mut st.installed, path, holds) {
            info!("{path}/: made for a pull before the last stop");
            rec.stat = *stat;
            st.put(rec);
            // Not fresh: the temp files in it are kept pulls', to resume.
            return;
        }
        // A folder made here, perhaps in place of a file (or a folder of another
        // mode) received before the last stop: a change of that.
        let device = st.index.device;
        let done = take_done(&mut st.received, &mut st.installed, path);
        let version = local_version(cur.map(|e| &e.version), done.as_ref(), device);
        info!("new folder {path}/");
        st.put(Entry {
            path: path.to_string(),
            kind: Kind::Dir,
            mode: stat.mode,
            mtime: stat.mtime,
            mtime_ns: stat.mtime_ns,
            modified_by: device,
            version,
            stat: *stat,
            ..Entry::default()
        });
        self.out.changed += 1;
        self.fresh.insert(path.to_string());
    }

    /// Takes in a file found at `path`: queued for hashing if new or changed.
    fn file(
        &mut self,
        path: &str,
        stat: Stat,
        cur: Option<&Entry>,
        was_folder: bool,
        logged: bool,
    ) {
        let seen = match file_seen(cur, &stat, self.written.contains(path)) {
            // In place of a folder: hashed after what it held is recorded deleted.
            _ if was_folder => FileSeen::Retyped,
            FileSeen::Same if logged => FileSeen::Changed,
            seen => seen,
        };
        if seen == FileSeen::Same {
            return;
        }
        match cur {
            Some(e) if e.stat == stat => debug!("{path}: written since the last scan"),
            Some(e) => debug!("{path}: stat {:?} -> {stat:?}", e.stat),
            None => {}
        }
        let c = Candidate {
            path: path.to_string(),
            stat,
            seq: cur.map(|e| e.seq),
            version: cur.map(|e| e.version.clone()),
        };
        if seen == FileSeen::Retyped {
            self.retyped.push(c);
        } else {
            self.candidates.push(c);
        }
    }

    /// Records what the walk found gone or moved (a moved file's new name and its old name's
    /// deletion together, so a peer learns both at once and can move its copy instead of
    /// copying it), then the files that replaced folders.
    fn finish(mut self) -> Result<Scan> {
        let model = self.model;
        let root = &model.root;
        let mut g = model.lock();
        let st = &mut *g;
        for (c, old) in std::mem::take(&mut self.moves) {
            let (blocks, fast) = (old.blocks.to_vec(), old.fast.to_vec());
            if record(st, root, &c, blocks, fast, old.block_size) {
                self.out.changed += 1;
                // Its old name's deletion right after it, announced with it: a peer has both
                // before it takes the new name, and reads its blocks from its old copy.
                let gone = vec![old.path.clone()];
                record_gone(st, root, &self.ignore, &[], gone, &mut self.out);
            }
        }
        let gone = std::mem::take(&mut self.gone);
        record_gone(st, root, &self.ignore, &self.emptied, gone, &mut self.out);
        if !st.scanned {
            // What the install log names as done and is gone now was deleted here while we
            // were down: recorded, or the peer's version comes back (review13); before the
            // files that replaced folders, as their content's deletions are.
            record_received_gone(st, root, &self.ignore, &mut self.out);
        }
        if !self.retyped.is_empty() {
            drop(g);
            let mut retyped = std::mem::take(&mut self.retyped);
            hash_candidates(
                model,
                &mut retyped,
                (&[], &[]),
                &mut Vec::new(),
                &mut self.out,
            );
            g = model.lock();
        }
        let st = &mut *g;
        if !st.scanned {
            st.scanned = true;
            // What the install log held is settled: its files were found, or are gone. One
            // not done was not installed: its pull resumes. A done one whose file the scan did
            // not settle (changed while hashed, gone meanwhile, not read, made again after
            // its folder was listed, ignored) is recorded as that install, with no stat, as
            // an index saved before the crash would have had it: the next scan that reaches
            // the file (now, or once it is no longer ignored, after any restart) hashes it as
            // a change of that version. Else it made a conflict copy of the peer's own
            // version, and its deletion brought the peer's back (review18-20).
            for (_, rec) in std::mem::take(&mut st.installed) {
                record_unsettled(st, rec);
            }
            st.received = Default::default();
            st.installed = Default::default();
            // Pulls wait for this after a crash (`puller::take_batch`).
            model.changed.notify_all();
            // Connections hold back IndexDone until now.
            for p in st.peers.values() {
                let _ = p.out.send(crate::sync::model::Out::Announce);
            }
        }
        Ok(self.out)
    }
}

/// Records the deletions of what the index has and the walk did not find: `gone`, and all that
/// was inside the folders `emptied`, unless ignored, or there again (made since the folder was
/// read, by a pull), or deleted meanwhile. What a folder held is deleted before the folder (a
/// name sorts after its folder's): a peer takes deletions in this order.
fn record_gone(
    st: &mut State,
    root: &Path,
    ignore: &crate::store::ignore::Ignore,
    emptied: &[String],
    mut gone: Vec<String>,
    out: &mut Scan,
) {
    let device = st.index.device;
    for d in emptied {
        let prefix = format!("{d}/");
        gone.extend(
            st.index
                .from(Bound::Included(prefix.as_str()))
                .take_while(|x| x.path.starts_with(&prefix))
                .filter(|x| !x.deleted)
                .map(|x| x.path.clone()),
        );
    }
    let mut gone: Vec<String> = gone
        .into_iter()
        .filter(|p| {
            ignore.is_empty()
                || !st
                    .index
                    .get(p)
                    .is_some_and(|e| ignore.is_ignored(&e.path, e.kind == Kind::Dir))
        })
        .collect();
    gone.sort_unstable_by(|a, b| b.cmp(a));
    gone.dedup();
    for path in gone {
        if on_disk(root, &path) {
            continue; // created since the folder was read (by a pull): next scan sees it
        }
        let Some(old) = st
            .index
            .get(&path)
            .filter(|e| !e.deleted)
            .map(|e| e.into_owned())
        else {
            continue; // deleted meanwhile (by a pull)
        };
        // A peer's deletion applied before the last stop, the index not saved since: the
        // peer's, not a new one of ours (review24: every deletion received before a kill came
        // back as one, concurrent with the peer's and merged newer).
        let received = |r: &Entry| {
            r.deleted
                && matches!(
                    r.version.compare(&old.version),
                    Order::Newer | Order::Concurrent
                )
        };
        if let Some(rec) = take_logged(&mut st.received, &mut st.installed, &path, received) {
            debug!("{path}: its deletion was received before the last stop");
            let version = crate::sync::install::taken_version(Some(&old), &rec, device);
            st.put(Entry { version, ..rec });
            continue;
        }
        let e = Entry {
            path: path.clone(),
            kind: old.kind,
            deleted: true,
            mtime: now_secs(),
            modified_by: device,
            version: old.version.bumped(device),
            ..Entry::default()
        };
        info!("deleted locally: {path}");
        st.put(e);
        out.deleted += 1;
    }
}

/// A peer's folder made (0700, as `install::apply_dir` makes it) just before a kill, before
/// it got the peer's mode: given it now, so that the scan takes it for the peer's, not for a
/// new folder of ours (concurrent with a deletion made there since, it came back: review15).
/// Returns the folder's stat then.
fn finish_folder(st: &State, root: &Path, path: &str, stat: &Stat) -> Option<Stat> {
    let rec = st.received.get(path)?;
    if stat.mode != 0o700
        || st
            .installed
            .get(path)
            .is_some_and(|i| i.version == rec.version)
        || rec.kind != Kind::Dir
        || rec.deleted
        || rec.version.pairs().is_empty()
        || rec.dir_mode() & 0o777 == 0o700
    {
        return None;
    }
    let (parent, name) = crate::sys::dirfd::Dir::parent(root, path).ok()?;
    let sub = parent.sub(name).ok()?;
    // The very folder looked at, not one put in its place since.
    let md = sub.metadata().ok()?;
    if Stat::of(&md).ino != stat.ino {
        return None;
    }
    sub.chmod(rec.dir_mode()).ok()?;
    debug!("{path}/: made for the peer's folder before the last stop; given its mode");
    Some(Stat::of(&sub.metadata().ok()?))
}

/// The install the log names for `path`, taken out of `received`: its version if it was
/// done (renamed in, folder made), so that what is found changed there was changed after it.
fn take_done(
    received: &mut std::collections::HashMap<String, Entry>,
    installed: &mut std::collections::HashMap<String, Entry>,
    path: &str,
) -> Option<crate::store::version::Version> {
    received.remove(path);
    installed.remove(path).map(|e| e.version)
}

/// Records `rec`, an install (a file, a folder, a deletion) done at a path the first scan after
/// a crash did not settle, as what the index has there, with an unknown stat (none matches it:
/// the next scan hashes the file, and weighs a folder's mode against the installed one),
/// unless the index has it or a later version. A folder's was dropped: a mode the user put back
/// in an ignored folder while we were down was lost to the peer's (review22).
fn record_unsettled(st: &mut State, rec: Entry) {
    let cur = st.index.get(&rec.path).map(|e| e.into_owned());
    if cur.as_ref().is_some_and(|c| {
        !matches!(
            rec.version.compare(&c.version),
            Order::Newer | Order::Concurrent
        )
    }) {
        return;
    }
    debug!(
        "{}: received before the last stop, not settled yet",
        rec.path
    );
    let version = crate::sync::install::taken_version(cur.as_ref(), &rec, st.index.device);
    st.put(Entry {
        version,
        stat: Stat::default(),
        ..rec
    });
}

/// The entry the install log names for `path` that `holds` what was found there: the last one
/// logged (its install perhaps cut, the content there anyway), else the last one installed (a
/// later one cut before it was applied: review16); taken out of the log's maps if found.
fn take_logged(
    received: &mut std::collections::HashMap<String, Entry>,
    installed: &mut std::collections::HashMap<String, Entry>,
    path: &str,
    holds: impl Fn(&Entry) -> bool,
) -> Option<Entry> {
    let found = match (received.get(path), installed.get(path)) {
        (Some(last), _) if holds(last) => last.clone(),
        (_, Some(done)) if holds(done) => done.clone(),
        // Neither: both stay, for what the caller makes of the path instead ([`take_done`]:
        // review19, a received file replaced by a folder made a conflict copy of the peer's).
        _ => return None,
    };
    received.remove(path);
    installed.remove(path);
    Some(found)
}

/// The version of a change found at a path: the index's (`cur`) bumped, with the install
/// the log names for the path merged in if it was done (`done`): the user changed what was
/// received while we were down, and that change wins over it, not beside it as a concurrent
/// edit (review15: a spurious conflict copy, or the user's edit lost to an older mtime).
fn local_version(
    cur: Option<&crate::store::version::Version>,
    done: Option<&crate::store::version::Version>,
    device: u64,
) -> crate::store::version::Version {
    let base = match (cur, done) {
        (Some(c), Some(d)) => c.merged(d),
        (Some(c), None) => c.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => crate::store::version::Version::default(),
    };
    base.bumped(device)
}

/// Whether a file or folder is at `path`, reached without following a symlink: under a
/// folder replaced by a symlink (review16: the files the folder held were found through it,
/// outside the share, and never recorded deleted), or a file, nothing is; a symlink or a
/// special file there is none either. A path that cannot be looked at counts as there.
pub fn on_disk(root: &Path, path: &str) -> bool {
    match crate::sys::dirfd::Dir::parent(root, path) {
        Ok((dir, name)) => match dir.stat(name) {
            Ok(Some(md)) => md.is_dir() || md.is_file(),
            Ok(None) => false,
            Err(_) => true,
        },
        Err(e) => {
            !(matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) || e.raw_os_error() == Some(crate::sys::open::ELOOP))
        }
    }
}

/// Records the deletions of what the install log names as done (`received`, `installed`: not
/// found by the first scan) and is gone (or under a file now), unless our index has it as
/// new: the user deleted it while we were down, after it was received (review13, review15),
/// and the peers' versions must not come back. An install not done (a crash before its rename)
/// is no deletion: its pull resumes from the temp file. Folders made for a pull (no version)
/// have nothing to delete. What a folder held goes before the folder.
fn record_received_gone(
    st: &mut State,
    root: &Path,
    ignore: &crate::store::ignore::Ignore,
    out: &mut Scan,
) {
    let gone = |p: &str| !on_disk(root, p);
    let device = st.index.device;
    let mut paths: Vec<String> = st.installed.keys().cloned().collect();
    paths.sort_unstable_by(|a, b| b.cmp(a));
    for path in paths {
        let Some(rec) = st.installed.get(&path) else {
            continue;
        };
        if rec.deleted
            || rec.version.pairs().is_empty()
            || ignore.is_ignored(&path, rec.kind == Kind::Dir)
            || !gone(&path)
            || st.index.get(&path).is_some_and(|c| {
                !matches!(
                    rec.version.compare(&c.version),
                    Order::Newer | Order::Concurrent
                )
            })
        {
            continue;
        }
        let cur = st.index.get(&path).map(|c| c.version.clone());
        let (kind, version) = (
            rec.kind,
            local_version(cur.as_ref(), Some(&rec.version), device),
        );
        st.received.remove(&path);
        st.installed.remove(&path);
        info!("deleted locally: {path} (received before the last stop)");
        st.put(Entry {
            path,
            kind,
            deleted: true,
            mtime: now_secs(),
            modified_by: device,
            version,
            ..Entry::default()
        });
        out.deleted += 1;
    }
}

/// Removes the temp files `temps` of folder `dir` whose target no pull is busy with or wants
/// (under the lock, which pulls take before they make a temp file).
fn remove_orphan_temps(st: &State, d: &crate::sys::dirfd::Dir, dir: &str, temps: &[String]) {
    let ours = |t: &str, p: &str| {
        let (pd, name) = names::split(p);
        pd == dir && names::temp_for(name) == t
    };
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    for t in temps {
        // Until the first scan has settled the install log, its files' temp files stay.
        let logged = !st.scanned && st.received.keys().any(|p| ours(t, p));
        let wanted = logged
            || st.busy.iter().any(|p| ours(t, p))
            || st.peers.values().any(|peer| {
                peer.needs
                    .mem()
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .any(|(k, _)| ours(t, k))
            });
        if !wanted {
            debug!("{dir}/{t}: a temp file no pull wants, in a folder new here: removed");
            d.unlink_file(t);
        }
    }
}

/// A name directly inside a folder, as the index knows it: its entry, or `None` for a folder
/// the index has no entry of but holds names inside.
struct Known {
    path: String,
    entry: Option<Entry>,
}

/// What the index holds directly inside folder `dir` ("" for the top), sorted by path, found
/// without walking what is deeper: the index is read on from each name, and each subfolder's
/// range of names is skipped over.
fn known_children(index: &crate::store::index::Index, dir: &str) -> Vec<Known> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out: Vec<Known> = Vec::new();
    let mut from = prefix.clone();
    'seek: loop {
        for e in index.from(Bound::Included(from.as_str())) {
            let Some(rest) = e.path.strip_prefix(&prefix) else {
                break 'seek;
            };
            match rest.find('/') {
                None => out.push(Known {
                    path: e.path.clone(),
                    entry: Some(e.into_owned()),
                }),
                // Deeper: go on after every name that starts with "prefix/sub/" ('0' follows
                // '/').
                Some(i) => {
                    // Unless the folder has its own entry, which came before ("a/b",
                    // "a/b.txt", then "a/b/c"), its name goes where it sorts.
                    let sub = &e.path[..prefix.len() + i];
                    let at = out.partition_point(|k| k.path.as_str() < sub);
                    if out.get(at).is_none_or(|k| k.path != sub) {
                        let path = sub.to_string();
                        out.insert(at, Known { path, entry: None });
                    }
                    from = format!("{sub}0");
                    continue 'seek;
                }
            }
        }
        break;
    }
    out
}

/// Reads `.leftignore` at the top of the share when it changed, and returns the patterns in
/// force (also kept in the model, where incoming entries are checked against them).
fn load_ignore(model: &Model) -> Ignore {
    let path = model.root.join(ignore::FILE_NAME);
    // Never through a symlink (review12: one to a file outside the share was read), as the
    // scan never follows one: a symlinked `.leftignore` is no `.leftignore`.
    let opened =
        crate::sys::open::open_in(&model.root, ignore::FILE_NAME, crate::sys::open::Open::Read)
            .and_then(|f| f.metadata().map(|md| (f, md)));
    let (text, problem) = match opened {
        Ok((f, md)) if md.is_file() && md.len() <= 1 << 20 => {
            let mut text = String::new();
            let _ = io::Read::read_to_string(&mut io::Read::take(&f, 1 << 20), &mut text);
            (text, "")
        }
        Ok(_) => (String::new(), "not a text file under 1 MiB"),
        Err(e) if e.raw_os_error() == Some(crate::sys::open::ELOOP) => {
            (String::new(), "a symlink, not followed")
        }
        Err(_) => (String::new(), ""),
    };
    // Said once, not at every scan.
    static SAID: std::sync::Mutex<&str> = std::sync::Mutex::new("");
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if *said != problem && !problem.is_empty() {
        warn!("{}: {problem}; ignored", path.display());
    }
    *said = problem;
    drop(said);
    let mut g = model.lock();
    if g.ignore_text != text {
        let ig = Ignore::parse(&text);
        if ig.skipped() > 0 {
            warn!(
                "{}: {} lines can never match and were skipped",
                path.display(),
                ig.skipped()
            );
        }
        if !text.is_empty() {
            info!("{}: {} patterns in force", path.display(), ig.len());
        }
        // What the old patterns ignored of the peers' was not kept: with patterns changed, the
        // connections start over, and the peers' whole indexes are weighed under the new ones
        // (review12: a file no longer ignored was never taken).
        // Nor was what they ignored here looked at: a walk of every folder follows at once
        // (the partial scan of the event only lists the top; review21: edits made in a
        // subfolder while ignored waited for the rescan every 10 minutes).
        if !g.ignore_text.is_empty() && g.scanned {
            info!("ignore patterns changed: connections start over to weigh what peers hold");
            for p in g.peers.values() {
                let _ = p.stream.shutdown(std::net::Shutdown::Both);
            }
            g.rescan_all = true;
        }
        g.ignore = ig;
        g.ignore_text = text;
    }
    g.ignore.clone()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// New paths that are a file the index knows under another name, now gone (renamed or moved):
/// same inode, size, mtime and mode. Only candidates: each is read to see that it holds the
/// gone file's content before its hashes are taken over (`hash_moved`). The old
/// names are looked for among what the scan found gone so far (`gone`, and what was inside the
/// folders in `emptied`), not in the whole index.
fn find_moved(
    model: &Model,
    candidates: &[Candidate],
    gone: &[String],
    emptied: &[String],
) -> std::collections::HashMap<String, Entry> {
    let mut out = std::collections::HashMap::new();
    let fresh: std::collections::HashMap<u64, &Candidate> = candidates
        .iter()
        .filter(|c| c.seq.is_none())
        .map(|c| (c.stat.ino, c))
        .collect();
    if fresh.is_empty() || (gone.is_empty() && emptied.is_empty()) {
        return out;
    }
    let g = model.lock();
    let mut check = |e: &Entry| {
        if let Some(c) = fresh.get(&e.stat.ino)
            && e.is_file()
            && e.stat == c.stat
            && e.path != c.path
            && fs::symlink_metadata(model.root.join(&e.path)).is_err()
        {
            out.insert(c.path.clone(), e.clone());
        }
    };
    for p in gone {
        if let Some(e) = g.index.get(p) {
            check(&e);
        }
    }
    for d in emptied {
        let prefix = format!("{d}/");
        for e in g
            .index
            .from(Bound::Included(prefix.as_str()))
            .take_while(|x| x.path.starts_with(&prefix))
        {
            check(&e);
        }
    }
    out
}

/// Hashes one changed file and records a new version if its content or mode changed. Blocks
/// whose XXH64 is the one recorded last time keep their MD5; a file that changes while it is
/// hashed is left for the next scan.
fn hash_one(model: &Model, c: &Candidate) -> Result<bool> {
    let cur = model.lock().index.get(&c.path).map(|e| e.into_owned());
    let (b, bs) = read_blocks(model, c, cur.as_ref())?;
    if cur.is_some_and(|e| e.block_size == bs && !e.fast.is_empty()) && b.hashed < b.md5.len() {
        debug!("{}: {} of {} blocks changed", c.path, b.hashed, b.md5.len());
    }
    Ok(record(&mut model.lock(), &model.root, c, b.md5, b.fast, bs))
}

/// Reads a file found moved from `old`'s name (the same inode, size, mtime and mode), and puts
/// it in `confirmed` if it holds `old`'s content; else records it as the new file it is. Those
/// four say nothing of the content: a file removed while we were stopped frees its inode for
/// the next one made, which may well be given the same size, mtime and mode (`cp -p`). Taking
/// over `old`'s hashes unread would announce the wrong content for good: peers build it from
/// their copy of `old`, whose blocks match every hash. Each block is read, and keeps `old`'s
/// MD5 only where its XXH64 is `old`'s (as in any rescan), so a renamed big file costs a read
/// and no MD5; a small one (no XXH64s kept) is hashed.
fn hash_moved(
    model: &Model,
    c: &Candidate,
    old: &Entry,
    confirmed: &std::sync::Mutex<Vec<(Candidate, Entry)>>,
) -> Result<bool> {
    let (b, bs) = read_blocks(model, c, Some(old))?;
    if bs == old.block_size && *b.md5 == *old.blocks {
        let mut old = old.clone();
        old.fast = b.fast.into();
        if let Ok(mut v) = confirmed.lock() {
            v.push((c.clone(), old));
        }
        return Ok(false);
    }
    debug!(
        "{}: on the inode of {}, gone, with its size and mtime, but not its content",
        c.path, old.path
    );
    Ok(record(&mut model.lock(), &model.root, c, b.md5, b.fast, bs))
}

/// The blocks of candidate `c`'s file, and their size: those whose length and XXH64 are those of
/// `prev` (what the index had for the file, or for the one it moved from) keep its MD5. Fails if
/// the file is not as `c.stat` says before and after it is read: one changed meanwhile is left
/// for the next scan.
fn read_blocks(model: &Model, c: &Candidate, prev: Option<&Entry>) -> Result<(hash::Blocks, u32)> {
    let path = model.root.join(&c.path);
    // Never through a symlink on the way: a folder swapped for one since the listing would
    // have us read, and announce, a file outside the share.
    let f =
        crate::sys::open::open_in(&model.root, &c.path, crate::sys::open::Open::Read).at(&path)?;
    let before = Stat::of(&f.metadata().at(&path)?);
    if before != c.stat {
        return Err(Error::msg("changed while scanning").at(&path));
    }
    let bs = block_size_for(before.size);
    let prev = prev
        .filter(|e| e.is_file() && e.block_size == bs && !e.fast.is_empty())
        .map(|e| hash::Previous {
            size: e.size,
            blocks: &e.blocks,
            fast: &e.fast,
        });
    let same = || f.metadata().is_ok_and(|m| Stat::of(&m) == before);
    let b = hash::file_blocks(&f, before.size, bs, prev, &same).at(&path)?;
    let after = Stat::of(&fs::symlink_metadata(&path).at(&path)?);
    if after != before {
        return Err(Error::msg("file changed during hashing; will retry").at(&path));
    }
    Ok((b, bs))
}

/// Whether an install (or deletion) done before the last stop is newer than the index's entry
/// `cur` at `path` (or concurrent with it), or the index has none.
fn done_over(st: &State, path: &str, cur: Option<&Entry>) -> bool {
    st.installed.get(path).is_some_and(|d| {
        cur.is_none_or(|c| {
            matches!(
                d.version.compare(&c.version),
                Order::Newer | Order::Concurrent
            )
        })
    })
}

/// The folder at `path` in the share now, if a folder is there (not through a symlink).
fn folder_now(root: &Path, path: &str) -> Option<fs::Metadata> {
    crate::sys::dirfd::Dir::parent(root, path)
        .ok()
        .and_then(|(d, name)| d.stat(name).ok().flatten())
        .filter(|m| m.is_dir())
}

/// The last install known done at `path` since the index's entry `cur` (a kill before the
/// index was saved): what a scan finds there is that, or a change of it made while we were
/// down.
fn done_since(st: &State, path: &str, cur: Option<&Entry>) -> Option<Entry> {
    (st.installed.get(path))
        .filter(|i| {
            i.is_file()
                && cur.is_none_or(|c| {
                    matches!(
                        i.version.compare(&c.version),
                        Order::Newer | Order::Concurrent
                    )
                })
        })
        .cloned()
}

/// The logged install a file found at `path` (`found`: its hash, size and mode) is, if it is
/// one: received before a crash and not in the index yet, the peer's version, not a new one.
/// The last install logged (its content is here, whether or not it was marked done; then
/// true), else `installed`, the last one done (a later one cut before its rename: review16).
/// Its log entries go.
fn received_before_stop(
    received: &mut std::collections::HashMap<String, Entry>,
    logged_done: &mut std::collections::HashMap<String, Entry>,
    path: &str,
    cur: Option<&Entry>,
    installed: Option<Entry>,
    found: (&crate::hash::Hash, u64, u32),
) -> Option<(Entry, bool)> {
    let last =
        (received.get(path)).is_some_and(|rec| crate::store::intents::received(rec, cur, found));
    let taken = if last {
        received.remove(path)
    } else {
        installed.filter(|i| crate::store::intents::received(i, cur, found))
    }?;
    received.remove(path);
    logged_done.remove(path);
    Some((taken, last))
}

/// Records what a candidate holds; true if that is a new version.
fn record(
    st: &mut State,
    root: &Path,
    c: &Candidate,
    blocks: Vec<crate::hash::Hash>,
    mut fast: Vec<u64>,
    bs: u32,
) -> bool {
    let before = c.stat;
    if blocks.len() < FAST_MIN_BLOCKS {
        fast = Vec::new();
    }
    let file_hash = hash::list_hash(&blocks);
    let cur = st.index.get(&c.path);
    // A pull replaced it meanwhile. Its version tells, not its number: an entry announced
    // again as it is (ours won a conflict, `Model::take_in`) gets a new number, and its
    // change here, dropped for that, was never seen again.
    if cur.as_ref().map(|e| &e.version) != c.version.as_ref() {
        return false;
    }
    let found = (&file_hash, before.size, before.mode);
    let installed = done_since(st, &c.path, cur.as_deref());
    // A deletion (or a folder) done here since the index's entry: a file found is put back
    // since, a change of that, even with the same content as the index's entry (review22).
    let other_done = installed.is_none() && done_over(st, &c.path, cur.as_deref());
    if installed.is_none()
        && !other_done
        && let Some(e) = &cur
        && e.is_file()
        && e.file_hash == file_hash
        && e.size == before.size
        && e.mode & 0o777 == before.mode
    {
        // Same content (touched, or installed by us before a crash): no new version.
        st.index.set_local(&c.path, before, fast);
        st.dirty = true;
        return false;
    }
    let taken = received_before_stop(
        &mut st.received,
        &mut st.installed,
        &c.path,
        cur.as_deref(),
        installed,
        found,
    );
    if let Some((rec, last)) = taken {
        info!(
            "{}: received before the last stop; its version is the sender's",
            c.path
        );
        // A pull of that version whose install had not happened (the name was taken by a
        // copy of ours with the same content, say) left its temp file: nothing will finish it.
        if last && !st.busy.contains(&c.path) {
            crate::sync::disk::remove_temp(root, &c.path);
        }
        // Taken over a concurrent version of ours (kept as a conflict copy), as the install
        // would have recorded it: with ours merged in.
        let version = crate::sync::install::taken_version(cur.as_deref(), &rec, st.index.device);
        let mut e = rec;
        e.version = version;
        e.fast = fast.into();
        e.stat = before;
        st.put(e);
        return false;
    }
    let device = st.index.device;
    let done = take_done(&mut st.received, &mut st.installed, &c.path);
    let version = local_version(cur.as_ref().map(|e| &e.version), done.as_ref(), device);
    let e = Entry {
        path: c.path.clone(),
        kind: Kind::File,
        deleted: false,
        size: before.size,
        mtime: before.mtime,
        mtime_ns: before.mtime_ns,
        mode: before.mode,
        modified_by: device,
        version,
        block_size: bs,
        blocks: blocks.into(),
        file_hash,
        fast: fast.into(),
        seq: 0,
        stat: before,
    };
    info!("changed locally: {} ({} bytes)", c.path, before.size);
    st.put(e);
    true
}

/// Removes the temp files older than `max_age` (at start: no pull is running), but not those
/// of installs `logged` (the first scan tells by them whether the install was renamed in);
/// returns the others' paths, for [`crate::sync::model::State::found_temps`].
pub fn clean_temps(
    root: &Path,
    max_age: std::time::Duration,
    logged: &std::collections::HashMap<String, Entry>,
) -> Vec<String> {
    let keep: std::collections::HashSet<String> =
        logged.keys().map(|p| names::temp_rel(p)).collect();
    use crate::sys::dirfd::Dir;
    let mut kept = Vec::new();
    // Each folder opened from the top one component at a time without following a symlink
    // (a folder swapped for one while the walk goes on is never walked), one open at a time.
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let Ok(dir) = Dir::open(root, &rel) else {
            continue;
        };
        let Ok(rd) = dir.read_dir(&root.join(&rel)) else {
            continue;
        };
        for ent in rd.flatten() {
            // The listing's types: only temp files are looked at (a stat each).
            let Ok(ft) = ent.file_type() else { continue };
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if ft.is_dir() && !(rel.is_empty() && name == names::STATE_DIR) {
                stack.push(path);
            } else if ft.is_file() && names::is_temp(&name) {
                let old = dir
                    .stat(&name)
                    .ok()
                    .flatten()
                    .and_then(|md| md.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a > max_age);
                // A logged install's temp file (it carries the peer's mtime, often old) stays:
                // whether it is there tells the first scan if the install was renamed in.
                if old && !keep.contains(&path) {
                    dir.unlink_file(&name);
                } else {
                    kept.push(path);
                }
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::MIN_BLOCK;

    #[test]
    fn children_are_found_without_walking_deeper() {
        let mut m = crate::store::index::Index::new(1);
        for p in [
            "a", "a.txt", "a/b", "a/b/c", "a/b/c/d", "a/b.txt", "a/z", "a0", "b", "b/x", "ab/y",
        ] {
            m.put(Entry {
                path: p.to_string(),
                ..Entry::default()
            });
        }
        let names = |d: &str| -> Vec<String> {
            known_children(&m, d)
                .iter()
                .map(|e| e.path.clone())
                .collect()
        };
        // "ab" has no entry of its own, only a name inside it.
        assert_eq!(names(""), vec!["a", "a.txt", "a0", "ab", "b"]);
        let top = known_children(&m, "");
        assert!(top.iter().all(|k| k.entry.is_some() == (k.path != "ab")));
        assert_eq!(names("a"), vec!["a/b", "a/b.txt", "a/z"]);
        assert_eq!(names("a/b"), vec!["a/b/c"]);
        assert_eq!(names("ab"), vec!["ab/y"]);
        assert!(names("a/b/c/d").is_empty());
        assert!(names("nothing").is_empty());
    }

    /// What a scan makes of a folder and of a file it lists, against the index's entry.
    #[test]
    fn what_a_scan_found_is_decided_by_table() {
        let stat = |mode: u32, size: u64| Stat {
            mode,
            size,
            ..Stat::default()
        };
        let entry = |kind: Kind, deleted: bool, st: Stat| Entry {
            kind,
            deleted,
            stat: st,
            ..Entry::default()
        };
        let (dir, file) = (Kind::Dir, Kind::File);
        let now = stat(0o755, 0);
        let folders: [(Option<Entry>, FolderSeen); 6] = [
            (None, FolderSeen::New),
            (Some(entry(dir, false, now)), FolderSeen::Known),
            (
                Some(entry(dir, false, stat(0o700, 0))),
                FolderSeen::ModeChanged,
            ),
            (Some(entry(dir, true, now)), FolderSeen::New),
            (Some(entry(file, false, now)), FolderSeen::New),
            (Some(entry(file, true, now)), FolderSeen::New),
        ];
        for (cur, want) in folders {
            assert_eq!(folder_seen(cur.as_ref(), &now), want, "{cur:?}");
        }
        let now = stat(0o644, 5);
        let files: [(Option<Entry>, bool, FileSeen); 7] = [
            (None, false, FileSeen::Changed),
            (Some(entry(file, false, now)), false, FileSeen::Same),
            (Some(entry(file, false, now)), true, FileSeen::Changed),
            (
                Some(entry(file, false, stat(0o644, 6))),
                false,
                FileSeen::Changed,
            ),
            (Some(entry(file, true, now)), false, FileSeen::Changed),
            (Some(entry(dir, false, now)), false, FileSeen::Retyped),
            (Some(entry(dir, true, now)), false, FileSeen::Changed),
        ];
        for (cur, written, want) in files {
            assert_eq!(
                file_seen(cur.as_ref(), &now, written),
                want,
                "{cur:?} {written}"
            );
        }
    }

    /// Which known names a listing shows gone, and which held names gone with them.
    #[test]
    fn what_is_gone_is_decided_by_table() {
        let k = |path: &str, e: Option<(Kind, bool)>| Known {
            path: path.to_string(),
            entry: e.map(|(kind, deleted)| Entry {
                path: path.to_string(),
                kind,
                deleted,
                ..Entry::default()
            }),
        };
        let known = [
            k("f", Some((Kind::File, false))),
            k("t", Some((Kind::File, true))),
            k("d", Some((Kind::Dir, false))),
            k("implied", None),
            k("x", Some((Kind::File, false))),
            k("y", Some((Kind::Dir, false))),
        ];
        // f, t, d and "implied" are not listed; x is a folder now; y is a file now.
        let on_disk = [None, None, None, None, Some(true), Some(false)];
        let (gone, emptied) = missing(&known, &on_disk, true);
        assert_eq!(gone, ["f", "d"]);
        assert_eq!(emptied, ["d", "implied", "y"]);
        // A listing cut short says nothing is gone.
        assert_eq!(missing(&known, &on_disk, false), (vec![], vec![]));
    }

    /// A scan finds files and folders, deep ones too (run on musl as well: its std stats a
    /// listed entry by its path, which must stay valid while the listing is read).
    #[test]
    fn a_scan_records_what_the_share_holds() {
        let root = std::env::temp_dir().join(format!("left-scan-{}", std::process::id()));
        let model = crate::sync::model::fresh_model(&root, 7);
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::write(root.join("top"), b"1").unwrap();
        fs::write(root.join("d/e/deep"), b"22").unwrap();
        let s = scan(&model, None, None).unwrap();
        assert_eq!(s.changed, 4, "{s:?}");
        let g = model.lock();
        assert_eq!(g.index.get("d/e/deep").map(|e| e.size), Some(2));
        assert_eq!(g.index.get("d/e").map(|e| e.kind), Some(Kind::Dir));
        drop(g);
        fs::remove_dir_all(&root).unwrap();
    }

    /// A file found at start that is an install the index had not recorded (a crash between
    /// the rename and the index's save) takes the sender's version, with ours merged in where
    /// ours was a concurrent edit it won over, as the install would have recorded it.
    /// Folders made for a pull are placeholders (an empty version, beaten by any peer entry),
    /// for the scan too, and still after a kill that lost the index's last changes (review11):
    /// only a change here makes one a version of ours.
    #[test]
    fn a_folder_made_for_a_pull_stays_a_placeholder_across_a_kill() {
        use crate::store::version::Version;
        use crate::sync::model::{Decision, decide};
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("left-placeholder-{}", std::process::id()));
        let model = crate::sync::model::fresh_model(&root, 7);
        model.make_parents(&mut model.lock(), "d/e/f").unwrap();
        let empty = |m: &Model, p: &str| {
            let g = m.lock();
            let e = g.index.get(p).unwrap();
            (e.kind, e.version.pairs().is_empty(), e.mode & 0o777)
        };
        assert_eq!(empty(&model, "d/e"), (Kind::Dir, true, 0o700));
        scan(&model, None, None).unwrap();
        assert_eq!(
            empty(&model, "d"),
            (Kind::Dir, true, 0o700),
            "no change of ours"
        );
        let theirs = Entry {
            path: "d".into(),
            kind: Kind::Dir,
            mode: 0o750,
            version: Version::from_pairs(vec![(2, 1)]),
            modified_by: 2,
            ..Entry::default()
        };
        let held = model.lock().index.get("d").unwrap().into_owned();
        assert!(matches!(
            decide(Some(&held), &theirs),
            Decision::Take { conflict: false }
        ));
        // A kill before the index was saved: a new model with an empty index and the log.
        let state = root.join(names::STATE_DIR);
        let again = Model::new(
            root.clone(),
            state.clone(),
            crate::store::index::Index::new(7),
        );
        let logged = crate::store::intents::load(&state);
        let mut g = again.lock();
        g.installed = (logged.done.into_iter())
            .filter_map(|(p, mut d)| Some((p, d.pop()?)))
            .collect();
        g.received = logged.entries;
        drop(g);
        scan(&again, None, None).unwrap();
        assert_eq!(empty(&again, "d"), (Kind::Dir, true, 0o700));
        assert_eq!(empty(&again, "d/e"), (Kind::Dir, true, 0o700));
        // A chmod here is a change of ours.
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o711)).unwrap();
        scan(&again, None, None).unwrap();
        assert_eq!(empty(&again, "d"), (Kind::Dir, false, 0o711));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_install_found_after_a_crash_keeps_the_merged_version() {
        use crate::store::version::{Order, Version};
        let root = std::env::temp_dir().join(format!("left-recv-{}", std::process::id()));
        let model = crate::sync::model::fresh_model(&root, 7);
        // What the peer sent, on disk under its name, and hashed as a scan would.
        fs::write(root.join("a"), b"theirs").unwrap();
        let f = fs::File::open(root.join("a")).unwrap();
        let bs = block_size_for(6);
        let b = hash::file_blocks(&f, 6, bs, None, &|| true).unwrap();
        let theirs = Entry {
            path: "a".into(),
            kind: Kind::File,
            size: 6,
            mode: 0o644,
            block_size: bs,
            file_hash: hash::list_hash(&b.md5),
            blocks: b.md5.into(),
            version: Version::from_pairs(vec![(2, 1)]),
            modified_by: 2,
            ..Entry::default()
        };
        fs::set_permissions(
            root.join("a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let ours = Entry {
            path: "a".into(),
            kind: Kind::File,
            size: 4,
            mode: 0o644,
            version: Version::from_pairs(vec![(7, 1)]),
            modified_by: 7,
            ..Entry::default()
        };
        {
            let mut g = model.lock();
            g.put(ours.clone());
            g.received.insert("a".into(), theirs.clone());
        }
        scan(&model, None, None).unwrap();
        let g = model.lock();
        let got = g.index.get("a").unwrap();
        assert_eq!(got.file_hash, theirs.file_hash);
        assert_eq!(got.modified_by, 2, "the sender's version, not a new one");
        assert_eq!(got.version.compare(&theirs.version), Order::Newer);
        assert_eq!(got.version.compare(&ours.version), Order::Newer);
        assert_eq!(got.version.get(7), 1, "not bumped here");
        drop(g);
        fs::remove_dir_all(&root).unwrap();
    }

    /// Writes `data` at `path` with mode 0644 and a fixed mtime.
    fn put_file(path: &Path, data: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        fs::write(path, data).unwrap();
        let f = fs::File::options().write(true).open(path).unwrap();
        f.set_permissions(fs::Permissions::from_mode(0o644))
            .unwrap();
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
            .unwrap();
    }

    /// A file made, while we were stopped, on the inode of one removed meanwhile, with its size,
    /// mtime and mode (`rm x; cp -p z y`), is no move of it: it is hashed, not given x's hashes
    /// (announced so, peers would build it from their x, and keep x's bytes for good). Small
    /// files and big ones (XXH64s kept) alike.
    #[test]
    fn a_new_file_on_a_gone_files_inode_is_hashed() {
        let root = std::env::temp_dir().join(format!("left-reuse-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let model = crate::sync::model::fresh_model(&root, 7);
        // Names of their own per size: a name the index has, deleted, is never taken for moved.
        for size in [5000usize, 20 * MIN_BLOCK as usize + 100] {
            let [xn, yn, zn] = ["x", "y", "z"].map(|n| format!("{n}{size}"));
            let x: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let z: Vec<u8> = (0..size).map(|i| (i * 13 % 241) as u8).collect();
            put_file(&root.join(&xn), &x);
            put_file(&root.join(&zn), &z);
            scan(&model, None, None).unwrap();
            fs::remove_file(root.join(&xn)).unwrap();
            put_file(&root.join(&yn), &z);
            // ext4 would likely give y x's inode: the index is told x had y's.
            let y = Stat::of(&fs::metadata(root.join(&yn)).unwrap());
            {
                let mut g = model.lock();
                let mut e = g.index.get(&xn).unwrap().into_owned();
                assert_eq!(
                    Stat {
                        ino: y.ino,
                        ..e.stat
                    },
                    y,
                    "same size, mtime and mode"
                );
                e.stat.ino = y.ino;
                g.index.set_local(&xn, e.stat, e.fast.to_vec());
            }
            let s = scan(&model, None, None).unwrap();
            let g = model.lock();
            let (got, want) = (g.index.get(&yn).unwrap(), g.index.get(&zn).unwrap());
            assert_eq!(got.file_hash, want.file_hash, "{size} bytes: {s:?}");
            assert_eq!(got.blocks, want.blocks);
            assert!(g.index.get(&xn).unwrap().deleted);
            drop(g);
            fs::remove_file(root.join(&yn)).unwrap();
            fs::remove_file(root.join(&zn)).unwrap();
            scan(&model, None, None).unwrap();
        }
        fs::remove_dir_all(&root).unwrap();
    }

    /// A big file renamed keeps its hashes: each block is read, but none is hashed with MD5
    /// again (a wrong MD5 planted in the index survives, which a recomputation would not).
    #[test]
    fn a_renamed_big_file_keeps_its_md5s() {
        let root = std::env::temp_dir().join(format!("left-rename-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let model = crate::sync::model::fresh_model(&root, 7);
        let data: Vec<u8> = (0..20 * MIN_BLOCK as usize + 100)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        put_file(&root.join("a"), &data);
        scan(&model, None, None).unwrap();
        {
            let mut g = model.lock();
            let mut e = g.index.get("a").unwrap().into_owned();
            let mut blocks = e.blocks.to_vec();
            blocks[7] = [0xee; 16];
            e.file_hash = hash::list_hash(&blocks);
            e.blocks = blocks.into();
            g.put(e);
        }
        let planted = model.lock().index.get("a").unwrap().file_hash;
        fs::rename(root.join("a"), root.join("b")).unwrap();
        scan(&model, None, None).unwrap();
        let g = model.lock();
        let b = g.index.get("b").unwrap();
        assert_eq!(b.blocks[7], [0xee; 16], "block 7 was hashed again");
        assert_eq!(b.file_hash, planted);
        assert!(g.index.get("a").unwrap().deleted);
        drop(g);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn old_temp_files_are_removed_and_nothing_else() {
        let root = std::env::temp_dir().join(format!("left-temps-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let outside = root.with_extension("outside");
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::create_dir_all(root.join(names::STATE_DIR)).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let put = |p: &Path, aged: bool| {
            let f = fs::File::create(p).unwrap();
            if aged {
                f.set_modified(old).unwrap();
            }
        };
        let temp = |dir: &Path, name: &str| dir.join(names::temp_for(name));
        put(&temp(&root, "a"), true);
        put(&temp(&root.join("d/e"), "b"), true);
        put(&temp(&root.join("d"), "fresh"), false);
        put(&root.join("d/plain"), true);
        put(&temp(&root.join(names::STATE_DIR), "ours"), true);
        put(&temp(&outside, "c"), true);
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        clean_temps(
            &root,
            std::time::Duration::from_secs(60),
            &Default::default(),
        );
        assert!(!temp(&root, "a").exists());
        assert!(!temp(&root.join("d/e"), "b").exists());
        assert!(temp(&root.join("d"), "fresh").exists());
        assert!(root.join("d/plain").exists());
        assert!(temp(&root.join(names::STATE_DIR), "ours").exists());
        assert!(
            temp(&outside, "c").exists(),
            "a symlinked folder was followed"
        );
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }
}
