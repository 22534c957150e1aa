//! The http-* rows: hyper HTTP/1.1 over shmring's ShmStream, a UNIX socket or TCP. Each
//! caller has a connection of its own (HTTP/1.1 does not multiplex): 64 in flight, 64
//! connections, opened once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use shmring_rpc::Addr;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service as _;

use super::shm::{Serving, shm_listener, shm_options};
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

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        Poll::Ready(Ok(()))
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

/// The plain sockets' listeners (the shared-memory row serves with shmring-rpc's own loop).
enum Plain {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl Plain {
    /// Accepts connections and serves each in a task of its own; returns why it stopped.
    async fn serve(self) -> String {
        loop {
            let accepted = match &self {
                Plain::Unix(l) => l.accept().await.map(|(s, _)| spawn_connection(s)),
                Plain::Tcp(l) => l.accept().await.map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    spawn_connection(s)
                }),
            };
            if let Err(e) = accepted {
                return format!("accepting: {e}");
            }
        }
    }
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
            Ok((addr.to_string(), Box::pin(Plain::Unix(listener).serve())))
        }
        (Transport::HttpTcp, Addr::Tcp(host_port)) => {
            let listener = tokio::net::TcpListener::bind(host_port).await.map_err(|e| failed(&e))?;
            let bound = format!("tcp:{}", listener.local_addr().map_err(|e| failed(&e))?);
            Ok((bound, Box::pin(Plain::Tcp(listener).serve())))
        }
        (t, _) => Err(format!("http: {} cannot listen at {addr}", t.name())),
    }
}

/// Where the peer's server is, and how to reach it: each caller opens a connection of its own.
#[derive(Clone)]
pub(crate) enum EchoClient {
    Shm(shmring_rpc::http::Connector),
    Unix(std::path::PathBuf),
    Tcp(String),
}

/// Parent side: how to reach the peer's server at `addr`.
pub(crate) fn connect(transport: Transport, addr: &Addr) -> Result<EchoClient, String> {
    match (transport, addr) {
        (Transport::HttpShm, Addr::Unix(_)) => {
            Ok(EchoClient::Shm(shmring_rpc::http::Connector::new(addr.clone(), shm_options())))
        }
        (Transport::HttpUnix, Addr::Unix(path)) => Ok(EchoClient::Unix(path.clone())),
        (Transport::HttpTcp, Addr::Tcp(host_port)) => Ok(EchoClient::Tcp(host_port.clone())),
        (t, _) => Err(format!("http: {} has no server at {addr}", t.name())),
    }
}

impl EchoClient {
    /// A new HTTP/1.1 connection, its driving task spawned.
    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let failed = |e: &dyn std::fmt::Display| format!("http: connecting: {e}");
        match self {
            EchoClient::Shm(connector) => {
                let io = connector.clone().call(Uri::from_static("http://localhost/")).await.map_err(|e| failed(&e))?;
                handshake(io).await
            }
            EchoClient::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(|e| failed(&e))?;
                handshake(TokioIo::new(s)).await
            }
            EchoClient::Tcp(host_port) => {
                let s = tokio::net::TcpStream::connect(host_port).await.map_err(|e| failed(&e))?;
                s.set_nodelay(true).map_err(|e| failed(&e))?;
                handshake(TokioIo::new(s)).await
            }
        }
    }
}

/// hyper's HTTP/1.1 handshake on `io`; the connection runs in a task of its own.
async fn handshake<IO>(io: IO) -> Result<SendRequest<Full<Bytes>>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io).await.map_err(|e| format!("http: handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One caller: its connection (opened at its first call, and again if it closes) and its
/// request body.
pub(crate) struct EchoCaller {
    client: EchoClient,
    conn: Option<SendRequest<Full<Bytes>>>,
    msg: Vec<u8>,
}

impl EchoCaller {
    pub(crate) fn new(client: &EchoClient, payload: usize) -> EchoCaller {
        EchoCaller { client: client.clone(), conn: None, msg: vec![0u8; payload] }
    }
}

impl Caller for EchoCaller {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        protocol::stamp(&mut self.msg, seq);
        let conn = match &mut self.conn {
            Some(c) if !c.is_closed() => c,
            _ => self.conn.insert(self.client.open().await?),
        };
        // The connectors of the shm and unix rows ignore the authority; the server, the URI.
        let req = Request::post("http://localhost/echo")
            .body(Full::new(Bytes::copy_from_slice(&self.msg)))
            .map_err(|e| format!("http: request {seq}: {e}"))?;
        conn.ready().await.map_err(|e| format!("http: call {seq}: {e}"))?;
        let reply = conn.send_request(req).await.map_err(|e| format!("http: call {seq}: {e}"))?;
        if !reply.status().is_success() {
            return Err(format!("http: call {seq}: {}", reply.status()));
        }
        let body = reply.into_body().collect().await.map_err(|e| format!("http: reply to call {seq}: {e}"))?;
        rpc::check_echo(&body.to_bytes(), self.msg.len(), seq)
    }
}
