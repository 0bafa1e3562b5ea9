//! The operating system, reached without libc crates: folder descriptors, opens that never follow
//! a symlink, inotify and poll, signals and resource limits, each declared by hand. With the
//! hashing kernels, the only place with `unsafe`. The numbers that differ between architectures
//! (some `open` flags, the `renameat2` syscall) are written for x86, x86_64 and aarch64.

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "src/sys has Linux's open flags and syscall numbers for x86, x86_64 and aarch64 only"
);

pub mod dirfd;
pub mod file;
pub mod limits;
pub mod open;
pub mod signal;
pub mod watch;
