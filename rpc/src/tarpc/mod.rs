//! tarpc services over shmring (the `tarpc` feature of this crate):
//! [`connect`] and [`listen`] stand where
//! `tarpc::serde_transport::unix::{connect, listen}` stand, so moving a
//! tarpc service onto shared memory changes the line that connects and the
//! line that listens, nothing else.
//!
//! ```ignore
//! // tarpc over a UNIX socket:
//! let transport = tarpc::serde_transport::unix::connect(path, Bincode::default).await?;
//! // the same service over shmring (shared memory, else the socket; or tcp:HOST:PORT):
//! let transport = shmring_rpc::tarpc::connect(&addr).await?;
//! let client = WorldClient::new(client::Config::default(), transport).spawn();
//! ```
//!
//! Every tarpc behaviour carries over unchanged: deadlines, cancellation,
//! many requests in flight, `BaseChannel`, `max_concurrent_requests`. A
//! peer that dies ends the transport's stream with an error at once (its
//! socket's end wakes the reader), so pending calls fail promptly, not at
//! their deadline.
//!
//! # Wire format
//!
//! The connection is made as every shmring RPC connection is (the
//! handshake of [`crate::handshake`], service [`SERVICE_TARPC`]: a tarpc
//! client and a shmring RPC server or stream listener refuse each other
//! with a clear error). Each tarpc message is then one frame of
//! [`crate::frame`]:
//!
//! - kind `Request` for what the client sends (`tarpc::ClientMessage`:
//!   requests and cancels), `Response` for what the server sends
//!   (`tarpc::Response`); any other kind, and the `REPLY` flag, are errors;
//! - id: the message's number on the connection, counted from 0 by each
//!   side (over the rings, it names the message its chunks belong to);
//! - payload: the message encoded by bincode 1 with its default options
//!   (variable-length integers, little-endian, no trailing bytes): the
//!   bytes tarpc's own `formats::Bincode::default()` makes, at most the
//!   connection's maximum frame size (64 MiB by default).
//!
//! Over the rings, a message whose frame fits in one ring record is encoded
//! straight into the record (no buffer in between); a larger one goes out
//! as chunks of at most 64 KiB, each a record with the frame header, in
//! order, `MORE` on all but the last. Over a socket a frame travels whole.
//!
//! Why bincode: it is tarpc's own binary format (what tarpc users run over
//! sockets today), it is already in tarpc's dependency tree, it measures a
//! message's encoded size before writing it (so the ring grant is exactly
//! that size), and it writes into a plain byte slice. postcard would do as
//! well on the wire but is one crate more.
//!
//! # A second way in
//!
//! [`connect_over_stream`] and [`listen_over_stream`] run tarpc's own
//! `serde_transport` over a [`ShmStream`] (any `tokio_serde` format, framed
//! by tokio-util's length-delimited codec). The native transport above
//! skips the byte stream's framing and its buffers; the benchmarks compare
//! the two.

mod codec;
mod over_stream;
mod transport;

pub use over_stream::{IncomingOverStream, connect_over_stream, listen_over_stream};
pub use transport::{Incoming, ShmTransport};

use crate::addr::Addr;
use crate::error::Result;
pub use crate::handshake::SERVICE_TARPC;
use crate::options::{ClientOptions, ServerOptions};
#[allow(unused_imports)]
use crate::stream::ShmStream;

/// Connect to a tarpc server listening with [`listen`] at `addr`, with
/// default options: a transport for `tarpc::client::new` (`Item` is
/// `tarpc::Response<Resp>`, `SinkItem` is `tarpc::ClientMessage<Req>`, both
/// inferred from the client it is given to).
///
/// # Errors
/// As [`crate::Client::connect`]; [`crate::Error::Protocol`] if `addr` is
/// not a tarpc listener (a shmring RPC server, a stream listener).
pub async fn connect<Item, SinkItem>(addr: &Addr) -> Result<ShmTransport<Item, SinkItem>> {
    transport::connect(addr, &ClientOptions::new()).await
}

/// [`connect`] with options (transport, wait policy, maximum frame, ...).
///
/// # Errors
/// As [`connect`].
pub async fn connect_with<Item, SinkItem>(addr: &Addr, opts: &ClientOptions) -> Result<ShmTransport<Item, SinkItem>> {
    transport::connect(addr, opts).await
}

/// Listen at `addr` for tarpc clients that [`connect`], with default
/// options: a stream of server-side transports, one per client (a client
/// whose handshake fails is logged and skipped). Must be called inside a
/// tokio runtime.
///
/// # Errors
/// As [`crate::Server::bind`]; [`crate::Error::Io`] outside a tokio
/// runtime.
pub async fn listen<Item, SinkItem>(addr: &Addr) -> Result<Incoming<Item, SinkItem>> {
    Incoming::bind(addr, &ServerOptions::new())
}

/// [`listen`] with options (socket mode, access policy, ring size, ...).
///
/// # Errors
/// As [`listen`].
pub async fn listen_with<Item, SinkItem>(addr: &Addr, opts: &ServerOptions) -> Result<Incoming<Item, SinkItem>> {
    Incoming::bind(addr, opts)
}
