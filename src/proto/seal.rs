//! Frames sealed for one direction of a session: each frame after the handshake encrypted and
//! authenticated with ChaCha20-Poly1305 under that direction's key, its nonce the frame's
//! number in the direction, so that a frame altered, replayed, reordered, dropped or sent back
//! the other way does not open.
//!
//! A sealed frame is `u32 length | ciphertext of (u8 type | payload) | 16-byte tag`, the length
//! (big-endian) counting ciphertext and tag and being the AEAD's additional data. The nonce of
//! frame `n` (0, 1, 2... in each direction) is four zero bytes then `n` as a little-endian u64.
//! Each direction has its own key, fresh for each connection, so a nonce never repeats for a
//! key; a count that would wrap ends the session instead.

use crate::error::{Error, Result};
use crate::proto::aead::{self, TAG_LEN};
use crate::proto::chacha::{KEY_LEN, NONCE_LEN};

/// The largest frame body sealed or opened: ChaCha20's 32-bit block counter must not wrap
/// (frames are at most a few MiB: far below).
const MAX_SEALED: usize = 1 << 30;

/// The key and frame count of one direction of a session.
pub struct Sealer {
    key: [u8; KEY_LEN],
    next: u64,
}

impl Sealer {
    pub fn new(key: [u8; KEY_LEN]) -> Sealer {
        Sealer { key, next: 0 }
    }

    /// A sealer whose next frame is number `next` (tests of the end of the count).
    #[cfg(test)]
    pub fn at(key: [u8; KEY_LEN], next: u64) -> Sealer {
        Sealer { key, next }
    }

    /// The nonce of the next frame, or the end of the session if the count is spent.
    fn nonce(&self) -> Result<[u8; NONCE_LEN]> {
        if self.next == u64::MAX {
            return Err(Error::protocol(
                "frame count of this session used up (a nonce would repeat): ending it",
            ));
        }
        let mut n = [0u8; NONCE_LEN];
        n[4..].copy_from_slice(&self.next.to_le_bytes());
        Ok(n)
    }

    /// Seals a whole frame (`u32 length | type | payload`, as encoded) in place: encrypts it
    /// after its length, appends the tag, and fixes the length.
    pub fn seal(&mut self, mut frame: Vec<u8>) -> Result<Vec<u8>> {
        if frame.len() < 5 || frame.len() > MAX_SEALED {
            return Err(Error::msg(format!(
                "cannot seal a frame of {} bytes",
                frame.len()
            )));
        }
        let nonce = self.nonce()?;
        let len = ((frame.len() - 4 + TAG_LEN) as u32).to_be_bytes();
        frame[..4].copy_from_slice(&len);
        let tag = aead::seal(&self.key, &nonce, &len, &mut frame[4..]);
        frame.extend_from_slice(&tag);
        self.next += 1;
        Ok(frame)
    }

    /// Opens a sealed frame's body (what follows its length) in place: checks its tag, then
    /// decrypts it; gives the length of the plain body (type and payload) at its start.
    pub fn open(&mut self, body: &mut [u8]) -> Result<usize> {
        if body.len() < TAG_LEN + 1 || body.len() > MAX_SEALED {
            return Err(Error::protocol("sealed frame too short for its tag"));
        }
        let nonce = self.nonce()?;
        let len = (body.len() as u32).to_be_bytes();
        let (data, tag) = body.split_at_mut(body.len() - TAG_LEN);
        if !aead::open(&self.key, &nonce, &len, data, tag) {
            return Err(Error::protocol(
                "frame does not authenticate (altered, replayed, reordered or another key)",
            ));
        }
        self.next += 1;
        Ok(data.len())
    }

    /// Decrypts in place the first bytes of the next frame's body (a copy of them, as they
    /// arrived, before the rest is read: to weigh a large frame): not checked, only a hint
    /// until the whole frame opens.
    pub fn peek(&self, head: &mut [u8]) {
        if let Ok(nonce) = self.nonce() {
            aead::peek(&self.key, &nonce, head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(t: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        f.push(t);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_open_once_in_order_under_their_key() {
        let (k, other) = ([7u8; 32], [8u8; 32]);
        let mut tx = Sealer::new(k);
        let f1 = tx.seal(plain(2, b"secret name")).unwrap();
        let f2 = tx.seal(plain(7, b"")).unwrap();
        // The length counts ciphertext and tag; the content is not in clear.
        assert_eq!(f1.len(), 4 + 12 + TAG_LEN);
        assert_eq!(
            u32::from_be_bytes(f1[..4].try_into().unwrap()) as usize,
            f1.len() - 4
        );
        assert!(!f1.windows(6).any(|w| w == b"secret"));
        let mut rx = Sealer::new(k);
        let mut b1 = f1[4..].to_vec();
        let n = rx.open(&mut b1).unwrap();
        assert_eq!(&b1[..n], &plain(2, b"secret name")[4..]);
        // Replayed: the count moved on. Reordered, altered, another key: none opens.
        assert!(rx.open(&mut f1[4..].to_vec()).is_err());
        let cases: &[(&str, Vec<u8>, [u8; 32])] = &[
            ("reordered", f2[4..].to_vec(), k),
            ("another key", f1[4..].to_vec(), other),
            (
                "bit flipped",
                {
                    let mut b = f1[4..].to_vec();
                    b[3] ^= 0x10;
                    b
                },
                k,
            ),
            (
                "tag flipped",
                {
                    let mut b = f1[4..].to_vec();
                    let l = b.len();
                    b[l - 1] ^= 1;
                    b
                },
                k,
            ),
            ("cut short", f1[4..f1.len() - 1].to_vec(), k),
            ("no room for a tag", vec![0; TAG_LEN], k),
            ("empty", Vec::new(), k),
        ];
        for (what, body, key) in cases {
            let mut body = body.clone();
            assert!(Sealer::new(*key).open(&mut body).is_err(), "{what}");
        }
        // The head of a frame, peeked before it is checked, reads as its plain start.
        let mut head = f1[4..9].to_vec();
        Sealer::new(k).peek(&mut head);
        assert_eq!(head, &plain(2, b"secret name")[4..9]);
    }

    #[test]
    fn a_count_at_its_end_ends_the_session() {
        let k = [3u8; 32];
        let mut tx = Sealer::at(k, u64::MAX - 1);
        let f = tx.seal(plain(7, b"")).unwrap();
        assert!(
            tx.seal(plain(7, b"")).is_err(),
            "the last nonce was used twice"
        );
        let mut rx = Sealer::at(k, u64::MAX - 1);
        assert!(rx.open(&mut f[4..].to_vec()).is_ok());
        let e = rx.open(&mut f[4..].to_vec()).unwrap_err();
        assert!(e.to_string().contains("used up"), "{e}");
        assert!(Sealer::new(k).seal(vec![0, 0, 0, 0]).is_err());
    }
}
