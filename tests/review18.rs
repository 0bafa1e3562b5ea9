//! Eighteenth review: a random schedule and a local user racing the daemon around kills
//! (helper session, branch review18). Real daemons on 127.0.0.1. A test asserts the correct
//! behaviour: it fails where it found a defect.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// A pull cut by a kill leaves its temp file; while B is down, A's user deletes the file, so
/// no pull will ever want that temp file again. B's user also adds a 512 MiB file while B is
/// down, so that B's first scan after the restart takes a moment (~0.9 s) and A's `IndexDone`
/// arrives before it ends (`Model::sweep_found_temps`, src/sync/model.rs:611, returns at once
/// before the first scan). Expected: `.big.left-tmp` removed within a minute. Passes (3 runs):
/// the temp file goes anyway.
#[test]
fn a_cut_pulls_temp_file_goes_when_its_file_was_deleted_and_the_first_scan_is_slow() {
    let t = TestDir::new("r18-orphan-temp-slow-scan");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    // B is slowed down so that the pull is cut half-way.
    let throttle = Throttle::new(
        b.pid().unwrap(),
        Duration::from_millis(20),
        Duration::from_millis(80),
    );
    write_random(&t.join("staging/big"), 64 << 20, 18);
    fs::rename(t.join("staging/big"), a.path("big")).unwrap();
    let tmp = b.path(".big.left-tmp");
    let cut = wait_until(SOON, || {
        fs::metadata(&tmp).is_ok_and(|m| m.len() >= 8 << 20)
    });
    b.kill();
    drop(throttle);
    assert!(cut, "B's temp file never grew");
    assert!(tmp.exists(), "no temp file left by the kill");
    // While B is down: A's user deletes big; B's user adds a big sparse file (a slow scan).
    fs::remove_file(a.path("big")).unwrap();
    assert!(a.wait_log(SOON, "deleted locally: big"));
    let slow = fs::File::create(b.path("slow")).unwrap();
    slow.set_len(512 << 20).unwrap();
    drop(slow);
    let b = Peer::start_with(&t, "B", pb, &[pa], &[]);
    wait_identical(&a.dir, &b.dir, Duration::from_secs(240));
    let gone = wait_until(Duration::from_secs(60), || !tmp.exists());
    assert!(
        gone,
        "B's temp file of a deleted file is still there a minute after the shares agree \
         ({} bytes)\nB:\n{}",
        fs::metadata(&tmp).map_or(0, |m| m.len()),
        tail(&b.log_text(), 25)
    );
}

// ---------------------------------------------------------------------------------------------
// A random schedule: a star of three peers, B in the middle, killed at random moments while
// A and C send it files at once; B's user edits, deletes and renames while B is down and
// right after the restart.

/// What every share must end with: path -> content.
type Want = BTreeMap<String, Vec<u8>>;

fn small(tag: &str, r: usize, i: usize) -> Vec<u8> {
    format!("{tag} round {r} file {i} ")
        .repeat(20 + i % 50)
        .into_bytes()
}

/// Files of a share (conflict copies included), with content; `.left/` and temp files left out.
fn contents(root: &Path) -> Want {
    listing(root)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s.is_some())
        .filter_map(|(p, _)| read(&root.join(&p)).map(|d| (p, d)))
        .collect()
}

fn star_round(seed: u64) {
    let t = TestDir::new(&format!("r18-star-{seed}"));
    let mut rng = Rng::new(seed);
    let (pa, pb) = two_ports();
    let pc = free_port();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let c = Peer::start(&t, "C", pc, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa, pc]);
    let staging = t.join("staging");
    let mut want = Want::new();
    let mut b_changed = BTreeSet::new();
    const ROUNDS: usize = 4;
    const N: usize = 400;
    for r in 0..ROUNDS {
        // A and C add files at once (and one big file each, every other round).
        for (p, tag) in [(&a, "a"), (&c, "c")] {
            fs::create_dir_all(p.path(&format!("{tag}{r}"))).unwrap();
            for i in 0..N {
                let name = format!("{tag}{r}/f{i:03}");
                let data = small(tag, r, i);
                put_file(&staging, &p.path(&name), &data);
                want.insert(name, data);
            }
            if r % 2 == 0 {
                let name = format!("{tag}{r}/big");
                let data = random_bytes(seed * 100 + r as u64 + tag.len() as u64, 12 << 20);
                put_file(&staging, &p.path(&name), &data);
                want.insert(name, data);
            }
        }
        // And rewrite some of their earlier files that B's user never touched (second
        // versions, in flight with the new files).
        if r > 0 {
            for (p, tag) in [(&a, "a"), (&c, "c")] {
                let old: Vec<String> = want
                    .keys()
                    .filter(|k| {
                        k.starts_with(tag) && !k.ends_with("big") && !b_changed.contains(*k)
                    })
                    .filter(|k| !k.starts_with(&format!("{tag}{r}/")))
                    .cloned()
                    .collect();
                for _ in 0..40 {
                    let k = &old[(rng.next_u64() % old.len() as u64) as usize];
                    let data = format!("{tag}'s rewrite in round {r} of {k} ")
                        .repeat(30)
                        .into_bytes();
                    put_file(&staging, &p.path(k), &data);
                    want.insert(k.clone(), data);
                }
            }
        }
        // B is killed at a random moment while it takes them.
        let wait_ms = 30 + rng.next_u64() % 800;
        std::thread::sleep(Duration::from_millis(wait_ms));
        b.kill();
        // B's user, while B is down: edits, deletes and renames some of what B has of this
        // round (not touched by A's or C's users again).
        let have: Vec<String> = want
            .keys()
            .filter(|k| k.contains(&format!("{r}/")) && !b_changed.contains(*k))
            .filter(|k| b.path(k).is_file())
            .cloned()
            .collect();
        let mut acted = Vec::new();
        for k in &have {
            match rng.next_u64() % 8 {
                0 => {
                    let mut d = read(&b.path(k)).unwrap();
                    d.extend_from_slice(format!("B's edit while down, round {r}\n").as_bytes());
                    write_file(&b.path(k), &d);
                    want.insert(k.clone(), d);
                    acted.push(format!("edit {k}"));
                }
                1 => {
                    fs::remove_file(b.path(k)).unwrap();
                    want.remove(k);
                    acted.push(format!("rm {k}"));
                }
                2 => {
                    let to = format!("{k}.moved");
                    fs::rename(b.path(k), b.path(&to)).unwrap();
                    let d = want.remove(k).unwrap();
                    want.insert(to.clone(), d);
                    b_changed.insert(to.clone());
                    acted.push(format!("mv {k} {to}"));
                }
                _ => continue,
            }
            b_changed.insert(k.clone());
        }
        b = Peer::start(&t, "B", pb, &[pa, pc]);
        // Right after the first scan (during it: `edited_during_the_first_scan`): a few more
        // edits and deletions of received files.
        // (A first scan that finds nothing to record logs no line.)
        b.wait_log(Duration::from_secs(2), "scan: ");
        let after: Vec<String> = have
            .iter()
            .filter(|k| !b_changed.contains(*k))
            .take(6)
            .cloned()
            .collect();
        for k in &after {
            if rng.next_u64().is_multiple_of(2) {
                let mut d = read(&b.path(k)).unwrap();
                d.extend_from_slice(format!("B's edit after restart, round {r}\n").as_bytes());
                write_file(&b.path(k), &d);
                want.insert(k.clone(), d);
                acted.push(format!("edit-after {k}"));
            } else {
                fs::remove_file(b.path(k)).unwrap();
                want.remove(k);
                acted.push(format!("rm-after {k}"));
            }
            b_changed.insert(k.clone());
        }
        // Sometimes killed again soon after the restart (during the recovery scan).
        if rng.next_u64().is_multiple_of(2) {
            std::thread::sleep(Duration::from_millis(rng.next_u64() % 400));
            b.kill();
            acted.push("killed again".into());
            b = Peer::start(&t, "B", pb, &[pa, pc]);
        }
        eprintln!(
            "seed {seed} round {r}: killed after {wait_ms} ms; {} changes by B's user; {:?}",
            acted.len(),
            acted.last()
        );
    }
    want.insert("seed-marker".into(), b"end".to_vec());
    write_file(&b.path("seed-marker"), "end");
    let ok = wait_until(Duration::from_secs(180), || {
        tree_diff(&a.dir, &b.dir).is_none() && tree_diff(&c.dir, &b.dir).is_none()
    });
    std::thread::sleep(Duration::from_secs(3));
    let got = contents(&b.dir);
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let wrong: Vec<&String> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, _)| k)
        .collect();
    let left_temps: Vec<String> = [&a.dir, &b.dir, &c.dir]
        .iter()
        .flat_map(|d| temps(d))
        .collect();
    assert!(
        ok && missing.is_empty()
            && extra.is_empty()
            && wrong.is_empty()
            && left_temps.is_empty()
            && b.log_text().matches("panicked").count() == 0,
        "seed {seed}: converged {ok} ({:?} / {:?}); missing on B {:?}; extra on B (resurrected \
         or conflict copies) {:?}; wrong content {:?}; temp files {:?}\nB:\n{}",
        tree_diff(&a.dir, &b.dir),
        tree_diff(&c.dir, &b.dir),
        &missing[..missing.len().min(8)],
        &extra[..extra.len().min(8)],
        &wrong[..wrong.len().min(8)],
        left_temps,
        tail(&b.log_text(), 20)
    );
}

/// A random schedule (seeded): A and C (not connected to each other) each add 400 small files
/// per round (and a 12 MiB one every other round), and from round 1 rewrite 40 of their earlier
/// files, at once; B, in the middle, is killed after a random 30-830 ms; while B is down its
/// user edits, deletes and renames some received files; B restarts, is sometimes killed again
/// within 0.4 s and restarted, and its user edits or deletes a few more once the first scan
/// is done (during it: see `edited_during_the_first_scan`). After 4 rounds: A, B and C
/// identical, every edit, deletion and rename of B's user on all three, A's and C's rewrites
/// there, nothing resurrected, no conflict copy, no temp file left. Passes (seeds 1-3, 9 runs
/// each).
#[test]
fn star_random_kills_with_user_changes_converge_seed_1() {
    star_round(1);
}

#[test]
fn star_random_kills_with_user_changes_converge_seed_2() {
    star_round(2);
}

#[test]
fn star_random_kills_with_user_changes_converge_seed_3() {
    star_round(3);
}

/// Files received just before a kill and edited by B's user right after the restart, while
/// B's first scan runs (a program appending to them as soon as it can, every 20 ms for 1.5
/// s). Every edit is made on A's received version: B's content must replace A's on A, with
/// no conflict copy (README: "a file received just before is not taken for a local edit",
/// "what you change while `left` is down changes what it had received"). Made reliable by
/// holding B's index saves off while it receives (chattr +i, as a kill right after the
/// installs leaves it) and by B's user copying in 16,000 small files while B is down (the
/// first scan takes ~0.3 s hashing them).
///
/// Seen first in `star_random_kills_with_user_changes_converge_seed_1` (1 run of 3, before
/// that test's edits after a restart were made to wait for the first scan: conflict copies
/// `a3/f000.sync-conflict-...-<A>` of the 3 files B's log had "changed while scanning"). This
/// test: failed 8 runs of 8, every file B's first scan found "changed while scanning" (122 to
/// 255 per run) ends with a conflict copy of A's own, never-edited version on A and B.
///
/// Suspected cause: the first scan finds such a file "changed while scanning"
/// (`scanner::hash_one`, src/scan/scanner.rs:1104; or "changed during hashing", line 1118),
/// counts it unstable (`hash_each`, line 99) and leaves it to the next scan, but at its end
/// it empties the install log's maps (`st.received = ...; st.installed = ...`,
/// src/scan/scanner.rs:641-642) for every path, those it did not settle included. The next
/// scan finds the file with no index entry and no logged install (`record`,
/// src/scan/scanner.rs:1123-1211: `take_done` finds nothing) and gives it a brand-new local
/// version, concurrent with A's: a conflict. B's newer mtime wins, and A's version becomes a
/// conflict copy on every peer; with an older mtime (a restore) A's version would win and the
/// user's edit would be the conflict copy. (Suggested: keep the log's records of the paths
/// the first scan left unsettled until a later scan settles them.)
#[test]
fn files_received_before_a_kill_and_edited_during_the_first_scan_make_no_conflict_copy() {
    edited_during_the_first_scan(false);
}

/// The same, and B's user then deletes every other edited file, 0.5 s after B's first scan
/// (a program that edits what comes in and removes what it is done with). The next scan has
/// given B's edits brand-new versions (above), so B's deletions are of those, concurrent with
/// A's version: "an edit beats a deletion made without seeing it", and A's files come back on
/// B (resurrected). Expected: gone from A and B. Failed 8 runs of 8 (65 to 87 of the
/// deleted files back on A and B).
/// Same suspected cause as above (src/scan/scanner.rs:641-642).
#[test]
fn files_received_before_a_kill_edited_during_the_first_scan_then_deleted_stay_deleted() {
    edited_during_the_first_scan(true);
}

fn edited_during_the_first_scan(delete: bool) {
    let t = TestDir::new(&format!("r18-edit-during-first-scan-{delete}"));
    // B's index saves held off (as a kill right after the installs leaves it).
    const N: usize = 300;
    let Some(k) = received_before_a_kill(&t, N, 60, |i| format!("A's file {i} ").repeat(40)) else {
        return;
    };
    let KilledAfterReceiving {
        a, b, pa, pb, have, ..
    } = k;
    let have: Vec<String> = have.iter().map(|i| format!("f{i:03}")).collect();
    // B's user also copies in a folder of many small files while B is down: B's first scan
    // after the restart takes a moment hashing them.
    for d in 0..40 {
        for i in 0..400 {
            write_file(
                &b.path(&format!("0bulk-{d:02}-{i:03}")),
                format!("bulk {d} {i} ").repeat(200),
            );
        }
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    // B's user appends to every file it had, as soon as B is up, for 1.5 s.
    let end = std::time::Instant::now() + Duration::from_millis(1500);
    let mut n = 0;
    while std::time::Instant::now() < end {
        for f in &have {
            use std::io::Write;
            let mut h = fs::OpenOptions::new().append(true).open(b.path(f)).unwrap();
            writeln!(h, "B's line {n}").unwrap();
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // Then (the variant) every other one deleted, once B's first scan is over.
    let mut deleted = Vec::new();
    if delete {
        assert!(b.wait_log(SOON, "scan: "));
        std::thread::sleep(Duration::from_millis(500));
        for f in have.iter().step_by(2) {
            fs::remove_file(b.path(f)).unwrap();
            deleted.push(f.clone());
        }
    }
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    wait_identical(&a.dir, &b.dir, SOON);
    let back: Vec<&String> = deleted.iter().filter(|f| a.path(f).exists()).collect();
    let c = conflicts(&a.dir);
    let not_b: Vec<&String> = have
        .iter()
        .filter(|f| !deleted.contains(f))
        .filter(|f| {
            !read(&a.path(f))
                .is_some_and(|d| d.ends_with(format!("B's line {}\n", n - 1).as_bytes()))
        })
        .collect();
    let unstable = b.log_text().matches("changed while scanning").count()
        + b.log_text().matches("changed during hashing").count();
    eprintln!(
        "{} files, {unstable} unstable, {} conflicts",
        have.len(),
        c.len()
    );
    for l in b
        .log_text()
        .lines()
        .filter(|l| l.contains("scan:") || l.contains("serving"))
        .take(4)
    {
        eprintln!("{l}");
    }
    assert!(
        c.is_empty() && not_b.is_empty() && back.is_empty(),
        "{} files received before the kill, edited by B's user during B's first scan ({} \
         found changed while scanned): {} deleted by B's user after it and back on A and B: \
         {:?}; {} conflict copies {:?}; not B's edit on A: {:?}\nB:\n{}",
        have.len(),
        unstable,
        back.len(),
        &back[..back.len().min(5)],
        c.len(),
        &c[..c.len().min(5)],
        &not_b[..not_b.len().min(5)],
        tail(&b.log_text(), 12)
    );
}

/// What a local user (or another program) may put at a temp name of B's.
#[derive(Clone, Copy, Debug)]
enum AtTemp {
    /// A symlink to a file outside the share, and a FIFO.
    SymlinkAndFifo,
    /// A folder holding a file.
    Folder,
}

/// Odd things at the temp names of files A is about to send (`.gN.left-tmp`), put there by
/// B's user while B runs (as after a kill, when a pull's temp file is left: with a kill the
/// pull of `g1` was stuck the same way in 1 run of 2, the other run had installed it before
/// the kill). Expected: B takes A's files within a minute, writes nothing through the
/// symlink, stays up.
fn odd_things_at_temp_names(what: AtTemp) {
    let t = TestDir::new(&format!("r18-odd-temps-{what:?}"));
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    let outside = t.join("outside");
    write_file(&outside, "not yours");
    let names: Vec<String> = match what {
        AtTemp::SymlinkAndFifo => {
            std::os::unix::fs::symlink(&outside, b.path(".g0.left-tmp")).unwrap();
            assert!(
                std::process::Command::new("mkfifo")
                    .arg(b.path(".g1.left-tmp"))
                    .status()
                    .unwrap()
                    .success()
            );
            vec!["g0".into(), "g1".into()]
        }
        AtTemp::Folder => {
            write_file(&b.path(".g0.left-tmp/inner"), "inner");
            vec!["g0".into()]
        }
    };
    for (i, n) in names.iter().enumerate() {
        write_random(&t.join(&format!("staging/{n}")), 1 << 20, 500 + i as u64);
        fs::rename(t.join(&format!("staging/{n}")), a.path(n)).unwrap();
    }
    let ok = wait_until(SOON, || {
        names
            .iter()
            .all(|n| same_file(&a.path(n), &b.path(n)).unwrap_or(false))
    });
    assert!(
        ok && b.alive() && has_content(&outside, b"not yours"),
        "{what:?}: B took A's files: {ok}; alive: {}; outside file intact: {}\nB:\n{}",
        b.alive(),
        has_content(&outside, b"not yours"),
        tail(&b.log_text(), 8)
    );
    if matches!(what, AtTemp::Folder) {
        // The user's folder is kept, moved aside, and syncs like any folder.
        let kept = ".g0.left-tmp.kept/inner";
        assert!(
            wait_until(SOON, || has_content(&b.path(kept), b"inner")
                && has_content(&a.path(kept), b"inner")),
            "the folder at the temp name was not kept as {kept}\nB:\n{}",
            tail(&b.log_text(), 8)
        );
    }
}

#[test]
fn a_symlink_and_a_fifo_at_temp_names_crash_nothing_and_sync() {
    odd_things_at_temp_names(AtTemp::SymlinkAndFifo);
}

/// Seen (3 runs of 3, and 1 of 2 of an earlier form with a kill): `g0: not synced yet:
/// .../B/.g0.left-tmp: File exists (os error 17)` every 5 s, for good: A and B never agree.
/// Suspected cause: `open_temp`'s `fresh` (src/sync/transfer.rs:583-587) removes whatever is
/// at the temp name with `dir.unlink(name)` (no AT_REMOVEDIR: EISDIR on a folder, ignored)
/// and then `create_new` fails with EEXIST; the pull is retried the same way forever. A
/// symlink or a FIFO there is handled (the test above passes). Expected: the pull gets past
/// it (the name is `left`'s: README "temp files (`.NAME.left-tmp`) are never synced"), or at
/// least gives up with one clear error instead of retrying forever.
#[test]
fn a_folder_at_a_temp_name_does_not_block_the_pull_for_good() {
    odd_things_at_temp_names(AtTemp::Folder);
}

/// A and C (not connected to each other) both write the same 200 paths with different
/// content while B, the only link between them, is not up (a real conflict, resolved on B);
/// B starts and is killed at a random moment, twice, while it takes and resolves them.
/// Expected: A, B and C identical within
/// three minutes; for each path, both contents kept (the winner and one conflict copy), no
/// more.
#[test]
fn concurrent_writes_on_two_peers_resolved_by_a_killed_middle_converge() {
    for seed in [7u64, 8] {
        let t = TestDir::new(&format!("r18-star-conflicts-{seed}"));
        let mut rng = Rng::new(seed);
        let (pa, pb) = two_ports();
        let pc = free_port();
        let a = Peer::start(&t, "A", pa, &[pb]);
        let c = Peer::start(&t, "C", pc, &[pb]);
        const N: usize = 200;
        // Written while B is not up: neither has seen the other's.
        for (p, tag) in [(&a, "A"), (&c, "C")] {
            for i in 0..N {
                put_file(
                    &t.join(&format!("staging-{tag}")),
                    &p.path(&format!("s/f{i:03}")),
                    format!("{tag}'s version of {i} ")
                        .repeat(10 + i % 30)
                        .as_bytes(),
                );
            }
        }
        for p in [&a, &c] {
            assert!(wait_until(SOON, || count(p, "changed locally: s/f") >= N));
        }
        let mut b = Peer::start(&t, "B", pb, &[pa, pc]);
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(50 + rng.next_u64() % 600));
            b.kill();
            b = Peer::start(&t, "B", pb, &[pa, pc]);
        }
        let ok = wait_until(Duration::from_secs(180), || {
            tree_diff(&a.dir, &b.dir).is_none() && tree_diff(&c.dir, &b.dir).is_none()
        });
        std::thread::sleep(Duration::from_secs(2));
        let got = contents(&b.dir);
        let mut bad = Vec::new();
        for i in 0..N {
            let base = format!("s/f{i:03}");
            let versions: Vec<&Vec<u8>> = got
                .iter()
                .filter(|(k, _)| **k == base || k.starts_with(&format!("{base}.sync-conflict-")))
                .map(|(_, v)| v)
                .collect();
            let ha = versions.iter().any(|v| v.starts_with(b"A's"));
            let hc = versions.iter().any(|v| v.starts_with(b"C's"));
            if versions.len() != 2 || !ha || !hc {
                bad.push(format!(
                    "{base}: {} copies, A's {ha}, C's {hc}",
                    versions.len()
                ));
            }
        }
        assert!(
            ok && bad.is_empty() && temps(&b.dir).is_empty(),
            "seed {seed}: converged {ok} ({:?} / {:?}); wrong: {:?}; temps {:?}\nB:\n{}",
            tree_diff(&a.dir, &b.dir),
            tree_diff(&c.dir, &b.dir),
            &bad[..bad.len().min(6)],
            temps(&b.dir),
            tail(&b.log_text(), 15)
        );
    }
}

const DONE: u32 = 1 << 31;

/// The records of an install log: (done, body).
fn records(log: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let (mut out, mut at) = (Vec::new(), 0);
    while at + 12 <= log.len() {
        let n = u32::from_be_bytes(log[at..at + 4].try_into().unwrap());
        let len = (n & !DONE) as usize;
        if at + 12 + len > log.len() {
            break;
        }
        out.push((n & DONE != 0, log[at + 12..at + 12 + len].to_vec()));
        at += 12 + len;
    }
    out
}

fn record(done: bool, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(body.len() as u32 | if done { DONE } else { 0 }).to_be_bytes());
    v.extend_from_slice(&xxh64(body).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// What A's user does while B is down, after B's install of A's new files was logged and cut
/// before its renames.
#[derive(Clone, Copy, Debug)]
enum WhileDown {
    /// Deletes them.
    Delete,
    /// Writes a second version of each.
    Rewrite,
}

/// B's installs of A's new files logged and cut before their renames (no done record, each
/// file complete at its temp name, none at its name; B's index saves held off so that the
/// index lacks them, as a kill right after the log append leaves it). While B is down A's
/// user deletes or rewrites them, and B's user copies in many small files (a slower first
/// scan). B restarts. Expected: A's deletion or new version on both, no conflict copy, no temp
/// file left.
fn logged_not_done_then_changed_on_the_peer(what: WhileDown) {
    let t = TestDir::new(&format!("r18-logged-not-done-{what:?}"));
    let Some(h) = SavesHeld::start(&t) else {
        return;
    };
    let SavesHeld {
        a,
        mut b,
        pa,
        pb,
        ix,
        jl,
    } = h;
    const N: usize = 40;
    let v1 = |i: usize| format!("A's first version of f{i:02} ").repeat(40);
    let v2 = |i: usize| format!("A's SECOND version of f{i:02} ").repeat(45);
    let staging = t.join("staging");
    for i in 0..N {
        put_file(&staging, &a.path(&format!("f{i:02}")), v1(i).as_bytes());
    }
    let ok = wait_until(SOON, || {
        (0..N).all(|i| has_content(&b.path(&format!("f{i:02}")), v1(i).as_bytes()))
    });
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(ok, "B did not receive A's files");
    // The crash state: the done records dropped, each file back at its temp name.
    let logp = b.path(".left/installs");
    let mut kept = Vec::new();
    for (done, body) in records(&fs::read(&logp).unwrap()) {
        if !(done && body.starts_with(b"f")) {
            kept.extend(record(done, &body));
        }
    }
    fs::write(&logp, kept).unwrap();
    for i in 0..N {
        let f = format!("f{i:02}");
        fs::rename(b.path(&f), b.path(&format!(".{f}.left-tmp"))).unwrap();
    }
    // While B is down.
    for i in 0..N {
        let f = format!("f{i:02}");
        match what {
            WhileDown::Delete => fs::remove_file(a.path(&f)).unwrap(),
            WhileDown::Rewrite => put_file(&staging, &a.path(&f), v2(i).as_bytes()),
        }
    }
    assert!(wait_until(SOON, || count(&a, "locally: f") >= 2 * N));
    for i in 0..8000 {
        write_file(
            &b.path(&format!("0bulk-{i:04}")),
            format!("bulk {i} ").repeat(200),
        );
    }
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, Duration::from_secs(120));
    let left = wait_until(Duration::from_secs(30), || temps(&b.dir).is_empty());
    let wrong: Vec<String> = (0..N)
        .map(|i| (i, format!("f{i:02}")))
        .filter(|(i, f)| match what {
            WhileDown::Delete => a.path(f).exists(),
            WhileDown::Rewrite => !has_content(&a.path(f), v2(*i).as_bytes()),
        })
        .map(|(_, f)| f)
        .collect();
    let c = conflicts(&a.dir);
    assert!(
        left && wrong.is_empty() && c.is_empty(),
        "{what:?}: temp files left on B: {:?}; not as A's user left them: {:?}; conflict \
         copies {:?}\nB:\n{}",
        temps(&b.dir),
        wrong,
        &c[..c.len().min(5)],
        tail(&b.log_text(), 15)
    );
}

#[test]
fn installs_logged_not_done_then_deleted_on_the_peer_while_down() {
    logged_not_done_then_changed_on_the_peer(WhileDown::Delete);
}

#[test]
fn installs_logged_not_done_then_rewritten_on_the_peer_while_down() {
    logged_not_done_then_changed_on_the_peer(WhileDown::Rewrite);
}

/// Both users edit the same files at the same moment (each appends a line to each file, in
/// place: an edit made on the other's received version keeps the other's line), B killed at
/// a random moment right after and restarted.
/// Nothing is overwritten without being kept: each file's two edits both survive on A and B
/// (one as the file, the other in a conflict copy, or B's appended to A's when B's edit was
/// made on A's version), and the shares converge.
#[test]
fn simultaneous_edits_on_both_sides_with_a_kill_lose_nothing() {
    for seed in [11u64, 12, 13] {
        let t = TestDir::new(&format!("r18-both-edit-{seed}"));
        let mut rng = Rng::new(seed);
        let (pa, pb) = two_ports();
        let a = Peer::start(&t, "A", pa, &[pb]);
        const N: usize = 150;
        let staging = t.join("staging");
        for i in 0..N {
            put_file(
                &staging,
                &a.path(&format!("f{i:03}")),
                format!("base {i} ").repeat(30).as_bytes(),
            );
        }
        let mut b = Peer::start(&t, "B", pb, &[pa]);
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_millis(600));
        let kill_at = rng.next_u64() % 300;
        let bdir = b.dir.clone();
        let appender = std::thread::spawn(move || {
            for i in 0..N {
                use std::io::Write;
                let mut h = fs::OpenOptions::new()
                    .append(true)
                    .open(bdir.join(format!("f{i:03}")))
                    .unwrap();
                writeln!(h, "B-edit-f{i:03}").unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        for i in 0..N {
            use std::io::Write;
            let mut h = fs::OpenOptions::new()
                .append(true)
                .open(a.path(&format!("f{i:03}")))
                .unwrap();
            writeln!(h, "A-edit-f{i:03}").unwrap();
        }
        std::thread::sleep(Duration::from_millis(kill_at));
        b.kill();
        appender.join().unwrap();
        let b = Peer::start(&t, "B", pb, &[pa]);
        let ok = wait_until(Duration::from_secs(120), || {
            tree_diff(&a.dir, &b.dir).is_none()
        });
        std::thread::sleep(Duration::from_secs(2));
        let got = contents(&a.dir);
        let mut lost = Vec::new();
        for i in 0..N {
            let base = format!("f{i:03}");
            let all: Vec<&Vec<u8>> = got
                .iter()
                .filter(|(k, _)| **k == base || k.starts_with(&format!("{base}.sync-conflict-")))
                .map(|(_, v)| v)
                .collect();
            let has = |needle: &str| {
                all.iter()
                    .any(|v| String::from_utf8_lossy(v).contains(needle))
            };
            if !has(&format!("B-edit-{base}")) || !has(&format!("A-edit-{base}")) {
                lost.push(format!(
                    "{base}: B's {} A's {} ({} copies)",
                    has(&format!("B-edit-{base}")),
                    has(&format!("A-edit-{base}")),
                    all.len()
                ));
            }
        }
        assert!(
            ok && lost.is_empty(),
            "seed {seed} (kill at {kill_at} ms): converged {ok} {:?}; edits lost: {} {:?}\nB:\n{}",
            tree_diff(&a.dir, &b.dir),
            lost.len(),
            &lost[..lost.len().min(6)],
            tail(&b.log_text(), 15)
        );
    }
}

/// A program on B that looks at every file of the share now and then, dotfiles included (an
/// indexer, a thumbnailer, `grep -r` in a loop): every 100 ms it opens each temp file it
/// finds and reads a little of it, holding it open 50 ms. A's two 96 MiB files must still
/// reach B (README: an open makes the pull start again, "verifying every block the file
/// holds"): each restart must keep what was verified, not loop forever.
#[test]
fn big_pulls_converge_while_a_program_keeps_opening_temp_files() {
    reader_loop(50);
}

/// The same, the program holding each temp file open 1 s (a slower reader: a virus scanner,
/// an indexer extracting text).
#[test]
fn big_pulls_converge_while_a_slow_program_keeps_opening_temp_files() {
    reader_loop(1000);
}

fn reader_loop(hold_ms: u64) {
    let t = TestDir::new(&format!("r18-reader-loop-{hold_ms}"));
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, bdir) = (stop.clone(), b.dir.clone());
    let opens = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let o2 = opens.clone();
    let reader = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            for tmp in temps(&bdir) {
                use std::io::Read;
                if let Ok(mut f) = fs::File::open(bdir.join(&tmp)) {
                    let mut buf = [0u8; 4096];
                    let _ = f.read(&mut buf);
                    o2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(hold_ms));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    for i in 0..2 {
        write_random(&t.join(&format!("staging/h{i}")), 96 << 20, 300 + i);
        fs::rename(t.join(&format!("staging/h{i}")), a.path(&format!("h{i}"))).unwrap();
    }
    let ok = wait_until(Duration::from_secs(120), || {
        (0..2).all(|i| {
            same_file(&a.path(&format!("h{i}")), &b.path(&format!("h{i}"))).unwrap_or(false)
        })
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    assert!(
        ok,
        "B did not get A's big files within 120 s while a program opened its temp files ({} \
         opens)\nB:\n{}",
        opens.load(std::sync::atomic::Ordering::Relaxed),
        tail(&b.log_text(), 20)
    );
    eprintln!("{} opens", opens.load(std::sync::atomic::Ordering::Relaxed));
}

/// Both users create the same new files at the same moment, each only where the name is not
/// taken yet (B's user with O_EXCL on B, A's user with a link), B is killed at a random moment
/// right after, and while it is down B's user appends a line to every one B has. Nothing may
/// be overwritten without being kept: each content a user made, and B's line, must survive on
/// A (in the file or a conflict copy), and the shares converge. Aimed at the installs that fail
/// "changed locally" after their done record (`Installer::rename_in`,
/// src/sync/install.rs:490-491: done, then `put_in_place` finds B's user's file and gives
/// up): after a kill the log says the peer's version was renamed in.
#[test]
fn simultaneous_creates_on_both_sides_with_a_kill_then_edits_while_down_lose_nothing() {
    for seed in [21u64, 22, 23] {
        let t = TestDir::new(&format!("r18-both-create-{seed}"));
        let mut rng = Rng::new(seed);
        let (pa, pb) = two_ports();
        let a = Peer::start(&t, "A", pa, &[pb]);
        write_file(&a.path("seed"), "seed");
        let mut b = Peer::start(&t, "B", pb, &[pa]);
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_millis(600));
        const N: usize = 300;
        let kill_at = 50 + rng.next_u64() % 400;
        let bdir = b.dir.clone();
        // Each user creates a name only if it is not there yet (O_EXCL; a link for A's): an
        // existing file (the other's, received) is never overwritten by a user here.
        let writer = std::thread::spawn(move || {
            let mut made = std::collections::HashSet::new();
            for i in 0..N {
                use std::io::Write;
                if let Ok(mut h) = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(bdir.join(format!("f{i:03}")))
                {
                    h.write_all(format!("B-create-f{i:03} ").repeat(20).as_bytes())
                        .unwrap();
                    made.insert(i);
                }
            }
            made
        });
        let staging = t.join("staging");
        fs::create_dir_all(&staging).unwrap();
        let mut a_made = std::collections::HashSet::new();
        for i in 0..N {
            let s = staging.join(format!("a{i:03}"));
            fs::write(&s, format!("A-create-f{i:03} ").repeat(25)).unwrap();
            if fs::hard_link(&s, a.path(&format!("f{i:03}"))).is_ok() {
                a_made.insert(i);
            }
            fs::remove_file(&s).unwrap();
        }
        let b_made = writer.join().unwrap();
        std::thread::sleep(Duration::from_millis(kill_at));
        b.kill();
        let mut b_down = std::collections::HashSet::new();
        for i in 0..N {
            use std::io::Write;
            if let Ok(mut h) = fs::OpenOptions::new()
                .append(true)
                .open(b.path(&format!("f{i:03}")))
            {
                writeln!(h, "B-down-f{i:03}").unwrap();
                b_down.insert(i);
            }
        }
        let first = b.log_text();
        eprintln!(
            "seed {seed}: {} installs given up (changed locally), {} conflicts before the kill",
            first.matches("changed locally; will look again").count(),
            first.matches("conflict: ").count()
        );
        let b = Peer::start(&t, "B", pb, &[pa]);
        let ok = wait_until(Duration::from_secs(120), || {
            tree_diff(&a.dir, &b.dir).is_none()
        });
        std::thread::sleep(Duration::from_secs(2));
        let got = contents(&a.dir);
        let mut lost = Vec::new();
        for i in 0..N {
            let base = format!("f{i:03}");
            let all: Vec<String> = got
                .iter()
                .filter(|(k, _)| **k == base || k.starts_with(&format!("{base}.sync-conflict-")))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            let has = |needle: String| all.iter().any(|v| v.contains(&needle));
            let (ha, hb, hd) = (
                has(format!("A-create-{base}")),
                has(format!("B-create-{base}")),
                has(format!("B-down-{base}")),
            );
            let wanted = [
                (ha, a_made.contains(&i)),
                (hb, b_made.contains(&i)),
                (hd, b_down.contains(&i)),
            ];
            if wanted.iter().any(|&(found, made)| made && !found) {
                lost.push(format!(
                    "{base}: A's {ha} B's {hb} B's line {hd} ({} copies)",
                    all.len()
                ));
            }
        }
        assert!(
            ok && lost.is_empty(),
            "seed {seed} (kill at {kill_at} ms): converged {ok} {:?}; lost: {} {:?}\nB:\n{}",
            tree_diff(&a.dir, &b.dir),
            lost.len(),
            &lost[..lost.len().min(6)],
            tail(&b.log_text(), 15)
        );
    }
}
