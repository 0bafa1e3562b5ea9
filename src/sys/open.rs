//! Opening files without following symlinks: `left`'s own files (never through a symlink or
//! a hard link) and files inside the share (`openat2` with `RESOLVE_NO_SYMLINKS`, or each folder
//! checked and `O_NOFOLLOW`), with the `open` flags declared by hand.

use crate::error::{Error, Result};

/// Checks that no folder on the way from `root` to `rel` is a symlink (or anything but a
/// folder), so that nothing is read or written outside the share through one. Missing folders
/// are fine: they will be created as real folders.
pub fn check_ancestors(root: &std::path::Path, rel: &str) -> Result<()> {
    let mut p = root.to_path_buf();
    let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
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
/// files — never through a symlink or a hard link: anything in its place that is not a regular
/// file of ours with one name is removed first (the name is ours).
pub fn create_own(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let f = open_own(path)?;
    f.set_len(0)?;
    Ok(f)
}

/// Whether a file found where one of `left`'s own files goes (a temp file, a state file) is one
/// it made: a regular file of this user's with no other name. Anything else (a symlink, a hard
/// link to a file elsewhere, another user's file) is not written through.
pub fn own_file(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    m.is_file() && m.nlink() == 1 && m.uid() == euid()
}

/// The user the daemon runs as.
pub fn euid() -> u32 {
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: no arguments, cannot fail.
    unsafe { geteuid() }
}

/// Opens one of `left`'s own files for reading and writing, keeping what it holds, or creates
/// it (mode 0600); as [`create_own`], never through a symlink or a hard link.
pub fn open_own(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |new: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(true).mode(0o600);
        if new {
            o.create_new(true);
        }
        o.custom_flags(O_NOFOLLOW | O_NONBLOCK).open(path)
    };
    match open(false) {
        Ok(f) => {
            if own_file(&f.metadata()?) {
                return Ok(f);
            }
            drop(f);
            std::fs::remove_file(path)?;
            open(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => open(true),
        Err(_) => {
            // A symlink (ELOOP), or anything else in the way.
            std::fs::remove_file(path)?;
            open(true)
        }
    }
}

/// `open` flags (Linux): x86 and x86_64 have the generic values, aarch64 its own (as 32-bit ARM).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub const O_NOFOLLOW: i32 = 0o400000;
#[cfg(target_arch = "aarch64")]
pub const O_NOFOLLOW: i32 = 0o100000;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub const O_DIRECTORY: i32 = 0o200000;
#[cfg(target_arch = "aarch64")]
pub const O_DIRECTORY: i32 = 0o40000;
/// Opens never wait: a FIFO swapped in for a file must not hang a thread in `open`.
pub const O_NONBLOCK: i32 = 0o4000;
/// The errno `open` gives for a symlink under `O_NOFOLLOW`.
pub const ELOOP: i32 = 40;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub const O_LARGEFILE: i32 = 0o100000;
#[cfg(target_arch = "aarch64")]
pub const O_LARGEFILE: i32 = 0o400000;
const O_RDWR: u64 = 2;
const O_CREAT: u64 = 0o100;
pub const O_CLOEXEC: i32 = 0o2000000;
const ENOSYS: i32 = 38;
const EPERM: i32 = 1;

/// Opens one of `left`'s own files for reading: never through a symlink, never waiting (a FIFO
/// in its place must not hang the daemon), and only a regular file.
pub fn open_state(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Opens folder `dir` (not through a symlink; it must be ours) and keeps it open for the life
/// of the process. Returns a path that reaches it through that descriptor (`/proc/self/fd/N`):
/// a file opened, renamed or removed by that path is in this very folder, even if its name is
/// later made to point elsewhere (a symlink swapped in by someone who can write the folder
/// above it). Without `/proc`, `dir` itself.
pub fn hold_dir(dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::os::fd::IntoRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        .open(dir)?;
    let md = f.metadata()?;
    if md.uid() != euid() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "belongs to another user",
        ));
    }
    // Kept open for good: the path below names it.
    let fd = f.into_raw_fd();
    let via = std::path::PathBuf::from(format!("/proc/self/fd/{fd}"));
    let same = std::fs::metadata(&via).is_ok_and(|m| m.ino() == md.ino() && m.dev() == md.dev());
    if !same {
        return Ok(dir.to_path_buf());
    }
    crate::error::show_held_as(&via, dir);
    Ok(via)
}

/// How [`open_in`] opens a file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Open {
    Read,
    /// Read and write, created (mode 0600) if missing.
    Create,
}

/// Opens `rel` inside the share at `root` (a canonical path, as the daemon uses) refusing a
/// symlink anywhere on the way, the name itself included: with `openat2` and
/// `RESOLVE_NO_SYMLINKS` (Linux 5.6 and later) the check and the open are one step, with no
/// window between them, and no `stat` per folder on the way. On older kernels, or where
/// `openat2` is not allowed, the folders are checked ([`check_ancestors`]) and the file opened
/// with `O_NOFOLLOW`. A symlink gives `ELOOP` (or, from the check, an error naming it).
pub fn open_in(root: &std::path::Path, rel: &str, how: Open) -> std::io::Result<std::fs::File> {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// `openat2` failed with ENOSYS or EPERM once: not tried again.
    static NO_OPENAT2: AtomicBool = AtomicBool::new(false);
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match open_beneath(root, rel, how) {
            Some(r) => return r,
            None => NO_OPENAT2.store(true, Ordering::Relaxed),
        }
    }
    open_checked(root, rel, how)
}

/// [`open_in`] with `openat2`; `None` where it is not available.
fn open_beneath(
    root: &std::path::Path,
    rel: &str,
    how: Open,
) -> Option<std::io::Result<std::fs::File>> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = root.join(rel);
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    unsafe extern "C" {
        fn syscall(num: std::ffi::c_long, ...) -> std::ffi::c_long;
    }
    const SYS_OPENAT2: std::ffi::c_long = 437;
    const AT_FDCWD: std::ffi::c_long = -100;
    const RESOLVE_NO_SYMLINKS: u64 = 0x04;
    let mut c = path.as_os_str().as_bytes().to_vec();
    c.push(0);
    let how = OpenHow {
        flags: O_CLOEXEC as u64
            | O_LARGEFILE as u64
            | match how {
                Open::Read => O_NONBLOCK as u64,
                Open::Create => O_RDWR | O_CREAT,
            },
        mode: if how == Open::Create { 0o600 } else { 0 },
        resolve: RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: `c` is NUL-terminated and `how` is the size given; both outlive the call.
    let fd = unsafe {
        syscall(
            SYS_OPENAT2,
            AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a new descriptor that nothing else owns.
        return Some(Ok(unsafe {
            std::fs::File::from_raw_fd(fd as std::ffi::c_int)
        }));
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(ENOSYS | EPERM) => None,
        _ => Some(Err(err)),
    }
}

/// [`open_in`] without `openat2`: the folders on the way are checked, then the file is opened
/// with `O_NOFOLLOW`.
fn open_checked(root: &std::path::Path, rel: &str, how: Open) -> std::io::Result<std::fs::File> {
    if check_ancestors(root, rel).is_err() {
        return Err(std::io::Error::from_raw_os_error(ELOOP));
    }
    let mut o = std::fs::OpenOptions::new();
    use std::os::unix::fs::OpenOptionsExt;
    o.read(true).custom_flags(O_NOFOLLOW | O_NONBLOCK);
    if how == Open::Create {
        o.custom_flags(O_NOFOLLOW);
        o.write(true).create(true).truncate(false).mode(0o600);
    }
    o.open(root.join(rel))
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
    fn open_in_refuses_symlinks_on_the_way_and_in_place() {
        let root = std::env::temp_dir().join(format!("left-open-in-{}", std::process::id()));
        let outside = root.with_extension("outside");
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), b"outside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), root.join("real/sub/l")).unwrap();
        std::fs::write(root.join("real/sub/x"), b"inside").unwrap();
        // With openat2 (where the kernel has it), and the fallback.
        for openat2 in [true, false] {
            let open = |rel: &str, how| match openat2 {
                true => {
                    open_beneath(&root, rel, how).unwrap_or_else(|| open_checked(&root, rel, how))
                }
                false => open_checked(&root, rel, how),
            };
            let mut s = String::new();
            use std::io::Read;
            open("real/sub/x", Open::Read)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "inside");
            for (rel, how) in [
                ("link/f", Open::Read),
                ("link/new", Open::Create),
                ("real/sub/l", Open::Read),
                ("real/sub/l", Open::Create),
            ] {
                let e = open(rel, how).unwrap_err();
                assert_eq!(
                    e.raw_os_error(),
                    Some(ELOOP),
                    "{rel} (openat2: {openat2}): {e}"
                );
            }
            open("real/sub/made", Open::Create).unwrap();
            assert!(root.join("real/sub/made").is_file());
            std::fs::remove_file(root.join("real/sub/made")).unwrap();
        }
        // Nothing was made or changed outside.
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
        assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"outside");
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
