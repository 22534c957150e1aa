//! Park-mode ping-pong round-trip time with each notifier. Ignored in a
//! normal run (timing on a shared machine is not a pass/fail matter); run with
//! `cargo test -p shmring --release --test notifier_rtt -- --ignored --nocapture`.
#![cfg(not(loom))]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::TempSeg;
use shmring::header::NotifierKind;
use shmring::spsc::{Consumer, Producer};
use shmring::{SpscOptions, WaitPolicy};

const WARM_UP: usize = 1_000;
const ROUNDS: usize = 20_000;

/// Round trips of an 8-byte message between two threads over two rings
/// whose handles park at once (no spinning or yielding), so every receive
/// sleeps and every send wakes the peer through the notifier. Returns the
/// sorted round-trip times.
fn ping_pong(kind: NotifierKind) -> Vec<Duration> {
    let (a, b) = (TempSeg::new("rtt-ab"), TempSeg::new("rtt-ba"));
    let opts = SpscOptions::new().capacity(4096).notifier(kind).wait_policy(WaitPolicy::park());
    let mut ping_tx = Producer::create(&a.0, &opts).unwrap();
    let mut pong_rx = Consumer::open(&a.0).unwrap();
    let mut pong_tx = Producer::create(&b.0, &opts).unwrap();
    let mut ping_rx = Consumer::open(&b.0).unwrap();
    pong_rx.set_wait_policy(WaitPolicy::park());
    ping_rx.set_wait_policy(WaitPolicy::park());
    let ponger = std::thread::spawn(move || {
        while let Some(m) = pong_rx.recv().unwrap() {
            let v: [u8; 8] = (*m).try_into().unwrap();
            drop(m);
            pong_tx.send(&v).unwrap();
        }
    });
    let mut times = Vec::with_capacity(ROUNDS);
    for i in 0..WARM_UP + ROUNDS {
        let t = Instant::now();
        ping_tx.send(&(i as u64).to_le_bytes()).unwrap();
        let m = ping_rx.recv().unwrap().unwrap();
        let elapsed = t.elapsed();
        assert_eq!(&*m, &(i as u64).to_le_bytes());
        if i >= WARM_UP {
            times.push(elapsed);
        }
    }
    drop(ping_tx);
    ponger.join().unwrap();
    times.sort();
    times
}

#[test]
#[ignore = "timing: run by hand with --ignored --nocapture"]
fn park_ping_pong_rtt_per_notifier() {
    for kind in [NotifierKind::Futex, NotifierKind::Semaphore, NotifierKind::Futex, NotifierKind::Semaphore] {
        let t = ping_pong(kind);
        let at = |q: f64| t[((t.len() - 1) as f64 * q) as usize];
        eprintln!(
            "park ping-pong RTT, {:9}: p50 {:>6.1} us, p90 {:>6.1} us, p99 {:>6.1} us ({ROUNDS} round trips)",
            kind.name(),
            at(0.5).as_secs_f64() * 1e6,
            at(0.9).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6,
        );
        assert!(at(0.5) < Duration::from_secs(1), "a round trip took a park timeout or more");
    }
}
