//! Installing what a peer sent, under the model's rules: a verified file renamed into place
//! (or kept as a conflict copy when a local edit wins), a folder made or given its mode, a
//! deletion applied; and how a need ended (done, or retried later).

use crate::error::{Context, Error, Result};
use crate::store::entry::{Entry, Kind, Stat};
use crate::store::names;
use crate::store::version::{Order, Version};
use crate::sync::disk::{clear_temps, free_temp_name, remove_temp, same_bytes};
use crate::sync::link::Link;
use crate::sync::model::{Decision, Model, State, decide};
use crate::sys::dirfd::Dir;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Records how a need ended: done (dropped), or failed (retried later).
pub fn finish_need(link: &Link<'_>, e: &Entry, r: Result<()>) {
    need_done(link.model, link.conn, e, r)
}

/// [`finish_need`] for connection `conn`.
pub fn need_done(model: &Model, conn: u64, e: &Entry, r: Result<()>) {
    let mut g = model.lock();
    if r.is_err() {
        g.keep_temp(e);
    }
    let Some(p) = g.peers.get_mut(&conn) else {
        return;
    };
    match r {
        Ok(()) => {
            if p.needs.get(&e.path).is_some_and(|n| n.version == e.version) {
                p.needs.remove(&e.path);
            }
            p.retry.remove(&e.path);
        }
        Err(err) => {
            // A peer that fails every request would otherwise make a line per entry it
            // announced, again at every retry: 20 in 10 s, with a count.
            static FAILED: crate::log::Throttle =
                crate::log::Throttle::new(Duration::from_secs(10), 20);
            if let Some(more) = FAILED.pass() {
                warn!("{}: not synced yet: {err}{more}", e.path);
            }
            p.retry.insert(e.path.clone(), Instant::now() + RETRY_AFTER);
            g.last_error = Some((std::time::SystemTime::now(), format!("{}: {err}", e.path)));
        }
    }
}

/// Moves `from` (a file in `dir`) to a conflict name for `path`, made from `mtime` and
/// `device`: the first free one (a name taken gets the next number), never replacing anything.
/// Where a name taken before holds this very content (`hash` as the index knows that name's
/// file, and byte for byte: a stat can hide an edit), the moved file is removed again: the
/// content is kept there already (a peer kept the same losing version, and its copy synced
/// here). Moved first, compared after: whatever a user put at `from` meanwhile is what is
/// compared, and kept unless the copy holds it. Returns the name the content is kept under.
fn keep_aside(
    st: &State,
    dir: &Dir,
    from: &str,
    path: &str,
    (mtime, device, hash): (i64, u64, &crate::hash::Hash),
) -> Result<String> {
    let mut same: Option<String> = None;
    for n in 1..=1000 {
        let name = names::conflict_name(path, mtime, device, n);
        let (_, file) = names::split(&name);
        match dir.rename_noreplace(from, file) {
            Ok(()) => {
                return match same {
                    Some(kept) if same_bytes(dir, file, names::split(&kept).1) => {
                        dir.unlink(file).at(&name).map(|()| kept)
                    }
                    _ => Ok(name),
                };
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let known = st
                    .index
                    .get(&name)
                    .is_some_and(|c| c.is_file() && c.file_hash == *hash);
                if same.is_none() && *hash != crate::hash::Hash::default() && known {
                    same = Some(name);
                }
            }
            Err(err) => return Err(Error::from(err).at(&name)),
        }
    }
    Err(Error::msg("no free name for a conflict copy").at(path))
}

/// Moves the file `name` of `dir`, the one our index has at `path` (`known`: its stat), to
/// `side` (a temp name of ours, free), never what a user put there after a check: moved first
/// (never over anything), then looked at, and put back if it is not that file. Ok(false):
/// nothing was there.
fn move_known(
    st: &State,
    dir: &Dir,
    (name, side): (&str, &str),
    path: &str,
    known: Option<Stat>,
) -> Result<bool> {
    let changed = || Error::msg("changed locally; will look again after the next scan").at(path);
    match dir.rename_noreplace(name, side) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return Err(changed()),
        Err(err) => return Err(Error::from(err).at(path)),
    }
    let there = dir.stat(side).at(path)?;
    if there.is_some_and(|m| m.is_file() && Some(Stat::of(&m)) == known) {
        return Ok(true);
    }
    put_back(st, dir, (side, name), path)?;
    Err(changed())
}

/// Puts a user's file found at our `side` name back at `name`, or, where something took the
/// name meanwhile, keeps it as a conflict copy (never lost, never over anything).
fn put_back(st: &State, dir: &Dir, (side, name): (&str, &str), path: &str) -> Result<()> {
    match dir.rename_noreplace(side, name) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let key = (0, st.index.device, &crate::hash::Hash::default());
            keep_aside(st, dir, side, path, key).map(drop)
        }
        r => r.at(path),
    }
}

/// Applying a peer's entry to disk (a file, a folder, a deletion) starts the same way: under the
/// lock, the decision must still be to take it, and the folder that holds the target is opened
/// without following a symlink on the way. This holds the lock, our entry, whether ours is a
/// losing concurrent edit, that folder (`None` for a deletion whose folder is missing or is
/// not a folder: nothing is there to delete) and the target's name.
struct Apply<'a> {
    model: &'a Model,
    g: MutexGuard<'a, State>,
    cur: Option<Entry>,
    conflict: bool,
    dir: Option<Dir>,
    name: String,
}

fn begin<'a>(model: &'a Model, e: &Entry, create: bool) -> Result<Option<Apply<'a>>> {
    let mut g = model.lock();
    let cur = g.index.get(&e.path).map(std::borrow::Cow::into_owned);
    let Decision::Take { conflict } = decide(cur.as_ref(), e) else {
        return Ok(None);
    };
    let made = if create {
        model.make_parents(&mut g, &e.path)
    } else {
        Ok(())
    };
    let (dir, name) = match made.and_then(|()| Dir::parent(&model.root, &e.path)) {
        Ok((d, n)) => (Some(d), n),
        Err(_) if e.deleted => (None, names::split(&e.path).1),
        Err(err) => {
            let why = if err.raw_os_error() == Some(crate::sys::open::ELOOP)
                || err.raw_os_error() == Some(20)
            {
                "a folder on the way is not a folder (a symlink or a file?)".to_string()
            } else {
                err.to_string()
            };
            return Err(Error::msg(why).at(&e.path));
        }
    };
    Ok(Some(Apply {
        model,
        g,
        cur,
        conflict,
        dir,
        name: name.to_string(),
    }))
}

impl Apply<'_> {
    /// Whether the file on disk is the one our index knows (not edited since the last scan).
    fn known_file(&self, md: &fs::Metadata) -> bool {
        self.cur
            .as_ref()
            .is_some_and(|c| c.is_file() && c.stat == Stat::of(md))
    }

    /// Whether our index has a live folder at the target.
    /// An ignored folder is never recorded by a scan: it counts as known (else a file or a
    /// deletion at its name would wait for good).
    fn known_folder(&self) -> bool {
        self.cur
            .as_ref()
            .is_some_and(|c| c.kind == Kind::Dir && !c.deleted)
    }

    /// The mode our index has for what is at the target, as last seen on disk.
    fn cur_mode(&self) -> Option<u32> {
        self.cur.as_ref().map(|c| c.stat.mode)
    }

    /// Whether a folder at the target is one our ignore patterns keep local: a scan never
    /// records it, and nothing from a peer removes, replaces or records it.
    fn ignored_folder(&self, e: &Entry) -> bool {
        !self.g.ignore.is_empty() && self.g.ignore.is_ignored(&e.path, true)
    }

    /// Removes our known file at the target, never what a user put there after the check: it
    /// is first moved aside to its temp name (cleared before) and looked at there
    /// ([`move_known`]).
    fn remove_known(&self, dir: &Dir, e: &Entry) -> Result<()> {
        let side = names::temp_for(&self.name);
        let known = self.cur.as_ref().filter(|c| c.is_file()).map(|c| c.stat);
        if move_known(&self.g, dir, (&self.name, &side), &e.path, known)? {
            dir.unlink(&side).at(&e.path)?;
        }
        Ok(())
    }

    /// The folder that holds the target (there for anything but deletions).
    fn dir(&self, e: &Entry) -> Result<&Dir> {
        self.dir
            .as_ref()
            .ok_or_else(|| Error::msg("its folder is missing").at(&e.path))
    }

    /// Keeps our losing file at the target as a conflict copy (named from our version's mtime
    /// and device), so that the peer's entry can take its place.
    fn keep_ours(&self, e: &Entry) -> Result<()> {
        let c = self.cur.as_ref().unwrap_or(e);
        let key = (c.mtime, c.modified_by, &c.file_hash);
        let name = keep_aside(&self.g, self.dir(e)?, &self.name, &e.path, key)?;
        info!("conflict: {} kept as {name}", e.path);
        Ok(())
    }

    /// What is at the target now.
    fn target(&self, e: &Entry) -> Result<Option<fs::Metadata>> {
        match &self.dir {
            Some(d) => d.stat(&self.name).at(&e.path),
            None => Ok(None),
        }
    }

    /// Records the peer's entry as ours, with the target's stat now (`None`: nothing there).
    /// A peer's version that won over a concurrent one of ours takes in what ours knew
    /// ([`taken_version`]): the conflict is resolved here. Otherwise the version ours had replaced
    /// could come back from a third peer as concurrent with the winner, and ours itself, still
    /// held by the peer that made it, would stay concurrent with every later change of the
    /// winner's: a later deletion of the path by a peer that had the winner (and the conflict
    /// copy) lost to it, and the losing edit came back at its path (chaos seed 5230, 5 peers).
    /// A later deletion by a peer that had the winner as it was, unmerged, still wins over the
    /// merged winner: it knew the change that made it ([`crate::sync::model::remote_wins`]).
    fn record(mut self, e: &Entry, md: Option<&fs::Metadata>) {
        let mut ne = e.clone();
        ne.version = taken_version(self.cur.as_ref(), e, self.g.index.device);
        ne.stat = md.map(Stat::of).unwrap_or_default();
        self.g.kept_temps.remove(&e.path);
        self.g.put(ne);
    }
}

/// The version to record for the peer's entry `e` taken over ours (`cur`): `e`'s, with ours
/// merged in where the two are concurrent (see [`Apply::record`]) and the merge leaves room
/// for this `device`. (Two devices that resolved different pairs of the same versions can so
/// come to hold one vector with different content: [`crate::sync::model::decide`] weighs
/// those as concurrent. A step of our counter here instead made the merged winner look newer
/// than what the other pair's resolution knew, and brought back a version deleted knowingly:
/// chaos seed 641.) Used as well where an install is recognised after a crash.
pub fn taken_version(cur: Option<&Entry>, e: &Entry, device: u64) -> Version {
    if let Some(c) = cur
        && e.version.compare(&c.version) == Order::Concurrent
    {
        let merged = e.version.merged(&c.version);
        if merged.fits_with(device) {
            return merged;
        }
    }
    e.version.clone()
}

/// Under the lock: checks the decision still holds and that nothing changed on disk behind the
/// index's back, keeps a losing local edit as a conflict copy, then renames the temp file into
/// place. A folder holding files where the file goes stays: the file is kept beside it.
/// A complete temp file as its pull left it: inode, size, the mtime it was given and its
/// ctime. Only that file, untouched since, is installed: another put at its name (a rename
/// over it) or a write into it after it was complete (once its write lease is let go) would
/// be installed and recorded with the peer's version, never looked at again (review12,
/// review13, review17).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Written {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    /// The change time, which no program can set back (a write with its mtime put back, as
    /// `touch -r` or `cp -p` do, still moves it).
    ctime: i64,
    ctime_ns: i64,
}

impl Written {
    pub fn of(md: &std::fs::Metadata) -> Written {
        use std::os::unix::fs::MetadataExt;
        Written {
            ino: md.ino(),
            size: md.size(),
            mtime: md.mtime(),
            mtime_ns: md.mtime_nsec(),
            ctime: md.ctime(),
            ctime_ns: md.ctime_nsec(),
        }
    }
}

pub fn install(model: &Model, e: &Entry, durable: bool, written: Option<Written>) -> Result<()> {
    let Some(mut a) = begin(model, e, false)? else {
        remove_temp(&model.root, &e.path);
        return Ok(());
    };
    let tmp = names::temp_for(&a.name);
    let folder_stays = match a.target(e)? {
        Some(md) if md.is_file() => {
            if !a.known_file(&md) {
                return Err(
                    Error::msg("changed locally; will look again after the next scan").at(&e.path),
                );
            }
            if a.conflict {
                a.keep_ours(e)?;
            }
            false
        }
        // A folder our ignore patterns keep local: the peer's file does not replace it, and
        // is not kept (nothing of the folder is recorded either).
        Some(md) if md.is_dir() && a.ignored_folder(e) => {
            debug!("{}: not installed over a folder ignored here", e.path);
            drop(a);
            remove_temp(&model.root, &e.path);
            return Ok(());
        }
        // A folder our index does not have (made here since the last scan, where our file or
        // nothing was): the scan records it first, and the decision is made again.
        Some(md) if md.is_dir() && !a.known_folder() => {
            return Err(Error::msg(
                "a folder made locally is in the way; will look again after the next scan",
            )
            .at(&e.path));
        }
        Some(md) if md.is_dir() => a.folder_stays(&model.root, e, &tmp)?,
        Some(_) => return Err(Error::msg("a symlink or special file is in the way").at(&e.path)),
        // Our file is gone since the last scan: deleted here. Installed now, the peer's version
        // would take its place unseen, even one that the deletion, once scanned, wins over
        // (our own edit back with more merged in).
        None if a.cur.as_ref().is_some_and(Entry::is_file) => {
            return Err(
                Error::msg("deleted locally; will look again after the next scan").at(&e.path),
            );
        }
        None => false,
    };
    if folder_stays {
        return Ok(());
    }
    a.rename_in(e, &tmp, durable, written)
}

impl Apply<'_> {
    /// A folder is where the file `e` goes: removed if it is empty (but for stale temp files);
    /// one holding files stays and the file is kept beside it (`keep_beside`). Returns whether
    /// it stayed.
    fn folder_stays(&mut self, root: &Path, e: &Entry, tmp: &str) -> Result<bool> {
        let dir = self.dir(e)?;
        clear_temps(root, &e.path, dir, &self.name);
        let Err(err) = dir.rmdir(&self.name) else {
            return Ok(false);
        };
        if !matches!(err.raw_os_error(), Some(39 | 17)) {
            return Err(Error::from(err).at(&e.path));
        }
        // ENOTEMPTY: the folder holds files the peer's version does not know of.
        self.keep_beside(e, tmp)?;
        Ok(true)
    }

    /// Keeps the received file `e` (at `tmp`) as a conflict copy beside the folder holding
    /// files at its name, and gives the folder a version newer than both.
    fn keep_beside(&mut self, e: &Entry, tmp: &str) -> Result<()> {
        let device = self.g.index.device;
        let merged =
            (self.cur.as_ref()).map_or(e.version.clone(), |c| c.version.merged(&e.version));
        if !merged.fits_with(device) {
            return Err(Error::msg("a folder holding files is in the way").at(&e.path));
        }
        let dir = self.dir(e)?;
        let key = (e.mtime, e.modified_by, &e.file_hash);
        let name = keep_aside(&self.g, dir, tmp, &e.path, key)?;
        info!(
            "conflict: {} is a folder holding files here; the file received for it is kept as {name}",
            e.path
        );
        // Durable before the folder is recorded with the file's version merged in, and
        // announced (see `rename_in`): the sender then drops its file for our folder, and the
        // copy kept here is all there is of it.
        dir.sync().at(&e.path)?;
        let md = dir.stat(&self.name).at(&e.path)?;
        let d = folder_kept(self.cur.as_ref(), e, md.as_ref().map(Stat::of), device);
        self.g.put(d);
        Ok(())
    }

    /// Renames the temp file `tmp` of `e` to the target's name, never over anything but the file
    /// the checks found there: our known file is swapped with the temp file in one step and
    /// looked at once more under the temp name, swapped back if it changed since the check (a
    /// user's rename over it in between); where nothing is to be there, nothing is replaced.
    fn put_in_place(&self, dir: &Dir, e: &Entry, tmp: &str, made: Option<Stat>) -> Result<()> {
        let changed =
            || Error::msg("changed locally; will look again after the next scan").at(&e.path);
        let ours = self.cur.as_ref().filter(|c| c.is_file()).map(|c| c.stat);
        let there = dir.stat(&self.name).at(&e.path)?;
        match (there, ours) {
            (None, _) => match dir.rename_noreplace(tmp, &self.name) {
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(changed()),
                r => r.at(&e.path),
            },
            (Some(_), Some(known)) if dir.exchange(tmp, &self.name).at(&e.path)? => {
                let old = dir.stat(tmp).at(&e.path)?;
                if old.is_some_and(|m| m.is_file() && Stat::of(&m) == known) {
                    dir.unlink(tmp).at(&e.path)?;
                    Ok(())
                } else {
                    dir.exchange(tmp, &self.name).at(&e.path)?;
                    // A save of the user's between the swaps (an editor saves with a rename)
                    // went under the name, and is at the temp name now, the save before it
                    // under the name: the last goes back to the name, the other is kept as
                    // a conflict copy.
                    let back = dir.stat(tmp).at(&e.path)?;
                    if !back.is_some_and(|m| Some(Stat::of(&m)) == made) {
                        dir.exchange(tmp, &self.name).at(&e.path)?;
                        let key = (0, self.g.index.device, &crate::hash::Hash::default());
                        keep_aside(&self.g, dir, tmp, &e.path, key)?;
                    }
                    Err(changed())
                }
            }
            // No swap on this filesystem: the check made a moment ago stands.
            (Some(_), Some(_)) => dir.rename(tmp, dir, &self.name).at(&e.path),
            // Something our index has no file of came since the check.
            (Some(_), None) => Err(changed()),
        }
    }

    /// Renames the temp file `tmp` of `e` into place and records it with the stat it was made
    /// with; with `durable`, the folder is then synced, once the lock is released. The caller
    /// holds index saves meanwhile (its install is in the install log): no saved index can name
    /// the file before its rename is on disk.
    fn rename_in(
        mut self,
        e: &Entry,
        tmp: &str,
        durable: bool,
        written: Option<Written>,
    ) -> Result<()> {
        let dir = self
            .dir
            .take()
            .ok_or_else(|| Error::msg("its folder is missing").at(&e.path))?;
        // The file as it is made (mode and mtime set), before it can be touched under its name.
        let made = dir.stat(tmp).at(&e.path)?;
        // Only the file the pull wrote and verified, untouched since ([`Written`]).
        if let Some(w) = written
            && made.as_ref().is_none_or(|m| Written::of(m) != w)
        {
            debug!(
                "{}: temp file {w:?} when complete, {:?} now",
                e.path,
                made.as_ref().map(Written::of)
            );
            return Err(Error::msg(
                "its temp file was replaced or written since it was complete; will fetch it again",
            )
            .at(&e.path));
        }
        // Marked done just before the rename: after a kill, an install marked done whose temp
        // file is gone was renamed in (the rename is the only step left), and one whose temp
        // file is still there was not (`daemon`). Marked after it, a kill between the two
        // took a file the user then moved or deleted while we were down for one never
        // installed, and brought its name back (review15, under load: 1 run in 3).
        self.model.installs().done([e.path.as_str()]);
        self.put_in_place(&dir, e, tmp, made.as_ref().map(Stat::of))?;
        // Changed, or replaced, the moment it got its name (a chmod or a rename over it before
        // this point): the index keeps the stat it was made with, so that the next scan sees
        // the change. Recorded as it is now, the change would match the index and never be
        // seen.
        let md = match made {
            Some(made) => Some(made),
            None => dir.stat(&self.name).at(&e.path)?,
        };
        // Our losing edit was renamed aside: both renames are made durable before the winner
        // is recorded with our version merged in, and announced. A peer holding that merged
        // version takes it over ours without a copy; were the renames lost to a power cut
        // after it had it, our edit would be back at its path and then replaced, kept nowhere.
        let synced = self.conflict;
        if synced {
            dir.sync().at(&e.path)?;
        }
        self.record(e, md.as_ref());
        if durable && !synced {
            dir.sync().at(&e.path)?;
        }
        Ok(())
    }
}

/// The entry of a folder of ours (`cur`, if it is one) that stays where the file `e` was to
/// go: live, with its mode and `stat` here (`None`: it is gone), and a version newer than ours
/// (whatever kind) and `e`'s, made by `device`.
fn folder_kept(cur: Option<&Entry>, e: &Entry, stat: Option<Stat>, device: u64) -> Entry {
    let mode = stat.map_or(0o755, |s| s.mode);
    let mut d = cur
        .cloned()
        .filter(|c| c.kind == Kind::Dir)
        .unwrap_or_else(|| Entry {
            path: e.path.clone(),
            kind: Kind::Dir,
            mode,
            ..Entry::default()
        });
    d.deleted = false;
    // The folder as it is here (our entry may be a tombstone, with no mode).
    d.mode = mode;
    // Newer than whatever we had at the path, a file too (our index may not have seen the
    // folder replace it yet): a version of it that a peer still holds must not come back over
    // the folder as concurrent with it.
    let ours = cur.map_or(d.version.clone(), |c| c.version.clone());
    d.version = ours.merged(&e.version).bumped(device);
    d.modified_by = device;
    d.stat = stat.unwrap_or_default();
    d
}

pub fn apply_dir(model: &Model, e: &Entry) -> Result<()> {
    let Some(a) = begin(model, e, true)? else {
        return Ok(());
    };
    // Logged ahead, as a file's install is, and done once recorded: after a kill before the
    // index is saved, the scan takes the folder for the peer's, and a folder the user removed
    // or replaced while we were down for a change of the peer's version (review15).
    if let Err(err) = model.installs().append([e]) {
        warn!("{err}");
    }
    // A pull of a file of this name that failed will not be resumed: it is a folder now (and
    // the name is needed free to move our file aside: `remove_known`).
    let _ = free_temp_name(a.dir(e)?, &names::temp_for(&a.name), &e.path);
    match a.target(e)? {
        // Our folder with another mode than the index has: chmodded here since the last scan,
        // which weighs that change against the peer's first.
        Some(md) if md.is_dir() && a.known_folder() && a.cur_mode() != Some(Stat::of(&md).mode) => {
            return Err(
                Error::msg("changed locally; will look again after the next scan").at(&e.path),
            );
        }
        // A folder our index does not have (made here since the last scan) with a mode of
        // its own: the scan records it first, and the two folders are weighed then (as
        // `install` and `apply_delete` do). Taken over now, a user's private folder got the
        // peer's mode on every peer (review8).
        Some(md)
            if md.is_dir()
                && !a.known_folder()
                && !a.ignored_folder(e)
                && Stat::of(&md).mode & 0o777 != e.dir_mode() =>
        {
            return Err(Error::msg(
                "a folder made locally is in the way; will look again after the next scan",
            )
            .at(&e.path));
        }
        Some(md) if md.is_dir() => {}
        Some(md) if md.is_file() => {
            if !a.known_file(&md) {
                return Err(Error::msg("a file changed locally is in the way").at(&e.path));
            }
            let dir = a.dir(e)?;
            if a.conflict {
                // Our file is a concurrent edit that loses to the folder: kept beside it, and
                // durably so before the folder is recorded with our version merged in (see
                // `rename_in`).
                a.keep_ours(e)?;
            } else {
                // Never what a user put there after the check (see `remove_known`).
                a.remove_known(dir, e)?;
            }
            dir.mkdir(&a.name, 0o700).at(&e.path)?;
            if a.conflict {
                dir.sync().at(&e.path)?;
            }
        }
        Some(_) => return Err(Error::msg("a symlink or special file is in the way").at(&e.path)),
        // Our folder is gone since the last scan: deleted here, and made again now, the
        // deletion would never be seen (as for a file, see `install`).
        None if a.known_folder() => {
            return Err(
                Error::msg("deleted locally; will look again after the next scan").at(&e.path),
            );
        }
        None => match a.dir(e)?.mkdir(&a.name, 0o700) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                return Err(Error::from(err).at(&e.path));
            }
            _ => {}
        },
    }
    // Through the folder itself: a chmod by name would follow a symlink swapped in meanwhile.
    let sub = a.dir(e)?.sub(&a.name).at(&e.path)?;
    sub.chmod(e.dir_mode()).at(&e.path)?;
    let md = sub.metadata().at(&e.path)?;
    a.record(e, Some(&md));
    model.installs().done([e.path.as_str()]);
    Ok(())
}

pub fn apply_delete(model: &Model, e: &Entry) -> Result<()> {
    let Some(a) = begin(model, e, false)? else {
        return Ok(());
    };
    // Logged ahead and done once recorded, as a folder's install is: after a kill before the
    // index is saved, what the user put back at the path while we were down is a change of
    // the deletion, not the index's old entry found again, which the deletion then removed a
    // second time (review22).
    if let Err(err) = model.installs().append([e]) {
        warn!("{err}");
    }
    if let Some(dir) = &a.dir {
        // A pull of the file that will never be finished now; the name is needed free to
        // move our file aside (`remove_known`).
        let _ = free_temp_name(dir, &names::temp_for(&a.name), &e.path);
        match dir.stat(&a.name).at(&e.path)? {
            Some(md) if md.is_file() => {
                if !a.known_file(&md) {
                    // Changed here since we last looked: the scan makes it a new version, which
                    // wins, or finds the same content (a touch), and then the deletion applies.
                    // Looked at again once the scan is done.
                    return Err(
                        Error::msg("changed locally; will look again after the next scan")
                            .at(&e.path),
                    );
                }
                a.remove_known(dir, e)?;
                info!("deleted {}", e.path);
            }
            // A folder ignored here is never removed for a peer.
            Some(md) if md.is_dir() && a.ignored_folder(e) => {}
            Some(md) if md.is_dir() && !a.known_folder() => {
                // Made here since the last scan where our file was: the scan records it, and
                // the deletion is weighed against it then.
                return Err(Error::msg(
                    "a folder made locally is in the way; will look again after the next scan",
                )
                .at(&e.path));
            }
            Some(md) if md.is_dir() => {
                // Stale temp files do not keep a deleted folder alive.
                clear_temps(&model.root, &e.path, dir, &a.name);
                match dir.rmdir(&a.name) {
                    Ok(()) => info!("deleted {}/", e.path),
                    // It holds files the deleting side did not know of: it stays, recorded at
                    // once with a version newer than the deletion (not left to a scan, which
                    // a partial one may not make for long, while what arrives for the path
                    // waits for it).
                    Err(err) if matches!(err.raw_os_error(), Some(39 | 17)) => {
                        let device = a.g.index.device;
                        let stat = dir.stat(&a.name).ok().flatten().map(|m| Stat::of(&m));
                        let kept = folder_kept(a.cur.as_ref(), e, stat, device);
                        if kept.version.fits_with(device) {
                            info!(
                                "{}/ stays: it holds files the deletion did not know of",
                                e.path
                            );
                            let mut g = a.g;
                            g.kept_temps.remove(&e.path);
                            g.put(kept);
                            return Ok(());
                        }
                    }
                    Err(_) => {}
                }
            }
            _ => {}
        }
    }
    a.record(e, None);
    model.installs().done([e.path.as_str()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's rename over the target between the install's check and its rename: the file
    /// put there is never replaced; our temp file stays for the next try.
    #[test]
    fn a_file_put_over_the_target_after_the_check_is_never_replaced() {
        let root = std::env::temp_dir().join(format!("left-inplace-{}", std::process::id()));
        let model = crate::sync::model::fresh_model(&root, 7);
        fs::write(root.join("f"), b"old").unwrap();
        let ours = Entry {
            path: "f".into(),
            kind: Kind::File,
            size: 3,
            version: Version::from_pairs(vec![(7, 1)]),
            modified_by: 7,
            stat: Stat::of(&fs::metadata(root.join("f")).unwrap()),
            ..Entry::default()
        };
        model.lock().put(ours);
        let theirs = Entry {
            path: "f".into(),
            kind: Kind::File,
            size: 6,
            version: Version::from_pairs(vec![(7, 1), (2, 1)]),
            modified_by: 2,
            ..Entry::default()
        };
        let tmp = names::temp_for("f");
        fs::write(root.join(&tmp), b"theirs").unwrap();
        let a = begin(&model, &theirs, false).unwrap().unwrap();
        // The check passes; then a user puts a file over the target.
        let md = a.target(&theirs).unwrap().unwrap();
        assert!(a.known_file(&md));
        fs::write(root.join("user.tmp"), b"user's").unwrap();
        fs::rename(root.join("user.tmp"), root.join("f")).unwrap();
        let dir = a.dir.as_ref().unwrap().sub(".").unwrap();
        let made = Some(Stat::of(&fs::metadata(root.join(&tmp)).unwrap()));
        assert!(a.put_in_place(&dir, &theirs, &tmp, made).is_err());
        assert_eq!(fs::read(root.join("f")).unwrap(), b"user's");
        assert_eq!(fs::read(root.join(&tmp)).unwrap(), b"theirs");
        // Unchanged since the check: swapped in, the old file gone.
        drop(a);
        let mut known = model.lock().index.get("f").unwrap().into_owned();
        known.stat = Stat::of(&fs::metadata(root.join("f")).unwrap());
        model.lock().put(known);
        let a = begin(&model, &theirs, false).unwrap().unwrap();
        let dir = a.dir.as_ref().unwrap().sub(".").unwrap();
        a.put_in_place(&dir, &theirs, &tmp, made).unwrap();
        assert_eq!(fs::read(root.join("f")).unwrap(), b"theirs");
        assert!(!root.join(&tmp).exists());
        drop(a);
        fs::remove_dir_all(&root).unwrap();
    }

    /// The version recorded for a peer's entry taken over ours: ours merged in only where the
    /// two are concurrent and the merge leaves room for this device.
    #[test]
    fn taken_version_table() {
        let v = |pairs: &[(u64, u64)]| Version::from_pairs(pairs.to_vec());
        let at = |version: Version| Entry {
            path: "a".into(),
            version,
            ..Entry::default()
        };
        // 1023 other devices with ours (device 1) and the peer's (2): a merge names 1025.
        let crowd: Vec<(u64, u64)> = (10..1033).map(|d| (d, 1)).collect();
        let crowd_ours = [&crowd[..], &[(1, 1)]].concat();
        // (ours, theirs, what is recorded, and whether that is a merge)
        let cases: [(Option<Version>, Version, Version, bool); 5] = [
            (None, v(&[(2, 1)]), v(&[(2, 1)]), false),
            (Some(v(&[(2, 1)])), v(&[(2, 2)]), v(&[(2, 2)]), false),
            (Some(v(&[(1, 1)])), v(&[(2, 1)]), v(&[(1, 1), (2, 1)]), true),
            (
                Some(v(&[(1, 3), (2, 1)])),
                v(&[(2, 2)]),
                v(&[(1, 3), (2, 2)]),
                true,
            ),
            (
                Some(Version::from_pairs(crowd_ours)),
                v(&[(2, 1)]),
                v(&[(2, 1)]),
                false,
            ),
        ];
        for (i, (ours, theirs, want, stepped)) in cases.into_iter().enumerate() {
            let got = taken_version(ours.map(at).as_ref(), &at(theirs), 3);
            assert_eq!(got, want, "{i} (merged: {stepped})");
        }
    }

    /// The folder that stays where a received file was to go: ours if it is a folder (a
    /// tombstone made live), else a new one; its mode and stat as it is here; a version newer
    /// than ours and the peer's, made here.
    #[test]
    fn folder_kept_table() {
        let v = |pairs: &[(u64, u64)]| Version::from_pairs(pairs.to_vec());
        let e = Entry {
            path: "d".into(),
            version: v(&[(2, 5)]),
            mode: 0o600,
            ..Entry::default()
        };
        let ours = |kind, deleted| Entry {
            path: "d".into(),
            kind,
            deleted,
            version: v(&[(1, 3)]),
            mode: 0o750,
            mtime: 77,
            ..Entry::default()
        };
        let here = Stat {
            ino: 9,
            mode: 0o40711,
            ..Stat::default()
        };
        // (ours, the folder's stat here) -> (mtime kept from ours, mode, stat)
        let cases = [
            (None, Some(here), (0, 0o40711, here)),
            (None, None, (0, 0o755, Stat::default())),
            (
                Some(ours(Kind::Dir, false)),
                Some(here),
                (77, 0o40711, here),
            ),
            (
                Some(ours(Kind::Dir, true)),
                None,
                (77, 0o755, Stat::default()),
            ),
            // Ours a file: not kept.
            (
                Some(ours(Kind::File, false)),
                Some(here),
                (0, 0o40711, here),
            ),
        ];
        for (i, (cur, stat, (mtime, mode, st))) in cases.into_iter().enumerate() {
            let d = folder_kept(cur.as_ref(), &e, stat, 4);
            assert_eq!(
                (d.kind, d.deleted, d.path.as_str()),
                (Kind::Dir, false, "d"),
                "{i}"
            );
            assert_eq!(
                (d.mtime, d.mode, d.stat, d.modified_by),
                (mtime, mode, st, 4),
                "{i}"
            );
            assert_eq!(d.version.compare(&e.version), Order::Newer, "{i}");
            // Ours is merged in, a file's too.
            if let Some(c) = cur.as_ref() {
                assert_eq!(d.version.compare(&c.version), Order::Newer, "{i}");
            }
            assert!(d.version.get(4) > 0, "{i}");
        }
    }

    /// A peer's deletion of our file: a file a user put there after the install's check must
    /// never be removed (as an install never replaces it since d0be47d).
    #[test]
    fn a_file_put_over_a_deleted_target_after_the_check_is_never_removed() {
        let del = Entry {
            path: "f".into(),
            kind: Kind::File,
            deleted: true,
            version: Version::from_pairs(vec![(7, 1), (2, 1)]),
            modified_by: 2,
            ..Entry::default()
        };
        let lost = review5::race("del", crate::tries(15000), review5::ours_old, |m| {
            apply_delete(m, &del)
        });
        assert_eq!(
            lost, 0,
            "a user's file renamed in after the check was deleted {lost} times"
        );
    }

    /// A peer's folder in place of our file (the sibling of the deletion: it removed what it
    /// had checked by name, and a user's file renamed in after the check went with it).
    #[test]
    fn a_file_put_over_a_target_a_folder_replaces_after_the_check_is_never_removed() {
        let dir = Entry {
            path: "f".into(),
            kind: Kind::Dir,
            mode: 0o755,
            version: Version::from_pairs(vec![(7, 1), (2, 1)]),
            modified_by: 2,
            ..Entry::default()
        };
        let lost = review5::race("dir", crate::tries(15000), review5::ours_old, |m| {
            apply_dir(m, &dir)
        });
        assert_eq!(
            lost, 0,
            "a user's file renamed in after the check was removed {lost} times"
        );
    }

    /// Our folder deleted here since the last scan meets a peer's newer version of it (a
    /// chmod there): it is not made again behind the scan's back, which would never see the
    /// deletion; the scan records it first, and the two are weighed then.
    #[test]
    fn a_folder_deleted_here_is_not_made_again_by_a_newer_version() {
        let root = std::env::temp_dir().join(format!("left-dir-gone-{}", std::process::id()));
        let model = crate::sync::model::fresh_model(&root, 7);
        fs::create_dir(root.join("d")).unwrap();
        let ours = Entry {
            path: "d".into(),
            kind: Kind::Dir,
            mode: 0o755,
            version: Version::from_pairs(vec![(7, 1)]),
            modified_by: 7,
            stat: Stat::of(&fs::metadata(root.join("d")).unwrap()),
            ..Entry::default()
        };
        model.lock().put(ours);
        fs::remove_dir(root.join("d")).unwrap();
        let theirs = Entry {
            path: "d".into(),
            kind: Kind::Dir,
            mode: 0o700,
            version: Version::from_pairs(vec![(7, 1), (2, 1)]),
            modified_by: 2,
            ..Entry::default()
        };
        let r = apply_dir(&model, &theirs);
        let made = root.join("d").exists();
        let _ = fs::remove_dir_all(&root);
        assert!(r.is_err() && !made, "{r:?}, made again: {made}");
    }

    /// Our folder chmodded here since the last scan meets a peer's newer version of it (a
    /// chmod there): 91c0028 leaves it to the pull "so that the install sorts out the change
    /// here", but `apply_dir` puts the peer's mode over the user's and records the folder's
    /// stat as it is then: the scan never sees the user's chmod (a local change lost unweighed,
    /// where a file's is kept by `install`'s check).
    #[test]
    fn a_folder_chmodded_here_is_not_overwritten_by_a_newer_version() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("left-dir-chmod-{}", std::process::id()));
        let model = crate::sync::model::fresh_model(&root, 7);
        fs::create_dir(root.join("d")).unwrap();
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
        let ours = Entry {
            path: "d".into(),
            kind: Kind::Dir,
            mode: 0o755,
            version: Version::from_pairs(vec![(7, 1)]),
            modified_by: 7,
            stat: Stat::of(&fs::metadata(root.join("d")).unwrap()),
            ..Entry::default()
        };
        model.lock().put(ours);
        fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o711)).unwrap();
        let theirs = Entry {
            path: "d".into(),
            kind: Kind::Dir,
            mode: 0o750,
            version: Version::from_pairs(vec![(7, 1), (2, 1)]),
            modified_by: 2,
            ..Entry::default()
        };
        let r = apply_dir(&model, &theirs);
        let mode = fs::metadata(root.join("d")).unwrap().permissions().mode() & 0o777;
        let _ = fs::remove_dir_all(&root);
        assert!(
            r.is_err() && mode == 0o711,
            "{r:?}: the user's chmod (0711) became {mode:o}, unseen by the scan"
        );
    }
}

/// Fifth review: races of a local user against a peer's folder and conflict copies.
#[cfg(test)]
pub(crate) mod review5 {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    pub(crate) fn ours_at(root: &Path, path: &str) -> Entry {
        let md = fs::metadata(root.join(path)).unwrap();
        Entry {
            path: path.into(),
            kind: Kind::File,
            size: md.len(),
            mtime: 1000,
            version: Version::from_pairs(vec![(7, 1)]),
            modified_by: 7,
            stat: Stat::of(&md),
            ..Entry::default()
        }
    }

    /// Our file `f` holding "old", known to the index (a `setup` for [`race`]).
    pub(crate) fn ours_old(root: &Path, model: &Model) {
        fs::write(root.join("f"), b"old").unwrap();
        model.lock().put(ours_at(root, "f"));
    }

    /// Runs `step` while a thread renames `user.tmp` (holding "user's") over `f` after a
    /// spin of 0..300; counts the runs where the rename succeeded and the user's bytes are
    /// afterwards nowhere in the share but under a temp name (or nowhere at all), whether the
    /// step succeeded or not.
    pub(crate) fn race(
        tag: &str,
        iters: usize,
        setup: impl Fn(&Path, &Model),
        step: impl Fn(&Model) -> Result<()>,
    ) -> usize {
        let root = std::env::temp_dir().join(format!("left-rv5-{tag}-{}", std::process::id()));
        let mut lost = 0;
        for i in 0..iters {
            let model = crate::sync::model::fresh_model(&root, 7);
            setup(&root, &model);
            fs::write(root.join("user.tmp"), b"user's").unwrap();
            let go = Arc::new(AtomicBool::new(false));
            let (g2, r2) = (go.clone(), root.clone());
            let spin = i % 300;
            let t = std::thread::spawn(move || {
                while !g2.load(Ordering::Acquire) {}
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                fs::rename(r2.join("user.tmp"), r2.join("f")).is_ok()
            });
            go.store(true, Ordering::Release);
            let _ = step(&model);
            let renamed = t.join().unwrap();
            let kept = fs::read_dir(&root).unwrap().flatten().any(|x| {
                let n = x.file_name().into_string().unwrap();
                !names::is_temp(&n)
                    && x.path().is_file()
                    && fs::read(x.path()).unwrap() == b"user's"
            });
            if renamed && !kept {
                lost += 1;
            }
        }
        let _ = fs::remove_dir_all(&root);
        lost
    }

    /// Our losing edit is kept as a conflict copy whose name already holds the same content
    /// (kept there before, or synced from a peer that kept it): `keep_aside` compares the
    /// bytes, then unlinks the target by name; a file the user renamed over the target while
    /// the bytes were read is removed.
    #[test]
    fn a_file_put_over_a_losing_edit_while_its_copy_is_compared_is_never_removed() {
        let big = vec![7u8; 8 << 20];
        let lost = race(
            "aside",
            crate::tries(300),
            |root, model| {
                fs::write(root.join("f"), &big).unwrap();
                let mut ours = ours_at(root, "f");
                ours.file_hash = [9; 16];
                let copy = names::conflict_name("f", ours.mtime, ours.modified_by, 1);
                fs::write(root.join(&copy), &big).unwrap();
                let mut c = ours_at(root, &copy);
                c.file_hash = [9; 16];
                c.version = Version::from_pairs(vec![(5, 1)]);
                let mut g = model.lock();
                g.put(ours);
                g.put(c);
                drop(g);
                fs::write(root.join(names::temp_for("f")), b"theirs").unwrap();
            },
            |model| {
                // Concurrent with ours and newer: ours loses and is kept as a copy.
                let theirs = Entry {
                    path: "f".into(),
                    kind: Kind::File,
                    size: 6,
                    mtime: 2000,
                    file_hash: [1; 16],
                    version: Version::from_pairs(vec![(2, 1)]),
                    modified_by: 2,
                    ..Entry::default()
                };
                install(model, &theirs, false, None)
            },
        );
        assert_eq!(
            lost, 0,
            "a user's file renamed over f was removed {lost} times in 300"
        );
    }

    /// An install swaps the temp file with our known file and, finding a user's file there
    /// instead, swaps back. A user saving twice (two renames over `f`, as an editor does),
    /// the first before the swap and the second between the swap and the swap back, ends with
    /// the first save at `f` and the second, the last, under the temp name (taken for a
    /// resume, or removed).
    #[test]
    fn a_users_last_save_is_never_left_under_the_temp_name() {
        let root = std::env::temp_dir().join(format!("left-rv5-twice-{}", std::process::id()));
        let mut lost = 0;
        let n = crate::tries(20000);
        for i in 0..n {
            let model = crate::sync::model::fresh_model(&root, 7);
            fs::write(root.join("f"), b"old").unwrap();
            model.lock().put(ours_at(&root, "f"));
            fs::write(root.join(names::temp_for("f")), b"theirs").unwrap();
            fs::write(root.join("u1"), b"first save").unwrap();
            fs::write(root.join("u2"), b"last save").unwrap();
            let theirs = Entry {
                path: "f".into(),
                kind: Kind::File,
                size: 6,
                version: Version::from_pairs(vec![(7, 1), (2, 1)]),
                modified_by: 2,
                ..Entry::default()
            };
            let go = Arc::new(AtomicBool::new(false));
            let (g2, r2) = (go.clone(), root.clone());
            let spin = i % 400;
            let t = std::thread::spawn(move || {
                while !g2.load(Ordering::Acquire) {}
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                fs::rename(r2.join("u1"), r2.join("f")).unwrap();
                fs::rename(r2.join("u2"), r2.join("f")).unwrap();
            });
            go.store(true, Ordering::Release);
            let _ = install(&model, &theirs, false, None);
            t.join().unwrap();
            if fs::read(root.join("f")).unwrap() != b"last save" {
                lost += 1;
                eprintln!(
                    "{i}: f holds {:?}, temp {:?}",
                    String::from_utf8_lossy(&fs::read(root.join("f")).unwrap()),
                    fs::read(root.join(names::temp_for("f")))
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                );
            }
        }
        let _ = fs::remove_dir_all(&root);
        assert_eq!(
            lost, 0,
            "the user's last save was not at f {lost} times in {n}"
        );
    }
}
