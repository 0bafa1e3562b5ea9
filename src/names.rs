//! Names inside the share: the check every name from a peer passes where it arrives, and the
//! names `left` keeps for itself (its state directory and temp files).

use crate::error::{Error, Result};

/// The state directory at the top of the share; never synced.
pub const STATE_DIR: &str = ".left";
/// Temp files are `.NAME.left-tmp` beside their target; never synced.
const TEMP_SUFFIX: &str = ".left-tmp";
pub const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;

/// Checks a relative name from a peer or from disk: non-empty, `/`-separated, no empty, `.` or
/// `..` component, no NUL, not absolute, not inside the state directory, not a temp file.
pub fn check(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::protocol(format!("bad name {path:?}: {why}")));
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH {
        return bad("too long");
    }
    if path.contains('\0') {
        return bad("contains NUL");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    for (i, c) in path.split('/').enumerate() {
        match c {
            "" => return bad("empty component"),
            "." | ".." => return bad("dot component"),
            _ if c.len() > MAX_COMPONENT => return bad("component too long"),
            _ if i == 0 && c == STATE_DIR => return bad("inside the state directory"),
            _ if is_temp(c) => return bad("a temp file name"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks that no folder on the way from `root` to `rel` is a symlink (or anything but a
/// folder), so that nothing is read or written outside the share through one. Missing folders
/// are fine: they will be created as real folders.
pub fn check_ancestors(root: &std::path::Path, rel: &str) -> Result<()> {
    let mut p = root.to_path_buf();
    let (dir, _) = split(rel);
    if dir.is_empty() {
        return Ok(());
    }
    for c in dir.split('/') {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(Error::msg(format!(
                    "{rel}: {c} on the way is not a folder (a symlink?)"
                )));
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Creates (or empties) one of `left`'s own files — state files in the state directory, temp
/// files — never through a symlink: one in its place (the name is ours) is removed first.
pub fn create_own(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Err(e) if e.raw_os_error() == Some(ELOOP) => {
            std::fs::remove_file(path)?;
            open()
        }
        r => r,
    }
}

/// `open` flags (Linux; x86 and x86_64 values, then the generic ones).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub const O_NOFOLLOW: i32 = 0o400000;
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
pub const O_NOFOLLOW: i32 = 0o100000;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub const O_DIRECTORY: i32 = 0o200000;
#[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
pub const O_DIRECTORY: i32 = 0o40000;
/// The errno `open` gives for a symlink under `O_NOFOLLOW`.
pub const ELOOP: i32 = 40;

/// Whether a file name (one component) is one of `left`'s temp files.
pub fn is_temp(name: &str) -> bool {
    name.len() > TEMP_SUFFIX.len() + 1 && name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// The temp file name for a target file name (one component), kept within 255 bytes.
pub fn temp_for(name: &str) -> String {
    if name.len() + 1 + TEMP_SUFFIX.len() <= MAX_COMPONENT {
        format!(".{name}{TEMP_SUFFIX}")
    } else {
        format!(
            ".{}{TEMP_SUFFIX}",
            crate::hash::hex(&crate::hash::md5(name.as_bytes()))
        )
    }
}

/// Splits `a/b/c` into (`a/b`, `c`); the parent is empty at the top.
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// The name a conflict copy gets: `NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT`.
pub fn conflict_name(path: &str, mtime: i64, device: u64) -> String {
    let (dir, name) = split(path);
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let (y, mo, d, h, mi, s) = crate::log::civil(mtime);
    let dev = crate::hash::short_id(device);
    let file = format!("{stem}.sync-conflict-{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{dev}{ext}");
    if dir.is_empty() {
        file
    } else {
        format!("{dir}/{file}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_files_are_not_created_through_a_symlink() {
        let dir = std::env::temp_dir().join(format!("left-own-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let outside = dir.join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let p = dir.join("index.tmp");
        std::os::unix::fs::symlink(&outside, &p).unwrap();
        use std::io::Write;
        create_own(&p).unwrap().write_all(b"state").unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&p).unwrap().is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), b"state");
        // An existing file of ours is emptied and written again.
        create_own(&p).unwrap().write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn good_names() {
        for ok in [
            "a",
            "a/b/c",
            ".hidden",
            "dir/.left",
            "x..y",
            "...",
            "a b/c d",
            "ünï/cödé",
        ] {
            check(ok).unwrap();
        }
    }

    #[test]
    fn bad_names() {
        let long = "x".repeat(256);
        let longer = "a/".repeat(3000);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            ".",
            "..",
            "../a",
            "a/../b",
            "a/.",
            "./a",
            ".left",
            ".left/index",
            "a\0b",
            &long,
            &longer,
            ".f.left-tmp",
            "d/.f.left-tmp",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn symlinked_ancestors_are_refused() {
        let root = std::env::temp_dir().join(format!("left-names-{}", std::process::id()));
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        check_ancestors(&root, "top").unwrap();
        check_ancestors(&root, "real/sub/x").unwrap();
        check_ancestors(&root, "real/new/deeper/x").unwrap();
        assert!(check_ancestors(&root, "link/passwd").is_err());
        assert!(check_ancestors(&root, "link/a/b").is_err());
        assert!(check_ancestors(&root, "file/x").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn temp_names() {
        assert_eq!(temp_for("a.txt"), ".a.txt.left-tmp");
        assert!(is_temp(&temp_for("a.txt")));
        let long = "y".repeat(250);
        assert!(temp_for(&long).len() <= 255);
        assert!(is_temp(&temp_for(&long)));
        assert!(!is_temp(".left-tmp"));
        assert!(!is_temp("a.left-tmp"));
    }

    #[test]
    fn conflict_names() {
        let t = 1_795_622_625; // 2026-11-25 16:03:45 UTC
        let dev = crate::hash::short_id(0xabcdef);
        assert_eq!(
            conflict_name("d/report.txt", t, 0xabcdef),
            format!("d/report.sync-conflict-20261125-160345-{dev}.txt")
        );
        assert_eq!(
            conflict_name("Makefile", t, 0xabcdef),
            format!("Makefile.sync-conflict-20261125-160345-{dev}")
        );
        assert_eq!(
            conflict_name(".bashrc", t, 0xabcdef),
            format!(".bashrc.sync-conflict-20261125-160345-{dev}")
        );
    }
}
