//! Signals: SIGTERM and SIGINT ask the daemon to stop cleanly (save the index, exit 0), through
//! the libc `signal` symbol declared here; SIGPIPE is ignored so a dropped peer is an error, not
//! a death; SIGUSR1 asks for the status file to be written at once; SIGIO, which the kernel
//! sends when a temp file's write lease is broken, is ignored (breaks are seen by asking:
//! [`crate::sys::file::lease_held`]).

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static STATUS: AtomicBool = AtomicBool::new(false);

const SIGINT: c_int = 2;
/// SIGUSR1 (10 on x86, x86_64 and aarch64): `left status` asks for a fresh status file.
pub const SIGUSR1: c_int = 10;
const SIGPIPE: c_int = 13;
const SIGTERM: c_int = 15;
/// SIGIO (29 on x86, x86_64 and aarch64): a lease break. Its default action ends the process.
const SIGIO: c_int = 29;
const SIG_IGN: usize = 1;

unsafe extern "C" {
    fn signal(signum: c_int, handler: usize) -> usize;
}

extern "C" fn on_stop(_: c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_status(_: c_int) {
    STATUS.store(true, Ordering::SeqCst);
}

pub fn install() {
    // SAFETY: the handler only stores to an atomic; SIG_IGN is a valid disposition.
    unsafe {
        signal(SIGTERM, on_stop as extern "C" fn(c_int) as usize);
        signal(SIGINT, on_stop as extern "C" fn(c_int) as usize);
        signal(SIGPIPE, SIG_IGN);
        signal(SIGUSR1, on_status as extern "C" fn(c_int) as usize);
        signal(SIGIO, SIG_IGN);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Whether `left status` asked for a fresh status since the last call.
pub fn status_requested() -> bool {
    STATUS.swap(false, Ordering::SeqCst)
}

/// Sends `sig` to process `pid`; false if it could not (gone, or not ours).
pub fn send(pid: i32, sig: c_int) -> bool {
    unsafe extern "C" {
        fn kill(pid: i32, sig: c_int) -> c_int;
    }
    // SAFETY: a plain syscall with integer arguments.
    pid > 0 && unsafe { kill(pid, sig) } == 0
}
