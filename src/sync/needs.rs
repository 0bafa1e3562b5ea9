//! What one peer has that we are to take: the entries it announced, kept in memory up to a bound
//! and, beyond it, waiting in the order they came in a file under the state folder. A peer with
//! any number of files costs a bounded amount of memory.
//!
//! Once an entry has waited in the file, every later one waits too (except a newer version of a
//! path already in memory, which replaces it): memory holds the oldest announcements and the file
//! the rest, so entries are taken in the order the peer made them (a folder's content before its
//! deletion). The file is unlinked as soon as it is made: it goes away with the connection, or
//! with the process, whatever ends it.
//!
//! The bounds hold for all connections together ([`Budget`]): what their entries take in memory
//! (everything an entry holds: name, block hashes, version vector) and in the waiting files. A
//! connection may always hold a little of each, so a peer that never serves a block cannot keep
//! another out.

use crate::error::{Context, Error, Result};
use crate::proto::wire;
use crate::store::codec::{self, Dec, Enc};
use crate::store::entry::Entry;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Entries kept in memory per connection unless told otherwise (`--max-pending`): about 0.5 MiB
/// for small files.
pub const DEFAULT_IN_MEMORY: usize = 2048;
/// Bytes of entries kept in memory per entry of the bound: an entry of a large file holds a
/// hash per block (128 KiB for a 500 MiB file), so the bound is in bytes too: 4 MiB by default.
const BYTES_PER_ENTRY: usize = 2048;
/// The waiting file is read in pieces of this size.
const READ_CHUNK: usize = 64 << 10;
/// Entries going to the waiting file are gathered up to this size, then written: per connection,
/// so it is kept small.
const WRITE_CHUNK: usize = 16 << 10;
/// More than this waiting on disk, for all connections together, is refused: peers cannot fill
/// our disk with announcements.
const MAX_WAITING_BYTES: u64 = 4 << 30;
/// Bytes of entries any one connection may hold in memory whatever the others hold: enough for
/// a hundred small files, or one with 1,500 blocks or a long version vector.
const MEM_FLOOR: usize = 32 << 10;
/// Bytes any one connection may have waiting on disk whatever the others have.
const DISK_FLOOR: u64 = 16 << 20;
/// Slots of the filter of the folders that entries waiting on disk are inside ([`Waiting::inside`]).
const INSIDE_SLOTS: usize = 4096;
/// Entries memory may hold beyond twice the bound while each waits for what is inside a folder,
/// still on disk (a folder's deletion, a file replacing a folder): one comes back at a time. A
/// pass by path holds as many as the folders around the entry it is at (a path of 4,096 bytes
/// nests at most 2,048); past this many, or [`EXTRA_BYTES`] past the budget, they go ahead
/// ([`Needs::crowded`]).
const DEEP: usize = 2048;
/// Bytes of entries one connection may hold past the budget of all, for those waits.
const EXTRA_BYTES: usize = 1 << 20;

/// What the needs of all connections take together: entries in memory, and waiting on disk.
/// Changed only under the model's lock (needs live in its state).
#[derive(Default, Debug)]
pub struct Budget {
    mem: AtomicUsize,
    disk: AtomicU64,
}

impl Budget {
    /// Bytes of entries in memory, all connections together.
    pub fn in_memory(&self) -> usize {
        self.mem.load(Ordering::Relaxed)
    }

    /// Bytes waiting on disk, all connections together.
    #[cfg(test)]
    pub fn on_disk(&self) -> u64 {
        self.disk.load(Ordering::Relaxed)
    }
}

/// A peer's entries to take.
pub struct Needs {
    mem: BTreeMap<String, Entry>,
    /// Folder deletions in `mem`. They wait for what is inside the folder, which may still be
    /// on disk, so the entries that come back from disk are not limited by them: memory holds
    /// up to `cap` entries as the peer announces them, and up to twice that with what comes
    /// back ([`Needs::crowded`] says when folder deletions stop waiting).
    folder_deletes: usize,
    /// What the entries in `mem` other than folder deletions take, about ([`cost`]).
    bytes: usize,
    /// What all entries in `mem` take, charged to the budget.
    charged: usize,
    /// Bytes of the waiting file charged to the budget.
    charged_disk: u64,
    budget: Arc<Budget>,
    cap: usize,
    /// Where the waiting file is made.
    dir: PathBuf,
    waiting: Option<Waiting>,
    /// The next refill brings back one entry past the bound: nothing in memory can be taken
    /// before what waits on disk ([`Needs::force_refill`]).
    force: bool,
}

/// What one refill may read back ([`Needs::refill_fit`]).
struct Fit {
    /// Read back at least one entry, however large.
    force: bool,
    /// Entries that may come back.
    room: usize,
    /// Bytes in memory all connections may hold, and what this one and all hold now.
    budget: usize,
    held: usize,
    all: usize,
    /// Bytes that may come back.
    free: usize,
}

/// The entries waiting on disk.
struct Waiting {
    file: File,
    /// Its name when made (for messages: it is unlinked at once).
    path: PathBuf,
    /// Next record to read, and where the next is written.
    read: u64,
    write: u64,
    /// Records not yet written out.
    buf: Vec<u8>,
    files: usize,
    bytes: u64,
    /// Per slot of a folder's name hash, how many waiting entries are inside folders of that
    /// slot: a folder whose slot counts none has nothing inside it waiting (a slot shared with
    /// another folder only makes it wait longer).
    inside: Box<[u32]>,
}

impl Needs {
    /// `cap` entries at most in memory (at least 2), and `cap` x 2 KiB of them for all the
    /// connections sharing `budget`; the waiting file is made in `dir`.
    pub fn new(dir: PathBuf, cap: usize, budget: Arc<Budget>) -> Needs {
        Needs {
            mem: BTreeMap::new(),
            folder_deletes: 0,
            bytes: 0,
            charged: 0,
            charged_disk: 0,
            budget,
            cap: cap.max(2),
            dir,
            waiting: None,
            force: false,
        }
    }

    /// The entries in memory, by path: the ones to take next.
    pub fn mem(&self) -> &BTreeMap<String, Entry> {
        &self.mem
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.mem.get(path)
    }

    /// Forgets the entry in memory for `path` (an older one may still wait on disk: it is
    /// decided again when it comes back, and then found not needed).
    pub fn remove(&mut self, path: &str) -> Option<Entry> {
        let e = self.mem.remove(path)?;
        self.forget(&e);
        Some(e)
    }

    /// Keeps `e` in memory, replacing what it held for the path.
    fn keep(&mut self, e: Entry) {
        let c = cost(&e);
        if is_folder_delete(&e) {
            self.folder_deletes += 1;
        } else {
            self.bytes += c;
        }
        self.charged += c;
        self.budget.mem.fetch_add(c, Ordering::Relaxed);
        if let Some(old) = self.mem.insert(e.path.clone(), e) {
            self.forget(&old);
        }
    }

    /// Takes an entry that left `mem` out of the counts.
    fn forget(&mut self, e: &Entry) {
        let c = cost(e);
        if is_folder_delete(e) {
            self.folder_deletes -= 1;
        } else {
            self.bytes -= c;
        }
        self.charged -= c;
        self.budget.mem.fetch_sub(c, Ordering::Relaxed);
    }

    /// Bytes of entries all connections may hold in memory together (beyond their floors).
    fn mem_max(&self) -> usize {
        self.cap * BYTES_PER_ENTRY
    }

    /// Whether the budget has room for `more` bytes of this connection's: within its floor, or
    /// within what all connections may hold together; or, for a connection holding nothing
    /// but folder deletions (which may wait for it: review12), one entry however large while
    /// all hold less than half of that (so one of a huge file always gets its turn, and only
    /// one such goes past the bound at a time).
    fn budget_room(&self, more: usize) -> bool {
        let (all, max) = (self.budget.in_memory(), self.mem_max());
        self.charged + more <= MEM_FLOOR || all + more <= max || (self.bytes == 0 && all <= max / 2)
    }

    /// Whether memory has room for `e` (folder deletions aside).
    fn room(&self, e: &Entry) -> bool {
        self.mem.len() < self.cap && self.bytes < self.mem_max() && self.budget_room(cost(e))
    }

    /// Whether entries wait on disk.
    pub fn waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Whether entries inside `folder` may wait on disk (its deletion, or a file replacing it,
    /// waits for them: review12, where only memory was looked at, or all of the disk).
    pub fn may_wait_inside(&self, folder: &str) -> bool {
        self.waiting
            .as_ref()
            .is_some_and(|w| w.inside[slot(folder)] > 0)
    }

    /// Whether memory is so full of folder deletions waiting for what is on disk that they
    /// must go ahead of it (else nothing would come back). A peer's pass puts a folder's
    /// content ahead of it (deepest first) or right after it (by path), so this takes folders
    /// nested [`DEEP`] levels, or a peer ordering its entries otherwise.
    pub fn crowded(&self) -> bool {
        self.mem.len() >= 2 * self.cap + DEEP || self.charged >= self.mem_max() + EXTRA_BYTES
    }

    /// Makes the next refill bring back one entry past the bound (never past [`Needs::crowded`]):
    /// what is in memory all waits for what is on disk (review13: files replacing folders
    /// filled memory, the deletions of what the folders held waited on disk, for good).
    pub fn force_refill(&mut self) {
        self.force = true;
    }

    /// How many entries may come back from disk: the bound, less what counts against it, and
    /// never more than twice the bound in all; with nothing in memory but folder deletions
    /// (waiting for what is inside them), at least one ([`DEEP`]).
    fn refill_room(&self) -> usize {
        let counted = self.cap.saturating_sub(self.counted());
        let room = counted.min((2 * self.cap).saturating_sub(self.mem.len()));
        if self.counted() == 0 && !self.crowded() {
            room.max(1)
        } else {
            room
        }
    }

    /// Entries in memory that count against the bound.
    fn counted(&self) -> usize {
        self.mem.len() - self.folder_deletes
    }

    /// Entries to take, in memory and waiting.
    pub fn len(&self) -> usize {
        self.mem.len() + self.waiting.as_ref().map_or(0, |w| w.files)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of the entries to take.
    pub fn bytes(&self) -> u64 {
        let mem: u64 = self.mem.values().map(|e| e.size).sum();
        mem + self.waiting.as_ref().map_or(0, |w| w.bytes)
    }

    /// Adds an entry the peer announced: into memory if it replaces one there, or if there is
    /// room and nothing waits; else at the end of the waiting file.
    pub fn add(&mut self, e: Entry) -> Result<()> {
        // A newer version of a path in memory replaces it there only within the budget: one
        // larger than the old one is taken like a new entry (a peer re-announcing its paths
        // with ever larger block lists grew memory without bound).
        if let Some(old) = self.mem.get(&e.path) {
            if cost(&e) <= cost(old) {
                self.keep(e);
                return Ok(());
            }
            self.remove(&e.path);
        }
        if self.waiting.is_none() && self.room(&e) {
            self.keep(e);
            return Ok(());
        }
        let w = match &mut self.waiting {
            Some(w) => w,
            None => {
                let w = Waiting::create(&self.dir)?;
                debug!(
                    "more than {} entries to receive: the rest wait in {} (unlinked)",
                    self.cap,
                    crate::error::shown(&w.path).display()
                );
                self.waiting.insert(w)
            }
        };
        let at = w.buf.len();
        let mut x = Enc(std::mem::take(&mut w.buf));
        x.u32(0);
        codec::put_entry(&mut x, &e);
        let n = (x.0.len() - at - 4) as u32;
        x.0[at..at + 4].copy_from_slice(&n.to_be_bytes());
        w.buf = x.0;
        w.files += 1;
        w.bytes += e.size;
        w.count_inside(&e.path, true);
        let n = n as u64 + 4;
        self.charged_disk += n;
        let all = self.budget.disk.fetch_add(n, Ordering::Relaxed) + n;
        if self.charged_disk > DISK_FLOOR && all > MAX_WAITING_BYTES {
            return Err(Error::protocol(
                "peers announced too many entries to take (the waiting files are full)",
            ));
        }
        if w.buf.len() >= WRITE_CHUNK {
            w.flush()?;
        }
        Ok(())
    }

    /// When memory is half empty, reads back waiting entries, oldest first, as many as fit (at
    /// least one, however large). They are to be decided again (what we hold may have changed)
    /// and those still needed given to [`Needs::restore`].
    pub fn refill(&mut self) -> Result<Vec<Entry>> {
        let force = std::mem::take(&mut self.force) && !self.crowded();
        let Some(fit) = self.refill_fit(force) else {
            return Ok(Vec::new());
        };
        let Some(w) = &mut self.waiting else {
            return Ok(Vec::new());
        };
        let out = w.read_back(&fit)?;
        if w.read == w.write {
            self.drop_waiting();
        }
        Ok(out)
    }

    /// How much a refill may read back now; `None` if nothing (memory is not half empty, or
    /// the budget of all connections is).
    fn refill_fit(&self, force: bool) -> Option<Fit> {
        let room = if force {
            self.refill_room().max(1)
        } else {
            self.refill_room()
        };
        let (counted, held) = (self.counted(), self.bytes);
        let budget = self.mem_max();
        // What may come back within the budget of all connections: at least this connection's
        // floor, and never past half of what all may hold (the rest is for what arrives).
        // Folder deletions do not count against the floor: they may wait for what comes back.
        // Their bytes do count against [`EXTRA_BYTES`] past the budget ([`Needs::crowded`]):
        // bounded by number alone (twice the bound), a peer's folder deletions with long names
        // and version vectors (22 KiB each) all came back, one per wake, to 3,000 entries and
        // 64 MiB held while its pass stayed open (review13).
        let all = self.budget.in_memory();
        let free = MEM_FLOOR
            .saturating_sub(held)
            .max((budget / 2).saturating_sub(all))
            .min((budget + EXTRA_BYTES).saturating_sub(self.charged))
            .max(usize::from(force));
        if !force && ((room < self.cap / 2 && counted > 0) || held > budget / 2 || free == 0)
            || room == 0
        {
            return None;
        }
        Some(Fit {
            force,
            room,
            budget,
            held,
            all,
            free,
        })
    }
    /// Puts back an entry read by [`Needs::refill`], unless the one in memory for its path is
    /// as new: what is in memory may have waited on disk before it (then this one is newer) or
    /// been announced after it (the peer's versions of a file only move forward).
    pub fn restore(&mut self, e: Entry) {
        let newer = match self.mem.get(&e.path) {
            Some(cur) => e.version.compare(&cur.version) == crate::store::version::Order::Newer,
            None => true,
        };
        if newer {
            self.keep(e);
        }
    }
}

impl Needs {
    /// Closes the waiting file (unlinked: its space goes with it) and gives back its budget.
    fn drop_waiting(&mut self) {
        self.waiting = None;
        self.budget
            .disk
            .fetch_sub(self.charged_disk, Ordering::Relaxed);
        self.charged_disk = 0;
    }
}

impl Drop for Needs {
    fn drop(&mut self) {
        self.drop_waiting();
        self.budget.mem.fetch_sub(self.charged, Ordering::Relaxed);
    }
}

fn cost(e: &Entry) -> usize {
    e.mem_cost()
}

/// The filter slot of a folder's path (FNV-1a).
fn slot(folder: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in folder.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h as usize % INSIDE_SLOTS
}

fn is_folder_delete(e: &Entry) -> bool {
    e.deleted && e.kind == crate::store::entry::Kind::Dir
}

impl Waiting {
    /// Reads back, from the oldest, the entries that `fit` lets come back.
    fn read_back(&mut self, fit: &Fit) -> Result<Vec<Entry>> {
        let (mut bytes, mut taken) = (fit.held, 0usize);
        self.flush()?;
        let mut out = Vec::new();
        let mut chunk = Vec::new();
        let mut full = false;
        let more = |out: &Vec<Entry>, bytes: usize, taken: usize| {
            out.len() < fit.room
                && (bytes < fit.budget || fit.force && out.is_empty())
                && taken < fit.free
        };
        while !full && more(&out, bytes, taken) && self.read < self.write {
            // A chunk of whole records, or one record larger than a chunk.
            chunk.resize(READ_CHUNK.min((self.write - self.read) as usize), 0);
            self.file
                .read_exact_at(&mut chunk, self.read)
                .at(&self.path)?;
            let mut used = 0;
            while more(&out, bytes, taken) {
                let rest = &chunk[used..];
                let Some(len) = rest.get(..4) else { break };
                let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if n > wire::MAX_FRAME || self.read + (used + 4 + n) as u64 > self.write {
                    return Err(Error::msg("damaged record").at(&self.path));
                }
                if rest.len() < 4 + n {
                    if used == 0 {
                        // Larger than a chunk: read it whole.
                        chunk.resize(4 + n, 0);
                        self.file
                            .read_exact_at(&mut chunk, self.read)
                            .at(&self.path)?;
                        continue;
                    }
                    break;
                }
                let mut d = Dec::new(&rest[4..4 + n]);
                let e = codec::get_entry(&mut d)
                    .and_then(|e| d.end().map(|_| e))
                    .map_err(|e| e.at(&self.path))?;
                let c = cost(&e);
                // One larger than what is free waits, unless it is the first and the budget has
                // room for it ([`Needs::budget_room`]).
                let first = taken == 0
                    && (fit.force
                        || fit.held == 0
                            && (fit.all + c <= fit.budget || fit.all <= fit.budget / 2));
                if taken + c > fit.free && !first {
                    full = true;
                    break;
                }
                used += 4 + n;
                bytes += c;
                taken += c;
                self.files = self.files.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(e.size);
                self.count_inside(&e.path, false);
                out.push(e);
            }
            if used == 0 && !full {
                // Not even a record's length before the end: only a damaged file ends so.
                return Err(Error::msg("damaged record").at(&self.path));
            }
            self.read += used as u64;
        }
        Ok(out)
    }

    fn create(dir: &std::path::Path) -> Result<Waiting> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("needs-{}-{n}.tmp", std::process::id()));
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(crate::sys::open::O_NOFOLLOW)
                .open(&path)
        };
        let file = match open() {
            // Left by an earlier process with our pid: not ours to keep.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&path).and_then(|_| open())
            }
            r => r,
        }
        .at(&path)?;
        std::fs::remove_file(&path).at(&path)?;
        Ok(Waiting {
            file,
            path,
            read: 0,
            write: 0,
            buf: Vec::new(),
            files: 0,
            bytes: 0,
            inside: vec![0; INSIDE_SLOTS].into_boxed_slice(),
        })
    }

    /// Counts `path` in (`up`) or out of the folders holding it.
    fn count_inside(&mut self, path: &str, up: bool) {
        for (i, _) in path.match_indices('/') {
            let c = &mut self.inside[slot(&path[..i])];
            *c = if up {
                c.saturating_add(1)
            } else {
                c.saturating_sub(1)
            };
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.write)
            .at(&self.path)?;
        self.write += self.buf.len() as u64;
        self.buf.clear();
        // A large entry grew it: it is not kept that large.
        self.buf.shrink_to(WRITE_CHUNK);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::{Kind, MIN_BLOCK};
    use crate::store::version::Version;

    /// A version made by the peer (device 9).
    fn v(n: u64) -> Version {
        Version::from_pairs(vec![(9, n)])
    }

    fn entry(path: &str, n: u64) -> Entry {
        let blocks = vec![[n as u8; 16]];
        Entry {
            size: 10 + n,
            version: v(n),
            ..with_blocks(path, blocks)
        }
    }

    /// A file of whole 64 KiB blocks with these hashes.
    fn with_blocks(path: &str, blocks: Vec<crate::hash::Hash>) -> Entry {
        Entry {
            path: path.into(),
            size: blocks.len() as u64 * MIN_BLOCK as u64,
            block_size: MIN_BLOCK,
            file_hash: crate::hash::list_hash(&blocks),
            blocks: blocks.into(),
            version: v(1),
            ..Entry::default()
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("left-needs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn beyond_the_bound_entries_wait_on_disk_in_order() {
        let d = dir("order");
        let mut n = Needs::new(d.clone(), 4, Arc::default());
        for i in 0..10 {
            n.add(entry(&format!("f{i}"), 1)).unwrap();
        }
        assert_eq!(n.mem().len(), 4);
        assert_eq!(n.len(), 10);
        assert_eq!(n.bytes(), 110);
        // The waiting file is unlinked at once.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        // A newer version of a path in memory replaces it there; of one waiting, it waits too.
        n.add(entry("f0", 2)).unwrap();
        n.add(entry("f5", 2)).unwrap();
        assert_eq!(n.get("f0").unwrap().version, v(2));
        assert_eq!(n.len(), 11);
        // Nothing comes back until memory is half empty.
        n.remove("f0");
        assert!(n.refill().unwrap().is_empty());
        n.remove("f1");
        let back = n.refill().unwrap();
        let names: Vec<&str> = back.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["f4", "f5"]);
        for e in back {
            n.restore(e);
        }
        for p in ["f2", "f3", "f4", "f5"] {
            n.remove(p);
        }
        let back = n.refill().unwrap();
        let names: Vec<&str> = back.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["f6", "f7", "f8", "f9"]);
        for e in back {
            n.restore(e);
        }
        // The newer f5 comes last; it replaces nothing in memory that is newer.
        n.remove("f6");
        n.remove("f7");
        let back = n.refill().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].path, "f5");
        assert_eq!(back[0].version, v(2));
        n.restore(back[0].clone());
        assert_eq!(n.len(), 3);
        assert!(n.waiting.is_none());
        // A path already in memory keeps the entry there if it is as new (it was announced
        // later); an older one there is replaced.
        n.add(entry("g", 2)).unwrap();
        n.restore(entry("g", 1));
        assert_eq!(n.get("g").unwrap().version, v(2));
        n.restore(entry("g", 3));
        assert_eq!(n.get("g").unwrap().version, v(3));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn two_versions_waiting_come_back_newest_last() {
        let d = dir("versions");
        let mut n = Needs::new(d.clone(), 2, Arc::default());
        n.add(entry("a", 1)).unwrap();
        n.add(entry("b", 1)).unwrap();
        // Both versions of f wait, in order; a newer one of b replaces b in memory.
        n.add(entry("f", 1)).unwrap();
        n.add(entry("f", 2)).unwrap();
        n.add(entry("b", 2)).unwrap();
        assert_eq!(n.len(), 4);
        n.remove("a");
        n.remove("b");
        for e in n.refill().unwrap() {
            n.restore(e);
        }
        assert_eq!(n.get("f").unwrap().version, v(2));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn large_files_entries_are_bounded_by_bytes() {
        let d = dir("bytes");
        // 4 entries, 8 KiB: one entry of a 1000-block file takes 16 KiB of hashes.
        let mut n = Needs::new(d.clone(), 4, Arc::default());
        let big = |p: &str| with_blocks(p, vec![[7u8; 16]; 1000]);
        for p in ["b1", "b2", "b3"] {
            n.add(big(p)).unwrap();
        }
        // The first is kept however large; the others wait.
        assert_eq!(n.mem().len(), 1);
        assert_eq!(n.len(), 3);
        n.remove("b1");
        let back = n.refill().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].path, "b2");
        n.restore(back.into_iter().next().unwrap());
        // Memory is more than half full (in bytes): nothing comes back yet.
        assert!(n.refill().unwrap().is_empty());
        n.remove("b2");
        assert_eq!(n.refill().unwrap()[0].path, "b3");
        assert_eq!(n.bytes, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn folder_deletions_wait_but_memory_stays_bounded() {
        let d = dir("folders");
        let mut n = Needs::new(d.clone(), 4, Arc::default());
        let gone = |p: &str| Entry {
            path: p.into(),
            kind: Kind::Dir,
            deleted: true,
            version: v(1),
            ..Entry::default()
        };
        // A peer's announcements fill memory up to the bound, folder deletions included: a
        // peer cannot make us hold any number of them.
        for p in ["x", "y", "z"] {
            n.add(gone(p)).unwrap();
        }
        n.add(entry("a", 1)).unwrap();
        assert!(!n.waiting());
        for p in ["b", "c", "d", "e"] {
            n.add(gone(p)).unwrap();
        }
        n.add(entry("f", 1)).unwrap();
        assert!(n.waiting());
        assert_eq!((n.mem().len(), n.len()), (4, 9));
        // Taking the file makes room for what waits, though the folder deletions are still
        // in memory (waiting for it): up to twice the bound in all.
        n.remove("a");
        let back = n.refill().unwrap();
        assert_eq!(back.len(), 4, "{back:?}");
        for e in back {
            n.restore(e);
        }
        assert_eq!(n.mem().len(), 7);
        assert!(n.waiting());
        // Memory holds nothing but folder deletions, which may wait for what is on disk: one
        // more entry comes back at a time (never crowded this side of DEEP of them).
        assert!(!n.crowded());
        assert_eq!(n.refill().unwrap(), vec![entry("f", 1)]);
        assert!(!n.waiting());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Folder deletions coming back from disk, each waiting for what is inside it, stop at
    /// [`EXTRA_BYTES`] past the budget, not at twice the bound by number alone: with long
    /// version vectors that let one peer's pass hold 64 MiB (review13).
    #[test]
    fn folder_deletions_come_back_within_the_extra_bytes() {
        let d = dir("folder-bytes");
        let mut n = Needs::new(d.clone(), DEFAULT_IN_MEMORY, Arc::default());
        let gone = |i: usize| Entry {
            path: format!("{}/f{i:04}", vec!["p".repeat(250); 12].join("/")),
            kind: Kind::Dir,
            deleted: true,
            version: Version::from_pairs((1..=1000).map(|d| (d, 1)).collect()),
            ..Entry::default()
        };
        for i in 0..1000 {
            n.add(gone(i)).unwrap();
        }
        assert!(n.waiting());
        // One wake after another, as the puller refills while nothing in memory can go.
        for _ in 0..1000 {
            for e in n.refill().unwrap() {
                n.restore(e);
            }
        }
        let most = n.mem_max() + EXTRA_BYTES;
        assert!(
            n.charged <= most,
            "{} bytes held, {most} allowed",
            n.charged
        );
        assert!(n.refill().unwrap().is_empty() && n.waiting());
        // Forced (nothing in memory can go), one more comes back past them: then they are
        // crowded, and go ahead of what waits.
        n.force_refill();
        let back = n.refill().unwrap();
        assert_eq!(back.len(), 1);
        for e in back {
            n.restore(e);
        }
        assert!(n.crowded());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Which folders have entries inside them waiting on disk: their deletions, and files
    /// replacing them, wait for those (review12); others need not.
    #[test]
    fn what_waits_inside_a_folder_is_known() {
        let d = dir("inside");
        let mut n = Needs::new(d.clone(), 2, Arc::default());
        for p in ["a", "b", "d/x", "d/e/y", "f"] {
            n.add(entry(p, 1)).unwrap();
        }
        let inside = |n: &Needs| {
            ["d", "d/e", "f", "e", "a"]
                .into_iter()
                .filter(|f| n.may_wait_inside(f))
                .collect::<Vec<_>>()
        };
        assert_eq!(inside(&n), ["d", "d/e"]);
        n.remove("a");
        n.remove("b");
        let back: Vec<String> = n.refill().unwrap().into_iter().map(|e| e.path).collect();
        assert_eq!(back, ["d/x", "d/e/y"]);
        assert!(n.waiting());
        assert!(inside(&n).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn large_entries_and_folders_come_back_whole() {
        let d = dir("large");
        let mut n = Needs::new(d.clone(), 2, Arc::default());
        n.add(entry("a", 1)).unwrap();
        n.add(entry("b", 1)).unwrap();
        // Over 64 KiB of block hashes: larger than a read chunk.
        let blocks: Vec<_> = (0..5000u32)
            .map(|i| {
                let mut h = [0u8; 16];
                h[..4].copy_from_slice(&i.to_be_bytes());
                h
            })
            .collect();
        let big = with_blocks("big", blocks);
        n.add(big.clone()).unwrap();
        let folder = Entry {
            path: "d".into(),
            kind: Kind::Dir,
            version: v(1),
            ..Entry::default()
        };
        n.add(folder.clone()).unwrap();
        n.remove("a");
        n.remove("b");
        // The large entry fills the bytes allowed on its own: it comes back alone.
        let back = n.refill().unwrap();
        assert!(back == vec![big.clone()], "not the large entry");
        n.restore(big);
        n.remove("big");
        assert_eq!(n.refill().unwrap(), vec![folder]);
        assert!(!n.waiting());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_bound_holds_for_all_connections_together() {
        let d = dir("budget");
        let budget: Arc<Budget> = Arc::default();
        // An entry with a long version vector: counted whole (16 bytes a device).
        let long = |p: &str| Entry {
            version: Version::from_pairs((1..=1000).map(|d| (d, 1)).collect()),
            ..entry(p, 1)
        };
        assert!(cost(&long("x")) > 16_000);
        // Bound: 16 entries, 32 KiB for all connections together.
        let mut a = Needs::new(d.clone(), 16, budget.clone());
        let mut b = Needs::new(d.clone(), 16, budget.clone());
        for i in 0..8 {
            a.add(long(&format!("a{i}"))).unwrap();
            b.add(long(&format!("b{i}"))).unwrap();
        }
        // Each keeps what its floor allows, no more: the rest waits on disk.
        let floor = MEM_FLOOR / cost(&long("x"));
        assert_eq!((a.mem().len(), b.mem().len()), (floor, floor));
        assert_eq!(budget.in_memory(), a.charged + b.charged);
        assert!(budget.in_memory() <= 2 * MEM_FLOOR);
        assert!(budget.on_disk() > 0);
        // What one gives back is the other's to use; dropping a connection gives back all.
        let disk_b = b.charged_disk;
        drop(a);
        assert_eq!(budget.in_memory(), b.charged);
        assert_eq!(budget.on_disk(), disk_b);
        drop(b);
        assert_eq!((budget.in_memory(), budget.on_disk()), (0, 0));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_waiting_file_is_an_error() {
        let d = dir("damaged");
        let mut n = Needs::new(d.clone(), 2, Arc::default());
        for i in 0..6 {
            n.add(entry(&format!("f{i}"), 1)).unwrap();
        }
        n.remove("f0");
        n.remove("f1");
        let w = n.waiting.as_mut().unwrap();
        w.flush().unwrap();
        // A length that runs past the end.
        w.file.write_all_at(&[0xff; 4], 0).unwrap();
        assert!(n.refill().is_err());
        // A file cut short within a record's length.
        let w = n.waiting.as_mut().unwrap();
        w.write = w.read + 3;
        assert!(n.refill().is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
