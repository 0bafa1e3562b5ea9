//! The request pipe of a pull: block requests in flight matched to their responses, and delta
//! transfer of changed blocks — when we hold an old version of a block, the peer sends the XXH64
//! of each 4 KiB sub-block, and only the sub-blocks that differ cross the wire. A sub-block
//! hash only picks what to fetch: the assembled block is checked against its MD5 like any other.

use crate::error::{Error, Result};
use crate::hash::xxh64;
use crate::index::Entry;
use crate::model::Out;
use crate::puller::{Answer, Link};
use crate::wire::{self, ANY_HASH, Msg, Request, Response, SUB_BLOCK, Status};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// How long to wait for a response before the connection is given up.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The ranges of a block (offset, length) that must be fetched: the sub-blocks whose XXH64 in
/// `hashes` differs from the same sub-block of `old` (the old version, possibly shorter or
/// empty), merged where they touch. `len` is the new block's length.
pub fn changed_runs(old: &[u8], len: usize, hashes: &[u64]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (k, want) in hashes.iter().enumerate() {
        let start = k * SUB_BLOCK;
        if start >= len {
            break;
        }
        let end = (start + SUB_BLOCK).min(len);
        let same = old.get(start..end).is_some_and(|o| xxh64(o) == *want);
        if same {
            continue;
        }
        match runs.last_mut() {
            Some((s, l)) if *s + *l == start => *l += end - start,
            _ => runs.push((start, end - start)),
        }
    }
    runs
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
}

impl<'a, 'b> Pipe<'a, 'b> {
    pub fn new(link: &'a Link<'b>, next_id: &'a mut u32) -> Self {
        Pipe {
            link,
            next_id,
            stash: HashMap::new(),
            deltas: HashMap::new(),
            runs: HashMap::new(),
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

    fn id(&mut self) -> u32 {
        let id = *self.next_id;
        *self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Asks for block `block` of `e`.
    pub fn request(&mut self, e: &Entry, block: usize) -> Result<u32> {
        let id = self.id();
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
        let id = self.id();
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

    /// Receives one response and routes it: sub-block hashes start their runs at once (so the
    /// pipe stays full), run data goes into its block, the rest waits in the stash.
    fn pump(&mut self) -> Result<()> {
        let a = match self.link.responses.recv_timeout(RESPONSE_TIMEOUT) {
            Ok(a) => a,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::msg("peer stopped answering block requests"));
            }
            Err(RecvTimeoutError::Disconnected) => return Err(Error::msg("connection closed")),
        };
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

    /// Compares the peer's sub-block hashes with our old version and asks for what differs.
    fn start_runs(&mut self, r: Response) -> Result<()> {
        let Some(d) = self.deltas.get_mut(&r.id) else {
            return Ok(());
        };
        d.ready = true;
        d.wire += r.data.len() as u64;
        let n = d.len.div_ceil(SUB_BLOCK);
        if r.status != Status::Ok || r.data.len() != n * 8 {
            d.failed = true;
            return Ok(());
        }
        let hashes: Vec<u64> = r
            .data
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        // Our old version of the same range; what cannot be read counts as changed.
        let mut old = vec![0u8; d.len];
        let got = d
            .old
            .metadata()
            .and_then(|md| {
                let n = md.len().saturating_sub(d.off).min(d.len as u64) as usize;
                d.old.read_exact_at(&mut old[..n], d.off).map(|_| n)
            })
            .unwrap_or(0);
        let runs = changed_runs(&old[..got], d.len, &hashes);
        d.total = n;
        d.changed = runs.iter().map(|(_, l)| l.div_ceil(SUB_BLOCK)).sum();
        d.block = old;
        let (path, off) = (d.path.clone(), d.off);
        for (at, len) in runs {
            let id = self.id();
            let req = Request {
                id,
                path: path.clone(),
                offset: off + at as u64,
                len: len as u32,
                hash: ANY_HASH,
            };
            self.send(Msg::Request(req))?;
            self.runs.insert(id, (r.id, at, len));
            if let Some(d) = self.deltas.get_mut(&r.id) {
                d.pending += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(data: &[u8]) -> Vec<u64> {
        data.chunks(SUB_BLOCK).map(xxh64).collect()
    }

    #[test]
    fn unchanged_block_needs_nothing() {
        let old: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(changed_runs(&old, old.len(), &hashes(&old)), vec![]);
    }

    #[test]
    fn scattered_changes_become_runs() {
        let old: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut new = old.clone();
        new[5] ^= 1; // sub-block 0
        new[4096 + 7] ^= 1; // sub-block 1, touching 0: one run
        new[10 * 4096] ^= 1; // sub-block 10 alone
        new[65535] ^= 1; // the last one
        assert_eq!(
            changed_runs(&old, new.len(), &hashes(&new)),
            vec![(0, 8192), (40960, 4096), (61440, 4096)]
        );
    }

    #[test]
    fn last_partial_sub_block_and_short_old_versions() {
        // A 10,000-byte block: sub-blocks of 4096, 4096 and 1808 bytes.
        let new: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
        assert_eq!(changed_runs(&new, new.len(), &hashes(&new)), vec![]);
        let mut changed = new.clone();
        changed[9_999] ^= 0xff;
        assert_eq!(
            changed_runs(&new, new.len(), &hashes(&changed)),
            vec![(8192, 1808)]
        );
        // The old version is shorter (the file grew): what it lacks is fetched.
        assert_eq!(
            changed_runs(&new[..5000], new.len(), &hashes(&new)),
            vec![(4096, 5904)]
        );
        // No old version at all, or an empty block: everything, or nothing.
        assert_eq!(
            changed_runs(&[], new.len(), &hashes(&new)),
            vec![(0, 10_000)]
        );
        assert_eq!(changed_runs(&[], 0, &[]), vec![]);
        // The old version is longer (the file shrank): extra old bytes do not matter.
        let mut longer = new.clone();
        longer.extend_from_slice(&[1; 3000]);
        assert_eq!(changed_runs(&longer, new.len(), &hashes(&new)), vec![]);
    }
}
