//! What the HTTP and gRPC rows share: the served future's type, and the
//! shared-memory rows' listener and client options.

use std::future::Future;
use std::pin::Pin;

use shmring_rpc::{Addr, ClientOptions, ServerOptions, ShmListener, TransportKind};

/// The served future of a peer: ends only if serving fails, and says why.
pub(crate) type Serving = Pin<Box<dyn Future<Output = String> + Send>>;

/// The shared-memory rows' listener: busy-polling rings, as the shmring-rpc rows.
pub(crate) fn shm_listener(addr: &Addr) -> Result<ShmListener, String> {
    let opts = ServerOptions::new().wait_policy(shmring::WaitPolicy::busy_poll());
    ShmListener::bind(addr, &opts).map_err(|e| format!("web: listening at {addr}: {e}"))
}

/// The shared-memory rows' client options: shared memory only (a connection that cannot map
/// the rings fails rather than fall back to the socket), busy-polling rings.
pub(crate) fn shm_options() -> ClientOptions {
    ClientOptions::new().transport(TransportKind::Shm).wait_policy(shmring::WaitPolicy::busy_poll())
}
