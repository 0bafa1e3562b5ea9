//! What the puller of one connection works with: the model, the channel to the connection's
//! writer, and the answers its reader decodes; and the counts of file data received.

use crate::proto::wire::Response;
use crate::sync::model::{Model, Out};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::mpsc::{Receiver, Sender};

/// File data received from peers since start (for logs and tests).
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Bytes of file data taken from local copies instead of the wire.
pub static REUSED: AtomicU64 = AtomicU64::new(0);

/// A response to one of our requests, with the MD5 of its data if it is a block: the
/// connection's reader computes it as the frame arrives, so blocks are checked on that thread
/// while the puller writes.
pub struct Answer {
    pub r: Response,
    pub md5: Option<crate::hash::Hash>,
}

/// What the puller of one connection works with.
pub struct Link<'a> {
    pub model: &'a Model,
    pub conn: u64,
    pub out: Sender<Out>,
    pub responses: Receiver<Answer>,
    /// Requests sent and not answered yet; the reader refuses responses beyond them.
    pub asked: Arc<AtomicUsize>,
    /// Block buffers shared with the connection's reader.
    pub pool: crate::sync::pool::Pool,
}
