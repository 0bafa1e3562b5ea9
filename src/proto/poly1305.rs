//! The Poly1305 one-time authenticator (RFC 8439 §2.5), written from the RFC: the accumulator
//! and `r` as three limbs of 44, 44 and 42 bits in u64s, products of two limbs in u128s (nine
//! multiplies a block), and reduction modulo 2^130 - 5 as a multiply by 5 of what carries past
//! 2^130 (by 20 for a product past 2^132). Constant-time by construction: the final choice
//! between `h` and `h - p` is a mask, not a branch.

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
const M44: u64 = (1 << 44) - 1;
const M42: u64 = (1 << 42) - 1;

/// Three limbs of a number, lowest first: bits 0..44, 44..88, 88 and up.
type Limbs = [u64; 3];

fn limbs(n: u128) -> Limbs {
    [n as u64 & M44, (n >> 44) as u64 & M44, (n >> 88) as u64]
}

fn mul(a: u64, b: u64) -> u128 {
    a as u128 * b as u128
}

/// The authenticator's state: `r` (clamped), `s`, and the accumulator `h`.
pub struct Poly1305 {
    r: Limbs,
    /// `20 * r[1]`, `20 * r[2]`: a product at bit 132 or past comes back times 20 (2^132 is
    /// 4 × 2^130, and 2^130 is 5 modulo p).
    r20: [u64; 2],
    s: u128,
    h: Limbs,
}

impl Poly1305 {
    /// A one-time key: `r` (clamped, §2.5.1) then `s`, 16 bytes each, little-endian.
    pub fn new(key: &[u8; KEY_LEN]) -> Poly1305 {
        let half = |at: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&key[at..at + 16]);
            u128::from_le_bytes(b)
        };
        let r = limbs(half(0) & 0x0fff_fffc_0fff_fffc_0fff_fffc_0fff_ffff);
        Poly1305 {
            r,
            r20: [r[1] * 20, r[2] * 20],
            s: half(16),
            h: [0; 3],
        }
    }

    /// Adds a 16-byte block with its high bit (`hibit` 1: 2^128, for a whole block; 0 for a
    /// last partial one, already padded with its 1 byte) and multiplies by `r`.
    fn block(&mut self, m: &[u8; 16], hibit: u64) {
        let m = limbs(u128::from_le_bytes(*m));
        let h0 = self.h[0] + m[0];
        let h1 = self.h[1] + m[1];
        let h2 = self.h[2] + m[2] + (hibit << 40);
        let (r, s) = (&self.r, &self.r20);
        let d0 = mul(h0, r[0]) + mul(h1, s[1]) + mul(h2, s[0]);
        let mut d1 = mul(h0, r[1]) + mul(h1, r[0]) + mul(h2, s[1]);
        let mut d2 = mul(h0, r[2]) + mul(h1, r[1]) + mul(h2, r[0]);
        // Carry: limbs back under 2^44, 2^44, 2^42 (the lowest a little over).
        d1 += d0 >> 44;
        d2 += d1 >> 44;
        let c = (d2 >> 42) as u64;
        let mut h = [d0 as u64 & M44, d1 as u64 & M44, d2 as u64 & M42];
        h[0] += c * 5;
        h[1] += h[0] >> 44;
        h[0] &= M44;
        self.h = h;
    }

    /// Adds the whole 16-byte blocks of `data`; gives back the partial rest.
    fn blocks<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let mut chunks = data.chunks_exact(16);
        for c in &mut chunks {
            let mut b = [0u8; 16];
            b.copy_from_slice(c);
            self.block(&b, 1);
        }
        chunks.remainder()
    }

    /// Adds `data` as whole blocks, a last partial one padded with zeros to 16 bytes (the
    /// AEAD's `pad16`, §2.8: the padded block counts as whole).
    pub fn padded(&mut self, data: &[u8]) {
        let rest = self.blocks(data);
        if !rest.is_empty() {
            let mut b = [0u8; 16];
            b[..rest.len()].copy_from_slice(rest);
            self.block(&b, 1);
        }
    }

    /// Adds `data` as a whole message (§2.5): a last partial block gets a 1 byte after it and
    /// no high bit. (The AEAD pads instead: only the RFC's own vectors use this.)
    #[cfg(test)]
    pub fn message(&mut self, data: &[u8]) {
        let rest = self.blocks(data);
        if !rest.is_empty() {
            let mut b = [0u8; 16];
            b[..rest.len()].copy_from_slice(rest);
            b[rest.len()] = 1;
            self.block(&b, 0);
        }
    }

    /// The tag: `h` reduced modulo 2^130 - 5, plus `s`, modulo 2^128.
    pub fn tag(self) -> [u8; TAG_LEN] {
        let mut h = self.h;
        // Carry fully, twice: every limb within its width (h under 2^130 + a little).
        for _ in 0..2 {
            h[1] += h[0] >> 44;
            h[0] &= M44;
            h[2] += h[1] >> 44;
            h[1] &= M44;
            h[0] += (h[2] >> 42) * 5;
            h[2] &= M42;
        }
        // g = h + 5 - 2^130: when h + 5 carries out of 2^130, h >= p and g is h mod p.
        let g0 = h[0] + 5;
        let g1 = h[1] + (g0 >> 44);
        let g2 = h[2] + (g1 >> 44);
        let g = [g0 & M44, g1 & M44, g2 & M42];
        // 1 exactly when h + 5 reached 2^130: take g, else h; by a mask, not a branch.
        let take_g = (g2 >> 42).wrapping_neg();
        for i in 0..3 {
            h[i] = (g[i] & take_g) | (h[i] & !take_g);
        }
        let n = (h[0] as u128) | (h[1] as u128) << 44 | (h[2] as u128) << 88;
        n.wrapping_add(self.s).to_le_bytes()
    }
}

/// The tag of a whole message under a one-time key.
#[cfg(test)]
pub fn mac(key: &[u8; KEY_LEN], msg: &[u8]) -> [u8; TAG_LEN] {
    let mut p = Poly1305::new(key);
    p.message(msg);
    p.tag()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hex;
    use crate::proto::chacha::tests::unhex;

    #[test]
    fn rfc8439_2_5_2() {
        let k = unhex(
            "85:d6:be:78:57:55:6d:33:7f:44:52:fe:42:d5:06:a8:\
             01:03:80:8a:fb:0d:b2:fd:4a:bf:f6:af:41:49:f5:1b",
        );
        assert_eq!(
            hex(&mac(
                &k.try_into().unwrap(),
                b"Cryptographic Forum Research Group"
            )),
            "a8061dc1305136c6c22b8baf0c0127a9"
        );
    }

    /// Appendix A.3: the edge cases of the reduction modulo 2^130 - 5.
    #[test]
    fn rfc8439_appendix_a3() {
        // #1: all zero key and message.
        assert_eq!(
            hex(&mac(&[0; 32], &[0; 64])),
            "00000000000000000000000000000000"
        );
        // #5: r = 2, s = 0, message 2^128 - 1: h passes p and must be reduced.
        let mut k = [0u8; 32];
        k[0] = 2;
        assert_eq!(
            hex(&mac(&k, &[0xff; 16])),
            "03000000000000000000000000000000"
        );
        // #6: r = 2, s = 2^128 - 1, message 2: the final addition of s wraps.
        k[16..].fill(0xff);
        let mut m = [0u8; 16];
        m[0] = 2;
        assert_eq!(hex(&mac(&k, &m)), "03000000000000000000000000000000");
        // #7: r = 1, the accumulator passes p during the additions.
        let mut k = [0u8; 32];
        k[0] = 1;
        let m = unhex(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF F0FFFFFFFFFFFFFFFFFFFFFFFFFFFFFF
             11000000000000000000000000000000",
        );
        assert_eq!(hex(&mac(&k, &m)), "05000000000000000000000000000000");
        // #8: h reduces to exactly zero.
        let m = unhex(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF FBFEFEFEFEFEFEFEFEFEFEFEFEFEFEFE
             01010101010101010101010101010101",
        );
        assert_eq!(hex(&mac(&k, &m)), "00000000000000000000000000000000");
        // #11 and #10: r with a bit in its third word; carries through every limb.
        k[8] = 4;
        let mut m = unhex(
            "E33594D7505E43B90000000000000000 3394D7505E4379CD0100000000000000
             00000000000000000000000000000000",
        );
        assert_eq!(hex(&mac(&k, &m)), "13000000000000000000000000000000");
        m.extend_from_slice(&unhex("01000000000000000000000000000000"));
        assert_eq!(hex(&mac(&k, &m)), "14000000000000005500000000000000");
    }

    /// Keys and messages of many lengths (bytes of an MD5 chain), against tags computed with
    /// Python's `cryptography` (OpenSSL's Poly1305): every way a message ends in a block.
    #[test]
    fn lengths_against_openssl() {
        use md5::{Digest, Md5};
        let stream = |seed: String, n: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for i in 0u32.. {
                if out.len() >= n {
                    break;
                }
                let mut h = Md5::new();
                h.update(seed.as_bytes());
                h.update(i.to_be_bytes());
                out.extend_from_slice(&h.finalize());
            }
            out.truncate(n);
            out
        };
        let want = [
            (0, "13fc862574c19424165f1698280c2056"),
            (1, "ce1374bb9d566e71f8a6bdd38c5f6034"),
            (15, "104d21afe1e3277674550e9d882d173a"),
            (16, "a42ff75480703d7f6dcb0e45531444b9"),
            (17, "8cb61b97da717e268aeb5047fe25a42a"),
            (31, "99b29d4ad4a9552c10294ad3309327e9"),
            (33, "6833a05fec286f7dd2826940a0319d5e"),
            (64, "4be32bfa47d0901e2c9013f9193be1c3"),
            (100, "1bb10ba6edcb301c1cc4c5ff60f6e2c5"),
            (1000, "b664cf0bc96f5bec247375bd3f215cb6"),
        ];
        for (n, tag) in want {
            let k: [u8; 32] = stream(format!("key{n}"), 32).try_into().unwrap();
            assert_eq!(hex(&mac(&k, &stream(format!("msg{n}"), n))), tag, "{n}");
        }
    }
}
