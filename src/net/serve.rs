//! Serving blocks: a peer's request answered from our files, only for live files of the index,
//! never through a symlink, and only while the file is as it was hashed.

use crate::proto::wire::{self, Request, Status};
use crate::store::entry::{Entry, Stat};
use crate::sync::model::Model;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Answers a request from our files: only live files of the index, never through a symlink,
/// and only while the file's stat is still the one it was hashed with (the receiver verifies
/// every block anyway). A request names a block by its hash, or (with [`wire::ANY_HASH`]) any
/// range of at most one block; with `subs`, the answer is the rolling checksum and XXH64 of each
/// sub-block of the block.
pub fn serve(
    model: &Model,
    req: &Request,
    subs: bool,
    (open, known): (&mut Option<(String, Stat, File)>, &mut Option<Entry>),
    buf: &mut Vec<u8>,
    frame: Vec<u8>,
) -> Vec<u8> {
    let fail = |frame, status| wire::response_frame(frame, req.id, status, 0);
    let Some(stat) = hashed_stat(model, req, subs, known) else {
        return fail(frame, Status::Changed);
    };
    if let Err(status) = hold_file(model, req, stat, open) {
        return fail(frame, status);
    }
    let Some((_, _, f)) = open.as_ref() else {
        return fail(frame, Status::Failed);
    };
    let read = if subs {
        sub_hashes_frame(f, req, buf, frame)
    } else {
        block_frame(f, req, frame)
    };
    read.unwrap_or_else(|frame| {
        *open = None;
        fail(frame, Status::Changed)
    })
}

/// The stat the requested file was hashed with, if the index holds what the request names
/// (`known`: the entry last looked up, kept).
fn hashed_stat(
    model: &Model,
    req: &Request,
    subs: bool,
    known: &mut Option<Entry>,
) -> Option<Stat> {
    // The entry is read from the index again only when its number or stat changed: a
    // big file's block list is read from the index file otherwise, for every request.
    let g = model.lock();
    let now = g.index.seq_stat(&req.path);
    if known
        .as_ref()
        .is_none_or(|e| e.path != req.path || now != Some((e.seq, e.stat)))
    {
        *known = now
            .and(g.index.get(&req.path))
            .map(std::borrow::Cow::into_owned);
    }
    drop(g);
    let any = req.hash == wire::ANY_HASH && !subs;
    known
        .as_ref()
        .filter(|e| e.holds(req.offset, req.len, &req.hash, any))
        .map(|e| e.stat)
}

/// Leaves the requested file open in `open` as it was hashed (`stat`), opened anew unless the
/// one kept is; otherwise the status to answer.
fn hold_file(
    model: &Model,
    req: &Request,
    stat: Stat,
    open: &mut Option<(String, Stat, File)>,
) -> Result<(), Status> {
    // The file kept open is reused only for the version the index describes: a file replaced
    // under the same name (saved by rename, deleted and made again) is opened anew.
    if open
        .as_ref()
        .is_none_or(|(p, st, _)| *p != req.path || *st != stat)
    {
        *open = None;
        match crate::sys::open::open_in(&model.root, &req.path, crate::sys::open::Open::Read) {
            Ok(f) => *open = Some((req.path.clone(), stat, f)),
            // A symlink on the way, or in the file's place.
            Err(e) if e.raw_os_error() == Some(crate::sys::open::ELOOP) => {
                return Err(Status::Failed);
            }
            Err(_) => return Err(Status::Changed),
        }
    }
    let Some((_, _, f)) = open.as_ref() else {
        return Err(Status::Failed);
    };
    if !f.metadata().is_ok_and(|m| Stat::of(&m) == stat) {
        *open = None;
        return Err(Status::Changed);
    }
    Ok(())
}

/// The answer holding the rolling checksum and XXH64 of each sub-block of the requested range
/// of `f`; `Err` gives back the frame when the range cannot be read.
fn sub_hashes_frame(
    f: &File,
    req: &Request,
    buf: &mut Vec<u8>,
    frame: Vec<u8>,
) -> Result<Vec<u8>, Vec<u8>> {
    let (len, h) = (req.len as usize, wire::RESPONSE_HEADER);
    buf.resize(len, 0);
    if f.read_exact_at(buf, req.offset).is_err() {
        return Err(frame);
    }
    let n = crate::proto::wire::SUB_HASH_BYTES;
    let mut frame =
        wire::response_frame(frame, req.id, Status::Ok, len.div_ceil(wire::SUB_BLOCK) * n);
    for (k, c) in buf.chunks(wire::SUB_BLOCK).enumerate() {
        let sub = crate::sync::delta::Sub::of(c);
        let at = h + n * k;
        frame[at..at + 4].copy_from_slice(&sub.weak.to_be_bytes());
        frame[at + 4..at + n].copy_from_slice(&sub.strong.to_be_bytes());
    }
    Ok(frame)
}

/// The answer holding the requested range of `f`, read straight into the frame that carries it;
/// `Err` gives back the frame when the range cannot be read.
fn block_frame(f: &File, req: &Request, frame: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
    let (len, h) = (req.len as usize, wire::RESPONSE_HEADER);
    let mut frame = wire::response_frame(frame, req.id, Status::Ok, len);
    if f.read_exact_at(&mut frame[h..], req.offset).is_err() {
        return Err(frame);
    }
    Ok(frame)
}
