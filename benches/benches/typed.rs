//! A typed SPSC channel against the raw byte ring it wraps: a stream of a
//! 16-byte `#[repr(C)]` struct, between two threads pinned to two CPUs.
//!
//! ```text
//! cargo bench -p shmring-benches --bench typed
//! ```
//!
//! - `spsc_stream_16b/raw`: `Producer::grant_records(16, 64)`, each record
//!   written in place, `commit`; the consumer sums one field per record in
//!   `Consumer::recv_batch`.
//! - `spsc_stream_16b/typed`: `typed::Sender::send_batch` of 64 structs;
//!   `typed::Receiver::recv_batch` copies each struct out and sums the same
//!   field.
//! - `spsc_stream_16b/typed-iter`: the same, but the sender makes each batch
//!   of 64 with `typed::Sender::send_iter`, writing each struct in place.
//!
//! Each timed run starts a consumer thread and joins it, so both sides see
//! the whole run; the sums are checked.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shmring::spsc::{Consumer, Producer};
use shmring::typed::{Receiver, Sender};
use shmring::{Location, SpscOptions, WaitPolicy};
use shmring_benches::affinity;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Tick {
    seq: u64,
    value: u64,
}

/// Records per batch on the producer side.
const BATCH: u64 = 64;

fn opts() -> SpscOptions {
    SpscOptions::new().capacity(1 << 16).wait_policy(WaitPolicy::busy_poll())
}

fn name(tag: &str) -> Location {
    Location::shm(shmring_benches::unique_name(tag))
}

fn raw(n: u64, cpus: Option<[usize; 2]>) -> Duration {
    let loc = name("raw");
    let mut tx = Producer::create(&loc, &opts()).expect("create");
    let mut rx = Consumer::open(&loc).expect("open");
    let _ = loc.unlink();
    rx.set_wait_policy(WaitPolicy::busy_poll());
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        affinity::pin_if_some(cpus.map(|c| c[1]));
        let (mut got, mut sum) = (0u64, 0u64);
        while got < n {
            got += rx
                .recv_batch(usize::MAX, |r| sum = sum.wrapping_add(u64::from_le_bytes(r[..8].try_into().unwrap())))
                .expect("recv_batch") as u64;
        }
        sum
    });
    let mut i = 0;
    while i < n {
        let count = (n - i).min(BATCH);
        let mut run = tx.grant_records(16, count as usize).expect("grant_records");
        for rec in run.chunks_exact_mut(16) {
            rec[..8].copy_from_slice(&i.to_le_bytes());
            rec[8..].copy_from_slice(&(!i).to_le_bytes());
            i += 1;
        }
        run.commit();
    }
    let sum = consumer.join().expect("consumer thread");
    let elapsed = start.elapsed();
    assert_eq!(sum, shmring_benches::expected_sum(n));
    elapsed
}

/// How the typed producer sends: a slice at a time, or from an iterator.
#[derive(Clone, Copy, PartialEq)]
enum Send {
    Batch,
    Iter,
}

fn typed(n: u64, cpus: Option<[usize; 2]>, how: Send) -> Duration {
    let loc = name(if how == Send::Batch { "typed" } else { "typed-iter" });
    let mut tx: Sender<Tick> = Sender::create(&loc, &opts()).expect("create");
    let mut rx: Receiver<Tick> = Receiver::open(&loc).expect("open");
    let _ = loc.unlink();
    rx.get_mut().set_wait_policy(WaitPolicy::busy_poll());
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        affinity::pin_if_some(cpus.map(|c| c[1]));
        let (mut got, mut sum) = (0u64, 0u64);
        while got < n {
            got += rx.recv_batch(usize::MAX, |t| sum = sum.wrapping_add(t.seq)).expect("recv_batch") as u64;
        }
        sum
    });
    let mut batch = [Tick { seq: 0, value: 0 }; BATCH as usize];
    let mut i = 0;
    while how == Send::Iter && i < n {
        let count = (n - i).min(BATCH);
        tx.send_iter((i..i + count).map(|k| Tick { seq: k, value: !k })).expect("send_iter");
        i += count;
    }
    while i < n {
        let count = (n - i).min(BATCH) as usize;
        for t in &mut batch[..count] {
            *t = Tick { seq: i, value: !i };
            i += 1;
        }
        tx.send_batch(&batch[..count]).expect("send_batch");
    }
    let sum = consumer.join().expect("consumer thread");
    let elapsed = start.elapsed();
    assert_eq!(sum, shmring_benches::expected_sum(n));
    elapsed
}

fn main() {
    let cpus = affinity::cpu_pair();
    affinity::pin_if_some(cpus.map(|c| c[0]));
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    let mut g = c.benchmark_group("spsc_stream_16b");
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw", |b| b.iter_custom(|iters| raw(iters, cpus)));
    g.bench_function("typed", |b| b.iter_custom(|iters| typed(iters, cpus, Send::Batch)));
    g.bench_function("typed-iter", |b| b.iter_custom(|iters| typed(iters, cpus, Send::Iter)));
    g.finish();
    c.final_summary();
}
