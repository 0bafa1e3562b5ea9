//! The index: what the share holds (per file its size, mtime, mode, block hashes, file hash and
//! version), persisted under the state directory so a restart re-hashes only what changed.

use crate::error::{Context, Error, Result};
pub use crate::hash::Hash;
use crate::version::Version;
use crate::wire::{self, Dec, Enc};
use md5::{Digest, Md5};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

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
    pub blocks: Vec<Hash>,
    /// The file's hash: the MD5 of `blocks` ([`crate::hash::list_hash`]).
    pub file_hash: Hash,
    // Local bookkeeping.
    /// XXH64 of each block as it is on disk (files of [`FAST_MIN_BLOCKS`] blocks or more, else
    /// empty): the scanner re-hashes with MD5 only the blocks whose XXH64 changed.
    pub fast: Vec<u64>,
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
    pub entries: BTreeMap<String, Entry>,
    /// Path of each entry by its sequence number, so that what changed since a given number is
    /// found without walking the whole index. Kept in step by `put`, `load` and `purge`.
    by_seq: BTreeMap<u64, String>,
}

const MAGIC: &[u8; 8] = b"LEFTIDX2";
/// The format before file hashes were derived from block lists: read as "rebuild".
const OLD_MAGIC: &[u8; 8] = b"LEFTIDX1";

impl Index {
    pub fn new(device: u64) -> Index {
        Index {
            device,
            ..Index::default()
        }
    }

    /// Stores an entry under a fresh sequence number.
    pub fn put(&mut self, mut e: Entry) {
        self.seq += 1;
        e.seq = self.seq;
        self.by_seq.insert(e.seq, e.path.clone());
        if let Some(old) = self.entries.insert(e.path.clone(), e) {
            self.by_seq.remove(&old.seq);
        }
    }

    /// Entries changed after `seq`, oldest change first.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &Entry> {
        self.by_seq
            .range(seq + 1..)
            .filter_map(|(_, p)| self.entries.get(p))
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
            self.entries.remove(p);
            self.by_seq.remove(s);
        }
        gone.len()
    }

    /// Writes the index atomically: a temp file, fsync, rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let f = File::create(&tmp).at(&tmp)?;
        let mut w = BufWriter::with_capacity(64 << 10, f);
        let mut sum = Md5::new();
        let mut put = |w: &mut BufWriter<File>, b: &[u8]| -> Result<()> {
            sum.update(b);
            w.write_all(b).at(&tmp)
        };
        let mut head = Enc::default();
        head.bytes(MAGIC);
        head.u64(self.device);
        head.u64(self.seq);
        head.u64(self.entries.len() as u64);
        put(&mut w, &head.0)?;
        for e in self.entries.values() {
            let mut x = Enc::default();
            x.u32(0);
            wire::put_entry(&mut x, e);
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
            let n = (x.0.len() - 4) as u32;
            x.0[..4].copy_from_slice(&n.to_be_bytes());
            put(&mut w, &x.0)?;
        }
        let digest = sum.finalize();
        w.write_all(&digest).at(&tmp)?;
        let f = w
            .into_inner()
            .map_err(|e| Error::from(e.into_error()).at(&tmp))?;
        f.sync_all().at(&tmp)?;
        fs::rename(&tmp, path).at(path)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
        }
        Ok(())
    }

    /// Reads an index written by [`Index::save`], checking its digest; one entry at a time so
    /// memory stays proportional to the index, not twice it.
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
            let mut d = Dec::new(&buf);
            let mut e = wire::get_entry(&mut d).map_err(|e| corrupt(&e.to_string()))?;
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
                return Err(corrupt("bad block checksums"));
            }
            e.fast = (0..nfast).map(|_| d.u64()).collect::<Result<_>>()?;
            d.end().map_err(|_| corrupt("entry has stray bytes"))?;
            ix.by_seq.insert(e.seq, e.path.clone());
            ix.entries.insert(e.path.clone(), e);
        }
        let mut digest = [0u8; 16];
        r.read_exact(&mut digest)
            .map_err(|_| corrupt("truncated"))?;
        if digest[..] != sum.finalize()[..] {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(ix)
    }
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
            blocks: vec![[1; 16]],
            file_hash: crate::hash::list_hash(&[[1; 16]]),
            fast: vec![0x1234_5678_9abc_def0],
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
}
