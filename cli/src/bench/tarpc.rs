//! tarpc (feature `tarpc`): this process is the client, on a current-thread tokio runtime; the
//! peer serves an echo service on a multi-thread tokio runtime with tokio's default worker count,
//! one per CPU the peer may use: one when pinned (two workers on one CPU only take turns).
//!
//! * rpc-tarpc-shm: shmring-rpc's tarpc transport (`shmring_rpc::tarpc::{listen, connect}`),
//!   at a `unix:` address in a private temporary directory.
//! * rpc-tarpc-unix, rpc-tarpc-tcp: tarpc's own `serde_transport` (bincode) over a UNIX socket
//!   in a private temporary directory, or TCP on 127.0.0.1.
//! * rpc-tarpc-inmemory: tarpc's in-memory channel, the server on the client's own runtime;
//!   no peer process.
//!
//! The peer, the control socket and the two modes are those of the shmring-rpc rows (see
//! [`super::rpc`]); every request carries its sequence number ([`protocol::stamp`]) and every
//! reply is checked against it, every byte read.

use std::os::unix::net::UnixStream;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, future, stream};
use shmring_rpc::{Addr, TransportKind};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{ClientMessage, Response, context};

use super::case::{Budget, Case, Transport};
use super::peer::{self, ChildSpec, Launcher};
use super::protocol::{self, Outcome};
use super::rpc::{self, Caller};

/// The service: the reply is the request. Payloads are `bytes::Bytes`, which serde moves in
/// one piece (a `Vec<u8>` goes through serde one byte at a time, which would hide every
/// transport's cost at 1 MiB).
#[tarpc::service]
trait Echo {
    async fn echo(data: Bytes) -> Bytes;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, data: Bytes) -> Bytes {
        data
    }
}

/// Serves every connection of `transports` on the current runtime, each request in a task of
/// its own, until `transports` ends.
async fn serve_all<T>(transports: impl futures_util::Stream<Item = T>)
where
    T: tarpc::Transport<Response<EchoResponse>, ClientMessage<EchoRequest>> + Send + 'static,
{
    transports
        .map(BaseChannel::with_defaults)
        .for_each(|channel| {
            tokio::spawn(channel.execute(EchoServer.serve()).for_each(|response| async {
                tokio::spawn(response);
            }));
            future::ready(())
        })
        .await;
}

/// Parent side: measures `case`, with a server in the peer (or, in memory, on this thread).
pub(crate) fn parent(case: &Case, budget: &Budget, launcher: &Launcher) -> Result<Outcome, String> {
    match case.transport {
        Transport::RpcTarpcInmemory => in_memory(case, budget),
        t => rpc::with_server(case, budget, launcher, t == Transport::RpcTarpcTcp, |addr| client(case, budget, addr)),
    }
}

/// Parent side: connects to the peer's server at `addr` and measures.
fn client(case: &Case, budget: &Budget, addr: &Addr) -> Result<Outcome, String> {
    let rt = rpc::client_runtime()?;
    let client = rt.block_on(connect(case.transport, addr))?;
    let outcome = rpc::async_calls(&rt, case, budget, || EchoCaller::new(&client, case.payload));
    // Ends the connection (its dispatch task) before the runtime goes.
    drop(client);
    outcome
}

/// Parent side: client and server on one current-thread runtime, joined by tarpc's channel.
fn in_memory(case: &Case, budget: &Budget) -> Result<Outcome, String> {
    let rt = rpc::client_runtime()?;
    let (client_end, server_end) = tarpc::transport::channel::unbounded();
    let client = rt.block_on(async {
        tokio::spawn(serve_all(stream::once(future::ready(server_end))));
        EchoClient::new(tarpc::client::Config::default(), client_end).spawn()
    });
    let outcome = rpc::async_calls(&rt, case, budget, || EchoCaller::new(&client, case.payload));
    drop(client);
    outcome
}

/// Parent side: a client of the peer's server at `addr`, over the transport of `transport`.
async fn connect(transport: Transport, addr: &Addr) -> Result<EchoClient, String> {
    let config = tarpc::client::Config::default();
    let failed = |e: &dyn std::fmt::Display| format!("tarpc: connecting to {addr}: {e}");
    match (transport, addr) {
        (Transport::RpcTarpcShm, Addr::Unix(_)) => {
            let t = shmring_rpc::tarpc::connect(addr).await.map_err(|e| failed(&e))?;
            rpc::check_transport(t.transport(), TransportKind::Shm)?;
            Ok(EchoClient::new(config, t).spawn())
        }
        (Transport::RpcTarpcUnix, Addr::Unix(path)) => {
            let t = tarpc::serde_transport::unix::connect(path, Bincode::default).await.map_err(|e| failed(&e))?;
            Ok(EchoClient::new(config, t).spawn())
        }
        (Transport::RpcTarpcTcp, Addr::Tcp(host_port)) => {
            let t = tarpc::serde_transport::tcp::connect(host_port, Bincode::default).await.map_err(|e| failed(&e))?;
            Ok(EchoClient::new(config, t).spawn())
        }
        (t, _) => Err(format!("tarpc: {} has no server at {addr}", t.name())),
    }
}

/// One caller: a handle on the client, and the buffer its next request goes out in.
struct EchoCaller {
    client: EchoClient,
    payload: usize,
    /// The last reply, to be stamped and sent as the next request: a reply nothing else
    /// holds (read off the wire, or the request itself, echoed in memory) costs no new buffer.
    spare: Option<BytesMut>,
}

impl EchoCaller {
    fn new(client: &EchoClient, payload: usize) -> EchoCaller {
        EchoCaller { client: client.clone(), payload, spare: None }
    }
}

impl Caller for EchoCaller {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        let mut msg = self.spare.take().unwrap_or_else(|| BytesMut::zeroed(self.payload));
        protocol::stamp(&mut msg, seq);
        let reply =
            self.client.echo(context::current(), msg.freeze()).await.map_err(|e| format!("tarpc: call {seq}: {e}"))?;
        rpc::check_echo(&reply, self.payload, seq)?;
        self.spare = reply.try_into_mut().ok();
        Ok(())
    }
}

/// Child side: listens where the parent said, tells it where that is, and serves until the
/// parent closes the control socket.
pub(crate) fn child(spec: &ChildSpec) -> Result<(), String> {
    let control = UnixStream::from(peer::adopt_fd(spec, 0)?);
    let addr = Addr::parse(peer::name(spec, 0)?).map_err(|e| format!("tarpc: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tarpc: starting a tokio runtime: {e}"))?;
    let (bound, serving) = rt.block_on(listen(spec.case.transport, &addr))?;
    rpc::serve_until_closed(control, bound, move || match rt.block_on(serving) {
        Ok(()) => "the listener stopped accepting".to_owned(),
        Err(e) => format!("the server task failed: {e}"),
    })
}

/// A connection accepted; a failed accept is skipped (a client that never got through fails
/// on its side).
fn accepted<T>(r: std::io::Result<T>) -> future::Ready<Option<T>> {
    future::ready(r.ok())
}

/// Child side: listens at `addr` and serves there in a task of its own; returns the address
/// bound, as the parent can connect to it, and the serving task.
async fn listen(transport: Transport, addr: &Addr) -> Result<(String, tokio::task::JoinHandle<()>), String> {
    let failed = |e: &dyn std::fmt::Display| format!("tarpc: listening at {addr}: {e}");
    match (transport, addr) {
        (Transport::RpcTarpcShm, Addr::Unix(_)) => {
            let incoming = shmring_rpc::tarpc::listen(addr).await.map_err(|e| failed(&e))?;
            let bound = incoming.local_addr().to_string();
            Ok((bound, tokio::spawn(serve_all(incoming.filter_map(accepted)))))
        }
        (Transport::RpcTarpcUnix, Addr::Unix(path)) => {
            let incoming =
                tarpc::serde_transport::unix::listen(path, Bincode::default).await.map_err(|e| failed(&e))?;
            Ok((addr.to_string(), tokio::spawn(serve_all(incoming.filter_map(accepted)))))
        }
        (Transport::RpcTarpcTcp, Addr::Tcp(host_port)) => {
            let incoming =
                tarpc::serde_transport::tcp::listen(host_port, Bincode::default).await.map_err(|e| failed(&e))?;
            let bound = format!("tcp:{}", incoming.local_addr());
            Ok((bound, tokio::spawn(serve_all(incoming.filter_map(accepted)))))
        }
        (t, _) => Err(format!("tarpc: {} cannot listen at {addr}", t.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes every request with the byte at this offset flipped.
    #[derive(Clone)]
    struct Corrupting(usize);

    impl Echo for Corrupting {
        async fn echo(self, _: context::Context, data: Bytes) -> Bytes {
            let mut data = data.to_vec();
            data[self.0] ^= 1;
            data.into()
        }
    }

    /// Makes `calls` calls of `payload` bytes on a client served in memory, by [`EchoServer`],
    /// or by [`Corrupting`] if `flip` says where.
    fn calls(flip: Option<usize>, payload: usize, calls: u64) -> Result<(), String> {
        let rt = rpc::client_runtime()?;
        let (client_end, server_end) = tarpc::transport::channel::unbounded();
        rt.block_on(async {
            match flip {
                None => drop(tokio::spawn(serve_all(stream::once(future::ready(server_end))))),
                Some(at) => {
                    let responses = BaseChannel::with_defaults(server_end).execute(Corrupting(at).serve());
                    tokio::spawn(responses.for_each(|response| async {
                        tokio::spawn(response);
                    }));
                }
            }
            let client = EchoClient::new(tarpc::client::Config::default(), client_end).spawn();
            let mut caller = EchoCaller::new(&client, payload);
            for seq in 1..=calls {
                caller.call(seq).await?;
            }
            Ok(())
        })
    }

    #[test]
    fn replies_are_checked() {
        for payload in [64, 1 << 20] {
            calls(None, payload, 3).unwrap();
            // Either end of the sequence number, and of the tail that mirrors it.
            for at in [0, 7, payload - 8, payload - 1] {
                let e = calls(Some(at), payload, 1).unwrap_err();
                assert!(e.contains("call 1"), "{e}");
            }
        }
    }
}
