//! `shmring bench`: shmring next to the kernel's IPC mechanisms, measured between two real
//! processes on one host.
//!
//! Layout: [`case`] says what a row is, [`peer`] starts and supervises the second process,
//! [`guard`] makes sure nothing outlives the run, [`protocol`] holds the two measurements,
//! [`kernel`], [`shared`] and [`ring`] adapt each transport, [`report`] prints.

mod case;
mod guard;
mod kernel;
mod mpmc;
mod peer;
mod protocol;
mod report;
mod ring;
mod shared;
mod sysv;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use case::Transport;
use case::{Budget, Case, Length, Mode};
use protocol::Outcome;
use report::Row;

const READING_GUIDE: &str = "\
WHAT RUNS
  Every row is one case: this program starts a second copy of itself, the two
  exchange messages through one transport, and the first copy measures. With two
  or more CPUs the two processes are pinned to two different CPUs. Each case first
  runs unmeasured for the warm-up time (page faults, caches, clock speed).

PING-PONG ROWS (mode spin, park or blocking)
  One process sends a message, the other sends it straight back, the first waits
  for it and sends the next. 'rtt p50' and 'rtt p99' are the median and the 99th
  percentile round-trip time (ns, µs, ms); one-way latency is about half of it.
  Lower is better.
    spin      both processes busy-poll shared memory: fastest, keeps two CPUs busy
    park      both processes sleep in the kernel (futex) until woken
    blocking  the ordinary blocking calls of a kernel transport
  'cache-line' and 'futex' pass one 8-byte word with no ring around it: they are
  the floors for spin and park. shmring cannot beat them; the gap is the cost of
  the ring (records, checks, waiting policy).
  'shmring' is the single-producer single-consumer ring; 'shmring-mpmc' is the
  multi-producer multi-consumer ring (fixed-size slots) used by one producer and
  one consumer. The gap between the two rows is mostly the price of the MPMC
  slot protocol (a compare-and-swap and a sequence word per message), but not
  only: in spin mode the SPSC producers also push each message to the shared
  cache (demote), and the SPSC stream ring holds more messages (1 MiB against
  1024 slots).

STREAM ROWS (mode stream)
  One process writes messages as fast as the transport accepts them; the other
  reads them and checks every sequence number and the final count. 'msgs/s' is
  messages per second, 'bytes/s' payload bytes per second (KiB, MiB, GiB are
  powers of 1024). Higher is better. Kernel transports (pipe, fifo, unix-socket,
  tcp-loopback, posix-mq, sysv-msgq) make one system call per message on each
  side, and the reader copies each message into its buffer.
  shmring sends one record per call too and its reader reads each message where
  it lies in the ring, without copying it out (zero-copy). Every reader, of every
  transport, reads every payload byte once (a checksum). The shmring 8 B row
  batches: runs of 512 records written in place per publish (grant_records), and
  everything available per receive.

READING THE TABLE
  '-' marks a column that does not apply to the row. A number in brackets after
  a transport points to a note under the table, for example why a row was not
  measured (a 64 KiB message is over the default limit of 8 KiB of both POSIX
  and System V message queues).
  With --format json the same rows come as objects with the keys transport, mode,
  payload_bytes, rtt_p50_ns, rtt_p99_ns, msgs_per_s, bytes_per_s; null stands
  for '-'.

  Numbers depend on the machine and on whatever else is running. On a busy or
  virtual machine, run twice and trust what repeats.";

/// Measure shmring (SPSC and MPMC rings) against pipes, FIFOs, sockets, POSIX and System V
/// message queues and bare shared words, between two real processes.
///
/// Reports 64-byte ping-pong round-trip latency (median and 99th percentile) in busy-poll
/// and sleeping modes, and one-way streaming throughput for small and large messages.
/// Takes under a minute by default, a few seconds with --quick.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Run with --help for what each row measures and how to read it.",
    after_long_help = READING_GUIDE
)]
pub struct BenchArgs {
    /// Output format: an aligned table for people, or a JSON array with one object per row.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Short run of a few seconds in all, for smoke tests and CI: 0.1 s per case after a
    /// 0.05 s warm-up. Numbers are noisier.
    #[arg(long)]
    pub quick: bool,

    /// Seconds to measure each case, after its warm-up [default: 1.5, or 0.1 with --quick].
    #[arg(long, value_name = "SECONDS")]
    pub duration_per_case: Option<f64>,

    /// Seconds each case runs unmeasured first [default: 0.25, or 0.05 with --quick].
    #[arg(long, value_name = "SECONDS")]
    pub warmup: Option<f64>,

    /// Measure exactly N round trips (ping-pong rows) or N messages (stream rows) per case,
    /// instead of a fixed time.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "duration_per_case",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub messages: Option<u64>,

    /// Run only these transports (comma-separated list).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "TRANSPORT,...")]
    pub only: Vec<Transport>,

    /// Leave CPU placement to the scheduler instead of pinning the two processes to two
    /// different CPUs.
    #[arg(long)]
    pub no_pin: bool,

    /// Draw no progress bar on stderr (none is drawn when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with human units, and notes.
    Table,
    /// A JSON array of row objects, numbers in plain units (ns, messages/s, bytes/s).
    Json,
}

impl BenchArgs {
    fn budget(&self) -> Result<Budget, String> {
        let (measure, warmup) = if self.quick { (0.1, 0.05) } else { (1.5, 0.25) };
        let seconds = |value: f64, flag: &str| {
            if value.is_finite() && (0.0..=3600.0).contains(&value) {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(format!("{flag} must be between 0 and 3600 seconds, not {value}"))
            }
        };
        let warmup = seconds(self.warmup.unwrap_or(warmup), "--warmup")?;
        let length = match self.messages {
            Some(n) => Length::Count(n),
            None => {
                let d = seconds(self.duration_per_case.unwrap_or(measure), "--duration-per-case")?;
                if d.is_zero() {
                    return Err("--duration-per-case must be more than 0".into());
                }
                Length::Time(d)
            }
        };
        Ok(Budget { warmup, length })
    }
}

/// Every case, in output order, restricted to `only` unless it is empty.
fn plan(only: &[Transport]) -> Vec<Case> {
    use Transport::*;
    let case = |transport, mode, payload| Case { transport, mode, payload };
    let mut cases = vec![
        case(Shmring, Mode::Spin, 64),
        case(ShmringMpmc, Mode::Spin, 64),
        case(CacheLine, Mode::Spin, 8),
        case(Shmring, Mode::Park, 64),
        case(Futex, Mode::Park, 8),
    ];
    let kernel = [Pipe, Fifo, UnixSocket, TcpLoopback, PosixMq, SysvMsgq];
    cases.extend(kernel.map(|t| case(t, Mode::Blocking, 64)));
    cases.push(case(Shmring, Mode::Stream, 8));
    for payload in [64, 64 << 10] {
        cases.push(case(Shmring, Mode::Stream, payload));
        if payload == 64 {
            cases.push(case(ShmringMpmc, Mode::Stream, payload));
        }
        cases.extend(kernel.map(|t| case(t, Mode::Stream, payload)));
    }
    cases.retain(|c| only.is_empty() || only.contains(&c.transport));
    cases
}

/// Measures one case: sets up the transport, starts the child, runs the parent's part.
fn measure(case: &Case, budget: &Budget, launcher: &peer::Launcher) -> Result<Outcome, String> {
    match case.transport {
        Transport::Shmring => ring::parent(case, budget, launcher),
        Transport::ShmringMpmc => mpmc::parent(case, budget, launcher),
        Transport::SysvMsgq => sysv::parent(case, budget, launcher),
        Transport::Futex | Transport::CacheLine => shared::parent(case, budget, launcher),
        _ => kernel::parent(case, budget, launcher),
    }
}

fn progress_bar(hidden: bool, len: usize) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:24.cyan/blue} {pos:>2}/{len} {elapsed:>4} {wide_msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes `text` to stdout; a reader that went away early (`| head`) is not an error.
fn print_out(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("writing results: {e}")),
        _ => Ok(()),
    }
}

/// Runs `shmring bench`.
///
/// # Errors
/// A message for the user if the arguments are invalid, if setting up fails, or if any
/// case failed (the results of the others are printed first).
pub fn run(args: BenchArgs) -> Result<(), String> {
    let budget = args.budget()?;
    let cases = plan(&args.only);
    // Helper threads first, so that they are not pinned with the measuring thread.
    let _signals = guard::install()?;
    let placement = peer::Placement::new(!args.no_pin);
    let launcher = peer::Launcher::new(&placement)?;
    let progress = progress_bar(args.no_progress, cases.len());
    let started = Instant::now();
    let mut rows = Vec::with_capacity(cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        progress.set_message(case.label());
        let row = if case.needs_two_cpus() && placement.available < 2 {
            Row::empty(case, Some("needs two CPUs: both sides busy-poll".into()))
        } else {
            let limit = budget.deadline();
            let deadline = guard::Deadline::arm(limit, case.label());
            match measure(case, &budget, &launcher) {
                Ok(outcome) => Row::new(case, outcome),
                Err(e) => {
                    let e = match limit {
                        Some(limit) if deadline.overran() => format!(
                            "no result within {:.0} s (its peer never made contact or stopped answering), \
                             so the peer process was killed: {e}",
                            limit.as_secs_f64()
                        ),
                        _ => e,
                    };
                    failures.push(format!("{}: {e}", case.label()));
                    Row::empty(case, Some("failed (error below)".into()))
                }
            }
        };
        rows.push(row);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let took = started.elapsed();

    let placement = placement.describe();
    let totals = format!("{}; {} cases in {:.1} s", budget.describe(), rows.len(), took.as_secs_f64());
    let text = match args.format {
        Format::Json => {
            eprintln!("shmring bench: {placement}; {totals}");
            report::json(&rows)? + "\n"
        }
        Format::Table => {
            let mut notes = vec![
                "spin, park, blocking: 64 B ping-pong round trip, lower is better; \
                 stream: one way, higher is better."
                    .to_owned(),
            ];
            let floors = [Transport::CacheLine, Transport::Futex];
            if cases.iter().any(|c| floors.contains(&c.transport)) {
                notes.push(
                    "cache-line and futex pass one 8-byte word, no ring: \
                     the floors for spin and park."
                        .to_owned(),
                );
            }
            if cases.iter().any(|c| c.transport == Transport::Shmring && ring::demote(c.mode)) {
                notes.push(
                    "shmring spin: producers demote each message to the shared cache \
                     (Producer::set_demote), as request/response traffic should."
                        .to_owned(),
                );
            }
            if cases.iter().any(ring::batched) {
                notes.push(format!(
                    "shmring 8 B stream: {} records per publish, all available per receive.",
                    ring::BATCH
                ));
            }
            format!(
                "shmring bench: two processes per case; {placement}\n\n{}\n{}\n{totals}.\n",
                report::table(&rows),
                notes.join("\n")
            )
        }
    };
    print_out(&text)?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} case(s) failed:\n  {}", failures.len(), failures.join("\n  ")))
    }
}

/// Runs the child's part of a bench case if this process was started as one (the
/// `SHMRING_BENCH_CHILD` environment variable is set) and returns its exit code; returns
/// `None` in every other process. Call it first thing in `main`.
pub fn maybe_run_child() -> Option<i32> {
    let raw = std::env::var(peer::CHILD_ENV).ok()?;
    let result = peer::child_setup(&raw).and_then(|spec| match spec.case.transport {
        Transport::Shmring => ring::child(&spec),
        Transport::ShmringMpmc => mpmc::child(&spec),
        Transport::SysvMsgq => sysv::child(&spec),
        Transport::Futex | Transport::CacheLine => shared::child(&spec),
        _ => kernel::child(&spec),
    });
    Some(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shmring bench (peer process): {e}");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let argv = std::iter::once("bench").chain(extra.iter().copied());
        <Wrapper as clap::Parser>::try_parse_from(argv).expect("valid arguments").bench
    }

    #[test]
    fn default_plan_covers_every_transport_and_both_kinds() {
        let cases = plan(&[]);
        assert_eq!(cases.len(), 27);
        assert!(cases.iter().any(ring::batched));
        for t in [Transport::Futex, Transport::CacheLine] {
            assert!(cases.iter().all(|c| c.transport != t || !c.is_stream()));
        }
        // Ping-pong rows come first, then streaming rows.
        let first_stream = cases.iter().position(Case::is_stream).unwrap();
        assert!(cases[first_stream..].iter().all(Case::is_stream));
    }

    #[test]
    fn only_filters_transports() {
        let cases = plan(&[Transport::Pipe, Transport::Futex]);
        assert_eq!(cases.len(), 4);
        assert!(cases.iter().all(|c| matches!(c.transport, Transport::Pipe | Transport::Futex)));
        let parsed = args(&["--only", "unix-socket,tcp-loopback"]);
        assert_eq!(parsed.only, [Transport::UnixSocket, Transport::TcpLoopback]);
    }

    #[test]
    fn counted_cases_have_a_deadline_that_grows_with_the_count() {
        let b = args(&["--messages", "1000", "--warmup", "0"]).budget().unwrap();
        assert_eq!(b.deadline(), Some(Duration::from_secs(61)));
        let b = args(&["--messages", "1000", "--warmup", "1"]).budget().unwrap();
        assert_eq!(b.deadline(), Some(Duration::from_secs(64)));
        let b = args(&["--messages", &u64::MAX.to_string()]).budget().unwrap();
        assert!(b.deadline().is_some_and(|d| d > Duration::from_secs(1 << 40)));
    }

    #[test]
    fn budgets_follow_flags() {
        let b = args(&[]).budget().unwrap();
        assert_eq!(b.length, Length::Time(Duration::from_millis(1500)));
        let b = args(&["--quick"]).budget().unwrap();
        assert_eq!(b.length, Length::Time(Duration::from_millis(100)));
        let b = args(&["--quick", "--warmup", "0", "--messages", "7"]).budget().unwrap();
        assert_eq!((b.warmup, b.length), (Duration::ZERO, Length::Count(7)));
        assert!(args(&["--duration-per-case", "0"]).budget().is_err());
        assert!(args(&["--warmup", "NaN"]).budget().is_err());
    }
}
