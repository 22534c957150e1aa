//! A job queue that survives `kill -9`: one dispatcher process hands jobs to
//! N worker processes over one MPMC ring; each worker reports back over its
//! own SPSC ring. This program is both: run without `--worker` it is the
//! dispatcher, and it starts the workers by running itself again.
//!
//! ```text
//! cargo run --release -p shmring-examples --example job_queue -- [--workers N] [--jobs M] [--kill-one]
//! ```
//!
//! Defaults: 3 workers, 40 jobs. A job is "sum the squares of 1..=n"
//! (wrapping, a few milliseconds of work); the dispatcher checks every
//! answer against the closed form.
//!
//! - Jobs travel as typed values, `Sender<Job, mpmc::Producer>` to
//!   `Receiver<Job, mpmc::Consumer>`: each job goes to exactly one worker.
//!   A worker keeps the job's slot claimed while it works on it and releases
//!   it only after reporting the result, so a job that a worker had started
//!   is never silently dropped. (A worker killed after claiming a job but
//!   before reporting `Started` loses it with only the ring's loss counter
//!   to show; the run then stops at its time limit.)
//! - Each worker reports `Started` and `Done` events over its own
//!   `Sender<Event>` (SPSC), so the dispatcher always knows which job each
//!   worker holds.
//! - With `--kill-one`, one job (number `jobs / 3`) is ten times longer
//!   than the others, and the dispatcher sends SIGKILL to whichever worker
//!   reports starting it, so the kill lands mid-job. The dispatcher notices the exit, reads what
//!   the dead worker reported before dying, names the job that was in flight,
//!   recovers the slot the dead worker held (the ring's statistics count it
//!   as a message lost because its consumer died) and queues the job again.
//!   Every job still completes; the exit status is 0 once each job has a
//!   checked result.
//!
//! Segment names carry the dispatcher's pid and are removed as soon as every
//! worker has attached (and on every error path), so nothing is left in
//! `/dev/shm` whoever is killed. Workers exit when the dispatcher closes the
//! job ring, or when they notice the dispatcher is gone.

use std::collections::VecDeque;
use std::error::Error;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use shmring::mpmc::{self, MpmcOptions};
use shmring::typed::{Receiver, Sender};
use shmring::{Location, SpscOptions};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

type Res<T> = Result<T, Box<dyn Error>>;

/// First argument that makes this program a worker: `--worker QUEUE RESULTS INDEX`.
const WORKER: &str = "--worker";
/// Slots in the job ring.
const QUEUE_SLOTS: usize = 64;
/// How long the whole run may take before the dispatcher gives up.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// One unit of work: sum the squares of `1..=n`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Job {
    id: u64,
    n: u64,
}

/// `Event::kind`: the worker has opened both rings.
const READY: u64 = 0;
/// `Event::kind`: the worker took job `job` and is working on it.
const STARTED: u64 = 1;
/// `Event::kind`: the worker finished job `job` with result `value`.
const DONE: u64 = 2;

/// A worker's report to the dispatcher.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Event {
    kind: u64,
    job: u64,
    value: u64,
}

/// The work itself, done the slow way.
fn sum_of_squares(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 1..=n {
        let i = std::hint::black_box(i);
        acc = acc.wrapping_add(i.wrapping_mul(i));
    }
    acc
}

/// The same, from the closed form n(n+1)(2n+1)/6, to check answers.
fn expected(n: u64) -> u64 {
    let n = u128::from(n);
    (n * (n + 1) * (2 * n + 1) / 6) as u64
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(WORKER) {
        return match &args[1..] {
            [queue, results, index] => match worker(queue, results) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("worker {index}: {e}");
                    ExitCode::FAILURE
                }
            },
            _ => usage(),
        };
    }
    let Some(opts) = parse(&args) else { return usage() };
    match dispatch(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispatcher: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: job_queue [--workers N] [--jobs M] [--kill-one]");
    ExitCode::from(2)
}

#[derive(Debug, Clone, Copy)]
struct Opts {
    workers: usize,
    jobs: u64,
    kill_one: bool,
}

fn parse(args: &[String]) -> Option<Opts> {
    let mut o = Opts { workers: 3, jobs: 40, kill_one: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--workers" => o.workers = it.next()?.parse().ok().filter(|&w| (1..=32).contains(&w))?,
            "--jobs" => o.jobs = it.next()?.parse().ok().filter(|&j| j >= 1)?,
            "--kill-one" => o.kill_one = true,
            _ => return None,
        }
    }
    // Killing one of one worker would leave nobody to finish the jobs.
    (!o.kill_one || o.workers >= 2).then_some(o)
}

/// A worker: take jobs until the ring is closed, report each one.
fn worker(queue: &str, results: &str) -> Res<()> {
    let parent = std::os::unix::process::parent_id();
    let mut report: Sender<Event> = Sender::open(&Location::shm(results))?;
    let mut jobs: Receiver<Job, mpmc::Consumer> = Receiver::open(&Location::shm(queue))?;
    report.send(&Event { kind: READY, job: 0, value: 0 })?;
    loop {
        // Receive in place: the slot stays claimed by this worker until the
        // result is reported and `rec` is dropped.
        let rec = match jobs.get_mut().recv_timeout(Duration::from_millis(200)) {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(()), // closed and drained: no more jobs
            Err(e) if e.is_transient() => {
                if std::os::unix::process::parent_id() != parent {
                    return Err("the dispatcher is gone".into());
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let job = Job::read_from_bytes(&rec).map_err(|_| format!("a job record of {} bytes", rec.len()))?;
        report.send(&Event { kind: STARTED, job: job.id, value: 0 })?;
        let value = sum_of_squares(job.n);
        report.send(&Event { kind: DONE, job: job.id, value })?;
        drop(rec);
    }
}

/// Kills and reaps every worker still running when dropped, and removes the
/// segment names: nothing outlives a failing dispatcher.
struct Cleanup {
    names: Vec<Location>,
    children: Vec<Option<Child>>,
}

impl Cleanup {
    fn unlink_all(&mut self) {
        for loc in self.names.drain(..) {
            let _ = loc.unlink();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.unlink_all();
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the dispatcher knows about one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    /// Waiting in `pending` or in the ring.
    Queued,
    /// Reported started by this worker.
    Running(usize),
    /// Finished, answer checked, by this worker.
    Done(usize),
}

struct Dispatcher {
    opts: Opts,
    jobs: Vec<Job>,
    state: Vec<JobState>,
    /// Job each worker reported started and not yet finished.
    in_flight: Vec<Option<u64>>,
    done: u64,
    requeued: Vec<u64>,
    /// The worker killed on purpose (`--kill-one`), once it has been.
    victim: Option<usize>,
}

impl Dispatcher {
    fn apply(&mut self, w: usize, ev: Event) -> Res<()> {
        let id = ev.job;
        let job = *self.jobs.get(id as usize).ok_or_else(|| format!("worker {w} reported unknown job {id}"))?;
        match ev.kind {
            READY => {}
            STARTED => {
                self.in_flight[w] = Some(id);
                if self.state[id as usize] == JobState::Queued {
                    self.state[id as usize] = JobState::Running(w);
                }
            }
            DONE => {
                if ev.value != expected(job.n) {
                    return Err(
                        format!("worker {w}: job {id} answered {}, expected {}", ev.value, expected(job.n)).into()
                    );
                }
                if self.in_flight[w] == Some(id) {
                    self.in_flight[w] = None;
                }
                if !matches!(self.state[id as usize], JobState::Done(_)) {
                    self.state[id as usize] = JobState::Done(w);
                    self.done += 1;
                }
            }
            k => return Err(format!("worker {w} sent an event of unknown kind {k}").into()),
        }
        Ok(())
    }
}

fn dispatch(opts: Opts) -> Res<()> {
    let pid = std::process::id();
    let queue_name = format!("shmring-jobq-{pid}");
    let queue = Location::shm(&queue_name);
    let mut cleanup = Cleanup { names: vec![queue.clone()], children: Vec::new() };
    let mut tx: Sender<Job, mpmc::Producer> =
        Sender::create(&queue, &MpmcOptions::new().slot_size(size_of::<Job>()).slot_count(QUEUE_SLOTS))?;

    let exe = std::env::current_exe()?;
    let mut reports: Vec<Receiver<Event>> = Vec::new();
    for w in 0..opts.workers {
        let name = format!("shmring-jobq-{pid}-w{w}");
        let loc = Location::shm(&name);
        cleanup.names.push(loc.clone());
        reports.push(Receiver::create(&loc, &SpscOptions::new().capacity(64 * 1024))?);
        let child = Command::new(&exe).args([WORKER, &queue_name, &name, &w.to_string()]).spawn()?;
        cleanup.children.push(Some(child));
    }
    let pids: Vec<u32> = cleanup.children.iter().flatten().map(Child::id).collect();

    // Wait for every worker to attach, then remove the names: from here on
    // the rings exist only in the processes that map them.
    let start = Instant::now();
    for (w, rx) in reports.iter_mut().enumerate() {
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Some(ev)) if ev.kind == READY => break,
                Ok(Some(ev)) => return Err(format!("worker {w} sent {ev:?} before READY").into()),
                Ok(None) => return Err(format!("worker {w} closed its report ring at once").into()),
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(Some(c)) = cleanup.children.get_mut(w)
                && let Some(st) = c.try_wait()?
            {
                return Err(format!("worker {w} exited before attaching ({st})").into());
            }
            if start.elapsed() > RUN_LIMIT {
                return Err(format!("worker {w} never attached").into());
            }
        }
    }
    cleanup.unlink_all();
    println!("dispatcher: {} workers attached (pids {pids:?}); queueing {} jobs", opts.workers, opts.jobs);

    // Jobs take a few milliseconds each; n varies a little so they finish
    // out of order. The job whose worker gets killed is a long one, so the
    // kill lands while the worker is still on it.
    let victim_job = opts.kill_one.then_some(opts.jobs / 3);
    let jobs: Vec<Job> = (0..opts.jobs)
        .map(|id| {
            let n = 1_500_000 + (id % 7) * 250_000;
            Job { id, n: if Some(id) == victim_job { 10 * n } else { n } }
        })
        .collect();
    let mut pending: VecDeque<Job> = jobs.iter().copied().collect();
    let mut d = Dispatcher {
        opts,
        state: vec![JobState::Queued; jobs.len()],
        jobs,
        in_flight: vec![None; opts.workers],
        done: 0,
        requeued: Vec::new(),
        victim: None,
    };

    while d.done < d.opts.jobs {
        if start.elapsed() > RUN_LIMIT {
            return Err(format!("gave up after {RUN_LIMIT:?} with {} of {} jobs done", d.done, d.opts.jobs).into());
        }
        let mut progressed = false;
        while let Some(job) = pending.front() {
            match tx.try_send(job) {
                Ok(()) => {
                    pending.pop_front();
                    progressed = true;
                }
                Err(e) if e.is_transient() => break,
                Err(e) => return Err(e.into()),
            }
        }
        for w in 0..d.opts.workers {
            let Some(child) = cleanup.children[w].as_mut() else { continue };
            loop {
                match reports[w].try_recv() {
                    Ok(Some(ev)) => {
                        progressed = true;
                        d.apply(w, ev)?;
                        if ev.kind == STARTED && Some(ev.job) == victim_job && d.victim.is_none() {
                            // Mid-job: it just reported starting `ev.job`.
                            child.kill()?;
                            d.victim = Some(w);
                            println!(
                                "dispatcher: sent SIGKILL to worker {w} (pid {}) while it ran job {}",
                                pids[w], ev.job
                            );
                        }
                    }
                    Ok(None) => break,
                    Err(e) if e.is_transient() => break,
                    // The worker died: handled below once it is reaped.
                    Err(shmring::Error::PeerDied { .. }) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let Some(status) = child.try_wait()? else { continue };
            cleanup.children[w] = None;
            progressed = true;
            // Everything it reported before dying is in its ring: read it.
            while let Ok(Some(ev)) = reports[w].try_recv() {
                d.apply(w, ev)?;
            }
            let planned = if d.victim == Some(w) { "killed on purpose" } else { "unexpectedly" };
            println!("dispatcher: worker {w} (pid {}) exited {planned}: {status}", pids[w]);
            let recovered = tx.get_mut().recover_dead()?;
            let stats = tx.get_mut().stats();
            println!(
                "dispatcher: ring recovered {recovered} slot(s); stats: {} message(s) lost because a consumer died, \
                 {} because a producer died, {} slot(s) recovered in all",
                stats.lost_consumer_died, stats.lost_producer_died, stats.recovered
            );
            match d.in_flight[w].take() {
                Some(id) if !matches!(d.state[id as usize], JobState::Done(_)) => {
                    println!("dispatcher: job {id} was in flight in worker {w} and is lost; re-queued job {id}");
                    d.state[id as usize] = JobState::Queued;
                    d.requeued.push(id);
                    pending.push_back(d.jobs[id as usize]);
                }
                _ => println!("dispatcher: worker {w} held no unfinished job; nothing lost"),
            }
            if cleanup.children.iter().all(Option::is_none) && d.done < d.opts.jobs {
                return Err("every worker is gone and jobs remain".into());
            }
        }
        if !progressed {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    // Every job has a checked answer: end the stream, let the workers go.
    tx.get_mut().close_ring();
    for (w, slot) in cleanup.children.iter_mut().enumerate() {
        let Some(child) = slot.as_mut() else { continue };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                return Err(format!("worker {w} did not exit after the ring was closed").into());
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        *slot = None;
        if !status.success() {
            return Err(format!("worker {w} failed: {status}").into());
        }
    }
    let mut per_worker = vec![0u64; d.opts.workers];
    for s in &d.state {
        if let JobState::Done(w) = s {
            per_worker[*w] += 1;
        }
    }
    let stats = tx.get_mut().stats();
    println!(
        "dispatcher: all {} jobs completed and checked in {:.2} s; jobs per worker {per_worker:?}; re-queued {:?}; \
         ring stats: {} lost because a consumer died, {} recovered",
        d.opts.jobs,
        start.elapsed().as_secs_f64(),
        d.requeued,
        stats.lost_consumer_died,
        stats.recovered
    );
    Ok(())
}
