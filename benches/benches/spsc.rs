//! shmring against rtrb and crossbeam's `ArrayQueue`, one producer and one
//! consumer, each side pinned to its own CPU when there are two.
//!
//! ```text
//! cargo bench -p shmring-benches                    # everything, about 30 s
//! cargo bench -p shmring-benches -- spsc_pingpong   # one group
//! cargo bench -p shmring-benches -- --test          # run each once, as a smoke test
//! ```
//!
//! - `spsc_stream_u64/*`: throughput of a stream of 8-byte items (elements/s).
//!   shmring grants 512 records at a time (`grant_records`, one header for
//!   the 512) and receives a run at a time with `recv_runs`;
//!   rtrb moves chunks; `ArrayQueue` pushes and pops one item at a time.
//! - `spsc_pingpong_64b/*`: one round trip of a 64-byte message over two
//!   rings, both sides busy-polling; the time per iteration is the round trip.
//!
//! `-inprocess` runs the peer on a thread, `-crossprocess` in a second process
//! (this executable, re-run as the peer). Peers start once per benchmark and
//! serve every iteration, so no spawn is timed.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use shmring_benches::baseline::{CrossbeamStream, RtrbPingPong, RtrbStream};
use shmring_benches::shm::{Mode, ShmPingPong, ShmStream};
use shmring_benches::{BoxError, Workload, affinity};

fn main() {
    // A cross-process peer is this executable: it must serve, not bench.
    shmring_benches::run_peer_if_requested();

    let cpus = affinity::cpu_pair();
    affinity::pin_if_some(cpus.map(|[bench, _]| bench));
    let peer = cpus.map(|[_, peer]| peer);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    stream_u64(&mut c, peer);
    pingpong_64b(&mut c, peer);
    c.final_summary();
}

fn stream_u64(c: &mut Criterion, cpu: Option<usize>) {
    let mut g = c.benchmark_group("spsc_stream_u64");
    g.throughput(Throughput::Elements(1));
    bench(&mut g, "shmring-inprocess", || ok(ShmStream::new(Mode::InProcess, cpu)));
    bench(&mut g, "shmring-crossprocess", || ok(ShmStream::new(Mode::CrossProcess, cpu)));
    bench(&mut g, "rtrb", || RtrbStream::new(cpu));
    bench(&mut g, "crossbeam-arrayqueue", || CrossbeamStream::new(cpu));
    g.finish();
}

fn pingpong_64b(c: &mut Criterion, cpu: Option<usize>) {
    let mut g = c.benchmark_group("spsc_pingpong_64b");
    bench(&mut g, "shmring-inprocess", || ok(ShmPingPong::new(Mode::InProcess, cpu)));
    bench(&mut g, "shmring-crossprocess", || ok(ShmPingPong::new(Mode::CrossProcess, cpu)));
    bench(&mut g, "rtrb", || RtrbPingPong::new(cpu));
    g.finish();
}

/// Time the workload `make` builds. It is built on the first call only, so
/// a benchmark left out by a filter starts no peer, and it serves every
/// later sample; it is dropped (and its peer stopped) when this returns.
fn bench<W: Workload>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, make: impl Fn() -> W) {
    let mut workload = None;
    g.bench_function(name, |b| {
        let w = workload.get_or_insert_with(&make);
        b.iter_custom(|iters| w.run(iters));
    });
}

fn ok<T>(r: Result<T, BoxError>) -> T {
    r.unwrap_or_else(|e| panic!("setting up the benchmark: {e}"))
}
