//! What the HTTP and gRPC rows share: the served future's type, and the
//! shared-memory rows' listener and client options.
//!
//! A stream's wait policy sets only its liveness check interval: a
//! `ShmStream` polls its rings for its `stream_spin` window (longer while
//! busy), then parks on its doorbell, whatever the policy's spin count. The
//! rows run with the defaults a user gets.

use std::future::Future;
use std::pin::Pin;

use shmring_rpc::{Addr, ClientOptions, ServerOptions, ShmListener, TransportKind};

/// The served future of a peer: ends only if serving fails, and says why.
pub(crate) type Serving = Pin<Box<dyn Future<Output = String> + Send>>;

/// The shared-memory rows' listener, with the default options.
pub(crate) fn shm_listener(addr: &Addr) -> Result<ShmListener, String> {
    ShmListener::bind(addr, &ServerOptions::new()).map_err(|e| format!("web: listening at {addr}: {e}"))
}

/// The shared-memory rows' client options: shared memory only (a connection that cannot map
/// the rings fails rather than fall back to the socket), otherwise the defaults.
pub(crate) fn shm_options() -> ClientOptions {
    ClientOptions::new().transport(TransportKind::Shm)
}
