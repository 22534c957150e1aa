//! Accepting connections on a tokio runtime: the listener of a bound
//! [`crate::Server`], taken over by the reactor, for `serve_async`; and
//! [`Acceptor`], which runs the handshakes for [`crate::ShmListener`] and
//! the tarpc listener.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::accept::accept;
use crate::addr::Addr;
use crate::async_link::AsyncWait;
use crate::error::{Error, Result};
use crate::handshake::Mode;
use crate::options::ServerOptions;
use crate::server::{Listener, accept_error_is_transient};
use crate::socket::Stream;
use crate::transport::Link;

/// A bound listener registered with the tokio reactor.
pub(crate) struct AsyncListener {
    listener: Listening,
    addr: Addr,
}

enum Listening {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl AsyncListener {
    /// Take over a bound server's listener, on the current runtime.
    ///
    /// # Errors
    /// [`Error::Io`] outside a tokio runtime, or if the reactor refuses it.
    pub(crate) fn new(listener: Listener, addr: Addr) -> Result<AsyncListener> {
        let reactor = |e| Error::io(format!("registering {addr} with the tokio reactor"), e);
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(reactor(std::io::Error::other("not inside a tokio runtime")));
        }
        let listener = match listener {
            Listener::Unix(l) => {
                l.set_nonblocking(true).map_err(reactor)?;
                Listening::Unix(tokio::net::UnixListener::from_std(l).map_err(reactor)?)
            }
            Listener::Tcp(l) => {
                l.set_nonblocking(true).map_err(reactor)?;
                Listening::Tcp(tokio::net::TcpListener::from_std(l).map_err(reactor)?)
            }
        };
        Ok(AsyncListener { listener, addr })
    }

    /// The next connection, as a blocking socket for the handshake, and a
    /// name for it in messages. Transient failures (out of descriptors, a
    /// client that gave up while queued) are logged and waited out.
    ///
    /// # Errors
    /// [`Error::Io`] if accepting fails for good.
    pub(crate) async fn accept(&self) -> Result<(Stream, String)> {
        let addr = &self.addr;
        loop {
            let accepted = match &self.listener {
                Listening::Unix(l) => l.accept().await.map(|(s, _)| {
                    let s = s.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s));
                    s.map(|s| (Stream::Unix(s), format!("client of {addr}")))
                }),
                Listening::Tcp(l) => l.accept().await.map(|(s, from)| {
                    let _ = s.set_nodelay(true);
                    let s = s.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s));
                    s.map(|s| (Stream::Tcp(s), format!("client {from} of {addr}")))
                }),
            };
            match accepted {
                Ok(Ok(a)) => return Ok(a),
                // One client's socket could not be set up: drop it, go on.
                Ok(Err(e)) => tracing::warn!("accept on {addr}: setting up a client's socket: {e}"),
                Err(e) if accept_error_is_transient(&e) => {
                    tracing::warn!("accept on {addr}: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(Error::io(format!("accept on {addr}"), e)),
            }
        }
    }
}

/// Connections accepted on a tokio runtime and past their handshake (run
/// on their own tasks, at most [`PENDING_MAX`] at once): what
/// [`crate::ShmListener`] and the tarpc listener take their clients from.
pub(crate) struct Acceptor {
    /// Links as their handshakes finish; an error once if accepting failed
    /// for good.
    links: mpsc::Receiver<Result<Link>>,
    addr: Addr,
    /// How the streams accepted wait: the liveness check interval of the
    /// server's wait policy, and its `stream_spin`.
    wait: AsyncWait,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Acceptor {
    /// Bind `addr` and start accepting clients of `mode`, on the current
    /// tokio runtime.
    ///
    /// # Errors
    /// As [`crate::Server::bind`]; [`Error::Io`] outside a tokio runtime.
    pub(crate) fn bind(addr: &Addr, opts: &ServerOptions, mode: Mode) -> Result<Acceptor> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::io(format!("bind {addr}"), std::io::Error::other("not inside a tokio runtime")));
        }
        let server = crate::Server::bind(addr, opts)?;
        let addr = server.local_addr().clone();
        let listener = AsyncListener::new(server.listener, addr.clone())?;
        let (send, links) = mpsc::channel(PENDING_MAX);
        let wait = server.opts.stream_wait();
        let task = tokio::spawn(accept_loop(listener, server.opts, mode, send));
        Ok(Acceptor { links, addr, wait, task })
    }

    /// The next client's connection, once its handshake is done.
    ///
    /// # Errors
    /// [`Error::Io`] if accepting failed for good.
    pub(crate) fn poll_link(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<Link>> {
        match self.links.poll_recv(cx) {
            std::task::Poll::Ready(Some(r)) => std::task::Poll::Ready(r),
            std::task::Poll::Ready(None) => std::task::Poll::Ready(Err(Error::io(
                format!("accept on {}", self.addr),
                std::io::Error::other("the listener stopped accepting"),
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    /// How the streams accepted wait (from the server's options).
    pub(crate) fn wait(&self) -> AsyncWait {
        self.wait
    }

    /// The address bound (with the real port for `tcp:HOST:0`).
    pub(crate) fn local_addr(&self) -> &Addr {
        &self.addr
    }
}

/// Clients an [`Acceptor`] has in hand at once: handshakes in progress, and
/// connections ready but not yet taken beyond the channel's room. Past it,
/// clients wait in the kernel's backlog.
const PENDING_MAX: usize = 64;

/// Accept sockets and hand each to its own handshake task, at most
/// [`PENDING_MAX`] at once.
async fn accept_loop(listener: AsyncListener, opts: ServerOptions, mode: Mode, links: mpsc::Sender<Result<Link>>) {
    let pending = Arc::new(tokio::sync::Semaphore::new(PENDING_MAX));
    loop {
        let Ok(permit) = pending.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Accepting failed for good: the caller learns why, once.
                let _ = links.send(Err(e)).await;
                return;
            }
        };
        let (opts, links) = (opts.clone(), links.clone());
        tokio::spawn(async move {
            // Held until the link is handed over (or the handshake failed).
            let _permit = permit;
            let shaken = tokio::task::spawn_blocking(move || accept(stream, &peer, &opts, mode)).await;
            match shaken {
                Ok(Ok(link)) => {
                    let _ = links.send(Ok(link)).await;
                }
                Ok(Err(e)) => tracing::warn!("{e}"),
                Err(e) => tracing::warn!("handshake: {e}"),
            }
        });
    }
}
