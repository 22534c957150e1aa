//! MPMC workloads: a stream of 8-byte items through one shmring MPMC ring,
//! or one crossbeam `ArrayQueue`, with P producer and C consumer workers.
//!
//! A run of `n` items: the bench gives each producer a share of `0..n` and
//! tells each consumer to start; producers send their shares (shmring with
//! [`Producer::send_batch`], [`CHUNK`] at a time) and report when done; the
//! bench then sends one end marker per consumer. Every marker lands after
//! every item. A consumer sums the items it receives (shmring with
//! [`Consumer::recv_batch`]) until a batch brings a marker, then reports its
//! count, sum and markers. If one consumer took more than one marker, the
//! bench sends more until every consumer has reported, so none is left over.
//! The run is timed from the first command to the last report, and the
//! totals must be `n` items summing to `0 + 1 + .. + n-1`.
//!
//! shmring workers are threads of this process or processes (this
//! executable, re-run with [`MPMC_WORKER_ENV`] set); their commands come
//! over one SPSC ring each and their reports go back over one MPMC ring.
//! `ArrayQueue` workers are threads, driven over std channels. Workers
//! waiting for data spin [`SPIN`] rounds, then yield, for both libraries:
//! with two pairs on two CPUs two workers share each CPU, and a worker that
//! only spun would hold its CPU until preempted.

use std::hint::spin_loop;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use shmring::mpmc::{self, MpmcOptions};
use shmring::{Error, Location, SpscOptions, WaitPolicy, spsc};

use crate::affinity::pin_if_some;
use crate::shm::Mode;
use crate::{BoxError, RING_ITEMS, Workload, expected_sum, read_u64};

/// Environment variable that turns the bench executable into an MPMC
/// worker. Its value is `KIND:NAME:INDEX:CPU`: KIND is `producer` or
/// `consumer`, NAME the base name of the segments, INDEX the worker's
/// number, CPU the CPU to pin to or `-`, CALLS `batched` or `single` ([`Calls`]).
pub const MPMC_WORKER_ENV: &str = "SHMRING_BENCH_MPMC_WORKER";

/// Items a shmring producer passes to one [`Producer::send_batch`].
pub const CHUNK: usize = 64;
/// Most items a shmring consumer takes with one [`Consumer::recv_batch`].
pub const RECV_MAX: usize = 256;
/// Spin rounds before a waiting worker starts yielding its CPU.
pub const SPIN: u32 = 64;
/// The end marker (never an item: runs are far shorter than 2^64).
const MARKER: u64 = u64::MAX;
/// How long the bench waits for workers to attach, or for a report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the bench waits for a worker process to exit before killing it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

type Producer = mpmc::Producer;
type Consumer = mpmc::Consumer;

/// How shmring workers move items: many per call, or one per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// [`Producer::send_batch`] of [`CHUNK`], [`Consumer::recv_batch`] of up
    /// to [`RECV_MAX`].
    Batched,
    /// [`Producer::send`] and [`Consumer::recv`]: one item per call, as
    /// `ArrayQueue`'s `push` and `pop`.
    Single,
}

impl Calls {
    fn name(self) -> &'static str {
        match self {
            Calls::Batched => "batched",
            Calls::Single => "single",
        }
    }

    fn from_name(s: &str) -> Option<Calls> {
        [Calls::Batched, Calls::Single].into_iter().find(|c| c.name() == s)
    }
}

/// How many producers and consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Producer workers.
    pub producers: usize,
    /// Consumer workers.
    pub consumers: usize,
}

impl Shape {
    /// The CPU of producer (`consumer == false`) or consumer `i`, given two
    /// CPUs: with one pair, the producer on the first and the consumer on
    /// the second; with more, pair `i` (producer `i` and consumer `i`) on
    /// CPU `i % 2`.
    fn cpu(self, cpus: Option<[usize; 2]>, consumer: bool, i: usize) -> Option<usize> {
        let [a, b] = cpus?;
        let first = if self.producers == 1 && self.consumers == 1 { !consumer } else { i.is_multiple_of(2) };
        Some(if first { a } else { b })
    }

    /// Producer `i`'s share of `0..n`.
    fn share(self, n: u64, i: usize) -> (u64, u64) {
        let p = self.producers as u64;
        (n * i as u64 / p, n * (i as u64 + 1) / p)
    }
}

/// Wait policy of a worker waiting for data: spin, then yield, never park.
fn data_policy() -> WaitPolicy {
    WaitPolicy::default().spin(SPIN).yields(u32::MAX)
}

/// Consumer totals of one run.
#[derive(Default)]
struct Totals {
    count: u64,
    sum: u64,
}

impl Totals {
    fn check(&self, n: u64) {
        assert_eq!(self.count, n, "items received in a run of {n}");
        assert_eq!(self.sum, expected_sum(n), "sum of a run of {n} items");
    }
}

fn names(base: &str, workers: usize) -> Vec<Location> {
    let mut v = vec![Location::shm(format!("{base}-data")), Location::shm(format!("{base}-rep"))];
    v.extend((0..workers).map(|i| Location::shm(format!("{base}-cmd{i}"))));
    v
}

/// Removes every name when dropped; a name already gone is fine.
struct Names(Vec<Location>);

impl Drop for Names {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = n.unlink();
        }
    }
}

/// A worker thread or process, waited for when dropped.
enum Worker {
    Thread(Option<JoinHandle<Result<(), BoxError>>>),
    Process(Child),
}

impl Worker {
    fn exited(&mut self) -> bool {
        match self {
            Worker::Thread(t) => t.as_ref().is_none_or(JoinHandle::is_finished),
            Worker::Process(child) => !matches!(child.try_wait(), Ok(None)),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        match self {
            Worker::Thread(t) => match t.take().map(JoinHandle::join) {
                Some(Ok(Err(e))) => eprintln!("bench worker thread failed: {e}"),
                Some(Err(_)) => eprintln!("bench worker thread panicked"),
                _ => {}
            },
            Worker::Process(child) => {
                let deadline = Instant::now() + EXIT_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    eprintln!("bench worker process {} did not exit; killing it", child.id());
                    let _ = child.kill();
                }
                match child.wait() {
                    Ok(status) if !status.success() => eprintln!("bench worker process failed: {status}"),
                    Err(e) => eprintln!("bench worker process: {e}"),
                    Ok(_) => {}
                }
            }
        }
    }
}

/// P producers and C consumers on one shmring MPMC ring of [`RING_ITEMS`]
/// 8-byte slots, as threads or processes.
pub struct ShmMpmcStream {
    // Fields drop in order: the command rings close first, so every worker
    // sees the end of its commands and returns, then the workers are waited for.
    cmds: Vec<spsc::Producer>,
    data: Producer,
    reports: Consumer,
    workers: Vec<Worker>,
    shape: Shape,
}

impl ShmMpmcStream {
    /// Create the rings and start the workers, pinned per [`Shape`] to
    /// `cpus` if given, moving items as `calls` says.
    ///
    /// # Errors
    /// Creating the segments, starting a worker, or its hello failing.
    pub fn new(mode: Mode, shape: Shape, cpus: Option<[usize; 2]>, calls: Calls) -> Result<ShmMpmcStream, BoxError> {
        let base = crate::unique_name("mpmc");
        let workers = shape.producers + shape.consumers;
        let names = Names(names(&base, workers));
        let data_opts = MpmcOptions::new().slot_size(8).slot_count(RING_ITEMS);
        let data = Producer::create(&names.0[0], &data_opts)?;
        let reports = Consumer::create(&names.0[1], &MpmcOptions::new().slot_size(32).slot_count(64))?;
        let mut cmds = Vec::with_capacity(workers);
        for loc in &names.0[2..] {
            cmds.push(spsc::Producer::create(loc, &SpscOptions::new().capacity(4096))?);
        }
        let mut link = ShmMpmcStream { cmds, data, reports, workers: Vec::new(), shape };
        for w in 0..workers {
            let consumer = w >= shape.producers;
            let i = if consumer { w - shape.producers } else { w };
            let cpu = shape.cpu(cpus, consumer, i);
            let kind = if consumer { "consumer" } else { "producer" };
            link.workers.push(match mode {
                Mode::InProcess => {
                    let base = base.clone();
                    let t = std::thread::Builder::new()
                        .name(format!("mpmc-{kind}-{i}"))
                        .spawn(move || run_worker(consumer, &base, w, cpu, calls))?;
                    Worker::Thread(Some(t))
                }
                Mode::CrossProcess => {
                    let cpu = cpu.map_or_else(|| "-".to_owned(), |c| c.to_string());
                    let child = Command::new(std::env::current_exe()?)
                        .env(MPMC_WORKER_ENV, format!("{kind}:{base}:{w}:{cpu}:{}", calls.name()))
                        .stdin(Stdio::null())
                        .spawn()?;
                    Worker::Process(child)
                }
            });
        }
        // One hello per worker; then every side has mapped every ring and
        // `names` may go (it goes on return, with or without an error).
        for _ in 0..workers {
            link.report()?;
        }
        Ok(link)
    }

    /// The next report: (worker, count, sum, markers).
    fn report(&mut self) -> Result<[u64; 4], BoxError> {
        let deadline = Instant::now() + REPORT_TIMEOUT;
        loop {
            match self.reports.recv_timeout(Duration::from_millis(10)) {
                Ok(Some(r)) => {
                    let w = |k: usize| r.get(8 * k..8 * k + 8).map_or(u64::MAX, read_u64);
                    return Ok([w(0), w(1), w(2), w(3)]);
                }
                Ok(None) => return Err("the report ring was closed".into()),
                Err(Error::Timeout) => {
                    if self.workers.iter_mut().any(Worker::exited) {
                        return Err("a worker exited".into());
                    }
                    if Instant::now() > deadline {
                        return Err("no report from the workers".into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn send_markers(&mut self, k: usize) -> shmring::Result<()> {
        for _ in 0..k {
            self.data.send(&MARKER.to_le_bytes())?;
        }
        Ok(())
    }

    fn run_once(&mut self, n: u64) -> Result<Totals, BoxError> {
        let Shape { producers, consumers } = self.shape;
        for (w, cmd) in self.cmds.iter_mut().enumerate() {
            let (a, b) = if w < producers { self.shape.share(n, w) } else { (0, 0) };
            let mut msg = [0u8; 16];
            msg[..8].copy_from_slice(&a.to_le_bytes());
            msg[8..].copy_from_slice(&b.to_le_bytes());
            cmd.send(&msg)?;
        }
        let mut done = 0;
        let mut totals = Totals::default();
        let (mut reported, mut sent, mut taken) = (0, 0, 0);
        while reported < consumers {
            let [w, count, sum, markers] = self.report()?;
            if (w as usize) < producers {
                done += 1;
                if done == producers {
                    // Every item is in the ring: the markers land after them.
                    self.send_markers(consumers)?;
                    sent += consumers as u64;
                }
                continue;
            }
            reported += 1;
            taken += markers;
            totals.count += count;
            totals.sum = totals.sum.wrapping_add(sum);
            if reported < consumers && taken == sent {
                // Someone took more than one: the rest still wait for theirs.
                self.send_markers(consumers - reported)?;
                sent += (consumers - reported) as u64;
            }
        }
        Ok(totals)
    }
}

impl Workload for ShmMpmcStream {
    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        let totals = self.run_once(iters).unwrap_or_else(|e| panic!("MPMC run of {iters} items: {e}"));
        let elapsed = start.elapsed();
        totals.check(iters);
        elapsed
    }
}

/// If [`MPMC_WORKER_ENV`] is set, run as the worker it describes and exit
/// the process; otherwise return at once. Call it first thing in `main`.
pub fn run_worker_if_requested() {
    let Some(spec) = std::env::var_os(MPMC_WORKER_ENV) else {
        return;
    };
    let spec = spec.to_string_lossy();
    let parts: Vec<&str> = spec.split(':').collect();
    let parsed = match parts[..] {
        [kind, base, w, cpu, calls] => {
            let consumer = match kind {
                "producer" => Some(false),
                "consumer" => Some(true),
                _ => None,
            };
            let cpu = if cpu == "-" { Some(None) } else { cpu.parse().ok().map(Some) };
            match (consumer, w.parse::<usize>().ok(), cpu, Calls::from_name(calls)) {
                (Some(c), Some(w), Some(cpu), Some(calls)) => Some((c, base, w, cpu, calls)),
                _ => None,
            }
        }
        _ => None,
    };
    let Some((consumer, base, w, cpu, calls)) = parsed else {
        eprintln!("{MPMC_WORKER_ENV}={spec:?}: expected KIND:NAME:INDEX:CPU:CALLS");
        std::process::exit(2);
    };
    if let Err(e) = run_worker(consumer, base, w, cpu, calls) {
        eprintln!("bench MPMC worker {w}: {e}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn report_msg(w: usize, count: u64, sum: u64, markers: u64) -> [u8; 32] {
    let mut m = [0u8; 32];
    for (k, v) in [w as u64, count, sum, markers].into_iter().enumerate() {
        m[8 * k..8 * k + 8].copy_from_slice(&v.to_le_bytes());
    }
    m
}

/// What a consumer worker received in one run.
#[derive(Default)]
struct Tally {
    count: u64,
    sum: u64,
    markers: u64,
    /// Items that came after a marker (never, if markers come last).
    late: u64,
}

impl Tally {
    fn add(&mut self, v: u64) {
        if v == MARKER {
            self.markers += 1;
        } else {
            self.late += u64::from(self.markers > 0);
            self.count += 1;
            self.sum = self.sum.wrapping_add(v);
        }
    }
}

/// A worker, on a thread or in a process: attach, say hello, then serve
/// commands until the bench closes its command ring.
fn run_worker(consumer: bool, base: &str, w: usize, cpu: Option<usize>, calls: Calls) -> Result<(), BoxError> {
    pin_if_some(cpu);
    let names = names(base, 0);
    let mut cmds = spsc::Consumer::open(&Location::shm(format!("{base}-cmd{w}")))?;
    let mut reports = Producer::open(&names[1])?;
    reports.send(&report_msg(w, 0, 0, 0))?;
    if consumer {
        let mut data = Consumer::open(&names[0])?;
        data.set_wait_policy(data_policy());
        while cmds.recv()?.is_some() {
            let mut t = Tally::default();
            while t.markers == 0 {
                match calls {
                    Calls::Batched => {
                        if data.recv_batch(RECV_MAX, |m| t.add(read_u64(m)))? == 0 {
                            return Err("the data ring was closed mid-run".into());
                        }
                    }
                    Calls::Single => {
                        let Some(m) = data.recv()? else {
                            return Err("the data ring was closed mid-run".into());
                        };
                        t.add(read_u64(&m));
                    }
                }
            }
            let Tally { count, sum, markers, late } = t;
            if late > 0 {
                return Err(format!("{late} items came after an end marker").into());
            }
            reports.send(&report_msg(w, count, sum, markers))?;
        }
    } else {
        let mut data = Producer::open(&names[0])?;
        data.set_wait_policy(data_policy());
        let mut buf = [[0u8; 8]; CHUNK];
        while let Some(cmd) = cmds.recv()? {
            let (start, end) = (read_u64(&cmd), cmd.get(8..).map_or(0, read_u64));
            drop(cmd);
            let mut next = start;
            if calls == Calls::Single {
                for v in start..end {
                    data.send(&v.to_le_bytes())?;
                }
                next = end;
            }
            while next < end {
                let k = (end - next).min(CHUNK as u64) as usize;
                for (j, item) in buf.iter_mut().take(k).enumerate() {
                    *item = (next + j as u64).to_le_bytes();
                }
                let refs: [&[u8]; CHUNK] = std::array::from_fn(|j| &buf[j][..]);
                let mut sent = 0;
                while sent < k {
                    sent += data.send_batch(&refs[sent..k])?;
                }
                next += k as u64;
            }
            reports.send(&report_msg(w, end - start, 0, 0))?;
        }
    }
    Ok(())
}

/// Spin [`SPIN`] rounds, then yield: the same waiting as the shmring workers.
struct Backoff(u32);

impl Backoff {
    fn wait(&mut self) {
        if self.0 < SPIN {
            self.0 += 1;
            spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// The same protocol over one crossbeam `ArrayQueue<u64>` of [`RING_ITEMS`]
/// slots, workers on threads; items are pushed and popped one at a time
/// (the queue has no batch calls).
pub struct CrossbeamMpmcStream {
    // Fields drop in order: the command channels close first, so the
    // workers return, then they are joined.
    cmds: Vec<mpsc::Sender<(u64, u64)>>,
    reports: mpsc::Receiver<[u64; 4]>,
    queue: Arc<ArrayQueue<u64>>,
    _workers: Vec<Worker>,
    shape: Shape,
}

impl CrossbeamMpmcStream {
    /// Start the worker threads, pinned per [`Shape`] to `cpus` if given.
    pub fn new(shape: Shape, cpus: Option<[usize; 2]>) -> CrossbeamMpmcStream {
        let queue = Arc::new(ArrayQueue::new(RING_ITEMS));
        let (report_tx, reports) = mpsc::channel();
        let mut cmds = Vec::new();
        let mut workers = Vec::new();
        for w in 0..shape.producers + shape.consumers {
            let consumer = w >= shape.producers;
            let cpu = shape.cpu(cpus, consumer, if consumer { w - shape.producers } else { w });
            let (tx, rx) = mpsc::channel::<(u64, u64)>();
            cmds.push(tx);
            let (q, rep) = (queue.clone(), report_tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("arrayqueue-worker-{w}"))
                .spawn(move || {
                    pin_if_some(cpu);
                    queue_worker(consumer, w, &q, &rx, &rep);
                    Ok(())
                })
                .expect("spawn a worker thread");
            workers.push(Worker::Thread(Some(t)));
        }
        CrossbeamMpmcStream { cmds, reports, queue, _workers: workers, shape }
    }

    fn push(&self, v: u64) {
        let mut b = Backoff(0);
        while self.queue.push(v).is_err() {
            b.wait();
        }
    }
}

fn queue_worker(
    consumer: bool,
    w: usize,
    q: &ArrayQueue<u64>,
    cmds: &mpsc::Receiver<(u64, u64)>,
    reports: &mpsc::Sender<[u64; 4]>,
) {
    while let Ok((start, end)) = cmds.recv() {
        let report = if consumer {
            let (mut count, mut sum) = (0u64, 0u64);
            let mut b = Backoff(0);
            loop {
                match q.pop() {
                    Some(MARKER) => break,
                    Some(v) => {
                        count += 1;
                        sum = sum.wrapping_add(v);
                        b = Backoff(0);
                    }
                    None => b.wait(),
                }
            }
            [w as u64, count, sum, 1]
        } else {
            for v in start..end {
                let mut b = Backoff(0);
                while q.push(v).is_err() {
                    b.wait();
                }
            }
            [w as u64, end - start, 0, 0]
        };
        if reports.send(report).is_err() {
            return;
        }
    }
}

impl Workload for CrossbeamMpmcStream {
    fn run(&mut self, iters: u64) -> Duration {
        let Shape { producers, consumers } = self.shape;
        let start = Instant::now();
        for (w, cmd) in self.cmds.iter().enumerate() {
            let range = if w < producers { self.shape.share(iters, w) } else { (0, 0) };
            cmd.send(range).expect("a worker is gone");
        }
        let mut totals = Totals::default();
        let (mut done, mut reported) = (0, 0);
        while reported < consumers {
            let [w, count, sum, _] = self.reports.recv_timeout(REPORT_TIMEOUT).expect("a worker report");
            if (w as usize) < producers {
                done += 1;
                if done == producers {
                    // Each consumer stops at the first marker it pops: one each.
                    for _ in 0..consumers {
                        self.push(MARKER);
                    }
                }
                continue;
            }
            reported += 1;
            totals.count += count;
            totals.sum = totals.sum.wrapping_add(sum);
        }
        let elapsed = start.elapsed();
        totals.check(iters);
        elapsed
    }
}
