//! HTTP and gRPC (features `http` and `grpc`): this process is the client, on a
//! current-thread tokio runtime; the peer serves an echo on a multi-thread tokio runtime with
//! tokio's default worker count, one per CPU the peer may use: one when pinned.
//!
//! * http-shm, http-unix, http-tcp: hyper HTTP/1.1, a `POST` whose 64-byte body comes back as
//!   the response's body. Each caller has an HTTP/1.1 connection of its own, opened once
//!   (hyper's `client::conn::http1`: HTTP/1.1 has no multiplexing). http-shm connects with
//!   [`shmring_rpc::http::Connector`] and the peer serves with [`shmring_rpc::http::serve`];
//!   http-unix and http-tcp are plain hyper on a tokio UNIX or TCP (`TCP_NODELAY`) socket.
//! * grpc-shm, grpc-tcp: tonic, a unary call whose 64-byte message comes back, all calls on one
//!   HTTP/2 connection. grpc-shm connects with `connect_with_connector` and serves with
//!   `serve_with_incoming` on a [`ShmListener`]; grpc-tcp is tonic's own TCP.
//!
//! The peer, the control socket and the two modes are those of the shmring-rpc rows (see
//! [`super::rpc`]); every request carries its sequence number ([`protocol::stamp`]) and every
//! reply is checked against it, every byte read.

#[cfg(feature = "grpc")]
mod grpc;
mod http;
mod shm;

use std::os::unix::net::UnixStream;

use shmring_rpc::Addr;

use super::case::{Budget, Case};
use super::peer::{self, ChildSpec, Launcher};
use super::protocol::Outcome;
use super::rpc;

/// What the table says of these rows.
pub(crate) const NOTE: &str = "http-*: hyper HTTP/1.1 POSTs of 64 B echoed, each caller on a connection of \
     its own (HTTP/1.1 does not multiplex: 64 connections for 64 in flight); grpc-*: tonic unary echoes, \
     every call on one HTTP/2 connection; clients on a current-thread tokio runtime, servers on a tokio \
     runtime in the peer with a worker per CPU it may use (one when pinned).";

/// Parent side: measures `case` against a server in the peer.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let tcp = case.transport.name().ends_with("-tcp");
    rpc::with_server(case, budget, launcher, tcp, |addr| {
        let rt = rpc::client_runtime()?;
        #[cfg(feature = "grpc")]
        if grpc::ROWS.contains(&case.transport) {
            let client = rt.block_on(grpc::connect(case.transport, addr))?;
            return rpc::async_calls(&rt, case, budget, || grpc::EchoCaller::new(&client, case.payload));
        }
        let client = http::connect(case.transport, addr)?;
        rpc::async_calls(&rt, case, budget, || http::EchoCaller::new(&client, case.payload))
    })
}

/// Child side: listens where the parent said, tells it where that is, and serves until the
/// parent closes the control socket.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let control = UnixStream::from(peer::adopt_fd(spec, 0)?);
    let addr = Addr::parse(peer::name(spec, 0)?).map_err(|e| format!("{}: {e}", spec.case.transport.name()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("web: starting a tokio runtime: {e}"))?;
    let t = spec.case.transport;
    let (bound, serving) = rt.block_on(async {
        #[cfg(feature = "grpc")]
        if grpc::ROWS.contains(&t) {
            return grpc::listen(t, &addr).await;
        }
        http::listen(t, &addr).await
    })?;
    rpc::serve_until_closed(control, bound, move || rt.block_on(serving))
}
