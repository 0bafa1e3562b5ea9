//! The install log: before received files are renamed into place (and peers' folders made or
//! given their mode), their entries are appended to `.left/installs`, and the filesystem sync
//! that makes the files' data durable makes these records durable too (no fsync of its own).
//! A short "done" record then names its path: for a file just before its rename (after a
//! crash, a file's install marked done whose temp file is gone was renamed in), for a folder or
//! a mode once applied. After a crash or a power
//! cut, a file on disk whose content is the one a record names was received, not edited here:
//! the scanner takes the record's version for it instead of making a new local version, which
//! would otherwise be a concurrent edit of what the peers hold (a spurious conflict copy). And
//! what was done, then changed or deleted by the user while we were down, is a change of the
//! received version, not of the older one the index holds (review15). Once the index is saved
//! with those installs in it, the log is emptied.

use crate::error::{Context, Result};
use crate::store::codec::{self, Dec, Enc};
use crate::store::entry::Entry;
use crate::store::version::Order;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes of the log read back at start (it cannot grow so large: it is emptied at every index
/// save); what lies past them is left out, as a record cut short is.
const MAX_READ: u64 = 256 << 20;
/// Files the log may name (it is emptied at every index save, and a group holds at most 1,024):
/// a log naming more is not used, and the scan takes those files as without it.
const MAX_RECORDS: usize = 1 << 16;
/// Memory the entries read back may take ([`Entry::mem_cost`]).
const MAX_HELD: usize = 16 << 20;
/// The bit of a record's length that makes it a "done" record (its body a path): entries are
/// far shorter ([`codec::MAX_ENTRY_BYTES`]).
const DONE: u32 = 1 << 31;

/// What the log held at start.
#[derive(Default, Debug)]
pub struct Logged {
    /// The last entry logged for each path.
    pub entries: HashMap<String, Entry>,
    /// Per path, the entries marked done, oldest first: the last two (a file's last one may
    /// have been cut before its rename: then the one before it is what the file holds).
    pub done: HashMap<String, Vec<Entry>>,
    /// Paths whose last record is a done one: a complete temp file of theirs can only be the
    /// last done install's, cut before its rename. After a later entry (a pull of it again,
    /// whose install was refused: the file changed here), the temp file is that pull's
    /// (review19).
    pub done_last: std::collections::HashSet<String>,
}

/// The open log and how much it holds.
#[derive(Default)]
pub struct Log {
    path: PathBuf,
    file: Option<File>,
    len: u64,
}

impl Log {
    pub fn new(state_dir: &Path) -> Log {
        let path = state_dir.join("installs");
        // What it holds from before a crash counts (opened at the first write or clear): an
        // index saved after the first scan records all of it, and the log can go then, not
        // only once something new is logged (review21).
        let len = crate::sys::open::open_state(&path).map_or(0, |f| whole_len(&f));
        Log {
            path,
            file: None,
            len,
        }
    }

    /// Appends the entries about to be installed. Durable with the next filesystem sync.
    pub fn append<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            let mut enc = Enc::default();
            codec::put_entry(&mut enc, e);
            put_record(&mut buf, 0, &enc.0);
        }
        self.write(&buf)
    }

    /// Notes that the installs of `paths` logged last are done (a file's is about to be
    /// renamed in, a folder made): what is found changed or gone there after a crash was
    /// changed here since (for a file, once its temp file is gone).
    pub fn done<'a>(&mut self, paths: impl IntoIterator<Item = &'a str>) {
        let mut buf = Vec::new();
        for p in paths {
            put_record(&mut buf, DONE, p.as_bytes());
        }
        if let Err(e) = self.write(&buf) {
            warn!("{e}");
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.open()?;
        if let Some(f) = &self.file {
            f.write_all_at(buf, self.len).at(&self.path)?;
            self.len += buf.len() as u64;
        }
        Ok(())
    }

    /// Opens the log at its first use; what it holds from before a crash stays until an index
    /// with it is saved.
    fn open(&mut self) -> Result<()> {
        if self.file.is_none() {
            let f = crate::sys::open::open_own(&self.path).at(&self.path)?;
            let len = whole_len(&f);
            if f.metadata().at(&self.path)?.len() > len {
                f.set_len(len).at(&self.path)?;
            }
            self.len = len;
            self.file = Some(f);
        }
        Ok(())
    }

    /// How much the log holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Empties the log if it still holds `len` bytes (nothing was appended since): the index
    /// saved since records every install it names.
    pub fn clear_if(&mut self, len: u64) {
        if len == 0 || self.len != len {
            return;
        }
        if let Err(e) = self.open() {
            warn!("{e}");
        }
        if let Some(f) = &self.file
            && self.len == len
            && f.set_len(0).is_ok()
        {
            self.len = 0;
        }
    }
}

fn put_record(buf: &mut Vec<u8>, flag: u32, body: &[u8]) {
    buf.extend_from_slice(&(body.len() as u32 | flag).to_be_bytes());
    buf.extend_from_slice(&crate::hash::xxh64(body).to_be_bytes());
    buf.extend_from_slice(body);
}

/// Reads what the log at start holds, by path (the last record of a path wins). A record cut
/// short or damaged ends the reading: what comes after it was never made durable.
pub fn load(state_dir: &Path) -> Logged {
    let path = state_dir.join("installs");
    let mut out = Logged::default();
    let Ok(f) = crate::sys::open::open_state(&path) else {
        return out;
    };
    // Record by record, each no larger than the largest entry: a damaged or planted log
    // costs no more memory than what its records name.
    let mut r = std::io::BufReader::with_capacity(64 << 10, f.take(MAX_READ));
    let (mut body, mut held) = (Vec::new(), 0usize);
    while let Some(done) = next_record(&mut r, &mut body) {
        if done {
            // Of the last entry logged for the path (none: an index save emptied the log).
            match std::str::from_utf8(&body) {
                Ok(p) => {
                    if let Some(e) = out.entries.get(p) {
                        let done = out.done.entry(p.to_string()).or_default();
                        if done.last() != Some(e) {
                            held += e.mem_cost();
                            done.push(e.clone());
                        }
                        if done.len() > 2 {
                            done.remove(0);
                        }
                        out.done_last.insert(p.to_string());
                    }
                }
                Err(_) => break,
            }
            continue;
        }
        let mut d = Dec::new(&body);
        match codec::get_entry(&mut d) {
            Ok(e) if crate::store::names::check(&e.path).is_ok() => {
                held += e.mem_cost();
                out.done_last.remove(&e.path);
                out.entries.insert(e.path.clone(), e);
            }
            _ => break,
        }
        if out.entries.len() > MAX_RECORDS || held > MAX_HELD {
            warn!(
                "{}: holds more than an install log can; not used",
                crate::error::shown(&path).display()
            );
            return Logged::default();
        }
    }
    out
}

/// Reads the next whole record into `body`; whether it is a done one. `None` at the end, or at
/// a record cut short or damaged: what comes after it was never made durable.
fn next_record(r: &mut impl Read, body: &mut Vec<u8>) -> Option<bool> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head).ok()?;
    let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let (done, n) = (n & DONE != 0, (n & !DONE) as usize);
    let sum = u64::from_be_bytes([
        head[4], head[5], head[6], head[7], head[8], head[9], head[10], head[11],
    ]);
    if n > codec::MAX_ENTRY_BYTES {
        return None;
    }
    body.resize(n, 0);
    r.read_exact(body).ok()?;
    (crate::hash::xxh64(body) == sum).then_some(done)
}

/// The length of the whole records the log `f` starts with: appends go after them, over a
/// record a crash cut short (else [`load`], which stops there, never read them: review22).
fn whole_len(f: &File) -> u64 {
    let mut r = std::io::BufReader::with_capacity(64 << 10, f.take(MAX_READ));
    let (mut len, mut body) = (0u64, Vec::new());
    while next_record(&mut r, &mut body).is_some() {
        len += 12 + body.len() as u64;
    }
    len
}

/// Whether a file found changed at start, with content `hash` of `size` bytes and `mode`, is
/// the install `rec` names, made after the index was last saved (`cur`, what the index holds
/// for the path): its version is then the record's, not a new local one.
pub fn received(
    rec: &Entry,
    cur: Option<&Entry>,
    (hash, size, mode): (&crate::hash::Hash, u64, u32),
) -> bool {
    rec.is_file()
        && rec.file_hash == *hash
        && rec.size == size
        && rec.file_mode() == mode
        && cur.is_none_or(|c| {
            matches!(
                rec.version.compare(&c.version),
                Order::Newer | Order::Concurrent
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::version::Version;

    fn file(path: &str, content: u8, v: &[(u64, u64)]) -> Entry {
        let blocks: Box<[crate::hash::Hash]> = vec![[content; 16]].into();
        Entry {
            path: path.into(),
            size: 10,
            mode: 0o644,
            version: Version::from_pairs(v.to_vec()),
            block_size: crate::store::entry::MIN_BLOCK,
            file_hash: crate::hash::list_hash(&blocks),
            blocks,
            ..Entry::default()
        }
    }

    /// A record cut short at the end (a crash in the middle of an append) is written over by
    /// the next start's first append, which is then read back; the log's length counts only
    /// whole records, so an index save empties it.
    #[test]
    fn appends_after_a_torn_record_are_read_back() {
        let dir = std::env::temp_dir().join(format!("left-intents-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (file("a", 1, &[(1, 5)]), file("b", 2, &[(1, 6)]));
        let mut log = Log::new(&dir);
        log.append([&a]).unwrap();
        log.done(["a"]);
        let whole = log.len();
        drop(log);
        let path = dir.join("installs");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 1, 0, 9, 9, 9]);
        std::fs::write(&path, &bytes).unwrap();
        let mut log = Log::new(&dir);
        assert_eq!(log.len(), whole);
        log.append([&b]).unwrap();
        log.done(["b"]);
        let got = load(&dir);
        assert_eq!(got.done["a"], std::slice::from_ref(&a));
        assert_eq!(got.done["b"], std::slice::from_ref(&b));
        let len = log.len();
        log.clear_if(len);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A "done" record marks the last entry logged for its path; a later entry for the path
    /// is not done until its own record comes (the earlier one stays done); a record for a
    /// path never logged means nothing.
    #[test]
    fn done_records_mark_the_last_install_of_a_path() {
        let dir = std::env::temp_dir().join(format!("left-intents-done-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = Log::new(&dir);
        let (a, b) = (file("a", 1, &[(1, 5)]), file("d/b", 2, &[(1, 6)]));
        log.done(["a"]);
        log.append([&a, &b]).unwrap();
        log.done(["a", "d/b"]);
        let got = load(&dir);
        assert_eq!(got.done.len(), 2);
        // A later entry of "a", not done: the earlier one stays done.
        let a2 = file("a", 3, &[(1, 7)]);
        log.append([&a2]).unwrap();
        let got = load(&dir);
        assert_eq!(got.done["a"], std::slice::from_ref(&a));
        assert_eq!(got.done["d/b"], std::slice::from_ref(&b));
        // ... and a temp file of "a" now is that later pull's, not one cut before its rename.
        assert!(!got.done_last.contains("a") && got.done_last.contains("d/b"));
        log.done(["a"]);
        let got = load(&dir);
        assert_eq!(got.done["a"], [a.clone(), a2.clone()]);
        assert!(got.done_last.contains("a"));
        // Only the last two are kept.
        let a3 = file("a", 4, &[(1, 8)]);
        log.append([&a3]).unwrap();
        log.done(["a"]);
        assert_eq!(load(&dir).done["a"], [a2.clone(), a3]);
        // A "done" record cut short is no record.
        let full = std::fs::read(dir.join("installs")).unwrap();
        std::fs::write(dir.join("installs"), &full[..full.len() - 1]).unwrap();
        let got = load(&dir);
        assert_eq!(got.done["a"], [a, a2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_survive_a_cut_and_only_matching_content_is_taken() {
        let dir = std::env::temp_dir().join(format!("left-intents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = Log::new(&dir);
        let (a, b) = (file("a", 1, &[(1, 5)]), file("d/b", 2, &[(1, 6)]));
        log.append([&a, &b]).unwrap();
        let a2 = file("a", 3, &[(1, 7)]);
        log.append([&a2]).unwrap();
        let got = load(&dir).entries;
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"], a2);
        assert_eq!(got["d/b"], b);

        // A record cut short (a crash while appending) ends the log; the others stand.
        let full = std::fs::read(dir.join("installs")).unwrap();
        std::fs::write(dir.join("installs"), &full[..full.len() - 3]).unwrap();
        let got = load(&dir).entries;
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"], a);
        // A damaged byte likewise.
        let mut bad = full.clone();
        bad[20] ^= 1;
        std::fs::write(dir.join("installs"), &bad).unwrap();
        assert!(load(&dir).entries.is_empty());

        // Emptied only if nothing was appended since its length was read.
        std::fs::remove_file(dir.join("installs")).unwrap();
        let mut log = Log::new(&dir);
        log.append([&a]).unwrap();
        let n = log.len();
        log.append([&b]).unwrap();
        log.clear_if(n);
        assert_eq!(load(&dir).entries.len(), 2);
        log.clear_if(log.len());
        assert!(load(&dir).entries.is_empty());

        // What counts as received: the record's content and mode, a version not older than
        // the index's.
        let m = (&a.file_hash, a.size, 0o644);
        assert!(received(&a, None, m));
        assert!(received(&a, Some(&file("a", 9, &[(1, 4)])), m));
        assert!(received(&a, Some(&file("a", 9, &[(2, 4)])), m));
        assert!(!received(&a, Some(&file("a", 9, &[(1, 5)])), m));
        assert!(!received(&a, Some(&file("a", 9, &[(1, 9)])), m));
        assert!(!received(&a, None, (&b.file_hash, a.size, 0o644)));
        assert!(!received(&a, None, (&a.file_hash, a.size, 0o600)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
