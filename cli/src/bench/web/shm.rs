//! What the HTTP and gRPC rows share: the served future's type, and the
//! shared-memory rows' listener and client options.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use shmring_rpc::{Addr, ClientOptions, ServerOptions, ShmListener, ShmStream, TransportKind};

use crate::bench::rpc;

/// The served future of a peer: ends only if serving fails, and says why.
pub(crate) type Serving = Pin<Box<dyn Future<Output = String> + Send>>;

/// The shared-memory rows' listener: busy-polling rings, as the shmring-rpc rows.
pub(crate) fn shm_listener(addr: &Addr) -> Result<ShmListener, String> {
    let opts = ServerOptions::new().wait_policy(shmring::WaitPolicy::busy_poll());
    ShmListener::bind(addr, &opts).map_err(|e| format!("web: listening at {addr}: {e}"))
}

/// The shared-memory rows' client options; the first connection is checked to use the rings.
pub(crate) async fn shm_options(addr: &Addr) -> Result<ClientOptions, String> {
    let opts = ClientOptions::new().transport(TransportKind::Shm).wait_policy(shmring::WaitPolicy::busy_poll());
    let probe = ShmStream::connect(addr, &opts).await.map_err(|e| format!("web: connecting to {addr}: {e}"))?;
    rpc::check_transport(probe.transport(), TransportKind::Shm)?;
    Ok(opts)
}

/// A future that is ready at once: what `poll_ready` of a service that is always ready says.
pub(crate) fn always_ready<E>(_: &mut Context<'_>) -> Poll<Result<(), E>> {
    Poll::Ready(Ok(()))
}
