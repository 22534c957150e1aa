//! shmring-rpc calls between two processes, beside the raw transports they
//! stand on, in one run: a call's round trip over shared memory (both
//! sides spinning), over the UNIX-socket fallback and over TCP loopback, at
//! 64 B, 4 KiB and 1 MiB (request and reply each that size; a 1 MiB frame
//! crosses a 1 MiB ring in two chunks), and the raw SPSC ping-pong and a raw
//! UNIX-socket ping-pong of 64 bytes. `-async` rows use the tokio client
//! (`AsyncClient`, on a current-thread runtime) against the same server.
//!
//! Then calls per second at 64 B with 64 calls in flight on one connection
//! (`rpc_calls_64_in_flight`, criterion's throughput in elements/s): the
//! blocking client pipelining (`Client::call_all`) and the tokio client
//! with 64 tasks calling at once.
//!
//! ```text
//! cargo bench -p shmring-benches --bench rpc
//! ```
//!
//! The server is this executable re-run with `SHMRING_BENCH_RPC_SERVER`
//! set; it starts once per row and serves every iteration, echoing each
//! request with `Server::serve_borrowed` (a request that fits in a ring
//! record is read in place, and the reply written straight into the other
//! ring), spinning on the rings.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use shmring::WaitPolicy;
use shmring_benches::shm::{Mode, ShmPingPong};
use shmring_benches::{MSG_LEN, Workload, affinity};
use shmring_rpc::{Addr, AsyncClient, Client, ClientOptions, Reply, Server, ServerOptions, TransportKind};

const SERVER_ENV: &str = "SHMRING_BENCH_RPC_SERVER";

/// The RPC rows: name, and the client's transport (`-async`: the tokio
/// client).
const ROWS: [(&str, &str); 5] = [
    ("rpc-shm", "shm"),
    ("rpc-shm-async", "shm-async"),
    ("rpc-unix", "unix"),
    ("rpc-unix-async", "unix-async"),
    ("rpc-tcp", "tcp"),
];

fn main() {
    serve_if_requested();
    shmring_benches::run_peer_if_requested();
    let cpus = affinity::cpu_pair();
    affinity::pin_if_some(cpus.map(|[bench, _]| bench));
    let peer = cpus.map(|[_, peer]| peer);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    let mut g = c.benchmark_group("rpc_roundtrip_64b");
    // Each row's peer lives for that row only: a spinning peer left running
    // would take a CPU from the rows after it.
    {
        let mut raw = None;
        g.bench_function("spsc-pingpong-raw", |b| {
            let w = raw.get_or_insert_with(|| ShmPingPong::new(Mode::CrossProcess, peer).expect("spsc ping-pong"));
            b.iter_custom(|iters| w.run(iters));
        });
    }
    {
        let mut uds = None;
        g.bench_function("unix-socket-raw", |b| {
            let s = uds.get_or_insert_with(|| RpcPeer::start("raw-uds", peer));
            b.iter_custom(|iters| s.run(iters, MSG_LEN));
        });
    }
    g.finish();
    for (group, size) in [("rpc_roundtrip_64b", MSG_LEN), ("rpc_roundtrip_4kib", 4096), ("rpc_roundtrip_1mib", 1 << 20)]
    {
        let mut g = c.benchmark_group(group);
        if size > 4096 {
            g.sample_size(10);
        }
        for (name, kind) in ROWS {
            let mut server = None;
            g.bench_function(name, |b| {
                let s = server.get_or_insert_with(|| RpcPeer::start(kind, peer));
                b.iter_custom(|iters| s.run(iters, size));
            });
        }
        g.finish();
    }
    let mut g = c.benchmark_group("rpc_calls_64_in_flight");
    g.throughput(criterion::Throughput::Elements(1));
    for (name, kind) in ROWS {
        let mut server = None;
        g.bench_function(name, |b| {
            let s = server.get_or_insert_with(|| RpcPeer::start(kind, peer));
            b.iter_custom(|iters| s.run_in_flight(iters, MSG_LEN, 64));
        });
    }
    g.finish();
    c.final_summary();
}

/// A server process and the client end connected to it.
struct RpcPeer {
    child: Child,
    client: Option<Client>,
    tokio: Option<(tokio::runtime::Runtime, AsyncClient)>,
    raw: Option<UnixStream>,
    dir: std::path::PathBuf,
}

impl RpcPeer {
    fn start(kind: &str, cpu: Option<usize>) -> RpcPeer {
        let dir = std::env::temp_dir().join(format!("shmring-bench-rpc-{}-{kind}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let addr = if kind.starts_with("tcp") {
            "tcp:127.0.0.1:0".to_owned()
        } else {
            format!("unix:{}", dir.join("sock").display())
        };
        let cpu = cpu.map_or_else(|| "-".to_owned(), |c| c.to_string());
        let exe = std::env::current_exe().expect("bench executable");
        let mut child = Command::new(exe)
            .env(SERVER_ENV, format!("{kind}|{cpu}|{addr}"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("server's address");
        let addr = line.trim().to_owned();
        let (mut client, mut raw, mut tokio) = (None, None, None);
        if kind == "raw-uds" {
            raw = Some(UnixStream::connect(addr.trim_start_matches("unix:")).expect("connect"));
        } else {
            let t = TransportKind::from_name(kind.trim_end_matches("-async")).expect("transport");
            let opts = ClientOptions::new().transport(t).wait_policy(WaitPolicy::busy_poll());
            let addr = Addr::parse(&addr).expect("address");
            if kind.ends_with("-async") {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                let c = rt.block_on(AsyncClient::connect(&addr, &opts)).expect("connect");
                tokio = Some((rt, c));
            } else {
                client = Some(Client::connect(&addr, &opts).expect("connect"));
            }
        }
        RpcPeer { child, client, tokio, raw, dir }
    }

    /// `iters` round trips of `size` bytes each way.
    fn run(&mut self, iters: u64, size: usize) -> Duration {
        let msg = vec![7u8; size];
        let start = Instant::now();
        if let Some(c) = &mut self.client {
            for _ in 0..iters {
                let r = c.call(&msg).expect("call");
                assert_eq!(r.len(), size);
            }
        } else if let Some((rt, c)) = &self.tokio {
            rt.block_on(async {
                for _ in 0..iters {
                    let r = c.call(&msg).await.expect("call");
                    assert_eq!(r.len(), size);
                }
            });
        } else if let Some(s) = &mut self.raw {
            let mut back = vec![0u8; size];
            for _ in 0..iters {
                s.write_all(&msg).expect("write");
                s.read_exact(&mut back).expect("read");
            }
        }
        start.elapsed()
    }

    /// `iters` calls of `size` bytes each way, `window` in flight at once.
    fn run_in_flight(&mut self, iters: u64, size: usize, window: usize) -> Duration {
        let msg = vec![7u8; size];
        let start = Instant::now();
        if let Some(c) = &mut self.client {
            let replies = c.call_all(std::iter::repeat_n(&msg, iters as usize), window).expect("calls");
            assert_eq!(replies.len() as u64, iters);
        } else if let Some((rt, c)) = &self.tokio {
            rt.block_on(async {
                let tasks: Vec<_> = (0..window as u64)
                    .map(|t| {
                        let (c, msg) = (c.clone(), msg.clone());
                        // Task t makes calls t, t + window, t + 2 window, ... below iters.
                        let n = iters / window as u64 + u64::from(t < iters % window as u64);
                        tokio::spawn(async move {
                            for _ in 0..n {
                                let r = c.call(&msg).await.expect("call");
                                assert_eq!(r.len(), msg.len());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
            });
        }
        start.elapsed()
    }
}

impl Drop for RpcPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// If `SHMRING_BENCH_RPC_SERVER=KIND|CPU|ADDR` is set, serve until killed.
fn serve_if_requested() {
    let Ok(spec) = std::env::var(SERVER_ENV) else { return };
    let spec = spec.replacen("-async|", "|", 1); // the same server for the tokio client
    let mut parts = spec.splitn(3, '|');
    let (Some(kind), Some(cpu), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        eprintln!("{SERVER_ENV}={spec:?}: expected KIND|CPU|ADDR");
        std::process::exit(2);
    };
    affinity::pin_if_some(cpu.parse().ok());
    if kind == "raw-uds" {
        let path = addr.trim_start_matches("unix:");
        let l = UnixListener::bind(path).expect("bind");
        println!("{addr}");
        let _ = std::io::stdout().flush();
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = [0u8; MSG_LEN];
        while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
        std::process::exit(0);
    }
    let opts = ServerOptions::new().wait_policy(WaitPolicy::busy_poll());
    let server = Server::bind(&Addr::parse(addr).expect("address"), &opts).expect("bind");
    println!("{}", server.local_addr());
    let _ = std::io::stdout().flush();
    // The request is read where it lies in one ring and the reply written
    // straight into the other: no buffer, one copy.
    let _ = server.serve_borrowed(|req: &[u8], reply: &mut Reply<'_>| {
        let _ = reply.write(req.len(), |out| out.copy_from_slice(req));
    });
    std::process::exit(0);
}
