//! HMAC-MD5 (RFC 2104) on top of md-5, and the comparison of MACs and tags in constant time:
//! the PRF of the key schedule and of the handshake's proofs.

use crate::hash::{Hash, md5};

const BLOCK: usize = 64;

/// HMAC-MD5 of the concatenation of `parts`: each MD5 over one buffer, through the crate's one
/// `md5` function (smaller than a streaming hasher inlined here: the binary has a size budget;
/// the messages are a handshake's few hundred bytes).
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> Hash {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..16].copy_from_slice(&md5(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    for p in parts {
        inner.extend_from_slice(p);
    }
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&md5(&inner));
    md5(&outer)
}

/// Compares MACs without an early exit.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hex;

    #[test]
    fn rfc2104_vectors() {
        assert_eq!(
            hex(&hmac(&[0x0b; 16], &[b"Hi There"])),
            "9294727a3638bb1c13f48ef8158bfc9d"
        );
        assert_eq!(
            hex(&hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        assert_eq!(
            hex(&hmac(&[0xaa; 16], &[&[0xdd; 50]])),
            "56be34521d144c88dbb8c733f0e8b3f6"
        );
        // RFC 2202: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac(
                &[0xaa; 80],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"
        );
    }
}
