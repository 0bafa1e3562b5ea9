//! Twelfth review: failing tests (helper session, branch review12). Real daemons on 127.0.0.1.
//! Names (a newline in `left status`, a conflict copy under a temp name), a file put at the
//! temp name during a pull, symlinks (over a file, at `.leftignore`), an ignore removed, and
//! three under `--max-pending` with a pass sent by path (a file over a folder, folder
//! deletions in a crowded memory, a big entry behind folder deletions).

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// `left status` decides "in sync" by looking for a line `state: in sync` anywhere in the
/// status text (`status::show`), and the text holds file names as they are: a name may hold
/// a newline (Linux allows it, `names::check` lets it through). Sequence: A holds a 64 MiB
/// file named `big\nstate: in sync\nx`; B starts and pulls it; while B is receiving it (its
/// status says `state: pending` and `receiving big` ...), A is stopped (SIGSTOP), so the pull
/// stays under way. `left status --dir B` prints `state: pending` and yet exits 0 ("in sync"):
/// the progress line `  receiving {path}: ...` (`status::progress_line`) puts `state: in sync`
/// on a line of its own. (The `last error:` line, which holds a path too, does the same.) A
/// script waiting for `left status` to exit 0 before it uses B's share goes on with a file
/// missing. The names should be escaped in the status text (or the state read from the second
/// line only).
#[test]
#[ignore = "flaky setup: B's status did not show the pull in time in 2 full-suite runs (passes alone); the escaping is also covered by log::tests::control_characters_are_escaped"]
fn a_file_name_with_a_newline_does_not_make_status_say_in_sync() {
    let t = TestDir::new("r12-status-newline");
    let (pa, pb) = two_ports();
    let name = "big\nstate: in sync\nx";
    let a = Peer::start_own_group(&t, "A", pa, &[pb]);
    write_random(&a.path(name), 64 << 20, 7);
    assert!(a.wait_log(SOON, "changed locally: big"));
    let apid = a.pid().unwrap();
    // A slowed down, so that B's status (rewritten every second) catches the pull.
    let slow = Throttle::new(apid, Duration::from_millis(20), Duration::from_millis(150));
    let b = Peer::start(&t, "B", pb, &[pa]);
    let seen = spin_until(SOON, || {
        fs::read_to_string(b.path(".left/status")).is_ok_and(|s| s.contains("receiving big"))
    });
    drop(slow);
    signal(apid, "STOP");
    assert!(seen, "B never showed the pull in its status");
    std::thread::sleep(Duration::from_secs(2));
    let (code, out) = status(&b.dir);
    signal(apid, "CONT");
    assert!(
        out.contains("state: pending\n"),
        "B is not pending (the file came in whole before the stop?):\n{out}"
    );
    assert_eq!(
        code,
        Some(1),
        "B is receiving a file (`state: pending`), yet `left status` exits {code:?}:\n{out}"
    );
}

/// Every file under `root` (`.left/` left out, temp names included) holding `want`.
fn holding(root: &Path, want: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for ent in rd.flatten() {
            let p = ent.path();
            if p == root.join(".left") {
                continue;
            }
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() && fs::read(&p).is_ok_and(|b| b == want) => {
                    out.push(p.strip_prefix(root).unwrap().display().to_string())
                }
                _ => {}
            }
        }
    }
    out
}

/// `names::conflict_name` can make a temp name. A file named `..left-tmp` (10 bytes) is no
/// temp name (`names::is_temp` wants more than 10), so it syncs like any file; its conflict
/// copy is `.` + `.sync-conflict-DATE-DEVICE` + `.left-tmp` (the stem is `.`, the extension
/// `.left-tmp`): a temp name. Sequence: A and B hold `..left-tmp`; B is stopped; A's user
/// writes `from A` into it (mtime 2020); B's user writes `from B` (mtime now) while B is
/// down; B starts. B's edit wins (newer mtime), A keeps its losing edit "as a conflict copy"
/// (`install::keep_aside`) under that temp name: the scanner skips it, it never syncs, B
/// never has it; and at A's next start `scanner::clean_temps` deletes it (a temp file over 7
/// days old: the copy keeps the 2020 mtime; a younger one goes in `sweep_found_temps`). A's
/// user's write is then gone from every disk, where README promises "the losing edit is kept
/// beside the winner ... which then syncs like any file".
#[test]
fn a_conflict_copy_is_never_a_temp_name() {
    let t = TestDir::new("r12-conflict-temp");
    let (pa, pb) = two_ports();
    let name = "..left-tmp";
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    fs::write(a.path(name), b"base").unwrap();
    assert!(wait_until(SOON, || has_content(&b.path(name), b"base")));
    std::thread::sleep(Duration::from_secs(1));
    b.terminate(Duration::from_secs(10));
    fs::write(a.path(name), b"from A").unwrap();
    fs::File::options()
        .write(true)
        .open(a.path(name))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_590_000_000))
        .unwrap();
    assert!(a.wait_log(SOON, "changed locally: ..left-tmp"));
    fs::write(b.path(name), b"from B").unwrap();
    let b = Peer::start(&t, "B", pb, &[pa]);
    assert!(wait_until(SOON, || has_content(&a.path(name), b"from B")));
    assert!(a.wait_log(SOON, "conflict: ..left-tmp kept as"));
    // The copy is to sync like any file.
    let synced = wait_until(Duration::from_secs(15), || {
        !holding(&b.dir, b"from A").is_empty()
    });
    let on_a = holding(&a.dir, b"from A");
    // And A, restarted, still has it.
    drop(a);
    let a = Peer::start(&t, "A", pa, &[pb]);
    assert!(a.wait_log(SOON, "connected to"));
    std::thread::sleep(Duration::from_secs(5));
    let after = holding(&a.dir, b"from A");
    assert!(
        synced && !after.is_empty(),
        "A's losing edit: on B {:?}, on A {on_a:?}, on A after a restart {after:?}\nA:\n{}",
        holding(&b.dir, b"from A"),
        tail(&a.log_text(), 20)
    );
}

/// The temp file is written through the descriptor `transfer::open_temp` opened, but
/// installed by its name: `install::rename_in` stats `.NAME.left-tmp` and renames whatever is
/// there into place, recorded with the peer's hashes and that file's stat. Nothing compares
/// the file at the temp name with the one written and verified. Sequence: A holds `f` (48
/// MiB); B pulls it; while the pull is under way (A stopped a moment), a local user on B renames a
/// file of theirs (the same size, other bytes) over `.f.left-tmp`. B goes on writing verified
/// blocks into the file it opened (now nameless), then installs the user's file as `f`:
/// "received f", B's index has A's content for it with the user's file's stat, so no scan
/// looks at it again. B's `f` holds bytes A never had, for good, and B's status says in sync:
/// a file with wrong bytes under its real name. (The install should check that the temp
/// name still holds the file it wrote, by inode, as `own_file` checks a resumed one.)
#[test]
fn a_file_put_at_the_temp_name_during_a_pull_is_never_installed() {
    let t = TestDir::new("r12-temp-swap");
    let (pa, pb) = two_ports();
    let size = 48usize << 20;
    let a = Peer::start_own_group(&t, "A", pa, &[pb]);
    write_random(&a.path("f"), size as u64, 11);
    assert!(a.wait_log(SOON, "changed locally: f"));
    let evil = t.join("evil");
    fs::write(&evil, vec![b'E'; size]).unwrap();
    let apid = a.pid().unwrap();
    let slow = Throttle::new(apid, Duration::from_millis(20), Duration::from_millis(150));
    let b = Peer::start(&t, "B", pb, &[pa]);
    let tmp = b.path(".f.left-tmp");
    let began = spin_until(SOON, || tmp.exists());
    drop(slow);
    // A stopped meanwhile, so that the pull is surely under way when the file is put there.
    signal(apid, "STOP");
    assert!(began, "B never began the pull");
    assert!(!b.path("f").exists(), "the pull was over already");
    fs::rename(&evil, &tmp).unwrap();
    signal(apid, "CONT");
    assert!(b.wait_log(SOON, "received f"), "B never installed f");
    std::thread::sleep(Duration::from_secs(3));
    let mut last = None;
    let same = wait_until(Duration::from_secs(20), || {
        last = tree_diff(&a.dir, &b.dir);
        last.is_none()
    });
    let (code, out) = status(&b.dir);
    assert!(
        same,
        "B's f is not A's: {last:?}; B's f starts with {:?}; `left status` on B exits \
         {code:?}:\n{out}",
        fs::read(b.path("f")).map(|v| v[..8].to_vec())
    );
}

/// A file replaced by a symlink is not a deletion, nor anything else: the scan lists the
/// symlink under the file's name (`Walk::list` keeps every child with its lstat), skips it in
/// `compare` (not a file, not a folder), and `missing` counts the name as present; the index
/// keeps the file live with its old stat for good. Sequence: A and B hold `f`; A's user
/// replaces it with a symlink (`ln -s ... tmp; mv tmp f`: not synced, README). B keeps `f`
/// for good; A announces and offers a file it does not have (a request for its blocks fails,
/// so a third peer that joins pulls `f` from A in vain for ever), and both say in sync.
/// Whatever is deleted in one share is to be deleted in the other: with the file gone from
/// A's share, B's copy should go (or A's index should at least not keep a file that is not
/// there).
#[test]
fn a_file_replaced_by_a_symlink_is_deleted_on_the_peer() {
    let t = TestDir::new("r12-symlink-over-file");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::write(a.path("f"), b"a file").unwrap();
    fs::write(a.path("g"), b"another").unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    std::os::unix::fs::symlink("g", a.path("link.tmp")).unwrap();
    fs::rename(a.path("link.tmp"), a.path("f")).unwrap();
    // Something else changes too, so that a scan surely ran and synced.
    fs::write(a.path("h"), b"later").unwrap();
    assert!(wait_until(SOON, || has_content(&b.path("h"), b"later")));
    let gone = wait_until(Duration::from_secs(15), || !b.path("f").exists());
    let (code_a, out_a) = status(&a.dir);
    assert!(
        gone,
        "A's f is a symlink now (not synced); B still has the file f. `left status` on A \
         exits {code_a:?}:\n{out_a}"
    );
}

/// `scanner::load_ignore` reads `.leftignore` by path (`fs::metadata`, `fs::read_to_string`):
/// a symlink there is followed, to any file on the machine, and its lines are put in force.
/// README: symlinks are "skipped, never followed", and "nothing is read ... through a
/// symlink". Sequence: A's share holds `.leftignore` as a symlink to a file outside the share
/// (here one holding `secret*`; it could be any file the daemon's user can read, and which of
/// a user's files then sync tells what lines it holds), and a file `secret.txt`. A reads the
/// outside file ("patterns in force") and never sends `secret.txt`: B never has it. A
/// symlink at `.leftignore` should be skipped like any other (no patterns).
#[test]
fn a_symlinked_leftignore_is_never_followed() {
    let t = TestDir::new("r12-ignore-link");
    let (pa, pb) = two_ports();
    let outside = t.join("outside-patterns");
    fs::write(&outside, "secret*\n").unwrap();
    fs::create_dir_all(t.join("A")).unwrap();
    std::os::unix::fs::symlink(&outside, t.join("A/.leftignore")).unwrap();
    fs::write(t.join("A/secret.txt"), b"synced like any file").unwrap();
    fs::write(t.join("A/plain.txt"), b"plain").unwrap();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    assert!(wait_until(SOON, || b.path("plain.txt").exists()));
    let synced = wait_until(Duration::from_secs(10), || b.path("secret.txt").exists());
    assert!(
        synced,
        "secret.txt never reached B: A read its ignore patterns through the symlink \
         .leftignore -> {}\nA:\n{}",
        outside.display(),
        tail(&a.log_text(), 15)
    );
}

/// What a peer announced while we ignored it is never looked at again once we stop ignoring
/// it: `Model::take_in` drops an ignored entry for good (no need, no note), and a peer
/// announces an entry once (the whole index only on a new connection); a change of
/// `.leftignore` (`scanner::load_ignore`) weighs nothing again. Sequence: B keeps a
/// `.leftignore` of its own (`.leftignore` and `*.log`: a local-only list, as the gitignore
/// rules allow); A writes `y.log` and `z.txt`; B takes `z.txt` and, rightly, not `y.log`. B's
/// user then removes `.leftignore`: nothing is ignored on B any more, yet B never gets
/// `y.log` (not in 15 s, not ever while the connection lasts), and `left status` on both
/// says in sync while A holds a file B lacks.
#[test]
fn a_file_no_longer_ignored_is_taken() {
    let t = TestDir::new("r12-unignore");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    fs::write(b.path(".leftignore"), ".leftignore\n*.log\n").unwrap();
    assert!(b.wait_log(SOON, "patterns in force"));
    fs::write(a.path("y.log"), b"a log").unwrap();
    fs::write(a.path("z.txt"), b"text").unwrap();
    assert!(wait_until(SOON, || b.path("z.txt").exists()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(!b.path("y.log").exists(), "y.log was ignored on B");
    fs::remove_file(b.path(".leftignore")).unwrap();
    let taken = wait_until(Duration::from_secs(15), || b.path("y.log").exists());
    let (code, out) = status(&b.dir);
    assert!(
        taken,
        "B ignores nothing any more, yet never takes A's y.log; `left status` on B exits \
         {code:?}:\n{out}\nB:\n{}",
        tail(&b.log_text(), 10)
    );
}

/// A file replacing a folder is held back only by the deletions of the folder's content that
/// are in memory (`puller::files_over_full_folders` looks at `needs.mem()`): under
/// `--max-pending`, those waiting on disk do not count, and the file goes while the folder
/// still holds them. Sequence: A and B hold `c` (a file, content X) and `d/x`; B is stopped;
/// A's user replaces the folder `d` by the file `c` (`rm d/x; rmdir d; mv c d`), and changes
/// a big sparse file `zbig` a few times until A writes its index whole (so that the pass is
/// sent by path: `c`, `d`, `d/x`, `zbig`). B starts with `--max-pending 2`: `c`'s deletion
/// and the file `d` are kept in memory, `d/x`'s deletion waits on disk. The pass is one frame,
/// complete at once: the batch takes `c`'s deletion and the file `d`; `install` finds `d` a
/// folder holding `x` (`folder_stays`) and keeps A's file "beside it as a conflict copy",
/// giving the folder a version newer than both; `d/x`'s deletion comes after. Both peers end
/// with an empty folder `d` and `d.sync-conflict-...`: A's user's change is undone, where
/// README says a file that wins over a folder "replaces it once the folder is empty (the
/// deletions of what it held ... are applied first)".
#[test]
fn a_file_replacing_a_folder_waits_for_the_deletions_waiting_on_disk() {
    let t = TestDir::new("r12-file-over-folder-disk");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start_with(&t, "B", pb, &[pa], &["--max-pending", "2"]);
    let x = random_bytes(5, 300_000);
    fs::write(a.path("c"), &x).unwrap();
    fs::create_dir(a.path("d")).unwrap();
    fs::write(a.path("d/x"), b"inside").unwrap();
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(1));
    b.terminate(Duration::from_secs(10));
    fs::remove_file(a.path("d/x")).unwrap();
    fs::remove_dir(a.path("d")).unwrap();
    fs::rename(a.path("c"), a.path("d")).unwrap();
    assert!(a.wait_log(SOON, "changed locally: d ("));
    write_index_whole(&a);
    let b = Peer::start_with(&t, "B", pb, &[pa], &["--max-pending", "2"]);
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(2));
    let kind = |p: &Path| match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => "a folder".to_string(),
        Ok(_) => format!("a file ({})", fs::read(p).is_ok_and(|v| v == x)),
        Err(_) => "missing".to_string(),
    };
    assert!(
        has_content(&a.path("d"), &x) && has_content(&b.path("d"), &x),
        "A's user replaced the folder d by the file c; d on A is {}, on B {}\nB:\n{}",
        kind(&a.path("d")),
        kind(&b.path("d")),
        tail(&b.log_text(), 15)
    );
}

/// A and B hold `d1/x` ... `d6/x`; B is stopped; A's user removes `d1` ... `d6` (`rm -rf`),
/// and A's index is written whole (`write_index_whole`: the big file `zbig` is made, then
/// removed unless `keep_big`), so that A's next pass goes by path: `d1`, `d1/x`, `d2`, ...
/// (a folder before what it held). B starts again with `--max-pending 2`.
fn folders_deleted_while_b_was_down(t: &TestDir, keep_big: bool) -> (Peer, Peer) {
    let (pa, pb) = two_ports();
    let a = Peer::start(t, "A", pa, &[pb]);
    let mut b = Peer::start_with(t, "B", pb, &[pa], &["--max-pending", "2"]);
    for i in 1..=6 {
        write_file(&a.path(&format!("d{i}/x")), format!("file {i}"));
    }
    wait_identical(&a.dir, &b.dir, SOON);
    std::thread::sleep(Duration::from_secs(1));
    b.terminate(Duration::from_secs(10));
    for i in 1..=6 {
        fs::remove_dir_all(a.path(&format!("d{i}"))).unwrap();
    }
    assert!(wait_until(SOON, || a
        .log_text()
        .matches("deleted locally: d")
        .count()
        >= 12));
    write_index_whole(&a);
    if !keep_big {
        fs::remove_file(a.path("zbig")).unwrap();
        assert!(a.wait_log(SOON, "deleted locally: zbig"));
    }
    let b = Peer::start_with(t, "B", pb, &[pa], &["--max-pending", "2"]);
    (a, b)
}

/// Folders whose content B has not seen deleted yet.
fn folders_back(p: &Peer) -> Vec<String> {
    (1..=6)
        .map(|i| format!("d{i}"))
        .filter(|d| p.path(d).exists())
        .collect()
}

/// A folder's deletion waits while entries wait on disk, unless memory is "crowded" with
/// folder deletions (`Needs::crowded`); then it goes once no need in memory is inside it
/// (`puller::choose`), though its content's deletions may still wait on disk. Sequence:
/// `folders_deleted_while_b_was_down`: refills of one or two entries bring a folder's
/// deletion back without its content's; with three folder deletions and a file's in memory,
/// memory is crowded, and a folder whose `x` still waits on disk is deleted: `apply_delete`
/// finds it holding `x` and keeps it ("d3/ stays: it holds files the deletion did not know
/// of") with a version newer than A's deletion; `x` is deleted next. The empty folder comes
/// back on A: folders A's user deleted are resurrected on both peers, although the deleting
/// side knew everything they held. (With `zbig` removed too, its deletion goes first and the
/// refills fall otherwise: none came back in one run.)
#[test]
fn folders_deleted_with_their_content_stay_deleted_under_max_pending() {
    let t = TestDir::new("r12-crowded-folder-deletes");
    let (a, b) = folders_deleted_while_b_was_down(&t, true);
    // (B then stalls with zbig: the next test; what comes back does so at once.)
    assert!(b.wait_log(SOON, "deleted d6/x"));
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        folders_back(&a).is_empty(),
        "A's user deleted d1..d6; back on A: {:?} (on B: {:?})\nB:\n{}",
        folders_back(&a),
        folders_back(&b),
        tail(&b.log_text(), 25)
    );
}

/// A large entry waiting on disk never comes back while folder deletions hold memory: the
/// refill takes it only within the budget (`Needs::budget_room`: under `MEM_FLOOR`, or `N x 2
/// KiB` for all, or for a connection holding nothing), and a connection's memory holding
/// folder deletions holds something; those folder deletions wait in turn for what waits on
/// disk (`disk_first`, memory not crowded). Sequence: `folders_deleted_while_b_was_down`
/// with `zbig` (512 MiB sparse: 8192 block hashes, about 200 KB of entry) kept: B ends with
/// the folder deletions of `d4` and `d6` in memory and `zbig` on disk, and stays so ("to
/// receive 3 files / 536870912 bytes", nothing pulled) for good: the peers never converge.
#[test]
fn a_big_entry_waiting_behind_folder_deletions_is_taken() {
    let t = TestDir::new("r12-big-behind-folder-deletes");
    let (a, b) = folders_deleted_while_b_was_down(&t, true);
    let got = wait_until(SOON, || {
        has_content(&b.path("zbig"), &fs::read(a.path("zbig")).unwrap())
    });
    let (code, out) = status(&b.dir);
    assert!(
        got,
        "B never took zbig; `left status` on B exits {code:?}:\n{out}\nB:\n{}",
        tail(&b.log_text(), 15)
    );
}
