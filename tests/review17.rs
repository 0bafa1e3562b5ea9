//! Seventeenth review: failing tests (helper session, branch review17). Real daemons on
//! 127.0.0.1, attacking the write leases on temp files (f2133ef) and the holds on saves
//! (8d8565f): a temp file's lease held for the full `fs.lease-break-time` (45 s) while the
//! sender is stalled, so that any program of the user's opening it (`cat`, `cp -r`, `tar`,
//! `grep -r` of the share) hangs; a write into the temp file after its lease is let go, with
//! its mtime put back, installed under the peer's version.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A user's program reading the share while a pull waits on a stalled peer. Sequence: A holds
/// `f` (64 MiB of random bytes); B starts and pulls it; as soon as B's `.f.left-tmp` holds
/// data, A is stopped (SIGSTOP: a laptop suspended, a peer whose link stalls). 2 s later a
/// program on B opens `.f.left-tmp` to read it (as `cat`, `cp -r`, `tar` or `grep -r` of the
/// share do, dotfiles included). A is continued after 40 s.
///
/// Seen (7 runs of 7): the open waits 40 s, until A is continued (else it would wait the whole
/// `fs.lease-break-time`, 45 s here): B's run loop is blocked in `Pipe::wait`
/// (`src/sync/transfer.rs:979` → `src/sync/delta.rs:423`, up to the 60 s `RESPONSE_TIMEOUT`)
/// for A's answer, so `Run::look_at_leases` (`src/sync/transfer.rs:1083`, called only between
/// steps of `Run::run`, line 672) never runs and the lease taken in `open_temp` (line 586) is
/// never let go. Suspected fix: wait for answers in slices of `LEASE_LOOK` (a
/// `recv_timeout` loop that looks at the leases in between), or let a helper thread watch
/// the leases (`F_GETLEASE`) and `unlease` broken ones. The commit's comment
/// ("the longest a program opening one waits ... besides the time to the next block of its
/// file") is the time to the next block *of the whole batch*, unbounded with a stalled peer.
/// The open must return within 10 s (it waits 100 ms when data flows).
#[test]
fn a_read_of_a_temp_file_never_hangs_while_its_sender_is_stalled() {
    let t = TestDir::new("r17-lease-stalled");
    let (pa, pb) = two_ports();
    let a = Peer::start_own_group(&t, "A", pa, &[pb]);
    let want = random_bytes(17, 64 << 20);
    write_file(&a.path("f"), &want);
    assert!(a.wait_log(SOON, "changed locally: f"));
    let apid = a.pid().unwrap();
    let b = Peer::start(&t, "B", pb, &[pa]);
    let tmp = b.path(".f.left-tmp");
    // Stop A as soon as B's temp file holds data.
    let started = wait_until_fast(SOON, || fs::metadata(&tmp).is_ok_and(|m| m.blocks() > 0));
    signal(apid, "STOP");
    assert!(
        started,
        "B never started pulling f:\n{}",
        tail(&b.log_text(), 20)
    );
    std::thread::sleep(Duration::from_secs(2));
    let installed_early = has_content(&b.path("f"), &want);
    let waited = Arc::new(AtomicU64::new(u64::MAX));
    let reader = {
        let (tmp, waited) = (tmp.clone(), waited.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = fs::File::open(&tmp);
            waited.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
            r.is_ok()
        })
    };
    // A stays stopped for 40 s at most (under the 45 s break time and the 60 s timeout).
    let t0 = Instant::now();
    while waited.load(Ordering::Relaxed) == u64::MAX && t0.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(apid, "CONT");
    let opened = reader.join().unwrap();
    let waited = waited.load(Ordering::Relaxed);
    let converged = wait_until(Duration::from_secs(90), || has_content(&b.path("f"), &want));
    assert!(
        !installed_early,
        "f was complete before A was stopped: the test proves nothing"
    );
    assert!(
        waited < 10_000 && converged,
        "a read-only open of B's temp file (opened: {opened}) waited {waited} ms while A was \
         stopped; f converged: {converged}\nB:\n{}",
        tail(&b.log_text(), 20)
    );
}

/// A write into the temp file after `Run::finish` let its lease go, with the mtime put back.
/// Sequence: A holds `f` (8 MiB of random bytes: a big file, installed in `finish` after an
/// install-log append and a `syncfs`) and is slowed down (SIGSTOP/SIGCONT); B pulls it. A
/// program on B watches `.f.left-tmp`: once it has A's size and A's mtime (set by `finish`
/// just before the lease goes), it waits 1 ms, opens it for writing (no lease any more: no
/// wait, nothing sees it), writes `EVIL!` at offset 0 and puts the mtime back (`futimens`, as
/// `touch -r`, `cp -p`, `rsync -t` or any program preserving times does; the owner may). It
/// tries again each time the pull starts over, for 30 s at most.
///
/// Seen (7 runs of 7, the first write each time, done while the file was still at its temp
/// name): `install::Written` (`src/sync/install.rs:295`) is inode, size and mtime only; all
/// three are the same, so `Apply::rename_in` (line 470) renames the file in and records it
/// with A's version: B's `f` starts with `EVIL!` under A's version, the scan never sees it
/// (the recorded stat matches), and A's blocks served from B fail their MD5 at any third
/// peer. The claim "bytes written into a temp file by any other program are never installed"
/// holds only for programs that leave the mtime alone. Suspected fix: `Written` with the
/// ctime (`st_ctime`/`st_ctime_nsec`), which no program can set back; a write between the
/// check and the rename (through a descriptor opened before) remains, and could be caught by
/// keeping the lease until after the rename (breaking it then only delays the opener).
///
/// The writer must find the file in the moment between `finish` and the install: on a busy
/// machine it may not (CI once), and the run is tried again, three times at most.
#[test]
fn a_write_into_a_temp_file_with_its_mtime_put_back_is_never_installed() {
    let wrote = (0..3).any(mtime_put_back_once);
    assert!(wrote, "in 3 runs, the writer never wrote");
}

/// One run of the test above; false if the writer never wrote.
fn mtime_put_back_once(round: u32) -> bool {
    let t = TestDir::new(&format!("r17-mtime-back-{round}"));
    let (pa, pb) = two_ports();
    let a = Peer::start_own_group(&t, "A", pa, &[pb]);
    let want = random_bytes(23, 8 << 20);
    write_file(&a.path("f"), &want);
    assert!(a.wait_log(SOON, "changed locally: f"));
    let amd = fs::metadata(a.path("f")).unwrap();
    let (size, mtime) = (amd.len(), (amd.mtime(), amd.mtime_nsec()));
    let slow = Throttle::new(
        a.pid().unwrap(),
        Duration::from_millis(30),
        Duration::from_millis(60),
    );
    let bdir = t.join("B");
    fs::create_dir_all(&bdir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let early = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, tmp, early) = (stop.clone(), bdir.join(".f.left-tmp"), early.clone());
        std::thread::spawn(move || {
            let mut hits = 0u32;
            let mut last_ino;
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(30) {
                let Ok(m) = fs::metadata(&tmp) else {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                };
                // Complete and given A's mtime: `finish` lets the lease go right after.
                let ready = m.len() == size && (m.mtime(), m.mtime_nsec()) == mtime;
                if !ready {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                std::thread::sleep(Duration::from_millis(1));
                let Ok(f) = fs::OpenOptions::new().write(true).open(&tmp) else {
                    continue;
                };
                let before = f.metadata().unwrap().modified().unwrap();
                if f.write_all_at(b"EVIL!", 0).is_ok() && f.set_modified(before).is_ok() {
                    hits += 1;
                    // Still at the temp name after the mtime went back: written before the
                    // install's check and rename.
                    if fs::metadata(&tmp).is_ok_and(|n| n.ino() == m.ino()) {
                        early.fetch_add(1, Ordering::Relaxed);
                    }
                }
                last_ino = m.ino();
                drop(f);
                // Once per try: wait for this temp file to go (installed or made anew) or to be
                // written again (a failed pull starts over with the file as it is).
                while !stop.load(Ordering::Relaxed)
                    && fs::metadata(&tmp)
                        .is_ok_and(|n| n.ino() == last_ino && (n.mtime(), n.mtime_nsec()) == mtime)
                    && t0.elapsed() < Duration::from_secs(30)
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            hits
        })
    };
    let b = Peer::start(&t, "B", pb, &[pa]);
    let done = wait_until(Duration::from_secs(60), || {
        fs::metadata(b.path("f")).is_ok_and(|m| m.len() == size)
    });
    // Let a last try settle (a write into the installed file is no longer ours to judge).
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let hits = writer.join().unwrap();
    drop(slow);
    let converged = wait_until(Duration::from_secs(60), || {
        has_content(&a.path("f"), &want) && has_content(&b.path("f"), &want)
    });
    let evil = read(&b.path("f")).is_some_and(|d| d.starts_with(b"EVIL!"));
    if hits == 0 {
        eprintln!("run {round}: the writer never wrote (installed: {done})");
        return false;
    }
    assert!(
        converged && !evil,
        "{hits} writes with the mtime put back ({} of them done while the file was still at \
         its temp name): B's f {} (converged {converged})\nB:\n{}",
        early.load(Ordering::Relaxed),
        if evil {
            "starts with EVIL! under A's version"
        } else {
            "is A's"
        },
        tail(&b.log_text(), 20)
    );
    true
}

/// Polls `cond` every millisecond until it holds (true) or `timeout` passes (false).
fn wait_until_fast(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A random schedule over the new holds on saves and the leases (regression): B is the hub of
/// a star, A, C and D each connected to B only, each making 150 files (one in 10 of 1 MiB) in
/// its own folder over 8 s (three connections installing on B together, holds overlapping;
/// what each has reaches the others only through B's saves and announcements). Meanwhile a
/// program on B reads every file of B's share over and over, temp files included (as a
/// backup or `grep -r` does), breaking the leases; B is killed (SIGKILL) after 3 s and started
/// again. Once the reader stops, all four shares must converge within 120 s, and no open of
/// the reader may have waited 10 s or more. Seen: passes (3 runs; 8 lease breaks logged by
/// the restarted B in one, longest open 4 ms).
#[test]
fn a_star_with_a_reader_and_a_killed_hub_converges() {
    let t = TestDir::new("r17-star");
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let (pb, leaves) = (ports[0], &ports[1..]);
    let mut b = Peer::start(&t, "B", pb, leaves);
    let names = ["A", "C", "D"];
    let peers: Vec<Peer> = names
        .iter()
        .zip(leaves)
        .map(|(n, p)| Peer::start(&t, n, *p, &[pb]))
        .collect();
    // Each leaf writes its files over 8 s: a 1 MiB file after every 10 small ones.
    let writers: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let dir = p.path(&names[i].to_lowercase());
            std::thread::spawn(move || {
                fs::create_dir_all(&dir).unwrap();
                for k in 0..150u64 {
                    let seed = i as u64 * 1000 + k;
                    if k % 10 == 9 {
                        write_file(&dir.join(format!("big{k}")), random_bytes(seed, 1 << 20));
                    } else {
                        write_file(&dir.join(format!("s{k}")), random_bytes(seed, 3000));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let longest = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, longest, root) = (stop.clone(), longest.clone(), b.dir.clone());
        std::thread::spawn(move || {
            let mut opens = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut todo = vec![root.clone()];
                while let Some(d) = todo.pop() {
                    let Ok(rd) = fs::read_dir(&d) else { continue };
                    for e in rd.flatten() {
                        let p = e.path();
                        if p.file_name().is_some_and(|n| n == ".left") {
                            continue;
                        }
                        match e.file_type() {
                            Ok(ft) if ft.is_dir() => todo.push(p),
                            Ok(ft) if ft.is_file() => {
                                let t0 = Instant::now();
                                let f = fs::File::open(&p);
                                let ms = t0.elapsed().as_millis() as u64;
                                longest.fetch_max(ms, Ordering::Relaxed);
                                opens += 1;
                                if let Ok(f) = f {
                                    let mut buf = [0u8; 4096];
                                    let _ = f.read_at(&mut buf, 0);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            opens
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    b.kill();
    let b = Peer::start(&t, "B", pb, leaves);
    for w in writers {
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let opens = reader.join().unwrap();
    let longest = longest.load(Ordering::Relaxed);
    eprintln!(
        "STAR opens {opens} longest {longest} ms; lease breaks on B: {}",
        b.log_text().matches("opened by another program").count()
    );
    let mut last = None;
    let converged = wait_until(Duration::from_secs(120), || {
        last = peers
            .iter()
            .find_map(|p| tree_diff(&b.dir, &p.dir).map(|d| format!("B vs {}: {d}", p.name)));
        last.is_none()
    });
    assert!(
        converged && longest < 10_000,
        "converged: {converged} ({last:?}); longest open {longest} ms of {opens}\nB:\n{}",
        tail(&b.log_text(), 25)
    );
}
