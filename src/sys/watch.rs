//! Change notification: inotify, through libc symbols declared here, wakes the scanner as soon as
//! something in the share changes. Only an accelerator: without it the scanner polls.

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, c_char, c_int, c_ulong, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

unsafe extern "C" {
    fn inotify_init1(flags: c_int) -> c_int;
    fn inotify_add_watch(fd: c_int, path: *const c_char, mask: u32) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

/// Whether `fd` has something to read, waiting up to `timeout` for it (poll).
pub fn readable(fd: c_int, timeout: Duration) -> bool {
    let mut p = PollFd {
        fd,
        events: POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
    // SAFETY: one valid pollfd.
    unsafe { poll(&mut p, 1, ms) > 0 }
}

const IN_MODIFY: u32 = 0x2;
const IN_NONBLOCK: c_int = 0o4000;
const IN_CLOEXEC: c_int = 0o2000000;
const IN_Q_OVERFLOW: u32 = 0x4000;
const IN_IGNORED: u32 = 0x8000;
const IN_ONLYDIR: u32 = 0x0100_0000;
/// Modify, attrib, close-write, moved from/to, create, delete, delete-self, move-self.
const MASK: u32 = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800;
const POLLIN: i16 = 1;

pub struct Watcher {
    /// Names of the daemon's own files (see [`Watcher::new`]).
    own: fn(&str) -> bool,
    fd: c_int,
    by_wd: HashMap<c_int, PathBuf>,
    /// Watched folders with their watch and inode: a folder removed and made again under the
    /// same name is another folder, not watched until added again.
    by_path: HashMap<PathBuf, (c_int, u64)>,
    buf: Vec<u8>,
    /// Files written to since the last `take_written` (absolute paths).
    written: HashSet<PathBuf>,
    /// Folders with events since the last `take_dirty`; `None` after a lost event queue (or
    /// too many to be worth it): everything must be looked at.
    dirty: Option<HashSet<PathBuf>>,
    /// Adding a watch failed (e.g. the per-user limit): changes may be missed, so poll.
    pub incomplete: bool,
}

/// After events that concern only our own temp files, how long to let more gather.
const IDLE_EVENTS_PAUSE: Duration = Duration::from_millis(20);

/// Folders with events remembered between scans at most; past it, a full scan is cheaper.
const MAX_DIRTY: usize = 4096;

/// Written files remembered between scans at most; past it, the scanner's stat comparison
/// alone decides (a burst of that many files is being copied in, not edited).
const MAX_WRITTEN: usize = 65_536;

impl Watcher {
    /// `own`: names (one component) of files the daemon itself writes, whose events wake
    /// nobody.
    pub fn new(own: fn(&str) -> bool) -> Option<Watcher> {
        // SAFETY: a plain syscall wrapper with integer flags.
        let fd = unsafe { inotify_init1(IN_NONBLOCK | IN_CLOEXEC) };
        (fd >= 0).then(|| Watcher {
            fd,
            by_wd: HashMap::new(),
            by_path: HashMap::new(),
            buf: vec![0u8; 16 << 10],
            written: HashSet::new(),
            dirty: Some(HashSet::new()),
            incomplete: false,
            own,
        })
    }

    /// Whether a folder is watched.
    /// Whether folder `dir`, inode `ino`, is watched (not an earlier folder of that name).
    pub fn watches(&self, dir: &Path, ino: u64) -> bool {
        self.by_path.get(dir).is_some_and(|w| w.1 == ino)
    }

    /// Watches a folder (once; again after the kernel dropped its watch).
    pub fn add(&mut self, dir: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(ino) = std::fs::symlink_metadata(dir).map(|m| m.ino()) else {
            return;
        };
        if self.watches(dir, ino) {
            return;
        }
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        let wd = unsafe { inotify_add_watch(self.fd, c.as_ptr(), MASK | IN_ONLYDIR) };
        if wd < 0 {
            self.incomplete = true;
            return;
        }
        if let Some(old) = self.by_wd.insert(wd, dir.to_path_buf()) {
            self.by_path.remove(&old);
        }
        self.by_path.insert(dir.to_path_buf(), (wd, ino));
    }

    /// Waits up to `timeout` for a relevant change; true if one came. Changes to `left`'s own
    /// temp files do not count: while a pull writes one, its events are read in batches (a
    /// short pause after each) instead of waking the scanner for every block.
    /// The inotify descriptor: readable while events wait to be read.
    pub fn fd(&self) -> c_int {
        self.fd
    }

    pub fn wait(&mut self, timeout: Duration) -> bool {
        // Events read meanwhile (by `take_written` during a scan) are waiting already.
        if self.dirty.as_ref().is_none_or(|d| !d.is_empty()) {
            return true;
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !readable(self.fd, left) {
                return false;
            }
            if self.drain() {
                return true;
            }
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(IDLE_EVENTS_PAUSE.min(left));
        }
    }

    /// The folders that had events since the last call (absolute paths), or `None` if the
    /// whole share must be scanned.
    pub fn take_dirty(&mut self) -> Option<HashSet<PathBuf>> {
        self.drain();
        self.dirty.replace(HashSet::new())
    }

    /// The files written to since the last call. A write's event comes after its data, and its
    /// mtime may be set before the data is copied in, so a scan that hashed the file during the
    /// write saw the same stat before and after: such a file must be hashed again whatever its
    /// stat says.
    pub fn take_written(&mut self) -> HashSet<PathBuf> {
        self.drain();
        std::mem::take(&mut self.written)
    }

    /// Reads every pending event; true if any is relevant.
    fn drain(&mut self) -> bool {
        let mut relevant = false;
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { read(self.fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n <= 0 {
                return relevant;
            }
            let data = &self.buf[..n as usize];
            let mut off = 0;
            while off + 16 <= data.len() {
                let word = |i: usize| {
                    u32::from_ne_bytes([
                        data[off + i],
                        data[off + i + 1],
                        data[off + i + 2],
                        data[off + i + 3],
                    ])
                };
                let (wd, mask, len) = (word(0) as c_int, word(4), word(12) as usize);
                let name_end = (off + 16 + len).min(data.len());
                let name = &data[off + 16..name_end];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                off = name_end;
                if mask & IN_IGNORED != 0 {
                    if let Some(p) = self.by_wd.remove(&wd)
                        && self.by_path.get(&p).is_some_and(|w| w.0 == wd)
                    {
                        self.by_path.remove(&p);
                    }
                    continue;
                }
                let own = std::str::from_utf8(name).is_ok_and(self.own);
                if mask & IN_Q_OVERFLOW != 0 {
                    self.dirty = None;
                    relevant = true;
                } else if !own {
                    relevant = true;
                    if let (Some(d), Some(dir)) = (self.dirty.as_mut(), self.by_wd.get(&wd)) {
                        d.insert(dir.clone());
                    }
                    if self.dirty.as_ref().is_some_and(|d| d.len() > MAX_DIRTY) {
                        self.dirty = None;
                    }
                }
                // IN_MODIFY only: it comes at the end of every write. IN_CLOSE_WRITE would also
                // name files our puller closed after renaming them into place.
                if mask & IN_MODIFY != 0
                    && !own
                    && !name.is_empty()
                    && self.written.len() < MAX_WRITTEN
                    && let Some(dir) = self.by_wd.get(&wd)
                {
                    self.written
                        .insert(dir.join(std::ffi::OsStr::from_bytes(name)));
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_changes_but_not_own_files() {
        let dir = std::env::temp_dir().join(format!("left-watch-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let mut w = Watcher::new(crate::store::names::is_temp).expect("inotify");
        w.add(&dir);
        w.add(&dir.join("sub"));
        assert!(!w.wait(Duration::from_millis(50)));
        std::fs::write(dir.join(".x.left-tmp"), b"tmp").unwrap();
        assert!(!w.wait(Duration::from_millis(100)));
        std::fs::write(dir.join("sub/f"), b"data").unwrap();
        assert!(w.wait(Duration::from_secs(2)));
        // Folders with events are remembered, once.
        let dirty = w.take_dirty().expect("no overflow");
        assert!(dirty.contains(&dir.join("sub")), "{dirty:?}");
        assert!(w.take_dirty().is_some_and(|d| d.is_empty()));
        // Written files are remembered (not temp files), once.
        std::fs::write(dir.join("g"), b"more").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let written = w.take_written();
        assert!(written.contains(&dir.join("g")), "{written:?}");
        assert!(
            !written
                .iter()
                .any(|p| p.to_string_lossy().contains("left-tmp"))
        );
        assert!(w.take_written().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
