//! The scanner: notices what changed in the share by comparing metadata with the index, hashes
//! only files whose size, mtime, inode or mode changed, and records new versions and deletions.
//! A full scan walks the whole share; a scan woken by inotify walks only the folders that had
//! events (and new folders inside them).

use crate::error::{Context, Error, Result};
use crate::hash;
use crate::ignore::{self, Ignore};
use crate::index::{Entry, FAST_MIN_BLOCKS, Kind, Stat, block_size_for};
use crate::model::{Model, State};
use crate::names;
use crate::names::O_NOFOLLOW;
use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What one scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub changed: usize,
    pub deleted: usize,
    /// Files seen changing while hashed: looked at again next time.
    pub unstable: usize,
    /// Time spent walking the tree (metadata only, no hashing).
    pub walk: std::time::Duration,
}

/// A file to hash: its path, what it looked like, and the index entry's seq when seen.
struct Candidate {
    path: String,
    stat: Stat,
    seq: Option<u64>,
}

/// Scans the share once: all of it, or (`dirs`) only those folders, relative to the share, and
/// new folders found in them. `generation` must differ from the previous call's.
pub fn scan(
    model: &Model,
    generation: u32,
    dirs: Option<&HashSet<String>>,
    mut watcher: Option<&mut crate::watch::Watcher>,
) -> Result<Scan> {
    let root = &model.root;
    // A missing state directory means the folder is not the one the index describes (an
    // unmounted disk, say): never infer deletions from it.
    fs::metadata(root.join(names::STATE_DIR)).at(root.join(names::STATE_DIR))?;
    let ignore = load_ignore(model);
    // Files written since the last scan are hashed again even if their stat looks unchanged.
    let written: HashSet<String> = watcher
        .as_deref_mut()
        .map(|w| w.take_written())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.strip_prefix(root).ok()?.to_str().map(str::to_string))
        .collect();
    let mut out = Scan::default();
    let mut failed: Vec<String> = Vec::new();
    let mut candidates = Vec::new();
    let started = std::time::Instant::now();
    let mut stack: Vec<String> = match dirs {
        Some(d) => d.iter().cloned().collect(),
        None => vec![String::new()],
    };
    let mut walked: Vec<String> = Vec::new();
    // Folders of the index that are something else now: what they held is gone.
    let mut not_dirs: Vec<String> = Vec::new();
    let mut visited: HashSet<String> = HashSet::new();
    let mut warned_names = HashSet::new();
    while let Some(dir) = stack.pop() {
        if !visited.insert(dir.clone()) {
            continue;
        }
        let abs = root.join(&dir);
        let rd = match fs::read_dir(&abs) {
            Ok(rd) => rd,
            // Gone, or not a folder any more: the scan of the folder that held it says so.
            Err(e)
                if dirs.is_some()
                    && (e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20)) =>
            {
                continue;
            }
            Err(e) => {
                warn!("{}: cannot read folder: {e}", abs.display());
                failed.push(dir);
                continue;
            }
        };
        if let Some(w) = watcher.as_deref_mut() {
            w.add(&abs);
        }
        walked.push(dir.clone());
        let mut children = Vec::new();
        for ent in rd {
            let Ok(ent) = ent else { continue };
            let name = ent.file_name();
            let Some(name) = name.to_str() else {
                if warned_names.insert(ent.path()) {
                    debug!("{}: skipped: name is not UTF-8", ent.path().display());
                }
                continue;
            };
            if (dir.is_empty() && name == names::STATE_DIR) || names::is_temp(name) {
                continue;
            }
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            match ent.metadata() {
                Ok(md) => children.push((path, md)),
                Err(_) => failed.push(path),
            }
        }
        let mut g = model.lock();
        let st = &mut *g;
        let device = st.index.device;
        for (path, md) in children {
            let stat = Stat::of(&md);
            let cur = st.index.get_mut(&path);
            if !md.is_dir()
                && cur
                    .as_ref()
                    .is_some_and(|e| e.kind == Kind::Dir && !e.deleted)
            {
                not_dirs.push(path.clone());
            }
            if !ignore.is_empty() && ignore.is_ignored(&path, md.is_dir()) {
                // Ignored: neither sent nor deleted; what the index had stays as it was.
                if let Some(e) = cur {
                    e.scan_gen = generation;
                }
                continue;
            }
            if md.is_dir() {
                match cur {
                    Some(e) if e.kind == Kind::Dir && !e.deleted => {
                        e.scan_gen = generation;
                        // A partial scan walks a folder we knew only if it had events, or if
                        // it is not watched yet (made by a pull: what came into it since would
                        // have made no event).
                        let watched = watcher
                            .as_deref()
                            .is_some_and(|w| w.watches(&root.join(&path)));
                        if dirs.is_some() && watched {
                            continue;
                        }
                    }
                    _ => {
                        let version = cur
                            .map(|e| e.version.bumped(device))
                            .unwrap_or_else(|| crate::version::Version::default().bumped(device));
                        let e = Entry {
                            path: path.clone(),
                            kind: Kind::Dir,
                            mode: stat.mode,
                            mtime: stat.mtime,
                            mtime_ns: stat.mtime_ns,
                            modified_by: device,
                            version,
                            stat,
                            scan_gen: generation,
                            ..Entry::default()
                        };
                        info!("new folder {path}/");
                        st.put(e);
                        out.changed += 1;
                    }
                }
                stack.push(path);
            } else if md.is_file() {
                match cur {
                    Some(e) if e.is_file() && e.stat == stat && !written.contains(&path) => {
                        e.scan_gen = generation
                    }
                    Some(e) => {
                        e.scan_gen = generation;
                        if e.stat == stat {
                            debug!("{path}: written since the last scan");
                        } else {
                            debug!("{path}: stat {:?} -> {stat:?}", e.stat);
                        }
                        candidates.push(Candidate {
                            path,
                            stat,
                            seq: Some(e.seq),
                        })
                    }
                    None => candidates.push(Candidate {
                        path,
                        stat,
                        seq: None,
                    }),
                }
            } else {
                // Symlinks and special files are not synced (see the README).
                if let Some(e) = cur {
                    e.scan_gen = generation;
                }
            }
        }
    }
    out.walk = started.elapsed();
    let moved = find_moved(model, &candidates);
    let mut moves = Vec::new();
    for c in candidates {
        if let Some(old) = moved.get(&c.path) {
            moves.push((c, old));
            continue;
        }
        match hash_one(model, &c) {
            Ok(true) => out.changed += 1,
            Ok(false) => {}
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {}
            Err(e) => {
                debug!("{e}");
                out.unstable += 1;
            }
        }
    }
    // Whatever the index has that this scan did not see is gone, unless its folder was unreadable.
    let mut g = model.lock();
    let st = &mut *g;
    // A moved file's new name and its old name's deletion are recorded together, so a peer
    // learns both at once and can move its copy instead of copying it.
    for (c, old) in moves {
        if record(
            st,
            &c,
            old.blocks.to_vec(),
            old.fast.to_vec(),
            old.block_size,
        ) {
            out.changed += 1;
        }
    }
    let device = st.index.device;
    let unseen = |e: &Entry| !e.deleted && e.scan_gen != generation;
    let gone: Vec<String> = match dirs {
        None => st
            .index
            .values()
            .filter(|e| unseen(e))
            .filter(|e| {
                !failed
                    .iter()
                    .any(|f| e.path == *f || e.path.starts_with(&format!("{f}/")) || f.is_empty())
            })
            .map(|e| e.path.clone())
            .collect(),
        // What a walked folder held and no longer does, and whatever was inside a folder gone.
        Some(_) => {
            let entries = &st.index;
            let inside = |dir: &str| -> Vec<String> {
                let prefix = format!("{dir}/");
                entries
                    .from(Bound::Included(prefix.as_str()))
                    .take_while(|x| x.path.starts_with(&prefix))
                    .filter(|x| !x.deleted)
                    .map(|x| x.path.clone())
                    .collect()
            };
            let mut gone = Vec::new();
            for d in &walked {
                for e in children(entries, d).into_iter().filter(|e| unseen(e)) {
                    if e.kind == Kind::Dir {
                        gone.extend(inside(&e.path));
                    }
                    gone.push(e.path.clone());
                }
            }
            for d in &not_dirs {
                gone.extend(inside(d));
            }
            gone
        }
    };
    let mut gone: Vec<String> = gone
        .into_iter()
        .filter(|p| {
            ignore.is_empty()
                || !st
                    .index
                    .get(p)
                    .is_some_and(|e| ignore.is_ignored(&e.path, e.kind == Kind::Dir))
        })
        .collect();
    // What a folder held is deleted before the folder (a name sorts after its folder's): a
    // peer takes deletions in this order.
    gone.sort_unstable_by(|a, b| b.cmp(a));
    gone.dedup();
    for path in gone {
        if fs::symlink_metadata(root.join(&path)).is_ok() {
            continue; // created since the folder was read (by a pull): next scan sees it
        }
        let Some(old) = st.index.get(&path) else {
            continue;
        };
        let e = Entry {
            path: path.clone(),
            kind: old.kind,
            deleted: true,
            mtime: now_secs(),
            modified_by: device,
            version: old.version.bumped(device),
            scan_gen: generation,
            ..Entry::default()
        };
        info!("deleted locally: {path}");
        st.put(e);
        out.deleted += 1;
    }
    if !st.scanned {
        st.scanned = true;
        // Connections hold back IndexDone until now.
        for p in st.peers.values() {
            let _ = p.out.send(crate::model::Out::Announce);
        }
    }
    Ok(out)
}

/// The entries directly inside folder `dir` ("" for the top), found without walking what is
/// deeper: each subfolder's range of names is skipped over.
fn children<'a>(entries: &'a crate::index::Index, dir: &str) -> Vec<&'a Entry> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out = Vec::new();
    let mut from = Bound::Included(prefix.clone());
    loop {
        let bound = match &from {
            Bound::Included(s) => Bound::Included(s.as_str()),
            Bound::Excluded(s) => Bound::Excluded(s.as_str()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let Some(e) = entries.from(bound).next() else {
            break;
        };
        let k = &e.path;
        let Some(rest) = k.strip_prefix(&prefix) else {
            break;
        };
        match rest.find('/') {
            None => {
                out.push(e);
                from = Bound::Excluded(k.clone());
            }
            // Deeper: go on after every name that starts with "prefix/sub/" ('0' follows '/').
            Some(i) => from = Bound::Included(format!("{prefix}{}0", &rest[..i])),
        }
    }
    out
}

/// Reads `.leftignore` at the top of the share when it changed, and returns the patterns in
/// force (also kept in the model, where incoming entries are checked against them).
fn load_ignore(model: &Model) -> Ignore {
    let path = model.root.join(ignore::FILE_NAME);
    let text = match fs::metadata(&path) {
        Ok(md) if md.is_file() && md.len() <= 1 << 20 => {
            fs::read_to_string(&path).unwrap_or_default()
        }
        Ok(_) => {
            warn!("{}: not a text file under 1 MiB; ignored", path.display());
            String::new()
        }
        Err(_) => String::new(),
    };
    let mut g = model.lock();
    if g.ignore_text != text {
        let ig = Ignore::parse(&text);
        if ig.skipped() > 0 {
            warn!(
                "{}: {} lines can never match and were skipped",
                path.display(),
                ig.skipped()
            );
        }
        if !text.is_empty() {
            info!("{}: {} patterns in force", path.display(), ig.len());
        }
        g.ignore = ig;
        g.ignore_text = text;
    }
    g.ignore.clone()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// New paths that are a file the index knows under another name, now gone (renamed or moved):
/// same inode, size and mtime. Their hashes are taken over instead of hashing again.
fn find_moved(model: &Model, candidates: &[Candidate]) -> std::collections::HashMap<String, Entry> {
    let mut out = std::collections::HashMap::new();
    let fresh: std::collections::HashMap<u64, &Candidate> = candidates
        .iter()
        .filter(|c| c.seq.is_none())
        .map(|c| (c.stat.ino, c))
        .collect();
    if fresh.is_empty() {
        return out;
    }
    let g = model.lock();
    for e in g.index.values().filter(|e| e.is_file()) {
        if let Some(c) = fresh.get(&e.stat.ino)
            && e.stat == c.stat
            && e.path != c.path
            && fs::symlink_metadata(model.root.join(&e.path)).is_err()
        {
            out.insert(c.path.clone(), e.clone());
        }
    }
    out
}

/// Hashes one changed file and records a new version if its content or mode changed. Blocks
/// whose XXH64 is the one recorded last time keep their MD5; a file that changes while it is
/// hashed is left for the next scan.
fn hash_one(model: &Model, c: &Candidate) -> Result<bool> {
    let path = model.root.join(&c.path);
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW)
        .open(&path)
        .at(&path)?;
    let before = Stat::of(&f.metadata().at(&path)?);
    if before != c.stat {
        return Err(Error::msg("changed while scanning").at(&path));
    }
    let bs = block_size_for(before.size);
    let prev = {
        let g = model.lock();
        g.index
            .get(&c.path)
            .filter(|e| e.is_file() && e.block_size == bs && !e.fast.is_empty())
            .map(|e| (e.size, e.blocks.clone(), e.fast.clone()))
    };
    let prev = prev.as_ref().map(|(size, blocks, fast)| hash::Previous {
        size: *size,
        blocks,
        fast,
    });
    let same = || f.metadata().is_ok_and(|m| Stat::of(&m) == before);
    let b = hash::file_blocks(&f, before.size, bs, prev, &same).at(&path)?;
    let after = Stat::of(&fs::symlink_metadata(&path).at(&path)?);
    if after != before {
        return Err(Error::msg("file changed during hashing; will retry").at(&path));
    }
    if prev.is_some() && b.hashed < b.md5.len() {
        debug!("{}: {} of {} blocks changed", c.path, b.hashed, b.md5.len());
    }
    Ok(record(&mut model.lock(), c, b.md5, b.fast, bs))
}

/// Records what a candidate holds; true if that is a new version.
fn record(
    st: &mut State,
    c: &Candidate,
    blocks: Vec<crate::hash::Hash>,
    mut fast: Vec<u64>,
    bs: u32,
) -> bool {
    let before = c.stat;
    if blocks.len() < FAST_MIN_BLOCKS {
        fast = Vec::new();
    }
    let file_hash = hash::list_hash(&blocks);
    let cur = st.index.get(&c.path);
    if cur.map(|e| e.seq) != c.seq {
        return false; // a pull replaced it meanwhile
    }
    if let Some(e) = cur
        && e.is_file()
        && e.file_hash == file_hash
        && e.size == before.size
        && e.mode == before.mode
    {
        // Same content (touched, or installed by us before a crash): no new version.
        st.index.set_local(&c.path, before, fast);
        st.dirty = true;
        return false;
    }
    let device = st.index.device;
    let version = match st.index.get(&c.path) {
        Some(e) => e.version.bumped(device),
        None => crate::version::Version::default().bumped(device),
    };
    let e = Entry {
        path: c.path.clone(),
        kind: Kind::File,
        deleted: false,
        size: before.size,
        mtime: before.mtime,
        mtime_ns: before.mtime_ns,
        mode: before.mode,
        modified_by: device,
        version,
        block_size: bs,
        blocks: blocks.into(),
        file_hash,
        fast: fast.into(),
        seq: 0,
        stat: before,
        scan_gen: u32::MAX,
    };
    info!("changed locally: {} ({} bytes)", c.path, before.size);
    st.put(e);
    true
}

/// Removes temp files whose target is not being pulled and which are older than `max_age`.
pub fn clean_temps(root: &Path, max_age: std::time::Duration) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for ent in rd.flatten() {
            let Ok(md) = ent.metadata() else { continue };
            let name = ent.file_name();
            if md.is_dir() && !(d == root && name == names::STATE_DIR) {
                stack.push(ent.path());
            } else if md.is_file()
                && name.to_str().is_some_and(names::is_temp)
                && md
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|a| a > max_age)
            {
                let _ = fs::remove_file(ent.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_found_without_walking_deeper() {
        let mut m = crate::index::Index::new(1);
        for p in [
            "a", "a.txt", "a/b", "a/b/c", "a/b/c/d", "a/b.txt", "a/z", "a0", "b", "b/x", "ab/y",
        ] {
            m.put(Entry {
                path: p.to_string(),
                ..Entry::default()
            });
        }
        let names =
            |d: &str| -> Vec<String> { children(&m, d).iter().map(|e| e.path.clone()).collect() };
        assert_eq!(names(""), vec!["a", "a.txt", "a0", "b"]);
        assert_eq!(names("a"), vec!["a/b", "a/b.txt", "a/z"]);
        assert_eq!(names("a/b"), vec!["a/b/c"]);
        assert_eq!(names("ab"), vec!["ab/y"]);
        assert!(names("a/b/c/d").is_empty());
        assert!(names("nothing").is_empty());
    }
}
