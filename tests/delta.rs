//! Delta transfer (issue 8): a file updated in place ships close to what changed, counted in the
//! receiver's own log lines.

mod common;

use common::*;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

const SIZE: u64 = 64 << 20;

/// Syncs a 64 MiB file from A to B, applies `edit` to A's copy, and returns B's `received`
/// line for the update, checking the result byte for byte.
fn update(name: &str, edit: impl FnOnce(&std::fs::File)) -> Received {
    let t = TestDir::new(name);
    let (pa, pb) = two_ports();
    let a = Peer::start(&t, "A", pa, &[pb]);
    // Written aside and renamed in, so A never hashes a half-written file.
    write_random(&t.join("staging/big.bin"), SIZE, 7);
    std::fs::rename(t.join("staging/big.bin"), a.path("big.bin")).unwrap();
    assert!(
        a.wait_log(SOON, "changed locally: big.bin"),
        "{}",
        a.log_text()
    );
    let (st, log) = run_once(&t, "B", pb, &[pa], 60);
    assert!(st.success(), "first sync failed:\n{}", tail(&log, 20));
    assert!(same_file(&a.path("big.bin"), &t.join("B/big.bin")).unwrap());

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.path("big.bin"))
        .unwrap();
    edit(&f);
    f.sync_all().unwrap();
    drop(f);
    // Let A notice and re-hash before B asks.
    assert!(
        wait_until(SOON, || lines_starting(
            &a.log_text(),
            "changed locally: big.bin"
        )
        .len()
            >= 2),
        "{}",
        a.log_text()
    );
    let (st, log) = run_once(&t, "B", pb, &[pa], 60);
    assert!(st.success(), "update failed:\n{}", tail(&log, 20));
    assert!(
        same_file(&a.path("big.bin"), &t.join("B/big.bin")).unwrap(),
        "B's copy differs after the update"
    );
    let mut r = received(&log);
    assert_eq!(r.len(), 1, "{log}");
    r.remove(0)
}

#[test]
fn scattered_writes_ship_well_under_half_the_file() {
    // 10% of the file as 4 KiB writes at random 4 KiB-aligned places.
    let r = update("delta-scattered", |f| {
        let mut rng = Rng::new(11);
        let pages = SIZE / 4096;
        for _ in 0..pages / 10 {
            let at = rng.next_u64() % pages * 4096;
            f.write_all_at(&rng.bytes(4096), at).unwrap();
        }
    });
    // Without sub-blocks nearly every 64 KiB block is touched and the whole file would go.
    assert!(
        r.wire < SIZE / 4,
        "{} of {SIZE} bytes crossed the wire",
        r.wire
    );
    assert!(
        r.wire >= SIZE / 20,
        "less than the changed data crossed the wire: {}",
        r.wire
    );
}

#[test]
fn a_contiguous_change_ships_about_its_size() {
    let r = update("delta-contiguous", |f| {
        f.write_all_at(&Rng::new(5).bytes(4 << 20), 30 << 20)
            .unwrap();
    });
    assert!(
        r.wire < (4 << 20) + (256 << 10),
        "{} bytes for a 4 MiB change",
        r.wire
    );
    assert!(r.wire >= 4 << 20, "{}", r.wire);
}

#[test]
fn nine_bytes_at_the_start_ship_one_sub_block() {
    let r = update("delta-nine", |f| f.write_all_at(b"123456789", 0).unwrap());
    // One 4 KiB sub-block plus the 12-byte hashes of one block's sub-blocks.
    assert!(
        r.wire <= 4096 + 16 * 12,
        "{} bytes for a 9-byte change",
        r.wire
    );
}

#[test]
fn an_insertion_in_the_middle_ships_about_its_size() {
    // 1 KiB inserted at the middle: everything after it moves by 1 KiB. Without looking for
    // shifted data the whole second half (32 MiB) would cross the wire.
    let r = update("delta-insert", |f| {
        let mut tail = vec![0u8; (SIZE / 2) as usize];
        f.read_exact_at(&mut tail, SIZE / 2).unwrap();
        f.write_all_at(&Rng::new(9).bytes(1024), SIZE / 2).unwrap();
        f.write_all_at(&tail, SIZE / 2 + 1024).unwrap();
    });
    assert!(
        r.wire < 1 << 20,
        "{} bytes for 1 KiB inserted in {SIZE} bytes",
        r.wire
    );
    assert!(r.wire >= 1024, "{}", r.wire);
}
