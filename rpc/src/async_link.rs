//! The framed duplex of `transport.rs`, for tokio: frames out from any
//! number of tasks ([`AsyncTx`]), frames in on one task ([`AsyncRx`]).
//!
//! The frame format, the chunking through the rings and the checks of what
//! the peer sends are the blocking link's (`transport.rs`); only the waiting
//! differs. On the rings a task polls for a short while, yielding to the
//! runtime between polls, then parks on its doorbell (`doorbell.rs`); over
//! a socket it awaits the socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmring::spsc::{Consumer, Producer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::doorbell::{AsyncBell, watch_socket};
use crate::error::{Error, Result};
use crate::frame::{self, FLAG_MORE, Frame, Header, Joiner, Kind};
use crate::ring_frames::{fill_chunk, ring_error, take};
use crate::socket::{Stream, stream_error};
use crate::transport::{COALESCE, Link, Path, TransportKind};

/// How the async side waits on the rings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsyncWait {
    /// How long to poll an empty ring (yielding between polls) before
    /// parking on the doorbell.
    pub(crate) spin: Duration,
    /// Longest park between liveness checks.
    pub(crate) check: Duration,
}

/// What a connection is made of once the async side takes it over.
pub(crate) struct AsyncLink {
    pub(crate) tx: AsyncTx,
    pub(crate) rx: AsyncRx,
    /// The task holding the socket beside the rings (shm only): abort it to
    /// close the socket.
    pub(crate) watcher: Option<tokio::task::JoinHandle<()>>,
    pub(crate) kind: TransportKind,
}

/// Take a connected link over for tokio (on the current runtime).
///
/// # Errors
/// [`Error::Io`] if the reactor cannot register the socket or the doorbell;
/// [`Error::Protocol`] for a shared-memory link without our doorbell (the
/// handshake always passes it when we asked for it).
pub(crate) fn into_async(link: Link, wait: AsyncWait) -> Result<AsyncLink> {
    let (path, kind, peer, max_frame) = link.into_parts();
    let reactor = |e| Error::io(format!("registering {peer} with the tokio reactor"), e);
    let (tx, rx, watcher) = match path {
        Path::Shm(rings) => {
            let rings = *rings;
            let bell = rings.bell.ok_or_else(|| Error::protocol(&peer, "shared memory without our doorbell"))?;
            let bell = Arc::new(AsyncBell::new(bell).map_err(reactor)?);
            let watcher = watch_socket(rings.socket, bell.clone()).map_err(reactor)?;
            let side = Side { bell, wait };
            let rx = ShmRx {
                rx: rings.rx,
                side: side.clone(),
                joiner: Joiner::new(max_frame),
                peer: peer.clone(),
                max: max_frame,
            };
            (TxPath::Shm(rings.tx, side), RxPath::Shm(Box::new(rx)), Some(watcher))
        }
        Path::Stream(Stream::Unix(s)) => {
            s.set_nonblocking(true).map_err(reactor)?;
            let (r, w) = tokio::net::UnixStream::from_std(s).map_err(reactor)?.into_split();
            (TxPath::Stream(Box::new(w)), RxPath::Stream(Box::new(r)), None)
        }
        Path::Stream(Stream::Tcp(s)) => {
            s.set_nonblocking(true).map_err(reactor)?;
            let (r, w) = tokio::net::TcpStream::from_std(s).map_err(reactor)?.into_split();
            (TxPath::Stream(Box::new(w)), RxPath::Stream(Box::new(r)), None)
        }
    };
    Ok(AsyncLink {
        tx: AsyncTx {
            path: tokio::sync::Mutex::new(tx),
            peer: peer.clone(),
            max_frame,
            broken: AtomicBool::new(false),
        },
        rx: AsyncRx { path: rx, joiner: Joiner::new(max_frame), peer, max_frame },
        watcher,
        kind,
    })
}

/// What both halves of a ring link share: our doorbell, the socket
/// watcher's verdict, how to wait.
#[derive(Clone)]
struct Side {
    bell: Arc<AsyncBell>,
    wait: AsyncWait,
}

// One per connection, never moved after set-up: the ring end stays inline.
#[allow(clippy::large_enum_variant)]
enum TxPath {
    Shm(Producer, Side),
    Stream(Box<dyn AsyncWrite + Unpin + Send>),
}

/// Frames out. Shared by every task of a connection: one frame at a time
/// (a frame's chunks are never interleaved with another's).
pub(crate) struct AsyncTx {
    path: tokio::sync::Mutex<TxPath>,
    peer: String,
    max_frame: u64,
    /// A frame was cut short: out of step for good.
    broken: AtomicBool,
}

impl AsyncTx {
    /// Largest frame payload either side may send, in bytes.
    pub(crate) fn max_frame(&self) -> u64 {
        self.max_frame
    }

    /// Whether a frame was cut short (the link is out of step for good).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Send one frame, waiting for room as long as it takes (callers bound
    /// it with a timeout). Dropping the future before any of the frame went
    /// out leaves the link as it was; dropping it once part of the frame is
    /// out (a first chunk through the ring, or some bytes on a socket)
    /// breaks the link.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a payload over the maximum frame
    /// size; ring or socket errors; [`Error::Closed`] if the peer is gone.
    pub(crate) async fn send(&self, id: u64, kind: Kind, flags: u8, payload: &[u8]) -> Result<()> {
        if payload.len() as u64 > self.max_frame {
            return Err(Error::InvalidArgument(format!(
                "a frame of {} bytes exceeds the connection's maximum of {} bytes",
                payload.len(),
                self.max_frame
            )));
        }
        let mut path = self.path.lock().await;
        if self.is_broken() {
            return Err(Error::protocol(&self.peer, "the connection broke mid-frame earlier"));
        }
        // Relaxed: read and written under the path's lock.
        let cut_short = |partly_out: bool| self.broken.store(partly_out, Ordering::Relaxed);
        match &mut *path {
            TxPath::Shm(tx, side) => {
                let room = tx.max_record_len() - frame::HEADER_LEN;
                if payload.is_empty() {
                    put(tx, side, &Header { id, len: 0, kind, flags }, &[], &self.peer).await?;
                }
                let mut chunks = payload.chunks(room.max(1)).peekable();
                let mut first = true;
                while let Some(chunk) = chunks.next() {
                    let more = if chunks.peek().is_some() { FLAG_MORE } else { 0 };
                    let h = Header { id, len: chunk.len() as u32, kind, flags: flags | more };
                    // Once a chunk is in, the rest must follow it.
                    cut_short(!first);
                    put(tx, side, &h, chunk, &self.peer).await?;
                    first = false;
                }
            }
            TxPath::Stream(w) => {
                let h = Header { id, len: payload.len() as u32, kind, flags }.encode();
                let mut buf;
                let parts: [&[u8]; 2] = if payload.len() <= COALESCE {
                    buf = Vec::with_capacity(frame::HEADER_LEN + payload.len());
                    buf.extend_from_slice(&h);
                    buf.extend_from_slice(payload);
                    [&buf, &[]]
                } else {
                    [&h, payload]
                };
                let mut out = 0;
                for part in parts {
                    let mut at = 0;
                    while at < part.len() {
                        cut_short(out > 0);
                        let n = w.write(&part[at..]).await.map_err(|e| stream_error(&self.peer, "sending to", e))?;
                        if n == 0 {
                            return Err(Error::Closed(self.peer.clone()));
                        }
                        (at, out) = (at + n, out + n);
                    }
                }
            }
        }
        cut_short(false);
        Ok(())
    }
}

/// Put one chunk into the ring, parking on the doorbell while it is full.
async fn put(tx: &mut Producer, side: &Side, h: &Header, chunk: &[u8], peer: &str) -> Result<()> {
    loop {
        if try_put(tx, h, chunk, peer)? {
            return Ok(());
        }
        let mark = side.bell.mark();
        let reg = tx.register_waiter();
        if try_put(tx, h, chunk, peer)? {
            return Ok(());
        }
        if side.bell.is_closed() {
            return Err(Error::Closed(peer.to_owned()));
        }
        let rung = side.bell.sleep(mark, side.wait.check).await;
        drop(reg);
        if !rung {
            tx.peer_arrived().map_err(|e| ring_error(peer, e))?;
        }
    }
}

/// Put one chunk into the ring if there is room; `false` if it is full.
fn try_put(tx: &mut Producer, h: &Header, chunk: &[u8], peer: &str) -> Result<bool> {
    match tx.try_grant(frame::HEADER_LEN + chunk.len()) {
        Ok(g) => {
            fill_chunk(g, h, chunk);
            Ok(true)
        }
        Err(shmring::Error::WouldBlock { .. }) => Ok(false),
        Err(e) => Err(ring_error(peer, e)),
    }
}

enum RxPath {
    Shm(Box<ShmRx>),
    Stream(Box<dyn AsyncRead + Unpin + Send>),
}

/// Frames in, on one task.
pub(crate) struct AsyncRx {
    path: RxPath,
    joiner: Joiner,
    peer: String,
    max_frame: u64,
}

impl AsyncRx {
    /// The ring end, if this is a shared-memory link (for a client whose
    /// waiting callers poll the ring themselves); else the link as it was.
    pub(crate) fn into_shm(self) -> std::result::Result<Box<ShmRx>, AsyncRx> {
        match self.path {
            RxPath::Shm(rx) => Ok(rx),
            path => Err(AsyncRx { path, ..self }),
        }
    }

    /// The next whole frame; `Ok(None)` when the peer closed cleanly,
    /// between frames.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a frame that does not decode, or a
    /// connection closed mid-frame; ring errors (`PeerDied`, `PeerAborted`,
    /// `Corrupted`); [`Error::Closed`] if the peer's socket closed while the
    /// rings did not and its death could not be confirmed.
    pub(crate) async fn recv(&mut self) -> Result<Option<Frame>> {
        match &mut self.path {
            RxPath::Shm(rx) => rx.recv().await,
            RxPath::Stream(r) => loop {
                let Some((h, payload)) = stream_chunk(r, self.max_frame, &self.peer).await? else {
                    if self.joiner.is_open() {
                        return Err(Error::protocol(
                            &self.peer,
                            "the connection closed in the middle of a chunked frame",
                        ));
                    }
                    return Ok(None);
                };
                if let Some(frame) = self.joiner.push_vec(h, payload).map_err(|e| Error::frame(&self.peer, e))? {
                    return Ok(Some(frame));
                }
            },
        }
    }
}

/// Frames in from a ring. [`ShmRx::try_frame`] never waits, so a caller
/// waiting for its reply can poll the ring itself; [`ShmRx::recv`] polls,
/// then parks on the doorbell.
pub(crate) struct ShmRx {
    rx: Consumer,
    side: Side,
    joiner: Joiner,
    peer: String,
    max: u64,
}

impl ShmRx {
    /// A frame if one is complete in the ring now: `Some(Some(frame))`;
    /// `Some(None)` at a clean end of stream; `None` if nothing (whole) is
    /// there yet. Chunks of a frame not complete yet stay joined here.
    ///
    /// # Errors
    /// As [`AsyncRx::recv`].
    pub(crate) fn try_frame(&mut self) -> Result<Option<Option<Frame>>> {
        loop {
            let (h, payload) = match self.rx.try_recv() {
                Ok(Some(rec)) => take(&rec, self.max, &self.peer)?,
                Ok(None) if self.joiner.is_open() => {
                    return Err(Error::protocol(&self.peer, "the connection closed in the middle of a chunked frame"));
                }
                Ok(None) => return Ok(Some(None)),
                Err(shmring::Error::WouldBlock { .. }) => return Ok(None),
                Err(e) => return Err(ring_error(&self.peer, e)),
            };
            if let Some(frame) = self.joiner.push_vec(h, payload).map_err(|e| Error::frame(&self.peer, e))? {
                return Ok(Some(Some(frame)));
            }
        }
    }

    /// Register as parked on the ring (see `doorbell.rs`); re-check with
    /// [`ShmRx::try_frame`] before sleeping.
    pub(crate) fn register(&self) -> shmring::wait::Registration {
        self.rx.register_waiter()
    }

    /// Our doorbell.
    pub(crate) fn bell(&self) -> Arc<AsyncBell> {
        self.side.bell.clone()
    }

    /// How to wait.
    pub(crate) fn wait(&self) -> AsyncWait {
        self.side.wait
    }

    /// Whether the peer's socket closed.
    pub(crate) fn socket_closed(&self) -> bool {
        self.side.bell.is_closed()
    }

    /// The ring's liveness check: the peer died, aborted, or scribbled.
    ///
    /// # Errors
    /// `PeerDied`, `Corrupted`, ...
    pub(crate) fn check_peer(&mut self) -> Result<()> {
        self.rx.peer_arrived().map(drop).map_err(|e| ring_error(&self.peer, e))
    }

    /// Poll for `wait.spin` (yielding to the runtime between polls), then
    /// park on the doorbell, checking the peer at every check interval and
    /// as soon as its socket closes.
    ///
    /// # Errors
    /// As [`AsyncRx::recv`].
    pub(crate) async fn recv(&mut self) -> Result<Option<Frame>> {
        let spin_until = Instant::now().checked_add(self.side.wait.spin);
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            if spin_until.is_some_and(|u| Instant::now() < u) {
                tokio::task::yield_now().await;
                continue;
            }
            let mark = self.side.bell.mark();
            let reg = self.register();
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            if self.socket_closed() {
                drop(reg);
                return self.gone().await;
            }
            let rung = self.side.bell.sleep(mark, self.side.wait.check).await;
            drop(reg);
            if !rung {
                self.check_peer()?;
            }
        }
    }

    /// What a peer whose socket closed while its ring was open left: the
    /// frames it committed before it went, its close, or its death as the
    /// ring's liveness check confirms it (the socket closes a moment before
    /// the process is gone); at worst [`Error::Closed`].
    ///
    /// # Errors
    /// As [`AsyncRx::recv`].
    pub(crate) async fn gone(&mut self) -> Result<Option<Frame>> {
        for _ in 0..GONE_TRIES {
            if let Some(f) = self.gone_step()? {
                return Ok(f);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err(self.gone_for_good())
    }

    /// One look at a peer whose socket closed: a frame or the end, an
    /// error if its death is confirmed, `None` to look again a little later.
    ///
    /// # Errors
    /// As [`AsyncRx::recv`].
    pub(crate) fn gone_step(&mut self) -> Result<Option<Option<Frame>>> {
        if let Some(f) = self.try_frame()? {
            return Ok(Some(f));
        }
        self.check_peer()?;
        Ok(None)
    }

    /// The error once [`GONE_TRIES`] looks found the peer neither closed
    /// nor dead.
    pub(crate) fn gone_for_good(&self) -> Error {
        Error::Closed(format!("{} (its socket closed, its rings did not)", self.peer))
    }
}

/// Looks, a millisecond apart, at a peer whose socket closed before its
/// death shows.
pub(crate) const GONE_TRIES: u32 = 20;

/// The next frame from a socket.
async fn stream_chunk(
    r: &mut (dyn AsyncRead + Unpin + Send),
    max: u64,
    peer: &str,
) -> Result<Option<(Header, Vec<u8>)>> {
    let mut hb = [0u8; frame::HEADER_LEN];
    let mut got = 0;
    while got < hb.len() {
        match r.read(&mut hb[got..]).await {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::protocol(peer, "the connection closed in the middle of a frame")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && got == 0 => return Ok(None),
            Err(e) => return Err(stream_error(peer, "receiving from", e)),
        }
    }
    let h = Header::decode(&hb, max).map_err(|e| Error::frame(peer, e))?;
    let mut payload = vec![0u8; h.len as usize];
    r.read_exact(&mut payload).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::protocol(peer, "the connection closed in the middle of a frame"),
        _ => stream_error(peer, "receiving from", e),
    })?;
    Ok(Some((h, payload)))
}
