//! The puller: brings entries a peer announced into the share, a batch at a time: deletions and
//! folders first, renames as moves, then the files' blocks (`transfer`), then the rest of the
//! deletions. A file is installed only when every block is verified: fsync, mode and mtime, and
//! a rename into place, under the lock, if nothing changed locally meanwhile. Temp files stay for
//! resume when anything fails.

use crate::error::Result;
use crate::proto::wire::Msg;
use crate::store::entry::{Entry, Kind};
use crate::sync::disk::remove_temp;
use crate::sync::install::{apply_delete, apply_dir, finish_need};
use crate::sync::link::Link;
use crate::sync::model::{Decision, Out, Peer, decide};
use crate::sync::transfer;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Entries taken per batch.
const BATCH_ENTRIES: usize = 1024;
/// What the entries of a batch may take in memory (long versions and names count): a batch of
/// deletions lands in the index at once.
const BATCH_MEM: usize = 1 << 20;
/// Bytes of files taken per batch (one larger file still makes a batch of its own).
const BATCH_BYTES: u64 = 64 << 20;

/// Pulls until the connection closes (the peer entry disappears) or shutdown. Small files are
/// installed by a second thread (`transfer::installer`) while the next batch comes in.
pub fn run(link: &Link<'_>) -> Result<()> {
    let installs = transfer::Installs::default();
    let (model, conn) = (link.model, link.conn);
    std::thread::scope(|s| {
        s.spawn(|| transfer::installer(model, conn, &installs));
        let r = pull_loop(link, &installs);
        // The installer finishes what it holds, then ends.
        installs.close();
        r
    })
}

fn pull_loop(link: &Link<'_>, install: &transfer::Installs) -> Result<()> {
    let mut next_id = 1u32;
    let limit = crate::sys::limits::limit();
    while let Some(batch) = take_batch(link, limit) {
        let mut handed = HashSet::new();
        let before = link.model.lock().index.over_bytes();
        let result = pull_batch(link, &batch, install, &mut handed, &mut next_id);
        let grew = link.model.lock().index.over_bytes().saturating_sub(before);
        link.model.fold_if_due(grew);
        let mut g = link.model.lock();
        for e in batch.iter().filter(|e| !handed.contains(&e.path)) {
            g.busy.remove(&e.path);
            // Cut short (the connection failed): what the batch had begun keeps its temp file.
            if result.is_err() {
                g.keep_temp(e);
            }
        }
        if let Some(p) = g.peers.get_mut(&link.conn) {
            p.pulling = false;
            p.progress = None;
            // A pull that failed while the peer's next word made it moot (its need dropped
            // while the path was busy) leaves a temp file nothing will resume.
            for e in &batch {
                if p.retry.contains_key(&e.path) && p.needs.get(&e.path).is_none() {
                    p.retry.remove(&e.path);
                    remove_temp(&link.model.root, &e.path);
                }
            }
        }
        link.model.changed.notify_all();
        drop(g);
        result?;
    }
    Ok(())
}

/// Waits for needs of this connection and takes a batch, marking the paths busy. Also tells the
/// peer when we hold everything it announced. `None` when the connection is gone.
fn take_batch(link: &Link<'_>, open_limit: u64) -> Option<Vec<Entry>> {
    let mut g = link.model.lock();
    loop {
        if g.shutdown {
            return None;
        }
        let now = Instant::now();
        let st = &mut *g;
        // Every connection may pull at once: each keeps its batch's files within its share of
        // the open-file limit.
        let max_files = crate::sys::limits::batch_files(open_limit, st.peers.len());
        if let Err(e) = link.model.refill_needs(st, link.conn) {
            // What the peer announced cannot be read back: the connection starts over.
            warn!("{e}");
            let p = st.peers.get(&link.conn)?;
            let _ = p.stream.shutdown(std::net::Shutdown::Both);
            return None;
        }
        // After a crash, the first scan settles what the install log names (found, changed
        // or gone) before anything is pulled: a pull of a path it names (taken again, as the
        // index lacks it) would make a temp file or a file there and hide a change the user
        // made while we were down (review15).
        if !st.scanned && !st.received.is_empty() {
            g = link.model.wait(g, Duration::from_millis(500));
            continue;
        }
        let p = st.peers.get_mut(&link.conn)?;
        let (needs, crowded) = (&p.needs, p.needs.crowded());
        let waits_inside = |f: &str| !crowded && needs.may_wait_inside(f);
        let pending = Pending {
            needs: needs.mem(),
            busy: &st.busy,
            retry: &p.retry,
            now,
            pass_open: p.pass_open,
            waits_inside: &waits_inside,
            max_files,
        };
        let (mut batch, moot) = choose(&pending, |path| st.index.get(path));
        let waits = files_over_full_folders(&batch, &st.index, &pending);
        drop_moot(&link.model.root, p, &mut st.kept_temps, moot);
        batch.retain(|r| !waits.contains(&r.path));
        if !batch.is_empty() {
            p.pulling = true;
            for e in &batch {
                st.busy.insert(e.path.clone());
            }
            return Some(batch);
        }
        // Nothing in memory can go, and entries wait on disk: what is in memory may wait for
        // them (a folder's deletion, a file replacing a folder, deep or many), so one more
        // comes back now, not at the next wake (review13).
        if p.needs.waiting() && !p.needs.mem().is_empty() && !p.needs.crowded() && !p.pass_open {
            p.needs.force_refill();
            match link.model.refill_needs(st, link.conn) {
                Ok(0) => {}
                Ok(_) => continue,
                Err(e) => {
                    warn!("{e}");
                    let p = st.peers.get(&link.conn)?;
                    let _ = p.stream.shutdown(std::net::Shutdown::Both);
                    return None;
                }
            }
        }
        let p = st.peers.get_mut(&link.conn)?;
        // Nor while changes of ours wait for a save (announced only once saved): the peer
        // would take itself for in sync without them.
        tell_in_sync(p, st.scan_pending || st.saved_seq < st.index.seq);
        g = link.model.wait(g, Duration::from_millis(500));
    }
}

/// What [`choose`] picks a batch from: a connection's needs in memory and what holds them back.
struct Pending<'a> {
    needs: &'a BTreeMap<String, Entry>,
    /// Paths being pulled or installed (by any connection).
    busy: &'a HashSet<String>,
    /// Paths whose last pull failed, with when to try again.
    retry: &'a BTreeMap<String, Instant>,
    now: Instant,
    /// The peer's announce pass is not complete.
    pass_open: bool,
    /// Whether entries inside a folder may wait on disk (`Needs::may_wait_inside`; never once
    /// memory is crowded with folder deletions): a folder's deletion, or a file replacing it,
    /// waits for them.
    waits_inside: &'a dyn Fn(&str) -> bool,
    /// Files the batch may hold (its connection's share of open files).
    max_files: usize,
}

/// Which needs a batch takes, in path order until it is full, and which are moot (ours is
/// newer, or won); `local` gives our entry of a path. Pure but for `local`, which reads the
/// index.
fn choose<'i>(
    at: &Pending<'_>,
    local: impl Fn(&str) -> Option<Cow<'i, Entry>>,
) -> (Vec<Entry>, Vec<String>) {
    let mut batch = Vec::new();
    let mut fill = Fill::default();
    let mut moot = Vec::new();
    // The files still to come, by content: a local file with one of these contents whose
    // deletion is needed too is most likely renamed there, and its blocks are read from it.
    let mut wanted: HashMap<crate::hash::Hash, Vec<&str>> = HashMap::new();
    for (p, n) in at.needs.iter().filter(|(_, n)| n.is_file() && n.size > 0) {
        wanted.entry(n.file_hash).or_default().push(p);
    }
    for (path, r) in at.needs {
        if at.busy.contains(path) || at.retry.get(path).is_some_and(|t| *t > at.now) {
            continue;
        }
        let cur = local(path);
        if waits(at, r, cur.as_deref(), &local, &wanted, &batch) {
            continue;
        }
        match decide(cur.as_deref(), r) {
            Decision::Take { .. } => {
                if !fill.fits(r, at.max_files) {
                    break;
                }
                fill.add(r);
                batch.push(r.clone());
            }
            _ => moot.push(path.clone()),
        }
    }
    (batch, moot)
}

/// Whether the need `r` waits for others to go first (see [`choose`]): `cur` is our entry of
/// its path, `wanted` the files still to come by content, `batch` what the batch takes so far.
fn waits<'i>(
    at: &Pending<'_>,
    r: &Entry,
    cur: Option<&Entry>,
    local: &impl Fn(&str) -> Option<Cow<'i, Entry>>,
    wanted: &HashMap<crate::hash::Hash, Vec<&str>>,
    batch: &[Entry],
) -> bool {
    let path = r.path.as_str();
    let is_folder = |l: Option<&Entry>| l.is_some_and(|l| l.kind == Kind::Dir && !l.deleted);
    // So its deletion waits until they are in (whatever batch they fall in, and after a
    // failed try too): never is the old name gone while the new one is not complete.
    // Not where one holds the other (a file replacing its own folder, or the reverse),
    // where one of the two must go first.
    // A new name that is a file replacing a folder of ours does not hold a deletion back:
    // it waits itself for what its folder holds to go (`files_over_full_folders`), and
    // two files swapped out of two folders into their places waited on each other for
    // good (review8). That deletion then goes first, and the blocks come from the peer.
    if r.deleted
        && r.kind == Kind::File
        && renamed_to(path, cur, wanted, |t| is_folder(local(t).as_deref()))
    {
        return true;
    }
    // A folder's deletion waits until the deletions of what is inside it are done: until
    // the pass that announced it is complete (what it held may come after it), and
    // while entries inside it may wait on disk.
    if r.deleted && r.kind == Kind::Dir {
        let inside = format!("{path}/");
        return at.pass_open
            || (at.waits_inside)(path)
            || at
                .needs
                .range(inside.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&inside));
    }
    // A file or folder whose folder we do not hold (nor take in this batch) waits while
    // the pass is open: the folder's entry, with the peer's mode, is on its way. Made
    // here for it, the folder was scanned as a new one of ours, newer, and its mode won
    // over the peer's on every peer (review9).
    if !r.deleted
        && at.pass_open
        && let Some((parent, _)) = path.rsplit_once('/')
        && !is_folder(local(parent).as_deref())
        && !batch
            .iter()
            .any(|b| b.path == parent && b.kind == Kind::Dir && !b.deleted)
    {
        return true;
    }
    // A file that replaces a folder holding files waits, like a folder's deletion,
    // for the deletions of what the folder held, which come after it in the pass.
    r.is_file() && at.pass_open && is_folder(cur)
}

/// Whether our file at `path` (`ours`) has content one of the files still to come has, at a
/// path neither inside it nor holding it, nor (`over_folder`) a file replacing a folder of ours
/// (see [`choose`]).
fn renamed_to(
    path: &str,
    ours: Option<&Entry>,
    wanted: &HashMap<crate::hash::Hash, Vec<&str>>,
    over_folder: impl Fn(&str) -> bool,
) -> bool {
    let nested =
        |a: &str, b: &str| a.len() > b.len() && a.starts_with(b) && a.as_bytes()[b.len()] == b'/';
    ours.filter(|l| l.is_file() && l.size > 0)
        .and_then(|l| wanted.get(&l.file_hash))
        .is_some_and(|to| {
            to.iter()
                .any(|t| *t != path && !nested(t, path) && !nested(path, t) && !over_folder(t))
        })
}

/// Forgets the needs of `p` that are `moot`: a pull of one that failed earlier is not to be
/// resumed, so its temp file goes.
fn drop_moot(
    root: &Path,
    p: &mut Peer,
    kept_temps: &mut HashMap<String, Entry>,
    moot: Vec<String>,
) {
    for m in moot {
        p.needs.remove(&m);
        p.retry.remove(&m);
        remove_temp(root, &m);
        kept_temps.remove(&m);
    }
}

/// Tells the peer we hold everything it announced, once for each of its sequence numbers; not
/// while changes here wait for a scan (`scan_pending`: the peer would take itself for in sync).
fn tell_in_sync(p: &mut Peer, scan_pending: bool) {
    if p.remote_done && p.needs.is_empty() && !scan_pending && p.sent_in_sync != Some(p.remote_seq)
    {
        p.sent_in_sync = Some(p.remote_seq);
        let _ = p
            .out
            .send(Out::Frame(crate::proto::wire::encode(&Msg::InSync {
                seq: p.remote_seq,
            })));
    }
}

/// What a batch holds so far: it is full at [`BATCH_ENTRIES`] entries, [`BATCH_MEM`] of them in
/// memory, its connection's share of open files, or [`BATCH_BYTES`] of file data.
#[derive(Default)]
struct Fill {
    entries: usize,
    bytes: u64,
    files: usize,
    mem: usize,
}

impl Fill {
    /// Whether `r` goes in too. Deletions and folders always fit the data and file counts: a
    /// renamed big file and the deletion of its old name stay in one batch, so the file is
    /// moved, not copied. The first entry always fits.
    fn fits(&self, r: &Entry, max_files: usize) -> bool {
        !(self.entries >= BATCH_ENTRIES
            || (self.mem > 0 && self.mem + r.mem_cost() > BATCH_MEM)
            || (r.is_file() && self.files >= max_files)
            || (r.size > 0 && self.bytes > 0 && self.bytes + r.size > BATCH_BYTES))
    }

    fn add(&mut self, r: &Entry) {
        self.entries += 1;
        self.bytes += r.size;
        self.mem += r.mem_cost();
        self.files += usize::from(r.is_file());
    }
}

/// Files of `batch` that replace a folder of ours (in `index`) while needs under the folder stay
/// out of the batch, in memory or on disk (`at`): they wait, so that the deletions of what the
/// folder held (deepest first, in a batch) empty it first.
fn files_over_full_folders(
    batch: &[Entry],
    index: &crate::store::index::Index,
    at: &Pending<'_>,
) -> Vec<String> {
    let needs = at.needs;
    batch
        .iter()
        .filter(|r| {
            r.is_file()
                && index
                    .get(&r.path)
                    .is_some_and(|l| l.kind == Kind::Dir && !l.deleted)
        })
        .filter(|r| {
            let inside = format!("{}/", r.path);
            (at.waits_inside)(&r.path)
                || needs
                    .range(inside.clone()..)
                    .take_while(|(k, _)| k.starts_with(&inside))
                    .any(|(k, _)| !batch.iter().any(|b| b.path == *k))
        })
        .map(|r| r.path.clone())
        .collect()
}

/// Applies one batch. Small files go to the installer (their paths into `handed`, which then
/// owns them); the rest is done when this returns.
fn pull_batch(
    link: &Link<'_>,
    batch: &[Entry],
    install: &transfer::Installs,
    handed: &mut HashSet<String>,
    next_id: &mut u32,
) -> Result<()> {
    let model = link.model;
    // Deletions that stand in the way of a new file or folder (same path, or an ancestor of it)
    // go first; other deletions go last, so a renamed file's blocks can still be copied locally.
    let under =
        |a: &str, b: &str| a.len() > b.len() && a.starts_with(b) && a.as_bytes()[b.len()] == b'/';
    let in_way = |t: &str| {
        batch
            .iter()
            .any(|n| !n.deleted && (n.path == t || under(&n.path, t) || under(t, &n.path)))
    };
    let (early, late): (Vec<&Entry>, Vec<&Entry>) = batch
        .iter()
        .filter(|e| e.deleted)
        .partition(|e| in_way(&e.path));
    // Deepest first.
    for e in early.iter().rev() {
        let r = apply_delete(model, e);
        finish_need(link, e, r);
    }
    for e in batch.iter().filter(|e| !e.deleted && e.kind == Kind::Dir) {
        let r = apply_dir(model, e);
        finish_need(link, e, r);
    }
    let files: Vec<Entry> = batch.iter().filter(|e| e.is_file()).cloned().collect();
    let result = if files.is_empty() {
        Ok(())
    } else {
        transfer::transfer(link, files, &late, install, handed, next_id)
    };
    // The batch's files are installed, their data durable, before the files it deletes are
    // gone: blocks may have been copied from them.
    if !late.is_empty() {
        install.wait_idle();
    }
    for e in late.iter().rev() {
        let r = apply_delete(model, e);
        finish_need(link, e, r);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::MIN_BLOCK;

    fn file(path: &str, size: u64) -> Entry {
        let n = size.div_ceil(MIN_BLOCK as u64) as usize;
        Entry {
            path: path.into(),
            size,
            block_size: MIN_BLOCK,
            blocks: vec![[1; 16]; n].into(),
            ..Entry::default()
        }
    }

    /// A need or a local entry from a compact form: `f` a file of `size` bytes, `d` a folder,
    /// `-f` / `-d` their deletions; at version `v` of device 1.
    fn entry(path: &str, what: &str, size: u64, v: u64) -> Entry {
        let mut e = file(path, size);
        e.kind = if what.ends_with('d') {
            Kind::Dir
        } else {
            Kind::File
        };
        e.deleted = what.starts_with('-');
        if e.kind == Kind::Dir || e.deleted {
            (e.size, e.blocks) = (0, Box::default());
        }
        e.version = crate::store::version::Version::from_pairs(vec![(1, v)]);
        e
    }

    /// Which needs a batch takes, and which are moot.
    #[test]
    fn choose_table() {
        struct Case {
            needs: &'static [(&'static str, &'static str, u64)],
            /// Our entries: kind, and version (the peer's needs are at 2).
            local: &'static [(&'static str, &'static str, u64)],
            busy: &'static [&'static str],
            /// Paths to retry later.
            retry: &'static [&'static str],
            pass_open: bool,
            /// Folders with entries inside them waiting on disk.
            on_disk: &'static [&'static str],
            max_files: usize,
            batch: &'static [&'static str],
            moot: &'static [&'static str],
        }
        const BASE: Case = Case {
            needs: &[],
            local: &[],
            busy: &[],
            retry: &[],
            pass_open: false,
            on_disk: &[],
            max_files: 100,
            batch: &[],
            moot: &[],
        };
        let cases = [
            Case { ..BASE },
            Case {
                needs: &[("a", "f", 1), ("b", "d", 0), ("c", "-f", 0)],
                batch: &["a", "b", "c"],
                ..BASE
            },
            // Busy and retried-later paths are left; ours newer is moot.
            Case {
                needs: &[("a", "f", 1), ("b", "f", 1), ("c", "f", 1), ("d", "f", 1)],
                local: &[("c", "f", 3)],
                busy: &["a"],
                retry: &["b"],
                batch: &["d"],
                moot: &["c"],
                ..BASE
            },
            // The open files allowed: the batch stops at the first file that does not fit,
            // and nothing after it is looked at (not even to find it moot).
            Case {
                needs: &[("a", "f", 1), ("b", "f", 1), ("c", "f", 1)],
                local: &[("c", "f", 3)],
                max_files: 1,
                batch: &["a"],
                ..BASE
            },
            // A folder's deletion waits while the pass is open, while entries wait on disk,
            // and while needs inside it remain in memory.
            Case {
                needs: &[("d", "-d", 0), ("e", "-d", 0)],
                pass_open: true,
                ..BASE
            },
            Case {
                needs: &[("d", "-d", 0), ("e", "-d", 0)],
                on_disk: &["d"],
                batch: &["e"],
                ..BASE
            },
            Case {
                needs: &[("d", "-d", 0), ("d/x", "-f", 0), ("dd", "-d", 0)],
                batch: &["d/x", "dd"],
                ..BASE
            },
            // A file or folder whose folder we neither hold nor take waits while the pass is
            // open, not after; one whose folder comes in the batch goes.
            Case {
                needs: &[
                    ("d/e", "d", 1),
                    ("d/f", "f", 1),
                    ("e", "d", 1),
                    ("e/f", "f", 1),
                ],
                pass_open: true,
                batch: &["e", "e/f"],
                ..BASE
            },
            Case {
                needs: &[("d/e", "d", 1), ("d/f", "f", 1), ("x/y", "f", 1)],
                local: &[("x", "d", 1)],
                pass_open: true,
                batch: &["x/y"],
                ..BASE
            },
            Case {
                needs: &[("d/e", "d", 1), ("d/f", "f", 1)],
                batch: &["d/e", "d/f"],
                ..BASE
            },
            // A file over a folder of ours waits while the pass is open, not after.
            Case {
                needs: &[("d", "f", 1), ("e", "f", 1)],
                local: &[("d", "d", 1)],
                pass_open: true,
                batch: &["e"],
                ..BASE
            },
            Case {
                needs: &[("d", "f", 1)],
                local: &[("d", "d", 1)],
                batch: &["d"],
                ..BASE
            },
            // ... and after, while what its folder held may wait on disk (review12).
            Case {
                needs: &[("d", "f", 1), ("e", "f", 1)],
                local: &[("d", "d", 1), ("e", "d", 1)],
                on_disk: &["d"],
                batch: &["e"],
                ..BASE
            },
        ];
        let now = Instant::now();
        for (i, c) in cases.iter().enumerate() {
            let needs: BTreeMap<String, Entry> = (c.needs.iter())
                .map(|&(p, w, n)| (p.to_string(), entry(p, w, n, 2)))
                .collect();
            let local: HashMap<&str, Entry> = (c.local.iter())
                .map(|&(p, w, v)| (p, entry(p, w, 0, v)))
                .collect();
            let busy = c.busy.iter().map(|p| p.to_string()).collect();
            let later = now + Duration::from_secs(5);
            let retry = c.retry.iter().map(|p| (p.to_string(), later)).collect();
            let on_disk = |f: &str| c.on_disk.contains(&f);
            let at = Pending {
                needs: &needs,
                busy: &busy,
                retry: &retry,
                now,
                pass_open: c.pass_open,
                waits_inside: &on_disk,
                max_files: c.max_files,
            };
            let (mut batch, moot) = choose(&at, |p| local.get(p).map(Cow::Borrowed));
            let index = {
                let mut ix = crate::store::index::Index::new(1);
                for e in local.values() {
                    ix.put(e.clone());
                }
                ix
            };
            let waits = files_over_full_folders(&batch, &index, &at);
            batch.retain(|r| !waits.contains(&r.path));
            let batch: Vec<&str> = batch.iter().map(|e| e.path.as_str()).collect();
            let moot: Vec<&str> = moot.iter().map(|m| m.as_str()).collect();
            assert_eq!((&batch[..], &moot[..]), (c.batch, c.moot), "case {i}");
        }
    }

    /// A deletion of a file whose content a file still to come has waits for it (a rename),
    /// but not for a file that replaces a folder of ours: that one waits for its folder's
    /// deletions, and two files swapped out of two folders into their places (`a/x` -> `b`,
    /// `b/y` -> `a`) waited on each other for good (review8).
    #[test]
    fn a_rename_holds_its_deletion_back_unless_the_new_name_replaces_a_folder() {
        let with = |e: Entry, h: u8| Entry {
            file_hash: [h; 16],
            ..e
        };
        let needs: BTreeMap<String, Entry> = [
            with(entry("a", "f", 10, 2), 1),
            with(entry("a/x", "-f", 0, 2), 0),
            with(entry("b", "f", 10, 2), 2),
            with(entry("b/y", "-f", 0, 2), 0),
            with(entry("c", "-f", 0, 2), 0),
            with(entry("n", "f", 10, 2), 3),
        ]
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
        let local: HashMap<&str, Entry> = [
            entry("a", "d", 0, 1),
            with(entry("a/x", "f", 10, 1), 2),
            entry("b", "d", 0, 1),
            with(entry("b/y", "f", 10, 1), 1),
            // Renamed to n, which replaces nothing: its deletion waits.
            with(entry("c", "f", 10, 1), 3),
        ]
        .into_iter()
        .map(|e| (e.path.clone().leak() as &str, e))
        .collect();
        let (busy, retry) = (HashSet::new(), BTreeMap::new());
        let at = Pending {
            needs: &needs,
            busy: &busy,
            retry: &retry,
            now: Instant::now(),
            pass_open: false,
            waits_inside: &|_| false,
            max_files: 100,
        };
        let (batch, moot) = choose(&at, |p| local.get(p).map(Cow::Borrowed));
        let batch: Vec<&str> = batch.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(batch, ["a", "a/x", "b", "b/y", "n"]);
        assert!(moot.is_empty());
    }

    #[test]
    fn a_batch_is_full_at_its_first_limit() {
        let gone = Entry {
            deleted: true,
            ..file("gone", 0)
        };
        let mut f = Fill::default();
        // The first entry always fits, however large.
        assert!(f.fits(&file("huge", 10 * BATCH_BYTES), 4));
        f.add(&file("a", BATCH_BYTES - 10));
        // Past the bytes: a file does not fit, a deletion does.
        assert!(!f.fits(&file("b", 20), 4));
        assert!(f.fits(&gone, 4));
        // Past the open files allowed: no more files.
        let mut f = Fill::default();
        for i in 0..3 {
            f.add(&file(&format!("f{i}"), 1));
        }
        assert!(!f.fits(&file("x", 1), 3) && f.fits(&file("x", 1), 4));
        assert!(f.fits(&gone, 3));
        // Past the entries.
        let mut f = Fill::default();
        for _ in 0..BATCH_ENTRIES {
            f.add(&gone);
        }
        assert!(!f.fits(&gone, usize::MAX));
        // Past the memory: entries with long block lists.
        let big = file("big", 70_000 * MIN_BLOCK as u64);
        let mut f = Fill::default();
        f.add(&big);
        assert!(!f.fits(&big, usize::MAX) && big.mem_cost() * 2 > BATCH_MEM);
    }
}
