//! tarpc services between two processes, one run, four transports (feature
//! `tarpc`):
//!
//! - `rpc-tarpc-shm`: `shmring_rpc::tarpc::{connect, listen}` (tarpc
//!   messages as frames through the rings, bincode written straight into
//!   the ring),
//! - `rpc-tarpc-shm-stream`: tarpc's own `serde_transport` over a
//!   `ShmStream` (`connect_over_stream`: the second way in),
//! - `rpc-tarpc-unix`: tarpc's own `serde_transport::unix` (what users run
//!   today),
//! - `rpc-tarpc-tcp`: tarpc's own `serde_transport::tcp` over loopback,
//! - `rpc-tarpc-inmemory`: tarpc's channel transport inside this process
//!   (no IPC at all: the floor of tarpc's own machinery).
//!
//! Round trip of one call at 64 B and 1 MiB (request and reply each that
//! size, bincode), and calls per second at 64 B with 64 calls in flight
//! (criterion's throughput, elements/s). The client runs on a
//! current-thread tokio runtime; the server on a two-worker runtime in its
//! own process (this executable re-run with `SHMRING_BENCH_TARPC_SERVER`).
//!
//! ```text
//! cargo bench -p shmring-benches --features tarpc --bench tarpc
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use futures_util::{StreamExt, future};
use shmring_benches::{MSG_LEN, affinity};
use shmring_rpc::{Addr, ClientOptions, ServerOptions};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

const SERVER_ENV: &str = "SHMRING_BENCH_TARPC_SERVER";

/// The benchmarked service: echo the bytes. They are `bytes::Bytes`,
/// which serde moves in one piece, as a tarpc user moving bulk bytes would
/// write: a `Vec<u8>` goes through serde one byte at a time (about 1 ns a
/// byte each way here), which would hide every transport's cost at 1 MiB.
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

/// Serve every channel of `transports` on this runtime.
async fn serve_all<T, S>(transports: S)
where
    S: futures_util::Stream<Item = T>,
    T: tarpc::Transport<tarpc::Response<EchoResponse>, tarpc::ClientMessage<EchoRequest>> + Send + 'static,
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

fn main() {
    serve_if_requested();
    let cpus = affinity::cpu_pair();
    affinity::pin_if_some(cpus.map(|[bench, _]| bench));
    let peer = cpus.map(|[_, peer]| peer);
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    let rows = ["rpc-tarpc-shm", "rpc-tarpc-shm-stream", "rpc-tarpc-unix", "rpc-tarpc-tcp", "rpc-tarpc-inmemory"];
    for (group, size) in [("tarpc_roundtrip_64b", MSG_LEN), ("tarpc_roundtrip_1mib", 1 << 20)] {
        let mut g = c.benchmark_group(group);
        if size > MSG_LEN {
            g.sample_size(10);
        }
        for row in rows {
            let mut peer_proc = None;
            g.bench_function(row, |b| {
                let p = peer_proc.get_or_insert_with(|| Peer::start(row, peer));
                b.iter_custom(|iters| p.run(iters, size, 1));
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("tarpc_calls_64_in_flight");
    g.throughput(criterion::Throughput::Elements(1));
    for row in rows {
        let mut peer_proc = None;
        g.bench_function(row, |b| {
            let p = peer_proc.get_or_insert_with(|| Peer::start(row, peer));
            b.iter_custom(|iters| p.run(iters, MSG_LEN, 64));
        });
    }
    g.finish();
    c.final_summary();
}

/// A client connected to a server (another process, or this one's runtime
/// for the in-memory row).
struct Peer {
    rt: tokio::runtime::Runtime,
    client: EchoClient,
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Peer {
    fn start(row: &str, cpu: Option<usize>) -> Peer {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = std::env::temp_dir().join(format!("shmring-bench-tarpc-{}-{row}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let kind = row.trim_start_matches("rpc-tarpc-");
        if kind == "inmemory" {
            let (client_end, server_end) = tarpc::transport::channel::unbounded();
            rt.spawn(serve_all(futures_util::stream::once(future::ready(server_end))));
            let client = rt.block_on(async { EchoClient::new(client::Config::default(), client_end).spawn() });
            return Peer { rt, client, child: None, dir };
        }
        let addr = match kind {
            "tcp" => "tcp:127.0.0.1:0".to_owned(),
            _ => format!("unix:{}", dir.join("sock").display()),
        };
        let cpu = cpu.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let mut child = Command::new(std::env::current_exe().expect("bench executable"))
            .env(SERVER_ENV, format!("{kind}|{cpu}|{addr}"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("server's address");
        let addr = line.trim().to_owned();
        let client = rt.block_on(async {
            match kind {
                "shm" => {
                    let t = shmring_rpc::tarpc::connect(&Addr::parse(&addr).expect("address")).await.expect("connect");
                    EchoClient::new(client::Config::default(), t).spawn()
                }
                "shm-stream" => {
                    let addr = Addr::parse(&addr).expect("address");
                    let t = shmring_rpc::tarpc::connect_over_stream(&addr, &ClientOptions::new(), Bincode::default)
                        .await
                        .expect("connect");
                    EchoClient::new(client::Config::default(), t).spawn()
                }
                "unix" => {
                    let t = tarpc::serde_transport::unix::connect(addr.trim_start_matches("unix:"), Bincode::default)
                        .await
                        .expect("connect");
                    EchoClient::new(client::Config::default(), t).spawn()
                }
                _ => {
                    let t = tarpc::serde_transport::tcp::connect(addr.trim_start_matches("tcp:"), Bincode::default)
                        .await
                        .expect("connect");
                    EchoClient::new(client::Config::default(), t).spawn()
                }
            }
        });
        Peer { rt, client, child: Some(child), dir }
    }

    /// `iters` calls of `size` bytes each way, `window` in flight at once.
    fn run(&mut self, iters: u64, size: usize, window: u64) -> Duration {
        let msg = Bytes::from(vec![7u8; size]);
        let client = &self.client;
        let start = Instant::now();
        self.rt.block_on(async {
            let lanes = (0..window).map(|lane| {
                let msg = msg.clone();
                async move {
                    let n = iters / window + u64::from(lane < iters % window);
                    for _ in 0..n {
                        let r = client.echo(context::current(), msg.clone()).await.expect("call");
                        assert_eq!(r.len(), msg.len());
                    }
                }
            });
            future::join_all(lanes).await;
        });
        start.elapsed()
    }
}

/// If `SHMRING_BENCH_TARPC_SERVER=KIND|CPU|ADDR` is set, serve until killed.
fn serve_if_requested() {
    let Ok(spec) = std::env::var(SERVER_ENV) else { return };
    let mut parts = spec.splitn(3, '|');
    let (Some(kind), Some(cpu), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        eprintln!("{SERVER_ENV}={spec:?}: expected KIND|CPU|ADDR");
        std::process::exit(2);
    };
    affinity::pin_if_some(cpu.parse().ok());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let announce = |a: String| {
            println!("{a}");
            let _ = std::io::stdout().flush();
        };
        match kind {
            "shm" => {
                let l = shmring_rpc::tarpc::listen(&Addr::parse(addr).expect("address")).await.expect("listen");
                announce(l.local_addr().to_string());
                serve_all(l.filter_map(|r| future::ready(r.ok()))).await;
            }
            "shm-stream" => {
                let addr = Addr::parse(addr).expect("address");
                let l = shmring_rpc::tarpc::listen_over_stream(&addr, &ServerOptions::new(), Bincode::default)
                    .await
                    .expect("listen");
                announce(l.local_addr().to_string());
                serve_all(l.filter_map(|r| future::ready(r.ok()))).await;
            }
            "unix" => {
                let path = addr.trim_start_matches("unix:").to_owned();
                let l = tarpc::serde_transport::unix::listen(&path, Bincode::default).await.expect("listen");
                announce(addr.to_owned());
                serve_all(l.filter_map(|r| future::ready(r.ok()))).await;
            }
            _ => {
                let l = tarpc::serde_transport::tcp::listen(addr.trim_start_matches("tcp:"), Bincode::default)
                    .await
                    .expect("listen");
                announce(format!("tcp:{}", l.local_addr()));
                serve_all(l.filter_map(|r| future::ready(r.ok()))).await;
            }
        }
    });
    std::process::exit(0);
}
