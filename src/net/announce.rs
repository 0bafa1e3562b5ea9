//! Announcing our index: every entry changed since what a peer last got, in frames of bounded
//! size, encoded under the model's lock a batch at a time and written without it.

use crate::error::Result;
use crate::net::frame::FrameWriter;
use crate::proto::wire::{self};
use crate::store::codec::{self, Enc};
use crate::sync::model::Model;

/// Sends every entry changed after `sent`, up to the index's sequence number as last saved, in
/// frames of bounded size; returns the new mark. Entries are encoded under the lock a batch at
/// a time and written without it.
pub fn announce(model: &Model, w: &mut FrameWriter<'_>, sent: u64) -> Result<u64> {
    // Walks only what changed: entries in memory by number, then those of the base file by
    // path (the base holds numbers past `sent` only after it was rewritten). An entry changed
    // during the pass gets a new number past `top`, and the change queued another announce: it
    // goes in the next pass, so that block requests queued meanwhile are served between passes,
    // not after a whole first scan of the share.
    // Only what is saved (`State::saved_seq`): what a kill would lose is never offered.
    let top = {
        let g = model.lock();
        g.index.seq.min(g.saved_seq)
    };
    let mut at = crate::store::index::Pass::Over(sent);
    loop {
        let (n, body) = {
            let g = model.lock();
            let mut e = Enc::default();
            let mut n = 0u32;
            g.index.changed(sent, top, &mut at, |x| {
                // A folder made for a pull before its entry came (an empty version, see
                // `Model::make_parents`) is not a version to offer.
                if x.version.pairs().is_empty() {
                    return true;
                }
                codec::put_entry(&mut e, x);
                n += 1;
                e.0.len() < wire::INDEX_BATCH && (n as usize) < wire::MAX_INDEX_ENTRIES
            });
            (n, e.0)
        };
        let done = at == crate::store::index::Pass::Done;
        if n > 0 || (done && top > sent) {
            // Only the last frame of a pass carries the sequence number it completes.
            w.send(wire::index_frame(if done { top } else { 0 }, n, &body))?;
        }
        if done {
            return Ok(top);
        }
    }
}
