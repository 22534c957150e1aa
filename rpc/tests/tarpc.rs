//! A tarpc service between two processes over shmring: the server listens
//! with `shmring_rpc::tarpc::listen` (or `listen_over_stream`), the client
//! connects with `shmring_rpc::tarpc::connect_with` (or
//! `connect_over_stream`); everything else is tarpc's own.
#![cfg(feature = "tarpc")]

mod common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ADDR_ENV, ROLE_ENV, TempDir, server_at};
use futures_util::{StreamExt, future};
use shmring_rpc::{Addr, ClientOptions, ServerOptions, TransportKind};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

#[tarpc::service]
trait World {
    /// A greeting.
    async fn hello(name: String) -> String;
    /// Sleeps `ms` milliseconds, then returns them.
    async fn sleep(ms: u64) -> u64;
    /// How many `sleep` calls were dropped before they finished.
    async fn dropped() -> u64;
    /// The bytes, reversed.
    async fn reverse(data: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct Server(Arc<AtomicU64>);

impl World for Server {
    async fn hello(self, _: context::Context, name: String) -> String {
        format!("Hello, {name}!")
    }

    async fn sleep(self, _: context::Context, ms: u64) -> u64 {
        struct Unfinished(Arc<AtomicU64>, bool);
        impl Drop for Unfinished {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let mut guard = Unfinished(self.0.clone(), false);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        guard.1 = true;
        ms
    }

    async fn dropped(self, _: context::Context) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    async fn reverse(self, _: context::Context, mut data: Vec<u8>) -> Vec<u8> {
        data.reverse();
        data
    }
}

/// Serve every transport of `listener` with [`Server`].
async fn serve_all<T, S>(listener: S)
where
    S: futures_util::Stream<Item = std::io::Result<T>>,
    T: tarpc::Transport<tarpc::Response<WorldResponse>, tarpc::ClientMessage<WorldRequest>> + Send + 'static,
{
    let dropped = Arc::new(AtomicU64::new(0));
    listener
        .filter_map(|r| future::ready(r.ok()))
        .map(BaseChannel::with_defaults)
        .for_each(|channel| {
            let server = Server(dropped.clone());
            tokio::spawn(channel.execute(server.serve()).for_each(|response| async {
                tokio::spawn(response);
            }));
            future::ready(())
        })
        .await;
}

/// Peer entry: the tarpc server; role `native` listens with
/// `shmring_rpc::tarpc::listen`, `stream` with `listen_over_stream`,
/// `limited` as `native` with at most two requests at once per client.
#[test]
#[ignore = "server process for the tarpc tests"]
fn tarpc_server_main() {
    let (Ok(role), Ok(addr)) = (std::env::var(ROLE_ENV), std::env::var(ADDR_ENV)) else { return };
    let addr = Addr::parse(&addr).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        if role == "limited" {
            // tarpc's own throttle: at most two requests at once per client.
            let listener = shmring_rpc::tarpc::listen(&addr).await.unwrap();
            println!("listening {}", listener.local_addr());
            std::io::stdout().flush().unwrap();
            let dropped = Arc::new(AtomicU64::new(0));
            listener
                .filter_map(|r| future::ready(r.ok()))
                .map(|t| BaseChannel::with_defaults(t).max_concurrent_requests(2))
                .for_each(|channel| {
                    let server = Server(dropped.clone());
                    tokio::spawn(channel.execute(server.serve()).for_each(|response| async {
                        tokio::spawn(response);
                    }));
                    future::ready(())
                })
                .await;
        } else if role == "stream" {
            let opts = ServerOptions::new();
            let listener = shmring_rpc::tarpc::listen_over_stream(&addr, &opts, Bincode::default).await.unwrap();
            println!("listening {}", listener.local_addr());
            std::io::stdout().flush().unwrap();
            serve_all(listener).await;
        } else {
            let listener = shmring_rpc::tarpc::listen(&addr).await.unwrap();
            println!("listening {}", listener.local_addr());
            std::io::stdout().flush().unwrap();
            serve_all(listener).await;
        }
    });
}

/// A connected client, by the native transport or over a stream.
async fn connect(addr: &Addr, t: Option<TransportKind>, over_stream: bool) -> WorldClient {
    let opts = match t {
        Some(t) => ClientOptions::new().transport(t),
        None => ClientOptions::new(),
    };
    let want = t.unwrap_or(TransportKind::Tcp);
    if over_stream {
        let transport = shmring_rpc::tarpc::connect_over_stream(addr, &opts, Bincode::default).await.unwrap();
        assert_eq!(transport.get_ref().transport(), want);
        WorldClient::new(client::Config::default(), transport).spawn()
    } else {
        let transport = shmring_rpc::tarpc::connect_with(addr, &opts).await.unwrap();
        assert_eq!(transport.transport(), want);
        WorldClient::new(client::Config::default(), transport).spawn()
    }
}

#[test]
fn a_tarpc_service_over_shm_the_socket_and_tcp_with_deadlines_and_cancellation() {
    service_over_every_transport("native");
}

#[test]
fn tarpcs_own_serde_transport_over_a_shm_stream_too() {
    service_over_every_transport("stream");
}

fn service_over_every_transport(role: &str) {
    let dir = TempDir::new("tarpc");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let unix = server_at("tarpc_server_main", role, &dir.addr());
    let tcp = server_at("tarpc_server_main", role, &Addr::parse("tcp:127.0.0.1:0").unwrap());
    let cases = [(&unix.addr, Some(TransportKind::Shm)), (&unix.addr, Some(TransportKind::Unix)), (&tcp.addr, None)];
    for (n, (addr, t)) in cases.into_iter().enumerate() {
        rt.block_on(async {
            let client = connect(addr, t, role == "stream").await;
            assert_eq!(client.hello(context::current(), "shm".into()).await.unwrap(), "Hello, shm!");
            // Many calls in flight at once.
            let calls = (0..64).map(|i| client.hello(context::current(), format!("{i}")));
            for (i, r) in future::join_all(calls).await.into_iter().enumerate() {
                assert_eq!(r.unwrap(), format!("Hello, {i}!"));
            }
            // Messages larger than a ring record (1 MiB rings): chunked.
            for len in [0, 100_000, 3 << 20] {
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let mut want = data.clone();
                want.reverse();
                assert_eq!(client.reverse(context::current(), data).await.unwrap(), want, "{len} bytes");
            }
            // A deadline that passes.
            let mut ctx = context::current();
            ctx.deadline = Instant::now() + Duration::from_millis(200);
            let started = Instant::now();
            assert!(client.sleep(ctx, 5_000).await.is_err(), "past its deadline");
            assert!(started.elapsed() < Duration::from_secs(3));
            // A call dropped before its reply: tarpc cancels it on the server.
            let dropped =
                tokio::time::timeout(Duration::from_millis(200), client.sleep(context::current(), 5_000)).await;
            assert!(dropped.is_err());
            // Both were dropped on the server (the unix address's server
            // serves two of the cases).
            let want = if addr == &unix.addr { 2 * (n as u64 + 1) } else { 2 };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let got = client.dropped(context::current()).await.unwrap();
                if got == want {
                    break;
                }
                assert!(got < want && Instant::now() < deadline, "{got} handler futures dropped, expected {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}

#[test]
fn a_killed_server_fails_pending_calls_at_once_not_at_their_deadline() {
    let dir = TempDir::new("tarpc-kill");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut srv = server_at("tarpc_server_main", "native", &dir.addr());
    rt.block_on(async {
        let client = connect(&srv.addr, Some(TransportKind::Shm), false).await;
        assert_eq!(client.hello(context::current(), "x".into()).await.unwrap(), "Hello, x!");
        let pending = tokio::spawn({
            let client = client.clone();
            async move { client.sleep(context::current(), 60_000).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        srv.child.kill().unwrap();
        let killed = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("the call failed promptly").unwrap();
        assert!(r.is_err(), "a call to a killed server must fail, got {r:?}");
        assert!(killed.elapsed() < Duration::from_secs(5));
        // Later calls fail too, at once.
        let later = tokio::time::timeout(Duration::from_secs(5), client.hello(context::current(), "y".into())).await;
        assert!(later.expect("a later call failed promptly").is_err());
    });
}

#[test]
fn tarpcs_max_concurrent_requests_holds_over_shm() {
    let dir = TempDir::new("tarpc-limit");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let srv = server_at("tarpc_server_main", "limited", &dir.addr());
    rt.block_on(async {
        let client = connect(&srv.addr, Some(TransportKind::Shm), false).await;
        let calls = (0..4).map(|_| client.sleep(context::current(), 1_000));
        let results = future::join_all(calls).await;
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(tarpc::client::RpcError::Server(e)) if e.detail.contains("throttled")))
            .count();
        let served = results.iter().filter(|r| matches!(r, Ok(1_000))).count();
        assert_eq!((served, refused), (2, 2), "{results:?}");
    });
}
