//! The ChaCha20-Poly1305 AEAD (RFC 8439 §2.6–2.8), written from the RFC: the one-time Poly1305
//! key is the first half of ChaCha20's block 0, the data is encrypted from block 1, and the tag
//! covers the additional data and the ciphertext, each padded to 16 bytes, then both lengths.
//! A tag is checked (in constant time) before anything is decrypted.

use crate::proto::chacha::{ChaCha, KEY_LEN, NONCE_LEN};
use crate::proto::hmac::same;
use crate::proto::poly1305::{self, Poly1305};

pub const TAG_LEN: usize = poly1305::TAG_LEN;

/// The tag of ciphertext `ct` with additional data `aad` (§2.8).
fn tag_of(c: &ChaCha, aad: &[u8], ct: &[u8]) -> [u8; TAG_LEN] {
    let mut otk = [0u8; poly1305::KEY_LEN];
    for (o, w) in otk.chunks_exact_mut(4).zip(c.block_words(0)) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    let mut p = Poly1305::new(&otk);
    p.padded(aad);
    p.padded(ct);
    let mut lens = [0u8; 16];
    lens[..8].copy_from_slice(&(aad.len() as u64).to_le_bytes());
    lens[8..].copy_from_slice(&(ct.len() as u64).to_le_bytes());
    p.padded(&lens);
    p.tag()
}

/// Encrypts `data` in place; gives its tag.
pub fn seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    data: &mut [u8],
) -> [u8; TAG_LEN] {
    let c = ChaCha::new(key, nonce);
    c.apply(1, data);
    tag_of(&c, aad, data)
}

/// Checks `tag` over `aad` and the ciphertext `data`, and only then decrypts `data` in place;
/// false (and `data` untouched) if the tag does not verify.
pub fn open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8],
) -> bool {
    let c = ChaCha::new(key, nonce);
    if !same(&tag_of(&c, aad, data), tag) {
        return false;
    }
    c.apply(1, data);
    true
}

/// Decrypts `data` in place without checking anything: for a look at the first bytes of a
/// frame before the rest arrives (the frame is still checked whole before it is used).
pub fn peek(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], data: &mut [u8]) {
    ChaCha::new(key, nonce).apply(1, data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hex;
    use crate::proto::chacha::tests::unhex;

    const SUNSCREEN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you \
only one tip for the future, sunscreen would be it.";

    #[test]
    fn rfc8439_2_8_2() {
        let key: [u8; 32] = unhex(
            "80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f
             90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f",
        )
        .try_into()
        .unwrap();
        let nonce: [u8; 12] = unhex("07 00 00 00 40 41 42 43 44 45 46 47")
            .try_into()
            .unwrap();
        let aad = unhex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7");
        let mut data = SUNSCREEN.to_vec();
        let tag = seal(&key, &nonce, &aad, &mut data);
        let want = unhex(
            "d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2
             a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7 36 ee 62 d6
             3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b
             1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36
             92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58
             fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc
             3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b
             61 16",
        );
        assert_eq!(data, want);
        assert_eq!(hex(&tag), "1ae10b594f09e26a7e902ecbd0600691");
        // Opened: the tag checks and the text comes back; any bit flipped, it does not.
        let mut back = data.clone();
        assert!(open(&key, &nonce, &aad, &mut back, &tag));
        assert_eq!(back, SUNSCREEN);
        for (i, bit) in [(0, 1), (57, 0x80), (113, 4)] {
            let mut bad = data.clone();
            bad[i] ^= bit;
            assert!(!open(&key, &nonce, &aad, &mut bad, &tag), "{i}");
        }
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        assert!(!open(&key, &nonce, &aad, &mut data.clone(), &bad_tag));
        assert!(!open(&key, &nonce, &aad[1..], &mut data.clone(), &tag));
        assert!(!open(&key, &nonce, &aad, &mut data.clone(), &tag[..15]));
        let mut other = nonce;
        other[11] ^= 1;
        assert!(!open(&key, &other, &aad, &mut data.clone(), &tag));
        // A look at the start decrypts it, unchecked.
        let mut head = data[..10].to_vec();
        peek(&key, &nonce, &mut head);
        assert_eq!(head, &SUNSCREEN[..10]);
    }

    #[test]
    fn rfc8439_appendix_a5() {
        let key: [u8; 32] = unhex(
            "1c 92 40 a5 eb 55 d3 8a f3 33 88 86 04 f6 b5 f0
             47 39 17 c1 40 2b 80 09 9d ca 5c bc 20 70 75 c0",
        )
        .try_into()
        .unwrap();
        let nonce: [u8; 12] = unhex("00 00 00 00 01 02 03 04 05 06 07 08")
            .try_into()
            .unwrap();
        let aad = unhex("f3 33 88 86 00 00 00 00 00 00 4e 91");
        let mut ct = unhex(
            "64 a0 86 15 75 86 1a f4 60 f0 62 c7 9b e6 43 bd
             5e 80 5c fd 34 5c f3 89 f1 08 67 0a c7 6c 8c b2
             4c 6c fc 18 75 5d 43 ee a0 9e e9 4e 38 2d 26 b0
             bd b7 b7 3c 32 1b 01 00 d4 f0 3b 7f 35 58 94 cf
             33 2f 83 0e 71 0b 97 ce 98 c8 a8 4a bd 0b 94 81
             14 ad 17 6e 00 8d 33 bd 60 f9 82 b1 ff 37 c8 55
             97 97 a0 6e f4 f0 ef 61 c1 86 32 4e 2b 35 06 38
             36 06 90 7b 6a 7c 02 b0 f9 f6 15 7b 53 c8 67 e4
             b9 16 6c 76 7b 80 4d 46 a5 9b 52 16 cd e7 a4 e9
             90 40 c5 a4 04 33 22 5e e2 82 a1 b0 a0 6c 52 3e
             af 45 34 d7 f8 3f a1 15 5b 00 47 71 8c bc 54 6a
             0d 07 2b 04 b3 56 4e ea 1b 42 22 73 f5 48 27 1a
             0b b2 31 60 53 fa 76 99 19 55 eb d6 31 59 43 4e
             ce bb 4e 46 6d ae 5a 10 73 a6 72 76 27 09 7a 10
             49 e6 17 d9 1d 36 10 94 fa 68 f0 ff 77 98 71 30
             30 5b ea ba 2e da 04 df 99 7b 71 4d 6c 6f 2c 29
             a6 ad 5c b4 02 2b 02 70 9b",
        );
        let tag = unhex("ee ad 9d 67 89 0c bb 22 39 23 36 fe a1 85 1f 38");
        assert!(open(&key, &nonce, &aad, &mut ct, &tag));
        let text = String::from_utf8(ct).unwrap();
        assert!(text.starts_with("Internet-Drafts are draft documents valid for a maximum"));
        assert!(
            text.ends_with("/\u{201c}work in progress./\u{201d}"),
            "{text}"
        );
    }

    /// Throughput on one core, 256 MiB in 1 MiB frames: `cargo test --release --bin left
    /// throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        use crate::proto::chacha::ChaCha;
        use std::time::Instant;
        let total = 256usize << 20;
        let mut buf = vec![0x5au8; 1 << 20];
        let (key, nonce) = ([9u8; 32], [1u8; 12]);
        let rate = |what: &str, t: Instant| {
            let mbs = total as f64 / 1e6 / t.elapsed().as_secs_f64();
            eprintln!("{what}: {mbs:.0} MB/s");
        };
        let c = ChaCha::new(&key, &nonce);
        let t = Instant::now();
        for _ in 0..total / buf.len() {
            c.apply(1, &mut buf);
        }
        rate("ChaCha20", t);
        let t = Instant::now();
        let mut acc = 0u8;
        for _ in 0..total / buf.len() {
            let mut p = Poly1305::new(&key);
            p.padded(&buf);
            acc ^= p.tag()[0];
        }
        rate("Poly1305", t);
        let t = Instant::now();
        for _ in 0..total / buf.len() {
            acc ^= crate::proto::hmac::hmac(&key, &[&buf])[0];
        }
        rate("HMAC-MD5 (for comparison)", t);
        let t = Instant::now();
        for i in 0..total / buf.len() {
            let tag = seal(&key, &nonce, &[i as u8], &mut buf);
            acc ^= tag[0];
        }
        rate("ChaCha20-Poly1305 seal", t);
        let t = Instant::now();
        let mut s = crate::proto::seal::Sealer::new(key);
        let mut r = crate::proto::seal::Sealer::new(key);
        let mut frame = vec![0u8; (1 << 20) + 4];
        for _ in 0..total / buf.len() {
            frame.truncate((1 << 20) + 4);
            frame[..4].copy_from_slice(&((1u32 << 20) - 4).to_be_bytes());
            frame[4] = 5;
            frame = s.seal(frame).unwrap();
            let n = r.open(&mut frame[4..]).unwrap();
            acc ^= frame[4 + n - 1];
        }
        rate("frames sealed and opened (both ends on one core)", t);
        eprintln!("({acc})");
    }
}
