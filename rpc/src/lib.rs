//! # shmring-rpc
//!
//! Request/response between processes on one host over shmring's
//! shared-memory rings, with the same API over a UNIX socket (the
//! fallback) and over TCP (other hosts).
//!
//! - [`Server::bind`] a `unix:PATH` or `tcp:HOST:PORT` [`Addr`], then
//!   [`Server::serve`] a handler `Fn(&[u8]) -> Vec<u8>`: every client on its
//!   own thread, so a slow handler for one does not stall the others.
//!   [`Server::serve_in_place`] lets the handler write its reply straight
//!   into the ring ([`Reply`]); [`Server::serve_async`] serves on tokio, a
//!   task per request, and drops a handler's future when its call is
//!   cancelled.
//! - [`Client::connect`], then [`Client::call`]: each call has a deadline
//!   (10 s by default); [`Client::transport`] says what the connection
//!   uses; [`Client::call_all`] pipelines.
//! - [`AsyncClient`]: the tokio client; any number of tasks call at once on
//!   one connection, and a call dropped before its reply is cancelled on the
//!   server. No tokio worker ever blocks on a futex: an async side sleeps on
//!   a doorbell (a socket pair) its peer rings only when it is parked (the doorbell
//!   module's docs, in `doorbell.rs`, say how).
//! - On a `unix:` address the server hands each client two rings in sealed
//!   memfds ([`handshake`]); if that fails, or either side asks
//!   ([`ClientOptions::transport`], [`ServerOptions::no_shm`], or
//!   `SHMRING_RPC_TRANSPORT=unix`), frames go over the socket instead.
//! - Only the server's own user and root may connect over a UNIX socket by
//!   default ([`AccessPolicy`], checked with `SO_PEERCRED`); the socket file
//!   is created with mode 0600.
//! - Everything the peer sends is checked ([`frame`]): garbage ends that
//!   connection with an error, never a panic, and the server keeps serving
//!   the others.
//! - [`ShmStream`] is a tokio byte stream over the same kind of connection,
//!   for any byte-stream protocol; with the `tarpc` feature, `tarpc`'s
//!   `connect` and `listen` run a `#[tarpc::service]` over it unchanged;
//!   with `http`, hyper and axum services ([`http`]); with `grpc`, tonic
//!   services ([`grpc`]).
//!
//! ```no_run
//! use shmring_rpc::{Addr, Client, ClientOptions, Server, ServerOptions};
//!
//! fn main() -> shmring_rpc::Result<()> {
//!     let addr = Addr::parse("unix:/tmp/upper.sock")?; // or tcp:HOST:PORT
//!     if std::env::args().nth(1).as_deref() == Some("serve") {
//!         // Each client on its own thread; socket mode 0600, same user (and root) only.
//!         return Server::bind(&addr, &ServerOptions::new())?.serve(|req: &[u8]| req.to_ascii_uppercase());
//!     }
//!     let mut client = Client::connect(&addr, &ClientOptions::new())?;
//!     assert_eq!(client.call(b"hello")?, b"HELLO"); // 10 s deadline by default
//!     println!("over {}", client.transport().name()); // shm, or unix if it fell back
//!     Ok(())
//! }
//! ```
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod accept;
mod access;
mod addr;
mod async_client;
mod async_link;
mod async_server;
mod client;
mod doorbell;
mod error;
pub mod frame;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod handshake;
#[cfg(feature = "http")]
pub mod http;
mod listen;
mod options;
mod ring_frames;
mod ring_io;
mod server;
mod socket;
mod spin;
mod stream;
#[cfg(feature = "tarpc")]
pub mod tarpc;
mod transport;

pub use access::AccessPolicy;
pub use addr::Addr;
pub use async_client::AsyncClient;
pub use client::Client;
pub use error::{Error, Result};
pub use options::{
    ClientOptions, DEFAULT_ASYNC_SPIN, DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_FRAME, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_RING_CAPACITY, DEFAULT_STREAM_SPIN, ServerOptions, TRANSPORT_ENV,
};
pub use server::{Reply, Server};
pub use stream::{ShmListener, ShmStream};
pub use transport::TransportKind;
