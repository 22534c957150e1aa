//! HTTP and gRPC (features `http` and `grpc`): this process is the client, on a
//! current-thread tokio runtime; the peer serves an echo on a two-worker tokio runtime.
//!
//! * http-shm, http-unix, http-tcp: hyper HTTP/1.1, a `POST` whose 64-byte body comes back as
//!   the response's body. The client is hyper-util's (its pool opens one connection per call in
//!   flight: HTTP/1.1 has no multiplexing). http-shm connects with
//!   [`shmring_rpc::http::Connector`] and the peer serves with [`shmring_rpc::http::serve`];
//!   http-unix and http-tcp are plain hyper on a tokio UNIX or TCP (`TCP_NODELAY`) socket.
//! * grpc-shm, grpc-tcp: tonic, a unary call whose 64-byte message comes back, all calls on one
//!   HTTP/2 connection. grpc-shm connects with `connect_with_connector` and serves with
//!   `serve_with_incoming` on a [`ShmListener`]; grpc-tcp is tonic's own TCP.
//!
//! The peer, the control socket and the two modes are those of the shmring-rpc rows (see
//! [`super::rpc`]); every request carries its sequence number ([`protocol::stamp`]) and every
//! reply is checked against it, every byte read.

use std::future::Future;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use shmring_rpc::{Addr, ClientOptions, ServerOptions, ShmListener, ShmStream, TransportKind};

use super::case::{Budget, Case, Transport};
use super::peer::{self, ChildSpec, Launcher};
use super::protocol::{self, Outcome};
use super::rpc::{self, Caller};

/// What the table says of these rows.
pub(crate) const NOTE: &str = "http-*: hyper HTTP/1.1 POSTs of 64 B echoed, hyper-util's client (its pool \
     opens one connection per call in flight: HTTP/1.1 does not multiplex); grpc-*: tonic unary echoes, \
     every call on one HTTP/2 connection; clients on a current-thread tokio runtime, servers on two \
     tokio workers in the peer.";

/// The served future of a peer: ends only if serving fails, and says why.
type Serving = Pin<Box<dyn Future<Output = String> + Send>>;

/// Parent side: measures `case` against a server in the peer.
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    let tcp = case.transport.name().ends_with("-tcp");
    rpc::with_server(case, budget, launcher, tcp, |addr| {
        let rt = rpc::client_runtime()?;
        match case.transport {
            #[cfg(feature = "grpc")]
            Transport::GrpcShm | Transport::GrpcTcp => {
                let client = rt.block_on(grpc::connect(case.transport, addr))?;
                rpc::async_calls(&rt, case, budget, || grpc::EchoCaller::new(&client, case.payload))
            }
            _ => {
                let client = rt.block_on(http::connect(case.transport, addr))?;
                rpc::async_calls(&rt, case, budget, || http::EchoCaller::new(&client, case.payload))
            }
        }
    })
}

/// Child side: listens where the parent said, tells it where that is, and serves until the
/// parent closes the control socket.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let control = UnixStream::from(peer::adopt_fd(spec, 0)?);
    let addr = Addr::parse(peer::name(spec, 0)?).map_err(|e| format!("{}: {e}", spec.case.transport.name()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("web: starting a tokio runtime: {e}"))?;
    let (bound, serving) = rt.block_on(async {
        match spec.case.transport {
            #[cfg(feature = "grpc")]
            t @ (Transport::GrpcShm | Transport::GrpcTcp) => grpc::listen(t, &addr).await,
            t => http::listen(t, &addr).await,
        }
    })?;
    rpc::serve_until_closed(control, bound, move || rt.block_on(serving))
}

/// The shared-memory rows' listener: busy-polling rings, as the shmring-rpc rows.
fn shm_listener(addr: &Addr) -> Result<ShmListener, String> {
    let opts = ServerOptions::new().wait_policy(shmring::WaitPolicy::busy_poll());
    ShmListener::bind(addr, &opts).map_err(|e| format!("web: listening at {addr}: {e}"))
}

/// The shared-memory rows' client options; the first connection is checked to use the rings.
async fn shm_options(addr: &Addr) -> Result<ClientOptions, String> {
    let opts = ClientOptions::new().transport(TransportKind::Shm).wait_policy(shmring::WaitPolicy::busy_poll());
    let probe = ShmStream::connect(addr, &opts).await.map_err(|e| format!("web: connecting to {addr}: {e}"))?;
    rpc::check_transport(probe.transport(), TransportKind::Shm)?;
    Ok(opts)
}

/// A future that is ready at once: what `poll_ready` of a service that is always ready says.
fn always_ready<E>(_: &mut Context<'_>) -> Poll<Result<(), E>> {
    Poll::Ready(Ok(()))
}

mod http {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    use tokio::io::{AsyncRead, AsyncWrite};

    /// The server: a tower service whose response body is the request's body.
    #[derive(Clone)]
    struct Echo;

    impl tower_service::Service<Request<Incoming>> for Echo {
        type Response = Response<Full<Bytes>>;
        type Error = hyper::Error;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
            always_ready(cx)
        }

        fn call(&mut self, req: Request<Incoming>) -> Self::Future {
            Box::pin(async move { Ok(Response::new(Full::new(req.into_body().collect().await?.to_bytes()))) })
        }
    }

    /// Serves one accepted connection in a task of its own, HTTP/1.1 or HTTP/2.
    fn spawn_connection<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: IO) {
        tokio::spawn(async move {
            let conn = auto::Builder::new(TokioExecutor::new());
            let _ = conn.serve_connection(TokioIo::new(io), TowerToHyperService::new(Echo)).await;
        });
    }

    /// Child side: listens at `addr`; returns the address bound, as the parent can connect to
    /// it, and the serving future.
    pub(super) async fn listen(transport: Transport, addr: &Addr) -> Result<(String, Serving), String> {
        let failed = |e: &dyn std::fmt::Display| format!("http: listening at {addr}: {e}");
        match (transport, addr) {
            (Transport::HttpShm, Addr::Unix(_)) => {
                let listener = shm_listener(addr)?;
                let bound = listener.local_addr().to_string();
                let serving = async move {
                    match shmring_rpc::http::serve(listener, Echo).await {
                        Ok(()) => "the listener stopped accepting".to_owned(),
                        Err(e) => e.to_string(),
                    }
                };
                Ok((bound, Box::pin(serving)))
            }
            (Transport::HttpUnix, Addr::Unix(path)) => {
                let listener = tokio::net::UnixListener::bind(path).map_err(|e| failed(&e))?;
                let serving = async move {
                    loop {
                        match listener.accept().await {
                            Ok((s, _)) => spawn_connection(s),
                            Err(e) => return format!("accepting: {e}"),
                        }
                    }
                };
                Ok((addr.to_string(), Box::pin(serving)))
            }
            (Transport::HttpTcp, Addr::Tcp(host_port)) => {
                let listener = tokio::net::TcpListener::bind(host_port).await.map_err(|e| failed(&e))?;
                let bound = format!("tcp:{}", listener.local_addr().map_err(|e| failed(&e))?);
                let serving = async move {
                    loop {
                        match listener.accept().await {
                            Ok((s, _)) => {
                                let _ = s.set_nodelay(true);
                                spawn_connection(s)
                            }
                            Err(e) => return format!("accepting: {e}"),
                        }
                    }
                };
                Ok((bound, Box::pin(serving)))
            }
            (t, _) => Err(format!("http: {} cannot listen at {addr}", t.name())),
        }
    }

    /// Connects hyper-util's client to a UNIX socket, whatever the URI says.
    #[derive(Clone)]
    struct UnixConnector(std::path::PathBuf);

    impl tower_service::Service<hyper::Uri> for UnixConnector {
        type Response = TokioIo<tokio::net::UnixStream>;
        type Error = std::io::Error;
        type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            always_ready(cx)
        }

        fn call(&mut self, _: hyper::Uri) -> Self::Future {
            let path = self.0.clone();
            Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
        }
    }

    /// A client of one transport (the three connectors make three client types), and where
    /// it posts.
    #[derive(Clone)]
    pub(super) struct EchoClient {
        kind: Kind,
        uri: hyper::Uri,
    }

    #[derive(Clone)]
    enum Kind {
        Shm(Client<shmring_rpc::http::Connector, Full<Bytes>>),
        Unix(Client<UnixConnector, Full<Bytes>>),
        Tcp(Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>),
    }

    /// Parent side: a client of the peer's server at `addr`.
    pub(super) async fn connect(transport: Transport, addr: &Addr) -> Result<EchoClient, String> {
        let builder = Client::builder(TokioExecutor::new());
        // The connectors of the shm and unix rows ignore the URI's authority; TCP dials it.
        let local = hyper::Uri::from_static("http://localhost/echo");
        match (transport, addr) {
            (Transport::HttpShm, Addr::Unix(_)) => {
                let connector = shmring_rpc::http::Connector::new(addr.clone(), shm_options(addr).await?);
                Ok(EchoClient { kind: Kind::Shm(builder.build(connector)), uri: local })
            }
            (Transport::HttpUnix, Addr::Unix(path)) => {
                Ok(EchoClient { kind: Kind::Unix(builder.build(UnixConnector(path.clone()))), uri: local })
            }
            (Transport::HttpTcp, Addr::Tcp(host_port)) => {
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_nodelay(true);
                let uri = format!("http://{host_port}/echo").parse().map_err(|e| format!("http: {host_port}: {e}"))?;
                Ok(EchoClient { kind: Kind::Tcp(builder.build(connector)), uri })
            }
            (t, _) => Err(format!("http: {} has no server at {addr}", t.name())),
        }
    }

    /// One caller: the client and its request body.
    pub(super) struct EchoCaller {
        client: EchoClient,
        msg: Vec<u8>,
    }

    impl EchoCaller {
        pub(super) fn new(client: &EchoClient, payload: usize) -> EchoCaller {
            EchoCaller { client: client.clone(), msg: vec![0u8; payload] }
        }
    }

    impl Caller for EchoCaller {
        async fn call(&mut self, seq: u64) -> Result<(), String> {
            protocol::stamp(&mut self.msg, seq);
            let req = Request::post(self.client.uri.clone())
                .body(Full::new(Bytes::copy_from_slice(&self.msg)))
                .map_err(|e| format!("http: request {seq}: {e}"))?;
            let sent = match &self.client.kind {
                Kind::Shm(c) => c.request(req).await,
                Kind::Unix(c) => c.request(req).await,
                Kind::Tcp(c) => c.request(req).await,
            };
            let reply = sent.map_err(|e| format!("http: call {seq}: {e}"))?;
            if !reply.status().is_success() {
                return Err(format!("http: call {seq}: {}", reply.status()));
            }
            let body = reply.into_body().collect().await.map_err(|e| format!("http: reply to call {seq}: {e}"))?;
            rpc::check_echo(&body.to_bytes(), self.msg.len(), seq)
        }
    }
}

#[cfg(feature = "grpc")]
mod grpc {
    use super::*;
    use tonic::transport::{Channel, Endpoint, Server};

    mod proto {
        #![allow(missing_docs, clippy::derive_partial_eq_without_eq)]
        tonic::include_proto!("bench");
    }
    use proto::Payload;
    use proto::echo_client::EchoClient;
    use proto::echo_server::{Echo, EchoServer};

    /// The service: the reply is the request.
    struct EchoService;

    #[tonic::async_trait]
    impl Echo for EchoService {
        async fn echo(&self, req: tonic::Request<Payload>) -> Result<tonic::Response<Payload>, tonic::Status> {
            Ok(tonic::Response::new(req.into_inner()))
        }
    }

    /// Child side: listens at `addr`; returns the address bound and the serving future.
    pub(super) async fn listen(transport: Transport, addr: &Addr) -> Result<(String, Serving), String> {
        let failed = |e: &dyn std::fmt::Display| format!("grpc: listening at {addr}: {e}");
        let server = Server::builder().add_service(EchoServer::new(EchoService));
        let why = |r: Result<(), tonic::transport::Error>| match r {
            Ok(()) => "the server stopped".to_owned(),
            Err(e) => e.to_string(),
        };
        match (transport, addr) {
            (Transport::GrpcShm, Addr::Unix(_)) => {
                let listener = shm_listener(addr)?;
                let bound = listener.local_addr().to_string();
                Ok((bound, Box::pin(async move { why(server.serve_with_incoming(listener).await) })))
            }
            (Transport::GrpcTcp, Addr::Tcp(host_port)) => {
                let listener = tokio::net::TcpListener::bind(host_port).await.map_err(|e| failed(&e))?;
                let bound = format!("tcp:{}", listener.local_addr().map_err(|e| failed(&e))?);
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                Ok((bound, Box::pin(async move { why(server.serve_with_incoming(incoming).await) })))
            }
            (t, _) => Err(format!("grpc: {} cannot listen at {addr}", t.name())),
        }
    }

    /// Parent side: one HTTP/2 channel to the peer's server at `addr`.
    pub(super) async fn connect(transport: Transport, addr: &Addr) -> Result<EchoClient<Channel>, String> {
        let failed = |e: &dyn std::fmt::Display| format!("grpc: connecting to {addr}: {e}");
        let channel = match (transport, addr) {
            (Transport::GrpcShm, Addr::Unix(_)) => {
                let connector = shmring_rpc::http::Connector::new(addr.clone(), shm_options(addr).await?);
                Endpoint::from_static("http://bench").connect_with_connector(connector).await.map_err(|e| failed(&e))?
            }
            (Transport::GrpcTcp, Addr::Tcp(host_port)) => Endpoint::from_shared(format!("http://{host_port}"))
                .map_err(|e| failed(&e))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| failed(&e))?,
            (t, _) => return Err(format!("grpc: {} has no server at {addr}", t.name())),
        };
        Ok(EchoClient::new(channel))
    }

    /// One caller: a handle on the channel and the message it stamps for each call.
    pub(super) struct EchoCaller {
        client: EchoClient<Channel>,
        msg: Vec<u8>,
    }

    impl EchoCaller {
        pub(super) fn new(client: &EchoClient<Channel>, payload: usize) -> EchoCaller {
            EchoCaller { client: client.clone(), msg: vec![0u8; payload] }
        }
    }

    impl Caller for EchoCaller {
        async fn call(&mut self, seq: u64) -> Result<(), String> {
            protocol::stamp(&mut self.msg, seq);
            let reply = self
                .client
                .echo(Payload { data: self.msg.clone() })
                .await
                .map_err(|e| format!("grpc: call {seq}: {e}"))?;
            rpc::check_echo(&reply.into_inner().data, self.msg.len(), seq)
        }
    }
}
