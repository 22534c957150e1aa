//! `shmring bench`: shmring next to the kernel's IPC mechanisms, measured between two real
//! processes on one host.
//!
//! Layout: [`case`] says what a row is, [`peer`] starts and supervises the second process,
//! [`guard`] makes sure nothing outlives the run, [`protocol`] holds the two measurements,
//! [`kernel`], [`shared`], [`classic`], [`ring`], [`mpmc`], [`sysv`], [`rpc`] (and, with the
//! `tarpc` feature, `tarpc`) adapt each transport, [`report`] prints.

mod case;
mod classic;
mod guard;
mod guide;
mod kernel;
mod mpmc;
mod peer;
#[cfg(feature = "peers")]
mod peers;
mod plot;
mod protocol;
mod report;
mod ring;
mod rpc;
mod shared;
mod sysv;
#[cfg(feature = "tarpc")]
mod tarpc;
#[cfg(feature = "http")]
mod web;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use case::Transport;
use case::{Budget, Case, IN_FLIGHT, Length, Mode};
use guide::READING_GUIDE;
use protocol::Outcome;
use report::Row;

/// Measure shmring (SPSC and MPMC rings) against pipes, FIFOs, sockets, POSIX and System V
/// message queues, real-time signals, POSIX semaphores, a file and bare shared words, and
/// shmring-rpc calls over shared memory, a UNIX socket and TCP, between two real processes.
///
/// Reports 64-byte ping-pong round-trip latency (median and 99th percentile) in busy-poll
/// and sleeping modes, one-way streaming throughput for small and large messages, the round
/// trip of one RPC call at 64 B, 4 KiB and 1 MiB, and RPC calls per second with 64 in
/// flight. Takes a minute and a quarter by default, a few seconds with --quick.
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

    /// Measure exactly N round trips (ping-pong and call rows), N messages (stream rows) or
    /// N calls (64-in-flight rows) per case, instead of a fixed time.
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

    /// Also draw the results into an SVG file: round-trip medians with whiskers to the 99th
    /// percentile and rates, one bar per row on logarithmic axes, shmring's rows in red; and
    /// the distribution of round-trip times of the spin and park rows against pipe and UNIX
    /// socket.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
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
        case(ShmringSem, Mode::Park, 64),
        case(Futex, Mode::Park, 8),
        case(Semaphore, Mode::Park, 8),
        case(Signal, Mode::Park, 64),
    ];
    // The peer libraries: spin rows (both sides busy-poll), ipc-channel's blocking row.
    cases.extend(case::PEERS.iter().map(|&t| case(t, Mode::Spin, 64)));
    let blocking = ["iceoryx2", "ipc-channel"];
    cases.extend(case::PEERS.iter().filter(|t| blocking.contains(&t.name())).map(|&t| case(t, Mode::Blocking, 64)));
    // Request-response carries round trips only: no stream rows.
    let streams = || case::PEERS.iter().filter(|t| t.name() != "iceoryx2-request-response");
    let kernel = [Pipe, Fifo, UnixSocket, TcpLoopback, PosixMq, SysvMsgq];
    cases.extend(kernel.map(|t| case(t, Mode::Blocking, 64)));
    let rpc = [RpcShm, RpcShmAsync, RpcUnix, RpcTcp];
    for payload in rpc::SIZES {
        cases.extend(rpc.map(|t| case(t, Mode::Call, payload)));
        if case::TARPC_SIZES.contains(&payload) {
            cases.extend(case::TARPC.iter().map(|&t| case(t, Mode::Call, payload)));
        }
        if payload == 64 {
            cases.extend(case::WEB.iter().map(|&t| case(t, Mode::Call, payload)));
        }
    }
    cases.push(case(Shmring, Mode::Stream, 8));
    cases.push(case(ShmringMpmc, Mode::Stream, 8));
    cases.extend(streams().map(|&t| case(t, Mode::Stream, 8)));
    for payload in [64, 64 << 10] {
        cases.push(case(Shmring, Mode::Stream, payload));
        if payload == 64 {
            cases.push(case(ShmringMpmc, Mode::Stream, payload));
            cases.extend(streams().map(|&t| case(t, Mode::Stream, payload)));
        }
        cases.extend(kernel.map(|t| case(t, Mode::Stream, payload)));
        if payload == 64 {
            cases.push(case(File, Mode::Stream, payload));
        }
    }
    cases.extend(rpc.map(|t| case(t, Mode::InFlight, 64)));
    cases.extend(case::TARPC.iter().map(|&t| case(t, Mode::InFlight, 64)));
    cases.extend(case::WEB.iter().map(|&t| case(t, Mode::InFlight, 64)));
    cases.retain(|c| only.is_empty() || only.contains(&c.transport));
    cases
}

/// Measures one case: sets up the transport, starts the child, runs the parent's part.
fn measure(case: &Case, budget: &Budget, launcher: &peer::Launcher) -> Result<Outcome, String> {
    match case.transport {
        Transport::Shmring | Transport::ShmringSem => ring::parent(case, budget, launcher),
        Transport::Signal | Transport::Semaphore | Transport::File => classic::parent(case, budget, launcher),
        Transport::ShmringMpmc => mpmc::parent(case, budget, launcher),
        Transport::SysvMsgq => sysv::parent(case, budget, launcher),
        Transport::Futex | Transport::CacheLine => shared::parent(case, budget, launcher),
        #[cfg(feature = "tarpc")]
        t if t.is_tarpc() => tarpc::parent(case, budget, launcher),
        #[cfg(feature = "http")]
        t if t.is_web() => web::parent(case, budget, launcher),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2 => peers::iceoryx2_parent(case, budget, launcher),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2RequestResponse => peers::iceoryx2_rr_parent(case, budget, launcher),
        #[cfg(feature = "peers")]
        Transport::IpcChannel => peers::ipc_channel_parent(case, budget, launcher),
        t if t.is_rpc() => rpc::parent(case, budget, launcher),
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
    // Before any thread starts, so that every thread blocks it (see `classic::block_signal`).
    let _signal_row = classic::block_signal()?;
    // Helper threads first, so that they are not pinned with the measuring thread.
    let _signals = guard::install()?;
    let placement = peer::Placement::new(!args.no_pin);
    let launcher = peer::Launcher::new(&placement)?;
    let progress = progress_bar(args.no_progress, cases.len());
    let started = Instant::now();
    let mut rows = Vec::with_capacity(cases.len());
    let mut rtts = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        progress.set_message(case.label());
        let row = if case.needs_two_cpus() && placement.available < 2 {
            let why = match case.transport {
                t if t.is_rpc() => "the server busy-polls",
                Transport::File => "the reader polls the file",
                _ => "both sides busy-poll",
            };
            Row::empty(case, Some(format!("needs two CPUs: {why}")))
        } else {
            let limit = budget.deadline(case.payload);
            let deadline = guard::Deadline::arm(limit, case.label());
            match measure(case, &budget, &launcher) {
                Ok(outcome) => {
                    if let (Some(_), Outcome::Rtt(h)) = (&args.plot, &outcome) {
                        rtts.push((*case, h.clone()));
                    }
                    Row::new(case, outcome)
                }
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
            let mut notes = Vec::new();
            if cases.iter().any(|c| !c.transport.is_rpc()) {
                notes.push(
                    "spin, park, blocking: 64 B ping-pong round trip, lower is better; \
                     stream: one way, higher is better."
                        .to_owned(),
                );
            }
            if cases.iter().any(|c| c.transport.is_rpc()) {
                notes.push(format!(
                    "call: one RPC call at a time (request and echoed reply of that size), \
                     round trip, lower is better; {IN_FLIGHT}-in-flight: calls answered per second \
                     with {IN_FLIGHT} in flight on one connection, higher is better."
                ));
            }
            if cases.iter().any(|c| c.transport.is_tarpc()) {
                notes.push(
                    "rpc-tarpc-*: tarpc echo calls (bytes::Bytes, bincode), client on a current-thread \
                     tokio runtime, server on a tokio runtime in the peer with a worker per CPU it may \
                     use (one when pinned; rpc-tarpc-inmemory: on the client's runtime)."
                        .to_owned(),
                );
            }
            #[cfg(feature = "http")]
            if cases.iter().any(|c| c.transport.is_web()) {
                notes.push(web::NOTE.to_owned());
            }
            let floors = [Transport::CacheLine, Transport::Futex, Transport::Semaphore];
            if cases.iter().any(|c| floors.contains(&c.transport)) {
                notes.push(
                    "cache-line, futex and semaphore pass one 8-byte word, no ring: \
                     the floors for spin, park (futex notifier) and park (semaphore notifier)."
                        .to_owned(),
                );
            }
            for (t, note) in classic::NOTES {
                if cases.iter().any(|c| c.transport == t) {
                    notes.push(note.to_owned());
                }
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
    if let Some(path) = &args.plot {
        plot::draw(path, &rows, &rtts)?;
    }
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
        Transport::Shmring | Transport::ShmringSem => ring::child(&spec),
        Transport::Signal | Transport::Semaphore | Transport::File => classic::child(&spec),
        Transport::ShmringMpmc => mpmc::child(&spec),
        Transport::SysvMsgq => sysv::child(&spec),
        Transport::Futex | Transport::CacheLine => shared::child(&spec),
        #[cfg(feature = "tarpc")]
        t if t.is_tarpc() => tarpc::child(&spec),
        #[cfg(feature = "http")]
        t if t.is_web() => web::child(&spec),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2 => peers::iceoryx2_child(&spec),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2RequestResponse => peers::iceoryx2_rr_child(&spec),
        #[cfg(feature = "peers")]
        Transport::IpcChannel => peers::ipc_channel_child(&spec),
        t if t.is_rpc() => rpc::child(&spec),
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
        // Each peer: spin, 8 B and 64 B streams; iceoryx2 and ipc-channel also blocking;
        // request-response spin only.
        let peers = if case::PEERS.is_empty() { 0 } else { 9 };
        assert_eq!(cases.len(), 48 + case::TARPC.len() * (case::TARPC_SIZES.len() + 1) + case::WEB.len() * 2 + peers);
        assert!(cases.iter().any(ring::batched));
        for t in
            [Transport::Futex, Transport::CacheLine, Transport::Semaphore, Transport::Signal, Transport::ShmringSem]
        {
            assert!(cases.iter().all(|c| c.transport != t || !c.is_stream()));
        }
        // Round-trip rows come first, then rate rows.
        let first_rate = cases.iter().position(Case::measures_rate).unwrap();
        assert!(cases[first_rate..].iter().all(Case::measures_rate));
        // Every transport has a row; the RPC ones one per size, and one with calls in flight.
        for t in <Transport as clap::ValueEnum>::value_variants() {
            assert!(cases.iter().any(|c| c.transport == *t), "no {} row", t.name());
        }
        for t in [Transport::RpcShm, Transport::RpcShmAsync, Transport::RpcUnix, Transport::RpcTcp] {
            let rows: Vec<_> = cases.iter().filter(|c| c.transport == t).collect();
            let calls: Vec<usize> = rows.iter().filter(|c| c.mode == Mode::Call).map(|c| c.payload).collect();
            assert_eq!(calls, rpc::SIZES);
            assert!(rows.iter().any(|c| c.mode == Mode::InFlight && c.payload == 64));
            assert_eq!(rows.len(), rpc::SIZES.len() + 1);
        }
    }

    #[test]
    fn rpc_rows_are_named_as_documented() {
        assert_eq!(Mode::InFlight.name(), format!("{IN_FLIGHT}-in-flight"));
        let parsed = args(&["--only", "rpc-shm,rpc-shm-async,rpc-unix,rpc-tcp"]);
        assert_eq!(parsed.only, [Transport::RpcShm, Transport::RpcShmAsync, Transport::RpcUnix, Transport::RpcTcp]);
        for t in &parsed.only {
            assert!(READING_GUIDE.contains(t.name()), "the reading guide does not explain {}", t.name());
            // The JSON spec handed to a peer names them as the command line does.
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
        let json = serde_json::to_value(Mode::InFlight).unwrap();
        assert_eq!(json, Mode::InFlight.name());
        assert!(READING_GUIDE.contains("'64-in-flight'") && READING_GUIDE.contains("'call'"));
        let cases = plan(&[Transport::RpcTcp]);
        assert_eq!(cases.len(), rpc::SIZES.len() + 1);
        assert_eq!(cases[0].label(), "rpc-tcp 64 B calls, one at a time");
        assert_eq!(cases.last().unwrap().label(), "rpc-tcp 64 B calls, 64 in flight");
    }

    #[cfg(feature = "http")]
    #[test]
    fn web_rows_are_planned_named_and_documented() {
        assert!(!case::WEB.is_empty());
        for &t in case::WEB {
            assert!(t.is_web() && t.is_rpc());
            assert!(READING_GUIDE.contains(t.name()), "the reading guide does not explain {}", t.name());
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
            let modes: Vec<(Mode, usize)> = plan(&[t]).iter().map(|c| (c.mode, c.payload)).collect();
            assert_eq!(modes, [(Mode::Call, 64), (Mode::InFlight, 64)]);
        }
    }

    #[cfg(feature = "tarpc")]
    #[test]
    fn tarpc_rows_are_planned_named_and_documented() {
        let names = "rpc-tarpc-shm,rpc-tarpc-unix,rpc-tarpc-tcp,rpc-tarpc-inmemory";
        let parsed = args(&["--only", names]);
        assert_eq!(parsed.only, case::TARPC);
        for &t in case::TARPC {
            assert!(t.is_rpc() && t.is_tarpc());
            assert!(READING_GUIDE.contains(t.name()), "the reading guide does not explain {}", t.name());
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
            let rows = plan(&[t]);
            let calls: Vec<usize> = rows.iter().filter(|c| c.mode == Mode::Call).map(|c| c.payload).collect();
            assert_eq!(calls, case::TARPC_SIZES);
            assert!(rows.iter().any(|c| c.mode == Mode::InFlight && c.payload == 64));
            assert_eq!(rows.len(), case::TARPC_SIZES.len() + 1);
        }
        assert!(!Transport::RpcShm.is_tarpc());
    }

    #[cfg(feature = "peers")]
    #[test]
    fn peer_rows_are_planned_named_and_documented() {
        let parsed = args(&["--only", "iceoryx2,iceoryx2-request-response,ipc-channel"]);
        assert_eq!(parsed.only, case::PEERS);
        for &t in case::PEERS {
            assert!(!t.is_rpc());
            assert!(READING_GUIDE.contains(t.name()), "the reading guide does not explain {}", t.name());
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
            let rows = plan(&[t]);
            assert!(rows.iter().any(|c| c.mode == Mode::Spin && c.payload == 64));
            let streams: Vec<usize> = rows.iter().filter(|c| c.is_stream()).map(|c| c.payload).collect();
            let want: &[usize] = if t == Transport::Iceoryx2RequestResponse { &[] } else { &[8, 64] };
            assert_eq!(streams, want);
        }
        for t in [Transport::Iceoryx2, Transport::IpcChannel] {
            assert!(plan(&[t]).iter().any(|c| c.mode == Mode::Blocking));
        }
    }

    #[cfg(not(feature = "tarpc"))]
    #[test]
    fn tarpc_rows_need_the_feature() {
        assert!(case::TARPC.is_empty());
        assert!(plan(&[]).iter().all(|c| !c.transport.is_tarpc()));
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            bench: BenchArgs,
        }
        assert!(<Wrapper as clap::Parser>::try_parse_from(["bench", "--only", "rpc-tarpc-shm"]).is_err());
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
        assert_eq!(b.deadline(64), Some(Duration::from_secs(61)));
        assert_eq!(b.deadline(64 << 10), Some(Duration::from_secs(61)));
        // Larger messages get more time each: 16 ms per 1 MiB call.
        assert_eq!(b.deadline(1 << 20), Some(Duration::from_secs(76)));
        let b = args(&["--messages", "1000", "--warmup", "1"]).budget().unwrap();
        assert_eq!(b.deadline(64), Some(Duration::from_secs(64)));
        let b = args(&["--messages", &u64::MAX.to_string()]).budget().unwrap();
        assert!(b.deadline(64).is_some_and(|d| d > Duration::from_secs(1 << 40)));
        assert_eq!(b.deadline(1 << 20), None);
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
