//! Accepting connections on a tokio runtime: the listener of a bound
//! [`crate::Server`], taken over by the reactor, for `serve_async` and
//! [`crate::ShmListener`].

use std::time::Duration;

use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::server::{Listener, accept_error_is_transient};
use crate::transport::Stream;

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
