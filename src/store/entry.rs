//! An entry of the index: what one path holds (a file with its blocks, a folder, or a
//! tombstone), its version, and what is only local (its stat and block checksums); the rules an
//! entry's shape follows, and the block size for a file.

use crate::error::{Error, Result};
pub use crate::hash::Hash;
use crate::store::version::Version;
use std::fs;

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
            // Permission bits only: set-uid, set-gid and sticky bits are neither synced
            // nor taken from peers.
            mode: md.mode() & 0o777,
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
}

impl Entry {
    /// The mode bits a peer's entry may set: permissions only, never set-uid, set-gid or sticky.
    pub fn file_mode(&self) -> u32 {
        self.mode & 0o777
    }

    /// A folder's mode from a peer's entry: its permissions, and always ours to enter and change.
    pub fn dir_mode(&self) -> u32 {
        self.mode & 0o777 | 0o700
    }

    /// What the entry takes in memory, everything it holds counted: the entry itself, its name
    /// (twice: it is also the key of the map holding it) and the map's node, its block hashes
    /// and their XXH64s, and its version vector.
    pub fn mem_cost(&self) -> usize {
        std::mem::size_of::<Entry>()
            + std::mem::size_of::<String>()
            + 64
            + 2 * self.path.len()
            + 16 * self.blocks.len()
            + 8 * self.fast.len()
            + 16 * self.version.pairs().len()
    }

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

    /// Whether a peer may ask for `len` bytes at `offset` of this entry: a live file's block
    /// `hash` at its own offset and length, or (`any`) any range of at most one block inside
    /// the file. A folder or a tombstone holds nothing (and has no block size).
    pub fn holds(&self, offset: u64, len: u32, hash: &Hash, any: bool) -> bool {
        let bs = self.block_size as u64;
        if !self.is_file() || bs == 0 {
            return false;
        }
        let Some(end) = offset.checked_add(len as u64) else {
            return false;
        };
        if any {
            return len as u64 <= bs && end <= self.size;
        }
        let Ok(i) = usize::try_from(offset / bs) else {
            return false;
        };
        offset.is_multiple_of(bs)
            && self.blocks.get(i) == Some(hash)
            && offset < self.size
            && self.block_range(i).1 == len as usize
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

/// Checks that a file's hash is the hash of its block list (for entries from peers and from
/// disk; [`check_shape`] checks the rest).
pub fn check_file_hash(e: &Entry) -> Result<()> {
    if e.is_file() && crate::hash::list_hash(&e.blocks) != e.file_hash {
        return Err(Error::protocol(format!(
            "{}: the file hash does not match its blocks",
            e.path
        )));
    }
    Ok(())
}

/// Checks that an entry's block list fits its size.
pub fn check_shape(e: &Entry) -> Result<()> {
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
    Ok(())
}
