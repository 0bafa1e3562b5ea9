//! Peer authentication with a shared key: the key schedule over the handshake's transcript
//! (proofs and per-direction session keys, see [`Transcript`]), and the key file (`left
//! keygen` writes one).

use crate::error::{Context, Error, Result};
use crate::hash::Hash;
use crate::proto::hkdf;
use crate::proto::seal::Sealer;
use std::fs::File;
use std::io::Read;
use std::path::Path;

const MAX_KEY_FILE: u64 = 4096;

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

/// Keys at least this long (256 bits) get no warning; `left keygen` writes 64 hex digits.
pub const STRONG_KEY: usize = 32;

/// The warning a key shorter than [`STRONG_KEY`] gets: anyone who records one handshake (or
/// dials us) can try guesses of a short key offline against the proofs.
pub const WEAK_KEY: &str = "the shared key is shorter than 32 bytes: a recorded handshake lets \
     anyone try guesses of it offline; use a random key (left keygen FILE)";

/// Writes a fresh random key (256 bits from /dev/urandom, as 64 hex digits and a newline) to
/// a new file `path`, readable by its owner only; an existing file is never overwritten.
pub fn keygen(path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.symlink_metadata().is_ok() {
        return Err(Error::msg("already exists; not overwriting a key (remove it first)").at(path));
    }
    let mut text = crate::hash::hex(&[random16()?, random16()?].concat()).into_bytes();
    text.push(b'\n');
    // create_new: should a file appear meanwhile, it is not written either.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
        .at(path)
}

/// The salt of the key schedule's extract step (RFC 5869 allows a constant one): it names the
/// protocol, so keys derived here are never those of another use of the same shared key.
const SALT: &[u8] = b"left protocol 3";

/// What both sides saw of a handshake: the dialer's and the acceptor's hello frames, as sent,
/// each after its length as a u32. Proofs and session keys are derived over all of it, so they
/// hold for this one connection only: another connection (a relay) differs in a nonce, and the
/// other side differs in role.
///
/// The key schedule (HKDF, RFC 5869, with HMAC-MD5): `PRK = HKDF-Extract(SALT, shared key)`;
/// side R's proof is `HKDF-Expand(PRK, "left-3 proof" | R | transcript, 16)` and the key of the
/// frames R sends `HKDF-Expand(PRK, "left-3 key" | R | transcript, 32)`, R one byte (1 for the
/// dialer, 0 for the acceptor). HMAC keeps its strength as a PRF whatever MD5's collisions:
/// the transcript goes into HMAC whole, never through a bare MD5.
pub struct Transcript {
    bytes: Vec<u8>,
}

impl Transcript {
    pub fn new(dialer_hello: &[u8], acceptor_hello: &[u8]) -> Transcript {
        let mut bytes = Vec::with_capacity(dialer_hello.len() + acceptor_hello.len() + 8);
        for part in [dialer_hello, acceptor_hello] {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        Transcript { bytes }
    }

    /// `HKDF-Expand(PRK, label | R | transcript)` into `out`.
    fn derive(&self, key: &[u8], label: &[u8], dialer: bool, out: &mut [u8]) {
        let info = [label, &[u8::from(dialer)], &self.bytes];
        hkdf::expand(&hkdf::extract(SALT, key), info, out);
    }

    /// The proof that the dialer (`by_dialer`) or the acceptor of this connection holds the key.
    pub fn proof(&self, key: &[u8], by_dialer: bool) -> Hash {
        let mut p = [0u8; 16];
        self.derive(key, b"left-3 proof", by_dialer, &mut p);
        p
    }

    /// The sealer of the frames sent by the dialer (`from_dialer`) or by the acceptor.
    pub fn sealer(&self, key: &[u8], from_dialer: bool) -> Sealer {
        let mut k = [0u8; 32];
        self.derive(key, b"left-3 key", from_dialer, &mut k);
        Sealer::new(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hmac::same;

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
        let f = tx.seal(vec![0, 0, 0, 1, 7]).unwrap();
        assert_eq!(rx.open(&mut f[4..].to_vec()).unwrap(), 1);
        let mut wrong = t.sealer(b"k", false);
        assert!(wrong.open(&mut f[4..].to_vec()).is_err());
    }
}
