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

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::addr::Addr;
use crate::async_client::blocking;
use crate::async_link::AsyncWait;
use crate::error::{Error, Result};
use crate::handshake::Mode;
use crate::listen::Acceptor;
use crate::options::{ClientOptions, ServerOptions};
use crate::ring_io::RingIo;
use crate::socket::Stream;
use crate::transport::{Path, TransportKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    io: RingIo,
    /// The rest of a record a read could not take whole.
    leftover: Vec<u8>,
    at: usize,
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
        ShmStream::from_link(link, opts.stream_wait())
    }

    pub(crate) fn from_link(link: crate::transport::Link, wait: AsyncWait) -> Result<ShmStream> {
        let (path, kind, peer, _) = link.into_parts();
        let reactor = |e| Error::io(format!("registering {peer} with the tokio reactor"), e);
        let inner = match path {
            Path::Shm(rings) => {
                let io = RingIo::new(*rings, &peer, wait)?;
                Inner::Shm(Box::new(Rings { io, leftover: Vec::new(), at: 0 }))
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

/// Bytes in one record of a stream at most: a large write goes out in
/// records of this size, which the reader copies out while the writer fills
/// the next (a record the size of the ring would make each side wait for
/// the other's whole copy).
const RECORD_MAX: usize = 64 << 10;

impl Rings {
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
        let (leftover, at) = (&mut self.leftover, &mut self.at);
        let took = ready!(self.io.poll_recv(cx, |rec| {
            let n = buf.remaining().min(rec.len());
            buf.put_slice(&rec[..n]);
            if n < rec.len() {
                leftover.clear();
                leftover.extend_from_slice(&rec[n..]);
                *at = 0;
            }
            rec.len()
        }))?;
        match took {
            // An empty record would read as end of file; our writer never
            // sends one.
            Some(0) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "the peer sent an empty record"))),
            // A record, or the peer's close: end of file.
            Some(_) | None => Poll::Ready(Ok(())),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            // Still an error once shut down or once the peer is gone.
            self.io.producer()?;
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(self.io.max_record_len()).min(RECORD_MAX);
        self.io.poll_put(cx, n, |g| g.copy_from_slice(&buf[..n])).map_ok(|()| n)
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
            Inner::Shm(r) => Poll::Ready(r.io.shutdown()),
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
    links: Acceptor,
}

impl std::fmt::Debug for ShmListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmListener").field("addr", self.local_addr()).finish_non_exhaustive()
    }
}

impl ShmListener {
    /// Bind `addr` and start accepting, on the current tokio runtime.
    ///
    /// # Errors
    /// As [`crate::Server::bind`]; [`Error::Io`] outside a tokio runtime.
    pub fn bind(addr: &Addr, opts: &ServerOptions) -> Result<ShmListener> {
        Ok(ShmListener { links: Acceptor::bind(addr, opts, Mode::BYTES)? })
    }

    /// The next client's stream, once its handshake is done.
    ///
    /// # Errors
    /// [`Error::Io`] if accepting failed for good.
    pub async fn accept(&mut self) -> Result<ShmStream> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// [`ShmListener::accept`] for `poll_*` code: `Ready` with the next
    /// client's stream, `Pending` with `cx` woken when one is ready.
    ///
    /// # Errors
    /// As [`ShmListener::accept`].
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<ShmStream>> {
        loop {
            let link = ready!(self.links.poll_link(cx))?;
            match ShmStream::from_link(link, self.links.wait()) {
                Ok(s) => return Poll::Ready(Ok(s)),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// The address bound (with the real port for `tcp:HOST:0`).
    pub fn local_addr(&self) -> &Addr {
        self.links.local_addr()
    }
}

/// The accepted streams, one item per client, as tonic's
/// `Server::serve_with_incoming` takes them (feature `grpc`). The stream
/// never ends by itself; an `Err` item means accepting failed for good.
impl futures_util::Stream for ShmListener {
    type Item = Result<ShmStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<ShmStream>>> {
        self.get_mut().poll_accept(cx).map(Some)
    }
}
