//! Hashing: MD5 of blocks and of whole files, read in a stream so memory stays flat.

use md5::{Digest, Md5};
use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc;

pub type Hash = [u8; 16];

pub fn md5(data: &[u8]) -> Hash {
    Md5::digest(data).into()
}

pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short printable form of a device id, used in logs and conflict names.
pub fn short_id(device: u64) -> String {
    format!("{:07X}", device >> 36)
}

/// The MD5 of every `block_size` block of `size` bytes read from `f`, and of the whole.
///
/// The whole-file digest runs on a second thread, so hashing a large file uses both cores.
/// Fails with `UnexpectedEof` if the file is shorter than `size`.
pub fn file_blocks(f: &mut File, size: u64, block_size: u32) -> io::Result<(Vec<Hash>, Hash)> {
    let bs = block_size as usize;
    let nblocks = size.div_ceil(block_size as u64) as usize;
    let mut blocks = Vec::with_capacity(nblocks);
    if size <= 4 * bs as u64 {
        // Small files: no thread, one hasher for the whole.
        let mut whole = Md5::new();
        let mut buf = vec![0u8; bs];
        let mut left = size;
        while left > 0 {
            let n = left.min(bs as u64) as usize;
            f.read_exact(&mut buf[..n])?;
            blocks.push(md5(&buf[..n]));
            whole.update(&buf[..n]);
            left -= n as u64;
        }
        return Ok((blocks, whole.finalize().into()));
    }
    let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(2);
    let (back_tx, back_rx) = mpsc::channel::<Arc<Vec<u8>>>();
    std::thread::scope(|s| {
        let whole = s.spawn(move || {
            let mut h = Md5::new();
            for buf in rx {
                h.update(&buf[..]);
                let _ = back_tx.send(buf);
            }
            h.finalize()
        });
        let mut left = size;
        let mut result = Ok(());
        while left > 0 {
            let n = left.min(bs as u64) as usize;
            // Reuse buffers the other thread is done with; at most 4 exist at once.
            let mut buf = match back_rx.try_recv() {
                Ok(b) => b,
                Err(_) => Arc::new(vec![0u8; bs]),
            };
            let Some(b) = Arc::get_mut(&mut buf) else {
                continue;
            };
            b.resize(n, 0);
            if let Err(e) = f.read_exact(b) {
                result = Err(e);
                break;
            }
            blocks.push(md5(b));
            left -= n as u64;
            if tx.send(buf).is_err() {
                break;
            }
        }
        drop(tx);
        let digest = whole
            .join()
            .map_err(|_| io::Error::other("hash thread failed"))?;
        result.map(|_| (blocks, digest.into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn blocks_and_whole() {
        let dir = std::env::temp_dir().join(format!("left-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for size in [0usize, 1, 4096, 4097, 5 * 4096 + 3, 40 * 4096] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.join(format!("f{size}"));
            File::create(&p).unwrap().write_all(&data).unwrap();
            let (blocks, whole) =
                file_blocks(&mut File::open(&p).unwrap(), size as u64, 4096).unwrap();
            let want: Vec<Hash> = data.chunks(4096).map(md5).collect();
            assert_eq!(blocks, want);
            assert_eq!(whole, md5(&data));
            // A file shorter than announced is an error, not a short list.
            assert!(file_blocks(&mut File::open(&p).unwrap(), size as u64 + 1, 4096).is_err());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn known_digest() {
        assert_eq!(hex(&md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }
}
