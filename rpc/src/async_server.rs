//! The tokio server: every client a task, every request a task, so a slow
//! handler holds up neither the other calls of its client nor the other
//! clients; a cancel frame drops the handler's future.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;

use crate::accept::accept;
use crate::async_link::{AsyncTx, AsyncWait, into_async};
use crate::error::{Error, Result};
use crate::frame::{FLAG_REPLY, Frame, Kind};
use crate::handshake::Mode;
use crate::listen::AsyncListener;
use crate::options::ServerOptions;
use crate::server::Server;
use crate::socket::Stream;

/// Requests of one client being handled, by id: aborting one drops its
/// handler's future.
type InFlight = Arc<Mutex<HashMap<u64, tokio::task::AbortHandle>>>;

impl Server {
    /// Accept clients for ever on the current tokio runtime, each served
    /// on its own task, each request on its own task by `handler`, so many
    /// calls of one client run at once and are answered as they finish. A
    /// cancel frame (the client dropped the call, or its deadline passed)
    /// drops the handler's future. A handler that panics fails its call
    /// with [`Error::Remote`] on the client; the connection goes on.
    ///
    /// On shared memory the connection's task polls the ring for a few
    /// microseconds, then sleeps on a doorbell the client rings: no worker
    /// blocks on a futex.
    ///
    /// ```no_run
    /// # async fn demo() -> shmring_rpc::Result<()> {
    /// use shmring_rpc::{Addr, Server, ServerOptions};
    /// let server = Server::bind(&Addr::parse("unix:/tmp/upper.sock")?, &ServerOptions::new())?;
    /// server.serve_async(|req: Vec<u8>| async move { req.to_ascii_uppercase() }).await
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if not inside a tokio runtime, or if accepting fails
    /// for good. A client whose handshake fails is logged and dropped.
    pub async fn serve_async<F, Fut>(self, handler: F) -> Result<()>
    where
        F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<u8>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let listener = AsyncListener::new(self.listener, self.addr)?;
        loop {
            let (stream, peer) = listener.accept().await?;
            let (opts, handler) = (self.opts.clone(), handler.clone());
            tokio::spawn(async move {
                match serve_client(stream, &peer, opts, handler).await {
                    Ok(()) => tracing::debug!("{peer}: connection closed"),
                    Err(e) => tracing::warn!("{peer}: {e}"),
                }
            });
        }
    }
}

/// The handshake (on a blocking thread), then the client's frames until it
/// leaves.
async fn serve_client<F, Fut>(stream: Stream, peer: &str, opts: ServerOptions, handler: Arc<F>) -> Result<()>
where
    F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    let (p, o) = (peer.to_owned(), opts.clone());
    let link = tokio::task::spawn_blocking(move || accept(stream, &p, &o, Mode::ASYNC))
        .await
        .map_err(|e| Error::io(format!("handshake with {peer}"), std::io::Error::other(e.to_string())))??;
    let peer = link.peer().to_owned();
    let wait = AsyncWait { spin: opts.async_spin, check: opts.policy.interval() };
    let parts = into_async(link, wait)?;
    let (tx, mut rx) = (Arc::new(parts.tx), parts.rx);
    let in_flight: InFlight = Arc::default();
    // At most this many handlers at once; beyond, the client's requests wait
    // in the ring (and its sends for room).
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.max_in_flight));
    let ended = loop {
        let f = match rx.recv().await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        match f.kind {
            Kind::Request => {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break Err(Error::protocol(&peer, "the server's request limit closed"));
                };
                // The lock is held across the spawn so that the task's own
                // removal comes after this insertion.
                let mut map = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                let id = f.id;
                let task = tokio::spawn(answer(f, handler.clone(), tx.clone(), in_flight.clone(), permit));
                map.insert(id, task.abort_handle());
            }
            Kind::Ping if f.flags & FLAG_REPLY == 0 => {
                if let Err(e) = tx.send(f.id, Kind::Ping, FLAG_REPLY, &f.payload).await {
                    break Err(e);
                }
            }
            Kind::Cancel => {
                let task = in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&f.id);
                if let Some(task) = task {
                    task.abort();
                }
            }
            other => break Err(Error::protocol(&peer, format!("a client sent a {other:?} frame"))),
        }
    };
    // The client is gone (or broke the protocol): drop every handler still
    // running for it, and close the socket.
    for (_, task) in in_flight.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        task.abort();
    }
    if let Some(w) = parts.watcher {
        w.abort();
    }
    ended
}

/// Run the handler for one request and send its answer. The request leaves
/// the in-flight map before the answer goes out: a cancel can drop the
/// handler, never a half-sent reply.
async fn answer<F, Fut>(
    f: Frame,
    handler: Arc<F>,
    tx: Arc<AsyncTx>,
    in_flight: InFlight,
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<u8>> + Send + 'static,
{
    let id = f.id;
    let reply = std::panic::AssertUnwindSafe(async move { handler(f.payload).await }).catch_unwind().await;
    if in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&id).is_none() {
        // Cancelled at the last moment: nobody waits for the answer.
        return;
    }
    let sent = match reply {
        Ok(r) if r.len() as u64 > tx.max_frame() => {
            let msg = format!("the handler's reply of {} bytes exceeds the maximum frame", r.len());
            tx.send(id, Kind::Error, 0, msg.as_bytes()).await
        }
        Ok(r) => tx.send(id, Kind::Response, 0, &r).await,
        Err(_) => tx.send(id, Kind::Error, 0, b"the handler panicked").await,
    };
    if let Err(e) = sent {
        tracing::debug!("request {id}: the answer could not be sent: {e}");
    }
}
