//! Putting an entry's metadata on disk and clearing temp files, through folder descriptors and
//! without the model: the filesystem steps the model, the installer and the puller share.

use crate::error::{Context, Error, Result};
use crate::store::entry::{Entry, Kind, Stat};
use crate::store::names;
use crate::sys::dirfd::Dir;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Makes the folders missing on the way to `rel` (a file's or a folder's path) for a pull, never
/// through a symlink; returns the paths it made, with their stats. Each gets the mode `known`
/// gives (our index's live folder there: one removed here since the last scan is made again as
/// it was recorded, and the scan sees no change), else 0700 (review10: made 0755, a folder
/// removed here came back world-readable as a change of ours). One our index does not know is
/// recorded by the caller as a placeholder that any peer's entry beats
/// (`sync::model::Model::make_parents`). Under the model's lock, so that no scan looks
/// between the mkdir and the chmod.
pub fn make_parents(
    root: &Path,
    rel: &str,
    known: impl Fn(&str) -> Option<u32>,
) -> io::Result<Vec<(String, Stat)>> {
    let mut made = Vec::new();
    let Some((parents, _)) = rel.rsplit_once('/') else {
        return Ok(made);
    };
    let mut d = Dir::open(root, "")?;
    let mut at = String::new();
    for c in parents.split('/') {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(c);
        d = match d.sub(c) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match d.mkdir(c, 0o700) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                Err(_) => d.sub(c)?,
                Ok(()) => {
                    let sub = d.sub(c)?;
                    if let Some(m) = known(&at) {
                        sub.chmod(m)?;
                    }
                    made.push((at.clone(), Stat::of(&sub.metadata()?)));
                    sub
                }
            },
            r => r?,
        };
    }
    Ok(made)
}

/// An entry's mtime as a time; one outside what the system can hold (a peer can send any
/// number) becomes the epoch rather than an overflow.
pub fn mtime_of(e: &Entry) -> SystemTime {
    let t = if e.mtime >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(e.mtime as u64, e.mtime_ns))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(e.mtime.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(e.mtime_ns as u64)))
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// Sets mode and mtime of a local file or folder to an entry's, through the file itself,
/// opened without following a symlink on the way; returns its stat afterwards. Only if it is
/// still as our index has it (`known`: the same file, or a folder of the same mode): one changed
/// since the last scan is left to the scan, which would not see the change once the stat it
/// compares with is taken from the changed file.
pub fn set_meta(root: &Path, e: &Entry, known: &Stat) -> Result<Stat> {
    let changed = || Error::msg("changed locally; will look again after the next scan").at(&e.path);
    let (dir, name) = Dir::parent(root, &e.path).at(&e.path)?;
    if e.kind == Kind::Dir {
        let d = dir.sub(name).at(&e.path)?;
        let now = Stat::of(&d.metadata().at(&e.path)?);
        // A folder's metadata is its mode: one with the mode the index has is as the index
        // has it, even with another inode (made again, restored from a backup).
        if now.mode != known.mode {
            return Err(changed());
        }
        d.chmod(e.dir_mode()).at(&e.path)?;
        let after = Stat::of(&d.metadata().at(&e.path)?);
        // A chmod of the user's between ours and this look: the scan is to see it.
        if after.mode != e.dir_mode() & 0o777 {
            return Err(changed());
        }
        return Ok(after);
    }
    let f = dir.open_file(name, false).at(&e.path)?;
    let md = f.metadata().at(&e.path)?;
    if Stat::of(&md) != *known {
        return Err(changed());
    }
    // A file with another name (a hard link) may be outside the share: its mode is not ours to
    // set. A pull puts a new file in place instead.
    if std::os::unix::fs::MetadataExt::nlink(&md) > 1 {
        return Err(Error::msg("has other names (hard links); replaced instead").at(&e.path));
    }
    f.set_permissions(fs::Permissions::from_mode(e.file_mode()))
        .at(&e.path)?;
    f.set_modified(mtime_of(e)).at(&e.path)?;
    let after = Stat::of(&f.metadata().at(&e.path)?);
    if after.mode != e.file_mode() & 0o777 {
        return Err(changed());
    }
    Ok(after)
}

/// Whether `e`'s path holds what our index has for it (`known`), as [`set_meta`] checks it:
/// nothing for a deletion, a folder of that mode, the very file (looked at without following
/// a symlink on the way).
pub fn is_as_known(root: &Path, e: &Entry, known: &Stat) -> bool {
    let Ok((dir, name)) = Dir::parent(root, &e.path) else {
        return e.deleted;
    };
    match dir.stat(name) {
        Ok(None) => e.deleted,
        Ok(Some(_)) if e.deleted => false,
        Ok(Some(md)) if e.kind == Kind::Dir => md.is_dir() && Stat::of(&md).mode == known.mode,
        Ok(Some(md)) => md.is_file() && Stat::of(&md) == *known,
        Err(_) => false,
    }
}

const ENAMETOOLONG: i32 = 36;

/// Frees the temp name `name` of `dir` (the name is ours: `path`'s): a file, symlink or special
/// file there is removed; a folder, which may hold a user's files, is moved aside to
/// `NAME.kept` (or `NAME.kept-N`; `.left-tmp-folder.kept-N` if that is too long), where it
/// syncs like any folder. Left there, it blocked every pull of `path` for good (review18,
/// review19).
pub fn free_temp_name(dir: &Dir, name: &str, path: &str) -> io::Result<()> {
    match dir.stat(name)? {
        None => Ok(()),
        Some(md) if md.is_dir() => {
            // A long name's `.kept` name may be too long: then a short one.
            let mut long = false;
            for n in 1..=100u32 {
                let to = match (long, n) {
                    (false, 1) => format!("{name}.kept"),
                    (false, n) => format!("{name}.kept-{n}"),
                    (true, n) => format!(".left-tmp-folder.kept-{n}"),
                };
                match dir.rename_noreplace(name, &to) {
                    Ok(()) => {
                        warn!("{path}: a folder at its temp name {name} was moved to {to}");
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) if e.raw_os_error() == Some(ENAMETOOLONG) && !long => long = true,
                    Err(e) => return Err(e),
                }
            }
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("a folder is at the temp name {name}, and no {name}.kept-N name is free"),
            ))
        }
        Some(_) => dir.unlink(name),
    }
}

/// Removes the temp file of `path` if there is one (a pull that will not be finished).
pub fn remove_temp(root: &Path, path: &str) {
    if let Ok((dir, name)) = Dir::parent(root, path) {
        dir.unlink_file(&names::temp_for(name));
    }
}

/// Removes `left`'s temp files directly inside folder `name` of `dir`, so that they do not
/// keep it alive.
pub fn clear_temps(root: &Path, path: &str, dir: &Dir, name: &str) {
    let Ok(sub) = dir.sub(name) else { return };
    let Ok(rd) = sub.read_dir(&root.join(path)) else {
        return;
    };
    for x in rd.flatten() {
        if let Some(n) = x.file_name().to_str().filter(|n| names::is_temp(n)) {
            sub.unlink_file(n);
        }
    }
}

/// Whether files `a` and `b` of `dir` hold the same bytes (read, not assumed from a stat).
pub fn same_bytes(dir: &Dir, a: &str, b: &str) -> bool {
    use std::io::Read;
    let (Ok(fa), Ok(fb)) = (dir.open_file(a, false), dir.open_file(b, false)) else {
        return false;
    };
    let (Ok(ma), Ok(mb)) = (fa.metadata(), fb.metadata()) else {
        return false;
    };
    if !ma.is_file() || !mb.is_file() || ma.len() != mb.len() {
        return false;
    }
    let (mut ra, mut rb) = (io::BufReader::new(fa), io::BufReader::new(fb));
    let (mut x, mut y) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = match ra.read(&mut x) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return true;
        }
        if rb.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folders made for a pull: one our index knows gets its recorded mode (past the umask),
    /// others 0700; what exists is left as it is; never through a symlink.
    #[test]
    fn parents_made_for_a_pull() {
        let root = std::env::temp_dir().join(format!("left-parents-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("a")).unwrap();
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o750)).unwrap();
        let known = |p: &str| (p == "a/b").then_some(0o777);
        let made = make_parents(&root, "a/b/c/f", known).unwrap();
        let made: Vec<_> = made.iter().map(|(p, s)| (p.as_str(), s.mode)).collect();
        assert_eq!(made, [("a/b", 0o777), ("a/b/c", 0o700)]);
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            (mode("a"), mode("a/b"), mode("a/b/c")),
            (0o750, 0o777, 0o700)
        );
        assert!(make_parents(&root, "top", known).unwrap().is_empty());
        assert!(make_parents(&root, "a/b/c/g", known).unwrap().is_empty());
        std::os::unix::fs::symlink(&root, root.join("l")).unwrap();
        assert!(make_parents(&root, "l/x/f", known).is_err());
        assert!(!root.join("x").exists());
        let _ = fs::remove_dir_all(&root);
    }

    /// A merge's metadata is set only on the file the index knows: one written since the last
    /// scan keeps its own, for the scan to see.
    #[test]
    fn metadata_is_set_only_on_the_file_the_index_knows() {
        let root = std::env::temp_dir().join(format!("left-meta2-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("f"), b"one").unwrap();
        fs::set_permissions(root.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        let known = Stat::of(&fs::metadata(root.join("f")).unwrap());
        let e = Entry {
            path: "f".into(),
            mode: 0o640,
            mtime: 1_000_000,
            ..Entry::default()
        };
        // Written since: left alone.
        fs::write(root.join("f"), b"one more").unwrap();
        assert!(set_meta(&root, &e, &known).is_err());
        assert_eq!(mode_of(&root.join("f")), 0o600);
        // As the index knows it: set.
        let known = Stat::of(&fs::metadata(root.join("f")).unwrap());
        let after = set_meta(&root, &e, &known).unwrap();
        assert_eq!(mode_of(&root.join("f")), 0o640);
        assert_eq!(after.mtime, 1_000_000);
        fs::remove_dir_all(&root).unwrap();
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A local user swaps a folder of the share for a symlink to a folder outside it: setting
    /// a file's mode and mtime, or removing its temp file, must not reach through it.
    #[test]
    fn metadata_is_never_set_through_a_symlinked_folder() {
        let root = std::env::temp_dir().join(format!("left-meta-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let outside = root.with_extension("out");
        let _ = fs::remove_dir_all(&outside);
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"outside").unwrap();
        fs::write(outside.join(names::temp_for("f")), b"outside temp").unwrap();
        fs::set_permissions(outside.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        let before = fs::metadata(outside.join("f")).unwrap().modified().unwrap();
        std::os::unix::fs::symlink(&outside, root.join("d")).unwrap();
        let e = Entry {
            path: "d/f".into(),
            mode: 0o777,
            mtime: 1_000_000,
            ..Entry::default()
        };
        let known = Stat::of(&fs::metadata(outside.join("f")).unwrap());
        assert!(set_meta(&root, &e, &known).is_err());
        remove_temp(&root, "d/f");
        let md = fs::metadata(outside.join("f")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(md.modified().unwrap(), before);
        assert!(outside.join(names::temp_for("f")).exists());
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn extreme_mtimes_do_not_overflow() {
        for (s, ns) in [
            (i64::MIN, 999_999_999),
            (i64::MAX, 999_999_999),
            (-1, 5),
            (0, 0),
        ] {
            let e = Entry {
                mtime: s,
                mtime_ns: ns,
                ..Entry::default()
            };
            let _ = mtime_of(&e);
        }
        let e = Entry {
            mtime: 1_000,
            mtime_ns: 7,
            ..Entry::default()
        };
        assert_eq!(mtime_of(&e), UNIX_EPOCH + Duration::new(1_000, 7));
    }
}
