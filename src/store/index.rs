//! The index: what the share holds (per file its size, mtime, mode, block hashes, file hash and
//! version), persisted under the state directory so a restart re-hashes only what changed. On
//! disk it is a base file, rewritten whole now and then, and a journal of the entries changed
//! since, appended to at each save: a save costs what changed, not the whole index. Memory
//! holds only those changed entries and one path per page of the base: lookups read a page.

use crate::error::{Context, Error, Result};
use crate::store::codec::{self, Dec, Enc};
use crate::store::entry::{Entry, Hash, Kind, Stat};
use md5::{Digest, Md5};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::Bound;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The index of one share. Most of it stays on disk: the base file, sorted by path, is read a
/// page at a time (one path a page is kept in memory to find them). The entries changed since
/// it was written (what the journal holds) are in memory, and once there are more than
/// [`OVERLAY_MAX`] of them a save folds them into a new base.
#[derive(Debug, Default)]
pub struct Index {
    pub device: u64,
    /// The last sequence number handed out.
    pub seq: u64,
    base: Option<Base>,
    /// Entries changed since the base was written, by path; `None`: removed since. Changes go
    /// through `put`, `purge` and `set_local`, which keep `over_seq`, the totals and the journal
    /// in step.
    over: BTreeMap<Box<str>, Option<Box<Entry>>>,
    /// Path of each entry of `over` by its sequence number, so that what changed since a given
    /// number is found without walking the whole index.
    over_seq: BTreeMap<u64, Box<str>>,
    /// What the entries of `over` take in memory ([`Entry::mem_cost`]).
    over_bytes: usize,
    totals: Totals,
    disk: Disk,
}

/// Counts kept as entries change, so status never walks the index for them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Entries of any kind, tombstones included.
    pub entries: u64,
    /// Live files and their bytes.
    pub files: u64,
    pub bytes: u64,
}

impl Totals {
    /// Counts an entry in: `file` is its size if it is a live file.
    fn add(&mut self, file: Option<u64>) {
        self.entries += 1;
        if let Some(size) = file {
            self.files += 1;
            self.bytes += size;
        }
    }

    /// Counts an entry out.
    fn remove(&mut self, file: Option<u64>) {
        self.entries = self.entries.saturating_sub(1);
        if let Some(size) = file {
            self.files = self.files.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(size);
        }
    }
}

/// What memory takes to remember that the base's entry of `path` was removed: its name (the
/// key of the overlay) and the map's node.
fn removed_cost(path: &str) -> usize {
    path.len() + 64
}

/// An entry as [`Totals`] counts it: its size if it is a live file.
fn file_size(e: &Entry) -> Option<u64> {
    e.is_file().then_some(e.size)
}

/// The base file as it is read: its pages, and a window of its bytes.
#[derive(Debug)]
struct Base {
    file: File,
    /// The first path of each page and where that entry starts: a page begins at the first
    /// entry at least [`PAGE`] bytes after the previous page's start.
    pages: Vec<(Box<str>, u64)>,
    /// Where the entries start and end (the header comes before, the digest after).
    start: u64,
    end: u64,
    /// The highest sequence number of an entry in the base.
    max_seq: u64,
    /// Bytes of the file from an offset, read ahead.
    window: RefCell<(u64, Vec<u8>)>,
}

/// What the index files hold, so that a save writes only what changed.
#[derive(Debug, Default)]
struct Disk {
    /// Entries numbered up to this are on disk (in the base file or the journal).
    seq: u64,
    /// Entries changed in place since (their local stat and checksums), by path.
    touched: HashSet<String>,
    /// The next save rewrites the base: entries were removed, or the journal is unusable.
    full: bool,
    /// The digest of the base file, which the journal names in its header; `None` until a
    /// base is written or read.
    base: Option<Hash>,
    base_bytes: u64,
    log_bytes: u64,
}

/// What [`Index::replay`] found.
#[derive(Debug, PartialEq, Eq)]
enum Journal {
    /// Read to its end.
    Whole,
    /// Missing, or the journal of another base file (one replaced after a crash).
    None,
    /// A record is torn or damaged: what follows it is not read.
    CutShort,
}

/// A save that appends to the journal: built under the model's lock by
/// [`Index::journal_record`], written without it by [`append`], then recorded by
/// [`Index::appended`].
pub struct Record {
    pub bytes: Vec<u8>,
    seq: u64,
}

/// Where a walk over what changed ([`Index::changed`]) stands: entries in memory are taken by
/// number first, then the base's by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// In memory, after this number.
    Over(u64),
    /// In the base, after this path.
    Base(Option<Box<str>>),
    Done,
}

/// The first path of each page of a base file and where that entry starts.
type Pages = Vec<(Box<str>, u64)>;

/// A base file being written by [`Index::save`]: its writer, the digest of what it holds so
/// far, where the next entry goes, and its pages.
struct NewBase {
    w: BufWriter<File>,
    sum: Sum,
    /// Where the next entry starts.
    at: u64,
    pages: Pages,
    count: u64,
    max_seq: u64,
    /// An entry's bytes, built before they are written.
    x: Enc,
}

impl NewBase {
    /// A new base written to `f`.
    fn new(f: File) -> NewBase {
        NewBase {
            w: BufWriter::with_capacity(64 << 10, f),
            sum: Sum::new(),
            at: HEADER,
            pages: Vec::new(),
            count: 0,
            max_seq: 0,
            x: Enc::default(),
        }
    }

    /// Writes the header: magic, device, last sequence number, entry count.
    fn header(&mut self, device: u64, seq: u64, entries: u64) -> std::io::Result<()> {
        let x = &mut self.x;
        x.bytes(MAGIC);
        x.u64(device);
        x.u64(seq);
        x.u64(entries);
        self.sum.update(&x.0);
        self.w.write_all(&x.0)
    }

    /// Copies the run of the old base's entries from `off` up to the next changed path `key`
    /// (to its end without one), hashed and written in pieces of about [`WINDOW`]; a page
    /// begins at the first entry past each [`PAGE`] bytes of the new file. Returns where the
    /// run ends, past the old entry of `key` if there is one (it changed: written instead).
    fn copy_run(&mut self, b: &Base, mut off: u64, key: Option<&str>) -> std::io::Result<u64> {
        let mut run = off;
        while off < b.end && key.is_none_or(|k| b.cmp_path(off, k).0.is_lt()) {
            if page_due(&self.pages, self.at, b.path_span(off).1) {
                self.pages.push((b.path_at(off).into(), self.at));
            }
            let next = b.len_at(off).1;
            if next - run > WINDOW as u64 && off > run {
                copy(b, run, off, &mut self.sum, &mut self.w)?;
                run = off;
            }
            self.at += next - off;
            off = next;
            self.count += 1;
        }
        copy(b, run, off, &mut self.sum, &mut self.w)?;
        self.max_seq = self.max_seq.max(b.max_seq);
        if let Some(k) = key
            && off < b.end
            && b.cmp_path(off, k).0.is_eq()
        {
            off = b.len_at(off).1; // changed since: written below instead
        }
        Ok(off)
    }

    /// Writes one changed entry.
    fn entry(&mut self, e: &Entry) -> std::io::Result<()> {
        if page_due(&self.pages, self.at, e.path.len()) {
            self.pages.push((e.path.as_str().into(), self.at));
        }
        self.x.0.clear();
        Index::encode_local(&mut self.x, e);
        self.sum.update(&self.x.0);
        self.w.write_all(&self.x.0)?;
        self.at += self.x.0.len() as u64;
        self.count += 1;
        self.max_seq = self.max_seq.max(e.seq);
        Ok(())
    }

    /// Writes the digest and makes the file durable (fsync, closed). Returns the digest, the
    /// pages, where the entries end and their highest sequence number.
    fn finish(self) -> std::io::Result<(Hash, Pages, u64, u64)> {
        let NewBase {
            mut w,
            sum,
            at,
            pages,
            max_seq,
            ..
        } = self;
        let digest = sum.digest();
        w.write_all(&digest)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        Ok((digest, pages, at, max_seq))
    }
}

/// Hashes and writes the base's bytes from `from` to `to`.
fn copy(b: &Base, from: u64, to: u64, sum: &mut Sum, w: &mut impl Write) -> std::io::Result<()> {
    if to > from {
        b.bytes(from, (to - from) as usize, |raw| {
            sum.update(raw);
            w.write_all(raw)
        })?;
    }
    Ok(())
}

const MAGIC: &[u8; 8] = b"LEFTIDX3";
/// The same entries with an MD5 of the file as its digest: still read.
const MD5_MAGIC: &[u8; 8] = b"LEFTIDX2";
/// The format before file hashes were derived from block lists: read as "rebuild".
const OLD_MAGIC: &[u8; 8] = b"LEFTIDX1";
const HEADER: u64 = 32;
/// The journal's header: this, then the digest of the base file it continues.
const LOG_MAGIC: &[u8; 8] = b"LEFTLOG1";
const LOG_HEADER: u64 = 24;
/// The journal is folded into a new base once it is larger than the base and than this.
const LOG_COMPACT_MIN: u64 = 1 << 20;
/// Entries a journal record holds at most (it is built in memory); more changed at once are
/// saved by writing the base anew.
const RECORD_MAX: usize = 32_768;
/// Bytes of the base file a page spans at least: a lookup reads about this much.
const PAGE: u64 = 4096;
/// A page spans at least this many times the length of its first path, which memory keeps:
/// whatever names peers send, the pages' paths take at most 1/64 of the base file's size.
const PAGE_PER_KEY_BYTE: u64 = 64;

/// Whether the entry at `at`, whose path is `key_len` bytes long, begins a new page.
fn page_due(pages: &[(Box<str>, u64)], at: u64, key_len: usize) -> bool {
    pages
        .last()
        .is_none_or(|(_, p)| at - p >= PAGE.max(PAGE_PER_KEY_BYTE * key_len as u64))
}
/// Bytes of the base file read at once.
const WINDOW: usize = 64 << 10;
/// Entries changed since the base was written that memory holds: past this, the next save
/// writes a new base (the daemon saves early for it, [`Index::wants_fold`]).
pub const OVERLAY_MAX: usize = 2048;
/// Bytes those entries may take: long names, block lists and version vectors count.
pub const OVERLAY_BYTES: usize = 2 << 20;

/// The digest a base file ends with, over all that comes before it. It finds damage and names
/// the base a journal continues. It was the file's MD5, which cost about as much as writing the
/// file each time it was rewritten; it is now its XXH64 followed by its length.
enum Sum {
    Md5(Md5),
    Xxh(crate::hash::Xxh64),
}

impl Sum {
    fn new() -> Sum {
        Sum::Xxh(crate::hash::Xxh64::default())
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Sum::Md5(m) => m.update(data),
            Sum::Xxh(x) => x.update(data),
        }
    }

    fn digest(self) -> Hash {
        match self {
            Sum::Md5(m) => m.finalize().into(),
            Sum::Xxh(x) => {
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&x.digest().to_be_bytes());
                d[8..].copy_from_slice(&x.len().to_be_bytes());
                d
            }
        }
    }
}

/// The error of a base file found damaged when it is read.
fn damaged(path: &Path, why: &str) -> Error {
    Error::msg(format!("index is damaged ({why})")).at(path)
}

/// The journal beside the base file `path`.
pub fn log_path(path: &Path) -> PathBuf {
    path.with_extension("log")
}

/// Stops the process: the base file, checked when it was read or written, cannot be read back
/// now (an I/O error, or changed by someone else). Going on could take files for deleted or
/// new; a restart checks the file and rebuilds the index if it is damaged.
fn unreadable(why: impl std::fmt::Display) -> ! {
    warn!("the index file cannot be read back ({why}); stopping, the next start checks it");
    std::process::exit(70)
}

impl Base {
    /// Calls `f` with the `n` bytes at `off`.
    fn bytes<R>(&self, off: u64, n: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        if off.checked_add(n as u64).is_none_or(|e| e > self.end) {
            unreadable(format!("an entry at {off} runs past the end"));
        }
        let mut w = self.window.borrow_mut();
        let (at, buf) = &mut *w;
        if off >= *at && off + n as u64 <= *at + buf.len() as u64 {
            let s = (off - *at) as usize;
            return f(&buf[s..s + n]);
        }
        if n > WINDOW {
            let mut big = vec![0u8; n];
            if let Err(e) = self.file.read_exact_at(&mut big, off) {
                unreadable(e);
            }
            return f(&big);
        }
        let len = (self.end - off).min(WINDOW as u64) as usize;
        buf.resize(len, 0);
        if let Err(e) = self.file.read_exact_at(buf, off) {
            *at = 0;
            buf.clear();
            unreadable(e);
        }
        *at = off;
        f(&buf[..n])
    }

    /// The length of the entry at `off` and where the next one starts.
    fn len_at(&self, off: u64) -> (usize, u64) {
        let n = self.bytes(off, 4, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) as usize;
        (n, off + 4 + n as u64)
    }

    /// How the path of the entry at `off` compares with `key`, and where the next entry starts.
    fn cmp_path(&self, off: u64, key: &str) -> (std::cmp::Ordering, u64) {
        let (at, len, next) = self.path_span(off);
        (self.bytes(at, len, |p| p.cmp(key.as_bytes())), next)
    }

    /// The path of the entry at `off`.
    fn path_at(&self, off: u64) -> String {
        let (at, len, _) = self.path_span(off);
        self.bytes(at, len, |p| String::from_utf8_lossy(p).into_owned())
    }

    /// Where the path of the entry at `off` is and how long, and where the next entry starts:
    /// only the path is read, however long the entry.
    fn path_span(&self, off: u64) -> (u64, usize, u64) {
        let mut c = self.cursor(off);
        let len = c.num(2);
        if off + 6 + len > c.end {
            unreadable(format!("a damaged entry at {off}"));
        }
        (off + 6, len as usize, c.end)
    }

    /// A cursor over the fields of the entry at `off`; its end is where the next one starts.
    fn cursor(&self, off: u64) -> Cursor<'_> {
        Cursor {
            base: self,
            at: off + 4,
            end: self.len_at(off).1,
        }
    }

    /// The sequence number and stat of the entry at `off`, read without decoding it (its block
    /// list is skipped over, found from the counts before it), and where the next entry starts.
    fn local_at(&self, off: u64) -> (u64, Stat, u64) {
        let mut c = self.cursor(off);
        let path = c.num(2);
        // The path, then kind, deleted, size, mtime, mtime_ns, mode and modified_by.
        c.skip(path + 34);
        let pairs = c.num(2);
        c.skip(pairs * 16 + 4);
        let blocks = c.num(4);
        c.skip(blocks * 16 + 16);
        let seq = c.num(8);
        let stat = Stat {
            ino: c.num(8),
            size: c.num(8),
            mtime: c.num(8) as i64,
            mtime_ns: c.num(4) as u32,
            mode: c.num(4) as u32,
        };
        (seq, stat, c.end)
    }

    /// The entry at `off` and where the next one starts.
    fn entry_at(&self, off: u64) -> (Entry, u64) {
        let (n, next) = self.len_at(off);
        let e = self.bytes(off + 4, n, |b| Index::decode_local(b, false));
        (e.unwrap_or_else(|why| unreadable(why)), next)
    }

    /// Where the first entry within `start` begins (`end` if none).
    fn seek(&self, start: Bound<&str>) -> u64 {
        let (key, excluded) = match start {
            Bound::Unbounded => return self.start,
            Bound::Included(k) => (k, false),
            Bound::Excluded(k) => (k, true),
        };
        let i = self.pages.partition_point(|(p, _)| &**p <= key);
        let mut off = match i {
            0 => self.start,
            i => self.pages[i - 1].1,
        };
        while off < self.end {
            let (ord, next) = self.cmp_path(off, key);
            match ord {
                std::cmp::Ordering::Less => off = next,
                std::cmp::Ordering::Equal if excluded => return next,
                _ => return off,
            }
        }
        off
    }

    /// Where the entry of `path` begins, if the base has one.
    fn find(&self, path: &str) -> Option<u64> {
        let off = self.seek(Bound::Included(path));
        (off < self.end && self.cmp_path(off, path).0.is_eq()).then_some(off)
    }

    fn get(&self, path: &str) -> Option<Entry> {
        self.find(path).map(|off| self.entry_at(off).0)
    }

    /// The size of the entry at `off` if it is a live file, read without decoding it.
    fn file_size_at(&self, off: u64) -> Option<u64> {
        let mut c = self.cursor(off);
        let path = c.num(2);
        c.skip(path);
        let (kind, deleted, size) = (c.num(1), c.num(1), c.num(8));
        (kind == Kind::File as u64 && deleted == 0).then_some(size)
    }
}

/// Reads the numbers of one entry of the base in order.
struct Cursor<'a> {
    base: &'a Base,
    at: u64,
    end: u64,
}

impl Cursor<'_> {
    fn skip(&mut self, n: u64) {
        self.at = self.at.saturating_add(n);
    }

    /// The big-endian number of `k` bytes next.
    fn num(&mut self, k: usize) -> u64 {
        if self.at.checked_add(k as u64).is_none_or(|e| e > self.end) {
            unreadable(format!("a damaged entry before {}", self.end));
        }
        let v = self.base.bytes(self.at, k, |b| {
            b.iter().fold(0u64, |v, x| v << 8 | *x as u64)
        });
        self.at += k as u64;
        v
    }
}

/// The entries in path order, from the base and memory together.
pub struct Iter<'a> {
    base: Option<&'a Base>,
    off: u64,
    peeked: Option<Entry>,
    over: std::iter::Peekable<std::collections::btree_map::Range<'a, Box<str>, Option<Box<Entry>>>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Cow<'a, Entry>;

    fn next(&mut self) -> Option<Cow<'a, Entry>> {
        loop {
            if self.peeked.is_none()
                && let Some(b) = self.base
                && self.off < b.end
            {
                let (e, next) = b.entry_at(self.off);
                self.off = next;
                self.peeked = Some(e);
            }
            let from_base = match (&self.peeked, self.over.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(b), Some((k, _))) => match b.path.as_str().cmp(&**k) {
                    std::cmp::Ordering::Less => true,
                    // Memory holds what changed since: the base's copy is passed over.
                    std::cmp::Ordering::Equal => {
                        self.peeked = None;
                        false
                    }
                    std::cmp::Ordering::Greater => false,
                },
            };
            if from_base {
                return self.peeked.take().map(Cow::Owned);
            }
            if let Some((_, Some(e))) = self.over.next() {
                return Some(Cow::Borrowed(&**e));
            }
        }
    }
}

impl Index {
    pub fn new(device: u64) -> Index {
        Index {
            device,
            ..Index::default()
        }
    }

    pub fn get(&self, path: &str) -> Option<Cow<'_, Entry>> {
        match self.over.get(path) {
            Some(slot) => slot.as_deref().map(Cow::Borrowed),
            None => self.base.as_ref()?.get(path).map(Cow::Owned),
        }
    }

    /// The number and stat of the entry of `path`, without reading its block list: enough to
    /// tell whether an entry read before is still the one the index holds.
    pub fn seq_stat(&self, path: &str) -> Option<(u64, Stat)> {
        match self.over.get(path) {
            Some(slot) => slot.as_deref().map(|e| (e.seq, e.stat)),
            None => {
                let b = self.base.as_ref()?;
                b.find(path).map(|off| {
                    let (seq, stat, _) = b.local_at(off);
                    (seq, stat)
                })
            }
        }
    }

    /// Every entry, by path.
    pub fn values(&self) -> Iter<'_> {
        self.from(Bound::Unbounded)
    }

    /// The entries from `start` on, by path.
    pub fn from(&self, start: Bound<&str>) -> Iter<'_> {
        Iter {
            base: self.base.as_ref(),
            off: self.base.as_ref().map_or(0, |b| b.seek(start)),
            peeked: None,
            over: self
                .over
                .range::<str, _>((start, Bound::Unbounded))
                .peekable(),
        }
    }

    /// Counts kept as entries change.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Whether memory holds enough changes that the next save should come now and write a
    /// new base.
    /// What the entries changed since the base was written take in memory.
    pub fn over_bytes(&self) -> usize {
        self.over_bytes
    }

    pub fn wants_fold(&self) -> bool {
        self.over.len() > OVERLAY_MAX || self.over_bytes > OVERLAY_BYTES
    }

    /// Stores `e` in memory as the entry of its path, keeping the totals and `over_seq` in step.
    fn store(&mut self, e: Entry) {
        // What is counted out: the entry in memory, or the base's, read without decoding it.
        if let Some(None) = self.over.get(e.path.as_str()) {
            self.over_bytes -= removed_cost(&e.path);
        }
        let old = match self.over.get(e.path.as_str()) {
            Some(slot) => slot.as_deref().map(|old| {
                self.over_bytes -= old.mem_cost();
                if self
                    .over_seq
                    .get(&old.seq)
                    .is_some_and(|p| **p == *old.path)
                {
                    self.over_seq.remove(&old.seq);
                }
                file_size(old)
            }),
            None => {
                (self.base.as_ref()).and_then(|b| b.find(&e.path).map(|off| b.file_size_at(off)))
            }
        };
        if let Some(old) = old {
            self.totals.remove(old);
        }
        self.totals.add(file_size(&e));
        self.seq = self.seq.max(e.seq);
        self.over_seq.insert(e.seq, e.path.as_str().into());
        self.over_bytes += e.mem_cost();
        self.over.insert(e.path.as_str().into(), Some(Box::new(e)));
    }

    /// Stores an entry under a fresh sequence number.
    pub fn put(&mut self, mut e: Entry) {
        e.seq = self.seq + 1;
        // A deletion's local stat (it has no file) records when it was recorded here: how long
        // it is kept counts from then, not from the time its maker gave it (a peer's clock, or
        // a peer's choice).
        if e.deleted && e.stat.mtime == 0 {
            e.stat.mtime = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() as i64);
        }
        self.store(e);
    }

    /// Walks what changed after number `from`, up to number `to`: entries in memory by number,
    /// then the base's by path (from `at`, which this moves on). `more` is called on each and
    /// says whether to go on. A walk resumed after the base was rewritten may give an entry
    /// twice, never miss one.
    pub fn changed(&self, from: u64, to: u64, at: &mut Pass, mut more: impl FnMut(&Entry) -> bool) {
        if let Pass::Over(after) = *at {
            let lo = after.max(from).saturating_add(1);
            if lo <= to {
                for (&s, p) in self.over_seq.range(lo..=to) {
                    *at = Pass::Over(s);
                    if let Some(Some(e)) = self.over.get(p)
                        && !more(e)
                    {
                        return;
                    }
                }
            }
            *at = Pass::Base(None);
        }
        if let Pass::Base(last) = &*at
            && let Some(b) = &self.base
            && b.max_seq > from
        {
            let mut off = match last {
                None => b.start,
                Some(p) => b.seek(Bound::Excluded(p)),
            };
            while off < b.end {
                let (seq, _, next) = b.local_at(off);
                if seq <= from || seq > to {
                    off = next;
                    continue;
                }
                let (e, next) = b.entry_at(off);
                off = next;
                if !self.over.contains_key(e.path.as_str()) {
                    *at = Pass::Base(Some(e.path.as_str().into()));
                    if !more(&e) {
                        return;
                    }
                }
            }
        }
        *at = Pass::Done;
    }

    /// How many entries changed after number `from`: those [`Index::changed`] would give,
    /// counted without decoding them (status asks every second, under the lock).
    pub fn count_since(&self, from: u64) -> usize {
        let live = |p: &str| matches!(self.over.get(p), Some(Some(_)));
        let mut n = (self.over_seq.range(from.saturating_add(1)..))
            .filter(|(_, p)| live(p))
            .count();
        if let Some(b) = self.base.as_ref().filter(|b| b.max_seq > from) {
            let mut off = b.start;
            while off < b.end {
                let (seq, _, next) = b.local_at(off);
                if seq > from {
                    let (at, len, _) = b.path_span(off);
                    let shadowed = b.bytes(at, len, |p| {
                        std::str::from_utf8(p).is_ok_and(|p| self.over.contains_key(p))
                    });
                    n += usize::from(!shadowed);
                }
                off = next;
            }
        }
        n
    }

    /// Removes the entries `drop` picks, as many as take up to `most` bytes of memory meanwhile
    /// (a removal is remembered in memory until the next whole save); returns how many were
    /// removed and whether more would be.
    pub fn purge(&mut self, drop: impl Fn(&Entry) -> bool, most: usize) -> (usize, bool) {
        let (mut bytes, mut more) = (0, false);
        let mut gone: Vec<Entry> = Vec::new();
        for e in self.values().filter(|e| drop(e)) {
            if bytes > 0 && bytes + removed_cost(&e.path) > most {
                more = true;
                break;
            }
            bytes += removed_cost(&e.path);
            gone.push(e.into_owned());
        }
        for e in &gone {
            self.totals.remove(file_size(e));
            if self.over_seq.get(&e.seq).is_some_and(|p| **p == *e.path) {
                self.over_seq.remove(&e.seq);
            }
            let in_base = self
                .base
                .as_ref()
                .is_some_and(|b| b.find(&e.path).is_some());
            let was = if in_base {
                self.over_bytes += removed_cost(&e.path);
                self.over.insert(e.path.as_str().into(), None)
            } else {
                self.over.remove(e.path.as_str())
            };
            match was {
                Some(Some(old)) => self.over_bytes -= old.mem_cost(),
                Some(None) => self.over_bytes -= removed_cost(&e.path),
                None => {}
            }
        }
        // The journal only adds and replaces entries: removals need a new base.
        self.disk.full |= !gone.is_empty();
        (gone.len(), more)
    }

    /// Records what a file looks like on disk now (its stat and block checksums), its content
    /// and version unchanged.
    pub fn set_local(&mut self, path: &str, stat: Stat, fast: Vec<u64>) {
        if let Some(e) = self.get(path) {
            let mut e = e.into_owned();
            e.stat = stat;
            e.fast = fast.into();
            self.store(e);
            self.disk.touched.insert(path.to_string());
        }
    }

    /// One entry as the files hold it: its wire form, then what is only local.
    fn encode_local(x: &mut Enc, e: &Entry) {
        let at = x.0.len();
        x.u32(0);
        codec::put_entry(x, e);
        x.u64(e.seq);
        let s = &e.stat;
        for v in [s.ino, s.size, s.mtime as u64] {
            x.u64(v);
        }
        x.u32(s.mtime_ns);
        x.u32(s.mode);
        x.u32(e.fast.len() as u32);
        for f in &e.fast {
            x.u64(*f);
        }
        let n = (x.0.len() - at - 4) as u32;
        x.0[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }

    /// Reads what `encode_local` wrote (after its length).
    /// `verify`: also check each file hash against its block list (done once, when the file
    /// is read whole; its digest covers it from then on).
    fn decode_local(buf: &[u8], verify: bool) -> std::result::Result<Entry, String> {
        let mut d = Dec::new(buf);
        let e = match verify {
            true => codec::get_entry(&mut d),
            false => codec::get_entry_unhashed(&mut d),
        };
        let mut e = e.map_err(|e| e.to_string())?;
        let local = (|| -> Result<()> {
            e.seq = d.u64()?;
            e.stat = Stat {
                ino: d.u64()?,
                size: d.u64()?,
                mtime: d.u64()? as i64,
                mtime_ns: d.u32()?,
                mode: d.u32()?,
            };
            let nfast = d.u32()? as usize;
            if nfast.checked_mul(8) != Some(d.remaining())
                || (nfast != 0 && nfast != e.blocks.len())
            {
                return Err(Error::msg("bad block checksums"));
            }
            e.fast = (0..nfast).map(|_| d.u64()).collect::<Result<_>>()?;
            d.end()
        })();
        local.map_err(|e| e.to_string())?;
        Ok(e)
    }

    /// The journal record of what changed since the last save, or `None` when the base must
    /// be rewritten instead ([`Index::save`]): there is none yet, entries were removed, the
    /// journal outgrew the base, or more changed than a record or memory holds.
    pub fn journal_record(&mut self, fold_later: bool) -> Option<Record> {
        let d = &self.disk;
        let changed = self.over_seq.range(d.seq + 1..).count() + d.touched.len();
        if d.base.is_none()
            || d.full
            || changed > RECORD_MAX
            || (self.wants_fold() && !fold_later)
            || d.log_bytes > d.base_bytes.max(LOG_COMPACT_MIN)
        {
            return None;
        }
        // Entries with new numbers, then those changed in place only (an entry changed both
        // ways has a new number).
        let renumbered = self.over_seq.range(d.seq + 1..).map(|(_, p)| &**p);
        let in_place = d.touched.iter().map(|p| p.as_str()).filter(|p| {
            self.over
                .get(*p)
                .is_some_and(|e| e.as_ref().is_some_and(|e| e.seq <= d.seq))
        });
        let entries: Vec<&Entry> = renumbered
            .chain(in_place)
            .filter_map(|p| self.over.get(p)?.as_deref())
            .collect();
        let mut x = Enc::default();
        x.u32(0);
        x.u64(self.seq);
        x.u32(entries.len() as u32);
        for e in entries {
            Self::encode_local(&mut x, e);
        }
        let n = (x.0.len() - 4) as u32;
        x.0[..4].copy_from_slice(&n.to_be_bytes());
        let digest: Hash = Md5::digest(&x.0[4..]).into();
        x.0.extend_from_slice(&digest);
        self.disk.touched.clear();
        Some(Record {
            bytes: x.0,
            seq: self.seq,
        })
    }

    /// Whether a record written by [`append`] is on disk; if not, the next save rewrites the
    /// base.
    pub fn appended(&mut self, r: &Record, written: bool) {
        if written {
            self.disk.seq = self.disk.seq.max(r.seq);
            self.disk.log_bytes += r.bytes.len() as u64;
        } else {
            self.disk.full = true;
        }
    }

    /// Writes the whole index as a new base file, and a new empty journal after it: temp files,
    /// fsync, renames (a journal whose header names another base is ignored, so a crash
    /// between the renames loses nothing). The old base's entries are copied as they are, in
    /// runs, and the changed ones written in their place: a merge of two lists sorted by path.
    /// What memory held is then read from the new base.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        // Until both files are in place the journal on disk may continue another base: the
        // next save must be a whole one again if this one fails.
        self.disk.full = true;
        let tmp = path.with_extension("tmp");
        let f = crate::sys::open::create_own(&tmp).at(&tmp)?;
        let mut nb = NewBase::new(f);
        nb.header(self.device, self.seq, self.totals.entries)
            .at(&tmp)?;
        self.write_entries(&mut nb).at(&tmp)?;
        if nb.count != self.totals.entries {
            // Written with a wrong count, the file would not load: counted again instead.
            self.totals = self.values().fold(Totals::default(), |mut t, e| {
                t.add(file_size(&e));
                t
            });
            return Err(Error::msg("the index's entry count was off; saving again").at(&tmp));
        }
        let (digest, pages, end, max_seq) = nb.finish().at(&tmp)?;
        let file = Self::put_in_place(path, &tmp, digest)?;
        self.base = Some(Base {
            file,
            pages,
            start: HEADER,
            end,
            max_seq,
            window: RefCell::default(),
        });
        self.over.clear();
        self.over_seq.clear();
        self.over_bytes = 0;
        self.disk = Disk {
            seq: self.seq,
            base: Some(digest),
            base_bytes: end + 16,
            log_bytes: LOG_HEADER,
            ..Disk::default()
        };
        Ok(())
    }

    /// Writes every entry into `nb` by path: the old base's in runs, each changed one in its
    /// place (a merge of two lists sorted by path); removed ones are left out.
    fn write_entries(&self, nb: &mut NewBase) -> std::io::Result<()> {
        let mut off = self.base.as_ref().map_or(0, |b| b.start);
        let mut over = self.over.iter().peekable();
        loop {
            if let Some(b) = self.base.as_ref().filter(|b| off < b.end) {
                off = nb.copy_run(b, off, over.peek().map(|(k, _)| &***k))?;
            }
            let Some((_, slot)) = over.next() else {
                return Ok(());
            };
            let Some(e) = slot else {
                continue; // removed since the base was written
            };
            nb.entry(e)?;
        }
    }

    /// Puts the written base `tmp` in place at `path` with a new empty journal naming its
    /// `digest`: journal temp file, fsync, renames, fsync of the folder. Returns the new base,
    /// opened for reading before the rename.
    fn put_in_place(path: &Path, tmp: &Path, digest: Hash) -> Result<File> {
        let log = log_path(path);
        let log_tmp = log.with_extension("log.tmp");
        let mut header = LOG_MAGIC.to_vec();
        header.extend_from_slice(&digest);
        crate::sys::open::create_own(&log_tmp)
            .and_then(|mut f| {
                f.write_all(&header)?;
                f.sync_all()
            })
            .at(&log_tmp)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(crate::sys::open::O_NOFOLLOW)
            .open(tmp)
            .at(tmp)?;
        fs::rename(tmp, path).at(path)?;
        fs::rename(&log_tmp, &log).at(&log)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
        }
        Ok(file)
    }

    /// Reads an index written by [`Index::save`], checking its digest and that it is sorted,
    /// then the records of its journal that are whole and intact. Only the base's pages and
    /// the journal's entries stay in memory.
    pub fn load(path: &Path) -> Result<Index> {
        let f = crate::sys::open::open_state(path).at(path)?;
        let len = f.metadata().at(path)?.len();
        let mut r = BufReader::with_capacity(64 << 10, f);
        let (mut sum, device, seq, count) = Self::read_header(&mut r, path, len)?;
        let mut ix = Index::new(device);
        let (pages, at, max_seq) =
            Self::read_entries(&mut r, path, len, seq, count, &mut sum, &mut ix.totals)?;
        let mut digest = [0u8; 16];
        r.read_exact(&mut digest)
            .map_err(|_| damaged(path, "truncated"))?;
        if digest != sum.digest() {
            return Err(damaged(path, "checksum mismatch"));
        }
        ix.seq = seq;
        ix.base = Some(Base {
            file: r.into_inner(),
            pages,
            start: HEADER,
            end: at,
            max_seq,
            window: RefCell::default(),
        });
        ix.disk.base = Some(digest);
        ix.disk.base_bytes = len;
        ix.apply_journal(path, digest);
        Ok(ix)
    }

    /// Reads the base's header: the digest it begins (by its magic), the device, the last
    /// sequence number and the entry count (checked against the file's `len`).
    fn read_header(r: &mut impl Read, path: &Path, len: u64) -> Result<(Sum, u64, u64, u64)> {
        let mut head = [0u8; HEADER as usize];
        r.read_exact(&mut head)
            .map_err(|_| damaged(path, "short header"))?;
        let mut d = Dec::new(&head);
        let mut sum = match d.take(8)? {
            m if m == MAGIC => Sum::new(),
            m if m == MD5_MAGIC => Sum::Md5(Md5::new()),
            m if m == OLD_MAGIC => {
                return Err(damaged(path, "written by an older version of left"));
            }
            _ => return Err(damaged(path, "not an index file")),
        };
        sum.update(&head);
        let device = d.u64()?;
        let seq = d.u64()?;
        let count = d.u64()?;
        if count > len / 8 {
            return Err(damaged(path, "entry count too large"));
        }
        Ok((sum, device, seq, count))
    }

    /// Reads the base's `count` entries, each checked (size, file hash, order, number at most
    /// `seq`), into `sum` and `totals`. Returns the pages, where the entries end and their
    /// highest number.
    fn read_entries(
        r: &mut impl Read,
        path: &Path,
        len: u64,
        seq: u64,
        count: u64,
        sum: &mut Sum,
        totals: &mut Totals,
    ) -> Result<(Pages, u64, u64)> {
        let mut buf = Vec::new();
        let mut at = HEADER;
        let mut pages: Pages = Vec::new();
        let mut prev = String::new();
        let mut max_seq = 0;
        for i in 0..count {
            let mut n = [0u8; 4];
            r.read_exact(&mut n)
                .map_err(|_| damaged(path, "truncated"))?;
            sum.update(&n);
            let n = u32::from_be_bytes(n) as usize;
            if n as u64 > len || n > codec::MAX_ENTRY_BYTES {
                return Err(damaged(path, "entry too large"));
            }
            buf.resize(n, 0);
            r.read_exact(&mut buf)
                .map_err(|_| damaged(path, "truncated"))?;
            sum.update(&buf);
            let e = Self::decode_local(&buf, true).map_err(|why| damaged(path, &why))?;
            if i > 0 && e.path <= prev {
                return Err(damaged(path, "entries out of order"));
            }
            if page_due(&pages, at, e.path.len()) {
                pages.push((e.path.as_str().into(), at));
            }
            if e.seq > seq {
                return Err(damaged(path, "an entry numbered past the index"));
            }
            at += 4 + n as u64;
            max_seq = max_seq.max(e.seq);
            totals.add(file_size(&e));
            prev.clear();
            prev.push_str(&e.path);
        }
        Ok((pages, at, max_seq))
    }

    /// Applies the journal beside the base `path` (whose digest is `digest`) and notes whether
    /// the next save may append to it.
    fn apply_journal(&mut self, path: &Path, digest: Hash) {
        let (applied, journal) = self.replay(&log_path(path), digest);
        if journal == Journal::CutShort {
            warn!(
                "{}: the index journal ends in a damaged record (a crash while saving?); \
                 the changes before it are kept",
                path.display()
            );
        }
        self.disk.log_bytes = applied;
        // A journal missing, continuing another base or damaged is not appended to: the next
        // save writes both files anew.
        self.disk.full = journal != Journal::Whole;
        self.disk.seq = self.seq;
    }

    /// Applies the journal's records, in order, up to the first that is not whole and intact.
    /// Returns the bytes applied and what the journal was.
    fn replay(&mut self, log: &Path, base: Hash) -> (u64, Journal) {
        let Ok(f) = crate::sys::open::open_state(log) else {
            return (0, Journal::None);
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let mut r = BufReader::with_capacity(64 << 10, f);
        let mut header = [0u8; LOG_HEADER as usize];
        if r.read_exact(&mut header).is_err()
            || &header[..8] != LOG_MAGIC
            || header[8..] != base[..]
        {
            return (0, Journal::None);
        }
        let mut at = LOG_HEADER;
        let mut buf = Vec::new();
        loop {
            let mut n = [0u8; 4];
            if r.read_exact(&mut n).is_err() {
                let end = if at == len {
                    Journal::Whole
                } else {
                    Journal::CutShort
                };
                return (at, end);
            }
            let n = u32::from_be_bytes(n) as u64;
            if n + 20 > len - at {
                return (at, Journal::CutShort);
            }
            buf.resize(n as usize + 16, 0);
            if r.read_exact(&mut buf).is_err() {
                return (at, Journal::CutShort);
            }
            let (payload, digest) = buf.split_at(n as usize);
            if Md5::digest(payload)[..] != digest[..] {
                return (at, Journal::CutShort);
            }
            // Checked whole first: a record is applied entirely or not at all.
            let Some((seq, entries)) = Self::record_entries(payload) else {
                return (at, Journal::CutShort);
            };
            for e in entries {
                self.store(e);
            }
            self.seq = self.seq.max(seq);
            at += n + 20;
        }
    }

    /// The index's sequence number and the entries of a journal record's payload, or `None` if
    /// it does not parse.
    fn record_entries(payload: &[u8]) -> Option<(u64, Vec<Entry>)> {
        let mut d = Dec::new(payload);
        let seq = d.u64().ok()?;
        let count = d.u32().ok()? as usize;
        let mut out = Vec::with_capacity(count.min(payload.len() / 16));
        for _ in 0..count {
            let n = d.u32().ok()? as usize;
            out.push(Self::decode_local(d.take(n).ok()?, true).ok()?);
        }
        d.end().ok()?;
        Some((seq, out))
    }
}

/// Appends a record to the journal beside the base file `path` and makes it durable.
pub fn append(path: &Path, r: &Record) -> Result<()> {
    let log = log_path(path);
    let f = crate::sys::open::open_own(&log).at(&log)?;
    let end = f.metadata().at(&log)?.len();
    f.write_all_at(&r.bytes, end).at(&log)?;
    f.sync_data().at(&log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::{MAX_BLOCK, MIN_BLOCK, block_size_for};
    use crate::store::version::Version;

    fn all(ix: &Index) -> Vec<Entry> {
        ix.values().map(Cow::into_owned).collect()
    }

    fn at(ix: &Index, path: &str) -> Entry {
        ix.get(path).unwrap().into_owned()
    }

    fn since(ix: &Index, seq: u64) -> Vec<String> {
        let mut out = Vec::new();
        ix.changed(seq, u64::MAX, &mut Pass::Over(seq), |e| {
            out.push(e.path.clone());
            true
        });
        out
    }

    #[test]
    fn what_an_entry_holds_for_a_peer() {
        let file = Entry {
            size: MIN_BLOCK as u64 + 10,
            block_size: MIN_BLOCK,
            blocks: vec![[1; 16], [2; 16]].into(),
            ..Entry::default()
        };
        let bs = MIN_BLOCK;
        assert!(file.holds(0, bs, &[1; 16], false));
        assert!(file.holds(bs as u64, 10, &[2; 16], false));
        assert!(!file.holds(bs as u64, 11, &[2; 16], false));
        assert!(!file.holds(0, bs, &[2; 16], false));
        assert!(!file.holds(5, bs, &[1; 16], false));
        assert!(file.holds(5, bs, &[0; 16], true));
        assert!(!file.holds(11, bs, &[0; 16], true));
        assert!(!file.holds(u64::MAX, 10, &[0; 16], true));
        assert!(!file.holds(u64::MAX - 5, 1, &[1; 16], false));
        // A folder or a tombstone: no blocks, block size 0. Never a division by it.
        for e in [
            Entry {
                kind: Kind::Dir,
                ..Entry::default()
            },
            Entry {
                deleted: true,
                ..file.clone()
            },
        ] {
            for (off, any) in [(0, false), (0, true), (7, false), (1 << 20, true)] {
                assert!(!e.holds(off, 100, &[1; 16], any), "{e:?}");
            }
        }
    }

    #[test]
    fn block_sizes() {
        assert_eq!(block_size_for(0), MIN_BLOCK);
        assert_eq!(block_size_for(500 << 20), MIN_BLOCK);
        assert_eq!(block_size_for((512 << 20) + 1), 2 * MIN_BLOCK);
        assert_eq!(block_size_for(1 << 50), MAX_BLOCK);
    }

    #[test]
    fn save_and_load() {
        let dir = std::env::temp_dir().join(format!("left-index-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("index");
        let mut ix = Index::new(77);
        ix.put(Entry {
            path: "a/b".into(),
            size: 3,
            block_size: MIN_BLOCK,
            blocks: vec![[1; 16]].into(),
            file_hash: crate::hash::list_hash(&[[1; 16]]),
            fast: vec![0x1234_5678_9abc_def0].into(),
            version: Version::from_pairs(vec![(77, 1)]),
            stat: Stat {
                ino: 5,
                size: 3,
                mtime: -2,
                mtime_ns: 9,
                mode: 0o600,
            },
            ..Entry::default()
        });
        ix.put(Entry {
            path: "a".into(),
            kind: Kind::Dir,
            ..Entry::default()
        });
        ix.put(Entry {
            path: "gone".into(),
            deleted: true,
            ..Entry::default()
        });
        ix.save(&p).unwrap();
        let back = Index::load(&p).unwrap();
        assert_eq!(back.device, 77);
        assert_eq!(back.seq, 3);
        assert_eq!(all(&back), all(&ix));
        assert_eq!(since(&back, 2), vec!["gone"]);
        // Entries of the base come in path order.
        assert_eq!(since(&back, 0), vec!["a", "a/b", "gone"]);
        let mut back = back;
        back.put(Entry {
            path: "a/b".into(),
            ..Entry::default()
        });
        assert_eq!(since(&back, 3), vec!["a/b"]);
        assert_eq!(back.count_since(0), 3);
        assert_eq!(back.purge(|e| e.deleted, usize::MAX), (1, false));
        assert_eq!(back.count_since(0), 2);

        // Any damage is detected, never loaded as something else.
        let good = fs::read(&p).unwrap();
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&p, &bad).unwrap();
            assert!(Index::load(&p).is_err(), "flip at {i} not detected");
        }
        fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(Index::load(&p).is_err());

        // A base written by the version before, with an MD5 of the file as its digest, still
        // loads, and so does the journal that continues it.
        let mut old = good.clone();
        let end = old.len() - 16;
        old[..8].copy_from_slice(MD5_MAGIC);
        let md5 = Md5::digest(&old[..end]);
        old[end..].copy_from_slice(&md5);
        fs::write(&p, &old).unwrap();
        fs::write(log_path(&p), [&LOG_MAGIC[..], &md5[..]].concat()).unwrap();
        let mut back = Index::load(&p).unwrap();
        assert_eq!(all(&back), all(&ix));
        back.put(file("later", 4));
        assert!(
            save_changes(&mut back, &p),
            "appended to the old base's journal"
        );
        let again = Index::load(&p).unwrap();
        assert_eq!(all(&again), all(&back));
        old[3] ^= 1;
        fs::write(&p, &old).unwrap();
        assert!(Index::load(&p).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    fn file(path: &str, n: u8) -> Entry {
        Entry {
            path: path.into(),
            size: n as u64 + 1,
            block_size: MIN_BLOCK,
            blocks: vec![[n; 16]].into(),
            file_hash: crate::hash::list_hash(&[[n; 16]]),
            version: Version::from_pairs(vec![(9, n as u64)]),
            ..Entry::default()
        }
    }

    #[test]
    fn memory_bounds_the_changes_it_holds_by_bytes_too() {
        let mut ix = Index::default();
        // Long versions: far fewer entries than OVERLAY_MAX take more than OVERLAY_BYTES.
        let long = Version::from_pairs((1..=1023).map(|d| (d, 7)).collect());
        let mut n = 0;
        while !ix.wants_fold() {
            let mut e = file(&format!("f{n}"), 1);
            e.version = long.clone();
            ix.put(e);
            n += 1;
        }
        assert!(n < OVERLAY_MAX / 8, "{n} entries held");
        assert!(ix.over_bytes > OVERLAY_BYTES);
        // Replaced and removed entries are counted out.
        for k in 0..n {
            ix.put(file(&format!("f{k}"), 1));
        }
        assert!(!ix.wants_fold());
        let small = ix.over_bytes;
        // Purged a bounded part at a time.
        assert_eq!(ix.purge(|_| true, 1), (1, true));
        ix.purge(|_| true, usize::MAX);
        assert!(
            ix.over_bytes < small && ix.over_bytes == 0,
            "{}",
            ix.over_bytes
        );
    }

    /// Saves the way the daemon does: a journal record if the index allows one, else whole.
    fn save_changes(ix: &mut Index, p: &Path) -> bool {
        match ix.journal_record(false) {
            Some(r) => {
                let w = append(p, &r);
                ix.appended(&r, w.is_ok());
                true
            }
            None => {
                ix.save(p).unwrap();
                false
            }
        }
    }

    #[test]
    fn journal_holds_the_changes_between_whole_saves() {
        let dir = std::env::temp_dir().join(format!("left-journal-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("index");
        let mut ix = Index::new(9);
        for i in 0..40 {
            ix.put(file(&format!("f{i:02}"), i));
        }
        assert!(!save_changes(&mut ix, &p), "the first save writes the base");
        let base = fs::read(&p).unwrap();
        // A few changes: a new version, a new file, a stat changed in place.
        ix.put(file("f03", 200));
        ix.put(file("new", 201));
        let stat = Stat {
            ino: 77,
            size: 5,
            ..Stat::default()
        };
        ix.set_local("f07", stat, vec![]);
        assert!(save_changes(&mut ix, &p), "a journal record");
        assert_eq!(fs::read(&p).unwrap(), base, "the base is not rewritten");
        ix.put(file("f04", 202));
        assert!(save_changes(&mut ix, &p));
        let back = Index::load(&p).unwrap();
        assert_eq!(all(&back), all(&ix));
        assert_eq!(back.seq, ix.seq);
        assert_eq!(at(&back, "f07").stat, stat);
        assert_eq!(since(&back, 40), vec!["f03", "new", "f04"]);
        assert!(!back.disk.full, "an intact journal is appended to");

        // A record cut short by a crash: the changes before it stay, it is not applied, and
        // the next save writes both files anew.
        let log = log_path(&p);
        let whole = fs::read(&log).unwrap();
        assert_eq!(back.disk.log_bytes, whole.len() as u64);
        fs::write(&log, &whole[..whole.len() - 3]).unwrap();
        let mut cut = Index::load(&p).unwrap();
        assert_eq!(at(&cut, "f03").blocks[..], [[200; 16]]);
        assert_eq!(
            at(&cut, "f04").blocks[..],
            [[4; 16]],
            "the torn record is not applied"
        );
        assert!(cut.disk.full);
        cut.put(file("f05", 203));
        assert!(
            !save_changes(&mut cut, &p),
            "written whole after a torn journal"
        );
        let again = Index::load(&p).unwrap();
        assert_eq!(all(&again), all(&cut));
        assert!(!again.disk.full);

        // A damaged byte anywhere in a record stops the replay there.
        let mut ix = again;
        ix.put(file("f06", 204));
        assert!(save_changes(&mut ix, &p));
        let good = fs::read(&log).unwrap();
        for i in LOG_HEADER as usize..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&log, &bad).unwrap();
            let b = Index::load(&p).unwrap();
            assert_eq!(at(&b, "f06").blocks[..], [[6; 16]], "flip at {i} applied");
            assert!(b.disk.full);
        }
        fs::write(&log, &good).unwrap();

        // A journal of another base (a crash between the renames of a whole save) is ignored.
        let other = dir.join("other");
        let mut o = Index::new(9);
        o.put(file("x", 1));
        o.save(&other).unwrap();
        fs::copy(log_path(&other), &log).unwrap();
        let b = Index::load(&p).unwrap();
        assert_eq!(at(&b, "f06").blocks[..], [[6; 16]]);
        assert!(b.disk.full);
        fs::write(&log, &good).unwrap();

        // Removals, and a journal larger than the base, make the next save a whole one.
        let mut ix = Index::load(&p).unwrap();
        assert_eq!(at(&ix, "f06").blocks[..], [[204; 16]]);
        ix.purge(|e| e.path == "f01", usize::MAX);
        assert!(ix.journal_record(false).is_none());
        ix.save(&p).unwrap();
        let mut appends = 0;
        loop {
            ix.put(file("f02", appends as u8));
            if !save_changes(&mut ix, &p) {
                break;
            }
            appends += 1;
        }
        assert!(
            ix.disk.base_bytes < LOG_COMPACT_MIN && appends > 100,
            "{appends}"
        );
        assert_eq!(all(&Index::load(&p).unwrap()), all(&ix));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Long names (a peer's deletions of 4,000-byte paths): the paths memory keeps to find
    /// pages stay a small part of the base file, and every entry is still found.
    #[test]
    fn page_paths_take_a_bounded_share_of_the_base() {
        let dir = std::env::temp_dir().join(format!("left-longpages-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("index");
        let mut ix = Index::new(5);
        let long = |i: usize| format!("{:04}/{}", i, "n".repeat(250)).repeat(16);
        for i in 0..400 {
            let mut e = file(&long(i)[..4000], 1);
            e.deleted = true;
            e.kind = Kind::File;
            e.size = 0;
            e.blocks = Box::new([]);
            e.block_size = 0;
            ix.put(e);
        }
        ix.save(&p).unwrap();
        for ix in [&ix, &Index::load(&p).unwrap()] {
            let b = ix.base.as_ref().unwrap();
            let kept: usize = b.pages.iter().map(|(k, _)| k.len()).sum();
            assert!(
                kept as u64 <= b.end / PAGE_PER_KEY_BYTE + 4000,
                "{kept} of {}",
                b.end
            );
            for i in 0..400 {
                assert!(ix.get(&long(i)[..4000]).is_some_and(|e| e.deleted), "{i}");
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_base_is_read_a_page_at_a_time() {
        let dir = std::env::temp_dir().join(format!("left-pages-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("index");
        let mut ix = Index::new(5);
        let mut want: BTreeMap<String, Entry> = BTreeMap::new();
        let name = |i: usize| format!("d{}/some longer name {i:05}", i % 7);
        let put = |ix: &mut Index, want: &mut BTreeMap<String, Entry>, e: Entry| {
            let path = e.path.clone();
            ix.put(e);
            want.insert(path.clone(), at(ix, &path));
        };
        for i in 0..3000 {
            put(&mut ix, &mut want, file(&name(i), i as u8));
        }
        ix.put(Entry {
            path: "d3".into(),
            kind: Kind::Dir,
            ..Entry::default()
        });
        want.insert("d3".into(), at(&ix, "d3"));
        // Entries larger than the read window, among the others: 5000 blocks, their checksums
        // and a longer version vector.
        for (n, path) in [(5000usize, "d2/big"), (4097, "d4/big")] {
            let blocks: Vec<Hash> = (0..n).map(|i| [(i % 251) as u8; 16]).collect();
            let big = Entry {
                path: path.into(),
                size: n as u64 * MIN_BLOCK as u64,
                block_size: MIN_BLOCK,
                file_hash: crate::hash::list_hash(&blocks),
                blocks: blocks.into(),
                fast: (0..n as u64).collect(),
                version: Version::from_pairs(vec![(1, 2), (3, 4), (5, 6)]),
                stat: Stat {
                    ino: 42,
                    size: 7,
                    mtime: -3,
                    mtime_ns: 8,
                    mode: 0o644,
                },
                ..Entry::default()
            };
            put(&mut ix, &mut want, big);
        }
        ix.save(&p).unwrap();
        assert!(ix.over.is_empty(), "the save moved every entry to the base");
        assert!(ix.base.as_ref().unwrap().pages.len() > 50);
        let check = |ix: &Index, want: &BTreeMap<String, Entry>| {
            for (k, e) in want {
                assert_eq!(&at(ix, k), e);
                // Read without the block list, from the base as from memory.
                assert_eq!(ix.seq_stat(k), Some((e.seq, e.stat)), "{k}");
            }
            for absent in ["", "a", "d0/", "d3/some", "d9", "d6/some longer name 99999"] {
                assert!(ix.get(absent).is_none(), "{absent}");
            }
            assert_eq!(all(ix), want.values().cloned().collect::<Vec<_>>());
            // A range from any name, as the scanner asks for a folder's content.
            for start in ["d3/", "d3", "d6/some longer name 02000", "e"] {
                let got: Vec<String> = ix
                    .from(Bound::Included(start))
                    .map(|e| e.path.clone())
                    .collect();
                let exp: Vec<String> = want
                    .range::<str, _>((Bound::Included(start), Bound::Unbounded))
                    .map(|(k, _)| k.clone())
                    .collect();
                assert_eq!(got, exp, "from {start}");
            }
            let files = want.values().filter(|e| e.is_file());
            assert_eq!(ix.totals().files, files.clone().count() as u64);
            assert_eq!(ix.totals().bytes, files.map(|e| e.size).sum::<u64>());
            assert_eq!(ix.totals().entries, want.len() as u64);
        };
        check(&ix, &want);
        let base_seq = ix.seq;

        // Changes held in memory over the base: new versions, new names, removals.
        for i in (0..3000).step_by(100) {
            put(&mut ix, &mut want, file(&name(i), 7));
        }
        put(&mut ix, &mut want, file("d0/new", 1));
        put(&mut ix, &mut want, file("0 first", 1));
        put(&mut ix, &mut want, file("zz last", 1));
        let (removed, _) = ix.purge(|e| e.path.ends_with('7') || e.path == "zz last", usize::MAX);
        want.retain(|k, _| !(k.ends_with('7') || k == "zz last"));
        assert_eq!(removed, 301);
        check(&ix, &want);
        let mut changed = since(&ix, base_seq);
        changed.sort();
        let mut exp: Vec<String> = want
            .values()
            .filter(|e| e.seq > base_seq)
            .map(|e| e.path.clone())
            .collect();
        exp.sort();
        assert_eq!(changed, exp);
        assert_eq!(ix.count_since(base_seq), exp.len());
        for from in [0, base_seq / 3, base_seq - 1, ix.seq - 5, ix.seq] {
            let n = want.values().filter(|e| e.seq > from).count();
            assert_eq!(ix.count_since(from), n, "from {from}");
        }

        // A walk over what changed, resumed after the base was rewritten, misses nothing.
        let top = ix.seq;
        let mut pass = Pass::Over(0);
        let mut seen = HashSet::new();
        let mut n = 0;
        ix.changed(0, top, &mut pass, |e| {
            seen.insert(e.path.clone());
            n += 1;
            n < 40
        });
        assert_eq!(seen.len(), 40);
        put(&mut ix, &mut want, file("d1/later", 9));
        ix.save(&p).unwrap();
        ix.changed(0, top, &mut pass, |e| {
            seen.insert(e.path.clone());
            true
        });
        assert_eq!(pass, Pass::Done);
        for e in want.values().filter(|e| e.seq <= top) {
            assert!(seen.contains(&e.path), "{} missed", e.path);
        }
        assert!(!seen.contains("d1/later"), "numbered after the pass began");

        // The folded base loads back as it was, and is found sorted.
        check(&Index::load(&p).unwrap(), &want);
        let mut bytes = fs::read(&p).unwrap();
        let first = HEADER as usize;
        // Two entries swapped would be found out of order even with a right digest: the digest
        // is made again over the bad file.
        let n1 = u32::from_be_bytes(bytes[first..first + 4].try_into().unwrap()) as usize + 4;
        let n2 =
            u32::from_be_bytes(bytes[first + n1..first + n1 + 4].try_into().unwrap()) as usize + 4;
        let (a, b) = (
            bytes[first..first + n1].to_vec(),
            bytes[first + n1..first + n1 + n2].to_vec(),
        );
        bytes.splice(first..first + n1 + n2, b.into_iter().chain(a));
        let end = bytes.len() - 16;
        let mut sum = Sum::new();
        sum.update(&bytes[..end]);
        bytes[end..].copy_from_slice(&sum.digest());
        fs::write(&p, &bytes).unwrap();
        let err = Index::load(&p).unwrap_err().to_string();
        assert!(err.contains("out of order"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
