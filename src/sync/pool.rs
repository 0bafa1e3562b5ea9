//! Block buffers passed around instead of allocated and freed per block. A connection moves
//! 64 KiB blocks between its reader, puller and writer thousands of times a second; musl's
//! allocator gives memory that size back to the kernel when it is freed, so a fresh buffer per
//! block would cost page faults and zeroing every time. One pool serves a whole connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Buffers kept at most: enough for the blocks in flight between the threads.
const KEEP: usize = 24;
/// Buffers smaller than this are not worth keeping, larger ones (huge blocks) not either.
const MIN_KEEP: usize = 16 << 10;
const MAX_KEEP: usize = 1 << 20;
/// Bytes all pools together keep: what idle buffers hold stays bounded whatever the number
/// of connections and the size of their blocks (24 of 64 KiB for each of 5 busy connections).
const KEEP_BYTES: usize = 8 << 20;

/// Capacity of the buffers kept in all pools.
static KEPT: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Kept>>);

/// The buffers of one pool, counted in [`KEPT`] while they are kept.
#[derive(Default)]
struct Kept(Vec<Vec<u8>>);

impl Drop for Kept {
    fn drop(&mut self) {
        let bytes: usize = self.0.iter().map(Vec::capacity).sum();
        KEPT.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Pool {
    /// An empty buffer with room for `cap` bytes.
    pub fn take(&self, cap: usize) -> Vec<u8> {
        if (MIN_KEEP..=MAX_KEEP).contains(&cap)
            && let Some(mut v) = self.0.lock().ok().and_then(|mut g| g.0.pop())
        {
            KEPT.fetch_sub(v.capacity(), Ordering::Relaxed);
            v.clear();
            v.reserve(cap);
            return v;
        }
        Vec::with_capacity(cap)
    }

    /// Gives a buffer back for reuse (or frees it, when this pool or all of them keep enough).
    pub fn give(&self, v: Vec<u8>) {
        let c = v.capacity();
        if (MIN_KEEP..=MAX_KEEP + 64).contains(&c)
            && let Ok(mut g) = self.0.lock()
            && g.0.len() < KEEP
            && KEPT
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
                    (k + c <= KEEP_BYTES).then_some(k + c)
                })
                .is_ok()
        {
            g.0.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_all_pools_stay_bounded() {
        let p = Pool::default();
        let mut v = p.take(64 << 10);
        v.extend_from_slice(&[7; 1000]);
        let at = v.as_ptr();
        p.give(v);
        let w = p.take(64 << 10);
        assert!(w.is_empty() && w.capacity() >= 64 << 10);
        assert_eq!(w.as_ptr(), at, "the buffer given back is reused");
        // Small and huge buffers are not kept.
        p.give(Vec::with_capacity(100));
        p.give(Vec::with_capacity(8 << 20));
        assert_eq!(p.0.lock().unwrap().0.len(), 0);
        // The pool stays bounded.
        for _ in 0..100 {
            p.give(Vec::with_capacity(64 << 10));
        }
        assert_eq!(p.0.lock().unwrap().0.len(), KEEP);
        drop(p);
        // All pools together keep a bounded amount (one test: the count is global).
        let pools: Vec<Pool> = (0..64).map(|_| Pool::default()).collect();
        for p in &pools {
            for _ in 0..KEEP {
                p.give(Vec::with_capacity(MAX_KEEP));
            }
        }
        let kept: usize = pools
            .iter()
            .map(|p| {
                p.0.lock()
                    .unwrap()
                    .0
                    .iter()
                    .map(Vec::capacity)
                    .sum::<usize>()
            })
            .sum();
        assert!(kept <= KEEP_BYTES, "{kept} bytes kept");
        assert!(kept >= KEEP_BYTES / 2, "pools keep buffers at all");
        assert!(KEPT.load(Ordering::Relaxed) <= KEEP_BYTES);
        drop(pools);
        // Dropped pools give their share back: another pool keeps buffers again.
        let p = Pool::default();
        p.give(Vec::with_capacity(MAX_KEEP));
        assert_eq!(p.0.lock().unwrap().0.len(), 1);
    }
}
