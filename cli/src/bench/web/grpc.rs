//! The grpc-* rows: tonic unary calls over shmring's ShmStream or TCP.

use shmring_rpc::Addr;
use tonic::transport::{Channel, Endpoint, Server};

use super::shm::{Serving, shm_listener, shm_options};
use crate::bench::case::Transport;
use crate::bench::protocol;
use crate::bench::rpc::{self, Caller};

mod proto {
    #![allow(missing_docs, clippy::derive_partial_eq_without_eq)]
    tonic::include_proto!("bench");
}
use proto::Payload;
use proto::echo_client::EchoClient;
use proto::echo_server::{Echo, EchoServer};

/// The transports of these rows.
pub(crate) const ROWS: [Transport; 2] = [Transport::GrpcShm, Transport::GrpcTcp];

/// The service: the reply is the request.
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, req: tonic::Request<Payload>) -> Result<tonic::Response<Payload>, tonic::Status> {
        Ok(tonic::Response::new(req.into_inner()))
    }
}

/// Child side: listens at `addr`; returns the address bound and the serving future.
pub(crate) async fn listen(transport: Transport, addr: &Addr) -> Result<(String, Serving), String> {
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
pub(crate) async fn connect(transport: Transport, addr: &Addr) -> Result<EchoClient<Channel>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("grpc: connecting to {addr}: {e}");
    let channel = match (transport, addr) {
        (Transport::GrpcShm, Addr::Unix(_)) => {
            let connector = shmring_rpc::http::Connector::new(addr.clone(), shm_options());
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

/// One caller: a handle on the channel, and the buffer its next request goes out in (the last
/// reply's, once checked: no new buffer per call).
pub(crate) struct EchoCaller {
    client: EchoClient<Channel>,
    payload: usize,
    msg: Vec<u8>,
}

impl EchoCaller {
    pub(crate) fn new(client: &EchoClient<Channel>, payload: usize) -> EchoCaller {
        EchoCaller { client: client.clone(), payload, msg: vec![0u8; payload] }
    }
}

impl Caller for EchoCaller {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        protocol::stamp(&mut self.msg, seq);
        let request = Payload { data: std::mem::take(&mut self.msg) };
        let reply = self.client.echo(request).await.map_err(|e| format!("grpc: call {seq}: {e}"))?;
        let data = reply.into_inner().data;
        rpc::check_echo(&data, self.payload, seq)?;
        self.msg = data;
        Ok(())
    }
}
