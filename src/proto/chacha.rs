//! The ChaCha20 stream cipher (RFC 8439 §2.1–2.4), written from the RFC: one block at a time
//! in plain u32s, the 16 words of the state held in registers through the rounds (the four
//! quarter rounds of each half round are independent, which keeps a core busy). Constant-time
//! by construction: only additions, xors and fixed rotations, no branch or index that depends
//! on the key or the data.
//!
//! On x86_64 CPUs with AVX2 (looked up at run time), eight blocks at a time in AVX2 registers:
//! 2,076-2,300 MB/s on one core here, against 590-800 MB/s one block at a time (`cargo test
//! --release --bin left throughput -- --ignored`); the compiler does not vectorise lanes
//! written as arrays at opt-level "s" (tried: slower than one block at a time). Its 1.6 KiB of
//! code took a keyed 500 MiB XFER from 3.75 s to 2.40 s (tests/bench/README.md).

/// Key and nonce sizes.
pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
/// Bytes of keystream per block.
pub const BLOCK: usize = 64;

/// "expand 32-byte k", the first four words of every state.
const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// The quarter round (§2.1) on words `a`, `b`, `c`, `d` of the state.
#[inline(always)]
fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// The double round (§2.3): four column rounds, four diagonal rounds; `$q` a quarter round on
/// state `$s`.
macro_rules! double_round {
    ($q:ident, $s:expr) => {
        $q($s, 0, 4, 8, 12);
        $q($s, 1, 5, 9, 13);
        $q($s, 2, 6, 10, 14);
        $q($s, 3, 7, 11, 15);
        $q($s, 0, 5, 10, 15);
        $q($s, 1, 6, 11, 12);
        $q($s, 2, 7, 8, 13);
        $q($s, 3, 4, 9, 14);
    };
}

/// The key and nonce as state words.
#[derive(Clone)]
pub struct ChaCha {
    key: [u32; 8],
    nonce: [u32; 3],
}

impl ChaCha {
    pub fn new(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN]) -> ChaCha {
        let word = |b: &[u8], i: usize| {
            u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
        };
        ChaCha {
            key: std::array::from_fn(|i| word(key, i)),
            nonce: std::array::from_fn(|i| word(nonce, i)),
        }
    }

    /// The initial state of a block, block counter `counter`.
    fn state(&self, counter: u32) -> [u32; 16] {
        let mut s = [0u32; 16];
        s[..4].copy_from_slice(&SIGMA);
        s[4..12].copy_from_slice(&self.key);
        s[12] = counter;
        s[13..].copy_from_slice(&self.nonce);
        s
    }

    /// The final state of a block (§2.3: the rounds, plus the initial state), block counter
    /// `counter`, as words: the keystream's, little-endian.
    pub fn block_words(&self, counter: u32) -> [u32; 16] {
        let init = self.state(counter);
        let mut s = init;
        for _ in 0..10 {
            double_round!(quarter, &mut s);
        }
        for (w, i) in s.iter_mut().zip(init) {
            *w = w.wrapping_add(i);
        }
        s
    }

    /// One block of keystream (§2.3), for block counter `counter`.
    #[cfg(test)]
    pub fn block(&self, counter: u32) -> [u8; BLOCK] {
        let s = self.block_words(counter);
        let mut b = [0u8; BLOCK];
        for (w, out) in b.chunks_exact_mut(4).enumerate() {
            out.copy_from_slice(&s[w].to_le_bytes());
        }
        b
    }

    /// Encrypts or decrypts `data` in place (§2.4): xors it with the keystream starting at block
    /// counter `counter`. `data` must be shorter than 2^32 - `counter` blocks (a frame is a few
    /// MiB; the caller checks).
    pub fn apply(&self, counter: u32, data: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, looked up just above.
            let done = unsafe { avx2::apply(self, counter, data) };
            let blocks = (done / BLOCK) as u32;
            return self.apply_blocks(counter.wrapping_add(blocks), &mut data[done..]);
        }
        self.apply_blocks(counter, data)
    }

    /// [`ChaCha::apply`] one block at a time: the portable path, and the last blocks of the
    /// AVX2 one.
    fn apply_blocks(&self, counter: u32, data: &mut [u8]) {
        for (b, part) in data.chunks_mut(BLOCK).enumerate() {
            let s = self.block_words(counter.wrapping_add(b as u32));
            let at = (part.len() / 4).min(15);
            let mut words = part.chunks_exact_mut(4);
            for (d, k) in (&mut words).zip(s) {
                let x = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) ^ k;
                d.copy_from_slice(&x.to_le_bytes());
            }
            // A last partial word: its bytes, lowest first.
            for (i, d) in words.into_remainder().iter_mut().enumerate() {
                *d ^= (s[at] >> (8 * i)) as u8;
            }
        }
    }
}

/// Eight blocks at a time in AVX2 registers (x86_64).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK, ChaCha};
    use std::arch::x86_64::*;

    const LANES: usize = 8;

    /// Xors `chunk` (whole blocks, block `l` at `64 l`) with the keystream in `s` (word `w` of
    /// block `l` at `s[w][l]`).
    #[inline(always)]
    fn xor_words(chunk: &mut [u8], s: &[[u32; LANES]; 16]) {
        for (l, block) in chunk.chunks_exact_mut(BLOCK).enumerate() {
            for (w, d) in block.chunks_exact_mut(4).enumerate() {
                let x = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) ^ s[w][l];
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
    }

    /// `x <<< n` in every lane: 16 and 8 are byte moves (one shuffle), others two shifts.
    #[inline(always)]
    unsafe fn rot(x: __m256i, n: i32) -> __m256i {
        unsafe {
            match n {
                16 => _mm256_shuffle_epi8(
                    x,
                    _mm256_setr_epi8(
                        2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4,
                        5, 10, 11, 8, 9, 14, 15, 12, 13,
                    ),
                ),
                8 => _mm256_shuffle_epi8(
                    x,
                    _mm256_setr_epi8(
                        3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, 3, 0, 1, 2, 7, 4, 5,
                        6, 11, 8, 9, 10, 15, 12, 13, 14,
                    ),
                ),
                12 => _mm256_or_si256(_mm256_slli_epi32(x, 12), _mm256_srli_epi32(x, 20)),
                _ => _mm256_or_si256(_mm256_slli_epi32(x, 7), _mm256_srli_epi32(x, 25)),
            }
        }
    }

    #[inline(always)]
    unsafe fn quarter(s: &mut [__m256i; 16], a: usize, b: usize, c: usize, d: usize) {
        unsafe {
            s[a] = _mm256_add_epi32(s[a], s[b]);
            s[d] = rot(_mm256_xor_si256(s[d], s[a]), 16);
            s[c] = _mm256_add_epi32(s[c], s[d]);
            s[b] = rot(_mm256_xor_si256(s[b], s[c]), 12);
            s[a] = _mm256_add_epi32(s[a], s[b]);
            s[d] = rot(_mm256_xor_si256(s[d], s[a]), 8);
            s[c] = _mm256_add_epi32(s[c], s[d]);
            s[b] = rot(_mm256_xor_si256(s[b], s[c]), 7);
        }
    }

    /// Xors `data` with the keystream from block counter `counter`, eight whole blocks at a
    /// time; gives back the bytes done (the rest is less than eight blocks).
    #[target_feature(enable = "avx2")]
    pub unsafe fn apply(c: &ChaCha, counter: u32, data: &mut [u8]) -> usize {
        let one = c.state(counter);
        let mut init = one.map(|w| _mm256_set1_epi32(w as i32));
        let steps = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut ctr = counter;
        let mut done = 0;
        for chunk in data.chunks_exact_mut(LANES * BLOCK) {
            init[12] = _mm256_add_epi32(_mm256_set1_epi32(ctr as i32), steps);
            let mut s = init;
            for _ in 0..10 {
                // SAFETY: AVX2 is enabled for this function.
                unsafe {
                    double_round!(quarter, &mut s);
                }
            }
            let mut words = [[0u32; LANES]; 16];
            for w in 0..16 {
                let v = _mm256_add_epi32(s[w], init[w]);
                // SAFETY: `words[w]` is 32 bytes, written unaligned.
                unsafe { _mm256_storeu_si256(words[w].as_mut_ptr().cast(), v) };
            }
            xor_words(chunk, &words);
            ctr = ctr.wrapping_add(LANES as u32);
            done += LANES * BLOCK;
        }
        done
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hash::hex;

    /// Bytes from a hex string with spaces, colons and newlines allowed (as the RFC prints them).
    pub fn unhex(s: &str) -> Vec<u8> {
        let d: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        d.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn key_nonce(k: &str, n: &str) -> ChaCha {
        ChaCha::new(&unhex(k).try_into().unwrap(), &unhex(n).try_into().unwrap())
    }

    const SEQ_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn rfc8439_2_3_2_block_function() {
        let c = key_nonce(SEQ_KEY, "000000090000004a00000000");
        let want = "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
                    d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e";
        assert_eq!(hex(&c.block(1)), want);
    }

    const SUNSCREEN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you \
only one tip for the future, sunscreen would be it.";

    #[test]
    fn rfc8439_2_4_2_encryption() {
        let c = key_nonce(SEQ_KEY, "000000000000004a00000000");
        let mut data = SUNSCREEN.to_vec();
        c.apply(1, &mut data);
        let want = unhex(
            "6e 2e 35 9a 25 68 f9 80 41 ba 07 28 dd 0d 69 81
             e9 7e 7a ec 1d 43 60 c2 0a 27 af cc fd 9f ae 0b
             f9 1b 65 c5 52 47 33 ab 8f 59 3d ab cd 62 b3 57
             16 39 d6 24 e6 51 52 ab 8f 53 0c 35 9f 08 61 d8
             07 ca 0d bf 50 0d 6a 61 56 a3 8e 08 8a 22 b6 5e
             52 bc 51 4d 16 cc f8 06 81 8c e9 1a b7 79 37 36
             5a f9 0b bf 74 a3 5b e6 b4 0b 8e ed f2 78 5e 42
             87 4d",
        );
        assert_eq!(data, want);
        c.apply(1, &mut data);
        assert_eq!(data, SUNSCREEN);
    }

    #[test]
    fn rfc8439_appendix_a1_blocks() {
        let zero = "0000000000000000000000000000000000000000000000000000000000000000";
        // Test vectors #1 and #2: all-zero key and nonce, counters 0 and 1.
        let c = key_nonce(zero, "000000000000000000000000");
        assert_eq!(
            hex(&c.block(0)),
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7\
             da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
        );
        assert_eq!(
            hex(&c.block(1)),
            "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed\
             29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
        );
        // Test vector #3: key ending in 1, counter 1.
        let one = "0000000000000000000000000000000000000000000000000000000000000001";
        assert_eq!(
            hex(&key_nonce(one, "000000000000000000000000").block(1)),
            "3aeb5224ecf849929b9d828db1ced4dd832025e8018b8160b82284f3c949aa5a\
             8eca00bbb4a73bdad192b5c42f73f2fd4e273644c8b36125a64addeb006c13a0"
        );
        // Test vector #5: nonce ending in 2, counter 0.
        assert_eq!(
            hex(&key_nonce(zero, "000000000000000000000002").block(0)),
            "c2c64d378cd536374ae204b9ef933fcd1a8b2288b3dfa49672ab765b54ee27c7\
             8a970e0e955c14f3a88e741b97c286f75f8fc299e8148362fa198a39531bed6d"
        );
    }

    #[test]
    fn rfc8439_appendix_a2_encryption() {
        // Test vector #3: the Jabberwocky, counter 42.
        let c = key_nonce(
            "1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0",
            "000000000000000000000002",
        );
        let text = b"'Twas brillig, and the slithy toves\nDid gyre and gimble in the wabe:\n\
All mimsy were the borogoves,\nAnd the mome raths outgrabe.";
        let mut data = text.to_vec();
        c.apply(42, &mut data);
        let want = unhex(
            "62 e6 34 7f 95 ed 87 a4 5f fa e7 42 6f 27 a1 df
             5f b6 91 10 04 4c 0d 73 11 8e ff a9 5b 01 e5 cf
             16 6d 3d f2 d7 21 ca f9 b2 1e 5f b1 4c 61 68 71
             fd 84 c5 4f 9d 65 b2 83 19 6c 7f e4 f6 05 53 eb
             f3 9c 64 02 c4 22 34 e3 2a 35 6b 3e 76 43 12 a6
             1a 55 32 05 57 16 ea d6 96 25 68 f8 7d 3f 3f 77
             04 c6 a8 d1 bc d1 bf 4d 50 d6 15 4b 6d a7 31 b1
             87 b5 8d fd 72 8a fa 36 75 7a 79 7a c1 88 d1",
        );
        assert_eq!(data, want);
    }

    #[test]
    fn any_length_and_start_agrees_with_block_by_block() {
        let c = key_nonce(SEQ_KEY, "000000090000004a00000007");
        let stream: Vec<u8> = (5..20).flat_map(|b| c.block(b)).collect();
        // From 512 bytes on, eight blocks at a time where the CPU has AVX2, then the rest.
        for len in [
            0, 1, 2, 3, 5, 63, 64, 65, 66, 127, 255, 256, 257, 511, 512, 513, 700, 960,
        ] {
            let mut d = vec![0u8; len];
            c.apply(5, &mut d);
            assert_eq!(d, stream[..len], "{len}");
        }
    }
}
