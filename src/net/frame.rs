//! Frames on a socket: the budget all connections share for reading large frames (and the pace
//! a frame holding a share must keep), the reader that reads a block's bytes once into their own
//! buffer, and the writer that seals each frame (encrypts and authenticates it) with a key.

use crate::error::{Error, Result};
use crate::proto::seal::Sealer;
use crate::proto::wire::{self, Msg};
use crate::store::entry::Entry;
use crate::sync::pool::Pool;
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A peer that sends nothing for this long is gone (it pings every 30 s).
pub const READ_TIMEOUT: Duration = Duration::from_secs(90);

/// Bytes of frames being read and decoded by all connections together (a frame decoded takes
/// about twice its size for a moment: its bytes and what they decode into, plus the entries of
/// an index frame, see [`decode_cost`]). A frame larger than [`SMALL_FRAME`] waits for its
/// share, so many peers sending large frames at once cost this much, not that much per
/// connection.
const FRAME_BUDGET: usize = 2 << 20;
/// Frames up to this size are read without waiting (the reader's own buffer is as large).
const SMALL_FRAME: usize = 16 << 10;
/// While another frame waits for the same budget, a frame holding a share of it must arrive at
/// least this fast (after [`PACE_GRACE`]), or its connection ends: a peer that sends the start
/// of a large frame and then trickles the rest cannot keep the budget from everyone else, and
/// an honest peer on a link of 0.5 Mbit/s or more is never cut.
const MIN_PACE: usize = 64 << 10;
const PACE_GRACE: Duration = Duration::from_secs(5);
/// While another frame waits for the same budget, a frame holding more than half of it must be
/// whole within this, whatever its pace: no honest sender builds such frames but for an entry
/// with a huge block list, and one frame must not keep the budget for minutes.
const HOLD_MAX: Duration = Duration::from_secs(15);
/// How often a large frame's reader looks at its pace while it waits for bytes.
const PACE_TICK: Duration = Duration::from_millis(250);

/// A budget frames wait for in turn (first come, first served): the share of it in use, and the
/// turns handed out and served.
struct Budget {
    used: usize,
    next: u64,
    serving: u64,
}

/// Two budgets: answers to our own requests (already bounded by what we asked for) have their
/// own, so a peer holding the other with its large frames never holds up the blocks another
/// peer sends us.
static FRAMES: [(std::sync::Mutex<Budget>, std::sync::Condvar); 2] = [
    (
        std::sync::Mutex::new(Budget {
            used: 0,
            next: 0,
            serving: 0,
        }),
        std::sync::Condvar::new(),
    ),
    (
        std::sync::Mutex::new(Budget {
            used: 0,
            next: 0,
            serving: 0,
        }),
        std::sync::Condvar::new(),
    ),
];

/// Which budget a frame uses.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Answer = 0,
    Other = 1,
}

fn budget(k: Kind) -> std::sync::MutexGuard<'static, Budget> {
    FRAMES[k as usize]
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// What a frame of `n` bytes may take in memory while it is read and decoded: its bytes, what
/// they decode into (block data, block lists), and the fixed part of each entry an index frame
/// can hold (at most [`wire::MAX_INDEX_ENTRIES`], each at least [`wire::MIN_ENTRY_BYTES`]).
fn decode_cost(n: usize) -> usize {
    let entries = (n / wire::MIN_ENTRY_BYTES).min(wire::MAX_INDEX_ENTRIES);
    2 * n + entries * (std::mem::size_of::<Entry>() + 64)
}

/// A share of one of the budgets, given back when dropped.
#[derive(Debug)]
pub struct Permit(usize, Kind);

impl Permit {
    /// Waits for the share of a frame of `n` bytes, in turn.
    fn take(n: usize, k: Kind) -> Permit {
        if n <= SMALL_FRAME {
            return Permit(0, k);
        }
        let n = decode_cost(n).min(FRAME_BUDGET);
        let mut b = budget(k);
        let turn = b.next;
        b.next += 1;
        while b.serving != turn || b.used + n > FRAME_BUDGET {
            b = FRAMES[k as usize]
                .1
                .wait(b)
                .unwrap_or_else(|p| p.into_inner());
        }
        b.serving += 1;
        b.used += n;
        FRAMES[k as usize].1.notify_all();
        Permit(n, k)
    }

    /// Whether a frame holding this share may go on arriving at `got` bytes in `took`: yes,
    /// unless another frame waits for the same budget and this one is slower than
    /// [`MIN_PACE`], or holds more than half the budget for longer than [`HOLD_MAX`].
    fn paced(&self, got: usize, took: Duration) -> bool {
        let slow = (got as f64) < took.as_secs_f64() * MIN_PACE as f64;
        let long = self.0 > FRAME_BUDGET / 2 && took >= HOLD_MAX;
        self.0 == 0 || took < PACE_GRACE || !(slow || long) || {
            let b = budget(self.1);
            b.next == b.serving
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.0 > 0 {
            budget(self.1).used -= self.0;
            FRAMES[self.1 as usize].1.notify_all();
        }
    }
}

/// Reads one frame: the length is checked against `max` before the body is allocated; with a
/// session, the frame is opened (its tag checked, then decrypted) before it is decoded.
pub fn read_frame(r: &mut impl Read, session: Option<&mut Sealer>, max: usize) -> Result<Msg> {
    let mut h = [0u8; 4];
    r.read_exact(&mut h)?;
    let n = wire::frame_len(h)?;
    if n > max {
        return Err(Error::protocol(format!(
            "frame of {n} bytes is over the {max} allowed here"
        )));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body)?;
    open_and_decode(body, session)
}

/// Opens a sealed frame (with a session: its tag checked, then decrypted), then decodes it.
pub fn open_and_decode(mut body: Vec<u8>, session: Option<&mut Sealer>) -> Result<Msg> {
    if let Some(s) = session {
        let n = s.open(&mut body)?;
        body.truncate(n);
    }
    wire::decode(body)
}

/// Reads frames off a socket. Small frames come out of one buffer; the bulk of a large one (a
/// block) is read straight into its own allocation, so block data is copied once from the
/// kernel and never again.
pub struct FrameReader<R> {
    inner: R,
    /// The socket `inner` reads, polled while a large frame arrives (none in tests).
    fd: Option<std::os::fd::RawFd>,
    pool: Pool,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl FrameReader<&TcpStream> {
    /// A reader of a connection's socket: a large frame's pace is looked at while it arrives.
    pub fn on_socket(s: &TcpStream, pool: Pool) -> FrameReader<&TcpStream> {
        let mut r = FrameReader::new(s, pool);
        r.fd = Some(s.as_raw_fd());
        r
    }
}

impl<R: Read> FrameReader<R> {
    fn new(inner: R, pool: Pool) -> Self {
        FrameReader {
            inner,
            fd: None,
            pool,
            buf: vec![0; 16 << 10],
            pos: 0,
            end: 0,
        }
    }

    /// Reads more into the buffer, after what it holds.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether bytes of the next frame are buffered already.
    pub fn buffered(&self) -> bool {
        self.end > self.pos
    }

    /// Takes `n` bytes that fit in the buffer.
    fn take_into(&mut self, body: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
        while self.end - self.pos < n {
            self.fill()?;
        }
        body.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(())
    }

    /// [`FrameReader::body_vetted`] with nothing to vet (tests).
    #[cfg(test)]
    fn body(&mut self, max: usize) -> Result<(Vec<u8>, Permit)> {
        self.body_vetted(max, None, |_, _| Ok(()))
    }

    /// The next frame's body; its length is checked against `max` before anything is
    /// allocated, and a large one is shown to `vet` (its length and first bytes, decrypted
    /// with `session`'s next key stream if sealed: a hint only, the frame is checked whole
    /// before use), then waits for its share of [`FRAME_BUDGET`] (kept until the permit is
    /// dropped).
    pub fn body_vetted(
        &mut self,
        max: usize,
        session: Option<&Sealer>,
        vet: impl FnOnce(usize, &[u8]) -> Result<()>,
    ) -> Result<(Vec<u8>, Permit)> {
        let mut h = Vec::with_capacity(4);
        self.take_into(&mut h, 4)?;
        let n = wire::frame_len([h[0], h[1], h[2], h[3]])?;
        if n > max {
            return Err(Error::protocol(format!(
                "frame of {n} bytes is over the {max} allowed here"
            )));
        }
        let mut kind = Kind::Other;
        if n > SMALL_FRAME {
            while self.end - self.pos < wire::RESPONSE_BODY_HEADER {
                self.fill()?;
            }
            let seen = &self.buf[self.pos..self.end];
            let mut copy = [0u8; wire::RESPONSE_BODY_HEADER];
            let head = match session {
                Some(s) => {
                    copy.copy_from_slice(&seen[..wire::RESPONSE_BODY_HEADER]);
                    s.peek(&mut copy);
                    &copy[..]
                }
                None => seen,
            };
            vet(n, head)?;
            if wire::response_id(head).is_some() {
                kind = Kind::Answer;
            }
        }
        let permit = Permit::take(n, kind);
        let mut body = self.pool.take(n);
        let have = (self.end - self.pos).min(n);
        self.take_into(&mut body, have)?;
        let rest = n - have;
        if rest < self.buf.len() {
            self.take_into(&mut body, rest)?;
        } else {
            self.read_paced(&mut body, n, &permit)?;
        }
        Ok((body, permit))
    }

    /// Reads the rest of a large frame straight into `body`, up to `n` bytes. The frame holds
    /// its share of the budget meanwhile: it must keep its pace ([`Permit::paced`]), and bytes
    /// must keep coming within [`READ_TIMEOUT`].
    fn read_paced(&mut self, body: &mut Vec<u8>, n: usize, permit: &Permit) -> Result<()> {
        let (start, mut last) = (Instant::now(), Instant::now());
        let mut got = body.len();
        body.resize(n, 0);
        while got < n {
            // The pace is looked at whether or not bytes came: a trickle of a byte now and then
            // must not keep the frame from being weighed.
            if self.fd.is_some() && !permit.paced(got, start.elapsed()) {
                return Err(Error::protocol(format!(
                    "a frame of {n} bytes arriving at {} B/s while others wait for memory",
                    (got as f64 / start.elapsed().as_secs_f64()) as u64
                )));
            }
            if let Some(fd) = self.fd
                && !crate::sys::watch::readable(fd, PACE_TICK)
            {
                if last.elapsed() >= READ_TIMEOUT {
                    return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
                }
                continue;
            }
            match self.inner.read(&mut body[got..]) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Ok(k) => {
                    got += k;
                    last = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Writes frames, sealing each (encrypted and authenticated) when the connection has a key.
pub struct FrameWriter<'a> {
    w: BufWriter<TcpStream>,
    seal: Option<Sealer>,
    /// The length each of our requests asks for, by id.
    lengths: &'a std::sync::Mutex<HashMap<u32, usize>>,
}

impl<'a> FrameWriter<'a> {
    /// A writer to `s`, sealing with `seal`, noting each request's length in `lengths` (the
    /// reader weighs answers against them).
    pub fn new(
        s: TcpStream,
        seal: Option<Sealer>,
        lengths: &'a std::sync::Mutex<HashMap<u32, usize>>,
    ) -> FrameWriter<'a> {
        FrameWriter {
            w: BufWriter::with_capacity(64 << 10, s),
            seal,
            lengths,
        }
    }

    /// Sends a frame; gives it back, to be reused. A request's length is noted first: its
    /// answer can only come after it is sent.
    pub fn send(&mut self, frame: Vec<u8>) -> Result<Vec<u8>> {
        if let Some((id, len)) = wire::request_of(&frame) {
            self.lengths
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, len);
        }
        let frame = match &mut self.seal {
            Some(s) => s.seal(frame)?,
            None => frame,
        };
        self.w.write_all(&frame)?;
        Ok(frame)
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.w.flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::Status;

    #[test]
    fn a_frame_keeps_its_pace_only_while_others_wait() {
        // The answers' budget, which other unit tests do not use.
        budget(Kind::Answer).used += 1 << 20;
        let p = Permit(1 << 20, Kind::Answer);
        let slow = Duration::from_secs(10);
        // Alone, a slow frame may take its time; under the grace period, any frame may.
        assert!(p.paced(1, slow));
        budget(Kind::Answer).next += 1; // another frame waits its turn
        let paced = (p.paced(1, slow), p.paced(1, PACE_GRACE / 2));
        let fast = p.paced(10 * MIN_PACE, slow);
        budget(Kind::Answer).next -= 1;
        assert_eq!(paced, (false, true));
        assert!(fast);
        // A small frame holds nothing of the budget.
        assert!(Permit(0, Kind::Other).paced(0, slow));
        std::mem::forget(p);
        budget(Kind::Answer).used -= 1 << 20;
        // (One test: the answers' budget is global.)
        frames_get_the_budget_in_turn();
    }

    fn frames_get_the_budget_in_turn() {
        // Three frames of the largest size on the answers' budget: each takes all of it, so
        // they are served one after the other, in the order they came.
        let order = std::sync::Mutex::new(Vec::new());
        let first = Permit::take(wire::MAX_FRAME, Kind::Answer);
        std::thread::scope(|s| {
            for i in 0..3 {
                let order = &order;
                s.spawn(move || {
                    // Each waits its turn behind the one before (started in order).
                    std::thread::sleep(Duration::from_millis(30 * i));
                    let p = Permit::take(wire::MAX_FRAME, Kind::Answer);
                    order.lock().unwrap().push(i);
                    std::thread::sleep(Duration::from_millis(20));
                    drop(p);
                });
            }
            std::thread::sleep(Duration::from_millis(150));
            drop(first);
        });
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    }

    #[test]
    fn a_large_answer_is_weighed_before_it_is_read() {
        let big = wire::encode(&Msg::Response(crate::proto::wire::Response {
            id: 7,
            status: Status::Ok,
            data: vec![3; 100_000],
        }));
        let mut r = FrameReader::new(&big[..], Pool::default());
        let mut seen = None;
        let got = r.body_vetted(wire::MAX_FRAME, None, |n, head| {
            seen = Some((n, wire::response_id(head)));
            Err(Error::protocol("larger than asked"))
        });
        assert!(got.is_err());
        assert_eq!(seen, Some((big.len() - 4, Some(7))));
        // Small frames are not shown (they are checked once decoded); other frames have no id.
        let ping = wire::encode(&Msg::Ping);
        let mut r = FrameReader::new(&ping[..], Pool::default());
        assert!(
            r.body_vetted(wire::MAX_FRAME, None, |_, _| unreachable!())
                .is_ok()
        );
        assert_eq!(wire::response_id(&ping[4..]), None);
    }

    #[test]
    fn what_a_frame_may_decode_into_is_bounded() {
        // Tiny entries: more than twice the frame.
        assert!(decode_cost(64 << 10) > 3 * (64 << 10));
        // A frame of the largest size costs about twice: its count of entries is bounded.
        assert!(decode_cost(wire::MAX_FRAME) < 2 * wire::MAX_FRAME + (1 << 20));
    }

    /// Hands out a byte stream a few bytes at a time, in a varying rhythm, like a socket.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.step = self.step % 7919 + 1;
            let n = buf.len().min(self.step).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn frame_reader_splits_any_rhythm_into_frames() {
        let block: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let msgs = vec![
            Msg::Ping,
            Msg::Response(crate::proto::wire::Response {
                id: 1,
                status: Status::Ok,
                data: block.clone(),
            }),
            Msg::InSync { seq: 9 },
            Msg::Response(crate::proto::wire::Response {
                id: 2,
                status: Status::Ok,
                data: block[..20_000].to_vec(),
            }),
            Msg::Response(crate::proto::wire::Response {
                id: 3,
                status: Status::Changed,
                data: Vec::new(),
            }),
        ];
        let data: Vec<u8> = msgs.iter().flat_map(wire::encode).collect();
        for step in [1, 100, 5000, 16 << 10] {
            let trickle = Trickle {
                data: data.clone(),
                pos: 0,
                step,
            };
            let mut r = FrameReader::new(trickle, Pool::default());
            for m in &msgs {
                let (body, _) = r.body(wire::MAX_FRAME).unwrap();
                assert_eq!(&open_and_decode(body, None).unwrap(), m);
            }
            let end = r.body(wire::MAX_FRAME).unwrap_err();
            assert_eq!(end.io_kind(), Some(std::io::ErrorKind::UnexpectedEof));
        }
        // A length over the limit is refused before anything is read or allocated.
        let mut r = FrameReader::new(&[0u8, 0x10, 0, 0, 7][..], Pool::default());
        assert!(r.body(4096).is_err());
        // A frame cut short is an error, not a short frame.
        let cut = wire::encode(&msgs[1]);
        let mut r = FrameReader::new(&cut[..cut.len() - 1], Pool::default());
        assert!(r.body(wire::MAX_FRAME).is_err());
    }
}
