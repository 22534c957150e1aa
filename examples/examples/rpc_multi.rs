//! One server, many client processes, every reply checked:
//! `rpc_multi [--clients N] [--calls M] [--transport shm|unix]`.
//!
//! Starts a server on a private UNIX socket (in this process, on its own
//! threads), then N client processes (this program again), each making M
//! calls of varying size, and checks every reply: the server answers each
//! request with its bytes reversed and the client compares. Prints the
//! total, the rate, and the transport the clients used; exits 1 if any
//! client failed.
//!
//! ```text
//! cargo run --release -p shmring-examples --example rpc_multi -- --clients 8 --calls 10000
//! ```

use std::process::{Command, ExitCode};
use std::time::Instant;

use shmring_rpc::{Addr, Client, ClientOptions, Server, ServerOptions, TransportKind};

/// Request `i` of client `id`: 8 to ~1 KiB bytes, derived from both.
fn request(id: u32, i: u32) -> Vec<u8> {
    let len = 8 + (i as usize * 37 + id as usize * 11) % 1024;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.extend((8..len).map(|j| (j as u32 ^ i ^ id) as u8));
    v
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        return client(&args[1..]);
    }
    let mut clients = 8u32;
    let mut calls = 10_000u32;
    let mut transport = "shm".to_owned();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = it.next();
        let parsed = match (a.as_str(), value) {
            ("--clients", Some(v)) => v.parse().map(|n| clients = n).is_ok(),
            ("--calls", Some(v)) => v.parse().map(|n| calls = n).is_ok(),
            // The server listens on a UNIX socket: shared memory or its fallback.
            ("--transport", Some(v)) if v == "shm" || v == "unix" => {
                transport = v.clone();
                true
            }
            _ => false,
        };
        if !parsed {
            eprintln!("usage: rpc_multi [--clients N] [--calls M] [--transport shm|unix]");
            return ExitCode::from(2);
        }
    }
    let dir = std::env::temp_dir().join(format!("shmring-rpc-multi-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("rpc_multi: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let code = run(&dir, clients, calls, &transport);
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn run(dir: &std::path::Path, clients: u32, calls: u32, transport: &str) -> ExitCode {
    let addr = Addr::Unix(dir.join("sock"));
    let server = match Server::bind(&addr, &ServerOptions::new()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rpc_multi: {e}");
            return ExitCode::FAILURE;
        }
    };
    std::thread::spawn(move || server.serve(|req: &[u8]| req.iter().rev().copied().collect()));
    let exe = std::env::current_exe().expect("own path");
    let start = Instant::now();
    let children: Vec<_> = (0..clients)
        .map(|id| {
            Command::new(&exe)
                .args(["client", &addr.to_string(), &id.to_string(), &calls.to_string(), transport])
                .spawn()
                .expect("start a client process")
        })
        .collect();
    let failed = children.into_iter().map(|mut c| c.wait().map_or(true, |s| !s.success())).filter(|&f| f).count();
    let took = start.elapsed();
    let total = u64::from(clients) * u64::from(calls);
    println!(
        "{clients} client processes x {calls} calls over {transport}: {total} calls in {:.2} s ({:.0} calls/s), \
         every reply checked; {failed} client(s) failed",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A client process: `client ADDR ID CALLS TRANSPORT`.
fn client(args: &[String]) -> ExitCode {
    let [addr, id, calls, transport] = args else { return ExitCode::from(2) };
    let (Ok(id), Ok(calls), Some(t)) = (id.parse::<u32>(), calls.parse::<u32>(), TransportKind::from_name(transport))
    else {
        return ExitCode::from(2);
    };
    let result =
        Addr::parse(addr).and_then(|a| Client::connect(&a, &ClientOptions::new().transport(t))).and_then(|mut c| {
            for i in 0..calls {
                let req = request(id, i);
                let reply = c.call(&req)?;
                if !reply.iter().eq(req.iter().rev()) {
                    return Err(shmring_rpc::Error::InvalidArgument(format!("client {id}: reply {i} does not match")));
                }
            }
            Ok(())
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpc_multi client {id}: {e}");
            ExitCode::FAILURE
        }
    }
}
