//! Twenty-fourth review: commit 7f4ed4d (a peer's deletion logged ahead in the install log and
//! marked done; the first scan after a start takes a file found where a deletion was done as a
//! new local version of it; `record_unsettled` records folders and deletions too; the install
//! log cut back to its whole records before its first append) (helper session, branch
//! review24). Real daemons on 127.0.0.1. A test asserts the correct behaviour: it fails where
//! it found a defect.

mod common;

use common::*;
use std::fs;
use std::time::{Duration, Instant};

/// Bytes in a peer's install log.
fn log_len(p: &Peer) -> u64 {
    fs::metadata(p.path(".left/installs")).map_or(0, |m| m.len())
}

/// [`SavesHeld`] with `x` and `n` files `dNNNNN` in A's share (put in before B starts), in sync.
fn held_with(t: &TestDir, n: usize, content: impl Fn(usize) -> String) -> Option<SavesHeld> {
    let (pa, pb) = two_ports();
    let a = Peer::start(t, "A", pa, &[pb]);
    write_file(&a.path("x"), "x, first");
    for i in 0..n {
        write_file(&a.path(&format!("d{i:05}")), content(i));
    }
    let b = Peer::start(t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, Duration::from_secs(120));
    assert!(b.wait_log(SOON, "index written"));
    // The save after the last install, which empties the install log.
    assert!(wait_until(SOON, || log_len(&b) == 0));
    std::thread::sleep(Duration::from_millis(500));
    SavesHeld::hold(a, b, pa, pb)
}

fn content(i: usize) -> String {
    format!("file {i} of A\n")
}

/// A and B in sync on `n` files; B's index saves held off; A's user deletes them all; B
/// applies every deletion (its install log has them, done) and is killed; B restarts; nobody
/// touched anything. Expected: B's first scan takes the files' absence for the deletions it
/// had received (the install log names them done), no new local version: no `deleted
/// locally` line in B's log, no file back anywhere, A and B identical, no conflict copy, B's
/// install log empty within 15 s, and B not logging that the log was not used.
///
/// Saw, 200 files: failed 6 runs of 6. B's restart logs `deleted locally: dNNNNN` 200 times
/// (`scan: ... deleted: 200`), then `received before the last stop, not settled yet` for each:
/// every deletion B took for A becomes a new local version, sent back to A. Nothing comes
/// back, no conflict copy, A and B identical, the log (22,800 bytes) is used and emptied. With
/// 20,000 files (a variant run 2 times, dropped for the file's runtime): 20,000 local
/// deletions, the log (2,280,000 bytes) used and emptied. The parent commit's binary fails the
/// same way (1 run: 200 local deletions, nothing logged): not new, but the commit's logged
/// deletions are not used for it. Without held saves, kills in the middle of a stream of
/// deletions made 635, 1,029 and 787 such local deletions (see
/// `kills_in_the_middle_of_many_received_deletions_resurrect_nothing`).
///
/// Suspected cause: `record_gone` (src/scan/scanner.rs:695-745, line 742) makes
/// `old.version.bumped(device)` for every path the index has live and the walk did not find,
/// never looking at `st.installed`, which holds the done deletion; `record_received_gone`
/// (:881, :895) skips deletions; then `record_unsettled` (:794, :808) finds A's tombstone
/// concurrent with that local one and records the two merged: newer than A's.
/// Fixed: `record_gone` takes a logged deletion of a missing path for the peer's.
fn many_deletions_received_then_a_kill(n: usize, within: Duration) -> String {
    let t = TestDir::new(&format!("r24-deletions-{n}"));
    let Some(mut h) = held_with(&t, n, content) else {
        return String::new();
    };
    let before = log_len(&h.b);
    let t0 = Instant::now();
    for i in 0..n {
        fs::remove_file(h.a.path(&format!("d{i:05}"))).unwrap();
    }
    let got = wait_until(within, || {
        (0..n).all(|i| !h.b.path(&format!("d{i:05}")).exists())
    });
    let took = t0.elapsed();
    // The last deletions' done records.
    std::thread::sleep(Duration::from_millis(500));
    let logged = log_len(&h.b);
    h.kill_b();
    assert!(got, "B did not take A's {n} deletions within {within:?}");
    h.restart_b(&t);
    assert!(h.b.wait_log(SOON, "connected"));
    let emptied = wait_until(Duration::from_secs(15), || log_len(&h.b) == 0);
    std::thread::sleep(Duration::from_secs(2));
    let local = count(&h.b, "deleted locally");
    let dropped = count(&h.b, "not used");
    let back = (0..n)
        .filter(|i| {
            h.a.path(&format!("d{i:05}")).exists() || h.b.path(&format!("d{i:05}")).exists()
        })
        .count();
    let c = conflicts(&h.a.dir);
    let diff = tree_diff(&h.a.dir, &h.b.dir);
    let report = format!(
        "{n} deletions taken by B in {took:?}; B's install log {before} -> {logged} bytes before \
         the kill; after the restart: B's local deletions {local}, log not used {dropped}, files \
         back {back}, conflict copies {c:?}, diff {diff:?}, B's log emptied: {emptied} ({} bytes)",
        log_len(&h.b)
    );
    assert!(
        local == 0 && dropped == 0 && back == 0 && c.is_empty() && diff.is_none() && emptied,
        "{report}\nB:\n{}",
        tail(&h.b.log_text(), 12)
    );
    report
}

#[test]
fn many_received_deletions_then_a_kill_make_no_new_version() {
    // See `many_deletions_received_then_a_kill`.
    eprintln!("{}", many_deletions_received_then_a_kill(200, SOON));
}

/// A and B in sync on `x`; B's index saves held off. A's user deletes `x`; B
/// applies the deletion (logged, done); A's user then makes `x` again (`same`: with the very
/// bytes it had, else new ones); B installs it (logged, done, after the deletion) and is
/// killed. B restarts; nobody touched anything. Expected: B's first scan takes `x` for the
/// install it is (A's version), no new local version: no `changed locally` nor `deleted
/// locally` line for `x` in B's log, A's `x` as A made it, A and B identical, no conflict
/// copy, B's install log empty within 15 s.
///
/// Passes: new bytes 5 runs of 5, the same bytes 5 of 5 (`x: received before the last stop;
/// its version is the sender's`).
fn deleted_then_made_again_by_the_peer_before_a_kill(same: bool) {
    let t = TestDir::new(&format!("r24-again-{same}"));
    let Some(mut h) = held_with(&t, 0, content) else {
        return;
    };
    fs::remove_file(h.a.path("x")).unwrap();
    assert!(wait_until(SOON, || !h.b.path("x").exists()));
    std::thread::sleep(Duration::from_millis(300));
    let again: &[u8] = if same { b"x, first" } else { b"x, made again" };
    fs::write(h.a.path("x"), again).unwrap();
    let got = wait_until(SOON, || has_content(&h.b.path("x"), again));
    std::thread::sleep(Duration::from_millis(500));
    h.kill_b();
    assert!(got, "B did not take x made again");
    h.restart_b(&t);
    assert!(h.b.wait_log(SOON, "connected"));
    let emptied = wait_until(Duration::from_secs(15), || log_len(&h.b) == 0);
    std::thread::sleep(Duration::from_secs(2));
    let text = h.b.log_text();
    let local = text.contains("changed locally: x") || text.contains("deleted locally: x");
    let c = conflicts(&h.a.dir);
    let ok = has_content(&h.a.path("x"), again) && tree_diff(&h.a.dir, &h.b.dir).is_none();
    assert!(
        ok && !local && c.is_empty() && emptied,
        "x deleted by A then made again (same bytes: {same}), both taken by B before a kill: \
         A's x as made: {ok} ({:?}); B's local change of x: {local}; conflict copies {c:?}; \
         B's log emptied {emptied}\nB:\n{}",
        tree_diff(&h.a.dir, &h.b.dir),
        tail(&text, 12)
    );
}

#[test]
fn a_deletion_then_the_file_made_again_by_the_peer_before_a_kill_is_the_peers() {
    deleted_then_made_again_by_the_peer_before_a_kill(false);
}

#[test]
fn a_deletion_then_the_same_bytes_made_again_by_the_peer_before_a_kill_are_the_peers() {
    deleted_then_made_again_by_the_peer_before_a_kill(true);
}

/// A and B in sync on 100 files; B's saves held off; A deletes them all; B applies the
/// deletions and is killed. While B is down its user puts back `d00010` with the bytes it had
/// (a restore from a backup) and writes `d00011` anew. B restarts. Expected: both changes were
/// made after the deletions B had received: they win, and come back to A as B's user left
/// them within 30 s; no other file back; A and B identical; no conflict copy.
///
/// Passes (5 runs of 5).
#[test]
fn restores_and_edits_made_while_down_after_many_deletions_win() {
    let t = TestDir::new("r24-restore");
    let n = 100;
    let Some(mut h) = held_with(&t, n, content) else {
        return;
    };
    for i in 0..n {
        fs::remove_file(h.a.path(&format!("d{i:05}"))).unwrap();
    }
    let got = wait_until(SOON, || {
        (0..n).all(|i| !h.b.path(&format!("d{i:05}")).exists())
    });
    std::thread::sleep(Duration::from_millis(500));
    h.kill_b();
    assert!(got, "B did not take A's deletions");
    write_file(&h.b.path("d00010"), content(10));
    write_file(&h.b.path("d00011"), "d00011 written by B's user while down");
    h.restart_b(&t);
    let ok = wait_until(Duration::from_secs(30), || {
        has_content(&h.a.path("d00010"), content(10).as_bytes())
            && has_content(
                &h.a.path("d00011"),
                b"d00011 written by B's user while down",
            )
            && tree_diff(&h.a.dir, &h.b.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(1));
    let back: Vec<usize> = (0..n)
        .filter(|&i| i != 10 && i != 11)
        .filter(|i| {
            h.a.path(&format!("d{i:05}")).exists() || h.b.path(&format!("d{i:05}")).exists()
        })
        .collect();
    let c = conflicts(&h.a.dir);
    assert!(
        ok && back.is_empty() && c.is_empty(),
        "after 100 deletions taken before a kill, a restore and an edit made on B while down: \
         on A within 30 s: {ok} ({:?}); other files back {back:?}; conflict copies {c:?}\nB:\n{}",
        tree_diff(&h.a.dir, &h.b.dir),
        tail(&h.b.log_text(), 12)
    );
}

/// Whether a line of `log` ends with `what` (a path named whole, not a prefix of another).
fn has_line_ending(log: &str, what: &str) -> bool {
    log.lines().any(|l| l.ends_with(what))
}

/// A and B share `.leftignore` (`*.local`) and folder `k` holding `k/x`; B alone has
/// `k/keep.local` (ignored: unknown to A). B's saves held off. A's user deletes `k`; B deletes
/// `k/x` and keeps `k` (it holds a file the deletion did not know of: README; not offered to
/// A before a save), and is killed. B restarts; nobody touched anything. Expected within 20 s:
/// `k` stays on both (B's `k/keep.local` kept, `k/x` nowhere), A and B identical (but
/// `k/keep.local`), no conflict copy, no new local version of `k` made by
/// B's restart (`new folder k/`, `folder changed locally: k/`, `deleted locally: k`), B's
/// install log empty within 15 s.
///
/// Passes (5 runs of 5; `k/x` is among the spurious local deletions of
/// `many_received_deletions_then_a_kill_make_no_new_version`, not counted here).
#[test]
fn a_folder_deletion_that_stays_for_unknown_files_survives_a_kill() {
    let t = TestDir::new("r24-kept");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path(".leftignore"), "*.local\n");
    write_file(&a.path("k/x"), "A's k/x");
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    write_file(&b.path("k/keep.local"), "B's own, ignored");
    assert!(b.wait_log(SOON, "index written"));
    assert!(wait_until(SOON, || log_len(&b) == 0));
    std::thread::sleep(Duration::from_millis(800));
    let Some(mut h) = SavesHeld::hold(a, b, pa, pb) else {
        return;
    };
    fs::remove_dir_all(h.a.path("k")).unwrap();
    let got = wait_until(SOON, || {
        !h.b.path("k/x").exists() && h.b.log_text().contains("k/ stays")
    });
    // (Not offered to A before it is saved: README.)
    std::thread::sleep(Duration::from_millis(500));
    h.kill_b();
    assert!(got, "B did not keep k");
    h.restart_b(&t);
    assert!(h.b.wait_log(SOON, "connected"));
    let emptied = wait_until(Duration::from_secs(15), || log_len(&h.b) == 0);
    let same = |h: &SavesHeld| {
        let mut nb = names(&h.b.dir);
        nb.retain(|n| n != "k/keep.local");
        names(&h.a.dir) == nb
    };
    wait_until(Duration::from_secs(20), || {
        h.a.path("k").is_dir() && same(&h)
    });
    std::thread::sleep(Duration::from_secs(1));
    let text = h.b.log_text();
    let local = [
        "new folder k/",
        "folder changed locally: k/",
        "deleted locally: k",
    ]
    .iter()
    .filter(|w| has_line_ending(&text, w) || text.contains(&format!("{w} ")))
    .count();
    let ok = h.a.path("k").is_dir()
        && h.b.path("k/keep.local").is_file()
        && !h.a.path("k/x").exists()
        && !h.b.path("k/x").exists()
        && same(&h);
    let c = conflicts(&h.a.dir);
    assert!(
        ok && local == 0 && c.is_empty() && emptied,
        "k deleted by A, kept by B for its ignored k/keep.local, then B killed: k on both, \
         k/x nowhere, same names (but k/keep.local): {ok} (A {:?}, B {:?}); B's local changes of \
         k {local}; conflict copies {c:?}; B's log emptied {emptied}\nB:\n{}",
        names(&h.a.dir),
        names(&h.b.dir),
        tail(&text, 14)
    );
}

/// A and B in sync on folder `g` (`g/x`, `g/y`); B's saves held off. B's user ignores `g/`
/// (`.leftignore`, not offered to A while B's saves are held: README "only saved changes are
/// offered"). A's user deletes `g`. B takes nothing of it (ignored here: README "neither sent
/// nor taken nor deleted") and is killed, then restarts. Expected: B's `g/x`, `g/y` still
/// there, no conflict copy, B's install log empty within 15 s, no `deleted locally` line for
/// `g` or `g/...` on B; then, B's user removing `.leftignore`, A and B identical within 30 s
/// and still no conflict copy.
///
/// Passes (5 runs of 5).
#[test]
fn a_folder_ignored_here_deleted_by_the_peer_before_a_kill_is_kept_and_converges() {
    let t = TestDir::new("r24-ignored");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("g/x"), "g/x");
    write_file(&a.path("g/y"), "g/y");
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    assert!(wait_until(SOON, || log_len(&b) == 0));
    std::thread::sleep(Duration::from_millis(500));
    let Some(mut h) = SavesHeld::hold(a, b, pa, pb) else {
        return;
    };
    write_file(&h.b.path(".leftignore"), "g/\n");
    assert!(h.b.wait_log(SOON, "changed locally: .leftignore"));
    std::thread::sleep(Duration::from_millis(500));
    fs::remove_dir_all(h.a.path("g")).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    h.kill_b();
    h.restart_b(&t);
    assert!(h.b.wait_log(SOON, "connected"));
    let emptied = wait_until(Duration::from_secs(15), || log_len(&h.b) == 0);
    std::thread::sleep(Duration::from_secs(1));
    let kept = h.b.path("g/x").is_file() && h.b.path("g/y").is_file();
    let text = h.b.log_text();
    let local = text
        .lines()
        .filter(|l| l.contains("deleted locally: g"))
        .count();
    let c1 = conflicts(&h.a.dir).len() + conflicts(&h.b.dir).len();
    fs::remove_file(h.b.path(".leftignore")).unwrap();
    let same = wait_until(Duration::from_secs(30), || {
        !h.a.path(".leftignore").exists() && tree_diff(&h.a.dir, &h.b.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(1));
    let c = [conflicts(&h.a.dir), conflicts(&h.b.dir)].concat();
    assert!(
        kept && local == 0 && c1 == 0 && emptied && same && c.is_empty(),
        "g ignored on B (unsaved), deleted by A, B killed: B's g kept {kept}; B's local \
         deletions under g {local}; B's log emptied {emptied}; after .leftignore removed, \
         identical within 30 s {same} ({:?}); conflict copies {c:?}\nB:\n{}\nA:\n{}",
        tree_diff(&h.a.dir, &h.b.dir),
        tail(&h.b.log_text(), 14),
        tail(&h.a.log_text(), 6)
    );
}

/// A long name (80 bytes, as `Music/Artist/Album (year)/NN - Title.flac` names go) for file `i`.
fn long_name(i: usize) -> String {
    format!("Music/Some Artist Name/A Rather Long Album Title (2019)/{i:05} - Track Title.flac")
}

/// A and B in sync on `x` and 20,000 files with 80-byte names; B's saves held off. A's user
/// writes `x` anew (B installs it: logged, done), then deletes the 20,000 files (B applies
/// them all: logged, done) and B is killed. While down, B's user edits `x` (B's copy of A's
/// new `x`). B restarts. Expected: the install log is used (no `not used` line: 40,001 records
/// of entries, far under MAX_RECORDS), so B's edit is a change of A's new `x` and wins: on A
/// within 30 s, no conflict copy, no deleted file back, A and B identical.
///
/// Saw: failed 5 runs of 5. B's restart logs `.../.left/installs: holds more than an install
/// log can; not used` (the log: 5,240,120 bytes); B's edit of `x` is then a change of the old
/// `x` its index holds, concurrent with A's: A's `x, second, by A` is kept as
/// `x.sync-conflict-...-<A's id>` on both (B's edit, newer, wins and reaches A). The 20,000
/// deletions took 8.5-18.5 s here (saves held, 2 shared cores); without held saves (a
/// script, two daemons, 80-byte names): 5.45 s, 5.02 s with the parent commit's binary
/// (+8%); 20,000 short names 3.31 / 3.60 s against 3.06 / 3.19 s (+8-13%); and saves going,
/// the log grew to at most 2.74 MB (20,000 deletions) and 2.41 MB (40,000) before a save
/// emptied it, and was empty 3 s later: it stays bounded while saves land, and drops once
/// about 20,000 deletions wait for one (a save failing: disk full; a slow whole rewrite).
///
/// Suspected cause: deletions now cost the log two entries each in `load`'s memory count
/// (src/store/intents.rs:189 for the entry, :173 again for its done record, a clone): about
/// 2 x 440 bytes (`Entry::mem_cost`, 176 + 88 + 2 x 80 + 16) per deletion, so 20,000
/// deletions of 80-byte names pass MAX_HELD (16 MiB, :31; checked at :195) while far under
/// MAX_RECORDS; the count never goes down when a path's entry is replaced. Before the commit
/// (`apply_delete`, src/sync/install.rs:635, :697) deletions cost the log nothing.
///
/// Not fixed yet (known, open): it needs about 20,000 deletions between two index saves (saves
/// land every 0.25 s while changes come; a save failing for long, disk full, would do it), and
/// costs a conflict copy, no content. Run by hand: `cargo test --release --test review24 --
/// --ignored`.
#[test]
#[ignore = "known: the install log's memory bound counts a done deletion twice (review24)"]
fn twenty_thousand_long_named_deletions_before_a_kill_keep_the_log_for_an_edit_made_while_down() {
    let t = TestDir::new("r24-long");
    let n = 20_000;
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("x"), "x, first");
    for i in 0..n {
        write_file(&a.path(&long_name(i)), content(i));
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, Duration::from_secs(120));
    assert!(b.wait_log(SOON, "index written"));
    assert!(wait_until(SOON, || log_len(&b) == 0));
    std::thread::sleep(Duration::from_millis(500));
    let Some(mut h) = SavesHeld::hold(a, b, pa, pb) else {
        return;
    };
    fs::write(h.a.path("x"), "x, second, by A").unwrap();
    assert!(wait_until(SOON, || has_content(
        &h.b.path("x"),
        b"x, second, by A"
    )));
    let t0 = Instant::now();
    for i in 0..n {
        fs::remove_file(h.a.path(&long_name(i))).unwrap();
    }
    let got = wait_until(Duration::from_secs(60), || {
        (0..n).all(|i| !h.b.path(&long_name(i)).exists())
    });
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let logged = log_len(&h.b);
    h.kill_b();
    assert!(got, "B did not take the deletions");
    fs::write(h.b.path("x"), "x, third, by B's user while down").unwrap();
    h.restart_b(&t);
    let ok = wait_until(Duration::from_secs(30), || {
        has_content(&h.a.path("x"), b"x, third, by B's user while down")
            && tree_diff(&h.a.dir, &h.b.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(1));
    let dropped = count(&h.b, "not used");
    let c = [conflicts(&h.a.dir), conflicts(&h.b.dir)].concat();
    let back = (0..n)
        .filter(|&i| h.a.path(&long_name(i)).exists() || h.b.path(&long_name(i)).exists())
        .count();
    assert!(
        ok && dropped == 0 && c.is_empty() && back == 0,
        "{n} deletions of 80-byte names taken in {took:?} (B's install log {logged} bytes), \
         then a kill and an edit of x on B while down: B's edit on A, identical, within 30 s: \
         {ok}; B's install log not used: {dropped}; conflict copies {c:?}; files back {back}\
         \nB:\n{}",
        tail(&h.b.log_text(), 6)
    );
}

/// Three peers, a full mesh, in sync on 60 files `dNNNNN` and folder `k` (`k/x`); B's saves
/// held off. A's user deletes `d00000`..`d00039` and `k`; C's user edits `d00050` and deletes
/// `d00051`; B takes it all and is killed. While B is down its user restores `d00001` with
/// its old bytes and writes `d00002` anew (both after the deletions it had received). B
/// restarts. Expected within 30 s: A, B and C identical; `d00001` (old bytes), `d00002` (B's)
/// and `d00050` (C's) on all; the other deleted files and `k` nowhere; no conflict copy; B's
/// install log empty.
///
/// Passes (5 runs of 5).
#[test]
fn three_peers_converge_after_deletions_a_kill_and_restores_while_down() {
    let t = TestDir::new("r24-three");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start = |n: usize| {
        let others: Vec<u16> = (0..3).filter(|&j| j != n).map(|j| ports[j]).collect();
        Peer::start(&t, ["A", "B", "C"][n], ports[n], &others)
    };
    let a = start(0);
    for i in 0..60 {
        write_file(&a.path(&format!("d{i:05}")), content(i));
    }
    write_file(&a.path("k/x"), "A's k/x");
    let mut b = start(1);
    let c = start(2);
    wait_identical(&a.dir, &b.dir, SOON);
    wait_identical(&a.dir, &c.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    assert!(wait_until(SOON, || log_len(&b) == 0));
    std::thread::sleep(Duration::from_millis(500));
    let (ix, jl) = (b.path(".left/index"), b.path(".left/index.log"));
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    for i in 0..40 {
        fs::remove_file(a.path(&format!("d{i:05}"))).unwrap();
    }
    fs::remove_dir_all(a.path("k")).unwrap();
    write_file(&c.path("d00050"), "C's edit of d00050");
    fs::remove_file(c.path("d00051")).unwrap();
    let got = wait_until(SOON, || {
        (0..40).all(|i| !b.path(&format!("d{i:05}")).exists())
            && !b.path("k").exists()
            && has_content(&b.path("d00050"), b"C's edit of d00050")
            && !b.path("d00051").exists()
    });
    std::thread::sleep(Duration::from_millis(800));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(got, "B did not take A's and C's changes");
    write_file(&b.path("d00001"), content(1));
    write_file(&b.path("d00002"), "B's d00002 while down");
    b = start(1);
    let want = |p: &Peer| {
        has_content(&p.path("d00001"), content(1).as_bytes())
            && has_content(&p.path("d00002"), b"B's d00002 while down")
            && has_content(&p.path("d00050"), b"C's edit of d00050")
    };
    let ok = wait_until(Duration::from_secs(30), || {
        want(&a)
            && want(&c)
            && tree_diff(&a.dir, &b.dir).is_none()
            && tree_diff(&a.dir, &c.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(1));
    let back: Vec<String> = (3..40)
        .chain([0, 51])
        .map(|i| format!("d{i:05}"))
        .chain(["k".to_string()])
        .filter(|n| [&a, &b, &c].iter().any(|p| p.path(n).exists()))
        .collect();
    let cs = [conflicts(&a.dir), conflicts(&b.dir), conflicts(&c.dir)].concat();
    let emptied = wait_until(Duration::from_secs(10), || log_len(&b) == 0);
    assert!(
        ok && back.is_empty() && cs.is_empty() && emptied,
        "three peers after deletions taken by B before a kill and B's restore and edit made \
         while down: converged with the expected files within 30 s: {ok} (A-B {:?}, A-C {:?}); \
         back {back:?}; conflict copies {cs:?}; B's log emptied {emptied}\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        tree_diff(&a.dir, &c.dir),
        tail(&b.log_text(), 12)
    );
}

/// A and B in sync on 3,000 files (saves not held); A's user deletes them all; B is killed
/// (kill -9) once it has logged `kill_at` deletions, then restarts; three rounds (500, 1,500,
/// 2,900). Expected after each: within 30 s A and B identical with none of the files, no
/// conflict copy, B's install log empty, no `not used` line.
///
/// Passes (5 runs of 5; one run: killed with 2,116, 1,492 and 86 files left on B, which then
/// made 635, 1,029 and 787 local deletions on restart: the defect of
/// `many_received_deletions_then_a_kill_make_no_new_version`, not asserted here).
#[test]
fn kills_in_the_middle_of_many_received_deletions_resurrect_nothing() {
    let t = TestDir::new("r24-midkill");
    let n = 3000;
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let mut report = Vec::new();
    for (round, kill_at) in [500usize, 1500, 2900].into_iter().enumerate() {
        for i in 0..n {
            write_file(&a.path(&format!("d{i:05}")), content(i + round));
        }
        wait_identical(&a.dir, &b.dir, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1500));
        let before = count(&b, "deleted d");
        for i in 0..n {
            fs::remove_file(a.path(&format!("d{i:05}"))).unwrap();
        }
        spin_until(SOON, || count(&b, "deleted d") >= before + kill_at);
        b.kill();
        let left_on_b = (0..n)
            .filter(|i| b.path(&format!("d{i:05}")).exists())
            .count();
        b = Peer::start(&t, "B", pb, &[pa]);
        let ok = wait_until(Duration::from_secs(30), || {
            (0..n).all(|i| !a.path(&format!("d{i:05}")).exists())
                && tree_diff(&a.dir, &b.dir).is_none()
        });
        let emptied = wait_until(Duration::from_secs(10), || log_len(&b) == 0);
        let c = [conflicts(&a.dir), conflicts(&b.dir)].concat();
        let dropped = count(&b, "not used");
        let local = count(&b, "deleted locally");
        report.push(format!(
            "round {round}: killed with {left_on_b} files left on B; converged empty {ok}; \
             conflicts {c:?}; log emptied {emptied}; log not used {dropped}; B's local \
             deletions after the restart {local}"
        ));
        assert!(
            ok && c.is_empty() && emptied && dropped == 0,
            "{}\n{:?}\nB:\n{}",
            report.join("\n"),
            tree_diff(&a.dir, &b.dir),
            tail(&b.log_text(), 10)
        );
    }
    eprintln!("{}", report.join("\n"));
}

/// A and B in sync on file `x`; B's saves held off. A's user deletes `x`, then makes a folder
/// `x` (mode 0750) holding `x/y`; B applies the deletion, the folder and the file (all logged,
/// done) and is killed; B restarts; nobody touched anything. Expected: no new local version on
/// B for `x` or `x/y` (`new folder x/`, `folder ... locally: x/`, `changed locally: x/y`,
/// `deleted locally: x`), `x` 0750 on both, A and B identical, no conflict copy, B's install
/// log empty within 15 s.
///
/// Passes (4 runs of 4).
#[test]
fn a_file_deleted_then_made_a_folder_by_the_peer_before_a_kill_is_the_peers() {
    let t = TestDir::new("r24-file-to-folder");
    let Some(mut h) = held_with(&t, 0, content) else {
        return;
    };
    fs::remove_file(h.a.path("x")).unwrap();
    assert!(wait_until(SOON, || !h.b.path("x").exists()));
    std::thread::sleep(Duration::from_millis(300));
    write_file(&h.a.path("x/y"), "A's x/y");
    fs::set_permissions(
        h.a.path("x"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    let got = wait_until(SOON, || {
        has_content(&h.b.path("x/y"), b"A's x/y") && mode_or_zero(&h.b.path("x")) == 0o750
    });
    std::thread::sleep(Duration::from_millis(800));
    h.kill_b();
    assert!(got, "B did not take folder x");
    h.restart_b(&t);
    assert!(h.b.wait_log(SOON, "connected"));
    let emptied = wait_until(Duration::from_secs(15), || log_len(&h.b) == 0);
    std::thread::sleep(Duration::from_secs(2));
    let text = h.b.log_text();
    let local = text
        .lines()
        .filter(|l| {
            l.ends_with("new folder x/")
                || l.contains("locally: x/ ")
                || l.contains("changed locally: x/y")
                || l.ends_with("deleted locally: x")
        })
        .count();
    let c = [conflicts(&h.a.dir), conflicts(&h.b.dir)].concat();
    let ok = mode_or_zero(&h.a.path("x")) == 0o750
        && mode_or_zero(&h.b.path("x")) == 0o750
        && tree_diff(&h.a.dir, &h.b.dir).is_none();
    assert!(
        ok && local == 0 && c.is_empty() && emptied,
        "x deleted by A then made a folder 0750 with x/y, taken by B before a kill: modes and \
         identical {ok} (A {:o}, B {:o}, {:?}); B's local changes {local}; conflict copies \
         {c:?}; B's log emptied {emptied}\nB:\n{}",
        mode_or_zero(&h.a.path("x")),
        mode_or_zero(&h.b.path("x")),
        tree_diff(&h.a.dir, &h.b.dir),
        tail(&text, 12)
    );
}
