//! `ping`: connect to an RPC server as a client and time ping frames.

use std::time::Duration;

use clap::Args;
use shmring_rpc::{Addr, Client, ClientOptions, TransportKind};

#[derive(Args, Debug)]
pub struct PingArgs {
    /// The server: unix:PATH or tcp:HOST:PORT.
    addr: String,
    /// How many pings (at least 1).
    #[arg(long, short = 'c', default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Bytes of payload in each ping.
    #[arg(long, short = 's', default_value_t = 64)]
    size: usize,
    /// Time between pings, in seconds (0 for back to back).
    #[arg(long, short = 'i', default_value_t = 0.2)]
    interval: f64,
    /// Ask for this transport (shm, unix, tcp) instead of the default
    /// (shared memory, else the socket, on unix:; tcp on tcp:).
    #[arg(long, value_parser = parse_transport)]
    transport: Option<TransportKind>,
}

fn parse_transport(s: &str) -> Result<TransportKind, String> {
    TransportKind::from_name(s).ok_or_else(|| format!("{s:?}: expected shm, unix or tcp"))
}

/// A duration as ping prints it.
fn show(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

pub fn run(a: &PingArgs) -> Result<u8, String> {
    let addr = Addr::parse(&a.addr).map_err(|e| e.to_string())?;
    let mut opts = ClientOptions::new().timeout(Duration::from_secs(5));
    if let Some(t) = a.transport {
        opts = opts.transport(t);
    }
    if !(0.0..1e6).contains(&a.interval) {
        return Err(format!("--interval {}: expected seconds from 0", a.interval));
    }
    let mut client = Client::connect(&addr, &opts).map_err(|e| e.to_string())?;
    println!("PING {addr} over {}: {} bytes of payload", client.transport().name(), a.size);
    let payload: Vec<u8> = (0..a.size).map(|i| i as u8).collect();
    let mut times = Vec::new();
    let mut failed = 0;
    for seq in 1..=a.count {
        match client.ping(&payload) {
            Ok(t) => {
                println!("{} bytes from {addr}: seq={seq} time={}", a.size, show(t));
                times.push(t);
            }
            Err(e) => {
                println!("seq={seq}: {e}");
                failed += 1;
                if matches!(e, shmring_rpc::Error::Closed(_) | shmring_rpc::Error::Ring(_)) {
                    break;
                }
            }
        }
        if seq < a.count && a.interval > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(a.interval));
        }
    }
    times.sort();
    let answered = times.len();
    println!("--- {addr} ping statistics ---");
    print!("{} sent, {answered} answered", answered + failed);
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        let at = |q: f64| times[((answered as f64 * q).ceil() as usize).clamp(1, answered) - 1];
        print!("; round trip min {}, p50 {}, p99 {}, max {}", show(*min), show(at(0.5)), show(at(0.99)), show(*max));
    }
    println!();
    Ok(if failed == 0 && answered as u32 == a.count { 0 } else { 1 })
}
