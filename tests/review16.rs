//! Sixteenth review: adversarial tests of the install log's "done" records and the first scan
//! after a kill (helper session, branch review16). Real daemons on 127.0.0.1. A test asserts
//! the correct behaviour: it fails where it found a defect.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const DONE: u32 = 1 << 31;

/// The records of an install log: (done, body).
fn records(log: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let (mut out, mut at) = (Vec::new(), 0);
    while at + 12 <= log.len() {
        let n = u32::from_be_bytes(log[at..at + 4].try_into().unwrap());
        let len = (n & !DONE) as usize;
        let sum = u64::from_be_bytes(log[at + 4..at + 12].try_into().unwrap());
        if at + 12 + len > log.len() {
            break;
        }
        let body = log[at + 12..at + 12 + len].to_vec();
        assert_eq!(xxh64(&body), sum, "checksum of an install log record");
        out.push((n & DONE != 0, body));
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

/// The path an entry record names (a u16 length, then the bytes).
fn entry_path(body: &[u8]) -> String {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    String::from_utf8_lossy(&body[2..2 + n]).into_owned()
}

/// A and B in sync (one file `seed`), B's index saved. Returns (A, B, A's port, B's port).
fn in_sync(t: &TestDir) -> (Peer, Peer, u16, u16) {
    let (pa, pb) = two_ports();
    let a = Peer::start(t, "A", pa, &[pb]);
    write_file(&a.path("seed"), "seed");
    let b = Peer::start(t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    (a, b, pa, pb)
}

/// A file received twice in a row (A's user wrote it, then rewrote it), the second install
/// cut by a kill after it was logged and before its rename, with no index save in between
/// (saves are held while groups install, `transfer::install_group` `hold_save`; a save every
/// 250 ms). The log then holds: f v1, v1 done, f v2 (not done). `intents::load` keeps the
/// last entry per path and drops the done mark when a later entry comes: at the restart f
/// (v1's content, which the index lacks) matches no record and its install is "not done",
/// so `scanner::record` gives it a brand-new local version, concurrent with A's v2: a
/// spurious conflict copy, A's v1 coming back as B's "edit". Made here by holding B's index
/// saves off (chattr +i on `.left/index.log` and `.left/index`), receiving v1 and v2, killing
/// B, and putting the crash state in place: v2's done record dropped, v2 back at its temp
/// name (complete, as the kill left it), v1 at f. Expected: f is v2 on both, no conflict.
#[test]
fn a_second_version_cut_before_its_rename_makes_no_conflict_copy() {
    a_second_version_cut_before_its_rename_(false);
}

/// The same, A's second version restored from a backup (`cp -p`: an older mtime than v1's):
/// B's v1, taken for a new local edit, is concurrent with A's v2 and wins on mtime: A's
/// restore is replaced on A by the content it replaced (kept only as a conflict copy).
#[test]
fn a_second_version_with_an_older_mtime_cut_before_its_rename_stays_on_the_peer() {
    a_second_version_cut_before_its_rename_(true);
}

fn a_second_version_cut_before_its_rename_(old_mtime: bool) {
    let t = TestDir::new(&format!("r16-second-version-cut-{old_mtime}"));
    let (a, mut b, pa, pb) = in_sync(&t);
    let ix = b.path(".left/index");
    let jl = b.path(".left/index.log");
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    const N: usize = 20;
    let v1 = |i: usize| format!("version one of f{i:02} ").repeat(50);
    let v2 = |i: usize| format!("version TWO of f{i:02}, A's user's edit ").repeat(50);
    let staging = t.join("staging");
    for i in 0..N {
        put_file(&staging, &a.path(&format!("f{i:02}")), v1(i).as_bytes());
    }
    let got = |b: &Peer, v: &dyn Fn(usize) -> String| {
        (0..N).all(|i| has_content(&b.path(&format!("f{i:02}")), v(i).as_bytes()))
    };
    let ok1 = wait_until(SOON, || got(&b, &v1));
    // v1's mtime, as B's install of it left it (the sender's).
    let mtime1: Vec<std::time::SystemTime> = (0..N)
        .map(|i| {
            fs::metadata(b.path(&format!("f{i:02}")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..N {
        let p = staging.join(format!("v2-f{i:02}"));
        write_file(&p, v2(i));
        if old_mtime {
            fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(std::time::SystemTime::now() - Duration::from_secs(86_400))
                .unwrap();
        }
        fs::rename(&p, a.path(&format!("f{i:02}"))).unwrap();
    }
    let ok2 = wait_until(SOON, || got(&b, &v2));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(ok1 && ok2, "B did not receive both versions");
    // The crash state: v2's done records dropped (the last one of each f), v2 back at its
    // temp name, v1 at f.
    let logp = b.path(".left/installs");
    let recs = records(&fs::read(&logp).unwrap());
    let mut last_done = std::collections::HashMap::new();
    let mut entries_per = std::collections::HashMap::<String, usize>::new();
    for (k, (done, body)) in recs.iter().enumerate() {
        if *done {
            last_done.insert(String::from_utf8_lossy(body).into_owned(), k);
        } else {
            *entries_per.entry(entry_path(body)).or_default() += 1;
        }
    }
    let cut: Vec<String> = (0..N)
        .map(|i| format!("f{i:02}"))
        .filter(|f| entries_per.get(f).copied().unwrap_or(0) >= 2 && last_done.contains_key(f))
        .collect();
    assert!(
        !cut.is_empty(),
        "B's install log does not hold two installs of any f (index saves not held?): {:?}",
        entries_per
    );
    let drop: std::collections::HashSet<usize> = cut.iter().map(|f| last_done[f]).collect();
    let mut kept = Vec::new();
    for (k, (done, body)) in recs.iter().enumerate() {
        if !drop.contains(&k) {
            kept.extend(record(*done, body));
        }
    }
    fs::write(&logp, kept).unwrap();
    for f in &cut {
        let i: usize = f[1..].parse().unwrap();
        fs::rename(b.path(f), b.path(&format!(".{f}.left-tmp"))).unwrap();
        write_file(&b.path(f), v1(i));
        fs::set_permissions(b.path(f), fs::Permissions::from_mode(0o644)).unwrap();
        fs::File::options()
            .write(true)
            .open(b.path(f))
            .unwrap()
            .set_modified(mtime1[i])
            .unwrap();
    }
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let c = conflicts(&a.dir);
    let wrong: Vec<&String> = cut
        .iter()
        .filter(|f| {
            let i: usize = f[1..].parse().unwrap();
            !has_content(&a.path(f), v2(i).as_bytes())
        })
        .collect();
    assert!(
        c.is_empty() && wrong.is_empty(),
        "{} second installs cut before their rename (nothing changed by B's user): conflict \
         copies {:?}; not A's v2 on A: {:?}\nB:\n{}",
        cut.len(),
        &c[..c.len().min(5)],
        wrong,
        tail(&b.log_text(), 12)
    );
}

fn drop_peer(p: Peer) {
    drop(p);
}

/// Everything in a share (not `.left/`, not temp files) with content and mode.
fn snapshot(root: &Path) -> Vec<(String, Option<Vec<u8>>, u32)> {
    listing(root)
        .unwrap()
        .into_iter()
        .map(|(p, size)| {
            let full = root.join(&p);
            let mode = mode_of(&full) & 0o777;
            (p, size.map(|_| fs::read(&full).unwrap()), mode)
        })
        .collect()
}

fn snapshot_diff(
    want: &[(String, Option<Vec<u8>>, u32)],
    got: &[(String, Option<Vec<u8>>, u32)],
) -> Vec<String> {
    let w: std::collections::HashMap<_, _> =
        want.iter().map(|(p, d, m)| (p.clone(), (d, m))).collect();
    let g: std::collections::HashMap<_, _> =
        got.iter().map(|(p, d, m)| (p.clone(), (d, m))).collect();
    let mut out = Vec::new();
    for (p, (d, m)) in &w {
        match g.get(p) {
            None => out.push(format!("{p}: gone")),
            Some((gd, gm)) => {
                if gd.is_some() != d.is_some() {
                    out.push(format!("{p}: type changed"));
                } else if gd != d {
                    out.push(format!("{p}: content differs"));
                } else if gm != m {
                    out.push(format!("{p}: mode {gm:o}, want {m:o}"));
                }
            }
        }
    }
    for p in g.keys() {
        if !w.contains_key(p) {
            out.push(format!("{p}: came (back)"));
        }
    }
    out.sort();
    out
}

/// A's user makes one round of mixed changes (round `r`) to the tree `base` made.
fn mixed_changes(a: &Path, staging: &Path, r: usize) {
    for i in 0..60 {
        // New small files in nested folders.
        put_file(
            staging,
            &a.join(format!("n{r}/d{}/e{}/f{i:02}", i % 4, i % 3)),
            format!("round {r} file {i} ").repeat(40).as_bytes(),
        );
    }
    for i in 0..20 {
        // Edits of the base's files.
        put_file(
            staging,
            &a.join(format!("base/g{i:02}")),
            format!("round {r} edit of g{i:02} ").repeat(60).as_bytes(),
        );
    }
    // Type changes: a file becomes a folder, a folder becomes a file.
    let ft = a.join(format!("base/t{r}"));
    if ft.is_file() {
        fs::remove_file(&ft).unwrap();
        write_file(&ft.join("inner"), format!("inner of t{r}"));
    }
    let dt = a.join(format!("base/u{r}"));
    if dt.is_dir() {
        fs::remove_dir_all(&dt).unwrap();
        write_file(&dt, format!("u{r} is a file now"));
    }
    // Deletions and chmods.
    for i in 0..10 {
        let p = a.join(format!("base/h{r}{i}"));
        if p.exists() {
            fs::remove_file(&p).unwrap();
        }
        let c = a.join(format!("base/c{i:02}"));
        fs::set_permissions(
            &c,
            fs::Permissions::from_mode(0o600 + (r as u32 % 2) * 0o40),
        )
        .unwrap();
    }
    // A big file, installed alone.
    write_random(&staging.join("big"), 24 << 20, 100 + r as u64);
    fs::rename(staging.join("big"), a.join(format!("big{r}"))).unwrap();
}

fn base_tree(a: &Path, staging: &Path, rounds: usize) {
    for i in 0..20 {
        put_file(
            staging,
            &a.join(format!("base/g{i:02}")),
            format!("g{i:02}").as_bytes(),
        );
    }
    for i in 0..10 {
        put_file(
            staging,
            &a.join(format!("base/c{i:02}")),
            format!("c{i:02}").as_bytes(),
        );
    }
    for r in 0..rounds {
        put_file(staging, &a.join(format!("base/t{r}")), b"t file");
        write_file(&a.join(format!("base/u{r}/x")), "u folder's file");
        for i in 0..10 {
            put_file(staging, &a.join(format!("base/h{r}{i}")), b"to delete");
        }
    }
}

/// Kill -9 at many moments while B takes a round of mixed changes from A (nested new files in
/// groups, edits, file<->folder, deletions, chmods, a big file), sometimes killed a second
/// time soon after the restart (during the recovery scan), then restarted with NO change by
/// B's user: every round ends with A exactly as A's user made it, B identical, no conflict
/// copy.
#[test]
fn killed_at_many_moments_while_taking_mixed_changes_loses_nothing() {
    const ROUNDS: usize = 9;
    let t = TestDir::new("r16-kill-mixed");
    let staging = t.join("staging");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    base_tree(&a.dir, &staging, ROUNDS);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    assert!(b.wait_log(SOON, "index written"));
    let mut problems = Vec::new();
    for r in 0..ROUNDS {
        let before = count(&b, "received ");
        mixed_changes(&a.dir, &staging, r);
        // Kill after a different number of receipts each round.
        // Then, from round 5, after a delay instead (in the big file's install, or between).
        let k = [1, 5, 25, 45, 70, 0, 0, 0, 0][r];
        if k > 0 {
            let _ = spin_until(SOON, || count(&b, "received ") >= before + k);
        } else {
            std::thread::sleep(Duration::from_millis(
                [0, 0, 0, 0, 0, 150, 400, 700, 1000][r],
            ));
        }
        b.kill();
        if r % 2 == 1 {
            // Again, during the first scan after the restart.
            b = Peer::start(&t, "B", pb, &[pa]);
            std::thread::sleep(Duration::from_millis(30 + 70 * r as u64));
            b.kill();
        }
        b = Peer::start(&t, "B", pb, &[pa]);
        let want = {
            // A's user's changes all seen by A (no more changes come).
            std::thread::sleep(Duration::from_secs(2));
            snapshot(&a.dir)
        };
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_secs(2));
        wait_identical(&a.dir, &b.dir, SOON);
        let d = snapshot_diff(&want, &snapshot(&a.dir));
        let c = conflicts(&a.dir);
        // (B's scan re-records A's deletions B applied before the kill as its own: harmless,
        // concurrent deletions; not counted.)
        let del = 0;
        if !d.is_empty() || !c.is_empty() {
            problems.push(format!(
                "round {r} (killed after {k} receipts): A changed: {:?}; conflicts {:?}; B's \
                 own deletions {del}\nB:\n{}",
                &d[..d.len().min(6)],
                &c[..c.len().min(4)],
                tail(&b.log_text(), 8)
            ));
            break;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// B receives files (some nested), is killed; while B is down B's user edits some of them AND
/// A's user edits the same ones (a real concurrent edit): both edits must survive, one of
/// them as a conflict copy, on both sides; files only A edited are A's; files only B edited
/// are B's.
#[test]
fn concurrent_edits_on_both_sides_while_b_is_down_after_a_kill_keep_both() {
    let t = TestDir::new("r16-concurrent-after-kill");
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 200;
    let name = |i: usize| format!("p{}/q{}/f{i:03}", i % 5, i % 3);
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&name(i)),
            format!("file {i} ").repeat(100).as_bytes(),
        );
    }
    assert!(spin_until(SOON, || count(&b, "received p") >= 40));
    b.kill();
    assert!(wait_until(SOON, || count(&a, "changed locally: p") >= N));
    let had: Vec<usize> = (0..N)
        .filter(|i| {
            has_content(
                &b.path(&name(*i)),
                format!("file {i} ").repeat(100).as_bytes(),
            )
        })
        .collect();
    assert!(had.len() >= 6);
    std::thread::sleep(Duration::from_millis(1100));
    // Thirds: both edit, only B edits, only A edits.
    let mut both = Vec::new();
    let mut only_b = Vec::new();
    let mut only_a = Vec::new();
    for (k, &i) in had.iter().enumerate() {
        let p = name(i);
        match k % 3 {
            0 => {
                write_file(&b.path(&p), format!("B's user's edit of {i}\n"));
                put_file(
                    &staging,
                    &a.path(&p),
                    format!("A's user's edit of {i}\n").as_bytes(),
                );
                both.push(i);
            }
            1 => {
                write_file(&b.path(&p), format!("B's user's edit of {i}\n"));
                only_b.push(i);
            }
            _ => {
                put_file(
                    &staging,
                    &a.path(&p),
                    format!("A's user's edit of {i}\n").as_bytes(),
                );
                only_a.push(i);
            }
        }
    }
    assert!(wait_until(SOON, || count(&a, "changed locally: p")
        >= N + both.len() + only_a.len()));
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let all = names(&a.dir);
    let holds = |i: usize, what: &str| {
        let want = format!("{what}'s user's edit of {i}\n");
        let p = name(i);
        let (dir, file) = p.rsplit_once('/').unwrap();
        all.iter().any(|n| {
            (n == &p || (n.starts_with(&format!("{dir}/{file}.sync-conflict-"))))
                && has_content(&a.path(n), want.as_bytes())
        })
    };
    let lost_both: Vec<String> = both
        .iter()
        .filter(|&&i| !holds(i, "A") || !holds(i, "B"))
        .map(|&i| name(i))
        .collect();
    let lost_b: Vec<String> = only_b
        .iter()
        .filter(|&&i| {
            !has_content(
                &a.path(&name(i)),
                format!("B's user's edit of {i}\n").as_bytes(),
            )
        })
        .map(|&i| name(i))
        .collect();
    let lost_a: Vec<String> = only_a
        .iter()
        .filter(|&&i| {
            !has_content(
                &a.path(&name(i)),
                format!("A's user's edit of {i}\n").as_bytes(),
            )
        })
        .map(|&i| name(i))
        .collect();
    let c = conflicts(&a.dir);
    assert!(
        lost_both.is_empty() && lost_b.is_empty() && lost_a.is_empty() && c.len() == both.len(),
        "both edited {}: an edit lost for {:?}; only B edited {}: not B's on A {:?}; only A \
         edited {}: not A's {:?}; conflict copies {} (want {})\nB:\n{}",
        both.len(),
        &lost_both[..lost_both.len().min(5)],
        only_b.len(),
        &lost_b[..lost_b.len().min(5)],
        only_a.len(),
        &lost_a[..lost_a.len().min(5)],
        c.len(),
        both.len(),
        tail(&b.log_text(), 10)
    );
}

/// Folders received before a kill, renamed by B's user while B is down (and a file inside
/// edited): on A the old names go, the new names come with B's content, no conflict copy.
#[test]
fn received_folders_renamed_while_down_after_a_kill_are_moved() {
    let t = TestDir::new("r16-folder-renamed-after-kill");
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 60;
    for i in 0..N {
        for j in 0..4 {
            put_file(
                &staging,
                &a.path(&format!("r{i:02}/s/f{j}")),
                format!("r{i} f{j} ").repeat(200).as_bytes(),
            );
        }
    }
    assert!(spin_until(SOON, || count(&b, "received r") >= 80));
    b.kill();
    assert!(wait_until(SOON, || count(&a, "changed locally: r") >= 4 * N));
    // Whole folders B has (all four files).
    let whole: Vec<usize> = (0..N)
        .filter(|i| {
            (0..4).all(|j| {
                has_content(
                    &b.path(&format!("r{i:02}/s/f{j}")),
                    format!("r{i} f{j} ").repeat(200).as_bytes(),
                )
            })
        })
        .collect();
    assert!(!whole.is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    for &i in &whole {
        fs::rename(b.path(&format!("r{i:02}")), b.path(&format!("moved{i:02}"))).unwrap();
        write_file(
            &b.path(&format!("moved{i:02}/s/f0")),
            format!("B edited r{i} f0\n"),
        );
    }
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let wrong: Vec<String> = whole
        .iter()
        .filter(|&&i| {
            a.path(&format!("r{i:02}")).exists()
                || !has_content(
                    &a.path(&format!("moved{i:02}/s/f0")),
                    format!("B edited r{i} f0\n").as_bytes(),
                )
                || !a.path(&format!("moved{i:02}/s/f3")).is_file()
        })
        .map(|i| format!("r{i:02}"))
        .collect();
    let c = conflicts(&a.dir);
    assert!(
        wrong.is_empty() && c.is_empty(),
        "B's user renamed {} received folders while B was down: wrong on A {} {:?}; conflict \
         copies {:?}\nB:\n{}",
        whole.len(),
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        &c[..c.len().min(5)],
        tail(&b.log_text(), 10)
    );
}

/// B killed while receiving; B's user edits and deletes some received files while down; B
/// restarts with A OFFLINE (stopped), runs its first scan, is killed again, restarts again
/// still alone, then A comes back: B's edits and deletions reach A, nothing else changes, no
/// conflict copy.
#[test]
fn changes_made_while_down_survive_a_restart_alone_and_a_second_kill() {
    let t = TestDir::new("r16-restart-alone");
    let (mut a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 300;
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&format!("w{}/f{i:03}", i % 7)),
            format!("file {i} ").repeat(100).as_bytes(),
        );
    }
    assert!(spin_until(SOON, || count(&b, "received w") >= 40));
    b.kill();
    assert!(wait_until(SOON, || count(&a, "changed locally: w") >= N));
    assert!(
        a.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    let had: Vec<String> = (0..N)
        .map(|i| format!("w{}/f{i:03}", i % 7))
        .filter(|p| b.path(p).is_file())
        .collect();
    assert!(had.len() >= 4);
    std::thread::sleep(Duration::from_millis(1100));
    let (mut edited, mut deleted) = (Vec::new(), Vec::new());
    for (k, p) in had.iter().enumerate() {
        if k % 2 == 0 {
            write_file(&b.path(p), format!("B's edit of {p}\n"));
            edited.push(p.clone());
        } else {
            fs::remove_file(b.path(p)).unwrap();
            deleted.push(p.clone());
        }
    }
    drop_peer(b);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    // Its first scan done, and the index saved after it (a journal record: every 250 ms).
    assert!(b.wait_log(SOON, "scan: "));
    std::thread::sleep(Duration::from_millis(800));
    b.kill();
    let b = Peer::start(&t, "B", pb, &[pa]);
    std::thread::sleep(Duration::from_secs(2));
    let a = Peer::start(&t, "A", pa, &[pb]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let lost: Vec<&String> = edited
        .iter()
        .filter(|p| !has_content(&a.path(p), format!("B's edit of {p}\n").as_bytes()))
        .collect();
    let back: Vec<&String> = deleted.iter().filter(|p| a.path(p).exists()).collect();
    let others = (0..N)
        .map(|i| format!("w{}/f{i:03}", i % 7))
        .filter(|p| !edited.contains(p) && !deleted.contains(p))
        .filter(|p| {
            let i: usize = p[p.len() - 3..].parse().unwrap();
            !has_content(&a.path(p), format!("file {i} ").repeat(100).as_bytes())
        })
        .count();
    let c = conflicts(&a.dir);
    assert!(
        lost.is_empty() && back.is_empty() && others == 0 && c.is_empty(),
        "edits lost {:?}; deletions undone {:?}; other files wrong {others}; conflict copies \
         {:?}\nB:\n{}",
        &lost[..lost.len().min(5)],
        &back[..back.len().min(5)],
        &c[..c.len().min(5)],
        tail(&b.log_text(), 10)
    );
}

/// A hostile or damaged `.left/installs` planted while B is down (B in sync with A, nothing
/// changed by B's user): huge lengths, a done record with invalid UTF-8, done records for
/// paths never logged, an entry naming `../` (checksummed, so read): B must start, touch
/// nothing outside the share, delete nothing on A, and stay in sync.
#[test]
fn a_planted_install_log_crashes_nothing_and_deletes_nothing() {
    let t = TestDir::new("r16-planted-log");
    let (a, mut b, pa, pb) = in_sync(&t);
    // B's saves held off, so that its install log still holds the entries at the kill.
    let (ix, jl) = (b.path(".left/index"), b.path(".left/index.log"));
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    let staging = t.join("staging");
    for i in 0..40 {
        put_file(
            &staging,
            &a.path(&format!("k{i:02}")),
            format!("k {i} ").repeat(30).as_bytes(),
        );
    }
    assert!(spin_until(SOON, || count(&b, "received k") >= 5));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    let real = fs::read(b.path(".left/installs")).unwrap_or_default();
    let recs = records(&real);
    let entry = recs.iter().find(|(d, _)| !d).map(|(_, b)| b.clone());
    assert!(
        entry.is_some(),
        "no entry in B's install log to plant variants of"
    );
    // B back in sync, stopped cleanly.
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        b.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    let outside = t.join("outside");
    fs::create_dir_all(&outside).unwrap();
    write_file(&outside.join("victim"), "outside the share");
    let want = snapshot(&a.dir);
    let mut plants: Vec<(&str, Vec<u8>)> = Vec::new();
    plants.push((
        "huge length",
        vec![0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2],
    ));
    plants.push((
        "huge done length",
        vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
    ));
    {
        let mut v = Vec::new();
        v.extend(record(true, b"k01"));
        v.extend(record(true, b"k02"));
        v.extend(record(true, &[0xff, 0xfe, b'k']));
        v.extend(record(true, b"../outside/victim"));
        plants.push(("done records for paths never logged, invalid UTF-8", v));
    }
    if let Some(e) = &entry {
        let p = entry_path(e);
        let n = p.len();
        // The same entry at `../outside/victim`-like paths and at an existing name.
        for bad in [
            "../outside/victim",
            "/etc/passwd",
            ".left/index",
            "k00/../../x",
        ] {
            let mut body = Vec::new();
            body.extend_from_slice(&(bad.len() as u16).to_be_bytes());
            body.extend_from_slice(bad.as_bytes());
            body.extend_from_slice(&e[2 + n..]);
            let mut v = Vec::new();
            v.extend(record(false, &body));
            v.extend(record(true, bad.as_bytes()));
            plants.push(("an entry naming a path outside", v));
        }
        // A real entry (some k file), done, then an entry and a done for it with a garbage
        // body of the right checksum.
        let mut v = Vec::new();
        v.extend(record(false, e));
        v.extend(record(true, p.as_bytes()));
        v.extend(record(false, &[0u8; 40]));
        plants.push(("a real entry, then a garbage entry", v));
    }
    let mut problems = Vec::new();
    for (what, bytes) in &plants {
        fs::write(b.path(".left/installs"), bytes).unwrap();
        let mut bb = Peer::start(&t, "B", pb, &[pa]);
        std::thread::sleep(Duration::from_secs(3));
        let alive = bb.alive();
        let d = snapshot_diff(&want, &snapshot(&a.dir));
        let db = snapshot_diff(&want, &snapshot(&b.dir));
        if !alive
            || !d.is_empty()
            || !db.is_empty()
            || !has_content(&outside.join("victim"), b"outside the share")
        {
            problems.push(format!(
                "{what}: B alive {alive}; A changed {:?}; B differs {:?}; outside victim there \
                 {}\nB:\n{}",
                &d[..d.len().min(4)],
                &db[..db.len().min(4)],
                outside.join("victim").exists(),
                tail(&bb.log_text(), 6)
            ));
        }
        let _ = bb.terminate(Duration::from_secs(20));
        b = bb;
    }
    drop_peer(b);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The natural way to the state the two tests above make: A's user writes many small files,
/// then rewrites them all while B is still receiving the first versions; B is killed while it
/// installs second versions (groups install back to back, index saves held meanwhile), and
/// restarted with nothing changed by B's user. Expected: A's second versions on both, no
/// conflict copy. Repeated with kills at different moments.
#[test]
fn files_rewritten_while_being_received_and_killed_make_no_conflict_copy() {
    let mut problems = Vec::new();
    // Timing-dependent: failed in 7 of 9 runs here (at round 0 or 1: 12 to 234 conflict
    // copies).
    for round in 0..6 {
        let t = TestDir::new(&format!("r16-rewritten-kill-{round}"));
        let (a, mut b, pa, pb) = in_sync(&t);
        let staging = t.join("staging");
        const N: usize = 1500;
        let v = |k: usize, i: usize| format!("v{k} of r{i:04} ").repeat(40 + k);
        for i in 0..N {
            put_file(&staging, &a.path(&format!("r{i:04}")), v(1, i).as_bytes());
        }
        assert!(spin_until(SOON, || count(&b, "received r") >= 100 + 100 * (round % 4)));
        for i in 0..N {
            put_file(&staging, &a.path(&format!("r{i:04}")), v(2, i).as_bytes());
        }
        // Killed once some second versions are in.
        let seconds = |b: &Peer| {
            let log = b.log_text();
            let mut seen = std::collections::HashSet::new();
            log.lines()
                .filter_map(|l| l.split("received r").nth(1))
                .filter(|r| !seen.insert(r[..4].to_string()))
                .count()
        };
        let _ = spin_until(SOON, || seconds(&b) >= 20 + 150 * (round % 4));
        b.kill();
        drop_peer(b);
        let b = Peer::start(&t, "B", pb, &[pa]);
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_secs(2));
        wait_identical(&a.dir, &b.dir, SOON);
        let c = conflicts(&a.dir);
        let wrong = (0..N)
            .filter(|&i| !has_content(&a.path(&format!("r{i:04}")), v(2, i).as_bytes()))
            .count();
        if !c.is_empty() || wrong > 0 {
            problems.push(format!(
                "round {round}: {} conflict copies {:?}; {wrong} files not A's v2\nB:\n{}",
                c.len(),
                &c[..c.len().min(4)],
                tail(&b.log_text(), 6)
            ));
            // The folder kept (its logs) for inspection.
            panic!("{}", problems.join("\n"));
        }
    }
}

/// The folder form of the first test: A's folders made on B (logged, done), then A's chmod
/// of them applied on B (`Model::put_meta`: logged, then done), cut by a kill between its log
/// entry and the chmod, with no index save since the folders were made. The log's last
/// entry for each folder is the chmod, not done; the folder on disk has the first mode; the
/// index lacks it: `scanner::folder` takes it for a new folder of ours, concurrent with A's
/// chmod, and B's mode may win: A's chmod undone on A, with no conflict copy (folders have
/// none). Made as the first test: index saves held off (chattr +i), the chmod's done record
/// dropped and the old mode put back. Expected: 0750 on both.
#[test]
fn a_peers_folder_chmod_cut_before_it_is_applied_is_not_undone() {
    let t = TestDir::new("r16-folder-chmod-cut");
    let (a, mut b, pa, pb) = in_sync(&t);
    let ix = b.path(".left/index");
    let jl = b.path(".left/index.log");
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if !hold_saves(&ix, &jl) {
        return;
    }
    const N: usize = 20;
    let all: Vec<String> = (0..N).map(|i| format!("m{i:02}")).collect();
    for p in &all {
        fs::create_dir(a.path(p)).unwrap();
        fs::set_permissions(a.path(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let modes = |p: &Peer, m: u32| all.iter().all(|n| mode_or_zero(&p.path(n)) & 0o777 == m);
    let ok1 = wait_until(SOON, || modes(&b, 0o755));
    std::thread::sleep(Duration::from_millis(1100));
    for p in &all {
        fs::set_permissions(a.path(p), fs::Permissions::from_mode(0o750)).unwrap();
    }
    let ok2 = wait_until(SOON, || modes(&b, 0o750));
    b.kill();
    assert!(chattr("-i", &ix) && chattr("-i", &jl));
    assert!(ok1 && ok2, "B did not take both modes");
    let logp = b.path(".left/installs");
    let recs = records(&fs::read(&logp).unwrap());
    let mut last_done = std::collections::HashMap::new();
    let mut entries_per = std::collections::HashMap::<String, usize>::new();
    for (k, (done, body)) in recs.iter().enumerate() {
        if *done {
            last_done.insert(String::from_utf8_lossy(body).into_owned(), k);
        } else {
            *entries_per.entry(entry_path(body)).or_default() += 1;
        }
    }
    let cut: Vec<&String> = all
        .iter()
        .filter(|f| entries_per.get(*f).copied().unwrap_or(0) >= 2 && last_done.contains_key(*f))
        .collect();
    assert!(!cut.is_empty(), "no folder logged twice: {entries_per:?}");
    let drop: std::collections::HashSet<usize> = cut.iter().map(|f| last_done[*f]).collect();
    let mut kept = Vec::new();
    for (k, (done, body)) in recs.iter().enumerate() {
        if !drop.contains(&k) {
            kept.extend(record(*done, body));
        }
    }
    fs::write(&logp, kept).unwrap();
    for f in &cut {
        fs::set_permissions(b.path(f), fs::Permissions::from_mode(0o755)).unwrap();
    }
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    let _ = wait_until(Duration::from_secs(8), || {
        modes(&a, 0o750) && modes(&b, 0o750)
    });
    let wrong = |p: &Peer| {
        cut.iter()
            .filter(|n| mode_or_zero(&p.path(n)) & 0o777 != 0o750)
            .count()
    };
    assert!(
        wrong(&a) == 0 && wrong(&b) == 0,
        "A's chmod (0750) of {} folders, cut on B before it was applied: not 0750 on A: {}, on \
         B: {}\nB:\n{}",
        cut.len(),
        wrong(&a),
        wrong(&b),
        tail(&b.log_text(), 8)
    );
}

/// Folders received before a kill (their files logged and done, the index not saved), moved
/// out of the share by B's user while B is down and replaced by symlinks to where they went
/// (`mv d /elsewhere/d; ln -s /elsewhere/d d`). A symlink is not synced, so the folder and
/// its files are deleted from the share on the peers (README: "a file replaced by one is
/// deleted on the peers"). Found: nothing outside is touched, but the folders stay on A, after
/// a kill AND after a clean stop (the control fails too: not a crash-recovery defect).
/// `scanner::record_gone` (and `record_received_gone`'s `gone`) asks `symlink_metadata` of
/// `d/x`, which follows the symlink `d` and finds the moved file: "created since the folder
/// was read", skipped. Only `d`'s deletion is recorded; A answers "d/ stays: it holds files
/// the deletion did not know of", and the shares never agree.
#[test]
fn received_folders_replaced_by_symlinks_while_down_touch_nothing_outside() {
    received_folders_replaced_by_symlinks_(true);
}

/// Control: the same after a clean stop (B in sync, SIGTERM): the folders go from A.
#[test]
fn received_folders_replaced_by_symlinks_while_down_control_clean_stop() {
    received_folders_replaced_by_symlinks_(false);
}

fn received_folders_replaced_by_symlinks_(kill: bool) {
    let t = TestDir::new(&format!("r16-folder-to-symlink-{kill}"));
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 60;
    for i in 0..N {
        for j in 0..3 {
            put_file(
                &staging,
                &a.path(&format!("s{i:02}/f{j}")),
                format!("s{i} f{j} ").repeat(200).as_bytes(),
            );
        }
    }
    if kill {
        assert!(spin_until(SOON, || count(&b, "received s") >= 40));
        b.kill();
    } else {
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            b.terminate(Duration::from_secs(20))
                .is_some_and(|s| s.success())
        );
    }
    assert!(wait_until(SOON, || count(&a, "changed locally: s") >= 3 * N));
    let elsewhere = t.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    // Folders B holds with at least one file, moved out and linked back.
    let moved: Vec<usize> = (0..N)
        .filter(|i| b.path(&format!("s{i:02}/f0")).is_file())
        .collect();
    assert!(!moved.is_empty());
    let mut outside_before = Vec::new();
    for &i in &moved {
        let d = format!("s{i:02}");
        fs::rename(b.path(&d), elsewhere.join(&d)).unwrap();
        std::os::unix::fs::symlink(elsewhere.join(&d), b.path(&d)).unwrap();
        for j in 0..3 {
            outside_before.push((
                elsewhere.join(format!("{d}/f{j}")),
                read(&elsewhere.join(format!("{d}/f{j}"))),
            ));
        }
    }
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    std::thread::sleep(Duration::from_secs(8));
    let touched: Vec<String> = outside_before
        .iter()
        .filter(|(p, d)| &read(p) != d)
        .map(|(p, _)| p.display().to_string())
        .collect();
    let temps_outside = names(&elsewhere)
        .into_iter()
        .filter(|n| n.contains("left-tmp"))
        .count();
    let still_on_a = moved
        .iter()
        .filter(|i| a.path(&format!("s{i:02}")).is_dir())
        .count();
    let errors = b
        .log_text()
        .lines()
        .filter(|l| l.contains("s0") && (l.contains("symlink") || l.contains("failed")))
        .count();
    assert!(
        touched.is_empty() && temps_outside == 0 && still_on_a == 0,
        "B's user moved {} received folders out of the share and linked them back while B was \
         down: files outside changed {}: {:?}; temp files outside {temps_outside}; folders \
         still on A {still_on_a}; B's log lines about them \
         {errors}\nB:\n{}",
        moved.len(),
        touched.len(),
        &touched[..touched.len().min(4)],
        tail(&b.log_text(), 10)
    );
}

/// B's user edits files; B's scan gives them new versions and A takes them; B is killed before
/// its next index save (every 250 ms; held off here with chattr +i, as a kill or power cut
/// right after the change would leave it). While B is down A's user edits the same files
/// (seeing B's edit: A's versions descend from B's). At the restart B's scan finds its files
/// changed against the index (which lacks its own edit) and gives them new versions from the
/// index's old one: concurrent with A's, which descend from B's lost version. Since only what
/// is saved is announced: with B's saves held off, A takes none of B's edits, and after the
/// kill and restart B's edits reach A, with no conflict copy.
#[test]
fn a_local_edit_sent_then_killed_before_the_index_save_makes_no_conflict_copy() {
    a_local_edit_sent_then_killed_(true);
}

/// The same without holding the saves off: B killed as soon as A has taken its edits (the
/// kill often lands before B's next save, 250 ms after the last).
#[test]
fn a_local_edit_sent_then_killed_at_once_makes_no_conflict_copy() {
    a_local_edit_sent_then_killed_(false);
}

fn a_local_edit_sent_then_killed_(hold: bool) {
    let t = TestDir::new(&format!("r16-local-edit-unsaved-{hold}"));
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 30;
    let name = |i: usize| format!("e{i:02}");
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&name(i)),
            format!("first {i}\n").as_bytes(),
        );
    }
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    let ix = b.path(".left/index");
    let jl = b.path(".left/index.log");
    if !jl.exists() {
        fs::write(&jl, b"").unwrap();
    }
    if hold && !hold_saves(&ix, &jl) {
        return;
    }
    let before = count(&a, "received e");
    for i in 0..N {
        put_file(
            &staging,
            &b.path(&name(i)),
            format!("B's edit {i}\n").as_bytes(),
        );
    }
    if hold {
        // What B cannot save is never announced: A takes none of it, and after the kill B's
        // scan makes the edits again, the only versions of them there are.
        std::thread::sleep(Duration::from_secs(3));
        let took = count(&a, "received e") - before;
        b.kill();
        assert!(chattr("-i", &ix) && chattr("-i", &jl));
        assert_eq!(took, 0, "A took {took} edits B could not save");
        drop_peer(b);
        let b = Peer::start(&t, "B", pb, &[pa]);
        wait_identical(&a.dir, &b.dir, SOON);
        let c = conflicts(&a.dir);
        let wrong = (0..N)
            .filter(|&i| !has_content(&a.path(&name(i)), format!("B's edit {i}\n").as_bytes()))
            .count();
        assert!(
            c.is_empty() && wrong == 0,
            "{wrong} of B's edits not on A; conflict copies {c:?}"
        );
        return;
    }
    let ok = spin_until(SOON, || count(&a, "received e") >= before + N);
    b.kill();
    assert!(ok, "A did not take B's edits");
    std::thread::sleep(Duration::from_millis(1100));
    let changed = count(&a, "changed locally: e");
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&name(i)),
            format!("A's edit of B's edit {i}\n").as_bytes(),
        );
    }
    assert!(wait_until(SOON, || count(&a, "changed locally: e") >= changed + N));
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let c = conflicts(&a.dir);
    let wrong = (0..N)
        .filter(|&i| {
            !has_content(
                &a.path(&name(i)),
                format!("A's edit of B's edit {i}\n").as_bytes(),
            )
        })
        .count();
    assert!(
        c.is_empty() && wrong == 0,
        "B's edits of {N} files, taken by A, then edited on A while B was down (B killed before \
         its index save): {wrong} not A's edit; conflict copies {}: {:?}\nB:\n{}",
        c.len(),
        &c[..c.len().min(4)],
        tail(&b.log_text(), 8)
    );
}

/// B's user makes new files and folders; A takes them; B is killed at once (before its next
/// index save, 250 ms after the last); while B is down A's user deletes them all (A's
/// deletions descend from B's versions). At the restart B's scan finds them new (its index
/// never held them) and gives them versions of their own, concurrent with A's deletions:
/// "an edit beats a deletion made without seeing it", and what A's user deleted comes back.
/// Expected: gone from both.
#[test]
fn new_files_sent_then_killed_at_once_and_deleted_on_the_peer_stay_deleted() {
    let t = TestDir::new("r16-new-unsaved-deleted-on-peer");
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 30;
    let before = count(&a, "received n");
    for i in 0..N {
        put_file(
            &staging,
            &b.path(&format!("n{i:02}")),
            format!("B's new file {i}\n").as_bytes(),
        );
    }
    for i in 0..5 {
        fs::create_dir(b.path(&format!("nd{i}"))).unwrap();
    }
    let ok = spin_until(SOON, || {
        count(&a, "received n") >= before + N && (0..5).all(|i| a.path(&format!("nd{i}")).is_dir())
    });
    b.kill();
    assert!(ok, "A did not take B's new files");
    let deleted = count(&a, "deleted locally: n");
    for i in 0..N {
        fs::remove_file(a.path(&format!("n{i:02}"))).unwrap();
    }
    for i in 0..5 {
        fs::remove_dir(a.path(&format!("nd{i}"))).unwrap();
    }
    assert!(wait_until(SOON, || count(&a, "deleted locally: n") >= deleted + N + 5));
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let back: Vec<String> = names(&a.dir)
        .into_iter()
        .filter(|n| n.starts_with('n'))
        .collect();
    assert!(
        back.is_empty(),
        "A's user deleted B's {N} new files and 5 folders (taken just before B's kill) while B \
         was down; back on A and B: {} {:?}\nB:\n{}",
        back.len(),
        &back[..back.len().min(6)],
        tail(&b.log_text(), 8)
    );
}

/// Type changes taken and cut by a kill: A's user makes many folders `tNNNN/` of one file, and
/// once B has taken some, replaces every folder by a file of the same name; B is killed while
/// it takes those, and restarted with nothing changed by B's user. Expected: A's files on
/// both, no folder back, no conflict copy. Repeated with kills at different moments.
#[test]
fn folders_replaced_by_files_while_being_received_and_killed_come_out_right() {
    for round in 0..3 {
        let t = TestDir::new(&format!("r16-retype-kill-{round}"));
        let (a, mut b, pa, pb) = in_sync(&t);
        let staging = t.join("staging");
        const N: usize = 600;
        for i in 0..N {
            put_file(
                &staging,
                &a.path(&format!("t{i:04}/x")),
                format!("x of t{i:04} ").repeat(30).as_bytes(),
            );
        }
        assert!(wait_until(SOON, || count(&b, "received t") >= N));
        std::thread::sleep(Duration::from_millis(300 * round as u64));
        for i in 0..N {
            fs::remove_dir_all(a.path(&format!("t{i:04}"))).unwrap();
            put_file(
                &staging,
                &a.path(&format!("t{i:04}")),
                format!("t{i:04} is a file now\n").as_bytes(),
            );
        }
        let files = |b: &Peer| {
            (0..N)
                .filter(|i| b.path(&format!("t{i:04}")).is_file())
                .count()
        };
        let _ = spin_until(SOON, || files(&b) >= 30 + 150 * round);
        b.kill();
        drop_peer(b);
        assert!(wait_until(SOON, || count(&a, "changed locally: t") >= 2 * N));
        let want = snapshot(&a.dir);
        let b = Peer::start(&t, "B", pb, &[pa]);
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_secs(2));
        wait_identical(&a.dir, &b.dir, SOON);
        let d = snapshot_diff(&want, &snapshot(&a.dir));
        let c = conflicts(&a.dir);
        assert!(
            d.is_empty() && c.is_empty(),
            "round {round}: A changed after B's restart: {} {:?}; conflict copies {}: {:?}\nB:\n{}",
            d.len(),
            &d[..d.len().min(6)],
            c.len(),
            &c[..c.len().min(4)],
            tail(&b.log_text(), 8)
        );
    }
}

/// The install log is emptied only when an index save finds nothing appended since it began
/// (`Model::save`, `clear_if`); a log naming more than 65,536 paths is not used at all after a
/// crash (`intents::MAX_RECORDS`). While B takes a large share in groups, the log must be
/// emptied now and then: it must never name anywhere near that many paths.
#[test]
fn the_install_log_is_emptied_during_a_long_sync() {
    let t = TestDir::new("r16-log-emptied");
    let (a, b, _pa, _pb) = in_sync(&t);
    const N: usize = 20_000;
    for i in 0..N {
        let p = a.path(&format!("z{}/f{i:05}", i % 50));
        write_file(&p, format!("{i}"));
    }
    let logp = b.path(".left/installs");
    let (mut max, mut shrunk, mut last) = (0u64, 0, 0u64);
    let ok = wait_until(Duration::from_secs(120), || {
        let n = fs::metadata(&logp).map_or(0, |m| m.len());
        if n < last {
            shrunk += 1;
        }
        last = n;
        max = max.max(n);
        names(&b.dir).len() > N
    });
    assert!(ok, "B did not take the {N} files");
    // Bytes per path: an entry (about 120 bytes) and a done record (about 20).
    let paths_at_most = max / 140;
    assert!(
        paths_at_most < 10_000,
        "B's install log grew to {max} bytes (about {paths_at_most} paths) while it took {N} \
         files; emptied {shrunk} times"
    );
    eprintln!("install log: max {max} bytes, emptied {shrunk} times");
}

/// Files received before a kill and replaced by symlinks by B's user while B is down
/// (`mv f /elsewhere/f; ln -s /elsewhere/f f`). README: "a file replaced by one is deleted on
/// the peers", as the control (a clean stop) shows. After the kill the index lacks the files;
/// `record_received_gone` asks `symlink_metadata(f)`, finds the symlink, and takes the file for
/// not gone: no deletion is recorded, and B keeps trying to pull A's file ("a symlink or special
/// file is in the way"). Expected: the files gone from A, as after a clean stop.
fn received_files_replaced_by_symlinks_(kill: bool) {
    let t = TestDir::new(&format!("r16-file-to-symlink-{kill}"));
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 300;
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&format!("l{i:03}")),
            format!("l {i} ").repeat(100).as_bytes(),
        );
    }
    if kill {
        assert!(spin_until(SOON, || count(&b, "received l") >= 30));
        b.kill();
    } else {
        wait_identical(&a.dir, &b.dir, SOON);
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            b.terminate(Duration::from_secs(20))
                .is_some_and(|s| s.success())
        );
    }
    assert!(wait_until(SOON, || count(&a, "changed locally: l") >= N));
    let elsewhere = t.join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    let moved: Vec<String> = names(&b.dir)
        .into_iter()
        .filter(|n| n.starts_with('l'))
        .collect();
    assert!(!moved.is_empty());
    for n in &moved {
        fs::rename(b.path(n), elsewhere.join(n)).unwrap();
        std::os::unix::fs::symlink(elsewhere.join(n), b.path(n)).unwrap();
    }
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    let gone = |a: &Peer| moved.iter().filter(|n| a.path(n).exists()).count();
    let _ = wait_until(Duration::from_secs(10), || gone(&a) == 0);
    let left = gone(&a);
    let touched = moved
        .iter()
        .filter(|n| {
            let i: usize = n[1..].parse().unwrap();
            !has_content(&elsewhere.join(n), format!("l {i} ").repeat(100).as_bytes())
        })
        .count();
    assert!(
        left == 0 && touched == 0,
        "B's user replaced {} received files by symlinks while B was down: {left} still on A; \
         files outside changed {touched}\nB:\n{}",
        moved.len(),
        tail(&b.log_text(), 6)
    );
}

#[test]
fn received_files_replaced_by_symlinks_while_down_after_a_kill_are_deleted() {
    received_files_replaced_by_symlinks_(true);
}

#[test]
fn received_files_replaced_by_symlinks_while_down_control_clean_stop() {
    received_files_replaced_by_symlinks_(false);
}

/// A file received (v1, logged and done) just before a kill, over an older version (v0) the
/// index holds; while B is down B's user puts v0's content back (a backup, `git checkout`,
/// an editor's undo). `scanner::record` finds the content equal to the index's entry, "same
/// content (touched, or installed by us before a crash): no new version", and never looks at
/// the log's done record: the index keeps v0, A's v1 descends from it and is pulled again,
/// and B's user's revert is overwritten without a conflict copy. Expected: v0's content (B's
/// revert) on both.
#[test]
fn a_received_file_reverted_while_down_after_a_kill_stays_reverted() {
    let t = TestDir::new("r16-reverted-after-kill");
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 200;
    let v0 = |i: usize| format!("v0 of o{i:03} ").repeat(60);
    let v1 = |i: usize| format!("v1 of o{i:03}, A's edit ").repeat(60);
    for i in 0..N {
        put_file(&staging, &a.path(&format!("o{i:03}")), v0(i).as_bytes());
    }
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..N {
        put_file(&staging, &a.path(&format!("o{i:03}")), v1(i).as_bytes());
    }
    let has_v1 = |b: &Peer| {
        (0..N)
            .filter(|&i| has_content(&b.path(&format!("o{i:03}")), v1(i).as_bytes()))
            .collect::<Vec<_>>()
    };
    assert!(spin_until(SOON, || has_v1(&b).len() >= 20));
    b.kill();
    let reverted = has_v1(&b);
    std::thread::sleep(Duration::from_millis(1100));
    for &i in &reverted {
        write_file(&b.path(&format!("o{i:03}")), v0(i));
    }
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let undone: Vec<String> = reverted
        .iter()
        .filter(|&&i| !has_content(&a.path(&format!("o{i:03}")), v0(i).as_bytes()))
        .map(|i| format!("o{i:03}"))
        .collect();
    let c = conflicts(&a.dir);
    assert!(
        undone.is_empty(),
        "B's user put back the old content of {} files received just before the kill; {} are \
         A's v1 again on both (conflict copies: {}): {:?}\nB:\n{}",
        reverted.len(),
        undone.len(),
        c.len(),
        &undone[..undone.len().min(5)],
        tail(&b.log_text(), 8)
    );
}

/// The mode form of the revert: A's chmod (0644 -> 0600) applied on B (`Model::put_meta`,
/// logged and done) just before a kill; B's user chmods the files back to 0644 while B is
/// down. The files now match the index's entries exactly (size, mtime, mode, inode): the
/// scan sees nothing, the log's done records are dropped unused, and A's chmod is applied
/// again over B's user's. Expected: 0644 on both.
#[test]
fn a_peers_chmod_reverted_while_down_after_a_kill_stays_reverted() {
    let t = TestDir::new("r16-chmod-reverted-after-kill");
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 200;
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&format!("q{i:03}")),
            format!("q {i}").as_bytes(),
        );
        fs::set_permissions(
            a.path(&format!("q{i:03}")),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..N {
        fs::set_permissions(
            a.path(&format!("q{i:03}")),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let private = |b: &Peer| {
        (0..N)
            .filter(|i| mode_or_zero(&b.path(&format!("q{i:03}"))) & 0o777 == 0o600)
            .collect::<Vec<_>>()
    };
    assert!(spin_until(SOON, || private(&b).len() >= 20));
    b.kill();
    let reverted = private(&b);
    for &i in &reverted {
        fs::set_permissions(
            b.path(&format!("q{i:03}")),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    drop_peer(b);
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    let undone: Vec<String> = reverted
        .iter()
        .filter(|&&i| {
            mode_or_zero(&a.path(&format!("q{i:03}"))) & 0o777 != 0o644
                || mode_or_zero(&b.path(&format!("q{i:03}"))) & 0o777 != 0o644
        })
        .map(|i| format!("q{i:03}"))
        .collect();
    // One file may be the one whose mode the kill caught between its chmod and the "done"
    // record that follows it (`Model::put_meta`): nothing then tells B's user's revert from a
    // chmod never made, and A's mode is put again. Marked done before the chmod instead, a
    // kill there would undo A's chmod with no user action at all. Known, not fixed.
    assert!(
        undone.len() <= 1,
        "B's user chmodded back {} files A's chmod reached just before the kill; {} are 0600 \
         again: {:?}\nB:\n{}",
        reverted.len(),
        undone.len(),
        &undone[..undone.len().min(5)],
        tail(&b.log_text(), 6)
    );
}

/// B killed while receiving; while down B's user deletes half the received files, edits the
/// others, and adds a big file (the first scan after the restart takes a moment hashing it);
/// B is killed again in the middle of that first scan, then restarted with A up: the
/// deletions and edits reach A, nothing comes back, no conflict copy.
#[test]
fn a_second_kill_during_the_recovery_scan_loses_no_change() {
    let t = TestDir::new("r16-kill-during-recovery-scan");
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    const N: usize = 300;
    for i in 0..N {
        put_file(
            &staging,
            &a.path(&format!("y{}/f{i:03}", i % 5)),
            format!("file {i} ").repeat(100).as_bytes(),
        );
    }
    assert!(spin_until(SOON, || count(&b, "received y") >= 40));
    b.kill();
    assert!(wait_until(SOON, || count(&a, "changed locally: y") >= N));
    let had: Vec<String> = (0..N)
        .map(|i| format!("y{}/f{i:03}", i % 5))
        .filter(|p| b.path(p).is_file())
        .collect();
    std::thread::sleep(Duration::from_millis(1100));
    let (mut edited, mut deleted) = (Vec::new(), Vec::new());
    for (k, p) in had.iter().enumerate() {
        if k % 2 == 0 {
            write_file(&b.path(p), format!("B's edit of {p}\n"));
            edited.push(p.clone());
        } else {
            fs::remove_file(b.path(p)).unwrap();
            deleted.push(p.clone());
        }
    }
    write_random(&b.path("zbig"), 1 << 30, 3);
    drop_peer(b);
    let mut killed_in_scan = 0;
    for round in 0..2 {
        let mut b = Peer::start(&t, "B", pb, &[pa]);
        std::thread::sleep(Duration::from_millis(20 * round));
        if !b.log_text().contains("scan: ") {
            killed_in_scan += 1;
        }
        b.kill();
    }
    eprintln!("killed {killed_in_scan} times before the first scan's end");
    let b = Peer::start(&t, "B", pb, &[pa]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(3));
    wait_identical(&a.dir, &b.dir, SOON);
    let lost: Vec<&String> = edited
        .iter()
        .filter(|p| !has_content(&a.path(p), format!("B's edit of {p}\n").as_bytes()))
        .collect();
    let back: Vec<&String> = deleted.iter().filter(|p| a.path(p).exists()).collect();
    let c = conflicts(&a.dir);
    assert!(
        lost.is_empty() && back.is_empty() && c.is_empty(),
        "(killed {killed_in_scan} times during the first scan) edits lost {}: {:?}; deletions \
         undone {}: {:?}; conflict copies {:?}\nB:\n{}",
        lost.len(),
        &lost[..lost.len().min(4)],
        back.len(),
        &back[..back.len().min(4)],
        &c[..c.len().min(4)],
        tail(&b.log_text(), 8)
    );
}

/// `.left/installs` replaced while B is down by a FIFO, a folder, or a symlink to a file
/// outside the share: B starts, takes A's new files, stays up, and writes nothing outside.
#[test]
fn an_install_log_that_is_no_file_crashes_nothing() {
    let t = TestDir::new("r16-log-not-a-file");
    let (a, mut b, pa, pb) = in_sync(&t);
    assert!(
        b.terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success())
    );
    drop_peer(b);
    let outside = t.join("outside-log");
    write_file(&outside, "not yours");
    let staging = t.join("staging");
    let mut problems = Vec::new();
    for (k, kind) in ["fifo", "folder", "symlink"].iter().enumerate() {
        let logp = t.join("B/.left/installs");
        let _ = fs::remove_file(&logp);
        let _ = fs::remove_dir_all(&logp);
        match *kind {
            "fifo" => {
                let ok = Command::new("mkfifo")
                    .arg(&logp)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok);
            }
            "folder" => fs::create_dir(&logp).unwrap(),
            _ => std::os::unix::fs::symlink(&outside, &logp).unwrap(),
        }
        let mut b = Peer::start(&t, "B", pb, &[pa]);
        for i in 0..50 {
            put_file(
                &staging,
                &a.path(&format!("{kind}/f{i:02}")),
                format!("{kind} {i} {k}").as_bytes(),
            );
        }
        let got = wait_until(SOON, || tree_diff(&a.dir, &b.dir).is_none());
        let alive = b.alive();
        if !got || !alive || !has_content(&outside, b"not yours") {
            problems.push(format!(
                "{kind}: in sync {got}; alive {alive}; outside file {:?}\nB:\n{}",
                read(&outside).map(|d| d.len()),
                tail(&b.log_text(), 5)
            ));
        }
        let _ = b.terminate(Duration::from_secs(20));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// After a kill, pulls wait for the first scan (`puller::take_batch`). B's user makes, while B
/// is down, a folder chain deeper than PATH_MAX (6,000+ bytes of path) and a FIFO in the
/// share: the first scan must still end, and B take A's files (those logged before the kill,
/// and new ones).
#[test]
fn pulls_after_a_kill_do_not_wait_forever_on_an_odd_share() {
    let t = TestDir::new("r16-odd-share-after-kill");
    let (a, mut b, pa, pb) = in_sync(&t);
    let staging = t.join("staging");
    for i in 0..300 {
        put_file(
            &staging,
            &a.path(&format!("v{i:03}")),
            format!("v {i} ").repeat(100).as_bytes(),
        );
    }
    assert!(spin_until(SOON, || count(&b, "received v") >= 30));
    b.kill();
    // A chain of 200 folders of 31-byte names, made relative to each folder in turn (in a
    // shell: the test's own working folder is shared by the tests running beside it).
    fs::create_dir(b.path("deep")).unwrap();
    let script = format!(
        "cd '{}' && for i in $(seq 200); do mkdir {n} && cd -P {n} || exit 1; done; echo bottom > bottom",
        b.path("deep").display(),
        n = "d".repeat(31)
    );
    let ok = Command::new("bash")
        .args(["-c", &script])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "could not make the deep chain");
    let ok = Command::new("mkfifo")
        .arg(b.path("a-fifo"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok);
    drop_peer(b);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    for i in 0..20 {
        put_file(
            &staging,
            &a.path(&format!("w{i:02}")),
            format!("new {i}").as_bytes(),
        );
    }
    let all = |b: &Peer| {
        (0..300).all(|i| b.path(&format!("v{i:03}")).is_file())
            && (0..20).all(|i| b.path(&format!("w{i:02}")).is_file())
    };
    let got = wait_until(SOON, || all(&b));
    let alive = b.alive();
    let c = conflicts(&b.dir);
    assert!(
        got && alive && c.is_empty(),
        "B (a deep folder chain and a FIFO made while it was down): all of A's files {got}; \
         alive {alive}; conflicts {:?}; first scan ended {}\nB:\n{}",
        c,
        b.log_text().contains("scan: "),
        tail(&b.log_text(), 8)
    );
}
