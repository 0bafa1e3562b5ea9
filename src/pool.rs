//! Block buffers passed around instead of allocated and freed per block. A connection moves
//! 64 KiB blocks between its reader, puller and writer thousands of times a second; musl's
//! allocator gives memory that size back to the kernel when it is freed, so a fresh buffer per
//! block would cost page faults and zeroing every time. One pool serves a whole connection.

use std::sync::{Arc, Mutex};

/// Buffers kept at most: enough for the blocks in flight between the threads.
const KEEP: usize = 24;
/// Buffers smaller than this are not worth keeping, larger ones (huge blocks) not either.
const MIN_KEEP: usize = 16 << 10;
const MAX_KEEP: usize = 1 << 20;

#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    /// An empty buffer with room for `cap` bytes.
    pub fn take(&self, cap: usize) -> Vec<u8> {
        if (MIN_KEEP..=MAX_KEEP).contains(&cap)
            && let Some(mut v) = self.0.lock().ok().and_then(|mut g| g.pop())
        {
            v.clear();
            v.reserve(cap);
            return v;
        }
        Vec::with_capacity(cap)
    }

    /// Gives a buffer back for reuse.
    pub fn give(&self, v: Vec<u8>) {
        if (MIN_KEEP..=MAX_KEEP + 64).contains(&v.capacity())
            && let Ok(mut g) = self.0.lock()
            && g.len() < KEEP
        {
            g.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_big_enough() {
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
        assert_eq!(p.0.lock().unwrap().len(), 0);
        // The pool stays bounded.
        for _ in 0..100 {
            p.give(Vec::with_capacity(64 << 10));
        }
        assert_eq!(p.0.lock().unwrap().len(), KEEP);
    }
}
