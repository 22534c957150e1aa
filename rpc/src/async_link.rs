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

use crate::doorbell::{AsyncBell, Gone, watch_socket};
use crate::error::{Error, Result};
use crate::frame::{self, FLAG_MORE, Frame, Header, Joiner, Kind};
use crate::transport::{COALESCE, Link, Path, Stream, TransportKind, fill_chunk, ring_error, stream_error, take};

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
            let gone = Arc::new(Gone::default());
            let watcher = watch_socket(rings.socket, bell.clone(), gone.clone()).map_err(reactor)?;
            let side = Side { bell, gone, wait };
            (TxPath::Shm(rings.tx, side.clone()), RxPath::Shm(rings.rx, side), Some(watcher))
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
    gone: Arc<Gone>,
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

    /// Send one frame, waiting for room as long as it takes (callers bound
    /// it with a timeout; dropping the future mid-frame breaks the link).
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
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::protocol(&self.peer, "the connection broke mid-frame earlier"));
        }
        // Until the frame is out whole, a cancelled or failed send leaves
        // the link out of step.
        self.broken.store(true, Ordering::Relaxed);
        match &mut *path {
            TxPath::Shm(tx, side) => {
                let room = tx.max_record_len() - frame::HEADER_LEN;
                let mut chunks = payload.chunks(room.max(1)).peekable();
                if payload.is_empty() {
                    put(tx, side, &Header { id, len: 0, kind, flags }, &[], &self.peer).await?;
                }
                while let Some(chunk) = chunks.next() {
                    let more = if chunks.peek().is_some() { FLAG_MORE } else { 0 };
                    let h = Header { id, len: chunk.len() as u32, kind, flags: flags | more };
                    put(tx, side, &h, chunk, &self.peer).await?;
                }
            }
            TxPath::Stream(w) => {
                let h = Header { id, len: payload.len() as u32, kind, flags }.encode();
                let r = if payload.len() <= COALESCE {
                    let mut buf = Vec::with_capacity(frame::HEADER_LEN + payload.len());
                    buf.extend_from_slice(&h);
                    buf.extend_from_slice(payload);
                    w.write_all(&buf).await
                } else {
                    match w.write_all(&h).await {
                        Ok(()) => w.write_all(payload).await,
                        Err(e) => Err(e),
                    }
                };
                r.map_err(|e| stream_error(&self.peer, "sending to", e))?;
            }
        }
        self.broken.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// Put one chunk into the ring, parking on the doorbell while it is full.
async fn put(tx: &mut Producer, side: &Side, h: &Header, chunk: &[u8], peer: &str) -> Result<()> {
    let len = frame::HEADER_LEN + chunk.len();
    loop {
        match tx.try_grant(len) {
            Ok(g) => {
                fill_chunk(g, h, chunk);
                return Ok(());
            }
            Err(shmring::Error::WouldBlock { .. }) => {}
            Err(e) => return Err(ring_error(peer, e)),
        }
        let reg = tx.register_waiter();
        match tx.try_grant(len) {
            Ok(g) => {
                fill_chunk(g, h, chunk);
                return Ok(());
            }
            Err(shmring::Error::WouldBlock { .. }) => {}
            Err(e) => return Err(ring_error(peer, e)),
        }
        if side.gone.get() {
            return Err(Error::Closed(peer.to_owned()));
        }
        let rung = side.bell.sleep(side.wait.check).await;
        drop(reg);
        if !rung {
            tx.peer_arrived().map_err(|e| ring_error(peer, e))?;
        }
    }
}

// As `TxPath`.
#[allow(clippy::large_enum_variant)]
enum RxPath {
    Shm(Consumer, Side),
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
    /// The next whole frame; `Ok(None)` when the peer closed cleanly,
    /// between frames.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a frame that does not decode, or a
    /// connection closed mid-frame; ring errors (`PeerDied`, `PeerAborted`,
    /// `Corrupted`); [`Error::Closed`] if the peer's socket closed while the
    /// rings did not and its death could not be confirmed.
    pub(crate) async fn recv(&mut self) -> Result<Option<Frame>> {
        loop {
            let chunk = match &mut self.path {
                RxPath::Shm(rx, side) => next_chunk(rx, side, self.max_frame, &self.peer).await?,
                RxPath::Stream(r) => stream_chunk(r, self.max_frame, &self.peer).await?,
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

/// The next chunk from the ring: poll (yielding) for `wait.spin`, then park
/// on the doorbell, checking the peer at every check interval and as soon
/// as its socket closes.
async fn next_chunk(rx: &mut Consumer, side: &Side, max: u64, peer: &str) -> Result<Option<(Header, Vec<u8>)>> {
    let mut spin_until = None;
    loop {
        match rx.try_recv() {
            Ok(Some(rec)) => return take(&rec, max, peer).map(Some),
            Ok(None) => return Ok(None),
            Err(shmring::Error::WouldBlock { .. }) => {}
            Err(e) => return Err(ring_error(peer, e)),
        }
        let now = Instant::now();
        if now < *spin_until.get_or_insert(now + side.wait.spin) {
            tokio::task::yield_now().await;
            continue;
        }
        let reg = rx.register_waiter();
        match rx.try_recv() {
            Ok(Some(rec)) => return take(&rec, max, peer).map(Some),
            Ok(None) => return Ok(None),
            Err(shmring::Error::WouldBlock { .. }) => {}
            Err(e) => return Err(ring_error(peer, e)),
        }
        if side.gone.get() {
            drop(reg);
            return gone(rx, max, peer).await;
        }
        let rung = side.bell.sleep(side.wait.check).await;
        drop(reg);
        if !rung {
            rx.peer_arrived().map_err(|e| ring_error(peer, e))?;
        }
    }
}

/// The next chunk of a peer whose socket closed while its ring was empty
/// and open: records it committed before it went, its close, or its death
/// as the ring's liveness check confirms it (the socket closes a moment
/// before the process is gone); at worst [`Error::Closed`].
async fn gone(rx: &mut Consumer, max: u64, peer: &str) -> Result<Option<(Header, Vec<u8>)>> {
    for _ in 0..20 {
        match rx.try_recv() {
            Ok(Some(rec)) => return take(&rec, max, peer).map(Some),
            Ok(None) => return Ok(None),
            Err(shmring::Error::WouldBlock { .. }) => {}
            Err(e) => return Err(ring_error(peer, e)),
        }
        rx.peer_arrived().map_err(|e| ring_error(peer, e))?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(Error::Closed(format!("{peer} (its socket closed, its rings did not)")))
}

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
