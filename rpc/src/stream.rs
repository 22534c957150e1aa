//! [`ShmStream`]: a tokio byte stream (`AsyncRead + AsyncWrite`) over a
//! ring pair, so that any byte-stream protocol (a length-delimited codec,
//! tarpc's serde transport, HTTP) can run over shared memory; and
//! [`ShmListener`], which accepts them.
//!
//! The connection is made as an RPC connection is (`handshake.rs`: the
//! UNIX socket, `SO_PEERCRED`, sealed memfds, doorbells, the fallback to the
//! socket itself, or TCP), with the service "byte stream", so that an RPC
//! server and a stream listener refuse each other's clients with a clear
//! error. Over the rings, each write is one record of at most a ring
//! record's size; a read takes what one record holds (the rest of a record
//! that does not fit in the caller's buffer waits for the next read).
//! Waiting is the async RPC side's: parked on the doorbell, which the peer
//! rings only when we are registered, woken at once by the end of the
//! socket, and a liveness check at every check interval.
//!
//! How a stream ends: `poll_shutdown` (or dropping the stream) closes our
//! ring, and the peer reads end of file after every byte written before. A
//! peer that died or aborted is an error (`ConnectionAborted` or
//! `ConnectionReset`), never an end of file: a cut stream must not look
//! complete.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use shmring::spsc::{Consumer, Producer};
use shmring::wait::Registration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::accept::accept;
use crate::addr::Addr;
use crate::async_client::blocking;
use crate::doorbell::{AsyncBell, Direction, watch_socket};
use crate::error::{Error, Result};
use crate::handshake::Mode;
use crate::listen::AsyncListener;
use crate::options::{ClientOptions, ServerOptions};
use crate::transport::{Path, Stream, TransportKind};

/// How long a read polls an empty ring before it parks on the doorbell. The
/// task yields to the runtime between polls (its worker runs other tasks
/// meanwhile), so the window can be longer than the async client's
/// blocking poll: a protocol on top (tarpc's dispatch, say) takes tens of
/// microseconds to answer, and a reply within the window costs no wake-up.
/// Measured with tarpc over a stream, 64 B round trip: 57 µs with a 5 µs
/// window, 12.8 µs with 50 µs; 4.5 µs once each poll yielded as tokio's
/// `yield_now` does rather than waking itself at once.
const READ_SPIN: Duration = Duration::from_micros(50);

/// A byte stream to a peer: over two shared-memory rings when both sides
/// can (a `unix:` address), else over the UNIX socket or TCP. Implements
/// tokio's `AsyncRead` and `AsyncWrite`.
///
/// ```no_run
/// # async fn demo() -> shmring_rpc::Result<()> {
/// use shmring_rpc::{Addr, ClientOptions, ShmStream};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let mut s = ShmStream::connect(&Addr::parse("unix:/tmp/bytes.sock")?, &ClientOptions::new()).await?;
/// s.write_all(b"hello").await.map_err(|e| shmring_rpc::Error::InvalidArgument(e.to_string()))?;
/// let mut back = [0u8; 5];
/// s.read_exact(&mut back).await.map_err(|e| shmring_rpc::Error::InvalidArgument(e.to_string()))?;
/// # Ok(()) }
/// ```
pub struct ShmStream {
    inner: Inner,
    kind: TransportKind,
    peer: String,
}

enum Inner {
    Shm(Box<Rings>),
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// The shared-memory side of a stream.
struct Rings {
    /// `None` once shut down.
    tx: Option<Producer>,
    rx: Consumer,
    bell: Arc<AsyncBell>,
    watcher: tokio::task::JoinHandle<()>,
    /// The reader's registration on the ring, with the doorbell's mark.
    read_reg: Option<(u64, Registration)>,
    /// The writer's.
    write_reg: Option<(u64, Registration)>,
    /// The rest of a record a read could not take whole.
    leftover: Vec<u8>,
    at: usize,
    /// Liveness checks while a read waits, and while a write waits.
    ticks: [Pin<Box<tokio::time::Sleep>>; 2],
    check: Duration,
    /// How long a read polls an empty ring (letting the runtime run other
    /// tasks between polls) before it parks on the doorbell.
    spin: Duration,
    /// When the current run of empty polls ends.
    spin_until: Option<std::time::Instant>,
}

impl Drop for Rings {
    fn drop(&mut self) {
        // The ring is closed first: a peer woken by the socket's end finds
        // the close, not a ring still open.
        drop(self.tx.take());
        // Closes the socket: the peer learns we are gone.
        self.watcher.abort();
    }
}

impl ShmStream {
    /// Connect to a [`ShmListener`] (shared memory on a `unix:` address
    /// unless told otherwise, as [`crate::Client::connect`]). Must be called
    /// inside a tokio runtime with I/O and time enabled.
    ///
    /// # Errors
    /// As [`crate::Client::connect`]; [`Error::Protocol`] if the address is
    /// an RPC server, not a stream listener.
    pub async fn connect(addr: &Addr, opts: &ClientOptions) -> Result<ShmStream> {
        let (addr, o) = (addr.clone(), opts.clone());
        let link = blocking(move || crate::client::open_link(&addr, &o, Mode::BYTES)).await?;
        ShmStream::from_link(link, opts.policy.interval(), READ_SPIN)
    }

    fn from_link(link: crate::transport::Link, check: Duration, spin: Duration) -> Result<ShmStream> {
        let (path, kind, peer, _) = link.into_parts();
        let reactor = |e| Error::io(format!("registering {peer} with the tokio reactor"), e);
        let inner = match path {
            Path::Shm(rings) => {
                let rings = *rings;
                // Everything that can fail first; on failure the rings are
                // aborted, so the peer sees an error, not an empty stream.
                let set_up = |bell: Option<shmring::wait::Doorbell>| -> Result<(Arc<AsyncBell>, Ticks)> {
                    let bell = bell.ok_or_else(|| Error::protocol(&peer, "shared memory without our doorbell"))?;
                    let bell = Arc::new(AsyncBell::new(bell).map_err(reactor)?);
                    let ticks = std::panic::catch_unwind(|| {
                        [Box::pin(tokio::time::sleep(check)), Box::pin(tokio::time::sleep(check))]
                    })
                    .map_err(|_| {
                        reactor(io::Error::other("the tokio runtime has no timer (build it with enable_time)"))
                    })?;
                    Ok((bell, ticks))
                };
                let (bell, ticks) = match set_up(rings.bell) {
                    Ok(parts) => parts,
                    Err(e) => {
                        rings.tx.abort("the stream could not be set up");
                        rings.rx.abort("the stream could not be set up");
                        return Err(e);
                    }
                };
                let watcher = watch_socket(rings.socket, bell.clone()).map_err(reactor)?;
                Inner::Shm(Box::new(Rings {
                    tx: Some(rings.tx),
                    rx: rings.rx,
                    bell,
                    watcher,
                    read_reg: None,
                    write_reg: None,
                    leftover: Vec::new(),
                    at: 0,
                    ticks,
                    check,
                    spin,
                    spin_until: None,
                }))
            }
            Path::Stream(Stream::Unix(s)) => {
                s.set_nonblocking(true).map_err(reactor)?;
                Inner::Unix(tokio::net::UnixStream::from_std(s).map_err(reactor)?)
            }
            Path::Stream(Stream::Tcp(s)) => {
                s.set_nonblocking(true).map_err(reactor)?;
                Inner::Tcp(tokio::net::TcpStream::from_std(s).map_err(reactor)?)
            }
        };
        Ok(ShmStream { inner, kind, peer })
    }

    /// The transport this stream uses.
    pub fn transport(&self) -> TransportKind {
        self.kind
    }

    /// The peer, as error messages name it.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl std::fmt::Debug for ShmStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmStream").field("peer", &self.peer).field("transport", &self.kind).finish()
    }
}

/// A ring error as an I/O error: a dead or aborting peer is never an end of
/// file.
fn ring_io(e: shmring::Error) -> io::Error {
    let kind = match &e {
        shmring::Error::PeerDied { .. } => io::ErrorKind::ConnectionReset,
        shmring::Error::PeerAborted { .. } | shmring::Error::Closed(_) => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

/// `Pending`, with the task woken again once the runtime has run the other
/// ready tasks and polled its I/O driver (tokio's `yield_now`): a poller
/// that woke itself at once would keep a current-thread runtime from
/// polling its `block_on` future (the caller waiting for the very bytes we
/// poll for) until 61 other polls had run.
pub(crate) fn yield_to_runtime<T>(cx: &mut Context<'_>) -> Poll<T> {
    let yielded = std::pin::pin!(tokio::task::yield_now());
    // The first poll of `yield_now` always defers the waker and is Pending.
    let _ = yielded.poll(cx);
    Poll::Pending
}

/// The liveness timers of a stream's two directions.
type Ticks = [Pin<Box<tokio::time::Sleep>>; 2];

/// What a waiting poll does next.
enum Next {
    /// Look at the ring again.
    Retry,
    /// Nothing yet: `Pending` (the waker is registered).
    Wait,
}

impl Rings {
    /// Wait for a ring (or the socket's end) after registering with `reg`:
    /// `Retry` once something happened, `Wait` with the waker registered.
    /// Runs the liveness check at every tick.
    fn wait(
        &mut self,
        cx: &mut Context<'_>,
        mark: u64,
        dir: Direction,
        check_peer: impl FnOnce(&mut Self) -> io::Result<()>,
    ) -> io::Result<Next> {
        if self.bell.poll_wait(cx, mark, dir).is_ready() {
            return Ok(Next::Retry);
        }
        let tick = &mut self.ticks[dir as usize];
        if tick.as_mut().poll(cx).is_ready() {
            let next = tokio::time::Instant::now() + self.check;
            tick.as_mut().reset(next);
            check_peer(self)?;
            return Ok(Next::Retry);
        }
        Ok(Next::Wait)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.leftover.len() {
            let n = buf.remaining().min(self.leftover.len() - self.at);
            buf.put_slice(&self.leftover[self.at..self.at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut looked_after_close = false;
        loop {
            match self.rx.try_recv() {
                // An empty record would read as end of file; our writer
                // never sends one.
                Ok(Some(rec)) if rec.is_empty() => {
                    self.read_reg = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer sent an empty record",
                    )));
                }
                Ok(Some(rec)) => {
                    let n = buf.remaining().min(rec.len());
                    buf.put_slice(&rec[..n]);
                    if n < rec.len() {
                        self.leftover.clear();
                        self.leftover.extend_from_slice(&rec[n..]);
                        self.at = 0;
                    }
                    (self.read_reg, self.spin_until) = (None, None);
                    return Poll::Ready(Ok(()));
                }
                // The peer closed its ring: end of file.
                Ok(None) => {
                    self.read_reg = None;
                    return Poll::Ready(Ok(()));
                }
                Err(shmring::Error::WouldBlock { .. }) => {}
                Err(e) => {
                    self.read_reg = None;
                    return Poll::Ready(Err(ring_io(e)));
                }
            }
            // Poll a while before parking, letting the runtime run other
            // tasks between polls: a reply that comes back within the spin
            // costs no wake-up.
            if self.read_reg.is_none() {
                let now = std::time::Instant::now();
                if now < *self.spin_until.get_or_insert_with(|| now.checked_add(self.spin).unwrap_or(now)) {
                    return yield_to_runtime(cx);
                }
            }
            let Some((mark, _)) = &self.read_reg else {
                // Register, then look again before sleeping.
                let mark = self.bell.mark();
                self.read_reg = Some((mark, self.rx.register_waiter()));
                continue;
            };
            let mark = *mark;
            if self.bell.is_closed() {
                // The socket closed. Look at the ring once more: a peer that
                // wrote its last bytes and closed just now left them there,
                // and its close after them.
                self.read_reg = None;
                if !looked_after_close {
                    looked_after_close = true;
                    continue;
                }
                // Empty and open: the ring's liveness check says how the
                // peer went.
                return Poll::Ready(Err(match self.rx.peer_arrived() {
                    Err(e) => ring_io(e),
                    Ok(_) => {
                        io::Error::new(io::ErrorKind::ConnectionAborted, "the peer's socket closed, its ring did not")
                    }
                }));
            }
            let waited = self.wait(cx, mark, Direction::Read, |r| r.rx.peer_arrived().map(drop).map_err(ring_io));
            match waited.inspect_err(|_| self.read_reg = None)? {
                Next::Retry => self.read_reg = None,
                Next::Wait => return Poll::Pending,
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let Some(tx) = &mut self.tx else {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the stream was shut down")));
            };
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if self.bell.is_closed() {
                self.write_reg = None;
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the peer's socket closed")));
            }
            let n = buf.len().min(tx.max_record_len());
            match tx.try_grant(n) {
                Ok(mut g) => {
                    g.copy_from_slice(&buf[..n]);
                    g.commit();
                    self.write_reg = None;
                    return Poll::Ready(Ok(n));
                }
                Err(shmring::Error::WouldBlock { .. }) => {}
                Err(e) => {
                    self.write_reg = None;
                    return Poll::Ready(Err(ring_io(e)));
                }
            }
            let Some((mark, _)) = &self.write_reg else {
                let mark = self.bell.mark();
                self.write_reg = Some((mark, tx.register_waiter()));
                continue;
            };
            let mark = *mark;
            if self.bell.is_closed() {
                self.write_reg = None;
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the peer's socket closed")));
            }
            let check = |r: &mut Self| match &mut r.tx {
                Some(tx) => tx.peer_arrived().map(drop).map_err(ring_io),
                None => Ok(()),
            };
            match self.wait(cx, mark, Direction::Write, check).inspect_err(|_| self.write_reg = None)? {
                Next::Retry => self.write_reg = None,
                Next::Wait => return Poll::Pending,
            }
        }
    }

    fn poll_shutdown(&mut self) -> Poll<io::Result<()>> {
        self.write_reg = None;
        match self.tx.take() {
            Some(tx) => Poll::Ready(tx.close().map_err(ring_io)),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for ShmStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Shm(r) => r.poll_read(cx, buf),
            Inner::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ShmStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Inner::Shm(r) => r.poll_write(cx, buf),
            Inner::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    /// Every write is published as it is made: nothing to flush.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Shm(_) => Poll::Ready(Ok(())),
            Inner::Unix(s) => Pin::new(s).poll_flush(cx),
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Inner::Shm(r) => r.poll_shutdown(),
            Inner::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Accepts [`ShmStream`]s: binds like [`crate::Server::bind`] (socket mode,
/// access policy, transports from its [`ServerOptions`]), and runs each
/// handshake on its own task, so a slow or silent client does not hold up
/// the others (at most 64 in hand at once; more wait in the kernel's
/// backlog). A client whose handshake fails is logged and dropped.
pub struct ShmListener {
    /// Streams as their handshakes finish; an error once if accepting
    /// failed for good.
    streams: mpsc::Receiver<Result<ShmStream>>,
    addr: Addr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl ShmListener {
    /// Bind `addr` and start accepting, on the current tokio runtime.
    ///
    /// # Errors
    /// As [`crate::Server::bind`]; [`Error::Io`] outside a tokio runtime.
    pub fn bind(addr: &Addr, opts: &ServerOptions) -> Result<ShmListener> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::io(format!("bind {addr}"), io::Error::other("not inside a tokio runtime")));
        }
        let server = crate::Server::bind(addr, opts)?;
        let addr = server.local_addr().clone();
        let listener = AsyncListener::new(server.listener, addr.clone())?;
        let (send, streams) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(listener, server.opts, send));
        Ok(ShmListener { streams, addr, acceptor })
    }

    /// The next client's stream, once its handshake is done.
    ///
    /// # Errors
    /// [`Error::Io`] if accepting failed for good.
    pub async fn accept(&mut self) -> Result<ShmStream> {
        match self.streams.recv().await {
            Some(r) => r,
            None => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> Error {
        Error::io(format!("accept on {}", self.addr), io::Error::other("the listener stopped accepting"))
    }

    /// [`ShmListener::accept`] for `poll_*` code: `Ready` with the next
    /// client's stream, `Pending` with `cx` woken when one is ready.
    ///
    /// # Errors
    /// As [`ShmListener::accept`].
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<ShmStream>> {
        match self.streams.poll_recv(cx) {
            Poll::Ready(Some(r)) => Poll::Ready(r),
            Poll::Ready(None) => Poll::Ready(Err(self.stopped())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The address bound (with the real port for `tcp:HOST:0`).
    pub fn local_addr(&self) -> &Addr {
        &self.addr
    }
}

/// Clients a listener has in hand at once: handshakes in progress, and
/// streams ready but not yet taken by [`ShmListener::accept`] beyond the
/// channel's room. Past it, clients wait in the kernel's backlog.
const PENDING_MAX: usize = 64;

/// Accept sockets and hand each to its own handshake task, at most
/// [`PENDING_MAX`] at once.
async fn accept_loop(listener: AsyncListener, opts: ServerOptions, streams: mpsc::Sender<Result<ShmStream>>) {
    let pending = Arc::new(tokio::sync::Semaphore::new(PENDING_MAX));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Accepting failed for good: the caller learns why, once.
                let _ = streams.send(Err(e)).await;
                return;
            }
        };
        let (opts, streams) = (opts.clone(), streams.clone());
        tokio::spawn(async move {
            // Held until the stream is handed over (or the handshake failed).
            let _permit = permit;
            let (check, spin) = (opts.policy.interval(), READ_SPIN);
            let shaken = tokio::task::spawn_blocking(move || accept(stream, &peer, &opts, Mode::BYTES)).await;
            let stream = match shaken {
                Ok(Ok(link)) => ShmStream::from_link(link, check, spin),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::io("handshake", io::Error::other(e.to_string()))),
            };
            match stream {
                Ok(s) => {
                    let _ = streams.send(Ok(s)).await;
                }
                Err(e) => tracing::warn!("{e}"),
            }
        });
    }
}
