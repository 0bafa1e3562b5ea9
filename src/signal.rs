//! Signals: SIGTERM and SIGINT ask the daemon to stop cleanly (save the index, exit 0), through
//! the libc `signal` symbol declared here; SIGPIPE is ignored so a dropped peer is an error, not
//! a death.

use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

const SIGINT: c_int = 2;
const SIGPIPE: c_int = 13;
const SIGTERM: c_int = 15;
const SIG_IGN: usize = 1;

unsafe extern "C" {
    fn signal(signum: c_int, handler: usize) -> usize;
}

extern "C" fn on_stop(_: c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

pub fn install() {
    // SAFETY: the handler only stores to an atomic; SIG_IGN is a valid disposition.
    unsafe {
        signal(SIGTERM, on_stop as extern "C" fn(c_int) as usize);
        signal(SIGINT, on_stop as extern "C" fn(c_int) as usize);
        signal(SIGPIPE, SIG_IGN);
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
