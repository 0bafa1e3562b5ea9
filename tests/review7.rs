//! Seventh review: failing tests for 4be9695 (renames copied, metadata-only applies logged,
//! set_meta's hard-link refusal, apply_dir's mode check). Each runs real daemons on 127.0.0.1.

mod common;

use common::proxy::Proxy;
use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

/// 4be9695 logs a metadata-only apply in the install log (`Model::put_meta`) for folders too,
/// but only files are ever recognised from it (`intents::received` requires `is_file`, and only
/// the scanner's `record`, for files, looks): B killed after a peer's folder chmod and before
/// its index is saved comes back with a folder whose mode is not its index's stat's, takes it
/// for a local chmod (`folder_seen` -> ModeChanged: a new version of B's own, concurrent with
/// A's deletion of the folder made meanwhile), and the folder comes back on A. The same
/// sequence as review6's `a_kill_right_after_a_metadata_only_apply_brings_back_no_deletion`,
/// with a folder.
#[test]
fn a_kill_right_after_a_peers_folder_chmod_brings_back_no_deletion() {
    let t = TestDir::new("r7-dir-meta-kill");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let mut b = Peer::start(&t, "B", pb, &[pa]);
    let mut back = Vec::new();
    for round in 0..4u64 {
        let name = format!("d{round}");
        fs::create_dir(a.path(&name)).unwrap();
        fs::set_permissions(a.path(&name), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(wait_until(SOON, || mode_or_zero(&b.path(&name)) == 0o755));
        // Let B's index be saved with the folder as it is now.
        std::thread::sleep(Duration::from_millis(800));
        fs::set_permissions(a.path(&name), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(spin_until(SOON, || mode_or_zero(&b.path(&name)) == 0o700));
        b.kill();
        fs::remove_dir(a.path(&name)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        b = Peer::start(&t, "B", pb, &[pa]);
        std::thread::sleep(Duration::from_millis(300));
        wait_identical(&a.dir, &b.dir, SOON);
        if a.path(&name).exists() {
            back.push(name);
        }
    }
    assert!(
        back.is_empty(),
        "deleted on A, back after B's kill: {back:?}\n{}",
        tail(&b.log_text(), 20)
    );
}

/// 4be9695's `set_meta` refuses a file with other names (nlink > 1), and the Take branch of
/// `Model::weigh` then pulls a new file instead. The Merge branch (concurrent versions, same
/// content: two chmods made apart) does not: it records the merged entry, with the winner's
/// (A's) mode, under the stat our file still has (`m.stat = l.stat`, model.rs `weigh`). The
/// file keeps B's mode, the index says A's, the stat matches so no scan ever looks again: B
/// announces A's mode, both sides call it in sync, and B's disk differs for good.
#[test]
fn a_merged_chmod_on_a_hard_linked_file_still_converges() {
    let t = TestDir::new("r7-merge-link");
    let (pa, pb) = two_ports();
    let to_b = Proxy::start(0, pb);
    let to_a = Proxy::start(0, pa);
    let a = Peer::start(&t, "A", pa, &[to_b.port]);
    let b = Peer::start(&t, "B", pb, &[to_a.port]);
    fs::write(a.path("f"), b"a file kept in two places").unwrap();
    fs::set_permissions(a.path("f"), fs::Permissions::from_mode(0o644)).unwrap();
    assert!(wait_until(SOON, || mode_or_zero(&b.path("f")) == 0o644
        && read(&b.path("f")) == read(&a.path("f"))));
    std::thread::sleep(Duration::from_millis(800));
    to_b.set_cut(true);
    to_a.set_cut(true);
    std::thread::sleep(Duration::from_millis(300));
    // Apart: A chmods (and its newer mtime wins the merge), B chmods a file it also keeps
    // elsewhere.
    fs::set_permissions(a.path("f"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::File::options()
        .write(true)
        .open(a.path("f"))
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(100))
        .unwrap();
    fs::hard_link(b.path("f"), t.join("outside-the-share")).unwrap();
    fs::set_permissions(b.path("f"), fs::Permissions::from_mode(0o640)).unwrap();
    // Both scans record their own change.
    assert!(a.wait_log(SOON, "f"));
    std::thread::sleep(Duration::from_millis(1500));
    to_b.set_cut(false);
    to_a.set_cut(false);
    let same = wait_until(Duration::from_secs(30), || {
        mode_or_zero(&a.path("f")) == mode_or_zero(&b.path("f"))
    });
    assert!(
        same,
        "A's f is {:o}, B's {:o} for good\nB:\n{}",
        mode_or_zero(&a.path("f")),
        mode_or_zero(&b.path("f")),
        tail(&b.log_text(), 20)
    );
}

/// 4be9695 copies a renamed file from its old name and deletes the old name "after" (the
/// batch's `late` deletions in `puller::pull_batch`). But they are applied whatever the
/// transfer returned: when the connection ends mid-batch (the peer killed, here while B reads
/// the renamed file's blocks and waits for another file of the batch from A), the new name is
/// not complete (its temp file holds the blocks copied so far, and the walk at start removes
/// temp files), and the old name is deleted all the same. B then holds the content nowhere;
/// before, it sat whole in the new name's temp file, kept for resume.
#[test]
fn a_renamed_file_is_never_deleted_here_before_its_new_name_is_complete() {
    let t = TestDir::new("r7-rename-cut");
    let (pa, pb) = two_ports();
    let mut a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start(&t, "B", pb, &[pa]);
    let content = random_bytes(7, 60 << 20);
    put_file(&t.join("stage"), &a.path("z-old"), &content);
    assert!(wait_until(SOON, || has_content(&b.path("z-old"), &content)));
    std::thread::sleep(Duration::from_millis(800));
    // One change: the rename and a new file only A has, in the same batch (62 MB < 64 MiB).
    fs::write(t.join("stage/a-new"), random_bytes(8, 2 << 20)).unwrap();
    fs::rename(a.path("z-old"), a.path("z-new")).unwrap();
    fs::rename(t.join("stage/a-new"), a.path("a-new")).unwrap();
    let tmp = b.path(".z-new.left-tmp");
    assert!(spin_until(SOON, || tmp.exists() || b.path("z-new").exists()));
    a.kill();
    std::thread::sleep(Duration::from_secs(3));
    let kept = has_content(&b.path("z-old"), &content) || has_content(&b.path("z-new"), &content);
    assert!(
        kept,
        "B holds z-old's content under no name (z-old {}, z-new {}, temp {:?} bytes)\n{}",
        b.path("z-old").exists(),
        b.path("z-new").exists(),
        fs::metadata(&tmp).map(|m| m.len()).ok(),
        tail(&b.log_text(), 15)
    );
}

/// A renamed folder of small files: its old names' deletions wait in the needs until the new
/// files are in (`puller::choose`), and `local_sources` reads the new files' blocks from them,
/// in whatever batch they fall: nothing crosses the wire. (Before, only the deletions of the
/// same batch were read; batches fill in path order with the new names, which here sort first.)
/// 1,200 files, B holding 4,096 needs in memory: all 2,400 fit, in three batches. Past
/// `--max-pending` the deletions that wait on disk are not read from (the crate docs, Renames,
/// say so).
#[test]
fn a_renamed_folder_of_small_files_costs_no_data_on_the_wire() {
    let t = TestDir::new("r7-folder-rename");
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    let b = Peer::start_with(&t, "B", pb, &[pa], &["--max-pending", "4096"]);
    let stage = t.join("stage");
    for i in 0..1200u64 {
        write_file(&stage.join(format!("src/f{i:04}")), random_bytes(i, 1000));
    }
    fs::rename(stage.join("src"), a.path("src")).unwrap();
    assert!(wait_until(SOON, || fs::read_dir(b.path("src"))
        .map_or(0, |d| d.count())
        == 1200));
    received_when(&b, 1200, |r| r.path.starts_with("src/"));
    std::thread::sleep(Duration::from_millis(800));
    fs::rename(a.path("src"), a.path("dst")).unwrap();
    assert!(wait_until(SOON, || !b.path("src").exists()
        && fs::read_dir(b.path("dst")).map_or(0, |d| d.count()) == 1200));
    let got = received_when(&b, 1200, |r| r.path.starts_with("dst/"));
    let wire: u64 = got
        .iter()
        .filter(|r| r.path.starts_with("dst/"))
        .map(|r| r.wire)
        .sum();
    // Only saved entries are announced, in one pass cut into frames: a file whose old name's
    // deletion falls in the next frame may be taken before it (one per frame at most; a few
    // frames here), and comes over the wire.
    assert!(
        wire <= 10 * 1000,
        "a renamed folder's files came over the wire: {wire} bytes"
    );
}
