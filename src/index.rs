//! The index: what the share holds (per file its size, mtime, mode, block hashes, file hash and
//! version), persisted under the state directory so a restart re-hashes only what changed. On
//! disk it is a base file, rewritten whole now and then, and a journal of the entries changed
//! since, appended to at each save: a save costs what changed, not the whole index.

use crate::error::{Context, Error, Result};
pub use crate::hash::Hash;
use crate::version::Version;
use crate::wire::{self, Dec, Enc};
use md5::{Digest, Md5};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Smallest block: 64 KiB. See the README for why.
pub const MIN_BLOCK: u32 = 64 << 10;
/// Largest block, used only for files over 64 GiB.
pub const MAX_BLOCK: u32 = 8 << 20;
/// Block counts are kept at or under this by growing the block size with the file.
pub const TARGET_BLOCKS: u64 = 8192;
/// Files with fewer blocks keep no XXH64s: hashing them again whole costs little.
pub const FAST_MIN_BLOCKS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Kind {
    #[default]
    File = 0,
    Dir = 1,
}

/// What the file looked like on disk when it last matched its entry; never sent to peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: u32,
    pub mode: u32,
}

impl Stat {
    pub fn of(md: &fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            ino: md.ino(),
            size: md.len(),
            mtime: md.mtime(),
            mtime_ns: md.mtime_nsec() as u32,
            mode: md.mode() & 0o7777,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Relative, `/`-separated name inside the share.
    pub path: String,
    pub kind: Kind,
    /// A tombstone: the entry was deleted at this version.
    pub deleted: bool,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: u32,
    /// Permission bits.
    pub mode: u32,
    /// The device that made this version.
    pub modified_by: u64,
    pub version: Version,
    pub block_size: u32,
    pub blocks: Box<[Hash]>,
    /// The file's hash: the MD5 of `blocks` ([`crate::hash::list_hash`]).
    pub file_hash: Hash,
    // Local bookkeeping.
    /// XXH64 of each block as it is on disk (files of [`FAST_MIN_BLOCKS`] blocks or more, else
    /// empty): the scanner re-hashes with MD5 only the blocks whose XXH64 changed.
    pub fast: Box<[u64]>,
    /// Local sequence number of the last change to this entry.
    pub seq: u64,
    pub stat: Stat,
    /// The scan that last saw this entry on disk (not persisted).
    pub scan_gen: u32,
}

impl Entry {
    pub fn is_file(&self) -> bool {
        self.kind == Kind::File && !self.deleted
    }

    /// Whether two entries describe the same thing (content and type), whatever their versions.
    pub fn same_content(&self, o: &Entry) -> bool {
        self.kind == o.kind
            && self.deleted == o.deleted
            && (self.deleted
                || self.kind == Kind::Dir
                || (self.size == o.size && self.file_hash == o.file_hash))
    }

    /// Block `i`'s offset and length.
    pub fn block_range(&self, i: usize) -> (u64, usize) {
        let off = i as u64 * self.block_size as u64;
        (off, (self.size - off).min(self.block_size as u64) as usize)
    }
}

/// The block size for a file of `size` bytes.
pub fn block_size_for(size: u64) -> u32 {
    let mut bs = MIN_BLOCK;
    while bs < MAX_BLOCK && size.div_ceil(bs as u64) > TARGET_BLOCKS {
        bs *= 2;
    }
    bs
}

/// Checks that an entry's block list fits its size (for entries from peers and from disk).
pub fn check_geometry(e: &Entry) -> Result<()> {
    if e.deleted || e.kind == Kind::Dir {
        if !e.blocks.is_empty() || e.size != 0 {
            return Err(Error::protocol(format!(
                "{}: a folder or deleted entry with content",
                e.path
            )));
        }
        return Ok(());
    }
    let bs = e.block_size;
    if !bs.is_power_of_two() || !(MIN_BLOCK..=MAX_BLOCK).contains(&bs) {
        return Err(Error::protocol(format!("{}: bad block size {bs}", e.path)));
    }
    if e.size.div_ceil(bs as u64) != e.blocks.len() as u64 {
        return Err(Error::protocol(format!(
            "{}: {} blocks do not fit {} bytes",
            e.path,
            e.blocks.len(),
            e.size
        )));
    }
    if crate::hash::list_hash(&e.blocks) != e.file_hash {
        return Err(Error::protocol(format!(
            "{}: the file hash does not match its blocks",
            e.path
        )));
    }
    Ok(())
}

/// The index of one share.
#[derive(Debug, Default)]
pub struct Index {
    pub device: u64,
    /// The last sequence number handed out.
    pub seq: u64,
    /// Changes to what is persisted go through `put`, `purge` and `set_local`, which keep
    /// `by_seq` and the journal in step; only `scan_gen` may be changed in place.
    /// Each entry is boxed: a map node then holds 11 small slots, not 11 whole entries, many
    /// of them empty after splits (boxing cut the sender's peak RSS at 100,000 files by 14%).
    entries: BTreeMap<Box<str>, Box<Entry>>,
    /// Path of each entry by its sequence number, so that what changed since a given number is
    /// found without walking the whole index. Kept in step by `put`, `load` and `purge`.
    by_seq: BTreeMap<u64, Box<str>>,
    disk: Disk,
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

const MAGIC: &[u8; 8] = b"LEFTIDX2";
/// The format before file hashes were derived from block lists: read as "rebuild".
const OLD_MAGIC: &[u8; 8] = b"LEFTIDX1";
/// The journal's header: this, then the digest of the base file it continues.
const LOG_MAGIC: &[u8; 8] = b"LEFTLOG1";
const LOG_HEADER: u64 = 24;
/// The journal is folded into a new base once it is larger than the base and than this.
const LOG_COMPACT_MIN: u64 = 1 << 20;
/// Entries a journal record holds at most (it is built in memory); more changed at once are
/// saved by writing the base anew.
const RECORD_MAX: usize = 32_768;

/// The journal beside the base file `path`.
pub fn log_path(path: &Path) -> PathBuf {
    path.with_extension("log")
}

impl Index {
    pub fn new(device: u64) -> Index {
        Index {
            device,
            ..Index::default()
        }
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path).map(|e| &**e)
    }

    /// For what is not persisted ([`Entry::scan_gen`]) only: other changes go through `put`,
    /// `purge` and `set_local`.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        self.entries.get_mut(path).map(|e| &mut **e)
    }

    /// Every entry, by path.
    pub fn values(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|e| &**e)
    }

    /// The entries from `start` on, by path.
    pub fn from(&self, start: std::ops::Bound<&str>) -> impl Iterator<Item = &Entry> {
        self.entries
            .range::<str, _>((start, std::ops::Bound::Unbounded))
            .map(|(_, e)| &**e)
    }

    /// Stores an entry under a fresh sequence number.
    pub fn put(&mut self, mut e: Entry) {
        self.seq += 1;
        e.seq = self.seq;
        self.by_seq.insert(e.seq, e.path.as_str().into());
        if let Some(old) = self.entries.insert(e.path.as_str().into(), Box::new(e)) {
            self.by_seq.remove(&old.seq);
        }
    }

    /// Entries changed after `seq`, oldest change first.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &Entry> {
        self.by_seq
            .range(seq + 1..)
            .filter_map(|(_, p)| self.entries.get(p).map(|e| &**e))
    }

    /// Removes the entries `drop` picks; returns how many.
    pub fn purge(&mut self, drop: impl Fn(&Entry) -> bool) -> usize {
        let gone: Vec<(String, u64)> = self
            .entries
            .values()
            .filter(|e| drop(e))
            .map(|e| (e.path.clone(), e.seq))
            .collect();
        for (p, s) in &gone {
            self.entries.remove(p.as_str());
            self.by_seq.remove(s);
        }
        // The journal only adds and replaces entries: removals need a new base.
        self.disk.full |= !gone.is_empty();
        gone.len()
    }

    /// Records what a file looks like on disk now (its stat and block checksums), its content
    /// and version unchanged.
    pub fn set_local(&mut self, path: &str, stat: Stat, fast: Vec<u64>) {
        if let Some(e) = self.entries.get_mut(path) {
            e.stat = stat;
            e.fast = fast.into();
            self.disk.touched.insert(path.to_string());
        }
    }

    /// One entry as the files hold it: its wire form, then what is only local.
    fn encode_local(x: &mut Enc, e: &Entry) {
        let at = x.0.len();
        x.u32(0);
        wire::put_entry(x, e);
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
    fn decode_local(buf: &[u8]) -> std::result::Result<Entry, String> {
        let mut d = Dec::new(buf);
        let mut e = wire::get_entry(&mut d).map_err(|e| e.to_string())?;
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

    /// Adds or replaces an entry read from disk.
    fn insert_loaded(&mut self, e: Entry) {
        if let Some(old) = self.entries.get(e.path.as_str()) {
            self.by_seq.remove(&old.seq);
        }
        self.seq = self.seq.max(e.seq);
        self.by_seq.insert(e.seq, e.path.as_str().into());
        self.entries.insert(e.path.as_str().into(), Box::new(e));
    }

    /// The journal record of what changed since the last save, or `None` when the base must
    /// be rewritten instead ([`Index::save`]): there is none yet, entries were removed, the
    /// journal outgrew the base, or more changed than a record holds.
    pub fn journal_record(&mut self) -> Option<Record> {
        let d = &self.disk;
        let changed = self.by_seq.range(d.seq + 1..).count() + d.touched.len();
        if d.base.is_none()
            || d.full
            || changed > RECORD_MAX
            || d.log_bytes > d.base_bytes.max(LOG_COMPACT_MIN)
        {
            return None;
        }
        // Entries with new numbers, then those changed in place only (an entry changed both
        // ways has a new number).
        let renumbered = self.by_seq.range(d.seq + 1..).map(|(_, p)| &**p);
        let in_place = d
            .touched
            .iter()
            .map(|p| p.as_str())
            .filter(|p| self.entries.get(*p).is_some_and(|e| e.seq <= d.seq));
        let entries: Vec<&Entry> = renumbered
            .chain(in_place)
            .filter_map(|p| self.get(p))
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
    /// between the renames loses nothing).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        // Until both files are in place the journal on disk may continue another base: the
        // next save must be a whole one again if this one fails.
        self.disk.full = true;
        let tmp = path.with_extension("tmp");
        let f = crate::names::create_own(&tmp).at(&tmp)?;
        let mut w = BufWriter::with_capacity(64 << 10, f);
        let mut sum = Md5::new();
        let mut bytes = 0u64;
        let mut put = |w: &mut BufWriter<File>, b: &[u8]| -> Result<()> {
            sum.update(b);
            bytes += b.len() as u64;
            w.write_all(b).at(&tmp)
        };
        let mut head = Enc::default();
        head.bytes(MAGIC);
        head.u64(self.device);
        head.u64(self.seq);
        head.u64(self.entries.len() as u64);
        put(&mut w, &head.0)?;
        let mut x = Enc::default();
        for e in self.entries.values() {
            x.0.clear();
            Self::encode_local(&mut x, e);
            put(&mut w, &x.0)?;
        }
        let digest: Hash = sum.finalize().into();
        w.write_all(&digest).at(&tmp)?;
        let f = w
            .into_inner()
            .map_err(|e| Error::from(e.into_error()).at(&tmp))?;
        f.sync_all().at(&tmp)?;
        let log = log_path(path);
        let log_tmp = log.with_extension("log.tmp");
        let mut header = LOG_MAGIC.to_vec();
        header.extend_from_slice(&digest);
        crate::names::create_own(&log_tmp)
            .and_then(|mut f| {
                f.write_all(&header)?;
                f.sync_all()
            })
            .at(&log_tmp)?;
        fs::rename(&tmp, path).at(path)?;
        fs::rename(&log_tmp, &log).at(&log)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
        }
        self.disk = Disk {
            seq: self.seq,
            base: Some(digest),
            base_bytes: bytes + 16,
            log_bytes: LOG_HEADER,
            ..Disk::default()
        };
        Ok(())
    }

    /// Reads an index written by [`Index::save`], checking its digest, then the records of its
    /// journal that are whole and intact; one entry at a time so memory stays proportional to
    /// the index, not twice it.
    pub fn load(path: &Path) -> Result<Index> {
        let f = File::open(path).at(path)?;
        let len = f.metadata().at(path)?.len();
        let mut r = BufReader::with_capacity(64 << 10, f);
        let mut sum = Md5::new();
        let corrupt = |why: &str| Error::msg(format!("index is damaged ({why})")).at(path);
        let mut head = [0u8; 32];
        r.read_exact(&mut head)
            .map_err(|_| corrupt("short header"))?;
        sum.update(head);
        let mut d = Dec::new(&head);
        match d.take(8)? {
            m if m == MAGIC => {}
            m if m == OLD_MAGIC => return Err(corrupt("written by an older version of left")),
            _ => return Err(corrupt("not an index file")),
        }
        let mut ix = Index::new(d.u64()?);
        ix.seq = d.u64()?;
        let count = d.u64()?;
        if count > len / 8 {
            return Err(corrupt("entry count too large"));
        }
        let mut buf = Vec::new();
        for _ in 0..count {
            let mut n = [0u8; 4];
            r.read_exact(&mut n).map_err(|_| corrupt("truncated"))?;
            sum.update(n);
            let n = u32::from_be_bytes(n) as usize;
            if n as u64 > len || n > wire::MAX_FRAME {
                return Err(corrupt("entry too large"));
            }
            buf.resize(n, 0);
            r.read_exact(&mut buf).map_err(|_| corrupt("truncated"))?;
            sum.update(&buf);
            let e = Self::decode_local(&buf).map_err(|why| corrupt(&why))?;
            ix.insert_loaded(e);
        }
        let mut digest = [0u8; 16];
        r.read_exact(&mut digest)
            .map_err(|_| corrupt("truncated"))?;
        if digest[..] != sum.finalize()[..] {
            return Err(corrupt("checksum mismatch"));
        }
        ix.disk.base = Some(digest);
        ix.disk.base_bytes = len;
        let (applied, journal) = ix.replay(&log_path(path), digest);
        if journal == Journal::CutShort {
            warn!(
                "{}: the index journal ends in a damaged record (a crash while saving?); \
                 the changes before it are kept",
                path.display()
            );
        }
        ix.disk.log_bytes = applied;
        // A journal missing, continuing another base or damaged is not appended to: the next
        // save writes both files anew.
        ix.disk.full = journal != Journal::Whole;
        ix.disk.seq = ix.seq;
        Ok(ix)
    }

    /// Applies the journal's records, in order, up to the first that is not whole and intact.
    /// Returns the bytes applied and what the journal was.
    fn replay(&mut self, log: &Path, base: Hash) -> (u64, Journal) {
        let Ok(f) = File::open(log) else {
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
                self.insert_loaded(e);
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
            out.push(Self::decode_local(d.take(n).ok()?).ok()?);
        }
        d.end().ok()?;
        Some((seq, out))
    }
}

/// Appends a record to the journal beside the base file `path` and makes it durable.
pub fn append(path: &Path, r: &Record) -> Result<()> {
    let log = log_path(path);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .custom_flags(crate::names::O_NOFOLLOW)
        .open(&log)
        .at(&log)?;
    f.write_all(&r.bytes).at(&log)?;
    f.sync_data().at(&log)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(back.entries, ix.entries);
        assert_eq!(
            back.since(2).map(|e| e.path.as_str()).collect::<Vec<_>>(),
            vec!["gone"]
        );
        let all: Vec<&str> = back.since(0).map(|e| e.path.as_str()).collect();
        assert_eq!(all, vec!["a/b", "a", "gone"]);
        let mut back = back;
        back.put(Entry {
            path: "a/b".into(),
            ..Entry::default()
        });
        assert_eq!(
            back.since(3).map(|e| e.path.as_str()).collect::<Vec<_>>(),
            vec!["a/b"]
        );
        assert_eq!(back.since(0).count(), 3);
        assert_eq!(back.purge(|e| e.deleted), 1);
        assert_eq!(back.since(0).count(), 2);

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

    /// Saves the way the daemon does: a journal record if the index allows one, else whole.
    fn save_changes(ix: &mut Index, p: &Path) -> bool {
        match ix.journal_record() {
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
        assert_eq!(back.entries, ix.entries);
        assert_eq!(back.seq, ix.seq);
        assert_eq!(back.entries["f07"].stat, stat);
        assert_eq!(
            back.since(40).map(|e| e.path.as_str()).collect::<Vec<_>>(),
            vec!["f03", "new", "f04"]
        );
        assert!(!back.disk.full, "an intact journal is appended to");

        // A record cut short by a crash: the changes before it stay, it is not applied, and
        // the next save writes both files anew.
        let log = log_path(&p);
        let whole = fs::read(&log).unwrap();
        assert_eq!(back.disk.log_bytes, whole.len() as u64);
        fs::write(&log, &whole[..whole.len() - 3]).unwrap();
        let mut cut = Index::load(&p).unwrap();
        assert_eq!(cut.entries["f03"].blocks[..], [[200; 16]]);
        assert_eq!(
            cut.entries["f04"].blocks[..],
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
        assert_eq!(again.entries, cut.entries);
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
            assert_eq!(
                b.entries["f06"].blocks[..],
                [[6; 16]],
                "flip at {i} applied"
            );
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
        assert_eq!(b.entries["f06"].blocks[..], [[6; 16]]);
        assert!(b.disk.full);
        fs::write(&log, &good).unwrap();

        // Removals, and a journal larger than the base, make the next save a whole one.
        let mut ix = Index::load(&p).unwrap();
        assert_eq!(ix.entries["f06"].blocks[..], [[204; 16]]);
        ix.purge(|e| e.path == "f01");
        assert!(ix.journal_record().is_none());
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
        assert_eq!(Index::load(&p).unwrap().entries, ix.entries);
        fs::remove_dir_all(&dir).unwrap();
    }
}
