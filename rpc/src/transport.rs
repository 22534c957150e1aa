//! One framed duplex over shared memory, a UNIX socket or TCP.
//!
//! - **Shm**: two SPSC rings in sealed memfds, one each way. A frame goes as
//!   one ring record (header, then payload) or, when larger than a record,
//!   as several chunks in order ([`frame::FLAG_MORE`]). The receiver copies
//!   each chunk out of the ring before it looks at it: the peer is
//!   untrusted. The UNIX socket of the handshake stays open beside the
//!   rings for the life of the connection.
//! - **Unix** and **Tcp**: the 16-byte header, then the payload, on the
//!   socket.
//!
//! Which one a connection uses is decided in the handshake
//! (`handshake.rs`); everything above this module sees only frames.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use shmring::spsc::{Consumer, Producer};
use shmring::wait::Doorbell;

use crate::error::{Error, Result};
use crate::frame::{self, FLAG_MORE, Frame, Header, Joiner, Kind};
use crate::ring_frames::{Out, RingOut, ring_error, ring_recv, stage_next, take};
use crate::socket::{Stream, stream_error, stream_recv};

/// The transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// Two shared-memory rings (a `unix:` address; the default there).
    Shm,
    /// Frames over the UNIX socket itself (a `unix:` address; the fallback).
    Unix,
    /// Frames over TCP (a `tcp:` address).
    Tcp,
}

impl TransportKind {
    /// The bit of this transport in the handshake's bitmask.
    pub(crate) fn bit(self) -> u16 {
        match self {
            TransportKind::Shm => 1,
            TransportKind::Unix => 2,
            TransportKind::Tcp => 4,
        }
    }

    /// The transport of a single handshake bit.
    pub(crate) fn from_bit(bit: u16) -> Option<TransportKind> {
        [TransportKind::Shm, TransportKind::Unix, TransportKind::Tcp].into_iter().find(|t| t.bit() == bit)
    }

    /// Lower-case name: `shm`, `unix` or `tcp` (as `SHMRING_RPC_TRANSPORT` takes it).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Shm => "shm",
            TransportKind::Unix => "unix",
            TransportKind::Tcp => "tcp",
        }
    }

    /// Parse a name as [`TransportKind::name`] gives it.
    pub fn from_name(s: &str) -> Option<TransportKind> {
        [TransportKind::Shm, TransportKind::Unix, TransportKind::Tcp].into_iter().find(|t| t.name() == s)
    }
}

/// The two rings of a shared-memory connection.
pub(crate) struct Rings {
    pub(crate) tx: Producer,
    pub(crate) rx: Consumer,
    /// The handshake's socket, kept open for the life of the connection:
    /// its end of file is the peer's death.
    pub(crate) socket: UnixStream,
    /// Our doorbell, if we wait on one (async); the peer rings it.
    pub(crate) bell: Option<Doorbell>,
    /// Polls of the ring before a blocking receive reads the clock (see
    /// [`POLL_ROUNDS`]).
    pub(crate) poll: u32,
}

/// Most polls of an empty ring a blocking receive makes before it reads the
/// clock and waits by its policy: a reply that comes back within them (a
/// fraction of a microsecond to a few) costs no clock read, which on a VM is
/// a good part of a round trip. Fewer if the policy spins fewer rounds.
pub(crate) const POLL_ROUNDS: u32 = 256;

impl Rings {
    /// How many times to poll an empty ring before waiting under `policy`.
    pub(crate) fn polls_for(policy: &shmring::WaitPolicy) -> u32 {
        policy.spin_rounds().min(POLL_ROUNDS)
    }
}

/// How the frames move.
pub(crate) enum Path {
    Shm(Box<Rings>),
    Stream(Stream),
}

/// A framed duplex: frames out, frames in.
pub(crate) struct Link {
    path: Path,
    kind: TransportKind,
    /// The peer, for error messages.
    peer: String,
    /// Largest frame payload either side sends, in bytes.
    max_frame: u64,
    joiner: Joiner,
    /// A read or a chunked send failed mid-frame: out of step for good.
    broken: bool,
    /// Ring records staged, not yet published ([`Link::set_batch`]).
    staged: u32,
    /// Publish at the latest with this many records staged; 0 or 1
    /// publishes every record at once.
    batch: u32,
}

/// Payloads up to this size go out with their header in one write.
pub(crate) const COALESCE: usize = 64 << 10;

impl Link {
    /// A link over two rings; their socket stays open beside them.
    pub(crate) fn shm(rings: Rings, peer: String, max_frame: u64) -> Link {
        Link::new(Path::Shm(Box::new(rings)), TransportKind::Shm, peer, max_frame)
    }

    /// What the link is made of, for the async side to take over: the path,
    /// the transport, the peer and the largest frame.
    pub(crate) fn into_parts(self) -> (Path, TransportKind, String, u64) {
        (self.path, self.kind, self.peer, self.max_frame)
    }

    /// A link over a socket.
    pub(crate) fn stream(stream: Stream, peer: String, max_frame: u64) -> Link {
        let kind = match stream {
            Stream::Unix(_) => TransportKind::Unix,
            Stream::Tcp(_) => TransportKind::Tcp,
        };
        Link::new(Path::Stream(stream), kind, peer, max_frame)
    }

    pub(crate) fn new(path: Path, kind: TransportKind, peer: String, max_frame: u64) -> Link {
        Link { path, kind, peer, max_frame, joiner: Joiner::new(max_frame), broken: false, staged: 0, batch: 0 }
    }

    /// Batch what goes through the ring: stage up to `records` records
    /// before publishing them together ([`Link::flush`] publishes the rest).
    /// One publish for many records saves the consumer a cache-line
    /// transfer per record when many frames go out back to back (a server
    /// answering pipelined calls). 0 or 1 publishes each record at once.
    /// The caller must [`Link::flush`] before it waits for the peer (a
    /// receive that has to wait flushes by itself only in
    /// [`Link::try_recv`]).
    pub(crate) fn set_batch(&mut self, records: u32) {
        self.batch = records;
    }

    /// Publish what is staged.
    pub(crate) fn flush(&mut self) {
        if let Path::Shm(rings) = &mut self.path
            && self.staged > 0
        {
            rings.tx.flush();
            self.staged = 0;
        }
    }

    /// The next whole frame if its first chunk is already in the ring,
    /// without waiting for one that has not started to arrive (the rest of a
    /// chunked frame is waited for). `Some(Some(frame))`, `Some(None)` at a
    /// clean end of stream, `None` if nothing is there; over a socket always
    /// `None`.
    ///
    /// # Errors
    /// As [`Link::recv`].
    pub(crate) fn try_recv(&mut self, deadline: Option<Instant>) -> Result<Option<Option<Frame>>> {
        let Path::Shm(rings) = &mut self.path else { return Ok(None) };
        if self.broken || self.joiner.is_open() {
            self.flush();
            return self.recv(deadline).map(Some);
        }
        let (h, payload) = match rings.rx.try_recv() {
            Ok(Some(rec)) => take(&rec, self.max_frame, &self.peer)?,
            Ok(None) => return Ok(Some(None)),
            Err(shmring::Error::WouldBlock { .. }) => return Ok(None),
            Err(e) => return Err(ring_error(&self.peer, e)),
        };
        match self.joiner.push_vec(h, payload).map_err(|e| Error::frame(&self.peer, e))? {
            Some(f) => Ok(Some(Some(f))),
            // The first chunk of a larger frame: the rest follows (what we
            // staged goes out first: the peer may be waiting for it).
            None => {
                self.flush();
                self.recv(deadline).map(Some)
            }
        }
    }

    /// Receive the next frame without copying a request that came whole in
    /// one ring record: `serve` gets its id and payload where they lie in
    /// the ring (a client can still write there: `serve` must treat the
    /// bytes as untrusted even after it checked them), and the way back; the
    /// record is released after `serve` returns, and `Ok(Some(None))` says it
    /// was served. Anything else comes back copied, as [`Link::recv`] gives
    /// it; `Ok(None)` at a clean end of stream.
    ///
    /// # Errors
    /// As [`Link::recv`], and what `serve` returns.
    pub(crate) fn recv_borrowing(
        &mut self,
        serve: impl FnOnce(u64, &[u8], &mut RingOut<'_>) -> Result<()>,
    ) -> Result<Option<Option<Frame>>> {
        let Path::Shm(rings) = &mut self.path else { return self.recv(None).map(|f| f.map(Some)) };
        if self.broken || self.joiner.is_open() {
            return self.recv(None).map(|f| f.map(Some));
        }
        let rings = &mut **rings;
        let (h, payload) = {
            let rec = match rings.rx.recv() {
                Ok(Some(rec)) => rec,
                Ok(None) => return Ok(None),
                Err(e) => return Err(ring_error(&self.peer, e)),
            };
            let mut hb = [0u8; frame::HEADER_LEN];
            let Some(head) = rec.get(..frame::HEADER_LEN) else {
                return Err(Error::protocol(
                    &self.peer,
                    format!("a ring record of {} bytes, shorter than a frame header", rec.len()),
                ));
            };
            hb.copy_from_slice(head);
            let h = Header::decode(&hb, self.max_frame).map_err(|e| Error::frame(&self.peer, e))?;
            let body = &rec[frame::HEADER_LEN..];
            if h.kind == Kind::Request && h.flags & FLAG_MORE == 0 && h.len as usize == body.len() {
                let mut out = RingOut {
                    tx: &mut rings.tx,
                    peer: &self.peer,
                    max_frame: self.max_frame,
                    broken: &mut self.broken,
                };
                serve(h.id, body, &mut out)?;
                return Ok(Some(None));
            }
            take(&rec, self.max_frame, &self.peer)?
        };
        match self.joiner.push_vec(h, payload).map_err(|e| Error::frame(&self.peer, e))? {
            Some(f) => Ok(Some(Some(f))),
            None => self.recv(None).map(|f| f.map(Some)),
        }
    }

    /// Bytes of frames one side may have in flight towards the other and
    /// still be sure its sends do not wait: a quarter of the ring (records
    /// and their padding fit), or 64 KiB of socket buffer.
    pub(crate) fn in_flight_cap(&self) -> usize {
        match &self.path {
            Path::Shm(rings) => (rings.tx.capacity() / 4) as usize,
            Path::Stream(_) => 64 << 10,
        }
    }

    pub(crate) fn kind(&self) -> TransportKind {
        self.kind
    }

    pub(crate) fn peer(&self) -> &str {
        &self.peer
    }

    /// Largest frame payload either side may send, in bytes.
    pub(crate) fn max_frame(&self) -> u64 {
        self.max_frame
    }

    /// Send one frame, waiting (until `deadline`, if any) for room.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a payload over the maximum frame size;
    /// [`Error::Timeout`]; ring or socket errors.
    pub(crate) fn send(
        &mut self,
        id: u64,
        kind: Kind,
        flags: u8,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        if self.broken {
            return Err(Error::protocol(&self.peer, "the connection broke mid-frame earlier"));
        }
        if payload.len() as u64 > self.max_frame {
            return Err(Error::InvalidArgument(format!(
                "a frame of {} bytes exceeds the connection's maximum of {} bytes",
                payload.len(),
                self.max_frame
            )));
        }
        let peer = &self.peer;
        let (staged, batch) = (&mut self.staged, self.batch);
        match &mut self.path {
            Path::Shm(rings) => {
                let mut out = RingOut { tx: &mut rings.tx, peer, max_frame: self.max_frame, broken: &mut self.broken };
                out.frame(id, kind, flags, payload, deadline, staged, batch)
            }
            Path::Stream(s) => {
                let h = Header { id, len: payload.len() as u32, kind, flags }.encode();
                let r = if payload.len() <= COALESCE {
                    let mut buf = Vec::with_capacity(frame::HEADER_LEN + payload.len());
                    buf.extend_from_slice(&h);
                    buf.extend_from_slice(payload);
                    s.write_all(&buf)
                } else {
                    s.write_all(&h).and_then(|()| s.write_all(payload))
                };
                r.map_err(|e| stream_error(peer, "sending to", e))
            }
        }
    }

    /// Send one frame of `len` payload bytes written by `fill`: on shared
    /// memory straight into the ring when it fits in one record (no copy),
    /// else into a buffer that is then sent as [`Link::send`] does.
    ///
    /// # Errors
    /// As [`Link::send`].
    pub(crate) fn send_with(
        &mut self,
        id: u64,
        kind: Kind,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        deadline: Option<Instant>,
    ) -> Result<()> {
        if let Path::Shm(rings) = &mut self.path
            && !self.broken
            && frame::HEADER_LEN + len <= rings.tx.max_record_len()
        {
            let stage = stage_next(&mut self.staged, self.batch);
            let mut out =
                RingOut { tx: &mut rings.tx, peer: &self.peer, max_frame: self.max_frame, broken: &mut self.broken };
            return out.in_place(id, kind, len, fill, deadline, stage);
        }
        let mut buf = vec![0u8; len];
        fill(&mut buf);
        self.send(id, kind, 0, &buf, deadline)
    }

    /// Receive the next whole frame, waiting until `deadline` (without one,
    /// as long as it takes). `Ok(None)`: the peer closed the connection
    /// cleanly, between frames.
    ///
    /// # Errors
    /// [`Error::Timeout`] if nothing arrived in time (the connection stays
    /// usable); [`Error::Protocol`] for a frame that does not decode, or a
    /// connection closed or stalled mid-frame; ring errors (the peer died,
    /// aborted, or wrote garbage).
    pub(crate) fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<Frame>> {
        if self.broken {
            return Err(Error::protocol(&self.peer, "the connection broke mid-frame earlier"));
        }
        loop {
            let max = self.max_frame;
            let chunk = match &mut self.path {
                Path::Shm(rings) => ring_recv(&mut rings.rx, rings.poll, deadline, max, &self.peer)?,
                Path::Stream(s) => {
                    let r = stream_recv(s, deadline, max, &self.peer);
                    if matches!(r, Err(Error::Protocol { .. })) {
                        self.broken = true;
                    }
                    r?
                }
            };
            let Some((h, payload)) = chunk else {
                if self.joiner.is_open() {
                    return Err(Error::protocol(&self.peer, "the connection closed in the middle of a chunked frame"));
                }
                return Ok(None);
            };
            if let Some(frame) = self.joiner.push_vec(h, payload).map_err(|e| Error::frame(&self.peer, e))? {
                return Ok(Some(frame));
            }
        }
    }
}

impl Out for Link {
    fn max_frame(&self) -> u64 {
        self.max_frame
    }
    fn send_with(&mut self, id: u64, kind: Kind, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<()> {
        Link::send_with(self, id, kind, len, fill, None)
    }
}
