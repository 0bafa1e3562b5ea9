//! Changes inside the share made through folder descriptors: every folder on the way is opened
//! one component at a time without following a symlink, and the change (a rename, a removal, a
//! new folder, a mode) is made relative to the folder opened. A symlink swapped in by a local
//! user between a check and the change is never followed.

use crate::sys::open::{O_CLOEXEC, O_DIRECTORY, O_LARGEFILE, O_NOFOLLOW};
use std::ffi::{CStr, CString, c_char, c_int, c_uint};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

unsafe extern "C" {
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, ...) -> c_int;
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: c_uint) -> c_int;
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn renameat(old_dir: c_int, old: *const c_char, new_dir: c_int, new: *const c_char) -> c_int;
    fn syscall(num: std::ffi::c_long, ...) -> std::ffi::c_long;
}

const O_PATH: c_int = 0o10000000;
const O_RDWR: c_int = 2;
const O_CREAT: c_int = 0o100;
const O_EXCL: c_int = 0o200;
const AT_REMOVEDIR: c_int = 0x200;
const RENAME_NOREPLACE: c_uint = 1;
const RENAME_EXCHANGE: c_uint = 2;
const ENOENT: i32 = 2;
#[cfg(test)]
const EEXIST: i32 = 17;
const ENOSYS: i32 = 38;
const EINVAL: i32 = 22;

#[cfg(target_arch = "x86_64")]
const SYS_RENAMEAT2: std::ffi::c_long = 316;
#[cfg(target_arch = "x86")]
const SYS_RENAMEAT2: std::ffi::c_long = 353;
#[cfg(target_arch = "aarch64")]
const SYS_RENAMEAT2: std::ffi::c_long = 276;

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An open folder of the share.
pub struct Dir(File);

impl Dir {
    /// Opens folder `rel` of the share at `root` ("" is the share itself), each folder on the
    /// way without following a symlink (folders missing on the way are made for a pull by
    /// `sync::disk::make_parents`). A symlink or a file on the way gives `ENOTDIR` or `ELOOP`.
    pub fn open(root: &Path, rel: &str) -> io::Result<Dir> {
        use std::os::unix::fs::OpenOptionsExt;
        let top = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_DIRECTORY)
            .open(root)?;
        let mut d = Dir(top);
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            d = d.sub(c)?;
        }
        Ok(d)
    }

    /// Opens the folder that holds `rel` and returns it with `rel`'s last component.
    pub fn parent<'a>(root: &Path, rel: &'a str) -> io::Result<(Dir, &'a str)> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        Ok((Dir::open(root, dir)?, name))
    }

    /// The folder `name` inside this one, not through a symlink.
    pub fn sub(&self, name: &str) -> io::Result<Dir> {
        self.open_raw(name, O_DIRECTORY | O_NOFOLLOW, 0).map(Dir)
    }

    fn open_raw(&self, name: &str, flags: c_int, mode: c_uint) -> io::Result<File> {
        let c = cstr(name)?;
        // SAFETY: a valid descriptor and a NUL-terminated name that outlive the call.
        let flags = flags | O_CLOEXEC | O_LARGEFILE | crate::sys::open::O_NONBLOCK;
        let fd = check(unsafe { openat(self.fd(), c.as_ptr(), flags, mode) })?;
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn fd(&self) -> c_int {
        self.0.as_raw_fd()
    }

    /// What `name` is (a symlink is reported as one, not followed); `None` if it is missing.
    pub fn stat(&self, name: &str) -> io::Result<Option<Metadata>> {
        match self.open_raw(name, O_PATH | O_NOFOLLOW, 0) {
            Ok(f) => f.metadata().map(Some),
            Err(e) if e.raw_os_error() == Some(ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens file `name` for reading, or (`write`) for reading and writing; never a symlink.
    pub fn open_file(&self, name: &str, write: bool) -> io::Result<File> {
        self.open_raw(name, O_NOFOLLOW | if write { O_RDWR } else { 0 }, 0)
    }

    /// Creates file `name` (mode 0600), failing if anything is there already.
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        self.open_raw(name, O_NOFOLLOW | O_RDWR | O_CREAT | O_EXCL, 0o600)
    }

    pub fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: as in `open_raw`.
        check(unsafe { mkdirat(self.fd(), c.as_ptr(), mode) }).map(drop)
    }

    /// Removes `name` if it is a regular file (a temp file of ours, say); nothing otherwise.
    pub fn unlink_file(&self, name: &str) {
        if self
            .stat(name)
            .is_ok_and(|m| m.is_some_and(|m| m.is_file()))
        {
            let _ = self.unlink(name);
        }
    }

    /// Removes file (or symlink) `name`.
    pub fn unlink(&self, name: &str) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: as in `open_raw`.
        check(unsafe { unlinkat(self.fd(), c.as_ptr(), 0) }).map(drop)
    }

    /// Removes the empty folder `name`.
    pub fn rmdir(&self, name: &str) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: as in `open_raw`.
        check(unsafe { unlinkat(self.fd(), c.as_ptr(), AT_REMOVEDIR) }).map(drop)
    }

    /// Renames `from` in this folder to `to` in folder `dest`, replacing what is there.
    pub fn rename(&self, from: &str, dest: &Dir, to: &str) -> io::Result<()> {
        let (a, b) = (cstr(from)?, cstr(to)?);
        // SAFETY: as in `open_raw`.
        check(unsafe { renameat(self.fd(), a.as_ptr(), dest.fd(), b.as_ptr()) }).map(drop)
    }

    /// `renameat2` of `a` to `b` (both in this folder) with `flags`. `Ok(false)` where the
    /// filesystem or the kernel has no such flag: nothing was done.
    fn renameat2(&self, a: &CStr, b: &CStr, flags: c_uint) -> io::Result<bool> {
        let fd = self.fd() as std::ffi::c_long;
        // SAFETY: as in `open_raw`; the arguments are what renameat2 takes.
        let r = unsafe {
            syscall(
                SYS_RENAMEAT2,
                fd,
                a.as_ptr(),
                fd,
                b.as_ptr(),
                flags as std::ffi::c_long,
            )
        };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(ENOSYS | EINVAL)) {
            return Ok(false);
        }
        Err(e)
    }

    /// Renames `from` to `to` (both in this folder) only if nothing is at `to`: `EEXIST`
    /// otherwise. Where the filesystem has no `RENAME_NOREPLACE`, a hard link and an unlink
    /// (a crash between them leaves both names, losing nothing) of `from` if it is still the
    /// file linked.
    pub fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        let (a, b) = (cstr(from)?, cstr(to)?);
        if self.renameat2(&a, &b, RENAME_NOREPLACE)? {
            return Ok(());
        }
        self.link_then_unlink(&a, &b, from, to)
    }

    /// [`Dir::rename_noreplace`] without `renameat2`'s flags.
    fn link_then_unlink(&self, a: &CStr, b: &CStr, from: &str, to: &str) -> io::Result<()> {
        unsafe extern "C" {
            fn linkat(od: c_int, o: *const c_char, nd: c_int, n: *const c_char, f: c_int) -> c_int;
        }
        // SAFETY: as in `open_raw`.
        check(unsafe { linkat(self.fd(), a.as_ptr(), self.fd(), b.as_ptr(), 0) })?;
        // `from` is moved to a name of our own first and looked at there: a file a user renamed
        // over `from` since the link goes back to its name (a link, never over anything), or,
        // if something took the name again, stays under ours, a file like any other.
        use std::os::unix::fs::MetadataExt;
        // The name is left's temp-file form (never scanned, never synced), made unique by the
        // process, a counter and the time, and looked for first: nothing is there to replace.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // In the form of `store::names::own_temp`: never a target's temp name.
        let aside = format!("..aside-{}-{n}-{t}.left-tmp.left-tmp", std::process::id());
        if self.stat(&aside)?.is_some() {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        match self.rename(from, self, &aside) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r?,
        }
        let ino = |n: &str| self.stat(n).ok().flatten().map(|m| (m.dev(), m.ino()));
        if ino(&aside) == ino(to) {
            return self.unlink(&aside);
        }
        // Not ours: back to its name, or, where that is taken again, beside it under a name of
        // its own, never a temp name (links: never over anything).
        let back = cstr(&aside)?;
        for k in 0..100 {
            let name = if k == 0 {
                cstr(from)?
            } else {
                cstr(&format!("{from}.kept-{t}-{k}"))?
            };
            // SAFETY: as above.
            if check(unsafe { linkat(self.fd(), back.as_ptr(), self.fd(), name.as_ptr(), 0) })
                .is_ok()
            {
                return self.unlink(&aside);
            }
        }
        Ok(())
    }

    /// Swaps `a` and `b` (both in this folder) in one step. `Ok(false)` where the filesystem
    /// cannot (no `RENAME_EXCHANGE`): nothing was done.
    pub fn exchange(&self, a: &str, b: &str) -> io::Result<bool> {
        self.renameat2(&cstr(a)?, &cstr(b)?, RENAME_EXCHANGE)
    }

    /// Sets the folder's own mode.
    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.0
            .set_permissions(std::fs::Permissions::from_mode(mode))
    }

    pub fn metadata(&self) -> io::Result<Metadata> {
        self.0.metadata()
    }

    /// Lists the folder opened (through `/proc/self/fd`, so the listing is of this folder
    /// whatever its path leads to now); without `/proc`, by its path `abs` (the folder was just
    /// opened without following a symlink, so only a swap in between could mislead it). The
    /// folder must stay open while the listing is read: an entry's `metadata` may stat it by
    /// a path through the descriptor.
    pub fn read_dir(&self, abs: &Path) -> io::Result<std::fs::ReadDir> {
        match std::fs::read_dir(format!("/proc/self/fd/{}", self.fd())) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::read_dir(abs),
            r => r,
        }
    }

    /// Makes the folder's entries (renames, removals) durable.
    pub fn sync(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// The fallback of `rename_noreplace` (filesystems without `RENAME_NOREPLACE`): moves,
    /// never over anything, and leaves no other name behind.
    #[test]
    fn link_then_unlink_never_replaces_and_never_removes_another_file() {
        let root = std::env::temp_dir().join(format!("left-dirfd-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let d = Dir::open(&root, "").unwrap();
        let c = |n: &str| cstr(n).unwrap();
        fs::write(root.join("a"), b"ours").unwrap();
        fs::write(root.join("taken"), b"other").unwrap();
        let e = d
            .link_then_unlink(&c("a"), &c("taken"), "a", "taken")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        d.link_then_unlink(&c("a"), &c("b"), "a", "b").unwrap();
        assert!(!root.join("a").exists());
        assert_eq!(fs::read(root.join("b")).unwrap(), b"ours");
        assert_eq!(
            fs::read_dir(&root).unwrap().count(),
            2,
            "a name left behind"
        );
        let _ = fs::remove_dir_all(&root);
    }

    /// Seventh review: the fallback moves `from` aside with a plain rename to
    /// `.left-aside-PID-N`, a name that is neither a temp name nor checked to be free: a file
    /// already holding it (one the fallback left behind under a process of the same PID before
    /// a restart, or synced from a peer whose daemon had this PID) is replaced, and then
    /// unlinked as ours. Its bytes are nowhere afterwards.
    #[test]
    fn link_then_unlink_never_replaces_a_file_at_its_aside_name() {
        let root = std::env::temp_dir().join(format!("left-dirfd-aside-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let d = Dir::open(&root, "").unwrap();
        let c = |n: &str| cstr(n).unwrap();
        let pid = std::process::id();
        // Other tests of this binary may have used some of the counter already.
        let names: Vec<String> = (0..64).map(|n| format!(".left-aside-{pid}-{n}")).collect();
        for n in &names {
            fs::write(root.join(n), n.as_bytes()).unwrap();
        }
        fs::write(root.join("a"), b"ours").unwrap();
        d.link_then_unlink(&c("a"), &c("b"), "a", "b").unwrap();
        assert_eq!(fs::read(root.join("b")).unwrap(), b"ours");
        let lost: Vec<&String> = names
            .iter()
            .filter(|n| fs::read(root.join(n)).ok().as_deref() != Some(n.as_bytes()))
            .collect();
        let _ = fs::remove_dir_all(&root);
        assert!(
            lost.is_empty(),
            "a file at the aside name was replaced and removed: {lost:?}"
        );
    }

    #[test]
    fn nothing_is_followed_through_a_symlink() {
        let root = std::env::temp_dir().join(format!("left-dirfd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let outside = root.with_extension("out");
        let _ = fs::remove_dir_all(&outside);
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"outside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        fs::write(root.join("a/file"), b"x").unwrap();

        assert!(Dir::open(&root, "a/b").is_ok());
        assert!(Dir::open(&root, "link").is_err());
        assert!(Dir::open(&root, "link/sub").is_err());
        assert!(Dir::open(&root, "a/file").is_err());
        assert!(Dir::open(&root, "a/file/x").is_err());
        fs::create_dir_all(root.join("new/deep")).unwrap();
        let d = Dir::open(&root, "new/deep").unwrap();
        d.mkdir("m", 0o700).unwrap();
        assert!(d.stat("m").unwrap().unwrap().is_dir());
        assert!(d.stat("none").unwrap().is_none());

        let top = Dir::open(&root, "").unwrap();
        assert!(top.stat("link").unwrap().unwrap().file_type().is_symlink());
        assert!(top.open_file("link", false).is_err());
        top.unlink("link").unwrap();
        assert!(outside.join("f").exists());

        let a = top.sub("a").unwrap();
        // A listing whose entries are stat'ed while the folder is open (musl's std stats an
        // entry by its path, here through /proc/self/fd).
        let mut seen: Vec<(String, bool)> = a
            .read_dir(&root.join("a"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let md = e.metadata().unwrap();
                (e.file_name().into_string().unwrap(), md.is_dir())
            })
            .collect();
        seen.sort();
        assert_eq!(seen, vec![("b".into(), true), ("file".into(), false)]);
        fs::write(root.join("a/g"), b"g").unwrap();
        assert_eq!(
            a.rename_noreplace("g", "file").unwrap_err().raw_os_error(),
            Some(EEXIST)
        );
        assert_eq!(fs::read(root.join("a/file")).unwrap(), b"x");
        a.rename_noreplace("g", "h").unwrap();
        assert_eq!(fs::read(root.join("a/h")).unwrap(), b"g");
        assert!(a.create_new("h").is_err());
        a.create_new("n").unwrap();
        a.rmdir("b").unwrap();
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    /// The fallback's check and unlink by name are two steps: a user's file renamed over
    /// `from` between them is unlinked (its bytes are nowhere afterwards).
    #[test]
    fn link_then_unlink_never_removes_a_file_renamed_in_after_its_check() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let root = std::env::temp_dir().join(format!("left-dirfd-race-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let d = Dir::open(&root, "").unwrap();
        let c = |n: &str| cstr(n).unwrap();
        let (mut lost, n) = (0, crate::tries(20000));
        for i in 0..n {
            let _ = fs::remove_file(root.join("to"));
            fs::write(root.join("from"), b"ours").unwrap();
            fs::write(root.join("user.tmp"), b"user's").unwrap();
            let go = Arc::new(AtomicBool::new(false));
            let (g2, r2) = (go.clone(), root.clone());
            let spin = i % 2000;
            let t = std::thread::spawn(move || {
                while !g2.load(Ordering::Acquire) {}
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                fs::rename(r2.join("user.tmp"), r2.join("from")).is_ok()
            });
            go.store(true, Ordering::Release);
            let _ = d.link_then_unlink(&c("from"), &c("to"), "from", "to");
            let renamed = t.join().unwrap();
            let kept = ["from", "to"]
                .iter()
                .any(|n| fs::read(root.join(n)).is_ok_and(|b| b == b"user's"));
            if renamed && !kept {
                lost += 1;
            }
        }
        let _ = fs::remove_dir_all(&root);
        assert_eq!(
            lost, 0,
            "a user's file renamed over `from` was unlinked {lost} times in {n}"
        );
    }
}
