//! What the system gives `left`: open files (the soft limit raised at start to what the system
//! allows, and how many files a pull batch may hold open under it) and the CPUs it may run on.
//! Tiny Core starts `left` with the kernel's default of 1024 open files (soft) and 4096 (hard),
//! and a batch of small files holds two descriptors per file.

use std::ffi::c_int;

/// `rlim_t`: 64 bits on every target built (musl on x86_64 and i686, glibc on x86_64).
#[cfg(not(all(target_env = "gnu", target_pointer_width = "32")))]
type Rlim = u64;
#[cfg(all(target_env = "gnu", target_pointer_width = "32"))]
type Rlim = u32;

#[repr(C)]
struct Rlimit {
    cur: Rlim,
    max: Rlim,
}

unsafe extern "C" {
    fn getrlimit(resource: c_int, rlim: *mut Rlimit) -> c_int;
    fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
    fn sched_getaffinity(pid: c_int, size: usize, set: *mut u64) -> c_int;
}

const RLIMIT_NOFILE: c_int = 7;
/// What is asked for at most when the hard limit is higher (or unlimited).
const WANT: u64 = 1 << 16;
/// What is assumed when the limit cannot be read: the kernel's default soft limit.
const DEFAULT: u64 = 1024;
/// Descriptors kept for everything but pull batches: sockets, the index, the status file, the
/// scanner's reads, the peer's block requests being served.
const RESERVED: u64 = 64;
/// Descriptors a file of a batch holds at most: its temp file and our old version.
const PER_FILE: u64 = 2;

/// With glibc, at most two malloc arenas: by default it makes one per thread up to 8 per core,
/// and memory freed in one is not reused by the others, so a daemon with a few threads per
/// connection kept several times what it used. (musl, the Tiny Core build, has no arenas.)
pub fn fewer_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_ARENA_MAX: i32 = -8;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: a glibc tunable set once at start, before other threads exist.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

/// Raises the soft limit on open files to the hard one (at most 65,536); returns the soft limit
/// in force afterwards.
pub fn raise() -> u64 {
    let Some((cur, max)) = get() else {
        return DEFAULT;
    };
    let want = max.min(WANT);
    if want <= cur {
        return cur;
    }
    let r = Rlimit {
        cur: want as Rlim,
        max: max as Rlim,
    };
    // SAFETY: a valid pointer to a properly laid out struct.
    if unsafe { setrlimit(RLIMIT_NOFILE, &r) } == 0 {
        want
    } else {
        cur
    }
}

/// The soft limit on open files now.
pub fn limit() -> u64 {
    get().map_or(DEFAULT, |(cur, _)| cur)
}

// `u64::from` is a no-op where `Rlim` is `u64`, a widening where it is `u32`.
#[allow(clippy::useless_conversion)]
fn get() -> Option<(u64, u64)> {
    let mut r = Rlimit { cur: 0, max: 0 };
    // SAFETY: a valid pointer to a properly laid out struct.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    Some((u64::from(r.cur), u64::from(r.max)))
}

/// How many files one connection's batch may take with `limit` open files allowed and
/// `pullers` connections pulling at the same time: their descriptors all fit under the limit.
/// (The puller's own cap on entries per batch applies as well.)
pub fn batch_files(limit: u64, pullers: usize) -> usize {
    let share = limit.saturating_sub(RESERVED) / (PER_FILE * pullers.max(1) as u64);
    usize::try_from(share).unwrap_or(usize::MAX).max(1)
}

/// How many CPUs this process may run on (at least 1). Unlike the standard library's
/// `available_parallelism` it ignores cgroup CPU quotas, and so takes less code: there are none
/// on the machines `left` is for.
pub fn cpus() -> usize {
    let mut set = [0u64; 16];
    // SAFETY: a buffer of the size given (1024 CPUs, glibc's and musl's cpu_set_t).
    let r = unsafe { sched_getaffinity(0, std::mem::size_of_val(&set), set.as_mut_ptr()) };
    if r != 0 {
        return 1;
    }
    (set.iter().map(|w| w.count_ones()).sum::<u32>() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fit_the_limit() {
        // Tiny Core's defaults, before and after raising.
        assert_eq!(batch_files(1024, 1), 480);
        assert_eq!(batch_files(4096, 1), 2016);
        assert_eq!(batch_files(4096, 3), 672);
        assert_eq!(batch_files(1 << 16, 8), 4092);
        // Whatever the limit, every puller's files fit in what is left after the reserve.
        for limit in [70, 128, 256, 1000, 1024, 3000] {
            for pullers in 1..6 {
                let n = batch_files(limit, pullers) as u64;
                assert!(n >= 1);
                assert!(
                    n == 1 || n * PER_FILE * pullers as u64 + RESERVED <= limit,
                    "{limit} {pullers} {n}"
                );
            }
        }
        // A limit under the reserve still lets one file through at a time.
        assert_eq!(batch_files(10, 1), 1);
        assert_eq!(
            batch_files(u64::MAX, 0) as u64,
            ((u64::MAX - RESERVED) / PER_FILE).min(usize::MAX as u64)
        );
    }

    #[test]
    fn cpus_are_counted() {
        let n = cpus();
        assert!(n >= 1);
        // The standard library's count can only be lower (a cgroup quota), never higher.
        let std_n = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(std_n <= n, "{std_n} > {n}");
    }

    #[test]
    fn raising_keeps_the_limit_readable() {
        let after = raise();
        assert!(after >= 1);
        assert_eq!(limit(), after);
    }
}
