//! The http-* rows: hyper HTTP/1.1 over shmring's ShmStream, a UNIX socket or TCP.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use shmring_rpc::Addr;
use tokio::io::{AsyncRead, AsyncWrite};

use super::shm::{Serving, always_ready, shm_listener, shm_options};
use crate::bench::case::Transport;
use crate::bench::protocol;
use crate::bench::rpc::{self, Caller};

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
pub(crate) async fn listen(transport: Transport, addr: &Addr) -> Result<(String, Serving), String> {
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
pub(crate) struct EchoClient {
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
pub(crate) async fn connect(transport: Transport, addr: &Addr) -> Result<EchoClient, String> {
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
pub(crate) struct EchoCaller {
    client: EchoClient,
    msg: Vec<u8>,
}

impl EchoCaller {
    pub(crate) fn new(client: &EchoClient, payload: usize) -> EchoCaller {
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
