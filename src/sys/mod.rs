//! The operating system, reached without libc crates: folder descriptors, opens that never follow
//! a symlink, inotify and poll, signals and resource limits, each declared by hand. With the
//! hashing kernels, the only place with `unsafe`.

pub mod dirfd;
pub mod file;
pub mod limits;
pub mod open;
pub mod signal;
pub mod watch;
