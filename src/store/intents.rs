//! The install log: before received files are renamed into place, their entries are appended
//! to `.left/installs`, and the filesystem sync that makes the files' data durable makes these
//! records durable too (no fsync of its own). After a crash or a power cut, a file on disk
//! whose content is the one a record names was received, not edited here: the scanner takes
//! the record's version for it instead of making a new local version, which would otherwise
//! be a concurrent edit of what the peers hold (a spurious conflict copy). Once the index is
//! saved with those installs in it, the log is emptied.

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

/// The open log and how much it holds.
#[derive(Default)]
pub struct Log {
    path: PathBuf,
    file: Option<File>,
    len: u64,
}

impl Log {
    pub fn new(state_dir: &Path) -> Log {
        Log {
            path: state_dir.join("installs"),
            file: None,
            len: 0,
        }
    }

    /// Appends the entries about to be installed. Durable with the next filesystem sync.
    pub fn append<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> Result<()> {
        let mut buf = Vec::new();
        for e in entries {
            let mut enc = Enc::default();
            codec::put_entry(&mut enc, e);
            let body = enc.0;
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crate::hash::xxh64(&body).to_be_bytes());
            buf.extend_from_slice(&body);
        }
        if self.file.is_none() {
            // What it holds from before a crash stays until an index with it is saved.
            let f = crate::sys::open::open_own(&self.path).at(&self.path)?;
            self.len = f.metadata().at(&self.path)?.len();
            self.file = Some(f);
        }
        let Some(f) = &self.file else {
            return Ok(());
        };
        f.write_all_at(&buf, self.len).at(&self.path)?;
        self.len += buf.len() as u64;
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
        if let Some(f) = &self.file
            && f.set_len(0).is_ok()
        {
            self.len = 0;
        }
    }
}

/// Reads what the log at start holds, by path (the last record of a path wins). A record cut
/// short or damaged ends the reading: what comes after it was never made durable.
pub fn load(state_dir: &Path) -> HashMap<String, Entry> {
    let path = state_dir.join("installs");
    let mut out = HashMap::new();
    let Ok(f) = crate::sys::open::open_state(&path) else {
        return out;
    };
    // Record by record, each no larger than the largest entry: a damaged or planted log
    // costs no more memory than what its records name.
    let mut r = std::io::BufReader::with_capacity(64 << 10, f.take(MAX_READ));
    let (mut body, mut held) = (Vec::new(), 0usize);
    loop {
        let mut head = [0u8; 12];
        if r.read_exact(&mut head).is_err() {
            break;
        }
        let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let sum = u64::from_be_bytes([
            head[4], head[5], head[6], head[7], head[8], head[9], head[10], head[11],
        ]);
        if n > codec::MAX_ENTRY_BYTES {
            break;
        }
        body.resize(n, 0);
        if r.read_exact(&mut body).is_err() || crate::hash::xxh64(&body) != sum {
            break;
        }
        let mut d = Dec::new(&body);
        match codec::get_entry(&mut d) {
            Ok(e) if crate::store::names::check(&e.path).is_ok() => {
                held += e.mem_cost();
                out.insert(e.path.clone(), e);
            }
            _ => break,
        }
        if out.len() > MAX_RECORDS || held > MAX_HELD {
            warn!(
                "{}: holds more than an install log can; not used",
                crate::error::shown(&path).display()
            );
            return HashMap::new();
        }
    }
    out
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
        let got = load(&dir);
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"], a2);
        assert_eq!(got["d/b"], b);

        // A record cut short (a crash while appending) ends the log; the others stand.
        let full = std::fs::read(dir.join("installs")).unwrap();
        std::fs::write(dir.join("installs"), &full[..full.len() - 3]).unwrap();
        let got = load(&dir);
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"], a);
        // A damaged byte likewise.
        let mut bad = full.clone();
        bad[20] ^= 1;
        std::fs::write(dir.join("installs"), &bad).unwrap();
        assert!(load(&dir).is_empty());

        // Emptied only if nothing was appended since its length was read.
        std::fs::remove_file(dir.join("installs")).unwrap();
        let mut log = Log::new(&dir);
        log.append([&a]).unwrap();
        let n = log.len();
        log.append([&b]).unwrap();
        log.clear_if(n);
        assert_eq!(load(&dir).len(), 2);
        log.clear_if(log.len());
        assert!(load(&dir).is_empty());

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
