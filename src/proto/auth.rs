//! Peer authentication with a shared key: HMAC-MD5 (RFC 2104) on top of md-5, a mutual
//! challenge-response over fresh nonces, and a MAC with a sequence number on every later frame.

use crate::error::{Context, Error, Result};
use crate::hash::Hash;
use md5::{Digest, Md5};
use std::fs::File;
use std::io::Read;
use std::path::Path;

const BLOCK: usize = 64;
const MAX_KEY_FILE: u64 = 4096;
pub const MAC_LEN: usize = 16;

/// HMAC-MD5 of the concatenation of `parts`.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> Hash {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..16].copy_from_slice(&Md5::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Md5::new();
    inner.update(k.map(|b| b ^ 0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Md5::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Compares MACs without an early exit.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn random16() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .at("/dev/urandom")?;
    Ok(b)
}

/// Reads a shared key: the file's bytes, trailing whitespace removed; at least 8 bytes.
pub fn load_key(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).at(path)?;
    let mut key = Vec::new();
    f.take(MAX_KEY_FILE + 1).read_to_end(&mut key).at(path)?;
    if key.len() as u64 > MAX_KEY_FILE {
        return Err(Error::msg("key file is larger than 4 KiB").at(path));
    }
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    if key.len() < 8 {
        return Err(Error::msg("key is shorter than 8 bytes").at(path));
    }
    Ok(key)
}

/// What both sides saw of a handshake: the dialer's and the acceptor's hello frames, as sent.
/// Proofs and session keys are computed over all of it, so they hold for this one connection
/// only: another connection (a relay) differs in a nonce, and the other side differs in role.
pub struct Transcript {
    digest: Hash,
}

impl Transcript {
    pub fn new(dialer_hello: &[u8], acceptor_hello: &[u8]) -> Transcript {
        let mut h = Md5::new();
        for part in [dialer_hello, acceptor_hello] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        Transcript {
            digest: h.finalize().into(),
        }
    }

    /// The proof that the dialer (`by_dialer`) or the acceptor of this connection holds the key.
    pub fn proof(&self, key: &[u8], by_dialer: bool) -> Hash {
        hmac(key, &[b"left-auth-2", &[u8::from(by_dialer)], &self.digest])
    }

    /// MAC state for the frames sent by the dialer (`from_dialer`) or by the acceptor.
    pub fn sealer(&self, key: &[u8], from_dialer: bool) -> Sealer {
        Sealer {
            key: hmac(
                key,
                &[b"left-session-2", &[u8::from(from_dialer)], &self.digest],
            ),
            seq: 0,
        }
    }
}

/// Per-direction MAC state for an authenticated connection.
pub struct Sealer {
    key: Hash,
    seq: u64,
}

impl Sealer {
    /// Keys for frames sent by the side with nonce `from` to the side with nonce `to` (tests).
    #[cfg(test)]
    pub fn new(key: &[u8], from: &[u8; 16], to: &[u8; 16]) -> Sealer {
        Sealer {
            key: hmac(key, &[b"left-session", from, to]),
            seq: 0,
        }
    }

    fn mac(&mut self, body: &[u8]) -> Hash {
        let m = hmac(&self.key, &[&self.seq.to_be_bytes(), body]);
        self.seq += 1;
        m
    }

    /// Appends the MAC to a whole frame (length prefix included) and fixes its length.
    pub fn seal(&mut self, mut frame: Vec<u8>) -> Vec<u8> {
        let m = self.mac(&frame[4..]);
        frame.extend_from_slice(&m);
        let n = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&n.to_be_bytes());
        frame
    }

    /// Checks and strips the MAC of a frame body; a frame altered, replayed, reordered or dropped
    /// fails here, since the sequence number is implicit.
    pub fn open<'a>(&mut self, body: &'a [u8]) -> Result<&'a [u8]> {
        if body.len() < MAC_LEN + 1 {
            return Err(Error::protocol("frame too short for its MAC"));
        }
        let (data, mac) = body.split_at(body.len() - MAC_LEN);
        if !same(&self.mac(data), mac) {
            return Err(Error::protocol(
                "frame MAC does not verify (altered, replayed or reordered)",
            ));
        }
        Ok(data)
    }
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

    #[test]
    fn sealed_frames() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let mut tx = Sealer::new(b"secret-key", &a, &b);
        let mut rx = Sealer::new(b"secret-key", &a, &b);
        let f1 = tx.seal(vec![0, 0, 0, 2, 7, 9]);
        let f2 = tx.seal(vec![0, 0, 0, 1, 7]);
        assert_eq!(rx.open(&f1[4..]).unwrap(), &[7, 9]);
        // Replaying f1 fails (sequence moved on); f2 then fails too: the stream is dead.
        assert!(rx.open(&f1[4..]).is_err());
        let mut rx2 = Sealer::new(b"secret-key", &a, &b);
        assert!(rx2.open(&f2[4..]).is_err(), "reordered frame accepted");
        let mut rx3 = Sealer::new(b"secret-key", &a, &b);
        let mut bad = f1.clone();
        bad[5] ^= 1;
        assert!(rx3.open(&bad[4..]).is_err(), "altered frame accepted");
        let mut other = Sealer::new(b"other-key!", &a, &b);
        assert!(other.open(&f1[4..]).is_err(), "wrong key accepted");
        assert!(other.open(&[1, 2]).is_err());
    }

    #[test]
    fn proofs_bind_both_hellos_and_the_role() {
        let (d, a) = (b"dialer hello".as_slice(), b"acceptor hello".as_slice());
        let t = Transcript::new(d, a);
        let p = t.proof(b"k", true);
        // The other role, the hellos swapped or changed in one byte, another key: another proof.
        assert_ne!(p, t.proof(b"k", false));
        assert_ne!(p, Transcript::new(a, d).proof(b"k", true));
        assert_ne!(p, Transcript::new(b"dialer hellp", a).proof(b"k", true));
        assert_ne!(p, Transcript::new(d, b"acceptor hellp").proof(b"k", true));
        assert_ne!(p, t.proof(b"j", true));
        // Parts are delimited: moving bytes from one hello to the other changes the proof.
        assert_ne!(
            p,
            Transcript::new(b"dialer hello a", b"cceptor hello").proof(b"k", true)
        );
        assert!(same(&p, &Transcript::new(d, a).proof(b"k", true)));
        // Session keys per direction, and not the proofs.
        let mut tx = t.sealer(b"k", true);
        let mut rx = Transcript::new(d, a).sealer(b"k", true);
        let f = tx.seal(vec![0, 0, 0, 1, 7]);
        assert_eq!(rx.open(&f[4..]).unwrap(), &[7]);
        let mut wrong = t.sealer(b"k", false);
        assert!(
            wrong
                .open(&t.sealer(b"k", true).seal(vec![0, 0, 0, 1, 7])[4..])
                .is_err()
        );
    }
}
