//! What the rpc test binaries share: temporary socket directories, the
//! server process (this test binary re-run as `server_main`) and its roles.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use shmring_rpc::{AccessPolicy, Addr, Reply, Server, ServerOptions};

pub const ROLE_ENV: &str = "SHMRING_RPC_TEST_ROLE";
pub const ADDR_ENV: &str = "SHMRING_RPC_TEST_ADDR";

/// A private directory for socket files, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("shmring-rpc-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn addr(&self) -> Addr {
        Addr::Unix(self.0.join("sock"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process, killed and reaped on drop.
pub struct ServerProc {
    pub child: Child,
    pub addr: Addr,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `server_main` with `role` on `addr`; returns once it listens.
pub fn server(role: &str, addr: &Addr) -> ServerProc {
    server_at("common::server_main", role, addr)
}

/// Start the ignored test `entry` of this binary as a server with `role` on
/// `addr`; returns once it prints `listening ADDR`.
pub fn server_at(entry: &str, role: &str, addr: &Addr) -> ServerProc {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([entry, "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_ENV, role)
        .env(ADDR_ENV, addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed and reaped on drop from here on, even if the asserts below fail.
    let mut srv = ServerProc { child, addr: addr.clone() };
    let mut out = BufReader::new(srv.child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server exited before listening");
        if let Some(a) = line.trim().strip_prefix("listening ") {
            srv.addr = Addr::parse(a).unwrap();
            // Keep draining its stdout so it never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return srv;
        }
    }
}

/// Peer entry: a server. `echo` answers each request reversed; `slow`
/// sleeps 5 s first; `deny` lets nobody in but uid 4242; `noshm` refuses
/// shared memory; `inplace` and `borrowed` answer reversed with `serve_in_place` and `serve_borrowed`. `async` serves on tokio (`serve_async`): it answers
/// reversed too, but a request starting `sleep` takes 5 s, and `dropped?`
/// answers how many handler futures were dropped unfinished (as decimal
/// text).
#[test]
#[ignore = "server process for the rpc tests"]
fn server_main() {
    let (Ok(role), Ok(addr)) = (std::env::var(ROLE_ENV), std::env::var(ADDR_ENV)) else { return };
    let addr = Addr::parse(&addr).unwrap();
    let mut opts = ServerOptions::new().ring_capacity(64 << 10);
    match role.as_str() {
        "deny" => opts = opts.access(AccessPolicy::only_uids([4242])),
        "noshm" => opts = opts.no_shm(),
        _ => {}
    }
    if role == "bytes" {
        return serve_bytes(&addr, &opts);
    }
    let server = Server::bind(&addr, &opts).unwrap();
    println!("listening {}", server.local_addr());
    std::io::stdout().flush().unwrap();
    if role == "async" {
        return serve_async(server);
    }
    if role == "inplace" || role == "borrowed" {
        // Reversed too, written straight into the ring when it fits (and
        // `borrowed`: read where it lies in the ring).
        let handler = |req: &[u8], reply: &mut Reply<'_>| {
            if req == b"panic in fill" {
                let _ = reply.write(8, |_| panic!("a handler that panics while writing its reply"));
                return;
            }
            reply
                .write(req.len(), |out| {
                    for (o, i) in out.iter_mut().zip(req.iter().rev()) {
                        *o = *i;
                    }
                })
                .unwrap();
        };
        let served = if role == "inplace" { server.serve_in_place(handler) } else { server.serve_borrowed(handler) };
        served.unwrap();
        return;
    }
    let slow = role == "slow";
    server
        .serve(move |req: &[u8]| {
            if slow {
                std::thread::sleep(Duration::from_secs(5));
            }
            req.iter().rev().copied().collect()
        })
        .unwrap();
}

/// Deterministic request `i` of `len` bytes.
pub fn request(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 131 + j * 7) as u8).collect()
}

pub fn reversed(v: &[u8]) -> Vec<u8> {
    v.iter().rev().copied().collect()
}

/// The `async` role of `server_main`.
fn serve_async(server: Server) {
    /// Counts a handler future dropped before it finished.
    struct Unfinished(Arc<AtomicUsize>, bool);
    impl Drop for Unfinished {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(server.serve_async(move |req: Vec<u8>| {
        let dropped = dropped.clone();
        async move {
            if req == b"dropped?" {
                return dropped.load(Ordering::SeqCst).to_string().into_bytes();
            }
            let mut guard = Unfinished(dropped, false);
            if req.starts_with(b"sleep") {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            guard.1 = true;
            reversed(&req)
        }
    }))
    .unwrap();
}

/// The `bytes` role of `server_main`: a `ShmListener`; each stream carries
/// length-delimited frames, each answered reversed, until the client closes.
fn serve_bytes(addr: &Addr, opts: &ServerOptions) {
    use futures_util::{SinkExt, StreamExt};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut listener = shmring_rpc::ShmListener::bind(addr, opts).unwrap();
        println!("listening {}", listener.local_addr());
        std::io::stdout().flush().unwrap();
        loop {
            let stream = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut framed = tokio_util::codec::Framed::new(stream, tokio_util::codec::LengthDelimitedCodec::new());
                while let Some(Ok(frame)) = framed.next().await {
                    let back: Vec<u8> = frame.iter().rev().copied().collect();
                    if framed.send(tokio_util::bytes::Bytes::from(back)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}
