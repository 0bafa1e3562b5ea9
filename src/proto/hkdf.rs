//! HKDF (RFC 5869) with HMAC-MD5 as its PRF: extract a pseudorandom key from the shared key,
//! then expand it into as many bytes as a use needs, each use under its own `info`.

use crate::hash::Hash;
use crate::proto::hmac::hmac;

/// Bytes one HMAC-MD5 gives.
const HASH_LEN: usize = 16;

/// HKDF-Extract (§2.2): `PRK = HMAC(salt, ikm)`; no salt counts as 16 zero bytes.
pub fn extract(salt: &[u8], ikm: &[u8]) -> Hash {
    let zeros = [0u8; HASH_LEN];
    hmac(if salt.is_empty() { &zeros } else { salt }, &[ikm])
}

/// HKDF-Expand (§2.3): `T(i) = HMAC(PRK, T(i-1) | info | i)`, `out` filled from T(1), T(2)...
/// `info` is the concatenation of its three parts. `out` may be at most 255 × 16 bytes (a
/// caller's constant: the uses here take 16 or 32).
pub fn expand(prk: &Hash, info: [&[u8]; 3], out: &mut [u8]) {
    debug_assert!(out.len() <= 255 * HASH_LEN);
    let mut t = [0u8; HASH_LEN];
    for (i, chunk) in out.chunks_mut(HASH_LEN).enumerate() {
        let prev = if i == 0 { &[][..] } else { &t[..] };
        t = hmac(prk, &[prev, info[0], info[1], info[2], &[(i + 1) as u8]]);
        chunk.copy_from_slice(&t[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hex;

    /// The inputs of RFC 5869's test cases 1, 2 and 3 (written for SHA-256), with MD5 as the
    /// hash; the expected values were computed with Python's `hmac` and `hashlib` (md5).
    #[test]
    fn rfc5869_structure_with_md5() {
        let range = |a: u8, b: u16| (a as u16..b).map(|x| x as u8).collect::<Vec<u8>>();
        // (salt, input key, info, PRK, OKM)
        type Case = (Vec<u8>, Vec<u8>, Vec<u8>, &'static str, &'static str);
        let cases: &[Case] = &[
            (
                range(0, 13),
                vec![0x0b; 22],
                range(0xf0, 0xfa),
                "4b70e250b1a12a0fdfdcfc0d28d6df85",
                "b222c9db38d17b2fea8b3bb511c0d6d86049ef481ba7065ca5c6422618ed9cc9144900e2c72b6a863a31",
            ),
            (
                range(0x60, 0xb0),
                range(0, 0x50),
                range(0xb0, 0x100),
                "5f4a4fe533b4814cf10b39b7c5ce758e",
                "6046b84c0ee83f7e686e072a52208c708bae321b8b2cd7d952b41d1033ff98df77016d42db55afc0\
                 8372b9cf077e2b6adef817ca2c1a7df1676469e9ea265d847fe7fdc1fa97fcad33889c9d9cca461858a5",
            ),
            (
                Vec::new(),
                vec![0x0b; 22],
                Vec::new(),
                "91b240d1ac1325832d2d2132dcbb48b0",
                "22f11acdbd350ec4d7f828e35b285008aa6692d7c84fa0c24c0510fb836eac1abadab3dfe33e4cbf1500",
            ),
        ];
        for (i, (salt, ikm, info, prk, okm)) in cases.iter().enumerate() {
            let p = extract(salt, ikm);
            assert_eq!(hex(&p), *prk, "case {}", i + 1);
            let mut out = vec![0u8; okm.len() / 2];
            expand(&p, [info, &[], &[]], &mut out);
            assert_eq!(hex(&out), *okm, "case {}", i + 1);
            // info in parts is the same as info whole.
            let (a, b) = info.split_at(info.len() / 2);
            let mut parts = vec![0u8; out.len()];
            expand(
                &p,
                [&a[..1.min(a.len())], &a[1.min(a.len())..], b],
                &mut parts,
            );
            assert_eq!(parts, out);
        }
    }
}
