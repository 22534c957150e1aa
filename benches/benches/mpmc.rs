//! shmring's MPMC ring against crossbeam's `ArrayQueue`: a stream of 8-byte
//! items, one producer and one consumer, then two of each.
//!
//! ```text
//! cargo bench -p shmring-benches --bench mpmc              # about 20 s
//! cargo bench -p shmring-benches --bench mpmc -- 2p2c      # the 2+2 rows only
//! cargo bench -p shmring-benches --bench mpmc -- --test    # run each once
//! ```
//!
//! `mpmc_stream_u64/*` reports elements/s. shmring producers send with
//! `send_batch` (64 items a call) and consumers receive with `recv_batch`;
//! `ArrayQueue` has no batch calls, so its workers push and pop one item
//! at a time. Every item is summed by a consumer and the sums and counts
//! are checked after every run. `-inprocess` runs the workers on threads,
//! `-crossprocess` as processes (this executable, re-run); `ArrayQueue`
//! lives on the heap, so it has in-process rows only.
//!
//! `mpmc_send_recv_one_thread/*`: a send and a receive back to back in one thread, shmring's
//! MPMC and SPSC rings and `ArrayQueue`: the calls' own cost, with nothing to wait for.
//!
//! `mpmc_single_u64/*` is the same 1p1c stream one item per call on every
//! side: shmring's `send` and `recv` against `ArrayQueue`'s `push` and
//! `pop`, the way most programs use a queue.
//!
//! With two CPUs, 1p1c pins the producer to one and the consumer to the
//! other; 2p2c pins one producer and one consumer to each. Waiting workers
//! spin briefly, then yield (see `shmring_benches::mpmc`).

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use shmring_benches::mpmc::{Calls, CrossbeamMpmcStream, Shape, ShmMpmcStream};
use shmring_benches::shm::Mode;
use shmring_benches::{Workload, affinity};

fn main() {
    // A cross-process worker is this executable: it must serve, not bench.
    shmring_benches::mpmc::run_worker_if_requested();

    let cpus = affinity::cpu_pair();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    let mut g = c.benchmark_group("mpmc_stream_u64");
    g.throughput(Throughput::Elements(1));
    for (tag, shape) in [("1p1c", Shape { producers: 1, consumers: 1 }), ("2p2c", Shape { producers: 2, consumers: 2 })]
    {
        bench(&mut g, &format!("shmring-{tag}-inprocess"), || {
            ShmMpmcStream::new(Mode::InProcess, shape, cpus, Calls::Batched)
        });
        bench(&mut g, &format!("shmring-{tag}-crossprocess"), || {
            ShmMpmcStream::new(Mode::CrossProcess, shape, cpus, Calls::Batched)
        });
        bench(&mut g, &format!("crossbeam-arrayqueue-{tag}-inprocess"), || Ok(CrossbeamMpmcStream::new(shape, cpus)));
    }
    g.finish();
    let mut g = c.benchmark_group("mpmc_single_u64");
    g.throughput(Throughput::Elements(1));
    let one = Shape { producers: 1, consumers: 1 };
    bench(&mut g, "shmring-1p1c-inprocess", || ShmMpmcStream::new(Mode::InProcess, one, cpus, Calls::Single));
    bench(&mut g, "shmring-1p1c-crossprocess", || ShmMpmcStream::new(Mode::CrossProcess, one, cpus, Calls::Single));
    bench(&mut g, "crossbeam-arrayqueue-1p1c-inprocess", || Ok(CrossbeamMpmcStream::new(one, cpus)));
    g.finish();
    one_thread(&mut c);
    c.final_summary();
}

/// `mpmc_send_recv_one_thread/*`: one send and one receive of an 8-byte item, back to back
/// in one thread, so nothing waits and no line moves between CPUs: what the calls themselves
/// cost (the claim records, the CASes, the notify fences), beside `ArrayQueue` and the SPSC ring.
fn one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("mpmc_send_recv_one_thread");
    let loc = shmring::Location::shm(format!("bench-mpmc-one-thread-{}", std::process::id()));
    let mut tx =
        shmring::mpmc::Producer::create(&loc, &shmring::mpmc::MpmcOptions::new().slot_size(8).slot_count(1024))
            .unwrap_or_else(|e| panic!("creating the MPMC ring: {e}"));
    let mut rx = shmring::mpmc::Consumer::open(&loc).unwrap_or_else(|e| panic!("opening the MPMC ring: {e}"));
    let _ = loc.unlink();
    let mut i = 0u64;
    g.bench_function("shmring-mpmc", |b| {
        b.iter(|| {
            i += 1;
            tx.send(&i.to_le_bytes()).expect("send");
            let r = rx.recv().expect("recv").expect("a message");
            std::hint::black_box(r[0]);
        })
    });
    let loc = shmring::Location::shm(format!("bench-spsc-one-thread-{}", std::process::id()));
    let mut tx = shmring::spsc::Producer::create(&loc, &shmring::SpscOptions::new().capacity(1 << 16))
        .unwrap_or_else(|e| panic!("creating the SPSC ring: {e}"));
    let mut rx = shmring::spsc::Consumer::open(&loc).unwrap_or_else(|e| panic!("opening the SPSC ring: {e}"));
    let _ = loc.unlink();
    g.bench_function("shmring-spsc", |b| {
        b.iter(|| {
            i += 1;
            tx.send(&i.to_le_bytes()).expect("send");
            let r = rx.recv().expect("recv").expect("a message");
            std::hint::black_box(r[0]);
        })
    });
    let q = crossbeam_queue::ArrayQueue::<u64>::new(1024);
    g.bench_function("crossbeam-arrayqueue", |b| {
        b.iter(|| {
            i += 1;
            q.push(i).expect("push");
            std::hint::black_box(q.pop());
        })
    });
    g.finish();
}

/// Time the workload `make` builds, on the first call only (a benchmark
/// left out by a filter starts no worker); it serves every later sample and
/// is dropped, its workers stopped, when this returns.
fn bench<W: Workload>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    make: impl Fn() -> Result<W, shmring_benches::BoxError>,
) {
    let mut workload = None;
    g.bench_function(name, |b| {
        let w = workload.get_or_insert_with(|| make().unwrap_or_else(|e| panic!("setting up {name}: {e}")));
        b.iter_custom(|iters| w.run(iters));
    });
}
