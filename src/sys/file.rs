//! File data through hand-declared calls: copies made in the kernel (`copy_file_range`, a
//! reflink where the filesystem shares extents), writeback started early (`sync_file_range`),
//! a whole filesystem made durable at once (`syncfs`), and write leases (`fcntl`) that tell
//! whether another program opened a temp file.

use crate::error::{Context, Error, Result};
use std::ffi::{c_int, c_uint};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

unsafe extern "C" {
    fn syncfs(fd: c_int) -> c_int;
    fn sync_file_range(fd: c_int, offset: i64, nbytes: i64, flags: c_uint) -> c_int;
    fn copy_file_range(
        fd_in: c_int,
        off_in: *mut i64,
        fd_out: c_int,
        off_out: *mut i64,
        len: usize,
        flags: c_uint,
    ) -> isize;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

const SYNC_FILE_RANGE_WRITE: c_uint = 2;
const EINVAL: i32 = 22;
const EXDEV: i32 = 18;
const ENOSYS: i32 = 38;
const EOPNOTSUPP: i32 = 95;

/// Asks the kernel to start writing a range of a file to disk, without waiting. Only a hint:
/// durability still comes from the fsync before the rename.
pub fn start_writeback(f: &File, off: u64, len: u64) {
    // SAFETY: a valid descriptor; the call only schedules I/O.
    unsafe { sync_file_range(f.as_raw_fd(), off as i64, len as i64, SYNC_FILE_RANGE_WRITE) };
}

/// Copies `len` bytes at `from_off` of `from` to `off` of `to`: in the kernel where the
/// filesystem can (no copy through user space; a reflink on filesystems that share extents),
/// else through a buffer.
pub fn copy_range(from: &File, from_off: u64, to: &File, off: u64, len: u64) -> io::Result<()> {
    let (mut a, mut b) = (from_off as i64, off as i64);
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        // SAFETY: valid descriptors, and offsets the call updates in place.
        let n =
            unsafe { copy_file_range(from.as_raw_fd(), &mut a, to.as_raw_fd(), &mut b, chunk, 0) };
        if n > 0 {
            left -= n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the old version is shorter than the index says",
            ));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(EINVAL | EXDEV | ENOSYS | EOPNOTSUPP) => break,
            _ if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
    let mut buf = vec![0u8; (64 << 10).min(left as usize)];
    let (mut a, mut b) = (a as u64, b as u64);
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], a)?;
        to.write_all_at(&buf[..n], b)?;
        a += n as u64;
        b += n as u64;
        left -= n as u64;
    }
    Ok(())
}

/// `fcntl` commands and lease types (the same on x86, x86_64 and aarch64).
const F_SETLEASE: c_int = 1024;
const F_GETLEASE: c_int = 1025;
const F_WRLCK: c_int = 1;
const F_UNLCK: c_int = 2;
const EAGAIN: i32 = 11;

/// What taking a write lease on a file gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Lease {
    /// Held: any other open of the file (to read or to write, by any process, root's too) or
    /// a truncate by name breaks it, and [`lease_held`] says so. Writing into a file takes an
    /// open first, so a lease still held proves nobody else wrote since it was taken.
    Held,
    /// The file is open elsewhere (another program, or another descriptor of ours).
    Busy,
    /// The filesystem or the system does not give leases (`fs.leases-enable` = 0, a network
    /// filesystem), or the file is not ours.
    Unsupported,
}

/// Takes a write lease on `f`. The kernel signals a break with SIGIO, which is ignored
/// (by `signal::install`): breaks are seen by asking ([`lease_held`]), and the
/// program that opened the file waits until [`unlease`] (at most `fs.lease-break-time`, 45 s).
pub fn lease(f: &File) -> Lease {
    // SAFETY: a valid descriptor and integer arguments.
    if unsafe { fcntl(f.as_raw_fd(), F_SETLEASE, F_WRLCK) } == 0 {
        return Lease::Held;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(EAGAIN) => Lease::Busy,
        _ => Lease::Unsupported,
    }
}

/// Whether the write lease on `f` is still held, unbroken: false once another open began.
pub fn lease_held(f: &File) -> bool {
    // SAFETY: a valid descriptor and integer arguments.
    unsafe { fcntl(f.as_raw_fd(), F_GETLEASE) == F_WRLCK }
}

/// Lets the lease on `f` go: a program waiting in its open goes on.
pub fn unlease(f: &File) {
    // SAFETY: a valid descriptor and integer arguments; without a lease the call does nothing.
    unsafe { fcntl(f.as_raw_fd(), F_SETLEASE, F_UNLCK) };
}

/// Flushes everything written to the filesystem holding `root`.
pub fn sync_fs(root: &Path) -> Result<()> {
    let d = File::open(root).at(root)?;
    // SAFETY: a valid descriptor that outlives the call.
    if unsafe { syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::from(io::Error::last_os_error()).at(root));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn copy_range_copies_within_and_between_files() {
        let dir = std::env::temp_dir().join(format!("left-copy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        fs::write(dir.join("a"), &data).unwrap();
        let a = File::open(dir.join("a")).unwrap();
        let b = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("b"))
            .unwrap();
        copy_range(&a, 1000, &b, 5, 200_000).unwrap();
        let got = fs::read(dir.join("b")).unwrap();
        assert_eq!(&got[5..], &data[1000..201_000]);
        // Within one file, to a range that does not overlap.
        copy_range(&b, 5, &b, 250_000, 10_000).unwrap();
        let got = fs::read(dir.join("b")).unwrap();
        assert_eq!(&got[250_000..260_000], &data[1000..11_000]);
        // A source shorter than asked for is an error, not a short copy.
        assert!(copy_range(&a, 299_000, &b, 0, 5_000).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_lease_is_broken_by_another_open_and_refused_while_one_is_open() {
        crate::sys::signal::install();
        let dir = std::env::temp_dir().join(format!("left-lease-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t");
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        if lease(&f) == Lease::Unsupported {
            eprintln!("no leases on {}: skipped", dir.display());
            return fs::remove_dir_all(&dir).unwrap();
        }
        assert!(lease_held(&f));
        // Our own writes, chmods and truncates through the descriptor keep it.
        f.write_all_at(b"ours", 0).unwrap();
        f.set_len(2).unwrap();
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        assert!(lease_held(&f));
        // An open elsewhere (non-blocking: it would wait for the lease) breaks it.
        let other = fs::OpenOptions::new()
            .read(true)
            .custom_flags(crate::sys::open::O_NONBLOCK)
            .open(&p);
        assert!(other.is_err(), "the open must wait for the lease");
        assert!(!lease_held(&f));
        unlease(&f);
        // Now open elsewhere: a second lease is refused.
        let reader = File::open(&p).unwrap();
        let g = File::open(&p).unwrap();
        assert_eq!(lease(&g), Lease::Busy);
        drop((reader, g, f));
        fs::remove_dir_all(&dir).unwrap();
    }
}
