//! Big-endian values and the encoding of an index entry: one format for the wire protocol and
//! the index files (`proto::wire` frames entries with it; `store::index` writes them with it).

use crate::error::{Error, Result};
use crate::store::entry::{Entry, Hash, Kind, check_file_hash, check_shape};
use crate::store::names;
use crate::store::version::Version;

/// The largest entry encoded: one with the most blocks fits in a frame.
pub const MAX_ENTRY_BYTES: usize = (8 << 20) + (64 << 10);
/// Most devices one version vector may name.
pub const MAX_VERSION_PAIRS: usize = crate::store::version::MAX_DEVICES;
/// The largest version counter accepted: far past any time in microseconds (year 146,000),
/// far below where adding one would wrap.
pub const MAX_COUNTER: u64 = 1 << 62;

/// Appends big-endian values to a buffer.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A string with a u16 length; callers keep strings under 64 KiB (paths are checked).
    pub fn str(&mut self, s: &str) {
        let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        self.u16(b.len() as u16);
        self.bytes(b);
    }
}

/// Reads big-endian values from a slice; every read is bounds-checked.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::protocol(format!(
                "truncated: wanted {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.arr::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    pub fn hash(&mut self) -> Result<Hash> {
        self.arr()
    }
    pub fn str(&mut self) -> Result<String> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::protocol("name is not UTF-8"))
    }
    pub fn end(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::protocol(format!(
                "{} stray bytes at end of frame",
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Encodes an index entry (the part that travels; local bookkeeping stays home).
pub fn put_entry(e: &mut Enc, x: &Entry) {
    e.str(&x.path);
    e.u8(x.kind as u8);
    e.u8(u8::from(x.deleted));
    e.u64(x.size);
    e.u64(x.mtime as u64);
    e.u32(x.mtime_ns);
    e.u32(x.mode);
    e.u64(x.modified_by);
    let pairs = x.version.pairs();
    e.u16(pairs.len() as u16);
    for (d, c) in pairs {
        e.u64(*d);
        e.u64(*c);
    }
    e.u32(x.block_size);
    e.u32(x.blocks.len() as u32);
    for b in &x.blocks {
        e.bytes(b);
    }
    e.bytes(&x.file_hash);
}

/// Decodes and validates an index entry: the name is checked, counts are bounded by the bytes
/// actually present before anything is allocated, and the block list must fit the size.
pub fn get_entry(d: &mut Dec<'_>) -> Result<Entry> {
    let entry = get_entry_unhashed(d)?;
    check_file_hash(&entry)?;
    Ok(entry)
}

/// [`get_entry`] without checking the file hash against the block list: for entries of our
/// own index file, whose digest was checked when it was read or written.
pub fn get_entry_unhashed(d: &mut Dec<'_>) -> Result<Entry> {
    let path = d.str()?;
    names::check(&path)?;
    let kind = match d.u8()? {
        0 => Kind::File,
        1 => Kind::Dir,
        k => return Err(Error::protocol(format!("unknown entry kind {k}"))),
    };
    let deleted = match d.u8()? {
        0 => false,
        1 => true,
        f => return Err(Error::protocol(format!("bad entry flags {f}"))),
    };
    let size = d.u64()?;
    let mtime = d.u64()? as i64;
    let mtime_ns = d.u32()?;
    if mtime_ns >= 1_000_000_000 {
        return Err(Error::protocol("mtime nanoseconds out of range"));
    }
    let mode = d.u32()? & 0o7777;
    let modified_by = d.u64()?;
    let npairs = d.u16()? as usize;
    if npairs > MAX_VERSION_PAIRS || npairs * 16 > d.remaining() {
        return Err(Error::protocol("version vector too long"));
    }
    let mut pairs = Vec::with_capacity(npairs);
    for _ in 0..npairs {
        let (device, counter) = (d.u64()?, d.u64()?);
        // Counters count microseconds (about 2^51 now): one near the top of a u64 could no
        // longer be moved past, and every later edit of the file would get the same version.
        if counter > MAX_COUNTER {
            return Err(Error::protocol("version counter out of range"));
        }
        pairs.push((device, counter));
    }
    let block_size = d.u32()?;
    let nblocks = d.u32()? as usize;
    if nblocks.saturating_mul(16) > d.remaining() {
        return Err(Error::protocol("block list longer than the frame"));
    }
    let mut blocks = Vec::with_capacity(nblocks);
    for _ in 0..nblocks {
        blocks.push(d.hash()?);
    }
    let file_hash = d.hash()?;
    let entry = Entry {
        path,
        kind,
        deleted,
        size,
        mtime,
        mtime_ns,
        mode,
        modified_by,
        version: Version::from_pairs(pairs),
        block_size,
        blocks: blocks.into(),
        file_hash,
        ..Entry::default()
    };
    check_shape(&entry)?;
    Ok(entry)
}
