//! The request pipe of a pull: block requests in flight matched to their responses, and delta
//! transfer of changed blocks. When we hold an old version of a block, the peer sends a rolling
//! checksum and the XXH64 of each 4 KiB sub-block of the new one; each sub-block is looked for in
//! our old version — at the same offset, at the offset where the last shifted data was found, or
//! (when most of a block is missing) by rolling the checksum over 64 KiB either side, which finds
//! data moved by an insertion or a deletion — and only what is found nowhere crosses the wire.
//! Sub-block hashes only pick what to fetch: the assembled block is checked against its MD5.

use crate::error::{Error, Result};
use crate::hash::{Roll, xxh64};
use crate::proto::wire::{
    self, ANY_HASH, Msg, NOT_A_BLOCK, Request, Response, SUB_BLOCK, SUB_HASH_BYTES, Status,
};
use crate::store::entry::Entry;
use crate::sync::link::{Answer, Link};
use crate::sync::model::Out;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// How long to wait for a response before the connection is given up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// How far either side of the expected place shifted data is looked for.
pub const SEARCH: u64 = 64 << 10;
/// Searches in a row that found nothing before a file stops searching (a rewrite, not a shift).
const SEARCH_MISSES: u32 = 8;

/// One sub-block of a new block, as the peer describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    pub weak: u32,
    pub strong: u64,
}

impl Sub {
    pub fn of(data: &[u8]) -> Sub {
        Sub {
            weak: Roll::new(data).sum(),
            strong: xxh64(data),
        }
    }
}

/// Parses a SubHashes answer for a block of `len` bytes.
pub fn parse_subs(data: &[u8], len: usize) -> Option<Vec<Sub>> {
    if data.len() != len.div_ceil(SUB_BLOCK) * SUB_HASH_BYTES {
        return None;
    }
    let subs = data
        .chunks_exact(SUB_HASH_BYTES)
        .map(|c| {
            let mut w = [0u8; 4];
            let mut h = [0u8; 8];
            w.copy_from_slice(&c[..4]);
            h.copy_from_slice(&c[4..]);
            Sub {
                weak: u32::from_be_bytes(w),
                strong: u64::from_be_bytes(h),
            }
        })
        .collect();
    Some(subs)
}

/// Where our old data of a sub-block was found: at this offset of the old file.
pub type Found = Option<u64>;

/// The outcome of looking for a new block's sub-blocks in our old data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BlockPlan {
    /// Per sub-block: where the old file holds it, or `None` (fetch it).
    pub found: Vec<Found>,
    /// The shift (old offset − new offset) of the last sub-block found away from its place.
    pub shift: Option<i64>,
    /// Whether the rolling search ran, and how many sub-blocks it found.
    pub searched: bool,
    pub by_search: usize,
}

/// Most runs one block is fetched in: every run is a request, and a peer accepts only so many
/// outstanding (a block of 8 MiB could otherwise need 1024).
pub const MAX_RUNS: usize = 8;

impl BlockPlan {
    /// The ranges of the block (offset, length) to fetch, merged where they touch, and then
    /// across the smallest gaps until there are at most [`MAX_RUNS`].
    pub fn runs(&self, len: usize) -> Vec<(usize, usize)> {
        let mut runs = self.exact_runs(len);
        while runs.len() > MAX_RUNS {
            let Some(i) =
                (0..runs.len() - 1).min_by_key(|&i| runs[i + 1].0 - (runs[i].0 + runs[i].1))
            else {
                break;
            };
            let (next_at, next_len) = runs.remove(i + 1);
            runs[i].1 = next_at + next_len - runs[i].0;
        }
        runs
    }

    fn exact_runs(&self, len: usize) -> Vec<(usize, usize)> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for (k, f) in self.found.iter().enumerate() {
            let start = k * SUB_BLOCK;
            let end = (start + SUB_BLOCK).min(len);
            if f.is_some() || start >= end {
                continue;
            }
            match runs.last_mut() {
                Some((s, l)) if *s + *l == start => *l += end - start,
                _ => runs.push((start, end - start)),
            }
        }
        runs
    }
}

/// Looks for the sub-blocks `subs` of the new block at `off` (length `len`) in `old`, a window of
/// our old file starting at offset `base`: at the same offset, then shifted by `shift`, then —
/// with `search`, when half or more of the block's whole sub-blocks are still missing — by
/// rolling checksum over the whole window.
pub fn plan_block(
    old: &[u8],
    base: u64,
    off: u64,
    len: usize,
    subs: &[Sub],
    shift: i64,
    search: bool,
) -> BlockPlan {
    let (mut plan, whole) = look_in_place(old, base, off, len, subs, shift);
    let missing: Vec<usize> = (0..subs.len())
        .filter(|&k| plan.found[k].is_none() && len.saturating_sub(k * SUB_BLOCK) >= SUB_BLOCK)
        .collect();
    if !search || missing.is_empty() || missing.len() * 2 < whole || old.len() < SUB_BLOCK {
        return plan;
    }
    plan.searched = true;
    roll_search(old, base, off, subs, &missing, &mut plan);
    plan
}

/// Looks for each sub-block at its own offset, then shifted by `shift`; returns what was found
/// and how many of the sub-blocks are whole ([`SUB_BLOCK`] bytes).
fn look_in_place(
    old: &[u8],
    base: u64,
    off: u64,
    len: usize,
    subs: &[Sub],
    shift: i64,
) -> (BlockPlan, usize) {
    let slice = |pos: i64, n: usize| -> Option<&[u8]> {
        let at = usize::try_from(pos.checked_sub(base as i64)?).ok()?;
        old.get(at..at.checked_add(n)?)
    };
    let mut plan = BlockPlan {
        found: vec![None; subs.len()],
        ..BlockPlan::default()
    };
    let mut whole = 0;
    for (k, sub) in subs.iter().enumerate() {
        let start = (off + (k * SUB_BLOCK) as u64) as i64;
        let n = SUB_BLOCK.min(len.saturating_sub(k * SUB_BLOCK));
        whole += usize::from(n == SUB_BLOCK);
        for s in [0, shift] {
            let Some(at) = start.checked_add(s) else {
                continue;
            };
            if plan.found[k].is_none() && slice(at, n).is_some_and(|d| xxh64(d) == sub.strong) {
                plan.found[k] = Some(at as u64);
                if s != 0 {
                    plan.shift = Some(s);
                }
            }
        }
    }
    (plan, whole)
}

/// Rolls the weak checksum over every window of `old` (our old file from `base`) looking for the
/// sub-blocks `missing` of the block at `off`, until all are found; records them in `plan`.
fn roll_search(
    old: &[u8],
    base: u64,
    off: u64,
    subs: &[Sub],
    missing: &[usize],
    plan: &mut BlockPlan,
) {
    let Some(first) = old.get(..SUB_BLOCK) else {
        return;
    };
    let filter = weak_filter(subs, missing);
    let mut left = missing.len();
    let mut roll = Roll::new(first);
    let mut p = 0;
    loop {
        let w = roll.sum();
        let bit = w as usize & 0xffff;
        if filter[bit / 64] & (1 << (bit % 64)) != 0 {
            let at = base + p as u64;
            left -= match_window(&old[p..p + SUB_BLOCK], w, at, off, subs, missing, plan);
            if left == 0 {
                break;
            }
        }
        if p + SUB_BLOCK >= old.len() {
            break;
        }
        roll.roll(old[p], old[p + SUB_BLOCK]);
        p += 1;
    }
}

/// A 64 Kibit filter on the low bits of the weak checksums of the sub-blocks `missing`: it
/// rejects most windows at once.
fn weak_filter(subs: &[Sub], missing: &[usize]) -> Vec<u64> {
    let mut filter = vec![0u64; 1024];
    for &k in missing {
        let w = subs[k].weak as usize & 0xffff;
        filter[w / 64] |= 1 << (w % 64);
    }
    filter
}

/// Records in `plan` the sub-blocks still missing that `window` (at offset `at` of the old file,
/// weak checksum `w`) holds; returns how many.
fn match_window(
    window: &[u8],
    w: u32,
    at: u64,
    off: u64,
    subs: &[Sub],
    missing: &[usize],
    plan: &mut BlockPlan,
) -> usize {
    let mut strong = None;
    let mut found = 0;
    for &k in missing {
        if plan.found[k].is_none() && subs[k].weak == w {
            let h = *strong.get_or_insert_with(|| xxh64(window));
            if h == subs[k].strong {
                plan.found[k] = Some(at);
                plan.shift = Some(at as i64 - (off + (k * SUB_BLOCK) as u64) as i64);
                plan.by_search += 1;
                found += 1;
            }
        }
    }
    found
}

/// A block being assembled from its old version and the sub-blocks that changed.
pub struct Delta {
    path: String,
    /// Our old version of the file.
    old: Arc<File>,
    off: u64,
    len: usize,
    /// The block as assembled so far.
    pub block: Vec<u8>,
    ready: bool,
    pending: usize,
    pub failed: bool,
    /// Bytes received for this block (hashes and runs).
    pub wire: u64,
    pub changed: usize,
    pub total: usize,
}

pub struct Pipe<'a, 'b> {
    link: &'a Link<'b>,
    next_id: &'a mut u32,
    stash: HashMap<u32, Answer>,
    deltas: HashMap<u32, Delta>,
    /// Run request id → (sub-hash request id, offset in the block, length).
    runs: HashMap<u32, (u32, usize, usize)>,
    /// Per file: the last shift found, and how many searches in a row found nothing.
    shifts: HashMap<String, (i64, u32)>,
    /// The old data a block is looked for in (reused).
    window: Vec<u8>,
}

impl<'a, 'b> Pipe<'a, 'b> {
    pub fn new(link: &'a Link<'b>, next_id: &'a mut u32) -> Self {
        Pipe {
            link,
            next_id,
            stash: HashMap::new(),
            deltas: HashMap::new(),
            runs: HashMap::new(),
            shifts: HashMap::new(),
            window: Vec::new(),
        }
    }

    /// Sends a request (every message the pipe sends is one, answered by one Response).
    fn send(&mut self, msg: Msg) -> Result<()> {
        self.link.asked.fetch_add(1, Ordering::AcqRel);
        self.link
            .out
            .send(Out::Frame(wire::encode(&msg)))
            .map_err(|_| Error::msg("connection closed"))
    }

    /// A fresh request id; [`NOT_A_BLOCK`] marks those whose answer is not a whole block.
    fn id(&mut self, block: bool) -> u32 {
        let id = *self.next_id & !NOT_A_BLOCK;
        *self.next_id = self.next_id.wrapping_add(1);
        if block { id } else { id | NOT_A_BLOCK }
    }

    /// Requests sent and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.link.asked.load(Ordering::Acquire)
    }

    /// Asks for block `block` of `e`.
    pub fn request(&mut self, e: &Entry, block: usize) -> Result<u32> {
        let id = self.id(true);
        let (offset, len) = e.block_range(block);
        let req = Request {
            id,
            path: e.path.clone(),
            offset,
            len: len as u32,
            hash: e.blocks[block],
        };
        self.send(Msg::Request(req))?;
        Ok(id)
    }

    /// Asks for the sub-block hashes of block `block` of `e`, to be compared with the same
    /// range of our old version `old`.
    pub fn request_delta(&mut self, e: &Entry, block: usize, old: Arc<File>) -> Result<u32> {
        let id = self.id(false);
        let (off, len) = e.block_range(block);
        let req = Request {
            id,
            path: e.path.clone(),
            offset: off,
            len: len as u32,
            hash: e.blocks[block],
        };
        self.send(Msg::SubHashes(req))?;
        let d = Delta {
            path: e.path.clone(),
            old,
            off,
            len,
            block: Vec::new(),
            ready: false,
            pending: 0,
            failed: false,
            wire: 0,
            changed: 0,
            total: 0,
        };
        self.deltas.insert(id, d);
        Ok(id)
    }

    /// Waits for the response to a block request.
    pub fn wait(&mut self, id: u32) -> Result<Answer> {
        loop {
            if let Some(r) = self.stash.remove(&id) {
                return Ok(r);
            }
            self.pump()?;
        }
    }

    /// Waits until a delta block is assembled (or has failed) and returns it.
    pub fn wait_delta(&mut self, id: u32) -> Result<Delta> {
        loop {
            match self.deltas.get(&id) {
                Some(d) if d.ready && d.pending == 0 => break,
                Some(_) => self.pump()?,
                None => return Err(Error::msg("unknown delta request")),
            }
        }
        let mut d = self
            .deltas
            .remove(&id)
            .ok_or_else(|| Error::msg("unknown delta request"))?;
        // Runs of a failed block may still be out: forget them.
        self.runs.retain(|_, r| r.0 != id);
        d.failed |= d.block.len() != d.len;
        Ok(d)
    }

    /// Drops what is known of requests whose answers no longer matter (a failed file).
    pub fn forget(&mut self, id: u32) {
        self.stash.remove(&id);
        if self.deltas.remove(&id).is_some() {
            self.runs.retain(|_, r| r.0 != id);
        }
    }

    /// Whether the answer to request `id` (a delta request: its whole block) is in, without
    /// waiting: what has arrived meanwhile is routed first.
    pub fn ready(&mut self, id: u32, delta: bool) -> Result<bool> {
        while let Ok(a) = self.link.responses.try_recv() {
            self.route(a)?;
        }
        Ok(if delta {
            self.deltas
                .get(&id)
                .is_none_or(|d| d.ready && d.pending == 0)
        } else {
            self.stash.contains_key(&id)
        })
    }

    /// Receives one response and routes it.
    fn pump(&mut self) -> Result<()> {
        let a = match self.link.responses.recv_timeout(RESPONSE_TIMEOUT) {
            Ok(a) => a,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::msg("peer stopped answering block requests"));
            }
            Err(RecvTimeoutError::Disconnected) => return Err(Error::msg("connection closed")),
        };
        self.route(a)
    }

    /// Routes a response: sub-block hashes start their runs at once (so the pipe stays full),
    /// run data goes into its block, the rest waits in the stash.
    fn route(&mut self, a: Answer) -> Result<()> {
        let r = &a.r;
        if let Some((sub_id, at, len)) = self.runs.remove(&r.id) {
            if let Some(d) = self.deltas.get_mut(&sub_id) {
                d.pending = d.pending.saturating_sub(1);
                d.wire += r.data.len() as u64;
                match d.block.get_mut(at..at + len) {
                    Some(dst) if r.status == Status::Ok && r.data.len() == len => {
                        dst.copy_from_slice(&r.data)
                    }
                    _ => d.failed = true,
                }
            }
            return Ok(());
        }
        if self.deltas.get(&r.id).is_some_and(|d| !d.ready) {
            return self.start_runs(a.r);
        }
        self.stash.insert(r.id, a);
        Ok(())
    }

    /// Looks for the new block's sub-blocks in our old version, assembles what it finds, and
    /// asks the peer for the rest.
    fn start_runs(&mut self, r: Response) -> Result<()> {
        let Some(d) = self.deltas.get_mut(&r.id) else {
            return Ok(());
        };
        d.ready = true;
        d.wire += r.data.len() as u64;
        let subs = match parse_subs(&r.data, d.len) {
            Some(s) if r.status == Status::Ok => s,
            _ => {
                d.failed = true;
                return Ok(());
            }
        };
        let (shift, misses) = *self.shifts.get(&d.path).unwrap_or(&(0, 0));
        let from = read_window(&mut self.window, &d.old, d.off, d.len, shift);
        let plan = plan_block(
            &self.window,
            from,
            d.off,
            d.len,
            &subs,
            shift,
            misses < SEARCH_MISSES,
        );
        let mut block = self.link.pool.take(d.len);
        assemble(&mut block, &plan, &self.window, from, d.len);
        let runs = plan.runs(d.len);
        d.total = subs.len();
        d.changed = runs.iter().map(|(_, l)| l.div_ceil(SUB_BLOCK)).sum();
        d.block = block;
        let (path, off) = (d.path.clone(), d.off);
        note_shift(self.shifts.entry(path.clone()).or_insert((0, 0)), &plan);
        self.request_runs(r.id, &path, off, runs)
    }

    /// Asks the peer for the ranges `runs` of the block at `off` of `path`, whose sub-block
    /// hashes were request `sub_id`.
    fn request_runs(
        &mut self,
        sub_id: u32,
        path: &str,
        off: u64,
        runs: Vec<(usize, usize)>,
    ) -> Result<()> {
        for (at, len) in runs {
            let id = self.id(false);
            let req = Request {
                id,
                path: path.to_string(),
                offset: off + at as u64,
                len: len as u32,
                hash: ANY_HASH,
            };
            self.send(Msg::Request(req))?;
            self.runs.insert(id, (sub_id, at, len));
            if let Some(d) = self.deltas.get_mut(&sub_id) {
                d.pending += 1;
            }
        }
        Ok(())
    }
}

/// Reads into `window` the old data around where the block at `off` (`len` bytes) is expected
/// after `shift`, and returns the window's offset; what cannot be read is simply not found.
fn read_window(window: &mut Vec<u8>, old: &File, off: u64, len: usize, shift: i64) -> u64 {
    let size = old.metadata().map_or(0, |m| m.len());
    let (from, to) = window_range(off, len, shift, size);
    window.resize((to - from) as usize, 0);
    if old.read_exact_at(window, from).is_err() {
        window.clear();
    }
    from
}

/// The range of an old file of `size` bytes looked in for the block at `off` (`len` bytes):
/// [`SEARCH`] either side of where `shift` puts it, within the file.
fn window_range(off: u64, len: usize, shift: i64, size: u64) -> (u64, u64) {
    let centre = (off as i64).saturating_add(shift).max(0) as u64;
    let from = centre.saturating_sub(SEARCH).min(size);
    let to = centre
        .saturating_add(len as u64 + SEARCH)
        .min(size)
        .max(from);
    (from, to)
}

/// Makes `block` the new block of `len` bytes with the sub-blocks `plan` found copied in from
/// `window` (the old data from offset `from`), zeros elsewhere.
fn assemble(block: &mut Vec<u8>, plan: &BlockPlan, window: &[u8], from: u64, len: usize) {
    block.resize(len, 0);
    for (k, f) in plan.found.iter().enumerate() {
        let Some(at) = f else { continue };
        let start = k * SUB_BLOCK;
        let n = SUB_BLOCK.min(len - start);
        let src = (at - from) as usize;
        if let Some(src) = window.get(src..src + n) {
            block[start..start + n].copy_from_slice(src);
        }
    }
}

/// Keeps what a plan learned of a file (`st`: the last shift found, and how many searches in
/// a row found nothing).
fn note_shift(st: &mut (i64, u32), plan: &BlockPlan) {
    if let Some(s) = plan.shift {
        st.0 = s;
    }
    if plan.searched {
        st.1 = if plan.by_search > 0 { 0 } else { st.1 + 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(data: &[u8]) -> Vec<Sub> {
        data.chunks(SUB_BLOCK).map(Sub::of).collect()
    }

    /// Pseudo-random bytes (splitmix64): no two 4 KiB windows alike.
    fn data(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed;
        (0..n.div_ceil(8))
            .flat_map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)).to_le_bytes()
            })
            .take(n)
            .collect()
    }

    /// The runs to fetch for a new block at `off` of `new`, given all of `old` as the window.
    fn runs(
        old: &[u8],
        new: &[u8],
        off: usize,
        len: usize,
        shift: i64,
    ) -> (Vec<(usize, usize)>, BlockPlan) {
        let block = &new[off..off + len];
        let plan = plan_block(old, 0, off as u64, len, &subs(block), shift, true);
        // Whatever is found is really there.
        for (k, f) in plan.found.iter().enumerate() {
            if let Some(at) = f {
                let n = SUB_BLOCK.min(len - k * SUB_BLOCK);
                let at = *at as usize;
                assert_eq!(&old[at..at + n], &block[k * SUB_BLOCK..k * SUB_BLOCK + n]);
            }
        }
        (plan.runs(len), plan)
    }

    #[test]
    fn unchanged_block_needs_nothing() {
        let old = data(1, 65536);
        assert_eq!(runs(&old, &old, 0, 65536, 0).0, vec![]);
    }

    #[test]
    fn scattered_changes_become_runs() {
        let old = data(1, 65536);
        let mut new = old.clone();
        new[5] ^= 1; // sub-block 0
        new[4096 + 7] ^= 1; // sub-block 1, touching 0: one run
        new[10 * 4096] ^= 1; // sub-block 10 alone
        new[65535] ^= 1; // the last one
        let (r, plan) = runs(&old, &new, 0, 65536, 0);
        assert_eq!(r, vec![(0, 8192), (40960, 4096), (61440, 4096)]);
        // Most of the block was in place: no search.
        assert!(!plan.searched);
    }

    #[test]
    fn last_partial_sub_block_and_short_old_versions() {
        // A 10,000-byte block: sub-blocks of 4096, 4096 and 1808 bytes.
        let new = data(2, 10_000);
        assert_eq!(runs(&new, &new, 0, 10_000, 0).0, vec![]);
        let mut changed = new.clone();
        changed[9_999] ^= 0xff;
        assert_eq!(runs(&new, &changed, 0, 10_000, 0).0, vec![(8192, 1808)]);
        // The old version is shorter (the file grew): what it lacks is fetched.
        assert_eq!(runs(&new[..5000], &new, 0, 10_000, 0).0, vec![(4096, 5904)]);
        // No old version at all, or an empty block: everything, or nothing.
        assert_eq!(runs(&[], &new, 0, 10_000, 0).0, vec![(0, 10_000)]);
        assert_eq!(runs(&[], &[], 0, 0, 0).0, vec![]);
        // The old version is longer (the file shrank): extra old bytes do not matter.
        let mut longer = new.clone();
        longer.extend_from_slice(&[1; 3000]);
        assert_eq!(runs(&longer, &new, 0, 10_000, 0).0, vec![]);
    }

    #[test]
    fn runs_are_merged_across_the_smallest_gaps() {
        // 40 sub-blocks; every other one missing, and the gap after sub-block 30 wider.
        let found: Vec<Found> = (0..40)
            .map(|k| (k % 2 == 1 || (31..34).contains(&k)).then_some(0))
            .collect();
        let plan = BlockPlan {
            found,
            ..BlockPlan::default()
        };
        let len = 40 * SUB_BLOCK;
        assert_eq!(plan.exact_runs(len).len(), 19);
        let runs = plan.runs(len);
        assert_eq!(runs.len(), MAX_RUNS);
        // Every missing sub-block is still fetched, inside the block.
        for k in (0..40).filter(|k| k % 2 == 0 && !(31..34).contains(k)) {
            let at = k * SUB_BLOCK;
            assert!(
                runs.iter()
                    .any(|&(s, l)| s <= at && at + SUB_BLOCK <= s + l),
                "{k}"
            );
        }
        assert!(runs.iter().all(|&(s, l)| s + l <= len));
    }

    #[test]
    fn inserted_bytes_are_found_by_rolling() {
        // 1,000 bytes inserted at 70,000 in a 400 KiB file; blocks of 64 KiB.
        let old = data(3, 400 << 10);
        let mut new = old[..70_000].to_vec();
        new.extend_from_slice(&data(4, 1000));
        new.extend_from_slice(&old[70_000..]);
        // The block holding the insertion: its sub-blocks before it in place, the one holding
        // it fetched, the rest found 1,000 bytes later in the old file.
        let (r, plan) = runs(&old, &new, 65536, 65536, 0);
        assert!(plan.searched);
        assert_eq!(r, vec![(4096, 4096)], "{plan:?}");
        assert_eq!(plan.shift, Some(-1000));
        // The next block: everything at the shift found last time, without a search.
        let (r, plan) = runs(&old, &new, 131072, 65536, -1000);
        assert_eq!(r, vec![]);
        assert!(!plan.searched);
        // Without the shift, the search finds it too.
        let (r, plan) = runs(&old, &new, 131072, 65536, 0);
        assert_eq!((r, plan.by_search), (vec![], 16));
    }

    #[test]
    fn deleted_bytes_are_found_by_rolling() {
        let old = data(5, 300 << 10);
        let mut new = old[..100_000].to_vec();
        new.extend_from_slice(&old[100_300..]);
        let (r, plan) = runs(&old, &new, 65536, 65536, 0);
        assert_eq!(r, vec![(32768, 4096)], "{plan:?}");
        assert_eq!(plan.shift, Some(300));
    }

    #[test]
    fn new_data_is_searched_for_and_fetched() {
        let old = data(6, 200 << 10);
        let new = data(7, 200 << 10);
        let (r, plan) = runs(&old, &new, 65536, 65536, 0);
        assert_eq!(r, vec![(0, 65536)]);
        assert!(plan.searched);
        assert_eq!(plan.by_search, 0);
        // A window that does not reach the wanted place, or a wild shift, finds nothing and
        // does not fail.
        let block = &old[0..65536];
        let plan = plan_block(
            &old[100_000..],
            100_000,
            0,
            65536,
            &subs(block),
            i64::MAX,
            true,
        );
        assert_eq!(plan.runs(65536), vec![(0, 65536)]);
    }

    #[test]
    fn the_window_is_around_the_expected_place_within_the_file() {
        let k = 1024u64;
        let block = 64 << 10;
        // (block offset, shift, old file size, window)
        let table: &[(u64, i64, u64, (u64, u64))] = &[
            (0, 0, 1 << 20, (0, 128 * k)),
            (
                1 << 20,
                0,
                4 << 20,
                ((1 << 20) - SEARCH, (1 << 20) + 128 * k),
            ),
            (
                1 << 20,
                -1000,
                4 << 20,
                ((1 << 20) - 1000 - SEARCH, (1 << 20) + 128 * k - 1000),
            ),
            // Near the end of the old file, or past it (the file grew): cut at its end.
            (960 * k, 0, 1 << 20, (896 * k, 1 << 20)),
            (1 << 20, 0, 512 * k, (512 * k, 512 * k)),
            // Shifted before the start: from the start.
            (10 * k, -(1 << 20), 1 << 20, (0, 128 * k)),
            // Wild shifts find nothing and do not overflow.
            (0, i64::MAX, 1 << 20, (1 << 20, 1 << 20)),
            (5 * k, i64::MIN, 1 << 20, (0, 128 * k)),
        ];
        for &(off, shift, size, want) in table {
            assert_eq!(
                window_range(off, block, shift, size),
                want,
                "{off} {shift} {size}"
            );
        }
    }

    #[test]
    fn a_file_keeps_its_last_shift_and_its_fruitless_searches() {
        let plan = |shift, searched, by_search| BlockPlan {
            shift,
            searched,
            by_search,
            ..BlockPlan::default()
        };
        // (before, the block's plan, after)
        let table = [
            ((5, 3), plan(None, false, 0), (5, 3)),
            ((5, 3), plan(Some(-1000), false, 0), (-1000, 3)),
            // A search that found nothing counts; one that found something starts again.
            ((5, 3), plan(None, true, 0), (5, 4)),
            ((5, 3), plan(Some(7), true, 2), (7, 0)),
            ((0, 0), plan(Some(-2), true, 0), (-2, 1)),
        ];
        for (i, (before, plan, after)) in table.into_iter().enumerate() {
            let mut st = before;
            note_shift(&mut st, &plan);
            assert_eq!(st, after, "{i}");
        }
    }

    #[test]
    fn a_block_is_assembled_from_what_was_found() {
        let old = data(9, 3 * SUB_BLOCK);
        // Sub-block 0 found 100 bytes into the window, 1 missing, 2 (short) found at its start.
        let plan = BlockPlan {
            found: vec![Some(1100), None, Some(1000)],
            ..BlockPlan::default()
        };
        let len = 2 * SUB_BLOCK + 10;
        let mut block = vec![7; 3];
        assemble(&mut block, &plan, &old, 1000, len);
        assert_eq!(block.len(), len);
        assert_eq!(&block[..SUB_BLOCK], &old[100..100 + SUB_BLOCK]);
        assert!(block[SUB_BLOCK..2 * SUB_BLOCK].iter().all(|&b| b == 0));
        assert_eq!(&block[2 * SUB_BLOCK..], &old[..10]);
        // A place outside the window (it could not be read) leaves zeros.
        let mut block = Vec::new();
        assemble(&mut block, &plan, &old[..5], 1000, len);
        assert!(block.iter().all(|&b| b == 0));
    }

    #[test]
    fn sub_hash_answers_parse_only_at_their_size() {
        let block = data(8, 10_000);
        let enc: Vec<u8> = subs(&block)
            .iter()
            .flat_map(|s| {
                let mut v = s.weak.to_be_bytes().to_vec();
                v.extend_from_slice(&s.strong.to_be_bytes());
                v
            })
            .collect();
        assert_eq!(parse_subs(&enc, 10_000), Some(subs(&block)));
        assert_eq!(parse_subs(&enc, 20_000), None);
        assert_eq!(parse_subs(&enc[1..], 10_000), None);
    }
}
