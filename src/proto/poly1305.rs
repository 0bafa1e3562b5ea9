//! The Poly1305 one-time authenticator (RFC 8439 §2.5), written from the RFC: the accumulator
//! and `r` as five 26-bit limbs in u64s, so that a product of two limbs and the sum of five such
//! fits a u64 with room to spare, and reduction modulo 2^130 - 5 is a multiply by 5 of what
//! carries past 2^130. Constant-time by construction: the final choice between `h` and
//! `h - p` is a mask, not a branch.

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
const MASK: u64 = (1 << 26) - 1;

/// Five 26-bit limbs of a number, lowest first.
type Limbs = [u64; 5];

fn limbs(n: u128) -> Limbs {
    let l = |i: u32| (n >> (26 * i)) as u64 & MASK;
    [l(0), l(1), l(2), l(3), (n >> 104) as u64]
}

/// The authenticator's state: `r` (clamped), `s`, and the accumulator `h`.
pub struct Poly1305 {
    r: Limbs,
    /// `5 * r[i]`: limbs that wrap past 2^130 come back times 5.
    r5: Limbs,
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
            r5: r.map(|x| x * 5),
            s: half(16),
            h: [0; 5],
        }
    }

    /// Adds a 16-byte block with its high bit (`hibit` 1: 2^128, for a whole block; 0 for a
    /// last partial one, already padded with its 1 byte) and multiplies by `r`.
    fn block(&mut self, m: &[u8; 16], hibit: u64) {
        let m = limbs(u128::from_le_bytes(*m));
        let mut h = self.h;
        for i in 0..5 {
            h[i] += m[i];
        }
        h[4] += hibit << 24;
        let (r, s) = (&self.r, &self.r5);
        let d = [
            h[0] * r[0] + h[1] * s[4] + h[2] * s[3] + h[3] * s[2] + h[4] * s[1],
            h[0] * r[1] + h[1] * r[0] + h[2] * s[4] + h[3] * s[3] + h[4] * s[2],
            h[0] * r[2] + h[1] * r[1] + h[2] * r[0] + h[3] * s[4] + h[4] * s[3],
            h[0] * r[3] + h[1] * r[2] + h[2] * r[1] + h[3] * r[0] + h[4] * s[4],
            h[0] * r[4] + h[1] * r[3] + h[2] * r[2] + h[3] * r[1] + h[4] * r[0],
        ];
        self.h = carry(d);
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
        // Carry fully, twice: every limb under 2^26 (h under 2^130 + a little).
        let mut c;
        for _ in 0..2 {
            for i in 0..4 {
                c = h[i] >> 26;
                h[i] &= MASK;
                h[i + 1] += c;
            }
            c = h[4] >> 26;
            h[4] &= MASK;
            h[0] += c * 5;
        }
        // g = h + 5 - 2^130: when h + 5 carries out of 2^130, h >= p and g is h mod p.
        let mut g = [0u64; 5];
        c = 5;
        for i in 0..5 {
            let t = h[i] + c;
            c = t >> 26;
            g[i] = t & MASK;
        }
        // c is 1 exactly when h + 5 reached 2^130: take g, else h; by a mask, not a branch.
        let take_g = c.wrapping_neg();
        for i in 0..5 {
            h[i] = (g[i] & take_g) | (h[i] & !take_g);
        }
        let n = (h[0] as u128)
            | (h[1] as u128) << 26
            | (h[2] as u128) << 52
            | (h[3] as u128) << 78
            | (h[4] as u128) << 104;
        n.wrapping_add(self.s).to_le_bytes()
    }
}

/// Carries the limbs of a product back under about 2^26: the top limb's carry comes back
/// times 5 into the lowest.
fn carry(mut d: Limbs) -> Limbs {
    let mut c;
    for i in 0..4 {
        c = d[i] >> 26;
        d[i] &= MASK;
        d[i + 1] += c;
    }
    c = d[4] >> 26;
    d[4] &= MASK;
    d[0] += c * 5;
    c = d[0] >> 26;
    d[0] &= MASK;
    d[1] += c;
    d
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
}
