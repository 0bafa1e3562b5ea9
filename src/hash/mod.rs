//! Hashing: MD5 of blocks (what peers verify), XXH64 of blocks (a fast local check of which
//! blocks changed), and a file's hash, the MD5 of its block list. Files are hashed on every core
//! with one block buffer per thread, so memory stays flat whatever the file size.

pub mod md5x;

use md5::{Digest, Md5};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub type Hash = [u8; 16];

pub fn md5(data: &[u8]) -> Hash {
    Md5::digest(data).into()
}

pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short printable form of a device id, used in logs and conflict names.
pub fn short_id(device: u64) -> String {
    format!("{:07X}", device >> 36)
}

/// A file's hash: the MD5 of its blocks' MD5s in order. Every block is verified on arrival, so
/// this identifies the content as well as an MD5 of the bytes would, and costs nothing to derive.
pub fn list_hash(blocks: &[Hash]) -> Hash {
    let mut h = Md5::new();
    for b in blocks {
        h.update(b);
    }
    h.finalize().into()
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn xround(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn xmerge(acc: u64, v: u64) -> u64 {
    (acc ^ xround(0, v)).wrapping_mul(P1).wrapping_add(P4)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// XXH64 with seed 0 (written from the published specification). Not a cryptographic hash: it
/// only tells which blocks of our own files changed, and which 4 KiB sub-blocks of a changed
/// block differ from our old copy — anything it lets through is still checked by MD5.
pub fn xxh64(data: &[u8]) -> u64 {
    let mut v = XXH_INIT;
    let rest = stripes(&mut v, data);
    xxh_finish(&v, data.len() as u64, rest)
}

const XXH_INIT: [u64; 4] = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];

/// Folds the whole 32-byte stripes of `data` into the accumulators; returns what is left.
fn stripes<'a>(v: &mut [u64; 4], data: &'a [u8]) -> &'a [u8] {
    let mut it = data.chunks_exact(32);
    for s in &mut it {
        v[0] = xround(v[0], le64(&s[0..]));
        v[1] = xround(v[1], le64(&s[8..]));
        v[2] = xround(v[2], le64(&s[16..]));
        v[3] = xround(v[3], le64(&s[24..]));
    }
    it.remainder()
}

/// The digest of `len` bytes whose stripes made `v`, `rest` (under 32 bytes) being the tail.
fn xxh_finish(v: &[u64; 4], len: u64, mut rest: &[u8]) -> u64 {
    let mut h = if len >= 32 {
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for &x in v {
            h = xmerge(h, x);
        }
        h
    } else {
        P5
    };
    h = h.wrapping_add(len);
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        h = (h ^ xround(0, le64(w)))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P4);
    }
    rest = words.remainder();
    if rest.len() >= 4 {
        let k = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        h = (h ^ k.wrapping_mul(P1))
            .rotate_left(23)
            .wrapping_mul(P2)
            .wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h = (h ^ (b as u64).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// XXH64 of bytes given in pieces: the same digest as [`xxh64`] of them all at once. The index
/// file's checksum, where MD5 cost as much as writing the file.
pub struct Xxh64 {
    v: [u64; 4],
    len: u64,
    tail: [u8; 32],
}

impl Default for Xxh64 {
    fn default() -> Self {
        Xxh64 {
            v: XXH_INIT,
            len: 0,
            tail: [0; 32],
        }
    }
}

impl Xxh64 {
    pub fn update(&mut self, mut data: &[u8]) {
        let held = (self.len % 32) as usize;
        self.len += data.len() as u64;
        if held > 0 {
            let n = data.len().min(32 - held);
            self.tail[held..held + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            if held + n < 32 {
                return;
            }
            let stripe = self.tail;
            stripes(&mut self.v, &stripe);
        }
        let rest = stripes(&mut self.v, data);
        self.tail[..rest.len()].copy_from_slice(rest);
    }

    /// Bytes given so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn digest(&self) -> u64 {
        xxh_finish(&self.v, self.len, &self.tail[..(self.len % 32) as usize])
    }
}

/// A rolling checksum of a window (rsync's weak sum: the byte sum and the position-weighted sum,
/// 16 bits each), updated in O(1) as the window slides one byte. It only finds candidates for
/// shifted data, which XXH64 and then the block's MD5 confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roll {
    a: u32,
    b: u32,
    len: u32,
}

impl Roll {
    pub fn new(window: &[u8]) -> Roll {
        // 16 bytes at a time where the CPU has SSE2, the rest one by one: for a byte in the
        // tail of `t` bytes, len - i is its weight within the tail; a byte before it weighs
        // `t` more than within the whole 16-byte chunks.
        let whole = window.len() / 16 * 16;
        let (a, b) = sums16(&window[..whole]);
        let t = (window.len() - whole) as u32;
        let (mut ta, mut tb) = (0u32, 0u32);
        for (i, &x) in window[whole..].iter().enumerate() {
            ta = ta.wrapping_add(x as u32);
            tb = tb.wrapping_add((t - i as u32).wrapping_mul(x as u32));
        }
        Roll {
            a: a.wrapping_add(ta),
            b: b.wrapping_add(t.wrapping_mul(a)).wrapping_add(tb),
            len: window.len() as u32,
        }
    }

    /// Slides the window: `out` leaves at the front, `inn` enters at the back.
    pub fn roll(&mut self, out: u8, inn: u8) {
        self.a = self.a.wrapping_sub(out as u32).wrapping_add(inn as u32);
        self.b = self
            .b
            .wrapping_sub(self.len.wrapping_mul(out as u32))
            .wrapping_add(self.a);
    }

    pub fn sum(&self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
}

/// The rolling sums `(a, b)` of a window whose length is a multiple of 16. With SSE2: per
/// 16-byte chunk its byte sum (psadbw) and its sum weighted 16..1 (pmaddwd); a chunk's bytes
/// weigh 16 more for each chunk after it, which the running sum of the chunks before each one
/// adds up.
#[cfg(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "sse2"
))]
fn sums16(w: &[u8]) -> (u32, u32) {
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;
    let lanes = |v: __m128i| -> [u32; 4] {
        let mut out = [0u32; 4];
        // SAFETY: an unaligned store of 16 bytes into a 16-byte array.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), v) };
        out
    };
    // SAFETY (for the block): SSE2 is enabled for this build; every load reads one whole chunk.
    unsafe {
        let zero = _mm_setzero_si128();
        let w_lo = _mm_setr_epi16(16, 15, 14, 13, 12, 11, 10, 9);
        let w_hi = _mm_setr_epi16(8, 7, 6, 5, 4, 3, 2, 1);
        let (mut before, mut acc, mut weighted) = (zero, zero, zero);
        for c in w.chunks_exact(16) {
            let x = _mm_loadu_si128(c.as_ptr().cast());
            acc = _mm_add_epi64(acc, before);
            before = _mm_add_epi64(before, _mm_sad_epu8(x, zero));
            let lo = _mm_madd_epi16(_mm_unpacklo_epi8(x, zero), w_lo);
            let hi = _mm_madd_epi16(_mm_unpackhi_epi8(x, zero), w_hi);
            weighted = _mm_add_epi32(weighted, _mm_add_epi32(lo, hi));
        }
        // The 64-bit sums sit in 32-bit lanes 0 and 2; only their low halves count (mod 2^32).
        let (s, c, v) = (lanes(before), lanes(acc), lanes(weighted));
        let a = s[0].wrapping_add(s[2]);
        let runs = c[0].wrapping_add(c[2]);
        let own = v.iter().fold(0u32, |x, y| x.wrapping_add(*y));
        (a, runs.wrapping_mul(16).wrapping_add(own))
    }
}

#[cfg(not(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "sse2"
)))]
fn sums16(w: &[u8]) -> (u32, u32) {
    let len = w.len() as u32;
    let (mut a, mut b) = (0u32, 0u32);
    for (i, &x) in w.iter().enumerate() {
        a = a.wrapping_add(x as u32);
        b = b.wrapping_add((len - i as u32).wrapping_mul(x as u32));
    }
    (a, b)
}

/// What a file held when it was last hashed, for [`file_blocks`] to skip blocks that did not
/// change: a block whose length and XXH64 are the same keeps its MD5.
#[derive(Clone, Copy)]
pub struct Previous<'a> {
    pub size: u64,
    pub blocks: &'a [Hash],
    pub fast: &'a [u64],
}

/// The hashes of a file's blocks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Blocks {
    pub md5: Vec<Hash>,
    pub fast: Vec<u64>,
    /// Blocks whose MD5 had to be computed (the others were unchanged since `Previous`).
    pub hashed: usize,
}

/// One thread's result for a run of blocks: the first block's index, and per block its MD5, its
/// XXH64, and whether the MD5 had to be computed.
type Chunk = (usize, Vec<(Hash, u64, bool)>);

/// Files this large are hashed by several threads.
const PARALLEL_MIN: u64 = 4 << 20;
/// Bytes a thread takes at a time: large enough for readahead, small enough to share the work.
const CHUNK_BYTES: u64 = 4 << 20;
/// Bytes of blocks a thread reads and hashes together (see [`crate::hash::md5x`]).
const GROUP_BYTES: u64 = 1 << 20;

/// The MD5 and XXH64 of every `block_size` block of `size` bytes of `f`, on up to as many
/// threads as there are cores. Fails with `UnexpectedEof` if the file is shorter than `size`,
/// and as soon as `same` says the file changed (it is asked before each chunk).
pub fn file_blocks(
    f: &File,
    size: u64,
    block_size: u32,
    prev: Option<Previous<'_>>,
    same: &(dyn Fn() -> bool + Sync),
) -> io::Result<Blocks> {
    let job = Hashing::new(f, size, block_size, prev, same);
    let threads = if size < PARALLEL_MIN {
        1
    } else {
        crate::sys::limits::cpus().clamp(1, 4).min(job.nchunks)
    };
    let parts = job.run(threads);
    if let Some(e) = job.failed.into_inner().ok().flatten() {
        return Err(e);
    }
    gather(parts, job.nblocks)
}

/// One file being hashed: what every thread shares (the file, its layout, the next chunk to
/// take, the first failure).
struct Hashing<'a> {
    f: &'a File,
    size: u64,
    bs: u64,
    prev: Option<Previous<'a>>,
    same: &'a (dyn Fn() -> bool + Sync),
    nblocks: usize,
    per_chunk: usize,
    nchunks: usize,
    /// Blocks whose MD5s are computed side by side: as many as the CPU has lanes, read together.
    group: usize,
    next: AtomicUsize,
    failed: Mutex<Option<io::Error>>,
}

impl<'a> Hashing<'a> {
    /// Cuts `size` bytes into blocks, chunks (a thread's share at a time) and groups.
    fn new(
        f: &'a File,
        size: u64,
        block_size: u32,
        prev: Option<Previous<'a>>,
        same: &'a (dyn Fn() -> bool + Sync),
    ) -> Hashing<'a> {
        let bs = block_size as u64;
        let nblocks = size.div_ceil(bs) as usize;
        let per_chunk = (CHUNK_BYTES / bs).max(1) as usize;
        Hashing {
            f,
            size,
            bs,
            prev,
            same,
            nblocks,
            per_chunk,
            nchunks: nblocks.div_ceil(per_chunk),
            group: crate::hash::md5x::lanes().min((GROUP_BYTES / bs).max(1) as usize),
            next: AtomicUsize::new(0),
            failed: Mutex::new(None),
        }
    }

    /// Runs [`Hashing::work`] on `threads` threads (this one among them) and joins their chunks;
    /// a thread that died leaves none.
    fn run(&self, threads: usize) -> Vec<Chunk> {
        if threads <= 1 {
            return self.work();
        }
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|_| s.spawn(|| self.work())).collect();
            let mut all = self.work();
            for h in helpers {
                match h.join() {
                    Ok(v) => all.extend(v),
                    Err(_) => all.clear(),
                }
            }
            all
        })
    }

    /// One thread's loop: takes whole chunks until none is left or one failed, and hands them
    /// back as (first block, hashes).
    fn work(&self) -> Vec<Chunk> {
        let mut mine = Vec::new();
        // No larger than the file: a small file gets a small buffer (musl maps and unmaps a
        // 64 KiB one for each file, costing more than hashing it).
        let mut buf = vec![0u8; (self.bs * self.group as u64).min(self.size) as usize];
        let mut sums = Vec::with_capacity(self.group);
        loop {
            let c = self.next.fetch_add(1, Ordering::Relaxed);
            if c >= self.nchunks || self.failed.lock().map_or(true, |g| g.is_some()) {
                return mine;
            }
            if c > 0 && !(self.same)() {
                self.fail(io::Error::other("file changed during hashing"));
                return mine;
            }
            let first = c * self.per_chunk;
            match self.chunk(first, &mut buf, &mut sums) {
                Ok(got) => mine.push((first, got)),
                Err(e) => {
                    self.fail(e);
                    return mine;
                }
            }
        }
    }

    /// Records `e` as the failure, unless one was recorded first.
    fn fail(&self, e: io::Error) {
        if let Ok(mut g) = self.failed.lock() {
            g.get_or_insert(e);
        }
    }

    /// Reads and hashes the chunk starting at block `first`, a group of blocks at a time.
    fn chunk(
        &self,
        first: usize,
        buf: &mut [u8],
        sums: &mut Vec<Hash>,
    ) -> io::Result<Vec<(Hash, u64, bool)>> {
        let last = (first + self.per_chunk).min(self.nblocks);
        let mut got = Vec::with_capacity(last - first);
        let mut i = first;
        while i < last {
            let end = (i + self.group).min(last);
            let off = i as u64 * self.bs;
            let n = ((end as u64 * self.bs).min(self.size) - off) as usize;
            self.f.read_exact_at(&mut buf[..n], off)?;
            self.group_hashes(i, &buf[..n], sums, &mut got);
            i = end;
        }
        Ok(got)
    }

    /// Hashes the blocks of `data` (block `i` onwards): each block's XXH64 tells whether its
    /// MD5 is known; the others are hashed side by side. Appends (MD5, XXH64, computed) to `got`.
    fn group_hashes(
        &self,
        i: usize,
        data: &[u8],
        sums: &mut Vec<Hash>,
        got: &mut Vec<(Hash, u64, bool)>,
    ) {
        const MAX_LANES: usize = crate::hash::md5x::MAX_LANES;
        let mut fast = [0u64; MAX_LANES];
        let mut known = [None; MAX_LANES];
        let mut todo: [&[u8]; MAX_LANES] = [&[]; MAX_LANES];
        let mut ntodo = 0;
        let mut count = 0;
        for (k, b) in data.chunks(self.bs as usize).enumerate() {
            fast[k] = xxh64(b);
            known[k] = unchanged(self.prev, self.size, self.bs, i + k, fast[k]);
            if known[k].is_none() {
                todo[ntodo] = b;
                ntodo += 1;
            }
            count = k + 1;
        }
        sums.clear();
        crate::hash::md5x::md5_each(&todo[..ntodo], sums);
        let mut computed = sums.iter();
        for k in 0..count {
            got.push(match known[k] {
                Some(h) => (h, fast[k], false),
                None => (computed.next().copied().unwrap_or_default(), fast[k], true),
            });
        }
    }
}

/// Block `i`'s MD5 from `prev`, if the block has the same length (in a file of `size` bytes cut
/// into `bs`-byte blocks) and the same XXH64 `fast` as then.
fn unchanged(prev: Option<Previous<'_>>, size: u64, bs: u64, i: usize, fast: u64) -> Option<Hash> {
    let p = prev?;
    let old_len = p.size.saturating_sub(i as u64 * bs).min(bs);
    let new_len = size.saturating_sub(i as u64 * bs).min(bs);
    (old_len == new_len && p.fast.get(i) == Some(&fast))
        .then(|| p.blocks.get(i).copied())
        .flatten()
}

/// Puts the threads' chunks in block order; fails unless they cover all `nblocks` blocks.
fn gather(parts: Vec<Chunk>, nblocks: usize) -> io::Result<Blocks> {
    let mut out = Blocks {
        md5: vec![[0; 16]; nblocks],
        fast: vec![0; nblocks],
        hashed: 0,
    };
    let mut seen = 0;
    for (first, got) in parts {
        for (k, (h, fast, hashed)) in got.into_iter().enumerate() {
            out.md5[first + k] = h;
            out.fast[first + k] = fast;
            out.hashed += usize::from(hashed);
            seen += 1;
        }
    }
    if seen != nblocks {
        return Err(io::Error::other("a hashing thread failed"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("left-hash-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn blocks_and_list_hash() {
        let dir = temp("blocks");
        // Sizes around one block, and past PARALLEL_MIN so several threads share the work.
        for size in [
            0usize,
            1,
            4096,
            4097,
            5 * 4096 + 3,
            40 * 4096,
            (5 << 20) + 17,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.join(format!("f{size}"));
            File::create(&p).unwrap().write_all(&data).unwrap();
            let b =
                file_blocks(&File::open(&p).unwrap(), size as u64, 4096, None, &|| true).unwrap();
            let want: Vec<Hash> = data.chunks(4096).map(md5).collect();
            assert_eq!(b.md5, want);
            assert_eq!(b.fast, data.chunks(4096).map(xxh64).collect::<Vec<_>>());
            assert_eq!(b.hashed, want.len());
            // A file shorter than announced is an error, not a short list.
            assert!(
                file_blocks(
                    &File::open(&p).unwrap(),
                    size as u64 + 1,
                    4096,
                    None,
                    &|| true
                )
                .is_err()
            );
        }
        let mut two = md5(b"a").to_vec();
        two.extend_from_slice(&md5(b"b"));
        assert_eq!(list_hash(&[md5(b"a"), md5(b"b")]), md5(&two));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unchanged_blocks_keep_their_md5() {
        let dir = temp("prev");
        let p = dir.join("f");
        let bs = 4096u32;
        let mut data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let old = file_blocks(
            &File::open(&p).unwrap(),
            data.len() as u64,
            bs,
            None,
            &|| true,
        )
        .unwrap();
        // Change blocks 3 and 1000, and grow the file by half a block.
        data[3 * 4096 + 5] ^= 1;
        data[1000 * 4096] ^= 1;
        data.extend_from_slice(&[9; 2048]);
        std::fs::write(&p, &data).unwrap();
        // A wrong MD5 kept for an unchanged block proves it was taken over, not recomputed.
        let mut kept = old.md5.clone();
        kept[7] = [0xee; 16];
        let prev = Previous {
            size: (6 << 20) as u64,
            blocks: &kept,
            fast: &old.fast,
        };
        let f = File::open(&p).unwrap();
        let new = file_blocks(&f, data.len() as u64, bs, Some(prev), &|| true).unwrap();
        assert_eq!(new.hashed, 3, "blocks 3 and 1000, and the new last block");
        assert_eq!(new.md5[7], [0xee; 16]);
        assert_eq!(new.md5[3], md5(&data[3 * 4096..4 * 4096]));
        assert_eq!(new.md5[1000], md5(&data[1000 * 4096..1001 * 4096]));
        assert_eq!(*new.md5.last().unwrap(), md5(&data[6 << 20..]));
        assert_eq!(new.md5.len(), old.md5.len() + 1);
        // A file seen changing stops the hashing with an error.
        assert!(file_blocks(&f, data.len() as u64, bs, None, &|| false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unchanged_block_table() {
        // Previous: 10 bytes in 4-byte blocks (4, 4, 2), XXH64s 1, 2, 3.
        let blocks = [[1u8; 16], [2; 16], [3; 16]];
        let prev = Some(Previous {
            size: 10,
            blocks: &blocks,
            fast: &[1, 2, 3],
        });
        // (previous, new size, block, its XXH64) -> MD5 kept
        type Case<'a> = (Option<Previous<'a>>, u64, usize, u64, Option<Hash>);
        let cases: &[Case] = &[
            (None, 10, 0, 1, None),
            (prev, 10, 0, 1, Some([1; 16])),
            (prev, 10, 1, 2, Some([2; 16])),
            (prev, 10, 1, 9, None),
            (prev, 10, 2, 3, Some([3; 16])),
            // The last block grew (2 -> 3 bytes), or a full block became the last and shorter.
            (prev, 11, 2, 3, None),
            (prev, 7, 1, 2, None),
            // A block the previous version did not have.
            (prev, 14, 3, 3, None),
            // Shrunk past a block: block 0 is still 4 bytes.
            (prev, 4, 0, 1, Some([1; 16])),
        ];
        for &(p, size, i, fast, want) in cases {
            assert_eq!(
                unchanged(p, size, 4, i, fast),
                want,
                "size {size} block {i}"
            );
        }
    }

    #[test]
    fn gather_table() {
        let h = |b: u8| ([b; 16], b as u64, b.is_multiple_of(2));
        // (chunks as (first block, block bytes), blocks) -> (MD5 bytes in order, hashed) or error
        type Case<'a> = (&'a [(usize, &'a [u8])], usize, Option<(&'a [u8], usize)>);
        let cases: &[Case] = &[
            (&[], 0, Some((&[], 0))),
            (&[(0, &[1, 2])], 2, Some((&[1, 2], 1))),
            // Out of order, as threads finish.
            (&[(2, &[4]), (0, &[1, 3])], 3, Some((&[1, 3, 4], 1))),
            // A thread's chunks missing.
            (&[(0, &[1, 2])], 3, None),
            (&[], 1, None),
        ];
        for &(parts, n, want) in cases {
            let parts: Vec<Chunk> = parts
                .iter()
                .map(|&(first, bs)| (first, bs.iter().map(|&b| h(b)).collect()))
                .collect();
            let got = gather(parts, n);
            match want {
                None => assert!(got.is_err(), "{n} blocks"),
                Some((md5s, hashed)) => {
                    let got = got.unwrap();
                    let want: Vec<Hash> = md5s.iter().map(|&b| [b; 16]).collect();
                    assert_eq!(got.md5, want);
                    assert_eq!(got.fast, md5s.iter().map(|&b| b as u64).collect::<Vec<_>>());
                    assert_eq!(got.hashed, hashed);
                }
            }
        }
    }

    #[test]
    fn rolling_sum_matches_the_sum_of_each_window() {
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let w = 4096;
        let mut r = Roll::new(&data[..w]);
        for p in 1..data.len() - w {
            r.roll(data[p - 1], data[p + w - 1]);
            assert_eq!(r, Roll::new(&data[p..p + w]), "at {p}");
        }
        // Against the definition, for every tail length and across byte values.
        for len in (0..200).chain([4095, 4096, 4097, 65536]) {
            let w: Vec<u8> = (0..len as u32)
                .map(|i| (i.wrapping_mul(40503) >> 3) as u8 | (0x80 * (i % 3 == 0) as u8))
                .collect();
            let (mut a, mut b) = (0u32, 0u32);
            for (i, &x) in w.iter().enumerate() {
                a = a.wrapping_add(x as u32);
                b = b.wrapping_add((len as u32 - i as u32).wrapping_mul(x as u32));
            }
            assert_eq!(
                Roll::new(&w).sum(),
                (a & 0xffff) | (b << 16),
                "length {len}"
            );
            assert_eq!((Roll::new(&w).a, Roll::new(&w).b), (a, b), "length {len}");
        }
        // rsync's definition, for a window of three bytes.
        let r = Roll::new(&[1, 2, 3]);
        assert_eq!(r.sum(), (1 + 2 + 3) | ((3 + 2 * 2 + 3) << 16));
    }

    #[test]
    fn known_digests() {
        assert_eq!(hex(&md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        // XXH64 reference values (python-xxhash), across every tail length path.
        let long: Vec<u8> = (0..1280).map(|i| i as u8).collect();
        for (data, want) in [
            (&b""[..], 0xef46db3751d8e999u64),
            (b"a", 0xd24ec4f1a98c6e5b),
            (b"abc", 0x44bc2cf5ad770999),
            (&[b'x'; 31], 0x60dd0d01083b99f0),
            (&[b'y'; 32], 0x64da1f1d3495ce66),
            (&[b'z'; 33], 0xc5241253c64e0268),
            (&long, 0xafc184ad7938a354),
        ] {
            assert_eq!(xxh64(data), want, "length {}", data.len());
        }
    }

    #[test]
    fn xxh64_in_pieces_is_xxh64_at_once() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for cut in [0, 1, 5, 31, 32, 33, 63, 64, 100, 999, 1000] {
            for piece in [1, 3, 32, 40, 1000] {
                let mut x = Xxh64::default();
                x.update(&data[..cut]);
                for p in data[cut..].chunks(piece) {
                    x.update(p);
                }
                assert_eq!(x.digest(), xxh64(&data), "cut {cut}, pieces of {piece}");
            }
        }
        assert_eq!(Xxh64::default().digest(), xxh64(b""));
    }
}
