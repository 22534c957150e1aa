//! HTTP/1.1 and HTTP/2 over shared memory: hyper on [`ShmStream`]
//! (feature `http`).
//!
//! A service written for hyper or axum, or a tonic service (feature
//! `grpc`), keeps its code; only the lines that make connections change:
//!
//! - **Server**: [`serve`] runs a tower service (an axum `Router`, tonic's
//!   `Routes`, anything `tower::Service<Request<Incoming>>`) on every stream
//!   a [`ShmListener`] accepts, each connection on its own task. HTTP/1.1
//!   and HTTP/2 are told apart by the client's first bytes. With tonic,
//!   `Server::builder()…serve_with_incoming(listener)` takes the listener
//!   directly (see [`crate::ShmListener`]'s `Stream` implementation).
//! - **Client**: [`Connector`] is a tower `Service<Uri>` that connects a
//!   [`ShmStream`] to one address whatever the URI says, as hyper-util's
//!   legacy client and tonic's `Endpoint::connect_with_connector` expect.
//!   The URI still gives the request its scheme and `Host`/`:authority`.
//!
//! A shared-memory connection costs more to open than a socket's (a
//! handshake that maps two rings and passes a doorbell), and much less to
//! use. hyper-util's pooled HTTP/1.1 client opens a new connection whenever
//! none is idle at the instant of a request: with many requests in flight it
//! keeps opening them (over 500 in under two seconds with 64 in flight, in
//! the project's bench). With concurrency, prefer HTTP/2
//! (`Client::builder(..).http2_only(true)`, or tonic): every request on one
//! connection; or give each task an HTTP/1.1 connection of its own
//! (`hyper::client::conn::http1::handshake` on a [`ShmIo`]).
//!
//! On a `unix:PATH` address the bytes go through two shared-memory rings
//! when both sides can map them, else through the UNIX socket itself (the
//! same fallback as every connection of this crate, see
//! [`crate::ClientOptions::transport`]); a `tcp:` address is plain TCP.
//! [`ShmIo::transport`] says which a connection got.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use http_body_util::{BodyExt, Empty};
//! use hyper::body::Bytes;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use shmring_rpc::http::Connector;
//! use shmring_rpc::{Addr, ClientOptions};
//!
//! let addr = Addr::parse("unix:/tmp/web.sock")?;
//! let client: Client<_, Empty<Bytes>> =
//!     Client::builder(TokioExecutor::new()).build(Connector::new(addr, ClientOptions::new()));
//! let reply = client.get("http://localhost/hello".parse()?).await?;
//! let body = reply.into_body().collect().await?.to_bytes();
//! println!("{}", String::from_utf8_lossy(&body));
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;

use crate::addr::Addr;
use crate::error::{Error, Result};
use crate::options::ClientOptions;
use crate::stream::{ShmListener, ShmStream};
use crate::transport::TransportKind;

/// The error type the bounds below accept from services and bodies.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler learns of the connection its request came on: [`serve`]
/// puts it in every request's extensions (axum:
/// `Extension(info): Extension<ConnectInfo>`), and tonic's server does the
/// same for a [`ShmListener`]'s streams (`request.extensions()`).
/// Cloning it (once for every request) copies no bytes: the peer's name is
/// shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The client, as error messages name it (a pid and user over a UNIX
    /// socket, an address over TCP).
    pub peer: Arc<str>,
    /// Shared memory, or the socket the connection fell back to.
    pub transport: TransportKind,
}

impl ConnectInfo {
    /// The connection `stream` is on.
    pub fn of(stream: &ShmStream) -> ConnectInfo {
        ConnectInfo { peer: stream.peer().into(), transport: stream.transport() }
    }
}

/// A tower service that adds the connection's [`ConnectInfo`] to every
/// request before `inner` sees it.
#[derive(Debug, Clone)]
struct WithConnectInfo<S> {
    inner: S,
    info: ConnectInfo,
}

impl<S, ReqBody> tower_service::Service<Request<ReqBody>> for WithConnectInfo<S>
where
    S: tower_service::Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> S::Future {
        req.extensions_mut().insert(self.info.clone());
        self.inner.call(req)
    }
}

/// Connects every request's connection to one address (see the module
/// docs): a tower `Service<Uri>` for hyper-util's legacy `Client` and for
/// tonic's `Endpoint::connect_with_connector`.
#[derive(Debug, Clone)]
pub struct Connector {
    addr: Addr,
    opts: ClientOptions,
}

impl Connector {
    /// Connect to `addr` (`unix:PATH` prefers shared memory; `tcp:HOST:PORT`)
    /// with `opts`, whatever the request URIs say.
    pub fn new(addr: Addr, opts: ClientOptions) -> Connector {
        Connector { addr, opts }
    }

    /// The address every connection goes to.
    pub fn addr(&self) -> &Addr {
        &self.addr
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = ShmIo;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<ShmIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Connect a [`ShmStream`] (the URI is not used). Errors as
    /// [`ShmStream::connect`].
    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (addr, opts) = (self.addr.clone(), self.opts.clone());
        Box::pin(async move { Ok(ShmIo::new(ShmStream::connect(&addr, &opts).await?)) })
    }
}

/// A [`ShmStream`] as hyper reads and writes it (hyper's `rt::Read` and
/// `rt::Write`, and hyper-util's `Connection`): what [`Connector`] returns,
/// and what [`serve`] hands to hyper for each accepted stream.
#[derive(Debug)]
pub struct ShmIo {
    io: TokioIo<ShmStream>,
}

impl ShmIo {
    /// Wrap a connected stream.
    pub fn new(stream: ShmStream) -> ShmIo {
        ShmIo { io: TokioIo::new(stream) }
    }

    /// The transport the connection uses: shared memory, or the socket it
    /// fell back to.
    pub fn transport(&self) -> TransportKind {
        self.io.inner().transport()
    }

    /// The stream inside.
    pub fn into_inner(self) -> ShmStream {
        self.io.into_inner()
    }
}

impl Read for ShmIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for ShmIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connection for ShmIo {
    /// Nothing to report beyond an established connection: no proxy, and
    /// HTTP/2 is chosen by the client's settings, not negotiated.
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Serve `service` on every stream `listener` accepts, each connection on
/// its own tokio task, in HTTP/1.1 or HTTP/2 as the client speaks (and with
/// HTTP/1.1 upgrades). `service` is cloned for each connection: an axum
/// `Router`, tonic's `Routes`, or any tower service of hyper requests. Each
/// request carries the connection's [`ConnectInfo`] as an extension.
///
/// A connection that fails (a client that vanishes, a malformed request) is
/// logged at debug level and ends alone; the others go on.
///
/// # Errors
/// Returns only if accepting fails for good ([`ShmListener::accept`]).
pub async fn serve<S, B>(mut listener: ShmListener, service: S) -> Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    loop {
        let stream = listener.accept().await?;
        let info = ConnectInfo::of(&stream);
        let peer = info.peer.clone();
        let svc = TowerToHyperService::new(WithConnectInfo { inner: service.clone(), info });
        tokio::spawn(async move {
            let conn = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection_with_upgrades(ShmIo::new(stream), svc).await {
                tracing::debug!("HTTP connection with {peer} ended: {e}");
            }
        });
    }
}
